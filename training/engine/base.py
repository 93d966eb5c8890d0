"""The engine interface and its local implementation.

An engine runs two shapes of work:

- ``map(fn, args)``: independent partitions, ``fn(*a)`` for each ``a`` in ``args``;
  results in the order of ``args``. ``fn`` must be a module-level function (Ray ships it
  by reference) and its arguments small (paths, dates, ids): each partition reads its own
  share of the data from the shared file system, as the local code does.
- ``group(fn, world, args)``: one data-parallel training group of ``world`` workers that
  rendezvous with each other (torch.distributed, tf.distribute); ``fn(rank, world,
  addresses, *args)`` runs once per rank, concurrently, ``addresses`` being every rank's
  "host:port", comma-separated, rank 0 first; the results come back by rank.

The local engine runs ``map`` in order in this process and a group of one in place, so
that a step written against the interface is today's code when the engine is local.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol, Sequence

from training.engine.config import EngineConfig


class Engine(Protocol):
    kind: str

    @property
    def partitions(self) -> int:
        """How many partitions a step should cut its data into (1: no partitioning)."""

    @property
    def workers(self) -> int:
        """The data-parallel group size for training (1: train in this process)."""

    @property
    def cpus_per_task(self) -> int:
        """Threads a partition may use (DuckDB, torch) without oversubscribing."""

    def map(self, fn: Callable[..., Any], args: Sequence[tuple]) -> list[Any]: ...

    def group(self, fn: Callable[..., Any], world: int, args: tuple) -> list[Any]: ...

    def feast_options(self) -> dict[str, Any]:
        """FeatureStoreConfig fields that put Feast's offline work on this engine."""


class LocalEngine:
    """Everything in this process, in order (the default, and the demo's path)."""

    kind = "local"
    partitions = 1
    workers = 1
    cpus_per_task = 0  # 0: the library's own default (all cores)

    def map(self, fn: Callable[..., Any], args: Sequence[tuple]) -> list[Any]:
        return [fn(*a) for a in args]

    def group(self, fn: Callable[..., Any], world: int, args: tuple) -> list[Any]:
        if world != 1:
            raise ValueError("the local engine runs a training group of one")
        return [fn(0, 1, None, *args)]

    def feast_options(self) -> dict[str, Any]:
        return {"offline": "duckdb"}


@contextmanager
def open_engine(cfg: EngineConfig = EngineConfig(), progress: bool = False) -> Iterator[Engine]:
    """The engine ``cfg`` names, for the duration of the block (a local Ray instance
    started here is stopped at the end)."""
    if cfg.kind == "local":
        yield LocalEngine()
        return
    from training.engine.ray_engine import ray_engine

    with ray_engine(cfg, progress=progress) as engine:
        yield engine

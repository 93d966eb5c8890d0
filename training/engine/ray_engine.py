"""The Ray engine: partitions as Ray tasks, a training group as Ray actors.

A local instance (no address) is started with this machine's limits (``num_cpus``, a
bounded object store, no dashboard, no usage reporting) and stopped when the block ends;
an address connects to a running cluster, whose nodes must have this package installed at
the same version and see the dataset and work directory at the same paths (a shared file
system): tasks receive paths, never the data. Ray is imported here only.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from audiorec.errors import AudiorecError
from training.engine.config import EngineConfig


class RayEngine:
    kind = "ray"
    cpus_per_task = 1

    def __init__(self, cfg: EngineConfig, cpus: int):
        self.cfg = cfg
        self.cpus = cpus  # schedulable CPUs of the whole cluster

    @property
    def partitions(self) -> int:
        return self.cfg.partitions or 2 * self.cpus

    @property
    def workers(self) -> int:
        return self.cfg.workers

    def map(self, fn: Callable[..., Any], args: Sequence[tuple]) -> list[Any]:
        import ray

        remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=1)(fn)
        refs = [remote.remote(*a) for a in args]
        return _get(refs, self.cfg.task_timeout_s, getattr(fn, "__name__", "task"))

    def group(self, fn: Callable[..., Any], world: int, args: tuple) -> list[Any]:
        """``world`` actors, all alive at once (a rank that cannot be scheduled would leave
        the others waiting in the rendezvous forever, hence the check first)."""
        import ray

        if world > self.cpus:
            raise AudiorecError(
                f"a training group of {world} workers needs {world} CPUs; the Ray cluster "
                f"has {self.cpus} (set engine.workers lower)"
            )
        rank = _rank_class()
        ranks = [rank.options(num_cpus=self.cpus_per_task).remote() for _ in range(world)]
        try:
            # every rank's host:port, rank 0's first (torch rendezvous there; TensorFlow's
            # multi-worker cluster lists them all)
            where = ",".join(_get([r.address.remote() for r in ranks], 60, "rendezvous"))
            refs = [r.run.remote(fn, i, world, where, *args) for i, r in enumerate(ranks)]
            return _get(refs, self.cfg.task_timeout_s, getattr(fn, "__name__", "group"))
        finally:
            for r in ranks:
                ray.kill(r)

    def feast_options(self) -> dict[str, Any]:
        return {"offline": "ray", "ray_address": self.cfg.address}


def _get(refs: list, timeout: float | None, what: str) -> list[Any]:
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    try:
        return ray.get(refs, timeout=timeout)
    except RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, BaseException) else None
        if isinstance(cause, AudiorecError):
            raise cause from exc
        detail = f"{type(cause).__name__}: {cause}" if cause else str(exc).splitlines()[0]
        raise AudiorecError(f"Ray task {what} failed: {detail}") from exc
    except GetTimeoutError:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise AudiorecError(f"Ray task {what} did not finish within {timeout:g}s") from None
    except RayActorError as exc:
        raise AudiorecError(f"a Ray worker of {what} died: {str(exc).splitlines()[0]}") from exc


@functools.cache
def _rank_class() -> Any:
    """The actor class (defined once Ray is imported, once per process)."""
    import ray

    @ray.remote
    class Rank:
        """One member of a training group; rank 0 also hosts the rendezvous."""

        def address(self) -> str:
            host = ray.util.get_node_ip_address()
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            return f"{host}:{port}"

        def run(self, fn, rank, world, addresses, *args):
            return fn(rank, world, addresses, *args)

    return Rank


def _check_reachable(address: str, timeout: float) -> None:
    """A TCP connect to the cluster's head first: ``ray.init`` waits minutes for an address
    nobody answers on. ("auto" and other non host:port forms are left to Ray.)"""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise AudiorecError(
            f"no Ray cluster answers at {host}:{port} within {timeout:g}s "
            f"({exc.strerror or type(exc).__name__})"
        ) from None


@contextmanager
def ray_engine(cfg: EngineConfig, progress: bool = False) -> Iterator[RayEngine]:
    """Connect to ``cfg.address`` or start a bounded local instance; stop what was started."""
    # No usage report (this machine has no internet; a cluster's owner decides), no
    # deduplicated-log notices in our output.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if cfg.address:
        _check_reachable(cfg.address, cfg.connect_timeout_s)
    import ray

    started = False
    if not ray.is_initialized():
        try:
            if cfg.address:
                ray.init(address=cfg.address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=cfg.num_cpus or os.cpu_count() or 1,
                    object_store_memory=cfg.object_store_mib * 2**20,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = cfg.address or "a local instance"
            raise AudiorecError(f"cannot start Ray ({where}): {str(exc).splitlines()[0]}") from None
        started = True
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = progress
        cpus = int(ray.cluster_resources().get("CPU", 1))
        yield RayEngine(cfg, cpus)
    finally:
        if started:
            ray.shutdown()

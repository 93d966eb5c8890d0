"""Process-wide settings for a process that serves: called by whoever owns the process
(the CLI's ``serve``, each child of the process group), never by ``create_server``, which
is a library function and leaves its caller's interpreter as it found it.

- **The GIL switch interval** (``ServerConfig.gil_switch_interval_ms``): how long a thread
  may hold the GIL while another waits (Python's default is 5 ms). gRPC's poller thread
  needs the GIL to hand each call to a worker; at 5 ms every busy moment delays dispatch
  by up to that much, which was the p99.
- **The garbage collector** (``ServerConfig.tune_gc``): what loading allocated is frozen
  out of the collector's reach and collections run less often; full collections over the
  loaded artifact were the p99 spikes (docs/stack-notes.md, note 5). Call it after the
  server is built, so that the artifact is among what is frozen.
- **The item index's OpenMP threads**: one. A request searches one query; the server's
  concurrency comes from its threads and processes, so an OpenMP team per query would
  only oversubscribe the cores (on two cores a query under load slowed several-fold).
- **Lean imports** (:func:`lean_imports`, before anything imports Feast): importing Feast
  costs ~5.6 s of a serving process's start, and most of it is not the online read's:
  its ``typeguard`` decorators re-parse and recompile the source of every decorated
  class (~3.7 s; typeguard is a no-op under ``python -O``, this makes it one here only),
  and it imports torch if it can (~1.2 s and ~160 MB per process), which the serving
  layer never uses (docs/benchmarks.md: the 1M start-up, 8.5 -> 5.0 s).
"""

from __future__ import annotations

import gc
import sys
from typing import Any


def _unchecked(target: Any = None, **_: Any) -> Any:
    """``typeguard.typechecked`` as it behaves under ``python -O``: the target unchanged."""
    return (lambda t: t) if target is None else target


def lean_imports() -> None:
    """Make this serving process's later import of Feast skip torch and typeguard's
    instrumentation. No effect once Feast is imported; torch, if already imported, stays
    (a process that trains and serves keeps working)."""
    if "feast" in sys.modules:
        return
    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]  # import torch -> ImportError
    import typeguard

    typeguard.typechecked = _unchecked


def tune_process(cfg: Any) -> None:
    """Apply ``cfg``'s (a ServerConfig) process-wide settings to this interpreter."""
    import faiss

    faiss.omp_set_num_threads(1)
    if cfg.gil_switch_interval_ms is not None:
        sys.setswitchinterval(cfg.gil_switch_interval_ms / 1e3)
    if cfg.tune_gc:
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)

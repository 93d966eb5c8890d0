"""What this machine charges the first call after an idle gap: the floor under paced work.

    PYTHONPATH=.:bench .venv/bin/python bench/bench_wakeup.py [--rounds 300]
        [--redis-url HOST:PORT]

A server under an open-loop load sleeps between calls. On some machines (virtual ones
above all: a vCPU that halts gives its core, caches and TLB to the host) the first
instructions after a wake-up run many times slower than the same instructions back to
back, whatever the code. This script measures that cost with calls that do almost
nothing, so no request path can explain it:

- ``sum``: ``x.sum()`` over 1,000 float32 (numpy's dispatch, 4 KB of data);
- ``matmul``: a (1, 250) x (250, 512) float32 product (the user tower's first layer);
- ``python``: a dict lookup and an f-string (the interpreter alone);
- ``redis_ping`` (with ``--redis-url``): one PING to a redis-server, a round trip that
  wakes the server's process and then this one.

For each gap (0 = back to back, then the spacing of 2,000, 1,000, 300 and 100 calls a
second) it sleeps, then calls the same function ``K`` times in a row, each timed, and
repeats ``--rounds`` times. Printed, as JSON: the median microseconds of the call at
positions 1, 2, 3, 5, 10 and K after the gap, and ``penalty_us``, the first call's
median minus the settled calls' (positions K-9..K): what one wake-up costs that call.
docs/benchmarks.md reads a server's paced primitives against it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any, Callable

import numpy as np

K = 40
GAPS_S = (0.0, 0.0005, 0.001, 1 / 300, 0.01)
POSITIONS = (1, 2, 3, 5, 10, K)


def calls(redis_url: str = "") -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    small = rng.random(1000, dtype=np.float32)
    x = rng.random((1, 250), dtype=np.float32)
    w = rng.random((250, 512), dtype=np.float32)
    table = {f"item{i}": i for i in range(1000)}
    out: dict[str, Callable[[], object]] = {
        "sum": small.sum,
        "matmul": lambda: x @ w,
        "python": lambda: f"{table['item500']}:{table.get('missing', -1)}",
    }
    if redis_url:
        import redis

        host, _, port = redis_url.rpartition(":")
        out["redis_ping"] = redis.Redis(host=host or "localhost", port=int(port)).ping
    return out


def by_position(fn: Callable[[], object], gap_s: float, rounds: int) -> np.ndarray:
    """(rounds, K) seconds: each round sleeps ``gap_s`` (none when 0), then times ``K``
    calls of ``fn`` in a row."""
    times = np.empty((rounds, K))
    for r in range(rounds):
        if gap_s:
            time.sleep(gap_s)
        for k in range(K):
            t = time.perf_counter()
            fn()
            times[r, k] = time.perf_counter() - t
    return times


def measure(rounds: int, redis_url: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine": platform.machine(),
        "python_version": platform.python_version(),
        "k": K,
    }
    for name, fn in calls(redis_url).items():
        by_position(fn, 0.0, 20)  # warm-up
        rows = {}
        for gap_s in GAPS_S:
            med = np.median(by_position(fn, gap_s, rounds), axis=0) * 1e6
            settled = float(med[-10:].mean())
            rows[f"{gap_s * 1e3:.1f}ms"] = {
                "us_at_position": {str(p): round(float(med[p - 1]), 2) for p in POSITIONS},
                "penalty_us": round(float(med[0]) - settled, 2),
                "first_over_settled": round(float(med[0]) / settled, 1),
            }
        out[name] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--redis-url", default="", help="also time a PING to this redis-server")
    args = ap.parse_args()
    out = measure(args.rounds, args.redis_url)
    print(json.dumps(out))
    for name in out:
        if name in ("machine", "python_version", "k"):
            continue
        gaps = ", ".join(
            f"{gap} {row['penalty_us']:.1f} us ({row['first_over_settled']:.1f}x)"
            for gap, row in out[name].items()
        )
        print(f"{name}: first call after a gap of {gaps}")


if __name__ == "__main__":
    main()

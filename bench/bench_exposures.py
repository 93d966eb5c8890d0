"""What logging every answer as an exposure costs the server (issue target: <= 5% of
server time at 500 req/s).

    PYTHONPATH=.:bench .venv/bin/python bench/bench_exposures.py --workdir W
        [--rate 500] [--duration 20] [--rounds 3]

Two measurements, in one run:
1. **In process**: the handler's own work for one exposure (building the record and
   appending it to the writer's deque: what a request pays) timed over 20,000 calls,
   against the server time per Recommend measured below (the writer thread's work
   happens off the request path, but it shares the GIL: the end-to-end runs include it).
2. **End to end**: `audiorec serve` on W under an open-loop load at ``--rate`` req/s for
   ``--duration`` s, alternating ``--no-exposures`` and the default, ``--rounds`` times
   each (alternating spreads drift in the machine over both); server time per Recommend
   from the server's histograms, p50/p99 from the generator, and the exposures the log
   holds afterwards. The log goes to W/log, as a served work directory's does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bench_serving import pick_users, run_store


def in_process(n: int = 20_000) -> tuple[float, float]:
    """Microseconds per exposure: on the request path (build and append), and in all
    (with the writer thread's encoding and writing, which shares the GIL)."""
    import tempfile
    from types import SimpleNamespace

    from audiorec.eventlog import LogConfig
    from serving.accepted import AcceptedLog
    from serving.arms import Experiment, parse_arms
    from serving.metrics import Metrics
    from serving.service import RecommenderService

    with tempfile.TemporaryDirectory() as d:
        accepted = AcceptedLog(d, LogConfig(exposure_queue=n + 1), Metrics())
        exp = Experiment(arms=parse_arms(["a=current:0.5", "b=current:0.5"]))
        service = RecommenderService([], exp, Metrics(), None, accepted)  # type: ignore[arg-type]
        items = [SimpleNamespace(item_id=f"ab{i:06d}", type="audiobook") for i in range(10)]
        response = SimpleNamespace(items=items, model_version="v1", strategy=1)
        request = SimpleNamespace(user_id="u0000001", type="audiobook")
        accepted._stop.set()  # stop the writer: time the request path alone
        accepted._thread.join()  # type: ignore[union-attr]
        t0 = time.perf_counter()
        for _ in range(n):
            service._expose(request, response, "a", False)
        per = (time.perf_counter() - t0) / n * 1e6
        accepted._write_pending()  # the writer's share: encode and write what waits
        total = (time.perf_counter() - t0) / n * 1e6
        accepted._thread = None
        accepted.close()
    return per, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    wd = Path(args.workdir).resolve()
    per_us, total_us = in_process()
    print(
        json.dumps(
            {"exposure_request_path_us": round(per_us, 2), "exposure_total_us": round(total_us, 2)}
        ),
        flush=True,
    )
    users = pick_users(wd)
    rows: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for mode, extra in (("off", ["--no-exposures"]), ("on", [])):
            (row,) = run_store(wd, users, [args.rate], args.duration, extra)
            rows[mode].append(row)
    summary = {}
    for mode, rs in rows.items():
        summary[mode] = {
            "server_ms": round(float(np.mean([r["server_ms"] for r in rs])), 3),
            "p50_ms": round(float(np.mean([r["p50_ms"] for r in rs])), 2),
            "p99_ms": round(float(np.mean([r["p99_ms"] for r in rs])), 2),
            "errors": sum(r["errors"] for r in rs),
        }
    on, off = summary["on"]["server_ms"], summary["off"]["server_ms"]
    summary["server_time_change"] = round(on / off - 1, 4)
    summary["request_path_share"] = round(per_us / 1e3 / off, 4)
    summary["total_share"] = round(total_us / 1e3 / off, 4)
    print(json.dumps(summary, indent=1))
    print(
        f"exposure logging: {per_us:.1f} us per answer on the request path, {total_us:.1f} us "
        f"with the writing ({summary['request_path_share']:.2%} and "
        f"{summary['total_share']:.2%} of {off:.3f} ms); server time per Recommend "
        f"{off:.3f} ms without, {on:.3f} ms with ({summary['server_time_change']:+.1%}) at "
        f"{args.rate:g} req/s"
    )


if __name__ == "__main__":
    main()

"""Where a Recommend's time goes beyond its primitives, in this process, with no idle gap.

    PYTHONPATH=.:bench .venv/bin/python bench/bench_request_breakdown.py --workdir W
        [--redis-url HOST:PORT] [--users 100] [--rounds 6]

bench_serving.py divides the server's time per call by the sum of its primitives timed
back to back, each on its own. Between the two lie four things, measured here one at a
time on the same warm users (the calls alternate the item types, as the load's do):

1. ``isolated``: the primitives as bench_serving.py times them (serving_primitives.py),
   each called back to back over all users: the classic micro-benchmark, each call on the
   caches its own previous call filled;
2. ``in_order``: the same primitives, one call of each per user in a request's order,
   still back to back: each now follows the others, whose working sets (the tower's
   weights, the index's lists, the Redis client) have displaced its own;
3. ``stages``: ``Recommender.recommend`` itself, back to back, its own stage timings
   (the ones the server exports): the primitives plus the request path's Python between
   them (decoding the row, the tower's input arrays, the exclusions, the answer's items);
4. ``whole``: the same calls timed from outside.

Printed as JSON, the medians and ``decomposition``: the isolated sum, what running in
order adds (``interference``), what the request path's code adds (``request_code``) and
the time outside the stages. What a server under an open-loop load adds beyond (4), the
wake-ups after idle gaps, the gRPC threads, is what bench_wakeup.py and bench_serving.py's
paced primitives measure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_serving import pick_users
from serving_primitives import Primitives, paced_medians_ms

STAGES = ("features", "tower", "index", "filter")


def stage_medians(p: Primitives, rounds: int) -> tuple[dict[str, float], float]:
    """Median ms of each of Recommend's own stages and of the whole call, over ``rounds``
    passes through the users (after one pass of warm-up)."""
    for call in p.calls:
        p.recommend(call)
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    whole = []
    for _ in range(rounds):
        for call in p.calls:
            t = time.perf_counter()
            answer = p.recommend(call)
            whole.append(time.perf_counter() - t)
            for s in STAGES:
                stages[s].append(answer.timings_ms.get(s, 0.0))
    return (
        {s: round(float(np.median(v)), 4) for s, v in stages.items()},
        round(float(np.median(whole)) * 1e3, 4),
    )


def breakdown(p: Primitives, rounds: int) -> dict[str, Any]:
    isolated = p.time()
    isolated.pop("recommender_ms")
    isolated_sum = isolated.pop("sum_ms")
    in_order = paced_medians_ms(p.primitive_calls(), rounds * len(p.users), 0.0)
    in_order_sum = round(sum(in_order.values()), 4)
    stages, whole = stage_medians(p, rounds)
    stage_sum = round(sum(stages.values()), 4)
    return {
        "users": len(p.users),
        "tower_runtime": p.tower_runtime,
        "isolated_ms": {**isolated, "sum_ms": isolated_sum},
        "in_order_ms": {**in_order, "sum_ms": in_order_sum},
        "stages_ms": {**stages, "sum_ms": stage_sum},
        "whole_ms": whole,
        "decomposition_ms": {
            "isolated_primitives": isolated_sum,
            "interference": round(in_order_sum - isolated_sum, 4),
            "request_code": round(stage_sum - in_order_sum, 4),
            "outside_stages": round(whole - stage_sum, 4),
        },
        "whole_over_isolated": round(whole / isolated_sum, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--redis-url", default="", help="the online store (default: SQLite)")
    ap.add_argument("--users", type=int, default=100, help="warm users, as bench_serving's")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    wd = Path(args.workdir)
    warm = [u for u, group in pick_users(wd) if group == "warm"][: args.users]
    p = Primitives(wd, args.redis_url or None, warm, ("audiobook", "podcast"))
    out = breakdown(p, args.rounds)
    print(json.dumps(out))
    d = out["decomposition_ms"]
    print(
        f"whole call {out['whole_ms']:.3f} ms = isolated primitives "
        f"{d['isolated_primitives']:.3f} + running in order {d['interference']:+.3f} + the "
        f"request path's code {d['request_code']:+.3f} + outside the stages "
        f"{d['outside_stages']:+.3f} ms ({out['whole_over_isolated']}x the isolated sum)"
    )


if __name__ == "__main__":
    main()

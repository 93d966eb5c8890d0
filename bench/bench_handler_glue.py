"""What the Recommend handler adds around the request path, before and after its cuts.

    PYTHONPATH=.:bench .venv/bin/python bench/bench_handler_glue.py [--calls 2000]

Two pieces of the handler (serving/service.py), each timed against the form it replaced,
call by call (the order alternating, so a change of the VM's speed weighs on both), back
to back ("hot") and after a 1/300 s sleep (the load's spacing: on this VM a call after an
idle gap runs on cold caches and costs several times its hot time):

- **the response**: ten items built in the response's repeated field (``items.add``, the
  explanation fields only where set, the strategy's number from a dict), against a
  ``pb.Item`` per item with all eight fields, copied into the response, and the enum
  wrapper's ``Value``. Both serialised, and checked byte-equal;
- **the stage timings**: four per call, appended for the metrics thread (``Metrics.start``)
  against four histogram observations, each a locked write to a memory-mapped file in
  the multiprocess mode Feast's import turns on.

Prints the medians in microseconds as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any, Callable

import numpy as np


def medians_us(forms: dict[str, Callable[[], Any]], calls: int, gap_s: float) -> dict:
    names = list(forms)
    times: dict[str, list[float]] = {n: [] for n in names}
    for j in range(calls):
        for name in names if j % 2 else names[::-1]:
            if gap_s:
                time.sleep(gap_s)
            t = time.perf_counter()
            forms[name]()
            times[name].append(time.perf_counter() - t)
    return {n: round(float(np.median(ts[50:])) * 1e6, 1) for n, ts in times.items()}


def response_forms() -> dict[str, Callable[[], bytes]]:
    from audiorec.v1 import recommender_pb2 as pb
    from serving.recommender import Answer, Item
    from serving.service import STRATEGY_VALUES, TYPE_VALUES, _add_items

    items = [
        Item(f"p{i:07d}", "podcast", 0.9 - i / 100, f"A podcast, episode {i}") for i in range(10)
    ]
    answer = Answer(items, "PERSONALIZED", "", "v20261207T131500Z")

    def per_message() -> bytes:  # the form replaced (a57ddbc's serving/service.py)
        its = [
            pb.Item(item_id=i.item_id, item_type=TYPE_VALUES.get(i.item_type, 0), type=i.item_type,
                    score=i.score, title=i.title, because_item_id=i.because_item_id,
                    because_title=i.because_title, because_event=i.because_event)
            for i in answer.items
        ]  # fmt: skip
        return pb.RecommendResponse(
            items=its, model_version=answer.model_version,
            strategy=pb.Strategy.Value(answer.strategy), reason=answer.reason,
        ).SerializeToString()  # fmt: skip

    def in_place() -> bytes:
        response = pb.RecommendResponse(
            model_version=answer.model_version,
            strategy=STRATEGY_VALUES[answer.strategy],
            reason=answer.reason,
        )
        _add_items(response.items, answer)
        return response.SerializeToString()

    if per_message() != in_place():
        raise SystemExit("the two forms do not build the same response")
    return {"per_message": per_message, "in_place": in_place}


def stage_forms() -> dict[str, Callable[[], None]]:
    from serving.metrics import Metrics

    written, kept = Metrics(), Metrics()
    kept.start()
    stages = (("features", 3e-4), ("tower", 3e-4), ("index", 2e-4), ("filter", 2e-5))

    def observed() -> None:
        for stage, seconds in stages:
            written.observe_stage(stage, seconds)

    def appended() -> None:
        for stage, seconds in stages:
            kept.observe_stage(stage, seconds)

    return {"observed": observed, "appended": appended}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    # as in a server, where Feast's import does it: before prometheus_client is imported
    os.environ.setdefault("PROMETHEUS_MULTIPROCESS_DIR", tempfile.mkdtemp())
    out: dict[str, Any] = {"calls": args.calls}
    for name, forms in (("response", response_forms()), ("stage_timings", stage_forms())):
        out[name] = {
            "hot_us": medians_us(forms, args.calls, 0.0),
            "paced_300_us": medians_us(forms, max(args.calls // 4, 200), 1 / 300),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

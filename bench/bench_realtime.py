"""Real-time events against `audiorec serve`: the RecordEvents latency, and whether an
event recorded at t is reflected by a Recommend sent at t + 100 ms.

    PYTHONPATH=.:bench .venv/bin/python bench/bench_realtime.py --workdir W
        [--redis-url localhost:6390] [--events 2000] [--trials 200] [--rate 200]

The server runs as its own process; the events go into W's online store (use a work
directory you can spare: the next daily run's batch replaces what they changed).

* record latency: ``--events`` single-event calls (a stream, follow or preview of a
  random catalogue item by a random known user, timestamp now), sent open loop at
  ``--rate`` per second; p50/p95/p99 from the scheduled departure, and ``server_ms``,
  the server's mean handler time for them (its request histogram).
* reflection: ``--trials`` times, a warm user's top audiobook X is read, a stream of X is
  recorded at t, and a Recommend leaves at t + 100 ms: reflected when X is gone from it.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from bench_serving import free_port, pick_users, scrape, server_ms, start_server


def event_maker(art: Any, known: list[str], tag: str, seed: int = 0) -> Callable[[int], Any]:
    """``i -> RecordEventsRequest``: one stream, follow or preview (by ``i``) of a random
    catalogue item by a random ``known`` user, timestamp now, a unique event id."""
    from audiorec.v1 import recommender_pb2 as pb

    rng = np.random.default_rng(seed)
    kinds = ["stream", "follow", "preview"]

    def event(i: int) -> Any:
        return pb.RecordEventsRequest(
            events=[
                pb.Event(
                    user_id=known[rng.integers(len(known))],
                    item_id=str(art.item_ids[rng.integers(len(art.item_ids))]),
                    event_type=kinds[i % 3],
                    event_id=f"{tag}-{time.time_ns()}-{i}",
                )
            ]
        )

    return event


def open_loop(
    calls: list[Callable[[int], Any]], n: int, rate: float
) -> tuple[list[np.ndarray], dict[str, int]]:
    """``n`` calls of each of ``calls`` (``call(i) -> a gRPC future``), taking turns,
    each at ``rate`` per second, open loop: per call, ms from its scheduled departure
    (NaN: no answer), and the answers' status codes."""
    sides = len(calls)
    latencies = [np.full(n, np.nan) for _ in calls]
    codes: dict[str, int] = {}
    pending = []
    gc.collect()  # this process's collector pauses would read as server latency
    gc.disable()
    t0 = time.perf_counter() + 0.1
    for j in range(n * sides):
        due = t0 + j / (rate * sides)
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        side, i = j % sides, j // sides
        fut = calls[side](i)

        def done(f: Any, side: int = side, i: int = i, due: float = due) -> None:
            latencies[side][i] = (time.perf_counter() - due) * 1e3
            codes[f.code().name] = codes.get(f.code().name, 0) + 1

        fut.add_done_callback(done)
        pending.append(fut)
    for f in pending:
        try:
            f.result()
        except Exception:  # noqa: BLE001 - counted in codes
            pass
    gc.enable()
    return latencies, codes


def percentiles(ms: np.ndarray) -> dict[str, float]:
    """p50 / p95 / p99 of the answered calls' ms."""
    ok = ms[~np.isnan(ms)]
    return {f"p{q}_ms": round(float(np.percentile(ok, q)), 2) for q in (50, 95, 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--redis-url", help="the Redis the pipeline loaded (default: SQLite)")
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--trials", type=int, default=200)
    args = ap.parse_args()

    import grpc

    from audiorec.artifact import current_dir
    from audiorec.v1 import recommender_pb2 as pb
    from audiorec.v1 import recommender_pb2_grpc as pb_grpc
    from serving.artifact import Artifact

    wd = Path(args.workdir).resolve()
    art = Artifact.load(current_dir(wd))
    users = pick_users(wd)
    known = [u for u, g in users if g != "unknown"]
    warm = [u for u, g in users if g == "warm"]
    online = ["--online", "redis", "--redis", args.redis_url] if args.redis_url else []
    metrics_port = free_port()
    server, port = start_server(wd, ["--metrics-port", str(metrics_port), *online])
    result: dict = {"store": "redis" if args.redis_url else "sqlite"}
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.RecommenderStub(channel)
        event = event_maker(art, known, "bench")
        for i in range(50):  # warm-up: connections, first pushes
            stub.RecordEvents(event(i), timeout=5)
        before = scrape(metrics_port, "RecordEvents")
        (latencies,), codes = open_loop(
            [lambda i: stub.RecordEvents.future(event(i), timeout=2.0)], args.events, args.rate
        )
        time.sleep(0.1)  # the server's timings reach its registry within 50 ms
        after = scrape(metrics_port, "RecordEvents")
        result["record"] = {
            "rate": args.rate,
            "events": args.events,
            **percentiles(latencies),
            "codes": codes,
            "server_ms": server_ms(before, after),  # mean handler time, OK calls
        }
        print(json.dumps(result["record"]), flush=True)

        reflected, personalized, waits = 0, 0, []
        for trial in range(args.trials):
            user = warm[trial % len(warm)]
            ask = pb.RecommendRequest(user_id=user, k=10, type=art.types.focus)
            first = stub.Recommend(ask, timeout=5)
            if first.strategy != pb.PERSONALIZED or not first.items:
                continue
            personalized += 1
            top = first.items[0].item_id
            t = time.perf_counter()
            stub.RecordEvents(
                pb.RecordEventsRequest(
                    events=[pb.Event(user_id=user, item_id=top, event_type="stream")]
                ),
                timeout=5,
            )
            waits.append(time.perf_counter() - t)
            time.sleep(max(0.0, t + 0.1 - time.perf_counter()))
            after = stub.Recommend(ask, timeout=5)
            reflected += top not in {i.item_id for i in after.items}
        result["reflection"] = {
            "trials": personalized,
            "reflected_at_100ms": reflected,
            "share": round(reflected / max(personalized, 1), 4),
            "record_call_p50_ms": round(float(np.median(waits)) * 1e3, 2) if waits else None,
        }
        print(json.dumps(result["reflection"]), flush=True)
        channel.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    rec = result["record"]
    print(
        f"record p99 {rec['p99_ms']} ms at {rec['rate']:g}/s (target <= 5 ms: "
        f"{'met' if rec['p99_ms'] <= 5 else 'MISSED'}); reflected at t + 100 ms in "
        f"{result['reflection']['reflected_at_100ms']}/{result['reflection']['trials']} trials"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""RecordEvents of two checkouts, interleaved: which is faster, in one phase of the machine.

    PYTHONPATH=.:bench .venv/bin/python bench/bench_realtime_ab.py --workdir W
        --redis-url localhost:6390 --other /tmp/before [--events 3000] [--rate 100]

On a shared VM the latency of one run moves by a millisecond from one minute to the next,
more than most changes to the request path (docs/benchmarks.md), so runs one after the
other do not compare. This one starts ``audiorec serve`` twice on ``W``, once from this
checkout ("this") and once from ``--other`` ("other"), and sends the calls to them in
turn: each server gets ``--events`` single-event calls at ``--rate`` per second (the
same calls bench_realtime.py sends), both in the same seconds. Then, the same way, a
Health Check to each at the same rate: the floor of any call on this machine (gRPC, the
client and the wake-ups), beside which the RecordEvents figures read.

Latency is from each call's scheduled departure (open loop); ``server_ms`` is the
server's mean handler time (its request histogram). The events go into W's online store.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_realtime import event_maker, open_loop, percentiles
from bench_serving import free_port, pick_users, scrape, server_ms, start_server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--redis-url", help="the Redis the pipeline loaded (default: SQLite)")
    ap.add_argument("--other", required=True, help="the other checkout's directory")
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=100.0)
    args = ap.parse_args()

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from audiorec.artifact import current_dir
    from audiorec.v1 import recommender_pb2_grpc as pb_grpc
    from serving.artifact import Artifact

    wd = Path(args.workdir).resolve()
    art = Artifact.load(current_dir(wd))
    known = [u for u, g in pick_users(wd) if g != "unknown"]
    online = ["--online", "redis", "--redis", args.redis_url] if args.redis_url else []
    trees = {"this": None, "other": Path(args.other).resolve()}
    servers = {}
    for name, tree in trees.items():
        metrics_port = free_port()
        proc, port = start_server(wd, ["--metrics-port", str(metrics_port), *online], tree)
        servers[name] = (proc, port, metrics_port)
    result: dict = {"rate": args.rate, "events": args.events, "other": str(trees["other"])}
    try:
        channels = {n: grpc.insecure_channel(f"127.0.0.1:{s[1]}") for n, s in servers.items()}
        stubs = {n: pb_grpc.RecommenderStub(c) for n, c in channels.items()}
        health = {n: health_pb2_grpc.HealthStub(c) for n, c in channels.items()}
        event = event_maker(art, known, "ab")
        for i in range(50):  # warm-up: connections, first pushes
            for stub in stubs.values():
                stub.RecordEvents(event(i), timeout=5)
        before = {n: scrape(s[2], "RecordEvents") for n, s in servers.items()}
        record, codes = open_loop(
            [lambda i, s=s: s.RecordEvents.future(event(i), timeout=2.0) for s in stubs.values()],
            args.events,
            args.rate,
        )
        time.sleep(0.1)  # the servers' timings reach their registries within 50 ms
        after = {n: scrape(s[2], "RecordEvents") for n, s in servers.items()}
        check = health_pb2.HealthCheckRequest()
        floor, _ = open_loop(
            [lambda i, h=h: h.Check.future(check, timeout=2.0) for h in health.values()],
            args.events,
            args.rate,
        )
        for (name, lat), fl in zip(zip(servers, record), floor):
            result[name] = {
                "record": {**percentiles(lat), "server_ms": server_ms(before[name], after[name])},
                "health_check": percentiles(fl),
            }
        result["codes"] = codes
        for c in channels.values():
            c.close()
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=20)
    for name in servers:
        r = result[name]
        print(
            f"{name}: RecordEvents p50 {r['record']['p50_ms']} / p99 {r['record']['p99_ms']} ms "
            f"(server {r['record']['server_ms']} ms); Health Check p50 "
            f"{r['health_check']['p50_ms']} / p99 {r['health_check']['p99_ms']} ms"
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

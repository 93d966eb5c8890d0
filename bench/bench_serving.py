"""Open-loop load test of `audiorec serve` on a work directory the pipeline has run on.

    PYTHONPATH=.:bench .venv/bin/python bench/bench_serving.py --workdir W
        [--rates 100,300,500] [--duration 60] [--redis]

The server runs as its own process (`audiorec serve`); the load generator is another
process that sends Recommend calls on a fixed schedule (open loop: request i leaves at
t0 + i / rate whether or not earlier ones have returned) and measures each latency from
its scheduled departure, so a stalled server shows up as latency, not as a slower rate.
Users: 70% with history, 20% cold-start (no audiobook history), 10% unknown; each row
counts the strategies each group was answered with (warm: PERSONALIZED, cold:
COLD_START, unknown: FALLBACK when all is well).
Per-stage means come from the server's Prometheus histograms (scraped before and after).
With --redis the same runs go against a fresh redis-server the features are
materialized into first.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_users(wd: Path, n: int = 2000) -> list[tuple[str, str]]:
    """(user_id, group): 70% warm (in the artifact's consumed table), 20% known without
    consumption there (cold start), 10% unknown, shuffled with a fixed seed."""
    import duckdb

    from audiorec.artifact import current_dir

    art = current_dir(wd)
    con = duckdb.connect()
    warm = [
        r[0]
        for r in con.sql(
            f"SELECT DISTINCT user_id FROM '{art}/consumed.parquet' "
            f"ORDER BY hash(user_id) LIMIT {int(n * 0.7)}"
        ).fetchall()
    ]
    everyone = [
        r[0]
        for r in con.sql(
            f"SELECT DISTINCT user_id FROM '{wd}/features/user_profile/*.parquet' "
            f"WHERE user_id NOT IN (SELECT user_id FROM '{art}/consumed.parquet') "
            f"ORDER BY hash(user_id) LIMIT {int(n * 0.2)}"
        ).fetchall()
    ]
    unknown = [f"u_unknown_{i}" for i in range(int(n * 0.1))]
    users = (
        [(u, "warm") for u in warm]
        + [(u, "cold") for u in everyone]
        + [(u, "unknown") for u in unknown]
    )
    np.random.default_rng(0).shuffle(users)
    return users


def load(target: str, users: list[tuple[str, str]], rate: float, duration: float, out) -> None:
    """Child process: the open-loop generator; sends back (latencies_s, codes, and how
    many answers of each strategy each user group got)."""
    import grpc

    from audiorec.v1 import recommender_pb2 as pb
    from audiorec.v1 import recommender_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(target)
    stub = pb_grpc.RecommenderStub(channel)
    stub.Recommend(pb.RecommendRequest(user_id=users[0][0], k=10, item_type=pb.AUDIOBOOK))
    n = int(rate * duration)
    latencies = np.full(n, np.nan)
    codes: dict[str, int] = {}
    strategies: dict[str, int] = {}
    pending = []
    t0 = time.perf_counter() + 0.1
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        user, group = users[i % len(users)]
        fut = stub.Recommend.future(
            pb.RecommendRequest(user_id=user, k=10, item_type=pb.AUDIOBOOK), timeout=2.0
        )

        def done(f, i=i, due=due, group=group):
            latencies[i] = time.perf_counter() - due
            code = f.code().name
            codes[code] = codes.get(code, 0) + 1
            if code == "OK":
                key = f"{group}:{pb.Strategy.Name(f.result().strategy)}"
                strategies[key] = strategies.get(key, 0) + 1

        fut.add_done_callback(done)
        pending.append(fut)
    for f in pending:
        try:
            f.result()
        except Exception:  # noqa: BLE001 - counted by code in the callback
            pass
    time.sleep(0.05)
    out.send((latencies, codes, strategies))
    channel.close()


def rss_gib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        pass
    return None


def scrape(metrics_port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("audiorec_stage_seconds_sum") or line.startswith(
            "audiorec_stage_seconds_count"
        ):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def stage_means(before: dict, after: dict) -> dict[str, float]:
    out = {}
    for key in after:
        if "_sum{" in key:
            stage = key.split('stage="')[1].split('"')[0]
            count_key = key.replace("_sum{", "_count{")
            n = after[count_key] - before.get(count_key, 0)
            if n:
                out[stage] = round((after[key] - before.get(key, 0)) / n * 1e3, 3)
    return out


def run_store(
    wd: Path, users: list[str], rates: list[float], duration: float, online: list[str]
) -> list[dict]:
    port, metrics_port = free_port(), free_port()
    t_start = time.perf_counter()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--workdir",
            str(wd),
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--log-level",
            "WARNING",
            *online,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = server.stdout.readline()
        if "serving" not in line:
            raise SystemExit(f"server did not start: {line!r}")
        print(
            json.dumps(
                {
                    "startup_s": round(time.perf_counter() - t_start, 1),
                    "rss_gib_after_start": rss_gib(server.pid),
                }
            ),
            flush=True,
        )
        rows = []
        for rate in rates:
            before = scrape(metrics_port)
            parent, child = mp.Pipe()
            proc = mp.get_context("spawn").Process(
                target=load, args=(f"127.0.0.1:{port}", users, rate, duration, child)
            )
            proc.start()
            latencies, codes, strategies = parent.recv()
            proc.join()
            ok = latencies[~np.isnan(latencies)]
            ms = lambda q: round(float(np.percentile(ok, q)) * 1e3, 2)  # noqa: E731
            row = {
                "rate": rate,
                "sent": len(latencies),
                "p50_ms": ms(50),
                "p95_ms": ms(95),
                "p99_ms": ms(99),
                "errors": sum(v for k, v in codes.items() if k != "OK"),
                "codes": codes,
                "strategy_by_group": dict(sorted(strategies.items())),
                "stage_mean_ms": stage_means(before, scrape(metrics_port)),
            }
            row["server_rss_gib"] = rss_gib(server.pid)
            print(json.dumps(row), flush=True)
            rows.append(row)
        return rows
    finally:
        server.terminate()
        server.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--rates", default="100,300,500")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--redis", action="store_true")
    ap.add_argument(
        "--redis-url",
        help="serve from this Redis, already loaded by the pipeline (no SQLite run, no load)",
    )
    ap.add_argument("--server-args", default="", help="extra `audiorec serve` arguments")
    args = ap.parse_args()
    wd = Path(args.workdir).resolve()
    rates = [float(r) for r in args.rates.split(",")]
    users = pick_users(wd)
    extra = args.server_args.split()
    if args.redis_url:
        online = ["--online", "redis", "--redis", args.redis_url, *extra]
        result = {"redis": run_store(wd, users, rates, args.duration, online)}
    else:
        result = {"sqlite": run_store(wd, users, rates, args.duration, extra)}
    if args.redis and not args.redis_url:
        from datetime import datetime, timezone

        from bench_features import start_redis

        from audiorec.featurestore import FeatureStoreConfig
        from training.features.store import apply_repo, materialize

        proc, url = start_redis(Path(tempfile.mkdtemp()))
        try:
            store = apply_repo(wd, FeatureStoreConfig(online="redis", redis=url))
            materialize(
                store, datetime.now(timezone.utc), start=datetime(1970, 1, 2, tzinfo=timezone.utc)
            )
            result["redis"] = run_store(
                wd, users, rates, args.duration, ["--online", "redis", "--redis", url, *extra]
            )
        finally:
            proc.terminate()
            apply_repo(wd)  # leave the work directory on its SQLite registry entry
    for store, rows in result.items():
        within = [r["rate"] for r in rows if r["p99_ms"] <= 10 and r["errors"] == 0]
        print(
            f"{store}: highest rate with p99 <= 10 ms and no errors: "
            f"{max(within) if within else 'none'}"
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

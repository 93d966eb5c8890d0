"""Open-loop load test of `audiorec serve` on a work directory the pipeline has run on.

    PYTHONPATH=.:bench .venv/bin/python bench/bench_serving.py --workdir W
        [--rates 100,300,500] [--duration 60] [--redis] [--processes 1,2] [--channels 4]
        [--server-args "--tower-runtime tensorflow"] [--swap-to VERSION --swap-at 20]

The server runs as its own process (`audiorec serve`); the load generator is another
process that sends Recommend calls on a fixed schedule (open loop: request i leaves at
t0 + i / rate whether or not earlier ones have returned) and measures each latency from
its scheduled departure, so a stalled server shows up as latency, not as a slower rate.
Users: 70% with history, 20% cold-start (no audiobook history), 10% unknown; each row
counts the strategies each group was answered with (warm: PERSONALIZED, cold:
COLD_START, unknown: FALLBACK when all is well).
Calls alternate between the item types. The generator spreads its calls over
``--channels`` gRPC channels (connections), which the kernel balances over the server
processes of ``--processes N`` (SO_REUSEPORT).
Per-stage means and the server time per Recommend (the handler, from admission to the
response message) come from the server's Prometheus histograms (scraped before and
after). Before the load, in the same run, the request's primitives are timed on their
own (serving_primitives.py): one read of a user's row through the store's own client
(redis-py HGETALL of Feast's key; SQLite: one SELECT per view table), one user-tower
forward pass (the runtime the server uses), one item-index query per item type, the
consumed-items filter; each back to back (hot) and at each load's spacing (paced). Each
row reports server time / their sum, both ways, with the verdict against 2x.
With --redis the same runs go against a fresh redis-server the features are
materialized into first. With --swap-to, each run moves ``current`` to that version
``--swap-at`` seconds in (a hot swap under load: the server loads it beside the one it
serves and swaps), reports the errors and the p99 of the 15 s before and after, and moves
``current`` back afterwards. Every row reports the generator's CPU share (it runs on the
same machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from serving_primitives import primitives


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


def load(
    target: str,
    users: list[tuple[str, str]],
    rate: float,
    duration: float,
    out,
    channels: int = 4,
    types: tuple[str, ...] = ("audiobook", "podcast"),
    swap: tuple[str, str, float] | None = None,
) -> None:
    """Child process: the open-loop generator; sends back (latencies_s, codes, how many
    answers of each strategy each user group got, the generator's CPU seconds and wall
    seconds, the index of the call at which ``swap`` = (workdir, version, at_s) moved
    ``current``)."""
    import grpc

    from audiorec.artifact import set_current
    from audiorec.v1 import recommender_pb2 as pb
    from audiorec.v1 import recommender_pb2_grpc as pb_grpc

    chans = [
        # one connection each (a local subchannel pool), so the kernel can spread them
        grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    stubs = [pb_grpc.RecommenderStub(c) for c in chans]
    for stub in stubs:
        stub.Recommend(pb.RecommendRequest(user_id=users[0][0], k=10, type=types[0]), timeout=30)
    n = int(rate * duration)
    latencies = np.full(n, np.nan)
    codes: dict[str, int] = {}
    strategies: dict[str, int] = {}
    pending = []
    swap_i = int(swap[2] * rate) if swap else -1
    # The generator's own collector pauses would delay departures and read as server
    # latency (latency runs from the scheduled departure): its heap grows by a future
    # per call, so its full collections lengthen as the run goes on. Off for the run.
    gc.collect()
    gc.disable()
    cpu0 = time.process_time()
    t0 = time.perf_counter() + 0.1
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if i == swap_i and swap is not None:  # a new version published under load
            # on its own thread, imported beforehand: the import (~0.1 s) and the atomic
            # write done here delayed every departure behind them (read as server latency)
            threading.Thread(target=set_current, args=swap[:2], daemon=True).start()
        user, group = users[i % len(users)]
        fut = stubs[i % channels].Recommend.future(
            pb.RecommendRequest(user_id=user, k=10, type=types[i % len(types)]), timeout=2.0
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
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    gc.enable()
    time.sleep(0.05)
    out.send((latencies, codes, strategies, cpu, wall, swap_i))
    for c in chans:
        c.close()


def swap_window(latencies: np.ndarray, rate: float, at: int, version: str) -> dict:
    """Latency around a hot swap: the calls due in the 15 s before ``at`` against those
    due in the 15 s after (the new version loads, then takes over)."""
    span = int(15 * rate)
    before, after = latencies[max(0, at - span) : at], latencies[at : at + span]

    def p99(x: np.ndarray) -> float | None:
        x = x[~np.isnan(x)]
        return round(float(np.percentile(x, 99)) * 1e3, 2) if len(x) else None

    return {
        "to_version": version,
        "at_call": at,
        "p99_ms_15s_before": p99(before),
        "p99_ms_15s_after": p99(after),
        "unanswered_after": int(np.isnan(after).sum()),
        # when the slow calls were due: (seconds after current moved, ms), slowest first;
        # the server notices within its reload interval, then builds, then swaps
        "slowest_after": [
            (round(i / rate, 2), round(float(after[i]) * 1e3, 1))
            for i in np.argsort(-np.nan_to_num(after, nan=np.inf))[:10]
        ],
    }


def rss_gib(pid: int) -> float | None:
    """Resident memory of the server and its children (serve --processes)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss + sum(
            c.memory_info().rss for c in proc.children(recursive=True)
        )
    except psutil.Error:
        return None
    return round(total / 2**30, 2)


def scrape(metrics_port: int, rpc: str = "Recommend") -> dict[str, float]:
    """The server's series this bench reads; the request times of ``rpc``'s OK calls."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith(("audiorec_reload_total", "audiorec_serving_info")):
            key, value = line.rsplit(" ", 1)
            values[key] = values.get(key, 0.0) + float(value)
        elif line.startswith(("audiorec_stage_seconds_sum", "audiorec_stage_seconds_count")):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
        elif (
            line.startswith(("audiorec_request_seconds_sum", "audiorec_request_seconds_count"))
            and f'rpc="{rpc}"' in line
            and 'code="OK"' in line
        ):
            key = line.split("{")[0]
            values[key] = values.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return values


def server_ms(before: dict, after: dict) -> float | None:
    """Mean handler time of the successful calls (of the rpc scraped) between two scrapes."""
    n = after.get("audiorec_request_seconds_count", 0) - before.get(
        "audiorec_request_seconds_count", 0
    )
    if not n:
        return None
    total = after["audiorec_request_seconds_sum"] - before.get("audiorec_request_seconds_sum", 0)
    return round(total / n * 1e3, 3)


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


def start_server(
    wd: Path, args: list[str], tree: Path | None = None
) -> tuple[subprocess.Popen, int]:
    """`audiorec serve` on ``wd`` in its own process, once it says it is serving; the code
    of checkout ``tree`` (default: this one)."""
    port = free_port()
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
            "--log-level",
            "WARNING",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tree,
    )
    line = server.stdout.readline() if server.stdout else ""
    if "serving" not in line:
        server.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return server, port


def run_store(
    wd: Path,
    users: list[str],
    rates: list[float],
    duration: float,
    online: list[str],
    processes: int = 1,
    channels: int = 4,
    prims: dict | None = None,
    swap: tuple[str, float] | None = None,
) -> list[dict]:
    metrics_port = free_port()
    t_start = time.perf_counter()
    server, port = start_server(
        wd, ["--metrics-port", str(metrics_port), "--processes", str(processes), *online]
    )
    try:
        start = {
            "processes": processes,
            "startup_s": round(time.perf_counter() - t_start, 1),
            "rss_gib_after_start": rss_gib(server.pid),
        }
        print(json.dumps(start), flush=True)
        rows: list[dict] = []
        for rate in rates:
            before = scrape(metrics_port)
            parent, child = mp.Pipe()
            swap_to = (str(wd), swap[0], swap[1]) if swap else None
            proc = mp.get_context("spawn").Process(
                target=load,
                args=(f"127.0.0.1:{port}", users, rate, duration, child, channels),
                kwargs={"swap": swap_to},
            )
            proc.start()
            latencies, codes, strategies, cpu, wall, swap_i = parent.recv()
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
                # the load generator on the same machine: CPU seconds per wall second
                "generator_cpu_share_of_one_core": round(cpu / wall, 3),
            }
            if swap_i >= 0:
                row["swap"] = swap_window(latencies, rate, swap_i, swap[0] if swap else "")
                # did the server take the new version? (its reload counters, all processes)
                row["swap"]["reloads"] = {
                    k.split("{", 1)[-1].rstrip("}"): v - before.get(k, 0.0)
                    for k, v in scrape(metrics_port).items()
                    if k.startswith("audiorec_reload_total")
                }
            after = scrape(metrics_port)
            row["stage_mean_ms"] = stage_means(before, after)
            row["server_ms"] = server_ms(before, after)
            if prims and row["server_ms"]:
                row["server_over_primitives"] = round(row["server_ms"] / prims["sum_ms"], 2)
                paced = prims["paced"].get(str(rate))
                if paced:  # the same primitives at this load's spacing (serving_primitives)
                    row["server_over_paced_primitives"] = round(
                        row["server_ms"] / paced["sum_ms"], 2
                    )
            row["server_rss_gib"] = rss_gib(server.pid)
            row["server_startup_s"] = start["startup_s"]  # process start to SERVING
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
    ap.add_argument("--processes", default="1", help="server process counts to run, e.g. 1,2")
    ap.add_argument("--channels", type=int, default=4, help="gRPC channels of the generator")
    ap.add_argument(
        "--swap-to",
        help="move current to this version during each run (a hot swap under load), then back",
    )
    ap.add_argument("--swap-at", type=float, default=20.0, help="seconds into the run")
    args = ap.parse_args()
    wd = Path(args.workdir).resolve()
    rates = [float(r) for r in args.rates.split(",")]
    users = pick_users(wd)
    extra = args.server_args.split()
    counts = [int(p) for p in args.processes.split(",")]

    def runs(store: str, online: list[str], url: str | None) -> dict:
        prims = primitives(wd, url, users, rates)
        print(json.dumps({"store": store, "primitives": prims}), flush=True)
        out = {"primitives": prims}
        from audiorec.artifact import current_version, set_current

        swap = (args.swap_to, args.swap_at) if args.swap_to else None
        home = current_version(wd)
        for n in counts:
            try:
                out[f"processes_{n}"] = run_store(
                    wd, users, rates, args.duration, online, n, args.channels, prims, swap
                )
            finally:
                if home:
                    set_current(wd, home)
        return out

    if args.redis_url:
        online = ["--online", "redis", "--redis", args.redis_url, *extra]
        result = {"redis": runs("redis", online, args.redis_url)}
    else:
        result = {"sqlite": runs("sqlite", extra, None)}
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
            result["redis"] = runs("redis", ["--online", "redis", "--redis", url, *extra], url)
        finally:
            proc.terminate()
            apply_repo(wd)  # leave the work directory on its SQLite registry entry
    for store, per_count in result.items():
        for key, rows in per_count.items():
            if key == "primitives":
                continue
            base = rows[0]["p50_ms"]
            within = [r["rate"] for r in rows if r["p99_ms"] <= 3 * base and r["errors"] == 0]
            five = [r["rate"] for r in rows if r["p99_ms"] <= 5 and r["errors"] == 0]
            print(
                f"{store} {key}: highest rate with p99 <= 3 x p50 at the lowest rate "
                f"({3 * base:.2f} ms) and no errors: {max(within) if within else 'none'}; "
                f"with p99 <= 5 ms: {max(five) if five else 'none'}"
            )
            for r in rows:
                hot, paced = r.get("server_over_primitives"), r.get("server_over_paced_primitives")
                if hot is None:
                    continue
                print(
                    f"{store} {key} at {r['rate']:g}/s: server time / sum of primitives "
                    f"{hot}x back to back, {paced}x at the load's spacing "
                    f"(target <= 2x: {'met' if hot <= 2 else 'missed'}, "
                    f"{'met' if paced is not None and paced <= 2 else 'missed'})"
                )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

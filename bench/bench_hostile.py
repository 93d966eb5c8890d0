"""Reliability under attack and under a failing feature store (issue 15), measured.

    .venv/bin/python bench/bench_hostile.py [--workdir runs/bench-hostile] [--phase-s 15]
        [--repo .] [--out report.json]

Builds (once) a tiny world and runs `audiorec pipeline` on it with Redis as the online
store, reached through a proxy that can break (tests/tcp_proxy.py: down, slow 300 ms,
hung). Then `audiorec serve` runs as its own process, and a separate load process sends
50 Recommend/s of legitimate traffic (open loop, 70% users with history, 30% unknown)
through these phases:

1. baseline: legitimate load alone (deadline 1 s);
2. attack: the same, plus (in alternate 5 s windows, so that quiet and attacked windows
   compare on this noisy VM) an attacker process sending 5 calls/s of oversized valid
   requests (an unknown user with 50,000 or 3,500 x "en" languages, a known user with
   200,000 or 5,000 empty languages) and garbage bytes; "flood": the same mix back to
   back, as fast as one client process can (on 2 shared cores it also takes CPU from the
   server and the load generator: a volume attack, not a request of death);
3. Redis down, 4. Redis slow (300 ms per command), 5. Redis hung: legitimate calls carry a
   100 ms deadline; each phase ends with Redis back, timing the return to PERSONALIZED.

Prints one table per phase: legitimate p50/p99, the share answered within the deadline,
strategies, server RSS before/peak/after, server CPU, the latency of a health check sent
every 0.2 s. ``--repo`` runs another checkout's server and
pipeline (the "before" column: an older commit in a git worktree).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from tcp_proxy import FaultyProxy  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int, workdir: Path) -> subprocess.Popen:
    import redis

    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def cli(repo: Path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(repo), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=repo, env=env, **kw)


def prepare(repo: Path, wd: Path, redis_addr: str) -> tuple[Path, list[str]]:
    """A tiny world and a pipeline run whose online store is the Redis behind the proxy."""
    world = wd / "world"
    if not (world / "events.parquet").is_file():
        assert (
            cli(
                repo, "generate", "--scale", "tiny", "--seed", "0", "--out", str(world), "--quiet"
            ).wait()
            == 0
        )
    cfg = wd / "pipeline.json"
    cfg.write_text(
        json.dumps(
            {
                "hgnn": {
                    "hidden_dim": 32,
                    "out_dim": 16,
                    "max_epochs": 4,
                    "patience": 4,
                    "max_steps_per_epoch": 40,
                },
                "two_tower": {"layers": [64, 32], "max_epochs": 6, "patience": 6, "batch_size": 64},
            }
        )
    )
    run = wd / "run"
    rc = cli(
        repo,
        "pipeline",
        "--data",
        str(world),
        "--workdir",
        str(run),
        "--config",
        str(cfg),
        "--online",
        "redis",
        "--redis",
        redis_addr,
        "--quiet",
        stdout=subprocess.DEVNULL,
    ).wait()
    if rc != 0:
        raise SystemExit(f"pipeline failed ({rc})")
    import duckdb

    con = duckdb.connect()
    known = [
        r[0]
        for r in con.sql(
            f"SELECT DISTINCT user_id FROM '{world}/events.parquet' ORDER BY hash(user_id) "
            "LIMIT 700"
        ).fetchall()
    ]
    users = known + [f"u_unknown_{i}" for i in range(300)]
    np.random.default_rng(0).shuffle(users)
    return run, users


def legit(
    target: str,
    users: list[str],
    rate: float,
    seconds: float,
    deadline: float,
    start_wall: float,
    out,
) -> None:
    """Open-loop load: call i leaves at t0 + i / rate; latency from its scheduled time."""
    import grpc

    from audiorec.v1 import recommender_pb2 as pb
    from audiorec.v1 import recommender_pb2_grpc as pb_grpc

    ch = grpc.insecure_channel(target)
    stub = pb_grpc.RecommenderStub(ch)
    results, lock, pending = [], threading.Lock(), []
    t0 = time.perf_counter() + (start_wall - time.time())
    for i in range(int(rate * seconds)):
        due = t0 + i / rate
        time.sleep(max(0.0, due - time.perf_counter()))
        fut = stub.Recommend.future(
            pb.RecommendRequest(user_id=users[i % len(users)], k=10, item_type=1 + i % 2),
            timeout=deadline,
        )

        def done(f, due=due):
            ms = (time.perf_counter() - due) * 1e3
            try:
                r = f.result()
                row = (ms, "OK", pb.Strategy.Name(r.strategy), due - t0)
            except grpc.RpcError as exc:
                row = (ms, exc.code().name, "", due - t0)
            with lock:
                results.append(row)

        fut.add_done_callback(done)
        pending.append(fut)
    for f in pending:
        try:
            f.result()
        except Exception:  # noqa: BLE001 - recorded in the callback
            pass
    time.sleep(0.1)
    out.put(results)


def attacker(
    target: str, known_user: str, start_wall: float, seconds: float, rate: float | None, out
) -> None:
    """Sends the attack mix at ``rate`` calls/s (back to back when None) during the odd
    ATTACK_WINDOW_S windows after ``start_wall``, and nothing during the even ones."""
    import grpc

    from audiorec.v1 import recommender_pb2 as pb
    from audiorec.v1 import recommender_pb2_grpc as pb_grpc

    ch = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 8 << 20)])
    stub = pb_grpc.RecommenderStub(ch)
    raw = ch.unary_unary("/audiorec.v1.Recommender/Recommend")
    # Oversized (over the 16 KiB receive limit) and in-limit (3,500 duplicates reach the
    # handler) variants of the attack; a 950,000-entry list is left out: it costs
    # the unbounded server 88 s of CPU and 11.8 GB each (issue 15), not a fair fight.
    attacks = [
        pb.RecommendRequest(user_id="u_nobody", k=1000, item_type=1, languages=["en"] * 50_000),
        pb.RecommendRequest(user_id="u_nobody", k=1000, item_type=2, languages=["en"] * 3_500),
        pb.RecommendRequest(user_id=known_user, k=1000, item_type=1, languages=[""] * 200_000),
        pb.RecommendRequest(user_id=known_user, k=1000, item_type=1, languages=[""] * 5_000),
    ]
    # Serialized once, sent as bytes: the attacker's own CPU stays off the shared cores
    # (serializing 200,000 strings per call would measure the client, not the server).
    payloads = [a.SerializeToString() for a in attacks] + [os.urandom(2000)]
    del stub
    codes: dict[str, int] = {}
    i, sent_from = 0, None
    while time.time() < start_wall + seconds:
        window = int((time.time() - start_wall) // ATTACK_WINDOW_S)
        if time.time() < start_wall or window % 2 == 0:
            sent_from = None
            time.sleep(0.01)
            continue
        if rate is not None:
            if sent_from is None:
                sent_from, i0 = time.time(), i
            time.sleep(max(0.0, sent_from + (i - i0) / rate - time.time()))
        try:
            raw(payloads[i % len(payloads)], timeout=5)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        codes[code] = codes.get(code, 0) + 1
        i += 1
    t = os.times()
    out.put({**codes, "attacker_cpu_s": round(t.user + t.system, 2)})


ATTACK_WINDOW_S = 5.0


def cpu_s(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.NoSuchProcess:
        return float("nan")


def rss_mb(pid: int) -> float:
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return float("nan")


def health_ms(target: str):
    """A function timing one standard health check (ms; inf when it fails)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))

    def check() -> float:
        t0 = time.perf_counter()
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return float("inf")
        return (time.perf_counter() - t0) * 1e3

    return check


def phase(name, target, users, pid, seconds, deadline, during=None, after=None):
    q = mp.get_context("spawn").Queue()
    health = health_ms(target)
    health_lat = []
    rss, cpu0 = [rss_mb(pid)], cpu_s(pid)
    start_wall = time.time() + 1.5
    p = mp.get_context("spawn").Process(
        target=legit, args=(target, users, 50.0, seconds, deadline, start_wall, q)
    )
    p.start()
    extra = during(start_wall) if during else None
    stop = time.monotonic() + seconds + 1
    while time.monotonic() < stop:
        rss.append(rss_mb(pid))
        health_lat.append(health())
        time.sleep(0.2)
    results = q.get(timeout=120)
    p.join()
    extra_result = extra() if extra else None
    rss.append(rss_mb(pid))
    cpu = cpu_s(pid) - cpu0
    recovered = after() if after else None
    ms = np.array([r[0] for r in results])
    ok = np.array([r[1] == "OK" for r in results])
    within = ok & (ms <= deadline * 1e3)
    strategies = {}
    for r in results:
        key = r[2] or r[1]
        strategies[key] = strategies.get(key, 0) + 1
    settled = ms[np.array([r[3] for r in results]) > 1.0]  # after the first second
    row = {
        "phase": name,
        "calls": len(results),
        "deadline_ms": deadline * 1e3,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "p99_after_1s_ms": round(float(np.percentile(settled, 99)), 2),
        "answered_in_deadline": round(float(within.mean()), 4),
        "strategies": strategies,
        "rss_before_mb": round(rss[0], 1),
        "rss_peak_mb": round(max(rss), 1),
        "rss_after_mb": round(rss[-1], 1),
        "server_cpu_s": round(cpu, 2),
        "health_p50_ms": round(float(np.percentile(health_lat, 50)), 2),
        "health_max_ms": round(float(np.max(health_lat)), 2),
    }
    if extra_result is not None:
        # Attack windows alternate with quiet ones (ATTACK_WINDOW_S each): on this noisy
        # VM only neighbouring windows compare fairly.
        offsets = np.array([r[3] for r in results])
        on = (offsets // ATTACK_WINDOW_S).astype(int) % 2 == 1
        row["attacker_codes"] = extra_result
        row["p99_quiet_ms"] = round(float(np.percentile(ms[~on], 99)), 2)
        row["p99_attacked_ms"] = round(float(np.percentile(ms[on], 99)), 2)
        row["p50_quiet_ms"] = round(float(np.percentile(ms[~on], 50)), 2)
        row["p50_attacked_ms"] = round(float(np.percentile(ms[on], 50)), 2)
    if recovered is not None:
        row["recovered_s"] = recovered
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/bench-hostile")
    ap.add_argument("--repo", default=str(ROOT), help="checkout whose server is measured")
    ap.add_argument("--phase-s", type=float, default=30.0)
    ap.add_argument("--phases", default="baseline,attack,flood,down,slow,hang")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    repo, wd = Path(args.repo).resolve(), Path(args.workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    rport = free_port()
    redis_proc = start_redis(rport, wd)
    proxy = FaultyProxy(("127.0.0.1", rport), delay_s=0.3)
    server = None
    try:
        run, users = prepare(repo, wd, proxy.address)
        port = free_port()
        server = cli(
            repo,
            "serve",
            "--workdir",
            str(run),
            "--port",
            str(port),
            "--online",
            "redis",
            "--redis",
            proxy.address,
            "--log-level",
            "WARNING",
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = server.stdout.readline()
        if f":{port}" not in line:
            raise SystemExit(f"server did not start: {line!r}")
        target = f"127.0.0.1:{port}"
        import grpc

        from audiorec.v1 import recommender_pb2 as pb
        from audiorec.v1 import recommender_pb2_grpc as pb_grpc

        stub = pb_grpc.RecommenderStub(grpc.insecure_channel(target))
        known = next(u for u in users if not u.startswith("u_unknown"))

        def personalized() -> bool:
            try:
                return (
                    stub.Recommend(
                        pb.RecommendRequest(user_id=known, k=10, item_type=1), timeout=1
                    ).strategy
                    != pb.FALLBACK
                )
            except grpc.RpcError:
                return False

        def recover() -> float:
            t0 = time.monotonic()
            proxy.set_mode("pass")
            while not personalized():
                if time.monotonic() - t0 > 60:
                    return float("inf")
                time.sleep(0.05)
            return round(time.monotonic() - t0, 2)

        rows = []
        for name in args.phases.split(","):
            if name == "baseline":
                rows.append(phase(name, target, users, server.pid, args.phase_s, 1.0))
            elif name in ("attack", "flood"):

                def during(start_wall, rate=5.0 if name == "attack" else None):
                    q = mp.get_context("spawn").Queue()
                    p = mp.get_context("spawn").Process(
                        target=attacker, args=(target, known, start_wall, args.phase_s, rate, q)
                    )
                    p.start()
                    return lambda: (q.get(timeout=600), p.join())[0]

                rows.append(
                    phase(name, target, users, server.pid, args.phase_s, 1.0, during=during)
                )
            else:
                proxy.set_mode(name)
                rows.append(
                    phase(
                        f"redis {name}", target, users, server.pid, args.phase_s, 0.1, after=recover
                    )
                )
        print(
            "\n| phase | deadline | p50 ms | p99 ms | p99 after 1 s | answered in deadline "
            "| strategies | RSS before / peak / after MB | server CPU s | health check "
            "p50 / max ms | back to PERSONALIZED s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['phase']} | {r['deadline_ms']:.0f} ms | {r['p50_ms']} | {r['p99_ms']} "
                f"| {r['p99_after_1s_ms']} "
                f"| {r['answered_in_deadline']:.1%} | "
                f"{', '.join(f'{k} {v}' for k, v in sorted(r['strategies'].items()))} | "
                f"{r['rss_before_mb']} / {r['rss_peak_mb']} / {r['rss_after_mb']} | "
                f"{r['server_cpu_s']} | {r['health_p50_ms']} / {r['health_max_ms']} | "
                f"{r.get('recovered_s', '')} |"
            )
        print(
            "\n| attack | quiet windows p50 / p99 ms | attacked windows p50 / p99 ms | p99 "
            "ratio | attacker calls (codes) |"
        )
        print("|---|---|---|---|---|")
        for r in rows:
            if "p99_quiet_ms" in r:
                codes = {k: v for k, v in r["attacker_codes"].items() if k != "attacker_cpu_s"}
                listed = ", ".join(f"{k} {v}" for k, v in codes.items())
                print(
                    f"| {r['phase']} | {r['p50_quiet_ms']} / {r['p99_quiet_ms']} | "
                    f"{r['p50_attacked_ms']} / {r['p99_attacked_ms']} | "
                    f"{r['p99_attacked_ms'] / r['p99_quiet_ms']:.2f}x | "
                    f"{sum(codes.values())} ({listed}) |"
                )
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=2))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        proxy.close()
        redis_proc.terminate()


if __name__ == "__main__":
    main()

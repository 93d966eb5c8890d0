"""Benchmark the feature store: feature-job time, materialize throughput, online reads.

    .venv/bin/python bench/bench_features.py --scale demo
    .venv/bin/python bench/bench_features.py --scale large --history-days 14

Steps: generate a world (or reuse --world), write random item embeddings (HGNN 64-d, text
384-d: the job's cost does not depend on where the vectors came from), run the feature
jobs (full rebuild through the day before the last, then one incremental day), apply,
materialize into SQLite and into a real redis-server (if installed), then time
``--calls`` single-user online reads of the user-tower service on each store.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from audiorec.featurestore import FeatureStoreConfig, OnlineFeatureReader
from training.data.embeddings import write_item_embeddings
from training.features.config import FeatureJobConfig
from training.features.jobs import run_feature_jobs
from training.features.store import apply_repo, materialize
from training.features.windows import midnight
from training.synth import WorldConfig, generate_world


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def start_redis(tmp: Path):
    exe = shutil.which("redis-server")
    if exe is None:
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return proc, f"127.0.0.1:{port}"


def online_latency(store, users: list[str], calls: int) -> dict:
    reader = OnlineFeatureReader(store)
    for u in users[:50]:  # warm-up: registry, connections, code paths
        reader.read([u])
    gc.collect()
    gc.freeze()  # docs/stack-notes.md, note 5: GC pauses dominate the tail otherwise
    lat = []
    for u in random.Random(0).choices(users, k=calls):
        t0 = time.perf_counter()
        reader.read([u])
        lat.append((time.perf_counter() - t0) * 1e3)
    gc.unfreeze()
    a = np.array(lat)
    return {
        "calls": calls,
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="demo", choices=("tiny", "demo", "large"))
    ap.add_argument("--world", help="an existing world to reuse")
    ap.add_argument("--history-days", type=int, default=None)
    ap.add_argument("--buckets", type=int, default=None)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--keep", help="work directory to keep (default: temporary)")
    args = ap.parse_args()

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="audiorec-fbench-"))
    world = Path(args.world) if args.world else tmp / "world"
    result: dict = {"scale": args.scale}
    if not args.world:
        _, result["generate_s"] = timed(
            lambda: generate_world(
                WorldConfig.for_scale(args.scale), 7, world, overwrite=True, progress=False
            )
        )
    items = pq.read_table(world / "items.parquet", columns=["item_id"]).column(0).to_pylist()
    users = pq.read_table(world / "users.parquet", columns=["user_id"]).column(0).to_pylist()
    rng = np.random.default_rng(0)
    emb = tmp / "emb"
    write_item_embeddings(
        emb / "hgnn.parquet", items, rng.normal(size=(len(items), 64)).astype(np.float32), "bench-h"
    )
    write_item_embeddings(
        emb / "text.parquet",
        items,
        rng.normal(size=(len(items), 384)).astype(np.float32),
        "bench-t",
    )
    buckets = args.buckets or max(8, len(users) // 25_000)
    cfg = FeatureJobConfig(history_days=args.history_days, user_buckets=buckets)
    wd = tmp / "wd"
    full, t_full = timed(
        lambda: run_feature_jobs(
            world,
            wd,
            emb / "hgnn.parquet",
            emb / "text.parquet",
            cfg=cfg,
            validate=False,
            through=_last(world) - timedelta(days=1),
        )
    )
    day, t_day = timed(
        lambda: run_feature_jobs(
            world, wd, emb / "hgnn.parquet", emb / "text.parquet", cfg=cfg, validate=False
        )
    )
    result.update(
        users=len(users),
        items=len(items),
        buckets=buckets,
        history_days=args.history_days,
        full_rebuild={
            "dates": f"{full.first}..{full.through}",
            "s": round(t_full, 1),
            "rows": full.rows,
            "table_s": {k: round(v, 1) for k, v in full.seconds.items()},
        },
        one_day={"date": str(day.first), "s": round(t_day, 1), "rows": day.rows},
    )
    end = midnight(day.through) + timedelta(microseconds=1)
    start = midnight(full.first) - timedelta(days=800)
    stores = {"sqlite": FeatureStoreConfig()}
    proc, url = start_redis(tmp)
    if url:
        stores["redis"] = FeatureStoreConfig(online="redis", redis=url)
    try:
        for name, scfg in stores.items():
            store = apply_repo(wd, scfg)
            _, t_mat = timed(lambda: materialize(store, end, start=start))
            rows = 4 * len(users) + 3 * len(items)  # entity rows written (latest per view)
            result[f"materialize_{name}"] = {
                "s": round(t_mat, 1),
                "entity_rows": rows,
                "rows_per_s": round(rows / t_mat),
            }
            result[f"online_{name}"] = online_latency(store, users, args.calls)
    finally:
        if proc:
            proc.terminate()
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


def _last(world: Path):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    d = con.execute(
        f"SELECT CAST(max(CAST(ts AS TIMESTAMPTZ)) AS DATE) FROM '{world}/events.parquet'"
    ).fetchall()[0][0]
    return d + timedelta(days=1)


if __name__ == "__main__":
    main()

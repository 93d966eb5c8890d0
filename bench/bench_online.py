"""Online-read latency of the user-tower feature service on an existing work directory.

    .venv/bin/python bench/bench_online.py --workdir W [--calls 1000] [--redis]

Reads ``--calls`` single users through the Feast SDK (``OnlineFeatureReader``) from the
SQLite online store of W, and, with --redis, from a fresh redis-server it materializes W's
features into first. Prints p50/p99 per store.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
from bench_features import online_latency, start_redis, timed

from audiorec.featurestore import FeatureStoreConfig, open_store
from training.features.store import apply_repo, materialize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--redis", action="store_true")
    args = ap.parse_args()
    wd = Path(args.workdir)
    users = (
        pq.read_table(
            next((wd / "features" / "user_profile").glob("*.parquet")), columns=["user_id"]
        )
        .column(0)
        .unique()
        .to_pylist()
    )
    result = {
        "users": len(users),
        "online_sqlite": online_latency(open_store(wd), users, args.calls),
    }
    if args.redis:
        proc, url = start_redis(Path(tempfile.mkdtemp()))
        try:
            cfg = FeatureStoreConfig(online="redis", redis=url)
            store = apply_repo(wd, cfg)
            _, t = timed(
                lambda: materialize(
                    store,
                    datetime.now(timezone.utc),
                    start=datetime(1970, 1, 2, tzinfo=timezone.utc),
                )
            )
            result["materialize_redis_s"] = round(t, 1)
            result["online_redis"] = online_latency(store, users, args.calls)
        finally:
            proc.terminate()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

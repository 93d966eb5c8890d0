"""Benchmark: the served item indexes against exact search, with real user queries.

    .venv/bin/python bench/bench_index_scale.py --workdir W [--users 1000]
        [--online redis --redis URL]

Takes the current artifact of ``W`` as the server loads it, reads ``--users`` users'
features from the online store (users with history: those in the artifact's consumed
table), runs them through the served user tower, and per item type compares each index's
top 10 (at the breadth, ef or nprobe, the publish step tuned) with exact inner-product
search over the same vectors: recall@10, single-query QPS of each (one thread, as a
request issues it), and the ratio. Target (issue 18): recall@10 >= 0.99 at >= 20x exact QPS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import numpy as np
from bench_hnsw import single_query_qps as qps  # bench/ is the script's directory

from audiorec.artifact import current_dir, feature_project, read_manifest
from audiorec.featurestore import FeatureStoreConfig, OnlineFeatureReader, open_store
from audiorec.hnsw_index import exact_top_k, recall_at_k
from audiorec.tower_inputs import tower_inputs
from serving.artifact import Artifact


def served_users(
    args, directory: Path | None = None
) -> tuple[Artifact, Callable[[list], np.ndarray], np.random.Generator]:
    """The current artifact of ``args.workdir`` (or the version in ``directory``) as the
    server loads it, ``embed(user ids) -> served user vectors`` (their online features
    through its tower) and the seeded generator that draws them."""
    directory = directory or current_dir(args.workdir)
    manifest = read_manifest(directory, verify_files=False)
    art = Artifact.load(directory)
    store_cfg = FeatureStoreConfig(online=args.online, redis=args.redis)
    reader = OnlineFeatureReader(open_store(args.workdir, store_cfg, feature_project(manifest)))

    def embed(ids: list) -> np.ndarray:
        return art.tower(tower_inputs(reader.read(ids), manifest.user_features))

    return art, embed, np.random.default_rng(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--online", choices=("sqlite", "redis"), default="sqlite")
    ap.add_argument("--redis", default="localhost:6379")
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(1)  # as a serving process runs it (serving/tuning.py)
    art, embed, rng = served_users(args)
    known = np.array(sorted(art.users), dtype=object)
    users = list(rng.choice(known, min(args.users, len(known)), replace=False))
    queries = embed(users)
    out = {"version": art.version, "users": len(users), "types": {}}
    for name, index in art.indexes.items():
        rows = art.label_rows[name]
        vectors = np.ascontiguousarray(art.vectors[rows])
        truth = exact_top_k(vectors, queries, 10)
        found = index.search(queries, 10)[0]
        index_qps = qps(lambda q: index.search(q, 10), queries)
        exact_qps = qps(lambda q: exact_top_k(vectors, q, 10), queries[:200])
        out["types"][name] = {
            "items": int(len(rows)),
            "method": art.manifest.indexes[name].method,
            "breadth": index.breadth,  # ef or nprobe, as the publish step tuned it
            "recall_at_10": round(recall_at_k(found, truth), 4),
            "index_qps": round(index_qps),
            "exact_qps": round(exact_qps),
            "qps_ratio": round(index_qps / exact_qps, 1),
        }
    print(json.dumps(out, indent=2))
    for name, r in out["types"].items():
        ok = r["recall_at_10"] >= 0.99 and r["qps_ratio"] >= 20
        print(
            f"{name}: recall@10 {r['recall_at_10']} at {r['qps_ratio']}x exact QPS vs target "
            f">= 0.99 at >= 20x: "
            + (
                "met"
                if ok
                else f"MISSED (recall short by {max(0.0, 0.99 - r['recall_at_10']):.3f}, "
                f"speed-up short by {max(0.0, 20 - r['qps_ratio']):.1f}x)"
            )
        )


if __name__ == "__main__":
    main()

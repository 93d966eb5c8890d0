"""Choose HNSW parameters by measurement: recall@10 against exact search, and QPS.

    .venv/bin/python bench/bench_hnsw.py [--n 250000] [--dim 128] [--queries 1000]

Data: ``n`` unit vectors from a mixture of 1,000 Gaussian clusters (item embeddings are
clustered; uniformly random vectors are the unrealistic worst case, also reported for the
chosen setting). Queries: 1,000 more vectors from the same mixture. QPS is single-query,
one thread, as a serving process issues them; exact search is a numpy mat-vec + partial
sort over all n vectors. Target (issue 5): recall@10 >= 0.99 at >= 20x exact QPS.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from audiorec.hnsw_index import HNSWConfig, ItemIndex, exact_top_k


def clustered(
    n: int, dim: int, rng: np.random.Generator, noise: float, clusters: int = 1000
) -> np.ndarray:
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + rng.normal(scale=noise, size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def single_query_qps(fn, queries: np.ndarray) -> float:
    t0 = time.perf_counter()
    for q in queries:
        fn(q[None, :])
    return len(queries) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=250_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument(
        "--noise",
        type=float,
        default=0.6,
        help="within-cluster spread per dimension (clusters' centres: N(0, 1))",
    )
    ap.add_argument("--m", default="16,32", help="HNSW M values to try")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    data = clustered(args.n + args.queries, args.dim, rng, args.noise)
    items, queries = data[: args.n], data[args.n :]
    truth = exact_top_k(items, queries, 10)
    exact_qps = single_query_qps(lambda q: exact_top_k(items, q, 10), queries[:200])
    out = {
        "n": args.n,
        "dim": args.dim,
        "noise": args.noise,
        "exact_single_query_qps": round(exact_qps, 1),
        "runs": [],
    }
    chosen = None
    for m in (int(v) for v in args.m.split(",")):
        t0 = time.perf_counter()
        index = ItemIndex.build(items, np.arange(args.n), HNSWConfig(M=m, ef_construction=200))
        build_s = time.perf_counter() - t0
        index.index.set_num_threads(1)
        for ef in (16, 32, 64, 100, 200, 256):
            index.index.set_ef(ef)
            labels, _ = index.search(queries, 10)
            r = recall(labels, truth)
            qps = single_query_qps(lambda q: index.search(q, 10), queries)
            row = {
                "M": m,
                "ef_construction": 200,
                "ef": ef,
                "build_s": round(build_s, 1),
                "recall_at_10": round(r, 4),
                "qps": round(qps),
                "speedup": round(qps / exact_qps, 1),
            }
            out["runs"].append(row)
            print(json.dumps(row), flush=True)
            if chosen is None and r >= 0.99 and qps >= 20 * exact_qps:
                chosen = row
    out["chosen"] = chosen
    if chosen:  # the same setting on structureless (uniformly random) unit vectors
        rnd = rng.normal(size=(args.n + args.queries, args.dim)).astype(np.float32)
        rnd /= np.linalg.norm(rnd, axis=1, keepdims=True)
        idx = ItemIndex.build(
            rnd[: args.n], np.arange(args.n), HNSWConfig(M=chosen["M"], ef=chosen["ef"])
        )
        labels, _ = idx.search(rnd[args.n :], 10)
        out["chosen_on_uniform_random"] = round(
            recall(labels, exact_top_k(rnd[: args.n], rnd[args.n :], 10)), 4
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: which index holds on real user queries (issue 32), measured on an artifact.

    .venv/bin/python bench/bench_index_methods.py --workdir W [--users 3000]
        [--online sqlite|redis --redis URL] [--target 0.995] [--route-users 32768]
        [--methods all|routed] [--out FILE.json]

Takes the current artifact of ``W`` as the server loads it and turns real users into
queries with the served user tower (the vectors include the prior coordinate, so the
score is the served one): warm users (those in the artifact's consumed table) and users
drawn from every id the online store may hold. Half of them tune each method (its
breadth: HNSW's ``ef``, an inverted index's ``nprobe``, the smallest value whose
recall@10 reaches ``--target``); the other half measure it: recall@10 against the exact
maximum-inner-product answer, single-query QPS (one thread, one query per call, as a
request issues it) and the ratio to the exact scan's QPS, measured in the same run.
Target: recall@10 >= 0.99 at >= 20x the exact scan.

Methods: HNSW (hnswlib, inner product; what was served before), HNSW on the inner-product-to-L2
transform, faiss inverted lists (flat lists; 4-bit fast-scan codes re-scored
exactly), with the list count near the square root of the catalogue, and the routed index
(audiorec/routed_index.py) in front of the latter at a few list depths and spreads,
learned from ``--route-users`` other users (``--methods routed``: those rows only).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable, NamedTuple

import numpy as np
from bench_hnsw import single_query_qps  # bench/ is the script's directory
from bench_index_scale import served_users

from audiorec.hnsw_index import exact_top_k, recall_at_k
from serving.artifact import Artifact

Search = Callable[[np.ndarray], np.ndarray]  # (1, dim) -> (1, 10) labels


def tuned(
    search: Search, set_breadth: Callable[[int], None], breadths, tune: np.ndarray, truth, target
) -> int:
    """The smallest breadth whose recall@10 on the tuning queries reaches ``target`` (the
    largest tried when none does)."""
    for b in breadths:
        set_breadth(b)
        if recall_at_k(np.vstack([search(q[None, :]) for q in tune]), truth) >= target:
            return b
    return breadths[-1]


def methods(vectors: np.ndarray):
    """(name, search, set_breadth, breadths, build seconds) of every candidate index."""
    import faiss
    import hnswlib

    n, dim = vectors.shape
    out = []
    t0 = time.perf_counter()
    ip = hnswlib.Index(space="ip", dim=dim)
    ip.init_index(n, M=16, ef_construction=200, random_seed=0)
    ip.set_num_threads(2)
    ip.add_items(vectors)
    ip.set_num_threads(1)
    efs = [64, 128, 256, 512, 1024, 2048]
    out.append(("hnsw, inner product", lambda q: ip.knn_query(q, 10)[0], ip.set_ef,
                efs, time.perf_counter() - t0))  # fmt: skip

    t0 = time.perf_counter()
    norms = np.linalg.norm(vectors, axis=1)
    lifted = np.hstack([vectors, np.sqrt(np.maximum(norms.max() ** 2 - norms**2, 0))[:, None]])
    l2 = hnswlib.Index(space="l2", dim=dim + 1)
    l2.init_index(n, M=16, ef_construction=200, random_seed=0)
    l2.set_num_threads(2)
    l2.add_items(lifted.astype(np.float32))
    l2.set_num_threads(1)
    zero = np.zeros((1, 1), np.float32)
    out.append(("hnsw, inner product as L2", lambda q: l2.knn_query(np.hstack([q, zero]), 10)[0],
                l2.set_ef, efs, time.perf_counter() - t0))  # fmt: skip

    nlist = int(2 ** round(np.log2(max(16, np.sqrt(n)))))
    pad = (-dim) % 8  # fast-scan codes: one 4-bit code per dimension, in groups
    padded = np.ascontiguousarray(np.pad(vectors, ((0, 0), (0, pad))))
    faiss.omp_set_num_threads(2)
    for spec, data, width in (
        (f"IVF{nlist},Flat", vectors, 0),
        (f"IVF{nlist},PQ{dim + pad}x4fs,RFlat", padded, pad),
    ):
        t0 = time.perf_counter()
        index = faiss.index_factory(data.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        index.train(data)
        index.add(data)
        if "RFlat" in spec:
            faiss.downcast_index(index).k_factor = 24  # 240 candidates re-scored exactly
        ivf = faiss.extract_index_ivf(index)

        def search(q, index=index, width=width):
            return index.search(np.pad(q, ((0, 0), (0, width))) if width else q, 10)[1]

        probes = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256]
        out.append((f"faiss {spec}", search, lambda b, ivf=ivf: setattr(ivf, "nprobe", b),
                    probes, time.perf_counter() - t0))  # fmt: skip
    faiss.omp_set_num_threads(1)
    return out


def route_queries_of(q: "Queries", n: int) -> np.ndarray:
    """The served vectors of ``n`` users the routed index learns from, drawn (seed 1)
    from the artifact's users apart from those :func:`queries_of` drew and those
    bench_index_scale.py measures on (1,000 warm, its seeded draw replayed here)."""
    measured = q.users | set(np.random.default_rng(0).choice(q.known, 1000, replace=False))
    pool = np.array([u for u in q.known if u not in measured], dtype=object)
    ids = list(np.random.default_rng(1).choice(pool, min(n, len(pool)), replace=False))
    return np.vstack([q.embed(ids[i : i + 2000]) for i in range(0, len(ids), 2000)])


def routed_methods(vectors: np.ndarray, learn: np.ndarray):
    """The routed index at a few list depths and spreads, in front of the inverted lists
    with 4-bit codes (its breadth: those lists' ``nprobe``)."""
    from audiorec.ivf_index import IVFIndex
    from audiorec.routed_index import RoutedIndex

    inner = IVFIndex.build(vectors, np.arange(len(vectors)), extra_coordinates=1)
    out = []
    for depth, spread in ((20, 1), (20, 2), (20, 3), (32, 3)):
        t0 = time.perf_counter()
        index = RoutedIndex.build(vectors, inner, learn, depth=depth, spread=spread)
        out.append((f"routed, {index.routes} routes, depth {depth}, spread {spread} "
                    f"({len(index.labels):,} listed)", lambda q, i=index: i.search(q, 10)[0],
                    index.set_breadth, index.breadths(), time.perf_counter() - t0))  # fmt: skip
    return out


class Queries(NamedTuple):
    art: Artifact
    embed: Callable[[list], np.ndarray]  # user ids -> served user vectors
    known: np.ndarray  # the artifact's users, sorted
    users: set  # the ids drawn for the tuning and test queries
    tune: np.ndarray
    test: np.ndarray


def queries_of(args, directory=None) -> Queries:
    """The artifact (the current one, or the version in ``directory``), and the served
    user vectors of seeded warm users and seeded ids of any user: (tuning queries, test
    queries), each half of each kind."""
    art, embed, rng = served_users(args, directory)
    known = np.array(sorted(art.users), dtype=object)
    warm = list(rng.choice(known, min(args.users, len(known)), replace=False))
    # every user the world holds (the generator's ids: "u" and 7 digits), history or not
    top = max(int(str(u)[1:]) for u in known[-10:]) + 1 if len(known) else 1
    anyone = [f"u{i:07d}" for i in rng.choice(top, args.users // 2)]
    q = [embed(warm), embed(anyone)]
    tune = np.concatenate([q[0][::2], q[1][::2]])
    test = np.concatenate([q[0][1::2], q[1][1::2]])
    return Queries(art, embed, known, set(warm) | set(anyone), tune, test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--online", choices=("sqlite", "redis"), default="sqlite")
    ap.add_argument("--redis", default="localhost:6379")
    ap.add_argument("--target", type=float, default=0.995, help="recall the tuning aims at")
    ap.add_argument("--route-users", type=int, default=32768, help="users routes learn from")
    ap.add_argument("--methods", default="all", help="all | routed (the routed rows only)")
    ap.add_argument("--out", help="also write the results as JSON")
    args = ap.parse_args()

    queries = queries_of(args)
    art, tune, test = queries.art, queries.tune, queries.test
    learn = route_queries_of(queries, args.route_users)
    result: dict = {"version": art.version, "tune_queries": len(tune), "test_queries": len(test)}
    for kind, rows in art.label_rows.items():
        vectors = np.ascontiguousarray(art.vectors[rows])
        truth_tune, truth = exact_top_k(vectors, tune, 10), exact_top_k(vectors, test, 10)
        exact = single_query_qps(lambda q: exact_top_k(vectors, q, 10), test[:300])
        print(f"{kind}: {len(rows):,} items x {vectors.shape[1]}; exact scan {exact:,.0f} q/s")
        rows_out = []
        candidates = routed_methods(vectors, learn)
        if args.methods == "all":
            candidates = methods(vectors) + candidates
        for name, search, set_breadth, breadths, build_s in candidates:
            b = tuned(search, set_breadth, breadths, tune, truth_tune, args.target)
            set_breadth(b)
            recall = recall_at_k(np.vstack([search(q[None, :]) for q in test]), truth)
            qps = single_query_qps(search, test)
            ok = recall >= 0.99 and qps >= 20 * exact
            rows_out.append({"method": name, "breadth": b, "build_s": round(build_s, 1),
                             "recall_at_10": round(recall, 4), "qps": round(qps),
                             "x_exact": round(qps / exact, 1), "meets_target": ok})  # fmt: skip
            print(f"  {name:<42} breadth {b:>4}: recall@10 {recall:.4f}, {qps:>7,.0f} q/s "
                  f"({qps / exact:4.1f}x exact), built in {build_s:.0f}s  "
                  f"[{'meets' if ok else 'misses'} >= 0.99 at >= 20x]", flush=True)  # fmt: skip
        result[kind] = {"items": int(len(rows)), "exact_qps": round(exact), "methods": rows_out}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

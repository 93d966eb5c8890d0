"""Benchmark: the fixed cost of one item-index query, against the exact scan it must beat.

    PYTHONPATH=.:bench .venv/bin/python bench/bench_index_floor.py --workdir W
        [--type audiobook] [--out FILE]

The current artifact of ``W`` as the server loads it (one OpenMP thread, as a serving
process runs it). 2,000 queries shaped like the served ones (an item vector halved, the
prior coordinate 1.0), one per call: the exact scan (numpy inner products and a top-10
partition over every item of the type), the served inverted-list index at ``nprobe`` 1, 4
and its tuned breadth, and one faiss call on a 16-item flat index (the call's own cost).
What it answers: how fast the index could be at best, whatever its recall, against the
20x exact that issue 32 asks for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import numpy as np
from bench_hnsw import single_query_qps  # bench/ is the script's directory

from audiorec.artifact import current_dir
from audiorec.ivf_index import IVFIndex
from serving.artifact import Artifact


def per_second(fn: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    """Single-query rate after 100 warm-up calls; ``fn`` gets one (1, dim) query."""
    single_query_qps(fn, queries[:100])
    return single_query_qps(fn, queries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--type", default="audiobook")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(1)
    art = Artifact.load(current_dir(args.workdir))
    index = art.indexes[args.type]
    if not isinstance(index, IVFIndex) or not index.lists:
        raise SystemExit(f"the {args.type} index is not an inverted-list index")
    vectors = art.vectors[art.label_rows[args.type]]
    queries = vectors[np.random.default_rng(0).integers(0, len(vectors), 2000)] * 0.5
    queries[:, -1] = 1.0
    exact = per_second(lambda q: np.argpartition(-(vectors @ q[0]), 10)[:10], queries)
    out: dict = {"type": args.type, "items": len(vectors), "exact_qps": round(exact)}
    tuned = index.nprobe
    for nprobe in sorted({1, 4, tuned}):
        index.set_breadth(nprobe)
        qps = per_second(lambda q: index.search(q, 10), queries)
        out[f"ivf_nprobe_{nprobe}"] = {"qps": round(qps), "x_exact": round(qps / exact, 1)}
    index.set_breadth(tuned)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors[:16], np.float32))
    qps = per_second(lambda q: flat.search(q.astype(np.float32), 10), queries)
    out["faiss_call_16_items"] = {"qps": round(qps), "x_exact": round(qps / exact, 1)}
    out["needed_for_20x_us_per_query"] = round(1e6 / (20 * exact), 1)
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

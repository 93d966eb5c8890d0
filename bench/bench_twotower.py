"""Two-tower figures on a work directory that the pipeline has run on.

    .venv/bin/python bench/bench_twotower.py --data DIR --workdir W [--calls 1000]
        [--variants] [--seeds 0,1,2]

1. User-tower latency: one user per call through the exported SavedModel's signature
   (the artifact W/artifacts/current), with the raw features read from the online store
   once up front; also the cost of shaping raw Feast values (audiorec.tower_inputs).
2. With --variants: validation recall@10 (later slice, streams) and training time of the
   default model against "2T alone" (no HGNN inputs), weak signals also as positives, and
   no log-Q correction, each over the given seeds.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message=".*fetch_arrow_table")


def tower_latency(wd: Path, calls: int) -> dict:
    import pyarrow.parquet as pq

    from audiorec.featurestore import OnlineFeatureReader, open_store
    from audiorec.tower_inputs import tower_inputs
    from serving.artifact import Artifact

    art = Artifact.load_current(wd)
    users = (
        pq.read_table(wd / "artifacts" / art.version / "consumed.parquet", columns=["user_id"])
        .column(0)
        .unique()
        .to_pylist()[:calls]
    )
    reader = OnlineFeatureReader(open_store(wd))
    raws = [reader.read([u]) for u in users]
    t_shape, t_tower = [], []
    for raw in raws * max(1, calls // len(raws)):
        t0 = time.perf_counter()
        inputs = tower_inputs(raw, art.manifest.user_features)
        t1 = time.perf_counter()
        art.tower(inputs)
        t_tower.append(time.perf_counter() - t1)
        t_shape.append(t1 - t0)
    queries = np.concatenate(
        [art.tower(tower_inputs(raw, art.manifest.user_features)) for raw in raws]
    )
    ms = lambda xs, q: round(float(np.percentile(xs[20:], q)) * 1e3, 3)  # noqa: E731
    return {
        "version": art.version,
        "calls": len(t_tower),
        "tower_ms": {"p50": ms(t_tower, 50), "p99": ms(t_tower, 99)},
        "shaping_ms": {"p50": ms(t_shape, 50), "p99": ms(t_shape, 99)},
        "index_on_real_vectors": index_recall(art, queries),
    }


def index_recall(art, queries: np.ndarray, k: int = 10) -> dict:
    """Recall@k of each published index against exact search, with real user vectors as
    queries, and single-query throughput of both."""
    from audiorec.hnsw_index import exact_top_k

    out = {}
    for kind, index in art.indexes.items():
        vectors = art.vectors[art.label_rows[kind]]
        t0 = time.perf_counter()
        truth = [exact_top_k(vectors, q[None], k)[0] for q in queries]
        t1 = time.perf_counter()
        found = [index.search(q, k)[0][0] for q in queries]
        t2 = time.perf_counter()
        recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)])
        out[kind] = {
            "items": len(vectors),
            "recall_at_10": round(float(recall), 4),
            "qps_hnsw": round(len(queries) / (t2 - t1)),
            "qps_exact": round(len(queries) / (t1 - t0)),
        }
    return out


def variants(data: Path, wd: Path, seeds: list[int]) -> dict:
    from audiorec.featurestore import open_store
    from training.data import Dataset
    from training.twotower.config import TwoTowerConfig
    from training.twotower.examples import build_tower_data
    from training.twotower.train import train_two_tower

    store, cut = open_store(wd), Dataset.open(data).default_cut
    runs = {
        "2T-HGNN (default)": {},
        "2T alone (no HGNN inputs)": {"use_hgnn": False},
        "weak signals also positives": {"weak_positives": True},
        "no log-Q correction": {"logq_correction": False},
    }
    cache, out = {}, {}
    for name, overrides in runs.items():
        rows = []
        for seed in seeds:
            cfg = TwoTowerConfig(**overrides, seed=seed)
            key = (cfg.weak_positives, seed)
            if key not in cache:
                cache[key] = build_tower_data(store, data, cut, cfg, progress=lambda *a: None)
            towers = train_two_tower(cache[key], cfg, progress=False)
            rows.append(
                (
                    towers.best["val_recall_audiobook"],
                    towers.best["val_recall_podcast"],
                    towers.seconds,
                    len(towers.history),
                )
            )
        r = np.array(rows)
        out[name] = {
            "recall10_audiobook": f"{r[:, 0].mean():.3f} ± {r[:, 0].std():.3f}",
            "recall10_podcast": f"{r[:, 1].mean():.3f} ± {r[:, 1].std():.3f}",
            "train_s": round(float(r[:, 2].mean()), 1),
            "epochs": r[:, 3].tolist(),
        }
        print(name, out[name], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    wd = Path(args.workdir).resolve()
    result = {"user_tower_latency": tower_latency(wd, args.calls)}
    print(json.dumps(result, indent=2), flush=True)
    if args.variants:
        result["variants"] = variants(
            Path(args.data).resolve(), wd, [int(s) for s in args.seeds.split(",")]
        )
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

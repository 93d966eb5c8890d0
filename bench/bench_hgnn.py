"""Benchmark HGNN training: time per epoch and held-out AUC, balanced vs plain sampling.

    .venv/bin/python bench/bench_hgnn.py --world runs/demo/world \
        --text runs/demo/text/embeddings.parquet

Trains twice on the same graph (the cut: day after the last event), ``--epochs`` epochs
each, no step cap: once with the balanced multi-link sampler, once with every training
edge every epoch. Prints graph stats, seconds per epoch, steps and validation AUC per epoch.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from training.data import Dataset
from training.graph.colisten import build_colisten_graph
from training.hgnn.config import HGNNConfig
from training.hgnn.graph import split_edges
from training.hgnn.run import node_features
from training.hgnn.train import train_hgnn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--plain-epochs", type=int, default=1)
    args = ap.parse_args()
    cut = Dataset.open(args.world).default_cut
    t0 = time.perf_counter()
    graph = build_colisten_graph(args.world, cut)
    out = {
        "graph_s": round(time.perf_counter() - t0, 1),
        "edges": {r: v["edges"] for r, v in graph.stats["relations"].items()},
        "pairs_uncapped": graph.stats["pairs_uncapped"],
        "pairs_capped": graph.stats["pairs_capped"],
    }
    x = node_features(graph, args.text)
    ab = torch.from_numpy(graph.node_type)
    tg = split_edges(graph, 0.1, np.random.default_rng(0))
    for balanced in (True, False):
        epochs = args.epochs if balanced else args.plain_epochs
        cfg = HGNNConfig(balanced=balanced, max_epochs=epochs, patience=epochs)
        res = train_hgnn(x, ab, tg, cfg, progress=False)
        h = res.history
        per_epoch = np.diff([0.0] + [r["seconds"] for r in h])
        out["balanced" if balanced else "plain"] = {
            "edges_per_epoch": h[0]["edges"],
            "steps_per_epoch": -(-h[0]["edges"] // cfg.batch_size),
            "s_per_epoch": round(float(per_epoch.mean()), 1),
            "val_auc_per_epoch": [round(r["val_auc"], 3) for r in h],
            "val_auc_by_relation_last": {
                k[8:]: round(v, 3) for k, v in h[-1].items() if k.startswith("val_auc_")
            },
            "s_total": round(res.seconds, 1),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

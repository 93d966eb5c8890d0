"""The HGNN's one entry for training plus the final embedding pass, in this process or
data-parallel on an engine's training group (distributed.py)."""

from __future__ import annotations

import numpy as np
import torch

from training.hgnn.config import HGNNConfig
from training.hgnn.distributed import train_and_embed_ddp
from training.hgnn.graph import full_graph, split_edges
from training.hgnn.train import TrainResult, embed, train_hgnn


def train_and_embed(
    graph, features: torch.Tensor, cfg: HGNNConfig, progress: bool, engine=None
) -> tuple[TrainResult, np.ndarray]:
    """Train on a split of ``graph``'s edges, then embed every node with messages over all
    edges (validation ones too): (the result, (graph.n, out_dim) embeddings). The one final
    pass both the pipeline's HGNN and the evaluation's HGNN-w-users use. On an engine with
    several workers, data-parallel (training/hgnn/distributed.py)."""
    if engine is not None and engine.workers > 1:
        return train_and_embed_ddp(engine, graph, features, cfg)
    node_type = torch.from_numpy(graph.node_type)
    tg = split_edges(graph, cfg.val_share, np.random.default_rng(cfg.seed))
    result = train_hgnn(features, node_type, tg, cfg, progress=progress)
    result.model.eval()
    with torch.no_grad():
        z = embed(
            result.model,
            features,
            node_type,
            full_graph(graph),
            torch.arange(graph.n),
            cfg.fanouts,
            torch.Generator().manual_seed(cfg.seed + 2),
        ).numpy()
    return result, z

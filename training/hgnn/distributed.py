"""The HGNN trained data-parallel: torch DistributedDataParallel over gloo (CPU), one
process per rank in the engine's training group (training/engine/), then layer-wise
inference split by item partition.

Every rank receives the same graph and text features, splits the edges with the same
seed, draws the same balanced batches and negatives, and trains on its share of each
batch (``train_hgnn(rank=, world=)``); DDP averages the gradients, so the weights stay
identical on every rank. The final pass embeds each rank's contiguous slice of the nodes
(messages over all edges, as on one process) and the driver puts the slices together.

Against one process: the same batches and the same loss, but each rank samples its
nodes' neighbours with its own generator and sums gradients in another order, so the
embeddings agree within a tolerance (docs/beyond-one-machine.md), not bit for bit.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import torch

from training.hgnn.config import HGNNConfig
from training.hgnn.graph import full_graph, split_edges
from training.hgnn.train import TrainResult, embed, train_hgnn


def train_and_embed_ddp(
    engine, graph, features: torch.Tensor, cfg: HGNNConfig
) -> tuple[TrainResult, np.ndarray]:
    """``train_and_embed`` on ``engine.workers`` ranks: (rank 0's result, (n, out_dim))."""
    world = engine.workers
    outs = engine.group(_rank_main, world, (graph, features.numpy(), cfg))
    result = outs[0][0]
    z = np.empty((graph.n, result.model.out_dim), dtype=np.float32)
    for _, nodes, part in outs:
        z[nodes] = part
    return result, z


def _rank_main(
    rank: int, world: int, addresses: str, graph, features: np.ndarray, cfg: HGNNConfig
) -> tuple[TrainResult | None, np.ndarray, np.ndarray]:
    import torch.distributed as dist

    torch.set_num_threads(cfg.threads or 1)  # one CPU per rank
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{addresses.split(',')[0]}",  # rank 0's
        rank=rank,
        world_size=world,
        timeout=timedelta(minutes=10),
    )
    try:
        x = torch.from_numpy(features)
        node_type = torch.from_numpy(graph.node_type)
        tg = split_edges(graph, cfg.val_share, np.random.default_rng(cfg.seed))
        result = train_hgnn(x, node_type, tg, cfg, progress=False, rank=rank, world=world)
        result.model.eval()
        nodes = np.array_split(np.arange(graph.n), world)[rank]  # this rank's item partition
        with torch.no_grad():
            z = embed(
                result.model,
                x,
                node_type,
                full_graph(graph),
                torch.from_numpy(nodes),
                cfg.fanouts,
                torch.Generator().manual_seed(cfg.seed + 2 + rank),
            ).numpy()
        return (result if rank == 0 else None), nodes, z
    finally:
        dist.destroy_process_group()

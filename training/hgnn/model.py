"""The HGNN: two heterogeneous GraphSAGE layers over the co-listening graph.

Layer (docs/paper.md, "The model", point 3): for a target node v of type t,

    h_v' = W_self[t] h_v
           + sum over relations r into t of  W_r . max_{u in S_r(v)} relu(P_r h_u + b_r)

with S_r(v) a uniform fixed-size sample of v's r-neighbours (``sampler.py``): GraphSAGE's
pooling aggregator, P_r of width ``hidden_dim``, the max-pool and W_r done by PyG's
``SAGEConv(aggr="max", root_weight=False)``. An item with no sampled neighbours gets only
its self term, so a new title is embedded from its text alone (inductive). ReLU between
layers; the output is L2-normalised, ready for an inner-product nearest-neighbour index.

Relations are named source-target by the item types' codes (``audiorec/itemtypes.py``):
AA (audiobook->audiobook), PA (podcast->audiobook), AP (audiobook->podcast), PP; with
users as nodes (the evaluation's HGNN-w-users) also UA, AU, UP, PU. One self transform per
node type: the item types in their order (0, 1, ...), then users when they are nodes.

Shapes: x (N_in, d_in) features of ``blocks[0].nodes``; node_type (N,) int64 of all nodes;
returns (n_seeds, out_dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv

from training.hgnn.sampler import Block


class HeteroSAGELayer(nn.Module):
    def __init__(
        self, in_dim: int, out_dim: int, relations: tuple[str, ...], pool_dim: int, node_types: int
    ):
        super().__init__()
        self.out_dim = out_dim
        self.selfs = nn.ModuleList(nn.Linear(in_dim, out_dim) for _ in range(node_types))
        # The pooling aggregator's projection P_r (in_dim -> pool_dim, then ReLU) is ours,
        # so that its width is a setting (SAGEConv's project=True fixes it at in_dim, 3x
        # the cost on 384-d text features); SAGEConv then max-pools and applies W_r.
        self.pools = nn.ModuleDict({r: nn.Linear(in_dim, pool_dim) for r in relations})
        self.convs = nn.ModuleDict(
            {
                r: SAGEConv(pool_dim, out_dim, aggr="max", root_weight=False, bias=False)
                for r in relations
            }
        )

    def forward(self, x: Tensor, block: Block, types: Tensor) -> Tensor:
        """x: (len(block.nodes), in_dim); types: (block.n_dst,) int64 node types."""
        x_dst = x[: block.n_dst]
        out = x_dst.new_zeros(block.n_dst, self.out_dim)
        for t, linear in enumerate(self.selfs):
            mask = types == t
            if mask.any():
                out[mask] = linear(x_dst[mask])
        for r, edge_index in block.edges.items():
            if r in self.convs and edge_index.shape[1]:
                # Project only the nodes that send on this relation, not every source node
                # of the block: the projection is the layer's dominant cost.
                senders, local = torch.unique(edge_index[0], return_inverse=True)
                ei = torch.stack([local, edge_index[1]])
                pooled = F.relu(self.pools[r](x[senders]))
                out = out + self.convs[r]((pooled, None), ei, size=(len(senders), block.n_dst))
        return out


class HGNN(nn.Module):
    """``relations``: the message relations (both directions); ``node_types``: how many
    (the item types, plus one when users are nodes)."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        relations: tuple[str, ...],
        node_types: int,
        layers: int = 2,
    ):
        super().__init__()
        self.out_dim = out_dim
        self.relations = tuple(relations)
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
        self.layers = nn.ModuleList(
            HeteroSAGELayer(a, b, relations, pool_dim=hidden_dim, node_types=node_types)
            for a, b in zip(dims[:-1], dims[1:])
        )

    def forward(self, features: Tensor, blocks: list[Block], node_type: Tensor) -> Tensor:
        """features: (N, d_in) of all nodes; node_type: (N,) int64 of all nodes."""
        h = features[blocks[0].nodes]
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(h, block, node_type[block.nodes[: block.n_dst]])
            if i < len(self.layers) - 1:
                h = F.relu(h)
        return F.normalize(h, dim=-1)

"""Samplers: uniform fixed-size neighbour sampling over CSR, the balanced multi-link
edge sampler, and the negatives drawn per positive edge (any item, or typed).

Neighbour sampling (PyG's NeighborLoader needs pyg-lib or torch-sparse, which cannot be
installed here): for each target node and relation, all neighbours when it has at most
``fanout`` of them, else ``fanout`` uniform draws (with replacement; the max-pool
aggregator is indifferent to repeats). Vectorised torch, no loop over nodes; redrawn on
every call, so every iteration sees a fresh sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class CSR:
    """Incoming edges of one relation: the sources of node v are
    ``indices[indptr[v]:indptr[v + 1]]``."""

    indptr: Tensor  # (N + 1,) int64
    indices: Tensor  # (E,) int64

    @classmethod
    def from_edges(cls, src: np.ndarray, dst: np.ndarray, n: int) -> "CSR":
        order = np.lexsort((src, dst))
        counts = np.bincount(dst, minlength=n)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return cls(
            torch.from_numpy(indptr.astype(np.int64)), torch.from_numpy(src[order].astype(np.int64))
        )

    def degree(self, nodes: Tensor) -> Tensor:
        return self.indptr[nodes + 1] - self.indptr[nodes]


def sample_neighbours(
    csr: CSR, nodes: Tensor, fanout: int, gen: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """(src global ids, position of the target in ``nodes``), one row per sampled edge."""
    deg = csr.degree(nodes)
    take = torch.clamp(deg, max=fanout)
    pos = torch.repeat_interleave(torch.arange(len(nodes)), take)
    if len(pos) == 0:
        return pos, pos
    first = torch.cumsum(take, 0) - take
    k = torch.arange(len(pos)) - first[pos]  # rank of the row within its target
    d = deg[pos]
    rand = (torch.rand(len(pos), generator=gen) * d).long().clamp(max=d - 1)
    offset = torch.where(d <= fanout, k, rand)
    return csr.indices[csr.indptr[nodes[pos]] + offset], pos


@dataclass
class Block:
    """One layer's computation graph: ``nodes`` (global ids, the ``n_dst`` targets first)
    and, per relation, edge_index (2, E) of local (source, target) positions."""

    nodes: Tensor
    n_dst: int
    edges: dict[str, Tensor]


def sample_blocks(
    csrs: dict[str, CSR],
    seeds: Tensor,
    fanouts: tuple[int, ...],
    gen: torch.Generator | None = None,
) -> list[Block]:
    """Blocks from the input layer to the output layer for ``seeds`` (unique ids).

    ``fanouts[0]`` is for the output layer (the seeds' neighbours), the next for the one
    below, and so on.
    """
    blocks: list[Block] = []
    dst = seeds
    for fanout in fanouts:
        sampled = {r: sample_neighbours(c, dst, fanout, gen) for r, c in csrs.items()}
        srcs = torch.cat([dst] + [s for s, _ in sampled.values()])
        nodes, inverse = _unique_keep_first(srcs, len(dst))
        edges, at = {}, len(dst)
        for r, (s, p) in sampled.items():
            edges[r] = torch.stack([inverse[at : at + len(s)], p])
            at += len(s)
        blocks.append(Block(nodes, len(dst), edges))
        dst = nodes
    return blocks[::-1]


def _unique_keep_first(ids: Tensor, n_first: int) -> tuple[Tensor, Tensor]:
    """Unique ``ids`` with the first ``n_first`` (already unique) kept in front, in order;
    and each input's position in the result."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    # rank: the first n_first ids get positions 0..n_first-1, the others follow
    key = torch.full((len(uniq),), len(ids), dtype=torch.long)
    key.scatter_reduce_(0, inverse, torch.arange(len(ids)), reduce="amin")
    order = torch.argsort(key)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return uniq[order], rank[inverse]


class BalancedEdgeSampler:
    """The paper's balanced multi-link sampler.

    Each epoch, every relation contributes as many training edges as the smallest one has
    (majority relations undersampled); each relation walks through its own shuffled
    order, reshuffled when exhausted, so the undersampled edges differ every epoch and all
    are seen within ceil(n_r / n_min) epochs. ``balanced=False``: every edge every epoch.
    """

    def __init__(
        self,
        edges: dict[str, tuple[np.ndarray, np.ndarray]],
        balanced: bool,
        rng: np.random.Generator,
    ):
        self.edges = {r: e for r, e in edges.items() if len(e[0])}
        self.balanced = balanced
        self.rng = rng
        self.order = {r: rng.permutation(len(e[0])) for r, e in self.edges.items()}
        self.cursor = {r: 0 for r in self.edges}

    def per_relation(self) -> int:
        return min(len(e[0]) for e in self.edges.values()) if self.edges else 0

    def epoch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(src, dst, relation index) of this epoch's training edges, shuffled."""
        parts = []
        m = self.per_relation()
        for i, (r, (s, d)) in enumerate(self.edges.items()):
            idx = self._next(r, m) if self.balanced else np.arange(len(s))
            parts.append((s[idx], d[idx], np.full(len(idx), i)))
        if not parts:
            return (np.empty(0, np.int64),) * 3
        src, dst, rel = (np.concatenate(x) for x in zip(*parts))
        perm = self.rng.permutation(len(src))
        return src[perm], dst[perm], rel[perm]

    def _next(self, r: str, m: int) -> np.ndarray:
        out, need = [], m
        while need:
            c = self.cursor[r]
            chunk = self.order[r][c : c + need]
            out.append(chunk)
            need -= len(chunk)
            self.cursor[r] = c + len(chunk)
            if self.cursor[r] == len(self.order[r]):
                self.order[r] = self.rng.permutation(len(self.order[r]))
                self.cursor[r] = 0
        return np.concatenate(out)


class NegativeDraw:
    """Negatives per positive: random catalogue nodes, or (``typed``) random nodes of the
    positive's item type. ``node_type``: (n,) the type of every node; only the first
    ``pool`` nodes (the items) are ever drawn, so a positive of a type with no items (a
    user, in the graph with users) gets random items."""

    def __init__(self, node_type: torch.Tensor, pool: int, typed: bool):
        kinds = node_type[:pool].numpy()
        self.pool, self.typed = pool, typed
        self.order = torch.from_numpy(np.argsort(kinds, kind="stable"))  # nodes by type
        counts = np.bincount(kinds, minlength=int(node_type.max()) + 1)
        self.count = torch.from_numpy(counts)
        self.start = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]]))
        self.node_type = node_type

    def __call__(self, positives: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
        """(B, k) negatives for the (B,) positives, from a pool of B draws (per type when
        typed: fewer distinct nodes to embed per step than fully independent draws)."""
        b = len(positives)
        if not self.typed:
            pool = torch.randint(0, self.pool, (b,), generator=gen)
            return pool[torch.randint(0, b, (b, k), generator=gen)]
        kind = self.node_type[positives].long()
        u = torch.rand(b, generator=gen)  # one pool entry per positive, of its type
        pick = torch.randint(0, b, (b, k), generator=gen)
        has = self.count[kind] > 0  # else any item: ``order`` is a permutation of them
        count = torch.where(has, self.count[kind], self.pool)
        start = torch.where(has, self.start[kind], 0)
        pool = self.order[start + (u * count).long().clamp(max=count - 1)]
        # each positive picks among the pool entries of its own type: sort the pool by
        # type, then index into its type's run of entries
        by_kind = torch.argsort(kind, stable=True)
        runs = torch.bincount(kind, minlength=len(self.count))
        first = torch.cumsum(runs, 0) - runs
        offset = (pick.double() / max(1, b) * runs[kind][:, None]).long()
        return pool[by_kind][first[kind][:, None] + offset]

"""From the co-listening graph to what the HGNN trains on: a train/validation split of
the edges per relation, and message-passing CSRs built from the training edges only (a
held-out edge never carries messages, so validation measures generalisation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.graph.colisten import CoListenGraph
from training.hgnn.sampler import CSR


@dataclass
class TrainGraph:
    n: int
    train: dict[str, tuple[np.ndarray, np.ndarray]]  # relation (AA/AP/PP) -> (src, dst)
    val: dict[str, tuple[np.ndarray, np.ndarray]]
    csrs: dict[str, CSR]  # message relation -> incoming CSR
    # Negatives are drawn from nodes [0, n_items): the items (with users as nodes, a user
    # negative would let the model separate users from items instead of learning tastes).
    n_items: int | None = None

    @property
    def negative_pool(self) -> int:
        return self.n if self.n_items is None else self.n_items


def split_edges(graph: CoListenGraph, val_share: float, rng: np.random.Generator) -> TrainGraph:
    train, val = {}, {}
    for rel, (s, d, _) in graph.edges.items():
        perm = rng.permutation(len(s))
        n_val = int(round(val_share * len(s))) if len(s) >= 10 else 0
        v, t = perm[:n_val], perm[n_val:]
        train[rel], val[rel] = (s[t], d[t]), (s[v], d[v])
    return TrainGraph(
        graph.n, train, val, message_csrs(train, graph.n), getattr(graph, "n_items", None)
    )


def message_csrs(edges: dict[str, tuple[np.ndarray, np.ndarray]], n: int) -> dict[str, CSR]:
    """Directed message relations from undirected edges: AA and PP both ways; an AP edge
    (audiobook a, podcast p) sends a->p (AP) and p->a (PA); user-item edges UA / UP
    likewise (UA and AU, UP and PU)."""
    csrs = {}
    for rel, (s, d) in edges.items():
        if rel in ("AA", "PP"):
            csrs[rel] = CSR.from_edges(np.concatenate([s, d]), np.concatenate([d, s]), n)
        elif rel in ("AP", "UA", "UP"):  # both directions, named source-target
            csrs[rel] = CSR.from_edges(s, d, n)
            csrs[rel[::-1]] = CSR.from_edges(d, s, n)
    return csrs

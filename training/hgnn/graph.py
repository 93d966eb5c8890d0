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
    node_types: int  # item types (+1 when users are nodes)
    train: dict[str, tuple[np.ndarray, np.ndarray]]  # relation (AA, AP, ...) -> (src, dst)
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
        graph.n,
        graph.node_types,
        train,
        val,
        message_csrs(train, graph.n, graph.directions),
        getattr(graph, "n_items", None),
    )


def full_graph(graph) -> TrainGraph:
    """Every edge carrying messages (validation ones too): the final embedding pass."""
    edges = {r: (s, d) for r, (s, d, _) in graph.edges.items()}
    return TrainGraph(
        graph.n, graph.node_types, {}, {}, message_csrs(edges, graph.n, graph.directions)
    )


def message_csrs(
    edges: dict[str, tuple[np.ndarray, np.ndarray]], n: int, directions: dict[str, tuple[str, str]]
) -> dict[str, CSR]:
    """Directed message relations from undirected edges, named source-target:
    ``directions[rel] = (forward, reverse)``. Within one type (AA) both directions are one
    relation; across two (AP, audiobook a and podcast p) a->p is AP and p->a is PA; user
    edges (UA) likewise (UA and AU)."""
    csrs = {}
    for rel, (s, d) in edges.items():
        forward, reverse = directions[rel]
        if forward == reverse:
            csrs[rel] = CSR.from_edges(np.concatenate([s, d]), np.concatenate([d, s]), n)
        else:
            csrs[forward] = CSR.from_edges(s, d, n)
            csrs[reverse] = CSR.from_edges(d, s, n)
    return csrs

"""The tripartite graph of the HGNN-w-users baseline: items and users as nodes.

Item-item edges are the co-listening graph's (AA / AP / PP); each user is joined to the
items they touched in the window (their ``max_items_per_user`` most recent: UA to
audiobooks, UP to podcasts). Node order: the items as in the co-listening graph, then the
users sorted by id. Node types: 0 audiobook, 1 podcast, 2 user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from training.graph.colisten import GraphConfig, build_colisten_graph, recent_user_items


@dataclass
class TripartiteGraph:
    item_id: np.ndarray  # (n_items,)
    user_id: np.ndarray  # (n_users,) sorted
    node_type: np.ndarray  # (n,) int64
    edges: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]

    @property
    def n(self) -> int:
        return len(self.node_type)

    @property
    def n_items(self) -> int:
        return len(self.item_id)


def build_tripartite_graph(
    data: str | Path, cut: datetime, cfg: GraphConfig = GraphConfig()
) -> TripartiteGraph:
    items = build_colisten_graph(data, cut, cfg)
    con, _ = recent_user_items(data, cut, cfg)
    try:
        ui = con.sql("SELECT user_id, node FROM capped ORDER BY user_id, node").fetchnumpy()
    finally:
        con.close()
    users = np.unique(ui["user_id"].astype(object))
    user_node = items.n + np.searchsorted(users, ui["user_id"].astype(object))
    item_node = ui["node"].astype(np.int64)
    ab = items.is_audiobook
    edges = dict(items.edges)
    for rel, mask in (("UA", ab[item_node]), ("UP", ~ab[item_node])):
        edges[rel] = (user_node[mask], item_node[mask], np.ones(int(mask.sum()), np.int64))
    node_type = np.concatenate([np.where(ab, 0, 1), np.full(len(users), 2)]).astype(np.int64)
    return TripartiteGraph(items.item_id, users, node_type, edges)

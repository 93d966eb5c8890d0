"""The tripartite graph of the HGNN-w-users baseline: items and users as nodes.

Item-item edges are the co-listening graph's (AA, AP, PP, ...); each user is joined to the
items they touched in the window (their ``max_items_per_user`` most recent: UA to
audiobooks, UP to podcasts, U+code per type). Node order: the items as in the co-listening
graph, then the users sorted by id. Node types: the item types' (0, 1, ...), then users.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from audiorec.itemtypes import USER_CODE, ItemTypes
from training.data.dataset import Dataset
from training.data.duck import DatasetLike
from training.graph.colisten import (
    GraphConfig,
    build_colisten_graph,
    directions,
    recent_user_items,
)


@dataclass
class TripartiteGraph:
    item_id: np.ndarray  # (n_items,)
    user_id: np.ndarray  # (n_users,) sorted
    node_type: np.ndarray  # (n,) int64: item types' indexes, then len(types) for users
    types: ItemTypes
    edges: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]

    @property
    def n(self) -> int:
        return len(self.node_type)

    @property
    def n_items(self) -> int:
        return len(self.item_id)

    @property
    def node_types(self) -> int:
        return len(self.types) + 1

    @property
    def user_relations(self) -> tuple[str, ...]:
        return tuple(USER_CODE + self.types.codes[t] for t in self.types.names)

    @property
    def directions(self) -> dict[str, tuple[str, str]]:
        out = directions(self.types, [r for r in self.edges if r not in self.user_relations])
        out.update({r: (r, r[len(USER_CODE) :] + USER_CODE) for r in self.user_relations})
        return out


def build_tripartite_graph(
    data: DatasetLike, cut: datetime, cfg: GraphConfig = GraphConfig()
) -> TripartiteGraph:
    data = Dataset.of(data)
    items = build_colisten_graph(data, cut, cfg)
    con = recent_user_items(data, cut, cfg)
    try:
        ui = con.sql("SELECT user_id, node FROM capped ORDER BY user_id, node").fetchnumpy()
    finally:
        con.close()
    users = np.unique(ui["user_id"].astype(object))
    user_node = items.n + np.searchsorted(users, ui["user_id"].astype(object))
    item_node = ui["node"].astype(np.int64)
    types = items.types
    edges = dict(items.edges)
    for i, t in enumerate(types.names):
        mask = items.node_type[item_node] == i
        edges[USER_CODE + types.codes[t]] = (
            user_node[mask],
            item_node[mask],
            np.ones(int(mask.sum()), np.int64),
        )
    node_type = np.concatenate([items.node_type, np.full(len(users), len(types))])
    return TripartiteGraph(items.item_id, users, node_type.astype(np.int64), types, edges)

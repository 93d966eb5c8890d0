"""The co-listening graph (docs/paper.md, "The model", point 1), in DuckDB SQL.

Nodes are all items of the catalogue, of every type, so an item without edges (a new
title) is still a node and gets an embedding from its text. An edge joins two items that
at least ``min_users`` users interacted with (stream or weak signal) inside the
``window_days`` before the training cut. Relations: one per unordered pair of item types,
T(T+1)/2 of them, named by the types' codes (``audiorec/itemtypes.py``: AA, AP, PP for
audiobooks and podcasts); undirected, message passing uses both directions (AP's reverse
is PA).

Power users make pairs explode: a user with n items gives n(n-1)/2 pairs. The bound: only
each user's ``max_items_per_user`` most recently touched items in the window take part
(``stats['pairs_uncapped']`` vs ``stats['pairs_capped']`` measures what that drops).
Cost: O(sum over users of min(n, cap)^2) pairs, aggregated by DuckDB; on an engine with
several partitions, per user partition (a user's pairs never cross partitions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from audiorec.config import StrictConfig
from audiorec.errors import AudiorecError
from audiorec.itemtypes import ItemTypes
from training.data.dataset import Dataset
from training.data.duck import DatasetLike, connect_dataset
from training.engine import Engine, LocalEngine


class GraphConfig(StrictConfig):
    window_days: int = 90
    max_items_per_user: int = 50
    min_users: int = 1
    # relation codes to keep (None: every pair of types); the paper's ablations keep a
    # subset: no PP = (AA, AP), AA-only = (AA,), ...
    relations: tuple[str, ...] | None = None

    def chosen(self, types: ItemTypes) -> tuple[str, ...]:
        """The relations of ``types`` this config keeps; an unknown code is an error."""
        if self.relations is None:
            return types.relations
        unknown = sorted(set(self.relations) - set(types.relations))
        if unknown:
            raise AudiorecError(
                f"graph relations {unknown} are not pairs of this dataset's "
                f"item types (relations: {', '.join(types.relations)})"
            )
        return tuple(r for r in types.relations if r in self.relations)


@dataclass
class CoListenGraph:
    """Items and their co-listening edges.

    item_id: (N,) node order; node_type: (N,) int64 index into ``types.names``;
    edges: relation -> (src, dst, count) int arrays over node indices, one entry per
    undirected edge, src of the relation's first type (src < dst within one type).
    """

    item_id: np.ndarray
    node_type: np.ndarray
    types: ItemTypes
    edges: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    stats: dict

    @property
    def n(self) -> int:
        return len(self.item_id)

    @property
    def node_types(self) -> int:
        return len(self.types)

    @property
    def directions(self) -> dict[str, tuple[str, str]]:
        """relation -> (its forward message relation, its reverse): AP -> (AP, PA)."""
        return directions(self.types, self.edges)


def directions(types: ItemTypes, relations) -> dict[str, tuple[str, str]]:
    out = {}
    for rel in relations:
        a, b = types.relation_types(rel)
        out[rel] = (rel, types.codes[b] + types.codes[a])
    return out


def build_colisten_graph(
    data: DatasetLike,
    cut: datetime,
    cfg: GraphConfig = GraphConfig(),
    engine: Engine | None = None,
) -> CoListenGraph:
    """The graph of the ``window_days`` before ``cut`` (events at or after it unseen).

    On an engine with several partitions, each user partition counts its own users' pairs
    (a user's items never span partitions) and the counts are summed here: the same
    integers as one pass, so the same graph."""
    data = Dataset.of(data)
    types = data.item_types
    keep = cfg.chosen(types)
    engine = engine or LocalEngine()
    items = catalogue_nodes(data)
    parts = engine.partitions
    counted = engine.map(
        count_pairs,
        [
            (Path(data), cut, cfg, None if parts == 1 else (p, parts), engine.cpus_per_task)
            for p in range(parts)
        ],
    )
    x, y, cnt = _sum_pairs([c["pairs"] for c in counted], len(items["item_id"]))
    keep_pairs = cnt >= cfg.min_users
    x, y, cnt = x[keep_pairs], y[keep_pairs], cnt[keep_pairs]
    node_type = items["node_type"]
    # orient every pair from the earlier type to the later one (type order): (x, y) with
    # type(x) <= type(y); within one type x < y already
    flip = node_type[x] > node_type[y]
    x, y = np.where(flip, y, x), np.where(flip, x, y)
    tx, ty = node_type[x], node_type[y]
    edges = {}
    for rel in keep:
        a, b = (types.index(t) for t in types.relation_types(rel))
        mask = (tx == a) & (ty == b)
        edges[rel] = (x[mask], y[mask], cnt[mask])
    stats = graph_stats(node_type, types, edges)
    stats.update(
        cut=cut.isoformat(),
        window_days=cfg.window_days,
        max_items_per_user=cfg.max_items_per_user,
        pairs_uncapped=int(sum(c["uncapped"] for c in counted)),
        pairs_capped=int(sum(c["capped"] for c in counted)),
    )
    return CoListenGraph(items["item_id"].astype(object), node_type, types, edges, stats)


def _sum_pairs(parts: list[dict], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, users) summed over partitions, sorted by (x, y)."""
    if len(parts) == 1:
        p = parts[0]
        return p["x"], p["y"], p["users"]
    key = np.concatenate([p["x"] * n + p["y"] for p in parts])
    users = np.concatenate([p["users"] for p in parts])
    uniq, inverse = np.unique(key, return_inverse=True)
    total = np.bincount(inverse, weights=users, minlength=len(uniq)).astype(np.int64)
    return uniq // n, uniq % n, total


def count_pairs(
    data: DatasetLike,
    cut: datetime,
    cfg: GraphConfig,
    part: tuple[int, int] | None,
    threads: int = 0,
) -> dict:
    """One engine task: the co-listening pair counts of the users of ``part`` (None: all),
    sorted by (x, y), and the pairs before and after the power-user bound."""
    con = recent_user_items(data, cut, cfg, part, threads)
    try:
        uncapped, capped = con.sql("""
            SELECT (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) AS n FROM ui
                    GROUP BY user_id)),
                   (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) AS n FROM capped
                    GROUP BY user_id))""").fetchall()[0]
        pairs = con.sql("""
            SELECT a.node AS x, b.node AS y, count(*) AS users
            FROM capped a JOIN capped b ON a.user_id = b.user_id AND a.node < b.node
            GROUP BY 1, 2 ORDER BY 1, 2""").fetchnumpy()  # a parallel GROUP BY's order varies
    finally:
        con.close()
    return {
        "pairs": {k: pairs[k].astype(np.int64) for k in ("x", "y", "users")},
        "uncapped": int(uncapped or 0),
        "capped": int(capped or 0),
    }


def catalogue_nodes(data: Dataset) -> dict[str, np.ndarray]:
    """The nodes: every item in item-id order, with its type's index (``node_type``)."""
    con = data.connect(("items",))
    try:
        items = con.sql("SELECT item_id, item_type FROM items ORDER BY item_id").fetchnumpy()
    finally:
        con.close()
    items["node_type"] = data.item_types.positions(items["item_type"])
    return items


def recent_user_items(
    data: DatasetLike,
    cut: datetime,
    cfg: GraphConfig,
    part: tuple[int, int] | None = None,
    threads: int = 0,
):
    """A DuckDB connection holding ``ui(user_id, node, last_ts)``, every (user, item)
    touched (any event) in the ``window_days`` before ``cut`` by the users of ``part =
    (p, parts)`` (``hash(user_id) % parts = p``; None: every user), and ``capped(user_id,
    node)``, each user's ``max_items_per_user`` most recent of them; nodes are numbered in
    item-id order (:func:`catalogue_nodes`)."""
    con = connect_dataset(data, ("items", "events"))
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.sql("SET TimeZone = 'UTC'")
    con.sql(
        "CREATE TEMP TABLE node_ids AS SELECT item_id, row_number() OVER "
        "(ORDER BY item_id) - 1 AS node FROM items"
    )
    lo = cut - timedelta(days=cfg.window_days)
    mine = "TRUE" if part is None else f"hash(e.user_id) % {int(part[1])} = {int(part[0])}"
    con.sql(
        f"""
        CREATE TEMP TABLE ui AS
        SELECT e.user_id, n.node, max(CAST(e.ts AS TIMESTAMPTZ)) AS last_ts
        FROM events e JOIN node_ids n USING (item_id)
        WHERE CAST(e.ts AS TIMESTAMPTZ) >= ? AND CAST(e.ts AS TIMESTAMPTZ) < ? AND {mine}
        GROUP BY 1, 2""",
        params=[lo, cut],
    )
    con.sql(f"""
        CREATE TEMP TABLE capped AS SELECT user_id, node FROM (
          SELECT user_id, node, row_number() OVER (PARTITION BY user_id
                 ORDER BY last_ts DESC, node) AS rk FROM ui)
            WHERE rk <= {cfg.max_items_per_user}""")
    return con


def graph_stats(node_type: np.ndarray, types: ItemTypes, edges: dict) -> dict:
    """Per-relation edge counts and degree statistics (over the nodes of the relation's
    types: audiobooks for AA, both sides for AP), and isolated items per type."""
    n = len(node_type)
    out: dict[str, Any] = {
        "nodes": int(n),
        "items": {t: int((node_type == i).sum()) for i, t in enumerate(types.names)},
        "relations": {},
    }
    touched = np.zeros(n, dtype=bool)
    for rel, (s, d, c) in edges.items():
        deg = np.bincount(np.concatenate([s, d]), minlength=n)
        ends = [types.index(t) for t in types.relation_types(rel)]
        dd = deg[np.isin(node_type, ends)]
        touched |= deg > 0
        out["relations"][rel] = {
            "edges": int(len(s)),
            "co_listens": int(c.sum()),
            "degree_mean": round(float(dd.mean()), 2) if len(dd) else 0.0,
            "degree_median": float(np.median(dd)) if len(dd) else 0.0,
            "degree_p99": float(np.percentile(dd, 99)) if len(dd) else 0.0,
            "degree_max": int(dd.max()) if len(dd) else 0,
            "nodes_with_edges": int((dd > 0).sum()),
        }
    out["isolated"] = {
        t: int(((node_type == i) & ~touched).sum()) for i, t in enumerate(types.names)
    }
    return out

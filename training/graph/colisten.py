"""The co-listening graph (PAPER.md, "The model", point 1), in DuckDB SQL.

Nodes are all items of the catalogue (audiobooks and podcasts), so an item without edges
(a new title) is still a node and gets an embedding from its text. An edge joins two items
that at least ``min_users`` users interacted with (stream or weak signal) inside the
``window_days`` before the training cut. Relations: AA, AP, PP (undirected; message
passing uses both directions, with AP's reverse called PA).

Power users make pairs explode: a user with n items gives n(n-1)/2 pairs. The bound: only
each user's ``max_items_per_user`` most recently touched items in the window take part
(``stats['pairs_uncapped']`` vs ``stats['pairs_capped']`` measures what that drops).
Cost: O(sum over users of min(n, cap)^2) pairs, aggregated by DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from audiorec.config import StrictConfig
from training.data.duck import connect_dataset

RELATIONS = ("AA", "AP", "PP")


class GraphConfig(StrictConfig):
    window_days: int = 90
    max_items_per_user: int = 50
    min_users: int = 1
    # keep a subset for the paper's ablations: no PP = (AA, AP), AA-only = (AA,), ...
    relations: tuple[Literal["AA", "AP", "PP"], ...] = RELATIONS


@dataclass
class CoListenGraph:
    """Items and their co-listening edges.

    item_id: (N,) node order; is_audiobook: (N,) bool;
    edges: relation -> (src, dst, count) int arrays over node indices, one entry per
    undirected edge with src < dst for AA/PP and src = audiobook, dst = podcast for AP.
    """

    item_id: np.ndarray
    is_audiobook: np.ndarray
    edges: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    stats: dict

    @property
    def n(self) -> int:
        return len(self.item_id)


def build_colisten_graph(
    data: str | Path, cut: datetime, cfg: GraphConfig = GraphConfig()
) -> CoListenGraph:
    """The graph of the ``window_days`` before ``cut`` (events at or after it unseen)."""
    con, items = recent_user_items(data, cut, cfg)
    uncapped, capped = con.sql("""
        SELECT (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) AS n FROM ui GROUP BY user_id)),
               (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) AS n FROM capped
                GROUP BY user_id))""").fetchall()[0]
    ab = items["ab"].astype(bool)
    con.register("node_types", pa.table({"node": pa.array(np.arange(len(ab))), "ab": pa.array(ab)}))
    pairs = con.sql(f"""
        SELECT a.node AS x, b.node AS y, count(*) AS users
        FROM capped a JOIN capped b ON a.user_id = b.user_id AND a.node < b.node
        GROUP BY 1, 2 HAVING count(*) >= {cfg.min_users}
        ORDER BY 1, 2""").fetchnumpy()  # a parallel GROUP BY's row order varies per run
    con.close()
    x, y, cnt = (pairs[k].astype(np.int64) for k in ("x", "y", "users"))
    ax, ay = ab[x], ab[y]
    edges = {}
    for rel, mask in (("AA", ax & ay), ("PP", ~ax & ~ay), ("AP", ax ^ ay)):
        if rel not in cfg.relations:
            continue
        s, d, c = x[mask], y[mask], cnt[mask]
        if rel == "AP":  # orient audiobook -> podcast
            flip = ~ab[s]
            s, d = np.where(flip, d, s), np.where(flip, s, d)
        edges[rel] = (s, d, c)
    stats = graph_stats(ab, edges)
    stats.update(
        cut=cut.isoformat(),
        window_days=cfg.window_days,
        max_items_per_user=cfg.max_items_per_user,
        pairs_uncapped=int(uncapped or 0),
        pairs_capped=int(capped or 0),
    )
    return CoListenGraph(items["item_id"].astype(object), ab, edges, stats)


def recent_user_items(data: str | Path, cut: datetime, cfg: GraphConfig):
    """A DuckDB connection holding ``ui(user_id, node, last_ts)``, every (user, item)
    touched (any event) in the ``window_days`` before ``cut``, and ``capped(user_id,
    node)``, each user's ``max_items_per_user`` most recent of them; nodes are numbered in
    item-id order. Also returns the items (item_id, ab)."""
    con = connect_dataset(data, ("items", "events"))
    con.sql("SET TimeZone = 'UTC'")
    items = con.sql(
        "SELECT item_id, item_type = 'audiobook' AS ab FROM items ORDER BY item_id"
    ).fetchnumpy()
    con.register(
        "node_ids",
        pa.table(
            {
                "item_id": pa.array(items["item_id"], pa.string()),
                "node": pa.array(np.arange(len(items["item_id"]))),
            }
        ),
    )
    lo = cut - timedelta(days=cfg.window_days)
    con.sql(
        """
        CREATE TEMP TABLE ui AS
        SELECT e.user_id, n.node, max(CAST(e.ts AS TIMESTAMPTZ)) AS last_ts
        FROM events e JOIN node_ids n USING (item_id)
        WHERE CAST(e.ts AS TIMESTAMPTZ) >= ? AND CAST(e.ts AS TIMESTAMPTZ) < ?
        GROUP BY 1, 2""",
        params=[lo, cut],
    )
    con.sql(f"""
        CREATE TEMP TABLE capped AS SELECT user_id, node FROM (
          SELECT user_id, node, row_number() OVER (PARTITION BY user_id
                 ORDER BY last_ts DESC, node) AS rk FROM ui)
            WHERE rk <= {cfg.max_items_per_user}""")
    return con, items


def graph_stats(ab: np.ndarray, edges: dict) -> dict:
    """Per-relation edge counts and degree statistics (over the nodes the relation
    touches: audiobooks for AA, both sides for AP, podcasts for PP)."""
    out = {
        "nodes": int(len(ab)),
        "audiobooks": int(ab.sum()),
        "podcasts": int((~ab).sum()),
        "relations": {},
    }
    touched = np.zeros(len(ab), dtype=bool)
    for rel, (s, d, c) in edges.items():
        deg = np.bincount(np.concatenate([s, d]), minlength=len(ab))
        side = ab if rel == "AA" else (~ab if rel == "PP" else np.ones_like(ab))
        dd = deg[side]
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
    out["isolated_audiobooks"] = int((ab & ~touched).sum())
    out["isolated_podcasts"] = int((~ab & ~touched).sum())
    return out

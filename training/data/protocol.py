"""The evaluation protocol: a global temporal split and what each user is scored on.

* Split: the hold-out is the last ``holdout_days`` (14) of events (or a share of the
  data's days, ``holdout_share``); every model is trained
  on events before the cut only.
* Catalogue: per item type, the items published before the cut (a model cannot know
  later ones; a hold-out stream of a later title is not a target).
* Targets: per type, the items a user streamed in the hold-out and had not streamed
  before the cut (new starts). Only users with at least one target are scored.
* Groups (the focus type, the paper's audiobooks): warm-start users had an interaction of
  any kind with that type (stream, follow, preview, intent to pay) before the cut;
  cold-start users had none. Every other type (podcasts): all users.
* Already streamed items (before the cut) are never recommended (the serving filter).
* Model selection (every row, the towers' prior included) scores a validation window with
  this same protocol and averages HR@10 over the groups with at least
  ``MIN_GROUP_USERS`` users (:func:`criterion_groups`).

All of it is DuckDB SQL over the dataset (O(events)), returned as sparse matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from audiorec.errors import AudiorecError
from audiorec.itemtypes import ItemTypes
from training.data.dataset import Dataset
from training.data.duck import DatasetLike

# A validation group smaller than this is left out of the selection criterion: one or two
# users would otherwise weigh as much as a group of hundreds (HR@10's standard error over
# 30 users is already about 0.08)
MIN_GROUP_USERS = 30


def criterion_groups(sizes) -> np.ndarray:
    """(len(sizes),) bool: the groups a selection criterion averages: those with at least
    ``MIN_GROUP_USERS`` users, or every group with users when none is that large (tiny
    test worlds)."""
    n = np.asarray(sizes, np.int64)
    big = n >= MIN_GROUP_USERS
    return big if big.any() else n > 0


def group_mean(sizes, values) -> float:
    """The selection criterion: the mean of ``values`` (one per group, NaN = no users)
    over :func:`criterion_groups`; NaN when no group has users."""
    v = np.asarray(values, np.float64)
    ok = ~np.isnan(v)
    keep = np.zeros(len(v), bool)
    keep[ok] = criterion_groups(np.asarray(sizes)[ok])
    return float(v[keep].mean()) if keep.any() else float("nan")


@dataclass
class TypeTruth:
    """What one item type is scored on; rows are ``Protocol.users``, columns the type's
    catalogue (``item_ids``)."""

    item_ids: np.ndarray
    targets: sp.csr_matrix  # (users, items) 1 where a new start in the hold-out
    consumed: sp.csr_matrix  # (users, items) 1 where streamed before the cut
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # group -> user rows


@dataclass
class Protocol:
    cut: datetime
    end: datetime
    users: np.ndarray  # every user with a target of some type
    truth: dict[str, TypeTruth]  # per item type, in the types' order (the focus first)
    types: ItemTypes

    def summary(self, label: str = "hold-out") -> str:
        parts = []
        for kind, t in self.truth.items():
            groups = ", ".join(f"{g} {len(rows):,}" for g, rows in t.groups.items())
            parts.append(
                f"{kind} items: {len(t.item_ids):,} in the catalogue, {t.targets.nnz:,} "
                f"new starts ({groups} users)"
            )
        return f"{label} {self.cut:%Y-%m-%d} .. {self.end:%Y-%m-%d}; " + "; ".join(parts)


def build_protocol(data: DatasetLike, cut: datetime, end: datetime) -> Protocol:
    data = Dataset.of(data)
    types = data.item_types
    con = data.connect(("items", "events"))
    try:
        con.sql(
            """CREATE TEMP TABLE catalogue AS SELECT item_id, item_type FROM items
                   WHERE publish_ts < $cut ORDER BY item_type, item_id""",
            params={"cut": cut},
        )
        con.sql(
            """CREATE TEMP TABLE before AS
                   SELECT DISTINCT e.user_id, e.item_id, c.item_type, e.event_type = 'stream'
                          AS streamed
                   FROM events e JOIN catalogue c USING (item_id) WHERE e.ts < $cut""",
            params={"cut": cut},
        )
        targets = con.sql(
            """
            SELECT DISTINCT e.user_id, e.item_id, c.item_type
            FROM events e JOIN catalogue c USING (item_id)
            WHERE e.event_type = 'stream' AND e.ts >= $cut AND e.ts < $end
              AND NOT EXISTS (SELECT 1 FROM before b WHERE b.user_id = e.user_id
                              AND b.item_id = e.item_id AND b.streamed)""",
            params={"cut": cut, "end": end},
        ).fetchnumpy()
        catalogue = con.sql("SELECT item_id, item_type FROM catalogue").fetchnumpy()
        users = (
            np.unique(targets["user_id"].astype(object))
            if len(targets["user_id"])
            else np.empty(0, object)
        )
        if len(users) == 0:
            raise AudiorecError(
                f"no new starts between {cut:%Y-%m-%d} and {end:%Y-%m-%d}: nothing to evaluate"
            )
        con.register("scored_users", pa.table({"user_id": pa.array(users, pa.string())}))
        before = con.sql("""SELECT b.user_id, b.item_id, b.item_type, b.streamed FROM before b
                            JOIN scored_users USING (user_id)""").fetchnumpy()
    finally:
        con.close()
    truth = {}
    for kind in types:
        ids = np.sort(catalogue["item_id"][catalogue["item_type"] == kind].astype(object))
        t_mask = targets["item_type"] == kind
        b_mask = before["item_type"] == kind
        tgt = _matrix(targets["user_id"][t_mask], targets["item_id"][t_mask], users, ids)
        streamed = b_mask & before["streamed"].astype(bool)
        cons = _matrix(before["user_id"][streamed], before["item_id"][streamed], users, ids)
        has_target = np.flatnonzero(np.diff(tgt.indptr) > 0)
        groups = {"all": has_target}
        if kind == types.focus:
            touched = _matrix(before["user_id"][b_mask], before["item_id"][b_mask], users, ids)
            warm = np.diff(touched.indptr) > 0
            groups = {"warm": has_target[warm[has_target]], "cold": has_target[~warm[has_target]]}
        truth[kind] = TypeTruth(ids, tgt, cons, groups)
    return Protocol(cut, end, users, truth, types)


def _matrix(user_ids, item_ids, users: np.ndarray, ids: np.ndarray) -> sp.csr_matrix:
    """(users, items) 0/1 matrix of the pairs; ``users`` and ``ids`` are sorted."""
    rows = np.searchsorted(users, np.asarray(user_ids, dtype=object))
    cols = np.searchsorted(ids, np.asarray(item_ids, dtype=object))
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(ids)))
    m.sum_duplicates()
    m.data[:] = 1
    return m

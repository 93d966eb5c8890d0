"""The evaluated models, as user and item vectors over a type's catalogue (or, for
popularity, one score per item).

* Popularity: distinct listeners per item over the ``days`` before the cut.
* Mean-of-items models (LLM-KNN with text embeddings, HGNN with HGNN embeddings): a user
  is the mean unit vector of the items (both types) they streamed or weakly signalled in
  the 90 days before the cut; nearest items by cosine.
* Two towers: the user tower on each user's features as of the cut, read through Feast
  (the same point-in-time join as training), against the item tower's item vectors.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.data.duck import DatasetLike, connect_dataset
from training.data.ids import aligned, positions


def unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1)).astype(np.float32)


def popularity(
    data: DatasetLike, cut: datetime, item_ids: np.ndarray, days: int = 28
) -> np.ndarray:
    con = connect_dataset(data, ("events",))
    try:
        df = con.sql(
            """SELECT item_id, count(DISTINCT user_id) AS listeners FROM events
                        WHERE event_type = 'stream' AND ts >= $lo AND ts < $cut GROUP BY 1""",
            params={"lo": cut - timedelta(days=days), "cut": cut},
        ).fetchnumpy()
    finally:
        con.close()
    scores = aligned(
        item_ids, df["item_id"].astype(object), df["listeners"].astype(np.float32)[:, None]
    )[:, 0]
    return scores + 1e-6 * -np.arange(len(item_ids))  # ties: a fixed order


def interaction_matrix(
    data: DatasetLike, cut: datetime, users: np.ndarray, item_ids: np.ndarray, days: int = 90
) -> sp.csr_matrix:
    """(users, items) 0/1: any event (streams and weak signals) in the window."""
    import pyarrow as pa

    con = connect_dataset(data, ("events",))
    try:
        con.register("scored_users", pa.table({"user_id": pa.array(users, pa.string())}))
        df = con.sql(
            """SELECT DISTINCT e.user_id, e.item_id FROM events e
                        JOIN scored_users USING (user_id) WHERE e.ts >= $lo AND e.ts < $cut""",
            params={"lo": cut - timedelta(days=days), "cut": cut},
        ).fetchnumpy()
    finally:
        con.close()
    rows = positions(users, df["user_id"])[0]
    cols, ok = positions(item_ids, df["item_id"])
    return sp.csr_matrix(
        (np.ones(ok.sum(), np.float32), (rows[ok], cols[ok])), shape=(len(users), len(item_ids))
    )


def mean_item_users(interactions: sp.csr_matrix, item_vectors: np.ndarray) -> np.ndarray:
    """Each user's mean unit item vector, re-normalised; zeros for users with none."""
    return unit(interactions @ unit(item_vectors))


def two_tower_users(store, users: np.ndarray, cut: datetime, towers, specs) -> np.ndarray:
    """The served user vectors of ``users`` (the user tower's, with the prior coordinate
    where the model has one) from their Feast features as of ``cut``."""
    from audiorec.tower_inputs import tower_inputs
    from training.features.retrieval import user_training_features

    entity = pd.DataFrame(
        {"user_id": users, "event_timestamp": pd.Timestamp(cut), "row": np.arange(len(users))}
    )
    feats = user_training_features(store, entity).sort_values("row")
    inputs = tower_inputs({c: feats[c].tolist() for c in feats.columns}, specs)
    return towers.user_vectors(inputs)

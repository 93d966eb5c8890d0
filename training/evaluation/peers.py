"""The peers a user would try instead: the ``implicit`` library's ALS, BPR and ItemKNN.

Each is fitted on one weighted (users x items) matrix of every event before the cut (all
users, both item types), the same training events the paper's rows see: a (user, item)
cell is the sum over event types present of that type's weight (``PeerConfig.weights``;
a stream counts 1, a weak signal less by default), so weak signals reach the peers as
they reach the HGNN and the towers. Scoring is the protocol's: per item type over its
catalogue, consumed items masked (:func:`training.evaluation.metrics.top_k`).

* ALS (Hu, Koren, Volinsky 2008): user . item factors, confidence ``1 + alpha x cell``.
* BPR (Rendle et al. 2009): user . item factors (the item bias is a factor column).
* ItemKNN-BM25: BM25-weighted item-item cosine, top ``neighbours`` per item; a user's
  score for an item is the sum of its similarities to the items the user touched.

Settings (factors, regularisation, neighbours) are chosen on the validation window
(:mod:`training.evaluation.selection`), never on the hold-out.

Cost: ALS O(iterations x (nnz x f^2 + (users + items) x f^3)); BPR O(iterations x nnz x
f); ItemKNN O(nnz x mean item degree) to fit, one sparse product per block of users to
score.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from audiorec.config import StrictConfig
from training.data.contract import EVENT_TYPES
from training.data.duck import connect_dataset
from training.data.ids import positions

PEERS = ("ALS", "BPR", "ItemKNN")


class PeerConfig(StrictConfig):
    """One peer's settings; the search space is :data:`GRIDS`."""

    model: Literal["ALS", "BPR", "ItemKNN"]
    factors: int = Field(64, ge=1)
    regularization: float = Field(0.01, ge=0)
    alpha: float = Field(1.0, gt=0)  # ALS confidence scale
    learning_rate: float = Field(0.01, gt=0)  # BPR
    iterations: int = Field(15, ge=1)
    neighbours: int = Field(100, ge=1)  # ItemKNN
    seed: int = 0


# Each peer's own defaults (the library's), always the first setting tried.
DEFAULTS: dict[str, dict] = {
    "ALS": {"factors": 64, "regularization": 0.01, "alpha": 1.0, "iterations": 15},
    "BPR": {"factors": 64, "regularization": 0.01, "learning_rate": 0.01, "iterations": 100},
    "ItemKNN": {"neighbours": 100},
}
# The search space per peer (same trial budget as the towers: selection.trials draws).
GRIDS: dict[str, dict[str, list]] = {
    "ALS": {
        "factors": [32, 64, 128],
        "regularization": [0.01, 0.1, 1.0],
        "alpha": [1.0, 5.0, 20.0],
        "iterations": [15],
    },
    "BPR": {
        "factors": [32, 64, 128],
        "regularization": [0.001, 0.01, 0.1],
        "learning_rate": [0.01, 0.05],
        "iterations": [100, 300],
    },
    "ItemKNN": {"neighbours": [20, 50, 100, 200, 400]},
}


def event_weights_valid(weights: dict[str, float]) -> dict[str, float]:
    unknown = set(weights) - set(EVENT_TYPES)
    if unknown:
        raise ValueError(
            f"unknown event types {sorted(unknown)}; expected some of {list(EVENT_TYPES)}"
        )
    return weights


def training_matrix(
    data: str | Path,
    cut: datetime,
    users: np.ndarray,
    items: np.ndarray,
    weights: dict[str, float],
    days: int | None = None,
) -> sp.csr_matrix:
    """(users, items) float32: per cell the summed weights of the event types seen before
    ``cut`` (within ``days`` if given). ``users`` and ``items`` are sorted; rows or columns
    outside them are dropped."""
    cases = " ".join(f"WHEN '{t}' THEN {float(w)!r}" for t, w in weights.items())
    lo = cut - timedelta(days=days) if days else datetime(1970, 1, 1, tzinfo=cut.tzinfo)
    con = connect_dataset(data, ("events",))
    try:
        df = con.sql(
            f"""
            SELECT user_id, item_id, sum(w) AS w FROM (
                SELECT DISTINCT user_id, item_id, event_type,
                       CASE event_type {cases} ELSE 0.0 END AS w
                FROM events WHERE ts >= $lo AND ts < $cut)
            GROUP BY 1, 2 HAVING sum(w) > 0""",
            params={"lo": lo, "cut": cut},
        ).fetchnumpy()
    finally:
        con.close()
    (rows, user_ok), (cols, item_ok) = (
        positions(users, df["user_id"]),
        positions(items, df["item_id"]),
    )
    ok = user_ok & item_ok
    return sp.csr_matrix(
        (df["w"][ok].astype(np.float32), (rows[ok], cols[ok])), shape=(len(users), len(items))
    )


@dataclass
class FittedPeer:
    """Scores of one fitted peer. ``scores(rows, columns)`` -> (len(rows), len(columns))."""

    cfg: PeerConfig
    matrix: sp.csr_matrix  # the training matrix (users x all items)
    user_factors: np.ndarray | None = None
    item_factors: np.ndarray | None = None
    similarity: sp.csr_matrix | None = None

    def scores(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        if self.similarity is not None:
            return np.asarray(
                (self.matrix[rows] @ self.similarity[:, columns]).todense(), np.float32
            )
        return self.user_factors[rows] @ self.item_factors[columns].T


def fit_peer(matrix: sp.csr_matrix, cfg: PeerConfig) -> FittedPeer:
    """Fit one peer on ``matrix`` (users x items). BLAS is held to one thread inside
    ``implicit``'s own threads (its advice; two cores oversubscribe otherwise)."""
    import warnings

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        # implicit's BM25 hands itself a COO matrix and warns about it; its BLAS check
        # warns even under the limit above
        warnings.simplefilter("ignore")
        if cfg.model == "ItemKNN":
            from implicit.nearest_neighbours import BM25Recommender

            model = BM25Recommender(K=cfg.neighbours)
            model.fit(matrix, show_progress=False)
            return FittedPeer(cfg, matrix, similarity=model.similarity.tocsc())
        if cfg.model == "ALS":
            from implicit.cpu.als import AlternatingLeastSquares

            model = AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=cfg.regularization,
                alpha=cfg.alpha,
                iterations=cfg.iterations,
                random_state=cfg.seed,
            )
        else:
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            model = BayesianPersonalizedRanking(
                factors=cfg.factors,
                learning_rate=cfg.learning_rate,
                regularization=cfg.regularization,
                iterations=cfg.iterations,
                random_state=cfg.seed,
            )
        model.fit(matrix, show_progress=False)
    return FittedPeer(
        cfg,
        matrix,
        np.asarray(model.user_factors, np.float32),
        np.asarray(model.item_factors, np.float32),
    )

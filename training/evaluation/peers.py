"""The peers a user would try instead: the ``implicit`` library's ALS, BPR and ItemKNN,
and two strong simple item-item models written here, EASE and RP3-beta.

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
* EASE (Steck 2019): the closed-form item-item model ``B = I - P / diag(P)`` with ``P =
  (X'X + l2 I)^-1`` and a zero diagonal; level with tuned iALS on ML-20M. Dense items x
  items: fitted only up to ``max_items`` (the evaluation says when it is skipped).
* RP3-beta (Paudel et al. 2017; Dacrema et al. 2019's strongest simple peer): the
  3-step random walk item -> user -> item, transition probabilities raised to ``alpha``,
  divided by the target item's popularity to the power ``beta``, top ``neighbours``
  per item.

Settings (factors, regularisation, neighbours) are chosen on the validation window
(:mod:`training.evaluation.selection`), never on the hold-out.

Cost: ALS O(iterations x (nnz x f^2 + (users + items) x f^3)); BPR O(iterations x nnz x
f); ItemKNN O(nnz x mean item degree) to fit, one sparse product per block of users to
score; EASE O(items^3) time and O(items^2) memory; RP3-beta O(items^2) for the walk (in
blocks of item rows) plus O(nnz x mean item degree).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from audiorec.config import StrictConfig
from audiorec.vocabulary import EVENT_TYPES
from training.data.duck import DatasetLike, connect_dataset
from training.data.ids import positions

PeerName = Literal["ALS", "BPR", "ItemKNN", "EASE", "RP3beta"]
PEERS: tuple[PeerName, ...] = ("ALS", "BPR", "ItemKNN", "EASE", "RP3beta")
DETERMINISTIC = ("ItemKNN", "EASE", "RP3beta")  # one fit, whatever the seed


class PeerConfig(StrictConfig):
    """One peer's settings; the search space is :data:`GRIDS`."""

    model: PeerName
    factors: int = Field(64, ge=1)
    regularization: float = Field(0.01, ge=0)
    alpha: float = Field(1.0, gt=0)  # ALS confidence scale
    learning_rate: float = Field(0.01, gt=0)  # BPR
    iterations: int = Field(15, ge=1)
    neighbours: int = Field(100, ge=1)  # ItemKNN, RP3-beta
    l2: float = Field(500.0, gt=0)  # EASE
    walk_alpha: float = Field(1.0, gt=0)  # RP3-beta: transition probabilities ** alpha
    popularity_beta: float = Field(0.5, ge=0)  # RP3-beta: / popularity ** beta
    seed: int = 0


# Each peer's own defaults (the library's), always the first setting tried.
DEFAULTS: dict[str, dict] = {
    "ALS": {"factors": 64, "regularization": 0.01, "alpha": 1.0, "iterations": 15},
    "BPR": {"factors": 64, "regularization": 0.01, "learning_rate": 0.01, "iterations": 100},
    "ItemKNN": {"neighbours": 100},
    # EASE's paper: l2 500 on ML-20M, 1000 on Netflix, 200 on MSD
    "EASE": {"l2": 500.0},
    # RP3-beta's paper and Dacrema et al.'s tuned ranges: alpha about 1, beta 0.4-0.7
    "RP3beta": {"walk_alpha": 1.0, "popularity_beta": 0.5, "neighbours": 100},
}
# The search space per peer (same trial budget as the towers: selection.trials draws).
GRIDS: dict[str, dict[str, list]] = {
    "ALS": {
        "factors": [32, 64, 128],
        "regularization": [0.01, 0.05, 0.1, 1.0],
        "alpha": [1.0, 5.0, 20.0, 40.0],  # 40: Hu et al.'s own
        "iterations": [15],
    },
    "BPR": {
        "factors": [32, 64, 128],
        "regularization": [0.001, 0.01, 0.1],
        "learning_rate": [0.01, 0.05],
        "iterations": [100, 300],
    },
    "ItemKNN": {"neighbours": [20, 50, 100, 200, 400]},
    "EASE": {"l2": [10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 3000.0]},
    "RP3beta": {
        "walk_alpha": [0.5, 0.75, 1.0, 1.25],
        "popularity_beta": [0.0, 0.2, 0.4, 0.5, 0.6, 0.8],
        "neighbours": [50, 100, 200, 400],
    },
}


def event_weights_valid(weights: dict[str, float]) -> dict[str, float]:
    unknown = set(weights) - set(EVENT_TYPES)
    if unknown:
        raise ValueError(
            f"unknown event types {sorted(unknown)}; expected some of {list(EVENT_TYPES)}"
        )
    return weights


def training_matrix(
    data: DatasetLike,
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
    dense_similarity: np.ndarray | None = None  # EASE's (items, items)

    def scores(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        if self.dense_similarity is not None:
            return np.asarray(self.matrix[rows] @ self.dense_similarity[:, columns], np.float32)
        if self.similarity is not None:
            return np.asarray(
                (self.matrix[rows] @ self.similarity[:, columns]).todense(), np.float32
            )
        assert self.user_factors is not None and self.item_factors is not None  # factor models
        return self.user_factors[rows] @ self.item_factors[columns].T


def fit_peer(matrix: sp.csr_matrix, cfg: PeerConfig) -> FittedPeer:
    """Fit one peer on ``matrix`` (users x items). BLAS is held to one thread inside
    ``implicit``'s own threads (its advice; two cores oversubscribe otherwise)."""
    import warnings

    from threadpoolctl import threadpool_limits

    if cfg.model == "EASE":
        return FittedPeer(cfg, matrix, dense_similarity=ease(matrix, cfg.l2))
    if cfg.model == "RP3beta":
        w = rp3beta(matrix, cfg.walk_alpha, cfg.popularity_beta, cfg.neighbours)
        return FittedPeer(cfg, matrix, similarity=w.tocsc())
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


def ease_bytes(items: int) -> int:
    """EASE's peak memory for ``items`` items: the Gram matrix, its inverse and the
    symmetrised copies (float32)."""
    return 4 * items * items * 4


def ease(matrix: sp.csr_matrix, l2: float) -> np.ndarray:
    """(items, items) float32 EASE weights: ``B = I - P diag(1 / diag(P))`` with ``P =
    (X'X + l2 I)^-1``, diagonal 0 (an item never recommends itself)."""
    from scipy.linalg import lapack

    gram = (matrix.T @ matrix).toarray().astype(np.float32)
    gram[np.diag_indices_from(gram)] += np.float32(l2)
    # X'X + l2 I is symmetric positive definite: its inverse from the Cholesky factor
    # (potrf + potri, 2/3 n^3 flops: a third of a general inverse), in place
    factor, info = lapack.spotrf(gram, lower=True, overwrite_a=True, clean=False)
    if info == 0:
        p, info = lapack.spotri(factor, lower=True, overwrite_c=True)
    if info != 0:
        raise ValueError(f"EASE: the regularised Gram matrix is not positive definite ({info})")
    p = np.tril(p) + np.tril(p, -1).T  # potri fills the lower triangle only
    b = p / -np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32, copy=False)


def rp3beta(matrix: sp.csr_matrix, alpha: float, beta: float, neighbours: int) -> sp.csr_matrix:
    """(items, items) RP3-beta weights, the top ``neighbours`` per row: ``W[i, j] =
    sum_u P(u | i)^alpha P(j | u)^alpha / popularity(j)^beta``, diagonal 0. Transition
    probabilities are the l1-normalised rows of the (weighted) interaction matrix and of
    its transpose; popularity is the number of users who touched the item."""
    x = sp.csr_matrix(matrix, dtype=np.float32)
    x.eliminate_zeros()
    p_ui = _l1_rows(x)
    p_iu = _l1_rows(x.T.tocsr())
    p_ui.data **= np.float32(alpha)
    p_iu.data **= np.float32(alpha)
    users_per_item = np.diff(x.tocsc().indptr).astype(np.float32)
    scale = np.where(users_per_item > 0, np.maximum(users_per_item, 1) ** -np.float32(beta), 0)
    n = x.shape[1]
    k = min(neighbours, max(n - 1, 1))
    block = max(1, min(1024, (1 << 24) // max(n, 1)))  # a dense block of <= 64 MB
    rows, cols, vals = [], [], []
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        w = np.asarray((p_iu[lo:hi] @ p_ui).todense(), np.float32) * scale[None, :]
        w[np.arange(hi - lo), np.arange(lo, hi)] = 0.0
        top = (
            np.argpartition(-w, k - 1, axis=1)[:, :k]
            if k < n
            else np.tile(np.arange(n), (hi - lo, 1))
        )
        v = np.take_along_axis(w, top, axis=1)
        keep = v > 0
        rows.append(np.repeat(np.arange(lo, hi), k)[keep.ravel()])
        cols.append(top[keep])
        vals.append(v[keep])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


def _l1_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(m.sum(axis=1)).ravel()
    inv = np.where(sums > 0, 1.0 / np.where(sums > 0, sums, 1.0), 0.0).astype(np.float32)
    return sp.csr_matrix(sp.diags(inv) @ m, dtype=np.float32)

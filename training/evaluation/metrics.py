"""Batched top-k and the paper's metrics, vectorised.

``top_k`` scores users against a type's catalogue in blocks (users x items matrix
products), masks what each user already streamed, and keeps the best ``k`` per user
(argpartition, then a sort of k). ``metrics`` reads the rank of each user's first
held-out item off that list: HR@K for every K up to k (share of users with a hit in the
top K), MRR (mean 1/rank of the first hit, 0 without a hit in the top k) and coverage
(distinct items recommended to anyone / catalogue size), and each user's hit@10 for the
paired intervals between rows.

Cost: O(users x items x dim) for scoring, O(users x k) for the metrics.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp

TOP = 100


def top_k(
    user_vectors: np.ndarray | None,
    item_vectors: np.ndarray | None,
    consumed: sp.csr_matrix,
    rows: np.ndarray,
    k: int = TOP,
    item_scores: np.ndarray | None = None,
    block: int = 2048,
    score_rows: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """(len(rows), k) item columns, best first, for the users ``rows``.

    Scores are ``user_vectors[rows] @ item_vectors.T``; for models without user vectors,
    the same ``item_scores`` for everyone (popularity), or ``score_rows(user rows)`` ->
    (len(rows), items) for models that score otherwise (ItemKNN)."""
    n_items = consumed.shape[1]
    k = min(k, n_items)
    out = np.empty((len(rows), k), np.int64)
    for start in range(0, len(rows), block):
        r = rows[start : start + block]
        if score_rows is not None:
            scores = np.array(score_rows(r), np.float32)
        elif item_scores is not None:
            scores = np.broadcast_to(item_scores.astype(np.float32), (len(r), n_items)).copy()
        else:
            assert user_vectors is not None and item_vectors is not None  # by the contract
            scores = user_vectors[r] @ item_vectors.T
        seen = consumed[r].tocoo()
        scores[seen.row, seen.col] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start : start + block] = np.take_along_axis(part, order, axis=1)
    return out


def first_hit_rank(top: np.ndarray, targets: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """0-based rank of each user's first target in ``top``; ``top.shape[1]`` if none."""
    hits = np.asarray(targets[np.repeat(rows, top.shape[1]), top.ravel()]).reshape(top.shape)
    has = hits.any(axis=1)
    return np.where(has, hits.argmax(axis=1), top.shape[1])


def metrics(top: np.ndarray, targets: sp.csr_matrix, rows: np.ndarray) -> dict:
    """HR@10, MRR, coverage and the HR@K curve (K = 1..k) of one model on one group."""
    k = top.shape[1]
    rank = first_hit_rank(top, targets, rows)
    hr_curve = [(rank < K).mean() if len(rank) else float("nan") for K in range(1, k + 1)]
    mrr = float(np.where(rank < k, 1.0 / (rank + 1), 0.0).mean()) if len(rank) else float("nan")
    return {
        "users": int(len(rows)),
        "hr@10": float(hr_curve[9]) if k >= 10 else float("nan"),
        "mrr": mrr,
        "coverage": float(len(np.unique(top)) / targets.shape[1]),
        "hr_curve": [float(h) for h in hr_curve],
        # per user (in ``rows``' order): the paired bootstrap over users reads it
        # (training/evaluation/intervals.py); summaries keep only the interval
        "hit@10": (rank < 10).astype(np.float32),
        # what was recommended, whatever the targets: the future-invariance test compares it
        "top10": top[:, :10].astype(np.int32),
    }

"""The popularity / recency prior offered to every row that scores users against items.

2T and 2T-HGNN carry the prior (:mod:`training.twotower.prior`): ``beta[type] x prior``
added to each score, beta and the listeners' half-life chosen per item type on the towers'
validation slice (the last ``two_tower.validation_days`` before the cut). A peer gets the
same add-on, chosen the same way on the same slice, as a second row ("ALS + prior"):

    score(user, item) = z_user(model score) + beta[type] x prior(item)

The model's scores are standardised per user over the type's catalogue (``z``), because a
peer's scores have no fixed scale (an ALS dot product, a sum of similarities), while the
towers' cosine has one; the prior is the towers' own (log1p recency-weighted listeners over
the type's maximum, in [0, 1]), with the same grid of betas and half-lives, the same
criterion (per type, the mean HR@10 of its groups with at least 30 users) and the same
tie-breaking (the smallest beta first, so 0, the model alone, wins ties). Like the towers,
whose settings are chosen together with their prior, each peer setting tried on the slice
(fitted on the events before it) gets its prior chosen, and the "+ prior" row keeps the
setting whose choice scores best; it is then refitted through the cut for the row.

Cost per peer: one more fit, then per item type and group one (users x items) score block
(at most ``max_users`` users) and one add and compare per candidate (prior._hits).
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

import numpy as np

from training.data.duck import DatasetLike
from training.data.protocol import Protocol

# (kind, catalogue item ids) -> (user rows of the protocol -> (rows, items) scores)
RowScorer = Callable[[str, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each row's scores as z-scores over its items (a constant row becomes zeros)."""
    s = np.asarray(scores, np.float32)
    mean = s.mean(axis=1, keepdims=True)
    std = s.std(axis=1, keepdims=True)
    return (s - mean) / np.where(std > 0, std, 1)


def tie_order(n: int) -> np.ndarray:
    """(n,) a fixed descending offset below any real score difference, so that tied scores
    rank in catalogue order. The prior's hit count gives a tie to the target (right for
    the towers' continuous scores), which would make a peer's constant row (a listener it
    knows nothing about: all zeros) hit every time, and beta 0 win for nothing."""
    return (np.arange(n, dtype=np.float32) * np.float32(1e-4 / max(n, 1)))[None, :]


def item_priors(
    data: DatasetLike, when: datetime, item_ids: np.ndarray, types: np.ndarray, half_lives
) -> np.ndarray:
    """(len(half_lives), items): each item's prior as of ``when`` (sorted ``item_ids``)."""
    from training.twotower.prior import prior, recent_listeners

    listeners = recent_listeners(data, when, item_ids, tuple(half_lives))
    return np.stack([prior(listeners[h], types) for h in range(len(half_lives))])


def choose_prior(
    data: DatasetLike,
    proto: Protocol,
    item_ids: np.ndarray,
    types: np.ndarray,
    scorer: RowScorer,
    betas: tuple[float, ...],
    half_lives: tuple[float, ...],
    max_users: int = 2000,
) -> dict:
    """Beta and half-life per item type on the validation slice ``proto`` (the towers'
    choice, :func:`training.twotower.prior.choose_cells`); ``scorer`` scores ``proto``'s
    users with the model fitted before ``proto.cut``. ``item_ids`` (sorted) and ``types``:
    every item."""
    from training.twotower.prior import choose_cells

    then = item_priors(data, proto.cut, item_ids, types, half_lives)

    def base_of(kind, truth):
        rows_of = scorer(kind, truth.item_ids)
        tie = tie_order(len(truth.item_ids))
        return lambda rows: standardised(rows_of(rows)) - tie

    return choose_cells(
        proto,
        base_of,
        lambda kind, truth: then[:, np.searchsorted(item_ids, truth.item_ids)],
        betas,
        half_lives,
        max_users,
    )


def prior_adder(
    chosen: dict[str, dict],
    data: DatasetLike,
    cut: datetime,
    item_ids: np.ndarray,
    types: np.ndarray,
) -> Callable[[RowScorer], RowScorer]:
    """``add(scorer)``: ``scorer`` with each type's chosen ``beta x prior`` (listeners as
    of ``cut``, counted once here for every scorer it is given) added to the standardised
    scores."""
    half_lives = sorted({c["half_life_days"] for c in chosen.values()})
    now = item_priors(data, cut, item_ids, types, half_lives)

    def add(scorer: RowScorer) -> RowScorer:
        def of_type(kind: str, ids: np.ndarray):
            c = chosen.get(kind, {"beta": 0.0, "half_life_days": half_lives[0]})
            shift = (
                np.float32(c["beta"])
                * now[half_lives.index(c["half_life_days"]), np.searchsorted(item_ids, ids)]
            ).astype(np.float32)
            rows_of = scorer(kind, ids)
            return lambda rows: standardised(rows_of(rows)) + shift[None, :]

        return of_type

    return add

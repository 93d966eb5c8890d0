"""Model selection on a validation window that never sees the hold-out.

The validation window is one for every row: the towers' validation slice, the last
``two_tower.validation_days`` before the evaluation's cut (the slice the pipeline's towers
stop early and choose their prior on). A model's candidate settings are trained on events
before the window's start and scored on the window with the hold-out's own protocol
(catalogue, consumed filter, warm / cold groups, new starts). The criterion is HR@10
averaged over the report's groups (warm- and cold-start audiobooks, podcasts) that have at
least ``MIN_GROUP_USERS`` validation users (:func:`training.data.protocol.group_mean`), so
a setting that only helps one group does not win and a group of a few users does not
decide; the prior of the towers and of every "+ prior" row is chosen with the same
criterion (per item type, over that type's groups). Every model gets the same budget:
``trials`` settings drawn (seeded) from its grid, the defaults always among them. The
chosen setting is then refitted on everything before the cut and scored on the hold-out
once.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np

from training.data.protocol import Protocol, group_mean
from training.evaluation.metrics import metrics, top_k

Scorer = dict  # {"user_vecs", "item_vecs_of", "item_scores_of", "score_rows_of"}


def score_protocol(
    proto: Protocol, user_vecs=None, item_vecs_of=None, item_scores_of=None, score_rows_of=None
) -> list[tuple[str, str, dict]]:
    """(item type, group, metrics) for every group of ``proto``. A model is given as user
    and item vectors, one score per item (``item_scores_of(kind, ids)``) or a row scorer
    (``score_rows_of(kind, ids)(user rows) -> scores``)."""
    out = []
    for kind, truth in proto.truth.items():
        iv = None if item_vecs_of is None else item_vecs_of(kind, truth.item_ids)
        sc = None if item_scores_of is None else item_scores_of(kind, truth.item_ids)
        rs = None if score_rows_of is None else score_rows_of(kind, truth.item_ids)
        for group, rows in truth.groups.items():
            top = top_k(user_vecs, iv, truth.consumed, rows, item_scores=sc, score_rows=rs)
            out.append((kind, group, metrics(top, truth.targets, rows)))
    return out


def criterion(scored: list[tuple[str, str, dict]]) -> float:
    """Mean HR@10 over the groups with at least ``MIN_GROUP_USERS`` users (over every
    group that has users when none is that large, as on tiny test worlds)."""
    return group_mean([m["users"] for *_, m in scored], [m["hr@10"] for *_, m in scored])


def candidates(grid: dict[str, list], defaults: dict, trials: int, seed: int = 0) -> list[dict]:
    """``trials`` settings from the grid: the defaults first, then seeded draws without
    repeats (fewer when the grid is smaller)."""
    keys = sorted(grid)
    space = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    first = {k: defaults[k] for k in keys}
    rest = [c for c in space if c != first]
    order = np.random.default_rng(seed).permutation(len(rest))
    return [first] + [rest[i] for i in order[: max(0, trials - 1)]]


def choose(settings: list[dict], evaluate: Callable[[dict], float]) -> tuple[dict, list[dict]]:
    """The setting with the best validation criterion (first wins ties), and every trial
    as ``{**setting, "validation": value}``."""
    return pick(settings, [evaluate(s) for s in settings])


def pick(settings: list[dict], values: list[float]) -> tuple[dict, list[dict]]:
    """:func:`choose` with the criterion already computed, one value per setting."""
    trials = [{**s, "validation": v} for s, v in zip(settings, values)]
    scores = [v if not np.isnan(v) else -np.inf for v in values]
    return settings[int(np.argmax(scores))], trials

"""Explanations: each recommended item's "because you <did> <X>".

X is the listener's item nearest the recommended one by cosine of the served item vectors
(without the prior coordinate, which is popularity, not content), over their history: the
90-day window at the version's cut and the events recorded since. <did> is what they
actually did with X (their strongest event with it). An item the same answer recommends
is never the reason for another.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from audiorec.vocabulary import EVENT_STRENGTH
from serving.artifact import Artifact
from serving.events import Event


def explain_items(
    art: Artifact,
    items: Sequence[Any],
    item_type: str,
    labels: np.ndarray,
    user_id: str,
    recent: list[Event],
) -> None:
    """Fill each item's (serving.recommender.Item, the answer's ``labels`` in order)
    ``because_*`` with the user's recent item nearest it and what they did with it.
    O(k x history)."""
    shown = art.label_rows[item_type][labels]
    rows, actions = _history(art.window_actions(user_id), recent, art.item_ids)
    keep = ~np.isin(rows, shown)
    rows, actions = rows[keep], actions[keep]
    if not len(rows) or not items:
        return
    width = art.vectors.shape[1] - int(bool(art.manifest.model.get("prior")))
    a, b = art.vectors[shown, :width], art.vectors[rows, :width]
    sims = (a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)) @ (
        b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    ).T
    best = np.argmax(sims, axis=1)
    for item, j in zip(items, best):
        item.because_item_id = str(art.item_ids[rows[j]])
        item.because_title = str(art.titles[rows[j]])
        item.because_event = str(actions[j])


# the strength of an event as a reason (what an explanation says the listener did)
_STRENGTH = {**EVENT_STRENGTH, "": 0}


def _history(
    window: tuple[np.ndarray, np.ndarray], recent: list[Event], catalogue: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(distinct item rows, the strongest event type of each) over the window at the cut
    and the events recorded since (those of items in the sorted ``catalogue``)."""
    ids = np.asarray([r.item_id for r in recent], dtype=object)
    kinds = np.asarray([r.event_type for r in recent], dtype=object)
    at = np.searchsorted(catalogue, ids)
    known = at < len(catalogue)
    known[known] = catalogue[at[known]] == ids[known]
    rows = np.concatenate([window[0], at[known]]).astype(np.int64)
    actions = np.concatenate([window[1], kinds[known]])
    if not len(rows):
        return rows, actions
    strength = np.array([_STRENGTH.get(a, 0) for a in actions])
    order = np.lexsort((-strength, rows))  # per row, the strongest first
    rows, actions = rows[order], actions[order]
    first = np.r_[True, rows[1:] != rows[:-1]]
    return rows[first], actions[first]

"""Top-k of one item type for a query vector, with a request's filters: the items to
exclude (consumed, streamed since the cut) and the languages allowed.

:class:`TypeSearch` holds what a type's searches share (its index, its labels' item rows,
an item row -> label map, its labels per language). On an inverted-list or routed index
without a language filter the exclusions are skipped inside the scan (k asked, k re-scored); else
the index is asked for enough candidates that k survive the filters evenly spread, then
twice as many, and a small allowed set is scanned exactly.

Shapes: ``search(vector (dim,), k, exclude_rows (e,) item rows, languages, item_query)`` ->
(labels (<= k,) int64, scores (<= k,) float32), best first; a label's item row is
``label_rows[label]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from audiorec.ivf_index import IVFIndex
from audiorec.routed_index import RoutedIndex
from serving.artifact import Artifact

BRUTE_FORCE_SHARE = 0.2  # below this share of allowed items, search them exactly


class TypeSearch:
    def __init__(self, artifact: Artifact, kind: str):
        self.vectors = artifact.vectors
        self.index, self.label_rows = artifact.indexes[kind], artifact.label_rows[kind]
        # an item's neighbours: a routed index's routes were learned from users, and an
        # item's vector is no user's, so item queries go to the lists behind the routes
        index = self.index
        self.item_index = index.fallback if isinstance(index, RoutedIndex) else index
        self.by_language = _by_language(artifact, self.label_rows)
        self.label_of = np.full(len(artifact.item_ids), -1, np.int64)  # item row -> label
        self.label_of[self.label_rows] = np.arange(len(self.label_rows))

    def search(
        self,
        vector: np.ndarray,
        k: int,
        exclude_rows: np.ndarray,
        languages: Sequence[str],
        item_query: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``item_query``: ``vector`` is an item's (RecommendSimilar), not a user's."""
        index, label_rows = self.item_index if item_query else self.index, self.label_rows
        n = len(label_rows)
        # -1 for the rows of other types, which match no label. Neither those nor repeats
        # are taken out before the scan (each numpy call costs a request several us):
        # both only overstate the count, which errs toward the general path, and where
        # the count decides whether an answer is complete it is made exact first.
        excluded = self.label_of[exclude_rows]
        if isinstance(index, (IVFIndex, RoutedIndex)) and not languages:
            if len(excluded) >= (1 - BRUTE_FORCE_SHARE) * n:
                excluded = excluded[excluded >= 0]
            if len(excluded) < (1 - BRUTE_FORCE_SHARE) * n:
                # the exclusions skipped inside the scan: k asked, k re-scored deep, and
                # no per-request work over the whole catalogue
                labels, scores = index.search(vector, k, exclude=excluded)
                if labels[0, -1] >= 0:  # as many as asked (a missing answer is -1, last)
                    return labels[0], scores[0]
                found = labels[0] >= 0
                if found.sum() >= n - len(np.unique(excluded[excluded >= 0])):
                    return labels[0][found], scores[0][found]
                # the probed cells held fewer than k allowed items: the general path
        excluded = excluded[excluded >= 0]
        blocked = np.zeros(n, bool)
        blocked[excluded] = True
        if languages:
            allowed = np.zeros(n, bool)
            for lang in languages:
                allowed[self.by_language.get(lang, [])] = True
            blocked |= ~allowed
        free = n - int(blocked.sum())
        if free == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)

        def exact() -> tuple[np.ndarray, np.ndarray]:
            cand = np.flatnonzero(~blocked)
            scores = self.vectors[label_rows[cand]] @ vector
            top = np.argsort(-scores, kind="stable")[:k]
            return cand[top], scores[top]

        if free < BRUTE_FORCE_SHARE * n:
            return exact()
        # Enough candidates that k survive if the filters were spread evenly; else double.
        fetch = min(n, int((k + len(excluded)) * n / free) + 10)
        while True:
            try:
                labels, scores = index.search(vector, fetch)
            except RuntimeError:
                # hnswlib cannot return `fetch` neighbours when it is close to the index
                # size and ef is small (its graph search ends short): exact search then
                return exact()
            found = labels[0] >= 0  # an inverted index marks missing answers with -1
            labels, scores = labels[:, found], scores[:, found]
            keep = ~blocked[labels[0]]
            if keep.sum() >= min(k, free):
                return labels[0][keep][:k], scores[0][keep][:k]
            if fetch >= n:  # the index's cells ran out before k survived the filters
                return exact()
            fetch = min(n, fetch * 2)


def _by_language(artifact: Artifact, label_rows: np.ndarray) -> dict[str, np.ndarray]:
    """language -> the labels of its items. On the artifact's integer language codes: a
    sort of 200k Python strings held the GIL for ~65 ms, a stall for every request a hot
    swap serves meanwhile."""
    if len(artifact.language_codes) != len(artifact.item_ids):  # built without codes
        langs = artifact.languages[label_rows]
        return {lang: np.flatnonzero(langs == lang) for lang in np.unique(langs)}
    codes = artifact.language_codes[label_rows]
    return {str(artifact.language_names[c]): np.flatnonzero(codes == c) for c in np.unique(codes)}

"""Ids to positions: the one lookup every sparse matrix of (user, item) pairs is built with."""

from __future__ import annotations

import numpy as np


def positions(sorted_ids: np.ndarray, ids) -> tuple[np.ndarray, np.ndarray]:
    """(position of each of ``ids`` in ``sorted_ids``, whether it is there at all).
    Positions of missing ids are clipped into range and must be masked with ``found``."""
    ids = np.asarray(ids, dtype=object)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
    found = (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
    return pos, found


def aligned(ids: np.ndarray, table_ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Rows of ``table`` (keyed by ``table_ids``) in the order of ``ids``; zeros where
    an id is missing."""
    order = np.argsort(table_ids)
    pos = np.searchsorted(table_ids[order], ids)
    pos = np.minimum(pos, len(order) - 1)
    found = table_ids[order][pos] == ids
    out = np.zeros((len(ids), table.shape[1]), np.float32)
    out[found] = table[order][pos[found]]
    return out

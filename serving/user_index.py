"""User id -> position, without a Python object per user.

An artifact version holds a million users or more. A ``dict`` of them costs a Python
string and a dict entry each (~100 bytes), and building it during a hot swap held the GIL
long enough, again and again, to stall the requests the old version was serving (the
worst calls of a swap at 1M users: 50-90 ms, docs/benchmarks.md). Here the sorted ids are
one fixed-width bytes array (:mod:`audiorec.lookup`, memory-mapped from the version), and
a lookup is one binary search (``np.searchsorted``: a few microseconds).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class UserIndex:
    """``keys``: (u,) ``S{width}`` user ids, strictly increasing (checked by the
    lookup's loader); a user's position is its position there."""

    def __init__(self, keys: np.ndarray):
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, user_id: str) -> int | None:
        """The user's position, or None for a user the version does not hold."""
        key = user_id.encode()
        keys = self._keys
        if not len(keys) or len(key) > keys.dtype.itemsize or key.endswith(b"\0"):
            return None  # longer than every id, or one numpy would equate with another
        i = int(np.searchsorted(keys, key))
        return i if i < len(keys) and keys[i] == key else None

    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, str) and self.get(user_id) is not None

    def __iter__(self) -> Iterator[str]:
        """The ids in position order (decoded one at a time: for tools and warm-up)."""
        return (k.decode() for k in self._keys)

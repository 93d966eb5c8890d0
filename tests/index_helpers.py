"""What the item-index tests share: a catalogue in clusters, with a prior coordinate."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def clustered_items() -> np.ndarray:
    """6,000 unit vectors in 60 clusters, plus a prior coordinate in [0, 0.2]: (6000, 33)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 32))[rng.integers(0, 60, 6000)] + rng.normal(
        scale=0.5, size=(6000, 32)
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.hstack([x, 0.2 * rng.random((6000, 1))]).astype(np.float32)

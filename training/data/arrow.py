"""Arrow helpers shared by every writer of vector columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vector_column(matrix: np.ndarray) -> pa.ListArray:
    """(n, dim) matrix -> list<float32> array of n rows (the contract's vector type),
    without a Python loop."""
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    n, dim = m.shape
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(m.ravel()))

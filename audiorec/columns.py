"""Arrow string columns as numpy object arrays, without long holds of the GIL.

Converting a column of strings makes a Python object per value, in one call that holds
the GIL throughout: ~10-30 ms for a few hundred thousand values. A server that loads a new
artifact version beside the one it serves (a hot swap) would stall every request for that
long. :func:`to_objects` converts a slice at a time; :func:`from_codes`, for columns of a
few distinct values (item types, languages), makes one object per distinct value and
indexes them in numpy.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SLICE = 4_096


def to_objects(column: pa.Array | pa.ChunkedArray, piece: int = SLICE) -> np.ndarray:
    """(n,) object array of the column's values (``None`` for nulls)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    out = np.empty(len(column), dtype=object)
    for start in range(0, len(column), piece):
        out[start : start + piece] = column.slice(start, piece).to_pylist()
    return out


def from_codes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The same array as :func:`to_objects`, for a column of few distinct values: Arrow's
    dictionary encoding, then one Python string per distinct value."""
    if column.null_count:
        return to_objects(column)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    names = np.empty(len(encoded.dictionary), dtype=object)
    names[:] = encoded.dictionary.to_pylist()
    return names[np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.intp)]

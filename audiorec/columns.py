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


def dictionary(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray] | None:
    """(int32 code per value, object array of the distinct values) by Arrow's dictionary
    encoding; None where the column has nulls."""
    if column.null_count:
        return None
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    names = np.empty(len(encoded.dictionary), dtype=object)
    names[:] = encoded.dictionary.to_pylist()
    return np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int32), names


def from_codes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The same array as :func:`to_objects`, for a column of few distinct values: one
    Python string per distinct value, indexed in numpy."""
    coded = dictionary(column)
    if coded is None:
        return to_objects(column)
    codes, names = coded
    out: np.ndarray = names[codes]
    return out

"""Raw Feast feature values -> the arrays a tower's signature takes, one rule per kind.

Training (Feast historical features, Arrow columns) and serving (Feast online features,
Python lists) both go through :func:`tower_inputs`, so the two cannot drift; the request
path's one row goes through :class:`RowInputs`, the same rule in fewer numpy calls (the
tests hold the two equal). The rule is
mechanical, not feature logic: a missing string becomes ``""``, a missing number ``NaN``,
a missing vector a row of ``NaN``. What a missing value *means* (zero, the training mean,
an out-of-vocabulary bucket) is decided inside the exported model.

Shapes: string (n,) object; number (n,) float32; vector (n, dim) float32.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from audiorec.errors import ContractError


class InputSpec(BaseModel):
    """One tower input: a feature of the feature service."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: Literal["string", "number", "vector"]
    dim: int = 1


def tower_inputs(
    columns: Mapping[str, pa.Array | pa.ChunkedArray | Sequence[Any]], specs: Sequence[InputSpec]
) -> dict[str, np.ndarray]:
    """Convert each spec'd column of ``columns`` (extra columns are ignored)."""
    missing = [s.name for s in specs if s.name not in columns]
    if missing:
        raise ContractError(
            f"features {missing} expected by the tower are missing; got {sorted(columns)}"
        )
    return {s.name: _convert(columns[s.name], s) for s in specs}


class RowInputs:
    """:func:`tower_inputs` of one entity's row ``{feature: [value]}``, for the request
        path: every number in one array (each input a one-element view of it), a float32
        vector of the right length passed on as a (1, dim) view without a copy, a missing one
    as a row of NaN. The answer
        equals :func:`tower_inputs`'s; a row it cannot take as it is (a feature missing, a
        vector of another kind or length) goes through :func:`tower_inputs` itself."""

    def __init__(self, specs: Sequence[InputSpec]):
        self.specs = list(specs)
        self._numbers = [s.name for s in self.specs if s.kind == "number"]
        self._strings = [s.name for s in self.specs if s.kind == "string"]
        self._vectors = [(s.name, s.dim) for s in self.specs if s.kind == "vector"]

    def __call__(self, row: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        try:
            numbers = [row[n][0] for n in self._numbers]
            strings = [row[n][0] for n in self._strings]
            vectors = [row[n][0] for n, _ in self._vectors]
        except (KeyError, IndexError):
            return tower_inputs(row, self.specs)  # its error names what is missing
        out: dict[str, np.ndarray] = {}
        for (name, dim), v in zip(self._vectors, vectors):
            if isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (dim,):
                out[name] = v.reshape(1, dim)
            elif v is None or (isinstance(v, np.ndarray) and v.shape == (0,)):
                out[name] = np.full((1, dim), np.nan, dtype=np.float32)
            else:
                return tower_inputs(row, self.specs)  # a list, another dtype or length
        # numpy reads None as NaN in a float array, as _from_list writes it
        flat = np.array(numbers, dtype=np.float32)
        for j, name in enumerate(self._numbers):
            out[name] = flat[j : j + 1]
        for name, v in zip(self._strings, strings):
            out[name] = np.array(["" if v is None else str(v)], dtype=object)
        return out


def _from_list(values: Sequence[Any], spec: InputSpec) -> np.ndarray:
    """The serving path: a request's few rows, where Arrow's set-up costs more than it saves."""
    if spec.kind == "string":
        return np.array(["" if v is None else str(v) for v in values], dtype=object)
    if spec.kind == "number":
        return np.array([np.nan if v is None else v for v in values], dtype=np.float32)
    out = np.full((len(values), spec.dim), np.nan, dtype=np.float32)
    for i, v in enumerate(values):
        if v is not None and len(v):
            if len(v) != spec.dim:
                raise ContractError(
                    f"feature {spec.name!r}: vectors of length [{len(v)}], expected {spec.dim}"
                )
            out[i] = v
    return out


def _convert(values: pa.Array | pa.ChunkedArray | Sequence[Any], spec: InputSpec) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        return _from_list(values, spec)
    arr = values
    if spec.kind == "string":
        return np.asarray(
            pc.fill_null(arr.cast(pa.string()), "").to_numpy(zero_copy_only=False), dtype=object
        )
    if spec.kind == "number":
        return np.asarray(pc.fill_null(arr.cast(pa.float64()), np.nan).to_numpy(), dtype=np.float32)
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy()
    present = arr.is_valid().to_numpy(zero_copy_only=False) & (lengths > 0)
    bad = present & (lengths != spec.dim)
    if bad.any():
        raise ContractError(
            f"feature {spec.name!r}: vectors of length "
            f"{sorted(set(lengths[bad].tolist()))[:5]}, expected {spec.dim}"
        )
    out = np.full((len(arr), spec.dim), np.nan, dtype=np.float32)
    flat = pc.list_flatten(arr.filter(pa.array(present))).to_numpy(zero_copy_only=False)
    out[present] = flat.astype(np.float32).reshape(-1, spec.dim)
    return out

"""The request path's one-row conversion (RowInputs) against the general rule
(tower_inputs): the same arrays for every kind of value a row can hold."""

from __future__ import annotations

import numpy as np
import pytest

from audiorec.errors import ContractError
from audiorec.tower_inputs import InputSpec, RowInputs, tower_inputs

SPECS = [
    InputSpec(name="country", kind="string"),
    InputSpec(name="age", kind="number"),
    InputSpec(name="pref", kind="vector", dim=4),
    InputSpec(name="count", kind="number"),
    InputSpec(name="language", kind="string"),
    InputSpec(name="music", kind="vector", dim=3),
]


def _value(spec: InputSpec, rng: np.random.Generator) -> object:
    """A value as a store read can hand it: None, or the kind's Python or numpy form (a
    vector sometimes of the wrong length or dtype, or empty)."""
    if rng.random() < 0.2:
        return None
    if spec.kind == "string":
        return ["", "SE", "ünï", 7][rng.integers(4)]
    if spec.kind == "number":
        return [0, -3, 2**40, 1.5, float("nan"), float("inf"), True][rng.integers(7)]
    form = rng.integers(5)
    values = rng.normal(size=spec.dim)
    if form == 0:
        return values.tolist()  # the general read's Python list
    if form == 1:
        return values.astype(np.float64)  # another dtype: the general rule's cast
    if form == 2:
        return np.empty(0, np.float32)  # an empty list reads as missing
    return np.frombuffer(values.astype("<f4").tobytes(), "<f4")  # the lean read's array


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        if a[name].dtype == object:
            assert a[name].tolist() == b[name].tolist()
        else:
            np.testing.assert_array_equal(a[name], b[name])


def test_row_inputs_equal_tower_inputs_on_random_rows():
    rng = np.random.default_rng(0)
    convert = RowInputs(SPECS)
    for _ in range(500):
        row = {s.name: [_value(s, rng)] for s in SPECS}
        row["extra"] = ["ignored"]
        _same(convert(row), tower_inputs(row, SPECS))


def test_row_inputs_hand_checked():
    vec = np.frombuffer(np.array([1, 2, 3, 4], "<f4").tobytes(), "<f4")
    row = {
        "country": [None],
        "age": [None],
        "pref": [vec],
        "count": [3],
        "language": ["SE"],
        "music": [None],
    }
    out = RowInputs(SPECS)(row)
    assert out["country"].tolist() == [""] and out["language"].tolist() == ["SE"]
    assert np.isnan(out["age"]).all() and out["count"].tolist() == [3.0]
    assert out["pref"].tolist() == [[1, 2, 3, 4]] and np.shares_memory(out["pref"], vec)
    assert out["music"].shape == (1, 3) and np.isnan(out["music"]).all()


def test_row_inputs_refuse_what_tower_inputs_refuses():
    convert = RowInputs(SPECS)
    row = {s.name: [None] for s in SPECS}
    with pytest.raises(ContractError, match="missing"):
        convert({k: v for k, v in row.items() if k != "age"})
    with pytest.raises(ContractError, match=r"vectors of length \[5\], expected 4"):
        convert({**row, "pref": [np.zeros(5, np.float32)]})

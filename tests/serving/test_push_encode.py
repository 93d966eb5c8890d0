"""serving/push.py's ``encode_column``: Feast's type map, byte for byte, with a direct path
for the plain values RecordEvents builds (and Feast's own conversion for anything else)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from feast import type_map
from feast.value_type import ValueType

from serving.push import encode_column

PLAIN = {
    ValueType.INT64: [0, 1, -7, 2**62, -(2**63), 2**63 - 1, 12345678901, None],
    ValueType.FLOAT_LIST: [
        [0.0] * 4,
        [1.5, -2.25, 1e-40, 3.4e38, -0.0],
        [math.nan, math.inf, -math.inf],
        [0.1] * 64,
        None,
    ],
    ValueType.STRING_LIST: [["a"], ["stream:b1:1700000000", "follow:ü:2"], [""], ["x"] * 50, None],
}
# each sends its whole column through Feast's conversion
OTHER = {
    ValueType.INT64: [np.int64(3), 3.0, True, 2**63, "4"],
    ValueType.FLOAT_LIST: [[], [1, 2], (1.0, 2.0), np.array([1.0, 2.0]), [np.float32(1.0)]],
    ValueType.STRING_LIST: [[], ("a",), ["a", 1], np.array(["a"])],
}


def _outcome(fn, values, value_type):
    try:
        return [v.SerializeToString() for v in fn(values, value_type)]
    except Exception as exc:  # noqa: BLE001 - the same failure is part of the contract
        return type(exc)


@pytest.mark.parametrize("value_type", list(PLAIN))
def test_encode_column_is_feasts_type_map_byte_for_byte(value_type, monkeypatch):
    feast = type_map.python_values_to_proto_values
    rng = np.random.default_rng(7)
    calls = []

    def counted(values, vt=ValueType.UNKNOWN):
        calls.append(1)
        return feast(values, vt)

    monkeypatch.setattr(type_map, "python_values_to_proto_values", counted)
    plain, other = PLAIN[value_type], OTHER[value_type]
    for _ in range(200):
        column = [plain[i] for i in rng.integers(len(plain), size=rng.integers(1, 6))]
        assert _outcome(encode_column, column, value_type) == _outcome(feast, column, value_type)
    assert not calls  # plain columns never went through Feast's conversion
    for _ in range(200):
        column = [plain[i] for i in rng.integers(len(plain), size=rng.integers(0, 4))]
        column.insert(int(rng.integers(len(column) + 1)), other[rng.integers(len(other))])
        assert _outcome(encode_column, column, value_type) == _outcome(feast, column, value_type)
    assert len(calls) == 200


def test_a_hand_checked_value_of_each_kind():
    from feast.protos.feast.types.Value_pb2 import Value

    assert encode_column([5, None], ValueType.INT64) == [Value(int64_val=5), Value()]
    (floats,) = encode_column([[0.5, 2.0]], ValueType.FLOAT_LIST)
    assert list(floats.float_list_val.val) == [0.5, 2.0]
    (strings,) = encode_column([["s:1"]], ValueType.STRING_LIST)
    assert list(strings.string_list_val.val) == ["s:1"]

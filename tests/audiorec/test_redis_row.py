"""The request path's Redis row: Feast's key and value encodings read without Feast's
per-call Python, checked against Feast's own functions (the read itself against
``get_online_features``: tests/training/test_online_stores.py)."""

from __future__ import annotations

import numpy as np
import pytest
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import DoubleList, FloatList, StringList, Value

from audiorec.redis_row import KeyEncoder, decode, decode_row_value, float_list


def feast_key(project: str):
    def key(entity_id: str) -> bytes:
        entity = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=entity_id)])
        return _redis_key(project, entity, entity_key_serialization_version=3)

    return key


@pytest.mark.parametrize("n", [0, 1, 2, 31, 32, 33, 64, 300, 5000])
def test_float_lists_decode_as_feast_parses_them(n):
    rng = np.random.default_rng(n)
    values = rng.normal(size=n).astype(np.float32)
    if n > 2:
        values[:3] = [np.nan, np.inf, -0.0]
    blob = Value(float_list_val=FloatList(val=values.tolist())).SerializeToString()
    got = float_list(blob)
    assert got is not None and got.dtype == np.float32 and got.shape == (n,)
    want = decode(Value, blob)
    assert [repr(v) for v in got.tolist()] == [repr(v) for v in want]
    assert not got.flags.writeable  # a view over the reply: nobody writes into it


def test_every_other_value_goes_through_the_value_parser():
    others = [
        Value(string_val="GB"),
        Value(int64_val=7),
        Value(double_val=0.5),
        Value(double_list_val=DoubleList(val=[1.0, 2.0])),
        Value(string_list_val=StringList(val=["1|stream|a|e"])),
        Value(),
    ]
    for v in others:
        blob = v.SerializeToString()
        assert float_list(blob) is None or not blob
        assert repr(decode_row_value(Value, blob)) == repr(decode(Value, blob))
    assert decode_row_value(Value, None) is None and decode_row_value(Value, b"") is None


def test_a_blob_that_only_starts_like_a_float_list_is_refused():
    blob = Value(float_list_val=FloatList(val=[1.0, 2.0])).SerializeToString()
    for broken in (blob[:-1], blob + b"\x00", blob[:2], blob[:3] + b"\x12" + blob[4:]):
        assert float_list(broken) is None


@pytest.mark.parametrize("project", ["audiorec", "audiorec_80a2c7818189405d", ""])
def test_keys_are_feasts_keys(project):
    feast = feast_key(project)
    encoder = KeyEncoder(feast, project.encode("utf-8"))
    assert encoder.exact
    for entity_id in ["u0009432", "", "é" * 40, "u" * 1000, "a|b c\n"]:
        assert encoder(entity_id) == feast(entity_id)


def test_an_encoding_the_probes_do_not_fit_falls_back_to_feasts_function():
    def other(entity_id: str) -> bytes:  # a length-last layout the pieces cannot express
        raw = entity_id.encode("utf8")
        return b"K" + raw + len(raw).to_bytes(2, "little") + b"proj"

    encoder = KeyEncoder(other, b"proj")
    assert not encoder.exact
    assert encoder("u1") == other("u1") and encoder("é") == other("é")

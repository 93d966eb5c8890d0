"""The data-contract validator: a good dataset passes, each broken one fails clearly."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from audiorec.errors import ContractError
from training.data import CONTRACT, validate_dataset


def _rewrite(root, name, fn):
    path = root / f"{name}.parquet"
    pq.write_table(fn(pq.read_table(path)), path)


def _set(table: pa.Table, column: str, values) -> pa.Table:
    i = table.schema.get_field_index(column)
    return table.set_column(
        i, table.schema.field(i).with_type(values.type).with_nullable(True), values
    )


def _replace_first(table: pa.Table, column: str, value, n: int = 2) -> pa.Table:
    col = table.column(column).combine_chunks().to_pylist()
    col[:n] = [value] * n
    return _set(table, column, pa.array(col, type=table.schema.field(column).type))


def test_generated_world_matches_contract(tiny_world):
    info = validate_dataset(tiny_world)
    assert info.rows["users"] == 1000
    assert info.rows["events"] > 10_000
    assert info.music_dim == 32


def test_schemas_are_what_writers_use(tiny_world):
    for spec in CONTRACT.values():
        schema = pq.read_schema(tiny_world / spec.file)
        for field in spec.schema:
            assert schema.field(field.name).type == field.type


BROKEN = [
    # (table, how to break it, the message must match this)
    (
        "events",
        lambda t: t.drop_columns(["event_type"]),
        r"events\.parquet: column event_type missing \(has: user_id, item_id, ts, ms_played\)",
    ),
    (
        "users",
        lambda t: _set(t, "age", pc.cast(t.column("age"), pa.string())),
        r"users\.parquet: column age has type string, expected integer",
    ),
    (
        "events",
        lambda t: _set(t, "ts", pc.cast(t.column("ts"), pa.timestamp("us"))),
        r"events\.parquet: column ts has type timestamp\[us\], expected timestamp with time "
        "zone UTC",
    ),
    (
        "music",
        lambda t: _set(
            t, "music_vector", pc.cast(t.column("music_vector"), pa.list_(pa.float64()))
        ),
        r"music\.parquet: column music_vector has type list<(item|element): double>, "
        r"expected list<float32>",
    ),
    (
        "events",
        lambda t: _replace_first(t, "user_id", None),
        r"events\.parquet: column user_id: 2 row\(s\) are null; first rows: \[\{'user_id': None",
    ),
    (
        "items",
        lambda t: _replace_first(t, "item_id", ""),
        r"items\.parquet: column item_id: 2 row\(s\) are empty strings",
    ),
    (
        "events",
        lambda t: _replace_first(t, "user_id", "u_nobody", 3),
        r"events\.parquet: column user_id: 3 row\(s\) reference a user_id that users\.parquet "
        r"does not have; first rows: \[\{'user_id': 'u_nobody'",
    ),
    (
        "events",
        lambda t: _replace_first(t, "item_id", "ab_ghost", 1),
        r"events\.parquet: column item_id: 1 row\(s\) reference a item_id that items\.parquet "
        r"does not have; first rows: \[\{'user_id': 'u\d+', 'item_id': 'ab_ghost'",
    ),
    (
        "events",
        lambda t: _replace_first(t, "event_type", "like", 4),
        r"events\.parquet: column event_type: 4 row\(s\) have an unknown event_type \(allowed: "
        r"stream, follow, preview, intent_to_pay\)",
    ),
    (
        "items",
        lambda t: _replace_first(t, "item_type", "E-Book", 1),
        r"items\.parquet: column item_type: 1 row\(s\) are not a lower-case identifier of at "
        r"most 32 characters \(a-z, 0-9, _\); first rows: \[\{'item_id': 'ab000000', "
        r"'item_type': 'E-Book'",
    ),
    (
        "users",
        lambda t: _replace_first(t, "user_id", "u0000001", 1),
        r"users\.parquet: column user_id: 2 row\(s\) repeat an id that must be unique",
    ),
    (
        "music",
        lambda t: _replace_first(t, "music_vector", [0.5, 0.5], 1),
        r"music\.parquet: column music_vector: 1 row\(s\) have a length other than 32",
    ),
    (
        "events",
        lambda t: _replace_first(t, "ms_played", -5, 1),
        r"events\.parquet: column ms_played: 1 row\(s\) are negative",
    ),
]


@pytest.mark.parametrize(
    "table,breaker,message", BROKEN, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(BROKEN)]
)
def test_broken_dataset_gets_one_clear_message(world_copy, table, breaker, message):
    _rewrite(world_copy, table, breaker)
    with pytest.raises(ContractError) as err:
        validate_dataset(world_copy)
    assert re.search(message, str(err.value)), str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_directory(world_copy, tmp_path):
    (world_copy / "items.parquet").unlink()
    with pytest.raises(ContractError, match=r"items\.parquet: file missing in "):
        validate_dataset(world_copy)
    with pytest.raises(ContractError, match=r"dataset directory does not exist"):
        validate_dataset(tmp_path / "nowhere")


def test_unreadable_file(world_copy):
    (world_copy / "users.parquet").write_text("not parquet")
    with pytest.raises(ContractError, match=r"users\.parquet: not a readable parquet file"):
        validate_dataset(world_copy)


def test_music_with_null_values(world_copy):
    def breaker(t):
        col = t.column("music_vector").combine_chunks().to_pylist()
        col[0] = [None] + col[0][1:]
        return _set(t, "music_vector", pa.array(col, type=pa.list_(pa.float32())))

    _rewrite(world_copy, "music", breaker)
    with pytest.raises(ContractError, match=r"music_vector: 1 row\(s\) hold null values"):
        validate_dataset(world_copy)

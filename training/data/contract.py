"""The data contract: four parquet tables, one file each, and a validator.

=================  ==========================================================================
file               columns (type; all non-null unless noted)
=================  ==========================================================================
users.parquet      user_id (string, unique), country (string), age (int),
                   language (string), signup_ts (timestamp UTC)
music.parquet      user_id (string, in users), music_vector (list<float32>, one fixed dim),
                   event_timestamp (timestamp UTC): taste-vector snapshots
items.parquet      item_id (string, unique), item_type (any name: a lower-case identifier,
                   at most 32 characters; the dataset's types are the names used), title,
                   description, language, genre (strings), publish_ts (timestamp UTC)
events.parquet     user_id (string, in users), item_id (string, in items),
                   event_type ('stream' | 'follow' | 'preview' | 'intent_to_pay'),
                   ts (timestamp UTC), ms_played (int, nullable: set for streams, >= 0)
=================  ==========================================================================

``validate_dataset(dir)`` checks a directory against it and raises one
:class:`~audiorec.errors.ContractError` naming the file, the column and the first offending
rows. Schema checks read parquet footers only; value checks run as DuckDB SQL over the files,
so a 50M-event dataset validates in seconds without loading it into Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from audiorec.errors import ContractError
from audiorec.itemtypes import ITEM_TYPE_PATTERN
from audiorec.vocabulary import EVENT_TYPES, WEAK_SIGNALS  # noqa: F401 - the contract's
from training.data.duck import connect_dataset, fetch_one

UTC_NAMES = ("UTC", "Etc/UTC", "+00:00", "Z")
TIMESTAMP = pa.timestamp("us", tz="UTC")


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_utc_timestamp(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) and t.tz in UTC_NAMES


def _is_float32_list(t: pa.DataType) -> bool:
    is_list = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    return is_list and pa.types.is_float32(t.value_type)


# kind -> (predicate on the arrow type, what to call it in a message, canonical arrow type)
KINDS: dict[str, tuple[Callable[[pa.DataType], bool], str, pa.DataType]] = {
    "string": (_is_string, "string", pa.string()),
    "int": (pa.types.is_integer, "integer", pa.int32()),
    "int64": (pa.types.is_integer, "integer", pa.int64()),
    "timestamp": (_is_utc_timestamp, "timestamp with time zone UTC", TIMESTAMP),
    "vector": (_is_float32_list, "list<float32>", pa.list_(pa.float32())),
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    nullable: bool = False


@dataclass(frozen=True)
class TableSpec:
    """One table of the contract; ``schema`` is what writers should use."""

    name: str
    columns: tuple[Column, ...]
    unique: str | None = None

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, KINDS[c.kind][2], nullable=c.nullable) for c in self.columns]
        )


CONTRACT: dict[str, TableSpec] = {
    t.name: t
    for t in (
        TableSpec(
            "users",
            (
                Column("user_id", "string"),
                Column("country", "string"),
                Column("age", "int"),
                Column("language", "string"),
                Column("signup_ts", "timestamp"),
            ),
            unique="user_id",
        ),
        TableSpec(
            "music",
            (
                Column("user_id", "string"),
                Column("music_vector", "vector"),
                Column("event_timestamp", "timestamp"),
            ),
        ),
        TableSpec(
            "items",
            (
                Column("item_id", "string"),
                Column("item_type", "string"),
                Column("title", "string"),
                Column("description", "string"),
                Column("language", "string"),
                Column("genre", "string"),
                Column("publish_ts", "timestamp"),
            ),
            unique="item_id",
        ),
        TableSpec(
            "events",
            (
                Column("user_id", "string"),
                Column("item_id", "string"),
                Column("event_type", "string"),
                Column("ts", "timestamp"),
                Column("ms_played", "int64", nullable=True),
            ),
        ),
    )
}


@dataclass(frozen=True)
class DatasetInfo:
    """What a valid dataset holds."""

    root: Path
    rows: dict[str, int]
    music_dim: int
    first_event: object
    last_event: object


def validate_dataset(root: str | Path) -> DatasetInfo:
    """Check ``root`` against the contract; raise ContractError on the first violation."""
    root = Path(root)
    if not root.is_dir():
        raise ContractError(f"{root}: dataset directory does not exist")
    for spec in CONTRACT.values():
        _check_schema(root, spec)
    con = connect_dataset(root, CONTRACT)
    try:
        for spec in CONTRACT.values():
            _check_values(con, spec)
        dim = _check_music_dim(con)
        _check_references(con)
        rows = {n: fetch_one(con, f"SELECT count(*) FROM {n}")[0] for n in CONTRACT}
        first, last = fetch_one(con, "SELECT min(ts), max(ts) FROM events")
    finally:
        con.close()
    return DatasetInfo(root=root, rows=rows, music_dim=dim, first_event=first, last_event=last)


def _check_schema(root: Path, spec: TableSpec) -> None:
    path = root / spec.file
    if not path.is_file():
        raise ContractError(f"{spec.file}: file missing in {root}")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear message
        raise ContractError(f"{spec.file}: not a readable parquet file ({exc})") from None
    for col in spec.columns:
        if col.name not in schema.names:
            raise ContractError(
                f"{spec.file}: column {col.name} missing (has: {', '.join(schema.names)})"
            )
        ok, wanted, _ = KINDS[col.kind]
        got = schema.field(col.name).type
        if not ok(got):
            raise ContractError(f"{spec.file}: column {col.name} has type {got}, expected {wanted}")


def _fail_with_rows(con, spec: TableSpec, column: str, where: str, problem: str) -> None:
    """Raise if any row of ``spec`` matches ``where``, quoting the first three."""
    n = con.execute(f"SELECT count(*) FROM {spec.name} WHERE {where}").fetchone()[0]
    if n == 0:
        return
    cur = con.execute(f"SELECT * FROM {spec.name} WHERE {where} LIMIT 3")
    names = [d[0] for d in cur.description]
    rows = [{k: _short(v) for k, v in zip(names, r) if k != "description"} for r in cur.fetchall()]
    raise ContractError(f"{spec.file}: column {column}: {n} row(s) {problem}; first rows: {rows}")


def _short(v: object) -> object:
    if isinstance(v, list) and len(v) > 4:
        return f"[{len(v)} values]"
    if isinstance(v, str) and len(v) > 40:
        return v[:37] + "..."
    return v


def _check_values(con, spec: TableSpec) -> None:
    for col in spec.columns:
        if not col.nullable:
            _fail_with_rows(con, spec, col.name, f'"{col.name}" IS NULL', "are null")
        if col.kind == "string" and col.name.endswith("_id"):
            _fail_with_rows(con, spec, col.name, f"\"{col.name}\" = ''", "are empty strings")
    if spec.unique:
        u = spec.unique
        _fail_with_rows(
            con,
            spec,
            u,
            f"{u} IN (SELECT {u} FROM {spec.name} GROUP BY {u} HAVING count(*) > 1)",
            "repeat an id that must be unique",
        )
    if spec.name == "events":
        listed = ", ".join(f"'{a}'" for a in EVENT_TYPES)
        _fail_with_rows(
            con,
            spec,
            "event_type",
            f"event_type NOT IN ({listed})",
            f"have an unknown event_type (allowed: {', '.join(EVENT_TYPES)})",
        )
    if spec.name == "items":
        # item types are data, but they name features and relations: identifiers only
        _fail_with_rows(
            con,
            spec,
            "item_type",
            f"NOT regexp_full_match(item_type, '{ITEM_TYPE_PATTERN}')",
            "are not a lower-case identifier of at most 32 characters (a-z, 0-9, _)",
        )
    if spec.name == "events":
        _fail_with_rows(con, spec, "ms_played", "ms_played < 0", "are negative")
    if spec.name == "users":
        _fail_with_rows(con, spec, "age", "age < 0 OR age > 130", "are outside 0..130")


def _check_music_dim(con) -> int:
    dims = con.execute(
        "SELECT len(music_vector) AS d, count(*) FROM music GROUP BY d ORDER BY 2 DESC"
    ).fetchall()
    if not dims:
        raise ContractError("music.parquet: no rows (every dataset needs music vectors)")
    dim = dims[0][0]
    spec = CONTRACT["music"]
    _fail_with_rows(
        con,
        spec,
        "music_vector",
        f"len(music_vector) <> {dim}",
        f"have a length other than {dim} (the dimension of most rows)",
    )
    _fail_with_rows(
        con,
        spec,
        "music_vector",
        "list_count(music_vector) <> len(music_vector)",
        "hold null values",
    )
    return int(dim)


def _check_references(con) -> None:
    for table, col, parent in (
        ("music", "user_id", "users"),
        ("events", "user_id", "users"),
        ("events", "item_id", "items"),
    ):
        _fail_with_rows(
            con,
            CONTRACT[table],
            col,
            f"{col} NOT IN (SELECT {col} FROM {parent})",
            f"reference a {col} that {parent}.parquet does not have",
        )

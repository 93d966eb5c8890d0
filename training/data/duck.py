"""DuckDB over the contract's parquet files: one connection, one view per table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import duckdb

# A dataset as the functions that read its files take it: a path, or a
# training.data.Dataset (an os.PathLike of its root)
DatasetLike = str | os.PathLike[str]


def fetch_one(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
) -> tuple[Any, ...]:
    """The one row an aggregate query returns."""
    row = con.execute(sql, params).fetchone() if params else con.execute(sql).fetchone()
    if row is None:
        raise RuntimeError(f"no row from: {' '.join(sql.split())[:80]}")
    return tuple(row)


def sql_literal(text: str) -> str:
    """``text`` as a quoted SQL string literal (views cannot take bound parameters)."""
    return "'" + text.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (column names come from Feast's declarations)."""
    return '"' + name.replace('"', '""') + '"'


def connect_dataset(
    root: DatasetLike, tables: Iterable[str], con: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyConnection:
    """A connection with a view ``<name>`` over ``root/<name>.parquet`` for each table."""
    con = con or duckdb.connect()
    for name in tables:
        path = sql_literal(str(Path(root) / f"{name}.parquet"))
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({path})")
    return con

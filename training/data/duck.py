"""DuckDB over the contract's parquet files: one connection, one view per table."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import duckdb


def sql_literal(text: str) -> str:
    """``text`` as a quoted SQL string literal (views cannot take bound parameters)."""
    return "'" + text.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (column names come from Feast's declarations)."""
    return '"' + name.replace('"', '""') + '"'


def connect_dataset(
    root: str | Path, tables: Iterable[str], con: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyConnection:
    """A connection with a view ``<name>`` over ``root/<name>.parquet`` for each table."""
    con = con or duckdb.connect()
    for name in tables:
        path = sql_literal(str(Path(root) / f"{name}.parquet"))
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({path})")
    return con

"""A dataset as the pipeline passes it around: the directory, checked once.

:meth:`Dataset.open` validates the directory against the data contract (DuckDB over the
parquet files, seconds even at 45M events) and reads its time span; every step then takes
the :class:`Dataset` instead of a path string and re-checks nothing. A ``Dataset`` is also
an ``os.PathLike`` (its root), so a function that only needs the files can still take
``Path(dataset)``; :meth:`Dataset.of` accepts either form at the public entry points.

Item types are data (``audiorec/itemtypes.py``): whatever ``items.parquet`` names; the
focus (the sparse type cold start is measured on) is the one with the fewest streams unless
the caller names it.

Snapshot dates: a feature snapshot at date S summarises events strictly before S 00:00
UTC, so the events can fill snapshots from the day after the first event through the day
after the last (:attr:`Dataset.span`); training on everything means the cut at that last
midnight (:attr:`Dataset.default_cut`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Iterable

import duckdb

from audiorec.errors import ContractError
from audiorec.itemtypes import ItemTypes
from training.data.contract import CONTRACT, DatasetInfo, validate_dataset
from training.data.duck import connect_dataset


def data_span(con: duckdb.DuckDBPyConnection) -> tuple[date, date]:
    """(first snapshot date, last snapshot date) that the events of ``con``'s ``events``
    view can fill."""
    con.sql("SET TimeZone = 'UTC'")
    lo, hi = con.sql(
        "SELECT CAST(min(CAST(ts AS TIMESTAMPTZ)) AS DATE), "
        "CAST(max(CAST(ts AS TIMESTAMPTZ)) AS DATE) FROM events"
    ).fetchall()[0]
    if lo is None:
        raise ContractError("events.parquet has no rows: nothing to compute features from")
    return lo + timedelta(days=1), hi + timedelta(days=1)


def item_types(con: duckdb.DuckDBPyConnection, focus: str | None = None) -> ItemTypes:
    """The item types of ``con``'s ``items``; the focus is ``focus`` when given, else the
    type with the fewest streams (the sparse one; ties: the first name)."""
    rows = con.sql("""
        SELECT i.item_type, count(e.item_id) AS streams FROM items i
        LEFT JOIN (SELECT item_id FROM events WHERE event_type = 'stream') e USING (item_id)
        GROUP BY 1 ORDER BY 2, 1""").fetchall()
    return ItemTypes.of([t for t, _ in rows], focus if focus is not None else rows[0][0])


@dataclass(frozen=True)
class Dataset(os.PathLike):
    """A validated dataset directory. ``info``: row counts, music dimension, first and
    last event; ``span``: (first, last) snapshot dates the events can fill;
    ``item_types``: its item types, the focus first."""

    root: Path
    info: DatasetInfo
    span: tuple[date, date]
    item_types: ItemTypes

    @classmethod
    def open(cls, root: str | os.PathLike, focus: str | None = None) -> "Dataset":
        """Validate ``root`` (one ContractError on the first violation) and read its span
        and item types (``focus``: the focus type, default the one with fewest streams)."""
        info = validate_dataset(Path(root).resolve())
        con = connect_dataset(info.root, ("items", "events"))
        try:
            span, types = data_span(con), item_types(con, focus)
        finally:
            con.close()
        return cls(info.root, info, span, types)

    @classmethod
    def of(cls, data: "Dataset | str | os.PathLike", focus: str | None = None) -> "Dataset":
        """``data`` itself when already opened (with that focus), else :meth:`open` it."""
        if isinstance(data, Dataset) and focus in (None, data.item_types.focus):
            return data
        return cls.open(data, focus)

    def __fspath__(self) -> str:
        return str(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def default_cut(self) -> datetime:
        """The day after the last event (a UTC midnight): train on everything."""
        return datetime.combine(self.span[1], time(), tzinfo=timezone.utc)

    @property
    def first_midnight(self) -> datetime:
        """The day after the first event (a UTC midnight): the first snapshot."""
        return datetime.combine(self.span[0], time(), tzinfo=timezone.utc)

    def connect(
        self, tables: Iterable[str] = tuple(CONTRACT), con: duckdb.DuckDBPyConnection | None = None
    ) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with one view per named table (default: all four)."""
        return connect_dataset(self.root, tables, con)

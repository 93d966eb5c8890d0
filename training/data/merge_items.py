"""Titles published to the server (RecordItems) into the dataset's items.

``audiorec pipeline`` calls :func:`merge_item_log` first (before the events, whose items
must exist): the titles appended to the work directory's ``items`` log since the last
merge (audiorec/eventlog.py; the ledger says how far) become rows of ``items.parquet``
with their publication time, unless the dataset already has the id (its row wins: the
catalogue's own metadata is the truth) or the log repeats it (the first record wins). The
union is written beside the file and renamed over it, and the ledger moves after the
rename, as for events (training/data/merge_log.py). Cost: one rewrite of the items file
when there is anything new.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from audiorec.errors import ContractError
from audiorec.eventlog import ITEMS, read_ledger, read_records, write_ledger
from training.data.duck import DatasetLike, connect_dataset

FIELDS = ("item_id", "item_type", "title", "description", "language", "genre")


@dataclass(frozen=True)
class ItemMergeReport:
    read: int = 0  # records read from the log
    added: int = 0  # rows added to items.parquet
    known: int = 0  # ids the dataset (or an earlier record) already had

    def summary(self) -> str:
        if not self.read:
            return "item log: nothing new to merge"
        return (
            f"item log: {self.read:,} published titles read, {self.added:,} added to the "
            f"dataset's items, {self.known:,} already there"
        )


def merge_item_log(data_dir: DatasetLike, log_directory: str | Path) -> ItemMergeReport:
    data_dir, log_directory = Path(data_dir), Path(log_directory)
    ledger = read_ledger(log_directory, ITEMS)
    rows: dict[str, list] = {k: [] for k in (*FIELDS, "at_ms")}
    ends: dict[str, int] = {}
    for segment, end, r in read_records(log_directory, ITEMS, ledger):
        ends[segment] = end
        if not all(isinstance(r.get(k), str) for k in FIELDS) or not isinstance(
            r.get("at_ms"), int
        ):
            continue  # a record of another shape: not a title
        for k in rows:
            rows[k].append(r[k])
    if not ends:
        return ItemMergeReport()
    if not (data_dir / "items.parquet").is_file():
        raise ContractError(f"cannot merge the item log: no items.parquet in {data_dir}")
    n = len(rows["item_id"])
    added = _merge(data_dir, rows) if n else 0
    write_ledger(log_directory, ITEMS, {**ledger, **ends})
    return ItemMergeReport(read=n, added=added, known=n - added)


def _merge(data_dir: Path, rows: dict[str, list]) -> int:
    log_rows = pa.table(  # noqa: F841 - DuckDB reads it by name
        {
            **{k: pa.array(rows[k], pa.string()) for k in FIELDS},
            "publish_ts": pa.array(
                [ms * 1000 for ms in rows["at_ms"]], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    con = connect_dataset(data_dir, ("items",))
    try:
        con.register("log_rows", log_rows)
        con.execute(
            """
            CREATE TEMP TABLE new_items AS
            SELECT * FROM log_rows
            ANTI JOIN items USING (item_id)
            QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY publish_ts) = 1
            """
        )
        added = int(con.execute("SELECT count(*) FROM new_items").fetchall()[0][0])
        if added:
            target = data_dir / "items.parquet"
            tmp = data_dir / ".items.merging.parquet"
            escaped = str(tmp).replace("'", "''")
            con.execute(
                f"""
                COPY (SELECT item_id, item_type, title, description, language, genre,
                             CAST(publish_ts AS TIMESTAMPTZ) AS publish_ts FROM items
                      UNION ALL
                      SELECT item_id, item_type, title, description, language, genre,
                             publish_ts FROM new_items)
                TO '{escaped}' (FORMAT parquet, COMPRESSION zstd)
                """
            )
            os.replace(tmp, target)
    finally:
        con.close()
    return added

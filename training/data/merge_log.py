"""The server's event log into the dataset: what the server accepted reaches the batch.

``audiorec pipeline`` calls :func:`merge_event_log` before it validates the dataset. The
events appended since the last merge (audiorec/eventlog.py; the ledger ``merged.json``
says how far each segment was merged) are deduplicated (a replay of an event id keeps
its first record; then one row per user, item, type and time) and against the dataset's
own rows, and the new ones are added to ``events.parquet``: one DuckDB pass that writes
the union to a temporary file beside it and renames it over the old one, so a crash
leaves the old file or the new one, never half of one. The ledger moves only after the
rename; a crash between the two re-reads the same records next time, and the
deduplication against the dataset makes that a no-op.

Events of users or items the dataset does not have (the contract requires both) are not
added; the report counts them. Cost: one scan and one rewrite of the events file when
there is anything new (O(events)); nothing at all when the log holds nothing new.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from audiorec.errors import ContractError
from audiorec.eventlog import EVENTS, read_ledger, read_records, write_ledger
from training.data.duck import DatasetLike, connect_dataset


@dataclass(frozen=True)
class MergeReport:
    read: int = 0  # records read from the log
    added: int = 0  # rows added to events.parquet
    duplicates: int = 0  # replays, and rows the dataset already had
    unknown: int = 0  # users or items the dataset does not have

    def summary(self) -> str:
        if not self.read:
            return "event log: nothing new to merge"
        return (
            f"event log: {self.read:,} events read, {self.added:,} added to the dataset, "
            f"{self.duplicates:,} already there or replays, {self.unknown:,} of users or "
            "items the dataset does not have (not added)"
        )


def merge_event_log(data_dir: DatasetLike, log_directory: str | Path) -> MergeReport:
    data_dir, log_directory = Path(data_dir), Path(log_directory)
    ledger = read_ledger(log_directory, EVENTS)
    rows: dict[str, list] = {k: [] for k in ("user_id", "item_id", "event_type", "ts_us", "eid")}
    ends: dict[str, int] = {}
    for segment, end, r in read_records(log_directory, EVENTS, ledger):
        ends[segment] = end
        try:
            values = (r["user_id"], r["item_id"], r["event_type"], int(r["ts_us"]), r["event_id"])
        except (KeyError, TypeError, ValueError):
            continue  # a record of another shape: not an event
        for k, v in zip(rows, values):
            rows[k].append(v)
    if not ends:
        return MergeReport()
    if not (data_dir / "events.parquet").is_file():
        raise ContractError(f"cannot merge the event log: no events.parquet in {data_dir}")
    log_table = pa.table(  # noqa: F841 - DuckDB reads it by name
        {
            "user_id": pa.array(rows["user_id"], pa.string()),
            "item_id": pa.array(rows["item_id"], pa.string()),
            "event_type": pa.array(rows["event_type"], pa.string()),
            "ts": pa.array(rows["ts_us"], pa.timestamp("us", tz="UTC")),
            "eid": pa.array(rows["eid"], pa.string()),
        }
    )
    report = _merge(data_dir, log_table, len(rows["user_id"]))
    write_ledger(log_directory, EVENTS, {**ledger, **ends})
    return report


def _merge(data_dir: Path, log_table: pa.Table, n: int) -> MergeReport:
    con = connect_dataset(data_dir, ("users", "items", "events"))
    con.register("log_rows", log_table)
    con.execute("SET preserve_insertion_order = false")
    con.execute(
        """
        CREATE TEMP TABLE fresh AS
        WITH first_of_id AS (  -- a replay of an event id keeps its first record
          SELECT * FROM log_rows
          QUALIFY eid = '' OR row_number() OVER (PARTITION BY user_id, eid ORDER BY ts) = 1),
        one AS (SELECT DISTINCT user_id, item_id, event_type, ts FROM first_of_id)
        SELECT one.* FROM one
        SEMI JOIN users USING (user_id) SEMI JOIN items USING (item_id)
        """
    )
    known = _count(
        con,
        "SELECT count(*) FROM log_rows l SEMI JOIN users USING (user_id) "
        "SEMI JOIN items USING (item_id)",
    )
    con.execute(
        """
        CREATE TEMP TABLE new_rows AS
        SELECT f.* FROM fresh f ANTI JOIN events e
          ON e.user_id = f.user_id AND e.item_id = f.item_id
         AND e.event_type = f.event_type AND e.ts = f.ts
        """
    )
    added = _count(con, "SELECT count(*) FROM new_rows")
    if added:
        target = data_dir / "events.parquet"
        tmp = data_dir / ".events.merging.parquet"
        con.execute(
            f"""
            COPY (SELECT user_id, item_id, event_type, ts, ms_played FROM events
                  UNION ALL
                  SELECT user_id, item_id, event_type, ts, CAST(NULL AS BIGINT) FROM new_rows)
            TO '{_escape(tmp)}' (FORMAT parquet, COMPRESSION zstd)
            """
        )
        os.replace(tmp, target)
    con.close()
    return MergeReport(read=n, added=added, duplicates=known - added, unknown=n - known)


def _count(con, sql: str) -> int:
    return int(con.execute(sql).fetchone()[0])


def _escape(path: Path) -> str:
    return str(path).replace("'", "''")

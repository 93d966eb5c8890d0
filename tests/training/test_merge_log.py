"""The server's event log merged into a dataset: new rows added once, replays and rows
the dataset has dropped, unknown users and items counted, the contract kept."""

from __future__ import annotations

import duckdb

from audiorec.eventlog import EVENTS, LogWriter, log_dir, read_ledger
from training.data.contract import validate_dataset
from training.data.merge_log import merge_event_log


def event(user, item, ts_us, kind="stream", event_id=""):
    return {"user_id": user, "item_id": item, "event_type": kind, "ts_us": ts_us,
            "event_id": event_id}  # fmt: skip


def test_merge_adds_new_events_once(world_copy, tmp_path):
    con = duckdb.connect()
    events = f"'{world_copy}/events.parquet'"
    before = con.execute(f"SELECT count(*) FROM {events}").fetchone()[0]
    user, item, ts = con.execute(
        f"SELECT user_id, item_id, epoch_us(ts) FROM {events} ORDER BY ts DESC LIMIT 1"
    ).fetchone()
    other = con.execute(
        f"SELECT item_id FROM '{world_copy}/items.parquet' WHERE item_id <> '{item}' LIMIT 1"
    ).fetchone()[0]
    late = ts + 3_600_000_000  # an hour after the dataset's last event
    w = LogWriter(log_dir(tmp_path), EVENTS)
    w.append([event(user, item, ts)])  # the dataset has it
    w.append([event(user, other, late), event(user, other, late)])  # a replay by time
    w.append([event(user, other, late + 5, "follow", "e1"), event(user, other, late + 9, "follow",
                                                                  "e1")])  # fmt: skip
    w.append([event("u_nobody", other, late), event(user, "ab_missing", late)])
    report = merge_event_log(world_copy, log_dir(tmp_path))
    assert (report.read, report.added, report.duplicates, report.unknown) == (7, 2, 3, 2)
    assert "2 added to the dataset" in report.summary()
    after = con.execute(f"SELECT count(*) FROM {events}").fetchone()[0]
    assert after == before + 2
    rows = con.execute(
        f"SELECT event_type, epoch_us(ts), ms_played FROM {events} "
        f"WHERE user_id = '{user}' AND item_id = '{other}' AND ts > make_timestamp({ts})"
    ).fetchall()
    assert sorted(rows) == [("follow", late + 5, None), ("stream", late, None)]
    validate_dataset(world_copy)  # still the contract
    assert read_ledger(log_dir(tmp_path), EVENTS)  # the ledger moved
    again = merge_event_log(world_copy, log_dir(tmp_path))
    assert again.read == 0 and "nothing new" in again.summary()
    w.close()

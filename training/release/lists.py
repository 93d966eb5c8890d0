"""What serving needs besides the model: popularity fallback lists and consumed items.

Both are DuckDB SQL over the events before the cut (O(events)), written straight to
parquet.

* Popularity: items ranked by distinct listeners (then streams) over the last
  ``days`` before the cut, per item type, globally, per listener country and per item
  language; the top ``top_n`` of each list.
* Consumed: distinct (user, item) pairs streamed before the cut, so serving can drop
  what a user already started (sorted by user for a compact in-memory index).
* Window: distinct (user, item) pairs with any event in the 90-day window that ends at
  the cut, and whether one was a weak signal: what the online window features at the
  cut summarise, so real-time events (serving/events.py) know which items are new.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from audiorec.vocabulary import EVENT_STRENGTH
from training.data.duck import DatasetLike, connect_dataset, sql_literal


def write_popularity(
    data: DatasetLike, cut: datetime, out: Path, days: int = 28, top_n: int = 500
) -> int:
    con = connect_dataset(data, ("users", "items", "events"))
    try:
        con.sql(
            """
            CREATE TEMP TABLE recent AS
            SELECT e.user_id, e.item_id, i.item_type, i.language AS item_language, u.country
            FROM events e JOIN items i USING (item_id) JOIN users u USING (user_id)
            WHERE e.event_type = 'stream' AND e.ts >= $lo AND e.ts < $cut""",
            params={"lo": cut - timedelta(days=days), "cut": cut},
        )
        by = {"global": "''", "country": "country", "language": "item_language"}
        parts = " UNION ALL ".join(
            f"SELECT '{scope}' AS scope, {key} AS key, item_type, item_id, "
            f"count(DISTINCT user_id) AS listeners, count(*) AS streams FROM recent GROUP BY ALL"
            for scope, key in by.items()
        )
        con.sql(f"""
            COPY (SELECT scope, key, item_type, rank, item_id, listeners, streams FROM (
                    SELECT *, row_number() OVER (PARTITION BY scope, key, item_type
                        ORDER BY listeners DESC, streams DESC, item_id) AS rank
                    FROM ({parts}))
                  WHERE rank <= {int(top_n)} ORDER BY scope, key, item_type, rank)
            TO {sql_literal(str(out))} (FORMAT parquet)""")
        return con.sql(f"SELECT count(*) FROM {sql_literal(str(out))}").fetchall()[0][0]
    finally:
        con.close()


def write_consumed(data: DatasetLike, cut: datetime, out: Path) -> int:
    con = connect_dataset(data, ("events",))
    try:
        con.sql(
            f"""
            COPY (SELECT DISTINCT user_id, item_id FROM events
                  WHERE event_type = 'stream' AND ts < $cut ORDER BY user_id, item_id)
            TO {sql_literal(str(out))} (FORMAT parquet)""",
            params={"cut": cut},
        )
        return con.sql(f"SELECT count(*) FROM {sql_literal(str(out))}").fetchall()[0][0]
    finally:
        con.close()


# the strength of what a user did with an item, for an explanation ("because you ...")
ACTION_RANK = (
    "CASE event_type "
    + " ".join(f"WHEN '{kind}' THEN {rank}" for kind, rank in EVENT_STRENGTH.items())
    + " ELSE 0 END"
)


def write_window(data: DatasetLike, cut: datetime, days: int, out: Path) -> int:
    """(user_id, item_id, weak, action) for the events in [midnight(cut) - days,
    midnight(cut)): the window of the feature snapshot at the cut's date
    (training/features/windows.py). ``action``: the strongest thing the user did with the
    item (stream, then intent_to_pay, follow, preview), what an explanation may say."""
    end = datetime.combine(cut.date(), datetime.min.time(), tzinfo=cut.tzinfo)
    con = connect_dataset(data, ("events",))
    try:
        con.sql(
            f"""
            COPY (SELECT user_id, item_id, bool_or(event_type <> 'stream') AS weak,
                         arg_max(event_type, {ACTION_RANK}) AS action
                  FROM events WHERE ts >= $lo AND ts < $hi
                  GROUP BY user_id, item_id ORDER BY user_id, item_id)
            TO {sql_literal(str(out))} (FORMAT parquet)""",
            params={"lo": end - timedelta(days=days), "hi": end},
        )
        return con.sql(f"SELECT count(*) FROM {sql_literal(str(out))}").fetchall()[0][0]
    finally:
        con.close()

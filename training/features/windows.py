"""Trailing-window aggregates: the user 90-day features and item popularity.

Snapshots. A snapshot at date S (event_timestamp = S 00:00 UTC) summarises the events
with ``S - window <= ts < S``. A user's window only changes on the day one of their
events enters it (the day after the event) or leaves it (``window`` days later), so a row
is written exactly on those dates: a daily run for date S touches only the users with
events on S-1 or S-1-window, never all history. Between rows the latest row stays true,
hence the views' ttl of 0.

Cost per run: O(events in [first - window, last)) for the scan, plus, per snapshot row,
the events of that user inside the window (a range join done bucket by bucket of users).
Mean embeddings are a sparse (rows x items) @ (items x dim) product per bucket.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from audiorec.itemtypes import ItemTypes
from training.data.arrow import vector_column
from training.data.embeddings import ItemEmbeddings


def midnight(d: date) -> datetime:
    return datetime.combine(d, time(), tzinfo=timezone.utc)


def time_filter(column: str, lo: datetime | None, hi: datetime) -> tuple[str, list]:
    """SQL condition and parameters for ``lo <= column < hi`` (no lower bound if lo None)."""
    if lo is None:
        return f"CAST({column} AS TIMESTAMPTZ) < ?", [hi]
    return f"CAST({column} AS TIMESTAMPTZ) >= ? AND CAST({column} AS TIMESTAMPTZ) < ?", [lo, hi]


def user_windows_schema(types: ItemTypes) -> pa.Schema:
    """user_id, event_timestamp, then the per-type window features (itemtypes.py)."""
    kinds = {"vector": pa.list_(pa.float32()), "count": pa.int64()}
    return pa.schema(
        [("user_id", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC"))]
        + [(name, kinds[kind]) for name, kind, _ in types.user_window_columns()]
    )


def user_partition(column: str, buckets: int, part: tuple[int, int] | None) -> str:
    """SQL condition: the user is in partition ``part = (p, parts)`` of the users, by
    their bucket (``hash(user_id) % buckets``, the unit the window job works in), so a
    partition is a set of whole buckets: bucket b belongs to partition b % parts."""
    if part is None:
        return "TRUE"
    p, parts = part
    return f"hash({column}) % {int(buckets)} % {int(parts)} = {int(p)}"


def prepare_daily_interactions(
    con,
    first: date,
    last: date,
    window: int,
    buckets: int = 1,
    part: tuple[int, int] | None = None,
) -> None:
    """Temp table ``ud``: (user, item, type, first_snap, per-type counts) for the events
    that can enter or leave a window of a snapshot in [first, last] (of the users of
    partition ``part`` only, :func:`user_partition`; None: all). ``first_snap`` is the
    first snapshot date that includes the event (the day after it); it leaves the window on
    ``first_snap + window``, hence the extra day of events before ``first - window``."""
    con.sql("SET TimeZone = 'UTC'")
    con.sql("DROP TABLE IF EXISTS ud")
    con.sql(
        """
        CREATE TEMP TABLE ud AS
        SELECT e.user_id, e.item_id, i.item_type,
               CAST(CAST(e.ts AS TIMESTAMPTZ) AS DATE) + 1 AS first_snap,
               count(*) FILTER (WHERE e.event_type = 'stream') AS streams,
               count(*) FILTER (WHERE e.event_type = 'follow') AS follows,
               count(*) FILTER (WHERE e.event_type = 'preview') AS previews,
               count(*) FILTER (WHERE e.event_type = 'intent_to_pay') AS intents
        FROM events e JOIN items i USING (item_id)
        WHERE CAST(e.ts AS TIMESTAMPTZ) >= ? AND CAST(e.ts AS TIMESTAMPTZ) < ?
          AND """
        + user_partition("e.user_id", buckets, part)
        + """
        GROUP BY ALL""",
        params=[midnight(first) - timedelta(days=window + 1), midnight(last)],
    )


def user_window_batches(
    con,
    emb: ItemEmbeddings,
    types: ItemTypes,
    first: date,
    last: date,
    window: int,
    buckets: int,
    anchor: bool,
    only: Sequence[int] | None = None,
) -> Iterator[pa.Table]:
    """User window rows for snapshots in [first, last], one arrow table per user bucket
    (the buckets in ``only``; None: all of them).

    ``anchor`` (a full rebuild): also a row at ``first`` for every user whose window is
    non-empty then, so history that starts after the data does is still complete.
    """
    _register_ids(con, emb, types)
    con.sql("DROP TABLE IF EXISTS snaps")
    con.sql(
        f"""
        CREATE TEMP TABLE snaps AS
        SELECT DISTINCT user_id, s, hash(user_id) % {buckets} AS bucket FROM (
          SELECT user_id, first_snap AS s FROM ud
          UNION ALL SELECT user_id, first_snap + {window} FROM ud
          UNION ALL SELECT user_id, ? FROM ud WHERE ? AND first_snap <= ?
                                                AND first_snap > ? - {window})
        WHERE s BETWEEN ? AND ?""",
        params=[first, anchor, first, first, first, last],
    )
    schema = user_windows_schema(types)
    for b in range(buckets) if only is None else only:
        rows = con.sql(
            """
            SELECT user_id, s, dense_rank() OVER (ORDER BY user_id, s) - 1 AS r
            FROM snaps WHERE bucket = ? ORDER BY r""",
            params=[b],
        ).to_arrow_table()
        if rows.num_rows == 0:
            continue
        pairs = con.sql(
            f"""
            SELECT q.r, coalesce(x.idx, -1) AS idx, ti.t,
                   sum(u.streams) AS streams, sum(u.follows) AS follows,
                   sum(u.previews) AS previews, sum(u.intents) AS intents
            FROM (SELECT user_id, s, dense_rank() OVER (ORDER BY user_id, s) - 1 AS r
                  FROM snaps WHERE bucket = ?) q
            JOIN ud u ON u.user_id = q.user_id AND u.first_snap <= q.s
                     AND u.first_snap > q.s - {window}
            JOIN type_idx ti ON ti.item_type = u.item_type
            LEFT JOIN emb_idx x ON x.item_id = u.item_id
            GROUP BY q.r, u.item_id, x.idx, ti.t""",
            params=[b],
        ).fetchnumpy()
        yield _window_rows(rows, pairs, emb, types, schema)


def _register_ids(con, emb: ItemEmbeddings, types: ItemTypes) -> None:
    """Temp tables emb_idx (item_id -> row of ``emb``) and type_idx (type -> position)."""
    for table, view, columns in (
        (
            "emb_idx",
            "emb_ids",
            {
                "item_id": pa.array(emb.item_id, type=pa.string()),
                "idx": pa.array(np.arange(len(emb.item_id))),
            },
        ),
        (
            "type_idx",
            "type_ids",
            {"item_type": pa.array(types.names, pa.string()), "t": pa.array(np.arange(len(types)))},
        ),
    ):
        con.sql(f"DROP TABLE IF EXISTS {table}")
        con.register(view, pa.table(columns))
        con.sql(f"CREATE TEMP TABLE {table} AS SELECT * FROM {view}")
        con.unregister(view)


def _window_rows(
    rows: pa.Table, pairs: dict, emb: ItemEmbeddings, types: ItemTypes, schema: pa.Schema
) -> pa.Table:
    """One bucket's user-window table: ``rows`` (user_id, s, r) are its snapshots, ``pairs``
    the (snapshot r, item row idx, type t, event counts) in each snapshot's window."""
    n = rows.num_rows
    r = pairs["r"].astype(np.int64)
    idx = pairs["idx"].astype(np.int64)
    kind = pairs["t"].astype(np.int64)
    streams, follows = pairs["streams"].astype(np.int64), pairs["follows"].astype(np.int64)
    previews, intents = pairs["previews"].astype(np.int64), pairs["intents"].astype(np.int64)

    def mean_vectors(mask: np.ndarray) -> np.ndarray:
        m = mask & (idx >= 0)
        a = sp.csr_matrix(
            (np.ones(m.sum(), np.float32), (r[m], idx[m])), shape=(n, len(emb.item_id))
        )
        counts = np.asarray(a.sum(axis=1)).ravel()
        out = np.asarray(a @ emb.vectors, dtype=np.float32)
        return out / np.maximum(counts, 1)[:, None]

    def count(weights: np.ndarray) -> pa.Array:
        return pa.array(np.bincount(r, weights=weights, minlength=n).astype(np.int64))

    weak = (follows + previews + intents) > 0
    declared = set(schema.names)
    cols = {
        "user_id": rows.column("user_id").cast(pa.string()),
        "event_timestamp": pa.array(
            [midnight(d) for d in rows.column("s").to_pylist()],
            type=pa.timestamp("us", tz="UTC"),
        ),
    }
    for i, t in enumerate(types.names):
        mine = kind == i
        # how each declared feature (itemtypes.USER_WINDOW_FEATURES) is computed; only
        # those declared for this type are (the focus alone has previews, intents, ...)
        make = {
            f"{t}_pref": lambda: vector_column(mean_vectors(mine)),
            f"{t}_items_90d": lambda: count(mine.astype(np.float64)),
            f"{t}_streams_90d": lambda: count(streams * mine),
            f"{t}_follow_count_90d": lambda: count(follows * mine),
            f"{t}_preview_count_90d": lambda: count(previews * mine),
            f"{t}_intent_to_pay_count_90d": lambda: count(intents * mine),
            f"weak_{t}_pref": lambda: vector_column(mean_vectors(mine & weak)),
        }
        cols.update({name: fn() for name, fn in make.items() if name in declared})
    return pa.table(cols, schema=schema)


def user_window_baselines(
    con, dim: int, types: ItemTypes, first: date, lo: datetime | None, hi: datetime
) -> pa.Table:
    """One all-zero row per user who signed up in [lo, hi) (lo None: all before hi), at
    signup, or just before the first snapshot for older accounts: every known user has a
    well-defined 90-day row (zero vectors, zero counts) from signup on."""
    start = midnight(first) - timedelta(days=1)
    where, params = time_filter("signup_ts", lo, hi)
    users = con.sql(
        f"""
        SELECT user_id, greatest(CAST(signup_ts AS TIMESTAMPTZ), ?) AS event_timestamp
        FROM users WHERE {where} ORDER BY user_id""",
        params=[start] + params,
    ).to_arrow_table()
    n = users.num_rows
    zero = {
        "vector": vector_column(np.zeros((n, dim), dtype=np.float32)),
        "count": pa.array(np.zeros(n, dtype=np.int64)),
    }
    cols = {
        "user_id": users.column("user_id").cast(pa.string()),
        "event_timestamp": users.column("event_timestamp").cast(pa.timestamp("us", tz="UTC")),
        **{name: zero[kind] for name, kind, _ in types.user_window_columns()},
    }
    return pa.table(cols, schema=user_windows_schema(types))


def item_popularity(con, first: date, last: date, window: int, anchor: bool) -> pa.Table:
    """Item rows (streams and distinct listeners in the window) for snapshots in
    [first, last], written on the dates an item's window changes (and, with ``anchor``, at
    ``first`` for every item streamed in the window then)."""
    return con.sql(
        f"""
        WITH st AS (SELECT * FROM ud WHERE streams > 0),
        sn AS (SELECT DISTINCT item_id, s FROM (
                 SELECT item_id, first_snap AS s FROM st
                 UNION ALL SELECT item_id, first_snap + {window} FROM st
                 UNION ALL SELECT item_id, ? FROM st WHERE ? AND first_snap <= ?
                                                       AND first_snap > ? - {window})
               WHERE s BETWEEN ? AND ?)
        SELECT sn.item_id, CAST(sn.s AS TIMESTAMPTZ) AS event_timestamp,
               CAST(coalesce(sum(st.streams), 0) AS BIGINT) AS streams_90d,
               CAST(count(DISTINCT st.user_id) AS BIGINT) AS listeners_90d
        FROM sn LEFT JOIN st ON st.item_id = sn.item_id AND st.first_snap <= sn.s
                            AND st.first_snap > sn.s - {window}
        GROUP BY sn.item_id, sn.s ORDER BY sn.item_id, sn.s""",
        params=[first, anchor, first, first, first, last],
    ).to_arrow_table()

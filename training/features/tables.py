"""The feature jobs' per-table writers: each writes one source table's rows for a range
of snapshot times (``lo``, ``hi``) atomically, and returns how many it wrote."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from audiorec.errors import AudiorecError
from audiorec.publish import AtomicParquet
from training.data.arrow import vector_column
from training.data.embeddings import ItemEmbeddings
from training.features.windows import midnight, time_filter

PROFILE_EPOCH = date(1970, 1, 5)  # a Monday: weekly profile snapshots fall on Mondays


def write_table(path: Path, table: pa.Table) -> int:
    with AtomicParquet(path, table.schema) as out:
        out.write(table)
    return table.num_rows


def copy_rows(con, path: Path, select: str, column: str, lo, hi) -> int:
    where, params = time_filter(column, lo, hi)
    return write_table(
        path, con.sql(f"SELECT * FROM ({select}) WHERE {where}", params=params).to_arrow_table()
    )


def profile(con, path: Path, first: date, through: date, lo, hi, every: int) -> int:
    """Profile rows on the weekly grid (every user signed up by then) and at each signup."""
    grid = [
        d
        for d in (first + timedelta(days=i) for i in range((through - first).days + 1))
        if (d - PROFILE_EPOCH).days % every == 0
    ]
    where, params = time_filter("signup_ts", lo, hi)
    sql = f"""
        SELECT user_id, CAST(signup_ts AS TIMESTAMPTZ) AS event_timestamp, country,
               CAST(age AS BIGINT) AS age, language, CAST(0 AS BIGINT) AS account_age_days
        FROM users WHERE {where}"""
    if grid:
        sql += """
        UNION ALL
        SELECT u.user_id, CAST(g.s AS TIMESTAMPTZ), u.country, CAST(u.age AS BIGINT), u.language,
               CAST(floor((epoch(CAST(g.s AS TIMESTAMPTZ))
                           - epoch(CAST(u.signup_ts AS TIMESTAMPTZ))) / 86400) AS BIGINT)
        FROM users u, (SELECT unnest(?) AS s) g
        WHERE CAST(u.signup_ts AS TIMESTAMPTZ) < CAST(g.s AS TIMESTAMPTZ)"""
        params = params + [grid]
    return write_table(path, con.sql(sql + " ORDER BY 2, 1", params=params).to_arrow_table())


def item_content(con, path: Path, text: ItemEmbeddings, lo, hi) -> int:
    where, params = time_filter("publish_ts", lo, hi)
    items = con.sql(
        f"""
        SELECT item_id, CAST(publish_ts AS TIMESTAMPTZ) AS event_timestamp, item_type,
               language, genre FROM items WHERE {where} ORDER BY item_id""",
        params=params,
    ).to_arrow_table()
    pos = {k: i for i, k in enumerate(text.item_id)}
    idx = np.array([pos.get(k, -1) for k in items.column("item_id").to_pylist()], dtype=np.int64)
    if (idx < 0).any():
        missing = items.column("item_id").to_numpy(zero_copy_only=False)[idx < 0][:3]
        raise AudiorecError(
            f"text-embedding table lacks {int((idx < 0).sum())} item(s) of "
            f"items.parquet, e.g. {list(missing)}: compute text embeddings first"
        )
    vec = text.vectors[idx]
    return write_table(path, items.append_column("text_embedding", vector_column(vec)))


def item_hgnn(path: Path, hgnn: ItemEmbeddings, first: date) -> int:
    """Every embedded item, stamped at the start of the data: a new HGNN version
    re-describes all of history (the user preference vectors are rebuilt with it)."""
    n = len(hgnn.vectors)
    table = pa.table(
        {
            "item_id": pa.array(hgnn.item_id, type=pa.string()),
            "event_timestamp": pa.array(
                [midnight(first - timedelta(days=1))] * n, type=pa.timestamp("us", tz="UTC")
            ),
            "hgnn_embedding": vector_column(hgnn.vectors),
            "hgnn_version": pa.array([hgnn.version] * n, type=pa.string()),
        }
    )
    return write_table(path, table)

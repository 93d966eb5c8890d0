"""Reading features back for training: historical, point-in-time.

Through the feature services by name, as the online read (``audiorec/featurestore.py``)
does, so training and serving read the same feature list. Values are returned raw (nulls
where Feast has no row): filling them is the model's preprocessing, exported with the
model, so serving re-implements nothing.

On the Ray engine (Feast's Ray offline store) one gap is closed here: Feast 0.67's Ray
store ignores a view's TTL in historical retrieval, where the DuckDB store returns nulls
when the entity's latest row is older than the TTL at the entity's time (profiles before
the first weekly snapshot, say). :func:`historical_features` applies the TTL afterwards,
from the key and timestamp columns of the view's source only, so both engines give the
same table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from audiorec.errors import AudiorecError
from audiorec.featurestore import USER_SERVICE, feature_service


def historical_features(store, entity: pd.DataFrame, service: str) -> pa.Table:
    """The service's features of each ``entity`` row (its join key, ``event_timestamp``
    and any passed-through columns) as of that row's time, in Feast's row order."""
    table = store.get_historical_features(
        entity_df=entity, features=feature_service(store, service)
    ).to_arrow()
    if store.config.offline_store.type == "ray":
        table = _apply_ttls(store, service, table)
    return table


def _apply_ttls(store, service: str, table: pa.Table) -> pa.Table:
    import duckdb
    import pyarrow.compute as pc

    from training.data.duck import sql_literal

    for projection in feature_service(store, service).feature_view_projections:
        view = store.get_feature_view(projection.name)
        if view.ttl is None or view.ttl.total_seconds() == 0:
            continue
        (key,) = view.join_keys
        source, ts = sql_literal(view.batch_source.path), view.batch_source.timestamp_field
        con = duckdb.connect()
        try:
            con.register(
                "ent",
                pa.table(
                    {
                        "i": pa.array(np.arange(table.num_rows)),
                        "k": table.column(key),
                        "t": table.column("event_timestamp").cast(pa.timestamp("us", "UTC")),
                    }
                ),
            )
            # the latest source row at or before each entity time (as Feast's join picks)
            latest = con.sql(
                f"""SELECT e.i, s.ts FROM ent e ASOF LEFT JOIN
                      (SELECT "{key}" AS k, CAST("{ts}" AS TIMESTAMPTZ) AS ts
                       FROM read_parquet({source})) s
                    ON e.k = s.k AND e.t >= s.ts ORDER BY e.i"""
            ).to_arrow_table()
        finally:
            con.close()
        age = pc.subtract(
            table.column("event_timestamp").cast(pa.timestamp("us", "UTC")),
            latest.column("ts").cast(pa.timestamp("us", "UTC")),
        )
        expired = pc.fill_null(pc.greater(age, pa.scalar(view.ttl, pa.duration("us"))), True)
        for feature in projection.features:
            col = table.column(feature.name)
            index = table.column_names.index(feature.name)
            table = table.set_column(
                index, feature.name, pc.if_else(expired, pa.nulls(len(col), col.type), col)
            )
    return table


def user_training_features(
    store, examples: pd.DataFrame, service: str = USER_SERVICE
) -> pd.DataFrame:
    """User-tower features of each (user_id, event_timestamp) row, as of that time.

    A row at time t sees only feature rows stamped at or before t (Feast's point-in-time
    join), and those summarise only events strictly before their stamp: no leakage.
    Extra columns of ``examples`` (labels, item ids) are passed through.
    """
    missing = {"user_id", "event_timestamp"} - set(examples.columns)
    if missing:
        raise AudiorecError(
            f"training examples need columns user_id and event_timestamp; "
            f"missing: {', '.join(sorted(missing))}"
        )
    ts = examples["event_timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise AudiorecError(f"event_timestamp must be timezone-aware (UTC), got {ts.dtype}")
    return historical_features(store, examples, service).to_pandas()

"""Feast's Ray offline store with a point-in-time join and a latest-row pull that scale.

Feast 0.67's ``RayOfflineStore`` (contrib) reads our parquet sources on Ray, but two of
its steps do not survive a real table (found on the demo world, 50k users):

- **Historical retrieval.** Below ``broadcast_join_threshold_mb`` its broadcast join sorts
  the feature rows by (key, timestamp) before pandas' ``merge_asof``, which needs the
  timestamp sorted globally ("right keys must be sorted"); every batch then falls back to
  a Python loop over entity rows, each scanning every feature row: O(N·M) on one core
  (59k tower examples ran for more than 9 minutes). Above the threshold its windowed join
  only matches feature rows stamped in the entity's own 1-hour window, which is wrong as
  soon as the latest row is older. It also ignores the view's TTL.
- **The latest row per entity** (``pull_latest_from_table_or_query``):
  ``groupby().map_groups()``, one pandas call per entity.

:class:`PointInTimeRayOfflineStore` keeps Feast's store (Ray start-up, its config, every
other method) and replaces those two steps by the plan our own feature jobs use: hash
partitions of the entity key as Ray tasks, each one DuckDB query over the view's parquet
source (``ASOF JOIN``; the latest row by window). The answer is the DuckDB offline
store's: each entity row gets the view's latest row at or before its time, null when that
row is older than the TTL, ties on the timestamp broken by the created timestamp.

Each task scans the source once (reading only its columns and keeping its partition's
keys), so the cost is partitions x source size in reads, spread over the cluster, and one
partition's rows in memory. Anything these plans do not cover (a non-file source, field
mappings, join-key maps, on-demand views, an entity SQL string) goes to Feast's own code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from feast.infra.offline_stores.contrib.ray_offline_store.ray import (
    RayOfflineStore,
    RayOfflineStoreConfig,
)
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata

from audiorec.featurestore import RAY_OFFLINE_STORE


class PointInTimeRayOfflineStoreConfig(RayOfflineStoreConfig):
    """Feast's Ray store settings, plus the number of partitions (0: twice the cluster's
    CPUs). Feast names the config class after the store class (``<Store>Config``)."""

    type: Literal["training.features.ray_offline.PointInTimeRayOfflineStore"] = RAY_OFFLINE_STORE  # type: ignore[assignment]
    partitions: int = 0


@dataclass(frozen=True)
class _View:
    """What one task needs of a feature view: plain values, cheap to ship."""

    source: str
    keys: tuple[str, ...]
    timestamp: str
    created: str | None
    features: tuple[str, ...]  # source column names
    outputs: tuple[str, ...]  # result column names (full names or not)
    ttl_us: int  # 0: never expires


class PointInTimeRayOfflineStore(RayOfflineStore):
    @staticmethod
    def get_historical_features(
        config: Any,
        feature_views: list,
        feature_refs: list[str],
        entity_df: Any,
        registry: Any,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        from feast.on_demand_feature_view import OnDemandFeatureView

        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        views = [_view(fv, feature_refs, registry, project, full_feature_names, config)
                 for fv in feature_views]  # fmt: skip
        if not isinstance(entity_df, pd.DataFrame) or odfvs or None in views:
            return RayOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project,
                full_feature_names, **kwargs,
            )  # fmt: skip
        ray = _ray(config)
        specs = [v for v in views if v is not None and v.features]
        keys = [k for k in (specs[0].keys if specs else ()) if k in entity_df.columns]
        parts = _partitions(config, len(entity_df))
        if keys and parts > 1:
            part = pd.util.hash_pandas_object(entity_df[keys], index=False).to_numpy() % parts
            slices = [entity_df[part == p] for p in range(parts)]
        else:
            slices = [entity_df]
        # one schema for every slice: a slice whose object column is all None would
        # otherwise get a null type, and the partitions' tables would not concatenate
        schema = pa.Schema.from_pandas(entity_df, preserve_index=False)
        task = ray.remote(num_cpus=1)(_join_partition)
        refs = [
            task.remote(pa.Table.from_pandas(s, schema=schema, preserve_index=False), specs)
            for s in slices
        ]
        ts = entity_df["event_timestamp"]
        metadata = RetrievalMetadata(
            features=feature_refs,
            keys=[c for c in entity_df.columns if c != "event_timestamp"],
            min_event_timestamp=ts.min() if len(ts) else None,
            max_event_timestamp=ts.max() if len(ts) else None,
        )
        return ArrowRefsJob(refs, full_feature_names, metadata)

    @staticmethod
    def pull_latest_from_table_or_query(
        config: Any,
        data_source: Any,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        if (
            not isinstance(data_source, FileSource)
            or data_source.field_mapping
            or not join_key_columns
        ):
            return RayOfflineStore.pull_latest_from_table_or_query(
                config, data_source, join_key_columns, feature_name_columns,
                timestamp_field, created_timestamp_column, start_date, end_date,
            )  # fmt: skip
        ray = _ray(config)
        view = _View(
            source=_path(data_source, config),
            keys=tuple(join_key_columns),
            timestamp=timestamp_field,
            created=created_timestamp_column or None,
            features=tuple(feature_name_columns),
            outputs=tuple(feature_name_columns),
            ttl_us=0,
        )
        parts = _partitions(config, None)
        task = ray.remote(num_cpus=1)(_latest_partition)
        refs = [task.remote(view, start_date, end_date, p, parts) for p in range(parts)]
        return ArrowRefsJob(refs, False, None)


class ArrowRefsJob(RetrievalJob):
    """A result held as Arrow tables in Ray's object store, one per partition: gathered
    into one table by ``to_arrow``, or handed on as a Ray Dataset (the Ray compute engine
    reads it that way) without passing through the driver."""

    def __init__(self, refs: list, full_feature_names: bool, metadata: Any) -> None:
        self._refs = refs
        self._full = full_feature_names
        self._metadata = metadata

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        import ray

        return pa.concat_tables(ray.get(self._refs, timeout=timeout))

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def to_ray_dataset(self) -> Any:
        import ray.data

        return ray.data.from_arrow_refs(self._refs)

    @property
    def full_feature_names(self) -> bool:
        return self._full

    @property
    def on_demand_feature_views(self) -> list:
        return []

    @property
    def metadata(self) -> Any:
        return self._metadata


def _ray(config: Any) -> Any:
    """Ray, started (or connected) by Feast's own code from the store's config."""
    import ray

    RayOfflineStore()._init_ray(config)
    return ray


def _partitions(config: Any, rows: int | None) -> int:
    """The store's ``partitions`` if set; else two per CPU of the cluster, and for an
    entity table no more than one per 2,000 rows (a task's start-up is not worth less)."""
    import ray

    if getattr(config.offline_store, "partitions", 0):
        return int(config.offline_store.partitions)
    parts = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(parts, -(-rows // 2000))) if rows is not None else parts


def _path(source: FileSource, config: Any) -> str:
    return str(FileSource.get_uri_for_file_path(getattr(config, "repo_path", None), source.path))


def _view(fv: Any, refs: list[str], registry: Any, project: str, full: bool, config: Any):
    """The plain description of ``fv``'s part of the request, or None when it needs
    something this plan does not do (then Feast's own join runs)."""
    source = fv.batch_source
    if (
        not isinstance(source, FileSource)
        or source.field_mapping
        or fv.projection.join_key_map
        or not fv.entities
    ):
        return None
    name = fv.projection.name_to_use()
    features = tuple(r.split(":", 1)[1] for r in refs if r.startswith(f"{name}:"))
    keys = tuple(registry.get_entity(e, project).join_key for e in fv.entities)
    ttl = fv.ttl.total_seconds() if fv.ttl else 0
    return _View(
        source=_path(source, config),
        keys=keys,
        timestamp=source.timestamp_field,
        created=source.created_timestamp_column or None,
        features=features,
        outputs=tuple(f"{name}__{f}" if full else f for f in features),
        ttl_us=int(ttl * 1_000_000),
    )


def _connect() -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 1")  # one task, one CPU: Ray runs the others beside it
    con.execute("SET TimeZone = 'UTC'")  # a naive timestamp means UTC, as in Feast's stores
    return con


def _join_partition(entity: pa.Table, views: list[_View]) -> pa.Table:
    """Ray task: ``entity``'s rows with each view's features as of ``event_timestamp``."""
    from training.data.duck import sql_identifier as _q
    from training.data.duck import sql_literal

    con = _connect()
    try:
        con.register("e0", entity)
        current = "e0"
        for i, v in enumerate(views):
            keys = ", ".join(_q(k) for k in v.keys)
            # ties on the timestamp: the row created last wins (as in Feast's other stores);
            # without a created column any one of them, as the ASOF join picks (no sort)
            ties = (
                f"QUALIFY row_number() OVER (PARTITION BY {keys}, __ts "
                f"ORDER BY {_q(v.created)} DESC) = 1"
                if v.created
                else ""
            )
            rows = f"""SELECT {keys}, CAST({_q(v.timestamp)} AS TIMESTAMPTZ) AS __ts,
                          {", ".join(_q(f) for f in v.features)}
                       FROM read_parquet({sql_literal(v.source)}) s
                       SEMI JOIN (SELECT DISTINCT {keys} FROM {current}) USING ({keys})
                       {ties}"""
            fresh = "f.__ts IS NOT NULL"
            if v.ttl_us:
                fresh += (
                    " AND CAST(e.event_timestamp AS TIMESTAMPTZ) - f.__ts"
                    f" <= to_microseconds({v.ttl_us})"
                )
            cols = ", ".join(
                f"CASE WHEN {fresh} THEN f.{_q(f)} END AS {_q(o)}"
                for f, o in zip(v.features, v.outputs)
            )
            on = " AND ".join(f"e.{_q(k)} = f.{_q(k)}" for k in v.keys)
            con.execute(
                f"""CREATE TEMP TABLE e{i + 1} AS
                    SELECT e.*, {cols} FROM {current} e ASOF LEFT JOIN ({rows}) f
                    ON {on} AND CAST(e.event_timestamp AS TIMESTAMPTZ) >= f.__ts"""
            )
            current = f"e{i + 1}"
        table: pa.Table = con.sql(f"SELECT * FROM {current}").to_arrow_table()
        # the entity's own columns keep their Arrow types (DuckDB returns timestamps in us)
        for name in entity.column_names:
            index = table.column_names.index(name)
            table = table.set_column(
                index, name, table.column(name).cast(entity.schema.field(name).type)
            )
        return table
    finally:
        con.close()


def _latest_partition(v: _View, start: datetime, end: datetime, part: int, parts: int) -> pa.Table:
    """Ray task: the latest row in [start, end] of each key hashed to ``part``."""
    from training.data.duck import sql_identifier as _q
    from training.data.duck import sql_literal

    keys = ", ".join(_q(k) for k in v.keys)
    ts = _q(v.timestamp)
    order = f"{ts} DESC" + (f", {_q(v.created)} DESC" if v.created else "")
    columns = [*v.keys, *v.features, v.timestamp] + ([v.created] if v.created else [])
    con = _connect()
    try:
        return con.execute(
            f"""SELECT {", ".join(_q(c) for c in dict.fromkeys(columns))}
                FROM read_parquet({sql_literal(v.source)})
                WHERE CAST({ts} AS TIMESTAMPTZ) BETWEEN ? AND ?
                  AND hash({keys}) % {parts} = {part}
                QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1""",
            [start, end],
        ).to_arrow_table()
    finally:
        con.close()

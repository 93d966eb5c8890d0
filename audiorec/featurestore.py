"""The Feast store as both sides see it: which store, which project, the feature services
by name, and the online read serving does.

The repository's declarations (``feature_repo/``) are the only feature definitions; this
module opens a store over them for a work directory (``${AUDIOREC_WORKDIR}`` in
``feature_store.yaml`` set to it), resolves the services that are the training/serving
contract (:data:`USER_SERVICE`, :data:`ITEM_SERVICE`), and reads them online. Applying the
repo and materializing are training's (``training/features/store.py``).

Each generation of the feature tables is loaded into a Feast project of its own
(:func:`project_for`), named in the artifact's manifest, so a model and its online
features switch together. What a project's online rows hold is recorded in a marker file
(:func:`online_lineage`) that training writes after a complete materialization.
"""

from __future__ import annotations

import functools
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

import yaml
from pydantic import Field

from audiorec.config import StrictConfig
from audiorec.errors import AudiorecError, StoreUnavailable
from audiorec.itemtypes import DEFAULT as DEFAULT_TYPES
from audiorec.itemtypes import ItemTypes
from audiorec.publish import read_json
from audiorec.redis_row import KeyEncoder, RedisRow, decode, python_value
from audiorec.secrets import redact, redis_address

REPO_DIR = Path(__file__).resolve().parents[1] / "feature_repo"
DEFAULT_PROJECT = "audiorec"
USER_SERVICE = "user_tower"
ITEM_SERVICE = "item_tower"
# What a Recommend reads: the user tower's features plus the real-time state (user_recent)
ONLINE_SERVICE = "user_online"
# Real-time writes (serving/events.py): the 90-day window views and the recent events
WINDOWS_PUSH, RECENT_PUSH = "user_windows_push", "user_recent_push"
RECENT_EVENTS = "recent_events"  # "<ts_us>|<event_type>|<item_id>|<event_id>" per event
# The user_recent view's features, declared once (its Feast view in feature_repo/, its
# table's schema here): name and kind ("strings": a list of strings, "int": an int64)
RECENT_COLUMNS = ((RECENT_EVENTS, "strings"), ("rt_last_ts_us", "int"), ("rt_writes", "int"))
RAY_OFFLINE_STORE = "training.features.ray_offline.PointInTimeRayOfflineStore"
STATE_FILE = "_state.json"  # written by the feature jobs, last (training/features/jobs.py)
# One online read: {feature: [value per entity]}, None where the store has no value.
Features = dict[str, list[Any]]


class FeatureStoreConfig(StrictConfig):
    """Which online store serves the features, and which engine does Feast's offline work
    (historical retrieval, materialization): DuckDB in this process, or Feast's Ray offline
    store and Ray compute engine (training's ``--engine ray`` sets it; serving never reads
    offline). The feature repository's declarations are the same either way."""

    online: Literal["sqlite", "redis"] = "sqlite"
    redis: str = "localhost:6379"  # Feast connection string: host:port[,db=0,password=...]
    # the Redis address is a Redis Cluster (any of its nodes; keys spread over its slots)
    redis_cluster: bool = False
    offline: Literal["duckdb", "ray"] = "duckdb"
    ray_address: str | None = None  # None: the Ray instance this process started
    # Ray compute engine: concurrent tasks loading the online store (SQLite takes one writer)
    ray_write_concurrency: int = Field(2, ge=1)

    @property
    def label(self) -> str:
        """The store as a marker records it (host:port only: options may hold a password)."""
        if self.online == "sqlite":
            return "sqlite"
        kind = "redis-cluster" if self.redis_cluster else "redis"
        return f"{kind} {redis_address(self.redis)}"


def recent_schema() -> Any:
    """The user_recent table's columns (its batch file is empty: pushes fill it)."""
    import pyarrow as pa

    kinds = {"strings": pa.list_(pa.string()), "int": pa.int64()}
    return pa.schema(
        [("user_id", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC"))]
        + [(name, kinds[kind]) for name, kind in RECENT_COLUMNS]
    )


def features_dir(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / "features"


def current_generation(workdir: str | Path) -> str | None:
    """The rebuild id of the feature tables now in place (None: none built yet)."""
    state = read_json(features_dir(workdir) / STATE_FILE, "feature-job state")
    gen = state.get("generation") if isinstance(state, dict) else None
    return gen if isinstance(gen, str) and gen.isalnum() else None


def item_types(workdir: str | Path) -> ItemTypes:
    """The item types the feature tables of ``workdir`` were built for (recorded by the
    feature jobs), or the two default types before any were built."""
    state = read_json(features_dir(workdir) / STATE_FILE, "feature-job state")
    names = state.get("item_types") if isinstance(state, dict) else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        return ItemTypes(DEFAULT_TYPES)
    return ItemTypes(tuple(names))


def project_for(generation: str | None) -> str:
    """The Feast project (online namespace) of one generation of the feature tables.

    Each rebuild of the feature tables (a new HGNN, new data) is loaded into a project of
    its own, so the online rows a served model reads are never overwritten by a run that
    has not published yet: the model and its online features switch together when
    ``current`` moves (the manifest names the project), whatever crashes in between.
    """
    return DEFAULT_PROJECT if generation is None else f"{DEFAULT_PROJECT}_{generation[:16]}"


def current_project(workdir: str | Path) -> str:
    """The project of the feature tables now in the work directory."""
    return project_for(current_generation(workdir))


def repo_config(
    workdir: str | Path, cfg: FeatureStoreConfig = FeatureStoreConfig(), project: str | None = None
) -> Any:
    """feature_repo/feature_store.yaml with ``${AUDIOREC_WORKDIR}`` set to ``workdir``,
    the online store chosen by ``cfg``, and ``project`` (default: the current feature
    tables' project, :func:`current_project`)."""
    import warnings

    from feast.repo_config import RepoConfig

    # After feast's import (it installs its own warning filters first): ibis inside the
    # DuckDB offline store calls a method DuckDB 2.0 deprecates, once per query.
    warnings.filterwarnings("ignore", message=".*fetch_arrow_table", category=DeprecationWarning)
    workdir = Path(workdir).resolve()
    # Substituted into the parsed values, never into the YAML text: a '#', ':' or newline
    # in the path must not change the document's structure.
    raw = _substitute(
        yaml.safe_load((REPO_DIR / "feature_store.yaml").read_text()),
        "${AUDIOREC_WORKDIR}",
        str(workdir),
    )
    raw["project"] = project or current_project(workdir)
    if cfg.online == "redis":
        raw["online_store"] = {"type": "redis", "connection_string": cfg.redis}
        if cfg.redis_cluster:
            raw["online_store"]["redis_type"] = "redis_cluster"
    if cfg.offline == "ray":
        raw["offline_store"] = {
            # Feast's Ray store with a scalable point-in-time join and latest-row pull;
            # Feast imports it by this path when the config is built, and only training
            # builds a Ray config (serving's is always DuckDB: it never reads offline).
            "type": RAY_OFFLINE_STORE,
            "ray_address": cfg.ray_address,
            "storage_path": str(workdir / "feast" / "ray"),
        }
        raw["batch_engine"] = {
            "type": "ray.engine",
            "ray_address": cfg.ray_address,
            "write_concurrency": 1 if cfg.online == "sqlite" else cfg.ray_write_concurrency,
        }
        # the Ray engine then reads each key's latest row only (one per key, in the
        # offline store's partitioned pull), not every row of the interval
        raw["materialization"] = {"pull_latest_features": True}
    (workdir / "feast").mkdir(parents=True, exist_ok=True)
    return RepoConfig(repo_path=REPO_DIR, **raw)


def _substitute(node: Any, placeholder: str, value: str) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, placeholder, value) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, placeholder, value) for v in node]
    return node.replace(placeholder, value) if isinstance(node, str) else node


def open_store(
    workdir: str | Path, cfg: FeatureStoreConfig = FeatureStoreConfig(), project: str | None = None
) -> Any:
    from feast import FeatureStore

    return FeatureStore(config=repo_config(workdir, cfg, project))


def feature_service(store: Any, name: str) -> Any:
    """The named feature service, or one clear error listing the known ones."""
    from feast.errors import FeatureServiceNotFoundException

    try:
        # allow_cache: without it every call re-reads the registry file (~1.3 ms, and 6 ms
        # per online read end to end; see docs/benchmarks.md)
        return store.get_feature_service(name, allow_cache=True)
    except FeatureServiceNotFoundException:
        known = sorted(s.name for s in store.list_feature_services())
        raise AudiorecError(
            f"unknown feature service {name!r}; known: "
            f"{', '.join(known) or 'none (run apply first)'}"
        ) from None


@contextmanager
def online_errors(store: Any) -> Iterator[None]:
    """Turn an unreachable Redis online store into one readable :class:`StoreUnavailable`."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - narrowed below
        online = store.config.online_store
        if getattr(online, "type", None) == "redis" and _is_connection_error(exc):
            # host:port only: the connection string's options may hold a password
            raise StoreUnavailable(
                f"Redis online store at "
                f"{redis_address(online.connection_string)} is unreachable "
                f"({redact(_first_line(exc))})"
            ) from None
        raise


def _is_connection_error(exc: BaseException | None) -> bool:
    import redis

    return caused_by(
        exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError)
    )


def caused_by(exc: BaseException | None, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` or any exception in its chain (cause, else context) is one of
    ``kinds``: Feast and redis-py wrap the error that says what happened."""
    while exc is not None:
        if isinstance(exc, kinds):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _first_line(exc: BaseException) -> str:
    return re.sub(r"\s+", " ", str(exc)).strip()[:200]


class OnlineFeatureReader:
    """Reads one feature service from the online store, for a few entities per call.

    The service and its views are resolved once (resolving per call costs more than the
    read itself). :meth:`read` then asks the provider for each view's row, the call
    ``get_online_features`` ends in (on Redis: one HMGET per entity of all its views'
    fields, through the store's own key and field encoding), and converts the values as
    Feast's type map does: the same answer (a test compares them) without the SDK's
    per-call request building and response protobufs (docs/benchmarks.md: "Serving the 1M
    artifact, third round" and "Server time against its primitives"). :meth:`read_row`
    is the request path's read of one entity (on Redis: audiorec/redis_row.py);
    :meth:`read_sdk` is the plain ``get_online_features``.
    """

    def __init__(
        self, store: Any, service: str = USER_SERVICE, views: tuple[str, ...] | None = None
    ):
        """``views``: read only these views of the service (None: all)."""
        self.store = store
        self.service = feature_service(store, service)
        self.key = "item_id" if service == ITEM_SERVICE else "user_id"
        self._provider = store._get_provider()
        self._views = [
            (store.get_feature_view(p.name), [f.name for f in p.features])
            for p in self.service.feature_view_projections
            if views is None or p.name in views
        ]
        from feast.infra.online_stores.redis import RedisOnlineStore

        online = getattr(self._provider, "online_store", None)
        self._redis = online if isinstance(online, RedisOnlineStore) else None
        # on Redis, every feature's hashed field, in one list (a view's timestamp field,
        # the last of its list, is not asked: nothing reads it)
        self._names: list[str] = []
        self._fields: list[Any] = []
        self._row: RedisRow | None = None
        if self._redis is not None:
            for view, names in self._views:
                _, hset = self._redis._generate_hset_keys_for_features(view, list(names))
                self._names += names
                self._fields += hset[:-1]
            self._row = _redis_row(store, self._redis, self.key, self._names, self._fields)

    def read(self, entity_ids: list[str]) -> Features:
        """{feature: [value per entity]}; None where the store has no value."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        keys = [
            EntityKey(join_keys=[self.key], entity_values=[Value(string_val=e)]) for e in entity_ids
        ]
        with online_errors(self.store):
            if self._redis is not None:
                return self._read_redis(keys)
            out: Features = {}
            config = self.store.config
            for view, names in self._views:
                # a copy of the names: the Redis store appends its timestamp field to its list
                rows = self._provider.online_read(config, view, keys, list(names))
                columns: list[list[Any]] = [[None] * len(keys) for _ in names]
                for i, (_, values) in enumerate(rows):
                    for column, name in zip(columns, names):
                        value = (values or {}).get(name)
                        if value is not None:
                            column[i] = python_value(value)
                out.update(zip(names, columns))
            return out

    def read_row(self, entity_id: str) -> Features:
        """One entity, for the request path: :meth:`read`'s answer, except that on Redis a
        list of floats is a read-only float32 array (audiorec/redis_row.py)."""
        if self._row is None:
            return self.read([entity_id])
        with online_errors(self.store):
            return self._row.read(entity_id)

    def _read_redis(self, keys: list[Any]) -> Features:
        """One HMGET per entity of every feature's field (all views of an entity share one
        hash), in one pipelined round trip, through the Redis store's own key and field
        encoding."""
        assert self._redis is not None
        config = self.store.config
        redis_keys = self._redis._generate_redis_keys_for_entities(config, keys)
        return self.from_replies(
            self._redis._read_hash_fields(config, [(k, self._fields) for k in redis_keys])
        )

    def hmget_args(self, entity_id: str) -> tuple[bytes, list[Any]]:
        """(key, hashed fields) of one entity's HMGET on Redis, for a caller's own pipeline;
        :meth:`from_replies` reads the answers as :meth:`read` would."""
        if self._row is None:
            raise ValueError("hmget_args: the online store is not Redis")
        return self._row.key(entity_id), self._fields

    def from_replies(self, replies: list[list[Any]]) -> Features:
        """{feature: [value per entity]} from one HMGET reply per entity."""
        from feast.protos.feast.types.Value_pb2 import Value

        rows = [[decode(Value, blob) for blob in reply] for reply in replies]
        return {name: [row[j] for row in rows] for j, name in enumerate(self._names)}

    def read_sdk(self, entity_ids: list[str]) -> Features:
        """The same read through ``get_online_features`` (the reference)."""
        with online_errors(self.store):
            out: Features = self.store.get_online_features(
                features=self.service, entity_rows=[{self.key: e} for e in entity_ids]
            ).to_dict()
            out.pop(self.key, None)
            return out


def _redis_row(store: Any, online: Any, key: str, names: list[str], fields: list[Any]) -> RedisRow:
    """The one-entity read of ``names`` in ``online`` (Feast's Redis store of ``store``),
    keyed as Feast keys ``key`` entities."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    config = store.config

    def feast_key(entity_id: str) -> bytes:  # the general read's key, Feast's own
        entity = EntityKey(join_keys=[key], entity_values=[Value(string_val=entity_id)])
        return bytes(online._generate_redis_keys_for_entities(config, [entity])[0])

    suffix = config.project.encode("utf-8")
    client = functools.partial(online._get_client, config.online_store)
    return RedisRow(client, KeyEncoder(feast_key, suffix), names, fields)


def online_features(store: Any, entity_ids: list[str], service: str = USER_SERVICE) -> Features:
    """One-off online read of ``entity_ids`` through the named service."""
    return OnlineFeatureReader(store, service).read(entity_ids)


def marker_path(workdir: str | Path, store: FeatureStoreConfig, project: str) -> Path:
    return Path(workdir).resolve() / "feast" / f"_materialized_{store.online}_{project}.json"


def online_lineage(
    workdir: str | Path, store: FeatureStoreConfig, project: str
) -> dict[str, Any] | None:
    """What the online store holds for ``project``: {"generation", "hgnn_version",
    "through", "store"}, or None when nothing complete was materialized into it."""
    marker = read_json(marker_path(workdir, store, project), "materialization marker")
    if (
        not isinstance(marker, dict)
        or marker.get("store") != store.label
        or not {"generation", "hgnn_version", "through"} <= set(marker)
    ):
        return None
    return marker

"""Rows into the online store from the request path (RecordEvents): Feast's push,
without its per-call cost.

:class:`OnlinePusher` resolves a push source's feature views once and converts rows with
Feast's own type map; on Redis, :func:`redis_write` writes every view of a user, of
every push source given together (:func:`push_all`), in two pipelined round trips, with
Feast's key and field encoding and its rule that an older row never replaces a newer one
(tests/serving/test_push.py holds it byte for byte to Feast's ``online_write_batch``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

from audiorec.featurestore import Features, online_errors

Rows = list[dict[str, Any]]
# RecordEvents' change: (users' rows, {item id: HGNN embedding | None}) -> the
# [(push source, rows)] to write (serving/events.py makes it, the store's side calls it)
Change = Callable[[Features, dict[str, Any]], list[tuple[str, Rows]]]


class OnlinePusher:
    """``store.push(source, df, to=ONLINE)`` without its per-call cost: the feature views
    a push source feeds are resolved once, and each push converts its rows with Feast's own
    type map and writes them as the provider's ``online_write_batch`` (what ``push`` ends
    in) does. ``store.push`` re-reads and re-parses the registry twice per call (~20 ms,
    docs/benchmarks.md). On Redis every view of a user lives in one hash, so all views are
    written in two pipelined round trips (:func:`redis_write`) instead of two per view."""

    def __init__(self, store: Any, source: str):
        self.store = store
        self.views = list(store._fvs_for_push_source_or_raise(source, True))
        self.provider = store._get_provider()
        # each view's (feature, Feast value type), resolved once: not on every push
        self._types = [[(f.name, f.dtype.to_value_type()) for f in v.features] for v in self.views]

    def batches(self, rows: list[dict[str, Any]]) -> list[tuple[Any, list[tuple[Any, ...]]]]:
        """``rows`` as (view, [(entity key, {feature: Value}, event time)]) per view, each
        column as Feast's type map converts it (:func:`encode_column`)."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        keys = [
            EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=r["user_id"])])
            for r in rows
        ]
        batches = []
        for view, types in zip(self.views, self._types):
            columns = {name: encode_column([r[name] for r in rows], t) for name, t in types}
            data = [
                (key, {name: values[i] for name, values in columns.items()}, r["event_timestamp"])
                for i, (key, r) in enumerate(zip(keys, rows))
            ]
            batches.append((view, data))
        return batches

    def push(self, rows: list[dict[str, Any]]) -> None:
        push_all([(self, rows)])


def encode_column(values: list[Any], value_type: Any) -> list[Any]:
    """Feast's ``python_values_to_proto_values(values, value_type)``, with a direct path
    for the plain values RecordEvents builds: ``int`` for INT64, a ``list`` of ``float``
    for FLOAT_LIST, a ``list`` of ``str`` for STRING_LIST, ``None``. Feast's conversion
    infers and checks types value by value; the direct path builds the same messages, byte
    for byte (tests/serving/test_push_encode.py). A column with any other value (numpy
    scalars, an empty list, a float in an integer column...) goes through Feast's own."""
    from feast import type_map

    Value, FloatList, StringList, kinds = _protos()
    kind = kinds.get(value_type)
    if kind == "int":
        if all(v is None or (type(v) is int and -(2**63) <= v < 2**63) for v in values):
            return [Value() if v is None else Value(int64_val=v) for v in values]
    elif kind == "floats":
        if all(v is None or (type(v) is list and _only(v, float)) for v in values):
            return [
                Value() if v is None else Value(float_list_val=FloatList(val=v)) for v in values
            ]
    elif kind == "strings":
        if all(v is None or (type(v) is list and _only(v, str)) for v in values):
            return [
                Value() if v is None else Value(string_list_val=StringList(val=v)) for v in values
            ]
    return type_map.python_values_to_proto_values(values, value_type)


def _only(values: list[Any], kind: type) -> bool:
    """A non-empty list whose every element is exactly ``kind``."""
    return bool(values) and set(map(type, values)) == {kind}


@functools.cache
def _protos() -> tuple[Any, Any, Any, dict[Any, str]]:
    from feast.protos.feast.types.Value_pb2 import FloatList, StringList, Value
    from feast.value_type import ValueType

    kinds = {
        ValueType.INT64: "int",
        ValueType.FLOAT_LIST: "floats",
        ValueType.STRING_LIST: "strings",
    }
    return Value, FloatList, StringList, kinds


def push_all(parts: Sequence[tuple[OnlinePusher, list[dict[str, Any]]]]) -> None:
    """Several push sources' rows of one store at once. On Redis every view of every
    source goes into the same two pipelined round trips (RecordEvents pushes the windows
    and the recent events of a user together: two round trips, not four); elsewhere each
    view is the provider's ``online_write_batch``."""
    parts = [(pusher, rows) for pusher, rows in parts if rows]
    if not parts:
        return
    from feast.infra.online_stores.redis import RedisOnlineStore

    first = parts[0][0]
    if any(pusher.store is not first.store for pusher, _ in parts):
        raise ValueError("push_all: the pushers are of different stores")
    batches = [(pusher, b) for pusher, rows in parts for b in pusher.batches(rows)]
    online = getattr(first.provider, "online_store", None)
    with online_errors(first.store):
        if isinstance(online, RedisOnlineStore):
            redis_write(online, first.store.config, [b for _, b in batches])
            return
        for pusher, (view, data) in batches:
            pusher.provider.online_write_batch(
                first.store.config, view, [(*d, None) for d in data], progress=None
            )


def redis_write(
    online: Any, config: Any, batches: list[tuple[Any, list[tuple[Any, dict[str, Any], Any]]]]
) -> None:
    """Feast's ``RedisOnlineStore.online_write_batch`` for several views at once, with its
    key and field encoding and its rule: a row is written only if it is newer than the
    view's stored timestamp. ``batches``: (view, [(entity key, {feature: Value}, event
    time)]). One pipeline reads every (user, view) timestamp, one writes: two round trips."""
    client = online._get_client(config.online_store)
    rows = redis_rows(config, batches)
    with client.pipeline(transaction=False) as pipe:
        for key, name, _, _ in rows:
            pipe.hmget(key, ts_field(name))
        stored = [reply[0] for reply in pipe.execute()]
        queue_newer(pipe, rows, stored, config.online_store.key_ttl_seconds)
        pipe.execute()


def redis_rows(
    config: Any, batches: list[tuple[Any, list[tuple[Any, dict[str, Any], Any]]]]
) -> list[tuple[bytes, str, dict[str, Any], Any]]:
    """``batches`` as (Redis key, view's stored name, {feature: Value}, event time) rows,
    keyed and named as Feast's Redis store does."""
    from feast.infra.online_stores.helpers import _redis_key
    from feast.infra.online_stores.redis import _versioned_fv_name

    version = config.entity_key_serialization_version
    return [
        (_redis_key(config.project, key, entity_key_serialization_version=version), name, v, t)
        for view, data in batches
        for name in [_versioned_fv_name(view, config)]
        for key, v, t in data
    ]


def user_key(config: Any, user_id: str) -> bytes:
    """Feast's Redis key of a user's hash (the key :func:`redis_rows` writes)."""
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=user_id)])
    version = config.entity_key_serialization_version
    return bytes(_redis_key(config.project, key, entity_key_serialization_version=version))


def ts_field(name: str) -> str:
    """The hash field of a view's stored timestamp (Feast's)."""
    return f"_ts:{name}"


def queue_newer(
    pipe: Any,
    rows: list[tuple[bytes, str, dict[str, Any], Any]],
    stored: Sequence[bytes | None],
    ttl: int | None,
) -> None:
    """Queue on ``pipe`` the HSETs of the ``rows`` (:func:`redis_rows`) newer than their
    view's ``stored`` timestamp blob (None: nothing stored) and than any earlier row of
    the same key and view: Feast's rule."""
    from feast import utils
    from feast.infra.online_stores.helpers import _mmh3
    from google.protobuf.timestamp_pb2 import Timestamp

    latest: dict[tuple[bytes, str], int] = {}
    for (key, name, values, when), before in zip(rows, stored):
        ts = Timestamp()
        ts.FromDatetime(utils.make_tzaware(when))
        new = ts.seconds * 1_000_000_000 + ts.nanos
        seen = latest.get((key, name), 0)
        if before:
            old = Timestamp()
            old.ParseFromString(before)
            seen = max(seen, old.seconds * 1_000_000_000 + old.nanos)
        if seen and new <= seen:  # older than, or as old as, what is stored
            continue
        latest[(key, name)] = new
        fields = {ts_field(name): ts.SerializeToString()}
        fields.update({_mmh3(f"{name}:{f}"): v.SerializeToString() for f, v in values.items()})
        pipe.hset(key, mapping=fields)
        if ttl:
            pipe.expire(name=key, time=ttl)

"""Rows into the online store from the request path (RecordEvents): Feast's push,
without its per-call cost.

:class:`OnlinePusher` resolves a push source's feature views once and converts rows with
Feast's own type map; on Redis, :func:`redis_write` writes every view of a user, of
every push source given together (:func:`push_all`), in two pipelined round trips, with
Feast's key and field encoding and its rule that an older row never replaces a newer one
(tests/serving/test_push.py holds it byte for byte to Feast's ``online_write_batch``).
"""

from __future__ import annotations

from typing import Any, Sequence

from audiorec.featurestore import online_errors


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

    def batches(self, rows: list[dict[str, Any]]) -> list[tuple[Any, list[tuple[Any, ...]]]]:
        """``rows`` as (view, [(entity key, {feature: Value}, event time)]) per view, in
        Feast's own type map."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import python_values_to_proto_values

        keys = [
            EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=r["user_id"])])
            for r in rows
        ]
        batches = []
        for view in self.views:
            columns = {
                f.name: python_values_to_proto_values(
                    [r[f.name] for r in rows], f.dtype.to_value_type()
                )
                for f in view.features
            }
            data = [
                (key, {name: values[i] for name, values in columns.items()}, r["event_timestamp"])
                for i, (key, r) in enumerate(zip(keys, rows))
            ]
            batches.append((view, data))
        return batches

    def push(self, rows: list[dict[str, Any]]) -> None:
        push_all([(self, rows)])


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
    from feast import utils
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.infra.online_stores.redis import _versioned_fv_name
    from google.protobuf.timestamp_pb2 import Timestamp

    client = online._get_client(config.online_store)
    ttl = config.online_store.key_ttl_seconds
    version = config.entity_key_serialization_version
    rows = [
        (_redis_key(config.project, key, entity_key_serialization_version=version), name, v, t)
        for view, data in batches
        for name in [_versioned_fv_name(view, config)]
        for key, v, t in data
    ]
    with client.pipeline(transaction=False) as pipe:
        for key, name, _, _ in rows:
            pipe.hmget(key, f"_ts:{name}")
        stored = [reply[0] for reply in pipe.execute()]
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
            fields = {f"_ts:{name}": ts.SerializeToString()}
            fields.update({_mmh3(f"{name}:{f}"): v.SerializeToString() for f, v in values.items()})
            pipe.hset(key, mapping=fields)
            if ttl:
                pipe.expire(name=key, time=ttl)
        pipe.execute()

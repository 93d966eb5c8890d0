"""The request path's Redis shortcuts, against a real redis-server:

- the real-time push (serving/push.py, redis_write): every view of a user written in two
  round trips, byte for byte what Feast's own ``online_write_batch`` stores, with its rule
  that an older row never replaces a newer one; two push sources at once (push_all) in
  the same two, as the two pushes one after the other would write;
- the read on the request's own thread (serving/features.py): the same answer as the
  reader threads', and a hung Redis still fails it within the client's timeouts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

pytestmark = pytest.mark.slow


def _store_cfg(on_redis):
    from audiorec.featurestore import FeatureStoreConfig

    return FeatureStoreConfig(online="redis", redis=f"127.0.0.1:{on_redis[1]}")


def _store_and_reader(on_redis):
    """(the work directory's Feast store on the test's redis-server, a reader of the
    online service)."""
    from audiorec.artifact import current_dir, feature_project, read_manifest
    from audiorec.featurestore import ONLINE_SERVICE, OnlineFeatureReader, open_store

    wd = on_redis[0]
    project = feature_project(read_manifest(current_dir(wd), verify_files=False))
    store = open_store(wd, _store_cfg(on_redis), project)
    return store, OnlineFeatureReader(store, ONLINE_SERVICE)


def test_redis_push_writes_what_feast_writes_and_keeps_the_newer_row(on_redis, users):
    import redis as redis_py
    from feast.infra.online_stores.helpers import _redis_key

    from audiorec.featurestore import WINDOWS_PUSH
    from serving.push import OnlinePusher

    _, port = on_redis
    store, reader = _store_and_reader(on_redis)
    pusher = OnlinePusher(store, WINDOWS_PUSH)
    assert len(pusher.views) >= 2  # several views: the case the two round trips are for
    source = users["warm"]
    values = {k: v[0] for k, v in reader.read([source]).items()}
    now = datetime.now(timezone.utc) + timedelta(days=1)
    ours, feasts = "push-ours", "push-feast"

    def row(user: str, when: datetime) -> dict:
        return {**values, "user_id": user, "event_timestamp": when}

    pusher.push([row(ours, now)])  # ours: one pipeline for every view
    original = pusher.provider.online_write_batch
    for view, data in _batches(pusher, row(feasts, now)):  # Feast's: view by view
        original(store.config, view, data, progress=None)
    client = redis_py.Redis(port=port)

    def stored(user: str) -> dict:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        key = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=user)])
        return client.hgetall(
            _redis_key(store.config.project, key, entity_key_serialization_version=3)
        )

    assert stored(ours) and stored(ours) == stored(feasts)
    assert reader.read([ours]) == reader.read([feasts])
    before = stored(ours)
    older = {**row(ours, now - timedelta(hours=1)), **_changed(values)}
    pusher.push([older])
    assert stored(ours) == before  # an older row never replaces a newer one
    pusher.push([{**older, "event_timestamp": now + timedelta(hours=1)}])
    assert stored(ours) != before


def test_push_all_writes_both_sources_in_two_round_trips_as_two_pushes_would(
    on_redis, users, monkeypatch
):
    """RecordEvents pushes a user's windows and recent events together (``push_all``):
    the same bytes as the two pushes one after the other, in one pair of round trips."""
    import redis as redis_py

    from audiorec.featurestore import RECENT_PUSH, WINDOWS_PUSH, open_store
    from serving.push import OnlinePusher, push_all

    store, reader = _store_and_reader(on_redis)
    windows, recent = OnlinePusher(store, WINDOWS_PUSH), OnlinePusher(store, RECENT_PUSH)
    values = {k: v[0] for k, v in reader.read([users["warm"]]).items()}
    now = datetime.now(timezone.utc) + timedelta(days=2)

    def row(user: str) -> dict:
        return {**values, "user_id": user, "event_timestamp": now}

    executes = []
    execute = redis_py.client.Pipeline.execute

    def counted(self, *args, **kwargs):
        executes.append(len(self.command_stack))
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis_py.client.Pipeline, "execute", counted)
    push_all([(windows, [row("together")]), (recent, [row("together")])])
    assert len(executes) == 2, executes  # the timestamps read, then the writes
    windows.push([row("apart")])
    recent.push([row("apart")])
    assert len(executes) == 6
    push_all([(windows, []), (recent, [])])  # nothing to write: no round trip
    assert len(executes) == 6
    together, apart = reader.read(["together"]), reader.read(["apart"])
    assert together == apart
    assert any(v[0] is not None for v in together.values())
    with pytest.raises(ValueError, match="different stores"):
        other = OnlinePusher(
            open_store(on_redis[0], _store_cfg(on_redis), store.config.project), RECENT_PUSH
        )
        push_all([(windows, [row("x")]), (other, [row("x")])])


def _batches(pusher, r: dict):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values

    key = EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=r["user_id"])])
    for view in pusher.views:
        vals = {
            f.name: python_values_to_proto_values([r[f.name]], f.dtype.to_value_type())[0]
            for f in view.features
        }
        yield view, [(key, vals, r["event_timestamp"], None)]


def _changed(values: dict) -> dict:
    """One numeric feature moved, so a write would show."""
    name = next(
        k for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    )
    return {name: values[name] + 1}


def test_a_request_reads_redis_on_its_own_thread_bounded_by_the_client(on_redis, users):
    """A deadline further off than a reconnect and a read: no hand-off to the reader
    threads, the same answer as theirs. A hung Redis: each such read fails as a store
    failure within the client's timeouts (no retries backing off for seconds) and opens
    the breaker."""
    import time

    from tcp_proxy import FaultyProxy

    from audiorec.artifact import current_dir, feature_project, read_manifest
    from audiorec.errors import StoreUnavailable
    from audiorec.featurestore import FeatureStoreConfig
    from serving.features import OnlineFeatures, StoreGuardConfig

    wd, port = on_redis
    proxy = FaultyProxy(("127.0.0.1", port))
    cfg = FeatureStoreConfig(online="redis", redis=proxy.address)
    guard = StoreGuardConfig(read_timeout_s=0.05, connect_timeout_s=0.1, breaker_failures=3)
    features = OnlineFeatures(wd, cfg, guard)
    project = feature_project(read_manifest(current_dir(wd), verify_files=False))
    read = features.reader(project)
    user = users["warm"]
    try:
        through_pool = read(user, time.monotonic() + 0.1)  # nearer than 150 ms: the pool
        submit = features._pool.submit
        features._pool.submit = None  # type: ignore[method-assign]  # any hand-off fails
        # the same answer on both paths (float lists come back as arrays: compared as lists)
        assert _plain(read(user, None)) == _plain(read(user, time.monotonic() + 5))
        assert _plain(read(user, None)) == _plain(through_pool)
        assert any(v[0] is not None for v in through_pool.values())  # a known user
        proxy.set_mode("hang")  # closes the open connections, as a restart would
        messages = []
        for _ in range(guard.breaker_failures):
            t = time.monotonic()
            with pytest.raises(StoreUnavailable) as failed:
                read(user, None)
            assert time.monotonic() - t < 0.05 + 0.1 + 0.15  # read, reconnect, slack
            messages.append(str(failed.value))
        # the closed connection fails at once; the next ones reconnect and get no answer
        assert messages[-1] == "no answer within 50 ms", messages
        assert features.breaker.is_open
        features._pool.submit = submit  # type: ignore[method-assign]
    finally:
        features.close()
        proxy.close()


def _plain(row: dict) -> dict:
    """A feature row with its arrays as lists, comparable with ``==``."""
    import numpy as np

    return {k: [x.tolist() if isinstance(x, np.ndarray) else x for x in v] for k, v in row.items()}

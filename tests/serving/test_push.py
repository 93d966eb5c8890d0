"""The real-time push on Redis (serving/features.py, redis_write): every view of a user
written in two round trips, byte for byte what Feast's own ``online_write_batch`` stores,
with its rule that an older row never replaces a newer one."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_push_writes_what_feast_writes_and_keeps_the_newer_row(
    tiny_pipeline, users, tmp_path, redis_starter
):
    import redis as redis_py
    from feast.infra.online_stores.helpers import _redis_key

    from audiorec.artifact import current_dir, feature_project, read_manifest
    from audiorec.featurestore import (
        ONLINE_SERVICE,
        WINDOWS_PUSH,
        FeatureStoreConfig,
        OnlineFeatureReader,
        open_store,
    )
    from serving.features import OnlinePusher
    from training.features.store import apply_repo, materialize

    port = _free_port()
    redis_starter(port, tmp_path)
    wd = tmp_path / "wd"
    shutil.copytree(tiny_pipeline[0], wd)
    cfg = FeatureStoreConfig(online="redis", redis=f"127.0.0.1:{port}")
    materialize(
        apply_repo(wd, cfg),
        datetime.now(timezone.utc),
        start=datetime(1970, 1, 2, tzinfo=timezone.utc),
    )
    store = open_store(wd, cfg, feature_project(read_manifest(current_dir(wd), verify_files=False)))
    reader = OnlineFeatureReader(store, ONLINE_SERVICE)
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

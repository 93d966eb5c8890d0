"""RecordEvents' read-modify-write on Redis in two round trips (serving/redis_record.py)
and where it runs (serving/record_path.py), against a real redis-server:

- the same change stores the same bytes as the general path (lock, read, push, release,
  one step at a time), is given the same rows and embeddings, and leaves no lock behind;
- a lock held elsewhere: nothing read into the change, nothing written, the locks it took
  released; the record path then waits on a store thread and records;
- a change that fails: nothing written, every lock released;
- the record path runs on the calling thread (no hand-off), and a hung Redis fails it
  as a short StoreUnavailable within the client's timeouts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

pytestmark = pytest.mark.slow
WHEN = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def online(on_redis):
    """(OnlineFeatures, UserLocks, project, raw redis client) over the module's Redis."""
    import redis as redis_py

    from audiorec.artifact import current_dir, feature_project, read_manifest
    from audiorec.featurestore import FeatureStoreConfig
    from serving.features import OnlineFeatures
    from serving.user_lock import UserLocks

    wd, port = on_redis
    cfg = FeatureStoreConfig(online="redis", redis=f"127.0.0.1:{port}")
    project = feature_project(read_manifest(current_dir(wd), verify_files=False))
    features = OnlineFeatures(wd, cfg)
    features.reader(project)  # opens the shared reader the record path uses
    client = redis_py.Redis(port=port)
    yield features, UserLocks(wd, cfg, timeout_s=2.0, ttl_s=5.0), project, client
    features.close()
    client.close()


def _change(users: list[str], seen: list, when: datetime = WHEN, fail: bool = False):
    """A change that keeps what it was given and pushes each user's row back with every
    count moved by one, stamped ``when`` (later than what an earlier test wrote, or it
    would not be newer): the same bytes whichever path calls it."""
    from audiorec.featurestore import RECENT_PUSH, WINDOWS_PUSH

    def change(current: dict, embeddings: dict) -> list:
        seen.append((current, embeddings))
        if fail:
            raise RuntimeError("the change failed")
        rows = [
            {
                **{k: (v[i] + 1 if type(v[i]) is int else v[i]) for k, v in current.items()},
                "user_id": user,
                "event_timestamp": when,
            }
            for i, user in enumerate(users)
        ]
        return [(WINDOWS_PUSH, rows), (RECENT_PUSH, rows)]

    return change


def _fused(features, locks, project: str):
    """The test thread's two-round-trip recorder."""
    from audiorec.featurestore import RECENT_PUSH, WINDOWS_PUSH
    from serving.features import ITEM_EMBEDDING
    from serving.redis_record import redis_record

    pushers = {s: features.pusher(project, s) for s in (WINDOWS_PUSH, RECENT_PUSH)}
    return redis_record(
        features.user_reader(project),
        features.item_reader(project),
        ITEM_EMBEDDING,
        pushers,
        project,
        locks.ttl_ms,
    )


def _hashes(client, features, project: str, users: list[str]) -> list[dict]:
    """The users' whole Redis hashes, raw."""
    reader = features.user_reader(project)
    return [client.hgetall(reader.hmget_args(u)[0]) for u in users]


def _restore(client, features, project: str, users: list[str], hashes: list[dict]) -> None:
    reader = features.user_reader(project)
    for user, fields in zip(users, hashes):
        key = reader.hmget_args(user)[0]
        client.delete(key)
        if fields:  # a user with no row had no hash
            client.hset(key, mapping=fields)


def _items(on_redis, n: int = 3) -> list[str]:
    import pyarrow.parquet as pq

    from audiorec.artifact import current_dir

    return pq.read_table(current_dir(on_redis[0]) / "items.parquet").column("item_id").to_pylist()[
        :n
    ] + ["no-such-item"]


def _locks(client, project: str) -> list[bytes]:
    return client.keys(f"audiorec:lock:{project}:*")


def test_two_round_trips_store_what_the_general_path_stores(online, on_redis, users, monkeypatch):
    import redis as redis_py

    features, locks, project, client = online
    who = [users["warm"], users["cold"], "never-seen-user"]
    items = _items(on_redis)
    before = _hashes(client, features, project, who)
    executes: list[int] = []
    execute = redis_py.client.Pipeline.execute

    def counted(self, *args, **kwargs):
        executes.append(len(self.command_stack))
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis_py.client.Pipeline, "execute", counted)
    fused_seen: list = []
    assert _fused(features, locks, project).transact(who, items, _change(who, fused_seen))
    assert len(executes) == 2, executes  # locks and reads; writes and releases
    fused = _hashes(client, features, project, who)
    assert fused != before and not _locks(client, project)

    _restore(client, features, project, who, before)
    general_seen: list = []
    with locks.hold(project, who):  # the general path, one step at a time
        change = _change(who, general_seen)
        current = features.read_users_now(who, project)
        features.push_now(change(current, features.read_items_now(items, project)), project)
    assert _hashes(client, features, project, who) == fused
    (f_rows, f_vectors), (g_rows, g_vectors) = fused_seen[0], general_seen[0]
    assert f_rows == g_rows
    assert f_vectors.keys() == g_vectors.keys() == set(items)
    assert f_vectors["no-such-item"] is None
    assert any(v is not None for v in f_vectors.values())
    for i in items:
        assert (f_vectors[i] is None and g_vectors[i] is None) or np.array_equal(
            f_vectors[i], g_vectors[i]
        )
    assert not _locks(client, project)


def test_a_lock_held_elsewhere_reads_and_writes_nothing_then_waits(online, users):
    from serving.record_path import RecordPath
    from serving.user_lock import lock_keys

    features, locks, project, client = online
    who = sorted([users["warm"], users["cold"]])
    held = lock_keys(project, [who[1]])[0]
    client.set(held, "someone-else", px=300)
    before = _hashes(client, features, project, who)
    seen: list = []
    assert not _fused(features, locks, project).transact(who, [], _change(who, seen))
    assert not seen and _hashes(client, features, project, who) == before
    assert _locks(client, project) == [held.encode()]  # its own taken lock given back
    assert client.get(held) == b"someone-else"
    later = WHEN + timedelta(days=1)
    path = RecordPath(features, locks)
    path.prepare(project)
    path.transact(who, [], _change(who, seen, later), project)  # waits ~0.3 s
    assert len(seen) == 1 and _hashes(client, features, project, who) != before
    assert not _locks(client, project)


def test_a_failed_change_writes_nothing_and_releases_every_lock(online, users):
    features, locks, project, client = online
    who = [users["warm"]]
    before = _hashes(client, features, project, who)
    seen: list = []
    with pytest.raises(RuntimeError, match="the change failed"):
        _fused(features, locks, project).transact(who, [], _change(who, seen, fail=True))
    assert len(seen) == 1
    assert _hashes(client, features, project, who) == before
    assert not _locks(client, project)


def test_the_record_path_runs_here_and_a_hung_redis_fails_it_within_the_timeouts(on_redis, users):
    import time

    from tcp_proxy import FaultyProxy

    from audiorec.artifact import current_dir, feature_project, read_manifest
    from audiorec.errors import StoreUnavailable
    from audiorec.featurestore import FeatureStoreConfig
    from serving.features import OnlineFeatures, StoreGuardConfig
    from serving.record_path import RecordPath
    from serving.user_lock import UserLocks

    wd, port = on_redis
    proxy = FaultyProxy(("127.0.0.1", port))
    cfg = FeatureStoreConfig(online="redis", redis=proxy.address)
    guard = StoreGuardConfig(read_timeout_s=0.05, connect_timeout_s=0.1, write_timeout_s=0.5)
    features = OnlineFeatures(wd, cfg, guard)
    project = feature_project(read_manifest(current_dir(wd), verify_files=False))
    features.reader(project)
    path = RecordPath(features, UserLocks(wd, cfg, timeout_s=0.5))
    path.prepare(project)
    who = [users["warm"]]
    seen: list = []
    try:
        submit = features._pool.submit
        features._pool.submit = None  # type: ignore[method-assign]  # any hand-off fails
        path.transact(who, [], _change(who, seen, WHEN + timedelta(days=2)), project)
        assert len(seen) == 1
        proxy.set_mode("hang")
        for _ in range(3):
            t = time.monotonic()
            with pytest.raises(StoreUnavailable) as failed:
                path.transact(who, [], _change(who, seen, WHEN + timedelta(days=3)), project)
            assert time.monotonic() - t < 2 * (0.05 + 0.1) + 0.15  # two round trips, slack
            assert str(failed.value).startswith("recording events")
            assert proxy.address.split(":")[0] not in str(failed.value)
        features._pool.submit = submit  # type: ignore[method-assign]
    finally:
        features.close()
        proxy.close()

"""Online stores: SQLite (default) and a real Redis return the same features; the feast
CLI works on the repository as a Feast user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from test_features import assert_same_features, make_embeddings

from audiorec.featurestore import (
    ITEM_SERVICE,
    ONLINE_SERVICE,
    REPO_DIR,
    USER_SERVICE,
    FeatureStoreConfig,
    OnlineFeatureReader,
    online_features,
    open_store,
)
from training.features.jobs import run_feature_jobs
from training.features.refresh import refresh_features
from training.synth import WorldConfig, generate_world

USERS = ["u0000000", "u0000005", "u0000042", "u0000999", "nobody"]


def test_sqlite_and_redis_return_the_same_online_features(tiny_world, tmp_path, redis_server):
    hgnn, text = make_embeddings(tiny_world, tmp_path / "emb")
    sqlite_wd, redis_wd = tmp_path / "sqlite", tmp_path / "redis"
    refresh_features(tiny_world, sqlite_wd, hgnn, text)
    cfg = FeatureStoreConfig(online="redis", redis=redis_server)
    refresh_features(tiny_world, redis_wd, hgnn, text, store=cfg)
    a = online_features(open_store(sqlite_wd), USERS)
    b = online_features(open_store(redis_wd, cfg), USERS)
    assert_same_features(a, b)
    assert a["country"][0] is not None and a["country"][-1] is None
    items = ["ab000001", "pc000003"]
    assert_same_features(
        online_features(open_store(sqlite_wd), items, ITEM_SERVICE),
        online_features(open_store(redis_wd, cfg), items, ITEM_SERVICE),
    )
    # the lean read (provider per view) answers what get_online_features answers, on
    # both stores, for known users, an unknown one, and items
    many = [*USERS, *(f"u{i:07d}" for i in range(0, 400, 7))]
    for store in (open_store(sqlite_wd), open_store(redis_wd, cfg)):
        for service, ids in ((USER_SERVICE, many), (ONLINE_SERVICE, many), (ITEM_SERVICE, items)):
            reader = OnlineFeatureReader(store, service)
            lean, sdk = reader.read(ids), reader.read_sdk(ids)
            assert sorted(lean) == sorted(sdk), service
            for name in lean:
                assert [repr(v) for v in lean[name]] == [repr(v) for v in sdk[name]], name
            # the request path's one-entity read: the same values (float lists as arrays)
            for i, entity in enumerate(ids):
                row = reader.read_row(entity)
                assert sorted(row) == sorted(lean), service
                assert {n: [_plain(v) for v in row[n]] for n in row} == {
                    n: [lean[n][i]] for n in lean
                }, entity


def test_redis_cluster_holds_the_same_online_features(tiny_world, tmp_path, redis_cluster):
    hgnn, text = make_embeddings(tiny_world, tmp_path / "emb")
    sqlite_wd, cluster_wd = tmp_path / "sqlite", tmp_path / "cluster"
    refresh_features(tiny_world, sqlite_wd, hgnn, text)
    cfg = FeatureStoreConfig(online="redis", redis=redis_cluster, redis_cluster=True)
    assert cfg.label.startswith("redis-cluster ")
    refresh_features(tiny_world, cluster_wd, hgnn, text, store=cfg)
    many = [*USERS, *(f"u{i:07d}" for i in range(0, 400, 7))]
    want = online_features(open_store(sqlite_wd), many)
    assert_same_features(want, online_features(open_store(cluster_wd, cfg), many))
    # the rows are spread over the nodes' slots, not on one node
    import redis

    host, port = redis_cluster.split(":")
    client = redis.RedisCluster(host=host, port=int(port))
    sizes = [n.redis_connection.dbsize() for n in client.get_primaries()]
    assert len(sizes) == 3 and all(size > 0 for size in sizes), sizes
    # serving's lean read (one pipelined round trip, split by slot) agrees with the SDK's
    reader = OnlineFeatureReader(open_store(cluster_wd, cfg), ONLINE_SERVICE)
    lean, sdk = reader.read(many), reader.read_sdk(many)
    for name in sdk:
        assert [repr(v) for v in lean[name]] == [repr(v) for v in sdk[name]], name
    for i, user in enumerate(many[:8]):  # the request path's read, through the cluster client
        row = reader.read_row(user)
        assert {n: [_plain(v) for v in row[n]] for n in row} == {n: [lean[n][i]] for n in lean}


def test_feast_cli_apply_and_materialize_incremental(tmp_path):
    """`cd feature_repo && feast apply && feast materialize-incremental <now>` on a world
    that ends today (materialize-incremental's first run starts at now - ttl)."""
    today = datetime.now(timezone.utc).date()
    world = tmp_path / "world"
    generate_world(WorldConfig.for_scale("tiny", end_date=today), 3, world, progress=False)
    wd = tmp_path / "cli"
    hgnn, text = make_embeddings(world, tmp_path / "emb")
    run_feature_jobs(world, wd, hgnn, text)
    feast = str(Path(sys.executable).parent / "feast")
    env = {**os.environ, "AUDIOREC_WORKDIR": str(wd)}
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    for args in (["apply"], ["materialize-incremental", now]):
        res = subprocess.run(
            [feast, *args], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, res.stdout + res.stderr
    # the feast CLI loads the yaml's project; the pipeline loads each generation of the
    # feature tables into a project of its own (training/features/store.py)
    on = online_features(open_store(wd, project="audiorec"), ["u0000005"])
    missing = [k for k, v in on.items() if v[0] is None]
    assert not missing, f"user-tower features not materialized: {missing}"


def test_feast_cli_without_workdir_says_what_to_set(tmp_path):
    feast = str(Path(sys.executable).parent / "feast")
    env = {k: v for k, v in os.environ.items() if k != "AUDIOREC_WORKDIR"}
    res = subprocess.run(
        [feast, "plan"], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode != 0
    assert "AUDIOREC_WORKDIR is not set" in res.stdout + res.stderr


def _plain(value):
    """A read_row value as read() gives it (float32 arrays as lists of floats)."""
    import numpy as np

    return value.tolist() if isinstance(value, np.ndarray) else value

"""Shared fixtures: tiny worlds from the project's own generator, built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import feast  # noqa: F401 - imported first: its import-time warnings.simplefilter("once",

# DeprecationWarning) would otherwise override pytest's filterwarnings inside the tests
import pytest
from index_helpers import clustered_items  # noqa: F401 - the item-index tests' catalogue
from inspector_helpers import grpc_server, ui  # noqa: F401 - the inspector tests' fixtures

from training.synth import WorldConfig, generate_world


@pytest.fixture(scope="session")
def tiny_config() -> WorldConfig:
    return WorldConfig.for_scale("tiny")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, tiny_config) -> Path:
    """A tiny world (seed 0); tests must not modify it (copy it first)."""
    out = tmp_path_factory.mktemp("worlds") / "tiny0"
    generate_world(tiny_config, 0, out, progress=False)
    return out


@pytest.fixture(scope="session")
def users(tiny_world) -> dict[str, str]:
    """A user with audiobook history, a cold-start one, and one unknown to the store."""
    from training.synth.stats import pick_users

    warm, cold = pick_users(tiny_world)
    return {"warm": warm, "cold": cold, "unknown": "u_nobody"}


# Small enough for CI (a minute), large enough to learn.
TINY_PIPELINE = {
    "hgnn": {
        "hidden_dim": 32,
        "out_dim": 16,
        "max_epochs": 4,
        "patience": 4,
        "max_steps_per_epoch": 40,
    },
    "two_tower": {"layers": (64, 32), "max_epochs": 6, "patience": 6, "batch_size": 64},
    # inverted lists even on the tiny catalogues (the default serves them by exact scan),
    # so that every serving test runs the path a large catalogue takes
    "index": {"exact_below": 64},
}


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_world, tmp_path_factory):
    """The daily pipeline run once on the tiny world: (workdir, report, config). Tests
    must not change its ``current`` version (copy the work directory first)."""
    from audiorec.config import validated
    from training.pipeline import PipelineConfig, run_pipeline

    cfg = validated(PipelineConfig, TINY_PIPELINE)
    wd = tmp_path_factory.mktemp("pipeline")
    report = run_pipeline(tiny_world, wd, cfg, progress=False)
    return wd, report, cfg


@pytest.fixture
def world_copy(tiny_world, tmp_path) -> Path:
    """A private copy of the four contract files, free to break."""
    dst = tmp_path / "world"
    dst.mkdir()
    for name in ("users", "music", "items", "events"):
        shutil.copy(tiny_world / f"{name}.parquet", dst / f"{name}.parquet")
    return dst


@pytest.fixture
def free_port() -> int:
    """A TCP port nothing listens on (bound then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_exe() -> str:
    """redis-server's path. Skipped only outside CI when it is not installed; CI (.ci/run)
    installs it, and there a missing server is a failure, never a skip."""
    import os

    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (CI must install it: see .ci/run)")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    return exe


def start_redis(port: int, workdir: Path, persist: bool = False, extra: tuple[str, ...] = ()):
    """A real redis-server on 127.0.0.1:``port``, once it answers PING. ``persist``:
    it saves its data set on SIGTERM and loads it again when restarted in ``workdir``."""
    import subprocess
    import time

    import redis

    save = ["--save", "3600 1"] if persist else ["--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [
            _redis_exe(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            *save,
            "--dir",
            str(workdir),
            *extra,
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real three-node Redis Cluster on 127.0.0.1 (no replicas): the address of one node."""
    import socket
    import time

    import redis

    # six free ports: three clients, three cluster buses (the default bus port, port +
    # 10000, is out of range for an ephemeral port above 55535)
    sockets = [socket.socket() for _ in range(6)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports, buses = (
        [s.getsockname()[1] for s in sockets[:3]],
        [s.getsockname()[1] for s in sockets[3:]],
    )
    for sock in sockets:
        sock.close()
    procs = []
    try:
        for port, bus in zip(ports, buses):
            d = tmp_path_factory.mktemp(f"cluster{port}")
            conf = ("--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                    "--cluster-port", str(bus))  # fmt: skip
            procs.append(start_redis(port, d, extra=conf))
        nodes = [redis.Redis(host="127.0.0.1", port=p) for p in ports]
        for node in nodes[1:]:
            node.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0], buses[0])
        for node, (lo, hi) in zip(nodes, ((0, 5460), (5461, 10922), (10923, 16383))):
            node.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        deadline = time.monotonic() + 20
        while not all(b"cluster_state:ok" in n.execute_command("CLUSTER", "INFO") for n in nodes):
            if time.monotonic() > deadline:
                pytest.fail("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield f"127.0.0.1:{ports[0]}"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def redis_starter():
    """``start_redis`` for tests that stop and restart their own server."""
    return start_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on 127.0.0.1 and a free port, stopped afterwards."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_redis(port, tmp_path_factory.mktemp("redis"))
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def on_redis(tiny_pipeline, tmp_path_factory):
    """(work directory copy, its features materialized into a real redis-server, port),
    one per test module."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tmp_path_factory.mktemp("redis-path")
    proc = start_redis(port, tmp)
    yield pipeline_on_redis(tiny_pipeline, tmp, port), port
    proc.terminate()
    proc.wait(timeout=10)


# The tiny pipeline's settings where the `large` preset sets nothing of its own, plus one
# value the caller sets against the preset (hgnn.max_epochs): the preset tests' config.
TINY_LARGE = {
    "hgnn": {"hidden_dim": 32, "out_dim": 16, "max_epochs": 1, "max_steps_per_epoch": 20},
    "two_tower": {"layers": (64, 32), "batch_size": 64},
}


def pipeline_on_redis(tiny_pipeline, directory: Path, port: int) -> Path:
    """A copy of the tiny pipeline's work directory in ``directory``, its features
    materialized into the redis-server on ``port``; returns the copy."""
    import shutil
    from datetime import datetime, timezone

    from audiorec.featurestore import FeatureStoreConfig
    from training.features.store import apply_repo, materialize

    wd = directory / "wd"
    shutil.copytree(tiny_pipeline[0], wd)
    cfg = FeatureStoreConfig(online="redis", redis=f"127.0.0.1:{port}")
    start = datetime(1970, 1, 2, tzinfo=timezone.utc)
    materialize(apply_repo(wd, cfg), datetime.now(timezone.utc), start=start)
    return wd


def assert_large_reached(workdir: Path) -> dict:
    """The `large` preset's values (and the caller's hgnn.max_epochs over it) as each
    step recorded what it ran with, in its own output under ``workdir``: the text vectors'
    version, the HGNN's manifest, the feature jobs' state, the served version's manifest.
    Returns the served manifest."""
    from datetime import date

    from audiorec.artifact import current_version, read_manifest
    from audiorec.manifest import read_manifest as read_any
    from audiorec.publish import read_json
    from training.data.embeddings import read_item_embeddings
    from training.hgnn.run import HGNNManifest

    assert read_item_embeddings(workdir / "text" / "embeddings.parquet").version.endswith(":bf16")
    hgnn = read_any(workdir / "hgnn", HGNNManifest, verify_files=False).hgnn_config
    assert hgnn["time_budget_s"] == 480.0 and hgnn["patience"] == 2  # the preset's
    assert hgnn["max_epochs"] == 1 and hgnn["max_steps_per_epoch"] == 20  # the caller's
    state = read_json(workdir / "features" / "_state.json", "feature-job state")
    span = date.fromisoformat(state["through"]) - date.fromisoformat(state["first"])
    assert span.days == 13, state  # history_days 14: the last 14 snapshot dates
    version = current_version(workdir)
    assert version is not None
    manifest = read_manifest(workdir / "artifacts" / version, verify_files=False)
    model = manifest.model
    assert (model["train_days"], model["validation_days"], model["max_epochs"]) == (14, 3, 4)
    assert model["warm_start"] is True and (workdir / "towers" / "last").is_dir()
    return manifest

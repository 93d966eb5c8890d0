"""No lost update across processes: two real `audiorec serve` processes, one real
redis-server, the same listener's events recorded through both at once.

Each RecordEvents reads the listener's online row, adds its event and pushes the row back;
without a lock held on the store's side, two processes reading the same row at the same
instant would each push their own event onto it, and the later push would drop the other.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import grpc
import pyarrow.parquet as pq
import pytest

from audiorec.v1 import recommender_pb2 as pb
from audiorec.v1 import recommender_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow
PER_SERVER = 30


def _serve(workdir, port: int, redis: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--workdir", str(workdir), "--port",
         str(port), "--online", "redis", "--redis", redis, "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()
    if f":{port}" not in line:
        proc.kill()
        pytest.fail(f"audiorec serve did not start: {line} {proc.stderr.read()[-2000:]}")
    return proc


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_recording_one_user_lose_no_event(
    tiny_pipeline, users, tmp_path, redis_starter
):
    from conftest import pipeline_on_redis

    from audiorec.artifact import current_dir, feature_project, read_manifest
    from audiorec.featurestore import (
        ONLINE_SERVICE,
        FeatureStoreConfig,
        OnlineFeatureReader,
        open_store,
    )

    redis_port = _free_port()
    redis = redis_starter(redis_port, tmp_path)
    wd = pipeline_on_redis(tiny_pipeline, tmp_path, redis_port)
    store = FeatureStoreConfig(online="redis", redis=f"127.0.0.1:{redis_port}")
    manifest = read_manifest(current_dir(wd), verify_files=False)
    project = feature_project(manifest)
    user = users["warm"]

    def row() -> dict:
        reader = OnlineFeatureReader(open_store(wd, store, project), ONLINE_SERVICE)
        return {k: v[0] for k, v in reader.read([user]).items()}

    before = row()
    items = pq.read_table(current_dir(wd) / "items.parquet").to_pandas()
    podcasts = items[items.item_type == "podcast"].item_id.tolist()[: 2 * PER_SERVER]
    ports = [_free_port(), _free_port()]
    servers = [_serve(wd, p, store.redis) for p in ports]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def send(port: int, batch: list[str]) -> None:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = pb_grpc.RecommenderStub(ch)
                start.wait(timeout=30)
                for item in batch:
                    event = pb.Event(user_id=user, item_id=item, event_type="stream")
                    answer = stub.RecordEvents(pb.RecordEventsRequest(events=[event]), timeout=10)
                    assert answer.recorded == 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        threads = [
            threading.Thread(target=send, args=(p, podcasts[i::2])) for i, p in enumerate(ports)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors[0]
        after = row()
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=10)
        redis.terminate()
        redis.wait(timeout=10)
    # every one of the streams counted, and each one kept in the recent state
    assert after["podcast_streams_90d"] - before["podcast_streams_90d"] == 2 * PER_SERVER
    recent = {entry.split("|")[2] for entry in after["recent_events"] or []}
    assert set(podcasts) <= recent

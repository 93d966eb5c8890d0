"""``serve --processes N``: children on one port, metrics summed, a dead child replaced."""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import grpc
import pytest

from audiorec.v1 import recommender_pb2 as pb
from audiorec.v1 import recommender_pb2_grpc as pb_grpc


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _calls(port: int, users: dict[str, str], n: int) -> int:
    """``n`` Recommend calls over 4 channels (the kernel balances connections)."""
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(4)]
    try:
        stubs = [pb_grpc.RecommenderStub(c) for c in channels]
        for i in range(n):
            r = stubs[i % 4].Recommend(
                pb.RecommendRequest(user_id=users["warm"], k=5, type="audiobook"), timeout=20
            )
            assert r.strategy == pb.PERSONALIZED and len(r.items) == 5, r
    finally:
        for c in channels:
            c.close()
    return n


def _metric(port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
def test_two_processes_share_a_port_sum_metrics_and_survive_a_crash(tiny_pipeline, users):
    from serving.processes import ProcessGroup
    from serving.server import ServerConfig

    metrics_port = _free_port()
    cfg = ServerConfig(port=0, metrics_port=metrics_port)
    group = ProcessGroup(tiny_pipeline[0], cfg, 2, "WARNING").start()
    try:
        assert len(set(group.pids())) == 2 and set(group.versions) == {0, 1}
        assert set(group.versions.values()) == {tiny_pipeline[1].version}
        _calls(group.port, users, 20)
        count = _metric(metrics_port, "audiorec_request_seconds_count", rpc="Recommend", code="OK")
        assert count >= 20  # both children's counts (plus their warm-up-free totals)
        assert _metric(metrics_port, "audiorec_processes_ready") == 2
        # a child dies: the parent replaces it and the port keeps answering
        victim = group.pids()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while (victim in group.pids() or len(group.versions) < 2) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert victim not in group.pids() and len(group.versions) == 2
        _calls(group.port, users, 8)
    finally:
        group.stop()

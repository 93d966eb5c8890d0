"""The inspector's fixtures: a gRPC server with two arms on the tiny pipeline's artifact,
and an inspector in front of it."""

from __future__ import annotations

import pytest
from inspector_helpers import start_inspector


@pytest.fixture(scope="module")
def grpc_server(tiny_pipeline):
    from serving.arms import Experiment, parse_arms
    from serving.server import ServerConfig, create_server

    exp = Experiment(arms=parse_arms(["control=current:0.5", "treatment=current:0.5"]))
    running = create_server(tiny_pipeline[0], ServerConfig(port=0, experiment=exp))
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def ui(tiny_pipeline, grpc_server):
    running, features = start_inspector(tiny_pipeline[0], f"127.0.0.1:{grpc_server.port}")
    yield running
    running.stop()
    features.close()

"""The inspector's fixtures, registered by tests/conftest.py (a conftest.py in
tests/inspector/ would shadow tests/conftest.py for the modules that import its
constants): a gRPC server with two arms on the tiny pipeline's artifact, an inspector in
front of it, and a helper that starts one."""

from __future__ import annotations

import pytest


def start_inspector(workdir, target, **cfg):
    """An inspector on a free port for the server at ``target``: (running, features);
    stop both."""
    from inspector.pages import Inspector
    from inspector.server import InspectorConfig, create_server
    from inspector.workdir import Workdir
    from serving.client import Connection
    from serving.features import OnlineFeatures

    features = OnlineFeatures(workdir)
    inspector = Inspector(
        Connection(target), Workdir(workdir), lambda u, p: features(u, None, p), timeout_s=5
    )
    return create_server(inspector, InspectorConfig(port=0, **cfg)), features


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

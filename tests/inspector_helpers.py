"""Starting an inspector in a test (tests/inspector/)."""

from __future__ import annotations


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

"""The README's main job, end to end at tiny scale: every stage runs for real and the
recommendations it prints come over gRPC from the real server."""

from __future__ import annotations

import re

import pytest

from app.cli import main
from audiorec.artifact import current_version

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_at_tiny_scale(tmp_path, capsys):
    rc = main(["demo", "--scale", "tiny", "--workdir", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    assert rc == 0, out
    for stage in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "[1/6]", "[6/6]"):
        assert stage in out
    assert out.count(" holds") == 7
    assert "warm (audiobook history)" in out and "cold start (podcasts only)" in out
    assert "0 audiobook items (|v|=0.00" in out  # the cold-start user: zeros, not nulls
    assert ", PERSONALIZED" in out
    assert "COLD_START (no audiobook interactions" in out
    assert "FALLBACK (user unknown to the feature store" in out
    assert "reflection lists audiorec.v1.Recommender" in out
    # five items for each user, and for the warm one again after a stream in real time
    assert len(re.findall(r"^\s+5  \S", out, flags=re.M)) == 4
    assert "RecordEvents recorded 1 in" in out
    assert re.search(r"because you (streamed|followed|previewed|started buying) ", out)
    assert "the next Recommend is PERSONALIZED" in out
    # a new title published through the API and similar to its source at once
    assert re.search(r"RecordItems published .* \(created 1;", out)
    assert re.search(
        r"RecommendSimilar\(\S+, .*, no history either\): the new title at rank \d+", out
    )
    assert "server stopped (graceful shutdown)" in out
    # the A/A experiment: both arms on one version, the readout printed and written
    assert "an A/A experiment on simulated traffic" in out
    assert "users per arm match the shares" in out and "(the control)" in out
    assert list((tmp_path / "demo" / "experiments").glob("demo-aa-*/readout.png"))
    assert "Offline evaluation report:" in out
    assert (tmp_path / "demo" / "report" / "report.md").is_file()
    wd = tmp_path / "demo"
    assert current_version(wd) is not None
    for path in (
        "world/events.parquet",
        "text/embeddings.parquet",
        "hgnn/manifest.json",
        "hgnn/training_curve.png",
        "features/_state.json",
        "feast/online.db",
        f"artifacts/{current_version(wd)}/user_tower/saved_model.pb",
    ):
        assert (wd / path).exists(), path

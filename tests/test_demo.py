"""The README's main job, end to end at tiny scale: every stage runs for real and the
online features it prints come back through Feast."""

from __future__ import annotations

from audiorec.cli import main


def test_demo_runs_end_to_end_at_tiny_scale(tmp_path, capsys):
    rc = main(["demo", "--scale", "tiny", "--workdir", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    assert rc == 0, out
    for stage in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert stage in out
    assert out.count(" holds") == 7
    assert "warm (audiobook history)" in out and "cold start (podcasts only)" in out
    assert "0 audiobooks (|v|=0.00)" in out  # the cold-start user: zeros, not nulls
    assert "no features in the online store" in out  # the unknown user
    for path in ("world/events.parquet", "text/embeddings.parquet", "hgnn/manifest.json",
                 "hgnn/training_curve.png", "features/_state.json", "feast/online.db"):
        assert (tmp_path / "demo" / path).exists(), path

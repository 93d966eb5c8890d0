"""Atomic directory publication: all of the new artifact, or the old one untouched."""

from __future__ import annotations

import pytest

from audiorec.publish import staged_directory


def test_success_replaces_and_failure_keeps_the_old(tmp_path):
    out = tmp_path / "artifact"
    with staged_directory(out) as d:
        (d / "v").write_text("1")
    assert (out / "v").read_text() == "1"
    with pytest.raises(RuntimeError):
        with staged_directory(out) as d:
            (d / "v").write_text("2")
            raise RuntimeError("step failed halfway")
    assert (out / "v").read_text() == "1"
    with staged_directory(out) as d:
        (d / "w").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["w"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # no staging left behind


def test_link_swap_is_one_rename_and_migrates_a_plain_directory(tmp_path):
    out = tmp_path / "features"
    out.mkdir()
    (out / "v").write_text("legacy")  # a directory from before links were used
    with staged_directory(out, link=True) as d:
        (d / "v").write_text("1")
    assert out.is_symlink() and (out / "v").read_text() == "1"
    first = out.resolve()
    with pytest.raises(RuntimeError):
        with staged_directory(out, link=True) as d:
            raise RuntimeError("halfway")
    assert out.resolve() == first
    with staged_directory(out, link=True) as d:
        (d / "v").write_text("2")
    assert (out / "v").read_text() == "2" and not first.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["features", out.resolve().name])


def test_dead_staging_is_removed_live_is_kept(tmp_path):
    import os

    from audiorec.publish import remove_dead_staging

    dead = tmp_path / ".features.gen-123-999999999"
    live = tmp_path / f".features.tmp-{os.getpid()}"
    dead.mkdir()
    live.mkdir()
    (tmp_path / ".current.tmp-999999998").write_text("v1")
    assert sorted(remove_dead_staging(tmp_path)) == sorted([dead.name, ".current.tmp-999999998"])
    assert live.exists()


@pytest.mark.parametrize("content", ["", "{not json", "\x00\x00\x00"])
def test_corrupt_state_is_a_warning_and_means_redo(tmp_path, content, caplog):
    import logging

    from audiorec.publish import read_json, write_json

    p = tmp_path / "_state.json"
    with caplog.at_level(logging.WARNING, logger="audiorec"):
        assert read_json(p, "state") is None  # absent: silently None
        assert not caplog.records
        p.write_text(content)
        assert read_json(p, "feature-job state") is None
    out = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "feature-job state" in out and "corrupt" in out and "redoing" in out
    write_json(p, {"through": "2026-01-01"})
    assert read_json(p, "state") == {"through": "2026-01-01"}
    assert [x.name for x in tmp_path.iterdir()] == ["_state.json"]  # no temporary left


def test_garbled_current_pointer_serves_the_newest_loadable(tmp_path, caplog):
    """`current` emptied by a full disk: the holder serves the newest version that loads."""
    import json
    import logging

    from audiorec.artifact import artifacts_root, current_version
    from serving.reload import ModelHolder

    root = artifacts_root(tmp_path)
    for i, name in enumerate(("v1", "v2", "v3")):
        (root / name).mkdir(parents=True)
        (root / name / "manifest.json").write_text(json.dumps({"created_at": f"2026-01-0{i + 1}"}))
    (root / "current").write_text("")
    assert current_version(tmp_path) is None

    class Fake:
        def __init__(self, d):
            if d.name == "v3":
                raise ValueError("damaged")
            self.version = d.name

    with caplog.at_level(logging.ERROR, logger="audiorec"):
        holder = ModelHolder(tmp_path, Fake)
    assert holder.current.version == "v2"
    assert any(
        "does not load" in r.getMessage() or "no valid" in r.getMessage() for r in caplog.records
    )

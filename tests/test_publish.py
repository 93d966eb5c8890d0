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

"""Checksums computed at the lowest CPU priority (audiorec/manifest.py, ``niced``): the
same digests and the same refusals as in-process, and in-process when the helper cannot
run."""

from __future__ import annotations

import os

import pytest

from audiorec import manifest as base
from audiorec.errors import ContractError


class _Thing(base.ManifestBase):
    KIND = "test.thing"
    WHAT = "test thing"
    name: str = "x"


@pytest.fixture
def thing(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(os.urandom(3 << 20))  # several read blocks
    (tmp_path / "sub" / "b.txt").write_text("hello")
    (tmp_path / "empty").write_bytes(b"")
    base.write_manifest(tmp_path, _Thing())
    return tmp_path


def test_niced_digests_equal_the_in_process_ones(thing):
    rels = ["a.bin", "sub/b.txt", "empty"]
    assert base.niced_digests(thing, rels) == {r: base.sha256(thing / r) for r in rels}
    assert base.read_manifest(thing, _Thing, niced=True).files == base.checksums(thing)


@pytest.mark.parametrize("niced", [False, True])
def test_a_changed_or_missing_file_is_refused_either_way(thing, niced):
    data = (thing / "a.bin").read_bytes()
    (thing / "a.bin").write_bytes(data[:-1])
    with pytest.raises(ContractError, match="a.bin does not match its checksum"):
        base.read_manifest(thing, _Thing, niced=niced)
    (thing / "a.bin").unlink()
    with pytest.raises(ContractError, match="a.bin listed in the manifest is missing"):
        base.read_manifest(thing, _Thing, niced=niced)


def test_without_the_helper_the_digests_are_computed_here(thing, monkeypatch):
    monkeypatch.setattr(base.sys, "executable", str(thing / "no-such-python"))
    assert base.niced_digests(thing, ["a.bin"]) == {"a.bin": base.sha256(thing / "a.bin")}
    (thing / "sub" / "b.txt").write_text("changed")
    with pytest.raises(ContractError, match="b.txt does not match its checksum"):
        base.read_manifest(thing, _Thing, niced=True)

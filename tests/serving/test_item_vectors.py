"""The item vectors file: published with each version, memory-mapped by the server, the
same vectors as items.parquet's column (which versions without the file are served from)."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from audiorec import manifest as base
from audiorec.artifact import VECTORS_FILE, current_dir, read_manifest
from audiorec.errors import ContractError
from serving.artifact import Artifact


def _column(directory) -> np.ndarray:
    column = pq.read_table(directory / "items.parquet", columns=["vector"]).column("vector")
    return np.stack(column.to_numpy(zero_copy_only=False)).astype(np.float32)


def _without_file(directory, tmp_path):
    old = tmp_path / directory.name
    shutil.copytree(directory, old)
    (old / VECTORS_FILE).unlink()
    base.write_manifest(old, read_manifest(old, verify_files=False))  # re-sign the files
    return old


def test_the_published_vectors_are_the_column_and_mapped(tiny_pipeline):
    directory = current_dir(tiny_pipeline[0])
    assert VECTORS_FILE in read_manifest(directory).files  # checksummed with the rest
    art = Artifact.load(directory)
    assert isinstance(art.vectors, np.memmap) and not art.vectors.flags.writeable
    assert art.vectors.dtype == np.float32
    np.testing.assert_array_equal(art.vectors, _column(directory))


def test_a_version_without_the_file_serves_the_same_answers(tiny_pipeline, tmp_path):
    directory = current_dir(tiny_pipeline[0])
    new_art, old_art = Artifact.load(directory), Artifact.load(_without_file(directory, tmp_path))
    assert not isinstance(old_art.vectors, np.memmap)
    np.testing.assert_array_equal(new_art.vectors, old_art.vectors)
    assert new_art.titles.tolist() == old_art.titles.tolist()
    assert new_art.languages.tolist() == old_art.languages.tolist()
    assert new_art.item_types.tolist() == old_art.item_types.tolist()


@pytest.mark.parametrize(
    "bad",
    [
        lambda v: v[:-1],  # an item short
        lambda v: v[:, :-1],  # another dim
        lambda v: v.astype(np.float64),  # another dtype
    ],
)
def test_a_vectors_file_that_does_not_fit_is_refused(tiny_pipeline, tmp_path, bad):
    directory = current_dir(tiny_pipeline[0])
    broken = tmp_path / directory.name
    shutil.copytree(directory, broken)
    np.save(broken / VECTORS_FILE, bad(np.load(directory / VECTORS_FILE)))
    base.write_manifest(broken, read_manifest(broken, verify_files=False))
    with pytest.raises(ContractError, match=VECTORS_FILE):
        Artifact.load(broken)

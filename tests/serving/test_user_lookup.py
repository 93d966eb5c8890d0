"""The per-user lookup: published with each version, memory-mapped by the server, and the
same arrays as those computed from the version's tables (versions without one)."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audiorec import manifest as base
from audiorec.artifact import current_dir, read_manifest
from audiorec.errors import ContractError
from audiorec.lookup import (
    DIRECTORY,
    UserLookup,
    build_lookup,
    fixed_width,
    lookup_of_version,
    read_lookup,
)
from serving.artifact import Artifact
from serving.user_index import UserIndex


def _assert_same(a: UserLookup, b: UserLookup) -> None:
    for name in UserLookup.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_the_published_lookup_is_the_one_its_tables_give(tiny_pipeline):
    directory = current_dir(tiny_pipeline[0])
    published = read_lookup(directory)
    assert published is not None
    assert isinstance(published.consumed_rows.base, np.memmap)  # mapped, not read
    _assert_same(published, lookup_of_version(directory))
    assert len(published.users) == read_manifest(directory).data["lookup_users"] > 0
    n_items = pq.read_metadata(directory / "items.parquet").num_rows
    published.check(n_items, directory)  # the loader's checks pass


def test_a_version_without_a_lookup_loads_the_same_answers(tiny_pipeline, tmp_path):
    """Versions published before lookup/ existed: the loader computes it."""
    directory = current_dir(tiny_pipeline[0])
    old = tmp_path / directory.name
    shutil.copytree(directory, old)
    shutil.rmtree(old / DIRECTORY)
    base.write_manifest(old, read_manifest(old, verify_files=False))  # re-sign the files
    new_art, old_art = Artifact.load(directory), Artifact.load(old)
    assert list(new_art.users) == list(old_art.users) and len(new_art.users) > 10
    for user in [*new_art.users, "nobody", ""]:
        assert np.array_equal(new_art.consumed(user), old_art.consumed(user))
        for a, b in zip(new_art.window_actions(user), old_art.window_actions(user)):
            assert np.array_equal(a, b)


def test_user_index_finds_every_id_and_nothing_else():
    rng = np.random.default_rng(0)
    alphabet = list("ab\u00e9z\u4e2d0")
    ids = sorted(
        {"".join(rng.choice(alphabet, rng.integers(1, 9))) for _ in range(3000)} | {""},
        key=str.encode,  # Arrow's order: bytes
    )
    arrow = pa.array(["padding", *ids], pa.string()).slice(1)  # an offset into the buffers
    index = UserIndex(fixed_width(arrow))
    assert [index.get(u) for u in ids] == list(range(len(ids)))
    assert list(index) == ids and len(index) == len(ids)
    for stranger in [
        "b\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9x",
        "a\0",
        "zzzzzzzzzzzzzzzzzzzzzzzz",
    ]:
        assert index.get(stranger) is None and stranger not in index
    assert UserIndex(fixed_width(pa.array([], pa.string()))).get("a") is None


def _lookup(**change) -> UserLookup:
    fields = dict(
        users=np.array([b"a", b"b"], "S1"),
        consumed_offsets=np.array([0, 1, 3]),
        consumed_rows=np.array([0, 1, 2], np.int32),
        window_offsets=np.array([0, 0, 1]),
        window_rows=np.array([2], np.int32),
        window_weak=np.array([False]),
        window_action=np.array([0], np.int8),
        action_names=np.array(["stream"], object),
    )
    return UserLookup(**{**fields, **change})


@pytest.mark.parametrize(
    "change, says",
    [
        ({"consumed_offsets": np.array([0, 1, 2])}, "offsets do not cover"),
        ({"window_offsets": np.array([0, 1])}, "offsets do not cover"),
        ({"consumed_rows": np.array([0, 1, 3], np.int32)}, "outside the 3 items"),
        ({"window_weak": np.array([], bool)}, "differ in length"),
        ({"window_action": np.array([1], np.int8)}, "action codes"),
        ({"users": np.array([b"b", b"a"], "S1")}, "distinct, sorted"),
    ],
)
def test_the_loader_refuses_a_lookup_that_does_not_add_up(change, says):
    _lookup().check(3, "v")
    with pytest.raises(ContractError, match=says):
        _lookup(**change).check(3, "v")


def test_a_table_not_grouped_by_user_is_refused():
    ids = pa.array(["i1", "i2"])
    consumed = pa.table({"user_id": ["u2", "u1", "u2"], "item_id": ["i1", "i1", "i2"]})
    window = pa.table(
        {
            "user_id": pa.array([], pa.string()),
            "item_id": pa.array([], pa.string()),
            "weak": pa.array([], pa.bool_()),
        }
    )
    with pytest.raises(ContractError, match="contiguous"):
        build_lookup(consumed, window, ids)
    grouped = build_lookup(consumed.sort_by("user_id"), window, ids)
    assert grouped.users.tolist() == [b"u1", b"u2"]
    assert grouped.consumed_offsets.tolist() == [0, 1, 3]
    assert grouped.consumed_rows.tolist() == [0, 0, 1]
    assert grouped.window_offsets.tolist() == [0, 0, 0]

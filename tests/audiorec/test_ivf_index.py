"""The inverted-list item index: recall and exact scores, tuning, a faithful round trip,
and the loader's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audiorec.errors import AudiorecError
from audiorec.hnsw_index import ItemIndex, exact_top_k, recall_at_k
from audiorec.item_index import IndexConfig, build_index, load_index, tune
from audiorec.ivf_index import IVFIndex, default_lists


@pytest.fixture(scope="module")
def vectors(clustered_items):
    return clustered_items


def queries(n: int, seed: int = 1) -> np.ndarray:
    """User-like queries: not unit, off the items, with the prior's 1.0."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 32)) * 0.3
    return np.hstack([q, np.ones((n, 1))]).astype(np.float32)


def test_tuned_recall_and_exact_scores(vectors):
    items, q = vectors[:5800], queries(400)
    index = IVFIndex.build(items, range(5800), extra_coordinates=1)
    assert index.lists == default_lists(5800) == 64 and index.pad == 7
    nprobe, recall = tune(index, items, queries(200, seed=2), target=0.995)
    assert recall >= 0.995 and 1 <= nprobe <= 64
    labels, scores = index.search(q, 10)
    assert recall_at_k(labels, exact_top_k(items, q, 10)) >= 0.98  # unseen queries
    # the returned scores are the exact inner products, best first
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, items[labels]), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_small_catalogues_are_an_exact_scan(vectors):
    index = IVFIndex.build(vectors[:500], range(500), extra_coordinates=1)
    assert index.lists == 0 and index.breadths() == [0]
    q = queries(50)
    assert np.array_equal(index.search(q, 10)[0], exact_top_k(vectors[:500], q, 10))
    assert index.search(q, 900)[0].shape == (50, 500)  # never more than it holds


def test_excluded_labels_are_skipped_inside_the_scan(vectors):
    """exclude= never returns those labels and still gives k: on the exact scan, the
    exact answer without them; on the inverted lists, the next best of the probed cells."""
    q = queries(20, seed=3)
    flat = IVFIndex.build(vectors[:500], range(500), extra_coordinates=1)
    ivf = IVFIndex.build(vectors[:5800], range(5800), extra_coordinates=1)
    ivf.set_breadth(64)  # every cell: the inverted lists' answer is the exact one
    for index, n in ((flat, 500), (ivf, 5800)):
        for one in q:
            best = exact_top_k(vectors[:n], one[None], 15)[0]
            skip = best[[0, 2, 3]]
            labels, scores = index.search(one, 10, exclude=skip)
            assert labels.shape == (1, 10) and not np.isin(labels, skip).any()
            assert np.array_equal(labels[0], [b for b in best if b not in skip][:10])
            np.testing.assert_allclose(scores[0], vectors[:n][labels[0]] @ one, atol=1e-5)


def test_round_trip_restores_breadth_ids_and_results(vectors, tmp_path):
    ids = [f"item{i}" for i in range(6000)]
    index = IVFIndex.build(vectors, ids, lists=32, extra_coordinates=1)
    index.set_breadth(12)
    index.save(tmp_path / "idx")
    back = load_index(tmp_path / "idx", expect_dim=33)
    assert isinstance(back, IVFIndex)
    assert (back.nprobe, back.lists, back.rescore, back.dim) == (12, 32, 24, 33)
    assert back.ids.tolist() == ids
    q = queries(30)
    assert np.array_equal(index.search(q, 10)[0], back.search(q, 10)[0])
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["kind"] == "audiorec.ivf" and manifest["count"] == 6000


def test_load_index_dispatches_on_the_manifest_kind(vectors, tmp_path):
    unit = vectors[:300, :32] / np.linalg.norm(vectors[:300, :32], axis=1, keepdims=True)
    build_index(unit, range(300), IndexConfig(method="hnsw")).save(tmp_path / "h")
    build_index(unit, range(300), IndexConfig()).save(tmp_path / "i")
    assert isinstance(load_index(tmp_path / "h", 32), ItemIndex)
    assert isinstance(load_index(tmp_path / "i", 32), IVFIndex)


def test_loader_and_builder_refuse_what_is_wrong(vectors, tmp_path):
    IVFIndex.build(vectors, range(6000), lists=16, extra_coordinates=1).save(tmp_path / "idx")
    with pytest.raises(AudiorecError, match="index dim 33, expected 64"):
        load_index(tmp_path / "idx", expect_dim=64)
    (tmp_path / "idx" / "ids.parquet").write_bytes(b"changed")
    with pytest.raises(AudiorecError):
        load_index(tmp_path / "idx", expect_dim=33)
    with pytest.raises(AudiorecError, match="unit vectors"):
        IVFIndex.build(vectors * 2, range(6000), extra_coordinates=1)

"""The HNSW item index: recall against brute force, and a faithful round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audiorec.errors import AudiorecError
from audiorec.hnsw_index import HNSWConfig, ItemIndex, exact_top_k


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 32))[rng.integers(0, 50, 4000)] + rng.normal(
        scale=0.5, size=(4000, 32)
    )
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_recall_against_brute_force(vectors):
    index = ItemIndex.build(vectors[:3800], [f"i{i}" for i in range(3800)], HNSWConfig(ef=100))
    labels, scores = index.search(vectors[3800:], 10)
    truth = exact_top_k(vectors[:3800], vectors[3800:], 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels, truth)])
    assert recall >= 0.97
    np.testing.assert_allclose(
        scores[:, 0], (vectors[3800:] * vectors[labels[:, 0]]).sum(1), atol=1e-5
    )
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_exact_top_k_hand_checked():
    items = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    # scores: item0 0.8, item1 0.6, item2 0.96
    assert exact_top_k(items, np.array([[0.8, 0.6]]), 2).tolist() == [[2, 0]]


def test_round_trip_restores_ef_ids_and_results(vectors, tmp_path):
    ids = [f"item{i}" for i in range(4000)]
    index = ItemIndex.build(vectors, ids, HNSWConfig(M=8, ef=77))
    index.save(tmp_path / "idx")
    back = ItemIndex.load(tmp_path / "idx", expect_dim=32)
    assert back.index.ef == 77 and back.cfg.M == 8  # ef is not in hnswlib's file
    assert back.ids.tolist() == ids
    a, _ = index.search(vectors[:20], 5)
    b, _ = back.search(vectors[:20], 5)
    assert np.array_equal(a, b)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["metric"] == "ip" and manifest["count"] == 4000


def test_loader_refuses_mismatches(vectors, tmp_path):
    ItemIndex.build(vectors[:100], range(100)).save(tmp_path / "idx")
    with pytest.raises(AudiorecError, match="index dim 32, expected 64"):
        ItemIndex.load(tmp_path / "idx", expect_dim=64)
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps({**m, "metric": "l2"}))
    with pytest.raises(AudiorecError, match="metric: Input should be 'ip'"):
        ItemIndex.load(tmp_path / "idx")
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps({**m, "kind": "audiorec.hgnn"}))
    with pytest.raises(
        AudiorecError, match="kind 'audiorec.hgnn' format 1, expected 'audiorec.hnsw'"
    ):
        ItemIndex.load(tmp_path / "idx")
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(m))
    with (tmp_path / "idx" / "index.bin").open("r+b") as f:
        f.truncate(100)
    with pytest.raises(AudiorecError, match="index.bin does not match its checksum"):
        ItemIndex.load(tmp_path / "idx")
    with pytest.raises(AudiorecError, match="not an HNSW index"):
        ItemIndex.load(tmp_path)
    with pytest.raises(AudiorecError, match="expects unit vectors"):
        ItemIndex.build(vectors[:10] * 3, range(10))

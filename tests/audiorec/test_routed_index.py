"""The routed item index: recall on held-out queries with exact scores, exclusions, the
fallback to the inner lists, a faithful round trip and the loader's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audiorec.errors import AudiorecError
from audiorec.hnsw_index import exact_top_k, recall_at_k
from audiorec.item_index import IndexConfig, build_index, load_index, tune, widen_routes
from audiorec.ivf_index import IVFIndex
from audiorec.routed_index import RoutedIndex, default_routes


@pytest.fixture(scope="module")
def items(clustered_items):
    return clustered_items


def users(n: int, seed: int) -> np.ndarray:
    """User-like queries: 40 tastes, each user near one, with the prior's 1.0."""
    rng = np.random.default_rng(seed)
    tastes = np.random.default_rng(99).normal(size=(40, 32))
    q = tastes[rng.integers(0, 40, n)] + rng.normal(scale=0.3, size=(n, 32))
    return np.hstack([0.3 * q, np.ones((n, 1))]).astype(np.float32)


@pytest.fixture(scope="module")
def index(items):
    cfg = IndexConfig(lists=32)
    built = build_index(items, np.arange(6000), cfg, extra_coordinates=1, queries=users(4000, 1))
    assert isinstance(built, RoutedIndex) and isinstance(built.fallback, IVFIndex)
    tune(built, items, users(300, 2), target=0.995)
    return built


def test_default_routes_and_the_queries_checked(items):
    assert default_routes(0) == 8 and default_routes(32768) == 128 and default_routes(4000) == 16
    inner = IVFIndex.build(items, np.arange(6000), lists=32, extra_coordinates=1)
    for bad in (users(10, 1), users(100, 1)[:, :5], np.ones(33, np.float32)):
        with pytest.raises(AudiorecError):  # too few, another dimension, not a matrix
            RoutedIndex.build(items, inner, bad)


def test_held_out_recall_with_exact_scores(index, items):
    q = users(500, seed=3)  # users the routes never saw
    labels, scores = index.search(q, 10)
    assert recall_at_k(labels, exact_top_k(items, q, 10)) >= 0.99
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, items[labels]), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    # every list holds the vectors of its labels, and lists are sorted within a route
    np.testing.assert_array_equal(index.block, items[index.labels])
    for r in range(index.routes):
        assert (np.diff(index.labels[index.offsets[r] : index.offsets[r + 1]]) > 0).all()


def test_exclusions_within_the_depth_are_routed(index, items):
    """Excluding a query's own best items: the next best come back, none excluded, and
    the answer is the exact one without them (the lists reach that deep)."""
    q = users(50, seed=4)
    truth = exact_top_k(items, q, 30)
    hits = 0
    for i in range(len(q)):
        drop = truth[i, :5]
        labels, _ = index.search(q[i], 10, exclude=drop)
        assert not np.isin(labels[0], drop).any() and (labels[0] >= 0).all()
        hits += len(np.intersect1d(labels[0], truth[i, 5:15]))
    assert hits / (10 * len(q)) >= 0.98


def test_answers_deeper_than_the_lists_come_from_the_inner_lists(index, items):
    q = users(20, seed=5)
    deep = index.search(q, index.depth + 1)  # k beyond the lists: the inner index answers
    np.testing.assert_array_equal(deep[0], index.fallback.search(q, index.depth + 1)[0])
    # excluding the query's own best items, which its route lists: the answer could lie
    # past the list's depth, so the inner lists answer
    mine = exact_top_k(items, q[:1], index.depth)[0]
    route = int(np.argmax(index.centroids @ q[0]))
    listed = index.labels[index.offsets[route] : index.offsets[route + 1]]
    held = np.intersect1d(mine, listed)
    assert 10 + len(held) > index.depth
    got = index.search(q[0], 10, exclude=held)
    np.testing.assert_array_equal(got[0], index.fallback.search(q[:1], 10, exclude=held)[0])
    # as many exclusions the route does not list: still routed, none returned
    absent = np.setdiff1d(np.arange(6000), listed)[: index.depth]
    labels, scores = index.search(q[0], 10, exclude=absent)
    assert not np.isin(labels, absent).any()
    np.testing.assert_array_equal(labels, index.search(q[0], 10)[0])


def test_round_trip_and_loader_checks(index, items, tmp_path):
    index.save(tmp_path / "i")
    back = load_index(tmp_path / "i", 33)
    assert isinstance(back, RoutedIndex) and back.breadth == index.breadth
    q = users(100, seed=6)
    for a, b in zip(index.search(q, 10), back.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AudiorecError):
        load_index(tmp_path / "i", 34)  # another dimension than the artifact's
    # a list label outside the catalogue (manifest re-signed): refused by the shape check
    labels = np.load(tmp_path / "i" / "labels.npy")
    labels[0] = 6000
    np.save(tmp_path / "i" / "labels.npy", labels)
    with pytest.raises(AudiorecError):
        load_index(tmp_path / "i", 33, verify_files=False)
    with pytest.raises(AudiorecError):  # and, with checksums, by the manifest
        load_index(tmp_path / "i", 33)


def test_too_few_queries_or_an_exact_catalogue_keep_the_inner_index(items):
    cfg = IndexConfig(lists=32)
    assert isinstance(build_index(items, np.arange(6000), cfg, 1, users(10, 7)), IVFIndex)
    small = build_index(items[:500], np.arange(500), cfg, 1, users(4000, 7))
    assert isinstance(small, IVFIndex) and small.lists == 0
    assert isinstance(build_index(items, np.arange(6000), IndexConfig(method="ivf"), 1,
                                  users(4000, 7)), IVFIndex)  # fmt: skip


def test_manifest_names_the_method(index, tmp_path):
    index.save(tmp_path / "j")
    m = json.loads((tmp_path / "j" / "manifest.json").read_text())
    assert m["kind"] == "audiorec.routed" and m["routes"] == index.routes
    assert m["candidates"] == len(index.labels) and m["queries"] == 4000


def test_routes_are_widened_to_the_target_else_dropped(items):
    """Routes short of the target on unseen users are rebuilt wider (more routes per
    training query, then deeper) until they reach it; failing that, the inner lists."""
    learn, tuning = users(4000, 1), users(300, 2)
    truth = exact_top_k(items, tuning, 10)
    narrow = build_index(items, np.arange(6000), IndexConfig(lists=32, route_spread=1), 1, learn)
    assert isinstance(narrow, RoutedIndex)
    wide = RoutedIndex.build(items, narrow.fallback, learn, depth=20, spread=3)
    reached = recall_at_k(wide.search(tuning, 10)[0], truth)
    cfg = IndexConfig(lists=32, route_spread=1, target_recall=reached)
    got, recall, routed = widen_routes(narrow, items, learn, tuning, cfg)
    assert isinstance(got, RoutedIndex) and recall == routed >= reached
    assert got.spread == 1 or len(got.labels) > len(narrow.labels)
    # a target no routes reach here: the inner lists, and the routes' best recall
    unreachable = IndexConfig(lists=32, route_spread=1, target_recall=1.0)
    if recall_at_k(RoutedIndex.build(items, narrow.fallback, learn, depth=32, spread=3)
                   .search(tuning, 10)[0], truth) < 1.0:  # fmt: skip
        got, recall, routed = widen_routes(narrow, items, learn, tuning, unreachable)
        assert isinstance(got, IVFIndex) and routed < 1.0
        assert recall == recall_at_k(narrow.fallback.search(tuning, 10)[0], truth)

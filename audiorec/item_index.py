"""The served item index of one item type: which method, built, tuned, loaded.

Three methods answer maximum-inner-product top-k over the item vectors: ``routed``
(candidate lists learned from real user queries in front of the inverted lists,
:mod:`audiorec.routed_index`, the default: the only one that holds recall on real user
queries at 20x the exact scan's speed on both item types of the 1M world), ``ivf`` (faiss
inverted lists with 4-bit codes and exact re-scoring, :mod:`audiorec.ivf_index`) and
``hnsw`` (hnswlib, :mod:`audiorec.hnsw_index`). Each exposes ``search(queries, k) -> (labels,
scores)``, ``ids``, ``dim``, and a breadth knob (``nprobe`` / ``ef``) that
:func:`tune` raises on real user vectors until recall@10 against exact search reaches its
target. Each index directory's manifest names its kind; :func:`load_index` dispatches on
it, so versions published with either method load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Union

import numpy as np
from pydantic import Field

from audiorec.hnsw_index import HNSWConfig, ItemIndex, exact_top_k, recall_at_k
from audiorec.ivf_index import IVFIndex, IVFManifest
from audiorec.routed_index import RoutedIndex, RoutedManifest, enough_queries

AnyIndex = Union[ItemIndex, IVFIndex, RoutedIndex]


class IndexConfig(HNSWConfig):
    """How the pipeline indexes each item type (the HNSW fields are HNSWConfig's)."""

    method: Literal["routed", "ivf", "hnsw"] = "routed"
    lists: int | None = Field(None, ge=1)  # None: about the square root of the catalogue
    nprobe: int = Field(8, ge=1)  # where tuning starts
    rescore: int = Field(24, ge=1)  # candidates re-scored exactly, per answer wanted
    exact_below: int = Field(4096, ge=1)  # smaller catalogues: an exact flat scan
    target_recall: float = Field(0.995, gt=0, le=1)  # headroom over 0.99 for new users
    # routed: routes (None: one per 256 training queries), each training query's exact
    # top `route_depth` listed in its `route_spread` nearest routes, learned from up to
    # `route_queries` users (audiorec/routed_index.py)
    routes: int | None = Field(None, ge=1)
    route_depth: int = Field(20, ge=1)
    route_spread: int = Field(2, ge=1)
    route_queries: int = Field(32768, ge=16)


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    cfg: IndexConfig,
    extra_coordinates: int = 0,
    queries: np.ndarray | None = None,
) -> AnyIndex:
    """The configured method's index of ``vectors`` (unit rows but for the last
    ``extra_coordinates``); ``queries``: the real user vectors routes are learned from
    (routed; too few of them, or an exact flat catalogue, leave the inverted lists alone)."""
    if cfg.method == "hnsw":
        return ItemIndex.build(vectors, ids, HNSWConfig(**_hnsw_fields(cfg)), extra_coordinates)
    inner = IVFIndex.build(
        vectors,
        ids,
        lists=cfg.lists,
        nprobe=cfg.nprobe,
        rescore=cfg.rescore,
        exact_below=cfg.exact_below,
        extra_coordinates=extra_coordinates,
    )
    if (
        cfg.method != "routed"
        or not inner.lists
        or queries is None
        or not enough_queries(len(queries), cfg.routes)
    ):
        return inner
    return RoutedIndex.build(vectors, inner, queries, cfg.routes, cfg.route_depth, cfg.route_spread)


def load_index(directory: str | Path, expect_dim: int, verify_files: bool = True) -> AnyIndex:
    """The index in ``directory``, whichever method its manifest names."""
    kind = json.loads((Path(directory) / "manifest.json").read_text()).get("kind")
    if kind == IVFManifest.KIND:
        return IVFIndex.load(directory, expect_dim, verify_files)
    if kind == RoutedManifest.KIND:
        return RoutedIndex.load(directory, expect_dim, verify_files)
    return ItemIndex.load(directory, expect_dim, verify_files)  # its manifest checks the kind


def tune(
    index: AnyIndex, vectors: np.ndarray, queries: np.ndarray, target: float, k: int = 10
) -> tuple[int, float]:
    """Raise the index's breadth (``nprobe`` or ``ef``) from its configured value until
    recall@k of ``queries`` against exact search reaches ``target`` (or the last value
    it tries); returns (breadth, recall). Real queries are user vectors, unlike items,
    so the breadth that suffices for item-like queries may not suffice for them. A
    routed index's breadth is its inner index's, which answers the queries the routes
    cannot: that one is tuned on its own, then the routed recall measured."""
    if isinstance(index, RoutedIndex):
        tune(index.fallback, vectors, queries, target, k)
        return index.breadth, recall_at_k(
            index.search(queries, k)[0], exact_top_k(vectors, queries, k)
        )
    truth = exact_top_k(vectors, queries, k)
    recall, breadth = 0.0, index.breadth
    for breadth in index.breadths():
        index.set_breadth(breadth)
        recall = recall_at_k(index.search(queries, k)[0], truth)
        if recall >= target:
            break
    return breadth, recall


def widen_routes(
    index: RoutedIndex,
    vectors: np.ndarray,
    learn: np.ndarray,
    queries: np.ndarray,
    cfg: IndexConfig,
    k: int = 10,
) -> tuple[AnyIndex, float, float]:
    """A routed index whose recall@k on ``queries`` (users the routes never saw) misses
    ``cfg.target_recall``, rebuilt wider from the same training queries ``learn``: each
    training query's answer listed in one, then two more routes, then deeper. Returns
    (the first that reaches the target, else the inner lists alone; its recall; the
    last routed recall). Wider lists cost speed (a query scores its route's whole list),
    so the configured settings are tried first, by the caller."""
    truth = exact_top_k(vectors, queries, k)
    recall = recall_at_k(index.search(queries, k)[0], truth)
    depth, spread = cfg.route_depth, cfg.route_spread
    for d, s in ((depth, spread + 1), (depth, spread + 2), (max(32, depth), spread + 2)):
        if recall >= cfg.target_recall:
            return index, recall, recall
        index = RoutedIndex.build(vectors, index.fallback, learn, cfg.routes, d, s)
        recall = recall_at_k(index.search(queries, k)[0], truth)
    if recall >= cfg.target_recall:
        return index, recall, recall
    inner = index.fallback
    return inner, recall_at_k(inner.search(queries, k)[0], truth), recall


def _hnsw_fields(cfg: IndexConfig) -> dict[str, int]:
    return {k: getattr(cfg, k) for k in HNSWConfig.model_fields}

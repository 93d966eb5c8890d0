"""A query-routed item index: candidate lists learned from real user queries, in front
of an inverted-list index.

Why: the served queries are user vectors, far from the item vectors, and their best
scores bunch. An index over the items alone (cells, graphs) must scan wide to hold
recall on such queries, and at 50k items that breadth costs about what the exact scan
does (docs/benchmarks.md, "Retrieval at 250k items"). Users, though, resemble each
other: the users near a query in direction share most of its best items.

The index: ``routes`` directions (spherical k-means over a sample of real user queries,
the users the pipeline already has) and, per route, the sorted labels of every item that
was among the exact top ``depth`` of a training query routed there; each training query
counts for its ``spread`` nearest routes. A query takes its nearest route, scores that
route's list exactly (one contiguous block of item vectors), and returns the best ``k``:
scores are exact inner products. A query whose answer could lie deeper than the lists
reach (``k`` plus the excluded items its route lists, above ``depth``), or whose route
holds fewer than ``k`` allowed items, is answered by the inner-list index (``fallback``,
an :class:`~audiorec.ivf_index.IVFIndex`) instead.

Cost: build = k-means over the training queries + their exact top ``depth`` (one
matrix product of queries x items, in slices); a query = one (routes x dim) product, one
(list x dim) product and a partial sort, independent of the catalogue's size. The list
product reads its block from memory (~500 KB for a 1,000-item list of 129 dimensions),
so a query's cost is about proportional to its list's length: ``depth`` and ``spread``
trade it against recall. Memory: the lists hold a copy of their item vectors
(``candidates`` x dim float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from audiorec.errors import ContractError
from audiorec.hnsw_index import exact_top_k, write_ids
from audiorec.ivf_index import IVFIndex
from audiorec.manifest import ManifestBase, read_manifest, write_manifest
from audiorec.publish import staged_directory

FALLBACK = "fallback"  # the inner index's sub-directory
ARRAYS = ("centroids", "offsets", "labels", "block")
_NONE = np.empty(0, np.int64)


class RoutedManifest(ManifestBase):
    KIND = "audiorec.routed"
    WHAT = "routed index"
    metric: Literal["ip"] = "ip"
    dim: int
    count: int
    routes: int
    depth: int  # a training query's exact top ``depth`` went into its routes' lists
    spread: int  # the routes each training query counted for
    candidates: int  # list entries over all routes
    queries: int  # training queries the routes were learned from


def enough_queries(queries: int, routes: int | None = None) -> bool:
    """Whether ``queries`` training queries can learn ``routes`` (None: the default's
    smallest, 8) routes: two a route at least."""
    return queries >= 2 * (routes or 8)


def default_routes(queries: int) -> int:
    """About one route per 256 training queries, as a power of two (at least 8)."""
    return int(2 ** max(3, round(np.log2(max(queries, 1) / 256))))


@dataclass
class RoutedIndex:
    fallback: IVFIndex
    centroids: np.ndarray  # (routes, dim) float32, unit rows
    offsets: np.ndarray  # (routes + 1,) int64: route r's list is [offsets[r], offsets[r+1])
    labels: np.ndarray  # (candidates,) int32, sorted within each route
    block: np.ndarray  # (candidates, dim) float32: the vectors of ``labels``
    depth: int
    spread: int
    queries: int

    def __post_init__(self) -> None:
        self._bounds: list[int] = self.offsets.tolist()
        self._labels64 = self.labels.astype(np.int64)
        self._count = len(self.fallback.ids)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        fallback: IVFIndex,
        queries: np.ndarray,
        routes: int | None = None,
        depth: int = 20,
        spread: int = 2,
        seed: int = 0,
    ) -> "RoutedIndex":
        """Routes over ``queries`` (m, dim) in front of ``fallback``, which indexes the
        same ``vectors`` (n, dim) under the same labels."""
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        q = np.asarray(queries, dtype=np.float32)
        n, dim = v.shape
        if q.ndim == 2 and q.shape[1] == dim:
            q = q[np.linalg.norm(q, axis=1) > 0]
        if q.ndim != 2 or q.shape[1] != dim or not enough_queries(len(q), routes):
            raise ContractError(f"routes need >= {2 * (routes or 8)} queries of dim {dim}")
        unit = q / np.linalg.norm(q, axis=1, keepdims=True)
        routes = min(routes or default_routes(len(q)), len(q) // 2)
        km = faiss.Kmeans(dim, routes, niter=20, seed=seed, spherical=True, verbose=False)
        km.train(np.ascontiguousarray(unit))
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
        depth = min(depth, n)
        spread = min(spread, routes)
        top = np.vstack([exact_top_k(v, q[i : i + 2048], depth) for i in range(0, len(q), 2048)])
        near = np.argsort(-(unit @ centroids.T), axis=1)[:, :spread]
        # (route, label) pairs of every training query, deduplicated and grouped by route
        pairs = np.unique(
            (np.repeat(near, depth, axis=1).astype(np.int64) * n)
            + np.tile(top, (1, spread)).astype(np.int64)
        )
        labels = (pairs % n).astype(np.int32)
        offsets = np.searchsorted(pairs // n, np.arange(routes + 1)).astype(np.int64)
        return cls(fallback, centroids, offsets, labels, v[labels], depth, spread, int(len(q)))

    # what the generic index interface (audiorec.item_index) reads: the inner index's
    @property
    def ids(self) -> np.ndarray:
        return self.fallback.ids

    @property
    def dim(self) -> int:
        return self.fallback.dim

    @property
    def lists(self) -> int:
        return self.fallback.lists

    @property
    def breadth(self) -> int:
        return self.fallback.breadth

    def breadths(self) -> list[int]:
        return self.fallback.breadths()

    def set_breadth(self, nprobe: int) -> None:
        self.fallback.set_breadth(nprobe)

    @property
    def routes(self) -> int:
        return len(self.centroids)

    def search(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels (q, k) int64, scores (q, k) exact inner products), best first, -1
        labels past the last item; ``exclude``: labels never returned (as
        :meth:`IVFIndex.search`)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self._count))
        # no np.unique here (the request path hands unique labels): a repeated label only
        # counts twice against the depth, which errs toward the inner lists
        skip = None if exclude is None or not len(exclude) else np.asarray(exclude, np.int64)
        excluded = _NONE if skip is None else skip
        if k > self.depth:  # the answer lies deeper than the lists
            return self.fallback.search(q, k, skip)
        if len(q) == 1:  # a request's query: no batch bookkeeping
            found = self._route(q[0], int((self.centroids @ q[0]).argmax()), k, excluded)
            if found is None:
                return self.fallback.search(q, k, skip)
            return found[0][None, :], found[1][None, :]
        labels = np.full((len(q), k), -1, np.int64)
        scores = np.full((len(q), k), -np.inf, np.float32)
        for i, r in enumerate(np.argmax(q @ self.centroids.T, axis=1)):
            found = self._route(q[i], int(r), k, excluded)
            if found is None:
                inner = self.fallback.search(q[i : i + 1], k, skip)
                found = (inner[0][0], inner[1][0])
            labels[i, : len(found[0])], scores[i, : len(found[1])] = found
        return labels, scores

    def _route(
        self, query: np.ndarray, r: int, k: int, excluded: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The best ``k`` allowed items of route ``r``'s list, or None when its answer
        could lie deeper than the list: ``k`` plus the excluded items the list holds above
        ``depth`` (the list stands for its users' top ``depth``; an excluded item it does
        not hold is, like the list's other absentees, below those), or fewer than ``k``
        allowed items in it."""
        # array methods and Python-int bounds: a query is ~15 us, numpy's wrappers count
        lo, hi = self._bounds[r], self._bounds[r + 1]
        s = self.block[lo:hi] @ query
        held = 0
        if len(excluded):
            listed = self.labels[lo:hi]
            at = listed.searchsorted(excluded).clip(0, hi - lo - 1)
            at = at[listed[at] == excluded]
            s[at] = -np.inf
            held = len(at)
        if k + held > self.depth or hi - lo - held < k:
            return None
        top = s.argpartition(hi - lo - k)[hi - lo - k :]
        top = top[(-s[top]).argsort(kind="stable")]
        return self._labels64[lo + top], s[top]

    def save(self, directory: str | Path) -> None:
        """The arrays, the inner index (its own manifest), the labels' ids and the
        manifest, staged and renamed into place."""
        with staged_directory(directory) as tmp:
            for name in ARRAYS:
                np.save(tmp / f"{name}.npy", getattr(self, name))
            self.fallback.save(tmp / FALLBACK)
            write_ids(tmp, self.ids)  # where a reader of any index's labels looks
            write_manifest(
                tmp,
                RoutedManifest(
                    dim=self.dim,
                    count=len(self.ids),
                    routes=self.routes,
                    depth=self.depth,
                    spread=self.spread,
                    candidates=len(self.labels),
                    queries=self.queries,
                ),
            )

    @classmethod
    def load(
        cls, directory: str | Path, expect_dim: int | None = None, verify_files: bool = True
    ) -> "RoutedIndex":
        """The index in ``directory``, its arrays mapped and checked against the manifest
        (shapes, offsets, labels inside the catalogue) and its inner index loaded."""
        directory = Path(directory)
        m = read_manifest(directory, RoutedManifest, verify_files)
        fallback = IVFIndex.load(directory / FALLBACK, expect_dim, verify_files=False)
        a = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
        offsets, labels = np.asarray(a["offsets"]), a["labels"]
        if (
            fallback.dim != m.dim
            or len(fallback.ids) != m.count
            or a["centroids"].shape != (m.routes, m.dim)
            or offsets.shape != (m.routes + 1,)
            or labels.shape != (m.candidates,)
            or a["block"].shape != (m.candidates, m.dim)
            or offsets[0] != 0
            or offsets[-1] != m.candidates
            or np.any(np.diff(offsets) < 0)
            or (m.candidates and (labels.min() < 0 or labels.max() >= m.count))
        ):
            raise ContractError(
                f"{directory}: the routed index's arrays disagree with its manifest"
            )
        return cls(
            fallback,
            np.ascontiguousarray(a["centroids"]),
            offsets,
            np.asarray(labels),
            np.asarray(a["block"]),
            m.depth,
            m.spread,
            m.queries,
        )

"""An inverted-list item index for inner-product top-k (faiss), with a manifest.

Why not only HNSW: the served queries are user vectors, which sit far from the item
vectors, and their best scores bunch (the 10th and 11th podcast of a user differ by a few
thousandths). Graph indexes degrade most on such out-of-distribution queries; measured on
the 1M-user world's real queries (bench/bench_index_methods.py, docs/benchmarks.md), HNSW
stays short of 0.99 recall@10 at any speed-up worth having, while inverted lists reach it.

The index: ``lists`` k-means cells over the items (about the square root of the
catalogue); each item stored as a 4-bit code per dimension (faiss "fast-scan" codes, the
vectors zero-padded to a multiple of 8 dimensions), and the best ``rescore x k``
candidates of the ``nprobe`` nearest cells re-scored exactly against the full float
vectors, so the scores returned are exact inner products. ``nprobe`` is the speed/recall
knob, tuned at publish on real user queries (:func:`audiorec.item_index.tune`). Below
``exact_below`` items the index is an exact flat scan (no cells, no codes).

Cost: build O(n x lists x iterations) for k-means (seconds at 200k items); a query scans
the codes of ``nprobe / lists`` of the items plus ``rescore x k`` exact dot products.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import faiss
import numpy as np

from audiorec.errors import ContractError
from audiorec.hnsw_index import check_unit, read_ids, write_ids
from audiorec.manifest import ManifestBase, read_manifest, write_manifest
from audiorec.publish import staged_directory

FILE = "index.faiss"


class IVFManifest(ManifestBase):
    KIND = "audiorec.ivf"
    WHAT = "IVF index"
    metric: Literal["ip"] = "ip"
    dim: int
    count: int
    lists: int  # 0: an exact flat scan
    pad: int  # zero dimensions appended for the 4-bit codes
    nprobe: int
    rescore: int
    faiss: str


def default_lists(n: int) -> int:
    """About the square root of the catalogue, as a power of two."""
    return int(2 ** round(np.log2(max(16.0, np.sqrt(max(n, 1))))))


@dataclass
class IVFIndex:
    index: Any  # faiss.Index
    ids: np.ndarray  # (n,) item ids; label i of the index is ids[i]
    lists: int
    pad: int
    nprobe: int
    rescore: int

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: Iterable[object] | np.ndarray,
        lists: int | None = None,
        nprobe: int = 16,
        rescore: int = 24,
        exact_below: int = 4096,
        extra_coordinates: int = 0,
    ) -> "IVFIndex":
        """Index ``vectors`` (n, dim); ``lists`` None: :func:`default_lists`."""
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        check_unit(v, extra_coordinates)
        n, dim = v.shape
        index: Any
        if n < exact_below:
            index = faiss.IndexFlatIP(dim)
            index.add(v)
            return cls(index, np.asarray(ids, dtype=object), 0, 0, 0, 0)
        lists = min(lists or default_lists(n), max(1, n // 39))  # k-means: 39 points a cell
        pad = (-dim) % 8
        padded = np.ascontiguousarray(np.pad(v, ((0, 0), (0, pad))))
        index = faiss.index_factory(
            dim + pad, f"IVF{lists},PQ{dim + pad}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT
        )
        index.train(padded)
        index.add(padded)
        out = cls(index, np.asarray(ids, dtype=object), lists, pad, nprobe, rescore)
        out.set_breadth(nprobe)
        return out

    @property
    def dim(self) -> int:
        return int(self.index.d) - self.pad

    @property
    def breadth(self) -> int:
        return self.nprobe

    def breadths(self) -> list[int]:
        """The ``nprobe`` values tuning tries, from this one up to every cell."""
        steps = [1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
        return [s for s in steps if self.nprobe <= s < self.lists] + [self.lists]

    def set_breadth(self, nprobe: int) -> None:
        if not self.lists:
            return
        self.nprobe = int(min(nprobe, self.lists))
        faiss.extract_index_ivf(self.index).nprobe = self.nprobe
        refine: Any = faiss.downcast_index(self.index)
        refine.k_factor = self.rescore

    def search(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels (q, k) int64, scores (q, k) exact inner products), best first; -1
        labels past the last item when fewer than ``k`` exist. ``exclude``: labels never
        returned, skipped inside the scan (a request asks for k, not k + its exclusions,
        so the exact re-scoring stays ``rescore x k`` deep)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.pad:
            q = np.ascontiguousarray(np.pad(q, ((0, 0), (0, self.pad))))
        k = max(1, min(k, int(self.index.ntotal)))
        if exclude is None or not len(exclude):
            scores, labels = self.index.search(q, k)
            return labels.astype(np.int64), scores
        skip = faiss.IDSelectorNot(
            faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64))
        )
        # attributes, not keywords: faiss's type stubs know no keywords (the locals keep
        # the selector alive through the search)
        params: Any
        if self.lists:
            ivf = faiss.SearchParametersIVF()
            ivf.nprobe, ivf.sel = self.nprobe, skip
            params = faiss.IndexRefineSearchParameters()
            params.k_factor, params.base_index_params = self.rescore, ivf
        else:
            params = faiss.SearchParameters()
            params.sel = skip
        scores, labels = self.index.search(q, k, params=params)
        return labels.astype(np.int64), scores

    def save(self, directory: str | Path) -> None:
        """Write index + ids + manifest under a temporary name, then rename into place."""
        with staged_directory(directory) as tmp:
            faiss.write_index(self.index, str(tmp / FILE))
            write_ids(tmp, self.ids)
            write_manifest(
                tmp,
                IVFManifest(
                    dim=self.dim,
                    count=int(self.index.ntotal),
                    lists=self.lists,
                    pad=self.pad,
                    nprobe=self.nprobe,
                    rescore=self.rescore,
                    faiss=faiss.__version__,
                ),
            )

    @classmethod
    def load(
        cls, directory: str | Path, expect_dim: int | None = None, verify_files: bool = True
    ) -> "IVFIndex":
        """The index in ``directory``, checked against its manifest (kind, dimension,
        count and, unless an enclosing artifact already did, checksums), its ``nprobe``
        and re-scoring depth restored."""
        directory = Path(directory)
        m = read_manifest(directory, IVFManifest, verify_files)
        if expect_dim is not None and m.dim != expect_dim:
            raise ContractError(f"{directory}: index dim {m.dim}, expected {expect_dim}")
        ids = read_ids(directory)
        index = faiss.read_index(str(directory / FILE))
        if len(ids) != m.count or int(index.ntotal) != m.count or index.d != m.dim + m.pad:
            raise ContractError(
                f"{directory}: {len(ids)} ids and {index.ntotal} vectors of dim {index.d} "
                f"for {m.count} of dim {m.dim} + {m.pad}"
            )
        out = cls(index, ids, m.lists, m.pad, m.nprobe, m.rescore)
        out.set_breadth(m.nprobe)
        return out

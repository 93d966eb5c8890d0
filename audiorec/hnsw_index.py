"""An HNSW index of unit item vectors for inner-product top-k, with a manifest.

hnswlib files store neither the metric nor the query-time ``ef``, so ``save`` writes a
manifest (metric, dim, count, M, ef_construction, ef, library version) and the item ids
beside the index, and ``load`` checks the manifest and restores ``ef``. Searching while
adding is not thread-safe in hnswlib: build, then publish, then search.

Cost: build O(n log n) (about a minute for 250k x 128 on 2 cores, docs/benchmarks.md); a query
visits O(ef log n) nodes instead of the n dot products of exact search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import hnswlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audiorec.columns import to_objects
from audiorec.config import StrictConfig
from audiorec.errors import AudiorecError, ContractError
from audiorec.manifest import ManifestBase, read_manifest, write_manifest
from audiorec.publish import staged_directory


class HNSWConfig(StrictConfig):
    M: int = 16
    ef_construction: int = 200
    ef: int = 64  # query-time breadth: the recall/speed knob (chosen in docs/benchmarks.md)
    threads: int = 2


class IndexManifest(ManifestBase):
    KIND = "audiorec.hnsw"
    WHAT = "HNSW index"
    metric: Literal["ip"] = "ip"
    dim: int
    count: int
    M: int
    ef_construction: int
    ef: int
    threads: int
    hnswlib: str


@dataclass
class ItemIndex:
    index: hnswlib.Index
    ids: np.ndarray  # (n,) item ids; label i of the index is ids[i]
    cfg: HNSWConfig

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: Iterable[object] | np.ndarray,
        cfg: HNSWConfig = HNSWConfig(),
        extra_coordinates: int = 0,
    ) -> "ItemIndex":
        """Index ``vectors`` (n, dim), L2-normalised (inner product = cosine) except for
        their last ``extra_coordinates`` (a score term such as the popularity prior, which
        the query multiplies by 1.0: inner-product search stays exact MIPS)."""
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        check_unit(v, extra_coordinates)
        index = hnswlib.Index(space="ip", dim=v.shape[1])
        index.init_index(
            max_elements=max(1, len(v)), M=cfg.M, ef_construction=cfg.ef_construction, random_seed=0
        )
        index.set_num_threads(cfg.threads)
        if len(v):
            index.add_items(v, np.arange(len(v)))
        index.set_ef(cfg.ef)
        return cls(index, np.asarray(ids, dtype=object), cfg)

    @property
    def dim(self) -> int:
        return int(self.index.dim)

    @property
    def breadth(self) -> int:
        return self.cfg.ef

    def breadths(self, max_ef: int = 1024) -> list[int]:
        """The ``ef`` values tuning tries: doubling from this one up to ``max_ef``."""
        out = [self.cfg.ef]
        while out[-1] < max_ef:
            out.append(min(max_ef, out[-1] * 2))
        return out

    def set_breadth(self, ef: int) -> None:
        self.index.set_ef(ef)
        self.cfg = self.cfg.model_copy(update={"ef": ef})

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels (q, k) int, scores (q, k) inner products), best first."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.index.get_current_count())
        labels, dist = self.index.knn_query(q, k=k)
        return labels.astype(np.int64), 1.0 - dist  # hnswlib "ip" distance = 1 - dot

    def save(self, directory: str | Path) -> None:
        """Write index + ids + manifest under a temporary name, then rename into place."""
        with staged_directory(directory) as tmp:
            self.index.save_index(str(tmp / "index.bin"))
            write_ids(tmp, self.ids)
            write_manifest(
                tmp,
                IndexManifest(
                    dim=self.dim,
                    count=int(self.index.get_current_count()),
                    hnswlib=getattr(hnswlib, "__version__", "0.8.0"),
                    **self.cfg.model_dump(),
                ),
            )

    @classmethod
    def load(
        cls, directory: str | Path, expect_dim: int | None = None, verify_files: bool = True
    ) -> "ItemIndex":
        """The index in ``directory``, checked against its manifest (kind, dimension,
        count and, unless an enclosing artifact already did, checksums), with its
        query-time ``ef`` restored."""
        directory = Path(directory)
        m = read_manifest(directory, IndexManifest, verify_files)
        if expect_dim is not None and m.dim != expect_dim:
            raise ContractError(f"{directory}: index dim {m.dim}, expected {expect_dim}")
        ids = read_ids(directory)
        if len(ids) != m.count:
            raise ContractError(f"{directory}: {len(ids)} ids for {m.count} indexed vectors")
        cfg = HNSWConfig(M=m.M, ef_construction=m.ef_construction, ef=m.ef, threads=m.threads)
        index = hnswlib.Index(space="ip", dim=m.dim)
        index.load_index(str(directory / "index.bin"), max_elements=max(1, m.count))
        index.set_ef(cfg.ef)  # not stored by hnswlib
        index.set_num_threads(cfg.threads)
        return cls(index, ids, cfg)


def check_unit(v: np.ndarray, extra_coordinates: int) -> None:
    """Refuse item vectors that are not unit length in all but their last
    ``extra_coordinates`` (a score term such as the popularity prior, which the query
    multiplies by 1.0: inner-product search stays exact MIPS)."""
    norms = np.linalg.norm(v[:, : v.shape[1] - extra_coordinates], axis=1)
    if len(v) and not np.allclose(norms, 1, atol=1e-3):
        raise AudiorecError(
            f"the item index expects unit vectors (inner product); norms range "
            f"{norms.min():.3f}..{norms.max():.3f}"
        )


def write_ids(directory: Path, ids: np.ndarray) -> None:
    """An index's ``label -> item id`` table (ids.parquet)."""
    pq.write_table(
        pa.table({"item_id": pa.array([str(i) for i in ids], pa.string())}),
        directory / "ids.parquet",
    )


def read_id_column(directory: Path) -> pa.ChunkedArray:
    """The ids :func:`write_ids` wrote, as Arrow strings (label order)."""
    return pq.read_table(directory / "ids.parquet").column("item_id")


def read_ids(directory: Path) -> np.ndarray:
    """The ids :func:`write_ids` wrote, as an object array (label order)."""
    return to_objects(read_id_column(directory))


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force inner-product top-k labels (q, k), best first: the recall reference."""
    scores = np.atleast_2d(queries) @ vectors.T
    part = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (q, k) found in the same row of ``found``."""
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))


def tune_ef(
    index: ItemIndex,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    target: float = 0.995,
    max_ef: int = 1024,
) -> tuple[int, float]:
    """Raise the index's ``ef`` from its configured value, doubling, until recall@k of
    ``queries`` against exact search reaches ``target`` (or ``max_ef``); returns
    (ef, recall). Real two-tower queries are user vectors, which sit off the item
    manifold, so the ef that suffices for item-like queries may not suffice for them."""
    truth = exact_top_k(vectors, queries, k)
    ef = index.cfg.ef
    while True:
        index.index.set_ef(ef)
        recall = recall_at_k(index.search(queries, k)[0], truth)
        if recall >= target or ef >= max_ef:
            break
        ef = min(max_ef, ef * 2)
    index.cfg = index.cfg.model_copy(update={"ef": ef})
    return ef, recall

"""Loads one published artifact version fully, so a server can swap to it in one step.

Everything is checked before the object exists: the manifest and file checksums
(:func:`audiorec.artifact.read_manifest`), the user tower's signature against the
manifest's feature list, every index's metric and dimension against the model's. A
mismatch raises :class:`ContractError` naming what differs.

In memory: item metadata as arrays indexed by item row; per item type, the index and
``label -> item row``; consumed items and the 90-day window's items as CSR over users
(row offsets into an item-row array; one user index for both), memory-mapped from the
version's ``lookup/`` (:mod:`audiorec.lookup`; computed here for versions published
without one); popularity lists as item-row arrays keyed by (scope, key, item type).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from audiorec.artifact import (
    VECTORS_FILE,
    Manifest,
    check_user_features,
    current_dir,
    read_manifest,
)
from audiorec.columns import dictionary, from_codes, to_objects
from audiorec.errors import ContractError
from audiorec.hnsw_index import read_id_column
from audiorec.item_index import AnyIndex, load_index
from audiorec.itemtypes import ItemTypes
from audiorec.lookup import lookup_of_version, read_lookup
from serving.tower import Runtime, UserTower
from serving.user_index import UserIndex


@dataclass
class Artifact:
    directory: Path
    manifest: Manifest
    tower: UserTower
    item_ids: np.ndarray  # (m,) sorted; an item's row is its position here
    item_types: np.ndarray
    titles: np.ndarray
    languages: np.ndarray
    vectors: np.ndarray  # (m, dim) unit item vectors
    indexes: dict[str, AnyIndex]
    label_rows: dict[str, np.ndarray]  # per type: index label -> item row
    users: UserIndex  # user id -> position in the offsets below
    consumed_offsets: np.ndarray  # (u + 1,)
    consumed_rows: np.ndarray  # item rows, grouped by user
    popularity: dict[tuple[str, str, str], np.ndarray]
    # items with any event in the window that ends at the cut, and whether one was weak
    window_offsets: np.ndarray  # (u + 1,)
    window_rows: np.ndarray
    window_weak: np.ndarray  # bool, aligned with window_rows
    # the strongest event type per window item (stream > intent_to_pay > follow > preview),
    # aligned with window_rows; "" where a version before it recorded none
    window_action: np.ndarray  # int8 codes into action_names, aligned with window_rows
    action_names: np.ndarray = field(default_factory=lambda: np.array([""], object))
    # each item's language as a code into language_names (Arrow's dictionary encoding):
    # grouping items by language then compares integers, not Python strings
    language_codes: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    language_names: np.ndarray = field(default_factory=lambda: np.empty(0, object))

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def types(self) -> ItemTypes:
        """The item types this version serves, the focus first."""
        return ItemTypes(tuple(self.manifest.item_types))

    @classmethod
    def load(
        cls,
        directory: str | Path,
        served_user_features: list[str] | None = None,
        tower_runtime: Runtime = "auto",
        niced_checks: bool = False,
    ) -> "Artifact":
        """``tower_runtime``: auto (ONNX Runtime when the version has its export, else
        TensorFlow), onnx, or tensorflow (serving/tower.py). ``niced_checks``: the files'
        checksums computed at the lowest CPU priority (a server loading beside its calls;
        audiorec/manifest.py)."""
        directory = Path(directory)
        manifest = read_manifest(directory, niced=niced_checks)
        if served_user_features is not None:
            check_user_features(manifest, served_user_features)
        onnx = (manifest.model.get("onnx") or {}).get("path")
        tower = UserTower(
            directory / "user_tower",
            manifest.user_features,
            manifest.dim,
            onnx=directory / onnx if onnx else None,
            runtime=tower_runtime,
        )
        items, id_set, vectors = _read_items(directory, manifest.dim)
        ids = to_objects(id_set)
        indexes, label_rows = _read_indexes(directory, manifest, id_set)
        # versions published before lookup/ existed: computed here
        lookup = read_lookup(directory) or lookup_of_version(directory, id_set)
        lookup.check(len(ids), directory)
        # languages also as integer codes (serving/search.py groups on them); none with nulls
        language = items.column("language")
        codes, names = dictionary(language) or (np.empty(0, np.int32), np.empty(0, object))
        languages = names[codes] if len(codes) == len(ids) else to_objects(language)
        return cls(
            directory,
            manifest,
            tower,
            ids,
            from_codes(items.column("item_type")),
            to_objects(items.column("title")),
            languages,
            vectors,
            indexes,
            label_rows,
            UserIndex(lookup.users),
            lookup.consumed_offsets,
            lookup.consumed_rows,
            _popularity(directory, id_set),
            lookup.window_offsets,
            lookup.window_rows,
            lookup.window_weak,
            lookup.window_action,
            lookup.action_names,
            codes,
            names,
        )

    @classmethod
    def load_current(cls, workdir: str | Path, **kwargs: Any) -> "Artifact":
        return cls.load(current_dir(workdir), **kwargs)

    def consumed(self, user_id: str) -> np.ndarray:
        """Item rows the user streamed before the cut (empty for unknown users)."""
        i = self.users.get(user_id)
        if i is None:
            return self.consumed_rows[:0]
        return self.consumed_rows[self.consumed_offsets[i] : self.consumed_offsets[i + 1]]

    def window(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(item rows, weak flags) of the user's events in the window ending at the cut."""
        span = self._window_span(user_id)
        return self.window_rows[span], self.window_weak[span]

    def window_actions(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(item rows, the strongest event type of each) in the window ending at the cut."""
        span = self._window_span(user_id)
        return self.window_rows[span], self.action_names[self.window_action[span]]

    def _window_span(self, user_id: str) -> slice:
        """The user's slice of the window arrays (empty for users it does not hold)."""
        i = self.users.get(user_id)
        if i is None:
            return slice(0, 0)
        return slice(int(self.window_offsets[i]), int(self.window_offsets[i + 1]))


def _read_items(directory: Path, dim: int) -> tuple[pa.Table, pa.Array, np.ndarray]:
    """items.parquet, its ids (Arrow strings, checked unique and sorted) and (items, dim)
    float32 vectors: mapped from the version's vectors file where it has one (a load then
    decodes no vector: ~0.7 s of CPU at 250k items, beside a hot swap's requests), else
    items.parquet's vector column."""
    mapped = directory / VECTORS_FILE
    columns = None if not mapped.is_file() else ["item_id", "item_type", "title", "language"]
    items = pq.read_table(directory / "items.parquet", columns=columns)
    ids = items.column("item_id").combine_chunks().cast(pa.string())
    if len(ids) > 1 and not pc.all(pc.greater(ids[1:], ids[:-1])).as_py():
        raise ContractError(f"{directory}/items.parquet: item ids must be unique and sorted")
    if columns is None:
        return items, ids, _vector_column(directory, items.column("vector"), len(ids), dim)
    vectors = np.load(mapped, mmap_mode="r")
    if vectors.ndim == 2 and vectors.shape[0] == len(ids) and vectors.shape[1] != dim:
        raise ContractError(  # the column's message: the same refusal either way
            f"{directory}: item vectors have dim {vectors.shape[1]}, the manifest says {dim} "
            f"({VECTORS_FILE})"
        )
    if vectors.dtype != np.float32 or vectors.shape != (len(ids), dim):
        raise ContractError(
            f"{directory}/{VECTORS_FILE}: {vectors.dtype} {vectors.shape}, expected float32 "
            f"({len(ids)}, {dim}) (the items of items.parquet, the manifest's dim)"
        )
    return items, ids, vectors


def _vector_column(directory: Path, column: pa.ChunkedArray, n: int, dim: int) -> np.ndarray:
    """items.parquet's vector column as (n, dim) float32, each item's length checked.
    Arrow's flat values, not a numpy array per item stacked: 250k small arrays built and
    stacked in calls that hold the GIL for ~0.25 s, a stall for a hot swap's requests."""
    lengths = pc.list_value_length(column)
    if column.null_count:
        raise ContractError(f"{directory}: {column.null_count} items have no vector")
    low, high = (pc.min(lengths).as_py(), pc.max(lengths).as_py()) if n else (dim, dim)
    if (low, high) != (dim, dim):
        have = f"dim {low}" if low == high else f"dims {low}..{high}"
        raise ContractError(f"{directory}: item vectors have {have}, the manifest says {dim}")
    flat = pc.list_flatten(column).to_numpy()
    return np.asarray(flat, np.float32).reshape(n, dim)


def _read_indexes(
    directory: Path, manifest: Manifest, ids: pa.Array
) -> tuple[dict[str, AnyIndex], dict[str, np.ndarray]]:
    """Each type's index and, per index label, its row in items.parquet."""
    indexes, label_rows = {}, {}
    for kind in manifest.item_types:
        info = manifest.indexes[kind]
        # the version's manifest checked these files' checksums a moment ago
        index = load_index(directory / info.path, expect_dim=manifest.dim, verify_files=False)
        # Arrow's hash lookup on Arrow strings, not a binary search over Python strings
        # (which holds the GIL for ~0.15 s at 250k items, a stall for a hot swap's requests)
        labels = read_id_column(directory / info.path).cast(pa.string())
        found = pc.index_in(labels, value_set=ids)
        if found.null_count:
            raise ContractError(f"{directory}: index {kind} names items not in items.parquet")
        rows = np.asarray(found.to_numpy(zero_copy_only=False), np.int64)
        indexes[kind], label_rows[kind] = index, rows
    return indexes, label_rows


def _popularity(directory: Path, ids: pa.Array) -> dict[tuple[str, str, str], np.ndarray]:
    """(scope, key, item type) -> item rows, best first. In Arrow, not pandas: its
    conversion and group-by held the GIL for ~30 ms at 1M users, a stall for a swap's
    requests. Rows naming an item outside the catalogue are dropped."""
    group = ("scope", "key", "item_type")
    t = pq.read_table(directory / "popularity.parquet", columns=[*group, "rank", "item_id"])
    rows = pc.index_in(t.column("item_id"), value_set=ids)
    t = t.append_column("row", rows).filter(pc.is_valid(rows))
    if not t.num_rows:
        return {}
    t = t.sort_by([(c, "ascending") for c in (*group, "rank")])
    starts = np.zeros(t.num_rows, bool)
    starts[0] = True
    for name in group:
        col = t.column(name)
        starts[1:] |= pc.not_equal(col[1:], col[:-1]).to_numpy(zero_copy_only=False)
    first = np.flatnonzero(starts)
    bounds = zip(first, np.append(first[1:], t.num_rows))
    row = np.asarray(t.column("row").to_numpy(zero_copy_only=False), np.int64)
    keys = t.select(list(group)).take(pa.array(first)).to_pylist()
    return {(k["scope"], k["key"], k["item_type"]): row[a:b] for k, (a, b) in zip(keys, bounds)}

"""Loads one published artifact version fully, so a server can swap to it in one step.

Everything is checked before the object exists: the manifest and file checksums
(:func:`audiorec.artifact.read_manifest`), the user tower's signature against the
manifest's feature list, every index's metric and dimension against the model's. A
mismatch raises :class:`ContractError` naming what differs.

In memory: item metadata as arrays indexed by item row; per item type, the index and
``label -> item row``; consumed items and the 90-day window's items as CSR over users
(row offsets into an item-row array; one user index for both); popularity lists as
item-row arrays keyed by (scope, key, item type).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from audiorec.artifact import Manifest, check_user_features, current_dir, read_manifest
from audiorec.errors import ContractError
from audiorec.item_index import AnyIndex, load_index
from audiorec.itemtypes import ItemTypes
from audiorec.vocabulary import STREAM
from serving.tower import Runtime, UserTower


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
    users: dict[str, int]  # user id -> position in the offsets below
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
    ) -> "Artifact":
        """``tower_runtime``: auto (ONNX Runtime when the version has its export, else
        TensorFlow), onnx, or tensorflow (serving/tower.py)."""
        directory = Path(directory)
        manifest = read_manifest(directory)
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
        items, ids, vectors = _read_items(directory, manifest.dim)
        indexes, label_rows = _read_indexes(directory, manifest, ids)
        types = items.column("item_type").to_numpy(zero_copy_only=False).astype(object)
        consumed = pq.read_table(directory / "consumed.parquet")
        window = _read_window(directory)
        users = _user_index(consumed, window)
        user_pos = _positions(users)
        consumed_offsets, consumed_rows, _, _ = _csr(consumed, ids, users)
        window_offsets, window_rows, weak, window = _csr(window, ids, users, "weak")
        action, action_names = _action_codes(window, weak)
        return cls(
            directory,
            manifest,
            tower,
            ids,
            types,
            items.column("title").to_numpy(zero_copy_only=False).astype(object),
            items.column("language").to_numpy(zero_copy_only=False).astype(object),
            vectors,
            indexes,
            label_rows,
            user_pos,
            consumed_offsets,
            consumed_rows,
            _popularity(directory, ids),
            window_offsets,
            window_rows,
            weak,
            action,
            action_names,
            *_codes(items.column("language")),
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


def _read_items(directory: Path, dim: int) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """items.parquet, its ids (object array, checked unique and sorted) and (items, dim)
    float32 vectors."""
    items = pq.read_table(directory / "items.parquet")
    ids = items.column("item_id").to_numpy(zero_copy_only=False).astype(object)
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
        raise ContractError(f"{directory}/items.parquet: item ids must be unique and sorted")
    # Arrow's flat values, not a numpy array per item stacked: 250k small arrays built
    # and stacked in calls that hold the GIL for ~0.25 s, a stall for a hot swap's requests
    column = items.column("vector")
    lengths = pc.list_value_length(column)
    if column.null_count:
        raise ContractError(f"{directory}: {column.null_count} items have no vector")
    low, high = (pc.min(lengths).as_py(), pc.max(lengths).as_py()) if len(ids) else (dim, dim)
    if (low, high) != (dim, dim):
        have = f"dim {low}" if low == high else f"dims {low}..{high}"
        raise ContractError(f"{directory}: item vectors have {have}, the manifest says {dim}")
    flat = pc.list_flatten(column).to_numpy()
    vectors = np.asarray(flat, np.float32).reshape(len(ids), dim)
    return items, ids, vectors


def _read_indexes(
    directory: Path, manifest: Manifest, ids: np.ndarray
) -> tuple[dict[str, AnyIndex], dict[str, np.ndarray]]:
    """Each type's index and, per index label, its row in items.parquet."""
    indexes, label_rows = {}, {}
    for kind in manifest.item_types:
        info = manifest.indexes[kind]
        # the version's manifest checked these files' checksums a moment ago
        index = load_index(directory / info.path, expect_dim=manifest.dim, verify_files=False)
        # Arrow's hash lookup, not a binary search over Python strings (which holds the
        # GIL for ~0.15 s at 250k items, a stall for the requests a hot swap serves)
        found = pc.index_in(pa.array(index.ids, pa.string()), value_set=pa.array(ids, pa.string()))
        if found.null_count:
            raise ContractError(f"{directory}: index {kind} names items not in items.parquet")
        rows = np.asarray(found.to_numpy(zero_copy_only=False), np.int64)
        indexes[kind], label_rows[kind] = index, rows
    return indexes, label_rows


def _read_window(directory: Path) -> pa.Table:
    """window.parquet (user, item, weak, action), empty in versions before real time."""
    path = directory / "window.parquet"
    if path.exists():
        return pq.read_table(path)
    return pa.table(
        {
            "user_id": pa.array([], pa.string()),
            "item_id": pa.array([], pa.string()),
            "weak": pa.array([], pa.bool_()),
            "action": pa.array([], pa.string()),
        }
    )


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(int32 code per row, the distinct values) of a string column; both empty where it
    has nulls (its users then group the values themselves)."""
    if column.null_count:
        return np.empty(0, np.int32), np.empty(0, object)
    encoded = pc.dictionary_encode(column.combine_chunks())
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int32)
    return codes, np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)


def _action_codes(window: pa.Table, weak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The window's action column as int8 codes and their names: millions of rows as
    Python strings took 0.3 s in one call holding the GIL, a stall for every request a
    hot swap serves meanwhile."""
    if "action" not in window.column_names:  # older versions: weak unknown
        return np.where(weak, 0, 1).astype(np.int8), np.array(["", STREAM], object)
    encoded = pc.dictionary_encode(window.column("action").combine_chunks())
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int8)
    names = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    return codes, names if len(names) else np.array([""], object)


def _user_index(*tables: pa.Table) -> pa.Array:
    """The sorted distinct user ids of ``tables``, as Arrow strings. Arrow's hash and
    sort: about a second at a million users and tens of millions of rows, where numpy's
    sort of object arrays took several."""
    users = pa.chunked_array(
        [c for t in tables for c in t.column("user_id").cast(pa.string()).chunks], pa.string()
    )
    distinct = pc.unique(users)
    return distinct.take(pc.sort_indices(distinct))


def _positions(users: pa.Array, piece: int = 16_384) -> dict[str, int]:
    """user id -> position, built a piece at a time: one conversion of a million ids to
    Python strings holds the GIL for ~0.1 s (a stall for the requests a hot swap serves);
    a piece holds it for a millisecond or two."""
    out: dict[str, int] = {}
    for start in range(0, len(users), piece):
        names = users.slice(start, piece).to_pylist()
        out.update(zip(names, range(start, start + len(names))))
    return out


def _csr(
    t: pa.Table, ids: np.ndarray, users: pa.Array, flag: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Table]:
    """(offsets over ``users``, item rows, ``flag`` column or empty, the rows kept) of a
    (user_id, item_id[, flag]) table sorted by user. A row naming an item outside the
    catalogue as of the cut is dropped: it cannot be recommended anyway. Ids are matched
    with Arrow's hash lookup (``index_in``), not a binary search over Python strings,
    which took most of a million-user start-up."""
    rows = pc.index_in(t.column("item_id"), value_set=pa.array(ids, pa.string()))
    known = pc.is_valid(rows)
    if not pc.all(known).as_py():
        t, rows = t.filter(known), rows.filter(known)
    pos = pc.index_in(t.column("user_id"), value_set=users)
    counts = np.bincount(
        np.asarray(pos.to_numpy(zero_copy_only=False), np.int64), minlength=len(users)
    )
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    flags = (
        t.column(flag).to_numpy(zero_copy_only=False).astype(bool)
        if flag is not None
        else np.empty(0, bool)
    )
    return offsets, np.asarray(rows.to_numpy(zero_copy_only=False), np.int64), flags, t


def _popularity(directory: Path, ids: np.ndarray) -> dict[tuple[str, str, str], np.ndarray]:
    df = pq.read_table(directory / "popularity.parquet").to_pandas()
    df["row"] = np.searchsorted(ids, df["item_id"].to_numpy(dtype=object))
    return {
        key: g.sort_values("rank")["row"].to_numpy()
        for key, g in df.groupby(["scope", "key", "item_type"], sort=False)
    }

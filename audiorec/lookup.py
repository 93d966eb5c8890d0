"""The per-user lookup a server reads: computed once when a version is published.

Serving needs, per user, the items they streamed before the cut (filtering) and the
items of the window that ends at the cut (real-time events). Both come from
``consumed.parquet`` and ``window.parquet``: tens of millions of rows at a million users.
Turning them into arrays (distinct users sorted, rows matched to item positions, grouped
by user) took ~2 s of CPU per load, and a server that loads a new version while serving
the old one (a hot swap) spent that CPU beside its requests. Publishing computes them
once, into ``<version>/lookup/``, and a server maps the files (``np.load(mmap_mode="r")``):
a load then costs what reading the manifest costs.

Arrays, with u users and n / w consumed / window pairs:

- ``users``: (u,) ``S{width}``, the user ids' UTF-8 bytes, strictly increasing;
- ``consumed_offsets`` (u + 1,) int64, ``consumed_rows`` (n,) int32: item rows of user i
  at ``consumed_rows[consumed_offsets[i]:consumed_offsets[i + 1]]``;
- ``window_offsets`` (u + 1,), ``window_rows`` (w,), ``window_weak`` (w,) bool,
  ``window_action`` (w,) int8 codes into ``action_names`` (the strongest event type).

Versions published before this file existed have no ``lookup/``; :func:`build_lookup`
computes the same arrays from their tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from audiorec.errors import ContractError
from audiorec.vocabulary import STREAM

DIRECTORY = "lookup"
_NAMES = "action_names.json"
_SLICE = 65_536  # users per slice while filling the ids: short numpy calls under the GIL
# window.parquet's columns, for versions from before real time (no window)
_NO_WINDOW = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("weak", pa.bool_()),
        ("action", pa.string()),
    ]
)


@dataclass(frozen=True)
class UserLookup:
    users: np.ndarray
    consumed_offsets: np.ndarray
    consumed_rows: np.ndarray
    window_offsets: np.ndarray
    window_rows: np.ndarray
    window_weak: np.ndarray
    window_action: np.ndarray
    action_names: np.ndarray  # object array of str; "" where older versions recorded none

    def check(self, n_items: int, where: object) -> None:
        """Raise :class:`ContractError` unless the arrays agree with each other and with a
        catalogue of ``n_items`` (cheap: lengths, ends, one pass over the item rows)."""
        u = len(self.users)
        for name, offsets, rows in (
            ("consumed", self.consumed_offsets, self.consumed_rows),
            ("window", self.window_offsets, self.window_rows),
        ):
            if len(offsets) != u + 1 or offsets[0] != 0 or offsets[-1] != len(rows):
                raise ContractError(f"{where}: the {name} offsets do not cover its rows")
            if len(rows) and (rows.min() < 0 or rows.max() >= n_items):
                raise ContractError(f"{where}: {name} rows outside the {n_items} items")
        w = len(self.window_rows)
        if len(self.window_weak) != w or len(self.window_action) != w:
            raise ContractError(f"{where}: the window's columns differ in length")
        if w and self.window_action.max() >= len(self.action_names):
            raise ContractError(f"{where}: window action codes outside its names")
        if u > 1 and not (self.users[1:] > self.users[:-1]).all():
            raise ContractError(f"{where}: user ids must be distinct, sorted and free of NUL")


def build_lookup(consumed: pa.Table, window: pa.Table, ids: pa.Array) -> UserLookup:
    """The lookup of a version's tables: ``consumed`` (user_id, item_id) and ``window``
    (user_id, item_id, weak[, action]), both sorted by user; ``ids`` the catalogue's item
    ids (Arrow strings; an item's row is its position). Pairs naming an item outside the
    catalogue are dropped: they cannot be recommended anyway."""
    users = _distinct_users(consumed, window)
    keys = fixed_width(users)
    consumed_offsets, consumed_rows, _ = _csr(consumed, ids, users)
    window_offsets, window_rows, window = _csr(window, ids, users)
    weak = window.column("weak").to_numpy(zero_copy_only=False).astype(bool)
    action, names = _action_codes(window, weak)
    return UserLookup(
        keys, consumed_offsets, consumed_rows, window_offsets, window_rows, weak, action, names
    )


def lookup_of_version(directory: Path, ids: pa.Array | None = None) -> UserLookup:
    """:func:`build_lookup` of a version directory's tables (``consumed.parquet``,
    ``window.parquet`` where the version has one); ``ids``: its catalogue's item ids,
    read from ``items.parquet`` when not given."""
    if ids is None:
        column = pq.read_table(directory / "items.parquet", columns=["item_id"]).column("item_id")
        ids = column.combine_chunks().cast(pa.string())
    window = directory / "window.parquet"
    return build_lookup(
        pq.read_table(directory / "consumed.parquet"),
        pq.read_table(window) if window.exists() else _NO_WINDOW.empty_table(),
        ids,
    )


def write_lookup(directory: Path, lookup: UserLookup) -> None:
    """``<directory>/lookup/``: one ``.npy`` per array, the action names as JSON."""
    out = directory / DIRECTORY
    out.mkdir(exist_ok=True)
    for f in fields(lookup):
        if f.name != "action_names":
            np.save(out / f"{f.name}.npy", getattr(lookup, f.name), allow_pickle=False)
    (out / _NAMES).write_text(json.dumps([str(a) for a in lookup.action_names]))


def read_lookup(directory: Path) -> UserLookup | None:
    """The version's lookup, memory-mapped; None where it was published without one."""
    where = directory / DIRECTORY
    if not where.is_dir():
        return None
    try:
        # plain ndarray views of the maps: slicing a np.memmap costs a microsecond more
        arrays = {
            f.name: np.asarray(np.load(where / f"{f.name}.npy", mmap_mode="r"))
            for f in fields(UserLookup)
            if f.name != "action_names"
        }
        names = np.array(json.loads((where / _NAMES).read_text()) or [""], dtype=object)
    except (OSError, ValueError) as exc:
        raise ContractError(f"{where}: unreadable ({str(exc)[:200]})") from None
    return UserLookup(**arrays, action_names=names)


def fixed_width(users: pa.Array) -> np.ndarray:
    """(n,) ``S{width}`` array of string ids' UTF-8 bytes, NUL-padded, filled from Arrow's
    buffers a slice at a time: no Python object per id."""
    users = users.cast(pa.large_string())
    n = len(users)
    offsets = np.frombuffer(users.buffers()[1], np.int64)[users.offset : users.offset + n + 1]
    data = users.buffers()[2]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    width = max(int(lengths.max()) if n else 1, 1)
    out = np.zeros((n, width), np.uint8)
    columns = np.arange(width)
    for start in range(0, n, _SLICE):
        stop = min(start + _SLICE, n)
        # a boolean mask over (rows, width) lists its True cells row by row: exactly the
        # order of the ids' bytes in Arrow's data buffer
        mask = columns < lengths[start:stop, None]
        out[start:stop][mask] = raw[offsets[start] : offsets[stop]]
    return out.view(f"S{width}").reshape(n)


def _distinct_users(*tables: pa.Table) -> pa.Array:
    """The sorted distinct user ids of ``tables``, as Arrow strings (Arrow's hash and sort:
    about a second at a million users and tens of millions of rows)."""
    users = pa.chunked_array(
        [c for t in tables for c in t.column("user_id").cast(pa.string()).chunks], pa.string()
    )
    distinct = pc.unique(users)
    if distinct.null_count:
        raise ContractError("a user id is null")
    return distinct.take(pc.sort_indices(distinct))


def _csr(t: pa.Table, ids: pa.Array, users: pa.Array) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """(offsets over ``users``, item rows, the rows kept) of a table sorted by user. Ids
    are matched with Arrow's hash lookup (``index_in``), not a search over Python strings.
    Offsets come from a binary search over the users' positions (numpy releases the GIL
    there; ``np.bincount`` holds it)."""
    rows = pc.index_in(t.column("item_id"), value_set=ids)
    known = pc.is_valid(rows)
    if not pc.all(known).as_py():
        t, rows = t.filter(known), rows.filter(known)
    pos = np.asarray(pc.index_in(t.column("user_id"), value_set=users).to_numpy(), np.int64)
    if len(pos) > 1 and not (pos[1:] >= pos[:-1]).all():
        raise ContractError("a user's rows must be contiguous (the table sorted by user)")
    offsets = np.searchsorted(pos, np.arange(len(users) + 1)).astype(np.int64)
    return offsets, np.asarray(rows.to_numpy(zero_copy_only=False), np.int32), t


def _action_codes(window: pa.Table, weak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The window's action column as int8 codes and their names (dictionary encoding:
    millions of rows never become Python strings)."""
    if "action" not in window.column_names:  # older versions: weak unknown
        return np.where(weak, 0, 1).astype(np.int8), np.array(["", STREAM], object)
    encoded = pc.dictionary_encode(window.column("action").combine_chunks())
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int8)
    names = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    return codes, names if len(names) else np.array([""], object)

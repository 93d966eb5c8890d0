"""One entity's row in Feast's Redis layout, read for the request path without the per-call
Python a general read pays.

Feast's Redis online store keeps an entity's features of every view in one hash: the key is
the serialized entity key followed by the project's name, each field the hash of
``view:feature``, each value a serialized ``feast.types.Value``. :class:`RedisRow` reads
one entity's fields with one HMGET, and differs from Feast's own read in three ways, each
checked against Feast where it is built or by the tests:

- **The key** is Feast's encoding of a one-string entity key, taken apart once (the bytes
  before the id, its length, the bytes after) from Feast's own ``serialize_entity_key``
  and checked on probe ids, then put together per call with two ``bytes`` joins. If the
  probes ever disagree (another Feast encoding), every key comes from Feast's function.
- **One command**, not a pipeline of one: the request path reads one user.
- **Lists of floats** come back as read-only float32 arrays over the reply's bytes (the
  packed repeated field's payload is little-endian float32 on the wire), not as Python
  lists of floats that the tower's input step turns back into arrays. Anything else
  (scalars, strings, other lists, a blob of another layout) goes through ``Value``'s parser
  as Feast's type map would read it (:func:`python_value`).

Shapes: ``RedisRow.read(entity_id)`` -> {feature: [value]} (one entity, as the general
read's ``Features``); a float list is a (dim,) float32 array.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Sequence

import numpy as np

# Value kinds Feast's type map returns as they are (scalars) or as a plain list (lists of
# scalars); every other kind goes through the type map itself.
_PLAIN = frozenset(
    f"{k}_val" for k in ("string", "bytes", "int32", "int64", "double", "float", "bool")
)
_PLAIN_LISTS = frozenset(
    f"{k}_list_val" for k in ("string", "bytes", "int32", "int64", "double", "float", "bool")
)
# Value.float_list_val is field 16, length-delimited: its tag is the varint 16 << 3 | 2
_FLOAT_LIST_TAG = b"\x82\x01"
_PACKED_TAG = 0x0A  # FloatList.val, field 1, packed (length-delimited)


def python_value(value: Any) -> Any:
    """A Feast ``Value`` proto as Feast's ``get_online_features`` returns it (None when
    unset), without the type map's chain of checks for the common kinds."""
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind in _PLAIN:
        return getattr(value, kind)
    if kind in _PLAIN_LISTS:
        return list(getattr(value, kind).val)
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value)


def decode(value_type: Any, blob: Any) -> Any:
    """A stored ``Value`` blob as :func:`python_value` reads it (None: no blob)."""
    return python_value(value_type.FromString(blob)) if blob else None


def _varint(blob: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``; (-1, pos) past the end."""
    out = shift = 0
    while pos < len(blob):
        byte = blob[pos]
        pos += 1
        out |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return out, pos
        shift += 7
    return -1, pos


def float_list(blob: bytes) -> np.ndarray | None:
    """The float32 values of a ``Value`` blob holding exactly a float list (read-only, over
    ``blob``); None for any other blob, which the caller parses as a ``Value``."""
    if not blob.startswith(_FLOAT_LIST_TAG):
        return None
    size, pos = _varint(blob, 2)
    if size == 0 and pos == len(blob):  # an empty list
        return np.frombuffer(b"", dtype="<f4")
    if size != len(blob) - pos or blob[pos] != _PACKED_TAG:
        return None
    n_bytes, start = _varint(blob, pos + 1)
    if n_bytes < 0 or n_bytes % 4 or start + n_bytes != len(blob):
        return None
    return np.frombuffer(blob, dtype="<f4", count=n_bytes // 4, offset=start)


def decode_row_value(value_type: Any, blob: Any) -> Any:
    """A stored blob for the request path: float lists as float32 arrays, else
    :func:`decode`."""
    if not blob:
        return None
    floats = float_list(blob)
    return floats if floats is not None else decode(value_type, blob)


class KeyEncoder:
    """entity id -> Feast's Redis key of a one-string-key entity, from the pieces of
    ``feast_key`` (Feast's own function: id -> key bytes), checked on probe ids at
    construction; ``feast_key`` itself if they do not fit."""

    PROBES = ("u0000001", "", "x" * 300, "ünïcödé-ü")

    def __init__(self, feast_key: Callable[[str], bytes], suffix: bytes):
        self._feast_key = feast_key
        sample = feast_key("x")
        head = len(sample) - len(suffix) - 4 - 1
        self._head, self._suffix = sample[:head], suffix
        self.exact = head >= 0 and all(self._join(p) == feast_key(p) for p in self.PROBES)

    def _join(self, entity_id: str) -> bytes:
        raw = entity_id.encode("utf8")
        return b"".join((self._head, struct.pack("<I", len(raw)), raw, self._suffix))

    def __call__(self, entity_id: str) -> bytes:
        return self._join(entity_id) if self.exact else self._feast_key(entity_id)


class RedisRow:
    """One entity's ``names`` from Feast's Redis hash, by their hashed ``fields``.
    ``client()``: the store's Redis client (Feast's, so its timeouts and retries hold)."""

    def __init__(
        self,
        client: Callable[[], Any],
        key: KeyEncoder,
        names: Sequence[str],
        fields: Sequence[Any],
    ):
        from feast.protos.feast.types.Value_pb2 import Value

        self._client, self.key, self._value = client, key, Value
        self.names, self.fields = list(names), list(fields)

    def read(self, entity_id: str) -> dict[str, list[Any]]:
        reply = self._client().hmget(self.key(entity_id), self.fields)
        value = self._value
        return {name: [decode_row_value(value, blob)] for name, blob in zip(self.names, reply)}

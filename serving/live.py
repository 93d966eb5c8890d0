"""Titles published to a running version (RecordItems): embedded at once, searched exactly.

A new title's vector is made as the daily pipeline makes an edgeless item's (the text
encoder, the HGNN's self path, the item tower: exported and checked at publish,
training/release/live.py; the prior coordinate is 0, as nobody has streamed it), and
joins an exact overlay of its type beside the version's index: every Recommend and
RecommendSimilar of that type scores the overlay too and merges it into the answer by
score. The overlay is small by construction (the next daily run takes the titles into the
catalogue and the index; ``max_items`` bounds it), so an exact scan of it costs
O(live items x dim) per request (65k multiply-adds at 1,000 titles).

:class:`LiveItems` is copy-on-write: a search reads one immutable snapshot of a type's
arrays, an addition builds the next under a lock, so requests never wait for a
publication.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from audiorec.errors import ContractError, InvalidRequest, Overloaded, Unsupported
from audiorec.itemtext import item_text
from audiorec.ort_session import single_thread_session
from audiorec.tower_inputs import InputSpec, tower_inputs
from serving.limits import RequestLimits, check_id, echo


@dataclass(frozen=True)
class NewItem:
    item_id: str
    item_type: str
    title: str
    description: str = ""
    language: str = ""
    genre: str = ""

    def record(self) -> dict[str, str]:
        return {
            "item_id": self.item_id,
            "item_type": self.item_type,
            "title": self.title,
            "description": self.description,
            "language": self.language,
            "genre": self.genre,
        }


def check_items(raw: Sequence[Any], types: Sequence[str], limits: RequestLimits) -> list[NewItem]:
    """Validated titles of one call (all or none); the same id twice with the same fields
    is one title, with different fields a refusal."""
    if not raw:
        raise InvalidRequest("items is empty; expected 1 or more titles")
    if len(raw) > limits.max_items_per_call:
        raise InvalidRequest(
            f"{len(raw):,} items in one call; the limit is {limits.max_items_per_call} "
            "(max_items_per_call)"
        )
    out: dict[str, NewItem] = {}
    for i, r in enumerate(raw):
        where = f"items[{i}]"
        check_id(r.item_id, f"{where}.item_id", limits)
        if r.type not in types:
            raise InvalidRequest(
                f"{where}.type {echo(r.type)} is not served; this model serves {', '.join(types)}"
            )
        if not r.title.strip():
            raise InvalidRequest(f"{where}.title is empty; a title is what the model reads")
        for name, value, cap in (
            ("title", r.title, limits.max_title_chars),
            ("description", r.description, limits.max_description_chars),
            ("language", r.language, limits.max_language_chars),
            ("genre", r.genre, limits.max_id_chars),
        ):
            if len(value) > cap:
                raise InvalidRequest(f"{where}.{name} has {len(value):,} chars; the limit is {cap}")
        item = NewItem(r.item_id, r.type, r.title, r.description, r.language, r.genre)
        if out.setdefault(item.item_id, item) != item:
            raise InvalidRequest(
                f"{where}.item_id {echo(item.item_id)} appears twice with different fields"
            )
    return list(out.values())


class LiveModels:
    """A version's exported text encoder, HGNN self path and item tower (``model.live``
    of its manifest), loaded on first use (a server that never takes a title never pays
    for them)."""

    def __init__(self, directory: Path, manifest: Any):
        self.info = manifest.model.get("live")
        self.directory = directory
        self.dim = manifest.dim
        self.prior = bool(manifest.model.get("prior"))
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Mapping[str, np.ndarray], Any, list[InputSpec]] | None = None

    @property
    def available(self) -> bool:
        return bool(self.info)

    def _load(self) -> tuple[Any, Mapping[str, np.ndarray], Any, list[InputSpec]]:
        with self._lock:
            if self._loaded is None:
                from audiorec.textencoder import TextEncoder

                folder = self.directory / self.info["path"]
                text = self.info["text"]
                encoder = TextEncoder(
                    folder / text["model"], folder / text["tokenizer"], text["max_seq_length"]
                )
                with np.load(folder / self.info["hgnn"]["weights"]) as z:
                    arrays = {k: z[k] for k in z.files}
                tower = single_thread_session(folder / self.info["item_tower"]["model"])
                specs = [InputSpec(**s) for s in self.info["item_tower"]["inputs"]]
                self._loaded = (encoder, arrays, tower, specs)
            return self._loaded

    def embed(self, item: NewItem) -> LiveEntry:
        """``item`` with its served vector (prior coordinate 0) and HGNN embedding."""
        from audiorec.textencoder import hgnn_self

        if not self.available:
            raise Unsupported(
                f"model {self.directory.name} takes no new titles (published without the "
                "live export: live_items 0); they join at the next daily run"
            )
        encoder, arrays, tower, specs = self._load()
        text = encoder(item_text(item.title, item.description))
        hgnn = hgnn_self(arrays, item.item_type, text[None])[0]
        raw = {
            "item_type": [item.item_type],
            "language": [item.language or None],
            "genre": [item.genre or None],
            "text_embedding": [text.tolist()],
            "hgnn_embedding": [hgnn.tolist()],
            "item_id": [item.item_id],
        }
        raw.update({s.name: [None] for s in specs if s.name not in raw})
        inputs = tower_inputs(raw, specs)
        names = [i.name for i in tower.get_inputs()]
        vec = np.asarray(tower.run(["item_vector"], {n: inputs[n] for n in names})[0][0])
        if self.prior:
            vec = np.append(vec, 0.0)  # beta x prior, and a new title's prior is 0
        if vec.shape != (self.dim,):
            raise ContractError(
                f"the live item vector has shape {vec.shape}, expected ({self.dim},)"
            )
        return LiveEntry(item, vec.astype(np.float32), hgnn.astype(np.float32))


@dataclass(frozen=True)
class LiveEntry:
    item: NewItem
    vector: np.ndarray  # (dim,) the served vector
    hgnn: np.ndarray  # (hgnn dim,) its HGNN embedding (real-time preference means read it)


@dataclass(frozen=True)
class _Snapshot:
    ids: np.ndarray  # (n,) object
    titles: np.ndarray  # (n,) object
    languages: np.ndarray  # (n,) object
    vectors: np.ndarray  # (n, dim) float32


class LiveItems:
    """The titles a version took in since it was published, per item type."""

    def __init__(self, types: Sequence[str], dim: int, max_items: int):
        self.max_items = max_items
        self._lock = threading.Lock()
        self._by_id: dict[str, LiveEntry] = {}
        empty = _Snapshot(
            np.empty(0, object),
            np.empty(0, object),
            np.empty(0, object),
            np.zeros((0, dim), np.float32),
        )
        self._types: dict[str, _Snapshot] = {t: empty for t in types}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, item_id: str) -> LiveEntry | None:
        return self._by_id.get(item_id)

    def add(self, entry: LiveEntry) -> bool:
        """Take a title in; False when it already was (same id: one item)."""
        item, vector = entry.item, entry.vector
        with self._lock:
            if item.item_id in self._by_id:
                return False
            if len(self._by_id) >= self.max_items:
                raise Overloaded(
                    f"this model holds {self.max_items:,} live titles (live_items); they "
                    "join the catalogue at the next daily run"
                )
            s = self._types[item.item_type]
            self._types[item.item_type] = _Snapshot(
                np.append(s.ids, np.array([item.item_id], object)),
                np.append(s.titles, np.array([item.title], object)),
                np.append(s.languages, np.array([item.language], object)),
                np.vstack([s.vectors, vector[None].astype(np.float32)]),
            )
            self._by_id[item.item_id] = entry
            return True

    def search(
        self,
        query: np.ndarray,
        k: int,
        item_type: str,
        exclude: set[str] = frozenset(),  # type: ignore[assignment]
        languages: Sequence[str] = (),
    ) -> list[tuple[str, str, float]]:
        """The ``k`` best (id, title, score) of ``item_type`` by inner product."""
        s = self._types.get(item_type)
        if s is None or not len(s.ids):
            return []
        scores = s.vectors @ query
        keep = np.ones(len(s.ids), bool)
        if exclude:
            keep &= ~np.isin(s.ids, list(exclude))
        if languages:
            keep &= np.isin(s.languages, list(languages))
        rows = np.flatnonzero(keep) if not keep.all() else np.arange(len(keep))
        if len(rows) > k:  # the k best by a partial sort, then those k in order
            rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
        top = rows[np.argsort(-scores[rows], kind="stable")]
        return [(str(s.ids[r]), str(s.titles[r]), float(scores[r])) for r in top]

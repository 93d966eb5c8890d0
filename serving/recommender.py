"""The request path, free of any transport: features -> user tower -> index -> filters.

``Recommender.recommend`` reads the user's raw features through the ``user_tower``
feature service (Feast online store), runs the exported user tower, queries the item
type's item index, and drops what the user already streamed and what is outside the
requested languages, over-fetching until ``k`` remain (or brute-forcing the allowed set
when a language filter leaves few items: hnswlib's filter is slow then,
docs/stack-notes.md, note 4).

Strategies: PERSONALIZED (history of the requested type in the 90-day window),
COLD_START (known user without such history: the tower works from the other features),
FALLBACK (user unknown to the store, or the store unreachable: popularity for the
requested languages if given, else global). Never an error for a well-formed request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from audiorec.errors import (
    AlreadyExists,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    Overloaded,
    StoreUnavailable,
)
from audiorec.featurestore import RECENT_EVENTS, Features
from audiorec.itemtypes import ItemTypes
from audiorec.tower_inputs import RowInputs
from audiorec.vocabulary import STREAM
from serving.artifact import Artifact
from serving.events import Applied, Recorder, parse_recent
from serving.explain import explain_items
from serving.limits import RequestLimits, check_id, check_k, clean_languages, echo
from serving.live import LiveEntry, LiveItems, LiveModels, NewItem
from serving.search import TypeSearch


@dataclass
class Item:
    item_id: str
    item_type: str
    score: float
    title: str
    because_item_id: str = ""  # explain: the user's recent item closest to this one
    because_title: str = ""
    # what the user did with it: stream | intent_to_pay | follow | preview ("": unknown)
    because_event: str = ""


@dataclass
class Answer:
    items: list[Item]
    strategy: str
    reason: str
    model_version: str
    timings_ms: dict[str, float] = field(default_factory=dict)


def check_request(
    user_or_item: str,
    field_name: str,
    k: int,
    item_type: str | None,
    types: ItemTypes,
    limits: RequestLimits,
) -> None:
    """Bounds of the id and ``k``; ``item_type`` is None or a type the model serves."""
    check_id(user_or_item, field_name, limits)
    check_k(k, limits)
    if item_type is not None and item_type not in types:
        raise InvalidRequest(
            f"item type {echo(str(item_type))} is not served; this model serves {', '.join(types)}"
        )


class Recommender:
    """Answers for one artifact version. ``read_features(user_id, deadline) ->
    {feature: [value]}`` is the online store; it raises :class:`StoreUnavailable` (or
    anything else) when the store cannot answer before ``deadline``."""

    def __init__(
        self,
        artifact: Artifact,
        read_features: Callable[[str, float | None], Features],
        limits: RequestLimits = RequestLimits(),
        recorder: Recorder | None = None,
    ):
        self.artifact = artifact
        self.read_features = read_features
        self.limits = limits
        self.recorder = recorder
        self.types = artifact.types
        # null in both: a user the store does not know
        self._known_markers = ("country", self.types.history_feature(self.types.focus))
        self.searches = {kind: TypeSearch(artifact, kind) for kind in self.types}
        self._inputs = RowInputs(artifact.manifest.user_features)
        # titles published since this version was (RecordItems; serving/live.py)
        self.live_models = LiveModels(artifact.directory, artifact.manifest)
        self.live = LiveItems(
            self.types.names,
            artifact.vectors.shape[1],
            (self.live_models.info or {}).get("max_items", 0),
        )
        if recorder is not None:
            recorder.live = self.live  # events of live titles are kept and applied too

    @property
    def version(self) -> str:
        return self.artifact.version

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        item_type: str | None = None,
        include_consumed: bool = False,
        languages: Sequence[str] = (),
        deadline: float | None = None,
        explain: bool = False,
    ) -> Answer:
        """``item_type``: any served type (None: refused); ``deadline``: a
        ``time.monotonic()`` instant; past it, no further stage runs. ``explain``: each
        PERSONALIZED item names the user's recent item nearest it (serving/explain.py)."""
        check_request(user_id, "user_id", k, item_type, self.types, self.limits)
        if item_type is None:
            raise InvalidRequest(f"no item type given; this model serves {', '.join(self.types)}")
        languages = clean_languages(languages, self.limits)
        _check_deadline(deadline, "before reading features")
        t = {"start": time.perf_counter()}
        try:
            raw = self.read_features(user_id, deadline)
        except DeadlineExceeded:
            raise  # the client is gone: no point in a fallback answer
        except StoreUnavailable as exc:
            answer = self._fallback(
                k, item_type, languages, f"online feature store unavailable ({exc})"
            )
            return _timed(answer, t, "features")
        except Exception as exc:  # noqa: BLE001 - any store failure degrades to fallback
            # The exception's text may carry connection details: only its type goes out.
            answer = self._fallback(
                k, item_type, languages, f"online feature store unavailable ({type(exc).__name__})"
            )
            return _timed(answer, t, "features")
        t["features"] = time.perf_counter()
        _check_deadline(deadline, "after reading features")
        if all(raw.get(m, [None])[0] is None for m in self._known_markers):
            answer = self._fallback(k, item_type, languages, "user unknown to the feature store")
            return _timed(answer, t, "features")
        art = self.artifact
        vector = art.tower(self._inputs(raw))[0]
        t["tower"] = time.perf_counter()
        _check_deadline(deadline, "after the user tower")
        recent = parse_recent(raw.get(RECENT_EVENTS, [None])[0])
        exclude = np.empty(0, np.int64) if include_consumed else art.consumed(user_id)
        streamed = [r.item_id for r in recent if r.event_type == STREAM]
        if streamed and not include_consumed:  # since the cut, in real time (events.py)
            exclude = np.union1d(exclude, self._rows(streamed))
        labels, scores = self._search(vector, k, item_type, exclude, languages)
        t["index"] = time.perf_counter()
        history = raw.get(self.types.history_feature(item_type), [0])[0] or 0
        strategy, reason = (
            ("PERSONALIZED", "")
            if history > 0
            else (
                "COLD_START",
                f"no {item_type} interactions in the last 90 days: served by the "
                "model from the user's other features",
            )
        )
        answer = Answer(self._items(item_type, labels, scores), strategy, reason, self.version)
        if explain and strategy == "PERSONALIZED":
            explain_items(self.artifact, answer.items, item_type, labels, user_id, recent)
            t["filter"] = time.perf_counter()
        if len(self.live):
            seen = set() if include_consumed else set(streamed)
            answer.items = self._with_live(answer.items, vector, k, item_type, seen, languages)
        return _timed(answer, t, "explain" if "filter" in t else "filter")

    def _rows(self, item_ids: Iterable[str]) -> np.ndarray:
        """Catalogue rows of ``item_ids`` (ids not in the catalogue dropped)."""
        ids = np.asarray(list(item_ids), dtype=object)
        if not len(ids):
            return np.empty(0, np.int64)
        catalogue = self.artifact.item_ids
        rows = np.searchsorted(catalogue, ids)
        ok = rows < len(catalogue)
        ok[ok] = catalogue[rows[ok]] == ids[ok]
        return rows[ok].astype(np.int64)

    def record(self, events: Sequence[object]) -> Applied:
        """Real-time events into the online features of this version's project."""
        if self.recorder is None:
            raise StoreUnavailable("this server records no events (no online store to push to)")
        return self.recorder.record(events)

    def similar(self, item_id: str, k: int = 10, item_type: str | None = None) -> Answer:
        """Items of ``item_type`` (default: the query item's own type) nearest the item."""
        check_request(item_id, "item_id", k, item_type, self.types, self.limits)
        art = self.artifact
        row = int(np.searchsorted(art.item_ids, item_id))
        if row < len(art.item_ids) and art.item_ids[row] == item_id:
            own_type, query, exclude = str(art.item_types[row]), art.vectors[row], np.array([row])
        elif (live := self.live.get(item_id)) is not None:
            own_type, query, exclude = live.item.item_type, live.vector, np.empty(0, np.int64)
        else:
            raise NotFound(
                f"item_id {echo(item_id)} is not in the catalogue of model "
                f"{self.version} ({len(art.item_ids):,} items, {len(self.live):,} published since)"
            )
        item_type = item_type or own_type
        t = {"start": time.perf_counter()}
        if art.manifest.model.get("prior"):
            # the last coordinate is the item's prior; a user's is 1.0 (prior.py), and so
            # is this query's: neighbours by the same score a user would get
            query = query.copy()
            query[-1] = 1.0
        labels, scores = self.searches[item_type].search(query, k, exclude, (), item_query=True)
        t["index"] = time.perf_counter()
        items = self._items(item_type, labels, scores)
        if len(self.live):
            items = self._with_live(items, query, k, item_type, {item_id}, ())
        return _timed(Answer(items, "PERSONALIZED", "", self.version), t, "filter")

    def knows(self, item_id: str) -> bool:
        """In this version's catalogue, or taken in since it was published."""
        return bool(len(self._rows([item_id]))) or self.live.get(item_id) is not None

    def prepare_titles(self, items: Sequence[NewItem]) -> tuple[list[LiveEntry], int]:
        """Embed published titles (checked by serving.live.check_items) without taking
        them in yet (the caller logs them first, then :meth:`take_in`); returns the new
        titles with their vectors and how many were items already (in the catalogue, or
        published before with the same fields)."""
        new, existing = [], 0
        for item in items:
            if len(self._rows([item.item_id])):
                existing += 1
                continue
            before = self.live.get(item.item_id)
            if before is not None:
                if before.item != item:
                    raise AlreadyExists(
                        f"item_id {echo(item.item_id)} was published with other fields; a "
                        "live title is not edited (the next daily run takes the dataset's)"
                    )
                existing += 1
                continue
            new.append(item)
        if len(self.live) + len(new) > self.live.max_items:
            raise Overloaded(
                f"model {self.version} holds {len(self.live):,} of its {self.live.max_items:,} "
                "live titles (live_items); the next daily run takes them into the catalogue"
            )
        return [self.live_models.embed(item) for item in new], existing

    def take_in(self, entries: Sequence[LiveEntry]) -> int:
        """Add prepared titles to the live overlay; how many were new to it."""
        return sum(self.live.add(e) for e in entries)

    def _with_live(
        self,
        items: list[Item],
        query: np.ndarray,
        k: int,
        item_type: str,
        exclude: set[str],
        languages: Sequence[str],
    ) -> list[Item]:
        """``items`` (the index's answer, best first) merged by score with the best live
        titles of ``item_type``; ``k`` in all."""
        live = self.live.search(query, k, item_type, exclude, languages)
        if not live:
            return items
        merged = items + [Item(i, item_type, score, title) for i, title, score in live]
        merged.sort(key=lambda it: -it.score)  # stable: the index's order kept among ties
        return merged[:k]

    def _search(
        self,
        vector: np.ndarray,
        k: int,
        item_type: str,
        exclude_rows: np.ndarray,
        languages: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.searches[item_type].search(vector, k, exclude_rows, languages)

    def _fallback(self, k: int, item_type: str, languages: Sequence[str], reason: str) -> Answer:
        """Popular items: per requested language, then the global list restricted to those
        languages, then any further items in them (a language few people streamed
        lately still gets k answers). Cost O(k x languages + global list): every part is
        cut to k before it is joined, and languages are bounded and deduplicated."""
        art = self.artifact
        empty = np.empty(0, np.int64)
        ranked = art.popularity.get(("global", "", item_type), empty)
        scope = "global"
        if languages:
            per_language = [
                art.popularity.get(("language", lang, item_type), empty)[:k] for lang in languages
            ]
            in_languages = ranked[np.isin(art.languages[ranked], list(languages))][:k]
            rest = [
                art.label_rows[item_type][self.searches[item_type].by_language.get(lang, empty)[:k]]
                for lang in languages
            ]
            ranked = np.concatenate([*per_language, in_languages, *rest]).astype(np.int64)
            scope = f"language {', '.join(languages)}"
        _, first = np.unique(ranked, return_index=True)  # best rank first, no repeats
        rows = ranked[np.sort(first)][:k]
        items = [
            Item(str(art.item_ids[r]), item_type, float(1.0 / (i + 1)), str(art.titles[r]))
            for i, r in enumerate(rows)
        ]
        return Answer(
            items,
            "FALLBACK",
            f"{reason}: most popular {item_type}s ({scope}, last 28 days)",
            self.version,
        )

    def _items(self, item_type: str, labels: np.ndarray, scores: np.ndarray) -> list[Item]:
        # whole-array gathers, then plain lists: no numpy scalar per item and field
        art = self.artifact
        rows = art.label_rows[item_type][labels]
        return [
            Item(str(i), item_type, s, str(t))
            for i, s, t in zip(
                art.item_ids[rows].tolist(), scores.tolist(), art.titles[rows].tolist()
            )
        ]


def _check_deadline(deadline: float | None, where: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded(f"deadline passed {where}; the remaining stages were skipped")


def _timed(answer: Answer, t: dict[str, float], last: str) -> Answer:
    t[last] = t.get(last, time.perf_counter())
    stamps = list(t.items())
    answer.timings_ms = {
        name: round((b - a) * 1e3, 3) for (_, a), (name, b) in zip(stamps, stamps[1:])
    }
    return answer

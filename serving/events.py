"""Real-time events: what a stream, follow, preview or intent to pay does to the user's
online features, applied at once through Feast's push API.

For each user of a batch of events, :func:`apply_events` reads the row the next
Recommend would read (the ``user_online`` service: the 90-day window features and the
``user_recent`` state), adds the events with the batch job's window semantics
(training/features/windows.py) and returns the new rows, which :class:`Recorder` pushes
(``store.push(..., to=ONLINE)``) to the ``user_windows_push`` and ``user_recent_push``
sources:

- ``{t}_items_90d`` +1 for an item not yet in the user's window, and ``{t}_pref`` moves
  to the running mean with the item's HGNN embedding (read from the online store);
- ``{t}_streams_90d`` and the weak-signal counts +1 per event; ``weak_{t}_pref`` moves
  when the item is weakly signalled for the first time in the window;
- ``recent_events`` keeps the events since the model's cut (the stream filter and the
  idempotency keys), pruned as a newer cut covers them.

"New in the window" is decided against the artifact's window set (window.parquet: the
items the snapshot at the cut summarises) plus the recent events, so a batch value after
the next daily run equals the pushed one (the means exactly when every windowed item has
an HGNN embedding; the window's far end, events ageing out, is left to the batch).

Replays (same event id, or same (time, type, item)) are counted, not applied; events
older than the served model's cut are the batch's (counted as ``before_cut``); later
events apply in any order (counts and means over a set do not depend on it). Pushes never
reach the offline store: training reads only what the batch computed (point-in-time).
"""

from __future__ import annotations

import functools
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from pydantic import Field

from audiorec.config import StrictConfig
from audiorec.errors import InvalidRequest
from audiorec.featurestore import RECENT_EVENTS, Features
from audiorec.itemtypes import ItemTypes
from audiorec.vocabulary import EVENT_TYPES, WEAK_SIGNALS
from serving.artifact import Artifact
from serving.limits import RequestLimits, check_id, echo
from serving.live import LiveItems
from serving.push import Change, Rows

WEAK_TYPES = WEAK_SIGNALS
# which window count each event type adds to (declared ones only: itemtypes.py)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
COUNT_OF = {
    "stream": "{t}_streams_90d",
    "follow": "{t}_follow_count_90d",
    "preview": "{t}_preview_count_90d",
    "intent_to_pay": "{t}_intent_to_pay_count_90d",
}


class EventLimits(StrictConfig):
    max_events: int = Field(64, ge=1, le=10_000)  # per RecordEvents call
    max_future_s: float = Field(300.0, ge=0)  # clock skew allowed ahead of the server
    max_recent: int = Field(512, ge=1, le=100_000)  # recent events kept per user
    lock_stripes: int = Field(64, ge=1)  # per-user read-modify-write locks (one process)


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: str
    event_type: str
    ts_us: int
    event_id: str = ""

    @property
    def key(self) -> str:
        """The recent_events entry, and the idempotency key (without the time when an
        event id is given: a replay with another clock is still a replay)."""
        return f"{self.ts_us}|{self.event_type}|{self.item_id}|{self.event_id}"

    @property
    def dedup_key(self) -> str:
        return f"id|{self.event_id}" if self.event_id else self.key


def parse_recent(entries: Iterable[str] | None) -> list[Event]:
    """``recent_events`` entries back into events (the user is not part of them)."""
    out = []
    for entry in entries or ():
        ts, kind, item, event_id = entry.split("|", 3)
        out.append(Event("", item, kind, int(ts), event_id))
    return out


def check_events(
    raw: Sequence[Any],
    artifact: Artifact,
    limits: RequestLimits,
    ev: EventLimits,
    now_us: int,
    type_of: Callable[[str], str | None] | None = None,
) -> list[Event]:
    """Validated events (objects with user_id, item_id, event_type, timestamp_ms,
    event_id); the whole batch is refused with the first offence named. ``type_of``: an
    item's type, or None when the model does not know it (default: the catalogue's)."""
    type_of = type_of or functools.partial(catalogue_type, artifact)
    if not raw:
        raise InvalidRequest("events is empty; expected 1 or more events")
    if len(raw) > ev.max_events:
        raise InvalidRequest(
            f"events has {len(raw):,} entries; the limit is {ev.max_events} (max_events)"
        )
    out = []
    for i, e in enumerate(raw):
        where = f"events[{i}]"
        check_id(e.user_id, f"{where}.user_id", limits)
        check_id(e.item_id, f"{where}.item_id", limits)
        if e.event_id:
            check_id(e.event_id, f"{where}.event_id", limits)
        for name in ("user_id", "item_id", "event_id"):
            if "|" in getattr(e, name):
                raise InvalidRequest(f"{where}.{name} contains '|', which ids may not")
        if e.event_type not in EVENT_TYPES:
            raise InvalidRequest(
                f"{where}.event_type is {echo(e.event_type)}; expected one of "
                f"{', '.join(EVENT_TYPES)}"
            )
        if e.timestamp_ms < 0:
            raise InvalidRequest(f"{where}.timestamp_ms is negative; expected Unix ms, or 0: now")
        ts_us = now_us if e.timestamp_ms == 0 else int(e.timestamp_ms) * 1000
        if ts_us > now_us + ev.max_future_s * 1e6:
            raise InvalidRequest(
                f"{where}.timestamp_ms is {(ts_us - now_us) / 1e6:,.0f} s in the future; "
                f"the limit is {ev.max_future_s:g} s (max_future_s)"
            )
        if type_of(e.item_id) is None:
            raise InvalidRequest(
                f"{where}.item_id {echo(e.item_id)} is not in the catalogue of model "
                f"{artifact.version}"
            )
        out.append(Event(e.user_id, e.item_id, e.event_type, ts_us, e.event_id))
    return out


@dataclass
class Applied:
    """The rows to push for one batch, and what happened to its events."""

    windows: list[dict[str, Any]] = field(default_factory=list)
    recent: list[dict[str, Any]] = field(default_factory=list)
    recorded: int = 0
    duplicates: int = 0
    before_cut: int = 0


def apply_events(
    events: Sequence[Event],
    current: Features,
    embeddings: dict[str, np.ndarray | None],
    artifact: Artifact,
    cut_us: int,
    max_recent: int,
    type_of: Callable[[str], str | None] | None = None,
) -> Applied:
    """The new window and recent rows of the users of ``events``. ``current`` is the
    online read of those users (``{feature: [value per user]}``, users in first-seen
    order of ``events``); ``embeddings``: item id -> HGNN embedding (None: none online);
    ``type_of``: an item's type (default: the catalogue's; events name known items)."""
    types = artifact.types
    type_of = type_of or functools.partial(catalogue_type, artifact)
    columns = types.user_window_columns()
    users = list(dict.fromkeys(e.user_id for e in events))
    out = Applied()
    for u, user in enumerate(users):
        row = {name: current.get(name, [None] * len(users))[u] for name, _, _ in columns}
        state = _WindowState(artifact, type_of, user, row, current.get(RECENT_EVENTS, [None])[u])
        recent = [r for r in state.recent if r.ts_us >= cut_us]  # the cut covers the rest
        seen = {r.dedup_key for r in recent}
        last_ts = int(current.get("rt_last_ts_us", [None] * len(users))[u] or 0)
        writes = int(current.get("rt_writes", [None] * len(users))[u] or 0)
        applied = 0
        for e in sorted((e for e in events if e.user_id == user), key=lambda e: e.ts_us):
            if e.ts_us < cut_us:
                out.before_cut += 1
            elif e.dedup_key in seen:
                out.duplicates += 1
            else:
                state.add(e, embeddings.get(e.item_id))
                recent.append(e)
                seen.add(e.dedup_key)
                last_ts = max(last_ts, e.ts_us)
                applied += 1
        if not applied:
            continue
        out.recorded += applied
        writes += 1
        # Feast keeps a row only if it is newer than the stored one: strictly increasing,
        # past the batch snapshot at the cut, whatever order the events came in.
        ts = EPOCH + timedelta(microseconds=max(last_ts, cut_us) + writes)
        out.windows.append({"user_id": user, "event_timestamp": ts, **state.row})
        out.recent.append(
            {
                "user_id": user,
                "event_timestamp": ts,
                RECENT_EVENTS: [r.key for r in recent[-max_recent:]],
                "rt_last_ts_us": last_ts,
                "rt_writes": writes,
            }
        )
    return out


class _WindowState:
    """One user's window features and the item sets that say what is new in them, with
    each set's count of items per type (a new item's running mean divides by it): counted
    once, from the window's rows at once, and kept as items join."""

    def __init__(
        self,
        art: Artifact,
        type_of: Callable[[str], str | None],
        user: str,
        row: dict[str, Any],
        recent: Any,
    ):
        self.art, self.type_of, self.row = art, type_of, row
        self.recent = parse_recent(recent)
        rows, weak = art.window(user)
        self.items, self.counts = self._counted(rows, {r.item_id for r in self.recent})
        self.weak, self.weak_counts = self._counted(
            rows[weak], {r.item_id for r in self.recent if r.event_type in WEAK_TYPES}
        )

    def _counted(self, rows: np.ndarray, more: set[str]) -> tuple[set[str], Counter[str]]:
        """(the window ``rows``' items and ``more``, their count per type)."""
        rows = np.unique(rows)
        items = set(self.art.item_ids[rows].tolist())
        counts = Counter(self.art.item_types[rows].tolist())
        extra = more - items
        counts.update(self._type(i) for i in extra)
        return items | extra, counts

    def _type(self, item: str) -> str:
        return self.type_of(item) or ""  # "": an item no served model knows any more

    def _mean(self, name: str, n: int, vector: np.ndarray | None) -> None:
        if name not in self.row or vector is None:
            return
        old = self.row[name]
        old = np.zeros(len(vector), np.float64) if old is None or not len(old) else np.asarray(old)
        self.row[name] = ((old * n + vector) / (n + 1)).astype(np.float32).tolist()

    def add(self, e: Event, vector: np.ndarray | None) -> None:
        t = self._type(e.item_id)
        if e.item_id not in self.items:
            self._mean(f"{t}_pref", self.counts[t], vector)
            self._bump(f"{t}_items_90d")
            self.items.add(e.item_id)
            self.counts[t] += 1
        self._bump(COUNT_OF[e.event_type].format(t=t))
        if e.event_type in WEAK_TYPES and e.item_id not in self.weak:
            self._mean(f"weak_{t}_pref", self.weak_counts[t], vector)
            self.weak.add(e.item_id)
            self.weak_counts[t] += 1

    def _bump(self, name: str) -> None:
        if name in self.row:
            self.row[name] = int(self.row[name] or 0) + 1


class Recorder:
    """Records batches of events for one artifact version: validate, log, apply.

    ``transact(users, items, change)`` is the store's read-modify-write, bounded in
    time: it holds ``users`` against every other process (serving/user_lock.py), reads
    their rows and ``items``' embeddings, calls ``change(rows, {item: vector | None})``
    and writes the ``[(push source, rows)]`` it returns (serving/record_path.py);
    ``log(events)`` keeps the validated events before anything is applied
    (serving/accepted.py; raising refuses the batch). Events of one user are also applied
    under that user's lock stripe, so concurrent batches in this process queue here
    instead of on the store."""

    def __init__(
        self,
        artifact: Artifact,
        transact: Callable[[list[str], list[str], Change], None],
        limits: RequestLimits = RequestLimits(),
        event_limits: EventLimits = EventLimits(),
        dim: int = 0,
        log: Callable[[list[Event]], None] | None = None,
    ):
        self.artifact, self.transact = artifact, transact
        self.limits, self.event_limits = limits, event_limits
        self.cut_us = cut_us(artifact)
        self.dim = dim
        self.log = log
        # the titles published since the version (serving/live.py; the Recommender sets
        # it): their events are kept and applied like the catalogue's
        self.live: LiveItems | None = None
        self._locks = [threading.Lock() for _ in range(event_limits.lock_stripes)]

    def record(self, raw: Sequence[Any]) -> Applied:
        events = check_events(
            raw,
            self.artifact,
            self.limits,
            self.event_limits,
            int(time.time() * 1e6),
            self.type_of,
        )
        if self.log is not None:  # written ahead: what is applied is also kept
            self.log(events)
        users = list(dict.fromkeys(e.user_id for e in events))
        stripes = sorted({zlib.crc32(u.encode()) % len(self._locks) for u in users})
        for s in stripes:  # in one order everywhere: no deadlock
            self._locks[s].acquire()

        try:
            return self._apply(events, users)
        finally:
            for s in reversed(stripes):
                self._locks[s].release()

    def type_of(self, item_id: str) -> str | None:
        """The type of a catalogue item or a live title (None: neither)."""
        kind = catalogue_type(self.artifact, item_id)
        if kind is None and self.live is not None and (v := self.live.get(item_id)) is not None:
            return v.item.item_type
        return kind

    def _apply(self, events: list[Event], users: list[str]) -> Applied:
        """Read the users' rows, apply ``events``, push the new rows (in one
        ``transact``)."""
        from audiorec.featurestore import RECENT_PUSH, WINDOWS_PUSH

        ids = sorted({e.item_id for e in events})
        live = {i: self.live.get(i) for i in ids} if self.live is not None else {}
        result = [Applied()]  # what the last call of change applied

        def change(current: Features, embeddings: dict[str, Any]) -> list[tuple[str, Rows]]:
            embeddings.update({i: v.hgnn for i, v in live.items() if v is not None})
            applied = result[0] = apply_events(
                events,
                current,
                embeddings,
                self.artifact,
                self.cut_us,
                self.event_limits.max_recent,
                self.type_of,
            )
            if not applied.windows:
                return []
            dim = self.dim or _dim(embeddings)
            for row in applied.windows:
                _fill(row, self.artifact.types, dim)
            return [(WINDOWS_PUSH, applied.windows), (RECENT_PUSH, applied.recent)]

        self.transact(users, [i for i in ids if live.get(i) is None], change)
        return result[0]


def catalogue_type(artifact: Artifact, item_id: str) -> str | None:
    """The item's type in the version's catalogue (None: not in it)."""
    row = int(np.searchsorted(artifact.item_ids, item_id))
    if row >= len(artifact.item_ids) or artifact.item_ids[row] != item_id:
        return None
    return str(artifact.item_types[row])


def cut_us(artifact: Artifact) -> int:
    """The artifact's training cut in Unix microseconds."""
    cut = datetime.fromisoformat(str(artifact.manifest.data["cut"]))
    cut = cut if cut.tzinfo else cut.replace(tzinfo=timezone.utc)
    return (cut - EPOCH) // timedelta(microseconds=1)


def _dim(embeddings: dict[str, np.ndarray | None]) -> int:
    return next((len(v) for v in embeddings.values() if v is not None), 0)


def _fill(row: dict[str, Any], types: ItemTypes, dim: int) -> None:
    """Missing values as the batch's baseline row has them (zero vectors, zero counts):
    a push writes whole views."""
    for name, kind, _ in types.user_window_columns():
        if row.get(name) is None or (kind == "vector" and not len(row[name])):
            row[name] = [0.0] * dim if kind == "vector" else 0

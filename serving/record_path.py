"""Where RecordEvents' read-modify-write runs, and in how many round trips.

Each batch holds its users against every other process, reads their rows and the events'
items, applies the events (serving/events.py's ``change``) and writes the new rows:

- **On one Redis, on the request's own thread, in two round trips**, through one
  recorder shared by every request thread (serving/redis_record.py), when the Redis
  client's own timeouts bound both round trips within the store's write deadline
  (``2 x (connect_timeout_s + read_timeout_s) <= write_timeout_s``; that client retries
  nothing). A hand-off to a store thread and back costs two thread wake-ups, each about
  as long as a round trip on an idle machine.
- **On a store thread** (``OnlineFeatures.run``, bounded by ``write_timeout_s``) when a
  lock is held elsewhere, when ``write_timeout_s`` is tighter than the client's timeouts
  allow, and on SQLite: there in two round trips again on Redis if the locks are free by
  then, else under :class:`serving.user_lock.UserLocks`, waiting for them in order, one
  step at a time.

Failures reach the client as :class:`StoreUnavailable` with a short message either way
(no connection details); errors of the batch itself (:class:`AudiorecError`) pass as
they are.
"""

from __future__ import annotations

import threading
from typing import Callable

from audiorec.errors import AudiorecError, StoreUnavailable
from audiorec.featurestore import ITEM_SERVICE, RECENT_PUSH, WINDOWS_PUSH, OnlineFeatureReader
from serving.features import ITEM_EMBEDDING, ITEM_EMBEDDING_VIEW, OnlineFeatures, timed_out
from serving.push import Change, OnlinePusher
from serving.redis_record import RedisRecord, redis_record
from serving.user_lock import UserLocks

WHAT = "recording events"


class RecordPath:
    """``transact(users, items, change, project)``: the store's side of a RecordEvents
    (serving/events.py's ``Recorder``), exclusive across processes."""

    def __init__(self, features: OnlineFeatures, locks: UserLocks):
        self.features, self.locks = features, locks
        guard = features.guard
        self._inline_ok = 2 * (guard.connect_timeout_s + guard.read_timeout_s) <= (
            guard.write_timeout_s
        )
        # project -> the recorder the request threads share (None: not one Redis)
        self._shared: dict[str, RedisRecord | None] = {}
        self._local = threading.local()

    def prepare(self, project: str) -> None:
        """Build ``project``'s shared recorder now (after ``features.reader(project)``,
        which opens the shared reader): its push sources read the registry, tens of ms
        that the first event would otherwise pay."""
        inline = self.features.inline_reader(project)
        if inline is None or not self._inline_ok or project in self._shared:
            return
        store = inline.store
        pushers = _pushers(lambda s: OnlinePusher(store, s))
        try:
            items = OnlineFeatureReader(store, ITEM_SERVICE, views=(ITEM_EMBEDDING_VIEW,))
        except Exception:  # noqa: BLE001 - a project without it: the store threads say so
            pushers = None
        self._shared[project] = (
            None if pushers is None else self._record(inline, items, pushers, project)
        )

    def transact(self, users: list[str], items: list[str], change: Change, project: str) -> None:
        shared = self._shared.get(project)
        if shared is not None:
            try:
                if shared.transact(users, items, change):
                    return
            except AudiorecError:
                raise
            except Exception as exc:  # noqa: BLE001 - its text may hold connection details
                if timed_out(exc):
                    ms = self.features.guard.read_timeout_s * 1e3
                    raise StoreUnavailable(f"{WHAT}: no answer within {ms:.0f} ms") from None
                raise StoreUnavailable(f"{WHAT} failed: {type(exc).__name__}") from None
        self.features.run(lambda: self._on_store_thread(users, items, change, project), WHAT)

    def _on_store_thread(
        self, users: list[str], items: list[str], change: Change, project: str
    ) -> None:
        fused = self._threads_own(project)
        if fused is not None and fused.transact(users, items, change):
            return
        f = self.features
        with self.locks.hold(project, users):
            parts = change(f.read_users_now(users, project), f.read_items_now(items, project))
            f.push_now(parts, project)

    def _threads_own(self, project: str) -> RedisRecord | None:
        """This store thread's two-round-trip recorder of ``project`` (None: not one
        Redis, or a project applied before real time)."""
        own: dict[str, RedisRecord | None] | None = getattr(self._local, "own", None)
        if own is None:
            own = self._local.own = {}
        if project not in own:
            f = self.features
            pushers = _pushers(lambda s: f.pusher(project, s))
            if pushers is None:
                return None  # the general path says what is missing
            own[project] = self._record(
                f.user_reader(project), f.item_reader(project), pushers, project
            )
        return own[project]

    def _record(
        self,
        users: OnlineFeatureReader,
        items: OnlineFeatureReader,
        pushers: dict[str, OnlinePusher],
        project: str,
    ) -> RedisRecord | None:
        return redis_record(users, items, ITEM_EMBEDDING, pushers, project, self.locks.ttl_ms)


def _pushers(make: Callable[[str], OnlinePusher]) -> dict[str, OnlinePusher] | None:
    """The real-time push sources' pushers (None: a project applied before real time)."""
    try:
        return {s: make(s) for s in (WINDOWS_PUSH, RECENT_PUSH)}
    except Exception:  # noqa: BLE001 - no push sources
        return None

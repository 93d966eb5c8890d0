"""The online feature read of the request path: the ``user_tower`` service via Feast,
bounded in time and guarded by a circuit breaker.

- **No global lock.** Reads run on a small pool of reader threads, each with its own
  Feast store object (its own SQLite connection or Redis client), so reads proceed in
  parallel and one slow read never holds up the others.
- **Bounded by the deadline.** A request waits for its read at most
  ``min(read_timeout_s, time left before its deadline)``; the Redis client itself has
  connect and socket timeouts, so a hung Redis frees the reader thread soon after.
- **No hand-off where the client's own timeouts bound the read.** On Redis, a request
  whose deadline is further off than the longest read the client allows (a reconnect
  and a read: ``connect_timeout_s + read_timeout_s``, with the client's retries off)
  reads on its own thread, through one reader shared by every request thread (redis-py
  gives each thread its own connection): the hand-off to a reader thread and back cost
  more than the read itself (docs/benchmarks.md). Nearer deadlines, and SQLite, whose
  reads no client timeout bounds, go through the reader threads.
- **Fails fast.** ``breaker_failures`` timed-out or failed reads in a row open the
  breaker: requests then get FALLBACK without touching the store, while a background
  probe reads every ``probe_interval_s`` and closes the breaker on its first success.

Errors raised to the request path are :class:`StoreUnavailable` with a short message
that never carries connection strings (they may hold a password). Reads name the Feast
project (the online namespace of one feature generation) that the served artifact's
manifest names, so a model and its features always switch together.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
from pydantic import Field

from audiorec.config import StrictConfig
from audiorec.errors import AudiorecError, DeadlineExceeded, StoreUnavailable
from audiorec.featurestore import (
    DEFAULT_PROJECT,
    ITEM_SERVICE,
    ONLINE_SERVICE,
    RECENT_PUSH,
    USER_SERVICE,
    WINDOWS_PUSH,
    Features,
    FeatureStoreConfig,
    OnlineFeatureReader,
    caused_by,
    feature_service,
    open_store,
)
from serving.breaker import OPEN, CircuitBreaker
from serving.push import OnlinePusher, push_all

log = logging.getLogger("audiorec.serving")
T = TypeVar("T")
ITEM_EMBEDDING_VIEW, ITEM_EMBEDDING = "item_hgnn", "hgnn_embedding"
PROBE_USER = "__audiorec_probe__"


class StoreGuardConfig(StrictConfig):
    # One online read takes ~0.3-0.5 ms; 50 ms is a store in trouble.
    read_timeout_s: float = Field(0.05, gt=0, le=30)
    connect_timeout_s: float = Field(0.1, gt=0, le=30)  # Redis TCP connect
    readers: int = Field(4, ge=1, le=64)  # reader threads
    breaker_failures: int = Field(5, ge=1)  # failed reads in a row to open
    probe_interval_s: float = Field(0.5, gt=0, le=60)  # while open
    # a RecordEvents' reads and pushes (several round trips and Feast's write path)
    write_timeout_s: float = Field(0.5, gt=0, le=30)


def with_timeouts(cfg: FeatureStoreConfig, guard: StoreGuardConfig) -> FeatureStoreConfig:
    """The store config with Redis connect/socket timeouts added to the connection string
    (Feast passes its ``key=value`` parts to the redis client), unless already there."""
    if cfg.online != "redis":
        return cfg
    parts = cfg.redis.split(",")
    keys = {p.split("=", 1)[0].strip() for p in parts[1:] if "=" in p}
    extra = []
    if "socket_timeout" not in keys:
        extra.append(f"socket_timeout={guard.read_timeout_s}")
    if "socket_connect_timeout" not in keys:
        extra.append(f"socket_connect_timeout={guard.connect_timeout_s}")
    return cfg.model_copy(update={"redis": ",".join(parts + extra)})


class OnlineFeatures:
    """``features(user_id, deadline, project) -> {feature: [value]}`` (deadline: a
    ``time.monotonic()`` instant or None); :meth:`reader` binds the project."""

    def __init__(
        self,
        workdir: str | Path,
        cfg: FeatureStoreConfig = FeatureStoreConfig(),
        guard: StoreGuardConfig = StoreGuardConfig(),
        on_state: Callable[[bool], None] = lambda is_open: None,
    ):
        self.workdir, self.cfg, self.guard = workdir, with_timeouts(cfg, guard), guard
        self._probe_project = DEFAULT_PROJECT
        self._local = threading.local()
        self._pool = cf.ThreadPoolExecutor(guard.readers, thread_name_prefix="store-read")
        self._on_state = on_state
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        self._warming = False
        self.breaker = CircuitBreaker(guard.breaker_failures, on_change=self._changed)
        self._inline: dict[str, OnlineFeatureReader] = {}  # project -> shared Redis reader
        self._inline_bound_s = guard.connect_timeout_s + guard.read_timeout_s

    def served_features(self, project: str = DEFAULT_PROJECT) -> list[str]:
        """The user-tower service's feature names in ``project``, in order (the model's
        contract)."""
        service = feature_service(open_store(self.workdir, self.cfg, project), USER_SERVICE)
        return [f.name for p in service.feature_view_projections for f in p.features]

    def reader(self, project: str) -> Callable[[str, float | None], Features]:
        """The read function of ``project``, with every reader thread's store opened and
        read once first, untimed: opening one (registry, connection, service) and its first
        read (lazy imports, pages, the connection) take tens of ms, which inside a timed read
        on a busy machine would count as store failures and open the breaker. A store that
        is down now is not an error here: the breaker deals with it at request time."""
        self._probe_project = project
        barrier = threading.Barrier(self.guard.readers)

        def open_here() -> None:
            barrier.wait(timeout=60)  # one task per reader thread
            reader = self.user_reader(project)
            try:
                reader.read_row(PROBE_USER)
            except Exception:  # noqa: BLE001 - down or slow now: the breaker's business later
                log.warning("online store read failed while opening readers")
            for source in (WINDOWS_PUSH, RECENT_PUSH):  # the first event pays nothing extra
                try:
                    self.pusher(project, source)
                except Exception:  # noqa: BLE001 - a project applied before real time
                    pass

        for future in [self._pool.submit(open_here) for _ in range(self.guard.readers)]:
            future.result(timeout=120)
        if self.cfg.online == "redis" and project not in self._inline:
            inline = _inline_reader(self.workdir, self.cfg, project)
            if inline is not None:
                self._inline[project] = inline
        return functools.partial(self, project=project)

    def inline_reader(self, project: str) -> OnlineFeatureReader | None:
        """The reader of ``project`` shared by request threads, whose Redis client retries
        nothing (None: not opened by :meth:`reader`, or not one Redis)."""
        return self._inline.get(project)

    def _read(self, user_id: str, project: str) -> Features:
        return self.user_reader(project).read_row(user_id)

    def user_reader(self, project: str) -> OnlineFeatureReader:
        """This thread's reader of the users' rows (the online service) in ``project``."""
        readers = getattr(self._local, "readers", None)
        if readers is None:
            readers = self._local.readers = {}
        reader = readers.get(project)
        if reader is None:  # first read on this thread: its own store, its own connection
            store = open_store(self.workdir, self.cfg, project)
            try:  # the tower's features and the real-time state in one read
                reader = OnlineFeatureReader(store, ONLINE_SERVICE)
            except AudiorecError:  # a project applied before real time: the tower's only
                reader = OnlineFeatureReader(store, USER_SERVICE)
            readers[project] = reader
        return reader

    def _in_pool(self, fn: Callable[[], T], what: str) -> T:
        """``fn`` on a reader thread, bounded by ``write_timeout_s``; failures become a
        short :class:`StoreUnavailable` (no connection details)."""
        future = self._pool.submit(fn)
        try:
            return future.result(timeout=self.guard.write_timeout_s)
        except cf.TimeoutError:
            future.cancel()
            raise StoreUnavailable(
                f"{what}: no answer within {self.guard.write_timeout_s * 1e3:.0f} ms"
            ) from None
        except AudiorecError:
            raise
        except Exception as exc:  # noqa: BLE001 - its text may hold connection details
            raise StoreUnavailable(f"{what} failed: {type(exc).__name__}") from None

    def run(self, fn: Callable[[], T], what: str = "online store") -> T:
        """``fn`` on a reader thread within ``write_timeout_s`` (one hand-off for a whole
        read-modify-write: the real-time path calls the ``*_now`` methods inside it)."""
        return self._in_pool(fn, what)

    def read_users_now(self, user_ids: list[str], project: str) -> Features:
        """Several users' rows at once (the real-time path); on the calling thread."""
        return self.user_reader(project).read(user_ids)

    def read_items_now(self, item_ids: list[str], project: str) -> dict[str, Any]:
        """item id -> HGNN embedding (None where the store has none); on the calling
        thread."""
        vectors = self.item_reader(project).read(item_ids)[ITEM_EMBEDDING]
        return {
            i: (np.asarray(v, np.float64) if v is not None and len(v) else None)
            for i, v in zip(item_ids, vectors)
        }

    def item_reader(self, project: str) -> OnlineFeatureReader:
        """This thread's reader of the items' HGNN embeddings in ``project``."""
        readers = getattr(self._local, "item_readers", None)
        if readers is None:
            readers = self._local.item_readers = {}
        reader = readers.get(project)
        if reader is None:
            reader = readers[project] = OnlineFeatureReader(
                self.user_reader(project).store, ITEM_SERVICE, views=(ITEM_EMBEDDING_VIEW,)
            )
        return reader

    def push_now(self, parts: list[tuple[str, list[dict[str, Any]]]], project: str) -> None:
        """(push source, rows) pairs into the online store (never the offline store), all
        at once (serving/push.py, ``push_all``); on the calling thread."""
        push_all([(self.pusher(project, source), rows) for source, rows in parts])

    def pusher(self, project: str, source: str) -> OnlinePusher:
        """This thread's pusher of ``source`` in ``project``."""
        pushers = getattr(self._local, "pushers", None)
        if pushers is None:
            pushers = self._local.pushers = {}
        pusher = pushers.get((project, source))
        if pusher is None:  # resolving the push source reads the registry: ~15 ms
            pusher = pushers[(project, source)] = OnlinePusher(
                self.user_reader(project).store, source
            )
        return pusher

    def __call__(
        self, user_id: str, deadline: float | None = None, project: str = DEFAULT_PROJECT
    ) -> Features:
        if self.breaker.is_open:
            raise StoreUnavailable("circuit breaker open after repeated failures")
        inline = self._inline.get(project)
        if inline is not None and (
            deadline is None or deadline - time.monotonic() >= self._inline_bound_s
        ):
            return self._read_inline(inline, user_id)
        budget = self.guard.read_timeout_s
        if deadline is not None:
            budget = min(budget, deadline - time.monotonic())
        store_bound = budget >= self.guard.read_timeout_s  # else the client's deadline binds
        future = self._pool.submit(self._read, user_id, project)
        try:
            raw = future.result(timeout=max(budget, 0.0))
        except cf.TimeoutError:
            future.cancel()
            if not store_bound:  # the client's deadline, not the store, ran out
                raise DeadlineExceeded("deadline passed while reading features") from None
            self._failed("timeout")
            raise StoreUnavailable(f"no answer within {budget * 1e3:.0f} ms") from None
        except Exception as exc:  # noqa: BLE001 - its text may hold connection details
            self._failed(type(exc).__name__)
            raise StoreUnavailable(f"read failed: {type(exc).__name__}") from None
        self.breaker.success()
        return raw

    def _read_inline(self, reader: OnlineFeatureReader, user_id: str) -> Features:
        """The read on this thread, bounded by the Redis client's own timeouts."""
        try:
            raw = reader.read_row(user_id)
        except Exception as exc:  # noqa: BLE001 - its text may hold connection details
            slow = timed_out(exc)
            self._failed("timeout" if slow else type(exc).__name__)
            if slow:
                ms = self.guard.read_timeout_s * 1e3
                raise StoreUnavailable(f"no answer within {ms:.0f} ms") from None
            raise StoreUnavailable(f"read failed: {type(exc).__name__}") from None
        self.breaker.success()
        return raw

    @contextlib.contextmanager
    def warming(self) -> Iterator[None]:
        """Reads inside do not count against the store: a warm-up's first calls are slow
        for reasons of their own (tracing, paging in), not the store's. The breaker is
        closed, with nothing counted, on the way out."""
        self._warming = True
        try:
            yield
        finally:
            self._warming = False
            self.breaker.reset()

    def _failed(self, why: str) -> None:
        if self._warming:
            return
        if self.breaker.failure(why):
            self._start_prober()

    def _changed(self, state: str, why: str) -> None:
        level = logging.ERROR if state == OPEN else logging.WARNING
        log.log(
            level,
            f"online store circuit breaker {state}",
            extra={"fields": {"breaker": state, "why": why}},
        )
        self._on_state(state == OPEN)

    def _start_prober(self) -> None:
        def probe() -> None:
            while self.breaker.is_open and not self._stop.wait(self.guard.probe_interval_s):
                future = self._pool.submit(self._read, PROBE_USER, self._probe_project)
                try:
                    future.result(timeout=self.guard.read_timeout_s * 4)
                except Exception:  # noqa: BLE001 - still down: keep probing
                    future.cancel()
                    continue
                self.breaker.success()

        self._prober = threading.Thread(target=probe, name="store-probe", daemon=True)
        self._prober.start()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _inline_reader(
    workdir: str | Path, cfg: FeatureStoreConfig, project: str
) -> OnlineFeatureReader | None:
    """A reader of ``project`` for request threads: its Redis client retries nothing (its
    default retries back off for seconds), so a read takes at most a reconnect and a read
    (the connection string's timeouts). None of it connects yet: a store that is down now
    is the breaker's business at request time. None for a Redis cluster, whose client
    keeps its own redirect and retry rules (its reads go through the reader threads)."""
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    store = open_store(workdir, cfg, project)
    try:
        reader = OnlineFeatureReader(store, ONLINE_SERVICE)
    except AudiorecError:  # a project applied before real time: the tower's only
        reader = OnlineFeatureReader(store, USER_SERVICE)
    client = store._get_provider().online_store._get_client(store.config.online_store)
    if not isinstance(client, Redis):
        return None
    client.set_retry(Retry(NoBackoff(), 0))
    return reader


def timed_out(exc: BaseException | None) -> bool:
    import redis

    return caused_by(exc, (redis.exceptions.TimeoutError, TimeoutError))

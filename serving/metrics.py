"""Prometheus metrics of one server, in its own registry (no process globals).

* ``audiorec_request_seconds{rpc, strategy, code, arm}``: latency histogram per RPC, strategy
  and gRPC status code (buckets from 0.5 ms: the budget is milliseconds);
* ``audiorec_stage_seconds{stage}``: features, tower, index, filter;
* ``audiorec_fallback_total{reason}``: unknown_user / store_unavailable;
* ``audiorec_model_info{version, arm}``: 1 for the version each arm serves;
* ``audiorec_events_total{result}``: real-time events recorded / duplicate / before_cut;
* ``audiorec_reload_total{result}``: ok / refused;
* ``audiorec_store_breaker_open``: 1 while the online store's circuit breaker is open;
* ``audiorec_rejected_total{reason}``: calls refused before any work (unparseable,
  unauthenticated, overloaded).

Feast's import puts prometheus_client in multiprocess mode, where metric values live in
per-process files: two servers in one process (tests) share their counters.

The stage timings leave the request path: a call appends them to a deque, and a thread
(:meth:`Metrics.start`) writes them to the histogram every ``FLUSH_S``. In multiprocess
mode each observation is a locked write to a memory-mapped file per value and bucket,
four stages a call, which cost a paced call tens of microseconds. A scrape sees the stage
series at most ``FLUSH_S`` late, except a scrape of this process's own registry (the
``--metrics-port`` endpoint, :meth:`Metrics.exposition`), which writes them first; without
a started thread they are written at once, as every other series is.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

FLUSH_S = 0.05  # how often the stage timings reach their histogram
PENDING = 100_000  # stage timings held at most (500 calls a second fill 2,000 a second)
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)


class _FlushFirst:
    """Registered before every series: a collection of the registry (any scrape of it)
    writes the waiting stage timings before it reads them."""

    def __init__(self, flush: Any) -> None:
        self._flush = flush

    def collect(self) -> list[Any]:
        self._flush()
        return []


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_FlushFirst(self.flush))
        self.requests = Histogram(
            "audiorec_request_seconds",
            "Request latency",
            ["rpc", "strategy", "code", "arm"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "audiorec_stage_seconds",
            "Latency of one request stage",
            ["stage"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "audiorec_fallback_total",
            "Answers from popularity lists",
            ["reason"],
            registry=self.registry,
        )
        # Importing feast switches prometheus_client to multiprocess mode (it sets
        # PROMETHEUS_MULTIPROCESS_DIR), where labels cannot be cleared: the previous
        # version's series is set to 0 instead, and gauges need an aggregation mode.
        self.model = Gauge(
            "audiorec_model_info",
            "The artifact version being served (per A/B arm)",
            ["version", "arm"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self._versions: dict[str, str] = {}
        self.reloads = Counter(
            "audiorec_reload_total", "Artifact reload attempts", ["result"], registry=self.registry
        )

        self.breaker_open = Gauge(
            "audiorec_store_breaker_open",
            "1 while the online store's circuit breaker is open",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.breaker_open.set(0)
        self.events = Counter(
            "audiorec_events_total",
            "Real-time events by outcome",
            ["result"],
            registry=self.registry,
        )
        for result in ("recorded", "duplicate", "before_cut"):
            self.events.labels(result=result)
        self.rejected = Counter(
            "audiorec_rejected_total",
            "Calls refused before any work",
            ["reason"],
            registry=self.registry,
        )
        self.logged = Counter(
            "audiorec_log_records_total",
            "Records of the durable log (serving/accepted.py) by kind and outcome",
            ["kind", "result"],
            registry=self.registry,
        )
        self.items = Counter(
            "audiorec_items_total",
            "Titles published through RecordItems, by outcome (created: taken in now)",
            ["result"],
            registry=self.registry,
        )
        self._declare_known_series()
        # the request path's series, each resolved once: labels() is a locked lookup
        self._stage_series: dict[str, Any] = {}
        self._request_series: dict[tuple[str, str, str, str], Any] = {}
        # bounded: a flusher that stalled for minutes would lose the oldest timings only
        self._pending: collections.deque[tuple[str, float]] = collections.deque(maxlen=PENDING)
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def start(self) -> None:
        """Write the stage timings from a thread of their own from now on."""
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="metrics", daemon=True)
            self._flusher.start()

    def close(self) -> None:
        """Stop the thread, once what it holds is written."""
        if self._flusher is not None:
            self._stop.set()
            self._flusher.join(timeout=5)
            self._flusher = None
        self.flush()

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()

    def flush(self) -> None:
        """Write the waiting stage timings to their series."""
        pending = self._pending
        while pending:
            try:
                stage, seconds = pending.popleft()
            except IndexError:  # a scrape's flush took the last one meanwhile
                return
            self._stage(stage).observe(seconds)

    def _declare_known_series(self) -> None:
        """Every known series exists from the start (at 0): rates and alerts need them."""
        for result in ("created", "existing"):
            self.items.labels(result=result)
        for kind in ("events", "exposures", "items"):
            for result in ("written", "dropped"):
                self.logged.labels(kind=kind, result=result)
        for reason in ("unparseable", "unauthenticated", "overloaded"):
            self.rejected.labels(reason=reason)
        for reason in ("store_unavailable", "unknown_user"):
            self.fallbacks.labels(reason=reason)

    def observe_stage(self, stage: str, seconds: float) -> None:
        if self._flusher is not None:
            self._pending.append((stage, seconds))  # atomic: no lock, no wake-up
        else:
            self._stage(stage).observe(seconds)

    def _stage(self, stage: str) -> Any:
        series = self._stage_series.get(stage)
        if series is None:
            series = self._stage_series[stage] = self.stages.labels(stage=stage)
        return series

    def observe_request(self, rpc: str, strategy: str, code: str, arm: str, seconds: float) -> None:
        key = (rpc, strategy, code, arm)  # bounded: RPCs x strategies x status codes x arms
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = self.requests.labels(*key)
        series.observe(seconds)

    def serving(self, version: str, arm: str = "") -> None:
        old = self._versions.get(arm)
        if old is not None:
            self.model.labels(version=old, arm=arm).set(0)
        self.model.labels(version=version, arm=arm).set(1)
        self._versions[arm] = version

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

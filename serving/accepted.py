"""What the server accepted, kept: events written ahead of their effect, and every
Recommend answer as an exposure (audiorec/eventlog.py holds the format).

- **Events** are appended before they are applied to the online store: an event the
  client was told is recorded is in the log (the daily pipeline merges it into the
  dataset), and a full log refuses the call (RESOURCE_EXHAUSTED) rather than apply what
  it cannot keep. A crash between the append and the push leaves an event the client
  retries; its replay is a duplicate the merge removes.
- **Titles** published through RecordItems are appended with the vector they were given
  before any arm takes them in: other server processes, and this one after a restart,
  take them in from the log (serving/live_sync.py); the pipeline adds them to the
  dataset's items.
- **Exposures** (user, arm, its share, version, type, strategy, the items in rank order,
  time) leave the request path through a bounded deque that one thread takes in and
  writes every ``FLUSH_S``; when the deque or the log is full they are dropped and
  counted (``audiorec_log_records_total{kind="exposures",result="dropped"}``), never
  failing a call. A call only appends: a queue that woke the writer on every answer had
  it take the GIL from the calls in flight once per call (docs/benchmarks.md, "Server
  time against its primitives").
"""

from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path
from typing import Any, Sequence

from audiorec.eventlog import (
    EVENTS,
    EXPOSURES,
    ITEMS,
    LogConfig,
    LogFull,
    LogWriter,
    log_dir,
    now_ms,
)
from serving.events import Event
from serving.metrics import Metrics

log = logging.getLogger("audiorec.serving")
BATCH = 512  # exposures per write, at most
FLUSH_S = 0.05  # how often the writer takes in the waiting exposures


class AcceptedLog:
    def __init__(self, workdir: str | Path, cfg: LogConfig, metrics: Metrics):
        self.cfg, self.metrics = cfg, metrics
        directory = log_dir(workdir)
        self._events = LogWriter(directory, EVENTS, cfg)
        self._items = LogWriter(directory, ITEMS, cfg)
        self._exposures = LogWriter(directory, EXPOSURES, cfg) if cfg.exposures else None
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._exposures is not None:
            self._thread = threading.Thread(target=self._drain, name="exposures", daemon=True)
            self._thread.start()

    def events(self, events: Sequence[Event], version: str) -> None:
        """Append validated events (raises LogFull: the call must not apply them)."""
        now = now_ms()
        self._events.append(
            [
                {
                    "user_id": e.user_id,
                    "item_id": e.item_id,
                    "event_type": e.event_type,
                    "ts_us": e.ts_us,
                    "event_id": e.event_id,
                    "version": version,
                    "at_ms": now,
                }
                for e in events
            ]
        )
        self.metrics.logged.labels(kind=EVENTS, result="written").inc(len(events))

    def items(self, records: list[dict[str, Any]], version: str) -> None:
        """Append published titles with their vectors (raises LogFull: the call must not
        take them in). Other server processes read them from here (serving/live_sync.py),
        the daily pipeline merges them into the dataset's items."""
        now = now_ms()
        self._items.append([{**r, "version": version, "at_ms": now} for r in records])
        self.metrics.logged.labels(kind=ITEMS, result="written").inc(len(records))

    def exposure(self, record: dict[str, Any]) -> None:
        """One answer, off the request path (dropped and counted when the deque is full)."""
        if self._exposures is None:
            return
        if len(self._pending) >= self.cfg.exposure_queue:
            self.metrics.logged.labels(kind=EXPOSURES, result="dropped").inc()
            return
        record["ts_ms"] = now_ms()
        self._pending.append(record)  # atomic: no lock, no wake-up

    def close(self) -> None:
        """Write the exposures still waiting, then close every log."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
        self._events.close()
        self._items.close()
        if self._exposures is not None:
            self._exposures.close()

    def _drain(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self._write_pending()
        self._write_pending()  # what came in before close

    def _write_pending(self) -> None:
        assert self._exposures is not None
        while self._pending:
            batch: list[dict[str, Any]] = []
            while self._pending and len(batch) < BATCH:
                batch.append(self._pending.popleft())
            try:
                self._exposures.append(batch)
                self.metrics.logged.labels(kind=EXPOSURES, result="written").inc(len(batch))
            except (LogFull, OSError) as exc:
                self.metrics.logged.labels(kind=EXPOSURES, result="dropped").inc(len(batch))
                log.warning("exposures dropped", extra={"fields": {"why": str(exc)[:200]}})

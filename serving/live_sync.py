"""Titles published through any server process reach every process, and survive restarts.

RecordItems appends each title with its vector to the work directory's ``items`` log
(serving/accepted.py) before the answering process takes it in. :class:`LiveSync` reads
what the log gained since it last looked (byte offsets per segment, so a look costs only
the new lines) every ``interval_s`` and hands every title to each arm's current model: the
other processes of ``serve --processes N`` take a title within one interval, a restarted
server and a newly loaded version take in all of them before they answer (a version
whose data already holds a title skips it, as its catalogue has it).

A title logged under another version is embedded again with this version's models (the
vector is a version's); one this version cannot embed (published without the live
export) is skipped and counted.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from audiorec.errors import AudiorecError
from audiorec.eventlog import ITEMS, log_dir, read_records
from serving.live import LiveEntry, NewItem
from serving.recommender import Recommender
from serving.reload import ModelHolder

log = logging.getLogger("audiorec.serving")
FIELDS = ("item_id", "item_type", "title", "description", "language", "genre")


class LiveSync:
    def __init__(self, workdir: str | Path, arms: Sequence[tuple[str, ModelHolder]]):
        self.directory = log_dir(workdir)
        self.arms = arms
        self._offsets: dict[str, int] = {}
        self._records: list[dict[str, Any]] = []
        self._applied: dict[int, tuple[Recommender, int]] = {}  # id -> (model, records seen)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> int:
        """Read the log's new titles and give each arm's model those it has not seen;
        returns how many titles the models took in."""
        with self._lock:
            for segment, end, record in read_records(self.directory, ITEMS, self._offsets):
                self._offsets[segment] = end
                if all(isinstance(record.get(k), str) for k in FIELDS):
                    self._records.append(record)
            taken = 0
            for _, holder in self.arms:
                rec = holder.current
                _, seen = self._applied.get(id(rec), (rec, 0))
                taken += self._apply(rec, self._records[seen:])
                self._applied[id(rec)] = (rec, len(self._records))
            # forget models no arm serves any more (their id may be reused)
            live = {id(h.current) for _, h in self.arms}
            self._applied = {k: v for k, v in self._applied.items() if k in live}
            return taken

    def _apply(self, rec: Recommender, records: list[dict[str, Any]]) -> int:
        entries = []
        for r in records:
            item = NewItem(*(r[k] for k in FIELDS))
            if rec.knows(item.item_id):
                continue
            try:
                entries.append(_entry(rec, item, r))
            except AudiorecError as exc:
                log.warning(
                    "live title skipped",
                    extra={"fields": {"version": rec.version, "why": str(exc)[:200]}},
                )
        try:
            return rec.take_in(entries)
        except AudiorecError as exc:  # the overlay is full: the daily run takes the rest
            log.warning("live titles skipped", extra={"fields": {"why": str(exc)[:200]}})
            return 0

    def start(self, interval_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - a bad read must not stop the loop
                    log.exception("live title sync failed")

        self._thread = threading.Thread(target=loop, name="live-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _entry(rec: Recommender, item: NewItem, record: dict[str, Any]) -> LiveEntry:
    """The logged vectors when ``rec`` is the version that made them, else new ones."""
    vector, hgnn = record.get("vector"), record.get("hgnn")
    if (
        record.get("version") == rec.version
        and isinstance(vector, list)
        and isinstance(hgnn, list)
        and len(vector) == rec.artifact.vectors.shape[1]
    ):
        return LiveEntry(item, np.asarray(vector, np.float32), np.asarray(hgnn, np.float32))
    return rec.live_models.embed(item)

"""A durable, append-only log of what the server accepted: events, titles, exposures.

The server writes it (serving), the daily pipeline merges its events into the dataset
(training), the experiment readout reads its exposures: this base layer holds the one
format all three use.

Layout: ``<dir>/<kind>/<kind>-<UTC time>-<pid>-<n>.log`` (``kind``: ``events``,
``items`` or ``exposures``), one segment open per writer (so processes never interleave), rotated at
``segment_bytes``. A line is ``<crc32, 8 hex> <JSON>\\n``, written with one ``os.write``
of whole lines per call: a process that dies mid-write leaves at most a torn last line,
which readers skip (no newline, or a CRC that does not match), so a crash loses at most
the call in flight and never what came before. Written bytes survive a crash of the
process at once; ``fsync`` runs every ``fsync_interval_s`` (a power loss loses at most
that long).

The log of one kind is bounded by ``max_bytes``. A full log first drops segments that
the pipeline has merged completely (``merged.json``, byte offsets per segment) and that
no writer holds (each writer holds an ``flock`` on its open segment); if it is still
full, :class:`LogFull` (RESOURCE_EXHAUSTED) says so and what to do.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from pydantic import Field

from audiorec.config import StrictConfig
from audiorec.errors import AudiorecError

EVENTS = "events"
EXPOSURES = "exposures"
ITEMS = "items"  # titles published through RecordItems (serving/live.py)
KINDS = (EVENTS, EXPOSURES, ITEMS)
LEDGER = "merged.json"
SUFFIX = ".log"


class LogConfig(StrictConfig):
    enabled: bool = True  # off: an outside event pipeline keeps what the server accepts
    exposures: bool = True  # log every Recommend answer (the experiment readout's input)
    segment_bytes: int = Field(64 * 2**20, ge=4096)
    max_bytes: int = Field(4 * 2**30, ge=8192)  # per kind, all segments together
    fsync_interval_s: float = Field(1.0, gt=0, le=3600)
    exposure_queue: int = Field(10_000, ge=1)  # answers waiting to be written; more: dropped


class LogFull(AudiorecError):
    status = "RESOURCE_EXHAUSTED"


def log_dir(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / "log"


def encode(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def segments(directory: str | Path, kind: str) -> list[Path]:
    """A kind's segments, oldest first (the name starts with its creation time)."""
    folder = Path(directory) / kind
    return sorted(folder.glob(f"{kind}-*{SUFFIX}")) if folder.is_dir() else []


def read_ledger(directory: str | Path, kind: str) -> dict[str, int]:
    """segment name -> bytes merged from its start."""
    path = Path(directory) / kind / LEDGER
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return {}
    except (ValueError, AttributeError) as exc:
        raise AudiorecError(
            f"{path} is not a merge ledger ({exc}); remove it to re-merge"
        ) from None


def write_ledger(directory: str | Path, kind: str, ledger: dict[str, int]) -> None:
    path = Path(directory) / kind / LEDGER
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ledger, indent=0, sort_keys=True))
    os.replace(tmp, path)


def read_records(
    directory: str | Path, kind: str, start: dict[str, int] | None = None
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(segment, end offset, record)`` of every whole, intact line, oldest segment
    first; ``start``: segment name -> offset to read from (a ledger). Torn or corrupt
    lines are skipped."""
    start = start or {}
    for path in segments(directory, kind):
        offset = start.get(path.name, 0)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:  # dropped while we listed
            continue
        end = data.rfind(b"\n") + 1  # a torn tail (no newline yet) is not a line
        pos = 0
        for line in data[:end].split(b"\n")[:-1]:
            pos += len(line) + 1
            record = _decode(line)
            if record is not None:
                yield path.name, offset + pos, record


def _decode(line: bytes) -> dict[str, Any] | None:
    crc, _, body = line.partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class LogWriter:
    """Appends records of one kind; thread-safe; one open segment per writer."""

    def __init__(self, directory: str | Path, kind: str, cfg: LogConfig = LogConfig()):
        if kind not in KINDS:
            raise ValueError(f"unknown log kind {kind!r}")
        self.directory, self.kind, self.cfg = Path(directory), kind, cfg
        self.folder = self.directory / kind
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = -1
        self._path: Path | None = None
        self._size = 0
        self._n = 0
        self._dirty = False
        self._total = sum(p.stat().st_size for p in segments(directory, kind))
        self._stop = threading.Event()
        self._syncer = threading.Thread(target=self._sync_loop, name=f"log-{kind}", daemon=True)
        self._syncer.start()

    def append(self, records: list[dict[str, Any]]) -> None:
        """All of ``records`` in one write, or none (LogFull)."""
        data = b"".join(encode(r) for r in records)
        with self._lock:
            if self._fd < 0 or self._size + len(data) > self.cfg.segment_bytes:
                self._rotate()
            if self._total + len(data) > self.cfg.max_bytes:
                self._make_room(len(data))
            os.write(self._fd, data)
            self._size += len(data)
            self._total += len(data)
            self._dirty = True

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._close_segment()

    def _rotate(self) -> None:
        self._close_segment()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self._n += 1
        path = self.folder / f"{self.kind}-{stamp}-{os.getpid()}-{self._n}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        self._fd, self._path, self._size = fd, path, 0

    def _close_segment(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)  # releases the flock
            self._fd, self._dirty = -1, False

    def _make_room(self, need: int) -> None:
        """Drop merged segments nobody writes, oldest first, until ``need`` fits."""
        ledger = read_ledger(self.directory, self.kind)
        for path in segments(self.directory, self.kind):
            if self._total + need <= self.cfg.max_bytes:
                return
            if path == self._path or ledger.get(path.name, -1) < path.stat().st_size:
                continue
            if _unheld(path):
                self._total -= path.stat().st_size
                path.unlink()
        if self._total + need > self.cfg.max_bytes:
            raise LogFull(
                f"the {self.kind} log under {self.directory} is full "
                f"({_size(self._total)} of {_size(self.cfg.max_bytes)}, not yet merged): "
                "run the daily pipeline, which merges it, or raise log.max_bytes"
            )

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.cfg.fsync_interval_s):
            with self._lock:
                if self._dirty and self._fd >= 0:
                    os.fsync(self._fd)
                    self._dirty = False


def _unheld(path: Path) -> bool:
    """Whether no writer holds ``path`` (an open segment of some process)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def now_ms() -> int:
    return int(time.time() * 1000)

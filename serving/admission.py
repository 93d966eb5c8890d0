"""Capacity: at most ``active`` requests compute at once (the rest wait for a slot, never
past their deadline); beyond ``in_flight`` waiting or computing, calls are refused at once
(RESOURCE_EXHAUSTED), so a burst queues boundedly instead of piling up in gRPC's pool."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from audiorec.errors import DeadlineExceeded, Overloaded


class Admission:
    """At most ``active`` requests compute at once; at most ``in_flight`` wait or compute."""

    def __init__(self, active: int, in_flight: int):
        self._slots = threading.BoundedSemaphore(active)
        self._lock = threading.Lock()
        self._in_flight, self._max = 0, in_flight

    @contextmanager
    def enter(self, deadline: float | None) -> Iterator[None]:
        with self._lock:
            if self._in_flight >= self._max:
                raise Overloaded(
                    f"server at capacity ({self._max} calls in flight); retry with backoff"
                )
            self._in_flight += 1
        try:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not self._slots.acquire(timeout=wait):
                raise DeadlineExceeded("deadline passed while waiting for a free worker")
            try:
                yield
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._in_flight -= 1

"""Capacity: at most ``active`` requests compute at once (the rest wait for a slot, never
past their deadline); beyond ``in_flight`` waiting or computing, calls are refused at once
(RESOURCE_EXHAUSTED), so a burst queues boundedly instead of piling up in gRPC's pool."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from audiorec.errors import DeadlineExceeded, Overloaded


class Admission:
    """At most ``active`` requests compute at once; at most ``in_flight`` wait or compute."""

    def __init__(self, active: int, in_flight: int):
        self._slots = threading.BoundedSemaphore(active)
        self._lock = threading.Lock()
        self._in_flight, self._max = 0, in_flight

    def enter(self, deadline: float | None) -> _Slot:
        """``with admission.enter(deadline):`` the call's computation (a plain context
        manager, not a generator: it runs on every call)."""
        return _Slot(self, deadline)

    def _admit(self, deadline: float | None) -> None:
        with self._lock:
            if self._in_flight >= self._max:
                raise Overloaded(
                    f"server at capacity ({self._max} calls in flight); retry with backoff"
                )
            self._in_flight += 1
        wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._slots.acquire(timeout=wait):
            self._leave()
            raise DeadlineExceeded("deadline passed while waiting for a free worker")

    def _release(self) -> None:
        self._slots.release()
        self._leave()

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Slot:
    __slots__ = ("_admission", "_deadline")

    def __init__(self, admission: Admission, deadline: float | None):
        self._admission, self._deadline = admission, deadline

    def __enter__(self) -> None:
        self._admission._admit(self._deadline)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._admission._release()

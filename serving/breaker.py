"""A circuit breaker for the online store: after repeated failures, stop asking.

States: CLOSED (every read goes to the store), OPEN (no read goes to the store; requests
get FALLBACK at once). While OPEN a probe (a background read, see
:class:`serving.features.OnlineFeatures`) runs periodically; its first success closes the
breaker again. Thread-safe; transitions are reported through ``on_change``.
"""

from __future__ import annotations

import threading
from typing import Callable

CLOSED, OPEN = "closed", "open"


class CircuitBreaker:
    def __init__(
        self,
        failures_to_open: int = 5,
        on_change: Callable[[str, str], None] = lambda state, why: None,
    ):
        self.failures_to_open = failures_to_open
        self._on_change = on_change
        self._lock = threading.Lock()
        self._failures = 0
        self.state = CLOSED

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            if self.state == CLOSED:
                return
            self.state = CLOSED
        self._on_change(CLOSED, "a read succeeded")

    def reset(self) -> None:
        """Closed, with no failures counted (after a warm-up, whose slow first reads say
        nothing about the store)."""
        with self._lock:
            self._failures = 0
            was_open, self.state = self.state == OPEN, CLOSED
        if was_open:
            self._on_change(CLOSED, "reset after warm-up")

    def failure(self, why: str) -> bool:
        """Count one failed read; True when this failure opened the breaker."""
        with self._lock:
            self._failures += 1
            if self.state == OPEN or self._failures < self.failures_to_open:
                return False
            self.state = OPEN
        self._on_change(OPEN, f"{self.failures_to_open} failed reads in a row (last: {why})")
        return True

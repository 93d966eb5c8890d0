"""Hot reload: watch ``artifacts/current`` and swap to a new version without a gap.

A new version is loaded and validated completely (manifest, checksums, tower signature,
feature list against the feature service, indexes) on the watcher thread while the old
one keeps serving; then one attribute assignment swaps them (atomic under the GIL), so an
in-flight request finishes on the version it started with. A version that fails to load
is logged and refused once; the old one keeps serving until ``current`` moves again.
The processes of one group (``serve --processes N``) take turns at loading, through a
lock file (:func:`turn`), so that a swap never loads on every core at once beside the
calls in flight; each keeps serving its old version until its own turn has loaded.

At start-up, when ``current`` does not load (a refused or damaged version), the newest
other version that does load is served instead, loudly (an ERROR line naming both), so a
bad publish never keeps a restarted server down; ``audiorec rollback`` then moves
``current`` for good.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from audiorec.artifact import artifacts_root, current_version, list_versions
from audiorec.errors import ContractError
from serving.recommender import Recommender
from serving.user_lock import flock_until

log = logging.getLogger("audiorec.serving")
# a peer's load takes seconds; past this, load anyway (a stuck peer never holds up a swap)
TURN_WAIT_S = 60.0


@contextlib.contextmanager
def turn(path: str | None, wait_s: float = TURN_WAIT_S) -> Iterator[None]:
    """The block runs holding an exclusive lock on the file ``path`` (None: no lock),
    after waiting at most ``wait_s`` for it. The kernel drops the lock of a process that
    dies, so a crashed peer never leaves it taken."""
    if path is None:
        yield
        return
    with open(path, "a") as f:
        if not flock_until(f, time.monotonic() + wait_s, 0.02):
            log.warning("loading without a turn: a peer held it too long")
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class ModelHolder:
    """The recommender being served, and the watcher that replaces it."""

    def __init__(
        self,
        workdir: str | Path,
        build: Callable[[Path], Recommender],
        on_swap: Callable[[str], None] = lambda v: None,
        on_refused: Callable[[str, str], None] = lambda v, e: None,
        pinned: str | None = None,
        load_lock: str | None = None,
    ):
        """``pinned``: serve that version only (an A/B arm fixed to a version; versions
        never change once published, so there is nothing to reload). ``load_lock``: the
        file a group's processes take turns on to load a new version (:func:`turn`)."""
        self.workdir = Path(workdir)
        self.pinned = pinned
        self.load_lock = load_lock
        self._build = build
        self._on_swap, self._on_refused = on_swap, on_refused
        self._refused: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: Recommender = self._first_loadable()
        on_swap(self.current.version)

    def _first_loadable(self) -> Recommender:
        if self.pinned is not None:
            if self.pinned not in list_versions(self.workdir):
                raise ContractError(
                    f"version {self.pinned[:100]!r} is not published under "
                    f"{artifacts_root(self.workdir)} (audiorec rollback --list shows them)"
                )
            return self._build(artifacts_root(self.workdir) / self.pinned)
        wanted = current_version(self.workdir)
        versions = list_versions(self.workdir)
        if wanted is None and not versions:
            raise ContractError(
                f"no published artifact under {artifacts_root(self.workdir)} "
                "(run: audiorec pipeline --data DIR --workdir W)"
            )
        first_error: Exception | str = "artifacts/current is missing or unreadable"
        if wanted is not None:
            try:
                return self._build(artifacts_root(self.workdir) / wanted)
            except Exception as exc:  # noqa: BLE001 - try the older versions before giving up
                first_error = exc
            self._refused = wanted
        for version in reversed(versions):
            if version == wanted:
                continue
            try:
                rec = self._build(artifacts_root(self.workdir) / version)
            except Exception:  # noqa: BLE001 - try the next older one
                continue
            log.error(
                "current artifact version does not load; serving an older one (run "
                "audiorec rollback to make it current)",
                extra={
                    "fields": {
                        "current": wanted,
                        "error": str(first_error)[:500],
                        "serving": version,
                    }
                },
            )
            return rec
        raise ContractError(
            f"the current artifact version {wanted} does not load "
            f"({first_error}) and no other version does either"
        )

    def check_now(self) -> bool:
        """Swap if ``current`` names another loadable version; True when swapped."""
        version = current_version(self.workdir)
        if self.pinned is not None:
            return False
        if version is None or version == self.current.version or version == self._refused:
            return False
        try:
            with turn(self.load_lock):
                new = self._build(artifacts_root(self.workdir) / version)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old version serving
            self._refused = version
            log.error(
                "refused artifact version",
                extra={
                    "fields": {
                        "version": version,
                        "error": str(exc),
                        "serving": self.current.version,
                    }
                },
            )
            self._on_refused(version, str(exc))
            return False
        old, self.current = self.current.version, new
        log.info("swapped artifact version", extra={"fields": {"from": old, "to": version}})
        self._on_swap(version)
        return True

    def start(self, interval_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.check_now()

        self._thread = threading.Thread(target=loop, name="artifact-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

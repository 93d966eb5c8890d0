"""A user's real-time read-modify-write, exclusive across server processes.

``RecordEvents`` reads a user's online row, adds the events and pushes the new row
(serving/events.py). Inside one process a lock stripe per user serialises that; two
processes (``audiorec serve --processes N``, or replicas sharing one Redis) recording the
same user at the same instant would otherwise both read the old row and the later push
would drop the other's events. The lock is held by the online store's own side:

- **Redis**: one key per (feature project, user), ``SET key token NX PX ttl``; released by
  a script that deletes it only if it still holds this holder's token. The time-to-live
  frees the lock of a process that died holding it. Keys are taken in sorted order, so
  two batches of several users never wait on each other in a cycle.
- **SQLite** (one machine by definition): ``flock`` on a lock file per stripe of users
  beside the database, also in sorted order.

Either way, waiting is bounded (``timeout_s``): past it the batch fails with
:class:`StoreUnavailable`, which the client sees as UNAVAILABLE (retry), never as a lost
update.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

from audiorec.errors import StoreUnavailable
from audiorec.featurestore import FeatureStoreConfig

STRIPES = 64  # lock files of the SQLite store: users share one by hash
RELEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1]) else return 0 end"""


def lock_keys(project: str, users: list[str]) -> list[str]:
    """The Redis lock keys of ``users`` in ``project``, in the one order every holder
    takes them (sorted)."""
    return [f"audiorec:lock:{project}:{u}" for u in sorted(set(users))]


def new_token() -> str:
    """A holder's token: only the holder that set a lock deletes it."""
    return secrets.token_hex(8)


def flock_until(fd: Any, deadline: float, poll_s: float) -> bool:
    """Take an exclusive ``flock`` on ``fd`` (a descriptor or file), trying every
    ``poll_s`` until the ``time.monotonic()`` instant ``deadline``; whether it was taken."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)


class UserLocks:
    """``hold(project, users)``: a context in which no other process records those users."""

    def __init__(
        self,
        workdir: str | Path,
        cfg: FeatureStoreConfig,
        timeout_s: float = 0.5,
        ttl_s: float = 5.0,
    ):
        self.cfg, self.timeout_s, self.ttl_ms = cfg, timeout_s, int(ttl_s * 1000)
        self.lock_dir = Path(workdir).resolve() / "feast" / "locks"
        self._client: Any = None

    @contextlib.contextmanager
    def hold(self, project: str, users: list[str]) -> Iterator[None]:
        if self.cfg.online == "redis":
            with self._redis(project, users):
                yield
        else:
            with self._files(users):
                yield

    @contextlib.contextmanager
    def _files(self, users: list[str]) -> Iterator[None]:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        stripes = sorted({zlib.crc32(u.encode()) % STRIPES for u in users})
        held: list[int] = []
        deadline = time.monotonic() + self.timeout_s
        try:
            for stripe in stripes:
                fd = os.open(self.lock_dir / f"{stripe:02d}.lock", os.O_CREAT | os.O_RDWR, 0o600)
                held.append(fd)
                if not flock_until(fd, deadline, 0.0005):
                    raise StoreUnavailable(
                        "recording events: another process holds this user's lock"
                    )
            yield
        finally:
            for fd in reversed(held):
                os.close(fd)  # closing releases the flock

    @contextlib.contextmanager
    def _redis(self, project: str, users: list[str]) -> Iterator[None]:
        client = self._redis_client()
        token = new_token()
        keys = lock_keys(project, users)
        held: list[str] = []
        deadline = time.monotonic() + self.timeout_s
        try:
            for key in keys:
                while not client.set(key, token, nx=True, px=self.ttl_ms):
                    if time.monotonic() > deadline:
                        raise StoreUnavailable(
                            "recording events: another process holds this user's lock"
                        )
                    time.sleep(0.0005)
                held.append(key)
            yield
        finally:
            for key in reversed(held):
                try:
                    client.eval(RELEASE, 1, key, token)
                except Exception:  # noqa: BLE001 - the time-to-live frees it anyway
                    pass

    def _redis_client(self) -> Any:
        """One client (thread-safe, pooled) from the store's connection string."""
        if self._client is None:
            self._client = redis_client(self.cfg)
        return self._client


def redis_client(cfg: FeatureStoreConfig) -> Any:
    """A redis-py client for Feast's connection string ``host:port[,key=value...]``
    (password, db, ssl, socket timeouts), a cluster client for a Redis Cluster."""
    import redis

    first, *options = [p.strip() for p in cfg.redis.split(",") if p.strip()]
    host, _, port = first.rpartition(":")
    kwargs: dict[str, Any] = {}
    for option in options:
        key, _, value = option.partition("=")
        if key in ("socket_timeout", "socket_connect_timeout"):
            kwargs[key] = float(value)
        elif key == "db":
            kwargs[key] = int(value)
        elif key == "ssl":
            kwargs[key] = value.lower() == "true"
        elif key in ("password", "username"):
            kwargs[key] = value
    kwargs.setdefault("socket_timeout", 0.5)
    kwargs.setdefault("socket_connect_timeout", 0.5)
    if cfg.redis_cluster:
        kwargs.pop("db", None)
        return redis.RedisCluster(host=host or "localhost", port=int(port), **kwargs)
    return redis.Redis(host=host or "localhost", port=int(port), **kwargs)

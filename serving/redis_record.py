"""RecordEvents' read-modify-write of one batch on Redis in two round trips.

The general path (:meth:`serving.features.OnlineFeatures.record_now`) takes the users'
locks (serving/user_lock.py), reads their rows, reads the items' embeddings, reads the
pushed views' stored timestamps, writes the newer rows and releases the locks: seven
round trips, and on a lightly loaded machine each reply wakes an idle thread
(docs/benchmarks.md, "The cost of waking from idle"). On one Redis (not a cluster) every
command of a batch goes over one connection, and Redis runs one connection's commands in
order, so the same work fits in two:

1. one pipeline: ``SET lock token NX PX ttl`` for each user (the order of
   :func:`serving.user_lock.lock_keys`), then each user's HMGET (the online service's
   fields and the pushed views' timestamps) and each item's HMGET (its embedding);
2. the change is computed from what was read;
3. one pipeline: the HSETs of the rows newer than the stored ones (Feast's rule,
   serving/push.py) and then each lock's release, which deletes only this holder's token.

A read queued after a successful ``SET NX`` on the same connection sees every write of
the lock's previous holder: that holder's writes come before its release in its own
pipeline. If any lock is held elsewhere, the locks taken are released, nothing is
written, and :meth:`RedisRecord.transact` says so: the caller takes the general path,
which waits for the locks in order. The time-to-live frees a lock whose holder died
between the two pipelines, as on the general path.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from audiorec.featurestore import OnlineFeatureReader
from audiorec.redis_row import KeyEncoder
from serving.push import Change, OnlinePusher, queue_newer, redis_rows, ts_field, user_key
from serving.user_lock import RELEASE, lock_keys, new_token

log = logging.getLogger("audiorec.serving")


class RedisRecord:
    """``transact(users, items, change)`` in two round trips on ``client`` (one Redis, not
    a cluster). ``users``: the reader of the users' rows (the online service); ``items``:
    the reader of the items' embedding (``embedding``, its one feature); ``pushers``: the
    push sources ``change`` may name; ``lock_ttl_ms``: the locks' time-to-live (as
    :class:`serving.user_lock.UserLocks` sets them)."""

    def __init__(
        self,
        client: Any,
        users: OnlineFeatureReader,
        items: OnlineFeatureReader,
        embedding: str,
        pushers: dict[str, OnlinePusher],
        project: str,
        lock_ttl_ms: int,
    ):
        self.client, self.users, self.items, self.embedding = client, users, items, embedding
        self.pushers, self.project, self.lock_ttl_ms = pushers, project, lock_ttl_ms
        self.config = users.store.config
        self.key_ttl = self.config.online_store.key_ttl_seconds
        # every pushed view's stored name: their timestamps are read with the user's row
        from feast.infra.online_stores.redis import _versioned_fv_name

        self._views = [
            _versioned_fv_name(view, self.config) for p in pushers.values() for view in p.views
        ]
        self._ts_fields = [ts_field(name) for name in self._views]
        self._n_fields = len(users.hmget_args("")[1])
        # the rows are written under the keys Feast's write computes, and their stored
        # timestamps were read under the reader's: the two must be the same bytes
        for user in KeyEncoder.PROBES:
            if self.users.hmget_args(user)[0] != user_key(self.config, user):
                raise ValueError("the reader's and the push's Redis keys differ")

    def transact(self, users: list[str], items: list[str], change: Change) -> bool:
        """Lock ``users``, read their rows and ``items``' embeddings, write what ``change``
        returns, release: True. False when another holder has one of the users' locks:
        then nothing was read into ``change`` and nothing was written."""
        token, keys = new_token(), lock_keys(self.project, users)
        user_keys = [self.users.hmget_args(u) for u in users]
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(key, token, nx=True, px=self.lock_ttl_ms)
                for row_key, fields in user_keys:
                    pipe.hmget(row_key, [*fields, *self._ts_fields])
                for item in items:
                    pipe.hmget(*self.items.hmget_args(item))
                replies = pipe.execute()
        except BaseException:
            self._release(keys, token)  # the locks may have been set, the replies lost
            raise
        taken = [k for k, ok in zip(keys, replies) if ok]
        if len(taken) < len(keys):
            self._release(taken, token)
            return False
        try:
            row_keys = [k for k, _ in user_keys]
            self._write(row_keys, items, replies[len(keys) :], change, keys, token)
        except BaseException:
            self._release(keys, token)  # the write pipeline may not have reached them
            raise
        return True

    def _write(
        self,
        row_keys: list[bytes],
        items: list[str],
        replies: list[Any],
        change: Change,
        keys: list[str],
        token: str,
    ) -> None:
        """``change`` on the rows read (under ``row_keys``, the users' in order), then one
        pipeline: the newer rows, the releases."""
        n = self._n_fields
        rows = replies[: len(row_keys)]
        current = self.users.from_replies([reply[:n] for reply in rows])
        stored = {
            (key, name): reply[n + j]
            for key, reply in zip(row_keys, rows)
            for j, name in enumerate(self._views)
        }
        vectors = self.items.from_replies(replies[len(row_keys) :])[self.embedding]
        embeddings = {
            i: (np.asarray(v, np.float64) if v is not None and len(v) else None)
            for i, v in zip(items, vectors)
        }
        batches = [
            b
            for source, part in change(current, embeddings)
            if part
            for b in self.pushers[source].batches(part)
        ]
        out = redis_rows(self.config, batches)
        with self.client.pipeline(transaction=False) as pipe:
            queue_newer(pipe, out, [stored[(k, name)] for k, name, _, _ in out], self.key_ttl)
            for key in keys:
                pipe.eval(RELEASE, 1, key, token)
            pipe.execute()

    def _release(self, keys: list[str], token: str) -> None:
        """Best effort: the time-to-live frees whatever this cannot."""
        if not keys:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.eval(RELEASE, 1, key, token)
                pipe.execute()
        except Exception:  # noqa: BLE001 - the time-to-live frees them anyway
            pass


def redis_record(
    users: OnlineFeatureReader,
    items: OnlineFeatureReader,
    embedding: str,
    pushers: dict[str, OnlinePusher],
    project: str,
    lock_ttl_ms: int,
) -> RedisRecord | None:
    """The two-round-trip recorder over the readers' store, or None where it does not
    apply: not Redis, a Redis cluster (a batch's keys live on several nodes, whose order
    no one connection keeps), or keys that do not match."""
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis import Redis

    online = users.store._get_provider().online_store
    if not isinstance(online, RedisOnlineStore):
        return None
    client = online._get_client(users.store.config.online_store)
    if not isinstance(client, Redis):
        return None
    try:
        return RedisRecord(client, users, items, embedding, pushers, project, lock_ttl_ms)
    except ValueError:
        log.warning("the two-round-trip record path is off: Feast's Redis keys differ")
        return None

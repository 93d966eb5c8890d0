"""The primitives of a `Recommend`, timed on their own, for bench_serving.py's ratio.

A call's primitives: one read of the user's row through the store's own client (redis-py
HGETALL of Feast's key; SQLite: one SELECT per view table), one user-tower pass (the
runtime the server uses), one item-index query (k=10; the mean over the item types the
load alternates between) and the request's filter (the user's consumed items, looked up).

Each is timed twice:
- **hot**: back to back, a few hundred times (the classic micro-benchmark);
- **paced**: one call every ``1 / rate`` seconds, the load's own spacing. On this 2-core
  VM a call that follows an idle gap runs on cold caches and a woken core: a 0.07 ms
  HGETALL takes 0.10 ms at 3 ms gaps and 0.39 ms at 33 ms gaps
  (docs/benchmarks.md, "Server time against its primitives"). A server under an open-loop
  load at that rate pays the same, so this is the like-for-like denominator.

Beside them, for reference: the same row through Feast's SDK, and the whole request path
in this process without gRPC (``recommender_ms``), hot and paced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

N_HOT, N_PACED = 300, 150


def median_ms(fn: Callable[[Any], Any], items: list[Any], gap_s: float = 0.0) -> float:
    """Median ms of ``fn(x)`` over ``items`` (after 20 warm-up calls), ``gap_s`` apart."""
    for x in items[:20]:
        fn(x)
    times = []
    for x in items:
        if gap_s:
            time.sleep(gap_s)
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e3, 4)


class Primitives:
    """The primitives of one work directory's current version, ready to time."""

    def __init__(self, wd: Path, redis_url: str | None, warm: list[str], types: tuple[str, ...]):
        from audiorec.artifact import current_dir, feature_project, read_manifest
        from audiorec.featurestore import FeatureStoreConfig, OnlineFeatureReader, open_store
        from audiorec.tower_inputs import tower_inputs
        from serving.artifact import Artifact
        from serving.recommender import Recommender

        art = Artifact.load(current_dir(wd))
        project = feature_project(read_manifest(current_dir(wd), verify_files=False))
        cfg = (
            FeatureStoreConfig(online="redis", redis=redis_url)
            if redis_url
            else FeatureStoreConfig()
        )
        store = open_store(wd, cfg, project)
        self.warm, self.tower_runtime = warm, art.tower.runtime
        self.read = _store_read(wd, store, project, redis_url, warm)
        reader = OnlineFeatureReader(store)
        inputs = [tower_inputs(reader.read([u]), art.manifest.user_features) for u in warm[:100]]
        self.inputs = inputs * 3
        self.tower = art.tower
        vectors = [art.tower(x)[0] for x in inputs] * 3
        self.queries = [(art.indexes[t], v) for v in vectors for t in types if t in art.indexes]
        self.consumed = art.consumed
        self.feast = lambda u: reader.read_sdk([u])
        rec = Recommender(art, lambda u, d: reader.read([u]))
        self.recommend = lambda call: rec.recommend(call[0], 10, call[1])
        self.calls = [(u, types[i % len(types)]) for i, u in enumerate(warm * 2)]

    def time(self, gap_s: float = 0.0) -> dict[str, float]:
        """Median ms of each primitive, ``gap_s`` between calls; ``sum_ms`` adds the four."""
        n = N_PACED if gap_s else N_HOT
        users = (self.warm * 2)[:n]
        out = {
            "store_read_ms": median_ms(self.read, users, gap_s),
            "tower_ms": median_ms(self.tower, self.inputs[:n], gap_s),
            "index_ms": median_ms(lambda q: q[0].search(q[1], 10), self.queries[:n], gap_s),
            "filter_ms": median_ms(self.consumed, users, gap_s),
        }
        out["sum_ms"] = round(sum(out.values()), 4)
        # the whole request path in this process, no gRPC
        out["recommender_ms"] = median_ms(self.recommend, self.calls[:n], gap_s)
        return out


def _store_read(
    wd: Path, store: Any, project: str, redis_url: str | None, users: list[str]
) -> Callable[[str], Any]:
    """user id -> one read of the user's row through the store's own client (the keys of
    ``users`` encoded beforehand: only the read is timed)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    def key(u: str) -> Any:
        return EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=u)])

    if redis_url:
        import redis

        host, port = redis_url.split(",")[0].split(":")
        client = redis.Redis(host=host, port=int(port))
        rkeys = {u: _redis_key(project, key(u), entity_key_serialization_version=3) for u in users}
        return lambda u: client.hgetall(rkeys[u])  # type: ignore[arg-type]
    import sqlite3

    con = sqlite3.connect(str(wd / "feast" / "online.db"), check_same_thread=False)
    views = [v.name for v in store.list_feature_views() if v.name.startswith("user_")]

    binkeys = {u: serialize_entity_key(key(u), entity_key_serialization_version=3) for u in users}

    def read(u: str) -> None:
        for view in views:
            con.execute(
                f'SELECT feature_name, value FROM "{project}_{view}" WHERE entity_key = ?',
                (binkeys[u],),
            ).fetchall()

    return read


def primitives(
    wd: Path,
    redis_url: str | None,
    users: list[tuple[str, str]],
    rates: list[float],
    types: tuple[str, ...] = ("audiobook", "podcast"),
) -> dict[str, Any]:
    """Hot medians (flat keys, as before) plus ``paced``: {rate: medians at 1/rate gaps}."""
    p = Primitives(wd, redis_url, [u for u, g in users if g == "warm"][:N_HOT], types)
    out: dict[str, Any] = {**p.time(), "tower_runtime": p.tower_runtime}
    out["feast_read_ms"] = median_ms(p.feast, p.warm)  # for reference: Feast's SDK
    out["paced"] = {str(r): p.time(1.0 / r) for r in rates}
    return out

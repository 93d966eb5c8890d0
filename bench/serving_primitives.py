"""The primitives of a `Recommend`, timed on their own, for bench_serving.py's ratio.

A call's primitives: one read of the user's row through the store's own client (redis-py
HGETALL of Feast's key; SQLite: one SELECT per view table), one user-tower pass (the
runtime the server uses), one item-index query (k=10; the queries alternate between the
item types, as the load's calls do) and the request's filter (the user's consumed items,
looked up).

Each is timed twice:
- **hot**: back to back, a few hundred times (the classic micro-benchmark);
- **paced**: every ``1 / rate`` seconds, the load's own spacing, one call of each
  primitive in a request's order, each timed on its own. On this 2-core VM a call that
  follows an idle gap runs on cold caches and a woken core, and costs several times its
  back-to-back time (docs/benchmarks.md, "Server time against its primitives"); a server
  under an open-loop load at that rate pays the same, so this is the like-for-like
  denominator.

Beside them, for reference: the same row through Feast's SDK, and the whole request path
in this process without gRPC (``recommender_ms``), hot and paced.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

N_PACED = 300  # ticks per rate


def median_ms(fn: Callable[[Any], Any], items: list[Any]) -> float:
    """Median ms of ``fn(x)`` over ``items``, back to back (after 20 warm-up calls)."""
    for x in items[:20]:
        fn(x)
    times = []
    for x in items:
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e3, 4)


def paced_medians_ms(
    calls: dict[str, tuple[Callable[[Any], Any], list[Any]]], n: int, gap_s: float
) -> dict[str, float]:
    """Median ms of each ``name: (fn, items)`` over ``n`` ticks ``gap_s`` seconds apart,
    each tick calling (and timing) every one in turn: as a request at that rate runs its
    stages, one after the other, its user's data through all of them. ``gap_s`` 0: the
    ticks back to back (each primitive after the others, not after itself)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for j in range(n):
        if gap_s:
            time.sleep(gap_s)
        for name, (fn, items) in calls.items():
            x = items[j % len(items)]
            t = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t)
    return {name: round(float(np.median(ts)) * 1e3, 4) for name, ts in times.items()}


class Primitives:
    """The primitives of one work directory's current version, ready to time."""

    def __init__(self, wd: Path, redis_url: str | None, warm: list[str], types: tuple[str, ...]):
        from audiorec.artifact import current_dir, feature_project, read_manifest
        from audiorec.featurestore import FeatureStoreConfig, OnlineFeatureReader, open_store
        from audiorec.tower_inputs import RowInputs
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
        self.tower_runtime = art.tower.runtime
        reader = OnlineFeatureReader(store)
        types = tuple(t for t in types if t in art.indexes)
        # call j: user j, asking for type j % len(types), through every primitive
        self.users = warm
        self.types = [types[j % len(types)] for j in range(len(self.users))]
        self.read = _store_read(wd, store, project, redis_url, self.users)
        to_inputs = RowInputs(art.manifest.user_features)  # the arrays the server feeds
        self.inputs = [to_inputs(reader.read_row(u)) for u in self.users]
        self.tower = art.tower
        vectors = [art.tower(x)[0] for x in self.inputs]
        self.queries = [(art.indexes[t], v) for t, v in zip(self.types, vectors)]
        self.consumed = art.consumed
        self.feast = lambda u: reader.read_sdk([u])
        rec = Recommender(art, lambda u, d: reader.read_row(u))
        self.recommend = lambda call: rec.recommend(call[0], 10, call[1])
        self.calls = list(zip(self.users, self.types))

    def primitive_calls(self) -> dict[str, tuple[Callable[[Any], Any], list[Any]]]:
        """name: (function, its argument per call), in a request's order."""
        return {
            "store_read_ms": (self.read, self.users),
            "tower_ms": (self.tower, self.inputs),
            "index_ms": (lambda q: q[0].search(q[1], 10), self.queries),
            "filter_ms": (self.consumed, self.users),
        }

    def time(self, gap_s: float = 0.0) -> dict[str, float]:
        """Median ms of each primitive, back to back (``gap_s`` 0) or one call every
        ``gap_s`` seconds; ``sum_ms`` adds the four; ``recommender_ms``: the whole request
        path in this process, without gRPC."""
        calls = {**self.primitive_calls(), "recommender_ms": (self.recommend, self.calls)}
        if gap_s:
            for fn, items in calls.values():  # warm-up
                for x in items[:20]:
                    fn(x)
            whole = {"recommender_ms": calls.pop("recommender_ms")}
            out = {
                **paced_medians_ms(calls, N_PACED, gap_s),
                **paced_medians_ms(whole, N_PACED, gap_s),
            }
        else:
            out = {name: median_ms(fn, items * 3) for name, (fn, items) in calls.items()}
        out["sum_ms"] = round(sum(v for k, v in out.items() if k != "recommender_ms"), 4)
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
    p = Primitives(wd, redis_url, [u for u, g in users if g == "warm"][:100], types)
    out: dict[str, Any] = {**p.time(), "tower_runtime": p.tower_runtime}
    out["feast_read_ms"] = median_ms(p.feast, p.users * 3)  # for reference: Feast's SDK
    out["paced"] = {str(r): p.time(1.0 / r) for r in rates}
    return out

"""Two versions' user towers on the same real rows, call by call: what a graph costs.

    PYTHONPATH=.:bench .venv/bin/python bench/bench_tower_graph.py --workdir W
        --versions OLD,NEW [--redis-url HOST:PORT] [--calls 1200]

Both towers run in this process through the server's runtime (`serving.tower.UserTower`,
ONNX Runtime on one thread), fed what the server feeds (`RowInputs` over the online
store's `read_row`) for the warm and cold users the load benchmark draws. The calls
alternate between the two, and which goes first alternates too, so a change of the VM's
speed during the run weighs on both alike (on this VM it moves more than the effect).
Each is timed back to back ("hot", though each call follows one of the other tower) and
after a sleep of 1/500 s and 1/300 s (the load's spacing, as bench_serving.py's paced
primitives). Prints the graphs' op counts, their largest difference on the rows (the
two must be the same function) and the medians, as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bench_serving import pick_users

from audiorec.artifact import artifacts_root, feature_project, read_manifest
from audiorec.featurestore import FeatureStoreConfig, OnlineFeatureReader, open_store
from audiorec.tower_inputs import RowInputs
from serving.tower import UserTower


def op_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path)).graph.node)


def medians_ms(towers: dict, rows: list, calls: int, gap_s: float) -> dict[str, float]:
    """Median ms per tower over ``calls`` rounds, each calling every tower on one row,
    in an order that alternates round by round."""
    names = list(towers)
    times: dict[str, list[float]] = {n: [] for n in names}
    for j in range(calls):
        x = rows[j % len(rows)]
        for name in names if j % 2 else names[::-1]:
            if gap_s:
                time.sleep(gap_s)
            t = time.perf_counter()
            towers[name](x)
            times[name].append(time.perf_counter() - t)
    return {n: round(float(np.median(ts[100:])) * 1e3, 4) for n, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--versions", required=True, help="OLD,NEW")
    ap.add_argument("--redis-url", default="", help="the online store (default: SQLite)")
    ap.add_argument("--calls", type=int, default=1200)
    args = ap.parse_args()
    wd, root = Path(args.workdir), artifacts_root(args.workdir)
    versions = args.versions.split(",")
    manifests = [read_manifest(root / v, verify_files=False) for v in versions]
    if len({str(m.user_features) for m in manifests}) != 1:
        raise SystemExit("the versions' user towers take different features")
    man = manifests[0]
    cfg = (
        FeatureStoreConfig(online="redis", redis=args.redis_url)
        if args.redis_url
        else FeatureStoreConfig()
    )
    reader = OnlineFeatureReader(open_store(wd, cfg, feature_project(man)))
    to_inputs = RowInputs(man.user_features)
    users = [u for u, group in pick_users(wd, 600) if group != "unknown"]
    rows = [to_inputs(reader.read_row(u)) for u in users]
    towers = {
        v: UserTower(root / v / "user_tower", m.user_features, m.dim, root / v / "user_tower.onnx")
        for v, m in zip(versions, manifests)
    }
    first, *others = towers.values()
    out: dict = {
        "versions": versions,
        "rows": len(rows),
        "ops": {v: op_count(root / v / "user_tower.onnx") for v in versions},
        "max_abs_diff": max(float(np.abs(first(x) - t(x)).max()) for x in rows for t in others),
    }
    for gap_s, key in ((0.0, "hot"), (1 / 500, "paced_500"), (1 / 300, "paced_300")):
        out[key] = medians_ms(towers, rows, args.calls, gap_s)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

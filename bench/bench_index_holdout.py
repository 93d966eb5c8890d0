"""Benchmark: HR@10 of held-out streams with the served item indexes against exact search.

    PYTHONPATH=.:bench .venv/bin/python bench/bench_index_holdout.py --workdir W
        [--users 3000] [--out FILE]

The current artifact of ``W`` as the server loads it. Its towers stopped early on the
validation window (``data.validation_start`` .. ``data.cut`` in its manifest) and, with no
refit (``refit_epochs`` 0), never trained on it: those streams are held out from the
towers. ``--users`` users with a stream in the window are drawn (seeded); each is asked
for at its first stream there, ``t``:

* the user's features are Feast's point-in-time answer as of ``t`` (the offline store;
  nothing from ``t`` on);
* the items the user streamed before ``t`` are excluded, as the server excludes them;
* the query goes through the served user tower (the prior coordinate included), and the
  top 10 of each item type come from the request path's search (serving/recommender.py,
  the served index at its tuned breadth) and from an exact scan over the same vectors;
* a hit: any item of that type the user streams from ``t`` to the cut is in the top 10.

Printed per type: HR@10 with the index and with exact search, their paired difference
with a 95% bootstrap interval over users, and recall@10 of the index's answers against
the exact ones. Target (issue 32): the index's HR@10 within 0.005 of exact search.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from audiorec.artifact import current_dir, feature_project, read_manifest
from audiorec.featurestore import USER_SERVICE, FeatureStoreConfig, open_store
from audiorec.tower_inputs import tower_inputs
from serving.artifact import Artifact
from serving.recommender import Recommender
from training.evaluation.intervals import paired_bootstrap
from training.features.retrieval import historical_features


def held_out(dataset: Path, start: str, cut: str, users: int, seed: int) -> pd.DataFrame:
    """(user_id, t, item_id, before): for ``users`` users with a stream in [start, cut),
    the items they stream from their first one there (t) to the cut; ``before``: the
    user's streams before t, one row per user (DuckDB over the dataset, no Python loop)."""
    con = duckdb.connect()
    events = str(dataset / "events.parquet")
    return con.execute(
        f"""
        WITH firsts AS (
            SELECT user_id, min(ts) AS t FROM '{events}'
            WHERE event_type = 'stream' AND ts >= ?::TIMESTAMPTZ AND ts < ?::TIMESTAMPTZ
            GROUP BY user_id
            ORDER BY hash(user_id || ?) LIMIT ?
        ),
        after AS (
            SELECT f.user_id, f.t, list(DISTINCT e.item_id) AS items
            FROM firsts f JOIN '{events}' e ON e.user_id = f.user_id
            WHERE e.event_type = 'stream' AND e.ts >= f.t AND e.ts < ?::TIMESTAMPTZ
            GROUP BY f.user_id, f.t
        ),
        before AS (
            SELECT f.user_id, list(DISTINCT e.item_id) AS items
            FROM firsts f JOIN '{events}' e ON e.user_id = f.user_id
            WHERE e.event_type = 'stream' AND e.ts < f.t
            GROUP BY f.user_id
        )
        SELECT a.user_id, a.t, a.items AS after, coalesce(b.items, []) AS before
        FROM after a LEFT JOIN before b USING (user_id) ORDER BY a.user_id
        """,
        [start, cut, str(seed), users, cut],
    ).df()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(1)  # as a serving process runs it (serving/tuning.py)
    directory = current_dir(args.workdir)
    manifest = read_manifest(directory, verify_files=False)
    data = manifest.data
    if manifest.metrics.get("refit_epochs"):
        raise SystemExit("this version's towers were refit through the cut: no held-out window")
    art = Artifact.load(directory)
    rows = held_out(
        Path(data["path"]), data["validation_start"], data["cut"], args.users, args.seed
    )
    store = open_store(args.workdir, FeatureStoreConfig(), feature_project(manifest))
    entity = pd.DataFrame(
        {"user_id": rows["user_id"], "event_timestamp": pd.to_datetime(rows["t"], utc=True)}
    )
    features = historical_features(store, entity, USER_SERVICE)
    order = pd.Index(features.column("user_id").to_pylist()).get_indexer(rows["user_id"])
    features = features.take(order)  # back in the rows' order
    queries = art.tower(
        tower_inputs({n: features.column(n) for n in features.column_names}, manifest.user_features)
    )
    rec = Recommender(art, lambda u, d: {})
    window = [data["validation_start"], data["cut"]]
    out = {"version": manifest.version, "users": len(rows), "window": window}
    for kind in art.types.names:
        out[kind] = score_type(art, rec, kind, rows, queries)
        print(json.dumps({kind: out[kind]}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


def score_type(
    art: Artifact, rec: Recommender, kind: str, rows: pd.DataFrame, queries: np.ndarray
) -> dict[str, object]:
    """HR@10 with the served index and with exact search for the users with a held-out
    stream of ``kind``, their paired difference, and the index's recall@10 vs exact."""
    label_rows = art.label_rows[kind]
    vectors = art.vectors[label_rows]
    index_hits, exact_hits, overlap = [], [], []
    for (_, row), query in zip(rows.iterrows(), queries):
        targets = rec._rows(row["after"])
        targets = targets[art.item_types[targets] == kind]
        before = rec._rows(row["before"])
        targets = np.setdiff1d(targets, before)  # a re-stream is no discovery
        if not len(targets):
            continue
        labels, _ = rec._search(query, 10, kind, before, ())
        scores = vectors @ query
        excluded = rec.searches[kind].label_of[before]
        scores[excluded[excluded >= 0]] = -np.inf
        exact = np.argsort(-scores, kind="stable")[:10]
        index_hits.append(float(np.isin(label_rows[labels], targets).any()))
        exact_hits.append(float(np.isin(label_rows[exact], targets).any()))
        overlap.append(len(np.intersect1d(labels, exact)) / 10)
    diff = paired_bootstrap(np.array(index_hits), np.array(exact_hits))
    return {
        "users": len(index_hits),
        "hr10_index": round(float(np.mean(index_hits)), 4),
        "hr10_exact": round(float(np.mean(exact_hits)), 4),
        "index_minus_exact": diff.text(),
        "recall10_vs_exact": round(float(np.mean(overlap)), 4),
        "within_0.005": bool(abs(diff.diff) <= 0.005),
    }


if __name__ == "__main__":
    main()

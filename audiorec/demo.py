"""``audiorec demo``: the README's main job, end to end on the embedded defaults.

Today: world -> the daily pipeline (text embeddings, HGNN, feature store, two towers,
indexes, published artifact) -> recommendations for a warm, a cold-start and an unknown
user through the serving request path (Feast online features -> exported user tower ->
HNSW -> filters). The gRPC server takes the last step over as it lands.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# Bounded so that the demo's HGNN step takes a few minutes on 2 cores (BENCHMARKS.md).
DEMO_HGNN = {"max_epochs": 8, "patience": 3, "max_steps_per_epoch": 120, "batch_size": 256}


def _step(i: int, n: int, text: str) -> float:
    print(f"\n=== [{i}/{n}] {text}", flush=True)
    return time.perf_counter()


def run_demo(workdir: str | Path, scale: str = "demo", seed: int = 7) -> int:
    from audiorec.cli import format_stats
    from audiorec.config import validated
    from serving.artifact import Artifact
    from serving.recommender import Recommender
    from training.features.retrieval import OnlineFeatureReader
    from training.features.store import open_store
    from training.pipeline import PipelineConfig, run_pipeline
    from training.synth import WorldConfig, generate_world

    wd = Path(workdir).resolve()
    world = wd / "world"
    n = 3
    today = datetime.now(timezone.utc).date()
    t = _step(1, n, f"generating the {scale} world (seed {seed}, ending {today}) into {world}")
    stats = generate_world(WorldConfig.for_scale(scale, end_date=today), seed, world,
                           overwrite=True)
    print(format_stats(stats, world))
    print(f"  ({time.perf_counter() - t:.0f}s)")

    t = _step(2, n, "the daily pipeline: audiorec pipeline --data world --workdir .")
    report = run_pipeline(world, wd, validated(PipelineConfig, {"hgnn": DEMO_HGNN}))
    print(f"  published {report.version} ({time.perf_counter() - t:.0f}s); training curves: "
          f"{wd / 'hgnn' / 'training_curve.png'}, {report.directory / 'training_curve.png'}")

    _step(3, n, "recommendations: Feast online features -> user tower -> HNSW -> filters")
    reader = OnlineFeatureReader(open_store(wd))
    recommender = Recommender(Artifact.load_current(wd), lambda u: reader.read([u]))
    warm, cold = _pick_users(world)
    recommender.recommend(warm)  # warm-up: the first call opens the store, traces the tower
    for label, user in (("warm (audiobook history)", warm), ("cold start (podcasts only)", cold),
                        ("unknown to the store", "u_not_a_user")):
        row = {k: v[0] for k, v in reader.read([user]).items()}
        answer = recommender.recommend(user, k=5)
        total = sum(answer.timings_ms.values())
        print(f"\n  {label}: {user}\n    {_describe(row)}")
        print(f"    {answer.strategy}{': ' + answer.reason if answer.reason else ''} "
              f"({total:.1f} ms: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                answer.timings_ms.items()) + ")")
        for i, item in enumerate(answer.items, 1):
            print(f"    {i}. {item.title:<40} {item.item_id}  score {item.score:.3f}")
    print(f"\nEverything is under {wd}. As a Feast user:\n"
          f"  export AUDIOREC_WORKDIR={wd}\n"
          f"  cd feature_repo && ../.venv/bin/feast apply && "
          f"../.venv/bin/feast materialize-incremental $(date -u +%Y-%m-%dT%H:%M:%S)")
    return 0 if stats["all_hold"] else 1


def _pick_users(world: Path) -> tuple[str, str]:
    """The most active audiobook listener of the last 30 days, and a recent podcast-only
    listener (no audiobook interaction ever)."""
    from training.data.duck import connect_dataset

    con = connect_dataset(world, ("items", "events"))
    warm = con.sql("""
        SELECT e.user_id FROM events e JOIN items i USING (item_id)
        WHERE i.item_type = 'audiobook' AND e.ts >= (SELECT max(ts) FROM events) - INTERVAL 30 DAY
        GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1""").fetchall()[0][0]
    cold = con.sql("""
        SELECT user_id FROM events WHERE ts >= (SELECT max(ts) FROM events) - INTERVAL 30 DAY
        GROUP BY 1 HAVING user_id NOT IN (SELECT e.user_id FROM events e JOIN items i
                                          USING (item_id) WHERE i.item_type = 'audiobook')
        ORDER BY count(*) DESC, 1 LIMIT 1""").fetchall()[0][0]
    con.close()
    return warm, cold


def _describe(row: dict) -> str:
    if row.get("country") is None and row.get("audiobook_items_90d") is None:
        return "no features in the online store (the recommender falls back to popularity)"
    norm = lambda v: "none" if v is None else f"|v|={np.linalg.norm(v):.2f}"  # noqa: E731
    return (f"{row['country']}, age {row['age']}, {row['language']}, account "
            f"{row['account_age_days']} days; music vector {norm(row['music_vector'])}; 90 days: "
            f"{row['audiobook_items_90d']} audiobooks ({norm(row['audiobook_pref'])}), "
            f"{row['podcast_items_90d']} podcasts ({norm(row['podcast_pref'])}); weak signals: "
            f"{row['follow_count_90d']} follows, {row['preview_count_90d']} previews, "
            f"{row['intent_to_pay_count_90d']} intents to pay")

"""``audiorec demo``: the README's main job, end to end on the embedded defaults.

World -> the daily pipeline (text embeddings, HGNN, feature store, two towers, indexes,
published artifact) -> the gRPC server started on a free port -> real Recommend calls for a
warm, a cold-start and an unknown user (Feast online features -> exported user tower ->
item index -> filters), printed -> graceful shutdown.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from audiorec.eventlog import log_dir
from audiorec.itemtypes import ItemTypes

if TYPE_CHECKING:  # the heavy packages are imported where they run
    from training.synth.config import Scale

# Bounded so that the demo's HGNN step takes a few minutes on 2 cores (docs/benchmarks.md).
DEMO_HGNN = {"max_epochs": 8, "patience": 3, "max_steps_per_epoch": 120, "batch_size": 256}


def _step(i: int, n: int, text: str) -> float:
    print(f"\n=== [{i}/{n}] {text}", flush=True)
    return time.perf_counter()


def run_demo(
    workdir: str | Path, scale: Scale = "demo", seed: int = 7, evaluate: bool = True
) -> int:
    from audiorec.config import validated
    from serving.server import ServerConfig, create_server
    from training.pipeline import PipelineConfig, run_pipeline
    from training.synth import WorldConfig, generate_world
    from training.synth.stats import format_stats, pick_users

    wd = Path(workdir).resolve()
    world = wd / "world"
    n = 4 if evaluate else 3
    # the world ends yesterday: the pipeline's cut is today's midnight, as for a daily run
    # just after it, so what the demo records in real time (now) comes after the cut
    end = datetime.now(timezone.utc).date() - timedelta(days=1)
    t = _step(1, n, f"generating the {scale} world (seed {seed}, ending {end}) into {world}")
    stats = generate_world(WorldConfig.for_scale(scale, end_date=end), seed, world, overwrite=True)
    # what the last demo's server accepted belongs to the world just replaced: its events
    # must not be merged into this one (the pipeline merges the work directory's log)
    shutil.rmtree(log_dir(wd), ignore_errors=True)
    print(format_stats(stats, world))
    print(f"  ({time.perf_counter() - t:.0f}s)")

    t = _step(2, n, "the daily pipeline: audiorec pipeline --data world --workdir .")
    report = run_pipeline(world, wd, validated(PipelineConfig, {"hgnn": DEMO_HGNN}))
    assert report.directory is not None  # published
    print(
        f"  published {report.version} ({time.perf_counter() - t:.0f}s); training curves: "
        f"{wd / 'hgnn' / 'training_curve.png'}, {report.directory / 'training_curve.png'}"
    )

    report_path = None
    if evaluate:
        from training.evaluation.config import EvaluationConfig
        from training.evaluation.report import write_report
        from training.evaluation.run import run_evaluation

        t = _step(
            3,
            n,
            "offline evaluation, the paper's protocol (main rows, 3 seeds; the "
            "ablations: audiorec evaluate)",
        )
        # two settings per model on the validation window keeps the demo within minutes;
        # `audiorec evaluate` tries four (selection_trials)
        ecfg = validated(
            EvaluationConfig,
            {"ablations": False, "selection_trials": 2, "pipeline": {"hgnn": DEMO_HGNN}},
        )
        results = run_evaluation(world, wd / "eval", ecfg, text_cache=wd / "text" / "cache.parquet")
        report_path = write_report(results, wd / "report", command="audiorec demo")
        print(f"  ({time.perf_counter() - t:.0f}s)")

    _step(n, n, "gRPC recommender: audiorec serve, then Recommend calls over the socket")
    running = create_server(wd, ServerConfig(port=0))
    target = f"127.0.0.1:{running.port}"
    try:
        print(
            f"  serving {running.holder.current.version} on {target} (health: SERVING; "
            f"reflection lists {', '.join(_reflected_services(target))})"
        )
        warm, cold = pick_users(world)
        _three_users(wd, target, running.holder.current.types, warm, cold)
        _real_time(target, warm, cold)
        _live_title(target, wd, world, warm)
    finally:
        running.stop(grace=2)
        print("\n  server stopped (graceful shutdown)")
    _experiment(wd, world)
    _closing_lines(wd, warm, report_path)
    return 0 if stats["all_hold"] else 1


def _closing_lines(wd: Path, warm: str, report_path: Path | None) -> None:
    """Where the report is, and the commands to try it yourself."""
    if report_path is not None:
        print(
            f"\nOffline evaluation report: {report_path}\n  charts: "
            f"{report_path.parent / 'hr_at_k.png'}, {report_path.parent / 'coverage_vs_hr.png'}"
        )
    print(
        f"\nTry it yourself:\n  .venv/bin/audiorec serve --workdir {wd}\n"
        f"  .venv/bin/audiorec recommend {warm} --k 10 --explain\n"
        f"  .venv/bin/audiorec event {warm} ITEM_ID --type stream\n"
        f"  .venv/bin/audiorec experiment --workdir {wd}   # the A/B readout\n"
        f"  .venv/bin/audiorec ui --workdir {wd}   # the inspector: open "
        f"http://127.0.0.1:8080/listener?id={warm}"
    )
    print(
        f"\nEverything is under {wd}. As a Feast user:\n"
        f"  export AUDIOREC_WORKDIR={wd}\n"
        f"  cd feature_repo && ../.venv/bin/feast apply && "
        f"../.venv/bin/feast materialize-incremental $(date -u +%Y-%m-%dT%H:%M:%S)"
    )


def _three_users(wd: Path, target: str, types: ItemTypes, warm: str, cold: str) -> None:
    """A warm, a cold-start and an unknown user: what the online store holds for each, and
    their Recommend answer over gRPC."""
    from audiorec.featurestore import OnlineFeatureReader, open_store
    from serving.client import format_answer, recommend

    reader = OnlineFeatureReader(open_store(wd))
    for label, user in (
        ("warm (audiobook history)", warm),
        ("cold start (podcasts only)", cold),
        ("unknown to the store", "u_not_a_user"),
    ):
        row = {k: v[0] for k, v in reader.read([user]).items()}
        t0 = time.perf_counter()
        response = recommend(target, user, k=5)
        ms = (time.perf_counter() - t0) * 1e3
        print(f"\n  {label}: {user}\n    {_describe(row, types)}")
        print(
            "    "
            + format_answer(f"Recommend({user}) in {ms:.1f} ms", response).replace("\n", "\n    ")
        )


def _real_time(target: str, warm: str, cold: str) -> None:
    """Events recorded over gRPC change the next answers: the warm listener streams their
    top audiobook (gone from the next list, which explains itself); the cold-start
    listener streams a first audiobook (PERSONALIZED from the next call on)."""
    from serving.client import format_answer, recommend, record_event

    top = recommend(target, warm, k=5).items[0]
    t0 = time.perf_counter()
    got = record_event(target, warm, top.item_id, "stream")
    ms = (time.perf_counter() - t0) * 1e3
    print(
        f"\n  real time: {warm} streams {top.title!r} ({top.item_id}); RecordEvents "
        f"recorded {got.recorded} in {ms:.1f} ms"
    )
    after = recommend(target, warm, k=5, explain=True)
    print(
        "    "
        + format_answer(f"Recommend({warm}, explain) after the stream", after).replace(
            "\n", "\n    "
        )
    )
    first = recommend(target, cold, k=1).items[0]
    record_event(target, cold, first.item_id, "stream")
    again = recommend(target, cold, k=5)
    print(
        f"\n  real time: {cold} streams a first audiobook ({first.item_id}); the next "
        f"Recommend is {pb_strategy(again.strategy)}"
    )


def _live_title(target: str, wd: Path, world: Path, listener: str) -> None:
    """A new audiobook published through the API (RecordItems): a sequel of a title with
    no history yet (the paper's hard case, where only text and the graph's self path
    speak), similar to it at once and scored for the listener at once."""
    import duckdb

    from audiorec.artifact import current_dir, read_manifest
    from serving.client import recommend, record_item, similar

    cut = read_manifest(current_dir(wd)).data["cut"]
    # an audiobook nobody streamed, followed or previewed before the cut
    source = (
        duckdb.connect()
        .execute(
            f"""
        SELECT item_id, title, description, language, genre FROM '{world}/items.parquet' i
        WHERE item_type = 'audiobook' AND publish_ts < CAST($1 AS TIMESTAMPTZ)
          AND NOT EXISTS (SELECT 1 FROM '{world}/events.parquet' e WHERE e.item_id = i.item_id
                          AND CAST(e.ts AS TIMESTAMPTZ) < CAST($1 AS TIMESTAMPTZ))
        ORDER BY item_id LIMIT 1""",
            [cut],
        )
        .fetchall()
    )
    if not source:
        print("\n  a new title: skipped (every audiobook has history before the cut)")
        return
    item_id, title, description, language, genre = source[0]
    new_id, new_title = "ab_new_sequel", f"{title}: The Sequel"
    t0 = time.perf_counter()
    got = record_item(target, new_id, "audiobook", new_title, description, language, genre)
    ms = (time.perf_counter() - t0) * 1e3
    print(
        f"\n  a new title: RecordItems published {new_title!r} ({new_id}) in {ms:.0f} ms "
        f"(created {got.created}; embedded by the served model: text, HGNN self path, item "
        "tower; the next daily run takes it into the catalogue)"
    )
    near = [i.item_id for i in similar(target, item_id, k=10).items]
    where = f"at rank {near.index(new_id) + 1}" if new_id in near else "not in the top 10"
    print(f"    RecommendSimilar({item_id}, {title!r}, no history either): the new title {where}")
    mine = [i.item_id for i in recommend(target, listener, k=10).items]
    fits = (
        f"at rank {mine.index(new_id) + 1}"
        if new_id in mine
        else "not in their top 10 (it has no listeners yet, so no popularity prior)"
    )
    print(f"    Recommend({listener}): the new title {fits}")


def _experiment(wd: Path, world: Path, listeners: int = 2000, rate: float = 0.3) -> None:
    """An A/A experiment on simulated traffic: two arms serve the same version, simulated
    listeners stream the top audiobook shown at one rate whatever their arm, and the
    readout (audiorec experiment) must find the arms level and the split as configured."""
    import grpc
    import pyarrow.parquet as pq

    from audiorec.v1 import recommender_pb2 as pb
    from audiorec.v1 import recommender_pb2_grpc as pb_grpc
    from serving.arms import Experiment, parse_arms
    from serving.server import ServerConfig, create_server
    from training.evaluation.experiment import read_experiment, readout_dir, write_readout

    salt = f"demo-aa-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    exp = Experiment(arms=parse_arms(["control=current:0.5", "treatment=current:0.5"]), salt=salt)
    users = pq.read_table(world / "users.parquet", columns=["user_id"])["user_id"].to_pylist()
    rng = np.random.default_rng(0)
    print(
        f"\n  an A/A experiment on simulated traffic ({salt}): two arms on the same version, "
        f"{listeners:,} listeners each ask once and stream the top audiobook shown with "
        f"probability {rate}"
    )
    running = create_server(wd, ServerConfig(port=0, experiment=exp))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            for user in users[:listeners]:
                answer = stub.Recommend(
                    pb.RecommendRequest(user_id=user, k=10, type="audiobook"), timeout=10
                )
                if answer.items and rng.random() < rate:
                    event = pb.Event(
                        user_id=user,
                        item_id=answer.items[0].item_id,
                        event_type="stream",
                        timestamp_ms=int(time.time() * 1000),
                        event_id=f"{salt}-{user}",  # a retry is a replay, counted once
                    )
                    _record_with_retry(stub, pb.RecordEventsRequest(events=[event]))
    finally:
        running.stop(grace=2)  # writes the last exposures
    readout = read_experiment(wd, salt)
    print("    " + readout.text().replace("\n", "\n    "))
    chart = write_readout(readout, readout_dir(wd, salt))
    print(f"    readout: {chart.parent / 'readout.json'}, chart: {chart}")


def _record_with_retry(stub, request, tries: int = 3) -> None:
    """As a client should: UNAVAILABLE (the store's write budget passed on a busy moment)
    is retried with backoff; the event id makes a retry a replay the server counts once."""
    import grpc

    for attempt in range(tries):
        try:
            stub.RecordEvents(request, timeout=10)
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == tries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def pb_strategy(value: int) -> str:
    from audiorec.v1 import recommender_pb2 as pb

    return pb.Strategy.Name(value)


def _reflected_services(target: str) -> list[str]:
    """What a standard gRPC client discovers through server reflection."""
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        return sorted(s.name for r in replies for s in r.list_services_response.service)


def _describe(row: dict, types: ItemTypes) -> str:
    """One line of what the online store holds for a user, per item type."""
    if row.get("country") is None and row.get(types.history_feature(types.focus)) is None:
        return "no features in the online store (the recommender falls back to popularity)"

    def norm(v) -> str:
        return "none" if v is None else f"|v|={np.linalg.norm(v):.2f}"

    def weak(t: str) -> str:
        signals = [
            ("follow_count", "follows"),
            ("preview_count", "previews"),
            ("intent_to_pay_count", "intents to pay"),
        ]
        return ", ".join(
            f"{row[f'{t}_{k}_90d']} {label}" for k, label in signals if f"{t}_{k}_90d" in row
        )

    windows = ", ".join(
        f"{row[f'{t}_items_90d']} {t} items ({norm(row[f'{t}_pref'])}; {weak(t)})" for t in types
    )
    return (
        f"{row['country']}, age {row['age']}, {row['language']}, account "
        f"{row['account_age_days']} days; music vector {norm(row['music_vector'])}; "
        f"90 days: {windows}"
    )

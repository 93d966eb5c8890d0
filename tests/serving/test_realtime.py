"""Real-time events (RecordEvents, Feast push), explanations and A/B arms, over a real
gRPC socket on a tiny pipeline cut one day before its last events: the last day's real
events are the ones recorded in real time, and the next daily run must agree with them."""

from __future__ import annotations

import json
import random
import shutil
from datetime import timedelta

import duckdb
import grpc
import numpy as np
import pyarrow.dataset as pads
import pytest

from audiorec.artifact import artifacts_root, current_version
from audiorec.v1 import recommender_pb2 as pb
from audiorec.v1 import recommender_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def rt_pipeline(tiny_world, tmp_path_factory):
    """(workdir, config, cut): the tiny pipeline trained on all but the last day."""
    from audiorec.config import validated
    from tests.conftest import TINY_PIPELINE
    from training.data.dataset import Dataset
    from training.pipeline import PipelineConfig, run_pipeline

    cfg = validated(PipelineConfig, TINY_PIPELINE)
    cut = Dataset.of(tiny_world).default_cut - timedelta(days=1)
    wd = tmp_path_factory.mktemp("realtime")
    run_pipeline(tiny_world, wd, cfg, cut=cut, progress=False)
    return wd, cfg, cut


@pytest.fixture
def workdir(rt_pipeline, tmp_path):
    """A private copy: events change its online store."""
    wd = tmp_path / "wd"
    shutil.copytree(rt_pipeline[0], wd)
    return wd


@pytest.fixture
def running(workdir):
    from serving.server import ServerConfig, create_server

    server = create_server(workdir, ServerConfig(port=0, reload_interval_s=0.2))
    yield server
    server.stop(grace=1)


@pytest.fixture
def stub(running):
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield pb_grpc.RecommenderStub(channel)
    channel.close()


def ms(cut, hours: float) -> int:
    return int((cut + timedelta(hours=hours)).timestamp() * 1000)


def record(stub, *events, **kw):
    return stub.RecordEvents(
        pb.RecordEventsRequest(events=[pb.Event(**e) for e in events]), timeout=10, **kw
    )


def vector(running, user):
    from audiorec.tower_inputs import tower_inputs

    rec = running.holder.current
    raw = rec.read_features(user, None)
    return rec.artifact.tower(tower_inputs(raw, rec.artifact.manifest.user_features))[0], raw


def test_a_just_streamed_item_is_never_recommended_next(stub, running, users, rt_pipeline, capsys):
    from app.cli import main

    cut = rt_pipeline[2]
    user = users["warm"]
    ask = pb.RecommendRequest(user_id=user, k=10, type="audiobook")
    first = stub.Recommend(ask, timeout=10)
    assert first.strategy == pb.PERSONALIZED
    top = first.items[0].item_id
    got = record(
        stub, {"user_id": user, "item_id": top, "event_type": "stream", "timestamp_ms": ms(cut, 3)}
    )
    assert (got.recorded, got.duplicates, got.before_cut) == (1, 0, 0)
    assert top not in {i.item_id for i in stub.Recommend(ask, timeout=10).items}
    # ... and on every later call, while include_consumed brings it back
    assert top not in {i.item_id for i in stub.Recommend(ask, timeout=10).items}
    again = stub.Recommend(
        pb.RecommendRequest(user_id=user, k=50, type="audiobook", include_consumed=True),
        timeout=10,
    )
    assert top in {i.item_id for i in again.items}
    # the CLI verb, against the same server: the next item
    second = first.items[1].item_id
    target = f"127.0.0.1:{running.port}"
    assert main(["event", user, second, "--type", "stream", "--target", target]) == 0
    out = capsys.readouterr().out
    assert "recorded" in out and second in out
    assert second not in {i.item_id for i in stub.Recommend(ask, timeout=10).items}


def test_replays_late_events_and_bad_batches(stub, running, users, rt_pipeline):
    cut = rt_pipeline[2]
    art = running.holder.current.artifact
    item = str(art.item_ids[0])
    e = {
        "user_id": users["warm"],
        "item_id": item,
        "event_type": "preview",
        "timestamp_ms": ms(cut, 5),
    }
    assert record(stub, e).recorded == 1
    assert (record(stub, e).duplicates, record(stub, e).recorded) == (1, 0)
    # an event id makes a replay with another clock still a replay
    tagged = {**e, "timestamp_ms": ms(cut, 6), "event_id": "ev-1"}
    assert record(stub, tagged).recorded == 1
    assert record(stub, {**tagged, "timestamp_ms": ms(cut, 7)}).duplicates == 1
    # older than the cut: the daily batch's
    assert record(stub, {**e, "timestamp_ms": ms(cut, -2)}).before_cut == 1

    def code(*events):
        with pytest.raises(grpc.RpcError) as err:
            record(stub, *events)
        return err.value.code(), err.value.details()

    bad_item = code({**e, "item_id": "no-such-item"})
    assert bad_item[0] == grpc.StatusCode.INVALID_ARGUMENT and "catalogue" in bad_item[1]
    assert code({**e, "event_type": "purchase"})[0] == grpc.StatusCode.INVALID_ARGUMENT
    future = code({**e, "timestamp_ms": ms(cut, 24 * 365 * 100)})
    assert future[0] == grpc.StatusCode.INVALID_ARGUMENT and "future" in future[1]
    assert code()[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code(*[e] * 65)[0] == grpc.StatusCode.INVALID_ARGUMENT  # max_events 64
    assert code({**e, "user_id": "x" * 5000})[0] in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    text = running.metrics.exposition().decode()
    assert 'audiorec_events_total{result="duplicate"}' in text


def test_a_follow_moves_the_user_vector(stub, running, users, rt_pipeline):
    cut = rt_pipeline[2]
    user = users["warm"]
    art = running.holder.current.artifact
    rows, _ = art.window(user)
    books = np.flatnonzero(art.item_types == "audiobook")
    new = str(art.item_ids[np.setdiff1d(books, rows)[0]])  # not in the user's window
    before, raw = vector(running, user)
    got = record(
        stub, {"user_id": user, "item_id": new, "event_type": "follow", "timestamp_ms": ms(cut, 1)}
    )
    assert got.recorded == 1
    after, raw2 = vector(running, user)
    assert raw2["audiobook_follow_count_90d"][0] == (raw["audiobook_follow_count_90d"][0] or 0) + 1
    assert raw2["audiobook_items_90d"][0] == raw["audiobook_items_90d"][0] + 1
    assert np.abs(after - before).max() > 1e-4  # the tower sees the follow at once


def test_a_first_audiobook_stream_turns_cold_start_into_personalized(stub, running, rt_pipeline):
    cut = rt_pipeline[2]
    art = running.holder.current.artifact
    cold = None
    for user in list(art.users)[:200]:
        answer = stub.Recommend(
            pb.RecommendRequest(user_id=user, k=5, type="audiobook"), timeout=10
        )
        if answer.strategy == pb.COLD_START:
            cold = (user, answer)
            break
    assert cold is not None, "no cold-start user among the first 200"
    user, answer = cold
    book = answer.items[0].item_id
    record(
        stub, {"user_id": user, "item_id": book, "event_type": "stream", "timestamp_ms": ms(cut, 2)}
    )
    after = stub.Recommend(pb.RecommendRequest(user_id=user, k=5, type="audiobook"), timeout=10)
    assert after.strategy == pb.PERSONALIZED and after.reason == ""
    assert book not in {i.item_id for i in after.items}


def test_explanations_name_a_recent_item(stub, running, users):
    user = users["warm"]
    art = running.holder.current.artifact
    plain = stub.Recommend(pb.RecommendRequest(user_id=user, k=5, type="audiobook"), timeout=10)
    assert all(not i.because_item_id for i in plain.items)
    told = stub.Recommend(
        pb.RecommendRequest(user_id=user, k=5, type="audiobook", explain=True), timeout=10
    )
    assert [i.item_id for i in told.items] == [i.item_id for i in plain.items]
    rows, actions = art.window_actions(user)
    did = dict(zip(art.item_ids[rows], actions))
    shown = {i.item_id for i in told.items}
    history = set(did) - shown  # never a reason that the same answer recommends
    assert history
    for item in told.items:
        assert item.because_item_id in history and item.because_title
        # what the listener actually did with it: their strongest event in the window
        assert item.because_event == did[item.because_item_id]
        assert item.because_event in ("stream", "intent_to_pay", "follow", "preview")
    # the because item is the nearest of the history by the served vectors (checked by hand)
    rows = np.searchsorted(art.item_ids, sorted(history))
    first = int(np.searchsorted(art.item_ids, told.items[0].item_id))
    width = art.vectors.shape[1] - 1  # the prior coordinate is not content
    a = art.vectors[first, :width] / np.linalg.norm(art.vectors[first, :width])
    b = art.vectors[rows, :width] / np.linalg.norm(art.vectors[rows, :width], axis=1)[:, None]
    assert art.item_ids[rows[np.argmax(b @ a)]] == told.items[0].because_item_id


def test_batch_equals_push_after_the_next_daily_run(workdir, rt_pipeline, tiny_world):
    """The last day's real events, shuffled (out of order) and recorded in batches, give
    the online rows the next daily batch computes, and never reach the offline store."""
    from audiorec.artifact import feature_project, read_manifest
    from audiorec.featurestore import OnlineFeatureReader, open_store
    from serving.server import ServerConfig, create_server
    from training.pipeline import run_pipeline

    _, cfg, cut = rt_pipeline
    day = duckdb.sql(
        f"""SELECT user_id, item_id, event_type, epoch_ms(ts) AS ms
            FROM '{tiny_world}/events.parquet'
            WHERE ts >= TIMESTAMPTZ '{cut.isoformat()}'
              AND ts < TIMESTAMPTZ '{(cut + timedelta(days=1)).isoformat()}'"""
    ).fetchall()
    assert len(day) > 20
    random.Random(0).shuffle(day)
    running = create_server(workdir, ServerConfig(port=0))
    try:
        rec = running.holder.current
        types = rec.types
        for i in range(0, len(day), 64):
            batch = [
                pb.Event(user_id=u, item_id=it, event_type=t, timestamp_ms=m)
                for u, it, t, m in day[i : i + 64]
            ]
            rec.record(batch)
        users = sorted({u for u, *_ in day})
        pushed = running.features.read_users_now(users, feature_project(rec.artifact.manifest))
    finally:
        running.stop(grace=1)
    # point in time: the offline sources hold nothing at or after the cut
    windows = pads.dataset(workdir / "features" / "user_windows").to_table()
    assert windows["event_timestamp"].to_pandas().max() <= cut
    assert pads.dataset(workdir / "features" / "user_recent").to_table().num_rows == 0

    again = run_pipeline(
        tiny_world,
        workdir,
        cfg.model_copy(update={"hgnn_max_age_days": 7}),
        cut=cut + timedelta(days=1),
        progress=False,
    )
    project = feature_project(
        read_manifest(artifacts_root(workdir) / again.version, verify_files=False)
    )
    # the batch's rows at the new snapshot, for users none of whose events age out today
    leaves = (cut - timedelta(days=cfg.features.window_days)).date()
    ageing = {
        u
        for (u,) in duckdb.sql(
            f"""SELECT DISTINCT user_id FROM '{tiny_world}/events.parquet'
                WHERE CAST(ts AS DATE) = DATE '{leaves}'"""
        ).fetchall()
    }
    checked = [u for u in users if u not in ageing]
    assert len(checked) > 10
    batch = OnlineFeatureReader(open_store(workdir, project=project)).read(checked)
    index = {u: i for i, u in enumerate(users)}
    compared = 0
    for name, kind, _ in types.user_window_columns():
        for j, u in enumerate(checked):
            want, got = batch[name][j], pushed[name][index[u]]
            if kind == "count":
                assert int(got or 0) == int(want or 0), (name, u)
            else:
                np.testing.assert_allclose(
                    np.asarray(got, np.float64),
                    np.asarray(want, np.float64),
                    atol=1e-5,
                    err_msg=f"{name} {u}",
                )
            compared += 1
    assert compared >= 10 * len(types.user_window_columns())


def test_two_arms_split_users_stably(workdir, users):
    from serving.arms import Experiment, parse_arms, unit_hash
    from serving.server import ServerConfig, create_server

    root = artifacts_root(workdir)
    first = current_version(workdir)
    other = "v29990101T000000Z"
    shutil.copytree(root / first, root / other)
    m = json.loads((root / other / "manifest.json").read_text())
    m.update(version=other, created_at="2999-01-01T00:00:00+00:00")
    (root / other / "manifest.json").write_text(json.dumps(m))
    arms = parse_arms([f"control={first}:0.5", f"treatment={other}:0.5"])
    running = create_server(
        workdir, ServerConfig(port=0, experiment=Experiment(arms=arms, salt="exp-1"))
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        stub = pb_grpc.RecommenderStub(channel)
        seen = {}
        for n in range(60):
            user = f"u{n:07d}"
            r = stub.Recommend(pb.RecommendRequest(user_id=user, k=3, type="podcast"), timeout=10)
            assert r.arm in ("control", "treatment")
            assert r.model_version == (first if r.arm == "control" else other)
            assert r.arm == ("control" if unit_hash("exp-1", user) < 0.5 else "treatment")
            seen[user] = r.arm
        assert 15 < sum(a == "control" for a in seen.values()) < 45
        for user, arm in list(seen.items())[:10]:  # stable
            r = stub.Recommend(pb.RecommendRequest(user_id=user, k=3, type="podcast"), timeout=10)
            assert r.arm == arm
        text = running.metrics.exposition().decode()
        assert (
            'arm="treatment"' in text
            and f'audiorec_model_info{{arm="treatment",version="{other}"}} 1.0' in text
        )
        channel.close()
    finally:
        running.stop(grace=1)


def test_arm_specs_are_checked():
    from audiorec.errors import AudiorecError
    from serving.arms import Experiment, parse_arms

    with pytest.raises(AudiorecError, match="NAME=VERSION:SHARE"):
        parse_arms(["control"])
    with pytest.raises(ValueError, match="sum to"):
        Experiment(arms=parse_arms(["a=current:0.5", "b=current:0.4"]))
    with pytest.raises(ValueError, match="repeat"):
        Experiment(arms=parse_arms(["a=current:0.5", "a=current:0.5"]))
    e = Experiment(arms=parse_arms(["a=current:0.2", "b=current:0.8"]), salt="s")
    share = np.mean([e.assign(f"user{i}") == 0 for i in range(4000)])
    assert 0.17 < share < 0.23
    other = Experiment(arms=e.arms, salt="t")
    assert [e.assign(f"user{i}") for i in range(50)] != [
        other.assign(f"user{i}") for i in range(50)
    ]


def test_events_recorded_through_the_api_reach_the_next_batch(
    workdir, rt_pipeline, world_copy, tiny_world
):
    """Nothing recorded online is lost: events the dataset never had, recorded through
    the API, are in the server's log, the next daily run merges them into the dataset,
    and its batch features equal what the pushes made of them."""
    from audiorec.artifact import feature_project, read_manifest
    from audiorec.featurestore import OnlineFeatureReader, open_store
    from serving.server import ServerConfig, create_server
    from training.pipeline import run_pipeline

    _, cfg, cut = rt_pipeline
    con = duckdb.connect()
    leaves = (cut - timedelta(days=cfg.features.window_days)).date()
    ((user, seen),) = con.execute(
        f"""SELECT e.user_id, list(DISTINCT e.item_id)
            FROM '{tiny_world}/events.parquet' e JOIN '{tiny_world}/items.parquet' i
              USING (item_id)
            WHERE i.item_type = 'audiobook' AND e.ts < TIMESTAMPTZ '{cut.isoformat()}'
            GROUP BY e.user_id
            HAVING max(CAST(e.ts AS DATE) = DATE '{leaves}') = false
            ORDER BY count(*) DESC LIMIT 1"""
    ).fetchall()
    fresh = [
        i
        for (i,) in con.execute(
            f"SELECT item_id FROM '{tiny_world}/items.parquet' WHERE item_type = 'audiobook' "
            "ORDER BY item_id"
        ).fetchall()
        if i not in set(seen)
    ][:3]
    at = ms(cut, 2)
    running = create_server(workdir, ServerConfig(port=0))
    try:
        rec = running.holder.current
        project = feature_project(rec.artifact.manifest)
        before = running.features.read_users_now([user], project)["audiobook_items_90d"][0]
        got = rec.record(
            [
                pb.Event(user_id=user, item_id=i, event_type="stream", timestamp_ms=at + n)
                for n, i in enumerate(fresh)
            ]
        )
        assert got.recorded == 3
        pushed = running.features.read_users_now([user], project)
    finally:
        running.stop(grace=1)
    again = run_pipeline(
        world_copy,
        workdir,
        cfg.model_copy(update={"hgnn_max_age_days": 7}),
        cut=cut + timedelta(days=1),
        progress=False,
    )
    merged = con.execute(
        f"""SELECT item_id FROM '{world_copy}/events.parquet'
            WHERE user_id = '{user}' AND epoch_ms(ts) >= {at}"""
    ).fetchall()
    assert set(fresh) <= {i for (i,) in merged}
    manifest = read_manifest(artifacts_root(workdir) / again.version, verify_files=False)
    project = feature_project(manifest)
    # the text encoder is the last version's file, hard-linked (checked like a new export)
    text = manifest.model["live"]["text"]
    assert text["linked_from"] and text["max_abs_diff"] <= text["atol"]
    root = artifacts_root(workdir)
    assert (root / again.version / "live/text.onnx").stat().st_ino == (
        root / text["linked_from"] / "live/text.onnx"
    ).stat().st_ino
    batch = OnlineFeatureReader(open_store(workdir, project=project)).read([user])
    assert pushed["audiobook_items_90d"][0] == (before or 0) + 3
    assert batch["audiobook_items_90d"][0] == pushed["audiobook_items_90d"][0]
    np.testing.assert_allclose(
        np.asarray(batch["audiobook_pref"][0], np.float64),
        np.asarray(pushed["audiobook_pref"][0], np.float64),
        atol=1e-5,
    )

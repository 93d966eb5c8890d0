"""Titles published to a running server (RecordItems): embedded at once, recommended at once,
equal to what the pipeline computes for an item with no edges, kept, and merged."""

from __future__ import annotations

import shutil
import time

import duckdb
import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest

from audiorec.v1 import recommender_pb2 as pb
from audiorec.v1 import recommender_pb2_grpc as pb_grpc

# The live vector against the pipeline's vector of an edgeless catalogue item: the text
# encoder (ONNX vs sentence-transformers, ~2e-7), the HGNN self path (numpy vs torch) and
# the item tower (ONNX vs Keras) each differ by float rounding only.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def live_workdir(tiny_pipeline, tmp_path_factory):
    """A private copy of the tiny pipeline's work directory (the servers here write logs)."""
    dst = tmp_path_factory.mktemp("live") / "work"
    shutil.copytree(tiny_pipeline[0], dst, symlinks=True)
    return dst


def _start(workdir, **kw):
    from serving.server import ServerConfig, create_server

    return create_server(workdir, ServerConfig(port=0, live_sync_interval_s=0.1, **kw))


@pytest.fixture(scope="module")
def server(live_workdir):
    running = _start(live_workdir)
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield pb_grpc.RecommenderStub(channel)
    channel.close()


def _served(workdir):
    from audiorec.artifact import current_dir

    d = current_dir(workdir)
    return d, pq.read_table(d / "items.parquet").to_pandas().set_index("item_id")


def _edgeless_item(workdir, tiny_world):
    """A catalogue audiobook nobody touched before the cut: the HGNN gives it only its self
    terms and its prior is 0, exactly what a new title gets."""
    from audiorec.artifact import read_manifest

    d, served = _served(workdir)
    cut = read_manifest(d).data["cut"]
    con = duckdb.connect()
    rows = con.execute(
        f"""
        SELECT i.item_id, i.title, i.description, i.language, i.genre
        FROM '{tiny_world}/items.parquet' i
        WHERE i.item_type = 'audiobook' AND NOT EXISTS (
          SELECT 1 FROM '{tiny_world}/events.parquet' e
          WHERE e.item_id = i.item_id AND CAST(e.ts AS TIMESTAMPTZ) < CAST(? AS TIMESTAMPTZ))
        ORDER BY i.item_id""",
        [cut],
    ).fetchall()
    rows = [r for r in rows if r[0] in served.index]
    assert rows, "the tiny world has no untouched audiobook in the catalogue"
    return rows[0], served


def publish(stub, item_id, title, description="", type="audiobook", **kw):
    return stub.RecordItems(
        pb.RecordItemsRequest(
            items=[
                pb.NewItem(item_id=item_id, type=type, title=title, description=description, **kw)
            ]
        ),
        timeout=30,
    )


def test_live_vector_equals_the_pipelines_for_an_edgeless_item(server, live_workdir, tiny_world):
    (item_id, title, description, language, genre), served = _edgeless_item(
        live_workdir, tiny_world
    )
    rec = server.holder.current
    from serving.live import NewItem

    vec = rec.live_models.embed(
        NewItem("twin-" + item_id, "audiobook", title, description, language, genre)
    ).vector
    want = np.asarray(served.loc[item_id, "vector"], np.float32)
    assert vec.shape == want.shape
    assert float(np.abs(vec - want).max()) <= TOLERANCE
    live = rec.artifact.manifest.model["live"]
    assert live["text"]["max_abs_diff"] <= live["text"]["atol"]
    assert live["hgnn"]["max_abs_diff"] <= live["hgnn"]["atol"]
    assert live["item_tower"]["max_abs_diff"] <= live["item_tower"]["atol"]


def test_a_published_title_is_similar_at_once(stub, live_workdir, tiny_world):
    (item_id, title, description, language, genre), _ = _edgeless_item(live_workdir, tiny_world)
    new_id = "new-book-1"
    r = publish(stub, new_id, title, description, language=language, genre=genre)
    assert (r.created, r.existing) == (1, 0)
    # its twin (the same text, no edges either: the same vector) is among its neighbours,
    # and it among its twin's (the prior lifts popular titles above either)
    near = stub.RecommendSimilar(pb.RecommendSimilarRequest(item_id=new_id, k=10), timeout=10)
    back = stub.RecommendSimilar(pb.RecommendSimilarRequest(item_id=item_id, k=10), timeout=10)
    assert item_id in [i.item_id for i in near.items]
    assert new_id in [i.item_id for i in back.items]
    assert new_id not in [i.item_id for i in near.items]  # never its own neighbour
    # a second title (the first call loaded the encoder): similar-able within one second
    t0 = time.perf_counter()
    publish(stub, "new-book-2", title + " II", description, language=language, genre=genre)
    back = stub.RecommendSimilar(pb.RecommendSimilarRequest(item_id=item_id, k=10), timeout=10)
    assert time.perf_counter() - t0 < 1.0
    assert "new-book-2" in [i.item_id for i in back.items]
    # Describe counts them
    d = stub.Describe(pb.DescribeRequest(), timeout=5)
    assert d.arms[0].live_items == 2


def test_a_published_title_reaches_a_listener(stub, server, users):
    """A listener's list scores the live titles by the same inner product as the index's
    and merges them by score: a title that scores above the list's 10th is in it."""
    from audiorec.tower_inputs import tower_inputs

    user = users["warm"]
    rec = server.holder.current
    art = rec.artifact
    before = stub.Recommend(pb.RecommendRequest(user_id=user, k=10, type="audiobook"), timeout=10)
    items = pq.read_table(art.directory / "items.parquet").to_pandas().set_index("item_id")
    top = before.items[0].item_id
    publish(stub, "fits-" + top, str(items.loc[top, "title"]), genre=str(items.loc[top, "genre"]))
    after = stub.Recommend(pb.RecommendRequest(user_id=user, k=10, type="audiobook"), timeout=10)
    ids = [i.item_id for i in after.items]
    assert len(ids) == 10 and len(set(ids)) == 10
    scores = [i.score for i in after.items]
    assert scores == sorted(scores, reverse=True)
    user_vec = art.tower(tower_inputs(rec.read_features(user, None), art.manifest.user_features))[0]
    live_score = float(rec.live.get("fits-" + top).vector @ user_vec)
    assert ("fits-" + top in ids) == (live_score > before.items[-1].score)


def test_a_live_title_takes_events(stub, users, live_workdir):
    """Listeners stream a new title before any daily run: the event is recorded, applied
    (a streamed title is not recommended to them again) and kept in the log."""
    from audiorec.eventlog import EVENTS, log_dir, read_records

    publish(stub, "streamed-new", "A brand new thriller", "spies and more spies")
    user = users["warm"]
    r = stub.RecordEvents(
        pb.RecordEventsRequest(
            events=[pb.Event(user_id=user, item_id="streamed-new", event_type="stream")]
        ),
        timeout=10,
    )
    assert r.recorded == 1
    again = stub.Recommend(pb.RecommendRequest(user_id=user, k=1000, type="audiobook"), timeout=10)
    assert "streamed-new" not in [i.item_id for i in again.items]
    logged = [rec for _, _, rec in read_records(log_dir(live_workdir), EVENTS)]
    assert any(e["item_id"] == "streamed-new" for e in logged)
    with pytest.raises(grpc.RpcError) as err:  # an id nobody published is still refused
        stub.RecordEvents(
            pb.RecordEventsRequest(events=[pb.Event(user_id=user, item_id="nobody-published")]),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_item_requests(stub):
    def refused(request):
        with pytest.raises(grpc.RpcError) as err:
            stub.RecordItems(request, timeout=10)
        return err.value

    e = refused(pb.RecordItemsRequest())
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty" in e.details()
    e = refused(pb.RecordItemsRequest(items=[pb.NewItem(item_id="x", type="vinyl", title="t")]))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "not served" in e.details()
    e = refused(pb.RecordItemsRequest(items=[pb.NewItem(item_id="x", type="audiobook", title=" ")]))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "title" in e.details()
    e = refused(
        pb.RecordItemsRequest(items=[pb.NewItem(item_id="x", type="audiobook", title="t" * 600)])
    )
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "600" in e.details()
    e = refused(pb.RecordItemsRequest(items=[pb.NewItem(item_id="", type="audiobook", title="t")]))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    e = refused(
        pb.RecordItemsRequest(
            items=[pb.NewItem(item_id=f"b{i}", type="audiobook", title="t") for i in range(101)]
        )
    )
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_items_per_call" in e.details()
    e = refused(
        pb.RecordItemsRequest(
            items=[
                pb.NewItem(item_id="dup", type="audiobook", title="a"),
                pb.NewItem(item_id="dup", type="audiobook", title="b"),
            ]
        )
    )
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "twice" in e.details()
    # nothing of a refused call was taken in
    with pytest.raises(grpc.RpcError) as err:
        stub.RecommendSimilar(pb.RecommendSimilarRequest(item_id="dup", k=3), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # the same title twice is one item; other fields under its id are refused
    assert publish(stub, "once", "A title").created == 1
    again = publish(stub, "once", "A title")
    assert (again.created, again.existing) == (0, 1)
    e = refused(
        pb.RecordItemsRequest(items=[pb.NewItem(item_id="once", type="audiobook", title="B")])
    )
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS
    assert len(e.details()) < 300


def test_a_catalogue_id_is_already_an_item(stub, live_workdir):
    _, served = _served(live_workdir)
    r = publish(stub, str(served.index[0]), "whatever")
    assert (r.created, r.existing) == (0, 1)


def test_titles_reach_other_processes_and_survive_a_restart(live_workdir):
    """Two servers on one work directory (as `serve --processes 2`): a title published
    through one is similar-able through the other within a second; a server started
    later takes in every title before its first answer."""
    a, b = _start(live_workdir), _start(live_workdir)
    try:
        ca = grpc.insecure_channel(f"127.0.0.1:{a.port}")
        cb = grpc.insecure_channel(f"127.0.0.1:{b.port}")
        sa, sb = pb_grpc.RecommenderStub(ca), pb_grpc.RecommenderStub(cb)
        publish(sa, "cross-1", "A cross-process title", "about processes")
        deadline = time.monotonic() + 1.0
        while True:
            try:
                sb.RecommendSimilar(pb.RecommendSimilarRequest(item_id="cross-1", k=3), timeout=5)
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
                assert time.monotonic() < deadline, "the other process never took it in"
                time.sleep(0.05)
        ca.close()
        cb.close()
    finally:
        a.stop(grace=1)
        b.stop(grace=1)
    c = _start(live_workdir)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{c.port}")
        r = pb_grpc.RecommenderStub(channel).RecommendSimilar(
            pb.RecommendSimilarRequest(item_id="cross-1", k=3), timeout=10
        )
        assert len(r.items) == 3
        channel.close()
    finally:
        c.stop(grace=1)


def test_the_pipeline_merges_published_titles(live_workdir, world_copy):
    """The next daily run's first step: the logged titles become dataset items (once)."""
    from audiorec.eventlog import log_dir
    from training.data.contract import validate_dataset
    from training.data.merge_items import merge_item_log

    report = merge_item_log(world_copy, log_dir(live_workdir))
    assert report.added >= 3 and report.read >= report.added
    items = pq.read_table(world_copy / "items.parquet").to_pandas().set_index("item_id")
    assert "cross-1" in items.index and items.loc["cross-1", "title"] == "A cross-process title"
    assert items.index.is_unique
    validate_dataset(world_copy)
    assert merge_item_log(world_copy, log_dir(live_workdir)).read == 0  # the ledger moved
    # the events of live titles then join the dataset too (their items exist now)
    from training.data.merge_log import merge_event_log

    events = merge_event_log(world_copy, log_dir(live_workdir))
    assert events.added >= 1
    streamed = duckdb.sql(
        f"SELECT count(*) FROM '{world_copy}/events.parquet' WHERE item_id = 'streamed-new'"
    ).fetchall()[0][0]
    assert streamed == 1


def test_a_version_without_the_export_refuses_titles(server):
    """live_items 0 publishes no live export: RecordItems is FAILED_PRECONDITION."""
    from audiorec.errors import Unsupported
    from serving.live import LiveModels, NewItem

    art = server.holder.current.artifact
    model = {k: v for k, v in art.manifest.model.items() if k != "live"}
    manifest = art.manifest.model_copy(update={"model": model})
    with pytest.raises(Unsupported, match="live_items 0"):
        LiveModels(art.directory, manifest).embed(NewItem("n", "audiobook", "A title"))


def test_every_arm_takes_a_title_in_at_once(live_workdir):
    """Under an experiment both arms show a published title at once (arms on one version
    share its vectors), and Describe counts it on each."""
    from serving.arms import Experiment, parse_arms

    exp = Experiment(arms=parse_arms(["a=current:0.5", "b=current:0.5"]), salt="live")
    running = _start(live_workdir, experiment=exp)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        stub = pb_grpc.RecommenderStub(channel)
        publish(stub, "both-arms", "A title for every arm", "shown by both")
        counts = {a.name: a.live_items for a in stub.Describe(pb.DescribeRequest(), timeout=5).arms}
        before = len(running.arms[0][1].current.live) - 1
        assert counts == {"a": before + 1, "b": before + 1}
        a, b = (h.current.live.get("both-arms") for _, h in running.arms)
        np.testing.assert_array_equal(a.vector, b.vector)
        channel.close()
    finally:
        running.stop(grace=1)

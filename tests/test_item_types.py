"""Item types are data: the rules of ItemTypes, and a three-type world end to end
(pipeline, gRPC server, evaluation)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from audiorec.errors import ContractError
from audiorec.itemtypes import ItemTypes
from audiorec.v1 import recommender_pb2 as pb
from audiorec.v1 import recommender_pb2_grpc as pb_grpc
from training.synth import WorldConfig, generate_world

THIRD = "course"


def test_relations_are_every_pair_of_types():
    two = ItemTypes.of(["podcast", "audiobook"], focus="audiobook")
    assert two.names == ("audiobook", "podcast") and two.focus == "audiobook"
    assert two.relations == ("AA", "AP", "PP")
    assert two.relation_types("PA") == ("podcast", "audiobook")
    three = ItemTypes.of(["podcast", "course", "audiobook"], focus="audiobook")
    assert three.names == ("audiobook", "course", "podcast")
    assert three.relations == ("AA", "AC", "AP", "CC", "CP", "PP")  # T(T+1)/2
    # clashing initials get longer codes; U stays the users'
    clash = ItemTypes(("podcast", "playlist", "user_track"))
    assert list(clash.codes.values()) == ["P", "PL", "US"]
    assert len(clash.relations) == 6 and clash.relation_types("PLUS") == ("playlist", "user_track")
    assert three.positions(["podcast", "audiobook", "course"]).tolist() == [2, 0, 1]
    with pytest.raises(ContractError, match="not among"):
        three.positions(["ebook"])
    with pytest.raises(ContractError, match="lower-case identifiers"):
        ItemTypes(("Audio Book",))
    with pytest.raises(ContractError, match="focus item type 'music'"):
        ItemTypes.of(["audiobook"], focus="music")


def test_user_features_are_declared_once_per_type():
    cols = ItemTypes(("audiobook", "podcast", THIRD)).user_window_columns()
    names = [n for n, _, _ in cols]
    # four per type, and the focus type's weak signals (previews, intents, their mean)
    assert len(names) == 3 * 4 + 3 and len(set(names)) == len(names)
    assert {"course_pref", "course_follow_count_90d", "weak_audiobook_pref"} <= set(names)
    assert "weak_course_pref" not in names
    assert {k for _, k, _ in cols} == {"vector", "count"}


@pytest.fixture(scope="module")
def world3(tmp_path_factory):
    out = tmp_path_factory.mktemp("worlds") / "three"
    cfg = WorldConfig.for_scale("tiny", third_type=THIRD)
    generate_world(cfg, 0, out, progress=False)
    return out


def test_the_dataset_says_which_types_exist(world3, tiny_world):
    from training.data import Dataset

    ds = Dataset.open(world3)
    assert ds.item_types.names == ("audiobook", "course", "podcast")  # focus: fewest streams
    assert Dataset.open(world3, focus="podcast").item_types.names[0] == "podcast"
    # the two-type world of the same seed is the same world as before the knob existed
    assert Dataset.open(tiny_world).item_types.names == ("audiobook", "podcast")


@pytest.fixture(scope="module")
def piped3(world3, tmp_path_factory):
    from conftest import TINY_PIPELINE

    from audiorec.config import validated
    from training.pipeline import PipelineConfig, run_pipeline

    wd = tmp_path_factory.mktemp("pipeline3")
    report = run_pipeline(world3, wd, validated(PipelineConfig, TINY_PIPELINE), progress=False)
    return wd, report


@pytest.mark.slow
def test_pipeline_publishes_one_index_per_type(piped3):
    from audiorec.artifact import read_manifest
    from audiorec.featurestore import item_types
    from training.hgnn.run import load_hgnn

    wd, report = piped3
    m = read_manifest(report.directory)
    assert m.item_types == ["audiobook", "course", "podcast"]
    assert set(m.indexes) == set(m.item_types) and all(i.count > 0 for i in m.indexes.values())
    assert {f"val_recall_at_10_{t}" for t in m.item_types} <= set(m.metrics)
    assert {"course_pref", "course_follow_count_90d", "course_items_90d"} <= {
        s.name for s in m.user_features
    }
    assert item_types(wd).names == ("audiobook", "course", "podcast")
    _, hgnn = load_hgnn(wd / "hgnn")
    assert {"AC", "CA", "CC", "CP", "PC"} <= set(hgnn.relations)


@pytest.fixture(scope="module")
def stub3(piped3):
    from serving.server import ServerConfig, create_server

    running = create_server(piped3[0], ServerConfig(port=0))
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield pb_grpc.RecommenderStub(channel), running
    channel.close()
    running.stop(grace=1)


@pytest.mark.slow
def test_recommend_per_type_by_name(stub3, world3):
    from training.synth.stats import pick_users

    stub, _ = stub3
    warm, _ = pick_users(world3)
    for kind in ("audiobook", "course", "podcast"):
        got = stub.Recommend(pb.RecommendRequest(user_id=warm, k=5, type=kind), timeout=10)
        assert len(got.items) == 5 and {i.type for i in got.items} == {kind}
    # the enum keeps today's two names working, and says UNSPECIFIED for the third type
    got = stub.Recommend(pb.RecommendRequest(user_id=warm, k=5, item_type=pb.PODCAST), timeout=10)
    assert {(i.item_type, i.type) for i in got.items} == {(pb.PODCAST, "podcast")}
    got = stub.Recommend(pb.RecommendRequest(user_id=warm, k=5, type=THIRD), timeout=10)
    assert {i.item_type for i in got.items} == {pb.ITEM_TYPE_UNSPECIFIED}


@pytest.mark.slow
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"type": "ebook"}, "item type 'ebook' is not served; this model serves audiobook, course"),
        ({}, "no item type given; this model serves audiobook, course, podcast"),
        ({"type": "course", "item_type": pb.PODCAST}, "disagree"),
        ({"type": "x" * 10_000}, "type has 10,000 chars"),
    ],
)
def test_unknown_or_missing_type_is_invalid_argument(stub3, fields, message):
    stub, _ = stub3
    with pytest.raises(grpc.RpcError) as err:
        stub.Recommend(pb.RecommendRequest(user_id="u0000001", k=5, **fields), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details() and len(err.value.details()) < 300


@pytest.mark.slow
def test_similar_without_a_type_answers_in_the_items_own_type(stub3):
    stub, running = stub3
    art = running.holder.current.artifact
    course = str(art.item_ids[np.flatnonzero(art.item_types == THIRD)[0]])
    got = stub.RecommendSimilar(pb.RecommendSimilarRequest(item_id=course, k=5), timeout=10)
    assert len(got.items) == 5 and {i.type for i in got.items} == {THIRD}
    assert course not in {i.item_id for i in got.items}
    got = stub.RecommendSimilar(
        pb.RecommendSimilarRequest(item_id=course, k=5, type="audiobook"), timeout=10
    )
    assert {i.type for i in got.items} == {"audiobook"}


@pytest.mark.slow
def test_evaluation_has_a_table_per_type(world3, tmp_path):
    from audiorec.config import validated
    from training.evaluation.report import write_report
    from training.evaluation.run import EvaluationConfig, run_evaluation

    cfg = validated(
        EvaluationConfig,
        {
            "seeds": [0],
            "selection_trials": 1,
            "ablations": ["AA-only graph", "PP-only graph"],
            "peers": ["ALS"],
            "pipeline": {
                "hgnn": {
                    "hidden_dim": 16,
                    "out_dim": 8,
                    "max_epochs": 1,
                    "patience": 1,
                    "max_steps_per_epoch": 10,
                },
                "two_tower": {"layers": [16, 8], "max_epochs": 1, "patience": 1, "batch_size": 64},
            },
        },
    )
    res = run_evaluation(world3, tmp_path / "w", cfg, progress=False)
    assert list(res.protocol.truth) == ["audiobook", "course", "podcast"]
    assert set(res.protocol.truth["audiobook"].groups) == {"warm", "cold"}
    assert set(res.protocol.truth[THIRD].groups) == {"all"}
    assert THIRD in res.rows["2T-HGNN"] and THIRD in res.rows["ALS"]
    text = write_report(res, tmp_path / "r").read_text()
    assert "### Course items, all users" in text and "### Audiobook items, cold-start" in text
    assert "course items: 2T-HGNN >= 2T" in text
    assert "2T-HGNN, AA-only graph" in res.rows and "2T-HGNN, PP-only graph" in res.rows

"""The A/B readout end to end: a real server with two arms logs every answer; simulated
listeners stream what they were shown at a planted rate per arm through RecordEvents;
the readout must find a planted difference, cover 0 without one, and flag a planted
sample-ratio mismatch."""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest

from audiorec.errors import AudiorecError
from audiorec.v1 import recommender_pb2 as pb
from audiorec.v1 import recommender_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def workdir(tiny_pipeline, tmp_path_factory):
    wd = tmp_path_factory.mktemp("experiment") / "wd"
    shutil.copytree(tiny_pipeline[0], wd)
    return wd


@pytest.fixture(scope="module")
def listeners(tiny_world):
    return pq.read_table(tiny_world / "users.parquet", columns=["user_id"])["user_id"].to_pylist()


def simulate(workdir, listeners, salt, rates, keep=None, seed=0):
    """Each listener asks once; with its arm's rate streams one of the top 3 shown.
    ``keep``: per arm, the share of its listeners whose answer is logged at all."""
    from serving.arms import Experiment, parse_arms
    from serving.features import StoreGuardConfig
    from serving.server import ServerConfig, create_server

    exp = Experiment(arms=parse_arms(["control=current:0.5", "treatment=current:0.5"]), salt=salt)
    # the readout is the subject here, not the store's deadline: a RecordEvents on SQLite
    # (a commit per view) once took over the default 0.5 s on a loaded CI machine
    guard = StoreGuardConfig(write_timeout_s=5.0)
    running = create_server(workdir, ServerConfig(port=0, experiment=exp, store_guard=guard))
    rng = np.random.default_rng(seed)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = pb_grpc.RecommenderStub(ch)
            for user in listeners:
                arm = exp.arms[exp.assign(user)].name
                if keep and rng.random() >= keep.get(arm, 1.0):
                    continue
                answer = stub.Recommend(
                    pb.RecommendRequest(user_id=user, k=10, type="audiobook"), timeout=10
                )
                if answer.items and rng.random() < rates[answer.arm]:
                    item = answer.items[int(rng.integers(0, 3))].item_id
                    stub.RecordEvents(
                        pb.RecordEventsRequest(
                            events=[pb.Event(user_id=user, item_id=item, event_type="stream")]
                        ),
                        timeout=10,
                    )
            # an answer forced to an arm (the inspector's switch) is no part of the split
            stub.Recommend(
                pb.RecommendRequest(user_id=listeners[0], k=10, type="audiobook", arm="control"),
                timeout=10,
            )
    finally:
        running.stop(grace=1)  # flushes the exposures


def test_a_planted_difference_is_found(workdir, listeners, tmp_path):
    from training.evaluation.experiment import read_experiment, write_readout

    simulate(workdir, listeners, "planted", {"control": 0.15, "treatment": 0.5})
    r = read_experiment(workdir, "planted")
    control, treatment = r.arms
    assert (control.name, treatment.name) == ("control", "treatment")
    assert control.users + treatment.users == len(listeners)  # every listener once
    assert r.left_out["forced answers"] == 1
    assert treatment.stream_through_diff.lo > 0, r.text()
    assert treatment.new_starts_diff.lo > 0, r.text()
    assert abs(treatment.stream_through.value - 0.5) < 0.1
    assert not r.srm and "match the shares" in r.text()
    chart = write_readout(r, tmp_path)
    assert chart.stat().st_size > 1000 and (tmp_path / "readout.json").is_file()


def test_the_command_and_the_inspector_show_the_readout(workdir, capsys):
    from app.cli import main
    from inspector.workdir import Workdir

    assert main(["experiment", "--workdir", str(workdir), "--salt", "planted"]) == 0
    out = capsys.readouterr().out
    assert "treatment" in out and "readout.png" in out
    (folder, data), *_ = Workdir(workdir).readouts()
    assert folder.name == "planted" and data["arms"][1]["name"] == "treatment"
    assert any(c.name == "experiment-planted" for c in Workdir(workdir).charts(None))
    assert main(["experiment", "--workdir", str(workdir), "--since", "yesterday"]) == 1


def test_no_difference_covers_zero(workdir, listeners):
    from training.evaluation.experiment import read_experiment

    simulate(workdir, listeners, "null", {"control": 0.3, "treatment": 0.3}, seed=1)
    r = read_experiment(workdir, "null")
    diff = r.arms[1].stream_through_diff
    assert diff.lo < 0 < diff.hi, r.text()


def test_a_sample_ratio_mismatch_is_flagged(workdir, listeners):
    from training.evaluation.experiment import read_experiment

    simulate(workdir, listeners, "srm", {"control": 0.3, "treatment": 0.3}, keep={"treatment": 0.5})
    r = read_experiment(workdir, "srm")
    assert r.srm and "SAMPLE RATIO MISMATCH" in r.text()
    with pytest.raises(AudiorecError, match="no exposures of the experiment"):
        read_experiment(workdir, "never-ran")

"""What makes the pipeline fit a large dataset: presets chosen from the data's size, the
HGNN's time budget and weekly reuse, text encoding in bf16, the online store loaded by
several processes. (The large-scale timings themselves: bench/bench_pipeline.py.)"""

from __future__ import annotations

import shutil
from datetime import timedelta

import numpy as np
import pytest

from audiorec.config import merge, validated
from tests.conftest import TINY_LARGE, assert_large_reached
from training.pipeline import PipelineConfig
from training.presets import LARGE_FROM_EVENTS, PRESETS, apply_preset, choose_preset, describe


def test_auto_picks_large_from_the_event_count():
    assert choose_preset("auto", LARGE_FROM_EVENTS - 1) == "standard"
    assert choose_preset("auto", LARGE_FROM_EVENTS) == "large"
    assert choose_preset("standard", 10**9) == "standard"  # named: never overridden
    assert choose_preset("large", 10) == "large"


def test_what_the_caller_set_wins_over_the_preset():
    cfg = validated(
        PipelineConfig,
        {"hgnn": {"max_epochs": 9, "hidden_dim": 32}, "two_tower": {"train_days": 30}},
    )
    large = apply_preset(cfg, "large")
    assert large.preset == "large"
    assert large.hgnn.max_epochs == 9 and large.hgnn.hidden_dim == 32  # the caller's
    assert large.hgnn.time_budget_s == PRESETS["large"]["hgnn"]["time_budget_s"]  # preset's
    assert large.two_tower.train_days == 30
    assert large.features.history_days == 14 and large.text.precision == "bf16"
    assert large.hgnn_max_age_days == 7
    line = describe(large, "large")
    assert "hgnn.max_epochs=9" in line and "features.history_days=14" in line
    # standard changes nothing but the name
    assert apply_preset(cfg, "standard") == cfg.model_copy(update={"preset": "standard"})
    assert describe(cfg, "standard") == "preset standard: the default settings"


def test_the_hgnn_stops_when_its_time_budget_is_spent(tiny_world):
    """A budget smaller than one epoch: that epoch ends early, is validated, and is the
    last; the model is the best (only) epoch's."""
    from datetime import datetime, timezone

    import torch

    from training.graph.colisten import build_colisten_graph
    from training.hgnn.config import HGNNConfig
    from training.hgnn.graph import split_edges
    from training.hgnn.train import train_hgnn

    graph = build_colisten_graph(tiny_world, datetime(2026, 10, 18, tzinfo=timezone.utc))
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(graph.n, 16)).astype(np.float32))
    tg = split_edges(graph, 0.1, np.random.default_rng(0))
    cfg = HGNNConfig(
        hidden_dim=16, out_dim=8, batch_size=16, max_epochs=20, patience=20, time_budget_s=1e-3
    )
    result = train_hgnn(x, torch.from_numpy(graph.node_type), tg, cfg, progress=False)
    assert len(result.history) == 1 and result.best_epoch == 1
    assert np.isfinite(result.history[0]["val_loss"])
    steps_in_full_epoch = -(-sum(len(s) for s, _ in tg.train.values()) // cfg.batch_size)
    assert steps_in_full_epoch > 1  # so that stopping early was possible at all


def test_bf16_text_vectors_are_close_to_fp32_and_versioned_apart(tiny_world, tmp_path):
    from training.data.embeddings import read_item_embeddings
    from training.text.embed import embed_items

    cache = tmp_path / "cache.parquet"
    fp32 = embed_items(
        tiny_world / "items.parquet", tmp_path / "a.parquet", cache=cache, progress=False
    )
    bf16 = embed_items(
        tiny_world / "items.parquet",
        tmp_path / "b.parquet",
        cache=cache,
        precision="bf16",
        progress=False,
    )
    assert bf16["encoded"] == bf16["items"]  # the fp32 cache entries are not reused
    assert fp32["version"] != bf16["version"] and bf16["version"].endswith(":bf16")
    a = read_item_embeddings(tmp_path / "a.parquet").vectors
    b = read_item_embeddings(tmp_path / "b.parquet").vectors
    cos = (a * b).sum(1)
    assert cos.min() > 0.999, cos.min()
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    again = embed_items(
        tiny_world / "items.parquet",
        tmp_path / "c.parquet",
        cache=cache,
        precision="bf16",
        progress=False,
    )
    assert again["encoded"] == 0


def test_the_daily_run_reuses_a_recent_hgnn_and_loads_in_parallel(
    tiny_pipeline, tiny_world, tmp_path
):
    """The next day's run with hgnn_max_age_days: the HGNN is reused (same version in
    the new artifact), the features continue incrementally, the online store (loaded
    by two processes) serves what one process would have loaded, and with warm_start the
    towers train from scratch once (no checkpoint yet), then continue the next day."""
    from audiorec.artifact import current_version, feature_project, read_manifest
    from audiorec.featurestore import OnlineFeatureReader, open_store
    from training.pipeline import run_pipeline

    src, report, cfg = tiny_pipeline
    wd = tmp_path / "wd"
    shutil.copytree(src, wd, symlinks=True)
    first = read_manifest(wd / "artifacts" / report.version, verify_files=False)
    cut = datetime_of(first.data["cut"]) + timedelta(days=1)
    daily = cfg.model_copy(
        update={
            "hgnn_max_age_days": 7,
            "features": cfg.features.model_copy(update={"materialize_processes": 2}),
            "two_tower": cfg.two_tower.model_copy(update={"warm_start": True}),
        }
    )
    again = run_pipeline(tiny_world, wd, daily, cut=cut, progress=False)
    assert current_version(wd) == again.version != report.version
    second = read_manifest(wd / "artifacts" / again.version, verify_files=False)
    assert second.upstream["hgnn_version"] == first.upstream["hgnn_version"]
    assert second.upstream["hgnn_skipped"] is True
    assert set(again.peak_rss_gib) == set(again.seconds)
    # the views loaded in parallel have their intervals in the registry (one writer)
    registry_store = open_store(wd, project=feature_project(second))
    for fv in registry_store.list_feature_views():
        assert fv.materialization_intervals, fv.name
        assert max(e for _, e in fv.materialization_intervals).date() >= cut.date(), fv.name
    # no checkpoint before: from scratch; the published towers become the checkpoint
    assert second.metrics["warm_from"] == "" and (wd / "towers" / "last").is_dir()

    # the same generation loaded again by one process into a fresh SQLite file: equal rows
    from training.features.store import apply_repo, materialize

    project = feature_project(second)
    ref = tmp_path / "ref"
    shutil.copytree(wd, ref, symlinks=True)
    (ref / "feast" / "online.db").unlink()
    store = apply_repo(ref, project=project)
    from datetime import datetime, timezone

    materialize(store, cut, start=datetime(1970, 1, 2, tzinfo=timezone.utc), processes=1)
    users = list(np.unique(np.asarray(second_users(wd, again.version)))[:25])
    got = OnlineFeatureReader(open_store(wd, project=project)).read(users)
    want = OnlineFeatureReader(open_store(ref, project=project)).read(users)
    assert got.keys() == want.keys()
    for name in got:
        assert [str(v) for v in got[name]] == [str(v) for v in want[name]], name

    # the day after: the towers continue from that checkpoint for one epoch
    third = run_pipeline(tiny_world, wd, daily, cut=cut + timedelta(days=1), progress=False)
    m3 = read_manifest(wd / "artifacts" / third.version, verify_files=False)
    assert m3.metrics["warm_from"] == second.data["cut"]
    assert [h["epoch"] for h in m3.metrics["history"]] == [0, 1]
    assert m3.metrics["best_epoch"] in (0, 1)


def datetime_of(iso: str):
    from datetime import datetime

    return datetime.fromisoformat(iso)


def second_users(wd, version):
    import pyarrow.parquet as pq

    return pq.read_table(wd / "artifacts" / version / "consumed.parquet").column("user_id")


@pytest.mark.parametrize("bad", [{"text": {"precision": "int4"}}, {"preset": "huge"}])
def test_bad_scale_settings_are_refused(bad):
    from audiorec.errors import AudiorecError

    with pytest.raises(AudiorecError):
        validated(PipelineConfig, bad)


def test_with_overrides_keeps_what_the_caller_set():
    """Every copy keeps the record of set fields, so a preset applied after any number of
    merges still fills in exactly the fields nobody set."""
    from audiorec.config import explicit

    cfg = validated(PipelineConfig, {"hgnn": {"max_epochs": 9}})
    for over in (
        {"store": {"offline": "ray"}},
        {"engine": {"kind": "local"}},
        {"hgnn": {"seed": 3}},
        {"two_tower": {"train_days": 30}, "preset": "large"},
    ):
        before = explicit(cfg)
        cfg = cfg.with_overrides(over)
        assert explicit(cfg) == merge(before, over)
    large = apply_preset(cfg, "large")
    assert large.hgnn.max_epochs == 9 and large.hgnn.seed == 3 and large.store.offline == "ray"
    assert large.hgnn.time_budget_s == 480.0 and large.text.precision == "bf16"
    assert large.two_tower.train_days == 30 and large.two_tower.validation_days == 3
    # pydantic's own copy with an update marks the updated fields as set, too
    assert explicit(cfg.model_copy(update={"keep_versions": 2}))["keep_versions"] == 2


def test_cli_preset_large_reaches_every_step(tiny_world, tmp_path, capsys):
    """`audiorec pipeline --preset large`: the preset's values reach the text, HGNN,
    feature and tower steps (as their outputs record them), a --config value wins over
    the preset, and the first step prints the effective values."""
    import json

    from app.cli import main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(TINY_LARGE))
    wd = tmp_path / "wd"
    rc = main(["pipeline", "--data", str(tiny_world), "--workdir", str(wd), "--preset", "large",
               "--config", str(cfg), "--quiet"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert_large_reached(wd)


def test_auto_picks_large_past_a_lowered_threshold_in_run_pipeline(
    tiny_world, tiny_pipeline, tmp_path
):
    """``preset: auto`` on a world past ``large_from_events``: `large`, end to end; the
    settings lines are what the steps received, the first line the effective values."""
    from training.pipeline import STEPS, run_pipeline

    cfg = validated(PipelineConfig, merge(TINY_LARGE, {"large_from_events": 1_000}))
    report = run_pipeline(tiny_world, tmp_path, cfg, progress=False)
    assert report.preset == "large"
    assert_large_reached(tmp_path)
    assert "precision bf16" in report.settings[STEPS[1]]
    assert "time budget 480 s" in report.settings[STEPS[2]]
    assert "up to 1 epochs" in report.settings[STEPS[2]]
    assert "the last 14 snapshot days" in report.settings[STEPS[3]]
    assert "DuckDB memory bound 6 GiB, 2 materializing" in report.settings[STEPS[3]]
    assert "the last 14 days, validation 3 days, up to 4 epochs" in report.settings[STEPS[4]]
    # the default threshold on the same world: standard, the defaults (conftest's run)
    _, std, _ = tiny_pipeline
    assert std.preset == "standard" and "precision fp32" in std.settings[STEPS[1]]
    assert "time budget none" in std.settings[STEPS[2]]


def test_evaluation_and_the_ciao_preset_keep_what_was_set():
    """The evaluation's pipeline settings (the Ciao preset under a user's --config, as
    `audiorec ciao` merges them) go through the same preset step as the pipeline's, and
    its per-variant copies (``with_overrides``) keep the record of what was set."""
    from training.data.ciao import EVALUATION_PRESET
    from training.evaluation.run import EvaluationConfig
    from training.presets import effective

    user = {"pipeline": {"hgnn": {"max_epochs": 2}, "large_from_events": 100}}
    cfg = validated(EvaluationConfig, merge(EVALUATION_PRESET, user))
    variant = cfg.pipeline.with_overrides({"hgnn": {"seed": 5}})
    for pcfg in (cfg.pipeline, variant):
        large, name = effective(pcfg, 174_000)
        assert name == "large"
        assert large.hgnn.max_epochs == 2 and large.hgnn.patience == 3  # user's, Ciao's
        assert large.hgnn.time_budget_s == 480.0 and large.text.precision == "bf16"
        assert large.features.window_days == 730 and large.features.history_days == 14
        assert large.two_tower.validation_days == 365  # the Ciao preset's, not large's 3
    assert effective(variant, 174_000)[0].hgnn.seed == 5
    assert effective(cfg.pipeline, 99)[1] == "standard"

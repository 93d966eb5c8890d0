"""The two towers, the exported artifact and the daily pipeline, on a tiny world."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from audiorec.artifact import (
    Manifest,
    artifacts_root,
    check_user_features,
    current_version,
    publish,
    read_manifest,
)
from audiorec.errors import ContractError
from audiorec.hnsw_index import HNSWConfig, ItemIndex, exact_top_k
from audiorec.item_index import load_index
from audiorec.tower_inputs import InputSpec, tower_inputs
from training.pipeline import PipelineError, run_pipeline


@pytest.fixture(scope="module")
def piped(tiny_pipeline):
    return tiny_pipeline


@pytest.fixture(scope="module")
def artifact(piped):
    from serving.artifact import Artifact

    return Artifact.load_current(piped[0])


@pytest.fixture(scope="module")
def tower_data(piped, tiny_world):
    from audiorec.featurestore import open_store
    from training.data import Dataset
    from training.twotower.examples import build_tower_data

    wd, _, cfg = piped
    return build_tower_data(
        open_store(wd),
        tiny_world,
        Dataset.open(tiny_world).default_cut,
        cfg.two_tower,
        progress=lambda *a: None,
    )


def test_pipeline_publishes_a_complete_validated_version(piped, artifact):
    wd, report, _ = piped
    assert current_version(wd) == report.version
    m = read_manifest(report.directory)  # checksums of every file
    prior = m.model["prior"]
    # the popularity prior's coordinate: 32 tower dimensions + 1, when one was chosen
    assert m.dim == (33 if prior else 32) and m.metric == "ip"
    assert m.feature_services["user"] == "user_tower"
    assert m.indexes["audiobook"].count == (artifact.item_types == "audiobook").sum()
    assert m.indexes["podcast"].count == (artifact.item_types == "podcast").sum()
    assert {"tensorflow", "keras", "feast", "hnswlib", "faiss"} <= set(m.libraries)
    # the breadth tuned at publish: real user queries reach the recall target (the tiny
    # world's pipeline indexes with inverted lists, tests/conftest.py, behind routes
    # learned from its training users)
    for kind, info in m.indexes.items():
        assert info.method == "routed" and 1 <= info.nprobe <= info.lists
        assert info.routes == artifact.indexes[kind].routes >= 8
        assert info.recall_at_10 >= 0.99
    assert m.git_sha and m.data["cut"] and m.upstream["hgnn_version"].startswith("hgnn-")
    assert (report.directory / "training_curve.png").stat().st_size > 0
    towers = artifact.vectors[:, :32]
    np.testing.assert_allclose(np.linalg.norm(towers, axis=1), 1, atol=1e-4)
    if prior:
        # the last coordinate is beta[type] x prior, prior in [0, 1]; users append 1.0
        for kind, beta in prior["betas"].items():
            last = artifact.vectors[artifact.item_types == kind, -1]
            assert ((last >= -1e-6) & (last <= beta + 1e-6)).all()
        user = artifact.tower({k: v[:3] for k, v in _inputs(artifact).items()})
        assert np.allclose(user[:, -1], 1.0)
    # fallback lists exist for both types, globally
    assert len(artifact.popularity[("global", "", "audiobook")]) > 0
    assert len(artifact.popularity[("global", "", "podcast")]) > 0


def _inputs(artifact) -> dict:
    """Three users' raw inputs, all missing: the tower fills them inside."""
    return tower_inputs(
        {s.name: [None] * 3 for s in artifact.manifest.user_features},
        artifact.manifest.user_features,
    )


def test_exported_inputs_equal_the_feature_service(piped, artifact):
    from audiorec.featurestore import feature_service, open_store

    service = feature_service(open_store(piped[0]), "user_tower")
    served = [f.name for p in service.feature_view_projections for f in p.features]
    assert artifact.tower.input_names == sorted(served)
    assert [s.name for s in artifact.manifest.user_features] == served
    check_user_features(artifact.manifest, served)
    with pytest.raises(ContractError, match="trained on user features"):
        check_user_features(artifact.manifest, served[:-1])


@pytest.mark.parametrize("sampled", [0, 32])
def test_training_learns_and_export_round_trips(tower_data, tmp_path, sampled):
    from serving.tower import UserTower
    from training.twotower.config import TwoTowerConfig
    from training.twotower.export import export_user_tower
    from training.twotower.train import embed, train_two_tower, validation_recall

    cfg = TwoTowerConfig(
        layers=(64, 32), max_epochs=6, patience=6, batch_size=64, sampled_negatives=sampled
    )
    untrained = train_two_tower(
        tower_data, cfg.with_overrides({"max_epochs": 1, "learning_rate": 1e-9}), progress=False
    )
    trained = train_two_tower(tower_data, cfg, progress=False)
    rows = np.flatnonzero(tower_data.scored)
    before = validation_recall(tower_data, untrained, rows)["audiobook"]
    after = trained.best["val_recall_audiobook"]
    assert after > before + 0.1, (before, after)
    export_user_tower(trained.user_tower, tower_data.user_specs, tmp_path / "tower")
    back = UserTower(tmp_path / "tower", tower_data.user_specs, 32)
    sample = {k: v[:50] for k, v in tower_data.user.items()}
    np.testing.assert_allclose(back(sample), embed(trained.user_tower, sample), atol=1e-5)


def test_examples_see_no_future(tower_data):
    """A user's first-ever audiobook stream is a positive whose features count no
    audiobook stream: the example's own event is not in its features."""
    audiobook = tower_data.item_types[tower_data.item] == "audiobook"
    streams = tower_data.user["audiobook_streams_90d"]
    ts = tower_data.ts
    first = {}
    users = tower_data.user_ids
    for i in np.argsort(ts, kind="stable"):
        if audiobook[i] and users[i] not in first:
            first[users[i]] = i
    rows = np.array(list(first.values()))
    assert len(rows) > 20
    assert np.nan_to_num(streams[rows]).max() == 0


def test_missing_values_are_filled_inside_the_model(artifact):
    """Serving passes raw values; a user with no rows at all still gets a unit vector."""
    raw = {s.name: [None] for s in artifact.manifest.user_features}
    v = artifact.tower(tower_inputs(raw, artifact.manifest.user_features))
    assert v.shape == (1, artifact.manifest.dim) and np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v[:, :32]), 1, atol=1e-4)  # + the prior's 1.0


def test_tower_inputs_rule():
    specs = [
        InputSpec(name="s", kind="string"),
        InputSpec(name="n", kind="number"),
        InputSpec(name="v", kind="vector", dim=2),
    ]
    out = tower_inputs({"s": ["a", None], "n": [3, None], "v": [[1, 2], None]}, specs)
    assert out["s"].tolist() == ["a", ""]
    assert out["n"][0] == 3 and np.isnan(out["n"][1])
    assert out["v"][0].tolist() == [1, 2] and np.isnan(out["v"][1]).all()
    with pytest.raises(ContractError, match=r"vectors of length \[3\], expected 2"):
        tower_inputs({"s": ["a"], "n": [1], "v": [[1, 2, 3]]}, specs)


def test_recall_against_brute_force_random_10k():
    """Production index settings, 10k random clustered unit vectors (uniform random
    vectors in high dimension have no neighbour structure; see docs/benchmarks.md)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 64))[rng.integers(0, 200, 10_500)] + rng.normal(
        scale=0.6, size=(10_500, 64)
    )
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index = ItemIndex.build(x[:10_000], np.arange(10_000), HNSWConfig())
    labels, _ = index.search(x[10_000:], 10)
    truth = exact_top_k(x[:10_000], x[10_000:], 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels, truth)])
    assert recall >= 0.99, recall


def test_artifact_indexes_round_trip(artifact, tmp_path):
    index = artifact.indexes["audiobook"]
    index.save(tmp_path / "again")
    back = load_index(tmp_path / "again", expect_dim=artifact.manifest.dim)
    q = artifact.vectors[artifact.label_rows["audiobook"][:30]]
    assert np.array_equal(index.search(q, 10)[0], back.search(q, 10)[0])


def _copy_version(piped, tmp_path):
    wd, report, _ = piped
    dst = tmp_path / "wd"
    shutil.copytree(artifacts_root(wd), dst / "artifacts")
    return dst, report.version


def test_interrupted_publish_keeps_current(piped, tmp_path, monkeypatch):
    import audiorec.artifact as art

    wd, old = _copy_version(piped, tmp_path)
    manifest = read_manifest(wd / "artifacts" / old)

    def write(out):  # a version that dies half-written
        (out / "items.parquet").write_bytes(b"partial")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        publish(wd, "v-new", write)
    assert current_version(wd) == old and not (wd / "artifacts" / "v-new").exists()
    assert not [p for p in (wd / "artifacts").iterdir() if p.name.startswith(".")]

    def copy(out):  # a complete version; the process dies before the pointer moves
        shutil.copytree(wd / "artifacts" / old, out, dirs_exist_ok=True)
        return manifest.model_copy(update={"version": "v-new"})

    monkeypatch.setattr(art, "set_current", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        publish(wd, "v-new", copy)
    assert current_version(wd) == old
    monkeypatch.undo()
    with pytest.raises(ContractError, match="refused"):
        publish(
            wd,
            "v-bad",
            copy,
            check=lambda d: (_ for _ in ()).throw(ContractError("refused by check")),
        )
    assert current_version(wd) == old and not (wd / "artifacts" / "v-bad").exists()


def test_loader_refuses_tampered_or_foreign_versions(piped, tmp_path):
    from serving.artifact import Artifact

    wd, version = _copy_version(piped, tmp_path)
    d = wd / "artifacts" / version
    with open(d / "popularity.parquet", "ab") as f:
        f.write(b"x")
    with pytest.raises(ContractError, match="popularity.parquet does not match its checksum"):
        Artifact.load(d)
    m = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(ContractError, match="format 99, expected 'audiorec.artifact' format 1"):
        read_manifest(d)
    (d / "manifest.json").write_text(json.dumps({**m, "dim": 64, "files": {}}))
    with pytest.raises(
        ContractError, match=f"item vectors have dim {m['dim']}, the manifest says 64"
    ):
        Artifact.load(d)
    with pytest.raises(ContractError, match="not an artifact version"):
        read_manifest(tmp_path)


def test_failed_step_is_named_and_nothing_is_published(tiny_world, tmp_path):
    with pytest.raises(
        PipelineError,
        match=r"step 3 \(co-listening graph \+ HGNN\) failed: "
        r"--skip-hgnn needs earlier HGNN embeddings.*"
        r"nothing was published",
    ):
        run_pipeline(tiny_world, tmp_path, skip_hgnn=True, progress=False)
    assert current_version(tmp_path) is None


def test_failed_training_keeps_the_published_version(piped, tiny_world, tmp_path, monkeypatch):
    """--skip-hgnn reuses the item embeddings; a 2T failure leaves current alone."""
    import training.twotower.train as train

    wd, report, cfg = piped
    monkeypatch.setattr(
        train,
        "train_two_tower",
        lambda *a, **k: (_ for _ in ()).throw(MemoryError("out of memory")),
    )
    with pytest.raises(
        PipelineError,
        match=rf"step 5 .* failed: MemoryError: out of memory; "
        rf"the published version {report.version} is",
    ):
        run_pipeline(tiny_world, wd, cfg, skip_hgnn=True, progress=False)
    assert current_version(wd) == report.version


def test_manifest_rejects_unknown_keys(artifact):
    raw = json.loads(artifact.manifest.model_dump_json())
    with pytest.raises(Exception):
        Manifest.model_validate({**raw, "surprise": 1})


def test_cli_pipeline_bad_config_is_one_line(tmp_path, capsys, tiny_world):
    from app.cli import main

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"two_tower": {"layerz": [8]}}))
    rc = main(
        [
            "pipeline",
            "--data",
            str(tiny_world),
            "--workdir",
            str(tmp_path / "w"),
            "--config",
            str(cfg),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "two_tower.layerz" in err[0] and "unknown key" in err[0]


def test_validation_masks_exactly_what_was_streamed_before_the_slice(tower_data, tiny_world):
    """``seen``: a validation example's row holds its user's streams before the slice,
    a training example's row is empty; never the example's own (new) item."""
    import pandas as pd

    start = pd.Timestamp(tower_data.window["validation_start"])
    ev = pd.read_parquet(tiny_world / "events.parquet")
    ev = ev[(ev.event_type == "stream") & (ev.ts < start)]
    val = np.flatnonzero(tower_data.validation)
    assert tower_data.seen[np.flatnonzero(~tower_data.validation)].nnz == 0
    for r in val[:: max(1, len(val) // 25)]:
        got = set(tower_data.item_ids[tower_data.seen[r].indices])
        want = set(ev.item_id[ev.user_id == tower_data.user_ids[r]]) & set(tower_data.item_ids)
        assert got == want
        assert not tower_data.seen[r, tower_data.item[r]]


def test_prior_candidates_are_bounded():
    from audiorec.config import validated
    from audiorec.errors import AudiorecError
    from training.twotower.config import TwoTowerConfig

    for bad in ({"prior_betas": []}, {"prior_betas": [-1.0]}, {"prior_half_lives": [0.0]}):
        with pytest.raises(AudiorecError, match=f"{next(iter(bad))}: .*at least one candidate"):
            validated(TwoTowerConfig, bad)
    assert validated(TwoTowerConfig, {"prior_half_lives": [30.0]}).prior_half_lives == (30.0,)


def test_prior_hit_count_equals_a_partial_sort_top_10():
    """The count form (a row hits iff fewer than 10 items beat its best target) equals
    "a target among the 10 best" by partial sort, on random scores without ties, with
    seen items at -inf and rows without targets (never a hit); across row chunks."""
    import scipy.sparse as sp

    from training.twotower import prior as P

    rng = np.random.default_rng(3)
    n, m = 300, 4000
    base = rng.normal(size=(n, m)).astype(np.float32)
    base[rng.random((n, m)) < 0.05] = -np.inf
    dense = rng.random((n, m)) < 0.002
    dense[:5] = False  # rows with no target at all
    targets = sp.csr_matrix(dense)
    pris = rng.random((2, m)).astype(np.float32)
    betas = (0.0, 0.5, 3.0)
    want = np.zeros((2, 3), np.int64)
    for h in range(2):
        for b, beta in enumerate(betas):
            s = base + np.float32(beta) * pris[h]
            top = np.argpartition(-s, 9, axis=1)[:, :10]
            want[h, b] = np.take_along_axis(dense, top, axis=1).any(axis=1).sum()
    assert want.min() > 0 and want.max() < n - 5  # neither trivial
    np.testing.assert_array_equal(P._hits(base, pris, betas, targets), want)
    np.testing.assert_array_equal(P._hits(base, pris, betas, targets, chunk_rows=7), want)


def test_validation_recall_is_chunk_free():
    """recall_at_k scores rows in chunks; the result is the full matrix's, seen masked."""
    import scipy.sparse as sp

    from training.twotower.train import recall_at_k

    rng = np.random.default_rng(5)
    users = rng.normal(size=(700, 16)).astype(np.float32)
    items = rng.normal(size=(30_000, 16)).astype(np.float32)
    seen = sp.random(len(users), len(items), density=0.001, random_state=6, format="csr")
    full = users @ items.T
    coo = seen.tocoo()
    full[coo.row, coo.col] = -np.inf
    # half the targets near the top (ranks 0..19), half anywhere
    near = np.argpartition(-full, 19, axis=1)[:, :20][
        np.arange(len(users)), rng.integers(0, 20, len(users))
    ]
    targets = np.where(
        np.arange(len(users)) % 2 == 0, near, rng.integers(0, len(items), len(users))
    )
    t = full[np.arange(len(users)), targets]
    want = float(((full > t[:, None]).sum(axis=1) < 10).mean())
    assert 0 < want < 1
    assert recall_at_k(users, items, targets, seen=seen) == pytest.approx(want)


def test_warm_start_continues_the_saved_towers(tower_data, tmp_path):
    """A checkpoint round-trips (its towers score exactly as saved: epoch 0 of the warm
    run), the warm run trains only warm_epochs on the new rows plus a replay sample, and a
    checkpoint for other towers or from a later cut is refused with the reason."""
    import pandas as pd

    from training.twotower.config import TwoTowerConfig
    from training.twotower.train import train_two_tower, validation_recall
    from training.twotower.warm import checkpoint_key, load_checkpoint, save_checkpoint, warm_rows

    cfg = TwoTowerConfig(layers=(64, 32), max_epochs=2, patience=2, batch_size=64)
    first = train_two_tower(tower_data, cfg, progress=False)
    up = {"hgnn_version": "h1", "text_version": "t1"}
    key = checkpoint_key(tower_data, cfg, up)
    cut = pd.Timestamp(tower_data.window["cut"])
    save_checkpoint(tmp_path / "last", first, tower_data, key, cut - pd.Timedelta(days=1))
    warm, why = load_checkpoint(tmp_path / "last", key, cut)
    assert warm is not None and why == ""
    warm_cfg = cfg.with_overrides({"warm_start": True, "warm_epochs": 1})
    again = train_two_tower(tower_data, warm_cfg, progress=False, warm=warm)
    rows = np.flatnonzero(tower_data.scored)
    assert again.history[0]["epoch"] == 0 and [h["epoch"] for h in again.history] == [0, 1]
    assert again.history[0]["val_recall_audiobook"] == pytest.approx(
        validation_recall(tower_data, first, rows)["audiobook"]
    )
    assert again.warm_from == str(cut - pd.Timedelta(days=1)) and again.stats == first.stats

    other = checkpoint_key(tower_data, cfg.with_overrides({"layers": (64, 16)}), up)
    assert load_checkpoint(tmp_path / "last", other, cut) == (
        None,
        "the earlier towers were built for other layers",
    )
    moved = checkpoint_key(tower_data, cfg, {**up, "hgnn_version": "h2"})
    assert "hgnn_version" in load_checkpoint(tmp_path / "last", moved, cut)[1]
    late = load_checkpoint(tmp_path / "last", key, cut - pd.Timedelta(days=2))
    assert late[0] is None and "not before this one" in late[1]
    assert load_checkpoint(tmp_path / "none", key, cut)[0] is None

    train = np.flatnonzero(~tower_data.validation)
    since = pd.Timestamp(tower_data.ts[train].max()) - pd.Timedelta(days=2)
    kept, n_new = warm_rows(tower_data.ts, train, since, 0.25, 0)
    is_new = np.asarray(pd.DatetimeIndex(tower_data.ts[kept]) >= since)
    assert n_new == is_new.sum() > 0 and set(kept) <= set(train)
    assert (pd.DatetimeIndex(tower_data.ts[train]) >= since).sum() == n_new  # all new kept
    assert 0.1 < (~is_new).sum() / (len(train) - n_new) < 0.4  # ~ the replay share


def test_sampled_negatives_are_scored_and_corrected_by_hand():
    """Extra columns (sampled negatives) enter the softmax with their own log-Q, and one
    equal to a row's positive is masked as an accidental hit: a hand-computed loss."""
    import tensorflow as tf

    from training.twotower.loss import in_batch_softmax_loss

    rng = np.random.default_rng(1)
    u = tf.math.l2_normalize(rng.normal(size=(3, 4)).astype(np.float32), 1)
    v = tf.math.l2_normalize(rng.normal(size=(5, 4)).astype(np.float32), 1)
    ids = np.array([7, 8, 9, 3, 8])  # two sampled columns; the last is row 1's positive
    prob = np.array([0.1, 0.2, 0.3, 0.05, 0.05], np.float32)
    got = float(in_batch_softmax_loss(u, v, tf.constant(ids), tf.constant(prob), 0.5))
    logits = (u.numpy() @ v.numpy().T) / 0.5 - np.log(prob)
    logits[1, 4] = -1e9
    expected = np.mean([np.log(np.exp(logits[i]).sum()) - logits[i, i] for i in range(3)])
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("workers", [2, 3])
def test_sharded_in_batch_loss_adds_up_to_the_one_process_loss(workers):
    """What a tf.distribute worker computes (its users against the whole batch's items,
    over the global batch) sums to the one-process loss, accidental hits included."""
    import tensorflow as tf

    from training.twotower.loss import in_batch_softmax_loss

    rng = np.random.default_rng(0)
    u, v = (tf.math.l2_normalize(rng.normal(size=(12, 8)).astype(np.float32), 1) for _ in "uv")
    ids = tf.constant(rng.integers(0, 5, 12))  # repeats: the same item twice in a batch
    prob = tf.constant(rng.uniform(0.01, 0.2, 12).astype(np.float32))
    whole = float(in_batch_softmax_loss(u, v, ids, prob, 0.1))
    parts = [
        float(in_batch_softmax_loss(tf.gather(u, s), v, ids, prob, 0.1, int(s[0]), 12))
        for s in np.array_split(np.arange(12), workers)
    ]
    assert sum(parts) == pytest.approx(whole, rel=1e-6)

"""The towers' FeatureEncoder: its grouped form (one block of numbers, one of vectors, the
columns put back in the specs' order) equals the per-feature reference written out in
numpy, for any order of specs, missing values, ignored features and lone kinds; and it
exports to a graph far smaller than one chain of ops per feature."""

from __future__ import annotations

import numpy as np
import pytest

from audiorec.tower_inputs import InputSpec
from training.release.onnx_export import probe_inputs
from training.twotower.towers import FeatureEncoder, build_tower

KINDS = ("string", "number", "vector")


def _specs(rng: np.random.Generator, n: int) -> list[InputSpec]:
    kinds = rng.choice(KINDS, n)
    return [
        InputSpec(name=f"f{i}_{k}", kind=k, dim=int(rng.integers(2, 6)) if k == "vector" else 1)
        for i, k in enumerate(kinds)
    ]


def _stats(specs: list[InputSpec], rng: np.random.Generator) -> dict:
    stats: dict = {}
    for s in specs:
        if s.kind == "string":
            stats[s.name] = {"vocabulary": [f"v{j}" for j in range(int(rng.integers(1, 5)))]}
        elif s.kind == "number":
            stats[s.name] = {"mean": float(rng.normal()), "std": float(rng.uniform(0.5, 2))}
    return stats


def _reference(enc: FeatureEncoder, inputs: dict) -> np.ndarray:
    """The per-feature form, in numpy: each spec's columns in the specs' order."""
    parts = []
    for s in enc.specs:
        x = inputs[s.name]
        if s.kind == "string":
            vocab = enc.stats[s.name]["vocabulary"]
            ids = np.array([vocab.index(v) + 1 if v in vocab else 0 for v in x])
            parts.append(enc.embeddings[s.name].embeddings.numpy()[ids])
        elif s.kind == "number":
            st = enc.stats[s.name]
            with np.errstate(invalid="ignore"):
                z = (np.log1p(np.maximum(x, 0)) - st["mean"]) / st["std"]
            parts.append(np.where(np.isnan(x), 0.0, z)[:, None])
        else:
            parts.append(np.where(np.isnan(x), 0.0, x))
    return np.concatenate(parts, axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_grouped_encoder_equals_the_per_feature_form(seed):
    rng = np.random.default_rng(seed)
    specs = _specs(rng, int(rng.integers(1, 9)))
    ignore = [s.name for s in specs[1:] if rng.random() < 0.25]
    enc = FeatureEncoder(specs, _stats(specs, rng), embedding_dim=3, ignore=ignore)
    inputs = probe_inputs(specs, enc.stats, 64, seed)
    got = np.asarray(enc(inputs))
    want = _reference(enc, inputs)
    assert got.shape == want.shape == (64, want.shape[1])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_one_kind_alone_and_a_hand_checked_row():
    specs = [InputSpec(name="plays", kind="number"), InputSpec(name="days", kind="number")]
    stats = {"plays": {"mean": 1.0, "std": 2.0}, "days": {"mean": 0.0, "std": 1.0}}
    enc = FeatureEncoder(specs, stats)
    x = {
        "plays": np.array([np.e - 1, np.nan], np.float32),
        "days": np.array([-5.0, 0.0], np.float32),
    }
    # (log1p(e - 1) - 1) / 2 = 0; NaN -> 0; log1p(max(-5, 0)) = 0
    np.testing.assert_allclose(np.asarray(enc(x)), [[0.0, 0.0], [0.0, 0.0]], atol=1e-6)


def test_exported_graph_has_no_chain_of_ops_per_feature(tmp_path):
    onnx = pytest.importorskip("onnx")
    from training.release.onnx_export import check_onnx, export_onnx
    from training.twotower.export import export_user_tower

    rng = np.random.default_rng(7)
    specs = [InputSpec(name=f"n{i}", kind="number") for i in range(12)] + [
        InputSpec(name="country", kind="string"),
        InputSpec(name="pref", kind="vector", dim=8),
        InputSpec(name="music", kind="vector", dim=4),
    ]
    tower_stats = _stats(specs, rng)
    tower = build_tower(specs, tower_stats, [16, 8], 4, (), "user_tower")
    export_user_tower(tower, specs, tmp_path / "saved")
    export_onnx(tmp_path / "saved", tmp_path / "t.onnx")
    check_onnx(tmp_path / "saved", tmp_path / "t.onnx", probe_inputs(specs, tower_stats, 32))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "t.onnx")).graph.node]
    # one log, one NaN test per kind block: a chain per feature had 12 logs, 14 tests
    assert ops.count("Log") == 1
    assert ops.count("IsNaN") == 2
    # the small vocabulary's rows by one product, without Keras's negative-index chain
    assert ops.count("OneHot") == 1 and "Less" not in ops

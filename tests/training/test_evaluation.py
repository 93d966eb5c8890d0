"""The evaluation: hand-checked metrics, the protocol's invariants, one tiny run."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
import scipy.sparse as sp

from training.data.protocol import build_protocol
from training.evaluation.metrics import first_hit_rank, metrics, top_k


def test_metrics_hand_checked():
    # 3 users x 4 items; user 0's target ranks 1st, user 1's 3rd, user 2 has no hit
    targets = sp.csr_matrix(np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], np.float32))
    top = np.array([[2, 1, 0], [1, 3, 0], [0, 1, 2]])
    rows = np.arange(3)
    assert first_hit_rank(top, targets, rows).tolist() == [0, 2, 3]
    m = metrics(top, targets, rows)
    assert m["hr_curve"] == [1 / 3, 1 / 3, 2 / 3]
    assert np.isclose(m["mrr"], (1 + 1 / 3 + 0) / 3)
    assert m["coverage"] == 1.0  # items 0..3 all recommended to someone


def test_top_k_masks_consumed_and_matches_brute_force():
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(50, 8)), rng.normal(size=(300, 8))
    consumed = sp.random(50, 300, density=0.05, random_state=1, format="csr")
    top = top_k(users, items, consumed, np.arange(50), k=20, block=16)
    scores = users @ items.T
    scores[consumed.nonzero()] = -np.inf
    assert np.array_equal(top, np.argsort(-scores, axis=1, kind="stable")[:, :20])
    pop = top_k(None, None, consumed, np.arange(50), k=5, item_scores=np.arange(300.0))
    assert all(not consumed[u, i] for u in range(50) for i in pop[u])
    assert (np.diff(pop, axis=1) < 0).all()  # most popular first


def test_protocol_invariants(tiny_world):
    from training.data import Dataset

    end = Dataset.open(tiny_world).default_cut
    proto = build_protocol(tiny_world, end - timedelta(days=14), end)
    for kind, t in proto.truth.items():
        assert t.targets.multiply(t.consumed).nnz == 0  # targets are new starts
        assert t.targets.shape == (len(proto.users), len(t.item_ids))
        rows = np.concatenate(list(t.groups.values()))
        assert len(np.unique(rows)) == len(rows)  # groups partition the scored users
        assert (np.diff(t.targets.indptr)[rows] > 0).all()
    groups = proto.truth["audiobook"].groups
    assert set(groups) == {"warm", "cold"} and len(groups["warm"]) and len(groups["cold"])


@pytest.mark.slow
def test_evaluate_end_to_end_tiny(tiny_world, tmp_path):
    from app.cli import main

    cfg = tmp_path / "eval.json"
    # two seeds, the second also reseeding the HGNN; one ablation picked by name
    cfg.write_text(
        json.dumps(
            {
                "seeds": [0, 1],
                "hgnn_seeds": 2,
                "selection_trials": 2,
                "ablations": ["no weak signals"],
                "pipeline": {
                    "hgnn": {
                        "hidden_dim": 32,
                        "out_dim": 16,
                        "max_epochs": 2,
                        "patience": 2,
                        "max_steps_per_epoch": 20,
                    },
                    "two_tower": {
                        "layers": [32, 16],
                        "max_epochs": 2,
                        "patience": 2,
                        "batch_size": 64,
                    },
                },
            }
        )
    )
    rc = main(
        [
            "evaluate",
            "--data",
            str(tiny_world),
            "--workdir",
            str(tmp_path / "w"),
            "--out",
            str(tmp_path / "r"),
            "--config",
            str(cfg),
            "--quiet",
        ]
    )
    assert rc == 0
    report = (tmp_path / "r" / "report.md").read_text()
    for text in (
        "Audiobook items, warm-start users",
        "Audiobook items, cold-start users",
        "Podcast items, all users",
        "| 2T-HGNN |",
        "| Popularity |",
        "0.353",
        "| ALS |",
        "| BPR |",
        "| ItemKNN |",
        "| EASE |",
        "| RP3beta |",
        "95% interval over users",
        "Settings chosen on the validation window",
    ):
        assert text in report
    metrics_json = json.loads((tmp_path / "r" / "metrics.json").read_text())
    m = metrics_json["models"]
    peers = ("ALS", "BPR", "ItemKNN", "EASE", "RP3beta")
    assert set(m) == {
        "Popularity",
        *peers,
        *(f"{p} + prior" for p in peers),
        "LLM-KNN",
        "HGNN",
        "HGNN-w-users",
        "2T",
        "2T-HGNN",
        "2T-HGNN, no weak signals",
    }
    seeds = {name: model["audiobook"]["warm"]["seeds"] for name, model in m.items()}
    two = {"ALS": 2, "BPR": 2, "ItemKNN": 1, "EASE": 1, "RP3beta": 1}
    assert seeds == {
        "Popularity": 1,
        **two,
        **{f"{p} + prior": n for p, n in two.items()},
        "LLM-KNN": 1,
        "HGNN": 2,
        "HGNN-w-users": 1,
        "2T": 2,
        "2T-HGNN": 2,
        "2T-HGNN, no weak signals": 1,
    }
    # every peer and both towers chose among 2 settings on validation, defaults first
    chosen = metrics_json["selection"]
    ablation = chosen.pop("2T-HGNN, no weak signals")
    assert set(chosen) == {"Popularity", *peers, *(f"{p} + prior" for p in peers), "2T", "2T-HGNN"}
    # a lever / ablation row is judged on the validation window too (its first seed, at
    # its prior's chosen cell, before the refit), beside the chosen 2T-HGNN's value
    assert ablation["setting"] == {"use_weak_signals": False}
    assert 0 <= ablation["validation"] <= 1 and ablation["trials"] == []
    assert ablation["window"] == chosen["2T-HGNN"]["window"]
    assert all(len(chosen[k]["trials"]) == 2 for k in (*peers, "2T", "2T-HGNN"))
    # ... and so did each "+ prior" row, its prior chosen with each setting
    assert all(len(chosen[f"{p} + prior"]["trials"]) == 2 for p in peers)
    # one validation window for every row: the towers' slice before the cut
    windows = {tuple(c["window"]) for c in chosen.values()}
    assert len(windows) == 1, windows
    start, end = (np.datetime64(w[:10]) for w in windows.pop())
    assert end - start == np.timedelta64(7, "D")  # two_tower.validation_days
    # Popularity: the plain count and the prior's five half-lives, per item type
    assert len(chosen["Popularity"]["trials"]) == 6
    assert set(chosen["Popularity"]["setting"]) == {
        "half_life_days audiobook",
        "half_life_days podcast",
    }
    # the prior rows: the towers' grid, per type, on the towers' slice
    assert set(chosen["ALS + prior"]["setting"]["prior"]) == {"audiobook", "podcast"}
    assert chosen["ALS"]["trials"][0]["factors"] == 64
    # the winner's settings, ready for `audiorec pipeline --config`
    selected = json.loads((tmp_path / "r" / "selected.json").read_text())
    assert selected["two_tower"]["temperature"] == chosen["2T-HGNN"]["setting"]["temperature"]
    assert selected["hgnn"]["max_epochs"] == 2
    assert (tmp_path / "w" / "variants" / "full_hgnn_seed1" / "hgnn").is_dir()
    # every row's paired interval against 2T-HGNN, on the same users, holds its mean
    for name, model in m.items():
        for group in model["audiobook"].values():
            p = group["paired"]["2T-HGNN" if name != "2T-HGNN" else "1.3 x 2T"]
            assert p["lo"] <= p["diff"] <= p["hi"] and p["users"] == group["users"]
            assert p["verdict"] in ("leads", "level", "trails")
    for model in m.values():
        curve = model["audiobook"]["warm"]["hr_curve"]
        assert len(curve) == 100 and all(a <= b for a, b in zip(curve, curve[1:]))
        assert 0 <= model["podcast"]["all"]["hr@10"] <= 1
    assert (tmp_path / "r" / "hr_at_k.png").stat().st_size > 0


def test_tripartite_graph_joins_users_to_their_items(tiny_world):
    from training.data import Dataset
    from training.graph.tripartite import build_tripartite_graph

    g = build_tripartite_graph(tiny_world, Dataset.open(tiny_world).default_cut)
    assert (g.node_type[: g.n_items] < 2).all() and (g.node_type[g.n_items :] == 2).all()
    for rel, item_type in (("UA", 0), ("UP", 1)):
        users, items, _ = g.edges[rel]
        assert (g.node_type[users] == 2).all() and (g.node_type[items] == item_type).all()
    assert {"AA", "AP", "PP"} <= set(g.edges)
    # every user node has at least one item
    users = np.concatenate([g.edges["UA"][0], g.edges["UP"][0]])
    assert len(np.unique(users)) == len(g.user_id)


def test_paired_bootstrap_hand_checked_and_calibrated():
    from training.evaluation.intervals import paired_bootstrap

    same = paired_bootstrap(np.array([1, 0, 1, 0]), np.array([1, 0, 1, 0]))
    assert (same.diff, same.lo, same.hi, same.verdict) == (0, 0, 0, "level")
    ahead = paired_bootstrap(np.ones(50), np.zeros(50))
    assert (ahead.diff, ahead.lo, ahead.hi, ahead.verdict) == (1, 1, 1, "leads")
    assert paired_bootstrap(np.zeros(50), np.ones(50)).verdict == "trails"
    # the paper's ratio: a - 1.3 b, user by user
    assert np.isclose(paired_bootstrap(np.ones(8), np.ones(8), factor=1.3).diff, -0.3)
    assert paired_bootstrap(np.array([]), np.array([])).verdict == "no users"
    # seeded: the same interval twice
    rng = np.random.default_rng(1)
    a, b = rng.random(300) < 0.3, rng.random(300) < 0.3
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)
    # calibrated: two models of equal quality are level in about 95% of hold-outs, and a
    # planted gap of 0.15 over 600 users is found
    level = sum(
        paired_bootstrap(rng.random(400) < 0.3, rng.random(400) < 0.3, resamples=500).verdict
        == "level"
        for _ in range(60)
    )
    assert level >= 51, level
    found = paired_bootstrap(rng.random(600) < 0.45, rng.random(600) < 0.3)
    assert found.verdict == "leads" and found.lo < 0.15 < found.hi


def test_orderings_are_read_from_the_intervals():
    from training.evaluation.report import expectations

    layout = {"audiobook": ["warm", "cold"], "podcast": ["all"]}

    def row(hr, diff=None, lo=None, hi=None, ratio=None):
        e = {"hr@10": hr, "paired": {}}
        if diff is not None:
            e["paired"]["2T-HGNN"] = {"diff": diff, "lo": lo, "hi": hi, "users": 150}
        if ratio is not None:
            e["paired"]["1.3 x 2T"] = dict(zip(("diff", "lo", "hi", "users"), ratio))
        return {"audiobook": {"warm": e}}

    summary = {
        # 2T-HGNN - Popularity = +0.010 [-0.020, +0.040]: level, so not "leads every row"
        "Popularity": row(0.39, -0.010, -0.040, 0.020),
        "2T": row(0.30, -0.100, -0.150, -0.050),
        "2T-HGNN": row(0.40, ratio=(0.010, -0.030, 0.050, 150)),
        "2T-HGNN, no AA edges": row(0.41, 0.010, -0.010, 0.030),
        "2T-HGNN, PP-only graph": row(0.35, -0.050, -0.080, -0.020),
    }
    out = {text: (ok, why) for text, ok, why in expectations(summary, layout)}
    ok, why = out["warm-start audiobook items: 2T-HGNN leads every other row"]
    assert not ok and why == (
        "2T-HGNN 0.400 vs Popularity 0.390: difference +0.010 [-0.020, +0.040] over 150 "
        "users, 2T-HGNN level"
    )
    ok, why = out["warm-start audiobook items: 2T-HGNN HR@10 >= 1.3 x 2T's"]
    assert ok and why == "2T-HGNN - 1.3 x 2T +0.010 [-0.030, +0.050], level"
    ok, why = out["ablation 'no AA edges' is below the full model"]
    assert not ok and why.endswith("2T-HGNN level")
    ok, why = out["ablation 'PP-only graph' is below the full model"]
    assert ok and why.endswith("2T-HGNN leads")
    ok, why = out["cold-start audiobook items: 2T-HGNN beats 2T and Popularity"]
    assert not ok and "not scored" in why


def test_unknown_ablation_is_rejected_by_name():
    from audiorec.config import validated
    from audiorec.errors import AudiorecError
    from training.evaluation.run import EvaluationConfig

    cfg = validated(EvaluationConfig, {"ablations": ["no weak signals"], "hgnn_seeds": 2})
    assert list(cfg.chosen_ablations()) == ["no weak signals"]
    assert validated(EvaluationConfig, {"ablations": False}).chosen_ablations() == {}
    with pytest.raises(AudiorecError, match=r"unknown ablations \['no AB edges'\]"):
        validated(EvaluationConfig, {"ablations": ["no AB edges"]})
    with pytest.raises(AudiorecError, match="hgnn_seeds"):
        validated(EvaluationConfig, {"hgnn_seeds": 0})


def test_peer_matrix_weights_and_scores_hand_checked(tiny_world):
    """The peers' matrix sums the weights of the event types seen per cell; each peer's
    scores are its factors' products (ItemKNN: the user's row times the similarity)."""
    from training.data import Dataset
    from training.data.duck import connect_dataset
    from training.evaluation.peer_rows import _all_ids
    from training.evaluation.peers import PeerConfig, fit_peer, training_matrix

    users, items = _all_ids(tiny_world)
    cut = Dataset.open(tiny_world).default_cut
    weights = {"stream": 1.0, "follow": 0.25, "preview": 0.5, "intent_to_pay": 2.0}
    m = training_matrix(tiny_world, cut, users, items, weights)
    con = connect_dataset(tiny_world, ("events",))
    u, i = con.sql(
        """SELECT user_id, item_id FROM events WHERE ts < $cut
                      GROUP BY ALL HAVING count(DISTINCT event_type) >= 2 LIMIT 1""",
        params={"cut": cut},
    ).fetchall()[0]
    kinds = [
        r[0]
        for r in con.sql(
            """SELECT DISTINCT event_type FROM events WHERE user_id = $u
                                      AND item_id = $i AND ts < $cut""",
            params={"u": u, "i": i, "cut": cut},
        ).fetchall()
    ]
    con.close()
    row, col = np.searchsorted(users, u), np.searchsorted(items, i)
    assert np.isclose(m[row, col], sum(weights[k] for k in kinds))
    assert m.shape == (len(users), len(items)) and (m.data > 0).all()
    rows, cols = np.arange(5), np.arange(40)
    for name in ("ALS", "BPR", "ItemKNN"):
        fitted = fit_peer(m, PeerConfig(model=name, factors=8, iterations=3, neighbours=10))
        scores = fitted.scores(rows, cols)
        assert scores.shape == (5, 40) and np.isfinite(scores).all()
    knn = fit_peer(m, PeerConfig(model="ItemKNN", neighbours=10))
    expected = (m[rows] @ knn.similarity[:, cols]).toarray()
    assert np.allclose(knn.scores(rows, cols), expected)


def test_ease_meets_its_optimality_condition():
    """EASE's B solves min ||X - XB||^2 + l2 ||B||^2 with a zero diagonal: off the
    diagonal, (X'X + l2 I) B equals X'X (the stationarity condition)."""
    from training.evaluation.peers import ease

    x = sp.random(40, 12, density=0.3, random_state=2, format="csr", dtype=np.float32)
    b = ease(x, 5.0).astype(np.float64)
    gram = (x.T @ x).toarray().astype(np.float64)
    lhs = (gram + 5.0 * np.eye(12)) @ b
    off = ~np.eye(12, dtype=bool)
    assert np.allclose(lhs[off], gram[off], atol=1e-3)
    assert np.all(np.diag(b) == 0)


def test_rp3beta_hand_checked():
    """Users 0: items 0, 1; user 1: items 1, 2. With alpha 1 the walk i -> u -> j gives
    W[0,1] = 1 x 1/2, W[1,0] = 1/2 x 1/2, W[1,2] = 1/4, W[2,1] = 1/2; beta 1 divides each
    column by its item's users (1, 2, 1)."""
    from training.evaluation.peers import rp3beta

    x = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], np.float32))
    w0 = rp3beta(x, 1.0, 0.0, 10).toarray()
    assert np.allclose(w0, [[0, 0.5, 0], [0.25, 0, 0.25], [0, 0.5, 0]])
    w1 = rp3beta(x, 1.0, 1.0, 10).toarray()
    assert np.allclose(w1, [[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]])
    top1 = rp3beta(x, 1.0, 0.0, 1).toarray()  # one neighbour per item
    assert (np.count_nonzero(top1, axis=1) == 1).all()


def test_candidates_start_with_the_defaults_and_never_repeat():
    from training.evaluation.selection import candidates, choose

    grid = {"a": [1, 2, 3], "b": [0.1, 0.2]}
    got = candidates(grid, {"a": 2, "b": 0.2, "other": "x"}, trials=4, seed=3)
    assert got[0] == {"a": 2, "b": 0.2} and len(got) == 4
    assert len({tuple(sorted(c.items())) for c in got}) == 4
    assert candidates(grid, {"a": 1, "b": 0.1}, trials=50)[0] == {"a": 1, "b": 0.1}
    assert len(candidates(grid, {"a": 1, "b": 0.1}, trials=50)) == 6  # the whole grid
    best, trials = choose(got, lambda s: float(s["a"] == 3) + (s["b"] == 0.1))
    assert trials[0]["validation"] == 0.0 and best == max(
        got, key=lambda s: float(s["a"] == 3) + (s["b"] == 0.1)
    )
    # ties: the first (the defaults) wins; NaN never wins
    assert choose(got, lambda s: 1.0)[0] == got[0]
    assert choose(got, lambda s: float("nan") if s == got[0] else 0.0)[0] == got[1]


def test_prior_coordinate_adds_beta_times_prior_to_every_inner_product():
    from training.twotower.prior import prior, with_item_coordinate, with_user_coordinate

    types = np.array(["audiobook", "podcast", "audiobook", "podcast"], dtype=object)
    p = prior(np.array([0.0, 9.0, 3.0, np.nan]), types)
    # log1p over its type's maximum: audiobooks max 3, podcasts max 9; NaN counts as 0
    assert np.allclose(p, [0.0, 1.0, 1.0, 0.0])
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    betas = {"audiobook": 0.5, "podcast": 2.0}
    got = with_user_coordinate(u) @ with_item_coordinate(v, p, types, betas).T
    beta = np.array([0.5, 2.0, 0.5, 2.0])
    assert np.allclose(got, u @ v.T + (beta * p)[None, :], atol=1e-6)


def test_recent_listeners_hand_checked(tiny_world):
    """One item's recency-weighted listeners, computed by hand from its streams."""
    import pandas as pd

    from training.data import Dataset
    from training.twotower.prior import recent_listeners

    when = Dataset.open(tiny_world).default_cut - timedelta(days=10)
    ev = pd.read_parquet(tiny_world / "events.parquet")
    ev = ev[(ev.event_type == "stream") & (ev.ts < when)]
    item = ev.item_id.value_counts().index[0]
    last = ev[ev.item_id == item].groupby("user_id").ts.max()
    age = (pd.Timestamp(when) - last).dt.total_seconds() / 86400
    ids = np.array(sorted(set(ev.item_id) | {"zz_never_streamed"}), dtype=object)
    got = recent_listeners(tiny_world, when, ids, (7.0, 1e6))
    col = int(np.searchsorted(ids, item))
    assert np.isclose(got[0, col], (2.0 ** (-age / 7.0)).sum())
    assert np.isclose(got[1, col], len(last), rtol=1e-4)  # no decay: the listeners
    assert got[:, -1].tolist() == [0.0, 0.0]


@pytest.mark.slow
def test_the_evaluated_2t_hgnn_is_the_published_model(tiny_world, tmp_path):
    """The 2T-HGNN row's item vectors (first seed) equal what `audiorec pipeline` publishes
    at the evaluation's cut with the same settings: one code path, refit through the cut."""
    from audiorec.config import validated
    from serving.artifact import Artifact
    from tests.conftest import TINY_PIPELINE
    from training.evaluation.run import EvaluationConfig, run_evaluation
    from training.pipeline import run_pipeline

    cfg = validated(
        EvaluationConfig,
        {"seeds": [0], "selection_trials": 1, "ablations": False, "peers": [],
         "prior_rows": False, "pipeline": TINY_PIPELINE},
    )  # fmt: skip
    res = run_evaluation(tiny_world, tmp_path / "eval", cfg, progress=False)
    ids, evaluated = res.vectors["2T-HGNN"]
    run_pipeline(tiny_world, tmp_path / "wd", cfg.pipeline, cut=res.protocol.cut, progress=False)
    served = Artifact.load_current(tmp_path / "wd")
    assert list(served.item_ids) == list(ids)
    assert served.manifest.metrics["refit_epochs"] >= 1
    np.testing.assert_allclose(served.vectors, evaluated, atol=1e-5)


def test_the_selection_criterion_leaves_out_small_groups_hand_checked():
    """Groups under 30 validation users are left out (all groups with users when none has
    30); every row and the prior are chosen by this one function."""
    from training.data.protocol import criterion_groups, group_mean
    from training.evaluation.selection import criterion

    assert criterion_groups([120, 4, 31]).tolist() == [True, False, True]
    assert criterion_groups([5, 0, 2]).tolist() == [True, False, True]
    assert group_mean([120, 4, 31], [0.2, 1.0, 0.4]) == pytest.approx(0.3)
    assert group_mean([5, 0, 2], [0.2, float("nan"), 0.4]) == pytest.approx(0.3)
    scored = [("a", "warm", {"users": 40, "hr@10": 0.5}), ("a", "cold", {"users": 3, "hr@10": 1.0}),
              ("p", "all", {"users": 90, "hr@10": 0.1})]  # fmt: skip
    assert criterion(scored) == pytest.approx(0.3)


def test_a_constant_score_row_never_hits_in_the_prior_choice():
    """A peer that knows nothing about a listener scores every item alike; the prior's
    choice must not count that as a hit (ties rank in catalogue order, not the target's)."""
    import scipy.sparse as sp

    from training.evaluation.prior_rows import standardised, tie_order
    from training.twotower.prior import _hits

    base = standardised(np.zeros((4, 50), np.float32)) - tie_order(50)
    targets = sp.csr_matrix(([1, 1, 1, 1], ([0, 1, 2, 3], [45, 46, 47, 48])), shape=(4, 50))
    hits = _hits(base, np.zeros((1, 50), np.float32), (0.0,), targets)
    assert hits[0, 0] == 0
    # and one whose target is in the first ten of the catalogue order does
    targets = sp.csr_matrix(([1], ([0], [3])), shape=(4, 50))
    assert _hits(base, np.zeros((1, 50), np.float32), (0.0,), targets)[0, 0] == 1

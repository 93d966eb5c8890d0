"""The HGNN: graph, samplers, model properties, and that training learns."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import duckdb
import numpy as np
import pytest
import torch

from audiorec.errors import AudiorecError
from training.data.embeddings import read_item_embeddings, write_item_embeddings
from training.graph.colisten import GraphConfig, build_colisten_graph
from training.hgnn.config import HGNNConfig
from training.hgnn.graph import full_graph, message_csrs, split_edges
from training.hgnn.model import HGNN
from training.hgnn.run import load_hgnn, node_features, run_hgnn
from training.hgnn.sampler import CSR, BalancedEdgeSampler, sample_blocks, sample_neighbours
from training.hgnn.train import evaluate

CUT = datetime(2026, 10, 18, tzinfo=timezone.utc)
SMALL = dict(hidden_dim=32, out_dim=16, batch_size=64, max_epochs=25, patience=25, seed=0)


@pytest.fixture(scope="module")
def text_table(tiny_world, tmp_path_factory):
    """Real MiniLM embeddings of the tiny catalogue (the HGNN's node features)."""
    from training.text.embed import embed_items

    out = tmp_path_factory.mktemp("text") / "text.parquet"
    embed_items(tiny_world / "items.parquet", out, progress=False)
    return out


@pytest.fixture(scope="module")
def graph(tiny_world):
    return build_colisten_graph(tiny_world, CUT)


def test_graph_edges_match_brute_force(tiny_world, graph):
    con = duckdb.connect()
    pairs = con.execute(
        f"""
        WITH ui AS (SELECT DISTINCT user_id, item_id FROM '{tiny_world}/events.parquet'
                    WHERE ts >= ? AND ts < ?)
        SELECT count(*) FROM (SELECT a.item_id, b.item_id FROM ui a JOIN ui b
               ON a.user_id = b.user_id AND a.item_id < b.item_id GROUP BY 1, 2)""",
        [CUT.replace(month=7, day=20), CUT],
    ).fetchone()[0]
    assert sum(len(s) for s, _, _ in graph.edges.values()) == pairs
    assert graph.types.names == ("audiobook", "podcast") and graph.types.relations == (
        "AA",
        "AP",
        "PP",
    )
    ab = graph.node_type == 0
    s, d, _ = graph.edges["AA"]
    assert ab[s].all() and ab[d].all() and (s < d).all()
    s, d, _ = graph.edges["AP"]
    assert ab[s].all() and not ab[d].any()
    s, d, c = graph.edges["PP"]
    assert not ab[s].any() and not ab[d].any() and (c >= 1).all()
    assert graph.stats["relations"]["PP"]["edges"] > graph.stats["relations"]["AA"]["edges"]
    assert graph.n == 750  # every catalogue item is a node, isolated or not


def test_graph_is_identical_across_runs(tiny_world, graph):
    # Edge order feeds the seeded samplers: a run-dependent order would make the same
    # seed train a different HGNN (DuckDB's parallel GROUP BY emits rows in any order).
    again = build_colisten_graph(tiny_world, CUT)
    for rel, (s, d, c) in graph.edges.items():
        s2, d2, c2 = again.edges[rel]
        assert np.array_equal(s, s2) and np.array_equal(d, d2) and np.array_equal(c, c2)
        assert (np.diff(s * graph.n + d) > 0).all() or rel == "AP"


def test_power_user_cap_bounds_pairs(tiny_world):
    capped = build_colisten_graph(tiny_world, CUT, GraphConfig(max_items_per_user=5))
    assert capped.stats["pairs_capped"] < capped.stats["pairs_uncapped"]
    assert sum(len(s) for s, _, _ in capped.edges.values()) <= capped.stats["pairs_capped"]


def test_ablation_switches_drop_relations(tiny_world):
    g = build_colisten_graph(tiny_world, CUT, GraphConfig(relations=("AA",)))
    assert set(g.edges) == {"AA"}
    assert set(full_graph(g).csrs) == {"AA"}
    assert set(full_graph(build_colisten_graph(tiny_world, CUT)).csrs) == {"AA", "AP", "PA", "PP"}
    with pytest.raises(AudiorecError, match=r"graph relations \['AC'\] are not pairs"):
        build_colisten_graph(tiny_world, CUT, GraphConfig(relations=("AA", "AC")))


def test_neighbour_sampler_respects_fanout_and_true_neighbours():
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, 50, 2000), rng.integers(0, 50, 2000)
    csr = CSR.from_edges(src, dst, 50)
    nbrs = {v: set(src[dst == v]) for v in range(50)}
    nodes = torch.arange(50)
    for fanout in (1, 3, 100):
        s, pos = sample_neighbours(csr, nodes, fanout, torch.Generator().manual_seed(1))
        counts = torch.bincount(pos, minlength=50)
        deg = torch.from_numpy(np.bincount(dst, minlength=50))
        assert torch.equal(counts, torch.clamp(deg, max=fanout))
        for v, u in zip(nodes[pos].tolist(), s.tolist()):
            assert u in nbrs[v]
    # redrawn each call
    a, _ = sample_neighbours(csr, nodes, 3, torch.Generator().manual_seed(1))
    b, _ = sample_neighbours(csr, nodes, 3, torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


def test_blocks_put_targets_first():
    csr = {"AA": CSR.from_edges(np.array([1, 2, 3, 4]), np.array([0, 0, 1, 2]), 6)}
    blocks = sample_blocks(csr, torch.tensor([0, 5]), (10, 10))
    top = blocks[-1]
    assert top.n_dst == 2 and top.nodes[:2].tolist() == [0, 5]
    assert sorted(top.nodes.tolist()) == [0, 1, 2, 5]
    assert blocks[0].nodes[: len(top.nodes)].tolist() == top.nodes.tolist()


def test_balanced_sampler_equal_counts_and_full_coverage():
    rng = np.random.default_rng(0)
    edges = {
        "AA": (np.arange(7), np.arange(7)),
        "AP": (np.arange(30), np.arange(30)),
        "PP": (np.arange(100), np.arange(100)),
    }
    sampler = BalancedEdgeSampler(edges, balanced=True, rng=rng)
    seen = {r: set() for r in edges}
    names = list(edges)
    for _ in range(15):  # ceil(100 / 7) epochs cover PP
        src, _, rel = sampler.epoch()
        assert np.bincount(rel, minlength=3).tolist() == [7, 7, 7]
        for i, r in enumerate(names):
            seen[r].update(src[rel == i].tolist())
    assert all(len(seen[r]) == len(edges[r][0]) for r in edges)
    src, _, rel = BalancedEdgeSampler(edges, balanced=False, rng=rng).epoch()
    assert np.bincount(rel).tolist() == [7, 30, 100]


def test_typed_negatives_keep_the_positives_type_and_the_untyped_draw_is_unchanged():
    """Typed: every negative is an item of its positive's type (users never drawn).
    Untyped: the same random stream as the pool-of-batch-size draw it replaced."""
    import torch

    from training.hgnn.sampler import NegativeDraw

    node_type = torch.tensor([0] * 30 + [1] * 70 + [2] * 5)  # 100 items, then 5 users
    positives = torch.randint(0, 100, (64,), generator=torch.Generator().manual_seed(0))
    typed = NegativeDraw(node_type, 100, True)(positives, 5, torch.Generator().manual_seed(1))
    assert typed.shape == (64, 5) and bool((typed < 100).all())
    assert bool((node_type[typed] == node_type[positives][:, None]).all())
    assert len(torch.unique(typed[node_type[positives] == 0])) > 5  # not one node repeated
    users = NegativeDraw(node_type, 100, True)(torch.arange(100, 105), 3, torch.Generator())
    assert bool((users < 100).all())  # a user positive: random items, never users
    untyped = NegativeDraw(node_type, 100, False)(positives, 5, torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    pool = torch.randint(0, 100, (64,), generator=gen)
    assert torch.equal(untyped, pool[torch.randint(0, 64, (64, 5), generator=gen)])


def test_outputs_unit_norm_and_equivariant_to_relabelling(graph, text_table):
    x = node_features(graph, text_table)
    ab = torch.from_numpy(graph.node_type)
    torch.manual_seed(0)
    full = full_graph(graph)
    model = HGNN(x.shape[1], 16, 8, tuple(full.csrs), graph.node_types).eval()
    big = (10_000, 10_000)  # fan-outs above every degree: sampling is exact, deterministic
    nodes = torch.arange(graph.n)
    z = model(x, sample_blocks(full.csrs, nodes, big), ab)
    assert torch.allclose(z.norm(dim=1), torch.ones(graph.n), atol=1e-5)
    perm = np.random.default_rng(0).permutation(graph.n)  # new id of old node i: perm[i]
    inv = np.argsort(perm)
    edges = {r: (perm[s], perm[d]) for r, (s, d, _) in graph.edges.items()}
    relabelled = message_csrs(edges, graph.n, graph.directions)
    z2 = model(x[inv], sample_blocks(relabelled, nodes, big), ab[inv])
    assert torch.allclose(z2[perm], z, atol=1e-5)


def test_isolated_new_item_is_embedded_from_its_text(graph, text_table):
    x = node_features(graph, text_table)
    ab = torch.from_numpy(graph.node_type)
    degree = np.zeros(graph.n, int)
    for s, d, _ in graph.edges.values():
        np.add.at(degree, s, 1)
        np.add.at(degree, d, 1)
    isolated = int(np.flatnonzero((graph.node_type == 0) & (degree == 0))[0])
    full = full_graph(graph)
    model = HGNN(x.shape[1], 16, 8, tuple(full.csrs), graph.node_types).eval()
    z = model(x, sample_blocks(full.csrs, torch.tensor([isolated]), (10, 5)), ab)
    assert torch.isfinite(z).all() and abs(z.norm().item() - 1) < 1e-5
    x2 = x.clone()
    x2[isolated] = torch.randn(x.shape[1])
    z2 = model(x2, sample_blocks(full.csrs, torch.tensor([isolated]), (10, 5)), ab)
    assert not torch.allclose(z, z2)  # its text decides where it lands


@pytest.fixture(scope="module")
def trained(tiny_world, text_table, tmp_path_factory):
    out = tmp_path_factory.mktemp("hgnn") / "hgnn"
    return run_hgnn(tiny_world, text_table, out, CUT, cfg=HGNNConfig(**SMALL), progress=False)


def test_training_learns_to_rank_held_out_edges(trained, graph, text_table):
    """Measured on the tiny world (seed 0): held-out edges vs random pairs, AUC averaged
    over AA/AP/PP, 0.63 untrained -> 0.89 trained (AA 0.99, AP 0.86, PP 0.81); chance 0.5."""
    m = trained.manifest
    aucs = [h["val_auc"] for h in m.history]
    assert m.metrics["val_auc"] >= 0.8, aucs
    assert m.metrics["val_auc_PP"] >= 0.75 and m.metrics["val_auc_AP"] >= 0.75
    x = node_features(graph, text_table)
    ab = torch.from_numpy(graph.node_type)
    tg = split_edges(graph, 0.1, np.random.default_rng(0))
    torch.manual_seed(0)
    untrained = HGNN(
        x.shape[1], SMALL["hidden_dim"], SMALL["out_dim"], tuple(tg.csrs), graph.node_types
    )
    base = evaluate(untrained, x, ab, tg, HGNNConfig(**SMALL), tg.val, 1)["val_auc"]
    assert m.metrics["val_auc"] > base + 0.1, (base, aucs)


def test_same_seed_same_model(trained, tiny_world, text_table, tmp_path):
    # Retrain with the module's config in a fresh directory: every embedding equal to the
    # bit (thread-order float sums in the backward pass once broke this).
    again = run_hgnn(
        tiny_world, text_table, tmp_path / "again", CUT, cfg=HGNNConfig(**SMALL), progress=False
    )
    a = read_item_embeddings(trained.out / "embeddings.parquet").vectors
    b = read_item_embeddings(again.out / "embeddings.parquet").vectors
    assert np.array_equal(a, b)
    drop = lambda m: {k: v for k, v in m.items() if k != "seconds"}  # noqa: E731
    assert drop(again.manifest.metrics) == drop(trained.manifest.metrics)


def test_artifact_describes_itself_and_loads_back(trained, tiny_world):
    out = trained.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == trained.version and manifest["out_dim"] == 16
    assert (out / "training_curve.png").stat().st_size > 1000
    emb = read_item_embeddings(out / "embeddings.parquet")
    assert emb.vectors.shape == (750, 16) and emb.version == trained.version
    assert np.allclose(np.linalg.norm(emb.vectors, axis=1), 1, atol=1e-5)
    model, m = load_hgnn(out)
    assert m.version == trained.version and set(m.files) >= {"model.pt", "embeddings.parquet"}
    (out / "manifest.json").write_text(json.dumps({**manifest, "out_dim": 32}))
    with pytest.raises(AudiorecError, match="model.pt does not match its manifest"):
        load_hgnn(out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    state = (out / "model.pt").read_bytes()
    (out / "model.pt").write_bytes(state[:-10])
    with pytest.raises(AudiorecError, match="model.pt does not match its checksum"):
        load_hgnn(out)
    (out / "model.pt").write_bytes(state)


def test_missing_text_embeddings_is_a_clear_error(tiny_world, tmp_path):
    write_item_embeddings(tmp_path / "t.parquet", ["ab000000"], np.zeros((1, 4)), "x")
    with pytest.raises(AudiorecError, match="lacks 749 catalogue item"):
        run_hgnn(tiny_world, tmp_path / "t.parquet", tmp_path / "h", CUT, progress=False)
    assert not (tmp_path / "h").exists()

"""Training the HGNN: max-margin loss on inner products, balanced edge batches, early
stopping on held-out edges, a training-curve PNG. ``train_hgnn`` returns the best model.

Per step: a batch of positive edges (either end as anchor), ``negatives`` random
catalogue nodes per anchor (with ``typed_negatives``, nodes of the positive's type);
the union of their nodes is embedded once through sampled 2-hop blocks;
loss = mean(max(0, z_a.z_neg - z_a.z_pos + margin)).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from training.hgnn.config import HGNNConfig
from training.hgnn.graph import TrainGraph
from training.hgnn.model import HGNN
from training.hgnn.sampler import BalancedEdgeSampler, NegativeDraw, sample_blocks


@dataclass
class TrainResult:
    model: HGNN
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0

    @property
    def best(self) -> dict:
        return self.history[self.best_epoch - 1] if self.history else {}


def embed(
    model: torch.nn.Module,  # an HGNN, or one wrapped for distributed training
    features: torch.Tensor,
    node_type: torch.Tensor,
    graph: TrainGraph,
    nodes: torch.Tensor,
    fanouts,
    gen: torch.Generator,
    batch: int = 4096,
) -> torch.Tensor:
    """Embeddings of ``nodes`` (any ids, repeats allowed), computed in batches."""
    uniq, inverse = torch.unique(nodes, return_inverse=True)
    out = []
    for lo in range(0, len(uniq), batch):
        seeds = uniq[lo : lo + batch]
        out.append(model(features, sample_blocks(graph.csrs, seeds, fanouts, gen), node_type))
    if not out:
        return torch.empty(0, int(cast(Any, model).out_dim))
    return torch.cat(out)[inverse]


def margin_loss(
    za: torch.Tensor, zp: torch.Tensor, zn: torch.Tensor, margin: float
) -> torch.Tensor:
    """za, zp: (B, d); zn: (B, k, d)."""
    pos = (za * zp).sum(-1, keepdim=True)
    neg = torch.einsum("bd,bkd->bk", za, zn)
    return torch.relu(neg - pos + margin).mean()


def _pairs(graph_edges: dict, limit: int, rng: np.random.Generator):
    src = np.concatenate([s for s, _ in graph_edges.values()] or [np.empty(0, np.int64)])
    dst = np.concatenate([d for _, d in graph_edges.values()] or [np.empty(0, np.int64)])
    if len(src) > limit:
        keep = rng.choice(len(src), limit, replace=False)
        src, dst = src[keep], dst[keep]
    return torch.from_numpy(src), torch.from_numpy(dst)


@torch.no_grad()
def evaluate(
    model, features, node_type, graph: TrainGraph, cfg: HGNNConfig, edges: dict, seed: int
) -> dict:
    """Held-out edges against random pairs, per relation: margin loss and AUC (fixed
    sampling seed). ``val_loss`` and ``val_auc`` are the means over relations, so the
    scarce AA edges weigh as much as the abundant PP ones (as in balanced training)."""
    model.eval()
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    per_rel = max(10, cfg.val_edges // max(1, len(edges)))
    parts = {r: _pairs({r: e}, per_rel, rng) for r, e in edges.items() if len(e[0])}
    if not parts:
        return {"val_loss": float("nan"), "val_auc": float("nan")}
    a = torch.cat([x for x, _ in parts.values()])
    p = torch.cat([y for _, y in parts.values()])
    if cfg.typed_negatives:  # scored as trained: each positive against its own type
        n = NegativeDraw(node_type, graph.negative_pool, True)(
            p, cfg.negatives, torch.Generator().manual_seed(seed)
        )
    else:
        n = torch.from_numpy(rng.integers(0, graph.negative_pool, (len(a), cfg.negatives)))
    z = embed(model, features, node_type, graph, torch.cat([a, p, n.flatten()]), cfg.fanouts, gen)
    za, zp, zn = (
        z[: len(a)],
        z[len(a) : 2 * len(a)],
        z[2 * len(a) :].view(len(a), cfg.negatives, -1),
    )
    out, lo = {}, 0
    for r, (x, _) in parts.items():
        sl = slice(lo, lo + len(x))
        lo += len(x)
        out[f"val_loss_{r}"] = margin_loss(za[sl], zp[sl], zn[sl], cfg.margin).item()
        out[f"val_auc_{r}"] = _auc(
            (za[sl] * zp[sl]).sum(-1).numpy(), (za[sl] * zn[sl, 0]).sum(-1).numpy()
        )
    out["val_loss"] = float(np.mean([out[f"val_loss_{r}"] for r in parts]))
    out["val_auc"] = float(np.mean([out[f"val_auc_{r}"] for r in parts]))
    return out


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a true edge > score of a random pair), ties half (rank formula)."""
    scores = np.concatenate([pos, neg])
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="stable")
    ranks[order] = np.arange(1, len(scores) + 1)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def train_hgnn(
    features: torch.Tensor,
    node_type: torch.Tensor,
    graph: TrainGraph,
    cfg: HGNNConfig,
    progress: bool = True,
    rank: int = 0,
    world: int = 1,
) -> TrainResult:
    """Train on ``graph.train``; early-stop on ``graph.val``; return the best weights.

    With ``world`` > 1 this is rank ``rank`` of a torch.distributed group (DDP,
    training/hgnn/distributed.py): every rank draws the same edge batches and negatives
    (same seeds) and takes its share of each, samples neighbours with its own generator,
    and the gradients are averaged, so a step is the local step's batch split ``world``
    ways; every rank evaluates the same weights, so all stop at the same epoch.

    The same seed gives the same model: the backward pass of ``x[index]`` accumulates with
    ``index_put_``, whose CPU kernel sums in a thread-dependent order unless deterministic
    algorithms are on. Tiny float differences there grew into different early-stopping
    epochs and different HGNNs (same cost either way, measured on Ciao)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(features, node_type, graph, cfg, progress, rank, world)
    finally:
        torch.use_deterministic_algorithms(previous)


def _train(
    features: torch.Tensor,
    node_type: torch.Tensor,
    graph: TrainGraph,
    cfg: HGNNConfig,
    progress: bool,
    rank: int = 0,
    world: int = 1,
) -> TrainResult:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    run = _Run.start(features, node_type, graph, cfg, rank, world)
    sampler = BalancedEdgeSampler(graph.train, cfg.balanced, rng)
    result = TrainResult(run.model)
    best_loss, best_state, waited = float("inf"), None, 0
    for epoch in range(1, cfg.max_epochs + 1):
        run.model.train()
        src, dst, _ = sampler.epoch()
        flip = rng.random(len(src)) < 0.5  # either end of an edge can be the anchor
        a = torch.from_numpy(np.where(flip, dst, src))
        p = torch.from_numpy(np.where(flip, src, dst))
        losses = run.epoch(a, p, epoch, progress)
        metrics = evaluate(run.model, features, node_type, graph, cfg, graph.val, cfg.seed + 1)
        train_loss = float(np.mean(losses)) if losses else float("nan")
        row = {
            "epoch": epoch,
            "train_loss": train_loss if world == 1 else _mean_over_ranks(train_loss),
            "edges": int(len(a)),
            "seconds": round(time.perf_counter() - run.t0, 1),
            **metrics,
        }
        result.history.append(row)
        if progress:
            _print_epoch(row)
        score = metrics["val_loss"] if np.isfinite(metrics["val_loss"]) else row["train_loss"]
        if score < best_loss - 1e-5:
            best_loss, best_state, waited = score, copy.deepcopy(run.model.state_dict()), 0
            result.best_epoch = epoch
        else:
            waited += 1
            if waited >= cfg.patience:
                break
        if run.out_of_time():
            if progress:
                tqdm.write(f"hgnn: time budget of {cfg.time_budget_s:g}s spent after epoch {epoch}")
            break
    if best_state is not None:
        run.model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - run.t0
    return result


def _print_epoch(row: dict) -> None:
    per = " ".join(f"{k[8:]} {v:.3f}" for k, v in row.items() if k.startswith("val_auc_"))
    tqdm.write(
        f"hgnn epoch {row['epoch']}: train loss {row['train_loss']:.4f}, val loss "
        f"{row['val_loss']:.4f}, val AUC {row['val_auc']:.3f} ({per}; {row['edges']:,} edges)"
    )


@dataclass
class _Run:
    """One training run's model, optimizer and random streams: the steps of an epoch."""

    features: torch.Tensor
    node_type: torch.Tensor
    graph: TrainGraph
    cfg: HGNNConfig
    rank: int
    world: int
    model: HGNN
    forward: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    gen: torch.Generator  # batches' negatives: the same on every rank
    sample_gen: torch.Generator  # neighbour samples
    t0: float
    negatives: NegativeDraw

    @classmethod
    def start(
        cls,
        features: torch.Tensor,
        node_type: torch.Tensor,
        graph: TrainGraph,
        cfg: HGNNConfig,
        rank: int,
        world: int,
    ) -> _Run:
        gen = torch.Generator().manual_seed(cfg.seed)
        # neighbour samples: the shared generator on one process (today's stream), a
        # rank's own under DDP (the batch and negatives stay common to all ranks)
        sample_gen = (
            gen if world == 1 else torch.Generator().manual_seed(cfg.seed + 7919 * (rank + 1))
        )
        model = HGNN(
            features.shape[1], cfg.hidden_dim, cfg.out_dim, tuple(graph.csrs), graph.node_types
        )
        forward: torch.nn.Module = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # a relation may carry no message in a rank's share of a step
            forward = DistributedDataParallel(model, find_unused_parameters=True)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        return cls(
            features, node_type, graph, cfg, rank, world, model, forward, opt, gen, sample_gen,
            time.perf_counter(),
            NegativeDraw(node_type, graph.negative_pool, cfg.typed_negatives),
        )  # fmt: skip

    def out_of_time(self) -> bool:
        budget = self.cfg.time_budget_s
        late = budget is not None and time.perf_counter() - self.t0 > budget
        if self.world > 1 and budget is not None:
            late = _any_rank(late)  # every rank stops at the same step
        return late

    def epoch(self, a: torch.Tensor, p: torch.Tensor, epoch: int, progress: bool) -> list[float]:
        """Steps over the (anchor, positive) pairs ``a``, ``p`` in batches; the losses."""
        cfg = self.cfg
        steps = range(0, len(a), cfg.batch_size)
        if cfg.max_steps_per_epoch:
            steps = steps[: cfg.max_steps_per_epoch]
        losses: list[float] = []
        bar = tqdm(
            steps,
            desc=f"hgnn epoch {epoch}",
            unit="batch",
            leave=False,
            disable=None if progress else True,
        )
        for lo in bar:
            if self.out_of_time():
                break
            losses.append(self.step(a[lo : lo + cfg.batch_size], p[lo : lo + cfg.batch_size]))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        return losses

    def step(self, ba: torch.Tensor, bp: torch.Tensor) -> float:
        """One optimizer step on a batch of anchors and positives; the batch's loss."""
        cfg, graph, gen = self.cfg, self.graph, self.gen
        bn = self.negatives(bp, cfg.negatives, gen)
        if self.world > 1:
            ba, bp, bn = (
                ba[self.rank :: self.world],
                bp[self.rank :: self.world],
                bn[self.rank :: self.world],
            )
        z = embed(
            self.forward,
            self.features,
            self.node_type,
            graph,
            torch.cat([ba, bp, bn.flatten()]),
            cfg.fanouts,
            self.sample_gen,
            batch=1 << 30,
        )
        b = len(ba)
        loss = margin_loss(z[:b], z[b : 2 * b], z[2 * b :].view(b, cfg.negatives, -1), cfg.margin)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()


def _any_rank(flag: bool) -> bool:
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _mean_over_ranks(value: float) -> float:
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def plot_curve(history: list[dict], path: str | Path, title: str = "HGNN training") -> None:
    """Train/validation loss and validation AUC per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ep, [h["train_loss"] for h in history], label="train loss")
    ax.plot(ep, [h["val_loss"] for h in history], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("max-margin loss")
    ax2 = ax.twinx()
    ax2.plot(
        ep, [h["val_auc"] for h in history], color="tab:green", ls="--", label="validation AUC"
    )
    ax2.set_ylabel("AUC (held-out edges vs random pairs)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right")
    ax.set_title(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

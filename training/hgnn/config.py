"""Typed configuration of HGNN training (defaults: the paper's setup where it gives one,
docs/paper.md)."""

from __future__ import annotations

from pydantic import Field

from audiorec.config import StrictConfig


class HGNNConfig(StrictConfig):
    hidden_dim: int = Field(128, ge=4)
    out_dim: int = Field(64, ge=4)  # not in the paper: ours (see README)
    fanouts: tuple[int, ...] = (10, 5)  # neighbours per relation: output layer first
    margin: float = Field(0.3, gt=0)  # max-margin on inner products of unit vectors
    negatives: int = Field(5, ge=1)  # random catalogue nodes per positive
    # negatives of the positive's own item type (a corrupted edge keeps its relation): an
    # audiobook-podcast edge is then told apart from other podcasts, not from audiobooks,
    # so the cross-type relation, what a listener new to a type relies on, is learned
    # rather than type separation; chosen on the Ciao validation windows (docs/evaluation.md,
    # "Levers"); False: any catalogue node (the paper's)
    typed_negatives: bool = True
    lr: float = Field(1e-3, gt=0)  # paper: Adam, lr 0.001
    batch_size: int = Field(256, ge=8)  # paper: 256
    max_epochs: int = Field(50, ge=1)  # paper: up to 50
    patience: int = Field(10, ge=1)  # paper: stop after 10 epochs without improvement
    val_share: float = Field(0.1, gt=0, lt=1)  # paper: 10% of edges for validation
    balanced: bool = True  # the balanced multi-link sampler (ablation: off)
    max_steps_per_epoch: int | None = Field(None, ge=1)  # bound epoch time on big graphs
    # wall-clock budget of training (seconds): the epoch running when it is spent ends
    # there, is validated, and is the last; the best epoch so far is kept (None: no bound)
    time_budget_s: float | None = Field(None, gt=0)
    val_edges: int = Field(2000, ge=10)  # held-out edges scored per validation
    seed: int = 0
    threads: int | None = Field(None, ge=1)

    def describe(self) -> str:
        """The settings that bound HGNN training (its cost), in one line."""
        steps = "all" if self.max_steps_per_epoch is None else f"<= {self.max_steps_per_epoch}"
        budget = "none" if self.time_budget_s is None else f"{self.time_budget_s:g} s"
        return (
            f"up to {self.max_epochs} epochs of {steps} steps (batch {self.batch_size}), "
            f"patience {self.patience}, time budget {budget}, dims {self.hidden_dim}/"
            f"{self.out_dim}, fanouts {list(self.fanouts)}"
        )

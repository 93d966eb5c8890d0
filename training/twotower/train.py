"""Training loop of the two towers: in-batch softmax, early stopping on a later slice.

Examples are shuffled each epoch; an item's tower inputs are gathered inside the compiled
step from one table of all items. After every epoch both towers embed the validation
examples and the whole catalogue, and recall@10 (is the example's item in the user's top
10 of its type?) decides early stopping; the best epoch's weights are kept.

Cost per epoch: O(examples x (tower FLOPs + batch x dim)) for training, plus
O(validation examples x items of a type x dim) for the recall check.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import keras
import numpy as np

from audiorec.tower_inputs import InputSpec
from training.twotower.config import TwoTowerConfig
from training.twotower.examples import TowerData
from training.twotower.metrics import per_type, plot_curve, recall_at_k
from training.twotower.prior import with_item_coordinate, with_user_coordinate
from training.twotower.step import Replica, run_epoch, slice_rows, step_function, to_tensors
from training.twotower.towers import build_tower, fit_encoder_stats
from training.twotower.warm import ITEM as ITEM_WEIGHTS
from training.twotower.warm import USER as USER_WEIGHTS
from training.twotower.warm import WarmStart, warm_rows

__all__ = [
    "Replica",
    "plot_curve",
    "recall_at_k",
    "train_two_tower",
    "validation_recall",
]


@dataclass
class TrainedTowers:
    user_tower: keras.Model
    item_tower: keras.Model
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    # the popularity prior (prior.py): {"betas": {type: beta}, "validation_recall": {type:
    # [recall@10 per candidate]}, "candidates": [...]}; None: vectors as the towers make them
    prior: dict | None = None
    item_prior: np.ndarray | None = None  # (items,) the prior as of the cut, in [0, 1]
    item_ids: bool = False  # the item tower also takes item_id (item-id embeddings)
    # the encoder statistics the towers were built with ({"user": ..., "item": ...}),
    # kept so a warm start (warm.py) rebuilds the very same towers
    stats: dict = field(default_factory=dict)
    warm_from: str = ""  # the checkpoint continued from ("": trained from scratch)
    # epochs of the refit through the cut (refit_two_tower); 0: these are the early-stopped
    # towers, trained up to the validation slice
    refit_epochs: int = 0

    @property
    def best(self) -> dict:
        return next(h for h in self.history if h["epoch"] == self.best_epoch)

    def user_vectors(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The served user vectors: the user tower's, with the prior's 1.0 appended."""
        vecs = embed(self.user_tower, inputs)
        return with_user_coordinate(vecs) if self.prior is not None else vecs

    def item_vectors(self, data: TowerData) -> np.ndarray:
        """The served item vectors of every item row of ``data``: the item tower's, with
        ``beta[type] x prior`` (as of the cut) appended."""
        vecs = embed(self.item_tower, item_inputs(data, self.item_ids))
        if self.prior is None:
            return vecs
        assert self.item_prior is not None  # set with the prior (fit_prior)
        return with_item_coordinate(vecs, self.item_prior, data.item_types, self.prior["betas"])

    def fit_prior(self, store, data_dir, data: TowerData, cut, cfg: TwoTowerConfig) -> None:
        """Choose the popularity prior on the validation slice (prior.py); without new
        starts there to choose on, the vectors stay as the towers make them."""
        from training.twotower.prior import fit_prior

        fitted = fit_prior(
            store,
            data_dir,
            data,
            lambda x: embed(self.user_tower, x),
            embed(self.item_tower, item_inputs(data, self.item_ids)),
            cut,
            cfg.validation_days,
            cfg.prior_betas,
            cfg.prior_half_lives,
            cfg.prior_max_users,
        )
        self.prior, self.item_prior = fitted if fitted else (None, None)


ITEM_ID = InputSpec(name="item_id", kind="string")


def item_inputs(data: TowerData, with_ids: bool) -> dict[str, np.ndarray]:
    """The item tower's inputs: the item service's features, and the item id when the
    tower has item-id embeddings (a training-side input: serving reads item vectors)."""
    return {**data.items, "item_id": data.item_ids} if with_ids else data.items


def embed(tower: keras.Model, inputs: dict[str, np.ndarray], batch: int = 4096) -> np.ndarray:
    """(n, dim) float32 vectors of ``inputs`` rows, in batches."""
    n = len(next(iter(inputs.values())))
    out = [
        tower(to_tensors(slice_rows(inputs, np.arange(i, min(n, i + batch)))), training=False)
        for i in range(0, n, batch)
    ]
    return np.concatenate([np.asarray(o) for o in out]) if out else np.zeros((0, 0), np.float32)


def validation_recall(data: TowerData, towers: "TrainedTowers", rows: np.ndarray) -> dict:
    users = embed(towers.user_tower, slice_rows(data.user, rows))
    items = embed(towers.item_tower, item_inputs(data, towers.item_ids))
    out = {}
    for kind in data.types:
        mine, of_kind, cols, seen = per_type(data, rows, kind)
        out[kind] = recall_at_k(users[mine], items[of_kind], cols, seen=seen)
    return out


def _rows(
    data: TowerData,
    cfg: TwoTowerConfig,
    rng,
    warm: WarmStart | None,
    progress: bool,
    epochs: int | None = None,
):
    """(training rows, validation rows, epochs, positives per item in training); with
    ``epochs`` (a refit) every row trains and none validates."""
    if epochs is not None:
        rows = np.arange(len(data))
        return rows, rows[:0], epochs, np.bincount(data.item, minlength=len(data.item_ids))
    train_rows = np.flatnonzero(~data.validation)
    val_rows = np.flatnonzero(data.scored)
    if len(val_rows) > cfg.validation_max_examples:
        val_rows = np.sort(rng.choice(val_rows, cfg.validation_max_examples, replace=False))
    max_epochs = cfg.max_epochs
    if warm is not None:
        train_rows, n_new = warm_rows(
            data.ts, train_rows, warm.trained_until, cfg.replay_share, cfg.seed
        )
        max_epochs = cfg.warm_epochs
        if progress:
            print(
                f"  2T warm start from {warm.manifest.cut}: {n_new:,} new training "
                f"examples + {len(train_rows) - n_new:,} replayed",
                flush=True,
            )
    counts = np.bincount(data.item[train_rows], minlength=len(data.item_ids))
    return train_rows, val_rows, max_epochs, counts


def untrained_towers(
    data: TowerData,
    cfg: TwoTowerConfig,
    train_rows: np.ndarray,
    counts: np.ndarray,
    warm: WarmStart | None = None,
) -> TrainedTowers:
    """The towers before training: encoders fitted on the training rows (or the
    checkpoint's), weights initialised from the current Keras seed."""
    item_specs, with_ids = list(data.item_specs), cfg.item_id_embedding_dim > 0
    if with_ids:
        item_specs.append(ITEM_ID)
    if warm is not None:
        user_stats, item_stats = warm.manifest.user_stats, warm.manifest.item_stats
    else:
        user_stats = fit_encoder_stats(data.user_specs, slice_rows(data.user, train_rows))
        item_stats = fit_encoder_stats(data.item_specs, data.items)
    if with_ids and warm is None:
        # ids seen often enough to learn a row; the rest (new, rare) share the OOV row
        known = data.item_ids[counts >= cfg.item_id_min_positives]
        item_stats[ITEM_ID.name] = {
            "vocabulary": [str(i) for i in known] or ["<none>"],
            "dim": cfg.item_id_embedding_dim,
        }
    return TrainedTowers(
        build_tower(
            data.user_specs,
            user_stats,
            cfg.layers,
            cfg.string_embedding_dim,
            cfg.ignored_user_features(data.types),
            "user_tower",
        ),
        build_tower(
            item_specs,
            item_stats,
            cfg.layers,
            cfg.string_embedding_dim,
            cfg.ignored_item_features(),
            "item_tower",
        ),
        item_ids=with_ids,
        stats={"user": user_stats, "item": item_stats},
    )


def train_two_tower(
    data: TowerData,
    cfg: TwoTowerConfig,
    progress: bool = True,
    warm: WarmStart | None = None,
    replica: Replica | None = None,
    epochs: int | None = None,
) -> TrainedTowers:
    """Train the towers on ``data``'s training rows, early-stopped on its validation
    slice; with ``warm`` (warm.py), continue that checkpoint's towers for
    ``cfg.warm_epochs`` on the rows it never trained on plus a replay sample.

    With ``replica`` this process is one worker of a MultiWorkerMirroredStrategy: every
    worker draws the same batches, embeds the whole batch's items and its own share of the
    users, and the summed gradients are the one-process batch's (the loss of each user is
    over all B items of the batch, so the in-batch negatives are the same).

    With ``epochs`` (the refit, :func:`refit_two_tower`): exactly that many epochs on every
    example, the validation slice included, no early stopping; the last epoch's towers."""
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_rows, val_rows, max_epochs, counts = _rows(data, cfg, rng, warm, progress, epochs)
    with replica.strategy.scope() if replica else contextlib.nullcontext():
        towers = untrained_towers(data, cfg, train_rows, counts, warm)
        optimizer = keras.optimizers.Adam(cfg.learning_rate)
    weights = towers.user_tower.trainable_variables + towers.item_tower.trainable_variables
    step = step_function(
        towers.user_tower,
        towers.item_tower,
        optimizer,
        cfg,
        item_table=item_inputs(data, towers.item_ids),
        item_prob=counts / max(1, counts.sum()),
        user_train=slice_rows(data.user, train_rows),
        item_train=data.item[train_rows],
        replica=replica,
        negative_pool=np.flatnonzero(data.item_types == data.types.focus),
        rng=np.random.default_rng([cfg.seed, 1]),
    )
    start, best, best_weights, stale = time.perf_counter(), -1.0, None, 0
    if warm is not None:
        best = _load_warm(data, towers, warm, val_rows)
        best_weights = [w.numpy() for w in weights]
    for epoch in range(1, max_epochs + 1):
        order = rng.permutation(len(train_rows))
        losses = run_epoch(step, order, cfg.batch_size, epoch, progress)
        entry = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        if epochs is not None:  # the refit: no slice left to validate on
            towers.history.append({**entry, "seconds": time.perf_counter() - start})
            towers.best_epoch, best_weights = epoch, None
            continue
        recall = validation_recall(data, towers, val_rows)
        towers.history.append(
            {
                **entry,
                **{f"val_recall_{t}": r for t, r in recall.items()},
                "seconds": time.perf_counter() - start,
            }
        )
        if progress:
            print(
                f"  2T epoch {epoch}: loss {np.mean(losses):.3f}, validation recall@10 "
                + ", ".join(f"{t} {r:.3f}" for t, r in recall.items()),
                flush=True,
            )
        focus = recall[data.types.focus]
        score = float(focus if not np.isnan(focus) else -np.mean(losses))
        if score > best:
            best, stale, towers.best_epoch = score, 0, epoch
            best_weights = [w.numpy() for w in weights]
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    for w, value in zip(weights, best_weights or []):
        w.assign(value)
    towers.seconds = time.perf_counter() - start
    return towers


def _load_warm(
    data: TowerData, towers: TrainedTowers, warm: WarmStart, val_rows: np.ndarray
) -> float:
    """Load the checkpoint's weights into ``towers`` and record them as epoch 0 (kept
    unless training beats them); returns their validation score."""
    towers.user_tower.load_weights(warm.directory / USER_WEIGHTS)
    towers.item_tower.load_weights(warm.directory / ITEM_WEIGHTS)
    towers.warm_from = warm.manifest.cut
    recall = validation_recall(data, towers, val_rows)
    towers.history.append(
        {
            "epoch": 0,
            "train_loss": float("nan"),
            **{f"val_recall_{t}": r for t, r in recall.items()},
            "seconds": 0.0,
        }
    )
    focus = recall[data.types.focus]
    return focus if not np.isnan(focus) else -np.inf


def refit_two_tower(
    data: TowerData, cfg: TwoTowerConfig, early: TrainedTowers, progress: bool = True
) -> TrainedTowers:
    """The served towers: retrained from scratch (same seed) on every example through the
    cut for the early-stopped run's best number of epochs. ``early``'s validation history,
    best epoch and popularity prior (chosen on towers that never saw the slice) are kept;
    ``refit_epochs`` and the seconds say what the refit added."""
    epochs = max(1, early.best_epoch)
    if progress:
        print(f"  2T refit through the cut: {epochs} epoch(s) on all {len(data):,} examples")
    towers = train_two_tower(data, cfg, progress=progress, epochs=epochs)
    towers.refit_epochs, towers.seconds = epochs, early.seconds + towers.seconds
    towers.history, towers.best_epoch = early.history, early.best_epoch
    towers.prior, towers.item_prior = early.prior, early.item_prior
    return towers

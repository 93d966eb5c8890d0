"""One optimizer step of the two towers, compiled once, and one epoch of such steps.

A step takes the positions ``rows`` of a batch among the training examples, gathers the
batch's user inputs (B rows) and its items' inputs from one table of all items, and
minimises the in-batch softmax loss (loss.py): each user's positive against the batch's
other B-1 items, plus, with ``sampled_negatives`` = M, M items of the focus type drawn
uniformly for the step (mixed negative sampling: the long tail, never in a batch, is
scored too; their log-Q correction is the uniform draw's expected count, M / pool, on
the same scale as an in-batch item's, B x its share of the positives).

Under a ``Replica`` (tf.distribute multi-worker) each worker embeds its
own contiguous share of the users against all B items, so the summed gradients equal the
one-process batch's.

Cost per step: O((B + M) x tower FLOPs + B x (B + M) x dim).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from training.twotower.config import TwoTowerConfig
from training.twotower.loss import in_batch_softmax_loss

Step = Callable[[np.ndarray], tf.Tensor]


@dataclass
class Replica:
    """This process's place in a tf.distribute multi-worker group (distributed.py)."""

    strategy: tf.distribute.Strategy
    rank: int
    world: int


def slice_rows(inputs: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The same rows of every input column."""
    return {k: v[rows] for k, v in inputs.items()}


def to_tensors(inputs: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    """Input columns as tensors (object columns as strings)."""
    return {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in inputs.items()}


def step_function(
    user_tower: keras.Model,
    item_tower: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    cfg: TwoTowerConfig,
    *,
    item_table: dict[str, np.ndarray],
    item_prob: np.ndarray,
    user_train: dict[str, np.ndarray],
    item_train: np.ndarray,
    replica: Replica | None = None,
    negative_pool: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> Step:
    """A function of the batch's positions ``rows`` (into ``user_train`` / ``item_train``,
    the training examples' user inputs and item rows) that takes one optimizer step and
    returns the batch's loss. ``item_table``: every item's tower inputs (items rows);
    ``item_prob``: (items,) each item's share of the positives, for the logQ correction;
    ``negative_pool``: the item rows sampled negatives are drawn from (with ``rng``)."""
    pool = negative_pool if negative_pool is not None else np.empty(0, np.int64)
    m = cfg.sampled_negatives if len(pool) else 0
    draw = rng if rng is not None else np.random.default_rng(cfg.seed)
    # in share units: an in-batch column is item j with probability share_j per row
    uniform_q = m / len(pool) / cfg.batch_size if m else 0.0
    prob_table = tf.constant(item_prob, tf.float32)
    items = to_tensors(item_table)
    weights = user_tower.trainable_variables + item_tower.trainable_variables

    def replica_step(user_batch, item_rows, offset, denominator):
        item_batch = {k: tf.gather(v, item_rows) for k, v in items.items()}
        with tf.GradientTape() as tape:
            u = user_tower(user_batch, training=True)
            v = item_tower(item_batch, training=True)
            prob = None
            if cfg.logq_correction:
                positives = tf.gather(prob_table, item_rows[: tf.shape(item_rows)[0] - m])
                prob = tf.concat([positives, tf.fill([m], tf.constant(uniform_q, tf.float32))], 0)
            loss = in_batch_softmax_loss(
                u, v, item_rows, prob, cfg.temperature, offset, denominator
            )
        # under a strategy, the optimizer sums the replicas' gradients
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    @tf.function(reduce_retracing=True)
    def one_process_step(user_batch, item_rows):
        return replica_step(user_batch, item_rows, 0, None)

    @tf.function(reduce_retracing=True)
    def distributed_step(user_batch, item_rows, offset):
        assert replica is not None
        per_replica = replica.strategy.run(
            replica_step, args=(user_batch, item_rows, offset, tf.shape(item_rows)[0] - m)
        )
        return replica.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def step(rows: np.ndarray) -> tf.Tensor:
        batch_items = item_train[rows]
        if m:  # the same draw on every worker: the caller's seeded generator
            batch_items = np.concatenate([batch_items, draw.choice(pool, m)])
        item_rows = tf.constant(batch_items)
        if replica is None:
            return one_process_step(to_tensors(slice_rows(user_train, rows)), item_rows)
        # this worker's contiguous share of the batch's users, against all its items
        share = np.array_split(np.arange(len(rows)), replica.world)[replica.rank]
        return distributed_step(
            to_tensors(slice_rows(user_train, rows[share])),
            item_rows,
            tf.constant(int(share[0]), tf.int32),
        )

    return step


def run_epoch(
    step: Step, order: np.ndarray, batch_size: int, epoch: int, progress: bool
) -> list[float]:
    """One pass over the example positions ``order`` in full batches (B-1 negatives for
    everyone; the last partial batch is left out); the batches' losses."""
    n_batches = len(order) // batch_size
    losses: list[float] = []
    bar = tqdm(
        range(n_batches),
        desc=f"2T epoch {epoch}",
        unit="batch",
        disable=None if progress else True,
        leave=False,
    )
    for b in bar:
        losses.append(float(step(order[b * batch_size : (b + 1) * batch_size])))
        if b % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return losses

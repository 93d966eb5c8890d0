"""The two towers trained with tf.distribute's MultiWorkerMirroredStrategy, one worker per
rank of the engine's training group (training/engine/), then rebuilt in the driver.

Every worker gets the same examples and seed, so the same batches; each embeds its
contiguous share of a batch's users and all of the batch's items, and its loss is its
users' cross-entropy against every item of the batch over the global batch size. The
strategy sums the workers' gradients, which is then the one-process batch gradient: the
in-batch negatives are the same B - 1 per user, not B / workers - 1 (a plain per-replica
loss would shrink them). Every worker scores validation on the same weights, so all stop
at the same epoch. Against one process the difference is the order of the sums
(docs/beyond-one-machine.md gives the measured tolerance).

A warm start (warm.py) trains in the driver: a continuation is a few epochs on the new
examples, not worth a group's start-up.
"""

from __future__ import annotations

import json
import os

import numpy as np

from training.twotower.config import TwoTowerConfig
from training.twotower.examples import TowerData


def train_two_tower_distributed(engine, data: TowerData, cfg: TwoTowerConfig):
    """``train_two_tower`` on ``engine.workers`` TensorFlow workers; the towers, rebuilt
    here with the trained weights (a TrainedTowers)."""
    import keras

    from training.twotower.train import _rows, untrained_towers

    out = engine.group(_worker_main, engine.workers, (data, cfg))[0]
    keras.utils.set_random_seed(cfg.seed)
    train_rows, _, _, counts = _rows(data, cfg, np.random.default_rng(cfg.seed), None, False)
    towers = untrained_towers(data, cfg, train_rows, counts)
    weights = towers.user_tower.trainable_variables + towers.item_tower.trainable_variables
    for w, value in zip(weights, out["weights"]):
        w.assign(value)
    towers.history, towers.best_epoch, towers.seconds = (
        out["history"],
        out["best_epoch"],
        out["seconds"],
    )
    return towers


def _worker_main(rank: int, world: int, addresses: str, data: TowerData, cfg: TwoTowerConfig):
    # the cluster before TensorFlow starts: the strategy must be the process's first op
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": addresses.split(",")},
            "task": {"type": "worker", "index": rank},
        }
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # one CPU per worker
    tf.config.threading.set_inter_op_parallelism_threads(1)
    # No collective timeout: TensorFlow starts one thread per collective that sleeps for
    # the timeout (tensorflow/tensorflow#62466), so at 10 min a demo-world run held
    # thousands of them and aborted ("std::system_error" creating a thread). A hung
    # worker is bounded from outside instead: the engine's task_timeout_s cancels the group.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    from training.twotower.step import Replica
    from training.twotower.train import train_two_tower

    towers = train_two_tower(data, cfg, progress=False, replica=Replica(strategy, rank, world))
    if rank != 0:
        return None
    weights = towers.user_tower.trainable_variables + towers.item_tower.trainable_variables
    return {
        "weights": [w.numpy() for w in weights],
        "history": towers.history,
        "best_epoch": towers.best_epoch,
        "seconds": towers.seconds,
    }

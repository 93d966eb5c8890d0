"""Warm start: the daily run continues the last run's towers instead of training anew.

The paper retrains the towers daily; at a million users a retrain from scratch spends
most of the daily window on examples the towers have already learned from. With
``two_tower.warm_start`` the pipeline keeps the published run's towers in
``<workdir>/towers/last`` (their weights and the encoder statistics they were built with:
vocabularies, means, standard deviations), and the next run, when nothing that shapes them
changed (the checkpoint's ``key``: feature specs, layer sizes, embedding widths, ignored
features, item types, the HGNN and text embedding spaces), rebuilds them from the same
statistics, loads the weights and trains ``warm_epochs`` on the examples the last towers
never trained on (from the end of their training window on) plus a seeded
``replay_share`` of the older ones, so they keep what they knew. The loaded state is
scored on the validation slice first (epoch 0) and kept when training does not beat it.

Anything in the key changed (a retrained HGNN is a new embedding space: weekly at the
``large`` preset), or no checkpoint: the towers train from scratch, and the pipeline
prints why. New items, countries or genres meet the last vocabularies (the shared
out-of-vocabulary rows, as unseen values always do) until that full retrain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from audiorec.errors import ContractError
from audiorec.manifest import ManifestBase, read_manifest, write_manifest
from audiorec.publish import staged_directory

if TYPE_CHECKING:
    from training.twotower.config import TwoTowerConfig
    from training.twotower.examples import TowerData

USER, ITEM = "user.weights.h5", "item.weights.h5"


class TowerCheckpoint(ManifestBase):
    KIND: ClassVar[str] = "tower-checkpoint"
    WHAT: ClassVar[str] = "two-tower checkpoint"
    key: dict
    user_stats: dict
    item_stats: dict
    item_ids: bool
    trained_until: str  # the end of the towers' training window (the validation start)
    cut: str


@dataclass
class WarmStart:
    """What :func:`training.twotower.train.train_two_tower` continues from."""

    directory: Path
    manifest: TowerCheckpoint

    @property
    def trained_until(self) -> pd.Timestamp:
        return pd.Timestamp(self.manifest.trained_until)


def checkpoint_key(data: TowerData, cfg: TwoTowerConfig, upstream: dict) -> dict:
    """What the towers' shapes and input spaces depend on: a checkpoint serves only a run
    with the same key."""
    return {
        "user_specs": [s.model_dump() for s in data.user_specs],
        "item_specs": [s.model_dump() for s in data.item_specs],
        "types": list(data.types.names),
        "layers": list(cfg.layers),
        "string_embedding_dim": cfg.string_embedding_dim,
        "item_id_embedding_dim": cfg.item_id_embedding_dim,
        "ignored_user": list(cfg.ignored_user_features(data.types)),
        "ignored_item": list(cfg.ignored_item_features()),
        "hgnn_version": upstream["hgnn_version"],
        "text_version": upstream["text_version"],
    }


def load_checkpoint(directory: str | Path, key: dict, cut: object) -> tuple[WarmStart | None, str]:
    """(the checkpoint, "") when ``directory`` holds one for ``key`` from before ``cut``,
    else (None, why)."""
    directory = Path(directory)
    if not directory.exists():
        return None, "no earlier towers to continue"
    try:
        manifest = read_manifest(directory, TowerCheckpoint)
    except ContractError as exc:
        return None, f"the earlier towers are unreadable ({exc})"
    changed = sorted(k for k in set(key) | set(manifest.key) if key.get(k) != manifest.key.get(k))
    if changed:
        return None, "the earlier towers were built for other " + ", ".join(changed)
    if _naive_utc(pd.DatetimeIndex([manifest.cut]))[0] >= _naive_utc(pd.DatetimeIndex([cut]))[0]:
        return None, f"the earlier towers are from cut {manifest.cut}, not before this one"
    return WarmStart(directory, manifest), ""


def save_checkpoint(
    directory: str | Path, towers: Any, data: TowerData, key: dict, cut: object
) -> None:
    """Replace ``directory`` with ``towers`` (a :class:`~training.twotower.train.
    TrainedTowers`, which imports this module; atomically: a crash leaves the last one)."""
    with staged_directory(directory) as tmp:
        towers.user_tower.save_weights(tmp / USER)
        towers.item_tower.save_weights(tmp / ITEM)
        write_manifest(
            tmp,
            TowerCheckpoint(
                key=key,
                user_stats=towers.stats["user"],
                item_stats=towers.stats["item"],
                item_ids=towers.item_ids,
                # a refit trained through the cut; otherwise up to the validation slice
                trained_until=str(
                    pd.Timestamp(cut) if towers.refit_epochs else data.window["validation_start"]
                ),
                cut=str(pd.Timestamp(cut)),
            ),
        )


def _naive_utc(t: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return t.tz_convert("UTC").tz_localize(None) if t.tz is not None else t


def warm_rows(
    ts: np.ndarray, train_rows: np.ndarray, since: pd.Timestamp, share: float, seed: int
) -> tuple[np.ndarray, int]:
    """(sorted training rows: every one at or after ``since`` plus a seeded ``share`` of
    the rest, how many are new)."""
    is_new = np.asarray(
        _naive_utc(pd.DatetimeIndex(ts[train_rows])) >= _naive_utc(pd.DatetimeIndex([since]))[0]
    )
    new, old = train_rows[is_new], train_rows[~is_new]
    keep = np.random.default_rng(seed).random(len(old)) < share
    return np.sort(np.concatenate([new, old[keep]])), len(new)

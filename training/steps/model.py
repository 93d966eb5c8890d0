"""The steps that make and ship the model: the two towers (trained or continued, their
popularity prior, the refit through the cut) and the release (export, item vectors,
indexes, the atomic publication of a version).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audiorec.artifact import new_version_name, prune_versions, publish, served_projects
from audiorec.failpoints import failpoint
from training.steps.context import RunContext


@dataclass(frozen=True)
class TowerResult:
    towers: Any  # training.twotower.train.TwoTowers
    data: Any  # training.twotower.examples.TowerData
    upstream: dict[str, Any]  # the HGNN and text versions the towers were trained on
    key: dict[str, Any]  # the warm-start checkpoint key (what the next run may continue)
    project: str  # the Feast project the towers read


@dataclass(frozen=True)
class ReleaseResult:
    version: str
    directory: Path


def towers_step(ctx: RunContext, project: str, hgnn_skipped: bool) -> TowerResult:
    """The towers on Feast historical features of ``project``: continued from the last
    published ones where they match (``warm_start``), else trained; then the prior and
    the refit through the cut as configured."""
    from audiorec.featurestore import open_store
    from training.data.embeddings import read_item_embeddings
    from training.twotower.examples import build_tower_data
    from training.twotower.train import train_two_tower
    from training.twotower.warm import checkpoint_key, load_checkpoint

    cfg, wd, engine = ctx.cfg, ctx.workdir, ctx.engine
    ctx.settings("towers", cfg.two_tower.describe())
    tower_data = build_tower_data(
        open_store(wd, cfg.store, project), ctx.data, ctx.cut, cfg.two_tower, progress=ctx.say
    )
    upstream: dict[str, Any] = {
        "hgnn_version": read_item_embeddings(ctx.hgnn).version,
        "text_version": read_item_embeddings(ctx.text).version,
        "hgnn_skipped": hgnn_skipped,
    }
    warm, key = None, checkpoint_key(tower_data, cfg.two_tower, upstream)
    if cfg.two_tower.warm_start:
        warm, why = load_checkpoint(wd / "towers" / "last", key, ctx.cut)
        if warm is None:
            ctx.say(f"  2T from scratch: {why}")
    if warm is None and engine.workers > 1:
        from training.twotower.distributed import train_two_tower_distributed

        towers = train_two_tower_distributed(engine, tower_data, cfg.two_tower)
    else:
        towers = train_two_tower(tower_data, cfg.two_tower, progress=ctx.progress, warm=warm)
    if cfg.two_tower.popularity_prior:
        towers.fit_prior(
            open_store(wd, cfg.store, project), ctx.data, tower_data, ctx.cut, cfg.two_tower
        )
        ctx.say(f"  popularity prior: {_prior_line(towers.prior)}")
    if cfg.two_tower.refit and warm is None and engine.workers == 1:
        from training.twotower.train import refit_two_tower

        towers = refit_two_tower(tower_data, cfg.two_tower, towers, progress=ctx.progress)
    best = towers.best
    ctx.say(
        f"  best epoch {towers.best_epoch} of {towers.history[-1]['epoch']} in "
        f"{towers.seconds:.0f}s:"
        " validation recall@10 "
        + ", ".join(f"{t} {best[f'val_recall_{t}']:.3f}" for t in ctx.data.item_types)
        + (
            f"; then refit through the cut for {towers.refit_epochs} epoch(s)"
            if towers.refit_epochs
            else ""
        )
    )
    failpoint("after-towers")
    return TowerResult(towers, tower_data, upstream, key, project)


def _served_now(workdir: Path) -> Path | None:
    """The version ``current`` names, or None before the first publication."""
    from audiorec.artifact import current_dir
    from audiorec.errors import AudiorecError

    try:
        return current_dir(workdir)
    except (AudiorecError, OSError):  # nothing published yet, or a broken link: no reuse
        return None


def release_step(ctx: RunContext, t: TowerResult) -> ReleaseResult:
    """Export, item vectors, indexes and lists into a new version, checked as serving
    loads it, then published (``current`` moved last); old versions and unused online
    feature generations pruned."""
    from training.features.refresh import check_online_hgnn
    from training.features.store import drop_projects
    from training.release.build import verify_roundtrip, write_version
    from training.twotower.train import plot_curve

    cfg, wd = ctx.cfg, ctx.workdir
    # The tower reads preference vectors from the online store: they must come from the
    # HGNN it was trained with, or serving would be silently skewed.
    check_online_hgnn(wd, cfg.store, t.project, t.upstream["hgnn_version"])
    version = new_version_name(wd)

    def write(out: Path):
        manifest = write_version(
            out,
            version=version,
            towers=t.towers,
            data=t.data,
            data_dir=ctx.data,
            cut=ctx.cut,
            cfg=cfg.two_tower,
            index_cfg=cfg.index,
            upstream=t.upstream,
            project=t.project,
            window_days=cfg.features.window_days,
        )
        plot_curve(t.towers.history, out / "training_curve.png")
        if not cfg.live_items:
            return manifest
        from training.release.live import export_live

        live = export_live(
            out,
            towers=t.towers,
            data=t.data,
            hgnn_dir=ctx.hgnn_dir,
            text_model=cfg.text.model,
            items_parquet=ctx.data / "items.parquet",
            max_items=cfg.live_items,
            previous=_served_now(wd),
        )
        return manifest.model_copy(update={"model": {**manifest.model, "live": live}})

    directory = publish(wd, version, write, check=lambda d: verify_roundtrip(d, t.towers, t.data))
    ctx.say(f"  published {version} -> {directory} (current)")
    if cfg.two_tower.warm_start:
        from training.twotower.warm import save_checkpoint

        # what the next run continues: the towers now served
        save_checkpoint(wd / "towers" / "last", t.towers, t.data, t.key, ctx.cut)
    removed = prune_versions(wd, cfg.keep_versions)
    dropped = drop_projects(wd, cfg.store, keep=served_projects(wd) | {t.project})
    if removed or dropped:
        ctx.say(
            f"  removed {len(removed)} old version(s) or dead staging directories and "
            f"{len(dropped)} unused online feature generation(s) (keeping the last "
            f"{cfg.keep_versions} versions)"
        )
    return ReleaseResult(version, directory)


def _prior_line(prior: dict | None) -> str:
    if not prior:
        return "no new starts in the validation slice to choose it on: none"
    return ", ".join(
        f"{k} beta {c['beta']:g}, half-life {c['half_life_days']:g} days "
        f"(validation HR@10 {prior['validation_hr10'][k][0][0]:.3f} "
        f"without, {np.nanmax(prior['validation_hr10'][k]):.3f} with)"
        for k, c in prior["chosen"].items()
    )

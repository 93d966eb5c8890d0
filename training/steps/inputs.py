"""The steps that turn a dataset into model inputs: text embeddings, the co-listening graph
and HGNN, the feature store. The daily pipeline runs them in this order; the evaluation
runs the same functions for its 2T-HGNN rows, so what is evaluated is built as what is
served.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from audiorec.errors import AudiorecError
from audiorec.failpoints import failpoint
from training.steps.context import RunContext

if TYPE_CHECKING:  # the feature store's modules are imported where the step runs
    from training.features.refresh import RefreshReport


@dataclass(frozen=True)
class TextResult:
    items: int
    encoded: int
    cached: int


@dataclass(frozen=True)
class HGNNResult:
    trained: bool  # False: the last run's embeddings are reused
    line: str  # what happened, one line


def text_step(ctx: RunContext) -> TextResult:
    """Every item's title and description embedded (the cache keeps unchanged items)."""
    from training.text.embed import embed_items

    cfg = ctx.cfg
    ctx.settings("text", cfg.text.describe())
    res = embed_items(
        ctx.data / "items.parquet",
        ctx.text,
        model_name=cfg.text.model,
        cache=ctx.workdir / "text" / "cache.parquet",
        batch_size=cfg.text.batch_size,
        precision=cfg.text.precision,
        progress=ctx.progress,
        engine=ctx.engine,
    )
    out = TextResult(res["items"], res["encoded"], res["cached"])
    ctx.say(f"  {out.items:,} items ({out.encoded:,} encoded, {out.cached:,} cached)")
    failpoint("after-text")
    return out


def hgnn_step(ctx: RunContext, skip: bool = False, reuse_recent: bool = True) -> HGNNResult:
    """The co-listening graph and the HGNN trained on it, unless ``skip`` or (with
    ``reuse_recent``) the last run is recent enough (``hgnn_max_age_days``): then its
    embeddings are reused. The evaluation always trains (its settings vary by row)."""
    reuse = recent_hgnn(ctx.hgnn_dir, ctx.cut, ctx.cfg.hgnn_max_age_days) if reuse_recent else None
    if reuse and not skip:
        ctx.say(f"  {reuse}")
        skip = True
    if skip:
        if not ctx.hgnn.is_file():
            raise AudiorecError(
                f"--skip-hgnn needs earlier HGNN embeddings in {ctx.hgnn_dir}; "
                "there are none (run once without --skip-hgnn)"
            )
        line = f"skipped: reusing the item embeddings in {ctx.hgnn_dir}"
        ctx.say(f"  {line}")
        return HGNNResult(False, line)
    from training.hgnn.run import run_hgnn

    cfg = ctx.cfg
    ctx.settings("hgnn", cfg.hgnn.describe())
    run = run_hgnn(
        ctx.data,
        ctx.text,
        ctx.hgnn_dir,
        ctx.cut,
        cfg.graph,
        cfg.hgnn,
        progress=ctx.progress,
        engine=ctx.engine,
    )
    ctx.say(f"  {run.summary()}")
    failpoint("after-hgnn")
    return HGNNResult(True, run.summary())


def features_step(ctx: RunContext, online: bool = True) -> RefreshReport:
    """The feature tables through the cut, the Feast repository applied (a project per
    feature generation) and, with ``online``, what the online store has not seen yet
    materialized into it (the evaluation reads historical features only)."""
    from training.features.refresh import refresh_features

    cfg = ctx.cfg
    ctx.settings(
        "features",
        f"{cfg.features.describe()}; online store {cfg.store.label}, offline {cfg.store.offline}",
    )
    refreshed = refresh_features(
        ctx.data,
        ctx.workdir,
        ctx.hgnn,
        ctx.text,
        through=ctx.cut.date(),
        jobs=cfg.features,
        store=cfg.store,
        progress=ctx.progress,
        engine=ctx.engine,
        online=online,
    )
    ctx.say("  " + refreshed.summary().replace("\n", "\n  "))
    return refreshed


def recent_hgnn(hgnn_dir: Path, cut: datetime, max_age_days: int | None) -> str | None:
    """Why the last HGNN run in ``hgnn_dir`` may be reused at ``cut`` (trained at most
    ``max_age_days`` before it), or None: train a new one."""
    if max_age_days is None or not (hgnn_dir / "embeddings.parquet").is_file():
        return None
    from audiorec.manifest import read_manifest
    from training.hgnn.run import HGNNManifest

    try:
        last = read_manifest(hgnn_dir, HGNNManifest, verify_files=False)
    except AudiorecError:
        return None  # unreadable: train a new one
    age = (cut - datetime.fromisoformat(last.cut)).total_seconds() / 86400
    if not 0 <= age <= max_age_days:
        return None
    return (
        f"reusing HGNN {last.version} (trained {age:.0f} day(s) before this cut; retrained "
        f"when older than {max_age_days}): new items get their HGNN embedding then"
    )

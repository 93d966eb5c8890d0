"""The daily pipeline, end to end: one call from a dataset to a published artifact.

    validate -> text embeddings -> co-listening graph + HGNN -> feature jobs, feast apply,
    materialize -> two-tower training on Feast historical features -> export, item
    vectors, item indexes, fallback lists -> publish (atomic, ``current`` moved last)

Each step publishes its own output atomically; the artifact version is published only
after every step succeeded and the version reloads as serving would load it, so a failed
run leaves the served version untouched and names the step that failed. The HGNN step
can be skipped to reuse the last item embeddings (the paper's "HGNN weekly, 2T daily").
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
from pydantic import Field

from audiorec.artifact import (
    current_version,
    new_version_name,
    prune_versions,
    publish,
    served_projects,
)
from audiorec.config import StrictConfig
from audiorec.errors import AudiorecError
from audiorec.eventlog import log_dir
from audiorec.failpoints import failpoint
from audiorec.featurestore import FeatureStoreConfig
from audiorec.item_index import IndexConfig
from training.data import Dataset
from training.data.duck import DatasetLike
from training.data.merge_log import merge_event_log
from training.engine import Engine, EngineConfig, open_engine
from training.features.config import FeatureJobConfig
from training.graph.colisten import GraphConfig
from training.hgnn.config import HGNNConfig
from training.presets import LARGE_FROM_EVENTS, describe, effective
from training.text.config import TextConfig
from training.twotower.config import TwoTowerConfig


class PipelineConfig(StrictConfig):
    graph: GraphConfig = Field(default_factory=GraphConfig)
    hgnn: HGNNConfig = Field(default_factory=HGNNConfig)
    features: FeatureJobConfig = Field(default_factory=FeatureJobConfig)
    store: FeatureStoreConfig = Field(default_factory=FeatureStoreConfig)
    two_tower: TwoTowerConfig = Field(default_factory=TwoTowerConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    # Published versions kept after a successful run (``current`` is never removed), so
    # `audiorec rollback` has somewhere to go while the disk does not fill up.
    keep_versions: int = Field(5, ge=1)
    # The focus item type (the sparse one cold start is measured on; itemtypes.py); None:
    # the dataset's type with the fewest streams
    focus_type: str | None = None
    # Settings that fit the data's size (training/presets.py): "auto" picks by events;
    # what the caller sets explicitly always wins over the preset.
    preset: Literal["auto", "standard", "large"] = "auto"
    # "auto" picks "large" from this many events on
    large_from_events: int = Field(LARGE_FROM_EVENTS, ge=1)
    # Reuse the last HGNN when it was trained at most this many days before the cut (the
    # paper's "HGNN weekly, 2T daily"); None: train it on every run
    hgnn_max_age_days: int | None = Field(None, ge=0)
    # Where the heavy steps run: this process, or a Ray cluster (training/engine/)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    # Merge the events the server accepted (the work directory's log/, serving/accepted.py)
    # into the dataset first; off when an outside event pipeline delivers them
    merge_log: bool = True


class PipelineError(AudiorecError):
    """A step failed; the message names it, the cause, and the version still served."""


@dataclass
class PipelineReport:
    version: str | None = None
    directory: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    # the process's peak resident memory during each step (GiB; Linux, else absent)
    peak_rss_gib: dict[str, float] = field(default_factory=dict)
    preset: str = ""
    # the settings each step received (the step's name -> one line), as printed
    settings: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


STEPS = (
    "validate the dataset",
    "text embeddings",
    "co-listening graph + HGNN",
    "feature store: jobs, apply, materialize",
    "two-tower training (Feast historical)",
    "export, item vectors, item indexes, publish",
)


def run_pipeline(
    data: DatasetLike,
    workdir: str | Path,
    cfg: PipelineConfig = PipelineConfig(),
    *,
    cut: datetime | None = None,
    skip_hgnn: bool = False,
    progress: bool = True,
) -> PipelineReport:
    """Run every step on ``data`` into ``workdir``; train on events before ``cut``
    (default: the day after the last event), on the engine ``cfg.engine`` names."""
    with open_engine(cfg.engine, progress=progress) as engine:
        return _run(engine, data, workdir, cfg, cut, skip_hgnn, progress)


def _run(
    engine: Engine,
    data: DatasetLike,
    workdir: str | Path,
    cfg: PipelineConfig,
    cut: datetime | None,
    skip_hgnn: bool,
    progress: bool,
) -> PipelineReport:
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    report = PipelineReport()
    say = print if progress else (lambda *a, **k: None)
    text, hgnn_dir = wd / "text" / "embeddings.parquet", wd / "hgnn"

    @contextmanager
    def step(i: int) -> Iterator[None]:
        name = STEPS[i]
        say(f"\n[{i + 1}/{len(STEPS)}] {name}", flush=True)
        t0 = time.perf_counter()
        _reset_peak_rss()
        try:
            yield
        except BaseException as exc:
            served = current_version(wd)
            kept = (
                f"the published version {served} is untouched"
                if served
                else "nothing was published"
            )
            cause = str(exc) if isinstance(exc, AudiorecError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, KeyboardInterrupt):
                cause = "interrupted"
            raise PipelineError(f"pipeline step {i + 1} ({name}) failed: {cause}; {kept}") from exc
        report.seconds[name] = round(time.perf_counter() - t0, 1)
        peak = _peak_rss_gib()
        if peak is not None:
            report.peak_rss_gib[name] = peak
        memory = "" if peak is None else f", peak RSS {peak:.2f} GiB"
        say(f"  done in {report.seconds[name]:.0f}s{memory}", flush=True)

    with step(0):
        if cfg.merge_log:
            merged = merge_event_log(data, log_dir(wd))
            say(f"  {merged.summary()}")
            if merged.added and isinstance(data, Dataset):
                data = data.root  # its span and counts changed: open it again
        data = Dataset.of(data, cfg.focus_type)
        cut = cut or data.default_cut
        # the preset first, on the caller's own config: nothing merged before it can
        # mark the fields it fills in as set
        cfg, preset = effective(cfg, data.info.rows.get("events", 0))
        # Feast's offline work (historical retrieval, materialization) on the same engine
        cfg = cfg.with_overrides({"store": engine.feast_options()})
        report.preset = preset
        say(f"  {describe(cfg, preset)}; engine {_engine_line(engine)}")
        say(
            f"  {', '.join(f'{k} {v:,}' for k, v in data.info.rows.items())}; item types "
            f"{', '.join(data.item_types)} (focus {data.item_types.focus}); training cut "
            f"{cut:%Y-%m-%d}"
        )

    def settings(i: int, line: str) -> None:
        report.settings[STEPS[i]] = line
        say(f"  settings: {line}")

    with step(1):
        from training.text.embed import embed_items

        settings(1, cfg.text.describe())

        res = embed_items(
            data / "items.parquet",
            text,
            model_name=cfg.text.model,
            cache=wd / "text" / "cache.parquet",
            batch_size=cfg.text.batch_size,
            precision=cfg.text.precision,
            progress=progress,
            engine=engine,
        )
        say(f"  {res['items']:,} items ({res['encoded']:,} encoded, {res['cached']:,} cached)")
        failpoint("after-text")
    with step(2):
        reuse = _recent_hgnn(hgnn_dir, cut, cfg.hgnn_max_age_days)
        if reuse and not skip_hgnn:
            say(f"  {reuse}")
            skip_hgnn = True
        if skip_hgnn:
            if not (hgnn_dir / "embeddings.parquet").is_file():
                raise AudiorecError(
                    f"--skip-hgnn needs earlier HGNN embeddings in {hgnn_dir}; "
                    "there are none (run once without --skip-hgnn)"
                )
            say(f"  skipped: reusing the item embeddings in {hgnn_dir}")
        else:
            from training.hgnn.run import run_hgnn

            settings(2, cfg.hgnn.describe())
            run = run_hgnn(
                data, text, hgnn_dir, cut, cfg.graph, cfg.hgnn, progress=progress, engine=engine
            )
            say(f"  {run.summary()}")
            failpoint("after-hgnn")
    with step(3):
        from training.features.refresh import refresh_features

        settings(
            3,
            f"{cfg.features.describe()}; online store {cfg.store.label}, offline "
            f"{cfg.store.offline}",
        )

        refreshed = refresh_features(
            data,
            wd,
            hgnn_dir / "embeddings.parquet",
            text,
            through=cut.date(),
            jobs=cfg.features,
            store=cfg.store,
            progress=progress,
            engine=engine,
        )
        say("  " + refreshed.summary().replace("\n", "\n  "))
    with step(4):
        from audiorec.featurestore import open_store
        from training.data.embeddings import read_item_embeddings
        from training.twotower.examples import build_tower_data
        from training.twotower.train import train_two_tower
        from training.twotower.warm import checkpoint_key, load_checkpoint

        settings(4, cfg.two_tower.describe())
        project = refreshed.project
        tower_data = build_tower_data(
            open_store(wd, cfg.store, project), data, cut, cfg.two_tower, progress=say
        )
        store = open_store(wd, cfg.store, project)
        upstream: dict[str, Any] = {
            "hgnn_version": read_item_embeddings(hgnn_dir / "embeddings.parquet").version,
            "text_version": read_item_embeddings(text).version,
            "hgnn_skipped": skip_hgnn,
        }
        warm, tower_key = None, checkpoint_key(tower_data, cfg.two_tower, upstream)
        if cfg.two_tower.warm_start:
            warm, why = load_checkpoint(wd / "towers" / "last", tower_key, cut)
            if warm is None:
                say(f"  2T from scratch: {why}")
        if warm is None and engine.workers > 1:
            from training.twotower.distributed import train_two_tower_distributed

            towers = train_two_tower_distributed(engine, tower_data, cfg.two_tower)
        else:
            towers = train_two_tower(tower_data, cfg.two_tower, progress=progress, warm=warm)
        if cfg.two_tower.popularity_prior:
            towers.fit_prior(store, data, tower_data, cut, cfg.two_tower)
            say(
                "  popularity prior: "
                + (
                    ", ".join(
                        f"{k} beta {c['beta']:g}, half-life {c['half_life_days']:g} days "
                        f"(validation HR@10 {towers.prior['validation_hr10'][k][0][0]:.3f} "
                        f"without, {np.nanmax(towers.prior['validation_hr10'][k]):.3f} with)"
                        for k, c in towers.prior["chosen"].items()
                    )
                    if towers.prior
                    else "no new starts in the validation slice to choose it on: none"
                )
            )
        if cfg.two_tower.refit and warm is None and engine.workers == 1:
            from training.twotower.train import refit_two_tower

            towers = refit_two_tower(tower_data, cfg.two_tower, towers, progress=progress)
        best = towers.best
        say(
            f"  best epoch {towers.best_epoch} of {towers.history[-1]['epoch']} in "
            f"{towers.seconds:.0f}s:"
            " validation recall@10 "
            + ", ".join(f"{t} {best[f'val_recall_{t}']:.3f}" for t in data.item_types)
            + (
                f"; then refit through the cut for {towers.refit_epochs} epoch(s)"
                if towers.refit_epochs
                else ""
            )
        )
        failpoint("after-towers")
    with step(5):
        from training.features.refresh import check_online_hgnn
        from training.features.store import drop_projects
        from training.release.build import verify_roundtrip, write_version
        from training.twotower.train import plot_curve

        # The tower reads preference vectors from the online store: they must come from
        # the HGNN it was trained with, or serving would be silently skewed.
        check_online_hgnn(wd, cfg.store, project, upstream["hgnn_version"])
        version = new_version_name(wd)

        def write(out: Path):
            manifest = write_version(
                out,
                version=version,
                towers=towers,
                data=tower_data,
                data_dir=data,
                cut=cut,
                cfg=cfg.two_tower,
                index_cfg=cfg.index,
                upstream=upstream,
                project=project,
                window_days=cfg.features.window_days,
            )
            plot_curve(towers.history, out / "training_curve.png")
            return manifest

        report.directory = publish(
            wd, version, write, check=lambda d: verify_roundtrip(d, towers, tower_data)
        )
        report.version = version
        say(f"  published {version} -> {report.directory} (current)")
        if cfg.two_tower.warm_start:
            from training.twotower.warm import save_checkpoint

            # what the next run continues: the towers now served
            save_checkpoint(wd / "towers" / "last", towers, tower_data, tower_key, cut)
        removed = prune_versions(wd, cfg.keep_versions)
        dropped = drop_projects(wd, cfg.store, keep=served_projects(wd) | {project})
        if removed or dropped:
            say(
                f"  removed {len(removed)} old version(s) or dead staging directories and "
                f"{len(dropped)} unused online feature generation(s) (keeping the last "
                f"{cfg.keep_versions} versions)"
            )
    return report


def _engine_line(engine: Engine) -> str:
    if engine.kind == "local":
        return "local (this process)"
    return (
        f"ray ({engine.partitions} partitions, {engine.workers} training worker(s) for the "
        "HGNN and the towers, Feast's Ray offline store and compute engine)"
    )


def _recent_hgnn(hgnn_dir: Path, cut: datetime, max_age_days: int | None) -> str | None:
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


def _reset_peak_rss() -> None:
    """Start a new peak-RSS interval (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_gib() -> float | None:
    """The process's peak RSS since the last reset (VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        pass
    return None

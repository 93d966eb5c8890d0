"""The daily pipeline, end to end: one call from a dataset to a published artifact.

    merge the server's log, validate -> text embeddings -> co-listening graph + HGNN ->
    feature jobs, feast apply, materialize -> two-tower training on Feast historical
    features -> export, item vectors, item indexes, fallback lists -> publish (atomic,
    ``current`` moved last)

The steps themselves are functions of a run context (training/steps/); this module runs
them in order, and times, reports and guards each.

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
from typing import Any, Callable, ContextManager, Iterator

from audiorec.artifact import current_version
from audiorec.errors import AudiorecError
from audiorec.eventlog import log_dir
from training.data import Dataset
from training.data.duck import DatasetLike
from training.data.merge_items import merge_item_log
from training.data.merge_log import merge_event_log
from training.engine import Engine, open_engine
from training.presets import describe, effective
from training.steps import (
    PipelineConfig,
    RunContext,
    features_step,
    hgnn_step,
    release_step,
    text_step,
    towers_step,
)

__all__ = ["PipelineConfig", "PipelineError", "PipelineReport", "run_pipeline"]


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
STEP_OF = {"text": 1, "hgnn": 2, "features": 3, "towers": 4, "release": 5}


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

    def step(i: int) -> ContextManager[None]:
        return _step(i, report, wd, say)

    with step(0):
        if cfg.merge_log:
            titles = merge_item_log(data, log_dir(wd))  # first: events name these items
            merged = merge_event_log(data, log_dir(wd))
            say(f"  {titles.summary()}\n  {merged.summary()}")
            if (merged.added or titles.added) and isinstance(data, Dataset):
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

    def settings(name: str, line: str) -> None:
        report.settings[STEPS[STEP_OF[name]]] = line
        say(f"  settings: {line}")

    ctx = RunContext(data, wd, cut, cfg, engine, progress, say, settings)
    with step(1):
        text_step(ctx)
    with step(2):
        hgnn = hgnn_step(ctx, skip=skip_hgnn)
    with step(3):
        features = features_step(ctx)
    with step(4):
        towers = towers_step(ctx, features.project, hgnn_skipped=not hgnn.trained)
    with step(5):
        release = release_step(ctx, towers)
        report.version, report.directory = release.version, release.directory
    return report


@contextmanager
def _step(i: int, report: PipelineReport, wd: Path, say: Callable[..., Any]) -> Iterator[None]:
    """Step ``i`` announced, timed and its peak memory recorded; a failure re-raised as a
    PipelineError naming the step and the version still served."""
    name = STEPS[i]
    say(f"\n[{i + 1}/{len(STEPS)}] {name}", flush=True)
    t0 = time.perf_counter()
    _reset_peak_rss()
    try:
        yield
    except BaseException as exc:
        served = current_version(wd)
        kept = f"the published version {served} is untouched" if served else "nothing was published"
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


def _engine_line(engine: Engine) -> str:
    if engine.kind == "local":
        return "local (this process)"
    return (
        f"ray ({engine.partitions} partitions, {engine.workers} training worker(s) for the "
        "HGNN and the towers, Feast's Ray offline store and compute engine)"
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

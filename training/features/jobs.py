"""The feature jobs: dataset + item embeddings -> the Feast source tables.

``run_feature_jobs`` computes snapshot dates [first, through]. The first run (or any run
after the embeddings, the data or the window changed: the preference vectors live in the
embedding space, so a new HGNN version means new history) rebuilds every table into a
fresh directory and swaps it in; later runs only add the dates after the last one done,
reading only the events those dates can see. Each file appears atomically, the rebuilt
directory replaces the old one in one step (a symbolic link swap), and the state file that
records progress is written last (atomically; a corrupt one means a rebuild), so a failed
run is simply run again. Each rebuild gets a new ``generation`` id: whatever was loaded
from an older generation (the online store) knows it is stale.
"""

from __future__ import annotations

import time as _time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from tqdm.auto import tqdm

from audiorec.featurestore import STATE_FILE, features_dir, recent_schema
from audiorec.itemtypes import ItemTypes
from audiorec.publish import AtomicParquet, read_json, staged_directory, write_json
from training.data.dataset import Dataset, data_span, item_types
from training.data.duck import DatasetLike, connect_dataset
from training.data.embeddings import ItemEmbeddings, read_item_embeddings
from training.engine import Engine, LocalEngine
from training.features.config import FeatureJobConfig
from training.features.tables import copy_rows, item_content, item_hgnn, profile, write_table
from training.features.windows import (
    item_popularity,
    midnight,
    prepare_daily_interactions,
    user_window_baselines,
    user_window_batches,
    user_windows_schema,
)


@dataclass
class FeatureRunReport:
    first: date | None
    through: date
    full_rebuild: bool
    generation: str = ""  # the feature tables' rebuild id (see the module docstring)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        if self.first is None:
            return f"features already computed through {self.through}: nothing to do"
        parts = ", ".join(f"{k} {v:,} rows ({self.seconds[k]:.1f}s)" for k, v in self.rows.items())
        kind = "full rebuild" if self.full_rebuild else "incremental"
        return f"features {self.first} .. {self.through} ({kind}): {parts}"


def run_feature_jobs(
    data: DatasetLike,
    workdir: str | Path,
    hgnn_embeddings: str | Path,
    text_embeddings: str | Path,
    *,
    through: date | None = None,
    cfg: FeatureJobConfig = FeatureJobConfig(),
    validate: bool = True,
    progress: bool = False,
    engine: Engine | None = None,
) -> FeatureRunReport:
    """Bring the feature tables of ``workdir`` up to snapshot date ``through``
    (default: the day after the last event). The user-window job, the heavy one, runs as
    one task per user partition on ``engine`` (None or local: here, in one pass)."""
    engine = engine or LocalEngine()
    data = Dataset.of(data) if validate or isinstance(data, Dataset) else Path(data).resolve()
    hgnn = read_item_embeddings(hgnn_embeddings)
    text = read_item_embeddings(text_embeddings)
    con = _connect(data, workdir, cfg)
    types = data.item_types if isinstance(data, Dataset) else item_types(con)
    first_possible, last_possible = data_span(con)
    through = through or last_possible
    root = features_dir(workdir)
    (root.parent / "feast").mkdir(parents=True, exist_ok=True)  # registry + online store
    state = _read_state(root)
    key = {
        "data": str(data),
        "hgnn_version": hgnn.version,
        "text_version": text.version,
        "hgnn_dim": hgnn.dim,
        "window_days": cfg.window_days,
        "item_types": types.to_json(),
    }
    full = state is None or state.get("key") != key
    prior = state or {}  # the last run's state (read only when not full)
    if full:
        first = first_possible
        if cfg.history_days is not None:
            first = max(first, through - timedelta(days=cfg.history_days - 1))
    else:
        first = date.fromisoformat(prior["through"]) + timedelta(days=1)
    if first > through:
        return FeatureRunReport(None, through, False, generation=prior["generation"])

    generation = uuid.uuid4().hex if full else prior["generation"]
    report = FeatureRunReport(first, through, full, generation=generation)
    # A rebuild is staged and swapped in whole; an incremental run adds files in place
    # (each appears atomically) and records progress last.
    try:
        with staged_directory(root, link=True) if full else nullcontext(root) as target:
            _write_all(
                con,
                target,
                report,
                cfg,
                hgnn,
                text,
                types,
                first,
                through,
                full,
                progress,
                _WindowJob(engine, Path(data), Path(workdir).resolve(), Path(hgnn_embeddings)),
            )
            since = first if full else date.fromisoformat(prior["first"])
            write_json(
                target / STATE_FILE,
                {
                    "key": key,
                    "generation": generation,
                    # what the feature repository declares views for (featurestore.py)
                    "item_types": types.to_json(),
                    "first": since.isoformat(),
                    "through": through.isoformat(),
                },
            )
    finally:
        con.close()
    return report


def _write_all(
    con,
    target: Path,
    report: FeatureRunReport,
    cfg: FeatureJobConfig,
    hgnn: ItemEmbeddings,
    text: ItemEmbeddings,
    types: ItemTypes,
    first: date,
    through: date,
    full: bool,
    progress: bool,
    job: "_WindowJob",
) -> None:
    name = f"{first.isoformat()}_{through.isoformat()}.parquet"
    # Time bounds of this run: [lo, hi) in event time; the first run starts at the origin.
    lo = None if full else midnight(first - timedelta(days=1))
    hi = midnight(through)

    def timed(table: str, fn) -> None:
        t0 = _time.perf_counter()
        report.rows[table] = fn(target / table / name)
        report.seconds[table] = _time.perf_counter() - t0

    timed("user_profile", lambda p: profile(con, p, first, through, lo, hi, cfg.profile_every_days))
    timed(
        "user_music",
        lambda p: copy_rows(
            con,
            p,
            """
        SELECT user_id, CAST(event_timestamp AS TIMESTAMPTZ) AS event_timestamp, music_vector
        FROM music""",
            "event_timestamp",
            lo,
            hi,
        ),
    )
    timed("item_content", lambda p: item_content(con, p, text, lo, hi))
    if full or not any((target / "user_recent").glob("*.parquet")):
        timed(
            "user_recent",
            lambda p: write_table(p.with_name("empty.parquet"), recent_schema().empty_table()),
        )
    if full:
        timed("item_hgnn", lambda p: item_hgnn(p.with_name(f"{hgnn.version}.parquet"), hgnn, first))
    prepare_daily_interactions(con, first, through, cfg.window_days)
    timed(
        "item_popularity",
        lambda p: write_table(
            p, item_popularity(con, first, through, cfg.window_days, anchor=full)
        ),
    )

    timed(
        "user_windows",
        lambda p: _windows(con, p, job, hgnn, types, first, through, (lo, hi), cfg, full, progress),
    )


def _windows(
    con,
    path: Path,
    job: "_WindowJob",
    hgnn: ItemEmbeddings,
    types: ItemTypes,
    first: date,
    through: date,
    bounds: tuple[datetime | None, datetime],
    cfg: FeatureJobConfig,
    full: bool,
    progress: bool,
) -> int:
    """The user_windows table at ``path``: the sign-up baselines, then the windows, here or
    one file per user partition beside it on the engine (the source reads the directory)."""
    lo, hi = bounds
    with AtomicParquet(path, user_windows_schema(types)) as out:
        out.write(user_window_baselines(con, hgnn.dim, types, first, lo, hi))
        if job.engine.partitions == 1:
            write_windows(out, con, hgnn, types, first, through, cfg, full, None, progress)
    if job.engine.partitions == 1:
        return out.rows
    parts = job.engine.partitions
    stem = path.name.removesuffix(".parquet")
    return out.rows + sum(
        job.engine.map(
            window_partition,
            [
                (
                    job.data,
                    job.workdir,
                    job.hgnn,
                    types.to_json(),
                    first,
                    through,
                    cfg,
                    full,
                    (p, parts),
                    path.with_name(f"{stem}.part{p:03d}.parquet"),
                    job.engine.cpus_per_task,
                )
                for p in range(parts)
            ],
        )
    )


@dataclass
class _WindowJob:
    """What a window partition needs to find its inputs again (paths, not data)."""

    engine: Engine
    data: Dataset | Path
    workdir: str | Path
    hgnn: str | Path


def _connect(data, workdir: str | Path, cfg: FeatureJobConfig, threads: int = 0):
    con = connect_dataset(data, ("users", "music", "items", "events"))
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if cfg.memory_limit_gib is not None:
        spill = Path(workdir) / "duckdb_tmp"
        spill.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET memory_limit = '{cfg.memory_limit_gib}GiB'")
        con.execute("SET temp_directory = '" + str(spill).replace("'", "''") + "'")
    return con


def write_windows(
    out: AtomicParquet,
    con,
    hgnn: ItemEmbeddings,
    types: ItemTypes,
    first: date,
    through: date,
    cfg: FeatureJobConfig,
    full: bool,
    part: tuple[int, int] | None,
    progress: bool = False,
) -> None:
    """The user-window rows of partition ``part`` (None: every user) into ``out``."""
    prepare = part is not None  # the whole-data ``ud`` is already there otherwise
    if prepare:
        prepare_daily_interactions(con, first, through, cfg.window_days, cfg.user_buckets, part)
    only = None if part is None else range(part[0], cfg.user_buckets, part[1])
    batches = user_window_batches(
        con,
        hgnn,
        types,
        first,
        through,
        cfg.window_days,
        cfg.user_buckets,
        anchor=full,
        only=only,
    )
    for batch in tqdm(
        batches,
        total=cfg.user_buckets if only is None else len(only),
        desc="user windows",
        unit="bucket",
        disable=None if progress else True,
        leave=False,
    ):
        out.write(batch)


def window_partition(
    data, workdir, hgnn_path, types_json, first, through, cfg, full, part, path, threads
) -> int:
    """One engine task: the user windows of one user partition, written to ``path``."""
    types = ItemTypes(tuple(types_json))
    hgnn = read_item_embeddings(hgnn_path)
    con = _connect(data, workdir, cfg, threads)
    try:
        with AtomicParquet(path, user_windows_schema(types)) as out:
            write_windows(out, con, hgnn, types, first, through, cfg, full, part)
        return out.rows
    finally:
        con.close()


def _read_state(root: Path) -> dict | None:
    state = read_json(root / STATE_FILE, "feature-job state")
    needed = {"key", "generation", "first", "through"}
    if state is not None and not (isinstance(state, dict) and needed <= set(state)):
        print(
            f"audiorec: warning: feature-job state {root / STATE_FILE} lacks "
            f"{', '.join(sorted(needed - set(state if isinstance(state, dict) else ())))}"
            "; rebuilding the feature tables",
            flush=True,
        )
        return None
    return state

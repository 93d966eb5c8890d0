"""Training's side of the Feast store: apply the repo, materialize, drop old projects.

The repository's declarations (``feature_repo/``) are the only definitions: ``apply_repo``
loads them exactly as ``feast apply`` does (with ``AUDIOREC_WORKDIR`` pointing at the work
directory) and applies them in-process, which skips the CLI's ~5 s start-up. Opening the
store and reading it online are shared with serving (``audiorec/featurestore.py``).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from audiorec.errors import AudiorecError
from audiorec.featurestore import (
    DEFAULT_PROJECT,
    REPO_DIR,
    FeatureStoreConfig,
    features_dir,
    online_errors,
    open_store,
)
from training.features.layout import TABLES

REPO_MODULES = ("entities", "data_sources", "feature_views", "feature_services")
_LOAD_LOCK = threading.Lock()


@contextmanager
def _workdir_env(workdir: Path) -> Iterator[None]:
    old = os.environ.get("AUDIOREC_WORKDIR")
    os.environ["AUDIOREC_WORKDIR"] = str(workdir)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("AUDIOREC_WORKDIR", None)
        else:
            os.environ["AUDIOREC_WORKDIR"] = old


def load_repo_objects(workdir: str | Path) -> list:
    """The Feast objects declared in feature_repo/, with sources under ``workdir``.

    The repo's modules read AUDIOREC_WORKDIR when imported, so they are imported fresh
    (and dropped again) each time: two work directories never share stale paths.
    """
    from feast import Entity, FeatureService, FeatureView

    workdir = Path(workdir).resolve()
    with _LOAD_LOCK, _workdir_env(workdir):
        sys.path.insert(0, str(REPO_DIR))
        try:
            for name in REPO_MODULES:
                sys.modules.pop(name, None)
            modules = [importlib.import_module(name) for name in REPO_MODULES]
        finally:
            sys.path.remove(str(REPO_DIR))
            for name in REPO_MODULES:
                sys.modules.pop(name, None)
    objects: list = []
    for mod in modules:
        for value in vars(mod).values():
            if isinstance(value, (Entity, FeatureView, FeatureService)) and not any(
                value is o for o in objects
            ):
                objects.append(value)
    return objects


def apply_repo(
    workdir: str | Path, cfg: FeatureStoreConfig = FeatureStoreConfig(), project: str | None = None
):
    """``feast apply`` in-process; returns the open store."""
    check_sources(workdir)
    store = open_store(workdir, cfg, project)
    with online_errors(store):
        store.apply(load_repo_objects(workdir))
    return store


def materialize(store, end: datetime, start: datetime | None = None, processes: int = 1) -> None:
    """Load the latest feature values up to ``end`` into the online store: incremental
    (from the last materialization) unless ``start`` is given. With ``processes`` > 1
    (and ``start``), the views load in that many processes at once, largest first:
    Feast's write path converts row by row in Python, one core per process."""
    from audiorec.failpoints import failpoint

    with online_errors(store):
        if start is None:
            store.materialize_incremental(end_date=end)
            return
        # One view at a time per process: a crash in between leaves views from two runs,
        # which the materialization marker (training/features/refresh.py) is there to catch.
        views = sorted(v.name for v in store.list_feature_views())
        if store.config.batch_engine.type == "ray.engine":
            _materialize_on_ray(store, views, start, end)
            return
        if processes > 1 and len(views) > 1:
            _materialize_parallel(store, views, start, end, processes)
            return
        for i, view in enumerate(views):
            store.materialize(start_date=start, end_date=end, feature_views=[view])
            if i == 0:
                failpoint("mid-materialize")


def _materialize_parallel(store, views: list[str], start, end, processes: int) -> None:
    """Feast's ``materialize`` writes the registry file around each view (its state, then
    the interval); from several processes at once those writes race and a reader meets a
    half-written file ("Wire format was corrupt"). So the children only load rows (the
    provider's per-view load, which reads the registry), and this process, the one writer,
    records each view's interval after all of them loaded."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from feast import utils

    # largest source first, so that the last view to finish is a small one
    order = sorted(views, key=lambda v: -_source_bytes(store.get_feature_view(v)))
    with cf.ProcessPoolExecutor(
        min(processes, len(views)), mp_context=mp.get_context("spawn")
    ) as pool:
        futures = [pool.submit(_materialize_one, store.config, v, start, end) for v in order]
        try:
            for future in cf.as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    start, end = utils.make_tzaware(start), utils.make_tzaware(end)
    for v in order:
        store.registry.apply_materialization(store.get_feature_view(v), store.project, start, end)


def _materialize_on_ray(store, views: list[str], start, end) -> None:
    """Each view through Feast's Ray compute engine, with two exceptions (Feast 0.67):

    - A view with no source rows in [start, end) is only recorded as done: the Ray store
      fails on an empty interval ("'NoneType' object has no attribute 'names'": an empty
      Ray dataset has no schema), where DuckDB loads nothing. That is every daily run for
      the HGNN view (stamped at the start of history) and every run for user_recent.
    - A view with a finite TTL is read by the Ray offline store but written by Feast's
      local engine: the Ray engine drops rows older than the TTL before *now* (wall clock),
      where the local engine keeps each entity's latest row up to ``end``, so a back-dated
      run (a backfill, a test world) would lose every profile, and a daily run the
      entities whose latest row is just past the TTL.
    """
    from feast import FeatureStore, utils

    start, end = utils.make_tzaware(start), utils.make_tzaware(end)
    ttl_store = None
    for view in views:
        fv = store.get_feature_view(view)
        if not _source_rows(fv, start, end):
            store.registry.apply_materialization(fv, store.project, start, end)
            continue
        target = store
        if fv.ttl is not None and fv.ttl.total_seconds() > 0:
            if ttl_store is None:
                config = store.config.model_copy()
                config.batch_engine_config = "local"
                config._batch_engine = None
                ttl_store = FeatureStore(config=config)
            target = ttl_store
        target.materialize(start_date=start, end_date=end, feature_views=[view])


def _source_rows(view, start, end) -> int:
    """Rows of ``view``'s parquet source stamped in [start, end)."""
    import duckdb

    from training.data.duck import sql_identifier, sql_literal

    path = sql_literal(str(Path(view.batch_source.path)))
    ts = sql_identifier(view.batch_source.timestamp_field)
    con = duckdb.connect()
    try:
        return con.execute(
            f"SELECT count(*) FROM read_parquet({path}) WHERE {ts} >= ? AND {ts} < ?",
            [start, end],
        ).fetchall()[0][0]
    finally:
        con.close()


def _materialize_one(repo_config, view: str, start: datetime, end: datetime) -> None:
    """Child process: one view's rows into the online store; no registry write."""
    from feast import FeatureStore, utils
    from tqdm import tqdm

    fs = FeatureStore(config=repo_config)
    print(f"{view}:", flush=True)
    fs._get_provider().materialize_single_feature_view(
        config=fs.config,
        feature_view=fs.get_feature_view(view),
        start_date=utils.make_tzaware(start),
        end_date=utils.make_tzaware(end),
        registry=fs.registry,
        project=fs.project,
        tqdm_builder=lambda n: tqdm(total=n, ncols=100),
    )


def _source_bytes(view) -> int:
    try:
        path = Path(view.batch_source.path)
        files = [path] if path.is_file() else list(path.glob("*.parquet"))
        return sum(p.stat().st_size for p in files)
    except (AttributeError, OSError, TypeError):
        return 0


def drop_projects(workdir: str | Path, cfg: FeatureStoreConfig, keep: set[str]) -> list[str]:
    """Remove the online rows and registry entries of our projects not in ``keep`` (older
    generations no kept artifact version reads). Returns the projects dropped."""
    store = open_store(workdir, cfg, DEFAULT_PROJECT)
    dropped = []
    with online_errors(store):
        for project in store.list_projects():
            name = project.name
            if name in keep or not name.startswith(f"{DEFAULT_PROJECT}_"):
                continue
            old = open_store(workdir, cfg, name)
            # update_infra with everything to delete drops this project's tables (SQLite)
            # or keys (Redis) only; teardown_infra would remove the whole SQLite file.
            old._get_provider().update_infra(
                name,
                tables_to_delete=old.list_feature_views(),
                tables_to_keep=[],
                entities_to_delete=[],
                entities_to_keep=[],
                partial=True,
            )
            old.registry.delete_project(name, commit=True)
            dropped.append(name)
    return dropped


def check_sources(workdir: str | Path) -> None:
    """Every feature table has at least one file, or one clear error names the gap."""
    root = features_dir(workdir)
    missing = [t for t in TABLES if not any((root / t).glob("*.parquet"))]
    if missing:
        raise AudiorecError(
            f"feature source files missing under {root}: {', '.join(missing)} "
            "(run the feature jobs first: audiorec features --data DIR --workdir W ...)"
        )

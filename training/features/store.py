"""The Feast store of a work directory: configure, apply the repo, materialize, open.

The repository's declarations (``feature_repo/``) are the only definitions: ``apply_repo``
loads them exactly as ``feast apply`` does (with ``AUDIOREC_WORKDIR`` pointing at the work
directory) and applies them in-process, which skips the CLI's ~5 s start-up. The online
store is SQLite unless ``FeatureStoreConfig.online`` says Redis.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

import yaml

from audiorec.errors import AudiorecError
from audiorec.secrets import redact, redis_address
from training.features.config import FeatureStoreConfig
from training.features.layout import TABLES, current_generation, features_dir

REPO_DIR = Path(__file__).resolve().parents[2] / "feature_repo"
REPO_MODULES = ("entities", "data_sources", "feature_views", "feature_services")
DEFAULT_PROJECT = "audiorec"
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


def project_for(generation: str | None) -> str:
    """The Feast project (online namespace) of one generation of the feature tables.

    Each rebuild of the feature tables (a new HGNN, new data) is loaded into a project of
    its own, so the online rows a served model reads are never overwritten by a run that
    has not published yet: the model and its online features switch together when
    ``current`` moves (the manifest names the project), whatever crashes in between.
    """
    return DEFAULT_PROJECT if generation is None else f"{DEFAULT_PROJECT}_{generation[:16]}"


def current_project(workdir: str | Path) -> str:
    """The project of the feature tables now in the work directory."""
    return project_for(current_generation(workdir))


def repo_config(workdir: str | Path, cfg: FeatureStoreConfig = FeatureStoreConfig(),
                project: str | None = None):
    """feature_repo/feature_store.yaml with ``${AUDIOREC_WORKDIR}`` set to ``workdir``,
    the online store chosen by ``cfg``, and ``project`` (default: the current feature
    tables' project, :func:`current_project`)."""
    import warnings

    from feast.repo_config import RepoConfig

    # After feast's import (it installs its own warning filters first): ibis inside the
    # DuckDB offline store calls a method DuckDB 2.0 deprecates, once per query.
    warnings.filterwarnings("ignore", message=".*fetch_arrow_table", category=DeprecationWarning)
    workdir = Path(workdir).resolve()
    # Substituted into the parsed values, never into the YAML text: a '#', ':' or newline
    # in the path must not change the document's structure.
    raw = _substitute(yaml.safe_load((REPO_DIR / "feature_store.yaml").read_text()),
                      "${AUDIOREC_WORKDIR}", str(workdir))
    raw["project"] = project or current_project(workdir)
    if cfg.online == "redis":
        raw["online_store"] = {"type": "redis", "connection_string": cfg.redis}
    (workdir / "feast").mkdir(parents=True, exist_ok=True)
    return RepoConfig(repo_path=REPO_DIR, **raw)


def _substitute(node, placeholder: str, value: str):
    if isinstance(node, dict):
        return {k: _substitute(v, placeholder, value) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, placeholder, value) for v in node]
    return node.replace(placeholder, value) if isinstance(node, str) else node


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
                    value is o for o in objects):
                objects.append(value)
    return objects


def open_store(workdir: str | Path, cfg: FeatureStoreConfig = FeatureStoreConfig(),
               project: str | None = None):
    from feast import FeatureStore

    return FeatureStore(config=repo_config(workdir, cfg, project))


def apply_repo(workdir: str | Path, cfg: FeatureStoreConfig = FeatureStoreConfig(),
               project: str | None = None):
    """``feast apply`` in-process; returns the open store."""
    check_sources(workdir)
    store = open_store(workdir, cfg, project)
    with online_errors(store):
        store.apply(load_repo_objects(workdir))
    return store


def materialize(store, end: datetime, start: datetime | None = None) -> None:
    """Load the latest feature values up to ``end`` into the online store: incremental
    (from the last materialization) unless ``start`` is given."""
    from audiorec.failpoints import failpoint

    with online_errors(store):
        if start is None:
            store.materialize_incremental(end_date=end)
            return
        # One view at a time: a crash in between leaves views from two runs, which the
        # materialization marker (training/features/refresh.py) is there to catch.
        for i, view in enumerate(sorted(v.name for v in store.list_feature_views())):
            store.materialize(start_date=start, end_date=end, feature_views=[view])
            if i == 0:
                failpoint("mid-materialize")


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
            old._get_provider().update_infra(name, tables_to_delete=old.list_feature_views(),
                                             tables_to_keep=[], entities_to_delete=[],
                                             entities_to_keep=[], partial=True)
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
            "(run the feature jobs first: audiorec features --data DIR --workdir W ...)")


def feature_service(store, name: str):
    """The named feature service, or one clear error listing the known ones."""
    from feast.errors import FeatureServiceNotFoundException

    try:
        # allow_cache: without it every call re-reads the registry file (~1.3 ms, and 6 ms
        # per online read end to end; see BENCHMARKS.md)
        return store.get_feature_service(name, allow_cache=True)
    except FeatureServiceNotFoundException:
        known = sorted(s.name for s in store.list_feature_services())
        raise AudiorecError(f"unknown feature service {name!r}; known: "
                            f"{', '.join(known) or 'none (run apply first)'}") from None


@contextmanager
def online_errors(store) -> Iterator[None]:
    """Turn an unreachable Redis online store into one readable error."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - narrowed below
        online = store.config.online_store
        if getattr(online, "type", None) == "redis" and _is_connection_error(exc):
            # host:port only: the connection string's options may hold a password
            raise AudiorecError(f"Redis online store at "
                                f"{redis_address(online.connection_string)} is unreachable "
                                f"({redact(_first_line(exc))})") from None
        raise


def _is_connection_error(exc: BaseException) -> bool:
    import redis

    while exc is not None:
        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                            ConnectionError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _first_line(exc: BaseException) -> str:
    return re.sub(r"\s+", " ", str(exc)).strip()[:200]

"""The versioned artifact directory that training publishes and serving loads.

Layout under ``<workdir>/artifacts/``::

    current                 the published version's name (replaced atomically, last)
    <version>/manifest.json what the version is (:class:`Manifest`), with file checksums
    <version>/user_tower/   SavedModel, signature ``serving_default`` (raw user features)
    <version>/user_tower.onnx  the same tower for ONNX Runtime (checked equal at publish)
    <version>/items.parquet item_id, item_type, title, language, genre, vector
    <version>/index/<type>/ one HNSW index per item type (ids = the label -> item id map)
    <version>/popularity.parquet  fallback lists: scope global|country|language, key, ...
    <version>/consumed.parquet    user_id, item_id streamed before the cut (filtering)
    <version>/window.parquet      user_id, item_id, weak: the 90-day window at the cut
    <version>/lookup/       both of the above as per-user arrays a server maps
                            (audiorec/lookup.py; absent in older versions)

A version is written under a hidden temporary name, renamed into place when complete,
and only then does ``current`` move to it; an interruption at any point leaves
``current`` on the previous, complete version. :func:`read_manifest` refuses a directory
whose manifest, files or checksums do not match.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict

from audiorec import manifest as base
from audiorec.errors import ContractError
from audiorec.failpoints import failpoint
from audiorec.publish import remove_dead_staging, staged_directory, write_atomic
from audiorec.tower_inputs import InputSpec

ONNX_FILE = "user_tower.onnx"
# the served item vectors, (items, dim) float32 in items.parquet's row order, as a file a
# server maps instead of decoding items.parquet's vector column (versions published
# before it existed have only the column)
VECTORS_FILE = "item_vectors.npy"


class IndexInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    count: int
    method: Literal["hnsw", "ivf", "routed"] = "hnsw"  # versions before the IVF index: hnsw
    # hnsw: the graph's degree and build breadth; ef, the query breadth
    M: int | None = None
    ef_construction: int | None = None
    ef: int | None = None
    # ivf: cells (0: an exact flat scan) and the cells a query scans
    lists: int | None = None
    nprobe: int | None = None
    # routed: the routes learned from real user queries, in front of the ivf fields' lists;
    # routes that missed the recall target on the tuning users are not kept (method ivf),
    # and their recall is recorded here
    routes: int | None = None
    routes_recall_at_10: float | None = None
    # the query breadth (ef or nprobe) is raised from the configured one until real user
    # queries reach this recall@10 against exact search (target 0.995: headroom over 0.99
    # for users unlike the tuning ones)
    recall_at_10: float


class Manifest(base.ManifestBase):
    KIND = "audiorec.artifact"
    WHAT = "artifact version"
    version: str
    created_at: str
    git_sha: str
    data: dict[str, Any]  # dataset path, first/last event, cut, training window
    feature_services: dict[str, str]  # {"user": "user_tower", "item": "item_tower"}
    user_features: list[InputSpec]  # the exported signature's inputs, in service order
    item_features: list[InputSpec]
    dim: int
    metric: str = "ip"  # inner product on unit vectors (cosine)
    indexes: dict[str, IndexInfo]  # per item type
    # the item types served, the focus first (versions before types were data: these two)
    item_types: list[str] = ["audiobook", "podcast"]
    model: dict[str, Any]  # TwoTowerConfig + which inputs each tower ignores
    upstream: dict[str, Any]  # hgnn / text embedding versions the features came from
    metrics: dict[str, Any]  # training: epochs, seconds, validation recall
    libraries: dict[str, Any]


def artifacts_root(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / "artifacts"


def current_version(workdir: str | Path) -> str | None:
    """The name ``current`` points at; None when there is none (or it is empty/garbled:
    then a server starts on the newest version that loads)."""
    pointer = artifacts_root(workdir) / "current"
    try:
        name = pointer.read_text(errors="replace").strip()
    except (FileNotFoundError, IsADirectoryError):
        return None
    return name if _VERSION.match(name) else None


_VERSION = re.compile(r"^(?!current$)[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def list_versions(workdir: str | Path) -> list[str]:
    """Published version names (complete directories), oldest first (by the manifest's
    creation time, then name)."""
    root = artifacts_root(workdir)
    if not root.is_dir():
        return []

    def created(name: str) -> str:
        try:
            return str(json.loads((root / name / "manifest.json").read_text())["created_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    names = [
        p.name for p in root.iterdir() if _VERSION.match(p.name) and (p / "manifest.json").is_file()
    ]
    return sorted(names, key=lambda n: (created(n), n))


def rollback(workdir: str | Path, version: str | None = None) -> tuple[str | None, str]:
    """Point ``current`` at ``version`` (default: the newest version older than
    ``current`` whose manifest and files check out). Returns (previous, new)."""
    previous = current_version(workdir)
    versions = list_versions(workdir)
    if version is None:
        older = versions[: versions.index(previous)] if previous in versions else versions
        for candidate in reversed(older):
            try:
                read_manifest(artifacts_root(workdir) / candidate)
            except ContractError:
                continue
            version = candidate
            break
        if version is None:
            raise ContractError(
                f"no intact version older than {previous} under "
                f"{artifacts_root(workdir)} to roll back to "
                f"(versions: {', '.join(versions) or 'none'})"
            )
    elif version not in versions:
        raise ContractError(
            f"no artifact version {version!r} under {artifacts_root(workdir)}"
            f" (versions: {', '.join(versions) or 'none'})"
        )
    read_manifest(artifacts_root(workdir) / version)
    set_current(workdir, version)
    return previous, version


def feature_project(manifest: Manifest) -> str:
    """The Feast project a version's user features are read from (versions published
    before projects were versioned read the default one)."""
    return str(manifest.feature_services.get("project") or "audiorec")


def served_projects(workdir: str | Path) -> set[str]:
    """The Feast projects that the kept versions read."""
    out = set()
    for name in list_versions(workdir):
        try:
            out.add(
                feature_project(read_manifest(artifacts_root(workdir) / name, verify_files=False))
            )
        except ContractError:
            continue
    return out


def prune_versions(workdir: str | Path, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` versions, never ``current``; dead staging
    directories go too. Returns the names removed."""
    if keep < 1:
        raise ValueError("keep must be >= 1")
    root = artifacts_root(workdir)
    removed = remove_dead_staging(root)
    current = current_version(workdir)
    for name in list_versions(workdir)[:-keep]:
        if name != current:
            shutil.rmtree(root / name, ignore_errors=True)
            removed.append(name)
    return removed


def current_dir(workdir: str | Path) -> Path:
    version = current_version(workdir)
    if version is None:
        raise ContractError(
            f"no published artifact under {artifacts_root(workdir)} "
            "(run: audiorec pipeline --data DIR --workdir W)"
        )
    return artifacts_root(workdir) / version


def new_version_name(workdir: str | Path, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    base = now.strftime("v%Y%m%dT%H%M%SZ")
    name, i = base, 1
    while (artifacts_root(workdir) / name).exists():
        i += 1
        name = f"{base}-{i}"
    return name


def publish(
    workdir: str | Path,
    version: str,
    write: Callable[[Path], Manifest],
    check: Callable[[Path], object] | None = None,
) -> Path:
    """Build a version with ``write(staging_dir) -> Manifest`` (file checksums are filled
    in here), optionally ``check`` it by loading it as serving would, rename it into
    place, then point ``current`` at it. Any failure leaves ``current`` untouched."""
    root = artifacts_root(workdir)
    root.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(root)
    final = root / version
    if final.exists():
        raise ContractError(f"artifact version {version} already exists under {root}")
    with staged_directory(final) as tmp:
        base.write_manifest(tmp, write(tmp))
        read_manifest(tmp)
        if check is not None:
            check(tmp)
    failpoint("version-renamed")
    set_current(workdir, version)
    return final


def set_current(workdir: str | Path, version: str) -> None:
    """Point ``current`` at ``version`` (a complete directory) in one atomic rename."""
    root = artifacts_root(workdir)
    if not (root / version / "manifest.json").is_file():
        raise ContractError(
            f"cannot point current at {version}: {root / version} is not a "
            "complete artifact version"
        )
    write_atomic(root / "current", version + "\n")


def read_manifest(
    directory: str | Path, verify_files: bool = True, niced: bool = False
) -> Manifest:
    """The version's manifest (:func:`audiorec.manifest.read_manifest`: kind, format,
    checksums, ``niced`` or not), with one index per item type."""
    manifest = base.read_manifest(directory, Manifest, verify_files, niced)
    if sorted(manifest.indexes) != sorted(manifest.item_types):
        raise ContractError(
            f"{Path(directory) / base.FILE}: indexes for "
            f"{sorted(manifest.indexes)}, expected {manifest.item_types}"
        )
    return manifest


def check_user_features(manifest: Manifest, served: list[str]) -> None:
    """Refuse a version whose user tower was trained on other features than the feature
    service now serves (names and order)."""
    trained = [s.name for s in manifest.user_features]
    if trained != list(served):
        raise ContractError(
            f"artifact {manifest.version} was trained on user features {trained}, but the "
            f"feature service {manifest.feature_services.get('user')!r} serves {list(served)}"
        )

"""Writes one artifact version (layout: audiorec.artifact) from trained towers.

The user tower is exported, every catalogue item (audiobooks and podcasts, as of the
cut) is embedded by the item tower, one index per item type is built
(audiorec/item_index.py), the fallback and consumed lists are written, and the manifest
records what it all is. Before the version is published, :func:`verify_roundtrip`
reloads it exactly as serving does and checks that the reloaded tower reproduces the
trained one and the indexes return the exact nearest neighbours of a few items.
"""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audiorec.artifact import ONNX_FILE, VECTORS_FILE, IndexInfo, Manifest
from audiorec.errors import ContractError
from audiorec.featurestore import ITEM_SERVICE, USER_SERVICE
from audiorec.hnsw_index import exact_top_k, recall_at_k
from audiorec.item_index import AnyIndex, IndexConfig, build_index, tune, widen_routes
from audiorec.ivf_index import IVFIndex
from audiorec.lookup import lookup_of_version, write_lookup
from audiorec.routed_index import RoutedIndex
from training.data.arrow import vector_column
from training.data.duck import DatasetLike, connect_dataset
from training.release.lists import write_consumed, write_popularity, write_window
from training.release.onnx_export import check_onnx, export_onnx
from training.twotower.config import TwoTowerConfig
from training.twotower.examples import TowerData
from training.twotower.export import export_user_tower
from training.twotower.train import TrainedTowers


def git_sha() -> str:
    """The code's commit; "+dirty" when the working tree has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict:
    import faiss
    import feast
    import hnswlib  # noqa: F401
    import keras
    import keras_rs
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_rs": keras_rs.__version__,
        "feast": feast.__version__,
        "hnswlib": "0.8.0",
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
    }


def write_version(
    out: Path,
    *,
    version: str,
    towers: TrainedTowers,
    data: TowerData,
    data_dir: DatasetLike,
    cut: datetime,
    cfg: TwoTowerConfig,
    index_cfg: IndexConfig,
    upstream: dict,
    project: str,
    window_days: int = 90,
) -> Manifest:
    onnx_diff = _export_user_tower(out, towers, data)
    vectors = towers.item_vectors(data)
    _write_items(out / "items.parquet", data, data_dir, vectors)
    np.save(out / VECTORS_FILE, np.ascontiguousarray(vectors, dtype=np.float32))
    indexes = _write_indexes(out, towers, data, vectors, index_cfg)
    n_pop = write_popularity(data_dir, cut, out / "popularity.parquet")
    n_consumed = write_consumed(data_dir, cut, out / "consumed.parquet")
    n_window = write_window(data_dir, cut, window_days, out / "window.parquet")
    n_users = _write_lookup(out)
    best = towers.best
    return Manifest(
        version=version,
        created_at=datetime.now(timezone.utc).isoformat(),
        git_sha=git_sha(),
        data={
            "path": str(Path(data_dir).resolve()),
            **data.window,
            "popularity_rows": n_pop,
            "consumed_pairs": n_consumed,
            "window_days": window_days,
            "window_pairs": n_window,
            "lookup_users": n_users,
        },
        # the Feast project (online namespace) whose rows this version reads
        feature_services={"user": USER_SERVICE, "item": ITEM_SERVICE, "project": project},
        user_features=data.user_specs,
        item_features=data.item_specs,
        dim=int(vectors.shape[1]),
        indexes=indexes,
        item_types=data.types.to_json(),
        model={
            **cfg.model_dump(),
            "ignored_user_features": cfg.ignored_user_features(data.types),
            "ignored_item_features": cfg.ignored_item_features(),
            # the last vector coordinate is the popularity prior (prior.py), or absent
            "prior": towers.prior,
            # the user tower for ONNX Runtime and its largest difference from the SavedModel
            "onnx": {"path": ONNX_FILE, "max_abs_diff": onnx_diff},
        },
        upstream=upstream,
        metrics={
            "epochs": towers.history[-1]["epoch"],
            "best_epoch": towers.best_epoch,
            # epochs of the refit through the cut (0: the early-stopped towers are served)
            "refit_epochs": towers.refit_epochs,
            # the checkpoint's cut the towers continued from ("": from scratch); best
            # epoch 0 = its towers kept as they were
            "warm_from": towers.warm_from,
            "train_seconds": round(towers.seconds, 1),
            **{f"val_recall_at_10_{t}": best[f"val_recall_{t}"] for t in data.types},
            "history": towers.history,
        },
        libraries=library_versions(),
        files={},
    )


def _write_lookup(out: Path) -> int:
    """The per-user arrays a server maps instead of computing them at every load
    (audiorec/lookup.py); returns the number of users."""
    lookup = lookup_of_version(out)
    write_lookup(out, lookup)
    return len(lookup.users)


def _export_user_tower(out: Path, towers: TrainedTowers, data: TowerData) -> float:
    """The user tower as a SavedModel and for ONNX Runtime (serving's runtime), equal to
    the SavedModel on real training rows (missing values included) within 1e-5, or no
    version; returns their largest difference."""
    export_user_tower(
        towers.user_tower,
        data.user_specs,
        out / "user_tower",
        prior_coordinate=towers.prior is not None,
    )
    export_onnx(out / "user_tower", out / ONNX_FILE)
    check_rows = np.linspace(0, len(data) - 1, min(256, len(data))).astype(int)
    return check_onnx(
        out / "user_tower", out / ONNX_FILE, {k: v[check_rows] for k, v in data.user.items()}
    )


def _write_items(path: Path, data: TowerData, data_dir: DatasetLike, vectors: np.ndarray) -> None:
    """items.parquet: each catalogue item's type, metadata and served vector."""
    con = connect_dataset(data_dir, ("items",))
    try:
        meta = con.sql("SELECT item_id, title, language, genre FROM items").arrow().read_all()
    finally:
        con.close()
    meta = meta.to_pandas().set_index("item_id").loc[data.item_ids]
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array(data.item_ids, pa.string()),
                "item_type": pa.array(data.item_types, pa.string()),
                "title": pa.array(meta["title"].to_numpy(), pa.string()),
                "language": pa.array(meta["language"].to_numpy(), pa.string()),
                "genre": pa.array(meta["genre"].to_numpy(), pa.string()),
                "vector": vector_column(vectors),
            }
        ),
        path,
    )


def _write_indexes(
    out: Path, towers: TrainedTowers, data: TowerData, vectors: np.ndarray, index_cfg: IndexConfig
) -> dict[str, IndexInfo]:
    """One index per item type under out/index/, its breadth tuned on real user queries."""
    queries = tuning_queries(towers, data)
    routed = index_cfg.method == "routed"
    learn = route_queries(towers, data, index_cfg.route_queries) if routed else None
    indexes = {}
    for kind in data.types:
        mask = data.item_types == kind
        index = build_index(
            vectors[mask],
            data.item_ids[mask],
            index_cfg,
            extra_coordinates=int(towers.prior is not None),
            queries=learn,
        )
        breadth, recall = (
            tune(index, vectors[mask], queries, index_cfg.target_recall)
            if mask.sum() > 10
            else (index.breadth, 1.0)
        )
        tried: dict = {}
        if (
            isinstance(index, RoutedIndex)
            and learn is not None
            and recall < index_cfg.target_recall
        ):
            # routes that miss the target on users they never saw: wider lists, else the
            # inner lists alone (their breadth already tuned)
            routes = index.routes
            index, recall, routed_recall = widen_routes(
                index, vectors[mask], learn, queries, index_cfg
            )
            if not isinstance(index, RoutedIndex):
                tried = {"routes": routes, "routes_recall_at_10": round(routed_recall, 4)}
        index.save(out / "index" / kind)
        indexes[kind] = IndexInfo(
            path=f"index/{kind}",
            count=int(mask.sum()),
            recall_at_10=round(recall, 4),
            **_index_fields(index, breadth, index_cfg),
            **tried,
        )
    return indexes


def _index_fields(index: AnyIndex, breadth: int, cfg: IndexConfig) -> dict:
    """The manifest's description of a built index: its method and parameters."""
    if isinstance(index, RoutedIndex):
        return {"method": "routed", "lists": index.lists, "nprobe": breadth, "routes": index.routes}
    if isinstance(index, IVFIndex):
        return {"method": "ivf", "lists": index.lists, "nprobe": breadth}
    return {"method": "hnsw", "M": cfg.M, "ef_construction": cfg.ef_construction, "ef": breadth}


def tuning_queries(towers: TrainedTowers, data: TowerData, n: int = 1000) -> np.ndarray:
    """The queries an index's breadth is tuned and checked on: ``n`` real user vectors
    (validation examples, else training ones), evenly spread."""
    return towers.user_vectors({k: v[_tuning_rows(data, n)] for k, v in data.user.items()})


def _tuning_rows(data: TowerData, n: int) -> np.ndarray:
    rows = np.flatnonzero(data.scored) if data.scored.any() else np.arange(len(data))
    return rows[np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int)]


def route_queries(towers: TrainedTowers, data: TowerData, n: int, tuning: int = 1000) -> np.ndarray:
    """The real user vectors a routed index learns from: up to ``n`` users, each at one
    training example (a seeded draw), none of them a user of the tuning queries (the
    recall those measure is then a held-out one)."""
    held = np.unique(data.user_ids[_tuning_rows(data, tuning)])
    rows = np.flatnonzero(~data.validation)
    # a draw of twice what is needed, then one example per user, in drawn order
    rows = np.random.default_rng(0).permutation(rows)[: 2 * n]
    rows = rows[~np.isin(data.user_ids[rows], held)]
    _, first = np.unique(data.user_ids[rows], return_index=True)
    rows = rows[np.sort(first)][:n]
    return towers.user_vectors({k: v[rows] for k, v in data.user.items()})


def verify_roundtrip(
    directory: Path, towers: TrainedTowers, data: TowerData, sample: int = 64
) -> None:
    """Reload the version as serving does; the tower must reproduce the trained one on
    ``sample`` training users, and each reloaded index must reach, on the tuning queries,
    the recall@10 against exact search that the manifest records for it."""
    from serving.artifact import Artifact

    art = Artifact.load(directory)
    rows = np.linspace(0, len(data) - 1, min(sample, len(data))).astype(int)
    inputs = {k: v[rows] for k, v in data.user.items()}
    expected = towers.user_vectors(inputs)
    got = art.tower(inputs)
    if not np.allclose(expected, got, atol=1e-5):
        raise ContractError(
            f"{directory}: the exported user tower differs from the trained "
            f"one by up to {np.abs(expected - got).max():.2e}"
        )
    queries = tuning_queries(towers, data)
    for kind, index in art.indexes.items():
        vectors = art.vectors[art.label_rows[kind]]
        if len(vectors) <= 10:
            continue
        recall = recall_at_k(index.search(queries, 10)[0], exact_top_k(vectors, queries, 10))
        published = art.manifest.indexes[kind].recall_at_10
        if recall < published - 0.002:
            raise ContractError(
                f"{directory}: the reloaded {kind} index reaches recall@10 {recall:.4f} on "
                f"the tuning queries, the manifest says {published:.4f}"
            )

"""The HGNN step: graph -> train -> embeddings of every item -> a self-describing,
atomically published directory.

Output directory::

    embeddings.parquet   item_id, item_type, embedding (list<float32>), model_version
    model.pt             state_dict (load with weights_only=True)
    manifest.json        version, dims, relations, configs, graph stats, metrics, versions
    graph_stats.json     per-relation edge counts and degree statistics
    training_curve.png
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from audiorec.errors import AudiorecError
from audiorec.manifest import ManifestBase, read_manifest, write_manifest
from audiorec.publish import staged_directory
from training.data.dataset import Dataset
from training.data.duck import DatasetLike
from training.data.embeddings import read_item_embeddings, write_item_embeddings
from training.engine import Engine
from training.graph.colisten import CoListenGraph, GraphConfig, build_colisten_graph
from training.hgnn.config import HGNNConfig
from training.hgnn.fit import train_and_embed
from training.hgnn.model import HGNN
from training.hgnn.train import plot_curve


class HGNNManifest(ManifestBase):
    """What an HGNN run is: enough to rebuild the model (dims, relations) and to judge it."""

    KIND = "audiorec.hgnn"
    WHAT = "HGNN run"
    FORMAT_VERSION = 2  # 2: any item types (one self transform per type)
    version: str
    item_types: list[str]  # node type order: the model's self transforms follow it
    cut: str
    in_dim: int
    hidden_dim: int
    out_dim: int
    relations: list[str]
    text_embeddings: str
    graph_config: dict
    hgnn_config: dict
    graph: dict  # graph_stats (also in graph_stats.json)
    items: int
    metrics: dict
    best_epoch: int
    epochs_run: int
    history: list[dict]
    train_seconds: float
    graph_seconds: float
    versions: dict[str, str]


@dataclass
class HGNNRun:
    out: Path
    version: str
    manifest: HGNNManifest

    def summary(self) -> str:
        m = self.manifest
        g = m.graph
        rel = ", ".join(f"{r} {v['edges']:,}" for r, v in g["relations"].items())
        isolated = " and ".join(f"{n:,} {t} items" for t, n in g["isolated"].items())
        degrees = "; ".join(
            f"{r} degree mean {v['degree_mean']}, median {v['degree_median']:.0f}, "
            f"p99 {v['degree_p99']:.0f}, max {v['degree_max']}"
            for r, v in g["relations"].items()
        )
        auc = m.metrics.get("val_auc", float("nan"))
        return (
            f"HGNN {self.version}: graph {rel} edges ({isolated} isolated; {degrees}); "
            f"best epoch {m.best_epoch} of {m.epochs_run}, held-out AUC {auc:.3f}; "
            f"{m.train_seconds:.0f}s; embeddings of {m.items:,} items -> {self.out}"
        )


def node_features(graph: CoListenGraph, text_path: str | Path) -> torch.Tensor:
    text = read_item_embeddings(text_path)
    pos = {k: i for i, k in enumerate(text.item_id)}
    idx = np.array([pos.get(k, -1) for k in graph.item_id])
    if (idx < 0).any():
        raise AudiorecError(
            f"text-embedding table {text_path} lacks {int((idx < 0).sum())} "
            f"catalogue item(s), e.g. {list(graph.item_id[idx < 0][:3])}"
        )
    return torch.from_numpy(text.vectors[idx])


def run_hgnn(
    data: DatasetLike,
    text_embeddings: str | Path,
    out: str | Path,
    cut: datetime,
    graph_cfg: GraphConfig = GraphConfig(),
    cfg: HGNNConfig = HGNNConfig(),
    progress: bool = True,
    engine: Engine | None = None,
) -> HGNNRun:
    """Build the graph of the window before ``cut``, train, embed all items, publish (the
    graph over user partitions and the training data-parallel on ``engine``)."""
    out = Path(out)
    t0 = time.perf_counter()
    graph = build_colisten_graph(Dataset.of(data), cut, graph_cfg, engine)
    t_graph = time.perf_counter() - t0
    features = node_features(graph, text_embeddings)
    result, z = train_and_embed(graph, features, cfg, progress, engine)

    digest = hashlib.sha1(
        json.dumps([graph_cfg.model_dump(mode="json"), cfg.model_dump(mode="json")]).encode()
    ).hexdigest()[:8]
    version = f"hgnn-{cut:%Y%m%d}-{digest}"
    manifest = HGNNManifest(
        version=version,
        item_types=graph.types.to_json(),
        cut=cut.isoformat(),
        in_dim=int(features.shape[1]),
        hidden_dim=cfg.hidden_dim,
        out_dim=cfg.out_dim,
        relations=sorted(result.model.relations),  # the message relations
        text_embeddings=read_item_embeddings(text_embeddings).version,
        graph_config=graph_cfg.model_dump(mode="json"),
        hgnn_config=cfg.model_dump(mode="json"),
        graph=graph.stats,
        items=int(graph.n),
        metrics=result.best,
        best_epoch=result.best_epoch,
        epochs_run=len(result.history),
        history=result.history,
        train_seconds=round(result.seconds, 1),
        graph_seconds=round(t_graph, 1),
        versions={"torch": torch.__version__, "torch_geometric": _pyg_version()},
    )
    with staged_directory(out, link=True) as tmp:
        names = np.asarray(graph.types.names, dtype=object)
        write_item_embeddings(
            tmp / "embeddings.parquet", graph.item_id, z, version, item_type=names[graph.node_type]
        )
        torch.save(result.model.state_dict(), tmp / "model.pt")
        (tmp / "graph_stats.json").write_text(json.dumps(graph.stats, indent=2))
        plot_curve(
            result.history,
            tmp / "training_curve.png",
            f"HGNN {version} ({'balanced' if cfg.balanced else 'unbalanced'} sampler)",
        )
        manifest = write_manifest(tmp, manifest)
    return HGNNRun(out, version, manifest)


def load_hgnn(directory: str | Path) -> tuple[HGNN, HGNNManifest]:
    """The model of a published HGNN directory, checked against its manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory, HGNNManifest)
    model = HGNN(
        manifest.in_dim,
        manifest.hidden_dim,
        manifest.out_dim,
        tuple(manifest.relations),
        len(manifest.item_types),
    )
    state = torch.load(directory / "model.pt", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise AudiorecError(
            f"{directory}/model.pt does not match its manifest: {str(exc).splitlines()[0]}"
        ) from None
    model.eval()
    return model, manifest


def _pyg_version() -> str:
    import torch_geometric

    return torch_geometric.__version__

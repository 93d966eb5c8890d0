"""What every step of a run reads: the pipeline's typed settings and a frozen run context.

:class:`PipelineConfig` is the whole of a daily run's settings (each section the config of
its step); :class:`RunContext` is one run's fixed inputs (the validated dataset, the work
directory, the cut, the effective config, the engine) and its two outputs to the person
watching: ``say`` (a line of progress) and ``settings`` (the settings a step received,
printed and recorded in the run's report).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

from audiorec.config import StrictConfig
from audiorec.featurestore import FeatureStoreConfig
from audiorec.item_index import IndexConfig
from training.data import Dataset
from training.engine import Engine, EngineConfig
from training.features.config import FeatureJobConfig
from training.graph.colisten import GraphConfig
from training.hgnn.config import HGNNConfig
from training.presets import LARGE_FROM_EVENTS
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
    # Titles a version can take in after it is published (RecordItems, serving/live.py):
    # the version carries the text encoder, the HGNN's self path and the item tower for
    # ONNX Runtime (training/release/live.py); 0: none, RecordItems refused
    live_items: int = Field(10_000, ge=0, le=1_000_000)


@dataclass(frozen=True)
class RunContext:
    data: Dataset
    workdir: Path  # resolved
    cut: datetime
    cfg: PipelineConfig  # effective: the preset and the engine's Feast options applied
    engine: Engine
    progress: bool = False
    say: Callable[..., Any] = lambda *a, **k: None
    settings: Callable[[str, str], None] = lambda step, line: None  # (step, line)
    # the item text embeddings, where they are not the work directory's own (the
    # evaluation's variants share one)
    text_file: Path | None = None

    @property
    def text(self) -> Path:
        """The item text embeddings (the text step's output)."""
        return self.text_file or self.workdir / "text" / "embeddings.parquet"

    @property
    def hgnn_dir(self) -> Path:
        return self.workdir / "hgnn"

    @property
    def hgnn(self) -> Path:
        """The HGNN item embeddings (the HGNN step's output)."""
        return self.hgnn_dir / "embeddings.parquet"

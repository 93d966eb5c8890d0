"""The evaluation's settings and results: what ``audiorec evaluate`` is asked to run
(:class:`EvaluationConfig`, the ablations it knows) and what it returns (:class:`Results`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pydantic import Field, field_validator

from audiorec.config import StrictConfig
from audiorec.vocabulary import EVENT_TYPES, STREAM
from training.data.protocol import Protocol
from training.evaluation.peers import PEERS, PeerName, event_weights_valid
from training.pipeline import PipelineConfig

ABLATIONS: dict[str, dict[str, Any]] = {
    "no balanced sampler": {"hgnn": {"balanced": False}},
    "no weak signals": {"two_tower": {"use_weak_signals": False}},
    # graph ablations name relations by type codes (itemtypes.py); on a dataset without
    # those types they are skipped
    "no PP edges": {"drop_relations": ("PP",)},
    "no AA edges": {"drop_relations": ("AA",)},
    "AA-only graph": {"only_relations": ("AA",)},
    "PP-only graph": {"only_relations": ("PP",)},
    # the levers beyond the paper, each switched off alone, then all of them
    "no popularity prior": {"two_tower": {"popularity_prior": False}},
    "no item-id embeddings": {"two_tower": {"item_id_embedding_dim": 0}},
    # the HGNN's negatives drawn from the whole catalogue, as the paper draws them
    "untyped HGNN negatives": {"hgnn": {"typed_negatives": False}},
    "as in the paper (none of them)": {
        "two_tower": {"popularity_prior": False, "item_id_embedding_dim": 0},
        "hgnn": {"typed_negatives": False},
    },
    # levers that did not win on the validation windows: rows that add them, so their
    # effect stays measured; "+" rows are not the served model. The HGNN trained until its
    # held-out edges stop improving (the Ciao preset stops after ~4 of 20 epochs, on the
    # noise of 2,000 held-out edges), and mixed sampled negatives in the towers
    "+ HGNN trained longer": {"hgnn": {"max_epochs": 40, "patience": 8, "val_edges": 10000}},
    "+ sampled negatives": {"two_tower": {"sampled_negatives": 256}},
}


class EvaluationConfig(StrictConfig):
    holdout_days: int = Field(14, ge=1)
    # instead of holdout_days: this share of the data's whole time span (e.g. 0.2 = the last
    # 20% of days), for datasets spanning years
    holdout_share: float | None = Field(None, gt=0, lt=1)
    # instead of both: the hold-out starts at this date's midnight (UTC), e.g. the cut an
    # import filtered its catalogue at (audiorec ciao)
    holdout_from: date | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    ablation_seeds: int = Field(1, ge=1)  # the first N of ``seeds`` for each ablation
    # the first N of ``seeds`` also reseed the HGNN (and its feature store) under the main
    # HGNN and 2T-HGNN rows, so their spread holds the HGNN's noise too; 1: one HGNN
    hgnn_seeds: int = Field(1, ge=1)
    ablations: bool | tuple[str, ...] = True  # True: all of ABLATIONS; or a few by name
    popularity_days: int = Field(28, ge=1)
    history_days: int = Field(90, ge=1)  # the items LLM-KNN / HGNN average per user
    # The validation window (model selection) is the towers' validation slice, one window
    # for every row: pipeline.two_tower.validation_days just before the cut.
    selection_trials: int = Field(4, ge=1)  # settings tried per model on validation
    peers: tuple[PeerName, ...] = PEERS
    # each peer also as a row with the towers' popularity prior, chosen the same way on
    # the same slice (training/evaluation/prior_rows.py)
    prior_rows: bool = True
    # EASE's dense items x items model is fitted up to this many items (about 6 GiB of
    # float32 at 20,000); above it the row is skipped and the report says why
    ease_max_items: int = Field(20_000, ge=1)
    # what one event of each type weighs in the peers' matrix (summed per user and item)
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {t: 1.0 if t == STREAM else 0.5 for t in EVENT_TYPES}
    )
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    @field_validator("ablations")
    @classmethod
    def _known_ablations(cls, v):
        unknown = [a for a in v if a not in ABLATIONS] if isinstance(v, tuple) else []
        if unknown:
            raise ValueError(f"unknown ablations {unknown}; expected some of {list(ABLATIONS)}")
        return v

    @field_validator("event_weights")
    @classmethod
    def _known_events(cls, v):
        return event_weights_valid(v)

    def chosen_ablations(self) -> dict[str, dict]:
        if isinstance(self.ablations, bool):
            return ABLATIONS if self.ablations else {}
        return {a: ABLATIONS[a] for a in self.ablations}


@dataclass
class Results:
    protocol: Protocol
    # model -> item type -> group -> one metrics dict per seed
    rows: dict[str, dict[str, dict[str, list[dict]]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    seeding: str = ""  # what the seeds of the rows vary, for the report
    # model -> {"setting": chosen, "trials": [...with "validation"], "window": str}
    chosen: dict[str, dict] = field(default_factory=dict)
    validation: str = ""  # the validation window's summary
    pipeline: dict = field(default_factory=dict)  # the PipelineConfig the rows trained with
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it has no row
    # model -> (item ids, the item vectors the row scored with: its first seed's); for
    # the check that the 2T-HGNN row's vectors are the published ones
    vectors: dict[str, tuple] = field(default_factory=dict)

    def add(self, model: str, kind: str, group: str, m: dict) -> None:
        self.rows.setdefault(model, {}).setdefault(kind, {}).setdefault(group, []).append(m)

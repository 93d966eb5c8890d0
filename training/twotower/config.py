"""Settings of the two-tower model and its training (defaults: the paper's where it says)."""

from __future__ import annotations

from pydantic import Field, field_validator

from audiorec.config import StrictConfig
from audiorec.itemtypes import ItemTypes

HGNN_ITEM_FEATURES = ("hgnn_embedding",)
# Item-service features the item tower never reads: a version tag, and popularity (kept
# in the service for the fallback lists; as a tower input it trades coverage for hits).
ITEM_UNUSED = ("hgnn_version", "streams_90d", "listeners_90d")


class TwoTowerConfig(StrictConfig):
    layers: tuple[int, ...] = (512, 256, 128)  # the last one is the output (L2-normalised)
    string_embedding_dim: int = 8  # per categorical input (country, genre, ...)
    temperature: float = 0.05  # softmax over cosine similarities
    logq_correction: bool = True  # in-batch negatives weighted by item frequency
    use_hgnn: bool = True  # False: the "2T alone" baseline
    use_weak_signals: bool = True  # False: weak-signal features dropped
    weak_positives: bool = False  # also train on follow/preview/intent_to_pay
    # positives of each other item type per positive of the focus type, at most
    other_positive_share: float = 2.0
    # mixed negative sampling (Yang et al., WWW 2020): besides the batch's own items, this
    # many items of the focus type drawn uniformly per step are every user's negatives, so
    # titles seldom or never streamed (never in a batch) are scored too; 0 = in-batch only
    sampled_negatives: int = Field(0, ge=0)
    batch_size: int = 256
    learning_rate: float = 1e-3
    max_epochs: int = 10
    patience: int = 2  # epochs without a better validation recall
    # item-id embeddings (a hybrid): items with at least this many training positives get
    # their own embedding row in the item tower, the rest share one, so new items are
    # still placed by their content and HGNN inputs; 0 = off (the paper's content-only tower)
    item_id_embedding_dim: int = 0
    item_id_min_positives: int = 3
    # the popularity prior (training/twotower/prior.py): beta per item type chosen on the
    # validation slice among these (0: none); False leaves the vectors as the towers make them
    popularity_prior: bool = True
    prior_betas: tuple[float, ...] = (
        0.0,
        0.02,
        0.05,
        0.1,
        0.2,
        0.3,
        0.5,
        0.75,
        1.0,
        1.5,
        2.0,
        4.0,
        8.0,
    )
    # how fast a listener's weight in the prior halves (days since their last stream);
    # chosen with beta. 1e6: no decay (all-time listeners)
    prior_half_lives: tuple[float, ...] = (7.0, 28.0, 90.0, 365.0, 1e6)
    # validation users per group the prior is chosen on (a seeded sample; HR@10 over
    # 2,000 users is within ~1 point)
    prior_max_users: int = Field(2000, ge=1)
    train_days: int | None = None  # examples from the days before the cut (None: all)
    validation_days: int = 7  # the later-in-time slice for early stopping
    validation_max_examples: int = 5000
    # continue the last published run's towers when nothing that shapes them changed
    # (training/twotower/warm.py): warm_epochs on the examples they never trained on plus
    # a seeded replay_share of the older ones; otherwise (and on the first run) from scratch
    # after early stopping on the validation slice chose the epoch count, retrain the
    # towers from scratch on every example through the cut (the slice included) for that
    # many epochs: the served towers have seen the newest days, as a peer refitted
    # through the cut has (train.refit_two_tower). The prior is chosen before, on towers
    # that never saw the slice. Not with a warm start (it continues from the checkpoint).
    refit: bool = True
    warm_start: bool = False
    warm_epochs: int = Field(1, ge=1)
    replay_share: float = Field(0.2, ge=0.0, le=1.0)
    seed: int = 0

    def ignored_user_features(self, types: ItemTypes) -> tuple[str, ...]:
        """User-tower inputs switched off: those from the HGNN (the "2T alone" baseline),
        those from weak signals (the "no weak signals" ablation)."""
        ignored: set[str] = set()
        if not self.use_hgnn:
            ignored |= set(types.hgnn_user_features())
        if not self.use_weak_signals:
            ignored |= set(types.weak_user_features())
        return tuple(sorted(ignored))

    def ignored_item_features(self) -> tuple[str, ...]:
        return tuple(
            sorted(set(ITEM_UNUSED) | (set() if self.use_hgnn else set(HGNN_ITEM_FEATURES)))
        )

    @field_validator("prior_betas", "prior_half_lives")
    @classmethod
    def _candidates(cls, v: tuple[float, ...], info):
        low_ok = (lambda x: x >= 0) if info.field_name == "prior_betas" else (lambda x: x > 0)
        if not v or not all(low_ok(x) for x in v):
            raise ValueError(
                "needs at least one candidate, each "
                + (">= 0" if info.field_name == "prior_betas" else "> 0")
            )
        return v

    def describe(self) -> str:
        """The settings that bound tower training (its cost), in one line."""
        days = "all days" if self.train_days is None else f"the last {self.train_days} days"
        warm = (
            f"warm start ({self.warm_epochs} epoch(s), replay {self.replay_share:g})"
            if self.warm_start
            else "from scratch"
        )
        return (
            f"examples from {days}, validation {self.validation_days} days, up to "
            f"{self.max_epochs} epochs (patience {self.patience}, batch {self.batch_size}), "
            f"layers {list(self.layers)}, {warm}"
        )

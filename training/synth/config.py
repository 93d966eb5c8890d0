"""Typed configuration of the synthetic world, with the tiny / demo / large presets."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from audiorec.config import StrictConfig, merge, validated

Scale = Literal["tiny", "demo", "large"]


class WorldConfig(StrictConfig):
    """Everything that shapes a generated world. Defaults are the demo scale.

    Time runs in days from the world start (day 0) to ``days`` (the end date, exclusive).
    Audiobooks launch on ``audiobook_launch_day``; the last ``holdout_days`` are what the
    evaluation holds out, so ``days`` leaves a 90-day training window plus slack before it.
    """

    n_users: int = Field(50_000, ge=10)
    n_audiobooks: int = Field(2_000, ge=10)
    n_podcasts: int = Field(10_000, ge=10)
    n_topics: int = Field(24, ge=2, le=24)
    music_dim: int = Field(32, ge=4, le=512)

    end_date: date = date(2026, 11, 1)
    days: int = Field(150, ge=120)
    holdout_days: int = Field(14, ge=1)
    audiobook_launch_day: int = Field(30, ge=0)
    music_snapshot_every_days: int = Field(30, ge=1)

    # users
    taste_concentration: float = Field(1.5, gt=0)  # Dirichlet total mass: lower = peakier
    demographic_taste_weight: float = Field(0.6, ge=0, le=1)
    # Music vectors = a linear image of the planted topic taste + this much noise: at 0.25 the
    # taste is almost recoverable from music alone, which makes the 2T baseline strong.
    music_noise: float = Field(0.25, ge=0)
    new_user_share: float = Field(0.12, ge=0, le=1)  # signed up inside the window
    podcast_listener_share: float = Field(0.85, ge=0, le=1)
    adopter_share: float = Field(0.28, ge=0, le=1)  # users who ever touch an audiobook
    adopter_podcast_share: float = Field(0.93, ge=0, le=1)
    activity_sigma: float = Field(1.0, ge=0)
    audiobook_activity_sigma: float = Field(2.6, ge=0)
    english_weight: float = Field(0.25, ge=0)  # an English item vs one in the own language

    # items
    podcast_popularity_sigma: float = Field(1.8, ge=0)
    audiobook_popularity_sigma: float = Field(2.2, ge=0)
    launch_catalogue_share: float = Field(0.5, ge=0, le=1)  # audiobooks out on launch day
    new_podcast_share: float = Field(0.1, ge=0, le=1)
    genre_noise: float = Field(0.1, ge=0, le=1)
    description_words: int = Field(18, ge=4)

    # behaviour (means per user over the whole window)
    podcast_starts: float = Field(10.0, gt=0)
    podcast_streams_per_start: float = Field(5.5, ge=1)
    podcast_follow_rate: float = Field(0.25, ge=0, le=1)
    audiobook_exposures: float = Field(15.0, gt=0)
    audiobook_streams_per_start: float = Field(5.0, ge=1)
    audiobook_breadth_exponent: float = Field(0.4, ge=0, le=1)  # volume -> breadth vs depth
    follow_rate: float = Field(0.18, ge=0, le=1)
    preview_rate: float = Field(0.30, ge=0, le=1)
    intent_rate: float = Field(0.08, ge=0, le=1)
    # logit of turning an exposure into a stream start, and the weak signals' effects on it
    start_logit: float = -0.3
    follow_effect: float = 1.5
    preview_effect: float = 0.35
    intent_effect: float = 0.3
    # mean days from an exposure's weak signal to its first stream (exponential): how far
    # ahead a weak signal predicts; short lags make old, unstarted signals near-negatives
    weak_signal_lag_days: float = Field(2.0, gt=0)

    # a third item type (e.g. "course"): this share of the podcast catalogue carries that
    # type's name (and id prefix) instead, listened to as podcasts are; None: two types
    third_type: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,31}$")
    third_type_share: float = Field(0.25, gt=0, lt=1)

    # engineering
    chunk_users: int = Field(25_000, ge=100)  # users per event chunk (bounds memory)
    stats_pairs: int = Field(600, ge=10)  # pairs per side for the text-cosine fact

    @classmethod
    def for_scale(cls, scale: Scale, **overrides) -> "WorldConfig":
        """The preset of ``scale`` with ``overrides`` applied (unknown keys rejected)."""
        if scale not in SCALES:
            from audiorec.errors import AudiorecError

            raise AudiorecError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
        return validated(cls, merge(SCALES[scale], overrides))


SCALES: dict[str, dict] = {
    "tiny": dict(
        n_users=1_000,
        n_audiobooks=150,
        n_podcasts=600,
        n_topics=12,
        chunk_users=500,
        stats_pairs=300,
    ),
    "demo": dict(),
    "large": dict(
        n_users=1_000_000,
        n_audiobooks=50_000,
        n_podcasts=200_000,
        chunk_users=50_000,
        stats_pairs=1000,
    ),
}

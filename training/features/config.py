"""Typed configuration of the feature jobs and of the Feast store."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from audiorec.config import StrictConfig


class FeatureJobConfig(StrictConfig):
    """How the feature tables are computed."""

    window_days: int = Field(90, ge=1)        # the trailing window of the 90-day features
    profile_every_days: int = Field(7, ge=1)  # profile snapshot cadence (plus one at signup)
    user_buckets: int = Field(8, ge=1)        # user partitions processed one at a time
    # Snapshot dates a full rebuild computes: all (None) or the last N before `through`
    # (training reads only recent history; the windows still see the events before).
    history_days: int | None = Field(None, ge=1)


class FeatureStoreConfig(StrictConfig):
    """Which online store serves the features. Offline is always DuckDB."""

    online: Literal["sqlite", "redis"] = "sqlite"
    redis: str = "localhost:6379"  # Feast connection string: host:port[,db=0,password=...]

"""Typed configuration of the feature jobs (the store's: ``audiorec.featurestore``)."""

from __future__ import annotations

from pydantic import Field

from audiorec.config import StrictConfig


class FeatureJobConfig(StrictConfig):
    """How the feature tables are computed."""

    window_days: int = Field(90, ge=1)  # the trailing window of the 90-day features
    profile_every_days: int = Field(7, ge=1)  # profile snapshot cadence (plus one at signup)
    user_buckets: int = Field(8, ge=1)  # user partitions processed one at a time
    # Snapshot dates a full rebuild computes: all (None) or the last N before `through`
    # (training reads only recent history; the windows still see the events before).
    history_days: int | None = Field(None, ge=1)
    # processes loading feature views into the online store at once (Feast's write path
    # is Python, one core each); 1 keeps the load in this process
    materialize_processes: int = Field(1, ge=1, le=16)
    # DuckDB's memory for the jobs (it spills to the work directory past it); None keeps
    # DuckDB's default, 80% of RAM, whose buffer cache alone can fill the pipeline's budget
    memory_limit_gib: float | None = Field(None, gt=0)

    def describe(self) -> str:
        """The settings that bound the feature jobs and the load, in one line."""
        history = (
            "all snapshot dates"
            if self.history_days is None
            else (f"the last {self.history_days} snapshot days")
        )
        memory = (
            "DuckDB's default memory (80% of RAM)"
            if self.memory_limit_gib is None
            else f"DuckDB memory bound {self.memory_limit_gib:g} GiB"
        )
        return (
            f"{history} ({self.window_days}-day windows), {memory}, "
            f"{self.materialize_processes} materializing process(es)"
        )

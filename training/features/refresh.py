"""One call for the feature-store step of the daily pipeline: jobs, apply, materialize."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from training.features.config import FeatureJobConfig, FeatureStoreConfig
from training.features.jobs import FeatureRunReport, run_feature_jobs
from training.features.store import apply_repo, materialize
from training.features.windows import midnight


@dataclass
class RefreshReport:
    jobs: FeatureRunReport
    materialized_from: object
    materialized_to: object

    def summary(self) -> str:
        return (f"{self.jobs.summary()}\nfeast apply done; materialized "
                f"{self.materialized_from} .. {self.materialized_to} into the online store")


def refresh_features(data: str | Path, workdir: str | Path, hgnn: str | Path,
                     text: str | Path, *, through: date | None = None,
                     jobs: FeatureJobConfig = FeatureJobConfig(),
                     store: FeatureStoreConfig = FeatureStoreConfig()) -> RefreshReport:
    """Compute the feature tables up to ``through``, apply the repo, and materialize the
    new snapshot dates (all history on a full rebuild) into the online store."""
    report = run_feature_jobs(data, workdir, hgnn, text, through=through, cfg=jobs)
    fs = apply_repo(workdir, store)
    end = midnight(report.through) + timedelta(microseconds=1)
    if report.first is None or report.full_rebuild:
        # Everything from before the first snapshot: signups and older profile rows too.
        start = midnight(date(1970, 1, 2))
    else:
        start = midnight(report.first - timedelta(days=1))
    materialize(fs, end, start=start)
    return RefreshReport(report, start, end)

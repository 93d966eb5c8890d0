"""One call for the feature-store step of the daily pipeline: jobs, apply, materialize."""

from __future__ import annotations

import json
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
        if self.materialized_from is None:
            return f"{self.jobs.summary()}\nfeast apply done; the online store is up to date"
        return (f"{self.jobs.summary()}\nfeast apply done; materialized "
                f"{self.materialized_from} .. {self.materialized_to} into the online store")


def refresh_features(data: str | Path, workdir: str | Path, hgnn: str | Path,
                     text: str | Path, *, through: date | None = None,
                     jobs: FeatureJobConfig = FeatureJobConfig(),
                     store: FeatureStoreConfig = FeatureStoreConfig(),
                     progress: bool = False) -> RefreshReport:
    """Compute the feature tables up to ``through``, apply the repo, and materialize what
    the online store has not seen yet (everything after a full rebuild).

    Materialization progress is recorded per online store after it succeeds, so a run
    whose materialization failed (Redis down) catches up on the next run.
    """
    report = run_feature_jobs(data, workdir, hgnn, text, through=through, cfg=jobs,
                              progress=progress)
    fs = apply_repo(workdir, store)
    marker = Path(workdir).resolve() / "feast" / f"_materialized_{store.online}.json"
    done = None
    if marker.is_file() and not report.full_rebuild:
        done = date.fromisoformat(json.loads(marker.read_text())["through"])
    end = midnight(report.through) + timedelta(microseconds=1)
    if done is not None and done >= report.through:
        return RefreshReport(report, None, None)
    # From the origin after a rebuild (signups and older profile rows too), else from the
    # last materialized snapshot date (re-writing its rows is harmless).
    start = midnight(date(1970, 1, 2)) if done is None else midnight(done)
    materialize(fs, end, start=start)
    marker.write_text(json.dumps({"through": report.through.isoformat()}))
    return RefreshReport(report, start, end)

"""One call for the feature-store step of the daily pipeline: jobs, apply, materialize.

Each generation of the feature tables is loaded into its own Feast project (online
namespace, :func:`audiorec.featurestore.project_for`): a rebuild never touches the rows
the served model reads. Progress is a marker file per online store and project
(``feast/_materialized_<store>_<project>.json``): the generation, the HGNN version its
preference vectors come from, and the last snapshot date loaded. The marker is removed
before any materialization and written (atomically) only after one succeeded, so a crash
or an outage in between means "load again" on the next run, never "up to date".
:func:`check_online_hgnn` is what publishing (and serving) check against the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from audiorec.errors import AudiorecError
from audiorec.failpoints import failpoint
from audiorec.featurestore import FeatureStoreConfig, marker_path, online_lineage, project_for
from audiorec.publish import write_json
from training.data.duck import DatasetLike
from training.data.embeddings import read_item_embeddings
from training.engine import Engine
from training.features.config import FeatureJobConfig
from training.features.jobs import FeatureRunReport, run_feature_jobs
from training.features.store import apply_repo, materialize
from training.features.windows import midnight


@dataclass
class RefreshReport:
    jobs: FeatureRunReport
    materialized_from: object
    materialized_to: object
    project: str = ""
    online: bool = True  # False: the offline store only (nothing materialized)

    def summary(self) -> str:
        if not self.online:
            return f"{self.jobs.summary()}\nfeast apply done (offline only)"
        if self.materialized_from is None:
            return f"{self.jobs.summary()}\nfeast apply done; the online store is up to date"
        return (
            f"{self.jobs.summary()}\nfeast apply done; materialized "
            f"{self.materialized_from} .. {self.materialized_to} into the online store"
        )


def check_online_hgnn(
    workdir: str | Path, store: FeatureStoreConfig, project: str, hgnn_version: str
) -> None:
    """Refuse when the online store's preference vectors (in ``project``) are not from
    ``hgnn_version``, the HGNN the model was trained with: serving would feed the tower
    vectors from another embedding space."""
    lineage = online_lineage(workdir, store, project)
    if lineage is None:
        raise AudiorecError(
            f"the online store holds no complete materialization of "
            f"{project} (a run was interrupted while loading it); run the "
            "pipeline again to reload it"
        )
    if lineage["hgnn_version"] != hgnn_version:
        raise AudiorecError(
            f"the online store's {project} holds preference vectors from HGNN "
            f"{lineage['hgnn_version']}, but the model was trained with HGNN "
            f"{hgnn_version}; run the pipeline again to reload the store"
        )


def refresh_features(
    data: DatasetLike,
    workdir: str | Path,
    hgnn: str | Path,
    text: str | Path,
    *,
    through: date | None = None,
    jobs: FeatureJobConfig = FeatureJobConfig(),
    store: FeatureStoreConfig = FeatureStoreConfig(),
    progress: bool = False,
    engine: Engine | None = None,
    online: bool = True,
) -> RefreshReport:
    """Compute the feature tables up to ``through``, apply the repo, and materialize what
    the online store has not seen yet (everything after a full rebuild; ``online``
    False: nothing, for historical retrieval only).

    Materialization progress is recorded per online store after it succeeds, so a run
    whose materialization failed (Redis down) catches up on the next run.
    """
    report = run_feature_jobs(
        data, workdir, hgnn, text, through=through, cfg=jobs, progress=progress, engine=engine
    )
    hgnn_version = read_item_embeddings(hgnn).version
    failpoint("features-swapped")
    project = project_for(report.generation)
    fs = apply_repo(workdir, store, project)
    if not online:
        return RefreshReport(report, None, None, project, online=False)
    marker = marker_path(workdir, store, project)
    lineage = online_lineage(workdir, store, project)
    done = None
    if (
        lineage is not None
        and lineage["generation"] == report.generation
        and lineage["hgnn_version"] == hgnn_version
    ):
        done = date.fromisoformat(lineage["through"])
    end = midnight(report.through) + timedelta(microseconds=1)
    if done is not None and done >= report.through:
        return RefreshReport(report, None, None, project)
    # From the origin when the project was never fully loaded (a new generation, an
    # interrupted load), else from the last materialized snapshot date (re-writing its
    # rows is harmless).
    start = midnight(date(1970, 1, 2)) if done is None else midnight(done)
    marker.unlink(missing_ok=True)  # from here until it is rewritten, nothing is trusted
    # Feast's Ray compute engine spreads the load itself; our process pool is for DuckDB
    processes = 1 if store.offline == "ray" else jobs.materialize_processes
    materialize(fs, end, start=start, processes=processes)
    write_json(
        marker,
        {
            "store": store.label,
            "generation": report.generation,
            "hgnn_version": hgnn_version,
            "through": report.through.isoformat(),
        },
    )
    failpoint("after-materialize")
    return RefreshReport(report, start, end, project)

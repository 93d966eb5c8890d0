"""Sources: the parquet tables the feature jobs (training/features) write.

Each source is a directory of parquet files under $AUDIOREC_WORKDIR/features/<table>/,
one file per feature-job run (the user windows: also one per user partition on the Ray
engine), every row stamped with ``event_timestamp`` (the snapshot time: a row summarises
only what happened before it). Paths are absolute because the
DuckDB offline store resolves relative paths from the current directory, not the repo.
The path is the directory itself, not a glob: DuckDB and Ray Data both read every parquet
file in it (hidden files, such as a file still being written, skipped), and Ray Data takes
no globs.
"""

import os
from pathlib import Path

from feast import FileSource, PushSource
from feast.data_format import ParquetFormat

_workdir = os.environ.get("AUDIOREC_WORKDIR")
if not _workdir:
    raise RuntimeError(
        "AUDIOREC_WORKDIR is not set: export it as the absolute path of the pipeline work "
        "directory (for the demo: export AUDIOREC_WORKDIR=$PWD/../runs/demo)"
    )
WORKDIR = Path(_workdir).resolve()
FEATURES = WORKDIR / "features"


def _source(table: str, description: str) -> FileSource:
    return FileSource(
        name=table,
        path=str(FEATURES / table),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=description,
    )


user_profile_source = _source("user_profile", "Weekly profile snapshots, plus one at signup.")
user_music_source = _source("user_music", "Music-taste vector snapshots (in-house model).")
user_windows_source = _source(
    "user_windows",
    "Trailing-90-day user aggregates, written on each day the window's content changes.",
)
user_recent_source = _source(
    "user_recent",
    "Real-time state (events since the model's cut); the batch holds no rows: only pushes "
    "write it.",
)
# Real-time events reach the online store through these (serving/events.py, store.push).
# Pushes go to the online store only: the parquet batch sources, which training reads,
# never see them (point-in-time correctness: training reads what the batch computed).
user_windows_push = PushSource(name="user_windows_push", batch_source=user_windows_source)
user_recent_push = PushSource(name="user_recent_push", batch_source=user_recent_source)
item_content_source = _source("item_content", "Item metadata and text embedding, at publish.")
item_hgnn_source = _source("item_hgnn", "HGNN item embeddings of the current model version.")
item_popularity_source = _source(
    "item_popularity", "Trailing-90-day item popularity, written on each day it changes."
)

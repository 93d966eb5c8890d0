"""Where the feature tables live under a work directory, and how they are written.

``<workdir>/features/<table>/<first>_<last>.parquet``: one file per feature-job run,
named by the first and last snapshot dates it covers. The Feast sources in
``feature_repo/data_sources.py`` read ``<table>/*.parquet``; the names here and there must
agree (a test checks it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

STATE_FILE = "_state.json"  # written by the feature jobs, last (training/features/jobs.py)
USER_TABLES = ("user_profile", "user_music", "user_windows")
ITEM_TABLES = ("item_content", "item_hgnn", "item_popularity")
TABLES = USER_TABLES + ITEM_TABLES


def features_dir(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / "features"


def current_generation(workdir: str | Path) -> str | None:
    """The rebuild id of the feature tables now in place (None: none built yet)."""
    from audiorec.publish import read_json

    state = read_json(features_dir(workdir) / STATE_FILE, "feature-job state")
    gen = state.get("generation") if isinstance(state, dict) else None
    return gen if isinstance(gen, str) and gen.isalnum() else None


def table_dir(workdir: str | Path, table: str) -> Path:
    if table not in TABLES:
        raise ValueError(f"unknown feature table {table!r}; expected one of {TABLES}")
    return features_dir(workdir) / table


class AtomicParquet:
    """A parquet file written in parts, visible under its final name only once closed.

    Use as a context manager; on an exception the partial file is removed.
    """

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows

    def __enter__(self) -> "AtomicParquet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.writer.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)

"""Where the feature tables live under a work directory, and how they are written.

``<workdir>/features/<table>/<first>_<last>.parquet``: one file per feature-job run,
named by the first and last snapshot dates it covers. The Feast sources in
``feature_repo/data_sources.py`` read ``<table>/*.parquet``; the names here and there must
agree (a test checks it).
"""

from __future__ import annotations

from pathlib import Path

from audiorec.featurestore import features_dir

# user_recent holds no batch rows: real-time pushes write it (its file is empty, for the
# schema)
USER_TABLES = ("user_profile", "user_music", "user_windows", "user_recent")
ITEM_TABLES = ("item_content", "item_hgnn", "item_popularity")
TABLES = USER_TABLES + ITEM_TABLES


def table_dir(workdir: str | Path, table: str) -> Path:
    if table not in TABLES:
        raise ValueError(f"unknown feature table {table!r}; expected one of {TABLES}")
    return features_dir(workdir) / table

"""A dataset's time span as the pipeline and the evaluation read it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path


def default_cut(data: str | Path) -> datetime:
    """The day after the last event (a UTC midnight): train on everything."""
    from training.data.duck import connect_dataset
    from training.features.jobs import data_span
    from training.features.windows import midnight

    con = connect_dataset(data, ("events",))
    try:
        return midnight(data_span(con)[1])
    finally:
        con.close()

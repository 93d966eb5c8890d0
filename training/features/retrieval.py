"""Reading features back for training: historical, point-in-time.

Through the feature services by name, as the online read (``audiorec/featurestore.py``)
does, so training and serving read the same feature list. Values are returned raw (nulls
where Feast has no row): filling them is the model's preprocessing, exported with the
model, so serving re-implements nothing.
"""

from __future__ import annotations

import pandas as pd

from audiorec.errors import AudiorecError
from audiorec.featurestore import USER_SERVICE, feature_service


def user_training_features(
    store, examples: pd.DataFrame, service: str = USER_SERVICE
) -> pd.DataFrame:
    """User-tower features of each (user_id, event_timestamp) row, as of that time.

    A row at time t sees only feature rows stamped at or before t (Feast's point-in-time
    join), and those summarise only events strictly before their stamp: no leakage.
    Extra columns of ``examples`` (labels, item ids) are passed through.
    """
    missing = {"user_id", "event_timestamp"} - set(examples.columns)
    if missing:
        raise AudiorecError(
            f"training examples need columns user_id and event_timestamp; "
            f"missing: {', '.join(sorted(missing))}"
        )
    ts = examples["event_timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise AudiorecError(f"event_timestamp must be timezone-aware (UTC), got {ts.dtype}")
    fs = feature_service(store, service)
    job = store.get_historical_features(entity_df=examples, features=fs)
    return job.to_df()

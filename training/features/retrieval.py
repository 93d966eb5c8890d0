"""Reading features back for training: historical, point-in-time.

Through the feature services by name, as the online read (``audiorec/featurestore.py``)
does, so training and serving read the same feature list. Values are returned raw (nulls
where Feast has no row): filling them is the model's preprocessing, exported with the
model, so serving re-implements nothing.

On the Ray engine the offline store is training/features/ray_offline.py (Feast's Ray store
with a point-in-time join that scales and honours the views' TTLs), so both engines give
the same table.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from audiorec.errors import AudiorecError
from audiorec.featurestore import USER_SERVICE, feature_service


def historical_features(store, entity: pd.DataFrame, service: str) -> pa.Table:
    """The service's features of each ``entity`` row (its join key, ``event_timestamp``
    and any passed-through columns) as of that row's time, in Feast's row order."""
    return store.get_historical_features(
        entity_df=entity, features=feature_service(store, service)
    ).to_arrow()


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
    return historical_features(store, examples, service).to_pandas()

"""Feature views: what the user tower and the item tower read.

TTLs: views written as snapshots on a fixed cadence expire a little after the next
snapshot is due; views written only when their value changes (the 90-day windows, item
content, embeddings) never expire (ttl 0): their latest row stays true until replaced.
"""

from datetime import timedelta

from data_sources import (
    WORKDIR,
    item_content_source,
    item_hgnn_source,
    item_popularity_source,
    user_music_source,
    user_profile_source,
    user_recent_push,
    user_windows_push,
)
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Int64, String

from audiorec.featurestore import RECENT_COLUMNS, item_types

FOREVER = timedelta(0)

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=14),  # weekly snapshots
    schema=[
        Field(name="country", dtype=String),
        Field(name="age", dtype=Int64),
        Field(name="language", dtype=String),
        Field(name="account_age_days", dtype=Int64),
    ],
    source=user_profile_source,
    tags={"team": "audiorec"},
)

user_music = FeatureView(
    name="user_music",
    entities=[user],
    ttl=timedelta(days=45),  # monthly snapshots
    schema=[Field(name="music_vector", dtype=Array(Float32))],
    source=user_music_source,
)

# The trailing-90-day user features, per item type of the work directory's dataset, from
# the one declaration both the feature jobs and these views use (audiorec/itemtypes.py).
_KIND = {"vector": Array(Float32), "count": Int64}
_WINDOW = item_types(WORKDIR).user_window_columns()

user_preferences_90d = FeatureView(
    name="user_preferences_90d",
    entities=[user],
    ttl=FOREVER,
    # per type: mean HGNN embedding of the distinct items streamed or weakly signalled
    # (zeros when none), distinct items touched, streams
    schema=[Field(name=n, dtype=_KIND[k]) for n, k, view in _WINDOW if view == "preferences"],
    source=user_windows_push,  # batch: user_windows; real time: store.push
)

user_weak_signals_90d = FeatureView(
    name="user_weak_signals_90d",
    entities=[user],
    ttl=FOREVER,
    # per type: follows, previews, intents to pay, and the mean HGNN embedding of the
    # items so signalled
    schema=[Field(name=n, dtype=_KIND[k]) for n, k, view in _WINDOW if view == "weak"],
    source=user_windows_push,  # batch: user_windows; real time: store.push
)

user_recent = FeatureView(
    name="user_recent",
    entities=[user],
    ttl=FOREVER,
    # the events recorded in real time since the served model's cut, as
    # "<ts_us>|<event_type>|<item_id>|<event_id>" (bounded; pruned as cuts pass them), the
    # latest event time seen, and a write counter that keeps row timestamps increasing
    schema=[
        Field(name=name, dtype={"strings": Array(String), "int": Int64}[kind])
        for name, kind in RECENT_COLUMNS
    ],
    source=user_recent_push,
)

item_content = FeatureView(
    name="item_content",
    entities=[item],
    ttl=FOREVER,
    schema=[
        Field(name="item_type", dtype=String),
        Field(name="language", dtype=String),
        Field(name="genre", dtype=String),
        Field(name="text_embedding", dtype=Array(Float32)),
    ],
    source=item_content_source,
)

item_hgnn = FeatureView(
    name="item_hgnn",
    entities=[item],
    ttl=FOREVER,
    schema=[
        Field(name="hgnn_embedding", dtype=Array(Float32)),
        Field(name="hgnn_version", dtype=String),
    ],
    source=item_hgnn_source,
)

item_popularity = FeatureView(
    name="item_popularity",
    entities=[item],
    ttl=FOREVER,
    schema=[
        Field(name="streams_90d", dtype=Int64),
        Field(name="listeners_90d", dtype=Int64),
    ],
    source=item_popularity_source,
)

"""Feature services: the contracts training and serving both use by name."""

from feast import FeatureService
from feature_views import (
    item_content,
    item_hgnn,
    item_popularity,
    user_music,
    user_preferences_90d,
    user_profile,
    user_recent,
    user_weak_signals_90d,
)

user_tower = FeatureService(
    name="user_tower",
    features=[user_profile, user_music, user_preferences_90d, user_weak_signals_90d],
    description="Everything the user tower reads, for training (historical) and serving (online).",
)

item_tower = FeatureService(
    name="item_tower",
    features=[item_content, item_hgnn, item_popularity],
    description="Everything the item tower reads.",
)

user_online = FeatureService(
    name="user_online",
    features=[user_profile, user_music, user_preferences_90d, user_weak_signals_90d, user_recent],
    description="What a Recommend reads in one online read: the user tower's features and "
    "the real-time state (events since the model's cut).",
)

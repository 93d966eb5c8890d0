"""Entities: the keys every feature hangs from."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A listener (users.parquet user_id).",
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="A recommendable item of any type (items.parquet item_id).",
)

from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_TYPE_UNSPECIFIED: _ClassVar[ItemType]
    AUDIOBOOK: _ClassVar[ItemType]
    PODCAST: _ClassVar[ItemType]

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    PERSONALIZED: _ClassVar[Strategy]
    COLD_START: _ClassVar[Strategy]
    FALLBACK: _ClassVar[Strategy]
ITEM_TYPE_UNSPECIFIED: ItemType
AUDIOBOOK: ItemType
PODCAST: ItemType
STRATEGY_UNSPECIFIED: Strategy
PERSONALIZED: Strategy
COLD_START: Strategy
FALLBACK: Strategy

class Item(_message.Message):
    __slots__ = ("item_id", "item_type", "type", "score", "title", "because_item_id", "because_title", "because_event")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_TYPE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BECAUSE_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    BECAUSE_TITLE_FIELD_NUMBER: _ClassVar[int]
    BECAUSE_EVENT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    item_type: ItemType
    type: str
    score: float
    title: str
    because_item_id: str
    because_title: str
    because_event: str
    def __init__(self, item_id: _Optional[str] = ..., item_type: _Optional[_Union[ItemType, str]] = ..., type: _Optional[str] = ..., score: _Optional[float] = ..., title: _Optional[str] = ..., because_item_id: _Optional[str] = ..., because_title: _Optional[str] = ..., because_event: _Optional[str] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "k", "item_type", "include_consumed", "languages", "type", "explain", "arm")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    ITEM_TYPE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONSUMED_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    item_type: ItemType
    include_consumed: bool
    languages: _containers.RepeatedScalarFieldContainer[str]
    type: str
    explain: bool
    arm: str
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., item_type: _Optional[_Union[ItemType, str]] = ..., include_consumed: _Optional[bool] = ..., languages: _Optional[_Iterable[str]] = ..., type: _Optional[str] = ..., explain: _Optional[bool] = ..., arm: _Optional[str] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "model_version", "strategy", "reason", "arm")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    model_version: str
    strategy: Strategy
    reason: str
    arm: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., model_version: _Optional[str] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., reason: _Optional[str] = ..., arm: _Optional[str] = ...) -> None: ...

class RecommendSimilarRequest(_message.Message):
    __slots__ = ("item_id", "k", "item_type", "type")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    ITEM_TYPE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    k: int
    item_type: ItemType
    type: str
    def __init__(self, item_id: _Optional[str] = ..., k: _Optional[int] = ..., item_type: _Optional[_Union[ItemType, str]] = ..., type: _Optional[str] = ...) -> None: ...

class RecommendSimilarResponse(_message.Message):
    __slots__ = ("items", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("user_id", "item_id", "event_type", "timestamp_ms", "event_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    item_id: str
    event_type: str
    timestamp_ms: int
    event_id: str
    def __init__(self, user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., event_type: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., event_id: _Optional[str] = ...) -> None: ...

class RecordEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ("recorded", "duplicates", "before_cut", "model_version")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    BEFORE_CUT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    duplicates: int
    before_cut: int
    model_version: str
    def __init__(self, recorded: _Optional[int] = ..., duplicates: _Optional[int] = ..., before_cut: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...

class NewItem(_message.Message):
    __slots__ = ("item_id", "type", "title", "description", "language", "genre")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    GENRE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    type: str
    title: str
    description: str
    language: str
    genre: str
    def __init__(self, item_id: _Optional[str] = ..., type: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., language: _Optional[str] = ..., genre: _Optional[str] = ...) -> None: ...

class RecordItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[NewItem]
    def __init__(self, items: _Optional[_Iterable[_Union[NewItem, _Mapping]]] = ...) -> None: ...

class RecordItemsResponse(_message.Message):
    __slots__ = ("created", "existing", "model_version")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    created: int
    existing: int
    model_version: str
    def __init__(self, created: _Optional[int] = ..., existing: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServedArm(_message.Message):
    __slots__ = ("name", "model_version", "share", "live_items")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    LIVE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_version: str
    share: float
    live_items: int
    def __init__(self, name: _Optional[str] = ..., model_version: _Optional[str] = ..., share: _Optional[float] = ..., live_items: _Optional[int] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("model_version", "arms", "item_types")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    ITEM_TYPES_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    arms: _containers.RepeatedCompositeFieldContainer[ServedArm]
    item_types: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_version: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[ServedArm, _Mapping]]] = ..., item_types: _Optional[_Iterable[str]] = ...) -> None: ...

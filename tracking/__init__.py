"""tracking package (see docs/architecture.md): the live state store and the event log.

Two seams, two backends each: :class:`StateStore` (:class:`MemoryStore`,
:class:`RedisStore`) and :class:`EventLog` (:class:`MemoryEventLog`,
:class:`RedisEventLog`). A store owns the log its writes append to (``store.events``),
so a state change and its events commit together.
"""

from tracking.errors import (
    BadEventId,
    BadInput,
    Conflict,
    CorruptData,
    EventsTrimmed,
    NotFound,
    TrackingError,
    Unavailable,
)
from tracking.events import (
    EVENT_TYPES,
    OPS_TOPIC,
    ZERO_ID,
    Event,
    EventId,
    EventLog,
    EventType,
    MemoryEventLog,
    cell_topic,
    courier_topic,
    event_id_key,
    order_topic,
    parse_event_id,
    zone_topic,
)
from tracking.redis_events import RedisEventLog
from tracking.redis_store import RedisStore
from tracking.store import MemoryStore, Nearby, StateStore

__all__ = [
    "EVENT_TYPES",
    "OPS_TOPIC",
    "ZERO_ID",
    "BadEventId",
    "BadInput",
    "Conflict",
    "CorruptData",
    "Event",
    "EventId",
    "EventLog",
    "EventType",
    "EventsTrimmed",
    "MemoryEventLog",
    "MemoryStore",
    "Nearby",
    "NotFound",
    "RedisEventLog",
    "RedisStore",
    "StateStore",
    "TrackingError",
    "Unavailable",
    "cell_topic",
    "courier_topic",
    "event_id_key",
    "order_topic",
    "parse_event_id",
    "zone_topic",
]

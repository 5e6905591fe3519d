"""The event log: every state change as an :class:`Event`, resumable by id.

Ids
---
An :data:`EventId` is the string ``"<ms>-<seq>"``: two non-negative decimal integers,
milliseconds of the log's clock at append and a sequence number within that
millisecond. This is exactly the Redis Streams id format (what ``XADD *`` generates), and
the memory log generates ids by the same rule (``ms`` from its clock, never going
backwards; ``seq`` restarting at 0 when ``ms`` moves on), so ids behave the same on both
backends. Ids are strictly increasing in append order. Compare them with
:func:`event_id_key` (``(ms, seq)`` tuples), never as strings (``"10-0" < "9-0"``).
``"0-0"`` (:data:`ZERO_ID`) sorts before every event; it is what :meth:`EventLog.last_id`
returns for an empty log.

Streams
-------
Every event goes into one global stream (all events, in order) and into one stream per
topic it names (``order:o1``, ``courier:c1``, ``ops``, ``zone:z``, ``h3:<cell>``), under
the same id. A reader of one order's channel therefore reads a stream that holds only that
order's events: no scanning and discarding the whole firehose (what client-side filtering
of one global stream would cost per websocket), and a quiet order's history is not pushed
out of retention by busy couriers. A reader of several topics merges their streams by id
and drops duplicates (an event on two of its topics is delivered once).

Retention and gaps
------------------
Streams are capped (``maxlen`` events globally, ``topic_maxlen`` per topic; trimming is
approximate, like ``XADD MAXLEN ~``: at least the newest ``maxlen`` are kept, a little
more may be). Each stored event also records the id of the event before it in the same
stream, so a reader resuming after ``last_id`` can tell whether anything between was
trimmed; if so :class:`~tracking.errors.EventsTrimmed` is raised instead of silently
returning a history with a hole in it. The reader then re-syncs from a state snapshot:
take :meth:`EventLog.last_id` *before* reading the snapshot, then resume from it (events
after it may already be reflected in the snapshot; applying them again is harmless
because events carry state, not deltas).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import re
import time
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal, Protocol, get_args

import orjson

from tracking.errors import BadEventId, BadInput, EventsTrimmed

EventType = Literal[
    "order_placed",
    "order_assigned",
    "order_unassigned",
    "order_picked_up",
    "order_delivered",
    "order_cancelled",
    "courier_updated",
    "courier_position",
    "route_updated",
    "plan_updated",
    "eta_updated",
    "delay",
    "route_acknowledged",
    "zones_updated",
    "settings_updated",
]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)

EventId = str
ZERO_ID: EventId = "0-0"
GLOBAL = "*"
"""Name of the global stream in errors (:class:`EventsTrimmed`); not a valid topic."""

OPS_TOPIC = "ops"
MAX_TOPIC_LEN = 200
DEFAULT_MAXLEN = 100_000
DEFAULT_TOPIC_MAXLEN = 1_000

_ID_RE = re.compile(r"(\d{1,20})-(\d{1,20})")
_U64 = 2**64 - 1
_TOPIC_RE = re.compile(r"[^\s\x00-\x1f\x7f*]+")

IdKey = tuple[int, int]


def parse_event_id(event_id: str) -> IdKey:
    """``"<ms>-<seq>"`` -> ``(ms, seq)``; :class:`BadEventId` for anything else."""
    m = _ID_RE.fullmatch(event_id) if isinstance(event_id, str) else None
    if m is None:
        raise BadEventId("bad_event_id", f"event id must be '<ms>-<seq>', got {event_id!r}")
    ms, seq = int(m.group(1)), int(m.group(2))
    if ms > _U64 or seq > _U64:
        raise BadEventId("bad_event_id", f"event id {event_id!r} out of range")
    return ms, seq


event_id_key = parse_event_id
"""Sort key of an event id: ``sorted(ids, key=event_id_key)``."""


def format_event_id(key: IdKey) -> EventId:
    return f"{key[0]}-{key[1]}"


def order_topic(order_id: str) -> str:
    return f"order:{order_id}"


def courier_topic(courier_id: str) -> str:
    return f"courier:{courier_id}"


def zone_topic(zone_id: str) -> str:
    return f"zone:{zone_id}"


def cell_topic(cell: str) -> str:
    """Topic of an H3 cell (pick one resolution per deployment, e.g. 7 for districts)."""
    return f"h3:{cell}"


def validate_topic(topic: str) -> str:
    """Return ``topic`` if usable as a topic (and a Redis key suffix), else :class:`BadInput`.

    Non-empty, at most 200 characters, no whitespace, control characters or ``*``.
    """
    if type(topic) is str and topic in _VALID_TOPICS:
        return topic
    if not isinstance(topic, str) or not _TOPIC_RE.fullmatch(topic):
        raise BadInput("bad_topic", f"bad topic {topic!r}")
    if len(topic) > MAX_TOPIC_LEN:
        raise BadInput("bad_topic", f"topic longer than {MAX_TOPIC_LEN} characters")
    if len(_VALID_TOPICS) >= _VALID_TOPICS_MAX:
        _VALID_TOPICS.clear()
    _VALID_TOPICS.add(topic)
    return topic


_VALID_TOPICS: set[str] = set()
"""Topics already checked: every event read back from the log is checked again, and the
same few thousand topics (orders, couriers, areas) recur all day."""
_VALID_TOPICS_MAX = 100_000


def _distinct_topics(topics: Iterable[str]) -> tuple[str, ...]:
    """Valid topics, each once, in first-seen order (:class:`BadInput` otherwise)."""
    return tuple(dict.fromkeys(map(validate_topic, topics)))


def validate_topics(topics: Iterable[str] | None) -> tuple[str, ...] | None:
    """Distinct topics in first-seen order, or None for "all events"; never empty."""
    if topics is None:
        return None
    if isinstance(topics, str):
        raise BadInput("bad_topic", "topics must be a collection of strings, not one string")
    out = _distinct_topics(topics)
    if not out:
        raise BadInput("bad_topic", "an empty topic list matches nothing; pass None for all")
    return out


def validate_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise BadInput("bad_limit", f"limit must be a positive int or None, got {limit!r}")
    return limit


@dataclass(frozen=True, slots=True)
class Event:
    """One state change.

    ``t`` is the time of the change on the caller's clock (seconds), independent of the
    id, which the log assigns on append (``None`` before). ``topics`` are the channels it
    is published on besides the global stream (duplicates are dropped, order kept).
    ``payload`` must be JSON (checked on append); by convention it carries the new state
    (e.g. the order's status and courier), so applying an event twice is harmless.
    """

    type: EventType
    topics: tuple[str, ...]
    payload: dict[str, Any]
    t: float
    id: EventId | None = None

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise BadInput("bad_event_type", f"unknown event type {self.type!r}")
        if isinstance(self.topics, str):
            raise BadInput("bad_topic", "topics must be a collection of strings, not one string")
        object.__setattr__(self, "topics", _distinct_topics(self.topics))
        if not isinstance(self.payload, dict) or not all(isinstance(k, str) for k in self.payload):
            raise BadInput("bad_payload", "payload must be a dict with string keys")
        if (
            isinstance(self.t, bool)
            or not isinstance(self.t, int | float)
            or not math.isfinite(self.t)
        ):
            raise BadInput("bad_event_time", f"event time must be a finite number, got {self.t!r}")
        object.__setattr__(self, "t", float(self.t))  # as it comes back from storage
        if self.id is not None:
            parse_event_id(self.id)

    def with_id(self, event_id: EventId) -> Event:
        return replace(self, id=event_id)

    @classmethod
    def checked(
        cls,
        event_type: EventType,
        topics: tuple[str, ...],
        payload: dict[str, Any],
        t: float,
        event_id: EventId,
    ) -> Event:
        """An event from parts a decoder has already checked: a known type, a payload
        parsed from a JSON object (string keys), a finite float time, a parsed id. Only
        the topics are still validated here (distinct, in order). Every process decodes
        each event it fans out; the full ``__post_init__`` was a sizeable share of that.
        """
        e = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(e, "type", event_type)
        setattr_(e, "topics", _distinct_topics(topics))
        setattr_(e, "payload", payload)
        setattr_(e, "t", t)
        setattr_(e, "id", event_id)
        return e


class EventLog(Protocol):
    """Append-only, resumable log of :class:`Event` (memory and Redis Streams backends)."""

    async def append(self, event: Event) -> EventId:
        """Store ``event`` (its ``id`` must be None) and return its new id."""
        ...

    async def append_many(self, events: Sequence[Event]) -> list[EventId]:
        """Store several events atomically (all or none), ids increasing in order."""
        ...

    async def last_id(self) -> EventId:
        """Id of the newest event, or :data:`ZERO_ID` for an empty log."""
        ...

    async def read_after(
        self,
        last_id: EventId | None = None,
        topics: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Events with id > ``last_id`` (all retained when None), oldest first.

        ``topics``: only events on any of them, each once. ``limit``: at most that many
        (the oldest ones; page by passing the last id returned). Raises
        :class:`EventsTrimmed` when events after ``last_id`` are no longer retained.
        """
        ...

    def subscribe(
        self,
        last_id: EventId | None = None,
        topics: Iterable[str] | None = None,
        *,
        batch: int = 256,
        select: Select | None = None,
    ) -> AsyncIterator[Event]:
        """Everything after ``last_id``, then live events as they are appended, forever.

        ``last_id=None`` starts at the log's end when iteration starts; to not miss events
        appended between deciding to subscribe and the first ``__anext__``, pass
        :meth:`last_id` taken beforehand. Raises :class:`EventsTrimmed` if the reader
        falls behind retention.

        ``select(type, topics, key)``, asked as each event is read, may turn events into
        stubs (:func:`is_stub`: same id and type, no topics or payload), which a backend
        that decodes stored events need not decode: a process that fans out only some
        topics reads the whole log and decodes only what it uses. ``batch``: events per
        read.
        """
        ...


# -- shared merge logic (both backends) --------------------------------------------------


Select = Callable[[str, Sequence[str], IdKey], bool]
"""``select(type, topics, key)``: whether a subscriber wants an event (see ``subscribe``);
``key`` is the parsed id, whose first part is the append time in milliseconds."""

_STUB_PAYLOAD: dict[str, Any] = {}


def stub(event_type: EventType, event_id: EventId) -> Event:
    """The stand-in for an event a subscriber's ``select`` rejected."""
    return Event.checked(event_type, (), _STUB_PAYLOAD, 0.0, event_id)


def is_stub(e: Event) -> bool:
    return e.payload is _STUB_PAYLOAD


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as a stream holds it: id key, the previous id in the same stream, event."""

    key: IdKey
    prev: IdKey
    event: Event


def merge_streams(
    batches: Mapping[str, Sequence[StoredEvent]], last_id: EventId | None, limit: int | None
) -> list[Event]:
    """Merge per-stream reads (each: entries after ``last_id``, oldest first) into one
    id-ordered list without duplicates, checking each stream for a retention gap.

    Each batch must hold a stream's *first* entries after ``last_id`` (at most ``limit``),
    so the first ``limit`` merged events are exactly the first ``limit`` matching events.
    """
    if last_id is not None:
        last_key = parse_event_id(last_id)
        for stream, batch in batches.items():
            if batch and batch[0].prev > last_key:
                raise EventsTrimmed(last_id, stream)
    out: list[Event] = []
    seen: IdKey | None = None
    for entry in heapq.merge(*batches.values(), key=lambda e: e.key):
        if entry.key == seen:
            continue
        seen = entry.key
        out.append(entry.event)
        if limit is not None and len(out) >= limit:
            break
    return out


# -- memory backend ----------------------------------------------------------------------


class _MemStream:
    """One capped stream: parallel sorted lists of id keys and entries."""

    __slots__ = ("entries", "keys", "maxlen")

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self.keys: list[IdKey] = []
        self.entries: list[StoredEvent] = []

    @property
    def last(self) -> IdKey:
        return self.keys[-1] if self.keys else (0, 0)

    def add(self, key: IdKey, event: Event) -> None:
        self.entries.append(StoredEvent(key, self.last, event))
        self.keys.append(key)
        # Trim in chunks (amortised O(1)), like Redis trimming whole nodes with MAXLEN ~.
        if len(self.keys) > self.maxlen + max(1, self.maxlen // 10):
            cut = len(self.keys) - self.maxlen
            del self.keys[:cut]
            del self.entries[:cut]

    def after(self, key: IdKey | None, limit: int | None) -> list[StoredEvent]:
        i = 0 if key is None else bisect_right(self.keys, key)
        return self.entries[i : None if limit is None else i + limit]


def _check_maxlen(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput("bad_maxlen", f"{name} must be a positive int, got {value!r}")
    return value


class MemoryEventLog:
    """In-process :class:`EventLog` for tests, simulations and single-process development.

    Same id format, retention and gap semantics as the Redis backend; nothing survives
    the process. Per-topic streams are kept for every topic ever used (no expiry), so a
    long-running process with unbounded ids grows without bound: use Redis there.
    Must be used from one event loop (its :class:`asyncio.Condition` binds to it).

    ``clock`` (seconds) only feeds the ``ms`` part of ids; inject one for deterministic
    ids in tests and simulations.
    """

    def __init__(
        self,
        *,
        maxlen: int = DEFAULT_MAXLEN,
        topic_maxlen: int = DEFAULT_TOPIC_MAXLEN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.maxlen = _check_maxlen("maxlen", maxlen)
        self.topic_maxlen = _check_maxlen("topic_maxlen", topic_maxlen)
        self._clock = clock
        self._global = _MemStream(self.maxlen)
        self._topics: dict[str, _MemStream] = {}
        self._last: IdKey = (0, 0)
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def _next_key(self) -> IdKey:
        ms = max(0, int(self._clock() * 1000))
        last_ms, last_seq = self._last
        return (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)

    def append_now(self, events: Sequence[Event]) -> list[EventId]:
        """Synchronous, atomic append (no await inside), for :class:`MemoryStore` to
        change state and log its events in one step. Call :meth:`notify` afterwards."""
        from tracking.codec import dumps  # local: codec imports this module

        payloads = []
        for e in events:
            if not isinstance(e, Event):
                raise BadInput("bad_event", f"expected an Event, got {type(e).__name__}")
            if e.id is not None:
                raise BadInput("event_has_id", f"event already has id {e.id}; append it once")
            # Validate all before appending any; the JSON round trip also gives readers
            # what Redis would (tuples become lists) and a copy the caller cannot mutate.
            payloads.append(orjson.loads(dumps(e.payload)))
        ids: list[EventId] = []
        for e, payload in zip(events, payloads, strict=True):
            key = self._next_key()
            self._last = key
            eid = format_event_id(key)
            stored = replace(e, payload=payload, id=eid)
            self._global.add(key, stored)
            for topic in e.topics:
                stream = self._topics.get(topic)
                if stream is None:
                    stream = self._topics[topic] = _MemStream(self.topic_maxlen)
                stream.add(key, stored)
            ids.append(eid)
        return ids

    async def notify(self) -> None:
        """Wake subscribers after :meth:`append_now`."""
        cond = self._condition()
        async with cond:
            cond.notify_all()

    async def append(self, event: Event) -> EventId:
        (eid,) = await self.append_many([event])
        return eid

    async def append_many(self, events: Sequence[Event]) -> list[EventId]:
        ids = self.append_now(events)
        if ids:
            await self.notify()
        return ids

    async def last_id(self) -> EventId:
        return format_event_id(self._last)

    def _read(
        self, last_id: EventId | None, topics: tuple[str, ...] | None, limit: int | None
    ) -> list[Event]:
        key = None if last_id is None else parse_event_id(last_id)
        if topics is None:
            batches = {GLOBAL: self._global.after(key, limit)}
        else:
            batches = {t: self._topics[t].after(key, limit) for t in topics if t in self._topics}
        return merge_streams(batches, last_id, limit)

    async def read_after(
        self,
        last_id: EventId | None = None,
        topics: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        return self._read(last_id, validate_topics(topics), validate_limit(limit))

    def _moved_past(self, seen: IdKey) -> bool:
        return self._last > seen

    async def subscribe(
        self,
        last_id: EventId | None = None,
        topics: Iterable[str] | None = None,
        *,
        batch: int = 256,
        select: Select | None = None,
    ) -> AsyncIterator[Event]:
        names = validate_topics(topics)
        validate_limit(batch)
        cursor = format_event_id(self._last) if last_id is None else last_id
        parse_event_id(cursor)
        cond = self._condition()
        while True:
            seen = self._last
            events = self._read(cursor, names, batch)
            for e in events:
                cursor = e.id or cursor
                if (
                    select is not None
                    and e.id
                    and not select(e.type, e.topics, parse_event_id(e.id))
                ):
                    yield stub(e.type, e.id)  # nothing to save here: kept in memory
                else:
                    yield e
            if not events:
                async with cond:
                    await cond.wait_for(partial(self._moved_past, seen))

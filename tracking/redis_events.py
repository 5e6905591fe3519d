"""Redis Streams backend of the event log (see :mod:`tracking.events` for the contract).

Layout (``p`` = the prefix): the global stream ``p:events``, one stream per topic,
``p:events:topic:<topic>``, and ``p:events:epoch``, the id of the first event ever
appended. An entry has the fields ``type``, ``t`` (``repr`` of the float),
``topics`` and ``payload`` (JSON) and ``prev`` (the id of the previous entry in the same
stream, for gap detection).

Appends run as one Lua script: ``XADD p:events MAXLEN ~ N *`` generates the id, and the
same id is then written into each topic stream (``XADD`` with an explicit id, valid
because topic ids are a subset of the global, increasing ids). Scripts execute atomically
and, since Redis 5, are replicated and written to the AOF as their effects (a
``MULTI``/``EXEC`` of the concrete ``XADD``\\ s with the generated ids), so a restart
replays the same ids. With ``appendfsync always`` Redis fsyncs the AOF before it replies,
so an acknowledged append survives ``kill -9``. The state store queues the same script
inside its own ``MULTI`` so a state change and its events commit together.

Topic streams expire ``topic_ttl_s`` after their last event (an order's channel is not
kept forever). A reader resuming a topic from an id older than that TTL whose stream
vanished or was recreated cannot know what expired, so it gets
:class:`~tracking.errors.EventsTrimmed` (conservative: it may be raised when nothing was
lost; it never stays silent when something was). Events older than the log's epoch
cannot have expired, so a young log never raises this.

Delivery on the append side is at-least-once if a connection drops after Redis executed
a write but before the reply arrived and the client retries (redis-py retries connection
errors by default): the event may then be stored twice under two ids. Readers never see
one id twice.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import orjson
import redis.exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from tracking.codec import dumps, loads
from tracking.errors import BadInput, CorruptData, EventsTrimmed, TrackingError, Unavailable
from tracking.events import (
    DEFAULT_MAXLEN,
    DEFAULT_TOPIC_MAXLEN,
    EVENT_TYPES,
    GLOBAL,
    ZERO_ID,
    Event,
    EventId,
    Select,
    StoredEvent,
    merge_streams,
    parse_event_id,
    stub,
    validate_limit,
    validate_topic,
    validate_topics,
)

_TOPICS_ENCODER = json.JSONEncoder()  # json.dumps's default form, built once
DEFAULT_PREFIX = "o2o"
DEFAULT_TOPIC_TTL_S = 24 * 3600.0
DEFAULT_BLOCK_MS = 2_000

APPEND_EVENTS_LUA = """
-- append_events(kb, ab): KEYS[kb+1]: global stream; KEYS[kb+2]: the log's epoch (id of
-- its first event ever); KEYS[kb+3..]: topic streams used by any of the events.
-- ARGV[ab+1]: global MAXLEN; ARGV[ab+2]: topic MAXLEN; ARGV[ab+3]: topic TTL in ms (0:
-- none); ARGV[ab+4]: number of events; then 5 values per event: type, t, topics JSON,
-- payload JSON, the indexes of its topic streams among this call's keys ("3 5").
local function last_id(key)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #last == 0 then return '0-0' end
  return last[1][1]
end
local function append_events(kb, ab)
  local gkey = KEYS[kb + 1]
  local ttl = tonumber(ARGV[ab + 3])
  local n = tonumber(ARGV[ab + 4])
  local gprev = last_id(gkey)
  local ids = {}
  for i = 0, n - 1 do
    local b = ab + 5 + i * 5
    local id = redis.call('XADD', gkey, 'MAXLEN', '~', ARGV[ab + 1], '*',
      'type', ARGV[b], 't', ARGV[b + 1], 'topics', ARGV[b + 2], 'payload', ARGV[b + 3],
      'prev', gprev)
    gprev = id
    if i == 0 then redis.call('SET', KEYS[kb + 2], id, 'NX') end
    for k in string.gmatch(ARGV[b + 4], '%d+') do
      local key = KEYS[kb + tonumber(k)]
      redis.call('XADD', key, 'MAXLEN', '~', ARGV[ab + 2], id,
        'type', ARGV[b], 't', ARGV[b + 1], 'topics', ARGV[b + 2], 'payload', ARGV[b + 3],
        'prev', last_id(key))
      if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    end
    ids[#ids + 1] = id
  end
  return ids
end
"""
_APPEND_LUA = APPEND_EVENTS_LUA + "return append_events(0, 0)\n"
"""Append events atomically; returns their ids."""


@contextmanager
def redis_errors() -> Iterator[None]:
    """Translate redis-py errors into the backend-neutral :mod:`tracking.errors`."""
    try:
        yield
    except (rexc.ConnectionError, rexc.TimeoutError) as e:  # includes BusyLoadingError
        raise Unavailable("unavailable", f"redis unavailable: {e}") from e
    except rexc.WatchError as e:  # escaping a WATCH loop: the watched connection died
        raise Unavailable("unavailable", f"redis connection lost during a transaction: {e}") from e
    except rexc.ResponseError as e:
        if str(e).startswith("WRONGTYPE"):
            raise CorruptData("wrong_type", f"a tracking key holds another Redis type: {e}") from e
        raise TrackingError("redis_error", f"redis refused the command: {e}") from e


def to_str(value: Any) -> str:
    """A Redis reply value as text, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError as e:
            raise CorruptData("bad_text", f"stored value is not UTF-8: {value[:40]!r}") from e
    if isinstance(value, str):
        return value
    raise CorruptData("bad_reply", f"unexpected Redis reply {value!r}")


def _entry_to_stored(entry: Any, stream: str, select: Select | None = None) -> StoredEvent:
    """One ``XRANGE`` entry ``(id, {field: value})`` -> :class:`StoredEvent`; a stub
    (payload not decoded) where ``select`` rejects it."""
    try:
        raw_id, raw_fields = entry
        eid = to_str(raw_id)
        fields = {to_str(k): v for k, v in raw_fields.items()}
        what = f"event {eid} on {stream!r}"
        topics = orjson.loads(fields["topics"])  # bytes or str; ValueError if not JSON
        if not isinstance(topics, list):
            raise CorruptData("bad_field", f"{what}: topics must be an array")
        etype = to_str(fields["type"])
        if etype not in EVENT_TYPES:
            raise CorruptData("bad_field", f"{what}: unknown event type {etype!r}")
        key, prev = parse_event_id(eid), parse_event_id(to_str(fields["prev"]))
        if select is not None and not select(etype, topics, key):
            return StoredEvent(key, prev, stub(cast(Any, etype), eid))
        t = float(to_str(fields["t"]))
        if not math.isfinite(t):
            raise CorruptData("bad_field", f"{what}: time {t!r} is not finite")
        payload = loads(fields["payload"], what)  # a dict with string keys, or raises
        event = Event.checked(cast(Any, etype), tuple(topics), payload, t, eid)
        return StoredEvent(key, prev, event)
    except CorruptData:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, BadInput) as e:
        raise CorruptData("bad_event", f"malformed event entry on {stream!r}: {e!r}") from e


def _xread_batches(
    reply: Any, name_of: Mapping[str, str], select: Select | None = None
) -> dict[str, list[StoredEvent]]:
    """An ``XREAD`` reply (RESP2: ``[[key, entries], ...]``; RESP3: ``{key: entries}``)
    -> stream name -> entries, as :func:`~tracking.events.merge_streams` takes them."""
    resp3 = isinstance(reply, Mapping)
    out: dict[str, list[StoredEvent]] = {}
    for raw_key, entries in reply.items() if resp3 else reply:
        key = to_str(raw_key)
        name = name_of.get(key)
        if name is None:
            raise CorruptData("bad_reply", f"XREAD answered for a stream not asked: {key!r}")
        if resp3 and entries and isinstance(entries[0], list):
            entries = entries[0]  # RESP3 wraps a stream's entries in one more list
        out[name] = [_entry_to_stored(e, name, select) for e in entries]
    return out


class RedisEventLog:
    """:class:`~tracking.events.EventLog` on Redis Streams.

    ``client`` is a ``redis.asyncio.Redis`` built by the caller (the API's lifespan),
    RESP2 or RESP3, with or without ``decode_responses`` (all tested). Each :meth:`subscribe`
    holds one pooled connection for up to ``block_ms`` at a time while idle (capped at
    half the client's socket timeout), so fan out many websocket clients from one
    subscription per process rather than one each (the async pool defaults to 100).

    ``read_interval_s``: a subscription that has caught up reads again at most this
    long after its previous read, so the events appended meanwhile come in one round
    trip. Without it, at 1,000 positions a second each blocking read woke for one or two
    events: the service's three readers (each worker's hub, the dispatcher's) spent
    about 8 % of its CPU on round trips, and in a loaded worker those round trips
    queued behind everything else (measured with ``o2o bench tracking``,
    docs/benchmarks.md). The price is at most that much delay per event.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        maxlen: int = DEFAULT_MAXLEN,
        topic_maxlen: int = DEFAULT_TOPIC_MAXLEN,
        topic_ttl_s: float | None = DEFAULT_TOPIC_TTL_S,
        block_ms: int = DEFAULT_BLOCK_MS,
        read_interval_s: float = 0.0,
    ) -> None:
        for name, value in (("maxlen", maxlen), ("topic_maxlen", topic_maxlen)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInput("bad_maxlen", f"{name} must be a positive int, got {value!r}")
        if topic_ttl_s is not None and not topic_ttl_s > 0:
            raise BadInput("bad_ttl", f"topic_ttl_s must be > 0 or None, got {topic_ttl_s!r}")
        if not (isinstance(block_ms, int) and block_ms > 0):
            raise BadInput("bad_block", f"block_ms must be a positive int, got {block_ms!r}")
        if not (isinstance(read_interval_s, int | float) and 0 <= read_interval_s <= 1):
            raise BadInput(
                "bad_interval", f"read_interval_s must be in [0, 1], got {read_interval_s!r}"
            )
        self.read_interval_s = float(read_interval_s)
        self.client = client
        self.prefix = prefix
        self.maxlen = maxlen
        self.topic_maxlen = topic_maxlen
        self.topic_ttl_ms = 0 if topic_ttl_s is None else max(1, round(topic_ttl_s * 1000))
        # A blocking XREAD must return before the client's socket timeout (redis-py 8
        # defaults to 5 s) or the wait would surface as a timeout error.
        timeout = client.get_connection_kwargs().get("socket_timeout")  # type: ignore[no-untyped-call]
        if isinstance(timeout, int | float) and timeout > 0:
            block_ms = max(1, min(block_ms, int(timeout * 1000) // 2))
        self.block_ms = block_ms
        self._script = client.register_script(_APPEND_LUA)

    # -- keys --------------------------------------------------------------------------

    @property
    def global_key(self) -> str:
        return f"{self.prefix}:events"

    @property
    def epoch_key(self) -> str:
        return f"{self.prefix}:events:epoch"

    def topic_key(self, topic: str) -> str:
        return f"{self.prefix}:events:topic:{validate_topic(topic)}"

    def _stream_keys(self, topics: tuple[str, ...] | None) -> dict[str, str]:
        """Stream name (topic, or ``*``) -> Redis key."""
        if topics is None:
            return {GLOBAL: self.global_key}
        return {t: self.topic_key(t) for t in topics}

    # -- append ------------------------------------------------------------------------

    def script_args(self, events: Sequence[Event]) -> tuple[list[str], list[str]]:
        """KEYS and ARGV for ``append_events(kb, ab)`` (:data:`APPEND_EVENTS_LUA`), whatever
        keys and arguments come before them; validates everything first (all or none)."""
        keys = [self.global_key, self.epoch_key]
        index: dict[str, int] = {}
        args = [str(self.maxlen), str(self.topic_maxlen), str(self.topic_ttl_ms), str(len(events))]
        for e in events:
            if not isinstance(e, Event):
                raise BadInput("bad_event", f"expected an Event, got {type(e).__name__}")
            if e.id is not None:
                raise BadInput("event_has_id", f"event already has id {e.id}; append it once")
            slots = []
            for topic in e.topics:
                if topic not in index:
                    keys.append(self.topic_key(topic))
                    index[topic] = len(keys)  # Lua KEYS are 1-based
                slots.append(str(index[topic]))
            args += [e.type, repr(float(e.t)), _TOPICS_ENCODER.encode(list(e.topics))]
            args += [dumps(e.payload), " ".join(slots)]
        return keys, args

    async def queue_append(self, pipe: Pipeline, events: Sequence[Event]) -> None:
        """Queue an atomic append of ``events`` on a ``MULTI`` pipeline (its reply, in the
        ``EXEC`` result, is the list of new ids). Used by the state store."""
        keys, args = self.script_args(events)
        # EVAL with the script's text, not the registered Script: redis-py runs a
        # SCRIPT EXISTS round trip before every pipeline that holds a Script object (a
        # third of a position write's Redis time). EVALSHA instead could fail with
        # NOSCRIPT inside MULTI after a Redis restart, leaving the rest of the
        # transaction applied without its events.
        pipe.eval(_APPEND_LUA, len(keys), *keys, *args)

    async def append_many(self, events: Sequence[Event]) -> list[EventId]:
        if not events:
            return []
        keys, args = self.script_args(events)
        with redis_errors():
            ids = await self._script(keys=keys, args=args)
        return [to_str(i) for i in ids]

    async def append(self, event: Event) -> EventId:
        (eid,) = await self.append_many([event])
        return eid

    # -- read --------------------------------------------------------------------------

    async def last_id(self) -> EventId:
        with redis_errors():
            last = await self.client.xrevrange(self.global_key, "+", "-", count=1)
        return to_str(last[0][0]) if last else ZERO_ID

    async def read_after(
        self,
        last_id: EventId | None = None,
        topics: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        return await self._read_after(last_id, topics, limit)

    async def _read_after(
        self,
        last_id: EventId | None,
        topics: Iterable[str] | None,
        limit: int | None,
        select: Select | None = None,
    ) -> list[Event]:
        names = validate_topics(topics)
        limit = validate_limit(limit)
        last_key = None if last_id is None else parse_event_id(last_id)
        streams = self._stream_keys(names)
        start = "-" if last_id is None else f"({last_id}"
        check_ttl = names is not None and last_key is not None and self.topic_ttl_ms > 0
        with redis_errors():
            async with self.client.pipeline(transaction=True) as pipe:
                for key in streams.values():
                    pipe.xrange(key, start, "+", count=limit)
                if check_ttl:
                    for key in streams.values():
                        pipe.exists(key)
                    pipe.get(self.epoch_key)
                    pipe.time()
                replies = await pipe.execute()
        batches = {
            name: [_entry_to_stored(e, name, select) for e in reply]
            for name, reply in zip(streams, replies, strict=False)
        }
        if check_ttl and last_id is not None and last_key is not None:
            # Expired events are older than now - TTL, newer than last_id and not older
            # than the log itself; if that window is empty nothing can have expired.
            secs, micros = replies[-1]
            now_ms = int(secs) * 1000 + int(micros) // 1000
            epoch = replies[-2]
            exists = replies[len(streams) : 2 * len(streams)]
            if epoch is None:  # nothing was ever appended
                return []
            oldest = max(last_key[0], parse_event_id(to_str(epoch))[0])
            if oldest + self.topic_ttl_ms < now_ms:
                for (name, batch), alive in zip(batches.items(), exists, strict=True):
                    recreated = bool(batch) and batch[0].prev == (0, 0)
                    if not alive or recreated:
                        raise EventsTrimmed(last_id, name)
        return merge_streams(batches, last_id, limit)

    async def subscribe(
        self,
        last_id: EventId | None = None,
        topics: Iterable[str] | None = None,
        *,
        batch: int = 256,
        select: Select | None = None,
    ) -> AsyncIterator[Event]:
        """Catch up with :meth:`read_after`, then ``XREAD BLOCK`` on the streams until
        something arrives, and repeat. Connection loss raises
        :class:`~tracking.errors.Unavailable`; resume with a new subscription from the
        last id received (nothing is missed, see the crash test)."""
        names = validate_topics(topics)
        validate_limit(batch)
        cursor = await self.last_id() if last_id is None else last_id
        parse_event_id(cursor)
        streams = self._stream_keys(names)
        name_of = {key: name for name, key in streams.items()}
        # What XREAD returns can be used as is unless topic streams may have expired
        # (only read_after checks that): one round trip per wake-up instead of two.
        direct = names is None or self.topic_ttl_ms == 0
        events = await self._read_after(cursor, names, batch, select)
        loop = asyncio.get_running_loop()
        last_read = loop.time()
        while True:
            for e in events:
                cursor = e.id or cursor
                yield e
            if len(events) >= batch:  # maybe more waiting
                events = await self._read_after(cursor, names, batch, select)
                continue
            if self.read_interval_s:  # caught up: let the next events gather first
                wait = last_read + self.read_interval_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                last_read = loop.time()
            with redis_errors():
                reply = await self.client.xread(
                    dict.fromkeys(streams.values(), cursor),
                    count=batch if direct else 1,
                    block=self.block_ms,
                )
            if not reply:
                events = []
            elif direct:
                events = merge_streams(_xread_batches(reply, name_of, select), cursor, batch)
            else:
                events = await self._read_after(cursor, names, batch, select)

"""The websocket hub: one log subscription per process, fanned out in memory.

Every API worker runs one :class:`Hub`. It follows the global event stream (Redis
Streams when several workers share Redis, so an event written by any worker reaches the
websockets of every worker) and hands each event to the local :class:`Subscription` of
every connection whose topics it names. Thousands of websockets therefore cost one
Redis reader, not thousands.

Slow consumers never slow anyone else: the hub only appends to a connection's bounded
queue (it never awaits a socket). Position events are latest-wins per courier, so a
slow map just skips stale fixes, and a process that falls behind the log sheds the
positions it reads too late (``stale_position_s``) rather than show ever older ones.
Everything else (status, ETA, route, delay) is queued, and a connection whose queue
overflows, or whose socket accepts nothing for ``send_timeout_s``, is closed with
:data:`CLOSE_FELL_BEHIND`. The client reconnects with ``last_event_id`` and the log
replays what it missed, so a status is delayed but never lost.

:func:`serve_channel` is the per-connection loop, framework-free: the API passes a
``send`` coroutine (a websocket's ``send_json``) and a :class:`Channel` that turns events
into the frames of one kind of subscriber (customer, courier, ops).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tracking.errors import BadEventId, EventsTrimmed, TrackingError, Unavailable
from tracking.events import Event, EventId, EventLog, IdKey, is_stub, parse_event_id
from tracking.tasks import cancel_and_wait

log = logging.getLogger("o2o.hub")

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
"""Too many malformed frames from the client."""
CLOSE_RESTART = 1012
"""The server is shutting down: reconnect (to another worker) with last_event_id."""
CLOSE_TRY_AGAIN = 1013
"""The store cannot answer right now: reconnect after a moment."""
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_FELL_BEHIND = 4408
"""The client could not keep up: reconnect with last_event_id to get what it missed."""

Frame = dict[str, Any]

READ_BATCH = 1024
"""Events per log read: a process catching up needs few round trips (and loop turns)."""
DEFAULT_STALE_POSITION_S = 5.0
"""A position read this long after it was appended is not fanned out (see Hub._wanted)."""


class ChannelClosed(Exception):
    """End a connection with a websocket close ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Subscription:
    """One connection's mailbox: a bounded queue plus latest-wins positions."""

    def __init__(
        self, topics: Iterable[str], *, max_queue: int = 1000, all_positions: bool = False
    ) -> None:
        self.topics: frozenset[str] = frozenset(topics)
        self.all_positions = all_positions
        self.max_queue = max_queue
        self.queue: deque[Event] = deque()
        self.positions: dict[str, Event] = {}
        self.overflowed: str | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.send_deadline = math.inf
        """While a frame is being sent: when (event loop clock) the hub's watchdog gives
        up on the client (see :meth:`Hub._watchdog`)."""
        self.task: asyncio.Task[Any] | None = None
        self.send_expired = False

    def offer(self, e: Event) -> None:
        if e.type == "courier_position":
            self.positions[str(e.payload.get("courier_id"))] = e
        elif len(self.queue) >= self.max_queue:
            self.overflowed = self.overflowed or "queue_full"
        else:
            self.queue.append(e)
        self._wake()

    def fail(self, reason: str) -> None:
        self.overflowed = self.overflowed or reason
        self._wake()

    async def wait(self, timeout: float) -> None:
        """Until the next :meth:`offer` or :meth:`fail`, or ``timeout`` seconds.

        A bare future and a timer handle: ``asyncio.wait_for`` on an ``Event`` made a
        task per wake-up, for every connection, several times a second.
        """
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Hub:
    """Fan-out of one process's event log subscription (see module docstring)."""

    def __init__(
        self,
        events: EventLog,
        *,
        retry_s: float = 0.5,
        stale_position_s: float | None = DEFAULT_STALE_POSITION_S,
        clock: Callable[[], float] = time.time,
        watchdog_s: float = 0.25,
    ) -> None:
        if stale_position_s is not None and not stale_position_s > 0:
            raise ValueError(f"stale_position_s must be > 0 or None, got {stale_position_s}")
        self.events = events
        self.retry_s = retry_s
        self.stale_position_s = stale_position_s
        self.clock = clock
        self._by_topic: dict[str, set[Subscription]] = {}
        self._position_watchers: set[Subscription] = set()
        self._subs: set[Subscription] = set()
        self._sending: set[Subscription] = set()
        """Connections whose socket is taking a frame right now (see ``_watchdog``)."""
        self.watchdog_s = watchdog_s
        self._task: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()
        self.dispatched = 0
        self.outages = 0
        self.connected = True
        self.lag_s = 0.0
        """How long before it was read the last event was appended (log ids carry the
        append time): how far this process's fan-out runs behind the log."""
        self._last_fanned: dict[str, float] = {}  # courier topic -> when (hub clock)
        self.positions_shed = 0
        """Positions not fanned out because they were read too late (see ``_wanted``)."""

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hub")
            self._watchdog_task = asyncio.create_task(self._watchdog(), name="hub-watchdog")

    async def stop(self) -> None:
        for task in (self._task, self._watchdog_task):
            if task is not None:
                await cancel_and_wait(task)
        self._task = self._watchdog_task = None

    async def _watchdog(self) -> None:
        """Cancel the sends of clients that have not taken a frame for their
        ``send_timeout_s`` (:func:`serve_channel` closes them with
        :data:`CLOSE_FELL_BEHIND`).

        One sweep every ``watchdog_s`` over the connections that are sending, instead of
        a timeout scheduled and cancelled around every frame: with thousands of
        customers that was a timer per frame, several thousand a second, for sends that
        nearly always complete at once (a socket's buffer takes a frame without waiting).
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.watchdog_s)
            now = loop.time()
            for sub in [s for s in self._sending if s.send_deadline < now]:
                if not sub.send_expired and sub.task is not None:
                    sub.send_expired = True
                    sub.task.cancel()

    async def _run(self) -> None:
        cursor: EventId | None = None
        while True:
            try:
                if cursor is None:
                    cursor = await self.events.last_id()
                    self.started.set()
                self.connected = True
                async for e in self.events.subscribe(cursor, batch=READ_BATCH, select=self._wanted):
                    cursor = e.id or cursor
                    if not is_stub(e):
                        self._dispatch(e)
            except Unavailable as err:
                if self.connected:
                    self.outages += 1
                    log.warning("event log unavailable (%s); retrying", err)
                self.connected = False
                await asyncio.sleep(self.retry_s)
            except EventsTrimmed:
                log.warning("hub fell behind retention; every connection must resync")
                for s in list(self._subs):
                    s.fail("resync")
                cursor = None
            except TrackingError as err:  # corrupt entry etc.: visible, never fatal
                log.error("hub read failed: %s", err)
                await asyncio.sleep(self.retry_s)

    def _wanted(self, event_type: str, topics: Sequence[str], key: IdKey) -> bool:
        """Whether any connection of this process gets the event (as :meth:`_dispatch`
        picks them): the log skips decoding the rest. Asked as the log reads a batch;
        the batch is dispatched before anyone can subscribe in between.

        A position read more than ``stale_position_s`` after it was appended is shed,
        unless nothing of its courier went out for that long: when this process falls
        behind the log (CPU saturated), fanning out every old fix would only keep it
        behind, and every map would show where couriers were, later and later. So each
        courier's watchers still get a fix at least every ``stale_position_s`` (late by
        the lag), the fixes in between are dropped (positions are latest-wins anyway),
        and the process catches up. Status, ETA, route and delay events are never shed.
        """
        now = self.clock()
        lag = self.lag_s = now - key[0] / 1000.0
        by_topic = self._by_topic
        if event_type != "courier_position":
            return any(t in by_topic for t in topics)
        if not (self._position_watchers or any(t in by_topic for t in topics)):
            return False
        if self.stale_position_s is not None and topics:
            courier = topics[0]  # a position's first topic is its courier's
            last = self._last_fanned.get(courier, -math.inf)
            if lag > self.stale_position_s and now - last < self.stale_position_s:
                self.positions_shed += 1
                return False
            self._last_fanned[courier] = now
        return True

    def _dispatch(self, e: Event) -> None:
        self.dispatched += 1
        targets: set[Subscription] = set()
        for t in e.topics:
            subs = self._by_topic.get(t)
            if subs:
                targets |= subs
        if e.type == "courier_position" and self._position_watchers:
            targets |= self._position_watchers
        for s in targets:
            s.offer(e)

    # -- subscriptions ----------------------------------------------------------------
    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def attach(self, sub: Subscription) -> None:
        self._subs.add(sub)
        for t in sub.topics:
            self._by_topic.setdefault(t, set()).add(sub)
        if sub.all_positions:
            self._position_watchers.add(sub)

    def detach(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        self._position_watchers.discard(sub)
        for t in sub.topics:
            subs = self._by_topic.get(t)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_topic[t]

    def retopic(self, sub: Subscription, topics: Iterable[str]) -> None:
        new = frozenset(topics)
        if new == sub.topics:
            return
        self.detach(sub)
        sub.topics = new
        self.attach(sub)

    def close_all(self, reason: str) -> None:
        for s in list(self._subs):
            s.fail(reason)


class Channel(Protocol):
    """What one kind of subscriber sees (customer, courier, ops)."""

    topics: frozenset[str]
    all_positions: bool

    async def opening(self, last_event_id: EventId | None) -> tuple[list[Frame], EventId]:
        """Frames to send first (a snapshot, or what was missed since ``last_event_id``)
        and the id they bring the client up to."""
        ...

    def frame(self, e: Event) -> Frame | None:
        """The frame for a live event, or None if this subscriber does not see it."""
        ...

    async def receive(self, message: Any) -> Frame | None:
        """Handle a frame from the client; the reply to send, if any."""
        ...


PACE_SLACK = 0.1
"""Over any stretch of time a subscriber gets at most one position per ``(1 - PACE_SLACK)
x position_interval_s`` (plus one: a frame may go half an interval early), so about one
per interval; the slack lets the schedule catch up after a stall (:func:`serve_channel`)."""


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    position_interval_s: float = 1.0
    """Positions are coalesced to about one frame per this interval (:data:`PACE_SLACK`)."""
    heartbeat_s: float = 15.0
    send_timeout_s: float = 10.0
    max_queue: int = 1000


async def serve_channel(
    hub: Hub,
    channel: Channel,
    send: Callable[[Frame], Awaitable[None]],
    *,
    last_event_id: EventId | None = None,
    limits: ChannelLimits | None = None,
) -> None:
    """Push one channel's frames until the client goes or falls behind.

    Raises :class:`ChannelClosed` with the close code to use.
    """
    lim = limits or ChannelLimits()
    if last_event_id is not None:
        try:
            parse_event_id(last_event_id)
        except BadEventId as bad:
            raise ChannelClosed(CLOSE_BAD_REQUEST, str(bad)) from None
    await hub.started.wait()
    sub = Subscription(channel.topics, max_queue=lim.max_queue, all_positions=channel.all_positions)
    sub.task = asyncio.current_task()
    hub.attach(sub)  # before the snapshot: nothing can fall between the two
    loop = asyncio.get_running_loop()
    sending = hub._sending

    async def push(frame: Frame) -> None:
        # The hub's watchdog cancels this send if the client takes nothing for
        # send_timeout_s (see Hub._watchdog; the except clause below closes it).
        sub.send_deadline = loop.time() + lim.send_timeout_s
        sending.add(sub)
        try:
            await send(frame)
        finally:
            sending.discard(sub)

    try:
        frames, cursor = await channel.opening(last_event_id)
        hub.retopic(sub, channel.topics)  # the opening may have found a courier to follow
        for opening in frames:
            await push(opening)
        sent: IdKey = parse_event_id(cursor)
        # Positions are paced by a virtual schedule (GCRA): each frame books the next
        # slot one pace after the later of its own slot and now, and a fix may go up
        # to half an interval early. A courier posting at the interval with jitter is
        # forwarded at once; pacing by the last *send* time instead ratchets (every fix
        # that arrives a little early waits, pushing the phase later for good). The
        # pace is PACE_SLACK shorter than the interval: at exactly the courier's rate,
        # one late fix (a stall) moved the schedule later for the rest of the
        # connection, and once a stall had exceeded half an interval every later fix
        # waited out the difference (about 200 ms at the 99th percentile of every
        # 10-s slice at 1,500 couriers, docs/benchmarks.md); with the slack the
        # schedule catches up by a tenth of an interval per frame.
        slot = -math.inf
        early = lim.position_interval_s / 2
        pace = lim.position_interval_s * (1.0 - PACE_SLACK)
        last_frame = time.monotonic()
        while True:
            if sub.overflowed == "restart":
                raise ChannelClosed(CLOSE_RESTART, "server restarting; reconnect")
            if sub.overflowed:
                raise ChannelClosed(CLOSE_FELL_BEHIND, sub.overflowed)
            while sub.queue:
                e: Event = sub.queue.popleft()
                key = parse_event_id(e.id or "0-0")
                if key <= sent:
                    continue  # already in the opening frames
                sent = key
                f: Frame | None = channel.frame(e)
                if channel.topics != sub.topics:
                    hub.retopic(sub, channel.topics)
                if f is not None:
                    await push(f)
                    last_frame = time.monotonic()
            now = time.monotonic()
            if sub.positions and now >= slot - early:
                batch = list(sub.positions.values())
                if len(batch) > 1:  # an order's channel follows one courier: usually one
                    batch.sort(key=lambda e: parse_event_id(e.id or "0-0"))
                sub.positions.clear()
                slot = max(slot, now) + pace
                for pe in batch:
                    f = channel.frame(pe)
                    if f is not None:
                        await push(f)
                        last_frame = time.monotonic()
                continue
            if now - last_frame >= lim.heartbeat_s:
                await push({"type": "heartbeat", "t": time.time()})
                last_frame = time.monotonic()
            wait = lim.heartbeat_s - (now - last_frame)
            if sub.positions:
                wait = min(wait, slot - early - now)
            if sub.queue or sub.overflowed:
                continue
            await sub.wait(max(0.01, wait))
    except asyncio.CancelledError:
        task = sub.task
        if sub.send_expired and task is not None and task.uncancel() == 0:
            raise ChannelClosed(CLOSE_FELL_BEHIND, "client not reading") from None
        raise
    finally:
        sending.discard(sub)
        hub.detach(sub)

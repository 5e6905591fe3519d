"""The dispatcher inside the live service, driven by the event log.

Exactly one process leads (:class:`Leadership`: always this one for the memory store, a
Redis lease for several workers). The leader rebuilds a :class:`dispatch.Dispatcher` from
the store (on-shift couriers, open orders), then follows the log from the id it read
*before* the snapshot, so nothing that happened meanwhile is missed. The events users
cause (order placed, cancelled, picked up, delivered; shift changes; positions) go in;
what the dispatcher decides (assignments, routes, ETAs, delays) goes out as store writes
with their events, which the hub pushes to couriers, customers and ops. The leader skips
the events it wrote itself.

The dispatcher is synchronous and a re-plan takes up to its solve limit; it runs in a
child process by default (:mod:`tracking.dispatch_core`: OR-Tools holds the GIL for a
whole re-plan, which froze the leading worker), one call at a time. Positions arrive at
phone rate; one per courier per few seconds is decoded, and only each courier's latest
is sent, once per tick.

Any failure of the store (Redis gone) ends the lead; the loop then waits for the store,
takes the lease again and rebuilds from the store, which is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Protocol

from dispatch.dispatcher import (
    DelayPredicted,
    DispatchSettings,
    EtaChanged,
    OrderAssigned,
    OrderUnassigned,
    RouteChanged,
)
from dispatch.dispatcher import Event as DispatchEvent
from dispatch.model import Order, Place, Route
from geo.travel import GreatCircleModel, TravelTimeModel
from tracking.codec import estimate_from_dict, route_to_dict
from tracking.dispatch_core import (
    STATS,
    Outcome,
    Positions,
    ProcessRunner,
    Runner,
    ThreadRunner,
)
from tracking.errors import Conflict, NotFound, TrackingError
from tracking.events import (
    OPS_TOPIC,
    Event,
    EventLog,
    IdKey,
    courier_topic,
    is_stub,
    order_topic,
)
from tracking.live import SETTINGS_DOC, order_event, settings_from_stored
from tracking.store import StateStore
from tracking.tasks import cancel_and_wait

log = logging.getLogger("o2o.dispatch")

SKIPPED = frozenset(
    {
        "order_assigned",
        "order_unassigned",
        "route_updated",
        "plan_updated",
        "eta_updated",
        "delay",
        "route_acknowledged",
        "zones_updated",
    }
)

"""Event types the leader writes itself or has no use for."""


DEFAULT_POSITION_EVERY_S = 5.0
"""How often the dispatcher takes each courier's position (see :class:`PositionSampler`)."""


class PositionSampler:
    """Which log events the leader decodes: not its own decisions (:data:`SKIPPED`), and
    of each courier's positions one per ``every_s`` of log time.

    Phones post a fix a second; the dispatcher uses positions to re-time ETAs, which it
    re-announces only when they move by ``eta_change_s`` (30 s), and to start re-plans
    from where couriers are. Decoding every fix for it was about a sixth of the leading
    worker's CPU at 2,000 couriers (4.5 % after this), to move a courier's position by a
    few metres. The rest stay undecoded stubs. A courier who stops posting is seen where
    they were at most ``every_s`` before their last fix. 0 takes every fix.
    """

    def __init__(self, every_s: float = DEFAULT_POSITION_EVERY_S) -> None:
        if not every_s >= 0:
            raise ValueError(f"every_s must be >= 0, got {every_s}")
        self.every_ms = every_s * 1000.0
        self._taken: dict[str, float] = {}  # courier topic -> log time (ms) of its last

    def __call__(self, event_type: str, topics: Sequence[str], key: IdKey) -> bool:
        if event_type in SKIPPED:
            return False
        if event_type != "courier_position" or not topics or not self.every_ms:
            return True
        courier, at = topics[0], key[0]  # a position's first topic is its courier's
        if at - self._taken.get(courier, -math.inf) < self.every_ms:
            return False
        self._taken[courier] = at
        return True


class Leadership(Protocol):
    """Who runs the dispatcher: at most one process at a time."""

    async def acquire(self) -> None:
        """Wait until this process leads."""
        ...

    async def renew(self) -> bool:
        """Extend the lead; False when it was lost (another process took over)."""
        ...

    @property
    def renew_every_s(self) -> float:
        """How often the leader extends its lead (well within the lease)."""
        ...

    async def release(self) -> None: ...


class SoleLeader:
    """One process, one dispatcher (the memory store)."""

    async def acquire(self) -> None:
        return None

    async def renew(self) -> bool:
        return True

    @property
    def renew_every_s(self) -> float:
        return 60.0

    async def release(self) -> None:
        return None


class LostLead(Exception):
    pass


class DispatchLoop:
    """Runs the dispatcher while this process leads (see module docstring)."""

    def __init__(
        self,
        store: StateStore,
        *,
        travel: TravelTimeModel | None = None,
        settings: DispatchSettings | None = None,
        leadership: Leadership | None = None,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
        reader_log: EventLog | None = None,
        isolate: bool = True,
        position_every_s: float = DEFAULT_POSITION_EVERY_S,
    ) -> None:
        PositionSampler(position_every_s)  # a bad interval fails here, not at the first lead
        self.position_every_s = position_every_s
        self.store = store
        self.reader_log = reader_log or store.events
        self.travel = travel or GreatCircleModel.constant_speed(6.0)
        self.base_settings = settings or DispatchSettings()
        self.leadership = leadership or SoleLeader()
        self.clock = clock
        self.tick_s = tick_s
        self.isolate = isolate
        """Run the dispatcher in a child process (see :mod:`tracking.dispatch_core`)."""
        self.runner: Runner | None = None
        self.leading = False
        self.errors = 0
        self.applied = 0
        self.dispatcher_stats: dict[str, float] = dict.fromkeys(STATS, 0.0)
        """The leading dispatcher's re-plan counters as of its last tick."""
        self._positions: Positions = {}

    async def run(self) -> None:
        """Lead whenever possible, forever (cancel to stop)."""
        try:
            while True:
                await self.leadership.acquire()
                try:
                    await self._lead_while_leased()
                except LostLead:
                    log.warning("dispatch lead lost; waiting to lead again")
                except TrackingError as e:
                    self.errors += 1
                    log.warning("dispatch loop stopped (%s); rebuilding from the store", e)
                    await asyncio.sleep(1.0)
                finally:
                    self.leading = False
                    if self.runner is not None:
                        runner, self.runner = self.runner, None
                        await asyncio.shield(runner.close())
        finally:
            with contextlib.suppress(Exception):
                await self.leadership.release()

    async def _lead_while_leased(self) -> None:
        """Lead, renewing the lease on its own schedule; stop at once when it is lost.

        Renewing between dispatcher calls instead let a long re-plan (seconds of solver
        time in a niced child process on a busy machine) outlast the lease: the lead was
        lost and the dispatcher rebuilt, again and again, under load.
        """
        lead = asyncio.create_task(self._lead(), name="dispatch-lead")
        keep = asyncio.create_task(self._keep_lease(), name="dispatch-lease")
        try:
            done, _ = await asyncio.wait({lead, keep}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(keep)
            await cancel_and_wait(lead, 10.0)  # it stops its log reader first
        for task in done:
            task.result()  # LostLead, or why the lead ended

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self.leadership.renew_every_s)
            if not await self.leadership.renew():
                raise LostLead()

    async def _lead(self) -> None:
        log_ = self.reader_log
        cursor = await log_.last_id()
        settings = settings_from_stored(await self.store.get_doc(SETTINGS_DOC), self.base_settings)
        couriers = []
        for c in await self.store.list_couriers():
            if not c.on_shift:
                continue
            with contextlib.suppress(NotFound):
                est = await self.store.get_position(c.id)
                if est.t > c.position_t:
                    c = replace(
                        c,
                        position=Place((est.lat, est.lon)),
                        position_t=est.t,
                        position_radius_m=est.radius68,
                    )
            couriers.append(c)
        orders = await self.store.list_orders(open_only=True)
        orders = [
            o
            if o.courier_id is None or any(c.id == o.courier_id for c in couriers)
            else o.transition("placed", self.clock())
            for o in orders
            if not (o.status == "picked_up" and o.courier_id not in {c.id for c in couriers})
        ]
        args = (self.travel, settings, self.base_settings, self.clock())
        self.runner = core = ProcessRunner(*args) if self.isolate else ThreadRunner(*args)
        self.leading = True
        self._positions.clear()
        await self._take(await core.call("load", couriers, orders))
        log.info("leading dispatch: %d couriers, %d open orders", len(couriers), len(orders))
        queue: asyncio.Queue[Event] = asyncio.Queue()
        # Its own decisions come back through the log too: not decoded (see SKIPPED),
        # nor are most positions (see PositionSampler).
        events = log_.subscribe(cursor, select=PositionSampler(self.position_every_s))
        reader = asyncio.create_task(self._read(events, queue), name="dispatch-reader")
        next_tick = time.monotonic()
        try:
            while True:
                timeout = max(0.0, next_tick - time.monotonic())
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    event = None
                if reader.done():
                    reader.result()  # re-raises the reader's failure
                if event is not None:
                    await self._apply(core, event)
                    continue
                next_tick = time.monotonic() + self.tick_s
                moved, self._positions = self._positions, {}
                await self._take(await core.call("tick", self.clock(), moved))
        finally:
            await cancel_and_wait(reader)

    @staticmethod
    async def _read(events: AsyncIterator[Event], queue: asyncio.Queue[Event]) -> None:
        async for e in events:
            if e.type not in SKIPPED and not is_stub(e):
                queue.put_nowait(e)

    async def _apply(self, core: Runner, e: Event) -> None:
        """Feed one user event to the dispatcher; a refused one is logged, not fatal."""
        if e.type == "courier_position":
            try:
                est = estimate_from_dict(e.payload["estimate"])
                cid = str(e.payload["courier_id"])
            except (TrackingError, KeyError, TypeError) as err:
                self.errors += 1
                log.warning("dispatcher refused %s %s: %s", e.type, e.id, err)
                return
            self._positions[cid] = (Place((est.lat, est.lon)), est.t, est.radius68)
            return
        await self._take(await core.call("apply", e))

    async def _take(self, outcome: Outcome) -> None:
        if outcome.stats is not None:
            self.dispatcher_stats.update(outcome.stats)
        for why in outcome.refused:
            self.errors += 1
            log.warning("dispatcher refused %s", why)
        self.applied += 1
        await self._publish(outcome.events)

    async def _publish(self, events: Sequence[DispatchEvent]) -> None:
        """Write what the dispatcher decided, with the events users will see."""
        routes: dict[str, Route | None] = {}
        notes: list[Event] = []
        for ev in events:
            if isinstance(ev, OrderAssigned):
                await self._reassign(ev.order_id, ev.courier_id, ev.previous_courier_id, ev.t)
            elif isinstance(ev, OrderUnassigned):
                await self._unassign(ev.order_id, ev.reason, ev.t)
            elif isinstance(ev, RouteChanged):
                routes[ev.courier_id] = ev.route
            elif isinstance(ev, EtaChanged):
                notes.append(
                    Event(
                        "eta_updated",
                        (order_topic(ev.order_id),),
                        {
                            "order_id": ev.order_id,
                            "pickup_eta": ev.pickup_eta,
                            "dropoff_eta": ev.dropoff_eta,
                        },
                        ev.t,
                    )
                )
            elif isinstance(ev, DelayPredicted):
                notes.append(
                    Event(
                        "delay",
                        (order_topic(ev.order_id), OPS_TOPIC),
                        {
                            "order_id": ev.order_id,
                            "dropoff_eta": ev.dropoff_eta,
                            "promised_by": ev.promised_by,
                            "delay_s": ev.delay_s,
                        },
                        ev.t,
                    )
                )
        if routes:
            now = self.clock()
            route_events = [
                Event(
                    "route_updated",
                    (courier_topic(cid), OPS_TOPIC, *(order_topic(o) for o in r.order_ids)),
                    {"courier_id": cid, "route": route_to_dict(r)},
                    now,
                )
                for cid, r in routes.items()
                if r is not None
            ]
            await self.store.put_routes(routes, events=route_events)
        if notes:
            await self.store.events.append_many(notes)

    async def _reassign(self, order_id: str, courier_id: str, prev: str | None, t: float) -> None:
        def change(o: Order) -> Order:
            if o.status not in ("placed", "assigned"):
                raise Conflict("stale_assignment", f"order {o.id} is {o.status}")
            return o.transition("assigned", t, courier_id)

        try:
            await self.store.update_order(
                order_id,
                change,
                events=lambda old, new: [
                    order_event("order_assigned", new, t, previous_courier_id=old.courier_id)
                ],
            )
        except (Conflict, NotFound) as e:
            log.info("assignment of %s skipped: %s", order_id, e)

    async def _unassign(self, order_id: str, reason: str, t: float) -> None:
        def change(o: Order) -> Order:
            if o.status != "assigned":
                raise Conflict("stale_unassignment", f"order {o.id} is {o.status}")
            return o.transition("placed", t)

        try:
            await self.store.update_order(
                order_id,
                change,
                events=lambda old, new: [
                    order_event(
                        "order_unassigned",
                        new,
                        t,
                        reason=reason,
                        previous_courier_id=old.courier_id,
                    )
                ],
            )
        except (Conflict, NotFound) as e:
            log.info("unassignment of %s skipped: %s", order_id, e)

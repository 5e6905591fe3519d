"""What each kind of subscriber sees: the customer's order, the courier's route, ops.

Frames are JSON objects with ``type`` and, for anything taken from the log, the event
``id`` to resume from (``?last_event_id=``; resume from the highest id received, since
positions are coalesced and may arrive after a newer status). Channels filter by content
as well as by topic: a customer follows their courier's topic for positions but never
sees the courier's other orders, stops or customers.

Customer (``order``): ``snapshot`` first (order, courier position, ETAs, own stops), then
``status`` (placed, assigned, picked_up, delivered, cancelled), ``position``, ``eta``,
``delay`` and ``route`` (how many stops before theirs, their own stops with ETAs).
Courier: ``snapshot`` (courier, route), then ``route`` (all stops in order, each with
order id, kind, place and ETA; acknowledge with ``{"type": "ack", "id": <route id>}``),
``order`` (an order of theirs changed, e.g. cancelled) and ``ack``. Ops: ``snapshot``
(fleet, positions, open orders), then ``order``, ``courier``, ``position``, ``route``,
``delay``, ``ack`` and ``config``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from dispatch.model import Order, Route, Stop
from tracking.codec import courier_to_dict, order_from_dict
from tracking.errors import EventsTrimmed, NotFound, TrackingError
from tracking.events import (
    OPS_TOPIC,
    Event,
    EventId,
    EventLog,
    courier_topic,
    order_topic,
)
from tracking.hub import Frame
from tracking.store import StateStore

BACKLOG_PAGE = 500
ORDER_TYPES = frozenset(
    {
        "order_placed",
        "order_assigned",
        "order_unassigned",
        "order_picked_up",
        "order_delivered",
        "order_cancelled",
    }
)


def order_json(o: Order) -> dict[str, Any]:
    """The public form of an order (what the API returns)."""
    return {
        "id": o.id,
        "status": o.status,
        "mode": o.mode,
        "pickup": {"lat": o.pickup.point[0], "lon": o.pickup.point[1], "id": o.pickup.id},
        "dropoff": {"lat": o.dropoff.point[0], "lon": o.dropoff.point[1], "id": o.dropoff.id},
        "placed_at": o.placed_at,
        "ready_at": o.ready_at,
        "promised_by": o.promised_by,
        "size": o.size,
        "courier_id": o.courier_id,
        "customer_id": o.customer_id,
        "picked_up_at": o.picked_up_at,
        "delivered_at": o.delivered_at,
        "cancelled_at": o.cancelled_at,
    }


def stop_json(s: Stop) -> dict[str, Any]:
    return {
        "order_id": s.order_id,
        "kind": s.kind,
        "place": {"lat": s.place.point[0], "lon": s.place.point[1], "id": s.place.id},
        "eta": s.eta,
        "arrival": s.arrival,
        "departure": s.departure,
    }


def route_json(r: Route | None, courier_id: str) -> dict[str, Any]:
    stops = [] if r is None else [stop_json(s) for s in r.stops]
    return {"courier_id": courier_id, "stops": stops}


def position_json(payload: Mapping[str, Any]) -> dict[str, Any]:
    est = payload["estimate"]
    return {
        "courier_id": payload["courier_id"],
        "lat": est["lat"],
        "lon": est["lon"],
        "radius_m": est["radius68"],
        "radius95_m": est["radius95"],
        "t": est["t"],
        "velocity": est["velocity"],
        "h3": est["h3"],
    }


def _route_from_payload(payload: Mapping[str, Any]) -> Route:
    from tracking.codec import route_from_dict

    return route_from_dict(payload["route"])


async def read_backlog(log: EventLog, last_id: EventId, topics: Iterable[str]) -> list[Event]:
    """Everything after ``last_id`` on ``topics``, page by page."""
    out: list[Event] = []
    cursor = last_id
    names = list(topics)
    while True:
        page = await log.read_after(cursor, names, BACKLOG_PAGE)
        out += page
        if len(page) < BACKLOG_PAGE:
            return out
        cursor = page[-1].id or cursor


async def latest(log: EventLog, topic: str, type_: str) -> Event | None:
    """The newest retained event of ``type_`` on ``topic`` (for snapshots)."""
    with contextlib.suppress(EventsTrimmed):
        for e in reversed(await log.read_after(None, [topic])):
            if e.type == type_:
                return e
    return None


Clock = Callable[[], float]


class OrderChannel:
    """A customer's (or a share link's) live view of one order."""

    all_positions = False

    def __init__(self, store: StateStore, order_id: str, clock: Clock = time.time) -> None:
        self.store = store
        self.clock = clock
        self.order_id = order_id
        self.courier_id: str | None = None
        self.topics: frozenset[str] = frozenset({order_topic(order_id)})

    def _follow(self, order: Order) -> None:
        self.courier_id = order.courier_id if order.is_open else None
        topics = {order_topic(self.order_id)}
        if self.courier_id is not None:
            topics.add(courier_topic(self.courier_id))
        self.topics = frozenset(topics)

    async def opening(self, last_event_id: EventId | None) -> tuple[list[Frame], EventId]:
        log = self.store.events
        if last_event_id is not None:
            with contextlib.suppress(EventsTrimmed):
                backlog = await read_backlog(log, last_event_id, [order_topic(self.order_id)])
                order = await self.store.get_order(self.order_id)
                frames = [f for e in backlog if (f := self.frame(e)) is not None]
                cursor = backlog[-1].id if backlog and backlog[-1].id else last_event_id
                self._follow(order)
                pos = await self._position(cursor)
                return frames + ([pos] if pos else []), cursor
        cursor = await log.last_id()
        order = await self.store.get_order(self.order_id)
        self._follow(order)
        route = None
        if order.courier_id is not None and order.is_open:
            with contextlib.suppress(TrackingError):
                route = await self.store.get_route(order.courier_id)
        pos = await self._position(cursor)
        delay = await latest(log, order_topic(self.order_id), "delay") if order.is_open else None
        snapshot: Frame = {
            "type": "snapshot",
            "id": cursor,
            "now": self.clock(),
            "order": order_json(order),
            "delay": None if delay is None else {"id": delay.id, "t": delay.t, **delay.payload},
            "courier": None if pos is None else {k: v for k, v in pos.items() if k != "type"},
            **self._route_part(route),
        }
        return [snapshot], cursor

    async def _position(self, cursor: EventId) -> Frame | None:
        if self.courier_id is None:
            return None
        try:
            est = await self.store.get_position(self.courier_id)
        except NotFound:
            return None
        return {
            "type": "position",
            "id": cursor,
            "courier_id": self.courier_id,
            "lat": est.lat,
            "lon": est.lon,
            "radius_m": est.radius68,
            "radius95_m": est.radius95,
            "t": est.t,
            "velocity": list(est.velocity),
            "h3": est.h3,
        }

    def _route_part(self, route: Route | None) -> dict[str, Any]:
        """The customer's share of a route: their stops and how many come first."""
        if route is None:
            return {"eta": {"pickup": None, "dropoff": None}, "stops_before": None, "stops": []}
        mine = [s for s in route.stops if s.order_id == self.order_id]
        first = next(
            (i for i, s in enumerate(route.stops) if s.order_id == self.order_id), len(route.stops)
        )
        last = max(
            (i for i, s in enumerate(route.stops) if s.order_id == self.order_id), default=-1
        )
        pickup = route.stop_of(self.order_id, "pickup")
        dropoff = route.stop_of(self.order_id, "dropoff")
        return {
            "eta": {
                "pickup": None if pickup is None else pickup.eta,
                "dropoff": None if dropoff is None else dropoff.eta,
            },
            "stops_before": first,
            "stops_before_dropoff": max(0, last - len(mine) + 1) if last >= 0 else None,
            "stops": [stop_json(s) for s in mine],
        }

    def frame(self, e: Event) -> Frame | None:
        p = e.payload
        if e.type in ORDER_TYPES:
            if p.get("order", {}).get("id") != self.order_id:
                return None  # the courier's other orders are not this customer's business
            order = order_from_dict(p["order"])
            self._follow(order)
            f: Frame = {"type": "status", "id": e.id, "t": e.t, "status": order.status}
            f["order"] = order_json(order)
            for k in ("reason", "override_reason"):
                if p.get(k):
                    f[k] = p[k]
            return f
        if e.type == "courier_position":
            if p.get("courier_id") != self.courier_id:
                return None
            return {"type": "position", "id": e.id, **position_json(p)}
        if e.type == "eta_updated" and p.get("order_id") == self.order_id:
            return {
                "type": "eta",
                "id": e.id,
                "t": e.t,
                "pickup_eta": p.get("pickup_eta"),
                "dropoff_eta": p.get("dropoff_eta"),
            }
        if e.type == "delay" and p.get("order_id") == self.order_id:
            return {
                "type": "delay",
                "id": e.id,
                "t": e.t,
                "delay_s": p["delay_s"],
                "dropoff_eta": p["dropoff_eta"],
                "promised_by": p["promised_by"],
            }
        if e.type == "route_updated" and p.get("courier_id") == self.courier_id:
            return {
                "type": "route",
                "id": e.id,
                "t": e.t,
                **self._route_part(_route_from_payload(p)),
            }
        return None

    async def receive(self, message: Any) -> Frame | None:
        return _ping_or_error(message)


class CourierChannel:
    """A courier's route and orders; acknowledgements come back on it."""

    all_positions = False

    def __init__(
        self,
        store: StateStore,
        courier_id: str,
        acknowledge: Callable[[str, str], Awaitable[Any]],
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.clock = clock
        self.courier_id = courier_id
        self.acknowledge = acknowledge
        self.topics: frozenset[str] = frozenset({courier_topic(courier_id)})
        self.route_ids: set[str] = set()

    async def opening(self, last_event_id: EventId | None) -> tuple[list[Frame], EventId]:
        log = self.store.events
        if last_event_id is not None:
            with contextlib.suppress(EventsTrimmed):
                backlog = await read_backlog(log, last_event_id, self.topics)
                frames = [f for e in backlog if (f := self.frame(e)) is not None]
                cursor = backlog[-1].id if backlog and backlog[-1].id else last_event_id
                return frames, cursor
        cursor = await log.last_id()
        courier = await self.store.get_courier(self.courier_id)
        route = await self.store.get_route(self.courier_id)
        self.route_ids.add(cursor)
        acked = await latest(log, courier_topic(self.courier_id), "route_acknowledged")
        last_route = await latest(log, courier_topic(self.courier_id), "route_updated")
        if last_route is not None and last_route.id is not None:
            self.route_ids.add(last_route.id)  # an ack of it may come after a reconnect
        return [
            {
                "type": "snapshot",
                "id": cursor,
                "now": self.clock(),
                "route_id": None if last_route is None else last_route.id,
                "acknowledged_route_id": None if acked is None else acked.payload.get("route_id"),
                "courier": courier_to_dict(courier),
                "route": route_json(route, self.courier_id),
            }
        ], cursor

    def frame(self, e: Event) -> Frame | None:
        p = e.payload
        if e.type == "route_updated" and p.get("courier_id") == self.courier_id:
            assert e.id is not None
            self.route_ids.add(e.id)
            route = _route_from_payload(p)
            return {"type": "route", "id": e.id, "t": e.t, **route_json(route, self.courier_id)}
        if e.type in ORDER_TYPES:
            order = order_from_dict(p["order"])
            if order.courier_id != self.courier_id and p.get("previous_courier_id") != (
                self.courier_id
            ):
                return None
            return {
                "type": "order",
                "id": e.id,
                "t": e.t,
                "event": e.type,
                "order": order_json(order),
            }
        if e.type == "route_acknowledged" and p.get("courier_id") == self.courier_id:
            return {"type": "ack", "id": e.id, "route_id": p.get("route_id"), "ok": True}
        if e.type == "courier_updated":
            return {"type": "courier", "id": e.id, "courier": p["courier"]}
        if e.type == "courier_position" and p.get("courier_id") == self.courier_id:
            return {"type": "position", "id": e.id, **position_json(p)}
        return None

    async def receive(self, message: Any) -> Frame | None:
        if isinstance(message, dict) and message.get("type") == "ack":
            rid = message.get("route_id", message.get("id"))
            if not isinstance(rid, str) or rid not in self.route_ids:
                return _error("unknown_route", "ack must name the id of a route frame you got")
            await self.acknowledge(self.courier_id, rid)
            return None  # the ack frame comes back through the log
        return _ping_or_error(message)


class OpsChannel:
    """The fleet and every open order; optionally positions only in some H3 cells."""

    def __init__(
        self, store: StateStore, cell_topics: Iterable[str] | None = None, clock: Clock = time.time
    ) -> None:
        self.store = store
        self.clock = clock
        cells = frozenset(cell_topics or ())
        self.all_positions = not cells
        self.topics: frozenset[str] = frozenset({OPS_TOPIC}) | cells

    async def opening(self, last_event_id: EventId | None) -> tuple[list[Frame], EventId]:
        log = self.store.events
        if last_event_id is not None:
            with contextlib.suppress(EventsTrimmed):
                backlog = await read_backlog(log, last_event_id, [OPS_TOPIC])
                frames = [f for e in backlog if (f := self.frame(e)) is not None]
                cursor = backlog[-1].id if backlog and backlog[-1].id else last_event_id
                return frames, cursor
        cursor = await log.last_id()
        couriers = await self.store.list_couriers()
        positions = {}
        for c in couriers:
            with contextlib.suppress(NotFound):
                est = await self.store.get_position(c.id)
                positions[c.id] = {
                    "lat": est.lat,
                    "lon": est.lon,
                    "radius_m": est.radius68,
                    "t": est.t,
                    "h3": est.h3,
                }
        orders = await self.store.list_orders(open_only=True)
        plan = await self.store.get_plan()
        open_ids = {o.id for o in orders}
        delays: dict[str, Frame] = {}
        with contextlib.suppress(EventsTrimmed):
            for e in await log.read_after(None, [OPS_TOPIC]):
                oid = e.payload.get("order_id")
                if e.type == "delay" and oid in open_ids:
                    delays[str(oid)] = {"id": e.id, "t": e.t, **e.payload}
        routes = (
            {}
            if plan is None
            else {cid: route_json(r, cid) for cid, r in plan.routes.items() if r.stops}
        )
        return [
            {
                "type": "snapshot",
                "id": cursor,
                "now": self.clock(),
                "routes": routes,
                "delays": list(delays.values()),
                "couriers": [courier_to_dict(c) for c in couriers],
                "positions": positions,
                "orders": [order_json(o) for o in orders],
            }
        ], cursor

    def frame(self, e: Event) -> Frame | None:
        p = e.payload
        if e.type in ORDER_TYPES:
            f: Frame = {
                "type": "order",
                "id": e.id,
                "t": e.t,
                "event": e.type,
                "order": order_json(order_from_dict(p["order"])),
            }
            for k in ("reason", "override_reason", "distance_m"):
                if p.get(k) is not None:
                    f[k] = p[k]
            return f
        if e.type == "courier_position":
            return {"type": "position", "id": e.id, **position_json(p)}
        if e.type == "courier_updated":
            return {"type": "courier", "id": e.id, "courier": p["courier"]}
        if e.type == "route_updated":
            route = _route_from_payload(p)
            return {"type": "route", "id": e.id, "t": e.t, **route_json(route, route.courier_id)}
        if e.type == "delay":
            return {"type": "delay", "id": e.id, "t": e.t, **p}
        if e.type == "route_acknowledged":
            return {"type": "ack", "id": e.id, "t": e.t, **p}
        if e.type in ("zones_updated", "settings_updated"):
            return {"type": "config", "id": e.id, "t": e.t, "event": e.type}
        return None

    async def receive(self, message: Any) -> Frame | None:
        return _ping_or_error(message)


def _error(reason: str, detail: str) -> Frame:
    return {"type": "error", "reason": reason, "detail": detail}


def _ping_or_error(message: Any) -> Frame:
    if isinstance(message, dict) and message.get("type") == "ping":
        return {"type": "pong"}
    return _error("bad_frame", 'frames must be JSON objects like {"type": "ping"}')

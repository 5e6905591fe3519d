"""JSON codec for the domain types the tracking layer stores and sends.

Explicit ``x_to_dict`` / ``x_from_dict`` pairs rather than ``dataclasses.asdict`` or
pickle: the stored and wire form is a contract (other processes, other versions and the
browser read it), so it must not change when a dataclass grows a private field, and
decoding must validate rather than trust. Pickle is out: it executes code on load and
ties stored data to class layouts.

Rules:

* Tuples become JSON arrays and come back as tuples; ``dict`` keys are strings.
* Floats round-trip exactly (``json`` writes ``repr``); NaN and infinities are refused
  on encode (:class:`~tracking.errors.BadInput`), since they are not JSON.
* Decoding ignores unknown keys (a newer writer may add fields during a rolling deploy)
  but refuses missing or ill-typed ones with :class:`~tracking.errors.CorruptData`
  naming the object and the field. Domain validation (``Order.__post_init__`` etc.)
  runs too, and its errors are reported as corrupt data as well.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import orjson

from dispatch.model import (
    DELIVERY_MODES,
    ORDER_STATUSES,
    Courier,
    DeliveryMode,
    DispatchError,
    Order,
    OrderStatus,
    Place,
    Plan,
    Route,
    Stop,
    StopKind,
)
from geo.estimate import Estimate
from geo.observations import KINDS, Kind
from tracking.errors import BadInput, CorruptData
from tracking.events import EVENT_TYPES, Event, EventType, parse_event_id

T = TypeVar("T")

STOP_KINDS: tuple[StopKind, ...] = ("pickup", "dropoff")


# -- JSON text ---------------------------------------------------------------------------


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
"""The strict encoder: what :func:`dumps` falls back to (see there)."""


def dumps(data: Mapping[str, Any]) -> str:
    """Compact JSON text of ``data``; :class:`BadInput` for NaN/inf or non-JSON values.

    orjson writes it (every position is encoded several times between a phone and the
    maps). orjson writes NaN and infinities as ``null``, so a document whose text has a
    ``null`` is searched for them (a position has one: its ``near``), and one orjson
    refuses (non-string keys, float subclasses it does not know) goes through the strict
    ``json`` encoder, which decides. Both write the same values; float exponents differ
    in form only (``1e-7`` against ``1e-07``). Integers beyond 64 bits are refused: no
    JSON reader here or in a browser keeps all their digits.
    """
    try:
        raw = orjson.dumps(data)
    except TypeError:
        raw = None
    if raw is not None and not (b"null" in raw and _unstorable(data)):
        return raw.decode()
    try:
        text = _ENCODER.encode(data)  # raises for NaN/inf and non-JSON values
    except (TypeError, ValueError) as e:
        raise BadInput("not_json", f"value is not JSON-serialisable: {e}") from e
    if _unstorable(data):  # json took it, so not NaN/inf: an integer beyond 64 bits
        raise BadInput("not_json", "value is not JSON-serialisable: integer beyond 64 bits")
    return text


def _unstorable(value: Any) -> bool:
    """Whether ``value`` (dicts, lists, tuples) holds a NaN, an infinity or an integer
    outside the 64-bit range: what orjson writes as ``null`` or refuses.

    One loop, exact types first: it runs twice on every position post (its ``near`` is
    a ``null``), and this is about twice as fast as a recursive walk with isinstance
    checks. Subclasses (of float, int, dict, list, tuple) take the isinstance branches.
    """
    todo = [value]
    pop, extend, isfinite = todo.pop, todo.extend, math.isfinite
    while todo:
        v = pop()
        t = type(v)
        if t is str or v is None or t is bool:
            continue
        if t is float:
            if not isfinite(v):
                return True
        elif t is int:
            if not -(2**63) <= v < 2**64:
                return True
        elif t is dict:
            extend(v.values())
        elif t is list or t is tuple:
            extend(v)
        elif isinstance(v, float):
            if not isfinite(v):
                return True
        elif isinstance(v, int):
            if not -(2**63) <= v < 2**64:  # bools are in range
                return True
        elif isinstance(v, dict):
            extend(v.values())
        elif isinstance(v, list | tuple):
            extend(v)
    return False


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes, what: str) -> dict[str, Any]:
    """Parse stored JSON text that must hold an object; :class:`CorruptData` otherwise.

    ``what`` names the record in the error (``"order o1"``) so an operator can find it.
    orjson parses it (it would read an integer beyond 64 bits as a float, but
    :func:`dumps` never writes one); what orjson refuses goes to ``json``, which like
    orjson refuses ``NaN`` and infinities (not JSON; never written).
    """
    try:
        data = orjson.loads(text)
    except ValueError:  # orjson.JSONDecodeError and UnicodeDecodeError are ValueErrors
        try:
            data = json.loads(text, parse_constant=_not_json)
        except (ValueError, RecursionError) as e:
            raise CorruptData("bad_json", f"{what}: stored value is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise CorruptData("bad_json", f"{what}: stored JSON is not an object")
    return data


def encode(obj: Place | Order | Courier | Stop | Route | Plan | Estimate | Event) -> str:
    """JSON text of any supported domain object (dispatch on type)."""
    for cls, to_dict in _ENCODERS:
        if isinstance(obj, cls):
            return dumps(to_dict(obj))
    raise BadInput("unsupported_type", f"no codec for {type(obj).__name__}")


def decode(text: str | bytes, cls: type[T], what: str | None = None) -> T:
    """Decode JSON text written by :func:`encode` back into ``cls``."""
    for c, from_dict in _DECODERS:
        if c is cls:
            label = what or cls.__name__.lower()
            return cast(T, from_dict(loads(text, label), label))
    raise BadInput("unsupported_type", f"no codec for {cls.__name__}")


# -- field readers -----------------------------------------------------------------------


class _Reader:
    """Typed access to one decoded JSON object, with errors naming object and field."""

    __slots__ = ("d", "what")

    def __init__(self, d: object, what: str) -> None:
        if not isinstance(d, dict):
            raise CorruptData("bad_field", f"{what}: expected an object, got {type(d).__name__}")
        self.d: dict[str, Any] = d
        self.what = what

    def fail(self, key: str, expected: str) -> CorruptData:
        value = self.d.get(key, "<missing>")
        return CorruptData(
            "bad_field", f"{self.what}: field {key!r} must be {expected}, got {value!r}"
        )

    def raw(self, key: str) -> Any:
        if key not in self.d:
            raise self.fail(key, "present")
        return self.d[key]

    def text(self, key: str) -> str:
        v = self.raw(key)
        if not isinstance(v, str):
            raise self.fail(key, "a string")
        return v

    def opt_text(self, key: str) -> str | None:
        v = self.d.get(key)
        if v is not None and not isinstance(v, str):
            raise self.fail(key, "a string or null")
        return v

    def number(self, key: str) -> float:
        v = self.raw(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.fail(key, "a finite number")
        return float(v)

    def opt_number(self, key: str) -> float | None:
        if self.d.get(key) is None:
            return None
        return self.number(key)

    def integer(self, key: str) -> int:
        v = self.raw(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(key, "an integer")
        return v

    def flag(self, key: str) -> bool:
        v = self.raw(key)
        if not isinstance(v, bool):
            raise self.fail(key, "a boolean")
        return v

    def opt_flag(self, key: str) -> bool | None:
        v = self.d.get(key)
        if v is not None and not isinstance(v, bool):
            raise self.fail(key, "a boolean or null")
        return v

    def array(self, key: str) -> list[Any]:
        v = self.raw(key)
        if not isinstance(v, list):
            raise self.fail(key, "an array")
        return v

    def obj(self, key: str) -> dict[str, Any]:
        v = self.raw(key)
        if not isinstance(v, dict):
            raise self.fail(key, "an object")
        return v

    def texts(self, key: str) -> tuple[str, ...]:
        v = self.array(key)
        if not all(isinstance(x, str) for x in v):
            raise self.fail(key, "an array of strings")
        return tuple(v)

    def pair(self, key: str) -> tuple[float, float]:
        v = self.array(key)
        if len(v) != 2 or not all(
            not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x) for x in v
        ):
            raise self.fail(key, "a pair of finite numbers")
        return (float(v[0]), float(v[1]))

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        v = self.text(key)
        if v not in allowed:
            raise self.fail(key, f"one of {allowed}")
        return v


def _build(what: str, make: Callable[[], T]) -> T:
    """Run a domain constructor; its validation errors mean the stored data is corrupt."""
    try:
        return make()
    except DispatchError as e:
        raise CorruptData("invalid_object", f"{what}: {e}") from e


# -- Place -------------------------------------------------------------------------------


def place_to_dict(place: Place) -> dict[str, Any]:
    return {"point": [place.point[0], place.point[1]], "id": place.id}


def place_from_dict(d: object, what: str = "place") -> Place:
    r = _Reader(d, what)
    point = r.pair("point")
    pid = r.opt_text("id")
    return _build(what, lambda: Place(point=point, id=pid))


# -- Order -------------------------------------------------------------------------------


def order_to_dict(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "pickup": place_to_dict(order.pickup),
        "dropoff": place_to_dict(order.dropoff),
        "placed_at": order.placed_at,
        "ready_at": order.ready_at,
        "promised_by": order.promised_by,
        "latest_by": order.latest_by,
        "size": order.size,
        "pickup_service_s": order.pickup_service_s,
        "dropoff_service_s": order.dropoff_service_s,
        "mode": order.mode,
        "status": order.status,
        "courier_id": order.courier_id,
        "locked": order.locked,
        "picked_up_at": order.picked_up_at,
        "delivered_at": order.delivered_at,
        "cancelled_at": order.cancelled_at,
        "customer_id": order.customer_id,
    }


def order_from_dict(d: object, what: str = "order") -> Order:
    r = _Reader(d, what)
    oid = r.text("id")
    what = f"{what} {oid}" if what == "order" else what
    r.what = what
    pickup = place_from_dict(r.raw("pickup"), f"{what}.pickup")
    dropoff = place_from_dict(r.raw("dropoff"), f"{what}.dropoff")
    placed_at = r.number("placed_at")
    ready_at = r.number("ready_at")
    promised_by = r.number("promised_by")
    latest_by = r.opt_number("latest_by")
    size = r.integer("size")
    pickup_service_s = r.number("pickup_service_s")
    dropoff_service_s = r.number("dropoff_service_s")
    mode = cast(DeliveryMode, r.choice("mode", DELIVERY_MODES))
    status = cast(OrderStatus, r.choice("status", ORDER_STATUSES))
    courier_id = r.opt_text("courier_id")
    locked = r.flag("locked")
    picked_up_at = r.opt_number("picked_up_at")
    delivered_at = r.opt_number("delivered_at")
    cancelled_at = r.opt_number("cancelled_at")
    customer_id = r.opt_text("customer_id") if "customer_id" in r.d else None
    return _build(
        what,
        lambda: Order(
            id=oid,
            pickup=pickup,
            dropoff=dropoff,
            placed_at=placed_at,
            ready_at=ready_at,
            promised_by=promised_by,
            latest_by=latest_by,
            size=size,
            pickup_service_s=pickup_service_s,
            dropoff_service_s=dropoff_service_s,
            mode=mode,
            status=status,
            courier_id=courier_id,
            locked=locked,
            picked_up_at=picked_up_at,
            delivered_at=delivered_at,
            cancelled_at=cancelled_at,
            customer_id=customer_id,
        ),
    )


# -- Courier -----------------------------------------------------------------------------


def courier_to_dict(courier: Courier) -> dict[str, Any]:
    return {
        "id": courier.id,
        "position": place_to_dict(courier.position),
        "position_t": courier.position_t,
        "shift_start": courier.shift_start,
        "shift_end": courier.shift_end,
        "capacity": courier.capacity,
        "speed_factor": courier.speed_factor,
        "on_shift": courier.on_shift,
        "on_board": list(courier.on_board),
        "position_radius_m": courier.position_radius_m,
    }


def courier_from_dict(d: object, what: str = "courier") -> Courier:
    r = _Reader(d, what)
    cid = r.text("id")
    what = f"{what} {cid}" if what == "courier" else what
    r.what = what
    position = place_from_dict(r.raw("position"), f"{what}.position")
    position_t = r.number("position_t")
    shift_start = r.number("shift_start")
    shift_end = r.number("shift_end")
    capacity = r.integer("capacity")
    speed_factor = r.number("speed_factor")
    on_shift = r.flag("on_shift")
    on_board = r.texts("on_board")
    radius = r.number("position_radius_m")
    return _build(
        what,
        lambda: Courier(
            id=cid,
            position=position,
            position_t=position_t,
            shift_start=shift_start,
            shift_end=shift_end,
            capacity=capacity,
            speed_factor=speed_factor,
            on_shift=on_shift,
            on_board=on_board,
            position_radius_m=radius,
        ),
    )


# -- Stop, Route, Plan -------------------------------------------------------------------


def stop_to_dict(stop: Stop) -> dict[str, Any]:
    return {
        "order_id": stop.order_id,
        "kind": stop.kind,
        "place": place_to_dict(stop.place),
        "arrival": stop.arrival,
        "start": stop.start,
        "departure": stop.departure,
    }


def stop_from_dict(d: object, what: str = "stop") -> Stop:
    r = _Reader(d, what)
    return Stop(
        order_id=r.text("order_id"),
        kind=cast(StopKind, r.choice("kind", STOP_KINDS)),
        place=place_from_dict(r.raw("place"), f"{what}.place"),
        arrival=r.number("arrival"),
        start=r.number("start"),
        departure=r.number("departure"),
    )


def route_to_dict(route: Route) -> dict[str, Any]:
    return {"courier_id": route.courier_id, "stops": [stop_to_dict(s) for s in route.stops]}


def route_from_dict(d: object, what: str = "route") -> Route:
    r = _Reader(d, what)
    cid = r.text("courier_id")
    stops = tuple(
        stop_from_dict(s, f"{what} {cid} stop {i}") for i, s in enumerate(r.array("stops"))
    )
    return Route(courier_id=cid, stops=stops)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    return {
        "created_at": plan.created_at,
        "routes": {cid: route_to_dict(r) for cid, r in plan.routes.items()},
        "unassigned": dict(plan.unassigned),
    }


def plan_from_dict(d: object, what: str = "plan") -> Plan:
    r = _Reader(d, what)
    created_at = r.number("created_at")
    routes = {
        cid: route_from_dict(rd, f"{what} route {cid}") for cid, rd in r.obj("routes").items()
    }
    for cid, route in routes.items():
        if route.courier_id != cid:
            raise CorruptData(
                "bad_field", f"{what}: route under {cid!r} is for courier {route.courier_id!r}"
            )
    unassigned = r.obj("unassigned")
    if not all(isinstance(v, str) for v in unassigned.values()):
        raise r.fail("unassigned", "an object of string reasons")
    return Plan(created_at=created_at, routes=routes, unassigned=dict(unassigned))


# -- Estimate ----------------------------------------------------------------------------


def estimate_to_dict(est: Estimate) -> dict[str, Any]:
    """Full-precision form (unlike ``Estimate.to_dict``, which rounds for export)."""
    return {
        "device": est.device,
        "t": est.t,
        "lat": est.lat,
        "lon": est.lon,
        "radius68": est.radius68,
        "radius95": est.radius95,
        "velocity": [est.velocity[0], est.velocity[1]],
        "sources": list(est.sources),
        "indoor": est.indoor,
        "h3": est.h3,
        "near": est.near,
        "extra": dict(est.extra),
    }


def estimate_from_dict(d: object, what: str = "estimate") -> Estimate:
    r = _Reader(d, what)
    sources = r.texts("sources")
    if not all(s in KINDS for s in sources):
        raise r.fail("sources", f"an array of {KINDS}")
    extra = r.d.get("extra", {})
    if not isinstance(extra, dict):
        raise r.fail("extra", "an object")
    return Estimate(
        device=r.text("device"),
        t=r.number("t"),
        lat=r.number("lat"),
        lon=r.number("lon"),
        radius68=r.number("radius68"),
        radius95=r.number("radius95"),
        velocity=r.pair("velocity"),
        sources=cast(tuple[Kind, ...], sources),
        indoor=r.opt_flag("indoor"),
        h3=r.text("h3"),
        near=r.opt_text("near"),
        extra=extra,
    )


def estimate_time(text: str | bytes, what: str = "estimate") -> float:
    """The ``t`` of a stored estimate, without building the rest of it."""
    return _Reader(loads(text, what), what).number("t")


# -- Event -------------------------------------------------------------------------------


def event_to_dict(event: Event) -> dict[str, Any]:
    """Wire form (what websocket and SSE clients receive); ``id`` is null before append."""
    return {
        "id": event.id,
        "type": event.type,
        "topics": list(event.topics),
        "payload": event.payload,
        "t": event.t,
    }


def event_from_dict(d: object, what: str = "event") -> Event:
    r = _Reader(d, what)
    eid = r.opt_text("id")
    if eid is not None:
        try:
            parse_event_id(eid)
        except BadInput as e:
            raise CorruptData("bad_field", f"{what}: {e}") from e
    try:
        return Event(
            type=cast(EventType, r.choice("type", EVENT_TYPES)),
            topics=r.texts("topics"),
            payload=r.obj("payload"),
            t=r.number("t"),
            id=eid,
        )
    except BadInput as e:
        raise CorruptData("invalid_object", f"{what}: {e}") from e


_ENCODERS: tuple[tuple[type[Any], Callable[[Any], dict[str, Any]]], ...] = (
    (Place, place_to_dict),
    (Order, order_to_dict),
    (Courier, courier_to_dict),
    (Stop, stop_to_dict),
    (Route, route_to_dict),
    (Plan, plan_to_dict),
    (Estimate, estimate_to_dict),
    (Event, event_to_dict),
)
_DECODERS: tuple[tuple[type[Any], Callable[[object, str], Any]], ...] = (
    (Place, place_from_dict),
    (Order, order_from_dict),
    (Courier, courier_from_dict),
    (Stop, stop_from_dict),
    (Route, route_from_dict),
    (Plan, plan_from_dict),
    (Estimate, estimate_from_dict),
    (Event, event_from_dict),
)

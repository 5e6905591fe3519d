"""The dispatch domain: orders, couriers, stops, routes and plans.

Plain frozen dataclasses, free of OR-Tools, web and Redis types, so the simulator, the
live service and the tests all speak the same language. State changes return new
objects (``order.transition(...)``) and refuse illegal moves with a typed error.

Time is seconds on the caller's clock (Unix seconds live, seconds from the start of
the day in simulations). A :class:`Place` carries a point in the coordinates of the
travel-time model in use: ``(lat, lon)`` degrees for geographic models, ``(x, y)``
metres for planar ones (the MDRP instances).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

OrderStatus = Literal["placed", "assigned", "picked_up", "delivered", "cancelled"]
DeliveryMode = Literal["door", "station", "self_pickup"]
StopKind = Literal["pickup", "dropoff"]

ORDER_STATUSES: tuple[OrderStatus, ...] = get_args(OrderStatus)
DELIVERY_MODES: tuple[DeliveryMode, ...] = get_args(DeliveryMode)
OPEN_STATUSES: frozenset[OrderStatus] = frozenset({"placed", "assigned", "picked_up"})

# Legal status moves. "assigned" -> "placed" is an un-assignment (no courier fits any
# more); self-pickup orders skip couriers: the customer collects ("picked_up") and the
# handover completes it ("delivered").
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    "placed": frozenset({"assigned", "cancelled", "picked_up"}),
    "assigned": frozenset({"placed", "assigned", "picked_up", "cancelled"}),
    "picked_up": frozenset({"delivered", "cancelled"}),
    "delivered": frozenset(),
    "cancelled": frozenset(),
}


class DispatchError(ValueError):
    """Bad input to dispatch; ``reason`` is a machine-readable slug."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class IllegalTransition(DispatchError):
    """A status change the order's life cycle does not allow."""


class UnknownId(DispatchError):
    """An order or courier id the dispatcher does not know."""


Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a stop happens. ``id`` names a store, restaurant, station or customer."""

    point: Point
    id: str | None = None

    def __post_init__(self) -> None:
        a, b = self.point
        if not (isinstance(a, int | float) and isinstance(b, int | float)) or not (
            math.isfinite(a) and math.isfinite(b)
        ):
            raise DispatchError("bad_place", f"place coordinates must be finite, got {self.point}")


@dataclass(frozen=True, slots=True)
class Order:
    """One order from placement to delivery.

    ``ready_at``: the earliest pickup (food prepared). ``promised_by``: the delivery
    promise; later is late (soft, penalised per minute). ``latest_by``: hard limit after
    which the order may not be delivered by this plan (None: no hard limit).
    Service times are the seconds spent at the pickup and at the drop-off.
    """

    id: str
    pickup: Place
    dropoff: Place
    placed_at: float
    ready_at: float
    promised_by: float
    latest_by: float | None = None
    size: int = 1
    pickup_service_s: float = 0.0
    dropoff_service_s: float = 0.0
    mode: DeliveryMode = "door"
    status: OrderStatus = "placed"
    courier_id: str | None = None
    locked: bool = False
    picked_up_at: float | None = None
    delivered_at: float | None = None
    cancelled_at: float | None = None
    customer_id: str | None = None
    """Who placed it (the live service's access checks); None in simulations."""

    def __post_init__(self) -> None:
        if not self.id:
            raise DispatchError("bad_order", "an order needs a non-empty id")
        times = (self.placed_at, self.ready_at, self.promised_by)
        if not all(isinstance(t, int | float) and math.isfinite(t) for t in times):
            raise DispatchError("bad_order", f"order {self.id}: times must be finite numbers")
        if self.promised_by < self.placed_at:
            raise DispatchError("bad_order", f"order {self.id}: promised before it was placed")
        if self.latest_by is not None and self.latest_by < self.promised_by:
            raise DispatchError("bad_order", f"order {self.id}: latest_by before promised_by")
        if self.size < 0:
            raise DispatchError("bad_order", f"order {self.id}: size must be >= 0")
        if self.pickup_service_s < 0 or self.dropoff_service_s < 0:
            raise DispatchError("bad_order", f"order {self.id}: service times must be >= 0")
        if self.mode not in DELIVERY_MODES:
            raise DispatchError("bad_order", f"order {self.id}: unknown mode {self.mode!r}")
        if self.status not in ORDER_STATUSES:
            raise DispatchError("bad_order", f"order {self.id}: unknown status {self.status!r}")

    @property
    def needs_courier(self) -> bool:
        return self.mode != "self_pickup"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def transition(self, status: OrderStatus, at: float, courier_id: str | None = None) -> Order:
        """The order after a status change; raises :class:`IllegalTransition`."""
        if status not in TRANSITIONS[self.status]:
            raise IllegalTransition(
                "illegal_transition", f"order {self.id}: {self.status} -> {status} is not allowed"
            )
        if status == "assigned":
            if not self.needs_courier:
                raise IllegalTransition(
                    "illegal_transition", f"order {self.id}: self-pickup orders get no courier"
                )
            if courier_id is None:
                raise DispatchError("missing_courier", "an assignment needs a courier id")
            return replace(self, status=status, courier_id=courier_id)
        if status == "placed":
            return replace(self, status=status, courier_id=None, locked=False)
        if status == "picked_up":
            if self.needs_courier and self.status == "placed":
                raise IllegalTransition(
                    "illegal_transition", f"order {self.id}: picked up before being assigned"
                )
            if courier_id is not None and self.courier_id not in (None, courier_id):
                raise IllegalTransition(
                    "wrong_courier",
                    f"order {self.id} is assigned to {self.courier_id}, not {courier_id}",
                )
            return replace(self, status=status, picked_up_at=at)
        if status == "delivered":
            return replace(self, status=status, delivered_at=at)
        return replace(self, status=status, cancelled_at=at)


@dataclass(frozen=True, slots=True)
class Courier:
    """A courier and what dispatch needs to know about them.

    ``position`` is the latest fused estimate (from ``geo``) at ``position_t`` with its
    68 % radius. ``speed_factor`` scales the travel model's times (1.0 = the model's
    vehicle; 0.8 = 20 % faster). ``on_board``: ids of orders picked up and not yet
    delivered.
    """

    id: str
    position: Place
    position_t: float
    shift_start: float
    shift_end: float
    capacity: int = 3
    speed_factor: float = 1.0
    on_shift: bool = True
    on_board: tuple[str, ...] = ()
    position_radius_m: float = 0.0

    def __post_init__(self) -> None:
        if not self.id:
            raise DispatchError("bad_courier", "a courier needs a non-empty id")
        if self.shift_end < self.shift_start:
            raise DispatchError("bad_courier", f"courier {self.id}: shift ends before it starts")
        if self.capacity < 0:
            raise DispatchError("bad_courier", f"courier {self.id}: capacity must be >= 0")
        if not self.speed_factor > 0:
            raise DispatchError("bad_courier", f"courier {self.id}: speed_factor must be > 0")


@dataclass(frozen=True, slots=True)
class Stop:
    """One visit on a route: pick up or drop off one order, with its expected times.

    ``arrival``: when the courier gets there; ``start``: when service starts (after
    waiting for the food to be ready); ``departure``: when the courier leaves.
    """

    order_id: str
    kind: StopKind
    place: Place
    arrival: float
    start: float
    departure: float

    @property
    def eta(self) -> float:
        """The time the customer cares about: when the pickup/drop-off happens."""
        return self.start


@dataclass(frozen=True, slots=True)
class Route:
    """A courier's stops in visiting order, with times."""

    courier_id: str
    stops: tuple[Stop, ...] = ()

    @property
    def order_ids(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for s in self.stops:
            seen.setdefault(s.order_id)
        return tuple(seen)

    def stop_of(self, order_id: str, kind: StopKind) -> Stop | None:
        for s in self.stops:
            if s.order_id == order_id and s.kind == kind:
                return s
        return None


@dataclass(frozen=True, slots=True)
class Plan:
    """Routes of all couriers plus the open orders no route serves, each with a reason."""

    created_at: float
    routes: dict[str, Route] = field(default_factory=dict)
    unassigned: dict[str, str] = field(default_factory=dict)

    def courier_of(self, order_id: str) -> str | None:
        for cid, r in self.routes.items():
            if any(s.order_id == order_id for s in r.stops):
                return cid
        return None

    def eta(self, order_id: str, kind: StopKind) -> float | None:
        for r in self.routes.values():
            s = r.stop_of(order_id, kind)
            if s is not None:
                return s.eta
        return None

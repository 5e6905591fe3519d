"""The live state store: orders, couriers, latest positions, the current plan.

:class:`StateStore` is the seam the API programs against; :class:`MemoryStore` (here) and
:class:`tracking.redis_store.RedisStore` implement it with the same contract, checked by
the same tests.

Events travel with writes: every write method takes the events describing it
(``events=``), and the store appends them to its :attr:`StateStore.events` log in the
same atomic step as the state change. A separate "write, then append" would lose the
event whenever the process dies in between, and a retried idempotent POST (which finds
the order already created) could never know whether to append it again.

Positions are independent of couriers: a position is the latest fused
:class:`~geo.estimate.Estimate` per courier id, written at phone rate without rewriting
the courier record; callers combine the two when they need a dispatch ``Courier``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import h3

from dispatch.model import Courier, Order, Plan, Route
from geo.cells import CellAggregator, CellError, cells_covering_circle
from geo.coords import haversine_m, validate_latlon
from geo.errors import GeoError
from geo.estimate import Estimate
from tracking.codec import decode, dumps, encode, loads
from tracking.errors import BadInput, Conflict, NotFound
from tracking.events import Event, EventLog, MemoryEventLog

GEO_MAX_LAT = 85.05112878
"""Latitude limit of Redis GEO (Web Mercator); both backends refuse positions beyond it."""
MAX_IDEMPOTENCY_KEY_LEN = 256
MAX_RADIUS_M = 1_000_000.0

OrderEvents = Callable[[Order, Order], Sequence[Event]]
"""Events for an order update, given the order before and after the change."""


@dataclass(frozen=True, slots=True)
class Nearby:
    """A courier whose latest position lies within the query radius."""

    courier_id: str
    distance_m: float
    estimate: Estimate


class StateStore(Protocol):
    """Live state of the platform. All writes are atomic with their ``events``."""

    @property
    def events(self) -> EventLog:
        """The log the store appends write events to (read and subscribe here)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other processes (the service's other workers) read and write it."""
        ...

    async def put_order(self, order: Order, *, events: Sequence[Event] = ()) -> None:
        """Create or replace ``order`` (no idempotency check; see put_order_idempotent)."""
        ...

    async def put_order_idempotent(
        self, key: str, order: Order, *, events: Sequence[Event] = ()
    ) -> tuple[Order, bool]:
        """Create ``order`` once per idempotency ``key``.

        Returns ``(order, True)`` when this call created it (and appended ``events``), or
        ``(stored, False)`` with the order the key already names, in its current state
        (nothing written, no events). Atomic under concurrency: of many calls with one
        key exactly one creates. Raises :class:`Conflict` if ``order.id`` exists but was
        not created under ``key``.
        """
        ...

    async def get_order(self, order_id: str) -> Order:
        """The order, or :class:`NotFound`."""
        ...

    async def update_order(
        self,
        order_id: str,
        change: Callable[[Order], Order],
        *,
        events: OrderEvents | None = None,
    ) -> Order:
        """Read-modify-write one order atomically; returns the new order.

        ``change`` maps the stored order to the new one (e.g. ``o.transition(...)``) and
        may raise to abort with nothing written. It may run more than once when a
        concurrent writer wins a race (Redis retries optimistically), so it must be pure.
        ``events(old, new)`` gives the events to append with the write.
        """
        ...

    async def list_orders(self, *, open_only: bool = False) -> list[Order]:
        """All orders (or only placed/assigned/picked-up ones), sorted by id."""
        ...

    async def put_courier(self, courier: Courier, *, events: Sequence[Event] = ()) -> None: ...

    async def get_courier(self, courier_id: str) -> Courier:
        """The courier, or :class:`NotFound`."""
        ...

    async def list_couriers(self) -> list[Courier]:
        """All couriers, sorted by id."""
        ...

    async def put_position(
        self, courier_id: str, estimate: Estimate, *, events: Sequence[Event] = ()
    ) -> float | None:
        """Record ``estimate`` as the courier's latest position (replacing any older).

        Returns the ``t`` of the position it replaced (None: there was none), read in
        the same atomic step, so a writer that keeps state of its own (a worker's
        fusion filter) learns whether anyone else wrote in between without a read.
        """
        ...

    async def get_position(self, courier_id: str) -> Estimate:
        """The latest position, or :class:`NotFound` (kind ``"position"``)."""
        ...

    async def remove_position(self, courier_id: str, *, events: Sequence[Event] = ()) -> None:
        """Forget the courier's position (off shift): no longer found by couriers_near."""
        ...

    async def couriers_near(
        self,
        lat: float,
        lon: float,
        radius_m: float,
        *,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[Nearby]:
        """Couriers whose latest position is within ``radius_m`` metres (great-circle, as
        :func:`geo.coords.haversine_m`) of ``lat``/``lon``, nearest first (ties by id).
        ``since``: ignore positions with ``t`` before it (stale phones)."""
        ...

    async def put_plan(self, plan: Plan, *, events: Sequence[Event] = ()) -> None:
        """Replace the current plan as a whole."""
        ...

    async def get_plan(self) -> Plan | None:
        """The current plan, or None before the first one."""
        ...

    async def get_route(self, courier_id: str) -> Route | None:
        """The courier's route in the current plan, or None if it has none."""
        ...

    async def put_routes(
        self, routes: Mapping[str, Route | None], *, events: Sequence[Event] = ()
    ) -> None:
        """Replace (or, for None, remove) some couriers' routes in the current plan.

        What a live dispatcher writes after each change: rewriting a city's whole plan
        for one courier's new stop would cost far more than the change.
        """
        ...

    async def put_doc(
        self, name: str, doc: Mapping[str, Any], *, events: Sequence[Event] = ()
    ) -> None:
        """Store a named JSON document (service zones, dispatch settings)."""
        ...

    async def get_doc(self, name: str) -> dict[str, Any] | None:
        """The named document, or None if it was never stored."""
        ...

    async def aclose(self) -> None:
        """Release what the store owns (a client it created); idempotent."""
        ...


# -- validation shared by both backends --------------------------------------------------


def check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadInput("bad_id", f"{kind} id must be a non-empty string, got {value!r}")
    return value


def check_idempotency_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY_LEN:
        raise BadInput(
            "bad_idempotency_key",
            f"idempotency key must be a non-empty string of at most "
            f"{MAX_IDEMPOTENCY_KEY_LEN} characters",
        )
    return key


def check_point(lat: float, lon: float) -> None:
    """Usable position for both backends (finite, in range, not null island, GEO range)."""
    try:
        validate_latlon(lat, lon)
    except GeoError as e:
        raise BadInput(e.reason, str(e)) from e
    if abs(lat) > GEO_MAX_LAT:
        raise BadInput("out_of_range", f"latitude {lat} beyond ±{GEO_MAX_LAT} (GEO index limit)")


def check_radius(radius_m: float) -> float:
    if (
        isinstance(radius_m, bool)
        or not isinstance(radius_m, int | float)
        or not math.isfinite(radius_m)
        or not 0 <= radius_m <= MAX_RADIUS_M
    ):
        raise BadInput(
            "bad_radius", f"radius must be in [0, {MAX_RADIUS_M:.0f}] m, got {radius_m!r}"
        )
    return float(radius_m)


def apply_change(
    old: Order, change: Callable[[Order], Order], events: OrderEvents | None
) -> tuple[Order, Sequence[Event]]:
    """Run an update's ``change`` and ``events`` callbacks and check the result."""
    new = change(old)
    check_instance(new, Order, "change() result")
    if new.id != old.id:
        raise BadInput("id_changed", f"change() turned order {old.id} into {new.id}")
    return new, (events(old, new) if events is not None else ())


def check_plan(plan: Plan) -> None:
    check_instance(plan, Plan, "plan")
    for cid, route in plan.routes.items():
        if route.courier_id != cid:
            raise BadInput("bad_plan", f"route under {cid!r} is for {route.courier_id!r}")


def check_routes(routes: Mapping[str, Route | None]) -> Mapping[str, Route | None]:
    if not isinstance(routes, Mapping):
        raise BadInput("bad_type", "routes must be a mapping of courier id to route")
    for cid, route in routes.items():
        check_id("courier", cid)
        if route is not None:
            check_instance(route, Route, "route")
            if route.courier_id != cid:
                raise BadInput("bad_plan", f"route under {cid!r} is for {route.courier_id!r}")
    return routes


def check_doc(name: str, doc: Mapping[str, Any]) -> Mapping[str, Any]:
    check_id("document", name)
    if not isinstance(doc, Mapping):
        raise BadInput("bad_type", f"document {name} must be a JSON object")
    return doc


def check_instance(value: object, cls: type, what: str) -> None:
    if not isinstance(value, cls):
        raise BadInput("bad_type", f"{what} must be a {cls.__name__}, got {type(value).__name__}")


def select_nearby(
    candidates: Sequence[tuple[str, Estimate]],
    lat: float,
    lon: float,
    radius_m: float,
    since: float | None,
    limit: int | None,
) -> list[Nearby]:
    """Exact filter and order of candidate positions (both backends end here)."""
    out = [
        Nearby(cid, d, est)
        for cid, est in candidates
        if (since is None or est.t >= since)
        and (d := haversine_m(lat, lon, est.lat, est.lon)) <= radius_m
    ]
    out.sort(key=lambda n: (n.distance_m, n.courier_id))
    return out if limit is None else out[:limit]


def check_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise BadInput("bad_limit", f"limit must be a positive int or None, got {limit!r}")
    return limit


# -- memory backend ----------------------------------------------------------------------


class MemoryStore:
    """In-process :class:`StateStore` for tests, simulations and single-process dev.

    Records are kept as the same JSON text the Redis backend stores (via
    :mod:`tracking.codec`), so both backends return equal, independent copies (a caller
    mutating a returned ``Plan`` changes nothing stored) and codec problems show up in
    memory tests too. Each method does its whole check-and-write without awaiting, so on
    one event loop every operation is atomic without locks.

    "Couriers near here" buckets positions in H3 cells at ``h3_res``
    (:class:`geo.cells.CellAggregator`), gathers the cells covering the query circle
    (:func:`geo.cells.cells_covering_circle`, which never misses a cell the circle
    touches) and filters those candidates by exact distance; a circle needing more cells
    than there are positions falls back to a scan. Idempotency keys never expire here
    (Redis expires them).
    """

    def __init__(self, *, log: MemoryEventLog | None = None, h3_res: int = 8) -> None:
        self._log = log if log is not None else MemoryEventLog()
        self._orders: dict[str, str] = {}
        self._idem: dict[str, str] = {}
        self._couriers: dict[str, str] = {}
        self._positions: dict[str, str] = {}
        self._position_t: dict[str, float] = {}
        self._cells = CellAggregator(h3_res)
        self._cell_area_m2 = float(h3.average_hexagon_area(h3_res, "m^2"))
        self._edge_m = float(h3.average_hexagon_edge_length(h3_res, "m"))
        # The plan as the Redis backend keeps it: one entry per route, so a route change
        # re-encodes that route, not every courier's (the whole plan per dispatcher
        # decision took most of the event loop while thousands of orders were assigned).
        self._plan_meta: tuple[float, dict[str, str]] | None = None
        self._routes: dict[str, str] = {}
        self._docs: dict[str, str] = {}

    @property
    def events(self) -> MemoryEventLog:
        return self._log

    @property
    def shared(self) -> bool:
        return False  # one process

    async def _commit(self, events: Sequence[Event], write: Callable[[], None]) -> None:
        """Append ``events`` and apply ``write`` in one synchronous step, then wake readers.

        ``append_now`` validates every event before appending any, and runs first, so a
        bad event leaves state untouched; ``write`` only assigns prepared values.
        """
        if events:
            self._log.append_now(events)
        write()
        if events:
            await self._log.notify()

    async def put_order(self, order: Order, *, events: Sequence[Event] = ()) -> None:
        check_instance(order, Order, "order")
        text = encode(order)
        await self._commit(events, lambda: self._orders.__setitem__(order.id, text))

    async def put_order_idempotent(
        self, key: str, order: Order, *, events: Sequence[Event] = ()
    ) -> tuple[Order, bool]:
        check_idempotency_key(key)
        check_instance(order, Order, "order")
        existing = self._idem.get(key)
        if existing is not None:
            return self._order(existing), False
        if order.id in self._orders:
            raise Conflict("order_exists", f"order {order.id} exists under another key")
        text = encode(order)

        def write() -> None:
            self._idem[key] = order.id
            self._orders[order.id] = text

        await self._commit(events, write)
        return decode(text, Order), True

    def _order(self, order_id: str) -> Order:
        text = self._orders.get(order_id)
        if text is None:
            raise NotFound("order", order_id)
        return decode(text, Order, f"order {order_id}")

    async def get_order(self, order_id: str) -> Order:
        return self._order(check_id("order", order_id))

    async def update_order(
        self,
        order_id: str,
        change: Callable[[Order], Order],
        *,
        events: OrderEvents | None = None,
    ) -> Order:
        old = self._order(check_id("order", order_id))
        new, evs = apply_change(old, change, events)
        text = encode(new)
        await self._commit(evs, lambda: self._orders.__setitem__(new.id, text))
        return decode(text, Order)

    async def list_orders(self, *, open_only: bool = False) -> list[Order]:
        orders = [self._order(oid) for oid in sorted(self._orders)]
        return [o for o in orders if not open_only or o.is_open]

    async def put_courier(self, courier: Courier, *, events: Sequence[Event] = ()) -> None:
        check_instance(courier, Courier, "courier")
        text = encode(courier)
        await self._commit(events, lambda: self._couriers.__setitem__(courier.id, text))

    async def get_courier(self, courier_id: str) -> Courier:
        text = self._couriers.get(check_id("courier", courier_id))
        if text is None:
            raise NotFound("courier", courier_id)
        return decode(text, Courier, f"courier {courier_id}")

    async def list_couriers(self) -> list[Courier]:
        return [decode(self._couriers[cid], Courier) for cid in sorted(self._couriers)]

    async def put_position(
        self, courier_id: str, estimate: Estimate, *, events: Sequence[Event] = ()
    ) -> float | None:
        check_id("courier", courier_id)
        check_instance(estimate, Estimate, "estimate")
        check_point(estimate.lat, estimate.lon)
        text = encode(estimate)
        replaced = self._position_t.get(courier_id)

        def write() -> None:
            self._positions[courier_id] = text
            self._position_t[courier_id] = estimate.t
            self._cells.update(courier_id, estimate.lat, estimate.lon)

        await self._commit(events, write)
        return replaced

    async def get_position(self, courier_id: str) -> Estimate:
        text = self._positions.get(check_id("courier", courier_id))
        if text is None:
            raise NotFound("position", courier_id)
        return decode(text, Estimate, f"position of {courier_id}")

    async def remove_position(self, courier_id: str, *, events: Sequence[Event] = ()) -> None:
        check_id("courier", courier_id)

        def write() -> None:
            self._positions.pop(courier_id, None)
            self._position_t.pop(courier_id, None)
            self._cells.remove(courier_id)

        await self._commit(events, write)

    async def couriers_near(
        self,
        lat: float,
        lon: float,
        radius_m: float,
        *,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[Nearby]:
        check_point(lat, lon)
        radius = check_radius(radius_m)
        check_limit(limit)
        # Cells pay off while the circle needs fewer cells than there are positions to
        # scan; beyond that (a city-wide radius) a scan is cheaper.
        cells_needed = math.pi * (radius + self._edge_m) ** 2 / self._cell_area_m2
        ids: set[str] = set(self._positions)
        if cells_needed <= max(64, len(self._positions)):
            try:
                cells = cells_covering_circle(lat, lon, radius, self._cells.res)
                ids = {cid for cell in cells for cid in self._cells.entities_in(cell)}
            except CellError:
                pass  # too many cells after all: keep the scan
        candidates = [
            (cid, decode(self._positions[cid], Estimate, f"position of {cid}")) for cid in ids
        ]
        return select_nearby(candidates, lat, lon, radius, since, limit)

    async def put_plan(self, plan: Plan, *, events: Sequence[Event] = ()) -> None:
        check_plan(plan)
        routes = {cid: encode(route) for cid, route in plan.routes.items()}
        meta = (float(plan.created_at), dict(plan.unassigned))

        def write() -> None:
            self._plan_meta, self._routes = meta, routes

        await self._commit(events, write)

    async def get_plan(self) -> Plan | None:
        if self._plan_meta is None:
            return None
        created_at, unassigned = self._plan_meta
        routes = {cid: decode(text, Route, f"route of {cid}") for cid, text in self._routes.items()}
        return Plan(created_at, routes, dict(unassigned))

    async def get_route(self, courier_id: str) -> Route | None:
        check_id("courier", courier_id)
        text = self._routes.get(courier_id)
        return None if text is None else decode(text, Route, f"route of {courier_id}")

    async def put_routes(
        self, routes: Mapping[str, Route | None], *, events: Sequence[Event] = ()
    ) -> None:
        changes = {
            cid: None if route is None else encode(route)
            for cid, route in check_routes(routes).items()
        }

        def write() -> None:
            if self._plan_meta is None:
                self._plan_meta = (0.0, {})
            for cid, text in changes.items():
                if text is None:
                    self._routes.pop(cid, None)
                else:
                    self._routes[cid] = text

        await self._commit(events, write)

    async def put_doc(
        self, name: str, doc: Mapping[str, Any], *, events: Sequence[Event] = ()
    ) -> None:
        text = dumps(check_doc(name, doc))
        await self._commit(events, lambda: self._docs.__setitem__(name, text))

    async def get_doc(self, name: str) -> dict[str, Any] | None:
        text = self._docs.get(check_id("document", name))
        return None if text is None else loads(text, f"document {name}")

    async def aclose(self) -> None:
        return None


if TYPE_CHECKING:  # the memory backend satisfies the protocol (checked by mypy only)

    def _is_state_store(s: MemoryStore) -> StateStore:
        return s

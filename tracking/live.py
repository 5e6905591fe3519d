"""The live service core: user commands in, state changes and their events out.

:class:`Live` is what the HTTP API calls for every customer, courier and ops action. It
is framework-free (no FastAPI types) so the same object serves the service, the demo and
the tests. Every change goes through the :class:`~tracking.store.StateStore` together
with the events that describe it, so the event log is the one source that the websocket
hub (:mod:`tracking.hub`) and the dispatcher (:mod:`tracking.dispatch_loop`) follow,
whichever worker process took the request.

Event payloads carry state, not deltas (an ``order_*`` event carries the whole order, a
``courier_position`` the whole estimate), so a reader that sees an event twice, or
resumes after a snapshot, applies it harmlessly. Topics: ``order:<id>`` (the customer's
channel), ``courier:<id>`` (the courier's), ``ops``, and ``h3:<res-7 cell>`` for
positions (ops views of an area).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import h3

from dispatch.dispatcher import SETTING_RANGES, DispatchSettings
from dispatch.model import Courier, DeliveryMode, DispatchError, Order, Place
from geo.coords import haversine_m
from geo.errors import GeoError, InvalidObservation
from geo.estimate import Estimate
from geo.fusion import FusionEngine
from geo.observations import GpsFix, Observation, observation_from_dict
from geo.registry import Registry
from geo.zones import Geofence, ZoneError, ZoneIndex, inside_probability
from tracking.codec import courier_to_dict, estimate_to_dict, order_to_dict
from tracking.errors import BadInput, Conflict, NotFound, TrackingError
from tracking.events import OPS_TOPIC, Event, EventType, cell_topic, courier_topic, order_topic
from tracking.store import GEO_MAX_LAT, StateStore, check_idempotency_key, check_point

log = logging.getLogger("o2o.live")

POSITION_CELL_RES = 7
"""H3 resolution of the ``h3:<cell>`` topics positions are published on (~5 km² cells)."""
ZONES_DOC = "zones"
SETTINGS_DOC = "dispatch_settings"


class Forbidden(TrackingError):
    """The caller may not do this to this object (not theirs, or not in this state)."""


class Unprocessable(TrackingError):
    """Well-formed input the service cannot act on (outside the service area, too far from
    the drop-off without an override reason, a batch with nothing usable)."""


class TooLarge(TrackingError):
    """A batch or body beyond the service's limits."""


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """Limits and defaults of the live service (all seconds / metres)."""

    promise_s: float = 45 * 60.0
    """Delivery promise when the customer gives none: placed + 45 min."""
    max_horizon_s: float = 7 * 86400.0
    """Order times (ready_at, promised_by) further ahead than this are refused."""
    max_past_s: float = 3600.0
    """Order times further back than this are refused."""
    obs_max_age_s: float = 86400.0
    """Observations older than this are refused (a phone's buffered day is still fine)."""
    obs_max_ahead_s: float = 300.0
    """Observations timestamped further ahead than this (a broken phone clock) are refused."""
    max_batch: int = 1000
    """Observations per POST."""
    geofence_m: float = 150.0
    """Pickup/drop-off confirmations must be this close (with 50 % probability given the
    position's uncertainty) unless the courier gives an override reason."""
    position_max_age_s: float = 600.0
    """A position older than this does not count for the geofence check."""
    shift_s: float = 8 * 3600.0
    """Shift length when the courier gives no end."""
    capacity: int = 3


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What a customer asks for; times are absolute seconds (epoch), None for defaults."""

    pickup: tuple[float, float]
    dropoff: tuple[float, float]
    mode: DeliveryMode = "door"
    ready_at: float | None = None
    promised_by: float | None = None
    size: int = 1
    pickup_service_s: float = 60.0
    dropoff_service_s: float = 60.0
    pickup_place_id: str | None = None
    dropoff_place_id: str | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    rejected: list[dict[str, Any]]
    position: Estimate | None


@dataclass(frozen=True, slots=True)
class Confirmation:
    order: Order
    distance_m: float | None
    override_reason: str | None


# -- events ------------------------------------------------------------------------------


def order_event(type_: EventType, order: Order, t: float, **extra: Any) -> Event:
    topics = [order_topic(order.id), OPS_TOPIC]
    if order.courier_id is not None:
        topics.append(courier_topic(order.courier_id))
    prev = extra.get("previous_courier_id")
    if isinstance(prev, str):
        topics.append(courier_topic(prev))
    return Event(type_, tuple(topics), {"order": order_to_dict(order), **extra}, t)


def courier_event(courier: Courier, t: float) -> Event:
    return Event(
        "courier_updated",
        (courier_topic(courier.id), OPS_TOPIC),
        {"courier": courier_to_dict(courier)},
        t,
    )


def position_event(courier_id: str, est: Estimate) -> Event:
    cell = h3.latlng_to_cell(est.lat, est.lon, POSITION_CELL_RES)
    return Event(
        "courier_position",
        (courier_topic(courier_id), cell_topic(cell)),
        {"courier_id": courier_id, "estimate": estimate_to_dict(est)},
        est.t,
    )


STATUS_EVENT: dict[str, EventType] = {
    "placed": "order_placed",
    "assigned": "order_assigned",
    "picked_up": "order_picked_up",
    "delivered": "order_delivered",
    "cancelled": "order_cancelled",
}


# -- the service core --------------------------------------------------------------------


@dataclass
class Live:
    """Commands of the live service over one store (see module docstring).

    ``fusion`` keeps each courier's filter in this process. With several workers a
    courier's posts may land on different processes; a worker whose filter for the
    courier is older than the stored position re-seeds from the stored position (a GPS-
    like fix with the stored radius), so no worker fuses from a stale state.
    """

    store: StateStore
    config: LiveConfig = field(default_factory=LiveConfig)
    clock: Callable[[], float] = time.time
    registry: Registry | None = None
    base_settings: DispatchSettings = field(default_factory=DispatchSettings)
    """The service's dispatch settings; operator changes apply on top of these."""
    fusion: FusionEngine = field(init=False)
    _synced: dict[str, float] = field(default_factory=dict, init=False)
    """Per courier, the ``t`` of the stored position when this process last wrote or
    read it, while this process's filter holds exactly that state."""
    _zones: ZoneIndex | None = field(default=None, init=False)
    _zones_loaded: float = field(default=-math.inf, init=False)

    def __post_init__(self) -> None:
        self.fusion = FusionEngine(self.registry)

    # -- orders ---------------------------------------------------------------------
    async def place_order(
        self, req: OrderRequest, *, customer_id: str, idempotency_key: str | None
    ) -> tuple[Order, bool]:
        """Create an order once per (customer, key); returns (order, created)."""
        now = self.clock()
        for lat, lon in (req.pickup, req.dropoff):
            check_point(lat, lon)
        await self._check_service_area(req)
        ready = now if req.ready_at is None else self._check_time("ready_at", req.ready_at, now)
        promised = (
            max(ready, now) + self.config.promise_s
            if req.promised_by is None
            else self._check_time("promised_by", req.promised_by, now)
        )
        if promised < max(ready, now):
            raise BadInput("bad_promise", "promised_by is before the order can be ready")
        try:
            order = Order(
                id=f"o-{secrets.token_hex(8)}",
                pickup=Place(req.pickup, req.pickup_place_id),
                dropoff=Place(req.dropoff, req.dropoff_place_id),
                placed_at=now,
                ready_at=ready,
                promised_by=promised,
                size=req.size,
                pickup_service_s=req.pickup_service_s,
                dropoff_service_s=req.dropoff_service_s,
                mode=req.mode,
                customer_id=customer_id,
            )
        except DispatchError as e:
            raise BadInput(e.reason, str(e)) from e
        event = order_event("order_placed", order, now)
        if idempotency_key is None:
            await self.store.put_order(order, events=[event])
            return order, True
        check_idempotency_key(idempotency_key)
        stored, created = await self.store.put_order_idempotent(
            _idempotency_slot(customer_id, idempotency_key), order, events=[event]
        )
        if not created and (
            stored.customer_id != customer_id or not _same_request(stored, order, req)
        ):
            raise Conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different order; use a new key",
            )
        return stored, created

    def _check_time(self, name: str, t: float, now: float) -> float:
        if not math.isfinite(t):
            raise BadInput("non_finite", f"{name} must be a finite number")
        if t > now + self.config.max_horizon_s:
            raise BadInput("time_too_far_ahead", f"{name} is more than 7 days ahead")
        if t < now - self.config.max_past_s:
            raise BadInput("time_too_far_back", f"{name} is more than an hour in the past")
        return t

    async def _check_service_area(self, req: OrderRequest) -> None:
        zones = await self.zones()
        if zones is None or len(zones) == 0:
            return
        for what, (lat, lon) in (("pickup", req.pickup), ("dropoff", req.dropoff)):
            if not zones.zones_at(lat, lon):
                raise Unprocessable(
                    "outside_service_area", f"the {what} point is outside every service zone"
                )

    async def cancel_order(self, order_id: str, *, reason: str | None = None) -> Order:
        now = self.clock()

        def change(o: Order) -> Order:
            if o.status == "picked_up":
                raise Conflict(
                    "already_picked_up", "the courier has the order; it can no longer be cancelled"
                )
            return _transition(o, "cancelled", now)

        return await self.store.update_order(
            order_id,
            change,
            events=lambda old, new: [
                order_event(
                    "order_cancelled", new, now, reason=reason, previous_courier_id=old.courier_id
                )
            ],
        )

    # -- couriers -------------------------------------------------------------------
    async def start_shift(
        self,
        courier_id: str,
        *,
        lat: float | None = None,
        lon: float | None = None,
        shift_end: float | None = None,
        capacity: int | None = None,
    ) -> Courier:
        """Put the courier on shift at ``lat``/``lon`` or at their latest fused position."""
        now = self.clock()
        if (lat is None) != (lon is None):
            raise BadInput("bad_position", "give both lat and lon, or neither")
        if lat is not None and lon is not None:
            check_point(lat, lon)
            where, t, radius = (lat, lon), now, 0.0
        else:
            try:
                est = await self.store.get_position(courier_id)
            except NotFound:
                raise Unprocessable(
                    "no_position",
                    "no position known for this courier: post observations or give lat/lon",
                ) from None
            where, t, radius = (est.lat, est.lon), est.t, est.radius68
        end = now + self.config.shift_s if shift_end is None else shift_end
        if not math.isfinite(end) or end <= now or end > now + 86400:
            raise BadInput("bad_shift_end", "shift_end must be within the next 24 hours")
        try:
            old: Courier | None = await self.store.get_courier(courier_id)
        except NotFound:
            old = None
        cap = capacity if capacity is not None else (old.capacity if old else self.config.capacity)
        try:
            courier = Courier(
                id=courier_id,
                position=Place(where),
                position_t=t,
                shift_start=now,
                shift_end=end,
                capacity=cap,
                on_shift=True,
                on_board=old.on_board if old else (),
                position_radius_m=radius,
            )
        except DispatchError as e:
            raise BadInput(e.reason, str(e)) from e
        await self.store.put_courier(courier, events=[courier_event(courier, now)])
        return courier

    async def end_shift(self, courier_id: str) -> Courier:
        now = self.clock()
        old = await self.store.get_courier(courier_id)
        if not old.on_shift:
            return old
        courier = replace(
            old, on_shift=False, shift_end=max(old.shift_start, min(old.shift_end, now))
        )
        await self.store.put_courier(courier, events=[courier_event(courier, now)])
        return courier

    async def post_observations(self, courier_id: str, records: Sequence[Any]) -> IngestResult:
        """Validate and fuse a phone's batch; store the latest position (one event).

        Each record is checked on its own: a bad reading is reported with its index and
        reason and never costs the good ones. ``device`` may be left out (it is the
        courier) but may not name anyone else.
        """
        if len(records) > self.config.max_batch:
            raise TooLarge(
                "batch_too_large", f"at most {self.config.max_batch} observations per request"
            )
        now = self.clock()
        rejected: list[dict[str, Any]] = []
        good: list[tuple[Observation, int]] = []
        for i, rec in enumerate(records):
            if isinstance(rec, Mapping) and "device" not in rec:
                rec = {**rec, "device": courier_id}
            try:
                obs = observation_from_dict(rec)
            except InvalidObservation as e:
                rejected.append({"index": i, "reason": e.reason, "detail": str(e)})
                continue
            if obs.device != courier_id:
                rejected.append(
                    {"index": i, "reason": "wrong_device", "detail": "device is not this courier"}
                )
            elif obs.t > now + self.config.obs_max_ahead_s:
                rejected.append(
                    {"index": i, "reason": "time_in_future", "detail": "t is ahead of server time"}
                )
            elif isinstance(obs, GpsFix) and abs(obs.lat) > GEO_MAX_LAT:
                rejected.append(
                    {
                        "index": i,
                        "reason": "out_of_range",
                        "detail": f"latitude beyond ±{GEO_MAX_LAT} (the service's limit)",
                    }
                )
            elif obs.t < now - self.config.obs_max_age_s:
                rejected.append({"index": i, "reason": "too_old", "detail": "t is over a day old"})
            else:
                good.append((obs, i))
        good.sort(key=lambda pair: pair[0].t)
        if good:
            await self._reseed(courier_id, good[0][0].t)
        result = self.fusion.process_batch(obs for obs, _ in good)
        for r, k in zip(result.rejected, result.rejected_at, strict=True):
            rejected.append(
                {
                    "index": good[k][1],
                    "t": r.t,
                    "reason": r.reason,
                    "detail": r.message or r.reason,
                }
            )
        est = result.estimates.get(courier_id)
        if est is not None:
            try:
                replaced = await self.store.put_position(
                    courier_id, est, events=[position_event(courier_id, est)]
                )
            except BadInput:
                # refused after fusing: restart this courier's filter, or every later
                # fix would be judged against the refused one
                self.fusion.forget(courier_id)
                self._synced.pop(courier_id, None)
                raise
            if replaced is None or replaced == self._synced.get(courier_id):
                self._synced[courier_id] = est.t
            else:  # another worker wrote since we looked: read it before the next fix
                self._synced.pop(courier_id, None)
        if records and not good and not result.estimates:
            raise Unprocessable("no_usable_observation", _summary(rejected))
        return IngestResult(len(good) - len(result.rejected), rejected, est)

    async def _reseed(self, courier_id: str, t: float) -> None:
        """Start this process's filter from the stored position if ours is older.

        With several workers a courier's posts may land on any of them. A worker that
        wrote the stored position itself (its last write's reply showed nobody wrote in
        between) skips the read: with keep-alive connections that is nearly every post.
        """
        mine = self.fusion.last_t(courier_id)
        if mine is not None and self._synced.get(courier_id) == mine:
            return
        try:
            stored = await self.store.get_position(courier_id)
        except NotFound:
            self._synced.pop(courier_id, None)
            return
        self._synced[courier_id] = stored.t
        if mine is not None and mine >= stored.t:
            return
        if stored.t >= t:
            return
        self.fusion.forget(courier_id)
        seed = {
            "device": courier_id,
            "t": stored.t,
            "kind": "gps",
            "lat": stored.lat,
            "lon": stored.lon,
            "accuracy": max(stored.radius68, 1.0),
        }
        self.fusion.process_dict(seed)

    async def confirm(
        self,
        order_id: str,
        kind: Literal["pickup", "dropoff"],
        *,
        courier_id: str | None,
        override_reason: str | None = None,
    ) -> Confirmation:
        """A courier (or ops, ``courier_id=None``) confirms a pickup or drop-off.

        The courier must hold the order and be inside the stop's geofence (given their
        position's uncertainty), unless they give an override reason, which is recorded
        in the event so ops can review it.
        """
        now = self.clock()
        order = await self.store.get_order(order_id)
        if courier_id is not None and order.courier_id not in (None, courier_id):
            raise Forbidden("not_your_order", "this order is assigned to another courier")
        if courier_id is not None and order.courier_id is None and order.needs_courier:
            raise Forbidden("not_assigned", "this order is not assigned to you")
        target = order.pickup if kind == "pickup" else order.dropoff
        holder = courier_id or order.courier_id
        distance: float | None = None
        if holder is not None and order.needs_courier:
            distance = await self._check_fence(holder, target, kind, override_reason, now)
        status: Literal["picked_up", "delivered"] = "picked_up" if kind == "pickup" else "delivered"

        def change(o: Order) -> Order:
            if kind == "dropoff" and o.status == "assigned":
                raise Conflict("not_picked_up", "confirm the pickup before the drop-off")
            return _transition(o, status, now, holder if kind == "pickup" else None)

        new = await self.store.update_order(
            order_id,
            change,
            events=lambda old, new: [
                order_event(
                    STATUS_EVENT[status],
                    new,
                    now,
                    override_reason=override_reason,
                    distance_m=distance,
                )
            ],
        )
        return Confirmation(new, distance, override_reason)

    async def _check_fence(
        self,
        courier_id: str,
        target: Place,
        kind: Literal["pickup", "dropoff"],
        override_reason: str | None,
        now: float,
    ) -> float | None:
        try:
            est: Estimate | None = await self.store.get_position(courier_id)
        except NotFound:
            est = None
        if est is not None and now - est.t > self.config.position_max_age_s:
            est = None
        lat, lon = target.point
        distance = None if est is None else haversine_m(est.lat, est.lon, lat, lon)
        if override_reason:
            return distance
        if est is None:
            raise Unprocessable(
                "no_recent_position",
                f"no position from the last {self.config.position_max_age_s:.0f} s to check "
                f"the {kind} against; post observations or give an override_reason",
            )
        fence = Geofence(f"{kind}", lat, lon, self.config.geofence_m, kind)
        if inside_probability(est, fence) < 0.5:
            raise Unprocessable(
                "outside_geofence",
                f"you are about {distance:.0f} m from the {kind} point (limit "
                f"{self.config.geofence_m:.0f} m); move closer or give an override_reason",
            )
        return distance

    async def acknowledge_route(self, courier_id: str, route_event_id: str) -> Event:
        now = self.clock()
        event = Event(
            "route_acknowledged",
            (courier_topic(courier_id), OPS_TOPIC),
            {"courier_id": courier_id, "route_id": route_event_id},
            now,
        )
        await self.store.events.append(event)
        return event

    # -- zones and settings ---------------------------------------------------------
    async def zones(self, max_age_s: float = 2.0) -> ZoneIndex | None:
        """Service zones, re-read from the store at most every ``max_age_s``."""
        now = time.monotonic()
        if now - self._zones_loaded > max_age_s:
            doc = await self.store.get_doc(ZONES_DOC)
            self._zones = None if doc is None else ZoneIndex.from_geojson(doc)
            self._zones_loaded = now
        return self._zones

    async def settings(self) -> DispatchSettings:
        return settings_from_stored(await self.store.get_doc(SETTINGS_DOC), self.base_settings)

    async def put_settings(self, doc: Mapping[str, Any]) -> DispatchSettings:
        """Replace the operator's dispatch settings (keys of DispatchSettings); the
        dispatcher picks them up from the event at once."""
        if not isinstance(doc, Mapping):
            raise BadInput("bad_type", "settings must be a JSON object")
        settings = settings_from_doc(dict(doc), self.base_settings)
        event = Event("settings_updated", (OPS_TOPIC,), {"settings": dict(doc)}, self.clock())
        await self.store.put_doc(SETTINGS_DOC, dict(doc), events=[event])
        return settings

    async def put_zones(self, geojson: Mapping[str, Any]) -> ZoneIndex:
        try:
            index = ZoneIndex.from_geojson(geojson)
        except ZoneError as e:
            raise BadInput(e.reason, str(e)) from e
        except GeoError as e:
            raise BadInput(getattr(e, "reason", "bad_geojson"), str(e)) from e
        doc = index.to_geojson()
        event = Event("zones_updated", (OPS_TOPIC,), {"zones": len(index)}, self.clock())
        await self.store.put_doc(ZONES_DOC, doc, events=[event])
        self._zones, self._zones_loaded = index, time.monotonic()
        return index


def settings_from_doc(doc: dict[str, Any] | None, base: DispatchSettings) -> DispatchSettings:
    """Operator settings on top of ``base``; unknown keys or bad values: :class:`BadInput`."""
    if not doc:
        return base
    known = {f.name: f for f in fields(DispatchSettings)}
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise BadInput("unknown_setting", f"unknown dispatch settings: {', '.join(unknown)}")
    try:
        merged = replace(base, **doc)
    except TypeError as e:
        raise BadInput("bad_setting", str(e)) from e
    for name, value in doc.items():
        default = getattr(base, name)
        kinds: tuple[type, ...] = (int, float) if isinstance(default, float) else (type(default),)
        if default is None:
            kinds = (int, float, type(None))
        if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, kinds):
            raise BadInput("bad_setting", f"{name} must be like {default!r}, got {value!r}")
        lo, hi = SETTING_RANGES.get(name, (-math.inf, math.inf))
        if isinstance(value, int | float) and not isinstance(value, bool) and not lo <= value <= hi:
            got = str(value)[:40]
            raise BadInput("bad_setting", f"{name} must be in [{lo:g}, {hi:g}], got {got}")
    return merged


def settings_from_stored(doc: dict[str, Any] | None, base: DispatchSettings) -> DispatchSettings:
    """:func:`settings_from_doc` for a document already stored (or an event already
    logged): a value a newer version refuses (say, out of a range tightened since it
    was saved) is dropped with a warning, keeping the rest, so one stale setting never
    stops the dispatcher or the settings route."""
    try:
        return settings_from_doc(doc, base)
    except BadInput:
        pass
    kept: dict[str, Any] = {}
    for name, value in (doc or {}).items():
        try:
            settings_from_doc({name: value}, base)
        except BadInput as e:
            log.warning("ignoring stored dispatch setting %s: %s", name[:40], e)
        else:
            kept[name] = value
    try:
        return settings_from_doc(kept, base)
    except BadInput as e:  # valid one by one, not together
        log.warning("ignoring stored dispatch settings: %s", e)
        return base


def _idempotency_slot(customer_id: str, key: str) -> str:
    """Where a customer's Idempotency-Key is kept: a digest of the pair, so no two
    (customer, key) pairs share a slot (``f"{customer}:{key}"`` let customer ``a:x``
    with key ``U`` and customer ``a`` with key ``x:U`` collide) and the client's key
    may use its full documented length whatever the customer id."""
    digest = hashlib.sha256(json.dumps([customer_id, key]).encode()).hexdigest()
    return f"v2:{digest}"


def _same_request(stored: Order, new: Order, req: OrderRequest) -> bool:
    """Whether a retried POST asks for the same order. Times the client left out are
    server-set (and differ between tries), so only the ones it gave are compared."""
    given = [
        (req.ready_at, stored.ready_at),
        (req.promised_by, stored.promised_by),
    ]
    return (
        stored.pickup == new.pickup
        and stored.dropoff == new.dropoff
        and stored.mode == new.mode
        and stored.size == new.size
        and stored.pickup_service_s == new.pickup_service_s
        and stored.dropoff_service_s == new.dropoff_service_s
        and all(sent is None or sent == kept for sent, kept in given)
    )


def _transition(o: Order, status: Any, at: float, courier_id: str | None = None) -> Order:
    try:
        return o.transition(status, at, courier_id)
    except DispatchError as e:
        raise Conflict(e.reason, str(e)) from e


def _summary(rejected: list[dict[str, Any]]) -> str:
    reasons = sorted({str(r["reason"]) for r in rejected})
    return f"no observation in the batch could be used ({', '.join(reasons)})"

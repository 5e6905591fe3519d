"""The ``o2o demo`` city: couriers and customers that use the live service over HTTP.

Framework-free (the standard library's HTTP client in a thread pool, no FastAPI): a
:class:`DemoDriver` talks to a running service exactly as phones would, with tokens of
their own roles. Couriers start their shifts, post a GPS fix every second (real time),
read their route (``GET /v1/couriers/{id}/route``), drive along it at the travel model's
speed, wait at the store until the food is ready and confirm pickups and drop-offs when
they are there (inside the geofence). Customers place orders (a Poisson stream) from the
generated default city (:mod:`simulations.scenarios.city`): its restaurants, homes and
preparation times.

**The clock.** The city runs on :class:`AcceleratedClock`: epoch seconds that advance
``speed`` times faster than the wall clock from the moment the demo starts; the service
is given the same clock, so the dispatcher, the promises, the position filter and the
couriers all live in one consistent (faster) time. Order arrivals, preparation, driving
and service therefore all run ``speed`` times faster; GPS fixes are still posted once a
real second, so the maps move smoothly. ``speed`` 1 is real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from api.auth import Role, create_token
from geo.coords import haversine_m
from geo.travel import GreatCircleModel, TravelTimeModel
from simulations.scenarios.city import default_city, generate_city

LatLon = tuple[float, float]
StopKey = tuple[str, str]
"""(order id, "pickup" | "dropoff")."""

TOKEN_TTL_S = 7 * 86400.0
LIVE_SPEED_MPS = 6.0
"""The live dispatcher's default travel model speed (``tracking.dispatch_loop``): demo
couriers drive at it, so their arrivals match the dispatcher's ETAs."""
GPS_ACCURACY_M = 5.0
SERVICE_S = 60.0
"""Seconds (city clock) a courier spends at a store or a door."""
SHIFT_S = 12 * 3600.0
"""Shift length (city clock); shifts are renewed an hour before they end."""
CONFIRM_TRIES = 3
"""Geofence refusals before a courier confirms with an override reason."""


class AcceleratedClock:
    """Epoch seconds running ``speed`` times faster than ``wall`` from ``start``."""

    def __init__(
        self, speed: float, start: float | None = None, wall: Callable[[], float] = time.time
    ) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self.wall = wall
        self.wall0 = wall()
        self.start = self.wall0 if start is None else start

    def __call__(self) -> float:
        return self.start + (self.wall() - self.wall0) * self.speed

    def real_s(self, city_s: float) -> float:
        """Wall seconds that ``city_s`` city seconds take."""
        return city_s / self.speed


@dataclass(frozen=True, slots=True)
class DemoOptions:
    couriers: int = 8
    orders_per_hour: float = 30.0
    """Orders per hour of the city clock."""
    speed: float = 10.0
    duration_s: float = 0.0
    """Wall seconds to run; 0: until stopped."""
    seed: int = 1
    tracked_orders: int = 3
    """Orders placed at once, whose tracking pages are printed."""
    capacity: int = 3
    status_every_s: float = 10.0
    gps_every_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Job:
    """One order the city can place: from a restaurant to a home."""

    restaurant: str
    pickup: LatLon
    dropoff: LatLon
    prep_s: float


@dataclass(frozen=True)
class DemoCity:
    name: str
    ring: tuple[LatLon, ...]
    """Service area, GeoJSON ``(lon, lat)`` order."""
    jobs: tuple[Job, ...]
    starts: tuple[LatLon, ...]
    travel: TravelTimeModel


def demo_city(seed: int, couriers: int) -> DemoCity:
    """The default city's day (seed ``seed``) as a pool of orders, and courier starts at
    restaurants (drawn by popularity, so the first orders are picked up soon)."""
    config = default_city()
    day = generate_city(config, seed)
    rng = random.Random(seed)
    jobs = [
        Job(
            day.restaurant_of[o.id],
            o.pickup.point,
            o.dropoff.point,
            max(o.ready_at - o.placed_at, 60.0),
        )
        for o in day.orders
    ]
    rng.shuffle(jobs)
    starts = tuple(rng.choice(jobs).pickup for _ in range(couriers))
    return DemoCity(
        name=config.name,
        ring=config.area.closed_ring,
        jobs=tuple(jobs),
        starts=starts,
        travel=GreatCircleModel.constant_speed(LIVE_SPEED_MPS),
    )


# -- HTTP ----------------------------------------------------------------------------------


class Http:
    """JSON over HTTP/1.1 with the standard library, off the event loop."""

    def __init__(self, base_url: str, workers: int = 16, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="demo-http")
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.calls = 0
        self.failures = 0

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``(status, parsed JSON body)``; status 0 when the service could not be reached."""
        loop = asyncio.get_running_loop()
        status, doc = await loop.run_in_executor(
            self.pool, self._call, method, path, token, body, headers or {}
        )
        self.calls += 1
        if status == 0 or status >= 500:
            self.failures += 1
        return status, doc

    def _call(
        self, method: str, path: str, token: str | None, body: Any, headers: dict[str, str]
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        h = {"Accept": "application/json", **headers}
        if data is not None:
            h["Content-Type"] = "application/json"
        if token:
            h["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base_url + path, data=data, headers=h, method=method)
        try:
            with self.opener.open(req, timeout=self.timeout_s) as r:
                return int(r.status), _json(r.read())
        except urllib.error.HTTPError as e:
            return int(e.code), _json(e.read())
        except (OSError, ValueError) as e:
            return 0, {"detail": str(e)}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


# -- couriers ------------------------------------------------------------------------------


@dataclass
class CourierSim:
    """One courier's phone: where they are and what they are doing."""

    id: str
    token: str
    pos: LatLon
    last_t: float = 0.0
    shift_end: float = 0.0
    phase: Literal["idle", "driving", "serving"] = "idle"
    stop: StopKey | None = None
    target: LatLon | None = None
    leg_from: LatLon | None = None
    leg_start: float = 0.0
    leg_end: float = 0.0
    serve_end: float = 0.0
    tries: int = 0
    done: set[StopKey] = field(default_factory=set)
    velocity: tuple[float, float] = (0.0, 0.0)
    """(speed m/s, bearing degrees) of the leg being driven."""


@dataclass(frozen=True, slots=True)
class Placed:
    id: str
    customer: str
    token: str
    ready_at: float


def _bearing(a: LatLon, b: LatLon) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    y = math.sin(lo2 - lo1) * math.cos(la2)
    x = math.cos(la1) * math.sin(la2) - math.sin(la1) * math.cos(la2) * math.cos(lo2 - lo1)
    return math.degrees(math.atan2(y, x)) % 360.0


def _lerp(a: LatLon, b: LatLon, f: float) -> LatLon:
    f = min(max(f, 0.0), 1.0)
    return (round(a[0] + (b[0] - a[0]) * f, 7), round(a[1] + (b[1] - a[1]) * f, 7))


class DemoDriver:
    """Drives a :class:`DemoCity` against the service at ``http`` (see module docstring)."""

    def __init__(
        self,
        http: Http,
        clock: AcceleratedClock,
        secret: str,
        options: DemoOptions,
        city: DemoCity,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.http = http
        self.clock = clock
        self.secret = secret
        self.options = options
        self.city = city
        self.echo = echo
        self.rng = random.Random(options.seed)
        self.ops_token = self.token("ops", "demo-ops")
        self.couriers = [
            CourierSim(f"c{i + 1}", self.token("courier", f"c{i + 1}"), city.starts[i])
            for i in range(options.couriers)
        ]
        self.orders: dict[str, Placed] = {}
        self.counts: Counter[str] = Counter()
        self._next_job = 0
        self.started_wall = time.monotonic()

    def token(self, role: Role, subject: str) -> str:
        return create_token(self.secret, role, subject, TOKEN_TTL_S)

    # -- start ------------------------------------------------------------------------
    async def setup(self) -> list[Placed]:
        """Service area, shifts, first fixes and the first orders (whose pages we print)."""
        ring = [list(p) for p in self.city.ring]
        zones = {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "id": "demo",
                    "properties": {"name": self.city.name},
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                }
            ],
        }
        status, doc = await self.http.call("PUT", "/v1/zones", self.ops_token, zones)
        if status != 200:
            raise RuntimeError(f"PUT /v1/zones: {status} {doc}")
        await asyncio.gather(*(self._start_shift(c) for c in self.couriers))
        await asyncio.gather(*(self._post_fix(c, self.clock()) for c in self.couriers))
        first = [await self.place_order() for _ in range(self.options.tracked_orders)]
        return [p for p in first if p is not None]

    async def _start_shift(self, c: CourierSim) -> None:
        now = self.clock()
        body = {
            "action": "start",
            "lat": c.pos[0],
            "lon": c.pos[1],
            "shift_end": now + SHIFT_S,
            "capacity": self.options.capacity,
        }
        status, doc = await self.http.call("POST", f"/v1/couriers/{c.id}/shift", c.token, body)
        if status != 200:
            raise RuntimeError(f"shift of {c.id}: {status} {doc}")
        c.shift_end = now + SHIFT_S

    # -- customers --------------------------------------------------------------------
    async def place_order(self) -> Placed | None:
        job = self.city.jobs[self._next_job % len(self.city.jobs)]
        n = self._next_job + 1
        self._next_job += 1
        customer = f"cu-{n}"
        token = self.token("customer", customer)
        now = self.clock()
        body = {
            "pickup": {"lat": job.pickup[0], "lon": job.pickup[1], "id": job.restaurant},
            "dropoff": {"lat": job.dropoff[0], "lon": job.dropoff[1]},
            "ready_at": now + job.prep_s,
            "pickup_service_s": SERVICE_S,
            "dropoff_service_s": SERVICE_S,
        }
        status, doc = await self.http.call(
            "POST", "/v1/orders", token, body, {"Idempotency-Key": f"demo-{n}"}
        )
        if status not in (200, 201) or not isinstance(doc, dict):
            self.counts["order_refused"] += 1
            self.echo(f"warning: order {n} refused: {status} {_detail(doc)}")
            return None
        placed = Placed(str(doc["id"]), customer, token, float(doc["ready_at"]))
        self.orders[placed.id] = placed
        self.counts["placed"] += 1
        return placed

    async def _orders_loop(self) -> None:
        rate = self.options.orders_per_hour * self.options.speed / 3600.0  # per wall second
        if rate <= 0:
            return
        while True:
            await asyncio.sleep(self.rng.expovariate(rate))
            await self.place_order()

    # -- couriers ---------------------------------------------------------------------
    async def _courier_loop(self, c: CourierSim) -> None:
        while True:
            started = time.monotonic()
            try:
                wait = await self.step(c)
            except (RuntimeError, KeyError, TypeError, ValueError) as e:  # an unexpected answer
                self.counts["courier_errors"] += 1
                self.echo(f"warning: courier {c.id}: {type(e).__name__}: {e}")
                wait = self.options.gps_every_s
            await asyncio.sleep(max(0.05, wait - (time.monotonic() - started)))

    async def step(self, c: CourierSim) -> float:
        """One beat of a courier's phone; returns the wall seconds until the next one."""
        now = self.clock()
        if now > c.shift_end - 3600.0:
            await self._start_shift(c)
        pending = await self._route(c)
        if c.phase == "serving" and c.stop is not None:
            if c.stop not in {key for key, _ in pending}:  # given to someone else, or cancelled
                c.phase, c.stop = "idle", None
            elif now >= c.serve_end:
                await self._confirm(c, now)
                return 0.05  # straight on to the next stop
            else:
                await self._post_fix(c, now)
                return min(self.options.gps_every_s, self.clock.real_s(c.serve_end - now))
        if c.phase != "serving":
            self._follow(c, pending, now)
        if c.phase == "driving" and c.target is not None and c.leg_from is not None:
            span = c.leg_end - c.leg_start
            c.pos = _lerp(c.leg_from, c.target, 1.0 if span <= 0 else (now - c.leg_start) / span)
            if now >= c.leg_end:
                self._arrive(c, now)
        await self._post_fix(c, now)
        if c.phase == "driving":
            return min(self.options.gps_every_s, self.clock.real_s(c.leg_end - now))
        if c.phase == "serving":
            return min(self.options.gps_every_s, self.clock.real_s(c.serve_end - now))
        return self.options.gps_every_s

    async def _route(self, c: CourierSim) -> list[tuple[StopKey, LatLon]]:
        status, doc = await self.http.call("GET", f"/v1/couriers/{c.id}/route", c.token)
        if status != 200 or not isinstance(doc, dict):
            return []
        out: list[tuple[StopKey, LatLon]] = []
        for s in doc.get("stops", []):
            key = (str(s["order_id"]), str(s["kind"]))
            if key not in c.done:
                out.append((key, (float(s["place"]["lat"]), float(s["place"]["lon"]))))
        return out

    def _follow(self, c: CourierSim, pending: Sequence[tuple[StopKey, LatLon]], now: float) -> None:
        """Head for the first stop not done (a new leg when the route changed)."""
        if not pending:
            if c.phase == "driving":  # the stop went away mid-leg: stop where we are
                span = c.leg_end - c.leg_start
                if c.leg_from is not None and c.target is not None and span > 0:
                    c.pos = _lerp(c.leg_from, c.target, (now - c.leg_start) / span)
            c.phase, c.stop, c.target, c.velocity = "idle", None, None, (0.0, 0.0)
            return
        key, place = pending[0]
        if c.phase == "driving" and c.stop == key:
            return
        if c.phase == "driving" and c.leg_from is not None and c.target is not None:
            span = c.leg_end - c.leg_start
            c.pos = _lerp(c.leg_from, c.target, 1.0 if span <= 0 else (now - c.leg_start) / span)
        leg_s = float(self.city.travel.duration_matrix([c.pos], [place])[0, 0])
        metres = haversine_m(c.pos[0], c.pos[1], place[0], place[1])
        c.phase, c.stop, c.target, c.leg_from = "driving", key, place, c.pos
        c.leg_start, c.leg_end, c.tries = now, now + leg_s, 0
        c.velocity = (metres / leg_s if leg_s > 0 else 0.0, _bearing(c.pos, place))

    def _arrive(self, c: CourierSim, now: float) -> None:
        assert c.stop is not None and c.target is not None
        c.pos, c.phase, c.velocity = c.target, "serving", (0.0, 0.0)
        order_id, kind = c.stop
        ready = self.orders[order_id].ready_at if order_id in self.orders else now
        c.serve_end = max(now + SERVICE_S, ready) if kind == "pickup" else now + SERVICE_S

    async def _confirm(self, c: CourierSim, now: float) -> None:
        assert c.stop is not None
        order_id, kind = c.stop
        await self._post_fix(c, now, repeat=2)  # fresh fixes at the door
        body = None
        if c.tries >= CONFIRM_TRIES:
            body = {"override_reason": "demo courier at the stop; position filter lagging"}
        status, _ = await self.http.call("POST", f"/v1/orders/{order_id}/{kind}", c.token, body)
        if status == 200:
            c.done.add(c.stop)
            c.phase, c.stop = "idle", None
            self.counts["picked_up" if kind == "pickup" else "delivered"] += 1
            if body is not None:
                self.counts["overrides"] += 1
            return
        if status == 422 and c.tries < CONFIRM_TRIES:
            c.tries += 1  # outside the geofence by the filter's reckoning: try again
            return
        if status != 0:  # reassigned, cancelled or out of order: let the route decide
            self.counts[f"{kind}_refused"] += 1
            c.done.add(c.stop)
            c.phase, c.stop = "idle", None

    async def _post_fix(self, c: CourierSim, now: float, repeat: int = 1) -> None:
        fixes = []
        for _ in range(repeat):
            t = max(now, c.last_t + 0.5)
            c.last_t = t
            fix: dict[str, Any] = {
                "t": round(t, 3),
                "kind": "gps",
                "lat": c.pos[0],
                "lon": c.pos[1],
                "accuracy": GPS_ACCURACY_M,
                "speed": round(c.velocity[0], 3),
            }
            if c.velocity[0] > 0:
                fix["bearing"] = round(c.velocity[1], 2)
            fixes.append(fix)
        status, _ = await self.http.call(
            "POST", f"/v1/couriers/{c.id}/observations", c.token, fixes
        )
        self.counts["fixes" if status == 200 else "fixes_refused"] += len(fixes)

    # -- running ----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Drive the city until ``stop`` is set."""
        tasks = [asyncio.create_task(self._courier_loop(c)) for c in self.couriers]
        tasks.append(asyncio.create_task(self._orders_loop()))
        tasks.append(asyncio.create_task(self._status_loop()))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.status_every_s)
            self.echo(await self.status_line())

    async def order_counts(self) -> Counter[str]:
        """Orders by status, as the service has them."""
        status, doc = await self.http.call(
            "GET", "/v1/orders?status=all&limit=10000", self.ops_token
        )
        out: Counter[str] = Counter()
        if status == 200 and isinstance(doc, dict):
            out.update(str(o["status"]) for o in doc.get("orders", []))
        return out

    async def status_line(self, prefix: str = "status") -> str:
        by = await self.order_counts()
        wall = time.monotonic() - self.started_wall
        clock = time.strftime("%H:%M", time.localtime(self.clock()))
        moving = sum(1 for c in self.couriers if c.phase == "driving")
        return (
            f"{prefix}: {wall:.0f} s (city clock {clock}, x{self.options.speed:g}): "
            f"orders {sum(by.values())} placed, {by['placed']} waiting, "
            f"{by['assigned']} assigned, {by['picked_up']} on the way, "
            f"{by['delivered']} delivered, {by['cancelled']} cancelled; "
            f"couriers {len(self.couriers)} on shift, {moving} driving; "
            f"geofence overrides {self.counts['overrides']}; "
            f"requests {self.http.calls}, failed {self.http.failures}"
        )


def _detail(doc: Any) -> str:
    if isinstance(doc, dict):
        return str(doc.get("detail") or doc.get("reason") or doc)
    return str(doc)

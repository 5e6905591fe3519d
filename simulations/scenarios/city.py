"""Generated cities: a seeded delivery day described by a small readable TOML file.

A city file (:class:`CityConfig`) says where the city is (a centre and a service-area
ring), where food comes from (restaurants clustered in a few hot H3 cells, plus stores),
when people order (a base rate plus lunch and dinner peaks), how long food takes
(log-normal preparation times), who delivers (courier shift blocks, one speed) and the
rules (promise, service times, pay). :func:`generate_city` turns it into the same
:class:`~simulations.scenarios.base.Scenario` the engine replays for MDRP instances, with
``(lat, lon)`` places and a :class:`geo.travel.GreatCircleModel`.

Units: clock times in the file are ``"HH:MM"`` local time (hours may exceed 23 for shifts
past midnight) and are minutes after midnight in :class:`CityConfig`; durations are
minutes, distances km, speeds km/h, coordinates degrees. The scenario is in **seconds
after midnight**, like every scenario. The ring is in GeoJSON order, ``[lon, lat]``.

The same file and seed always give the same day. Each part of the day draws from its own
random stream (places, orders, fleet), so changing the number of orders does not move
the restaurants, and changing the fleet does not change the orders.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from statistics import NormalDist
from typing import Any

import h3
import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Polygon

from dispatch.model import Courier, Order, Place
from geo.coords import LocalFrame
from geo.travel import GreatCircleModel
from simulations.scenarios.base import Parameters, Scenario, ScenarioError
from simulations.scenarios.mdrp import START_ID

__all__ = [
    "AreaConfig",
    "CityConfig",
    "DemandConfig",
    "FleetConfig",
    "Peak",
    "RestaurantConfig",
    "RulesConfig",
    "Shift",
    "StoreConfig",
    "city_to_toml",
    "default_city",
    "default_city_path",
    "format_clock",
    "generate_city",
    "is_city_file",
    "load_city",
    "load_city_scenario",
    "parse_clock",
    "save_city",
    "scale_city",
]

FloatArray = npt.NDArray[np.float64]
_Z90 = 1.2815515655446004
"""Standard normal 90th percentile: a log-normal's p90 is ``median * exp(_Z90 sigma)``."""
_MIN_PREP_MIN = 1.0
"""Preparation times are clipped below at this many minutes."""
MAX_ORDERS = 100_000
"""Most orders a day may have: 50 times the default city, far beyond what a run finishes
in reasonable time; a typo like ``orders = 100000000000`` gets a clear error instead of a
MemoryError."""
MAX_PLACES = 10_000
"""Most restaurants, stores or couriers (each) a city may have (same reason)."""
MAX_H3_CELLS = 200_000
"""Most H3 cells the service area may cover at ``h3_res``: hot cells are drawn from all of
them, and a fine resolution (13-15) over a city is millions of cells (minutes, gigabytes)."""
MIN_PEAK_INSIDE = 0.01
"""Least share of a demand peak's normal that must fall inside the order window; peak
placements are redrawn until inside, so a peak outside the window would never finish."""
_SAMPLE_ROUNDS = 50
"""Rejection rounds for points in the area (or a cell of it) before the rest are drawn
exactly (:func:`_uniform_in`): ordinary areas need 1-3 rounds, so their days do not
change, and a sliver or tiny area cannot loop for ever."""
_CHOOSE_CELLS = 4_000_000
"""Customer x place distances held at once when customers choose a place (32 MB)."""
_PEAK_ROUNDS = 4000
"""Redraw rounds for peak placements; with >= 1 % accepted per draw fewer than
``orders x 0.99^4000`` (1e-17 x orders) are left after them, and those are drawn
uniformly in the window, so the loop ends whatever the config."""


def _fail(where: str, message: str) -> ScenarioError:
    return ScenarioError(f"{where}: {message}" if where else message)


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise _fail(where, message)


def parse_clock(value: str, where: str = "") -> int:
    """Minutes after midnight of ``"HH:MM"`` (``"25:30"`` is 01:30 the next day)."""
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise _fail(where, f'expected a clock time "HH:MM", got {value!r}')
    h, m = int(parts[0]), int(parts[1])
    _check(m < 60 and h < 48, where, f"{value!r} is not a time (HH < 48, MM < 60)")
    return h * 60 + m


def format_clock(minutes: int) -> str:
    """``"HH:MM"`` of minutes after midnight (inverse of :func:`parse_clock`)."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class Peak:
    """A demand peak: normal around ``at_min`` (minutes after midnight), sd ``sd_min``;
    ``weight`` is its share of the day's orders relative to the other components."""

    name: str
    at_min: int
    sd_min: float
    weight: float

    def __post_init__(self) -> None:
        _check(self.sd_min > 0, f"peak {self.name}", "sd_min must be > 0")
        _check(self.weight >= 0, f"peak {self.name}", "weight must be >= 0")


@dataclass(frozen=True, slots=True)
class Shift:
    """A block of ``couriers`` couriers on duty from ``start_min`` to ``end_min``."""

    start_min: int
    end_min: int
    couriers: int

    def __post_init__(self) -> None:
        where = f"shift {format_clock(self.start_min)}-{format_clock(self.end_min)}"
        _check(self.end_min > self.start_min, where, "must end after it starts")
        _check(self.couriers >= 0, where, "couriers must be >= 0")


_DEFAULT_RING: tuple[tuple[float, float], ...] = (
    (8.3337, 50.0), (8.3312, 50.0197), (8.2992, 50.031), (8.265, 50.0331),
    (8.2335, 50.0363), (8.1968, 50.0335), (8.1804, 50.0169), (8.1873, 50.0),
    (8.1906, 49.9856), (8.2029, 49.9703), (8.2307, 49.9574), (8.2679, 49.9605),
    (8.2941, 49.9722), (8.3196, 49.9831),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AreaConfig:
    """Where the city is: ``center`` ``(lat, lon)``, the service area ``ring`` of
    ``(lon, lat)`` vertices (GeoJSON order, open or closed) and the H3 resolution of the
    restaurant clusters. The ring must be a simple polygon around the centre, covering at
    most :data:`MAX_H3_CELLS` cells at ``h3_res``."""

    center: tuple[float, float] = (50.0, 8.25)
    ring: tuple[tuple[float, float], ...] = _DEFAULT_RING
    h3_res: int = 8

    def __post_init__(self) -> None:
        lat, lon = self.center
        _check(abs(lat) <= 85 and abs(lon) <= 180, "area.center", "must be [lat, lon] degrees")
        _check(len(self.ring) >= 3, "area.ring", "needs at least 3 [lon, lat] vertices")
        for lo, la in self.ring:
            _check(abs(la) <= 85 and abs(lo) <= 180, "area.ring", f"bad vertex {[lo, la]}")
        _check(0 <= self.h3_res <= 15, "area.h3_res", "must be an H3 resolution 0-15")
        # geometry here, not at generation, so every loader and sweep worker gets a valid area
        poly = _local_polygon(self)[1]
        _check(poly.is_valid and poly.area > 0, "area.ring", "not a simple polygon with an area")
        _check(
            bool(shapely.contains_xy(poly, 0.0, 0.0)),
            "area.center",
            "must lie inside the service area ring",
        )
        cells = [poly.area / h3.average_hexagon_area(r, "m^2") for r in range(16)]
        if cells[self.h3_res] > MAX_H3_CELLS:
            finest = max(r for r, n in enumerate(cells) if n <= MAX_H3_CELLS)
            raise _fail(
                "area.h3_res",
                f"{self.h3_res} splits the service area into about {cells[self.h3_res]:,.0f} "
                f"cells (at most {MAX_H3_CELLS:,}); use {finest} or coarser",
            )

    @property
    def closed_ring(self) -> tuple[tuple[float, float], ...]:
        """The ring with its first vertex repeated at the end (GeoJSON closes rings)."""
        return self.ring if self.ring[0] == self.ring[-1] else (*self.ring, self.ring[0])


def _local_polygon(area: AreaConfig) -> tuple[LocalFrame, Polygon]:
    """The ring in local metres around the centre, and that frame (area in m^2 is exact
    enough there, and the centre is the origin)."""
    frame = LocalFrame(*area.center)
    lon = np.array([p[0] for p in area.ring])
    lat = np.array([p[1] for p in area.ring])
    x, y = frame.to_xy_array(lat, lon)
    return frame, Polygon(np.column_stack([x, y]))


@dataclass(frozen=True, slots=True)
class RestaurantConfig:
    """``count`` restaurants; ``hot_share`` of them are split evenly over ``hot_cells``
    H3 cells drawn near the centre (normal weight, sd ``spread_km``), the rest spread
    like homes. Orders favour popular restaurants (log-normal popularity, sd
    ``popularity_sigma``). Preparation time is log-normal with ``prep_median_min`` and
    ``prep_p90_min``."""

    count: int = 160
    hot_cells: int = 8
    hot_share: float = 0.55
    spread_km: float = 2.0
    popularity_sigma: float = 0.8
    prep_median_min: float = 12.0
    prep_p90_min: float = 22.0

    def __post_init__(self) -> None:
        _check(1 <= self.count <= MAX_PLACES, "restaurants.count", f"must be 1-{MAX_PLACES:,}")
        _check(self.hot_cells >= 1, "restaurants.hot_cells", "must be >= 1")
        _check(0 <= self.hot_share <= 1, "restaurants.hot_share", "must be in [0, 1]")
        _check(self.spread_km > 0, "restaurants.spread_km", "must be > 0")
        _check(self.popularity_sigma >= 0, "restaurants.popularity_sigma", "must be >= 0")
        _prep_check("restaurants", self.prep_median_min, self.prep_p90_min)


def _prep_check(section: str, median: float, p90: float) -> None:
    _check(median > 0, f"{section}.prep_median_min", "must be > 0")
    _check(p90 >= median, f"{section}.prep_p90_min", "must be >= prep_median_min")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``count`` stores (groceries, pharmacies) spread like homes; ``order_share`` of
    the orders go to a store near the customer. Picking and packing time is log-normal."""

    count: int = 20
    order_share: float = 0.12
    prep_median_min: float = 5.0
    prep_p90_min: float = 9.0

    def __post_init__(self) -> None:
        _check(0 <= self.count <= MAX_PLACES, "stores.count", f"must be 0-{MAX_PLACES:,}")
        _check(0 <= self.order_share <= 1, "stores.order_share", "must be in [0, 1]")
        _check(self.count > 0 or self.order_share == 0, "stores", "order_share needs stores")
        _prep_check("stores", self.prep_median_min, self.prep_p90_min)


_DEFAULT_PEAKS = (Peak("lunch", 12 * 60 + 30, 50.0, 0.32), Peak("dinner", 19 * 60 + 30, 70.0, 0.45))


@dataclass(frozen=True, slots=True)
class DemandConfig:
    """``orders`` placed between ``first_order_min`` and ``last_order_min``: a flat base
    (``base_weight``) plus ``peaks``. Homes: a normal around the centre (sd
    ``centre_sd_km``) mixed with ``uniform_share`` uniform over the area. A customer
    orders from a restaurant within ``max_distance_km``, weighted by popularity x
    ``exp(-distance / distance_decay_km)``. A peak must overlap the order window
    (:data:`MIN_PEAK_INSIDE`)."""

    orders: int = 2000
    first_order_min: int = 10 * 60
    last_order_min: int = 22 * 60 + 30
    base_weight: float = 0.23
    peaks: tuple[Peak, ...] = _DEFAULT_PEAKS
    centre_sd_km: float = 2.5
    uniform_share: float = 0.3
    max_distance_km: float = 4.5
    distance_decay_km: float = 1.2

    def __post_init__(self) -> None:
        _check(0 <= self.orders <= MAX_ORDERS, "demand.orders", f"must be 0-{MAX_ORDERS:,}")
        _check(self.last_order_min > self.first_order_min, "demand", "last_order after first_order")
        lo, hi = self.first_order_min, self.last_order_min
        for p in self.peaks:
            normal = NormalDist(p.at_min, p.sd_min)
            inside = normal.cdf(hi) - normal.cdf(lo)
            _check(
                inside >= MIN_PEAK_INSIDE,
                "demand.peaks",
                f"peak {p.name} at {format_clock(p.at_min)} (sd {p.sd_min:g} min) lies outside "
                f"the order window {format_clock(lo)}-{format_clock(hi)} ({inside:.1%} of it "
                f"inside, at least {MIN_PEAK_INSIDE:.0%} must be)",
            )
        _check(self.base_weight >= 0, "demand.base_weight", "must be >= 0")
        _check(
            self.base_weight + sum(p.weight for p in self.peaks) > 0,
            "demand",
            "base_weight and peak weights cannot all be 0",
        )
        _check(self.centre_sd_km > 0, "demand.centre_sd_km", "must be > 0")
        _check(0 <= self.uniform_share <= 1, "demand.uniform_share", "must be in [0, 1]")
        _check(self.max_distance_km > 0, "demand.max_distance_km", "must be > 0")
        _check(self.distance_decay_km > 0, "demand.distance_decay_km", "must be > 0")


_DEFAULT_SHIFTS = (
    Shift(10 * 60, 14 * 60, 24),
    Shift(11 * 60, 14 * 60 + 30, 56),
    Shift(11 * 60 + 30, 14 * 60 + 30, 40),
    Shift(13 * 60 + 30, 17 * 60 + 30, 24),
    Shift(17 * 60, 22 * 60, 56),
    Shift(18 * 60, 21 * 60 + 30, 72),
    Shift(19 * 60, 23 * 60 + 30, 32),
)


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """Courier ``shifts``; every courier rides at ``speed_kmh`` along roads
    ``detour_factor`` times longer than the great circle, carrying up to ``capacity``
    orders, and starts its shift somewhere in the city (homes are drawn like customers)."""

    speed_kmh: float = 16.0
    detour_factor: float = 1.3
    capacity: int = 3
    shifts: tuple[Shift, ...] = _DEFAULT_SHIFTS

    def __post_init__(self) -> None:
        _check(self.speed_kmh > 0, "fleet.speed_kmh", "must be > 0")
        _check(self.detour_factor >= 1, "fleet.detour_factor", "must be >= 1")
        _check(self.capacity >= 1, "fleet.capacity", "must be >= 1")
        _check(sum(s.couriers for s in self.shifts) > 0, "fleet.shifts", "need couriers")
        _check(self.couriers <= MAX_PLACES, "fleet.shifts", f"at most {MAX_PLACES:,} couriers")

    @property
    def couriers(self) -> int:
        return sum(s.couriers for s in self.shifts)


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """The promise (target and maximum click-to-door), service times and pay."""

    target_min: float = 40.0
    max_min: float = 90.0
    pickup_service_min: float = 4.0
    dropoff_service_min: float = 4.0
    pay_per_order: float = 10.0
    guaranteed_pay_per_hour: float = 15.0

    def __post_init__(self) -> None:
        _check(self.target_min > 0, "rules.target_min", "must be > 0")
        _check(self.max_min >= self.target_min, "rules.max_min", "must be >= target_min")
        _check(
            self.pickup_service_min >= 0 and self.dropoff_service_min >= 0,
            "rules",
            "service times must be >= 0",
        )
        _check(self.pay_per_order >= 0, "rules.pay_per_order", "must be >= 0")
        _check(self.guaranteed_pay_per_hour >= 0, "rules.guaranteed_pay_per_hour", "must be >= 0")


@dataclass(frozen=True, slots=True)
class CityConfig:
    """A generated city (the TOML file). The defaults are the built-in default city,
    ``simulations/data/default_city.toml``."""

    name: str = "default-city"
    seed: int = 1
    area: AreaConfig = field(default_factory=AreaConfig)
    restaurants: RestaurantConfig = field(default_factory=RestaurantConfig)
    stores: StoreConfig = field(default_factory=StoreConfig)
    demand: DemandConfig = field(default_factory=DemandConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)

    def __post_init__(self) -> None:
        _check(bool(self.name.strip()), "name", "must not be empty")
        _check(self.seed >= 0, "seed", "must be >= 0")
        last_shift = max(s.end_min for s in self.fleet.shifts if s.couriers)
        _check(
            last_shift > self.demand.last_order_min,
            "fleet.shifts",
            "the last shift must end after the last order",
        )


# --------------------------------------------------------------------------- files


def default_city_path() -> Path:
    """The packaged default city file."""
    return Path(str(resources.files("simulations") / "data" / "default_city.toml"))


def default_city() -> CityConfig:
    """The built-in default city, read from :func:`default_city_path`."""
    return load_city(default_city_path())


def is_city_file(path: Path) -> bool:
    """A city file is recognised by its ``.toml`` suffix."""
    return path.suffix.lower() == ".toml"


class _Table:
    """A TOML table being read: typed getters that name the key, unknown keys refused."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.data[key]

    def number(self, key: str, default: float) -> float:
        if key not in self.data:
            return default
        v = self.raw(key)
        _check(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
            self._key(key),
            f"must be a number, got {v!r}",
        )
        return float(v)

    def integer(self, key: str, default: int) -> int:
        if key not in self.data:
            return default
        v = self.raw(key)
        _check(
            isinstance(v, int) and not isinstance(v, bool),
            self._key(key),
            f"must be an integer, got {v!r}",
        )
        return int(v)

    def text(self, key: str, default: str) -> str:
        if key not in self.data:
            return default
        v = self.raw(key)
        _check(isinstance(v, str), self._key(key), f"must be a string, got {v!r}")
        return str(v)

    def clock(self, key: str, default: int) -> int:
        if key not in self.data:
            return default
        return parse_clock(self.raw(key), self._key(key))

    def pair(self, key: str, default: tuple[float, float]) -> tuple[float, float]:
        if key not in self.data:
            return default
        return _pair(self.raw(key), self._key(key))

    def table(self, key: str) -> _Table:
        v = self.data.get(key, {})
        self.used.add(key)
        _check(isinstance(v, dict), self._key(key), "must be a table")
        return _Table(v, self._key(key))

    def tables(self, key: str) -> list[_Table] | None:
        if key not in self.data:
            return None
        v = self.raw(key)
        _check(
            isinstance(v, list) and all(isinstance(t, dict) for t in v),
            self._key(key),
            "must be a list of tables",
        )
        return [_Table(t, f"{self._key(key)}[{i}]") for i, t in enumerate(v)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        _check(not unknown, self.where or "city file", f"unknown keys {unknown}")


def _pair(v: Any, where: str) -> tuple[float, float]:
    ok = (
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
    )
    _check(ok, where, f"must be a pair of numbers, got {v!r}")
    return float(v[0]), float(v[1])


def _config_from_dict(doc: Mapping[str, Any]) -> CityConfig:
    d = CityConfig()
    top = _Table(doc, "")
    a = top.table("area")
    ring = d.area.ring
    if a.has("ring"):
        raw = a.raw("ring")
        _check(isinstance(raw, list), "area.ring", "must be a list of [lon, lat] pairs")
        ring = tuple(_pair(p, f"area.ring[{i}]") for i, p in enumerate(raw))
    area = AreaConfig(a.pair("center", d.area.center), ring, a.integer("h3_res", d.area.h3_res))
    a.done()
    r, dr = top.table("restaurants"), d.restaurants
    restaurants = RestaurantConfig(
        count=r.integer("count", dr.count),
        hot_cells=r.integer("hot_cells", dr.hot_cells),
        hot_share=r.number("hot_share", dr.hot_share),
        spread_km=r.number("spread_km", dr.spread_km),
        popularity_sigma=r.number("popularity_sigma", dr.popularity_sigma),
        prep_median_min=r.number("prep_median_min", dr.prep_median_min),
        prep_p90_min=r.number("prep_p90_min", dr.prep_p90_min),
    )
    r.done()
    s, ds = top.table("stores"), d.stores
    stores = StoreConfig(
        count=s.integer("count", ds.count),
        order_share=s.number("order_share", ds.order_share),
        prep_median_min=s.number("prep_median_min", ds.prep_median_min),
        prep_p90_min=s.number("prep_p90_min", ds.prep_p90_min),
    )
    s.done()
    m, dm = top.table("demand"), d.demand
    peaks = dm.peaks
    peak_tables = m.tables("peaks")
    if peak_tables is not None:
        for t in peak_tables:
            _check(t.has("at"), t.where, "needs at")
        peaks = tuple(
            Peak(
                name=t.text("name", f"peak {i + 1}"),
                at_min=t.clock("at", 12 * 60),
                sd_min=t.number("sd_min", 60.0),
                weight=t.number("weight", 1.0),
            )
            for i, t in enumerate(peak_tables)
        )
        for t in peak_tables:
            t.done()
    demand = DemandConfig(
        orders=m.integer("orders", dm.orders),
        first_order_min=m.clock("first_order", dm.first_order_min),
        last_order_min=m.clock("last_order", dm.last_order_min),
        base_weight=m.number("base_weight", dm.base_weight),
        peaks=peaks,
        centre_sd_km=m.number("centre_sd_km", dm.centre_sd_km),
        uniform_share=m.number("uniform_share", dm.uniform_share),
        max_distance_km=m.number("max_distance_km", dm.max_distance_km),
        distance_decay_km=m.number("distance_decay_km", dm.distance_decay_km),
    )
    m.done()
    f, df = top.table("fleet"), d.fleet
    shifts = list(df.shifts)
    shift_tables = f.tables("shifts")
    if shift_tables is not None:
        shifts = []
        for t in shift_tables:
            _check(t.has("start") and t.has("end"), t.where, "needs start and end")
            shifts.append(Shift(t.clock("start", 0), t.clock("end", 0), t.integer("couriers", 1)))
            t.done()
    fleet = FleetConfig(
        speed_kmh=f.number("speed_kmh", df.speed_kmh),
        detour_factor=f.number("detour_factor", df.detour_factor),
        capacity=f.integer("capacity", df.capacity),
        shifts=tuple(shifts),
    )
    f.done()
    u, du = top.table("rules"), d.rules
    rules = RulesConfig(
        target_min=u.number("target_min", du.target_min),
        max_min=u.number("max_min", du.max_min),
        pickup_service_min=u.number("pickup_service_min", du.pickup_service_min),
        dropoff_service_min=u.number("dropoff_service_min", du.dropoff_service_min),
        pay_per_order=u.number("pay_per_order", du.pay_per_order),
        guaranteed_pay_per_hour=u.number("guaranteed_pay_per_hour", du.guaranteed_pay_per_hour),
    )
    u.done()
    config = CityConfig(
        name=top.text("name", d.name),
        seed=top.integer("seed", d.seed),
        area=area,
        restaurants=restaurants,
        stores=stores,
        demand=demand,
        fleet=fleet,
        rules=rules,
    )
    top.done()
    return config


def load_city(path: Path | str) -> CityConfig:
    """Read a city file. Keys left out take the default city's value; unknown keys and
    bad values raise :class:`ScenarioError` naming the file and the key."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{p}: not valid TOML: {e}") from e
    try:
        return _config_from_dict(doc)
    except ScenarioError as e:
        raise ScenarioError(f"{p}: {e}") from e


def _value(v: object) -> str:
    """One TOML value: strings, numbers, lists and inline tables (all this file needs)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        escaped = v.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"TOML cannot hold {v}")
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def city_to_toml(config: CityConfig) -> str:
    """The text of a city file for ``config`` (commented; :func:`load_city` reads it)."""
    c = config
    lines: list[str] = []

    def kv(key: str, value: object, comment: str = "") -> None:
        text = f"{key} = {_value(value)}"
        lines.append(f"{text:<34} # {comment}" if comment else text)

    def rows(key: str, items: Sequence[object], comment: str) -> None:
        lines.append(f"# {comment}")
        lines.append(f"{key} = [")
        lines.extend(f"  {_value(x)}," for x in items)
        lines.append("]")

    lines += [
        "# An o2o generated city: one delivery day, the same for the same file and seed.",
        '# Clock times are "HH:MM" local time; durations are minutes, distances km.',
        "# Run it with: o2o simulate THIS_FILE.toml",
        "",
    ]
    kv("name", c.name)
    kv("seed", c.seed, "seed of the generator (o2o simulate --city-seed overrides it)")
    lines += ["", "[area]"]
    kv("center", list(c.area.center), "[lat, lon] degrees")
    kv("h3_res", c.area.h3_res, "H3 resolution of restaurant clusters")
    rows("ring", [list(p) for p in c.area.ring], "service area, GeoJSON order [lon, lat]")
    r = c.restaurants
    lines += ["", "[restaurants]"]
    kv("count", r.count)
    kv("hot_cells", r.hot_cells, "H3 cells where restaurants cluster")
    kv("hot_share", r.hot_share, "share of restaurants in hot cells")
    kv("spread_km", r.spread_km, "sd of hot-cell distance from the centre")
    kv("popularity_sigma", r.popularity_sigma, "log-normal spread of popularity")
    kv("prep_median_min", r.prep_median_min, "preparation time, median")
    kv("prep_p90_min", r.prep_p90_min, "preparation time, 90th percentile")
    s = c.stores
    lines += ["", "[stores]"]
    kv("count", s.count, "groceries, pharmacies")
    kv("order_share", s.order_share, "share of orders going to stores")
    kv("prep_median_min", s.prep_median_min, "picking and packing, median")
    kv("prep_p90_min", s.prep_p90_min, "picking and packing, 90th percentile")
    d = c.demand
    lines += ["", "[demand]"]
    kv("orders", d.orders, "orders in the day")
    kv("first_order", format_clock(d.first_order_min))
    kv("last_order", format_clock(d.last_order_min))
    kv("base_weight", d.base_weight, "flat demand, relative to the peaks")
    kv("centre_sd_km", d.centre_sd_km, "homes: normal around the centre, sd")
    kv("uniform_share", d.uniform_share, "homes: share uniform over the area")
    kv("max_distance_km", d.max_distance_km, "farthest restaurant a customer orders from")
    kv("distance_decay_km", d.distance_decay_km, "preference for nearby restaurants")
    rows(
        "peaks",
        [
            {"name": p.name, "at": format_clock(p.at_min), "sd_min": p.sd_min, "weight": p.weight}
            for p in d.peaks
        ],
        "demand peaks: normal around `at` with sd `sd_min`",
    )
    f = c.fleet
    lines += ["", "[fleet]"]
    kv("speed_kmh", f.speed_kmh, "courier speed on the road")
    kv("detour_factor", f.detour_factor, "road distance / great-circle distance")
    kv("capacity", f.capacity, "orders a courier can carry")
    rows(
        "shifts",
        [
            {
                "start": format_clock(s.start_min),
                "end": format_clock(s.end_min),
                "couriers": s.couriers,
            }
            for s in f.shifts
        ],
        "courier shift blocks",
    )
    u = c.rules
    lines += ["", "[rules]"]
    kv("target_min", u.target_min, "promised click-to-door")
    kv("max_min", u.max_min, "maximum click-to-door")
    kv("pickup_service_min", u.pickup_service_min)
    kv("dropoff_service_min", u.dropoff_service_min)
    kv("pay_per_order", u.pay_per_order)
    kv("guaranteed_pay_per_hour", u.guaranteed_pay_per_hour)
    return "\n".join(lines) + "\n"


def save_city(config: CityConfig, path: Path | str) -> Path:
    """Write ``config`` as a city file (parent directories created); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(city_to_toml(config), encoding="utf-8")
    return p


def scale_city(config: CityConfig, factor: float) -> CityConfig:
    """The same city with ``factor`` times the orders and couriers (at least one each
    shift block that had any); geography, timing and rules unchanged."""
    if not (math.isfinite(factor) and factor > 0):
        raise ScenarioError(f"scale must be > 0, got {factor}")
    shifts = tuple(
        replace(s, couriers=max(1, round(s.couriers * factor)) if s.couriers else 0)
        for s in config.fleet.shifts
    )
    return replace(
        config,
        demand=replace(config.demand, orders=max(1, round(config.demand.orders * factor))),
        fleet=replace(config.fleet, shifts=shifts),
    )


# --------------------------------------------------------------------------- generation


class _Sampler:
    """Draws points in the service area (local metres around the centre)."""

    def __init__(self, config: CityConfig) -> None:
        self.frame, self.area = _local_polygon(config.area)  # checked by AreaConfig
        self.bounds = self.area.bounds

    def inside(self, x: FloatArray, y: FloatArray) -> npt.NDArray[np.bool_]:
        return np.asarray(shapely.contains_xy(self.area, x, y), dtype=bool)

    def homes(
        self, rng: np.random.Generator, n: int, sd_m: float, uniform_share: float
    ) -> tuple[FloatArray, FloatArray]:
        """``n`` points: normal around the centre, ``uniform_share`` uniform; all inside."""
        xs: list[FloatArray] = [np.empty(0)]
        ys: list[FloatArray] = [np.empty(0)]
        got = 0
        x0, y0, x1, y1 = self.bounds
        for _ in range(_SAMPLE_ROUNDS):
            if got >= n:
                break
            k = max(64, 2 * (n - got))
            uni = rng.random(k) < uniform_share
            x = np.where(uni, rng.uniform(x0, x1, k), rng.normal(0.0, sd_m, k))
            y = np.where(uni, rng.uniform(y0, y1, k), rng.normal(0.0, sd_m, k))
            keep = self.inside(x, y)
            xs.append(x[keep])
            ys.append(y[keep])
            got += int(keep.sum())
        if got < n:  # an area far smaller than the spread, or a sliver of its bounds
            x, y = _uniform_in(self.area, rng, n - got)
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs)[:n], np.concatenate(ys)[:n]

    def in_cell(self, rng: np.random.Generator, cell: str, n: int) -> tuple[FloatArray, FloatArray]:
        """``n`` points uniform in an H3 cell (and in the area)."""
        b = np.array(h3.cell_to_boundary(cell), dtype=np.float64)
        hx, hy = self.frame.to_xy_array(b[:, 0], b[:, 1])
        hexagon = Polygon(np.column_stack([hx, hy])).intersection(self.area)
        if hexagon.is_empty or hexagon.area <= 0:
            hexagon = self.area
        x0, y0, x1, y1 = hexagon.bounds
        xs: list[FloatArray] = [np.empty(0)]
        ys: list[FloatArray] = [np.empty(0)]
        got = 0
        for _ in range(_SAMPLE_ROUNDS):
            if got >= n:
                break
            k = max(32, 3 * (n - got))
            x, y = rng.uniform(x0, x1, k), rng.uniform(y0, y1, k)
            keep = np.asarray(shapely.contains_xy(hexagon, x, y), dtype=bool)
            xs.append(x[keep])
            ys.append(y[keep])
            got += int(keep.sum())
        if got < n:  # a sliver of the cell inside the area
            x, y = _uniform_in(hexagon, rng, n - got)
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs)[:n], np.concatenate(ys)[:n]

    def latlon(self, x: FloatArray, y: FloatArray) -> list[tuple[float, float]]:
        lat, lon = self.frame.to_latlon_array(x, y)
        return [(round(float(a), 6), round(float(b), 6)) for a, b in zip(lat, lon, strict=True)]


def _uniform_in(
    shape: shapely.Geometry, rng: np.random.Generator, n: int
) -> tuple[FloatArray, FloatArray]:
    """``n`` points uniform in a polygon, exactly and with no rejection: a triangle of its
    constrained Delaunay triangulation drawn by area, then a point uniform in it."""
    tris = shapely.get_parts(shapely.constrained_delaunay_triangles(shape))
    corners = np.array([np.asarray(t.exterior.coords)[:3] for t in tris], dtype=np.float64)
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    ab, ac = b - a, c - a
    area = 0.5 * np.abs(ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0])
    pick = rng.choice(len(tris), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    flip = r1 + r2 > 1  # fold the parallelogram's far half back into the triangle
    r1, r2 = np.where(flip, 1 - r1, r1), np.where(flip, 1 - r2, r2)
    p = a[pick] + r1[:, None] * ab[pick] + r2[:, None] * ac[pick]
    return p[:, 0].copy(), p[:, 1].copy()


def _hot_cells(config: CityConfig, sampler: _Sampler, rng: np.random.Generator) -> list[str]:
    """Cells where restaurants cluster: drawn without replacement, near the centre."""
    ring = [(lat, lon) for lon, lat in config.area.ring]
    cells = sorted(str(c) for c in h3.h3shape_to_cells(h3.LatLngPoly(ring), config.area.h3_res))
    if not cells:
        cells = [str(h3.latlng_to_cell(*config.area.center, config.area.h3_res))]
    centres = np.array([h3.cell_to_latlng(c) for c in cells], dtype=np.float64)
    x, y = sampler.frame.to_xy_array(centres[:, 0], centres[:, 1])
    sd = config.restaurants.spread_km * 1000.0
    w = np.exp(-0.5 * (x * x + y * y) / (sd * sd)) + 1e-12
    k = min(config.restaurants.hot_cells, len(cells))
    picked = rng.choice(len(cells), size=k, replace=False, p=w / w.sum())
    return [cells[int(i)] for i in picked]


def _choose(
    rng: np.random.Generator,
    customers: tuple[FloatArray, FloatArray],
    places: tuple[FloatArray, FloatArray],
    weight: FloatArray,
    max_m: float,
    decay_m: float,
) -> npt.NDArray[np.intp]:
    """Per customer, a place with probability ~ weight x exp(-d / decay) among places
    within ``max_m``; the nearest place when none is. Customers go in blocks so memory
    stays ~``_CHOOSE_CELLS`` floats however many orders and places there are."""
    (cx, cy), (px, py) = customers, places
    u = rng.random(len(cx))
    out: npt.NDArray[np.intp] = np.empty(len(cx), dtype=np.intp)
    step = max(1, _CHOOSE_CELLS // len(px))
    for a in range(0, len(cx), step):
        b = a + step
        dist_m = np.hypot(cx[a:b, None] - px[None, :], cy[a:b, None] - py[None, :])
        w = weight[None, :] * np.exp(-dist_m / decay_m) * (dist_m <= max_m)
        total = w.sum(axis=1)
        cum = np.cumsum(w, axis=1)
        pick = np.minimum((cum < (u[a:b] * total)[:, None]).sum(axis=1), w.shape[1] - 1)
        out[a:b] = np.where(total > 0, pick, np.argmin(dist_m, axis=1))
    return out


def _prep_s(rng: np.random.Generator, n: int, median_min: float, p90_min: float) -> FloatArray:
    sigma = math.log(p90_min / median_min) / _Z90
    minutes = median_min * np.exp(sigma * rng.standard_normal(n))
    out: FloatArray = np.round(np.maximum(minutes, _MIN_PREP_MIN) * 60.0)
    return out


def _placement_s(rng: np.random.Generator, d: DemandConfig) -> FloatArray:
    """Sorted placement times (whole seconds after midnight) of ``d.orders`` orders."""
    lo, hi = d.first_order_min * 60.0, d.last_order_min * 60.0
    weights = np.array([d.base_weight, *(p.weight for p in d.peaks)], dtype=np.float64)
    part = rng.choice(len(weights), size=d.orders, p=weights / weights.sum())
    t = rng.uniform(lo, hi, d.orders)
    for i, p in enumerate(d.peaks, 1):
        idx = np.flatnonzero(part == i)
        for _ in range(_PEAK_ROUNDS):
            if not idx.size:
                break
            t[idx] = rng.normal(p.at_min * 60.0, p.sd_min * 60.0, idx.size)
            idx = idx[(t[idx] < lo) | (t[idx] > hi)]
        if idx.size:  # only a peak DemandConfig would refuse gets here (_PEAK_ROUNDS)
            t[idx] = rng.uniform(lo, hi, idx.size)
    out: FloatArray = np.sort(np.round(t))
    return out


def generate_city(
    config: CityConfig, seed: int | None = None, *, source: Path | None = None
) -> Scenario:
    """The delivery day of ``config`` (``seed`` defaults to ``config.seed``).

    Restaurants are ``r1..``, stores ``s1..``, orders ``o1..`` in placement order,
    couriers ``c1..`` in shift order (their start place has id ``"0"``, as in MDRP).
    """
    seed = config.seed if seed is None else seed
    rng_places, rng_orders, rng_fleet = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    sampler = _Sampler(config)
    rc, sc, dm, fl, ru = (
        config.restaurants, config.stores, config.demand, config.fleet, config.rules
    )  # fmt: skip
    home_sd = dm.centre_sd_km * 1000.0

    # places: restaurants (hot cells first), then stores
    hot = _hot_cells(config, sampler, rng_places)
    n_hot = round(rc.count * rc.hot_share)
    rx_parts: list[FloatArray] = []
    ry_parts: list[FloatArray] = []
    for cell, n in zip(
        hot, (len(a) for a in np.array_split(np.arange(n_hot), len(hot))), strict=True
    ):
        x, y = sampler.in_cell(rng_places, cell, n)
        rx_parts.append(x)
        ry_parts.append(y)
    x, y = sampler.homes(rng_places, rc.count - n_hot, home_sd, dm.uniform_share)
    rx, ry = np.concatenate([*rx_parts, x]), np.concatenate([*ry_parts, y])
    popularity = rng_places.lognormal(0.0, rc.popularity_sigma, rc.count)
    sx, sy = sampler.homes(rng_places, sc.count, home_sd, dm.uniform_share)
    restaurants: dict[str, Place] = {}
    for i, p in enumerate(sampler.latlon(rx, ry), 1):
        restaurants[f"r{i}"] = Place(p, f"r{i}")
    for i, p in enumerate(sampler.latlon(sx, sy), 1):
        restaurants[f"s{i}"] = Place(p, f"s{i}")

    # orders: when, where, from which place, how long the food takes
    n = dm.orders
    placed = _placement_s(rng_orders, dm)
    cx, cy = sampler.homes(rng_orders, n, home_sd, dm.uniform_share)
    to_store = rng_orders.random(n) < sc.order_share if sc.count else np.zeros(n, dtype=bool)
    max_m, decay_m = dm.max_distance_km * 1000.0, dm.distance_decay_km * 1000.0

    pick_r = _choose(rng_orders, (cx, cy), (rx, ry), popularity, max_m, decay_m)
    pick_s = (
        _choose(rng_orders, (cx, cy), (sx, sy), np.ones(sc.count), max_m, decay_m)
        if sc.count
        else np.zeros(n, dtype=np.intp)
    )
    prep_r = _prep_s(rng_orders, n, rc.prep_median_min, rc.prep_p90_min)
    prep_s = _prep_s(rng_orders, n, sc.prep_median_min, sc.prep_p90_min)
    homes = sampler.latlon(cx, cy)
    params = Parameters(
        pickup_service_s=ru.pickup_service_min * 60.0,
        dropoff_service_s=ru.dropoff_service_min * 60.0,
        target_c2d_s=ru.target_min * 60.0,
        max_c2d_s=ru.max_min * 60.0,
        pay_per_order=ru.pay_per_order,
        guaranteed_pay_per_hour=ru.guaranteed_pay_per_hour,
    )
    orders: list[Order] = []
    restaurant_of: dict[str, str] = {}
    for i in range(n):
        oid = f"o{i + 1}"
        rid = f"s{pick_s[i] + 1}" if to_store[i] else f"r{pick_r[i] + 1}"
        t = float(placed[i])
        orders.append(
            Order(
                id=oid,
                pickup=restaurants[rid],
                dropoff=Place(homes[i], oid),
                placed_at=t,
                ready_at=t + float(prep_s[i] if to_store[i] else prep_r[i]),
                promised_by=t + params.target_c2d_s,
                latest_by=t + max(params.max_c2d_s, params.target_c2d_s),
                pickup_service_s=params.pickup_service_s,
                dropoff_service_s=params.dropoff_service_s,
            )
        )
        restaurant_of[oid] = rid
    orders.sort(key=lambda o: (o.placed_at, o.id))

    # fleet: shift blocks, starting from home
    shifts = sorted(fl.shifts, key=lambda s: (s.start_min, s.end_min))
    total = sum(s.couriers for s in shifts)
    kx, ky = sampler.homes(rng_fleet, total, home_sd, dm.uniform_share)
    starts = sampler.latlon(kx, ky)
    couriers: list[Courier] = []
    for s in shifts:
        for _ in range(s.couriers):
            cid = f"c{len(couriers) + 1}"
            couriers.append(
                Courier(
                    id=cid,
                    position=Place(starts[len(couriers)], START_ID),
                    position_t=s.start_min * 60.0,
                    shift_start=s.start_min * 60.0,
                    shift_end=s.end_min * 60.0,
                    capacity=fl.capacity,
                    on_shift=False,
                )
            )
    return Scenario(
        name=config.name,
        orders=tuple(orders),
        couriers=tuple(couriers),
        restaurants=restaurants,
        restaurant_of=restaurant_of,
        params=params,
        travel=GreatCircleModel.constant_speed(fl.speed_kmh / 3.6, fl.detour_factor),
        kind="city",
        source=source,
    )


def load_city_scenario(path: Path | str, seed: int | None = None) -> Scenario:
    """:func:`generate_city` of the city file at ``path``."""
    p = Path(path)
    return generate_city(load_city(p), seed, source=p)

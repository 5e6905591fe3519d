"""Seeded synthetic courier days with exact ground truth.

Used by the geo benchmark (``o2o bench geo``), by tests and by demos. Everything is
reproducible from integer seeds: :func:`make_world` builds a city, :func:`simulate_day`
drives couriers through it and produces the observation stream a backend would
receive, together with the exact truth at every observation instant.

World (:func:`make_world`)
    A street grid (blocks 100-150 m, centre line to facade :data:`STREET_HALF_WIDTH_M`)
    in a local metric frame. Restaurants sit behind a street door with ONE BLE beacon at
    the pickup counter 5-15 m inside and 1-2 Wi-Fi APs; residential (customer)
    buildings have 3-7 floors with 2-6 APs per floor; street-side APs (shops, offices,
    flats above them) line every street about every ``street_ap_spacing_m`` metres per
    side so that an outdoor position typically hears 5-20 APs. Cell towers stand on a
    jittered ~1.25 km lattice. Deliberate registry errors: ~2 % of APs moved (registry
    position 0.5-5 km off), ~5 % unknown, a few mobile hotspots (in couriers' vehicles,
    registered somewhere random).

Day (:func:`simulate_day`)
    Each courier repeats: drive on the grid (4-12 m/s, trapezoidal speed profiles,
    stops at turns, red lights and in traffic), park, walk (1.2-1.5 m/s) through the
    door to the counter, wait 1-8 min within 2 m of the beacon, walk out, drive to a
    customer building, walk in, take the lift or stairs, hand over, come back out,
    sometimes idle. The true path is piecewise linear between keyframes (about 1 s
    apart while moving); truth is sampled at every keyframe and at every observation
    time of the device, so evaluation at observation times is exact.

Sensor models (constants below hold every parameter):

* GPS, 1 Hz outdoors. Reported accuracy (68 % radius) follows a slow process: 3-8 m
  in open streets, 10-30 m in urban-canyon stretches (~30 % of blocks). The actual
  error per axis is ``accuracy/1.5096 * f * (sqrt(0.7) * b(t) + sqrt(0.3) * w)``:
  ``f`` a per-fix lognormal factor (sd 0.25), ``b`` a unit-variance Gauss-Markov
  bias (correlation time 30-60 s per courier), ``w`` white. In canyons, multipath
  jumps (30-150 m, lasting 2-10 s, start probability 0.2 % per canyon fix) leave the
  reported accuracy small. Speed/bearing are noisy; bearing only when moving.
  Indoors fixes fade from 0.3 Hz at the door to none 8 m inside, report 20-60 m and
  are worse than reported (lognormal factor, median 1.25) and pulled outward. After a
  stay indoors the receiver needs 1-6 s to deliver fixes again.
* Wi-Fi scans every 5-10 s: ``rssi = tx - 10 n log10(max(d, 1)) - walls - floors +
  N(0, 5.5)``, tx ~ N(-40, 4) dBm, n ~ U(2.7, 3.3), 5-15 dB per wall crossed (the AP's
  building and the courier's building), 5 dB per floor inside the same building,
  3-D distance; APs within 150 m and at or above -92 dBm, the strongest 25.
* BLE beacons at 1 Hz within 20 m: ``rssi = tx - 10 n log10(max(d, 0.3)) - wall +
  N(0, 3) + g(t)``, tx ~ U(-62, -56), n ~ U(2.0, 2.5), ``g`` a slow body/orientation
  offset (sd 2 dB, 60 s); 10 % of readings missed; kept at or above -95 dBm.
* Cells every 15-30 s: ``rssi = -113 + 35 log10(range / max(d, 30)) - 10 (indoors) +
  N(0, 6)``; serving = strongest, up to 3 neighbours; RSSI missing sometimes.
* Bad input at ``bad_rate`` per valid record, inserted right after it as raw dicts:
  NaN latitude, null island, absurd accuracy, exact duplicate, out-of-order timestamp.
"""

from __future__ import annotations

import copy
import gc
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from geo.coords import LocalFrame
from geo.estimate import R68_PER_SIGMA
from geo.observations import Observation, observation_from_dict
from geo.registry import Beacon, CellTower, Registry, WifiAp

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]
Str = npt.NDArray[np.str_]
Orientation = Literal["h", "v"]

# --- geometry -------------------------------------------------------------------------
BLOCK_M = (100.0, 150.0)
"""Street spacing (centre line to centre line)."""
STREET_HALF_WIDTH_M = 10.0
"""Centre line to facade: carriageway, parking lane and pavement."""
PARKING_OFFSET_M = 4.5
"""Parked vehicles stand this far from the centre line, on the building's side."""
FLOOR_HEIGHT_M = 3.0
PHONE_HEIGHT_M = 1.2
AT_COUNTER_M = 3.0
"""A courier is 'at the counter' within this horizontal distance of the counter beacon."""

# --- courier behaviour ----------------------------------------------------------------
DRIVE_SPEED_MPS = (4.0, 12.0)
DRIVE_ACCEL_MPS2 = (1.5, 2.5)
LIGHT_STOP_P = 0.3
LIGHT_STOP_S = (5.0, 40.0)
TRAFFIC_STOP_P_PER_BLOCK = 0.06
TRAFFIC_STOP_S = (2.0, 12.0)
WALK_SPEED_MPS = (1.2, 1.5)
COUNTER_WAIT_S = (60.0, 480.0)
HANDOVER_S = (20.0, 90.0)
SHUFFLE_SPEED_MPS = 0.7
LIFT_SPEED_MPS = 1.0
STAIRS_SPEED_MPS = 0.35
"""Vertical speed on the stairs."""
IDLE_P = 0.3
IDLE_S = (30.0, 300.0)

# --- GPS ------------------------------------------------------------------------------
GPS_OPEN_ACCURACY_M = (3.0, 8.0)
GPS_CANYON_ACCURACY_M = (10.0, 30.0)
GPS_ACCURACY_TAU_S = 20.0
GPS_SIGMA_LOG_SD = 0.25
"""Per-fix lognormal factor between the actual and the declared sigma."""
GPS_BIAS_SHARE = 0.7
"""Share of the error variance in the time-correlated (Gauss-Markov) component."""
GPS_BIAS_TAU_S = (30.0, 60.0)
GPS_MULTIPATH_START_P = 0.002
GPS_MULTIPATH_S = (2.0, 10.0)
GPS_MULTIPATH_M = (30.0, 150.0)
GPS_OUTDOOR_DROP_P = 0.005
GPS_INDOOR_RATE_HZ = 0.3
GPS_INDOOR_FADE_M = 8.0
"""Indoor GPS rate falls linearly from its maximum at the door to zero this deep inside."""
GPS_INDOOR_ACCURACY_M = (20.0, 60.0)
GPS_INDOOR_EXCESS = (1.25, 0.3)
"""Indoor actual/declared sigma: lognormal with this median and log-sd."""
GPS_INDOOR_OUTWARD = (0.2, 0.8)
"""Indoor fixes are pulled outward by this fraction of the reported accuracy."""
GPS_REACQUIRE_S = (1.0, 6.0)
GPS_REACQUIRE_AFTER_S = 30.0

# --- Wi-Fi ----------------------------------------------------------------------------
WIFI_SCAN_INTERVAL_S = (5.0, 10.0)
WIFI_MAX_RANGE_M = 150.0
WIFI_MIN_RSSI_DBM = -92.0
WIFI_MAX_APS = 25
WIFI_SHADOWING_DB = 5.5
WIFI_TX_POWER_DBM = (-40.0, 4.0)
WIFI_PATH_LOSS = (2.7, 3.3)
WALL_LOSS_DB = (5.0, 15.0)
FLOOR_LOSS_DB = 5.0
HOTSPOT_TX_POWER_DBM = (-45.0, 3.0)
CAR_BODY_LOSS_DB = 6.0

# --- BLE ------------------------------------------------------------------------------
BEACON_RATE_HZ = 1.0
BEACON_MAX_RANGE_M = 20.0
BEACON_MIN_RSSI_DBM = -95.0
BEACON_TX_POWER_DBM = (-62.0, -56.0)
BEACON_PATH_LOSS = (2.0, 2.5)
BEACON_NOISE_DB = 3.0
BEACON_BODY_DB = 2.0
BEACON_BODY_TAU_S = 60.0
BEACON_MISS_P = 0.1
BEACON_CALIBRATION_DB = 1.0
"""Registry ``tx_power`` = true measured power + N(0, this), rounded to 1 dB."""

# --- cells ----------------------------------------------------------------------------
CELL_INTERVAL_S = (15.0, 30.0)
CELL_SPACING_M = 1250.0
CELL_RANGE_M = (800.0, 2000.0)
CELL_EDGE_RSSI_DBM = -113.0
CELL_SLOPE_DB_PER_DECADE = 35.0
CELL_SHADOWING_DB = 6.0
CELL_INDOOR_LOSS_DB = 10.0
CELL_MIN_RSSI_DBM = -121.0
CELL_MISSING_RSSI_P = (0.02, 0.15)
"""Probability that the serving / a neighbour cell comes without RSSI."""

BAD_KINDS = ("nan_lat", "null_island", "absurd_accuracy", "duplicate", "out_of_order")

PHASES = ("drive", "walk", "door", "indoor", "counter", "lift", "handover", "idle")
_P = {name: i for i, name in enumerate(PHASES)}

_GRID_M = WIFI_MAX_RANGE_M


# ======================================================================================
# World
# ======================================================================================


@dataclass(frozen=True, slots=True)
class Site:
    """A building with a street door: a restaurant or a residential (customer) building.

    Coordinates are local (east, north) metres of :attr:`World.frame`.
    """

    id: str
    kind: Literal["restaurant", "residential"]
    index: int
    street: tuple[Orientation, int]
    """Street the door opens onto: 'h' (y = street_y[i]) or 'v' (x = street_x[i])."""
    along_range: tuple[float, float]
    """Along-street coordinates of this block face (between the crossing streets)."""
    door: tuple[float, float]
    inward: tuple[float, float]
    """Unit vector from the street into the building."""
    depth: float
    width: float
    floors: int
    wall_loss: float
    counter: tuple[float, float] | None = None
    beacon_id: str | None = None

    @property
    def along(self) -> tuple[float, float]:
        return (1.0, 0.0) if self.street[0] == "h" else (0.0, 1.0)

    @property
    def along_coord(self) -> float:
        return self.door[0] if self.street[0] == "h" else self.door[1]


@dataclass(frozen=True, slots=True)
class PickupCounter:
    """The pickup counter of a restaurant: the position of its beacon."""

    restaurant: str
    beacon_id: str
    lat: float
    lon: float
    door_lat: float
    door_lon: float


@dataclass(frozen=True, eq=False)
class World:
    """A synthetic city: streets, buildings and the TRUE radio environment.

    Arrays are read-only. ``ap_*`` describe the fixed Wi-Fi APs as they really are
    (``ap_registry_xy`` where the location service believes they are, ``ap_status`` 0
    correct, 1 moved, 2 unknown); ``hotspot_*`` the mobile hotspots that ride in the
    vehicles of couriers 0, 1, ...; :meth:`registry` is the location service's view.
    """

    seed: int
    frame: LocalFrame
    size_m: float
    street_x: F64
    street_y: F64
    canyon: Bool
    """Urban-canyon flag per block cell, indexed by searchsorted(street_x/street_y, x/y)."""
    sites: tuple[Site, ...]
    counters: dict[str, PickupCounter]
    ap_bssid: tuple[str, ...]
    ap_xyz: F64
    ap_tx: F64
    ap_path_loss: F64
    ap_wall: F64
    ap_site: I64
    ap_floor: I64
    ap_registry_xy: F64
    ap_status: I64
    hotspot_bssid: tuple[str, ...]
    hotspot_tx: F64
    hotspot_path_loss: F64
    hotspot_registry_xy: F64
    beacon_id: tuple[str, ...]
    beacon_xyz: F64
    beacon_tx: F64
    beacon_path_loss: F64
    beacon_registry_tx: F64
    beacon_site: I64
    tower_id: tuple[str, ...]
    tower_xy: F64
    tower_range: F64
    _grid: _ApGrid = field(repr=False)

    @property
    def restaurants(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.kind == "restaurant")

    @property
    def residential(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.kind == "residential")

    @property
    def moved_aps(self) -> tuple[str, ...]:
        return tuple(b for b, s in zip(self.ap_bssid, self.ap_status, strict=True) if s == 1)

    @property
    def unknown_aps(self) -> tuple[str, ...]:
        return tuple(b for b, s in zip(self.ap_bssid, self.ap_status, strict=True) if s == 2)

    def latlon(self, x: float, y: float) -> tuple[float, float]:
        return self.frame.to_latlon(x, y)

    def registry(self) -> Registry:
        """What a location service knows, errors included (a fresh, mutable copy).

        Wi-Fi entries carry positions only (tx_power/path_loss None: the source uses its
        defaults); moved APs sit at their old position, unknown APs are absent and
        hotspots are registered wherever they were learnt. Beacons carry their
        calibrated ``tx_power``; cells their true position and range.
        """
        reg = Registry()
        lat, lon = self.frame.to_latlon_array(self.ap_registry_xy[:, 0], self.ap_registry_xy[:, 1])
        for b, la, lo, st in zip(
            self.ap_bssid, lat.tolist(), lon.tolist(), self.ap_status.tolist(), strict=True
        ):
            if st != 2:
                reg.wifi[b] = WifiAp(b, la, lo)
        hx, hy = self.hotspot_registry_xy[:, 0], self.hotspot_registry_xy[:, 1]
        hlat, hlon = self.frame.to_latlon_array(hx, hy)
        for b, la, lo in zip(self.hotspot_bssid, hlat.tolist(), hlon.tolist(), strict=True):
            reg.wifi[b] = WifiAp(b, la, lo)
        for i, bid in enumerate(self.beacon_id):
            la, lo = self.frame.to_latlon(
                float(self.beacon_xyz[i, 0]), float(self.beacon_xyz[i, 1])
            )
            reg.beacons[bid] = Beacon(bid, la, lo, tx_power=float(self.beacon_registry_tx[i]))
        for i, cid in enumerate(self.tower_id):
            la, lo = self.frame.to_latlon(float(self.tower_xy[i, 0]), float(self.tower_xy[i, 1]))
            reg.cells[cid] = CellTower(cid, la, lo, float(self.tower_range[i]))
        return reg

    def is_canyon(self, x: F64, y: F64) -> Bool:
        i = np.searchsorted(self.street_x, x)
        j = np.searchsorted(self.street_y, y)
        out: Bool = self.canyon[i, j]
        return out


@dataclass(frozen=True, eq=False)
class _ApGrid:
    """Fixed APs bucketed in square cells of the maximum Wi-Fi range."""

    x0: float
    y0: float
    nx: int
    ny: int
    order: I64
    keys: I64

    def cell(self, x: F64, y: F64) -> tuple[I64, I64]:
        ix = np.clip(np.floor((x - self.x0) / _GRID_M), 0, self.nx - 1).astype(np.int64)
        iy = np.clip(np.floor((y - self.y0) / _GRID_M), 0, self.ny - 1).astype(np.int64)
        return ix, iy

    def candidates(self, ix: int, iy: int) -> I64:
        parts: list[I64] = []
        for cx in range(max(0, ix - 1), min(self.nx, ix + 2)):
            lo_key = cx * self.ny + max(0, iy - 1)
            hi_key = cx * self.ny + min(self.ny - 1, iy + 1)
            lo = int(np.searchsorted(self.keys, lo_key, side="left"))
            hi = int(np.searchsorted(self.keys, hi_key, side="right"))
            if hi > lo:
                parts.append(self.order[lo:hi])
        if not parts:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(parts)


def _readonly(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a.flags.writeable = False
    return a


def _street_lines(rng: np.random.Generator, size: float) -> F64:
    lines = [0.0]
    while lines[-1] < size:
        lines.append(lines[-1] + float(rng.uniform(*BLOCK_M)))
    arr = np.array(lines, dtype=np.float64)
    out: F64 = arr - (arr[0] + arr[-1]) / 2.0
    return out


def _bssids(rng: np.random.Generator, n: int, *, local: bool) -> list[str]:
    """Unique random MAC addresses; ``local`` sets the locally-administered bit."""
    if n == 0:
        return []
    vals = np.empty(0, dtype=np.int64)
    while vals.size < n:
        more = rng.integers(0, 2**48, size=n - vals.size, dtype=np.int64)
        vals = np.unique(np.concatenate([vals, more]))
    vals = rng.permutation(vals)[:n]
    first = vals >> 40
    first = (first & ~np.int64(3)) | (np.int64(2) if local else np.int64(0))
    vals = (first << 40) | (vals & np.int64(2**40 - 1))
    out = []
    for v in vals.tolist():
        h = f"{v:012x}"
        out.append(":".join(h[k : k + 2] for k in range(0, 12, 2)))
    return out


def _place_site(
    rng: np.random.Generator, xs: F64, ys: F64, taken: list[tuple[float, float]], min_sep: float
) -> tuple[Orientation, int, tuple[float, float], float, tuple[float, float], tuple[float, float]]:
    """A random street door: (orientation, street index, block range, along, door, inward)."""
    for _ in range(200):
        o: Orientation = "h" if rng.random() < 0.5 else "v"
        lines, cross = (ys, xs) if o == "h" else (xs, ys)
        idx = int(rng.integers(len(lines)))
        if idx == 0:
            side = 1.0
        elif idx == len(lines) - 1:
            side = -1.0
        else:
            side = 1.0 if rng.random() < 0.5 else -1.0
        k = int(rng.integers(len(cross) - 1))
        lo = float(cross[k]) + STREET_HALF_WIDTH_M + 4.0
        hi = float(cross[k + 1]) - STREET_HALF_WIDTH_M - 4.0
        c = float(rng.uniform(lo + 6.0, hi - 6.0))
        line = float(lines[idx])
        if o == "h":
            door = (c, line + side * STREET_HALF_WIDTH_M)
            inward = (0.0, side)
        else:
            door = (line + side * STREET_HALF_WIDTH_M, c)
            inward = (side, 0.0)
        if all(math.hypot(door[0] - a, door[1] - b) >= min_sep for a, b in taken):
            return o, idx, (lo, hi), c, door, inward
    raise ValueError("cannot place another site: the world is too small for so many")


def make_world(
    seed: int,
    center: tuple[float, float] = (52.52, 13.405),
    size_m: float = 4000.0,
    restaurants: int = 30,
    buildings: int = 200,
    *,
    street_ap_spacing_m: float = 12.0,
    canyon_fraction: float = 0.3,
    moved_fraction: float = 0.02,
    unknown_fraction: float = 0.05,
    hotspots: int = 5,
    ap_position_error_m: float = 3.0,
) -> World:
    """Build a seeded synthetic city of about ``size_m`` x ``size_m`` metres.

    ``street_ap_spacing_m`` is the mean spacing of street-side APs along each side of
    every street; ``ap_position_error_m`` the per-axis sd of the registry position of
    correctly registered APs (crowd-sourced positions are never exact).
    """
    if size_m < 300:
        raise ValueError("size_m must be at least 300")
    rng = np.random.default_rng([seed, 0x5EED])
    frame = LocalFrame(float(center[0]), float(center[1]))
    xs = _street_lines(rng, size_m)
    ys = _street_lines(rng, size_m)
    canyon = rng.random((xs.size + 1, ys.size + 1)) < canyon_fraction

    # --- sites ----------------------------------------------------------------------
    sites: list[Site] = []
    taken: list[tuple[float, float]] = []
    ap_x: list[float] = []
    ap_y: list[float] = []
    ap_z: list[float] = []
    ap_wall: list[float] = []
    ap_site: list[int] = []
    ap_floor: list[int] = []
    counters: dict[str, PickupCounter] = {}
    b_xyz: list[tuple[float, float, float]] = []
    b_ids: list[str] = []
    b_site: list[int] = []
    for i in range(restaurants + buildings):
        is_rest = i < restaurants
        o, idx, rng_along, _c, door, inward = _place_site(
            rng, xs, ys, taken, 25.0 if is_rest else 15.0
        )
        taken.append(door)
        along = (1.0, 0.0) if o == "h" else (0.0, 1.0)
        wall = float(rng.uniform(*WALL_LOSS_DB))
        if is_rest:
            rid = f"r{i:03d}"
            cd = float(rng.uniform(5.0, 15.0))
            lat_off = float(rng.uniform(-3.0, 3.0))
            counter = (
                door[0] + inward[0] * cd + along[0] * lat_off,
                door[1] + inward[1] * cd + along[1] * lat_off,
            )
            depth = cd + float(rng.uniform(3.0, 8.0))
            width = 16.0
            bid = f"bcn-{rid}"
            site = Site(
                rid,
                "restaurant",
                i,
                (o, idx),
                rng_along,
                door,
                inward,
                depth,
                width,
                1,
                wall,
                counter,
                bid,
            )
            b_xyz.append((counter[0], counter[1], 1.0))
            b_ids.append(bid)
            b_site.append(i)
            clat, clon = frame.to_latlon(*counter)
            dlat, dlon = frame.to_latlon(*door)
            counters[rid] = PickupCounter(rid, bid, clat, clon, dlat, dlon)
            n_aps = int(rng.integers(1, 3))
            for _ in range(n_aps):
                d_in = float(rng.uniform(1.0, depth - 0.5))
                lat_ap = float(rng.uniform(-width / 2, width / 2))
                ap_x.append(door[0] + inward[0] * d_in + along[0] * lat_ap)
                ap_y.append(door[1] + inward[1] * d_in + along[1] * lat_ap)
                ap_z.append(2.5)
                ap_wall.append(wall)
                ap_site.append(i)
                ap_floor.append(0)
        else:
            sid = f"b{i - restaurants:04d}"
            depth = float(rng.uniform(12.0, 20.0))
            width = float(rng.uniform(15.0, 30.0))
            floors = int(rng.integers(3, 8))
            site = Site(
                sid, "residential", i, (o, idx), rng_along, door, inward, depth, width, floors, wall
            )
            for f in range(floors):
                for _ in range(int(rng.integers(2, 7))):
                    d_in = float(rng.uniform(1.0, depth - 1.0))
                    lat_ap = float(rng.uniform(-width / 2, width / 2))
                    ap_x.append(door[0] + inward[0] * d_in + along[0] * lat_ap)
                    ap_y.append(door[1] + inward[1] * d_in + along[1] * lat_ap)
                    ap_z.append(f * FLOOR_HEIGHT_M + float(rng.uniform(0.5, 2.5)))
                    ap_wall.append(wall)
                    ap_site.append(i)
                    ap_floor.append(f)
        sites.append(site)

    # --- street-side APs (shops, offices, flats along every street) --------------------
    sx: list[F64] = []
    sy: list[F64] = []
    for o, lines, cross in (("h", ys, xs), ("v", xs, ys)):
        lo, hi = float(cross[0]) - 30.0, float(cross[-1]) + 30.0
        for line in lines.tolist():
            for side in (-1.0, 1.0):
                n = int(rng.poisson((hi - lo) / street_ap_spacing_m))
                a = rng.uniform(lo, hi, n)
                near = np.abs(a[:, None] - cross[None, :]).min(axis=1)
                a = a[near > STREET_HALF_WIDTH_M + 1.0]
                dist = line + side * (STREET_HALF_WIDTH_M + rng.uniform(1.0, 15.0, a.size))
                if o == "h":
                    sx.append(a)
                    sy.append(dist)
                else:
                    sx.append(dist)
                    sy.append(a)
    street_x_ap = np.concatenate(sx)
    street_y_ap = np.concatenate(sy)
    n_street = street_x_ap.size
    st_floor = rng.integers(0, 6, n_street)
    xyz = np.column_stack(
        [
            np.concatenate([np.array(ap_x), street_x_ap]),
            np.concatenate([np.array(ap_y), street_y_ap]),
            np.concatenate(
                [np.array(ap_z), st_floor * FLOOR_HEIGHT_M + rng.uniform(0.5, 2.5, n_street)]
            ),
        ]
    ).astype(np.float64)
    n_ap = xyz.shape[0]
    wall_arr = np.concatenate([np.array(ap_wall), rng.uniform(*WALL_LOSS_DB, n_street)])
    site_arr = np.concatenate([np.array(ap_site, dtype=np.int64), np.full(n_street, -1)])
    floor_arr = np.concatenate([np.array(ap_floor, dtype=np.int64), st_floor]).astype(np.int64)
    tx = np.asarray(rng.normal(WIFI_TX_POWER_DBM[0], WIFI_TX_POWER_DBM[1], n_ap), np.float64)
    pl = np.asarray(rng.uniform(*WIFI_PATH_LOSS, n_ap), np.float64)
    fixed = _bssids(rng, n_ap, local=False)
    hot_bssid = _bssids(rng, hotspots, local=True)  # never equal: the local bit differs

    # --- registry view: position noise, moved and unknown APs ------------------------
    status = np.zeros(n_ap, dtype=np.int64)
    perm = rng.permutation(n_ap)
    n_unknown = round(unknown_fraction * n_ap)
    n_moved = round(moved_fraction * n_ap)
    status[perm[:n_unknown]] = 2
    status[perm[n_unknown : n_unknown + n_moved]] = 1
    reg_xy = xyz[:, :2] + rng.normal(0.0, ap_position_error_m, (n_ap, 2))
    moved = status == 1
    dist = rng.uniform(500.0, 5000.0, int(moved.sum()))
    ang = rng.uniform(0.0, 2 * math.pi, dist.size)
    reg_xy[moved, 0] += dist * np.cos(ang)
    reg_xy[moved, 1] += dist * np.sin(ang)
    h_n = len(hot_bssid)
    hot_tx = rng.normal(HOTSPOT_TX_POWER_DBM[0], HOTSPOT_TX_POWER_DBM[1], h_n)
    hot_pl = rng.uniform(*WIFI_PATH_LOSS, h_n)
    hot_reg = np.column_stack(
        [rng.uniform(xs[0], xs[-1], h_n), rng.uniform(ys[0], ys[-1], h_n)]
    ).reshape(h_n, 2)

    # --- beacons and cell towers -------------------------------------------------------
    nb = len(b_ids)
    b_tx = rng.uniform(*BEACON_TX_POWER_DBM, nb)
    b_pl = rng.uniform(*BEACON_PATH_LOSS, nb)
    b_reg = np.round(b_tx + rng.normal(0.0, BEACON_CALIBRATION_DB, nb))
    tx_lines = np.arange(xs[0] - 1000.0, xs[-1] + 1000.0 + 1.0, CELL_SPACING_M)
    ty_lines = np.arange(ys[0] - 1000.0, ys[-1] + 1000.0 + 1.0, CELL_SPACING_M)
    gx, gy = np.meshgrid(tx_lines, ty_lines, indexing="ij")
    t_xy = np.column_stack([gx.ravel(), gy.ravel()]) + rng.uniform(-250.0, 250.0, (gx.size, 2))
    t_range = rng.uniform(*CELL_RANGE_M, gx.size)
    cids = rng.choice(np.arange(1000, 65000), size=gx.size, replace=False)
    t_ids = tuple(f"262-1-{5000 + k // 8}-{int(c)}" for k, c in enumerate(cids.tolist()))

    # --- spatial index of fixed APs --------------------------------------------------
    x0 = float(xyz[:, 0].min()) - _GRID_M
    y0 = float(xyz[:, 1].min()) - _GRID_M
    nx = math.ceil((float(xyz[:, 0].max()) - x0) / _GRID_M) + 2
    ny = math.ceil((float(xyz[:, 1].max()) - y0) / _GRID_M) + 2
    ix = np.floor((xyz[:, 0] - x0) / _GRID_M).astype(np.int64)
    iy = np.floor((xyz[:, 1] - y0) / _GRID_M).astype(np.int64)
    keys = ix * ny + iy
    order = np.argsort(keys, kind="stable").astype(np.int64)
    grid = _ApGrid(x0, y0, nx, ny, _readonly(order), _readonly(keys[order]))

    return World(
        seed=seed,
        frame=frame,
        size_m=float(size_m),
        street_x=_readonly(xs),
        street_y=_readonly(ys),
        canyon=_readonly(canyon),
        sites=tuple(sites),
        counters=counters,
        ap_bssid=tuple(fixed),
        ap_xyz=_readonly(xyz),
        ap_tx=_readonly(tx),
        ap_path_loss=_readonly(pl),
        ap_wall=_readonly(wall_arr.astype(np.float64)),
        ap_site=_readonly(site_arr.astype(np.int64)),
        ap_floor=_readonly(floor_arr),
        ap_registry_xy=_readonly(reg_xy),
        ap_status=_readonly(status),
        hotspot_bssid=tuple(hot_bssid),
        hotspot_tx=_readonly(hot_tx),
        hotspot_path_loss=_readonly(hot_pl),
        hotspot_registry_xy=_readonly(hot_reg.astype(np.float64)),
        beacon_id=tuple(b_ids),
        beacon_xyz=_readonly(np.array(b_xyz, dtype=np.float64).reshape(nb, 3)),
        beacon_tx=_readonly(b_tx),
        beacon_path_loss=_readonly(b_pl),
        beacon_registry_tx=_readonly(b_reg),
        beacon_site=_readonly(np.array(b_site, dtype=np.int64)),
        tower_id=t_ids,
        tower_xy=_readonly(t_xy),
        tower_range=_readonly(t_range),
        _grid=grid,
    )


# ======================================================================================
# Truth
# ======================================================================================


@dataclass(frozen=True, eq=False)
class TruthTrack:
    """The true state of one device, sampled at every keyframe and observation time.

    ``counter`` is the beacon id of the counter the courier is at (within
    :data:`AT_COUNTER_M` of it, inside the restaurant), '' otherwise; ``phase`` one of
    :data:`PHASES`. Between samples position is linear, the rest is held.
    """

    device: str
    t: F64
    lat: F64
    lon: F64
    indoor: Bool
    counter: Str
    phase: Str
    floor: I64

    def _index(self, t: float) -> tuple[int, float]:
        ts = self.t
        if t <= ts[0]:
            return 0, 0.0
        if t >= ts[-1]:
            return ts.size - 1, 0.0
        i = int(np.searchsorted(ts, t, side="right")) - 1
        return i, float((t - ts[i]) / (ts[i + 1] - ts[i]))

    def at(self, t: float) -> tuple[float, float, bool, str]:
        """(lat, lon, indoor, counter) at ``t``: exact at sample times, linear between."""
        i, w = self._index(t)
        lat, lon = float(self.lat[i]), float(self.lon[i])
        if w > 0.0:
            lat += w * (float(self.lat[i + 1]) - lat)
            lon += w * (float(self.lon[i + 1]) - lon)
        return lat, lon, bool(self.indoor[i]), str(self.counter[i])

    def at_many(self, t: npt.ArrayLike) -> tuple[F64, F64, Bool, Str]:
        """Vectorised :meth:`at`."""
        tq = np.asarray(t, dtype=np.float64)
        i = np.clip(np.searchsorted(self.t, tq, side="right") - 1, 0, self.t.size - 1)
        j = np.minimum(i + 1, self.t.size - 1)
        span = self.t[j] - self.t[i]
        w = np.where(span > 0, (tq - self.t[i]) / np.where(span > 0, span, 1.0), 0.0)
        w = np.clip(w, 0.0, 1.0)
        lat = self.lat[i] + w * (self.lat[j] - self.lat[i])
        lon = self.lon[i] + w * (self.lon[j] - self.lon[i])
        return lat, lon, self.indoor[i], self.counter[i]


@dataclass(eq=False)
class Trace:
    """A simulated day: the raw stream, its valid observations, injected bad records
    by kind and the truth per device."""

    records: list[dict[str, Any]]
    observations: list[Observation]
    bad: dict[str, int]
    truth: dict[str, TruthTrack]
    start_t: float
    duration_s: float
    seed: int

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.truth)


# ======================================================================================
# Courier paths
# ======================================================================================


@dataclass(frozen=True, eq=False)
class _Path:
    """Keyframes: position linear between them; attributes hold from a keyframe on."""

    t: F64
    x: F64
    y: F64
    z: F64
    vx: F64
    vy: F64
    site: I64
    phase: I64

    def eval(self, tq: F64) -> _State:
        n = self.t.size
        i = np.clip(np.searchsorted(self.t, tq, side="right") - 1, 0, n - 2)
        dt = self.t[i + 1] - self.t[i]
        w = np.clip((tq - self.t[i]) / dt, 0.0, 1.0)
        dx = self.x[i + 1] - self.x[i]
        dy = self.y[i + 1] - self.y[i]
        last = tq >= self.t[-1]
        i_attr = np.where(last, n - 1, i)
        return _State(
            x=self.x[i] + w * dx,
            y=self.y[i] + w * dy,
            z=self.z[i] + w * (self.z[i + 1] - self.z[i]),
            vel_x=np.where(last, 0.0, dx / dt),
            vel_y=np.where(last, 0.0, dy / dt),
            veh_x=self.vx[i] + w * (self.vx[i + 1] - self.vx[i]),
            veh_y=self.vy[i] + w * (self.vy[i + 1] - self.vy[i]),
            site=self.site[i_attr],
            phase=self.phase[i_attr],
        )


@dataclass(frozen=True, eq=False)
class _State:
    x: F64
    y: F64
    z: F64
    vel_x: F64
    vel_y: F64
    veh_x: F64
    veh_y: F64
    site: I64
    phase: I64

    @property
    def indoor(self) -> Bool:
        out: Bool = self.site >= 0
        return out

    @property
    def floor(self) -> I64:
        f = np.rint((self.z - PHONE_HEIGHT_M) / FLOOR_HEIGHT_M)
        out: I64 = np.maximum(f, 0).astype(np.int64)
        return out


class _PathBuilder:
    def __init__(self, t: float, x: float, y: float) -> None:
        self.t = t
        self.x, self.y, self.z = x, y, PHONE_HEIGHT_M
        self.veh = (x, y)
        self.chunks: list[tuple[F64, F64, F64, F64, F64, F64, int, int]] = []

    def _emit(
        self, ts: F64, xs: F64, ys: F64, zs: F64, vehicle: bool, phase: str, site: int
    ) -> None:
        if vehicle:
            vx, vy = xs, ys
        else:
            vx, vy = np.full(ts.size, self.veh[0]), np.full(ts.size, self.veh[1])
        self.chunks.append((ts, xs, ys, zs, vx, vy, _P[phase], site))

    def hold(self, dur: float, phase: str, site: int = -1) -> None:
        if dur < 1e-3:
            return
        one = np.ones(1)
        self._emit(one * self.t, one * self.x, one * self.y, one * self.z, False, phase, site)
        self.t += dur

    def go(self, to: tuple[float, float, float], speed: float, phase: str, site: int = -1) -> None:
        """Constant speed straight to ``to`` (x, y, z)."""
        dx, dy, dz = to[0] - self.x, to[1] - self.y, to[2] - self.z
        length = math.sqrt(dx * dx + dy * dy + dz * dz)
        dur = length / speed
        if dur >= 1e-3:
            ts = np.arange(0.0, dur, 1.0)
            f = ts / dur
            self._emit(
                self.t + ts, self.x + f * dx, self.y + f * dy, self.z + f * dz, False, phase, site
            )
            self.t += dur
        self.x, self.y, self.z = to

    def run(self, to: tuple[float, float], vmax: float, accel: float) -> None:
        """Drive straight to ``to`` from standstill to standstill (trapezoidal speed)."""
        dx, dy = to[0] - self.x, to[1] - self.y
        length = math.hypot(dx, dy)
        if length < 1e-6:
            return
        if length <= vmax * vmax / accel:
            v = math.sqrt(length * accel)
            ta, tc = v / accel, 0.0
        else:
            v = vmax
            ta, tc = v / accel, (length - v * v / accel) / v
        dur = 2 * ta + tc
        ts = np.arange(0.0, dur, 1.0)
        s = np.where(
            ts < ta,
            0.5 * accel * ts**2,
            np.where(
                ts < ta + tc,
                0.5 * accel * ta**2 + v * (ts - ta),
                length - 0.5 * accel * (dur - ts) ** 2,
            ),
        )
        f = s / length
        self._emit(
            self.t + ts,
            self.x + f * dx,
            self.y + f * dy,
            np.full(ts.size, PHONE_HEIGHT_M),
            True,
            "drive",
            -1,
        )
        self.t += dur
        self.x, self.y = to
        self.veh = to

    def finish(self) -> _Path:
        self.hold(1.0, "idle")
        one = np.ones(1)
        self._emit(one * self.t, one * self.x, one * self.y, one * self.z, False, "idle", -1)
        t = np.concatenate([c[0] for c in self.chunks])
        cols = [np.concatenate([c[k] for c in self.chunks]) for k in range(1, 6)]
        phase = np.concatenate([np.full(c[0].size, c[6], dtype=np.int64) for c in self.chunks])
        site = np.concatenate([np.full(c[0].size, c[7], dtype=np.int64) for c in self.chunks])
        keep = np.concatenate([[True], np.diff(t) > 0])
        return _Path(
            t[keep],
            cols[0][keep],
            cols[1][keep],
            cols[2][keep],
            cols[3][keep],
            cols[4][keep],
            site[keep],
            phase[keep],
        )


def _street_point(world: World, o: Orientation, idx: int, c: float) -> tuple[float, float]:
    if o == "h":
        return c, float(world.street_y[idx])
    return float(world.street_x[idx]), c


def _route(
    world: World,
    rng: np.random.Generator,
    a: tuple[Orientation, int, float],
    b: tuple[Orientation, int, float],
) -> list[tuple[float, float]]:
    """Grid route between two street points (orientation, street index, along)."""
    pa, pb = _street_point(world, *a), _street_point(world, *b)
    (oa, ia, ca), (ob, ib, cb) = a, b
    if oa == ob:
        if ia == ib:
            pts = [pa, pb]
        else:
            cross = world.street_x if oa == "h" else world.street_y
            lo, hi = min(ca, cb), max(ca, cb)
            between = np.nonzero((cross >= lo) & (cross <= hi))[0]
            if between.size:
                k = int(rng.choice(between))
            else:
                k = int(np.argmin(np.abs(cross - (ca + cb) / 2)))
            c = float(cross[k])
            if oa == "h":
                pts = [pa, (c, pa[1]), (c, pb[1]), pb]
            else:
                pts = [pa, (pa[0], c), (pb[0], c), pb]
    elif oa == "h":
        pts = [pa, (pb[0], pa[1]), pb]
    else:
        pts = [pa, (pa[0], pb[1]), pb]
    out = [pts[0]]
    for p in pts[1:]:
        if math.hypot(p[0] - out[-1][0], p[1] - out[-1][1]) > 1e-6:
            out.append(p)
    return out


def _drive(
    world: World,
    rng: np.random.Generator,
    pb: _PathBuilder,
    points: list[tuple[float, float]],
    accel: float,
) -> None:
    """Drive along axis-aligned legs: stop at turns, maybe at lights and in traffic."""
    for a, b in itertools.pairwise(points):
        horizontal = abs(b[1] - a[1]) < 1e-6
        length = math.hypot(b[0] - a[0], b[1] - a[1])
        if length < 1e-6:
            continue
        ua, ub = (a[0], b[0]) if horizontal else (a[1], b[1])
        cross = world.street_x if horizontal else world.street_y
        lo, hi = min(ua, ub), max(ua, ub)
        inner = cross[(cross > lo + 1.0) & (cross < hi - 1.0)]
        stops: list[tuple[float, float]] = []  # (distance from a, duration)
        for c in inner.tolist():
            if rng.random() < LIGHT_STOP_P:
                stops.append((abs(c - ua), float(rng.uniform(*LIGHT_STOP_S))))
        n_blocks = length / 125.0
        if rng.random() < TRAFFIC_STOP_P_PER_BLOCK * n_blocks:
            stops.append((float(rng.uniform(0.0, length)), float(rng.uniform(*TRAFFIC_STOP_S))))
        stops.sort()
        vmax = float(rng.uniform(*DRIVE_SPEED_MPS))
        for s, dur in [*stops, (length, 0.0)]:
            f = s / length
            pb.run((a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])), vmax, accel)
            pb.hold(dur, "drive")


def _park(
    world: World, rng: np.random.Generator, site: Site
) -> tuple[tuple[float, float], tuple[Orientation, int, float]]:
    """A parking spot near the door and the street point it is reached from."""
    lo, hi = site.along_range
    c = float(np.clip(site.along_coord + rng.uniform(-25.0, 25.0), lo, hi))
    o, idx = site.street
    sp = _street_point(world, o, idx, c)
    park = (sp[0] + site.inward[0] * PARKING_OFFSET_M, sp[1] + site.inward[1] * PARKING_OFFSET_M)
    return park, (o, idx, c)


def _stand(rng: np.random.Generator, rest: Site) -> tuple[float, float, float]:
    """Where a courier stands at the counter: on the door side, at most 2 m from it."""
    assert rest.counter is not None
    (cx, cy), (ix, iy), (ax, ay) = rest.counter, rest.inward, rest.along
    back = float(rng.uniform(0.4, 1.6))
    side = float(rng.uniform(-1.2, 1.2))
    return (cx - ix * back + ax * side, cy - iy * back + ay * side, PHONE_HEIGHT_M)


_Step = tuple[str, tuple[float, float, float] | None, float, float]
"""(phase, target or None to wait, speed (0: walking speed), wait seconds)."""


def _plan(world: World, rng: np.random.Generator, t0: float, t1: float) -> _Path:
    """The whole true path of one courier from ``t0`` until past ``t1``."""
    rests = world.restaurants
    homes = world.residential
    r_doors = np.array([r.door for r in rests])
    h_doors = np.array([h.door for h in homes]) if homes else np.empty((0, 2))
    walk_v = float(rng.uniform(*WALK_SPEED_MPS))
    accel = float(rng.uniform(*DRIVE_ACCEL_MPS2))

    # start somewhere on a street, driving
    o: Orientation = "h" if rng.random() < 0.5 else "v"
    lines, cross = (
        (world.street_y, world.street_x) if o == "h" else (world.street_x, world.street_y)
    )
    idx = int(rng.integers(lines.size))
    c = float(rng.uniform(cross[0], cross[-1]))
    where: tuple[Orientation, int, float] = (o, idx, c)
    x, y = _street_point(world, o, idx, c)
    pb = _PathBuilder(t0 - float(rng.uniform(0.0, 60.0)), x, y)
    here = (x, y)
    last_rest = -1

    def enter_and_exit(site: Site, park: tuple[float, float], inside: list[_Step]) -> None:
        """Walk from the vehicle through the door, follow ``inside``, walk back out."""
        ix, iy = site.inward
        door = (site.door[0], site.door[1], PHONE_HEIGHT_M)
        before = (door[0] - ix * 1.0, door[1] - iy * 1.0, PHONE_HEIGHT_M)
        pb.go(before, walk_v, "walk")
        pb.hold(float(rng.uniform(0.0, 3.0)), "door")
        pb.go(door, walk_v, "walk")
        for phase, target, speed, dur in inside:
            if target is None:
                pb.hold(dur, phase, site.index)
            else:
                pb.go(target, speed or walk_v, phase, site.index)
        pb.go(door, walk_v, "indoor", site.index)
        pb.go(before, walk_v, "walk")
        pb.go((park[0], park[1], PHONE_HEIGHT_M), walk_v, "walk")

    while pb.t < t1:
        # --- to a restaurant near here ---
        d = np.hypot(r_doors[:, 0] - here[0], r_doors[:, 1] - here[1])
        if 0 <= last_rest < d.size:
            d[last_rest] = np.inf
        near = np.argsort(d, kind="stable")[: min(6, d.size)]
        near = near[np.isfinite(d[near])] if np.isfinite(d[near]).any() else near
        ri = int(rng.choice(near))
        rest = rests[ri]
        last_rest = ri
        park, sp = _park(world, rng, rest)
        _drive(world, rng, pb, [here, *_route(world, rng, where, sp), park], accel)
        ix, iy = rest.inward
        inner = (rest.door[0] + ix * 2.0, rest.door[1] + iy * 2.0, PHONE_HEIGHT_M)
        plan: list[_Step] = [
            ("indoor", inner, 0.0, 0.0),
            ("indoor", _stand(rng, rest), 0.0, 0.0),
        ]
        wait = float(rng.uniform(*COUNTER_WAIT_S))
        while wait > 0:
            step = min(wait, float(rng.uniform(10.0, 40.0)))
            plan.append(("counter", None, 0.0, step))
            wait -= step
            if wait > 0:
                plan.append(("counter", _stand(rng, rest), SHUFFLE_SPEED_MPS, 0.0))
        plan.append(("indoor", inner, 0.0, 0.0))
        enter_and_exit(rest, park, plan)
        here, where = park, sp

        # --- to a customer ---
        if not homes:
            continue
        hd = np.hypot(h_doors[:, 0] - rest.door[0], h_doors[:, 1] - rest.door[1])
        ok = np.nonzero((hd >= 200.0) & (hd <= 2500.0))[0]
        hi_ = int(rng.choice(ok)) if ok.size else int(rng.integers(len(homes)))
        home = homes[hi_]
        park, sp = _park(world, rng, home)
        _drive(world, rng, pb, [here, *_route(world, rng, where, sp), park], accel)
        ix, iy = home.inward
        ax, ay = home.along
        d_in = float(rng.uniform(GPS_INDOOR_FADE_M, home.depth - 2.0))  # the core
        lat_off = float(rng.uniform(-3.0, 3.0))
        lobby = (home.door[0] + ix * d_in + ax * lat_off, home.door[1] + iy * d_in + ay * lat_off)
        floor = int(rng.integers(0, home.floors))
        z = floor * FLOOR_HEIGHT_M + PHONE_HEIGHT_M
        vz = LIFT_SPEED_MPS if rng.random() < 0.5 else STAIRS_SPEED_MPS
        apt_in = float(np.clip(d_in + rng.uniform(-2.0, 4.0), GPS_INDOOR_FADE_M, home.depth - 1.0))
        apt_lat = float(
            np.clip(lat_off + rng.uniform(-8.0, 8.0), -home.width / 2 + 1, home.width / 2 - 1)
        )
        apt = (
            home.door[0] + ix * apt_in + ax * apt_lat,
            home.door[1] + iy * apt_in + ay * apt_lat,
            z,
        )
        hplan: list[_Step] = [("indoor", (lobby[0], lobby[1], PHONE_HEIGHT_M), 0.0, 0.0)]
        if floor > 0:
            hplan += [
                ("lift", None, 0.0, float(rng.uniform(5.0, 40.0))),
                ("lift", (lobby[0], lobby[1], z), vz, 0.0),
            ]
        hplan += [
            ("indoor", apt, 0.0, 0.0),
            ("handover", None, 0.0, float(rng.uniform(*HANDOVER_S))),
            ("indoor", (lobby[0], lobby[1], z), 0.0, 0.0),
        ]
        if floor > 0:
            hplan += [
                ("lift", None, 0.0, float(rng.uniform(0.0, 20.0))),
                ("lift", (lobby[0], lobby[1], PHONE_HEIGHT_M), vz, 0.0),
            ]
        enter_and_exit(home, park, hplan)
        here, where = park, sp
        if rng.random() < IDLE_P:
            pb.hold(float(rng.uniform(*IDLE_S)), "idle")
    return pb.finish()


# ======================================================================================
# Sensors
# ======================================================================================


def _gauss_markov(rng: np.random.Generator, n: int, tau: float) -> F64:
    """``n`` samples, 1 s apart, of a stationary unit-variance Gauss-Markov process."""
    a = math.exp(-1.0 / tau)
    k = math.ceil(8.0 * tau)
    kernel = math.sqrt(1.0 - a * a) * a ** np.arange(k + 1, dtype=np.float64)
    out: F64 = np.convolve(rng.standard_normal(n + k), kernel, mode="valid")
    return out


def _times(t0: float, t1: float, first: float, gaps: F64) -> F64:
    t = first + np.concatenate([[0.0], np.cumsum(gaps)])
    t = np.round(t[t < t1], 3)
    out: F64 = t[t >= t0]
    return out


def _depth(world: World, st: _State) -> F64:
    """How far inside its building each indoor state is (metres from the facade)."""
    d = np.zeros(st.x.size)
    ind = np.nonzero(st.site >= 0)[0]
    if ind.size:
        door = np.array([world.sites[s].door for s in range(len(world.sites))])
        inward = np.array([world.sites[s].inward for s in range(len(world.sites))])
        s = st.site[ind]
        d[ind] = (st.x[ind] - door[s, 0]) * inward[s, 0] + (st.y[ind] - door[s, 1]) * inward[s, 1]
    return d


class _Courier:
    """Generates the records of one courier."""

    def __init__(self, world: World, index: int, seed: int, t0: float, t1: float) -> None:
        self.world = world
        self.index = index
        self.device = f"c{index:03d}"
        self.seed = seed
        self.t0, self.t1 = t0, t1
        self.path = _plan(world, self._rng(0), t0, t1)
        self.grid_t0 = math.floor(t0) - 2.0
        self.n_grid = math.ceil(t1 - self.grid_t0) + 3
        self.site_wall = np.array([s.wall_loss for s in world.sites] + [0.0])

    def _rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.index, stream])

    def _slow(self, rng: np.random.Generator, tau: float, t: F64) -> F64:
        g = _gauss_markov(rng, self.n_grid, tau)
        out: F64 = np.interp(t, self.grid_t0 + np.arange(self.n_grid), g)
        return out

    # --- GPS ------------------------------------------------------------------------
    def gps(self) -> list[tuple[float, int, dict[str, Any]]]:
        w, rng = self.world, self._rng(1)
        t = _times(
            self.t0,
            self.t1,
            self.t0 + float(rng.uniform(0.0, 1.0)),
            np.ones(int(self.t1 - self.t0) + 2),
        )
        st = self.path.eval(t)
        n = t.size
        indoor = st.indoor
        depth = _depth(w, st)
        p_indoor = GPS_INDOOR_RATE_HZ * np.clip(1.0 - depth / GPS_INDOOR_FADE_M, 0.0, 1.0)
        u = rng.random(n)
        emit = np.where(indoor, u < p_indoor, u >= GPS_OUTDOOR_DROP_P)
        # re-acquisition after a stay indoors
        kin = self.path.site >= 0
        ends = np.nonzero(kin[:-1] & ~kin[1:])[0] + 1
        starts = np.nonzero(~kin[:-1] & kin[1:])[0] + 1
        for e in ends.tolist():
            s_before = starts[starts < e]
            stay = self.path.t[e] - (self.path.t[s_before[-1]] if s_before.size else self.t0)
            if stay >= GPS_REACQUIRE_AFTER_S:
                te = self.path.t[e]
                emit &= ~((t >= te) & (t < te + float(rng.uniform(*GPS_REACQUIRE_S))))

        canyon = w.is_canyon(st.x, st.y)
        ua = 1.0 / (1.0 + np.exp(-1.7 * self._slow(rng, GPS_ACCURACY_TAU_S, t)))
        acc = np.where(
            canyon,
            GPS_CANYON_ACCURACY_M[0] + (GPS_CANYON_ACCURACY_M[1] - GPS_CANYON_ACCURACY_M[0]) * ua,
            GPS_OPEN_ACCURACY_M[0] + (GPS_OPEN_ACCURACY_M[1] - GPS_OPEN_ACCURACY_M[0]) * ua,
        )
        tau = float(rng.uniform(*GPS_BIAS_TAU_S))
        bx, by = self._slow(rng, tau, t), self._slow(rng, tau, t)
        f = np.exp(rng.normal(0.0, GPS_SIGMA_LOG_SD, n))
        wx, wy = rng.standard_normal(n), rng.standard_normal(n)
        sb, sw = math.sqrt(GPS_BIAS_SHARE), math.sqrt(1.0 - GPS_BIAS_SHARE)
        sigma = acc / R68_PER_SIGMA * f
        ex = sigma * (sb * bx + sw * wx)
        ey = sigma * (sb * by + sw * wy)

        # multipath jumps in canyons: big offsets, small reported accuracy
        start = canyon & ~indoor & (rng.random(n) < GPS_MULTIPATH_START_P)
        for k in np.nonzero(start)[0].tolist():
            dur = float(rng.uniform(*GPS_MULTIPATH_S))
            mag = float(rng.uniform(*GPS_MULTIPATH_M))
            ang = float(rng.uniform(0.0, 2 * math.pi))
            hit = (t >= t[k]) & (t < t[k] + dur) & ~indoor
            ex[hit] += mag * math.cos(ang)
            ey[hit] += mag * math.sin(ang)

        # indoors: rare, vague, worse than declared and pulled towards the street
        ind = np.nonzero(indoor)[0]
        if ind.size:
            lo, hi = math.log(GPS_INDOOR_ACCURACY_M[0]), math.log(GPS_INDOOR_ACCURACY_M[1])
            a_in = np.exp(rng.uniform(lo, hi, ind.size))
            f_in = np.exp(
                rng.normal(math.log(GPS_INDOOR_EXCESS[0]), GPS_INDOOR_EXCESS[1], ind.size)
            )
            s_in = a_in / R68_PER_SIGMA * f_in
            inward = np.array([w.sites[s].inward for s in st.site[ind].tolist()]).reshape(-1, 2)
            pull = rng.uniform(*GPS_INDOOR_OUTWARD, ind.size) * a_in
            acc[ind] = a_in
            ex[ind] = s_in * rng.standard_normal(ind.size) - inward[:, 0] * pull
            ey[ind] = s_in * rng.standard_normal(ind.size) - inward[:, 1] * pull

        # speed and bearing (Doppler: unaffected by multipath)
        v = np.hypot(st.vel_x, st.vel_y)
        moving = v >= 0.5
        speed = np.where(
            moving,
            np.abs(v + rng.normal(0.0, 1.0, n) * (0.2 + 0.03 * v)),
            np.abs(rng.normal(0.0, 0.15, n)),
        )
        heading = np.degrees(np.arctan2(st.vel_x, st.vel_y))
        bearing = (
            heading + rng.normal(0.0, 1.0, n) * np.clip(15.0 / np.maximum(v, 1e-3), 2.0, 30.0)
        ) % 360.0
        lat, lon = w.frame.to_latlon_array(st.x + ex, st.y + ey)

        out: list[tuple[float, int, dict[str, Any]]] = []
        dev = self.device
        for k in np.nonzero(emit)[0].tolist():
            rec: dict[str, Any] = {
                "device": dev,
                "t": float(t[k]),
                "kind": "gps",
                "lat": round(float(lat[k]), 7),
                "lon": round(float(lon[k]), 7),
                "accuracy": round(float(acc[k]), 1),
            }
            if not indoor[k]:
                rec["speed"] = round(float(speed[k]), 2)
                if moving[k]:
                    rec["bearing"] = round(float(bearing[k]), 1)
            out.append((float(t[k]), 0, rec))
        return out

    # --- Wi-Fi ------------------------------------------------------------------------
    def wifi(self) -> list[tuple[float, int, dict[str, Any]]]:
        w, rng = self.world, self._rng(2)
        dur = self.t1 - self.t0
        gaps = rng.uniform(*WIFI_SCAN_INTERVAL_S, int(dur / WIFI_SCAN_INTERVAL_S[0]) + 2)
        t = _times(self.t0, self.t1, self.t0 + float(rng.uniform(0.0, 10.0)), gaps)
        st = self.path.eval(t)
        n = t.size
        floor = st.floor
        site = st.site
        own_wall = self.site_wall[site]  # index -1 -> 0.0 (outdoors)
        heard: list[list[tuple[float, str]]] = [[] for _ in range(n)]
        ix, iy = w._grid.cell(st.x, st.y)
        keys = ix * w._grid.ny + iy
        order = np.argsort(keys, kind="stable")
        bounds = np.nonzero(np.diff(keys[order]))[0] + 1
        for rows in np.split(order, bounds):
            if rows.size == 0:
                continue
            cand = w._grid.candidates(int(ix[rows[0]]), int(iy[rows[0]]))
            if cand.size == 0:
                continue
            ap = w.ap_xyz[cand]
            d = np.sqrt(
                (st.x[rows, None] - ap[None, :, 0]) ** 2
                + (st.y[rows, None] - ap[None, :, 1]) ** 2
                + (st.z[rows, None] - ap[None, :, 2]) ** 2
            )
            s_r = site[rows, None]
            same = (w.ap_site[cand][None, :] == s_r) & (s_r >= 0)
            loss = np.where(
                same,
                FLOOR_LOSS_DB * np.abs(w.ap_floor[cand][None, :] - floor[rows, None]),
                w.ap_wall[cand][None, :] + own_wall[rows, None],
            )
            rssi = np.rint(
                w.ap_tx[cand][None, :]
                - 10.0 * w.ap_path_loss[cand][None, :] * np.log10(np.maximum(d, 1.0))
                - loss
                + rng.normal(0.0, WIFI_SHADOWING_DB, d.shape)
            )
            ok = (d <= WIFI_MAX_RANGE_M) & (rssi >= WIFI_MIN_RSSI_DBM)
            for r_i, r in enumerate(rows.tolist()):
                sel = np.nonzero(ok[r_i])[0]
                if sel.size:
                    heard[r] = list(
                        zip(
                            rssi[r_i, sel].tolist(),
                            [w.ap_bssid[j] for j in cand[sel].tolist()],
                            strict=True,
                        )
                    )
        if self.index < len(w.hotspot_bssid):
            h = self.index
            d = np.sqrt((st.veh_x - st.x) ** 2 + (st.veh_y - st.y) ** 2 + (st.z - 1.0) ** 2)
            loss = np.where(st.phase == _P["drive"], 0.0, CAR_BODY_LOSS_DB) + own_wall
            rssi = np.rint(
                w.hotspot_tx[h]
                - 10.0 * w.hotspot_path_loss[h] * np.log10(np.maximum(d, 1.0))
                - loss
                + rng.normal(0.0, WIFI_SHADOWING_DB, n)
            )
            hot = np.nonzero((d <= WIFI_MAX_RANGE_M) & (rssi >= WIFI_MIN_RSSI_DBM))[0]
            for j in hot.tolist():
                heard[j].append((float(rssi[j]), w.hotspot_bssid[h]))
        out: list[tuple[float, int, dict[str, Any]]] = []
        for k in range(n):
            if not heard[k]:
                continue
            best = sorted(heard[k], key=lambda p: (-p[0], p[1]))[:WIFI_MAX_APS]
            aps = [{"bssid": b, "rssi": int(r)} for r, b in best]
            out.append(
                (
                    float(t[k]),
                    1,
                    {"device": self.device, "t": float(t[k]), "kind": "wifi", "aps": aps},
                )
            )
        return out

    # --- BLE --------------------------------------------------------------------------
    def beacons(self) -> list[tuple[float, int, dict[str, Any]]]:
        w, rng = self.world, self._rng(3)
        out: list[tuple[float, int, dict[str, Any]]] = []
        if not w.beacon_id:
            return out
        t = _times(
            self.t0,
            self.t1,
            self.t0 + float(rng.uniform(0.0, 1.0)),
            np.full(int((self.t1 - self.t0) * BEACON_RATE_HZ) + 2, 1.0 / BEACON_RATE_HZ),
        )
        st = self.path.eval(t)
        body = BEACON_BODY_DB * self._slow(rng, BEACON_BODY_TAU_S, t)
        bx = w.beacon_xyz
        dh = np.hypot(st.x[:, None] - bx[None, :, 0], st.y[:, None] - bx[None, :, 1])
        near_t = np.nonzero((dh <= BEACON_MAX_RANGE_M).any(axis=1))[0]
        if near_t.size == 0:
            return out
        dh = dh[near_t]
        d = np.sqrt(dh**2 + (st.z[near_t, None] - bx[None, :, 2]) ** 2)
        inside = st.site[near_t, None] == w.beacon_site[None, :]
        wall = np.where(
            inside,
            0.0,
            self.site_wall[w.beacon_site][None, :] + self.site_wall[st.site[near_t]][:, None],
        )
        rssi = np.rint(
            w.beacon_tx[None, :]
            - 10.0 * w.beacon_path_loss[None, :] * np.log10(np.maximum(d, 0.3))
            - wall
            + rng.normal(0.0, BEACON_NOISE_DB, d.shape)
            + body[near_t, None]
        )
        ok = (
            (dh <= BEACON_MAX_RANGE_M)
            & (rssi >= BEACON_MIN_RSSI_DBM)
            & (rng.random(d.shape) >= BEACON_MISS_P)
        )
        for r_i, k in enumerate(near_t.tolist()):
            sel = np.nonzero(ok[r_i])[0]
            if sel.size == 0:
                continue
            pairs = sorted(
                ((float(rssi[r_i, j]), w.beacon_id[j]) for j in sel.tolist()),
                key=lambda p: (-p[0], p[1]),
            )
            tk = float(t[k])
            out.append(
                (
                    tk,
                    2,
                    {
                        "device": self.device,
                        "t": tk,
                        "kind": "beacon",
                        "beacons": [{"id": b, "rssi": int(r)} for r, b in pairs],
                    },
                )
            )
        return out

    # --- cells ------------------------------------------------------------------------
    def cells(self) -> list[tuple[float, int, dict[str, Any]]]:
        w, rng = self.world, self._rng(4)
        gaps = rng.uniform(*CELL_INTERVAL_S, int((self.t1 - self.t0) / CELL_INTERVAL_S[0]) + 2)
        t = _times(self.t0, self.t1, self.t0 + float(rng.uniform(0.0, 30.0)), gaps)
        st = self.path.eval(t)
        d = np.hypot(st.x[:, None] - w.tower_xy[None, :, 0], st.y[:, None] - w.tower_xy[None, :, 1])
        rssi = (
            CELL_EDGE_RSSI_DBM
            + CELL_SLOPE_DB_PER_DECADE * np.log10(w.tower_range[None, :] / np.maximum(d, 30.0))
            - np.where(st.indoor, CELL_INDOOR_LOSS_DB, 0.0)[:, None]
            + rng.normal(0.0, CELL_SHADOWING_DB, d.shape)
        )
        rssi = np.rint(np.clip(rssi, -125.0, -45.0))
        missing = rng.random(d.shape)
        out: list[tuple[float, int, dict[str, Any]]] = []
        for k in range(t.size):
            row = rssi[k]
            order = np.argsort(-row, kind="stable")[:4]
            order = order[row[order] >= CELL_MIN_RSSI_DBM]
            if order.size == 0:
                continue
            cells: list[dict[str, Any]] = []
            for rank, j in enumerate(order.tolist()):
                p_none = CELL_MISSING_RSSI_P[0] if rank == 0 else CELL_MISSING_RSSI_P[1]
                r = None if missing[k, j] < p_none else int(row[j])
                cells.append({"id": w.tower_id[j], "rssi": r})
            tk = float(t[k])
            out.append((tk, 3, {"device": self.device, "t": tk, "kind": "cell", "cells": cells}))
        return out

    # --- truth --------------------------------------------------------------------------
    def truth(self, obs_t: F64) -> TruthTrack:
        w, p = self.world, self.path
        kt = p.t[(p.t >= self.t0) & (p.t <= self.t1)]
        t = np.unique(np.concatenate([kt, obs_t]))
        st = p.eval(t)
        lat, lon = w.frame.to_latlon_array(st.x, st.y)
        counter = np.full(t.size, "", dtype=object)
        for k, b in enumerate(w.beacon_id):
            s = int(w.beacon_site[k])
            at = (st.site == s) & (
                np.hypot(st.x - w.beacon_xyz[k, 0], st.y - w.beacon_xyz[k, 1]) <= AT_COUNTER_M
            )
            counter[at] = b
        return TruthTrack(
            device=self.device,
            t=_readonly(t),
            lat=_readonly(lat),
            lon=_readonly(lon),
            indoor=_readonly(st.indoor.copy()),
            counter=_readonly(counter.astype(str)),
            phase=_readonly(np.array(PHASES)[st.phase]),
            floor=_readonly(st.floor),
        )

    # --- bad input --------------------------------------------------------------------
    def inject_bad(
        self, good: list[dict[str, Any]], bad_rate: float, counts: dict[str, int]
    ) -> list[tuple[float, dict[str, Any], bool]]:
        """The device's stream: (sort time, record, is_good) with bad ones after a base."""
        rng = self._rng(5)
        n = len(good)
        hit = rng.random(n) < bad_rate
        kinds = rng.integers(0, len(BAD_KINDS), n)
        out: list[tuple[float, dict[str, Any], bool]] = []
        for k, rec in enumerate(good):
            out.append((rec["t"], rec, True))
            if not hit[k]:
                continue
            kind = BAD_KINDS[int(kinds[k])]
            t = rec["t"]
            if kind == "duplicate":
                bad = copy.deepcopy(rec)
            elif kind == "out_of_order":
                bad = copy.deepcopy(rec)
                bad["t"] = round(t - float(rng.uniform(0.5, 10.0)), 3)
            else:
                st = self.path.eval(np.array([t]))
                la, lo = self.world.frame.to_latlon(float(st.x[0]), float(st.y[0]))
                bad = {
                    "device": self.device,
                    "t": t,
                    "kind": "gps",
                    "lat": round(la, 7),
                    "lon": round(lo, 7),
                    "accuracy": round(float(rng.uniform(3.0, 15.0)), 1),
                }
                if kind == "nan_lat":
                    bad["lat"] = math.nan
                elif kind == "null_island":
                    bad["lat"], bad["lon"] = 0.0, 0.0
                else:
                    bad["accuracy"] = [0.0, -1.0, 1.0e6, 99_999.0][int(rng.integers(4))]
            counts[kind] += 1
            out.append((t, bad, False))
        return out


def simulate_day(
    world: World,
    couriers: int = 20,
    duration_s: float = 3600,
    seed: int = 0,
    start_t: float = 1_700_000_000.0,
    bad_rate: float = 0.002,
) -> Trace:
    """Simulate ``couriers`` couriers for ``duration_s`` seconds from ``start_t``.

    Courier ``i`` (device ``c{i:03d}``) depends only on (world, seed, i, start_t,
    duration_s, bad_rate), not on how many other couriers there are.
    """
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    if seed < 0:
        raise ValueError("seed must be non-negative")
    # Hundreds of thousands of small dicts: the cyclic GC would rescan them over and
    # over (a third of the run time) although none of them can form a cycle.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _simulate(world, couriers, float(duration_s), seed, float(start_t), bad_rate)
    finally:
        if gc_was_enabled:
            gc.enable()


def _simulate(
    world: World, couriers: int, duration_s: float, seed: int, start_t: float, bad_rate: float
) -> Trace:
    t0, t1 = start_t, start_t + float(duration_s)
    counts = dict.fromkeys(BAD_KINDS, 0)
    truth: dict[str, TruthTrack] = {}
    t_key: list[float] = []
    dev_key: list[int] = []
    seq_key: list[int] = []
    stream: list[dict[str, Any]] = []
    is_good: list[bool] = []
    for i in range(couriers):
        c = _Courier(world, i, seed, t0, t1)
        recs = c.gps() + c.wifi() + c.beacons() + c.cells()
        recs.sort(key=lambda r: (r[0], r[1]))
        good = [r[2] for r in recs]
        truth[c.device] = c.truth(np.array([r[0] for r in recs], dtype=np.float64))
        for k, (tk, rec, ok) in enumerate(c.inject_bad(good, bad_rate, counts)):
            t_key.append(tk)
            dev_key.append(i)
            seq_key.append(k)
            stream.append(rec)
            is_good.append(ok)
    # inject_bad keys bad records by their base time, so sorting keeps them after it
    order = np.lexsort((np.array(seq_key), np.array(dev_key), np.array(t_key)))
    records = [stream[k] for k in order.tolist()]
    observations = [observation_from_dict(stream[k]) for k in order.tolist() if is_good[k]]
    return Trace(records, observations, counts, truth, t0, duration_s, seed)


def write_trace(trace: Trace, world: World, dir: str | Path) -> tuple[Path, Path]:
    """Write ``OBSERVATIONS.jsonl`` (every record, bad ones included) and ``REGISTRY.json``."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    obs_path = d / "OBSERVATIONS.jsonl"
    reg_path = d / "REGISTRY.json"
    tmp = obs_path.with_name(obs_path.name + ".tmp")
    with tmp.open("w") as fh:
        for rec in trace.records:
            fh.write(json.dumps(rec, separators=(",", ":")))
            fh.write("\n")
    tmp.replace(obs_path)
    world.registry().save(reg_path)
    return obs_path, reg_path

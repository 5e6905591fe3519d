"""Learning the registry from GPS-tagged scans, then locating phones without GPS."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from geo.coords import LocalFrame, haversine_m
from geo.estimate import R68_PER_SIGMA, R95_PER_SIGMA
from geo.learn import DEFAULT_BEACON_TX_POWER, LearnStats, fit_station, learn_registry
from geo.observations import (
    BeaconSighting,
    CellObservation,
    GpsFix,
    Observation,
    Reading,
    WifiScan,
)
from geo.registry import Beacon, Registry, WifiAp
from geo.sources.base import Unlocatable
from geo.sources.wifi import WifiSource

FRAME = LocalFrame(52.52, 13.40)
GPS_SD_M = 5.0


# --- A synthetic city block ----------------------------------------------------------


@dataclass(frozen=True)
class Area:
    """APs with their true positions (m) and radio models; log-distance + shadowing."""

    xy: npt.NDArray[np.float64]
    tx: npt.NDArray[np.float64]
    n: npt.NDArray[np.float64]
    shadowing_db: float = 5.5
    floor_dbm: float = -92.0

    @staticmethod
    def random(rng: np.random.Generator, n_aps: int = 40, size: float = 500.0) -> Area:
        return Area(
            rng.uniform(0, size, (n_aps, 2)),
            rng.normal(-40, 4, n_aps),
            rng.uniform(2.5, 3.4, n_aps),
        )

    def bssid(self, i: int) -> str:
        return f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"

    def scan(self, rng: np.random.Generator, p: npt.NDArray[np.float64]) -> tuple[Reading, ...]:
        d = np.hypot(*(self.xy - p).T)
        rssi = self.tx - 10 * self.n * np.log10(np.maximum(d, 1.0))
        rssi = rssi + rng.normal(0, self.shadowing_db, len(d))
        return tuple(
            Reading(self.bssid(int(i)), float(round(rssi[i])))
            for i in np.nonzero(rssi >= self.floor_dbm)[0]
        )


def gps(
    device: str,
    t: float,
    x: float,
    y: float,
    acc: float = GPS_SD_M * R68_PER_SIGMA,
    speed: float | None = None,
) -> GpsFix:
    lat, lon = FRAME.to_latlon(x, y)
    return GpsFix(device, t, lat, lon, acc, speed)


def survey(
    rng: np.random.Generator,
    area: Area,
    *,
    size: float = 500.0,
    walkers: int = 6,
    drivers: int = 4,
    duration: float = 900.0,
) -> list[Observation]:
    """Couriers walking (1.4 m/s) and driving (8 m/s) a 100 m street grid.

    GPS every second with 5 m noise per axis, a Wi-Fi scan every 3 s at odd offsets (so
    scans fall between fixes), devices interleaved in one time-ordered stream.
    """
    events: list[Observation] = []
    nodes = np.arange(0.0, size + 1.0, 100.0)
    for dev in range(walkers + drivers):
        speed = 1.4 if dev < walkers else 8.0
        name = f"courier-{dev}"
        pos = np.array([rng.choice(nodes), rng.choice(nodes)])
        target = pos.copy()
        t = float(rng.uniform(0, 5))
        t_scan = t + float(rng.uniform(0, 3))
        while t < duration:
            if np.allclose(pos, target):
                for k in rng.permutation(4):
                    step = np.array([(1, 0), (-1, 0), (0, 1), (0, -1)][k]) * 100.0
                    if np.all((pos + step >= 0) & (pos + step <= size)):
                        target = pos + step
                        break
            delta = target - pos
            dist = float(np.hypot(*delta))
            if dist > 0:
                pos = pos + delta / dist * min(dist, speed)
            t += 1.0
            noisy = pos + rng.normal(0, GPS_SD_M, 2)
            events.append(gps(name, t, float(noisy[0]), float(noisy[1]), speed=speed))
            while t_scan <= t:
                readings = area.scan(rng, pos)
                if readings:
                    events.append(WifiScan(name, t_scan, readings))
                t_scan += 3.0
    events.sort(key=lambda o: o.t)
    return events


def locate_many(
    src: WifiSource, area: Area, rng: np.random.Generator, n: int = 1500
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Errors and sigmas (m) of Wi-Fi-only fixes at random points of the area."""
    errs, sig = [], []
    for _ in range(n):
        p = rng.uniform(50, 450, 2)
        readings = area.scan(rng, p)
        try:
            fix = src.locate(WifiScan("phone", 0.0, readings))
        except Unlocatable:
            continue
        lat, lon = FRAME.to_latlon(*p)
        errs.append(haversine_m(fix.lat, fix.lon, lat, lon))
        sig.append(fix.sigma)
    return np.array(errs), np.array(sig)


@pytest.mark.parametrize("seed", [11, 12])
def test_learn_then_locate_without_gps_is_accurate_and_calibrated(seed: int) -> None:
    rng = np.random.default_rng(seed)
    area = Area.random(rng)
    obs = survey(rng, area)
    result = learn_registry(obs)
    st = result.stats
    assert st.wifi_scans == st.wifi_scans_used > 1000 and st.without_fix == 0
    assert st.wifi_learned == len(result.registry.wifi) >= 35 and st.wifi_moved == 0

    # The stations themselves: metres-level positions, honest radii, sane radio models.
    ap_err, radius, tx_err = [], [], []
    for i in range(len(area.xy)):
        a = result.registry.wifi.get(area.bssid(i))
        if a is None:
            continue
        x, y = FRAME.to_xy(a.lat, a.lon)
        ap_err.append(math.hypot(x - area.xy[i, 0], y - area.xy[i, 1]))
        radius.append(a.radius)
        if a.tx_power is not None:
            assert a.path_loss is not None
            tx_err.append(abs(a.tx_power - area.tx[i]))
    assert np.median(ap_err) < 10.0
    assert np.mean(np.array(ap_err) <= np.array(radius)) >= 0.68
    assert len(tx_err) >= 25 and np.median(tx_err) < 4.0

    # A phone that reports only a Wi-Fi scan.
    errs, sig = locate_many(WifiSource(result.registry), area, np.random.default_rng(seed + 1000))
    assert len(errs) > 1300
    in68 = float(np.mean(errs <= sig * R68_PER_SIGMA))
    in95 = float(np.mean(errs <= sig * R95_PER_SIGMA))
    assert np.median(errs) < 45.0, np.median(errs)
    assert 0.68 <= in68 <= 0.95, in68
    assert 0.90 <= in95 <= 0.99, in95


# --- Pairing scans with fixes --------------------------------------------------------


def one_ap_registry(obs: list[Observation]) -> WifiAp:
    reg = learn_registry(obs).registry
    assert list(reg.wifi) == ["a1"]
    return reg.wifi["a1"]


def test_scan_between_two_fixes_is_interpolated() -> None:
    obs: list[Observation] = [
        gps("d", 10.0, 0.0, 0.0),
        gps("x", 10.5, 900.0, 900.0),  # another device, interleaved: must not be used
        WifiScan("d", 11.0, (Reading("a1", -50.0),)),
        gps("d", 12.0, 20.0, 0.0),
    ]
    a = one_ap_registry(obs)
    assert FRAME.to_xy(a.lat, a.lon) == pytest.approx((10.0, 0.0), abs=0.1)
    assert a.samples == 1 and not a.moved


def test_scan_with_one_close_fix_uses_it_and_others_are_counted() -> None:
    obs: list[Observation] = [
        gps("d", 10.0, 30.0, 40.0),
        WifiScan("d", 11.5, (Reading("a1", -50.0),)),  # 1.5 s after the only fix
        WifiScan("d", 15.0, (Reading("a2", -50.0),)),  # 5 s: too late
        WifiScan("e", 11.0, (Reading("a3", -50.0),)),  # device without fixes
    ]
    result = learn_registry(obs, max_dt=2.0)
    assert list(result.registry.wifi) == ["a1"]
    a = result.registry.wifi["a1"]
    assert FRAME.to_xy(a.lat, a.lon) == pytest.approx((30.0, 40.0), abs=0.1)
    assert result.stats.without_fix == 2 and result.stats.wifi_scans_used == 1
    assert result.stats.wifi_scans == 3 and result.stats.gps_fixes == 1


def test_inaccurate_fixes_are_not_used() -> None:
    obs: list[Observation] = [
        gps("d", 10.0, 0.0, 0.0, acc=500.0),
        WifiScan("d", 10.5, (Reading("a1", -50.0),)),
    ]
    result = learn_registry(obs, max_accuracy_m=100.0)
    assert not result.registry.wifi
    assert result.stats.gps_too_inaccurate == 1 and result.stats.without_fix == 1


# --- Station estimates ---------------------------------------------------------------


def samples_around(
    rng: np.random.Generator,
    center: tuple[float, float],
    n: int,
    tx: float = -40.0,
    pl: float = 3.0,
    spread: float = 60.0,
) -> list[Observation]:
    """GPS-tagged scans of AP ``a1`` at random points around ``center``."""
    out: list[Observation] = []
    t = float(rng.uniform(0, 1e5))
    for _ in range(n):
        p = np.asarray(center) + rng.uniform(-spread, spread, 2)
        d = max(1.0, math.hypot(p[0] - center[0], p[1] - center[1]))
        rssi = tx - 10 * pl * math.log10(d) + rng.normal(0, 4.0)
        g = p + rng.normal(0, GPS_SD_M, 2)
        out.append(gps("d", t, float(g[0]), float(g[1])))
        out.append(WifiScan("d", t + 0.2, (Reading("a1", round(rssi)),)))
        t += 10.0
    return out


def test_path_loss_model_is_fitted_when_distances_vary() -> None:
    rng = np.random.default_rng(5)
    a = one_ap_registry(samples_around(rng, (100.0, 50.0), 300, tx=-35.0, pl=2.6))
    assert a.tx_power is not None and a.path_loss is not None
    assert a.tx_power == pytest.approx(-35.0, abs=3.0)
    assert a.path_loss == pytest.approx(2.6, abs=0.3)
    x, y = FRAME.to_xy(a.lat, a.lon)
    assert math.hypot(x - 100.0, y - 50.0) < 5.0 <= a.radius * 3
    assert a.samples == 300


def test_few_samples_at_one_distance_keep_the_default_model() -> None:
    obs: list[Observation] = []
    for k in range(4):
        obs += [
            gps("d", 10.0 * k, 30.0, 0.0),
            WifiScan("d", 10.0 * k + 0.1, (Reading("a1", -70.0),)),
        ]
    a = one_ap_registry(obs)
    assert a.tx_power is None and a.path_loss is None and a.samples == 4
    # -70 dBm says ~10-50 m; four samples at one spot cannot say in which direction.
    assert a.radius > 15.0


def test_ap_seen_in_two_places_is_flagged_moved() -> None:
    rng = np.random.default_rng(8)
    obs = samples_around(rng, (0.0, 0.0), 40) + samples_around(rng, (1200.0, 300.0), 40)
    obs.sort(key=lambda o: o.t)
    result = learn_registry(obs)
    assert result.registry.wifi["a1"].moved and result.stats.wifi_moved == 1
    # ... and the Wi-Fi source then ignores it.
    with pytest.raises(Unlocatable) as e:
        WifiSource(result.registry).locate(WifiScan("p", 0, (Reading("a1", -40.0),)))
    assert e.value.reason == "only_moved_stations"


def test_mobile_hotspot_on_a_drive_is_flagged_moved() -> None:
    obs: list[Observation] = []
    for k in range(120):  # 8 m/s for 2 minutes, the hotspot rides along at -40 dBm
        obs += [
            gps("bus", float(k), 8.0 * k, 0.0),
            WifiScan("bus", k + 0.5, (Reading("a1", -40.0),)),
        ]
    assert learn_registry(obs).registry.wifi["a1"].moved


def test_a_single_gps_glitch_is_dropped_not_called_a_move() -> None:
    rng = np.random.default_rng(9)
    obs = samples_around(rng, (0.0, 0.0), 100)
    obs += [gps("g", 5e5, 3000.0, 0.0), WifiScan("g", 5e5 + 0.1, (Reading("a1", -45.0),))]
    result = learn_registry(obs)
    a = result.registry.wifi["a1"]
    assert not a.moved and result.stats.samples_dropped == 1 and a.samples == 100
    assert math.hypot(*FRAME.to_xy(a.lat, a.lon)) < 10.0


def test_fit_station_accepts_plain_arrays() -> None:
    fit = fit_station([52.52, 52.5201], [13.40, 13.4001], [-60.0, -62.0], [5.0, 5.0])
    assert fit.samples == 2 and not fit.moved and fit.radius > 0


# --- Merging with an existing registry -----------------------------------------------


def existing_registry() -> Registry:
    reg = Registry()
    lat, lon = FRAME.to_latlon(0.0, 0.0)
    reg.wifi["a1"] = WifiAp("a1", lat, lon, tx_power=-40.0, path_loss=3.0, radius=6.0, samples=100)
    lat, lon = FRAME.to_latlon(500.0, 0.0)
    reg.wifi["unseen"] = WifiAp("unseen", lat, lon, radius=10.0, samples=7)
    lat, lon = FRAME.to_latlon(-300.0, 0.0)
    reg.wifi["surveyed"] = WifiAp("surveyed", lat, lon)
    lat, lon = FRAME.to_latlon(10.0, 10.0)
    reg.beacons["b1"] = Beacon("b1", lat, lon, tx_power=-65.0)
    return reg


def test_merge_combines_sample_weighted_and_keeps_unseen() -> None:
    rng = np.random.default_rng(10)
    old = existing_registry()
    obs = samples_around(rng, (20.0, 0.0), 100)
    result = learn_registry(obs, existing=old)
    a = result.registry.wifi["a1"]
    x, _y = FRAME.to_xy(a.lat, a.lon)
    assert 5.0 < x < 15.0  # halfway between 0 (100 samples) and ~20 (100 samples)
    assert a.samples == 200 and not a.moved
    assert result.registry.wifi["unseen"] == old.wifi["unseen"]
    assert result.stats.wifi_updated == 1 and result.stats.wifi_learned == 0
    # The input registry is not modified.
    assert old.wifi["a1"].samples == 100 and FRAME.to_xy(old.wifi["a1"].lat, old.wifi["a1"].lon)[
        0
    ] == pytest.approx(0.0, abs=1e-6)


def test_merge_flags_entry_seen_far_from_where_it_was() -> None:
    rng = np.random.default_rng(11)
    result = learn_registry(samples_around(rng, (2000.0, 0.0), 50), existing=existing_registry())
    assert result.registry.wifi["a1"].moved and result.stats.wifi_moved == 1


def test_merge_keeps_surveyed_position_and_fills_the_model() -> None:
    rng = np.random.default_rng(12)
    obs = samples_around(rng, (-300.0, 0.0), 200)
    obs = [
        WifiScan(o.device, o.t, tuple(Reading("surveyed", r.rssi) for r in o.aps))
        if isinstance(o, WifiScan)
        else o
        for o in obs
    ]
    old = existing_registry()
    new = learn_registry(obs, existing=old).registry.wifi["surveyed"]
    assert (new.lat, new.lon) == (old.wifi["surveyed"].lat, old.wifi["surveyed"].lon)
    assert new.tx_power is not None and new.path_loss is not None and new.samples == 0


def test_beacons_learnt_new_and_surveyed_kept() -> None:
    rng = np.random.default_rng(13)
    obs: list[Observation] = []
    for k in range(60):
        p = rng.uniform(-15, 15, 2)
        d1 = max(1.0, math.hypot(p[0] - 10, p[1] - 10))
        d2 = max(1.0, math.hypot(p[0] + 5, p[1] - 0))
        g = p + rng.normal(0, 3.0, 2)
        obs.append(gps("c", 100.0 * k, float(g[0]), float(g[1]), acc=4.5))
        obs.append(
            BeaconSighting(
                "c",
                100.0 * k + 0.5,
                (
                    Reading("b1", round(-65 - 20 * math.log10(d1) + rng.normal(0, 3))),
                    Reading("b2", round(-59 - 20 * math.log10(d2) + rng.normal(0, 3))),
                ),
            )
        )
    old = existing_registry()
    result = learn_registry(obs, existing=old)
    b1 = result.registry.beacons["b1"]
    assert b1 == old.beacons["b1"]  # surveyed: position and tx_power kept
    b2 = result.registry.beacons["b2"]
    x, y = FRAME.to_xy(b2.lat, b2.lon)
    assert math.hypot(x + 5, y) < 6.0
    assert b2.tx_power == pytest.approx(DEFAULT_BEACON_TX_POWER, abs=6.0)
    st = result.stats
    assert (st.beacons_learned, st.beacons_updated, st.beacons_disagreeing) == (1, 1, 0)
    assert st.beacon_sightings == st.beacon_sightings_used == 60


def test_surveyed_beacon_seen_elsewhere_is_reported() -> None:
    rng = np.random.default_rng(14)
    obs: list[Observation] = []
    for k in range(30):
        p = np.array([400.0, 0.0]) + rng.uniform(-10, 10, 2)
        obs += [
            gps("c", 10.0 * k, float(p[0]), float(p[1])),
            BeaconSighting("c", 10.0 * k + 0.3, (Reading("b1", -70.0),)),
        ]
    result = learn_registry(obs, existing=existing_registry())
    assert result.stats.beacons_disagreeing == 1


def test_cells_are_learnt_when_new() -> None:
    obs: list[Observation] = []
    for k in range(20):
        obs += [
            gps("c", 10.0 * k, 100.0 * k, 0.0),
            CellObservation("c", 10.0 * k + 0.5, (Reading("262-1-5-77", None),)),
        ]
    result = learn_registry(obs)
    cell = result.registry.cells["262-1-5-77"]
    assert FRAME.to_xy(cell.lat, cell.lon)[0] == pytest.approx(950.0, abs=1.0)
    assert cell.range >= 900.0
    assert result.stats.cells_learned == 1 and result.stats.cell_observations_used == 20


def test_stats_as_dict() -> None:
    d = LearnStats(wifi_scans=3).as_dict()
    assert d["wifi_scans"] == 3 and all(isinstance(v, int) for v in d.values())

"""Wi-Fi, beacon and cell source models: geometry, robustness, calibration, speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from geo.coords import LocalFrame, haversine_m
from geo.estimate import R68_PER_SIGMA, R95_PER_SIGMA
from geo.observations import BeaconSighting, CellObservation, GpsFix, Reading, WifiScan
from geo.registry import Beacon, CellTower, Registry, WifiAp
from geo.sources.base import SourceModel, Unlocatable
from geo.sources.beacon import BeaconSource
from geo.sources.cell import CellSource
from geo.sources.wifi import WifiSource

FRAME = LocalFrame(52.52, 13.40)


def ap(
    bssid: str,
    x: float,
    y: float,
    tx_power: float | None = None,
    path_loss: float | None = None,
    radius: float = 0.0,
    samples: int = 0,
    moved: bool = False,
) -> WifiAp:
    """An AP at (x, y) metres of the test frame."""
    lat, lon = FRAME.to_latlon(x, y)
    return WifiAp(bssid, lat, lon, tx_power, path_loss, radius, samples, moved)


def rssi_at(x: float, y: float, sx: float, sy: float, tx: float, n: float) -> float:
    """Noiseless log-distance RSSI (dBm) at (x, y) from a station at (sx, sy)."""
    return tx - 10.0 * n * math.log10(max(math.hypot(x - sx, y - sy), 0.1))


def err_m(fix_lat: float, fix_lon: float, x: float, y: float) -> float:
    lat, lon = FRAME.to_latlon(x, y)
    return haversine_m(fix_lat, fix_lon, lat, lon)


def wifi_scan(*readings: tuple[str, float]) -> WifiScan:
    return WifiScan("d", 0.0, tuple(Reading(b, r) for b, r in readings))


def test_sources_follow_the_protocol() -> None:
    reg = Registry()
    sources: list[SourceModel] = [WifiSource(reg), BeaconSource(reg), CellSource(reg)]
    assert [s.kind for s in sources] == ["wifi", "beacon", "cell"]
    gps = GpsFix("d", 0.0, 52.5, 13.4, 5.0)
    for s in sources:
        with pytest.raises(Unlocatable) as e:
            s.locate(gps)
        assert e.value.reason == "wrong_kind"


# --- Wi-Fi ---------------------------------------------------------------------------


def grid_registry(tx: float = -40.0, n: float = 3.0) -> Registry:
    """Five APs with a learnt radio model around the origin, 40 m apart."""
    reg = Registry()
    for i, (x, y) in enumerate([(0, 0), (40, 0), (0, 40), (-40, 0), (0, -40)]):
        b = f"aa:00:00:00:00:0{i}"
        reg.wifi[b] = ap(b, x, y, tx_power=tx, path_loss=n, radius=2.0, samples=50)
    return reg


def grid_scan(reg: Registry, x: float, y: float, tx: float = -40.0, n: float = 3.0) -> WifiScan:
    out = []
    for b, a in reg.wifi.items():
        ax, ay = FRAME.to_xy(a.lat, a.lon)
        out.append((b, rssi_at(x, y, ax, ay, tx, n)))
    return wifi_scan(*out)


def test_wifi_noiseless_scan_is_located_within_a_few_metres() -> None:
    reg = grid_registry()
    src = WifiSource(reg)
    for x, y in [(5.0, 7.0), (-12.0, 20.0), (25.0, -18.0)]:
        fix = src.locate(grid_scan(reg, x, y))
        assert fix.kind == "wifi" and fix.stations == 5 and fix.unknown == 0
        assert err_m(fix.lat, fix.lon, x, y) < 3.0
        # Honest: the floor keeps sigma at Wi-Fi scale even on a perfect scan.
        assert 8.0 <= fix.sigma < 30.0
        assert fix.indoor is None and fix.near is None


def test_wifi_unknown_aps_are_ignored_and_counted() -> None:
    reg = grid_registry()
    src = WifiSource(reg)
    base = grid_scan(reg, 3.0, 4.0)
    scan = WifiScan(
        "d",
        0.0,
        (*base.aps, Reading("ff:ff:ff:00:00:01", -30.0), Reading("ff:ff:ff:00:00:02", -90.0)),
    )
    fix = src.locate(scan)
    ref = src.locate(base)
    assert fix.unknown == 2 and fix.stations == 5
    assert (fix.lat, fix.lon, fix.sigma) == (ref.lat, ref.lon, ref.sigma)


def test_wifi_without_known_aps_is_unlocatable() -> None:
    src = WifiSource(grid_registry())
    with pytest.raises(Unlocatable) as e:
        src.locate(wifi_scan(("ff:ff:ff:00:00:01", -50.0), ("ff:ff:ff:00:00:02", -60.0)))
    assert e.value.reason == "no_known_stations" and e.value.unknown == 2


def test_wifi_flagged_moved_ap_is_ignored() -> None:
    reg = grid_registry()
    reg.wifi["bb:00:00:00:00:01"] = ap("bb:00:00:00:00:01", 0.0, 0.0, moved=True)
    src = WifiSource(reg)
    fix = src.locate(WifiScan("d", 0, (*grid_scan(reg, 3, 4).aps,)))
    # The grid scan includes the moved AP (it is in the registry): it must not count.
    assert "bb:00:00:00:00:01" in fix.excluded and fix.stations == 5
    with pytest.raises(Unlocatable) as e:
        src.locate(wifi_scan(("bb:00:00:00:00:01", -40.0), ("ff:00:00:00:00:09", -70.0)))
    assert e.value.reason == "only_moved_stations" and e.value.unknown == 1


def test_wifi_ap_registered_far_away_is_excluded() -> None:
    """A phone hotspot learnt 3 km away, heard loud here, must not drag the fix."""
    reg = grid_registry()
    reg.wifi["cc:00:00:00:00:01"] = ap(
        "cc:00:00:00:00:01", 3000.0, 500.0, tx_power=-40.0, path_loss=3.0
    )
    src = WifiSource(reg)
    base = grid_scan(reg, 5.0, 5.0)
    readings = [r if r.id != "cc:00:00:00:00:01" else Reading(r.id, -35.0) for r in base.aps]
    fix = src.locate(WifiScan("d", 0.0, tuple(readings)))
    assert fix.excluded == ("cc:00:00:00:00:01",)
    assert fix.stations == 5
    assert err_m(fix.lat, fix.lon, 5.0, 5.0) < 5.0


def test_wifi_two_disagreeing_aps_are_refused_not_guessed() -> None:
    reg = Registry()
    reg.wifi["a1"] = ap("a1", 0.0, 0.0)
    reg.wifi["a2"] = ap("a2", 5000.0, 0.0)
    with pytest.raises(Unlocatable) as e:
        WifiSource(reg).locate(wifi_scan(("a1", -60.0), ("a2", -60.0)))
    assert e.value.reason == "inconsistent_stations"


def test_wifi_single_ap_sigma_follows_signal_strength() -> None:
    reg = Registry()
    reg.wifi["a1"] = ap("a1", 10.0, 20.0)
    src = WifiSource(reg)
    loud = src.locate(wifi_scan(("a1", -45.0)))
    faint = src.locate(wifi_scan(("a1", -90.0)))
    assert err_m(loud.lat, loud.lon, 10.0, 20.0) < 0.01
    assert loud.stations == faint.stations == 1
    assert loud.sigma < 15.0
    # One AP heard weakly could be 100+ m away: the 95 % radius must say so.
    assert faint.radius95 > 150.0


def test_wifi_duplicate_readings_count_once() -> None:
    reg = grid_registry()
    base = grid_scan(reg, 3.0, 4.0)
    fix = WifiSource(reg).locate(WifiScan("d", 0.0, (*base.aps, base.aps[0])))
    assert fix.stations == 5


def test_wifi_works_across_the_antimeridian() -> None:
    frame = LocalFrame(-16.5, 179.9995)  # Fiji
    reg = Registry()
    for i, (x, y) in enumerate([(-30, 0), (30, 0), (0, 30), (0, -30)]):
        lat, lon = frame.to_latlon(x, y)
        reg.wifi[f"a{i}"] = WifiAp(f"a{i}", lat, lon, tx_power=-40.0, path_loss=3.0)
    readings = []
    for b, a in reg.wifi.items():
        ax, ay = frame.to_xy(a.lat, a.lon)
        readings.append((b, rssi_at(10.0, 5.0, ax, ay, -40.0, 3.0)))
    fix = WifiSource(reg).locate(wifi_scan(*readings))
    lat, lon = frame.to_latlon(10.0, 5.0)
    assert haversine_m(fix.lat, fix.lon, lat, lon) < 3.0
    assert -180.0 <= fix.lon <= 180.0


def test_wifi_calibration_with_exact_registry() -> None:
    """Random APs, 5.5 dB shadowing, exact registry: sigma must be honest (seeded)."""
    rng = np.random.default_rng(7)
    n_aps = 40
    xy = rng.uniform(0, 500, (n_aps, 2))
    tx = rng.normal(-40, 4, n_aps)
    pl = rng.uniform(2.5, 3.4, n_aps)
    reg = Registry()
    for i in range(n_aps):
        reg.wifi[f"a{i}"] = ap(
            f"a{i}", float(xy[i, 0]), float(xy[i, 1]), float(tx[i]), float(pl[i])
        )
    src = WifiSource(reg)
    errs, sig = [], []
    for _ in range(1500):
        p = rng.uniform(50, 450, 2)
        d = np.hypot(*(xy - p).T)
        rssi = tx - 10 * pl * np.log10(np.maximum(d, 1.0)) + rng.normal(0, 5.5, n_aps)
        heard = [(f"a{i}", float(round(rssi[i]))) for i in np.nonzero(rssi >= -92)[0]]
        if not heard:
            continue
        fix = src.locate(wifi_scan(*heard))
        errs.append(err_m(fix.lat, fix.lon, *p))
        sig.append(fix.sigma)
    e, s = np.array(errs), np.array(sig)
    in68 = float(np.mean(e <= s * R68_PER_SIGMA))
    in95 = float(np.mean(e <= s * R95_PER_SIGMA))
    assert np.median(e) < 45.0
    assert 0.68 <= in68 <= 0.95, in68
    assert 0.90 <= in95 <= 0.995, in95


def test_wifi_locate_is_fast() -> None:
    """A typical 5-15 AP scan: well under a millisecond (about 0.1 ms on a laptop)."""
    rng = np.random.default_rng(3)
    reg = Registry()
    xy = rng.uniform(0, 200, (30, 2))
    for i in range(30):
        reg.wifi[f"a{i}"] = ap(f"a{i}", float(xy[i, 0]), float(xy[i, 1]), -40.0, 3.0, radius=8.0)
    src = WifiSource(reg)
    scans: list[WifiScan] = []
    while len(scans) < 300:
        p = rng.uniform(20, 180, 2)
        rssi = -40 - 30 * np.log10(np.maximum(np.hypot(*(xy - p).T), 1)) + rng.normal(0, 5, 30)
        order = np.argsort(-rssi)[: rng.integers(5, 16)]
        scans.append(wifi_scan(*[(f"a{i}", float(rssi[i])) for i in order]))
    src.locate(scans[0])
    t0 = time.perf_counter()
    for s in scans:
        src.locate(s)
    per_scan = (time.perf_counter() - t0) / len(scans)
    assert per_scan < 1e-3, f"{per_scan * 1e6:.0f} us per scan"


# --- Beacons -------------------------------------------------------------------------


def beacon_registry(points: list[tuple[float, float]], tx: float = -59.0) -> Registry:
    reg = Registry()
    for i, (x, y) in enumerate(points):
        lat, lon = FRAME.to_latlon(x, y)
        reg.beacons[f"b{i}"] = Beacon(f"b{i}", lat, lon, tx_power=tx)
    return reg


def sighting(reg: Registry, x: float, y: float) -> BeaconSighting:
    out = []
    for ident, b in reg.beacons.items():
        bx, by = FRAME.to_xy(b.lat, b.lon)
        out.append(Reading(ident, rssi_at(x, y, bx, by, b.tx_power, b.path_loss)))
    return BeaconSighting("d", 0.0, tuple(out))


@pytest.mark.parametrize(
    "points",
    [[(0, 0), (10, 0), (0, 8)], [(0, 0), (12, 0), (0, 12), (12, 12)]],
)
def test_beacon_trilateration_on_noiseless_rssi(points: list[tuple[float, float]]) -> None:
    reg = beacon_registry(points)
    src = BeaconSource(reg)
    for x, y in [(4.0, 3.0), (2.0, 6.0), (7.0, 1.5)]:
        fix = src.locate(sighting(reg, x, y))
        assert fix.kind == "beacon" and fix.indoor is True
        assert fix.stations == len(points)
        assert err_m(fix.lat, fix.lon, x, y) < 1.5
        # Honest for 3-4 dB of shadowing at exponent 2 (~40 % range error), not for
        # this noiseless input: metres, not centimetres.
        assert 1.0 < fix.sigma < 10.0


def test_beacon_proximity_sets_near_for_one_loud_beacon() -> None:
    reg = beacon_registry([(0, 0)])
    src = BeaconSource(reg, proximity_m=3.0)
    fix = src.locate(BeaconSighting("d", 0.0, (Reading("b0", -62.0),)))  # ~1.4 m
    assert fix.near == "b0" and fix.indoor is True and fix.stations == 1
    assert err_m(fix.lat, fix.lon, 0.0, 0.0) < 0.01
    assert 1.0 < fix.sigma < 3.0
    far = src.locate(BeaconSighting("d", 0.0, (Reading("b0", -85.0),)))  # ~20 m
    assert far.near is None
    assert far.radius68 > 20.0


def test_beacon_with_two_uses_the_nearest() -> None:
    reg = beacon_registry([(0, 0), (15, 0)])
    fix = BeaconSource(reg).locate(
        BeaconSighting("d", 0, (Reading("b0", -80.0), Reading("b1", -60.0)))
    )
    assert err_m(fix.lat, fix.lon, 15.0, 0.0) < 0.01 and fix.near == "b1" and fix.stations == 2


def test_beacon_sigma_and_near_are_honest_under_shadowing() -> None:
    """Four beacons in a 20 m shop, 3.5 dB shadowing, tx_power surveyed to 1.5 dB."""
    rng = np.random.default_rng(21)
    pts = rng.uniform(0, 20, (4, 2))
    tx = rng.normal(-59, 2, 4)
    reg = Registry()
    for i, (x, y) in enumerate(pts):
        lat, lon = FRAME.to_latlon(x, y)
        reg.beacons[f"b{i}"] = Beacon(f"b{i}", lat, lon, tx_power=float(tx[i] + rng.normal(0, 1.5)))
    src = BeaconSource(reg)
    errs, sig, near_d = [], [], []
    for _ in range(2000):
        p = rng.uniform(-3, 23, 2)
        d = np.hypot(*(pts - p).T)
        rssi = tx - 20 * np.log10(np.maximum(d, 0.3)) + rng.normal(0, 3.5, 4)
        fix = src.locate(
            BeaconSighting("d", 0, tuple(Reading(f"b{i}", float(round(rssi[i]))) for i in range(4)))
        )
        errs.append(err_m(fix.lat, fix.lon, *p))
        sig.append(fix.sigma)
        if fix.near is not None:
            near_d.append(d[int(fix.near[1:])])
    e, s = np.array(errs), np.array(sig)
    assert np.median(e) < 8.0
    assert 0.65 <= np.mean(e <= s * R68_PER_SIGMA) <= 0.95
    assert np.mean(e <= s * R95_PER_SIGMA) >= 0.93
    # "near" is a claim dispatch acts on: it must usually be true.
    nd = np.array(near_d)
    assert len(nd) > 50 and np.mean(nd <= 3.0) >= 0.7 and np.mean(nd <= 4.5) >= 0.95


def test_beacon_unknown_only_is_unlocatable() -> None:
    src = BeaconSource(beacon_registry([(0, 0)]))
    with pytest.raises(Unlocatable) as e:
        src.locate(BeaconSighting("d", 0, (Reading("x", -60.0), Reading("y", -70.0))))
    assert e.value.reason == "no_known_stations" and e.value.unknown == 2
    fix = src.locate(BeaconSighting("d", 0, (Reading("x", -60.0), Reading("b0", -70.0))))
    assert fix.unknown == 1


# --- Cells ---------------------------------------------------------------------------


def cell_registry() -> Registry:
    reg = Registry()
    for ident, x, y, rng in [("c1", 0.0, 0.0, 2000.0), ("c2", 1500.0, 0.0, 2000.0)]:
        lat, lon = FRAME.to_latlon(x, y)
        reg.cells[ident] = CellTower(ident, lat, lon, rng)
    return reg


def test_cell_single_tower() -> None:
    fix = CellSource(cell_registry()).locate(CellObservation("d", 0, (Reading("c1", None),)))
    assert fix.kind == "cell" and fix.stations == 1
    assert err_m(fix.lat, fix.lon, 0.0, 0.0) < 0.01
    # Uniform in a 2 km disc would be 1000 m per axis; coverage is no hard disc.
    assert fix.sigma == pytest.approx(1200.0)
    assert fix.radius95 > 2000.0


def test_cell_two_towers_weighted_by_rssi() -> None:
    src = CellSource(cell_registry())
    fix = src.locate(CellObservation("d", 0, (Reading("c1", -70.0), Reading("c2", -90.0))))
    x, y = FRAME.to_xy(fix.lat, fix.lon)
    assert 0.0 < x < 750.0 and abs(y) < 1.0  # between, nearer the louder tower
    assert fix.stations == 2
    single = src.locate(CellObservation("d", 0, (Reading("c1", -70.0),)))
    assert 500.0 < fix.sigma <= single.sigma
    even = src.locate(CellObservation("d", 0, (Reading("c1", None), Reading("c2", None))))
    assert FRAME.to_xy(even.lat, even.lon)[0] == pytest.approx(750.0, abs=1.0)


def test_cell_unknown_is_unlocatable() -> None:
    src = CellSource(cell_registry())
    with pytest.raises(Unlocatable) as e:
        src.locate(CellObservation("d", 0, (Reading("262-1-5-99", None),)))
    assert e.value.reason == "no_known_stations" and e.value.unknown == 1
    fix = src.locate(CellObservation("d", 0, (Reading("262-1-5-99", None), Reading("c2", -80.0))))
    assert fix.unknown == 1 and fix.stations == 1

"""The fusion filter's GPS bias state, motion modes and robust weighting.

Hand-made tracks where the right answer is known, plus one short simulated courier day
(``geo.synthetic``) as an end-to-end guard of what the bias state buys.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geo.coords import LocalFrame, haversine_m
from geo.estimate import R68_PER_SIGMA, Estimate, PositionFix, sigma_from_r68
from geo.fusion import FusionConfig, FusionEngine
from geo.observations import BeaconSighting, GpsFix, Kind, Observation, Reading, WifiScan
from geo.registry import Beacon, Registry
from geo.sources.base import Unlocatable
from geo.synthetic import make_world, simulate_day

FRAME = LocalFrame(52.52, 13.405)


def gps(t: float, x: float, y: float, acc: float = 5.0, **kw: Any) -> GpsFix:
    lat, lon = FRAME.to_latlon(x, y)
    return GpsFix("d", t, lat, lon, acc, **kw)


def error_m(est: Estimate, x: float, y: float) -> float:
    lat, lon = FRAME.to_latlon(x, y)
    return haversine_m(est.lat, est.lon, lat, lon)


class ScriptedWifi:
    """A stand-in Wi-Fi source: the fix for each scan time is given in advance."""

    kind: Kind = "wifi"

    def __init__(self, fixes: dict[float, tuple[float, float, float]]) -> None:
        self.fixes = fixes

    def locate(self, obs: Observation) -> PositionFix:
        if obs.t not in self.fixes:
            raise Unlocatable("no_known_stations", "not scripted")
        x, y, sigma = self.fixes[obs.t]
        lat, lon = FRAME.to_latlon(x, y)
        return PositionFix(lat, lon, sigma, "wifi")


def scan(t: float) -> WifiScan:
    return WifiScan("d", t, (Reading("aa:bb:cc:dd:ee:ff", -60.0),))


def gauss_markov(rng: np.random.Generator, n: int, tau: float) -> Any:
    a = math.exp(-1.0 / tau)
    out = np.empty(n)
    out[0] = rng.standard_normal()
    for i in range(1, n):
        out[i] = a * out[i - 1] + math.sqrt(1 - a * a) * rng.standard_normal()
    return out


def biased_gps_and_unbiased_scans(
    seed: int, n: int = 900, acc: float = 12.0
) -> tuple[list[Observation], ScriptedWifi, list[tuple[float, float]]]:
    """A courier walking east at 1.4 m/s: 1 Hz GPS whose error is 70 % a slowly drifting
    bias, and every 6 s an unbiased but coarse (sigma 8 m) position from another source."""
    rng = np.random.default_rng(seed)
    sigma = sigma_from_r68(acc)
    bx, by = gauss_markov(rng, n, 45.0), gauss_markov(rng, n, 45.0)
    obs: list[Observation] = []
    truth: list[tuple[float, float]] = []
    scripted: dict[float, tuple[float, float, float]] = {}
    for i in range(n):
        t = 1000.0 + i
        x, y = 1.4 * i, 0.0
        ex = sigma * (math.sqrt(0.7) * bx[i] + math.sqrt(0.3) * rng.standard_normal())
        ey = sigma * (math.sqrt(0.7) * by[i] + math.sqrt(0.3) * rng.standard_normal())
        vx, vy = 1.4 + rng.normal(0, 0.25), rng.normal(0, 0.25)  # Doppler, 0.25 m/s
        obs.append(
            gps(t, x + ex, y + ey, acc, speed=math.hypot(vx, vy),
                bearing=math.degrees(math.atan2(vx, vy)) % 360.0)
        )  # fmt: skip
        truth.append((x, y))
        if i % 6 == 3:
            ts = t + 0.5
            scripted[ts] = (x + 0.7 + rng.normal(0, 8.0), y + rng.normal(0, 8.0), 8.0)
            obs.append(scan(ts))
            truth.append((x + 0.7, y))
    return obs, ScriptedWifi(scripted), truth


def run(
    obs: list[Observation], truth: list[tuple[float, float]], engine: FusionEngine
) -> tuple[Any, Any]:
    errs, r68 = [], []
    for o, (x, y) in zip(obs, truth, strict=True):
        r = engine.process(o)
        if not isinstance(r, Estimate):  # a 99.9 % gate rejects one fix in a thousand
            continue
        errs.append(error_m(r, x, y))
        r68.append(r.radius68)
    return np.array(errs), np.array(r68)


def test_the_bias_state_lets_an_unbiased_source_remove_a_drifting_gps_bias() -> None:
    ratios, inside68 = [], []
    for seed in range(8):
        obs, wifi, truth = biased_gps_and_unbiased_scans(seed)
        aware, r68 = run(obs, truth, FusionEngine(sources={"wifi": wifi}))
        # The old model: GPS noise taken as white (it only widened the reported radius).
        white_cfg = FusionConfig(floors={"gps": 0.0, "wifi": 0.3, "beacon": 0.0, "cell": 0.3})
        white, _ = run(obs, truth, FusionEngine(config=white_cfg, sources={"wifi": wifi}))
        ratios.append(np.median(aware[60:]) / np.median(white[60:]))
        inside68.append(np.mean(aware[60:] <= r68[60:]))
    assert np.mean(ratios) < 0.6
    # Not over-confident; a bit wide, since the truth here never accelerates.
    assert 0.6 <= np.mean(inside68) <= 0.92


def test_gps_alone_with_a_bias_is_not_averaged_into_overconfidence() -> None:
    """Without another source the bias cannot be removed; the radius must say so."""
    inside68, inside95 = [], []
    for seed in range(6):
        obs, _wifi, truth = biased_gps_and_unbiased_scans(seed, n=600)
        keep = [(o, tr) for o, tr in zip(obs, truth, strict=True) if isinstance(o, GpsFix)]
        errs, r68 = run([o for o, _ in keep], [tr for _, tr in keep], FusionEngine())
        inside68.append(np.mean(errs[60:] <= r68[60:]))
        inside95.append(np.mean(errs[60:] <= r68[60:] / R68_PER_SIGMA * 2.4477))
    assert 0.55 <= np.mean(inside68) <= 0.85
    assert np.mean(inside95) >= 0.88


def test_standing_still_averages_and_driving_off_is_followed_at_once() -> None:
    rng = np.random.default_rng(5)
    engine = FusionEngine()
    sigma = sigma_from_r68(6.0)
    est: Estimate | None = None
    for i in range(120):  # a red light: Doppler says 0 m/s
        r = engine.process(
            gps(float(i), rng.normal(0, sigma), rng.normal(0, sigma), 6.0, speed=0.1)
        )
        assert isinstance(r, Estimate)
        est = r
    assert est is not None and error_m(est, 0.0, 0.0) < 3.0
    assert engine.devices["d"].q == engine.config.still_accel_noise
    for k in range(1, 6):  # green: 10 m/s east, GPS itself still noisy
        x = 10.0 * k
        r = engine.process(
            gps(119.0 + k, x + rng.normal(0, sigma), rng.normal(0, sigma), 6.0, speed=10.0,
                bearing=90.0)
        )  # fmt: skip
        assert isinstance(r, Estimate)
        est = r
    assert est is not None
    assert engine.devices["d"].q == engine.config.accel_noise
    assert math.hypot(est.velocity[0] - 10.0, est.velocity[1]) < 1.5
    assert error_m(est, 50.0, 0.0) < 6.0


def test_a_doppler_velocity_far_from_the_state_is_a_manoeuvre_not_noise() -> None:
    engine = FusionEngine()
    for i in range(30):
        engine.process(gps(float(i), 0.0, 0.0, 4.0, speed=0.0))
    r = engine.process(gps(30.0, 0.0, 0.0, 4.0, speed=12.0, bearing=0.0))
    assert isinstance(r, Estimate)
    # One Doppler reading moves the velocity most of the way, not a sliver of it.
    assert r.velocity[1] > 8.0


def test_vehicle_speed_means_outdoors() -> None:
    bx, by = 10.0, 0.0
    blat, blon = FRAME.to_latlon(bx, by)
    engine = FusionEngine(Registry(beacons={"b1": Beacon("b1", blat, blon, tx_power=-59.0)}))
    for i in range(5):
        r = engine.process(BeaconSighting("d", float(i), (Reading("b1", -60.0),)))
    assert isinstance(r, Estimate) and r.indoor is True
    r = engine.process(gps(6.0, 12.0, 0.0, 8.0, speed=8.0, bearing=90.0))
    assert isinstance(r, Estimate) and r.indoor is False


def test_waiting_at_a_counter_is_a_standing_still_mode_that_expires() -> None:
    blat, blon = FRAME.to_latlon(0.0, 0.0)
    engine = FusionEngine(Registry(beacons={"b1": Beacon("b1", blat, blon, tx_power=-59.0)}))
    cfg = engine.config
    for i in range(20):
        engine.process(BeaconSighting("d", float(i), (Reading("b1", -58.0),)))  # ~1 m
    assert engine.devices["d"].q == cfg.still_accel_noise
    # Far from the beacon (no proximity) for longer than the mode's lifetime: moving.
    for i in range(20, 25):
        engine.process(BeaconSighting("d", float(i), (Reading("b1", -80.0),)))
    assert engine.devices["d"].q == cfg.accel_noise


def test_a_surprising_scan_moves_the_estimate_a_bounded_amount() -> None:
    def move(cfg: FusionConfig) -> float:
        wifi = ScriptedWifi({100.5: (30.0, 0.0, 8.0)})  # ~3.5 sigma of innovation
        engine = FusionEngine(config=cfg, sources={"wifi": wifi})
        for i in range(101):
            engine.process(gps(float(i), 0.0, 0.0, 6.0, speed=0.0))
        r = engine.process(scan(100.5))
        assert isinstance(r, Estimate)
        return error_m(r, 0.0, 0.0)

    robust, plain = move(FusionConfig()), move(FusionConfig(soft_chi2=1e9))
    assert 0.0 < robust < 0.75 * plain


def test_a_first_gps_fix_starts_with_its_bias_correlated_to_the_position() -> None:
    engine = FusionEngine()
    engine.process(gps(0.0, 0.0, 0.0, 10.0))
    dev = engine.devices["d"]
    # Positive definite, and the position error is (minus) the bias error.
    assert dev.pxb < 0.0
    assert dev.pxx * dev.pbb - dev.pxb**2 > 0.0


def test_on_a_simulated_courier_day_the_bias_state_pays_and_stays_calibrated() -> None:
    world = make_world(3, size_m=2000, restaurants=10, buildings=40)
    trace = simulate_day(world, couriers=6, duration_s=1200, seed=3)
    white_cfg = FusionConfig(floors={"gps": 0.0, "wifi": 0.3, "beacon": 0.0, "cell": 0.3})
    results = {}
    for name, cfg in (("aware", FusionConfig()), ("white", white_cfg)):
        engine = FusionEngine(world.registry(), cfg)
        errs, inside68, inside95 = [], [], []
        for o in trace.observations:
            r = engine.process(o)
            if not isinstance(r, Estimate) or o.kind != "gps":
                continue
            tlat, tlon, indoor, _counter = trace.truth[o.device].at(o.t)
            if indoor:
                continue
            e = haversine_m(r.lat, r.lon, tlat, tlon)
            errs.append(e)
            inside68.append(e <= r.radius68)
            inside95.append(e <= r.radius95)
        results[name] = (np.median(errs), np.mean(inside68), np.mean(inside95))
    median, r68, r95 = results["aware"]
    assert median < 0.8 * results["white"][0]
    assert 0.6 <= r68 <= 0.8
    assert 0.9 <= r95 <= 0.99


def test_walking_away_from_a_counter_widens_the_radius_to_the_beacon_ring() -> None:
    """Proximity fixes keep saying "at the beacon" as the courier walks off; without GPS
    the radius must grow with the range they report, not shrink with their number."""
    blat, blon = FRAME.to_latlon(0.0, 0.0)
    engine = FusionEngine(Registry(beacons={"b1": Beacon("b1", blat, blon, tx_power=-59.0)}))
    for i in range(60):  # waiting at the counter, ~1 m away
        engine.process(BeaconSighting("d", float(i), (Reading("b1", -58.0),)))
    at_counter = engine.estimate("d")
    assert at_counter is not None and at_counter.near == "b1"
    rssi = -58.0
    for i in range(60, 66):  # walking out: the beacon fades
        rssi -= 4.0
        sighting = BeaconSighting("d", float(i), (Reading("b1", rssi),))
        fix = engine.sources["beacon"].locate(sighting)
        r = engine.process(sighting)
        assert isinstance(r, Estimate)
        assert fix.range_m is not None
        if fix.range_m > engine.config.proximity_m:
            assert r.radius68 >= fix.radius68
    assert isinstance(r, Estimate) and r.radius68 > 3 * at_counter.radius68

"""The fusion filter on hand-made tracks where the right answer is known."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geo import fuse_track
from geo.coords import LocalFrame, haversine_m
from geo.estimate import Estimate, sigma_from_r68
from geo.fusion import FusionConfig, FusionEngine, Rejected
from geo.observations import BeaconSighting, GpsFix, Reading
from geo.registry import Beacon, Registry

FRAME = LocalFrame(52.52, 13.405)


def gps(device: str, t: float, x: float, y: float, acc: float = 5.0, **kw: Any) -> GpsFix:
    lat, lon = FRAME.to_latlon(x, y)
    return GpsFix(device, t, lat, lon, acc, **kw)


def error_m(est: Estimate, x: float, y: float) -> float:
    lat, lon = FRAME.to_latlon(x, y)
    return haversine_m(est.lat, est.lon, lat, lon)


def straight_walk(
    rng: np.random.Generator, n: int, acc: float, v: float = 1.4
) -> tuple[list[GpsFix], list[tuple[float, float]]]:
    sigma = sigma_from_r68(acc)
    obs, truth = [], []
    for i in range(n):
        x, y = v * i, 0.5 * v * i
        obs.append(gps("d", 1000.0 + i, x + rng.normal(0, sigma), y + rng.normal(0, sigma), acc))
        truth.append((x, y))
    return obs, truth


def test_filter_beats_white_noise_gps_and_stays_calibrated() -> None:
    rng = np.random.default_rng(1)
    obs, truth = straight_walk(rng, 600, acc=10.0)
    # No correlation floor: the noise here is white, so averaging is legitimate.
    cfg = FusionConfig(floors={"gps": 0.0})
    est = fuse_track(obs, config=cfg)
    assert len(est) == len(obs)
    raw = [
        error_m(Estimate("d", 0, o.lat, o.lon, 0, 0, (0, 0), (), None, ""), *tr)
        for o, tr in zip(obs, truth, strict=True)
    ]
    fused = [error_m(e, *tr) for e, tr in zip(est, truth, strict=True)]
    assert np.median(fused[50:]) < 0.6 * np.median(raw[50:])
    inside68 = np.mean([f <= e.radius68 for f, e in zip(fused[50:], est[50:], strict=True)])
    inside95 = np.mean([f <= e.radius95 for f, e in zip(fused[50:], est[50:], strict=True)])
    assert 0.58 <= inside68 <= 0.80
    assert 0.90 <= inside95 <= 0.995
    vx = np.mean([e.velocity[0] for e in est[100:]])
    vy = np.mean([e.velocity[1] for e in est[100:]])
    assert math.hypot(vx - 1.4, vy - 0.7) < 0.2


def test_correlation_floor_keeps_radius_honest_for_repeated_fixes() -> None:
    """Fixes repeating one biased position must not shrink the radius to nothing."""
    fixes = [gps("d", 10.0 + i, 12.0, 0.0, acc=10.0, speed=0.0) for i in range(300)]
    est = fuse_track(fixes)
    assert est[-1].radius68 >= 0.5 * 10.0  # floor 0.3 of variance => sqrt(.3)=.55 of radius
    assert est[-1].radius95 > est[-1].radius68


def test_single_multipath_jump_is_gated_and_does_not_move_the_estimate() -> None:
    engine = FusionEngine()
    for i in range(30):
        engine.process(gps("d", float(i), 0.0, 0.0, acc=4.0, speed=0.0))
    r = engine.process(gps("d", 30.0, 40.0, 0.0, acc=4.0))
    assert isinstance(r, Rejected) and r.reason == "gated_outlier"
    after = engine.process(gps("d", 31.0, 0.5, 0.0, acc=4.0))
    assert isinstance(after, Estimate) and error_m(after, 0, 0) < 5
    assert engine.rejected["gated_outlier"] == 1


def test_impossible_speed_is_its_own_reason() -> None:
    engine = FusionEngine()
    for i in range(10):
        engine.process(gps("d", float(i), 0.0, 0.0, acc=4.0))
    r = engine.process(gps("d", 10.0, 5000.0, 0.0, acc=4.0))
    assert isinstance(r, Rejected) and r.reason == "impossible_speed"


def test_consistent_run_of_rejections_reinitialises() -> None:
    """If the filter is wrong (say the first fix was bad), it must not stay wrong."""
    engine = FusionEngine()
    for i in range(20):
        engine.process(gps("d", float(i), 0.0, 0.0, acc=3.0, speed=0.0))
    results = [engine.process(gps("d", 20.0 + i, 400.0, 0.0, acc=3.0)) for i in range(6)]
    assert isinstance(results[0], Rejected)
    last = results[-1]
    assert isinstance(last, Estimate) and error_m(last, 400, 0) < 10
    assert engine.reinitialised == 1


def test_uncertainty_grows_over_a_gap() -> None:
    engine = FusionEngine()
    for i in range(20):
        engine.process(gps("d", float(i), 1.0 * i, 0.0, acc=5.0))
    now = engine.estimate("d")
    later = engine.estimate("d", t=19.0 + 60.0)
    assert now is not None and later is not None
    assert later.radius68 > 3 * now.radius68
    assert error_m(later, 79.0, 0.0) < later.radius95  # predicted along the velocity
    assert engine.last_t("d") == now.t == 19.0  # the prediction moved nothing
    assert engine.last_t("nobody") is None


def test_duplicates_and_out_of_order_are_rejected_and_counted() -> None:
    engine = FusionEngine()
    assert isinstance(engine.process(gps("d", 100.0, 0, 0)), Estimate)
    dup = engine.process(gps("d", 100.0, 0, 0))
    old = engine.process(gps("d", 99.0, 0, 0))
    assert isinstance(dup, Rejected) and dup.reason == "duplicate"
    assert isinstance(old, Rejected) and old.reason == "out_of_order"
    assert engine.rejected == {"duplicate": 1, "out_of_order": 1}


def test_invalid_records_never_crash_and_are_counted() -> None:
    engine = FusionEngine()
    bad: list[Any] = [
        {"device": "d", "t": 1.0, "kind": "gps", "lat": float("nan"), "lon": 1.0, "accuracy": 5},
        {"device": "d", "t": 2.0, "kind": "gps", "lat": 0.0, "lon": 0.0, "accuracy": 5},
        {"device": "d", "t": 3.0, "kind": "gps", "lat": 52.0, "lon": 13.0, "accuracy": 1e9},
        "not an object",
        {"t": 4.0, "kind": "gps"},
    ]
    results = [engine.process_dict(r) for r in bad]
    assert all(isinstance(r, Rejected) for r in results)
    assert sum(engine.rejected.values()) == len(bad)
    assert {"non_finite", "null_island", "absurd_accuracy", "bad_type"} <= set(engine.rejected)
    ok = engine.process_dict(
        {"device": "d", "t": 5.0, "kind": "gps", "lat": 52.0, "lon": 13.0, "accuracy": 5}
    )
    assert isinstance(ok, Estimate) and ok.h3


def test_unknown_stations_are_counted_not_silently_dropped() -> None:
    engine = FusionEngine(Registry())
    r = engine.process_dict(
        {
            "device": "d",
            "t": 1.0,
            "kind": "wifi",
            "aps": [{"bssid": "aa", "rssi": -50}, {"bssid": "bb", "rssi": -70}],
        }
    )
    assert isinstance(r, Rejected)
    assert engine.unknown_stations["wifi"] == 2


def test_indoors_the_beacon_wins_over_degraded_gps() -> None:
    bx, by = 30.0, 10.0
    blat, blon = FRAME.to_latlon(bx, by)
    reg = Registry(beacons={"b1": Beacon("b1", blat, blon, tx_power=-59.0)})
    engine = FusionEngine(reg)
    rng = np.random.default_rng(3)
    est: Estimate | Rejected | None = None
    for i in range(120):
        t = float(i)
        # Indoor GPS: reported 35 m but biased 40 m towards the street.
        engine.process(gps("d", t, bx + rng.normal(-40, 15), by + rng.normal(0, 15), acc=35.0))
        est = engine.process(
            BeaconSighting("d", t + 0.5, (Reading("b1", -59.0 + rng.normal(0, 2)),))
        )
    assert isinstance(est, Estimate)
    assert est.indoor is True
    assert est.near == "b1"
    assert error_m(est, bx, by) < 10


def test_devices_are_bounded_and_expire() -> None:
    engine = FusionEngine(config=FusionConfig(max_devices=100, ttl_s=60))
    for i in range(250):
        engine.process(gps(f"d{i}", 1000.0 + i * 0.1, 0, 0))
    assert len(engine.devices) == 100
    assert engine.evicted == 150
    assert "d249" in engine.devices and "d0" not in engine.devices
    engine.process(gps("late", 2000.0, 0, 0))
    assert engine.expire(now=2000.0) == 99  # "late" itself evicted one more
    assert list(engine.devices) == ["late"]


def test_long_trip_reanchors_the_local_frame() -> None:
    engine = FusionEngine()
    frame = LocalFrame(48.0, 11.0)
    est = None
    for i in range(200):
        lat, lon = frame.to_latlon(300.0 * i, 0.0)  # 300 m per 10 s, 60 km in all
        est = engine.process(GpsFix("d", 10.0 * i, lat, lon, 5.0))
    assert isinstance(est, Estimate)
    tlat, tlon = frame.to_latlon(300.0 * 199, 0.0)
    assert haversine_m(est.lat, est.lon, tlat, tlon) < 15


def test_estimate_json_has_the_documented_keys() -> None:
    est = fuse_track([gps("d", 1.0, 0, 0)], resolution=9)[0]
    d = est.to_dict()
    assert {"device", "t", "lat", "lon", "radius68", "radius95", "h3", "sources", "indoor"} <= set(
        d
    )
    assert d["sources"] == ["gps"]
    import h3

    assert h3.get_resolution(d["h3"]) == 9


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 120.0),  # time step (s)
            st.floats(-3000.0, 3000.0),  # x
            st.floats(-3000.0, 3000.0),  # y
            st.floats(0.5, 4000.0),  # accuracy
            st.one_of(st.none(), st.floats(0.0, 60.0)),  # speed
            st.one_of(st.none(), st.floats(0.0, 360.0)),  # bearing
        ),
        min_size=1,
        max_size=60,
    )
)
def test_any_gps_sequence_keeps_the_filter_finite_and_positive(
    steps: list[tuple[float, float, float, float, float | None, float | None]],
) -> None:
    engine = FusionEngine()
    t = 1000.0
    for dt, x, y, acc, speed, bearing in steps:
        t += dt
        r = engine.process(gps("d", t, x, y, acc=acc, speed=speed, bearing=bearing))
        if isinstance(r, Estimate):
            assert math.isfinite(r.lat) and math.isfinite(r.lon)
            assert 0 < r.radius68 < r.radius95 < 1e7
    accepted = sum(engine.accepted.values())
    assert accepted + sum(engine.rejected.values()) == len(steps)

"""The synthetic courier-day generator: determinism, ordering, truth and noise models."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from geo.coords import haversine_matrix_m
from geo.errors import InvalidObservation
from geo.estimate import R68_PER_SIGMA, R95_PER_SIGMA
from geo.observations import BeaconSighting, GpsFix, WifiScan, observation_from_dict
from geo.registry import Registry
from geo.synthetic import (
    AT_COUNTER_M,
    BAD_KINDS,
    GPS_SIGMA_LOG_SD,
    WIFI_MAX_APS,
    WIFI_MIN_RSSI_DBM,
    Trace,
    World,
    make_world,
    simulate_day,
    write_trace,
)

START = 1_700_000_000.0


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(11, size_m=2000, restaurants=10, buildings=40)


@pytest.fixture(scope="module")
def trace(world: World) -> Trace:
    return simulate_day(world, couriers=6, duration_s=1800, seed=5, bad_rate=0.01)


def _dumps(records: list[dict[str, object]]) -> list[str]:
    return [json.dumps(r, sort_keys=True) for r in records]


def _truth_error_m(trace: Trace, fix: GpsFix) -> tuple[float, bool, str]:
    lat, lon, indoor, counter = trace.truth[fix.device].at(fix.t)
    err = float(haversine_matrix_m([lat], [lon], [fix.lat], [fix.lon])[0, 0])
    return err, indoor, counter


# --- determinism -----------------------------------------------------------------------


def test_world_is_deterministic(world: World) -> None:
    again = make_world(11, size_m=2000, restaurants=10, buildings=40)
    assert again.ap_bssid == world.ap_bssid
    assert again.registry().to_dict() == world.registry().to_dict()
    other = make_world(12, size_m=2000, restaurants=10, buildings=40)
    assert other.registry().to_dict() != world.registry().to_dict()


def test_same_seed_same_records_other_seed_different(world: World, trace: Trace) -> None:
    again = simulate_day(world, couriers=6, duration_s=1800, seed=5, bad_rate=0.01)
    assert _dumps(again.records) == _dumps(trace.records)
    assert again.bad == trace.bad
    for dev, track in trace.truth.items():
        assert np.array_equal(again.truth[dev].t, track.t)
        assert np.array_equal(again.truth[dev].lat, track.lat)
    other = simulate_day(world, couriers=6, duration_s=1800, seed=6, bad_rate=0.01)
    assert _dumps(other.records) != _dumps(trace.records)


def test_a_courier_does_not_depend_on_how_many_others_there_are(world: World) -> None:
    two = simulate_day(world, couriers=2, duration_s=300, seed=3)
    three = simulate_day(world, couriers=3, duration_s=300, seed=3)
    first = [r for r in three.records if r["device"] != "c002"]
    assert _dumps(first) == _dumps(two.records)


# --- stream structure --------------------------------------------------------------------


def test_stream_is_time_ordered(trace: Trace) -> None:
    obs_t = [o.t for o in trace.observations]
    assert obs_t == sorted(obs_t)
    per_device: dict[str, float] = {}
    for o in trace.observations:
        assert o.t >= per_device.get(o.device, -math.inf)
        per_device[o.device] = o.t
    assert set(per_device) == set(trace.truth) == {f"c{i:03d}" for i in range(6)}
    for o in trace.observations:
        assert START <= o.t < START + 1800
    # the raw stream is ordered too, except for the injected out-of-order records
    late = sum(1 for a, b in zip(trace.records, trace.records[1:], strict=False) if b["t"] < a["t"])
    assert late <= trace.bad["out_of_order"]
    kinds = Counter(o.kind for o in trace.observations)
    assert set(kinds) == {"gps", "wifi", "beacon", "cell"}


def test_bad_records_are_counted_exactly(trace: Trace) -> None:
    found = dict.fromkeys(BAD_KINDS, 0)
    reason_kind = {
        "non_finite": "nan_lat",
        "null_island": "null_island",
        "absurd_accuracy": "absurd_accuracy",
    }
    last: dict[str, tuple[float, str]] = {}
    good = 0
    for rec in trace.records:
        try:
            observation_from_dict(rec)
        except InvalidObservation as e:
            found[reason_kind[e.reason]] += 1
            continue
        text = json.dumps(rec, sort_keys=True)
        prev = last.get(rec["device"])
        if prev is not None and text == prev[1]:
            found["duplicate"] += 1
        elif prev is not None and rec["t"] < prev[0]:
            found["out_of_order"] += 1
        else:
            good += 1
            last[rec["device"]] = (rec["t"], text)
    assert found == trace.bad
    assert all(v > 0 for v in trace.bad.values())  # bad_rate=0.01 over ~20k records
    assert good == len(trace.observations)
    assert len(trace.records) == len(trace.observations) + sum(trace.bad.values())


# --- truth -------------------------------------------------------------------------------


def test_truth_is_sampled_at_every_observation_time(trace: Trace) -> None:
    for o in trace.observations:
        track = trace.truth[o.device]
        i = int(np.searchsorted(track.t, o.t))
        assert track.t[i] == o.t
        assert track.at(o.t) == (
            float(track.lat[i]),
            float(track.lon[i]),
            bool(track.indoor[i]),
            str(track.counter[i]),
        )
    track = trace.truth["c000"]
    assert np.all(np.diff(track.t) > 0)
    k = int(np.argmax(np.diff(track.t)))  # a long gap: a wait, linear = constant
    k = 10 if k == 0 else k
    mid = (track.t[k] + track.t[k + 1]) / 2
    lat, lon, _, _ = track.at(float(mid))
    assert lat == pytest.approx((track.lat[k] + track.lat[k + 1]) / 2, abs=1e-9)
    assert lon == pytest.approx((track.lon[k] + track.lon[k + 1]) / 2, abs=1e-9)
    lat_v, lon_v, _, _ = track.at_many([mid])
    assert lat_v[0] == pytest.approx(lat, abs=1e-12) and lon_v[0] == pytest.approx(lon, abs=1e-12)


def test_couriers_wait_at_counters_and_hear_the_beacon_there(world: World, trace: Trace) -> None:
    at_counter_s = 0.0
    heard = total = 0
    for track in trace.truth.values():
        dt = np.diff(track.t)
        at_counter_s += float(dt[track.counter[:-1] != ""].sum())
        # 'at counter' is within AT_COUNTER_M of that restaurant's counter beacon
        for k in np.nonzero(track.counter != "")[0][::50]:
            c = next(c for c in world.counters.values() if c.beacon_id == track.counter[k])
            d = haversine_matrix_m([track.lat[k]], [track.lon[k]], [c.lat], [c.lon])[0, 0]
            assert d <= AT_COUNTER_M + 1e-6
            assert track.indoor[k]
    for o in trace.observations:
        if isinstance(o, BeaconSighting):
            counter = trace.truth[o.device].at(o.t)[3]
            if counter:
                total += 1
                strongest = o.beacons[0]
                heard += strongest.id == counter and strongest.rssi is not None
    # six couriers, 30 minutes: every one of them picks something up
    assert at_counter_s > 6 * 60.0
    assert total > 200
    assert heard / total > 0.95
    # and counters are not heard from the street
    far = [
        o
        for o in trace.observations
        if isinstance(o, BeaconSighting) and not trace.truth[o.device].at(o.t)[2]
    ]
    assert len(far) < 0.2 * total


def test_world_registry_contains_the_deliberate_errors(world: World) -> None:
    reg = world.registry()
    moved, unknown = world.moved_aps, world.unknown_aps
    n = len(world.ap_bssid)
    assert 0.01 * n <= len(moved) <= 0.03 * n
    assert 0.04 * n <= len(unknown) <= 0.06 * n
    assert not set(unknown) & set(reg.wifi)
    index = {b: i for i, b in enumerate(world.ap_bssid)}
    for b in moved:
        x, y = world.ap_xyz[index[b], :2]
        lat, lon = world.frame.to_latlon(float(x), float(y))
        ap = reg.wifi[b]
        d = haversine_matrix_m([lat], [lon], [ap.lat], [ap.lon])[0, 0]
        assert 480.0 <= d <= 5020.0
    assert set(world.hotspot_bssid) <= set(reg.wifi)
    assert all(a.tx_power is None and a.path_loss is None for a in reg.wifi.values())
    assert set(reg.beacons) == {c.beacon_id for c in world.counters.values()}
    assert all(-64 <= b.tx_power <= -54 for b in reg.beacons.values())
    assert len(reg.cells) >= 4
    # per-AP truth: tx ~ N(-40, 4), path loss in [2.7, 3.3]
    assert abs(float(np.mean(world.ap_tx)) + 40.0) < 0.5
    assert 3.0 < float(np.std(world.ap_tx)) < 5.0
    assert world.ap_path_loss.min() >= 2.7 and world.ap_path_loss.max() <= 3.3


# --- sensor models -----------------------------------------------------------------------


def test_gps_errors_follow_the_declared_model(trace: Trace) -> None:
    errs, accs, indoor = [], [], []
    for o in trace.observations:
        if isinstance(o, GpsFix):
            e, inside, _ = _truth_error_m(trace, o)
            errs.append(e)
            accs.append(o.accuracy)
            indoor.append(inside)
    err, acc, ind = np.array(errs), np.array(accs), np.array(indoor)
    out = ~ind
    # A 2-D Gaussian with sigma = accuracy/1.5096 times a lognormal(0, 0.25) factor puts
    # E[1 - exp(-1.5096^2 / (2 f^2))] ~ 0.66 inside the 68 % radius and ~0.92 inside the
    # 95 % one; multipath jumps add a thin far tail.
    f = np.exp(np.random.default_rng(0).normal(0.0, GPS_SIGMA_LOG_SD, 200_000))
    p68 = float(np.mean(1 - np.exp(-(R68_PER_SIGMA**2) / (2 * f**2))))
    p95 = float(np.mean(1 - np.exp(-(R95_PER_SIGMA**2) / (2 * f**2))))
    assert 0.64 < p68 < 0.68 and 0.91 < p95 < 0.95
    in68 = float(np.mean(err[out] <= acc[out]))
    in95 = float(np.mean(err[out] <= acc[out] * R95_PER_SIGMA / R68_PER_SIGMA))
    assert p68 - 0.08 < in68 < p68 + 0.08
    assert p95 - 0.06 < in95 < p95 + 0.04
    assert acc[out].min() >= 3.0 and acc[out].max() <= 30.0
    assert float(np.mean(err[out] > 100.0)) < 0.02  # multipath: rare but present in big runs
    # indoors: rare, vague (20-60 m) and worse than declared
    assert acc[ind].min() >= 20.0 and acc[ind].max() <= 60.0
    assert float(np.mean(err[ind] <= acc[ind])) < in68


def test_gps_errors_are_time_correlated(trace: Trace) -> None:
    fixes = [o for o in trace.observations if isinstance(o, GpsFix) and o.device == "c000"]
    ex, ts = [], []
    for o in fixes:
        lat, lon, indoor, _ = trace.truth[o.device].at(o.t)
        if not indoor:
            ex.append((o.lon - lon) * math.cos(math.radians(lat)) * 111_195.0 / (o.accuracy))
            ts.append(o.t)
    e, t = np.array(ex), np.array(ts)
    consecutive = np.nonzero(np.diff(t) < 1.5)[0]
    r = np.corrcoef(e[consecutive], e[consecutive + 1])[0, 1]
    assert r > 0.4  # 70 % of the variance is a Gauss-Markov bias with tau 30-60 s


def test_indoor_phases_have_few_or_no_gps_fixes(trace: Trace) -> None:
    indoor_s = outdoor_s = 0.0
    for track in trace.truth.values():
        dt = np.diff(track.t)
        indoor_s += float(dt[track.indoor[:-1]].sum())
        outdoor_s += float(dt[~track.indoor[:-1]].sum())
    n_in = n_out = 0
    deep = 0
    for o in trace.observations:
        if isinstance(o, GpsFix):
            track = trace.truth[o.device]
            i = int(np.searchsorted(track.t, o.t))
            if track.indoor[i]:
                n_in += 1
                deep += track.phase[i] in ("lift", "handover")
            else:
                n_out += 1
    assert indoor_s > 0.2 * (indoor_s + outdoor_s)
    assert n_in / indoor_s < 0.15
    assert n_out / outdoor_s > 0.95
    assert deep < 0.05 * max(1, n_in)


def test_wifi_scans_follow_the_model(trace: Trace) -> None:
    sizes_out = []
    for o in trace.observations:
        if isinstance(o, WifiScan):
            assert 1 <= len(o.aps) <= WIFI_MAX_APS
            rssi = [r.rssi if r.rssi is not None else -math.inf for r in o.aps]
            assert all(r >= WIFI_MIN_RSSI_DBM for r in rssi)
            assert rssi == sorted(rssi, reverse=True)
            if not trace.truth[o.device].at(o.t)[2]:
                sizes_out.append(len(o.aps))
    assert 5 <= float(np.median(sizes_out)) <= 20
    scans = [o.t for o in trace.observations if isinstance(o, WifiScan) and o.device == "c001"]
    gaps = np.diff(scans)
    assert gaps.min() >= 5.0 - 1e-3 and gaps.max() <= 20.0 + 1e-3  # missing = nothing heard


def test_write_trace_round_trips(tmp_path: Path, world: World) -> None:
    small = simulate_day(world, couriers=2, duration_s=300, seed=1, bad_rate=0.05)
    assert small.bad["nan_lat"] + small.bad["null_island"] + small.bad["absurd_accuracy"] > 0
    obs_path, reg_path = write_trace(small, world, tmp_path / "out")
    lines = obs_path.read_text().splitlines()
    assert len(lines) == len(small.records)
    back = [json.loads(line) for line in lines]
    assert _dumps(back) == _dumps(small.records)
    reg = Registry.load(reg_path)
    assert reg.to_dict() == world.registry().to_dict()

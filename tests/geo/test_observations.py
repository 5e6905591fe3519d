from __future__ import annotations

import math
from typing import Any

import pytest

from geo.errors import InvalidObservation
from geo.observations import (
    BeaconSighting,
    CellObservation,
    GpsFix,
    WifiScan,
    observation_from_dict,
    observation_to_dict,
)

GPS: dict[str, Any] = {
    "device": "c1",
    "t": 100.0,
    "kind": "gps",
    "lat": 52.5,
    "lon": 13.4,
    "accuracy": 8.0,
    "speed": 3.0,
    "bearing": 370.0,
}


def test_gps_parses_and_normalises_bearing() -> None:
    obs = observation_from_dict(GPS)
    assert isinstance(obs, GpsFix)
    assert (obs.lat, obs.lon, obs.accuracy, obs.speed) == (52.5, 13.4, 8.0, 3.0)
    assert obs.bearing == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"lat": math.nan}, "non_finite"),
        ({"lon": math.inf}, "non_finite"),
        ({"lat": 91.0}, "out_of_range"),
        ({"lon": -181.0}, "out_of_range"),
        ({"lat": 0.0, "lon": 0.0}, "null_island"),
        ({"accuracy": 0.0}, "absurd_accuracy"),
        ({"accuracy": 99_999.0}, "absurd_accuracy"),
        ({"speed": 500.0}, "absurd_speed"),
        ({"lat": "52.5"}, "bad_type"),
        ({"lat": True}, "bad_type"),
        ({"lat": None}, "missing_field"),
        ({"t": -1.0}, "bad_time"),
        ({"device": ""}, "bad_id"),
        ({"kind": "lidar"}, "unknown_kind"),
    ],
)
def test_gps_rejections_have_reasons(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidObservation) as e:
        observation_from_dict({**GPS, **change})
    assert e.value.reason == reason


def test_non_object_is_rejected() -> None:
    with pytest.raises(InvalidObservation) as e:
        observation_from_dict([1, 2])
    assert e.value.reason == "bad_type"


def test_scans_parse_and_round_trip() -> None:
    wifi = {
        "device": "d",
        "t": 1.0,
        "kind": "wifi",
        "aps": [{"bssid": "AA:BB:CC:00:11:22", "rssi": -60}],
    }
    beacon = {"device": "d", "t": 2.0, "kind": "beacon", "beacons": [{"id": "b1", "rssi": -70}]}
    cell = {"device": "d", "t": 3.0, "kind": "cell", "cells": [{"id": "262-1-5", "rssi": None}]}
    w, b, c = (observation_from_dict(x) for x in (wifi, beacon, cell))
    assert isinstance(w, WifiScan) and w.aps[0].id == "aa:bb:cc:00:11:22"
    assert isinstance(b, BeaconSighting) and b.beacons[0].rssi == -70
    assert isinstance(c, CellObservation) and c.cells[0].rssi is None
    for o in (w, b, c, observation_from_dict(GPS)):
        assert observation_from_dict(observation_to_dict(o)) == o


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"device": "d", "t": 1.0, "kind": "wifi", "aps": []}, "empty_scan"),
        ({"device": "d", "t": 1.0, "kind": "wifi"}, "missing_field"),
        (
            {"device": "d", "t": 1.0, "kind": "wifi", "aps": [{"bssid": "x", "rssi": 20}]},
            "rssi_out_of_range",
        ),
        ({"device": "d", "t": 1.0, "kind": "wifi", "aps": [{"bssid": "x"}]}, "missing_field"),
        (
            {"device": "d", "t": 1.0, "kind": "beacon", "beacons": [{"id": 5, "rssi": -50}]},
            "bad_id",
        ),
        ({"device": "d", "t": 1.0, "kind": "beacon", "beacons": ["b1"]}, "bad_type"),
        (
            {
                "device": "d",
                "t": 1.0,
                "kind": "cell",
                "cells": [{"id": str(i), "rssi": None} for i in range(300)],
            },
            "too_many_readings",
        ),
    ],
)
def test_scan_rejections(record: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidObservation) as e:
        observation_from_dict(record)
    assert e.value.reason == reason

"""Raw observations from phones: GPS fixes, Wi-Fi scans, beacon sightings, cell observations.

These are the framework-free types every other package uses, plus the conversion
from/to the JSON observation format (one object per line in ``OBSERVATIONS.jsonl``)::

    {"device": "c1", "t": 1700000000.0, "kind": "gps", "lat": 52.5, "lon": 13.4,
     "accuracy": 8.0, "speed": 4.2, "bearing": 90.0}
    {"device": "c1", "t": ..., "kind": "wifi", "aps": [{"bssid": "aa:..", "rssi": -61}]}
    {"device": "c1", "t": ..., "kind": "beacon", "beacons": [{"id": "b1", "rssi": -70}]}
    {"device": "c1", "t": ..., "kind": "cell", "cells": [{"id": "262-1-5-77", "rssi": null}]}

``accuracy`` is the 68 % horizontal radius in metres, as Android reports it.
Parsing validates everything and raises :class:`~geo.errors.InvalidObservation` with a
machine-readable reason; nothing here guesses or silently repairs input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from geo.coords import as_float, validate_latlon
from geo.errors import InvalidCoordinate, InvalidObservation

Kind = Literal["gps", "wifi", "beacon", "cell"]
KINDS: tuple[Kind, ...] = get_args(Kind)

MAX_GPS_ACCURACY_M = 5_000.0
"""Fixes reporting a worse 68 % radius than this carry no useful position."""
MAX_SPEED_MPS = 90.0
"""Faster than any delivery vehicle (324 km/h); a reported speed above it is broken."""
RSSI_RANGE_DBM = (-130.0, 0.0)
MAX_READINGS = 256
MAX_ID_LEN = 128


@dataclass(frozen=True, slots=True)
class GpsFix:
    """A satellite fix. ``accuracy`` is the 68 % radius in metres."""

    device: str
    t: float
    lat: float
    lon: float
    accuracy: float
    speed: float | None = None
    bearing: float | None = None
    kind: Literal["gps"] = "gps"


@dataclass(frozen=True, slots=True)
class Reading:
    """One station heard in a scan: its id (BSSID, beacon id, cell id) and RSSI in dBm."""

    id: str
    rssi: float | None


@dataclass(frozen=True, slots=True)
class WifiScan:
    device: str
    t: float
    aps: tuple[Reading, ...]
    kind: Literal["wifi"] = "wifi"


@dataclass(frozen=True, slots=True)
class BeaconSighting:
    device: str
    t: float
    beacons: tuple[Reading, ...]
    kind: Literal["beacon"] = "beacon"


@dataclass(frozen=True, slots=True)
class CellObservation:
    device: str
    t: float
    cells: tuple[Reading, ...]
    kind: Literal["cell"] = "cell"


Observation = GpsFix | WifiScan | BeaconSighting | CellObservation


def _number(d: Mapping[str, Any], key: str, *, required: bool = True) -> float | None:
    if key not in d or d[key] is None:
        if required:
            raise InvalidObservation("missing_field", f"missing field {key!r}")
        return None
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidObservation("bad_type", f"field {key!r} must be a number, got {v!r}")
    f = as_float(v)
    if not math.isfinite(f):
        got = v if isinstance(v, float) else "an integer too large for a float"
        raise InvalidObservation("non_finite", f"field {key!r} must be finite, got {got}")
    return f


def _identifier(v: Any, what: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise InvalidObservation("bad_id", f"{what} must be a non-empty string, got {v!r}")
    if len(v) > MAX_ID_LEN:
        raise InvalidObservation("bad_id", f"{what} longer than {MAX_ID_LEN} characters")
    return v.strip()


def _readings(
    d: Mapping[str, Any], key: str, id_key: str, *, rssi_required: bool
) -> tuple[Reading, ...]:
    raw = d.get(key)
    if not isinstance(raw, list):
        raise InvalidObservation("missing_field", f"field {key!r} must be a list")
    if not raw:
        raise InvalidObservation("empty_scan", f"field {key!r} is empty")
    if len(raw) > MAX_READINGS:
        raise InvalidObservation("too_many_readings", f"{key!r} has more than {MAX_READINGS}")
    out: list[Reading] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise InvalidObservation("bad_type", f"{key}[{i}] must be an object")
        ident = _identifier(item.get(id_key), f"{key}[{i}].{id_key}")
        if key == "aps":
            ident = ident.lower()
        rssi = _number(item, "rssi", required=rssi_required)
        if rssi is not None and not RSSI_RANGE_DBM[0] <= rssi <= RSSI_RANGE_DBM[1]:
            raise InvalidObservation(
                "rssi_out_of_range", f"{key}[{i}].rssi {rssi} outside {RSSI_RANGE_DBM} dBm"
            )
        out.append(Reading(ident, rssi))
    return tuple(out)


def observation_from_dict(d: Any) -> Observation:
    """Validate one JSON object and build the matching observation.

    Raises :class:`InvalidObservation` (reasons such as ``missing_field``,
    ``non_finite``, ``out_of_range``, ``null_island``, ``absurd_accuracy``,
    ``unknown_kind``) when the object cannot be used.
    """
    if not isinstance(d, Mapping):
        raise InvalidObservation("bad_type", "an observation must be a JSON object")
    device = _identifier(d.get("device"), "device")
    t = _number(d, "t")
    assert t is not None
    if t < 0:
        raise InvalidObservation("bad_time", f"timestamp {t} is negative")
    kind = d.get("kind")
    if kind == "gps":
        lat = _number(d, "lat")
        lon = _number(d, "lon")
        assert lat is not None and lon is not None
        try:
            validate_latlon(lat, lon)
        except InvalidCoordinate as e:
            raise InvalidObservation(e.reason, str(e)) from e
        acc = _number(d, "accuracy")
        assert acc is not None
        if not 0.0 < acc <= MAX_GPS_ACCURACY_M:
            raise InvalidObservation(
                "absurd_accuracy", f"accuracy {acc} m outside (0, {MAX_GPS_ACCURACY_M}]"
            )
        speed = _number(d, "speed", required=False)
        if speed is not None and not 0.0 <= speed <= MAX_SPEED_MPS:
            raise InvalidObservation("absurd_speed", f"speed {speed} m/s outside [0, 90]")
        bearing = _number(d, "bearing", required=False)
        if bearing is not None:
            bearing %= 360.0
        return GpsFix(device, t, lat, lon, acc, speed, bearing)
    if kind == "wifi":
        return WifiScan(device, t, _readings(d, "aps", "bssid", rssi_required=True))
    if kind == "beacon":
        return BeaconSighting(device, t, _readings(d, "beacons", "id", rssi_required=True))
    if kind == "cell":
        return CellObservation(device, t, _readings(d, "cells", "id", rssi_required=False))
    raise InvalidObservation("unknown_kind", f"kind must be one of {KINDS}, got {kind!r}")


def observation_to_dict(obs: Observation) -> dict[str, Any]:
    """The JSON form of an observation (inverse of :func:`observation_from_dict`)."""
    base: dict[str, Any] = {"device": obs.device, "t": obs.t, "kind": obs.kind}
    if isinstance(obs, GpsFix):
        base.update(lat=obs.lat, lon=obs.lon, accuracy=obs.accuracy)
        if obs.speed is not None:
            base["speed"] = obs.speed
        if obs.bearing is not None:
            base["bearing"] = obs.bearing
    elif isinstance(obs, WifiScan):
        base["aps"] = [{"bssid": r.id, "rssi": r.rssi} for r in obs.aps]
    elif isinstance(obs, BeaconSighting):
        base["beacons"] = [{"id": r.id, "rssi": r.rssi} for r in obs.beacons]
    else:
        base["cells"] = [{"id": r.id, "rssi": r.rssi} for r in obs.cells]
    return base

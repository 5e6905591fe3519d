"""Registries of radio stations with known positions: Wi-Fi APs, BLE beacons, cell towers.

File format (``REGISTRY.json``; extra fields are kept when known, ignored otherwise)::

    {"wifi":    [{"bssid", "lat", "lon", ...}],
     "beacons": [{"id", "lat", "lon", "tx_power"}],
     "cells":   [{"id", "lat", "lon", "range"}]}

``tx_power`` is the RSSI (dBm) measured at 1 m; ``range`` is the tower's coverage radius
in metres. Learned Wi-Fi entries also carry ``radius`` (uncertainty of the AP position,
metres), ``samples``, ``tx_power``/``path_loss`` (fitted path-loss model) and ``moved``
(the sightings disagree: do not trust this AP).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geo.coords import as_float, validate_latlon
from geo.errors import GeoError, InvalidCoordinate

DEFAULT_WIFI_TX_POWER = -40.0
"""Typical RSSI at 1 m of an indoor AP (dBm)."""
DEFAULT_WIFI_PATH_LOSS = 3.0
"""Typical indoor/urban log-distance exponent for Wi-Fi."""
DEFAULT_BEACON_PATH_LOSS = 2.0


class RegistryError(GeoError):
    """A registry file or entry that cannot be used."""


@dataclass(slots=True)
class WifiAp:
    bssid: str
    lat: float
    lon: float
    tx_power: float | None = None
    path_loss: float | None = None
    radius: float = 0.0
    samples: int = 0
    moved: bool = False


@dataclass(slots=True)
class Beacon:
    id: str
    lat: float
    lon: float
    tx_power: float
    path_loss: float = DEFAULT_BEACON_PATH_LOSS


@dataclass(slots=True)
class CellTower:
    id: str
    lat: float
    lon: float
    range: float


def _num(entry: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    v = entry.get(key, default)
    if v is None or isinstance(v, bool) or not isinstance(v, int | float):
        raise RegistryError("bad_entry", f"{where}: {key!r} must be a number, got {v!r}")
    f = as_float(v)
    if not math.isfinite(f):
        raise RegistryError("bad_entry", f"{where}: {key!r} must be finite")
    return f


def _pos(entry: Mapping[str, Any], where: str) -> tuple[float, float]:
    lat, lon = _num(entry, "lat", where), _num(entry, "lon", where)
    try:
        validate_latlon(lat, lon)
    except InvalidCoordinate as e:
        raise RegistryError("bad_entry", f"{where}: {e}") from e
    return lat, lon


def _ident(entry: Mapping[str, Any], key: str, where: str) -> str:
    v = entry.get(key)
    if not isinstance(v, str) or not v.strip():
        raise RegistryError("bad_entry", f"{where}: {key!r} must be a non-empty string")
    return v.strip()


@dataclass(slots=True)
class Registry:
    """Stations by id. Mutable: learning adds and updates entries."""

    wifi: dict[str, WifiAp] = field(default_factory=dict)
    beacons: dict[str, Beacon] = field(default_factory=dict)
    cells: dict[str, CellTower] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Registry:
        """Build from the JSON form; raises :class:`RegistryError` naming the bad entry."""
        if not isinstance(data, Mapping):
            raise RegistryError("bad_file", "a registry must be a JSON object")
        reg = cls()
        for i, e in enumerate(_entries(data, "wifi")):
            where = f"wifi[{i}]"
            bssid = _ident(e, "bssid", where).lower()
            lat, lon = _pos(e, where)
            reg.wifi[bssid] = WifiAp(
                bssid,
                lat,
                lon,
                tx_power=_opt(e, "tx_power", where),
                path_loss=_opt(e, "path_loss", where),
                radius=_num(e, "radius", where, 0.0),
                samples=int(_num(e, "samples", where, 0)),
                moved=bool(e.get("moved", False)),
            )
        for i, e in enumerate(_entries(data, "beacons")):
            where = f"beacons[{i}]"
            ident = _ident(e, "id", where)
            lat, lon = _pos(e, where)
            reg.beacons[ident] = Beacon(
                ident,
                lat,
                lon,
                tx_power=_num(e, "tx_power", where),
                path_loss=_num(e, "path_loss", where, DEFAULT_BEACON_PATH_LOSS),
            )
        for i, e in enumerate(_entries(data, "cells")):
            where = f"cells[{i}]"
            ident = _ident(e, "id", where)
            lat, lon = _pos(e, where)
            rng = _num(e, "range", where)
            if rng <= 0:
                raise RegistryError("bad_entry", f"{where}: range must be positive")
            reg.cells[ident] = CellTower(ident, lat, lon, rng)
        return reg

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        def clean(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if v is not None}

        return {
            "wifi": [clean(asdict(a)) for a in self.wifi.values()],
            "beacons": [asdict(b) for b in self.beacons.values()],
            "cells": [asdict(c) for c in self.cells.values()],
        }

    @classmethod
    def load(cls, path: str | Path) -> Registry:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise RegistryError("bad_file", f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a registry."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        tmp.replace(p)


def _entries(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    raw = data.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(e, Mapping) for e in raw):
        raise RegistryError("bad_file", f"registry {key!r} must be a list of objects")
    return raw


def _opt(entry: Mapping[str, Any], key: str, where: str) -> float | None:
    return None if entry.get(key) is None else _num(entry, key, where)

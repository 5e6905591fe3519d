"""Position measurements (what one source says) and estimates (what fusion concludes).

Uncertainty convention: both carry an isotropic Gaussian 1-sigma per axis (metres).
The radius that contains the truth with probability p for such a 2-D Gaussian is
``sigma * sqrt(-2 ln(1 - p))``: 1.5096 sigma for 68 % (Android's ``accuracy``) and
2.4477 sigma for 95 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from geo.observations import Kind

R68_PER_SIGMA = math.sqrt(-2.0 * math.log(1.0 - 0.68))
R95_PER_SIGMA = math.sqrt(-2.0 * math.log(1.0 - 0.95))


def sigma_from_r68(radius68: float) -> float:
    """Per-axis sigma of an isotropic Gaussian whose 68 % radius is ``radius68``."""
    return radius68 / R68_PER_SIGMA


@dataclass(frozen=True, slots=True)
class PositionFix:
    """A position measurement derived from one observation by a source model.

    ``sigma`` is the per-axis 1-sigma in metres. ``near`` names the station the device
    is next to when the source is a proximity source (a beacon at a pickup counter).
    ``indoor`` is the source's own hint (beacons are indoors; a weak GPS fix suggests
    indoors), ``None`` when it has no opinion. ``range_m`` is set by proximity fixes
    (one beacon heard): the fix is the station's position and the device is on a ring of
    about this RSSI-implied radius around it.
    """

    lat: float
    lon: float
    sigma: float
    kind: Kind
    stations: int = 1
    unknown: int = 0
    excluded: tuple[str, ...] = ()
    near: str | None = None
    indoor: bool | None = None
    range_m: float | None = None

    @property
    def radius68(self) -> float:
        return self.sigma * R68_PER_SIGMA

    @property
    def radius95(self) -> float:
        return self.sigma * R95_PER_SIGMA


@dataclass(frozen=True, slots=True)
class Estimate:
    """The fused position of one device after an update.

    ``radius68``/``radius95`` contain the true position with 68 % / 95 % probability.
    ``velocity`` is (east, north) in m/s. ``sources`` are the observation kinds that
    contributed to the filter since it was (re)initialised, most recent first.
    """

    device: str
    t: float
    lat: float
    lon: float
    radius68: float
    radius95: float
    velocity: tuple[float, float]
    sources: tuple[Kind, ...]
    indoor: bool | None
    h3: str
    near: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def speed(self) -> float:
        return math.hypot(*self.velocity)

    def to_dict(self) -> dict[str, Any]:
        """The ``ESTIMATES.jsonl`` form (stable keys relied on by outside tools)."""
        d: dict[str, Any] = {
            "device": self.device,
            "t": self.t,
            "lat": round(self.lat, 7),
            "lon": round(self.lon, 7),
            "radius68": round(self.radius68, 2),
            "radius95": round(self.radius95, 2),
            "h3": self.h3,
            "sources": list(self.sources),
            "indoor": self.indoor,
            "speed": round(self.speed, 2),
            "velocity": [round(self.velocity[0], 3), round(self.velocity[1], 3)],
        }
        if self.near is not None:
            d["near"] = self.near
        return d

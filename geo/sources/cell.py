"""Cell towers: a coarse position from the towers a phone is attached to or hears.

A tower's registry ``range`` is its coverage radius. A device uniformly inside a disc of
radius R has per-axis sigma R/2, but coverage is no hard disc (sectors, overshoot, the
tower position is itself the centroid of sightings), so each tower counts as
``coverage_sigma * R`` per axis (0.6 by default). Several towers are averaged with
weights ``10^((rssi - strongest) / 20) / sigma_i^2`` (the louder and the smaller the
cell, the more it says); the sigma of that mean treats the towers as independent, plus
half the weighted spread of the tower positions, since hearing towers far apart means
the device is somewhere between, not at their mean.
"""

from __future__ import annotations

import math
from typing import Literal

from geo.estimate import PositionFix
from geo.observations import CellObservation, Observation
from geo.registry import Registry
from geo.sources.base import Unlocatable
from geo.sources.wifi import M_PER_DEG


class CellSource:
    """Locates a cell observation against the registry's towers.

    ``coverage_sigma`` per-axis sigma as a fraction of a tower's range;
    ``min_sigma_m`` floor (metres); ``missing_weight`` relative weight of a tower
    reported without RSSI (the strongest tower with RSSI has 1).
    """

    kind: Literal["cell"] = "cell"

    def __init__(
        self,
        registry: Registry,
        *,
        coverage_sigma: float = 0.6,
        min_sigma_m: float = 50.0,
        missing_weight: float = 0.3,
    ) -> None:
        self.registry = registry
        self.coverage_sigma = coverage_sigma
        self.min_sigma_m = min_sigma_m
        self.missing_weight = missing_weight

    def locate(self, obs: Observation) -> PositionFix:
        """Weighted tower position; raises :class:`Unlocatable` when no tower is known."""
        if not isinstance(obs, CellObservation):
            raise Unlocatable("wrong_kind", f"CellSource cannot locate a {obs.kind} observation")
        towers = self.registry.cells
        unknown = 0
        found: list[tuple[float, float, float, float | None]] = []
        seen: set[str] = set()
        for r in obs.cells:
            if r.id in seen:
                continue
            seen.add(r.id)
            t = towers.get(r.id)
            if t is None:
                unknown += 1
                continue
            found.append((t.lat, t.lon, self.coverage_sigma * t.range, r.rssi))
        if not found:
            raise Unlocatable(
                "no_known_stations", f"none of {unknown} cells is in the registry", unknown=unknown
            )
        lat0, lon0 = found[0][0], found[0][1]
        mlon = M_PER_DEG * math.cos(math.radians(lat0))
        strongest = max((f[3] for f in found if f[3] is not None), default=None)
        pts: list[tuple[float, float, float, float]] = []
        for lat, lon, sig, rssi in found:
            rel = (
                self.missing_weight
                if rssi is None or strongest is None
                else 10.0 ** ((rssi - strongest) / 20.0)
            )
            dlon = (lon - lon0 + 540.0) % 360.0 - 180.0
            pts.append((dlon * mlon, (lat - lat0) * M_PER_DEG, sig * sig, rel / (sig * sig)))
        sw = sum(p[3] for p in pts)
        x = sum(p[3] * p[0] for p in pts) / sw
        y = sum(p[3] * p[1] for p in pts) / sw
        var = sum(p[3] * p[3] * p[2] for p in pts) / (sw * sw)
        spread = sum(p[3] * ((p[0] - x) ** 2 + (p[1] - y) ** 2) for p in pts) / sw
        sigma = max(self.min_sigma_m, math.sqrt(var + 0.25 * spread))
        return PositionFix(
            lat0 + y / M_PER_DEG,
            (lon0 + x / mlon + 540.0) % 360.0 - 180.0,
            sigma,
            "cell",
            stations=len(pts),
            unknown=unknown,
        )

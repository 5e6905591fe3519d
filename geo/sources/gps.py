"""GPS: the fix is its own measurement; the reported accuracy is its 68 % radius."""

from __future__ import annotations

from typing import Literal

from geo.estimate import PositionFix, sigma_from_r68
from geo.observations import GpsFix, Observation
from geo.sources.base import Unlocatable

INDOOR_ACCURACY_M = 25.0
"""Phones report 68 % radii above this mostly indoors or in deep urban canyons."""


class GpsSource:
    """Trusts the reported accuracy, with a floor (no phone is better than ~1 m)."""

    kind: Literal["gps"] = "gps"

    def __init__(self, min_sigma_m: float = 1.0) -> None:
        self.min_sigma_m = min_sigma_m

    def locate(self, obs: Observation) -> PositionFix:
        if not isinstance(obs, GpsFix):
            raise Unlocatable("wrong_kind", f"GpsSource cannot locate a {obs.kind} observation")
        return PositionFix(
            obs.lat,
            obs.lon,
            max(self.min_sigma_m, sigma_from_r68(obs.accuracy)),
            "gps",
            indoor=obs.accuracy > INDOOR_ACCURACY_M,
        )

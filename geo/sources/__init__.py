"""Source models: one per signal kind, each turning an observation into a position fix."""

from geo.sources.base import SourceModel, Unlocatable
from geo.sources.gps import GpsSource

__all__ = ["GpsSource", "SourceModel", "Unlocatable"]

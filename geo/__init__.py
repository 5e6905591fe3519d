"""geo: from noisy phone signals to one position with an honest uncertainty, on H3.

Imports nothing else of ours. See docs/architecture.md. The names below are the
public API; everything else is importable from its module.
"""

from geo.errors import GeoError, InvalidCoordinate, InvalidObservation
from geo.estimate import Estimate, PositionFix
from geo.fusion import FusionConfig, FusionEngine, Rejected, fuse_track
from geo.observations import (
    BeaconSighting,
    CellObservation,
    GpsFix,
    Observation,
    Reading,
    WifiScan,
    observation_from_dict,
    observation_to_dict,
)
from geo.registry import Registry

__all__ = [
    "BeaconSighting",
    "CellObservation",
    "Estimate",
    "FusionConfig",
    "FusionEngine",
    "GeoError",
    "GpsFix",
    "InvalidCoordinate",
    "InvalidObservation",
    "Observation",
    "PositionFix",
    "Reading",
    "Registry",
    "Rejected",
    "WifiScan",
    "fuse_track",
    "observation_from_dict",
    "observation_to_dict",
]

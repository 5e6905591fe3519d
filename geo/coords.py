"""Coordinate checks, great-circle distances and a local metric frame.

The fusion filter works in metres on a local tangent plane (east, north) around a
reference point near the device; at city scale (tens of km) the equirectangular
projection used here is accurate to well under a metre per kilometre, far below
sensor noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from geo.errors import InvalidCoordinate

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG), metres."""

_NULL_ISLAND_M = 1_000.0


def as_float(v: float) -> float:
    """``float(v)``, with an integer too large for a float (JSON allows any number of
    digits; Python parses them exactly) as an infinity instead of ``OverflowError``, so
    the callers' finiteness checks reject it like any other non-finite value."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def validate_latlon(lat: float, lon: float, *, allow_null_island: bool = False) -> None:
    """Raise :class:`InvalidCoordinate` unless ``lat``/``lon`` is a usable position.

    Null island (0, 0) is what many broken GPS stacks report; it is rejected unless a
    caller explicitly allows it.
    """
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        raise InvalidCoordinate("not_a_number", f"lat/lon must be numbers, got {lat!r}, {lon!r}")
    if isinstance(lat, bool) or isinstance(lon, bool):
        raise InvalidCoordinate("not_a_number", "lat/lon must be numbers, not booleans")
    if not (math.isfinite(as_float(lat)) and math.isfinite(as_float(lon))):
        raise InvalidCoordinate("non_finite", f"lat/lon must be finite, got {lat}, {lon}")
    if not -90.0 <= lat <= 90.0:
        raise InvalidCoordinate("out_of_range", f"latitude {lat} outside [-90, 90]")
    if not -180.0 <= lon <= 180.0:
        raise InvalidCoordinate("out_of_range", f"longitude {lon} outside [-180, 180]")
    if not allow_null_island and haversine_m(lat, lon, 0.0, 0.0) < _NULL_ISLAND_M:
        raise InvalidCoordinate("null_island", f"position {lat}, {lon} is at null island")


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres on the mean-radius sphere."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def haversine_matrix_m(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Great-circle distances (metres) between N origins and M destinations, shape (N, M)."""
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))[:, None]
    l1 = np.radians(np.asarray(lon1, dtype=np.float64))[:, None]
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))[None, :]
    l2 = np.radians(np.asarray(lon2, dtype=np.float64))[None, :]
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    out: npt.NDArray[np.float64] = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))
    return out


@dataclass(frozen=True, slots=True)
class LocalFrame:
    """Equirectangular east/north metric frame around ``(lat0, lon0)``."""

    lat0: float
    lon0: float
    _m_per_deg_lat: float = field(init=False, repr=False, compare=False)
    _m_per_deg_lon: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Precomputed: the fusion hot path converts every fix through the frame.
        m_per_deg = math.radians(1.0) * EARTH_RADIUS_M
        object.__setattr__(self, "_m_per_deg_lat", m_per_deg)
        object.__setattr__(self, "_m_per_deg_lon", m_per_deg * math.cos(math.radians(self.lat0)))

    def to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        """(east, north) metres of a lat/lon relative to the frame origin."""
        dlon = (lon - self.lon0 + 540.0) % 360.0 - 180.0
        return dlon * self._m_per_deg_lon, (lat - self.lat0) * self._m_per_deg_lat

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        """Inverse of :meth:`to_xy`."""
        lon = self.lon0 + x / self._m_per_deg_lon
        lon = (lon + 540.0) % 360.0 - 180.0
        return self.lat0 + y / self._m_per_deg_lat, lon

    def to_xy_array(
        self, lat: npt.ArrayLike, lon: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Vectorised :meth:`to_xy`."""
        la = np.asarray(lat, dtype=np.float64)
        lo = np.asarray(lon, dtype=np.float64)
        dlon = (lo - self.lon0 + 540.0) % 360.0 - 180.0
        return dlon * self._m_per_deg_lon, (la - self.lat0) * self._m_per_deg_lat

    def to_latlon_array(
        self, x: npt.ArrayLike, y: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Vectorised :meth:`to_latlon`."""
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        lon = (self.lon0 + xa / self._m_per_deg_lon + 540.0) % 360.0 - 180.0
        return self.lat0 + ya / self._m_per_deg_lat, lon

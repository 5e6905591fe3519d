"""H3 helpers: point → cell, circle → covering cells, counts of points and entities per cell.

Names follow h3-py v4's ``x_to_y`` style. Cells are H3 strings throughout (what the
rest of the platform stores and sends); integer indexes are used internally where they
are faster.

Distances are on the mean-radius sphere (:data:`geo.coords.EARTH_RADIUS_M`). H3 cell
edges are great-circle arcs (straight lines in H3's gnomonic face projections, with
extra vertices where a cell crosses an icosahedron edge), so the point-to-boundary
distance used by :func:`cells_covering_circle` is exact spherical geometry rather than a
planar approximation; it stays correct at any radius, near the poles and across the
antimeridian.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import h3
import h3.api.basic_int as h3i
import numpy as np
import numpy.typing as npt

from geo.coords import EARTH_RADIUS_M, validate_latlon
from geo.errors import GeoError, InvalidCoordinate
from geo.estimate import R68_PER_SIGMA, Estimate

MIN_RES = 0
MAX_RES = 15

DEFAULT_MAX_CELLS = 100_000
"""Default cap on the cells one circle may cover (a 5 km radius at res 10 is ~5 300)."""

_NULL_ISLAND_M = 1_000.0
_HEX_AREA_PER_EDGE2 = 1.5 * math.sqrt(3.0)
"""Area of a regular hexagon over its edge length squared."""


class CellError(GeoError):
    """Bad input to an H3 helper: resolution, radius, confidence or a too-large request."""


def validate_res(res: int) -> int:
    """Return ``res`` if it is an H3 resolution (int 0..15), else raise :class:`CellError`."""
    if isinstance(res, bool) or not isinstance(res, int | np.integer):
        raise CellError("bad_resolution", f"H3 resolution must be an int, got {res!r}")
    if not MIN_RES <= res <= MAX_RES:
        raise CellError("bad_resolution", f"H3 resolution {res} outside [0, 15]")
    return int(res)


def validate_latlon_arrays(
    lats: npt.ArrayLike, lons: npt.ArrayLike, *, allow_null_island: bool = False
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Vectorised :func:`geo.coords.validate_latlon`: flat float64 arrays or a typed error.

    The error names the first offending index so a bad row in a batch can be found.
    """
    try:
        la = np.asarray(lats, dtype=np.float64).ravel()
        lo = np.asarray(lons, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise InvalidCoordinate("not_a_number", f"lat/lon arrays must be numeric: {e}") from e
    if la.shape != lo.shape:
        raise InvalidCoordinate("shape_mismatch", f"{la.size} latitudes but {lo.size} longitudes")
    bad = ~(np.isfinite(la) & np.isfinite(lo))
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidCoordinate("non_finite", f"point {i} is not finite: {la[i]}, {lo[i]}")
    bad = (np.abs(la) > 90.0) | (np.abs(lo) > 180.0)
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidCoordinate("out_of_range", f"point {i} out of range: {la[i]}, {lo[i]}")
    if not allow_null_island:
        p = np.radians(la)
        a = np.sin(p / 2) ** 2 + np.cos(p) * np.sin(np.radians(lo) / 2) ** 2
        d = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))
        bad = d < _NULL_ISLAND_M
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidCoordinate("null_island", f"point {i} is at null island")
    return la, lo


def latlng_to_cell(lat: float, lon: float, res: int) -> str:
    """The H3 cell (string) containing ``lat``/``lon`` at ``res``, after validating both."""
    validate_latlon(lat, lon)
    r = validate_res(res)
    return str(h3.latlng_to_cell(lat, lon, r))


def estimate_to_cell(estimate: Estimate, res: int) -> str:
    """The cell of an estimate's centre at ``res`` (``Estimate.h3`` has a fixed resolution)."""
    return latlng_to_cell(estimate.lat, estimate.lon, res)


def _unit_vectors(
    lat_deg: npt.NDArray[np.float64], lon_deg: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    la, lo = np.radians(lat_deg), np.radians(lon_deg)
    c = np.cos(la)
    return np.stack([c * np.cos(lo), c * np.sin(lo), np.sin(la)], axis=-1)


def _angle(u: npt.NDArray[np.float64], v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Angle (radians) between unit vectors, accurate for tiny angles too."""
    out: npt.NDArray[np.float64] = np.arctan2(
        np.linalg.norm(np.cross(u, v), axis=-1), np.einsum("ij,ij->i", u, v)
    )
    return out


def _arc_distances(
    p: npt.NDArray[np.float64], a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Angular distance (radians) from unit vector ``p`` to each great-circle arc a[i]→b[i]."""
    pa = np.broadcast_to(p, a.shape)
    end = np.minimum(_angle(pa, a), _angle(pa, b))
    n = np.cross(a, b)
    nn = np.linalg.norm(n, axis=-1)
    ok = nn > 1e-15
    n = n / np.where(ok, nn, 1.0)[:, None]
    s = np.einsum("ij,ij->i", pa, n)  # signed sine of distance to circle
    c = pa - s[:, None] * n  # projection of p onto the arc's great circle
    # The projection is on the arc when it lies between a and b (same side of both ends).
    on_arc = (
        ok
        & (np.einsum("ij,ij->i", np.cross(a, c), n) >= 0.0)
        & (np.einsum("ij,ij->i", np.cross(c, b), n) >= 0.0)
    )
    perp = np.arcsin(np.minimum(1.0, np.abs(s)))
    out: npt.NDArray[np.float64] = np.where(on_arc, np.minimum(perp, end), end)
    return out


def _boundary_distances_m(lat: float, lon: float, cells: list[str]) -> npt.NDArray[np.float64]:
    """Distance (metres) from ``lat``/``lon`` to each cell's boundary."""
    bounds = [h3.cell_to_boundary(c) for c in cells]
    sizes = np.fromiter((len(b) for b in bounds), dtype=np.intp, count=len(bounds))
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    flat = np.array([v for b in bounds for v in b], dtype=np.float64)
    verts = _unit_vectors(flat[:, 0], flat[:, 1])
    nxt = np.arange(len(flat)) + 1
    ends = starts + sizes - 1
    nxt[ends] = starts  # close each ring
    p = _unit_vectors(np.array([lat]), np.array([lon]))[0]
    d = _arc_distances(p, verts, verts[nxt])
    out: npt.NDArray[np.float64] = np.minimum.reduceat(d, starts) * EARTH_RADIUS_M
    return out


def cells_covering_circle(
    lat: float, lon: float, radius_m: float, res: int, *, max_cells: int = DEFAULT_MAX_CELLS
) -> frozenset[str]:
    """Every cell at ``res`` whose hexagon intersects the circle (centre, ``radius_m`` metres).

    Unlike "cells whose centre is inside", this never misses a cell that part of the
    circle lies in, which is what candidate search (couriers near a pickup, demand near
    an estimate) needs. Candidates come from ``grid_disk`` with ``k`` from the local cell
    size; a cell is kept when its boundary comes within ``radius_m`` of the centre (the
    containing cell always is). If any kept cell lies on the outermost ring, ``k`` grows
    and the search repeats: the kept cells are grid-connected, so an outer ring with none
    proves nothing further out intersects, even where pentagons distort the grid.

    Raises :class:`CellError` (reason ``too_many_cells``) when the circle would need more
    than ``max_cells`` cells, before doing the work.
    """
    center = latlng_to_cell(lat, lon, res)
    if isinstance(radius_m, bool) or not isinstance(radius_m, int | float):
        raise CellError("bad_radius", f"radius must be a number of metres, got {radius_m!r}")
    if not (math.isfinite(radius_m) and radius_m >= 0.0):
        raise CellError("bad_radius", f"radius must be finite and >= 0 m, got {radius_m}")
    if radius_m == 0.0:
        return frozenset((center,))
    radius = min(float(radius_m), math.pi * EARTH_RADIUS_M)  # beyond that: the whole sphere
    area = float(h3.cell_area(center, "m^2"))
    edge = math.sqrt(area / _HEX_AREA_PER_EDGE2)
    expected = math.pi * (radius + edge) ** 2 / area
    total = int(h3.get_num_cells(res))
    if min(expected, total) > max_cells:
        raise CellError(
            "too_many_cells",
            f"a {radius_m:.0f} m circle at res {res} needs about {expected:.0f} cells "
            f"(> max_cells={max_cells}); use a coarser resolution",
        )
    # Cells at grid distance k have centres >= 1.5 * edge * k apart in a regular hex grid;
    # a cell intersecting the circle has its centre within radius + edge.
    k = math.ceil((radius + edge) / (1.5 * edge)) + 1
    while True:
        disk = list(h3.grid_disk(center, k))
        dist = _boundary_distances_m(lat, lon, disk)
        kept = {c for c, d in zip(disk, dist, strict=True) if d <= radius}
        kept.add(center)
        if len(disk) >= total:
            break
        outer = set(disk).difference(h3.grid_disk(center, k - 1))
        if kept.isdisjoint(outer):
            break
        if len(kept) > max_cells:
            raise CellError(
                "too_many_cells", f"circle covers more than max_cells={max_cells} cells"
            )
        k += max(1, k // 2)
    if len(kept) > max_cells:
        raise CellError("too_many_cells", f"circle covers {len(kept)} > {max_cells} cells")
    return frozenset(kept)


def radius_for_confidence(estimate: Estimate, confidence: float) -> float:
    """Radius (metres) containing the true position with probability ``confidence``.

    0.68 and 0.95 return the estimate's own ``radius68``/``radius95``; other levels scale
    the isotropic Gaussian implied by ``radius68``.
    """
    if not (isinstance(confidence, int | float) and 0.0 < confidence < 1.0):
        raise CellError("bad_confidence", f"confidence must be in (0, 1), got {confidence!r}")
    if confidence == 0.95:
        return estimate.radius95
    if confidence == 0.68:
        return estimate.radius68
    sigma = estimate.radius68 / R68_PER_SIGMA
    return sigma * math.sqrt(-2.0 * math.log(1.0 - confidence))


def cells_for_estimate(
    estimate: Estimate,
    res: int,
    confidence: float = 0.95,
    *,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> frozenset[str]:
    """Cells the device is in with probability >= ``confidence``.

    The radius comes from :func:`radius_for_confidence`; covering (not centre-in) cells
    make the guarantee hold for the cells, not just for the circle.
    """
    radius = radius_for_confidence(estimate, confidence)
    return cells_covering_circle(estimate.lat, estimate.lon, radius, res, max_cells=max_cells)


def cell_counts(lats: npt.ArrayLike, lons: npt.ArrayLike, res: int) -> dict[str, int]:
    """Number of points per cell (demand or couriers per cell) for many points.

    h3-py 4.x has no vectorised ``latlng_to_cell`` (the 3.x ``unstable.vect`` module was
    dropped), so points are validated with numpy in one pass, indexed with the integer
    API (no per-point string allocation) and only the distinct cells become strings.
    """
    r = validate_res(res)
    la, lo = validate_latlon_arrays(lats, lons)
    counts = Counter(map(h3i.latlng_to_cell, la.tolist(), lo.tolist(), [r] * la.size))
    return {str(h3i.int_to_str(c)): n for c, n in counts.items()}


class CellAggregator:
    """Live counts of tracked entities (couriers, open orders) per cell at one resolution.

    Each entity is in at most one cell; :meth:`update` moves it, so counts never
    double-count an entity that reports twice. Coarser views come from :meth:`counts_at`
    by rolling cells up to their parents.
    """

    __slots__ = ("_cell_of", "_members", "res")

    def __init__(self, res: int) -> None:
        self.res = validate_res(res)
        self._cell_of: dict[str, str] = {}
        self._members: dict[str, set[str]] = {}

    def update(self, entity_id: str, lat: float, lon: float) -> tuple[str | None, str]:
        """Place ``entity_id`` at ``lat``/``lon``; returns (previous cell or None, new cell).

        An invalid position raises and leaves the entity where it was.
        """
        cell = latlng_to_cell(lat, lon, self.res)
        prev = self._cell_of.get(entity_id)
        if prev != cell:
            if prev is not None:
                self._discard(entity_id, prev)
            self._cell_of[entity_id] = cell
            self._members.setdefault(cell, set()).add(entity_id)
        return prev, cell

    def remove(self, entity_id: str) -> str | None:
        """Stop tracking ``entity_id``; returns the cell it was in (None if unknown)."""
        prev = self._cell_of.pop(entity_id, None)
        if prev is not None:
            self._discard(entity_id, prev)
        return prev

    def _discard(self, entity_id: str, cell: str) -> None:
        members = self._members[cell]
        members.discard(entity_id)
        if not members:
            del self._members[cell]  # keep memory proportional to occupied cells

    def counts(self) -> dict[str, int]:
        """Entities per occupied cell (a copy)."""
        return {c: len(m) for c, m in self._members.items()}

    def count(self, cell: str) -> int:
        """Entities currently in ``cell`` (0 for unknown or empty cells)."""
        return len(self._members.get(cell, ()))

    def entities_in(self, cell: str) -> frozenset[str]:
        """Entities currently in ``cell``."""
        return frozenset(self._members.get(cell, ()))

    def cell_of(self, entity_id: str) -> str | None:
        """The cell ``entity_id`` is in, or None if it is not tracked."""
        return self._cell_of.get(entity_id)

    def counts_at(self, res: int) -> dict[str, int]:
        """Counts rolled up to a coarser (or equal) resolution ``res`` via ``cell_to_parent``.

        H3 children do not tile their parent exactly, so near cell edges this can differ
        from indexing the raw positions at ``res``; it is consistent with :meth:`counts`.
        """
        r = validate_res(res)
        if r > self.res:
            raise CellError(
                "bad_resolution", f"cannot roll res {self.res} counts down to finer res {r}"
            )
        if r == self.res:
            return self.counts()
        out: dict[str, int] = {}
        for cell, members in self._members.items():
            parent = str(h3.cell_to_parent(cell, r))
            out[parent] = out.get(parent, 0) + len(members)
        return out

    def __len__(self) -> int:
        return len(self._cell_of)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._cell_of

    def __iter__(self) -> Iterator[str]:
        return iter(self._cell_of)

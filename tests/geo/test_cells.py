"""H3 helpers: validation, covering cells, counts and the live per-cell aggregator."""

from __future__ import annotations

import math
from collections import Counter

import h3
import numpy as np
import pytest

from geo.cells import (
    CellAggregator,
    CellError,
    cell_counts,
    cells_covering_circle,
    cells_for_estimate,
    estimate_to_cell,
    latlng_to_cell,
    radius_for_confidence,
    validate_latlon_arrays,
)
from geo.coords import LocalFrame, haversine_m
from geo.errors import GeoError, InvalidCoordinate
from geo.estimate import R68_PER_SIGMA, R95_PER_SIGMA, Estimate

BLR = (12.9716, 77.5946)


def make_estimate(
    lat: float, lon: float, radius68: float, radius95: float | None = None
) -> Estimate:
    return Estimate(
        device="d1",
        t=0.0,
        lat=lat,
        lon=lon,
        radius68=radius68,
        radius95=radius68 / R68_PER_SIGMA * R95_PER_SIGMA if radius95 is None else radius95,
        velocity=(0.0, 0.0),
        sources=("gps",),
        indoor=None,
        h3="",
    )


def boundary_distance_m(lat: float, lon: float, cell: str, per_edge: int = 200) -> float:
    """Independent check: min haversine distance to a densified cell boundary."""
    b = h3.cell_to_boundary(cell)
    best = math.inf
    for (la1, lo1), (la2, lo2) in zip(b, b[1:] + b[:1], strict=True):
        for t in np.linspace(0.0, 1.0, per_edge):
            best = min(best, haversine_m(lat, lon, la1 + t * (la2 - la1), lo1 + t * (lo2 - lo1)))
    return best


def sample_disk(
    lat: float, lon: float, radius_m: float, n: int, seed: int
) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    r = radius_m * np.sqrt(rng.uniform(0.0, 1.0, n)) * 0.999
    th = rng.uniform(0.0, 2 * np.pi, n)
    la, lo = LocalFrame(lat, lon).to_latlon_array(r * np.cos(th), r * np.sin(th))
    return list(zip(la.tolist(), lo.tolist(), strict=True))


# ---------------------------------------------------------------- point → cell


def test_latlng_to_cell_matches_h3() -> None:
    assert latlng_to_cell(*BLR, 9) == h3.latlng_to_cell(*BLR, 9)
    assert h3.get_resolution(latlng_to_cell(*BLR, 0)) == 0
    assert h3.get_resolution(latlng_to_cell(*BLR, 15)) == 15


@pytest.mark.parametrize("res", [-1, 16, 1.5, True, "9", None])
def test_bad_resolution_is_typed(res: object) -> None:
    with pytest.raises(CellError) as e:
        latlng_to_cell(*BLR, res)  # type: ignore[arg-type]
    assert e.value.reason == "bad_resolution"
    assert isinstance(e.value, GeoError)


@pytest.mark.parametrize(
    ("lat", "lon", "reason"),
    [
        (math.nan, 77.0, "non_finite"),
        (12.0, math.inf, "non_finite"),
        (91.0, 77.0, "out_of_range"),
        (12.0, -181.0, "out_of_range"),
        (0.0, 0.0, "null_island"),
    ],
)
def test_bad_coordinates_are_typed(lat: float, lon: float, reason: str) -> None:
    with pytest.raises(InvalidCoordinate) as e:
        latlng_to_cell(lat, lon, 9)
    assert e.value.reason == reason


def test_estimate_to_cell_uses_the_requested_resolution() -> None:
    est = make_estimate(*BLR, 10.0)
    assert estimate_to_cell(est, 7) == h3.latlng_to_cell(*BLR, 7)
    assert estimate_to_cell(est, 11) == h3.latlng_to_cell(*BLR, 11)


# ---------------------------------------------------------------- covering circles


def test_radius_zero_is_the_containing_cell() -> None:
    assert cells_covering_circle(*BLR, 0.0, 9) == {h3.latlng_to_cell(*BLR, 9)}


def test_small_circle_across_an_edge_includes_the_neighbour() -> None:
    c0 = h3.latlng_to_cell(*BLR, 9)
    nb = sorted(set(h3.grid_disk(c0, 1)) - {c0})[0]
    (la0, lo0), (la1, lo1) = h3.cell_to_latlng(c0), h3.cell_to_latlng(nb)
    # The midpoint between two neighbouring centres lies on their shared edge; step 3 m
    # back into c0 so the circle's centre is in c0 but the 10 m circle crosses the edge.
    frame = LocalFrame(la0, lo0)
    x1, y1 = frame.to_xy(la1, lo1)
    dist = math.hypot(x1, y1)
    f = (dist / 2 - 3.0) / dist
    lat, lon = frame.to_latlon(x1 * f, y1 * f)
    assert h3.latlng_to_cell(lat, lon, 9) == c0
    # Neither centre is inside the circle: a centre-in-circle rule would find nothing.
    assert haversine_m(lat, lon, la0, lo0) > 10.0 and haversine_m(lat, lon, la1, lo1) > 10.0
    assert cells_covering_circle(lat, lon, 10.0, 9) == {c0, nb}
    assert cells_covering_circle(lat, lon, 2.0, 9) == {c0}


def test_circle_just_past_the_inradius_takes_exactly_the_first_ring() -> None:
    c0 = h3.latlng_to_cell(*BLR, 9)
    lat, lon = h3.cell_to_latlng(c0)
    nbs = set(h3.grid_disk(c0, 1)) - {c0}
    edge_dists = [boundary_distance_m(lat, lon, c) for c in nbs]
    assert cells_covering_circle(lat, lon, 0.95 * min(edge_dists), 9) == {c0}
    assert cells_covering_circle(lat, lon, 1.02 * max(edge_dists), 9) == nbs | {c0}


@pytest.mark.parametrize(
    ("lat", "lon", "radius", "res"),
    [
        (12.9716, 77.5946, 750.0, 9),
        (12.9716, 77.5946, 3_000.0, 10),
        (19.076, 72.8777, 40_000.0, 6),
        (59.9139, 10.7522, 1_234.0, 8),  # high latitude
        (-33.8688, 151.2093, 500.0, 11),
        (10.0, 179.995, 5_000.0, 8),  # across the antimeridian
    ],
)
def test_cover_is_complete_and_tight(lat: float, lon: float, radius: float, res: int) -> None:
    cover = cells_covering_circle(lat, lon, radius, res)
    # Complete: the cell of every point inside the circle is in the cover.
    inside = {h3.latlng_to_cell(a, b, res) for a, b in sample_disk(lat, lon, radius, 20_000, 1)}
    assert inside <= cover
    # Tight: every covered cell really reaches into the circle.
    for c in cover:
        assert boundary_distance_m(lat, lon, c) <= radius * 1.001 + 1.0 or c == (
            h3.latlng_to_cell(lat, lon, res)
        )
    # And nothing just outside the cover reaches in.
    for c in (
        set(h3.grid_disk(h3.latlng_to_cell(lat, lon, res), 1)).union(
            *(h3.grid_ring(c, 1) for c in cover)
        )
        - cover
    ):
        assert boundary_distance_m(lat, lon, c) > radius * 0.999


def test_cover_around_a_pentagon_is_complete() -> None:
    pent = h3.get_pentagons(8)[2]
    lat, lon = h3.cell_to_latlng(pent)
    cover = cells_covering_circle(lat, lon, 4_000.0, 8)
    inside = {h3.latlng_to_cell(a, b, 8) for a, b in sample_disk(lat, lon, 4_000.0, 20_000, 2)}
    assert pent in cover
    assert inside <= cover


def test_cover_guards_against_huge_requests() -> None:
    with pytest.raises(CellError) as e:
        cells_covering_circle(*BLR, 50_000.0, 13)
    assert e.value.reason == "too_many_cells"
    with pytest.raises(CellError) as e:
        cells_covering_circle(*BLR, 2_000.0, 9, max_cells=10)
    assert e.value.reason == "too_many_cells"
    # Covering the whole planet at res 0 is fine: all 122 cells.
    assert len(cells_covering_circle(*BLR, 3e7, 0)) == 122


@pytest.mark.parametrize("radius", [-1.0, math.nan, math.inf])
def test_cover_rejects_bad_radius(radius: float) -> None:
    with pytest.raises(CellError) as e:
        cells_covering_circle(*BLR, radius, 9)
    assert e.value.reason == "bad_radius"


def test_cells_for_estimate_uses_the_requested_confidence_radius() -> None:
    # Deliberately inconsistent radii so we can tell which one is used.
    est = make_estimate(*BLR, radius68=30.0, radius95=1_500.0)
    assert cells_for_estimate(est, 9) == cells_covering_circle(*BLR, 1_500.0, 9)
    assert cells_for_estimate(est, 9, confidence=0.68) == cells_covering_circle(*BLR, 30.0, 9)
    sigma = 30.0 / R68_PER_SIGMA
    assert radius_for_confidence(est, 0.5) == pytest.approx(sigma * math.sqrt(2 * math.log(2)))
    with pytest.raises(CellError) as e:
        cells_for_estimate(est, 9, confidence=1.0)
    assert e.value.reason == "bad_confidence"


# ---------------------------------------------------------------- counts


def test_cell_counts_on_hand_made_points() -> None:
    a = (12.9716, 77.5946)
    b = (12.9352, 77.6245)  # a few km away: a different res-9 cell
    c = (13.0358, 77.5970)
    lats = [a[0], b[0], a[0], c[0], b[0], a[0]]
    lons = [a[1], b[1], a[1], c[1], b[1], a[1]]
    counts = cell_counts(lats, lons, 9)
    ca, cb, cc = (h3.latlng_to_cell(*p, 9) for p in (a, b, c))
    assert counts == {ca: 3, cb: 2, cc: 1}
    coarse = Counter(h3.latlng_to_cell(la, lo, 5) for la, lo in zip(lats, lons, strict=True))
    assert cell_counts(np.array(lats), np.array(lons), 5) == dict(coarse)
    assert cell_counts([], [], 9) == {}


def test_cell_counts_match_per_point_indexing() -> None:
    rng = np.random.default_rng(3)
    lats = rng.uniform(12.85, 13.1, 5_000)
    lons = rng.uniform(77.45, 77.75, 5_000)
    expected = Counter(h3.latlng_to_cell(a, b, 8) for a, b in zip(lats, lons, strict=True))
    assert cell_counts(lats, lons, 8) == dict(expected)


def test_cell_counts_validate_points() -> None:
    with pytest.raises(InvalidCoordinate) as e:
        cell_counts([12.9, 12.9, math.nan], [77.5, 77.5, 77.5], 9)
    assert e.value.reason == "non_finite" and "point 2" in str(e.value)
    with pytest.raises(InvalidCoordinate) as e:
        cell_counts([12.9, 95.0], [77.5, 77.5], 9)
    assert e.value.reason == "out_of_range"
    with pytest.raises(InvalidCoordinate) as e:
        cell_counts([12.9, 0.001], [77.5, 0.001], 9)
    assert e.value.reason == "null_island"
    with pytest.raises(InvalidCoordinate) as e:
        cell_counts([12.9], [77.5, 77.6], 9)
    assert e.value.reason == "shape_mismatch"
    with pytest.raises(CellError):
        cell_counts([12.9], [77.5], 16)
    la, lo = validate_latlon_arrays([[12.9, 13.0]], [[77.5, 77.6]])
    assert la.shape == (2,) and lo.shape == (2,)


# ---------------------------------------------------------------- aggregator


def test_aggregator_moves_entities_between_cells() -> None:
    agg = CellAggregator(9)
    a = (12.9716, 77.5946)
    b = (12.9352, 77.6245)
    ca, cb = h3.latlng_to_cell(*a, 9), h3.latlng_to_cell(*b, 9)
    assert agg.update("r1", *a) == (None, ca)
    assert agg.update("r2", *a) == (None, ca)
    assert agg.counts() == {ca: 2}
    assert agg.update("r1", *b) == (ca, cb)
    assert agg.counts() == {ca: 1, cb: 1}
    assert agg.entities_in(ca) == {"r2"} and agg.entities_in(cb) == {"r1"}
    assert agg.cell_of("r1") == cb
    # Reporting again from the same cell does not double count.
    assert agg.update("r1", b[0] + 1e-6, b[1]) == (cb, cb)
    assert agg.count(cb) == 1
    assert agg.update("r2", *b) == (ca, cb)
    assert agg.counts() == {cb: 2}  # emptied cells disappear, no zero entries
    assert agg.count(ca) == 0 and agg.entities_in(ca) == frozenset()
    assert len(agg) == 2 and "r1" in agg and set(agg) == {"r1", "r2"}


def test_aggregator_remove_and_invalid_update() -> None:
    agg = CellAggregator(9)
    agg.update("r1", *BLR)
    c = agg.cell_of("r1")
    with pytest.raises(InvalidCoordinate):
        agg.update("r1", math.nan, 77.0)
    assert agg.cell_of("r1") == c  # a bad fix leaves the entity where it was
    assert agg.remove("r1") == c
    assert agg.remove("r1") is None
    assert agg.cell_of("r1") is None
    assert agg.counts() == {} and len(agg) == 0


def test_aggregator_rolls_up_to_parents() -> None:
    agg = CellAggregator(9)
    rng = np.random.default_rng(4)
    pts = list(zip(rng.uniform(12.9, 13.0, 300), rng.uniform(77.5, 77.7, 300), strict=True))
    for i, (la, lo) in enumerate(pts):
        agg.update(f"e{i}", float(la), float(lo))
    for res in (5, 7, 8):
        # H3 children do not tile their parent exactly, so the roll-up is by parent of
        # the fine cell, not the coarse cell of the raw point.
        expected = Counter(h3.cell_to_parent(h3.latlng_to_cell(la, lo, 9), res) for la, lo in pts)
        assert agg.counts_at(res) == dict(expected)
    assert agg.counts_at(9) == agg.counts()
    assert sum(agg.counts_at(3).values()) == 300
    with pytest.raises(CellError):
        agg.counts_at(10)

"""Travel models: geodesic accuracy against geopy, the MDRP rule, speed profiles, matrices."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from geopy.distance import geodesic
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.coords import haversine_matrix_m
from geo.errors import GeoError, InvalidCoordinate
from geo.travel import (
    DEFAULT_COURIER_SPEEDS_MPS,
    GreatCircleModel,
    InvalidTravelInput,
    MatrixModel,
    PlanarEuclideanModel,
    SpeedProfile,
    TravelTimeModel,
    geodesic_matrix_m,
    path_durations,
    point_distance,
    point_duration,
    to_int_matrix,
)

GEODESIC_REL_BOUND = 1.5e-6
"""Relative error vs geopy we claim (1.41e-6 measured); the brief asks for 5e-3."""

HOUR = 3600.0


def _pairs(
    rng: np.random.Generator, n: int, d_min: float, d_max: float, lat_max: float = 70.0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """n (origin, destination, geopy distance) with log-uniform distances in [d_min, d_max]."""
    lat = rng.uniform(-lat_max, lat_max, n)
    lon = rng.uniform(-180.0, 180.0, n)
    bearing = rng.uniform(0.0, 360.0, n)
    dist = np.exp(rng.uniform(math.log(d_min), math.log(d_max), n))
    a = np.column_stack([lat, lon])
    b = np.empty_like(a)
    ref = np.empty(n)
    for i in range(n):
        p = geodesic(meters=dist[i]).destination((lat[i], lon[i]), bearing[i])
        b[i] = (p.latitude, p.longitude)
        ref[i] = geodesic(tuple(a[i]), tuple(b[i])).meters
    return a, b, ref


def _pairwise(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.array([geodesic_matrix_m(a[i : i + 1], b[i : i + 1])[0, 0] for i in range(len(a))])


# --------------------------------------------------------------------------- protocol


def test_models_satisfy_the_protocol() -> None:
    models: list[TravelTimeModel] = [
        GreatCircleModel(),
        PlanarEuclideanModel(320.0),
        MatrixModel([[0.0]]),
    ]
    for m in models:
        assert isinstance(m, TravelTimeModel)
    assert [m.coords for m in models] == ["latlon", "planar", "planar"]


# --------------------------------------------------------------------------- geodesic


def test_geodesic_matches_geopy_for_city_hops() -> None:
    """10 m .. 100 km at latitudes -70..70: within 1.5e-6 relative of geopy (WGS-84)."""
    a, b, ref = _pairs(np.random.default_rng(20240601), 1500, 10.0, 100_000.0)
    rel = np.abs(_pairwise(a, b) - ref) / ref
    assert rel.max() < GEODESIC_REL_BOUND
    # The sample is hard enough to fail a mean-sphere haversine at the 0.5 % the brief allows.
    sphere = haversine_matrix_m(a[:, 0], a[:, 1], b[:, 0], b[:, 1]).diagonal()
    assert (np.abs(sphere - ref) / ref).max() > 5e-3


def test_geodesic_matches_geopy_for_long_lines() -> None:
    """100 km .. 1000 km (and a few to 5000 km), any latitude: same 1.5e-6 bound."""
    rng = np.random.default_rng(7)
    a, b, ref = _pairs(rng, 300, 100_000.0, 1_000_000.0)
    assert (np.abs(_pairwise(a, b) - ref) / ref).max() < GEODESIC_REL_BOUND
    a, b, ref = _pairs(rng, 100, 1_000_000.0, 5_000_000.0, lat_max=89.0)
    assert (np.abs(_pairwise(a, b) - ref) / ref).max() < GEODESIC_REL_BOUND


@settings(max_examples=200, deadline=None)
@given(
    lat=st.floats(-70.0, 70.0),
    lon=st.floats(-180.0, 180.0),
    bearing=st.floats(0.0, 360.0),
    dist=st.floats(10.0, 100_000.0),
)
def test_geodesic_matches_geopy_property(
    lat: float, lon: float, bearing: float, dist: float
) -> None:
    p = geodesic(meters=dist).destination((lat, lon), bearing)
    ref = geodesic((lat, lon), (p.latitude, p.longitude)).meters
    got = geodesic_matrix_m([[lat, lon]], [[p.latitude, p.longitude]])[0, 0]
    assert abs(got - ref) <= GEODESIC_REL_BOUND * ref


def test_geodesic_matrix_is_a_full_cross_product() -> None:
    rng = np.random.default_rng(3)
    o = rng.uniform([45.0, 7.0], [45.2, 7.3], (5, 2))
    d = rng.uniform([45.0, 7.0], [45.2, 7.3], (3, 2))
    m = geodesic_matrix_m(o, d)
    assert m.shape == (5, 3) and m.dtype == np.float64
    for i in range(5):
        for j in range(3):
            assert m[i, j] == pytest.approx(geodesic(o[i], d[j]).meters, rel=GEODESIC_REL_BOUND)
    sq = geodesic_matrix_m(o, o)
    assert np.all(np.diag(sq) == 0.0)
    np.testing.assert_allclose(sq, sq.T, rtol=1e-12)


def test_geodesic_across_the_antimeridian_and_poles() -> None:
    m = geodesic_matrix_m([[10.0, 179.99], [89.99, 0.0]], [[10.0, -179.99], [89.99, 180.0]])
    assert m[0, 0] == pytest.approx(geodesic((10.0, 179.99), (10.0, -179.99)).meters, rel=1e-5)
    assert m[1, 1] == pytest.approx(geodesic((89.99, 0.0), (89.99, 180.0)).meters, rel=1e-5)
    assert np.isfinite(m).all()


# --------------------------------------------------------------------------- great circle


def test_great_circle_applies_detour_and_speed() -> None:
    a, b = (48.85, 2.35), (48.86, 2.36)
    crow = geodesic(a, b).meters
    model = GreatCircleModel.constant_speed(5.0, detour_factor=1.4)
    assert point_distance(model, a, b) == pytest.approx(1.4 * crow, rel=GEODESIC_REL_BOUND)
    assert point_duration(model, a, b) == pytest.approx(1.4 * crow / 5.0, rel=GEODESIC_REL_BOUND)
    for t in (0.0, 8.5 * HOUR, 18 * HOUR, None):
        assert point_duration(model, a, b, t) == point_duration(model, a, b)
    assert GreatCircleModel().detour_factor == 1.3


def test_great_circle_duration_follows_the_hour_of_departure() -> None:
    model = GreatCircleModel()
    a, b = [[52.52, 13.40]], [[52.50, 13.45]]
    dist = model.distance_matrix(a, b)[0, 0]
    rush = model.duration_matrix(a, b, 8 * HOUR + 600)[0, 0]
    night = model.duration_matrix(a, b, 3 * HOUR)[0, 0]
    assert rush == pytest.approx(dist / DEFAULT_COURIER_SPEEDS_MPS[8])
    assert night == pytest.approx(dist / DEFAULT_COURIER_SPEEDS_MPS[3])
    assert rush > night
    mean = model.duration_matrix(a, b)[0, 0]
    assert mean == pytest.approx(dist / (sum(DEFAULT_COURIER_SPEEDS_MPS) / 24))
    # 24 h later is the same hour of day.
    assert model.duration_matrix(a, b, 8 * HOUR + 600 + 86_400)[0, 0] == rush


def test_default_profile_is_slower_at_rush_hours() -> None:
    p = SpeedProfile()
    off_peak = [p.speeds_mps[h] for h in range(24) if h not in (8, 9, 17, 18, 19)]
    for h in (8, 9, 17, 18, 19):
        assert p.speed_at(h * HOUR) < min(off_peak)
        assert p.speed_at(h * HOUR) < p.mean_mps
    assert all(2.0 < s < 8.0 for s in p.speeds_mps)  # m/s: a plausible courier speed


def test_speed_profile_indexes_by_hour_and_wraps() -> None:
    p = SpeedProfile(tuple(float(h + 1) for h in range(24)))
    assert p.speed_at(0.0) == 1.0
    assert p.speed_at(HOUR - 0.001) == 1.0
    assert p.speed_at(HOUR) == 2.0
    assert p.speed_at(17 * HOUR + 1800) == 18.0
    assert p.speed_at(23 * HOUR + 3599) == 24.0
    assert p.speed_at(86_400.0) == 1.0
    assert p.speed_at(86_400.0 + 5 * HOUR) == 6.0
    assert p.speed_at(3 * 86_400.0 + 12 * HOUR) == 13.0
    assert p.speed_at(-HOUR) == 24.0
    assert p.speed_at(None) == pytest.approx(12.5)
    assert p.mean_mps == pytest.approx(12.5)
    assert SpeedProfile.constant(4.0).speeds_mps == (4.0,) * 24


@pytest.mark.parametrize(
    "speeds", [(4.0,) * 23, (4.0,) * 25, (0.0,) + (4.0,) * 23, (-1.0,) * 24, (math.nan,) * 24]
)
def test_speed_profile_rejects_bad_speeds(speeds: tuple[float, ...]) -> None:
    with pytest.raises(InvalidTravelInput) as exc:
        SpeedProfile(speeds)
    assert exc.value.reason == "bad_parameter"


@pytest.mark.parametrize("bad", [math.nan, math.inf, "08:00", True])
def test_bad_depart_at_is_rejected(bad: Any) -> None:
    cases: list[tuple[TravelTimeModel, Any]] = [
        (GreatCircleModel(), [[45.0, 7.0]]),
        (PlanarEuclideanModel(320.0), [[0.0, 0.0]]),
        (MatrixModel([[0.0]]), [0]),
    ]
    for model, where in cases:
        with pytest.raises(InvalidTravelInput) as exc:
            model.duration_matrix(where, where, bad)
        assert exc.value.reason == "bad_time"


@pytest.mark.parametrize("kwargs", [{"detour_factor": 0.9}, {"detour_factor": math.nan}])
def test_great_circle_rejects_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidTravelInput):
        GreatCircleModel(**kwargs)
    with pytest.raises(InvalidTravelInput):
        GreatCircleModel.constant_speed(0.0)


# --------------------------------------------------------------------------- planar / MDRP


@pytest.mark.parametrize(
    ("dx", "dy", "minutes"),
    [
        (1000, 0, 4),  # 3.125 min -> 4
        (0, 320, 1),  # exactly 1 min
        (576, 768, 3),  # 960 m exactly 3 min: no float-noise jump to 4
        (600, 800, 4),  # 1000 m
        (961, 0, 4),  # 3.003 min -> 4
        (1, 0, 1),  # any movement costs a minute
        (0, 0, 0),
    ],
)
def test_mdrp_ceil_rule(dx: int, dy: int, minutes: int) -> None:
    model = PlanarEuclideanModel(320.0)
    origin = [[5000.0, 7000.0]]
    dest = [[5000.0 + dx, 7000.0 + dy]]
    assert model.duration_matrix(origin, dest)[0, 0] == minutes * 60.0
    assert model.distance_matrix(origin, dest)[0, 0] == pytest.approx(math.hypot(dx, dy))


def test_mdrp_unrounded_and_matrix_shape() -> None:
    exact = PlanarEuclideanModel(320.0, round_up_minutes=False)
    assert exact.duration_matrix([[0, 0]], [[1000, 0]])[0, 0] == pytest.approx(187.5)
    o = [[0, 0], [100, 0], [0, 700]]
    d = [[0, 0], [3, 4]]
    m = PlanarEuclideanModel(320.0).duration_matrix(o, d)
    assert m.shape == (3, 2) and m.dtype == np.float64
    np.testing.assert_array_equal(m, [[0, 60], [60, 60], [180, 180]])
    assert PlanarEuclideanModel(320.0).distance_matrix(o, d)[0, 1] == 5.0


def test_mdrp_instance_times_are_whole_minutes(shared_data: Path) -> None:
    inst = shared_data / "mdrp" / "instances" / "0o100t100s1p100"
    params = np.loadtxt(inst / "instance_parameters.txt", skiprows=1)
    rest = np.loadtxt(inst / "restaurants.txt", skiprows=1, usecols=(1, 2))
    orders = np.loadtxt(inst / "orders.txt", skiprows=1, usecols=(1, 2))[:200]
    model = PlanarEuclideanModel(float(params[0]))
    secs = model.duration_matrix(rest, orders)
    assert secs.shape == (len(rest), len(orders))
    for i in range(0, len(rest), 7):
        for j in range(0, len(orders), 13):
            d = math.dist(rest[i], orders[j])
            assert secs[i, j] == 60 * math.ceil(d / params[0])


@pytest.mark.parametrize("mpm", [0.0, -320.0, math.inf])
def test_planar_rejects_bad_speed(mpm: float) -> None:
    with pytest.raises(InvalidTravelInput):
        PlanarEuclideanModel(mpm)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("points", "reason"),
    [
        ([[1.0, 2.0, 3.0]], "bad_shape"),
        ([1.0, 2.0], "bad_shape"),
        ([[[1.0, 2.0]]], "bad_shape"),
        ([[1.0, 2.0], [3.0]], "bad_shape"),
        ([[math.nan, 2.0]], "non_finite"),
        ([[1.0, math.inf]], "non_finite"),
        ([[91.0, 2.0]], "out_of_range"),
        ([[-90.5, 2.0]], "out_of_range"),
        ([[10.0, 180.5]], "out_of_range"),
        ([["a", "b"]], "not_a_number"),
        ([[True, False]], "not_a_number"),
    ],
)
def test_latlon_validation(points: Any, reason: str) -> None:
    good = [[45.0, 7.0]]
    model = GreatCircleModel()
    with pytest.raises(InvalidCoordinate) as exc:
        model.distance_matrix(points, good)
    assert isinstance(exc.value, GeoError)
    assert exc.value.reason == reason
    with pytest.raises(InvalidCoordinate) as exc:
        model.duration_matrix(good, points, 0.0)
    assert exc.value.reason == reason
    assert "destinations" in str(exc.value)


def test_planar_validation_checks_finiteness_not_range() -> None:
    model = PlanarEuclideanModel(320.0)
    assert model.distance_matrix([[500_000.0, 4_000_000.0]], [[500_000.0, 4_000_300.0]])[
        0, 0
    ] == pytest.approx(300.0)
    with pytest.raises(InvalidCoordinate) as exc:
        model.duration_matrix([[math.nan, 0.0]], [[0.0, 0.0]])
    assert exc.value.reason == "non_finite"
    with pytest.raises(InvalidCoordinate):
        model.distance_matrix([[0.0, 0.0, 0.0]], [[0.0, 0.0]])


def test_empty_inputs_give_empty_matrices() -> None:
    three_ll = [[45.0, 7.0], [45.1, 7.1], [45.2, 7.2]]
    three_xy = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]
    for model, pts in ((GreatCircleModel(), three_ll), (PlanarEuclideanModel(320.0), three_xy)):
        assert model.distance_matrix([], pts).shape == (0, 3)
        assert model.duration_matrix(pts, np.empty((0, 2))).shape == (3, 0)
        assert model.duration_matrix([], [], 0.0).shape == (0, 0)
    mm = MatrixModel(np.ones((3, 3)), np.ones((3, 3)))
    assert mm.duration_matrix([], [0, 1, 2]).shape == (0, 3)
    assert mm.distance_matrix([0, 1], []).shape == (2, 0)


# --------------------------------------------------------------------------- matrix model


DUR = [[0.0, 60.0, 120.0], [70.0, 0.0, 30.0], [130.0, 40.0, 0.0]]
DIST = [[0.0, 500.0, 900.0], [520.0, 0.0, 250.0], [950.0, 260.0, 0.0]]
PTS = [[0.0, 0.0], [400.0, 300.0], [900.0, 0.0]]


def test_matrix_model_index_lookup() -> None:
    m = MatrixModel(DUR, DIST)
    np.testing.assert_array_equal(
        m.duration_matrix([2, 0], [1, 2, 1]), [[40, 0, 40], [60, 120, 60]]
    )
    np.testing.assert_array_equal(m.distance_matrix(np.array([1]), np.array([0])), [[520.0]])
    assert point_duration(m, 1, 2) == 30.0
    assert point_distance(m, 2, 0) == 950.0
    assert m.duration_matrix([0], [1], 8 * HOUR)[0, 0] == 60.0  # static: time ignored
    assert m.size == 3 and m.points is None


def test_matrix_model_point_lookup() -> None:
    m = MatrixModel(DUR, DIST, points=PTS)
    np.testing.assert_array_equal(m.duration_matrix([[900, 0], [0, 0]], [[400, 300]]), [[40], [60]])
    np.testing.assert_array_equal(m.indices([[400.0, 300.0], [900.0, 0.0]]), [1, 2])
    with pytest.raises(InvalidTravelInput) as exc:
        m.duration_matrix([[400.0, 300.5]], [0])
    assert exc.value.reason == "unknown_point"
    assert "300.5" in str(exc.value)


@pytest.mark.parametrize(
    ("locations", "reason"),
    [
        ([3], "index_out_of_range"),
        ([-1], "index_out_of_range"),
        ([0.0, 1.0], "bad_index"),
        ([True], "bad_index"),
        ([[0, 1, 2]], "bad_shape"),
        ([[0.0, 0.0]], "no_points"),
    ],
)
def test_matrix_model_bad_locations(locations: Any, reason: str) -> None:
    m = MatrixModel(DUR, DIST)
    with pytest.raises(InvalidTravelInput) as exc:
        m.duration_matrix(locations, [0])
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    ("durations", "distances", "points", "reason"),
    [
        ([[0.0, 1.0]], None, None, "bad_shape"),
        ([0.0, 1.0], None, None, "bad_shape"),
        ([[0.0, -1.0], [1.0, 0.0]], None, None, "negative"),
        ([[0.0, math.nan], [1.0, 0.0]], None, None, "non_finite"),
        ([[0.0, math.inf], [1.0, 0.0]], None, None, "non_finite"),
        ([[0.0, 1.0], [1.0, 0.0]], [[0.0]], None, "bad_shape"),
        ([[0.0, 1.0], [1.0, 0.0]], [[0.0, -5.0], [5.0, 0.0]], None, "negative"),
        ([[0.0, 1.0], [1.0, 0.0]], None, [[0.0, 0.0]], "bad_shape"),
        ([[0.0, 1.0], [1.0, 0.0]], None, [[0.0, 0.0], [0.0, 0.0]], "duplicate_point"),
    ],
)
def test_matrix_model_validates_construction(
    durations: Any, distances: Any, points: Any, reason: str
) -> None:
    with pytest.raises(InvalidTravelInput) as exc:
        MatrixModel(durations, distances, points=points)
    assert exc.value.reason == reason


def test_matrix_model_misc_errors_and_isolation() -> None:
    with pytest.raises(InvalidTravelInput) as exc:
        MatrixModel(DUR).distance_matrix([0], [1])
    assert exc.value.reason == "no_distances"
    with pytest.raises(InvalidCoordinate):
        MatrixModel(DUR, coords="latlon", points=[[0.0, 0.0], [1.0, 1.0], [95.0, 0.0]])
    src = np.array(DUR)
    m = MatrixModel(src)
    src[0, 1] = 999.0
    assert m.duration_matrix([0], [1])[0, 0] == 60.0  # the model keeps its own copy
    out = m.duration_matrix([0], [1])
    out[0, 0] = 1.0
    assert m.duration_matrix([0], [1])[0, 0] == 60.0  # results are copies too


def test_matrix_model_from_model_caches_the_model() -> None:
    pts = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 500.0], [640.0, 480.0]])
    base = PlanarEuclideanModel(320.0)
    cached = MatrixModel.from_model(base, pts)
    assert cached.coords == "planar"
    np.testing.assert_array_equal(
        cached.duration_matrix([0, 3], [1, 2]), base.duration_matrix(pts[[0, 3]], pts[[1, 2]])
    )
    np.testing.assert_array_equal(
        cached.distance_matrix(pts[[1]], pts), base.distance_matrix(pts[[1]], pts)
    )
    latlon = np.array([[45.0, 7.0], [45.01, 7.02], [45.03, 7.0]])
    gc = MatrixModel.from_model(GreatCircleModel(), latlon, depart_at=8 * HOUR)
    assert gc.coords == "latlon"
    assert gc.duration_matrix([[45.01, 7.02]], [[45.03, 7.0]])[0, 0] == pytest.approx(
        GreatCircleModel().duration_matrix(latlon[[1]], latlon[[2]], 8 * HOUR)[0, 0]
    )


# --------------------------------------------------------------------------- helpers


def test_to_int_matrix_rounds_up() -> None:
    got = to_int_matrix([[0.0, 0.2, 1.0], [1.5, 239.999, 240.001]])
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[0, 1, 1], [2, 240, 241]])
    # float noise just above an integer is not a whole extra second
    assert to_int_matrix([[60.0 * (0.1 * 3) * 10 / 3]])[0, 0] == 60  # 60.00000000000001
    assert to_int_matrix([[240.00000000000003]])[0, 0] == 240
    assert to_int_matrix([[1e12 + 0.5]])[0, 0] == 1_000_000_000_001
    # scale picks the unit: seconds -> minutes, metres -> decimetres
    np.testing.assert_array_equal(to_int_matrix([[240.0, 241.0]], scale=1 / 60), [[4, 5]])
    np.testing.assert_array_equal(to_int_matrix([[12.34]], scale=10), [[124]])


@pytest.mark.parametrize(
    ("matrix", "scale"),
    [([[-1.0]], 1.0), ([[math.nan]], 1.0), ([[math.inf]], 1.0), ([[1e19]], 1.0), ([[1.0]], 0.0)],
)
def test_to_int_matrix_rejects(matrix: Any, scale: float) -> None:
    with pytest.raises(InvalidTravelInput):
        to_int_matrix(matrix, scale)


def test_int_matrix_feeds_the_mdrp_model_exactly() -> None:
    secs = PlanarEuclideanModel(320.0).duration_matrix([[0, 0], [1000, 0]], [[0, 0], [1000, 0]])
    np.testing.assert_array_equal(to_int_matrix(secs, scale=1 / 60), [[0, 4], [4, 0]])


# --------------------------------------------------------------------------- path legs


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-89.0, 89.0), st.floats(-179.9, 179.9)), min_size=0, max_size=30),
    st.sampled_from([None, 0.0, 8.5 * 3600, 23.9 * 3600]),
)
def test_path_durations_equal_the_matrix_diagonal_on_the_globe(
    points: list[tuple[float, float]], depart_at: float | None
) -> None:
    """The per-leg fast path (short paths) and the matrix path (long ones) agree with the
    consecutive pairs of the full matrix, so route ETAs do not depend on which ran."""
    model = GreatCircleModel(detour_factor=1.25)
    legs = path_durations(model, points, depart_at)
    assert len(legs) == max(0, len(points) - 1)
    if len(points) >= 2:
        pts = np.asarray(points)
        want = np.diagonal(model.duration_matrix(pts[:-1], pts[1:], depart_at))
        np.testing.assert_allclose(legs, want, rtol=1e-9, atol=1e-6)


@given(
    st.lists(
        st.tuples(st.integers(-50_000, 50_000), st.integers(-50_000, 50_000)),
        min_size=2,
        max_size=12,
    ),
    st.booleans(),
)
def test_path_durations_keep_the_mdrp_minute_rule(
    points: list[tuple[int, int]], rounded: bool
) -> None:
    model = PlanarEuclideanModel(meters_per_minute=320.0, round_up_minutes=rounded)
    as_floats = [(float(x), float(y)) for x, y in points]
    pts = np.asarray(as_floats)
    want = np.diagonal(model.duration_matrix(pts[:-1], pts[1:]))
    assert path_durations(model, as_floats) == pytest.approx(want.tolist(), abs=1e-9)
    assert path_durations(model, points) == pytest.approx(want.tolist(), abs=1e-9)  # ints


def test_path_durations_of_other_models_and_bad_points() -> None:
    table = MatrixModel([[0, 60, 90], [60, 0, 30], [90, 30, 0]])
    assert path_durations(table, [0, 2, 1]) == [90.0, 30.0]
    model = GreatCircleModel()
    with pytest.raises(InvalidCoordinate) as err:
        path_durations(model, [(52.5, 13.4), (float("nan"), 13.4)])
    assert err.value.reason == "non_finite"
    with pytest.raises(InvalidCoordinate) as err:
        path_durations(model, [(52.5, 13.4), (95.0, 13.4)])
    assert err.value.reason == "out_of_range"

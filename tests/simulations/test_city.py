"""Generated cities: the city file, determinism, the shape of the day, one run end to end."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import h3
import numpy as np
import numpy.typing as npt
import pytest
import shapely
from shapely.geometry import Polygon

from simulations.run import run_scenario
from simulations.scenarios import ScenarioError, load_scenario
from simulations.scenarios.city import (
    CityConfig,
    Peak,
    Shift,
    _placement_s,
    _Sampler,
    _uniform_in,
    city_to_toml,
    default_city,
    default_city_path,
    generate_city,
    load_city,
    save_city,
    scale_city,
)


@pytest.fixture(scope="module")
def city() -> CityConfig:
    return default_city()


def test_default_file_is_the_default_config(city: CityConfig) -> None:
    assert default_city_path().is_file()
    assert city == CityConfig()


def test_city_file_round_trip(tmp_path: Path) -> None:
    base = CityConfig()
    odd = replace(
        base,
        name='odd "name"',
        seed=12345,
        restaurants=replace(base.restaurants, count=37, hot_share=0.123456789),
        demand=replace(
            base.demand,
            orders=321,
            first_order_min=9 * 60 + 5,
            peaks=(Peak("brunch", 11 * 60, 33.3, 1.0), Peak("late", 25 * 60, 20.0, 0.1)),
            last_order_min=25 * 60 + 30,
        ),
        fleet=replace(base.fleet, speed_kmh=17.25, shifts=(Shift(9 * 60, 26 * 60, 7),)),
    )
    for config in (base, odd):
        path = save_city(config, tmp_path / "sub" / "city.toml")
        loaded = load_city(path)
        assert loaded == config
        assert city_to_toml(loaded) == path.read_text(encoding="utf-8")


def test_partial_file_takes_defaults(tmp_path: Path) -> None:
    p = tmp_path / "small.toml"
    p.write_text('name = "tiny-town"\n[demand]\norders = 50\n', encoding="utf-8")
    c = load_city(p)
    assert c.name == "tiny-town" and c.demand.orders == 50
    assert c.fleet == CityConfig().fleet and c.area == CityConfig().area


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[demand]\nordres = 5\n", "demand: unknown keys ['ordres']"),
        ('[demand]\nfirst_order = "9h"\n', "demand.first_order"),
        ('[fleet]\nspeed_kmh = "fast"\n', "fleet.speed_kmh: must be a number"),
        ('[fleet]\nshifts = [{ start = "10:00" }]\n', "needs start and end"),
        ("[rules]\nmax_min = 10.0\n", "rules.max_min"),
        ("[area]\nring = [[8.0, 50.0], [8.1, 50.0]]\n", "at least 3"),
        ("not toml =", "not valid TOML"),
        ("[area]\ncenter = [51.0, 8.25]\n", "area.center: must lie inside the service area"),
        (
            "[area]\ncenter = [50.005, 8.25]\n"
            "ring = [[8.2, 50.0], [8.3, 50.01], [8.3, 50.0], [8.2, 50.01]]\n",
            "area.ring: not a simple polygon",
        ),
        (
            '[demand]\npeaks = [{ name = "night", at = "03:00", sd_min = 30.0, weight = 0.05 }]\n',
            "peak night at 03:00 (sd 30 min) lies outside the order window 10:00-22:30",
        ),
        ("[demand]\norders = 100000000000\n", "demand.orders: must be 0-100,000"),
        ("[restaurants]\ncount = 100000000\n", "restaurants.count: must be 1-10,000"),
        (
            '[fleet]\nshifts = [{ start = "10:00", end = "23:00", couriers = 100000000 }]\n',
            "fleet.shifts: at most 10,000 couriers",
        ),
        ("[rules]\npay_per_order = -1.0\n", "rules.pay_per_order: must be >= 0"),
        ("[rules]\nguaranteed_pay_per_hour = -15\n", "rules.guaranteed_pay_per_hour: must be >= 0"),
    ],
)
def test_bad_city_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as e:
        load_city(p)
    assert message in str(e.value) and str(p) in str(e.value)


def _fingerprint(config: CityConfig, seed: int | None = None) -> list[tuple[object, ...]]:
    sc = generate_city(config, seed)
    return [
        (o.id, o.placed_at, o.ready_at, o.pickup.id, o.pickup.point, o.dropoff.point)
        for o in sc.orders
    ] + [(c.id, c.shift_start, c.shift_end, c.position.point) for c in sc.couriers]


def test_same_seed_same_day(city: CityConfig) -> None:
    small = scale_city(city, 0.1)
    assert _fingerprint(small) == _fingerprint(small)
    assert _fingerprint(small, 7) == _fingerprint(replace(small, seed=7))
    assert _fingerprint(small, 7) != _fingerprint(small, 8)


def test_more_orders_do_not_move_the_restaurants(city: CityConfig) -> None:
    a = generate_city(scale_city(city, 0.1))
    b = generate_city(city)
    assert dict(a.restaurants) == dict(b.restaurants)


def test_scenario_shape(city: CityConfig) -> None:
    sc = generate_city(city)
    assert sc.kind == "city" and sc.travel.coords == "latlon"
    assert len(sc.orders) == city.demand.orders
    assert len(sc.couriers) == city.fleet.couriers == 304
    assert len(sc.restaurants) == city.restaurants.count + city.stores.count
    placed = np.array([o.placed_at for o in sc.orders])
    assert (np.diff(placed) >= 0).all()
    assert placed.min() >= city.demand.first_order_min * 60
    assert placed.max() <= city.demand.last_order_min * 60
    for o in sc.orders:
        assert o.ready_at >= o.placed_at + 60
        assert o.promised_by == o.placed_at + 40 * 60
        assert o.pickup is sc.restaurants[sc.restaurant_of[o.id]]
    area = Polygon([(lon, lat) for lon, lat in city.area.ring])
    lat = np.array([o.dropoff.point[0] for o in sc.orders])
    lon = np.array([o.dropoff.point[1] for o in sc.orders])
    assert shapely.contains_xy(area, lon, lat).all()
    assert all(c.position.id == "0" for c in sc.couriers)
    assert [c.shift_start for c in sc.couriers] == sorted(c.shift_start for c in sc.couriers)
    stores = sum(sc.restaurant_of[o.id].startswith("s") for o in sc.orders) / len(sc.orders)
    assert 0.08 < stores < 0.16
    prep = np.array([o.ready_at - o.placed_at for o in sc.orders if (o.pickup.id or "")[:1] == "r"])
    assert 10 * 60 < np.median(prep) < 14 * 60


def test_demand_has_lunch_and_dinner_peaks(city: CityConfig) -> None:
    sc = generate_city(city)
    per_hour = Counter(int(o.placed_at // 3600) for o in sc.orders)
    lunch = max(range(11, 15), key=lambda h: per_hour[h])
    dinner = max(range(17, 22), key=lambda h: per_hour[h])
    assert lunch == 12 and dinner == 19
    quiet = per_hour[15]
    assert per_hour[lunch] > 4 * quiet and per_hour[dinner] > 4 * quiet
    assert per_hour[10] < per_hour[lunch] / 2 and per_hour[22] < per_hour[dinner] / 4


def test_restaurants_cluster_in_hot_cells(city: CityConfig) -> None:
    sc = generate_city(city)
    res = city.area.h3_res
    rest = [p.point for rid, p in sc.restaurants.items() if rid.startswith("r")]
    per_cell = Counter(h3.latlng_to_cell(lat, lon, res) for lat, lon in rest)
    ring = [(lat, lon) for lon, lat in city.area.ring]
    n_cells = len(h3.h3shape_to_cells(h3.LatLngPoly(ring), res))
    top = sum(n for _, n in per_cell.most_common(city.restaurants.hot_cells))
    uniform = city.restaurants.hot_cells / n_cells
    assert top / len(rest) >= city.restaurants.hot_share
    assert top / len(rest) > 5 * uniform
    assert per_cell.most_common()[city.restaurants.hot_cells - 1][1] >= 5  # several each


def test_unusual_cities_generate(city: CityConfig) -> None:
    no_stores = replace(
        scale_city(city, 0.02),
        stores=replace(city.stores, count=0, order_share=0.0),
        restaurants=replace(city.restaurants, count=5, hot_share=0.0),
    )
    sc = generate_city(no_stores)
    assert len(sc.restaurants) == 5 and len(sc.orders) == 40
    few = replace(no_stores, restaurants=replace(city.restaurants, count=3, hot_cells=8))
    assert len(generate_city(few).restaurants) == 3
    with pytest.raises(ScenarioError, match="inside the service area"):
        replace(city.area, center=(51.0, 8.25))  # refused by the config, before generating


def test_h3_res_is_limited_by_the_cells_it_makes(city: CityConfig) -> None:
    with pytest.raises(ScenarioError, match=r"area.h3_res: 15 splits .* use 11 or coarser"):
        replace(city.area, h3_res=15)  # 80 million cells in the default area: used to hang
    finest = replace(scale_city(city, 0.02), area=replace(city.area, h3_res=11))
    assert len(generate_city(finest).orders) == 40


def test_peak_placements_end_whatever_the_peak(city: CityConfig) -> None:
    """The redraw loop is bounded even for a peak the loader refuses (none inside)."""
    demand = replace(city.demand, orders=300)
    object.__setattr__(demand, "peaks", (Peak("night", 3 * 60, 30.0, 1.0),))
    rng = np.random.default_rng(0)
    draws = 0

    def normal(loc: float, scale: float, size: int) -> npt.NDArray[np.float64]:
        nonlocal draws
        draws += 1
        assert draws < 100_000, "peak placements are redrawn forever"
        return rng.normal(loc, scale, size)

    counting = SimpleNamespace(normal=normal, uniform=rng.uniform, choice=rng.choice)
    placed = _placement_s(cast(np.random.Generator, counting), demand)
    lo, hi = demand.first_order_min * 60, demand.last_order_min * 60
    assert len(placed) == 300 and lo <= placed.min() and placed.max() <= hi


def test_points_in_a_sliver_of_an_area_are_drawn_in_bounded_time(city: CityConfig) -> None:
    """A diagonal service area 20 km long and 2 cm wide: a normal 3 km wide (homes), or
    the bounds of the area (uniform homes, a cell's restaurants), land in it about once
    in 10^5-10^6 draws. Rejection is given a bounded number of rounds, then the exact
    sampler draws the rest."""
    lat0, lon0 = city.area.center
    half = 0.01 / 111_320  # 1 cm in degrees of latitude
    ring = (
        (lon0 - 0.1, lat0 - 0.065 - half),
        (lon0 + 0.1, lat0 + 0.065 - half),
        (lon0 + 0.1, lat0 + 0.065 + half),
        (lon0 - 0.1, lat0 - 0.065 + half),
    )
    sampler = _Sampler(replace(city, area=replace(city.area, ring=ring)))
    rng = np.random.default_rng(0)
    rounds = 0

    def normal(loc: float, scale: float, size: int) -> npt.NDArray[np.float64]:
        nonlocal rounds
        rounds += 1
        return rng.normal(loc, scale, size)

    counting = cast(
        np.random.Generator,
        SimpleNamespace(normal=normal, uniform=rng.uniform, random=rng.random, choice=rng.choice),
    )
    x, y = sampler.homes(counting, 2000, 3000.0, 0.2)
    assert len(x) == 2000 and rounds <= 2 * 50  # two normals per round
    assert shapely.contains_xy(sampler.area.buffer(1e-6), x, y).all()
    cell = h3.latlng_to_cell(lat0, lon0, 9)
    x, y = sampler.in_cell(rng, cell, 500)
    assert len(x) == 500 and shapely.contains_xy(sampler.area.buffer(1e-6), x, y).all()


def test_uniform_in_a_polygon_is_uniform_and_inside() -> None:
    l_shape = Polygon([(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2)])  # area 3, concave
    x, y = _uniform_in(l_shape, np.random.default_rng(1), 30_000)
    assert shapely.contains_xy(l_shape.buffer(1e-9), x, y).all()
    in_top_arm = (y > 1).mean()  # the arm above y = 1 is a third of the area
    assert abs(in_top_arm - 1 / 3) < 0.015
    assert abs(x.mean() - l_shape.centroid.x) < 0.02
    assert abs(y.mean() - l_shape.centroid.y) < 0.02


def test_scale_city(city: CityConfig) -> None:
    small = scale_city(city, 0.05)
    assert small.demand.orders == 100
    assert [s.couriers for s in small.fleet.shifts] == [1, 3, 2, 1, 3, 4, 2]
    assert small.area == city.area
    with pytest.raises(ScenarioError):
        scale_city(city, 0.0)


def test_load_scenario_recognises_city_files(tmp_path: Path, city: CityConfig) -> None:
    path = save_city(scale_city(city, 0.02), tmp_path / "town.toml")
    sc = load_scenario(path)
    assert sc.kind == "city" and sc.source == path and len(sc.orders) == 40
    assert load_scenario(path, seed=5).orders != sc.orders
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path / "missing.toml")


def test_small_city_end_to_end_with_bundling(city: CityConfig) -> None:
    sc = generate_city(scale_city(city, 0.05))
    result = run_scenario(sc, "bundling")
    k = result.kpis
    assert result.violations == [] and k["violations"] == 0
    assert k["stuck"] == 0 and k["rejected_decisions"] == 0
    delivered, never = k["delivered"], k["never_assigned"]
    assert isinstance(delivered, int) and isinstance(never, int)
    assert delivered + never == k["orders"] == 100
    assert k["delivered_share"] is not None and k["delivered_share"] >= 0.95
    assert k["c2d_mean"] is not None and 10 < k["c2d_mean"] < 90
    assert k["late_share"] is not None and 0 <= k["late_share"] <= 1
    assert k["utilisation"] is not None and 0 < k["utilisation"] < 1.2
    assert result.sim.undelivered == {
        oid: "never_assigned" for oid, o in result.sim.orders.items() if o.status == "placed"
    }

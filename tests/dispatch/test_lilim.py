"""Li & Lim reader and benchmark entry points, on a tiny fixture and (when ../shared is
present) on the real lc101."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.lilim_bench import check_routes, run, solve_file
from dispatch.instances.lilim import LILIM_SCALE, read_bks, read_lilim, route_distance
from tests.conftest import SHARED_DATA

DATA = Path(__file__).parent / "data"
LILIM = SHARED_DATA / "lilim"
needs_shared = pytest.mark.skipif(not LILIM.is_dir(), reason="../shared/data/lilim absent")


def test_reader_on_tiny_fixture() -> None:
    inst = read_lilim(DATA / "tiny_lilim.txt")
    p = inst.problem
    assert inst.capacity == 20 and len(p.vehicles) == 3
    assert [(r.pickup, r.delivery, r.load) for r in p.requests] == [(1, 2, 5), (3, 4, 7), (5, 6, 4)]
    assert all(v.start == 0 and v.end == 0 for v in p.vehicles)
    # Scaled, rounded-up Euclidean: (10, 0) -> (0, 10) is 14.142... -> 14143.
    assert p.durations[1, 3] == 14143 and p.durations[0, 1] == 10 * LILIM_SCALE
    assert p.latest[0] == 200 * LILIM_SCALE and p.service[1] == LILIM_SCALE
    assert route_distance(inst.coords, [1, 2]) == pytest.approx(40.0)


def test_solve_file_on_tiny_fixture() -> None:
    res = solve_file(DATA / "tiny_lilim.txt", time_limit_s=1.0)
    assert res["vehicles"] == 1 and res["unassigned"] == []
    (route,) = res["routes"]
    assert sorted(route) == [1, 2, 3, 4, 5, 6]
    for pickup, delivery in ((1, 2), (3, 4), (5, 6)):
        assert route.index(pickup) < route.index(delivery)
    inst = read_lilim(DATA / "tiny_lilim.txt")
    assert res["distance"] == pytest.approx(route_distance(inst.coords, route))
    assert check_routes(inst, res["routes"], res["unassigned"]) == []


@needs_shared
def test_reader_on_lc101_and_bks() -> None:
    inst = read_lilim(LILIM / "instances" / "lc101.txt")
    p = inst.problem
    assert p.n_nodes == 107 and len(p.requests) == 53
    assert (3, 75) in {(r.pickup, r.delivery) for r in p.requests}
    assert len(p.vehicles) == 25 and inst.capacity == 200
    bks = read_bks(LILIM / "bks.csv")
    assert len(bks) == 56 and bks["lc101"].vehicles == 10
    assert bks["lc101"].distance == pytest.approx(828.94)


@needs_shared
def test_lc101_reaches_best_known_vehicles() -> None:
    res = run(LILIM / "instances", time_limit_s=2.0, names=["lc101"])
    (row,) = res["per_instance"]
    assert row["vehicles"] == row["bks_vehicles"] == 10 and not row["unassigned"]
    assert not row["infeasible"] and row["violations"] == []
    assert row["gap_pct"] < 1.0
    assert res["infeasible"] == 0 and res["count_vehicles_le_bks"] == 1

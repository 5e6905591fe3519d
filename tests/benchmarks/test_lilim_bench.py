"""Li & Lim benchmark: the route checker on a tiny fixture, and a smoke run of
``run_all`` (our engine, VROOM, PyVRP) on two real instances when ../shared is present."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.lilim_bench import check_routes, run_all
from dispatch.instances.lilim import read_lilim
from tests.conftest import SHARED_DATA

TINY = Path(__file__).parents[1] / "dispatch" / "data" / "tiny_lilim.txt"
LILIM = SHARED_DATA / "lilim"
needs_shared = pytest.mark.skipif(not LILIM.is_dir(), reason="../shared/data/lilim absent")
KEYS = {"instances", "mean_gap_pct", "share_vehicles_le_bks", "vehicles_total", "infeasible"}


def test_checker_accepts_a_feasible_plan() -> None:
    inst = read_lilim(TINY)
    assert check_routes(inst, [[1, 2], [3, 4], [5, 6]]) == []
    assert check_routes(inst, [[1, 2, 3, 4], [5, 6]]) == []
    assert check_routes(inst, [[1, 2]], unassigned=[3, 5]) == []


@pytest.mark.parametrize(
    ("routes", "unassigned", "needle"),
    [
        ([[2, 1], [3, 4], [5, 6]], [], "delivery before pickup"),
        ([[1, 4], [3, 2], [5, 6]], [], "not on one route"),
        ([[1, 2], [3, 4]], [], "neither served nor listed"),
        ([[1, 2, 1], [3, 4], [5, 6]], [], "visited twice"),
        ([[1, 2], [3, 4], [5, 6]], [1], "listed as unassigned but visited"),
        ([[1, 2], [3, 4], [5, 6], [0]], [], "not a task id"),
    ],
)
def test_checker_reports_violations(
    routes: list[list[int]], unassigned: list[int], needle: str
) -> None:
    inst = read_lilim(TINY)
    found = check_routes(inst, routes, unassigned)
    assert any(needle in v for v in found), found


def test_checker_catches_time_windows_and_capacity() -> None:
    base = read_lilim(TINY)
    # Interleaving 5 + 7 fits Q = 20, not Q = 10.
    assert check_routes(base, [[1, 3, 2, 4], [5, 6]]) == []
    small = replace(base, capacity=10)
    assert any("load 12" in v for v in check_routes(small, [[1, 3, 2, 4], [5, 6]]))
    # Arrival times are recomputed from the coordinates: x10 distances miss windows.
    assert check_routes(base, [[1, 2, 3, 4, 5, 6]]) == []
    far = replace(base, coords=base.coords * 10)
    found = check_routes(far, [[1, 2, 3, 4, 5, 6]])
    assert any("task 3 starts at" in v for v in found), found


@needs_shared
def test_run_all_smoke() -> None:
    res = run_all(LILIM / "instances", time_limit_s=1.0, limit=2)
    assert set(res) == {"lilim", "vroom", "pyvrp"}
    for engine, summary in res.items():
        if summary is None:  # peer not installed
            assert engine != "lilim"
            continue
        assert set(summary) >= KEYS, engine
        assert summary["instances"] == 2
        assert summary["infeasible"] == 0, (engine, summary["per_instance"])
        assert summary["unassigned_total"] == 0
        assert summary["vehicles_total"] >= summary["bks_vehicles_total"]
        assert 0.0 <= summary["share_vehicles_le_bks"] <= 1.0
        assert math.isnan(summary["mean_gap_pct"]) or summary["mean_gap_pct"] > -0.01
        for row in summary["per_instance"]:
            assert row["violations"] == []

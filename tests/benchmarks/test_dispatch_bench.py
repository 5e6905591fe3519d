"""Smoke run of the live re-planning benchmark: keys, feasibility, improvement."""

from __future__ import annotations

from benchmarks.dispatch_bench import run


def test_snapshot_benchmark_smoke() -> None:
    result = run(sizes=((40, 15),), insertions=10, limits=(0.5, 1.0), insertion_snapshot=(40, 15))
    (snap,) = result["snapshots"]
    assert {"orders", "couriers", "first_feasible_s", "objective_1s", "objective_5s"} <= set(snap)
    assert snap["unassigned_first"] == 0  # the one-pass plan serves every order
    assert snap["objective_1s"] <= snap["objective_first"]
    assert snap["objective_5s"] <= snap["objective_first"]
    ins = result["insertion_ms"]
    assert ins["n"] == 10 and 0 < ins["p50"] <= ins["p99"]
    fix = result["position_fix_us"]
    assert fix["n"] == 5 * 15 and 0 < fix["p50"] <= fix["p99"]

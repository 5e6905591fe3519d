"""The validator: a valid solution passes; each rule catches a solution broken for it.

The base is the bundling run on the tiny instance (minutes)::

    assignments  2: 10 20 c1 o1 o2       3: 20 30 c2 o3
    moves        2: c1 10 0 r1   3: c1 22 r1 o1   4: c1 32 o1 o2   5: c2 20 0 r2   6: c2 32 r2 o3
    orders       2: o1 5 20 20 30 c1   3: o2 8 18 20 36 c1   4: o3 20 30 30 44 c2
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from simulations.run import run_scenario
from simulations.scenarios import Scenario
from simulations.solution import (
    ASSIGNMENTS_FILE,
    AssignmentRow,
    MoveRow,
    OrderRow,
    Solution,
    read_solution,
    write_solution,
)
from simulations.validate import RULES, Violation, validate_dir, validate_solution


@pytest.fixture(scope="module")
def base(tiny: Scenario) -> Solution:
    sol = run_scenario(tiny, "bundling").solution
    assert [(a.assignment_time, a.pickup_time, a.courier, a.orders) for a in sol.assignments] == [
        (10, 20, "c1", ("o1", "o2")),
        (20, 30, "c2", ("o3",)),
    ]
    return sol


def _with(sol: Solution, kind: str, index: int, **changes: object) -> Solution:
    rows = list(getattr(sol, kind))
    rows[index] = replace(rows[index], **changes)
    return replace(sol, **{kind: rows})


def _rules(violations: list[Violation]) -> set[str]:
    return {v.rule for v in violations}


def test_valid_solution_passes_also_after_a_file_round_trip(
    tiny: Scenario, base: Solution, tmp_path: Path
) -> None:
    assert validate_solution(tiny, base) == []
    write_solution(base, tmp_path)
    assert read_solution(tmp_path) == base
    assert validate_dir(tiny, tmp_path) == []


def test_format(tiny: Scenario, base: Solution, tmp_path: Path) -> None:
    write_solution(base, tmp_path)
    (tmp_path / ASSIGNMENTS_FILE).write_text("time pickup courier order\n")
    [v] = validate_dir(tiny, tmp_path)
    assert (v.rule, v.file, v.line) == ("format", ASSIGNMENTS_FILE, 1)
    (tmp_path / ASSIGNMENTS_FILE).unlink()
    assert _rules(validate_dir(tiny, tmp_path)) == {"format"}


def test_unknown_id(tiny: Scenario, base: Solution) -> None:
    sol = _with(base, "moves", 0, destination="r9")
    assert "unknown_id" in _rules(validate_solution(tiny, sol))


def test_order_once(tiny: Scenario, base: Solution) -> None:
    sol = replace(base, assignments=[*base.assignments, AssignmentRow(20, 30, "c2", ("o3",))])
    [v] = validate_solution(tiny, sol)
    assert (v.rule, v.line) == ("order_once", 4)
    sol = replace(base, orders=[*base.orders, base.orders[0]])
    assert _rules(validate_solution(tiny, sol)) == {"order_once"}


def test_assigned_before_placed(tiny: Scenario, base: Solution) -> None:
    [v] = validate_solution(tiny, _with(base, "assignments", 1, assignment_time=19))
    assert (v.rule, v.line) == ("assigned_before_placed", 3)


def test_one_restaurant(tiny: Scenario, base: Solution) -> None:
    sol = _with(base, "assignments", 0, orders=("o1", "o2", "o3"))
    assert "one_restaurant" in _rules(validate_solution(tiny, sol))


def test_pickup_after_off(tiny: Scenario, base: Solution) -> None:
    c2 = replace(tiny.courier_index["c2"], shift_end=25 * 60.0)
    early_off = replace(tiny, couriers=(tiny.couriers[0], c2, tiny.couriers[2]))
    [v] = validate_solution(early_off, base)
    assert (v.rule, v.line) == ("pickup_after_off", 3)


def test_pickup_before_ready(tiny: Scenario, base: Solution) -> None:
    sol = _with(base, "assignments", 1, pickup_time=29)
    sol = _with(sol, "orders", 2, pickup_time=29)
    [v] = validate_solution(tiny, sol)
    assert (v.rule, v.file, v.line) == ("pickup_before_ready", ASSIGNMENTS_FILE, 3)


def test_dropoff_sequence(tiny: Scenario, base: Solution) -> None:
    [v] = validate_solution(tiny, _with(base, "assignments", 0, orders=("o2", "o1")))
    assert v.rule == "dropoff_sequence" and "less than 4 min" in v.message
    sol = _with(base, "orders", 0, dropoff_time=19)
    assert "dropoff_sequence" in _rules(validate_solution(tiny, sol))


def test_order_record(tiny: Scenario, base: Solution) -> None:
    [v] = validate_solution(tiny, _with(base, "orders", 0, placement_time=6))
    assert (v.rule, v.line) == ("order_record", 2)
    sol = _with(base, "orders", 2, pickup_time=31)
    assert "order_record" in _rules(validate_solution(tiny, sol))
    missing = replace(base, orders=base.orders[:2])
    assert _rules(validate_solution(tiny, missing)) == {"order_record"}
    extra = replace(base, assignments=base.assignments[:1])
    assert "order_record" in _rules(validate_solution(tiny, extra))


def test_move_chain(tiny: Scenario, base: Solution) -> None:
    sol = _with(base, "moves", 2, origin="r1")
    assert "move_chain" in _rules(validate_solution(tiny, sol))
    first = _with(base, "moves", 0, origin="r1")
    assert "move_chain" in _rules(validate_solution(tiny, first))
    m = base.moves
    shuffled = replace(base, moves=[m[0], m[3], m[1], m[2], m[4]])
    assert "move_chain" in _rules(validate_solution(tiny, shuffled))


def test_move_timing(tiny: Scenario, base: Solution) -> None:
    v, w = validate_solution(tiny, _with(base, "moves", 3, departure_time=9))
    assert (v.rule, v.line) == ("move_timing", 5)  # c2 is on duty from 10
    assert (w.rule, w.line) == ("assigned_en_route", 3)  # and it left before minute 20
    sol = _with(base, "moves", 2, departure_time=27)  # arrives at o1 at 28
    assert "move_timing" in _rules(validate_solution(tiny, sol))


def test_not_at_place(tiny: Scenario, base: Solution) -> None:
    [v] = validate_solution(tiny, _with(base, "orders", 0, dropoff_time=27))
    assert (v.rule, v.line) == ("not_at_place", 2)
    sol = _with(base, "orders", 2, courier="c1")
    assert "not_at_place" in _rules(validate_solution(tiny, sol))


def test_service_time(tiny: Scenario, base: Solution) -> None:
    [v] = validate_solution(tiny, _with(base, "orders", 0, dropoff_time=28.5))
    assert (v.rule, v.line) == ("service_time", 2)
    # leaving r1 at 21 is before half a pickup service after the pickup at 20
    sol = _with(base, "moves", 1, departure_time=21)
    assert "service_time" in _rules(validate_solution(tiny, sol))


def test_assigned_en_route(tiny: Scenario, base: Solution) -> None:
    # c2 left for r2 at 20 and arrives at 25 (pickup at 30): a bundle assigned at 25 was
    # given after it left (basic rules), or updated at the restaurant (updates variant)
    on_site = _with(base, "assignments", 1, assignment_time=25)
    [v] = validate_solution(tiny, on_site)
    assert (v.rule, v.line) == ("assigned_en_route", 3)
    assert validate_solution(tiny, on_site, "updates") == []
    assert validate_solution(tiny, on_site, "free") == []
    # assigned at 22, while driving: no update can happen on the way
    driving = _with(base, "assignments", 1, assignment_time=22)
    assert _rules(validate_solution(tiny, driving, "updates")) == {"assigned_en_route"}
    assert validate_solution(tiny, driving, "free") == []
    # after the pickup: not an update either
    late = _with(base, "assignments", 1, assignment_time=31)
    assert "assigned_en_route" in _rules(validate_solution(tiny, late, "updates"))
    with pytest.raises(ValueError, match="rules"):
        validate_solution(tiny, base, "fancy")  # type: ignore[arg-type]


def test_every_rule_has_a_test() -> None:
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert set(RULES) <= tested


def test_moves_row_defaults_line_to_position(tiny: Scenario, base: Solution) -> None:
    sol = replace(
        base,
        moves=[MoveRow(m.courier, m.departure_time, m.origin, m.destination) for m in base.moves],
    )
    sol = replace(sol, orders=[replace(o, line=0) for o in sol.orders])
    assert validate_solution(tiny, sol) == []
    bad = _with(sol, "orders", 1, dropoff_time=OrderRow("o2", 8, 18, 20, 36, "c1").dropoff_time - 1)
    assert [v.line for v in validate_solution(tiny, bad)] == [3]

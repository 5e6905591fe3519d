"""Assignment updates (the published MDRP variant): the engine's AssignmentUpdate decision,
the validator's rules for it and the ``ortools-updates`` policy.

Times in the comments are minutes of the tiny instance (100 m/min, 4-minute services):
c1 starts at r1 (0, 0); o1 (r1, ready 20, door 6 min away), o2 (r1, placed 8, ready 18,
door 8 min away), o3 (r2, placed 20, ready 30); c2 starts 5 min from r2, 12 from r1.
"""

from __future__ import annotations

import filecmp
from collections.abc import Sequence
from pathlib import Path

import pytest

from simulations.engine import EngineConfig, SimulationError, SimView, simulate
from simulations.policies import make_policy
from simulations.policies.ortools import OrToolsPolicy
from simulations.policy import Assignment, AssignmentUpdate, Decision
from simulations.run import run_scenario
from simulations.scenarios import Scenario
from simulations.solution import (
    ASSIGNMENTS_FILE,
    COURIERS_FILE,
    ORDERS_FILE,
    solution_from_result,
    write_solution,
)
from simulations.validate import validate_dir, validate_solution
from tests.simulations.test_engine import Scripted


def test_update_adds_a_ready_order_to_the_bundle(tiny: Scenario, tmp_path: Path) -> None:
    # minute 9: c1 (at r1) gets o1: a zero-length move, pickup max(20, 11) = 20; it waits.
    # minute 10: o2 (ready 18) joins the bundle: the pickup stays at 20, drop-offs o1 at
    # 20 + 2 + 6 + 2 = 30, o2 at 30 + 2 + 2 + 2 = 36.
    plan: dict[float, list[Decision]] = {
        540: [Assignment("c1", "r1", ("o1",))],
        600: [AssignmentUpdate("c1", "r1", ("o2",))],
    }
    policy = Scripted(plan)
    sim = simulate(tiny, policy, EngineConfig(strict=True))
    assert sim.rejections == [] and sim.updates == 1
    assert policy.arrivals == [(540, "c1", "r1", ("o1",))]
    assert policy.couriers[600]["c1"].pickup_at == 1200  # waiting at r1 for the pickup at 20
    assert policy.couriers[1260]["c1"].pickup_at is None  # picked up
    for oid, drop in (("o1", 30), ("o2", 36)):
        o = sim.orders[oid]
        assert (o.courier_id, o.picked_up_at, o.delivered_at) == ("c1", 1200, drop * 60)
    assert next(v.order_ids for v in sim.pickups if v.courier_id == "c1") == ("o1", "o2")
    solution = solution_from_result(sim)
    row = next(a for a in solution.assignments if a.courier == "c1")
    assert (row.assignment_time, row.pickup_time, row.orders) == (10, 20, ("o1", "o2"))
    assert validate_solution(tiny, solution, "updates") == []
    # under the basic rules the courier left for r1 (minute 9) before the bundle was final
    basic = validate_solution(tiny, solution)
    assert [v.rule for v in basic] == ["assigned_en_route"]
    assert validate_solution(tiny, solution, "free") == []
    write_solution(solution, tmp_path)
    assert validate_dir(tiny, tmp_path, "updates") == []
    assert [v.rule for v in validate_dir(tiny, tmp_path)] == ["assigned_en_route"]
    lines = (tmp_path / ASSIGNMENTS_FILE).read_text().splitlines()
    assert lines[0] == "assignment_time pickup_time courier order"
    assert "10 20 c1 o1 o2" in lines


def test_update_with_an_order_not_ready_delays_the_pickup(tiny: Scenario) -> None:
    # minute 9: c1 gets o2 (ready 18): pickup at 18. Minute 10: o1 (ready 20) joins with
    # drop-offs o2 then o1: the pickup moves to 20 (the SERVICE event at 18 is dropped).
    plan: dict[float, list[Decision]] = {
        540: [Assignment("c1", "r1", ("o2",))],
        600: [AssignmentUpdate("c1", "r1", ("o1",), dropoffs=("o2", "o1"))],
    }
    sim = simulate(tiny, Scripted(plan), EngineConfig(strict=True, record_events=True))
    assert sim.rejections == []
    assert sim.orders["o1"].picked_up_at == sim.orders["o2"].picked_up_at == 1200
    assert sim.orders["o2"].delivered_at == (20 + 2 + 8 + 2) * 60
    assert sim.orders["o1"].delivered_at == (32 + 2 + 2 + 2) * 60
    services = [t for t, kind, who in sim.event_log if kind.name == "SERVICE" and who == "c1"]
    assert 1080 not in services and 1200 in services
    solution = solution_from_result(sim)
    assert validate_solution(tiny, solution, "updates") == []
    row = next(a for a in solution.assignments if a.courier == "c1")
    assert (row.pickup_time, row.orders) == (20, ("o2", "o1"))


Plan = dict[float, list[Decision]]
C1_O1: Plan = {540: [Assignment("c1", "r1", ("o1",))]}  # c1 at r1 from 9, pickup at 20
C2_O3: Plan = {1200: [Assignment("c2", "r2", ("o3",))]}  # c2 drives to r2 (20-25), pickup 30
ILLEGAL: list[tuple[Plan, str]] = [
    ({**C2_O3, 1260: [AssignmentUpdate("c2", "r2", ("o2",))]}, "not_at_restaurant"),  # en route
    ({600: [AssignmentUpdate("c2", "r1", ("o2",))]}, "not_at_restaurant"),  # idle
    ({**C1_O1, 600: [AssignmentUpdate("c1", "r2", ("o2",))]}, "not_at_restaurant"),  # at r1
    ({**C2_O3, 1560: [AssignmentUpdate("c2", "r2", ("o2",))]}, "wrong_restaurant"),  # o2: r1
    ({**C1_O1, **C2_O3, 1560: [AssignmentUpdate("c2", "r2", ("o1",))]}, "not_pending"),
    ({**C1_O1, 1260: [AssignmentUpdate("c1", "r1", ("o2",))]}, "already_picked_up"),  # at 20
    ({**C1_O1, 600: [AssignmentUpdate("c1", "r1", ("o2",), ("o2",))]}, "bad_sequence"),
    ({**C1_O1, 600: [AssignmentUpdate("c1", "r1", ("o3",))]}, "not_placed"),
    ({**C1_O1, 600: [AssignmentUpdate("c1", "r1", ())]}, "empty_bundle"),
    ({600: [AssignmentUpdate("c9", "r1", ("o2",))]}, "unknown_courier"),
]


@pytest.mark.parametrize(("plan", "reason"), ILLEGAL)
def test_illegal_updates_are_rejected(
    tiny: Scenario, plan: dict[float, list[Decision]], reason: str
) -> None:
    sim = simulate(tiny, Scripted(plan))
    assert [r.reason for r in sim.rejections] == [reason]
    assert sim.updates == 0
    assert validate_solution(tiny, solution_from_result(sim)) == []  # nothing changed
    with pytest.raises(SimulationError, match=reason):
        simulate(tiny, Scripted(plan), EngineConfig(strict=True))


def test_update_is_rejected_in_free_mode(tiny: Scenario) -> None:
    plan: dict[float, list[Decision]] = {600: [AssignmentUpdate("c1", "r1", ("o2",))]}
    sim = simulate(tiny, Scripted(plan), EngineConfig(mode="free"))
    assert [r.reason for r in sim.rejections] == ["update_in_free_mode"]


def test_projection_of_an_update(tiny: Scenario) -> None:
    seen = {}

    class Probe(Scripted):
        def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
            if now == 600:
                seen["ok"] = view.project(AssignmentUpdate("c1", "r1", ("o2",)))
                seen["bad"] = view.project(AssignmentUpdate("c1", "r2", ("o2",)))
            return super().on_tick(now, view)

    simulate(tiny, Probe({540: [Assignment("c1", "r1", ("o1",))]}))
    ok, bad = seen["ok"], seen["bad"]
    assert ok.ok and bad.reason == "not_at_restaurant"
    assert [(s.order_id, s.kind, t) for s, _, t in ok.stops] == [
        ("o1", "pickup", 1200), ("o2", "pickup", 1200),
        ("o1", "dropoff", 1800), ("o2", "dropoff", 2160),
    ]  # fmt: skip
    assert ok.end == 2280 and ok.end_place.id == "o2"


class ScriptedUpdates(OrToolsPolicy):
    """``ortools-updates``' updates (arrival hook and ticks) with scripted assignments
    instead of the matching."""

    def __init__(self, plan: dict[float, list[Decision]]) -> None:
        super().__init__(assignment_updates=True, name="scripted-updates")
        self.plan = plan

    def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
        updates = self._tick_updates(now, view, set()) if self.assignment_updates else []
        return [*updates, *self.plan.get(now, [])]


def test_policy_adds_a_ready_order_on_arrival(tiny: Scenario) -> None:
    # minute 10: c2 is sent to r1 for o1 (12 min away): it arrives at 22, pickup at 24.
    # o2 (ready 18) is pending: the policy adds it on arrival, nobody waits longer.
    policy = ScriptedUpdates({600: [Assignment("c2", "r1", ("o1",))]})
    sim = simulate(tiny, policy, EngineConfig(strict=True))
    assert sim.updates == 1
    assert sim.orders["o2"].courier_id == "c2"
    assert sim.orders["o1"].picked_up_at == sim.orders["o2"].picked_up_at == 24 * 60
    assert sim.assigned_at["o2"] == 22 * 60
    assert sim.orders["o1"].delivered_at == (24 + 2 + 6 + 2) * 60  # o1 first: not delayed
    solution = solution_from_result(sim)
    assert validate_solution(tiny, solution, "updates") == []
    # the plain policy's hook does nothing
    plain = ScriptedUpdates({600: [Assignment("c2", "r1", ("o1",))]})
    plain.assignment_updates = False
    assert simulate(tiny, plain).updates == 0


def test_policy_does_not_add_an_order_ready_after_the_pickup(tiny: Scenario) -> None:
    # c1 at r1 gets o2 (ready 18) at minute 9; o1 is ready only at 20: with no slack it is
    # not added at the arrival (9) nor while c1 waits (ticks 10-17)
    policy = ScriptedUpdates({540: [Assignment("c1", "r1", ("o2",))]})
    sim = simulate(tiny, policy, EngineConfig(strict=True))
    assert sim.updates == 0 and sim.orders["o1"].status == "placed"
    # with 2 minutes of slack it joins (the pickup moves from 18 to 20)
    policy = ScriptedUpdates({540: [Assignment("c1", "r1", ("o2",))]})
    policy.update_slack_s = 120.0
    sim = simulate(tiny, policy, EngineConfig(strict=True))
    assert sim.updates == 1
    assert sim.orders["o1"].picked_up_at == sim.orders["o2"].picked_up_at == 1200


def test_policy_adds_an_order_placed_while_the_courier_waits(tiny: Scenario) -> None:
    # minute 5: c1 (at r1) gets o1, pickup at 20; o2 is placed at 8 (ready 18): added at
    # the tick of minute 8, while c1 waits
    policy = ScriptedUpdates({300: [Assignment("c1", "r1", ("o1",))]})
    sim = simulate(tiny, policy, EngineConfig(strict=True))
    assert sim.updates == 1 and sim.assigned_at["o2"] == 8 * 60
    assert sim.orders["o2"].picked_up_at == 1200 and sim.orders["o2"].courier_id == "c1"
    assert validate_solution(tiny, solution_from_result(sim), "updates") == []


def test_updates_run_is_deterministic_and_valid(real_small: Scenario, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ra = run_scenario(real_small, "ortools-updates", out_dir=a)
    run_scenario(real_small, "ortools-updates", out_dir=b)
    for f in (ASSIGNMENTS_FILE, ORDERS_FILE, COURIERS_FILE):
        assert filecmp.cmp(a / f, b / f, shallow=False), f
    assert ra.violations == [] and ra.rejections == []
    assert ra.kpis["assignment_updates"] == ra.sim.updates > 0
    assert validate_dir(real_small, a, "updates") == []
    # the same files break the basic rules exactly where a bundle was updated
    basic = validate_dir(real_small, a)
    assert basic and {v.rule for v in basic} == {"assigned_en_route"}
    assert len(basic) <= ra.sim.updates
    plain = run_scenario(real_small, "ortools")
    assert plain.kpis["assignment_updates"] == 0 and plain.violations == []


def test_registry_names() -> None:
    p = make_policy("ortools-updates")
    assert isinstance(p, OrToolsPolicy) and p.assignment_updates and not p.preposition
    assert p.name == "ortools-updates"
    q = make_policy("ortools-prepos-updates")
    assert isinstance(q, OrToolsPolicy) and q.assignment_updates and q.preposition
    assert not OrToolsPolicy().assignment_updates

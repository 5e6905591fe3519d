"""Prepositioning (the published MDRP variant): the engine's Reposition decision and the
``ortools-prepos`` policy."""

from __future__ import annotations

import filecmp
from collections.abc import Sequence
from pathlib import Path

import pytest

from simulations.engine import EngineConfig, SimulationError, SimView, simulate
from simulations.policies import make_policy
from simulations.policies.ortools import OrToolsPolicy
from simulations.policy import Assignment, Decision, Reposition
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


@pytest.mark.parametrize(
    ("decision", "at", "reason"),
    [
        (Reposition("c1", "r2"), 360, "courier_busy"),  # c1 got o1 at minute 5
        (Reposition("c2", "r2"), 300, "off_duty"),  # c2 starts at minute 10
        (Reposition("c9", "r2"), 300, "unknown_courier"),
        (Reposition("c2", "zz"), 600, "unknown_restaurant"),
        (Reposition("c1", "r1"), 240, "already_there"),  # c1 starts at r1's point
        (Reposition("c3", "r1"), 9000, "arrive_after_off"),  # 71 min away, off in 10
    ],
)
def test_bad_repositions_are_rejected(
    tiny: Scenario, decision: Decision, at: float, reason: str
) -> None:
    plan: dict[float, list[Decision]] = {at: [decision]}
    if reason == "courier_busy":
        plan[300] = [Assignment("c1", "r1", ("o1",))]
    sim = simulate(tiny, Scripted(plan))
    assert [r.reason for r in sim.rejections] == [reason]
    reposition_moves = [m for ms in sim.moves.values() for m in ms if m.destination == "r2"]
    assert reposition_moves == []
    with pytest.raises(SimulationError, match=reason):
        simulate(tiny, Scripted(plan), EngineConfig(strict=True))


def test_reposition_is_rejected_in_free_mode(tiny: Scenario) -> None:
    sim = simulate(tiny, Scripted({600: [Reposition("c2", "r2")]}), EngineConfig(mode="free"))
    assert [r.reason for r in sim.rejections] == ["reposition_in_free_mode"]


def test_repositioned_courier_moves_are_in_the_files_and_valid(
    tiny: Scenario, tmp_path: Path
) -> None:
    # minute 5: c1 (idle at r1) is sent to r2 (10 min away, arrives 15); minute 6: it gets
    # o1 of r1 while driving: it finishes the move, drives back (arrive 25), picks up at
    # max(20, 27) = 27. minute 10: c2 (on duty now) is sent to r2 (5 min, arrives 15) and
    # waits there; minute 20 it gets o3 of r2: a zero-length move, pickup max(30, 22) = 30.
    plan: dict[float, list[Decision]] = {
        300: [Reposition("c1", "r2")],
        360: [Assignment("c1", "r1", ("o1",))],
        600: [Reposition("c2", "r2")],
        1200: [Assignment("c2", "r2", ("o3",))],
    }
    policy = Scripted(plan)
    sim = simulate(tiny, policy, EngineConfig(strict=True))
    assert sim.rejections == []
    state = {
        t: {c.id: (c.free_at, c.free_place.id) for c in cs.values()}
        for t, cs in policy.couriers.items()
    }
    assert state[360]["c1"] == (900, "r2")  # free when the reposition ends
    assert state[660]["c2"] == (900, "r2")
    c1 = [(m.departure / 60, m.origin, m.destination) for m in sim.moves["c1"]]
    assert c1 == [(5, "0", "r2"), (15, "r2", "r1"), (29, "r1", "o1")]
    c2 = [(m.departure / 60, m.origin, m.destination) for m in sim.moves["c2"]]
    assert c2 == [(10, "0", "r2"), (20, "r2", "r2"), (32, "r2", "o3")]
    assert sim.orders["o1"].picked_up_at == 27 * 60
    assert sim.orders["o3"].picked_up_at == 30 * 60
    solution = solution_from_result(sim)
    assert validate_solution(tiny, solution) == []
    write_solution(solution, tmp_path)
    assert validate_dir(tiny, tmp_path) == []
    lines = (tmp_path / COURIERS_FILE).read_text().splitlines()
    assert lines[0] == "courier departure_time origin destination"
    assert "c2 10 0 r2" in lines and "c2 20 r2 r2" in lines


def _moves_to_wait(res_sim: object) -> int:
    """Moves ending at a restaurant where the courier then picks nothing up."""
    from simulations.engine import SimResult

    assert isinstance(res_sim, SimResult)
    picks = {(v.courier_id, v.arrival) for v in res_sim.pickups}
    rests = set(res_sim.scenario.restaurants)
    return sum(
        1
        for cid, ms in res_sim.moves.items()
        for m in ms
        if m.destination in rests and (cid, m.arrival) not in picks
    )


def test_prepositioning_run_is_deterministic_and_valid(
    real_small: Scenario, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ra = run_scenario(real_small, "ortools-prepos", out_dir=a)
    rb = run_scenario(real_small, "ortools-prepos", out_dir=b)
    for f in (ASSIGNMENTS_FILE, ORDERS_FILE, COURIERS_FILE):
        assert filecmp.cmp(a / f, b / f, shallow=False), f
    assert ra.violations == [] and rb.violations == []
    assert ra.rejections == []
    assert validate_dir(real_small, a) == []
    assert _moves_to_wait(ra.sim) > 0  # it did preposition
    plain = run_scenario(real_small, "ortools")
    assert _moves_to_wait(plain.sim) == 0  # opt-in: the default never does


class Watching(OrToolsPolicy):
    """``ortools-prepos`` recording every courier state it sends somewhere."""

    def __init__(self) -> None:
        super().__init__(preposition=True, name="watching")
        self.sent: list[tuple[float, str, bool, float, float, float]] = []

    def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
        out = super().on_tick(now, view)
        for d in out:
            if isinstance(d, Reposition):
                c = view.courier(d.courier_id)
                arrive = view.project(d).end
                self.sent.append((now, c.id, c.on_duty and c.idle, c.shift_end, arrive, now))
        return out


def test_policy_never_sends_a_courier_off_duty(real_small: Scenario) -> None:
    policy = Watching()
    res = run_scenario(real_small, policy)
    assert policy.sent, "expected some repositioning on this instance"
    for now, cid, idle_on_duty, shift_end, arrive, _ in policy.sent:
        assert idle_on_duty, cid
        assert now < shift_end and arrive <= shift_end, (cid, now, arrive, shift_end)
    assert res.rejections == []
    assert res.violations == []
    # in the run itself every move to a restaurant without pickup ends on duty
    ends = {c.id: c.shift_end for c in real_small.couriers}
    picks = {(v.courier_id, v.arrival) for v in res.sim.pickups}
    for cid, ms in res.sim.moves.items():
        for m in ms:
            if m.destination in real_small.restaurants and (cid, m.arrival) not in picks:
                assert m.arrival <= ends[cid]


def test_registry_names() -> None:
    p = make_policy("ortools-prepos")
    assert isinstance(p, OrToolsPolicy) and p.preposition and p.name == "ortools-prepos"
    q = make_policy("ortools")
    assert isinstance(q, OrToolsPolicy) and not q.preposition

"""The event engine: determinism, event order, MDRP timing, no diversion, decision checks."""

from __future__ import annotations

import filecmp
import itertools
from collections.abc import Sequence
from pathlib import Path

import pytest

from dispatch.model import Order, StopKind
from simulations.engine import (
    CourierState,
    EngineConfig,
    EventKind,
    SimulationError,
    SimView,
    simulate,
)
from simulations.policy import Assignment, BasePolicy, Decision, Reroute, StopRef
from simulations.run import run_scenario
from simulations.scenarios import Scenario
from simulations.solution import ASSIGNMENTS_FILE, COURIERS_FILE, ORDERS_FILE, solution_from_result
from simulations.validate import validate_solution


class Scripted(BasePolicy):
    """Applies given decisions at given tick times (seconds); records what it saw: the
    pending orders and the couriers' states at each tick, and each arrival at a
    restaurant (courier, restaurant, the bundle it came for)."""

    name = "scripted"

    def __init__(self, plan: dict[float, list[Decision]]) -> None:
        self.plan = plan
        self.seen: list[tuple[float, list[str]]] = []
        self.couriers: dict[float, dict[str, CourierState]] = {}
        self.arrivals: list[tuple[float, str, str, tuple[str, ...]]] = []

    def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
        self.seen.append((now, [o.id for o in view.pending_orders()]))
        self.couriers[now] = {c.id: c for c in view.couriers()}
        return self.plan.get(now, [])

    def on_courier_arrived(
        self, now: float, courier: CourierState, restaurant_id: str, view: SimView
    ) -> Sequence[Decision]:
        self.arrivals.append((now, courier.id, restaurant_id, courier.assigned))
        return ()


def test_same_seed_same_files(tiny: Scenario, real_small: Scenario, tmp_path: Path) -> None:
    for sc in (tiny, real_small):
        for policy in ("greedy", "bundling"):
            a, b = tmp_path / f"{sc.name}{policy}a", tmp_path / f"{sc.name}{policy}b"
            run_scenario(sc, policy, seed=3, out_dir=a)
            run_scenario(sc, policy, seed=3, out_dir=b)
            for f in (ASSIGNMENTS_FILE, ORDERS_FILE, COURIERS_FILE):
                assert filecmp.cmp(a / f, b / f, shallow=False), (sc.name, policy, f)


def test_events_are_ordered_and_ties_reproducible(tiny: Scenario) -> None:
    config = EngineConfig(record_events=True)
    log1 = simulate(tiny, Scripted({}), config).event_log
    log2 = simulate(tiny, Scripted({}), config).event_log
    assert log1 == log2
    keys = [(t, int(k)) for t, k, _ in log1]
    assert keys == sorted(keys)
    # at minute 10 courier c2 starts before the tick sees it; o1's placement at 5 precedes
    # the tick at 5
    at5 = [(k, s) for t, k, s in log1 if t == 300]
    assert at5 == [(EventKind.ORDER_PLACED, "o1"), (EventKind.TICK, "")]
    at10 = [k for t, k, _ in log1 if t == 600]
    assert at10 == [EventKind.SHIFT_ON, EventKind.TICK]


def test_tick_sees_orders_placed_at_the_same_instant(tiny: Scenario) -> None:
    p = Scripted({})
    simulate(tiny, p)
    assert p.seen[5] == (300, ["o1"])
    assert p.seen[4] == (240, [])


def test_courier_never_in_two_places(real_small: Scenario) -> None:
    res = run_scenario(real_small, "bundling")
    for cid, moves in res.sim.moves.items():
        for a, b in itertools.pairwise(moves):
            assert b.departure >= a.arrival, cid
            assert b.origin == a.destination, cid
    assert res.violations == []


def test_mdrp_timing_no_diversion_and_positions(tiny: Scenario) -> None:
    # minute 5: c1 gets o1 (ready 20); minute 8: c1 (busy) gets o2 as well: it must
    # finish o1 first (drop 30, leave 32), then go back to r1 (6 min): arrive 38,
    # pickup max(18, 40) = 40, leave 42, drive 8 min to o2: drop at 50 + 2 = 52.
    plan: dict[float, list[Decision]] = {
        300: [Assignment("c1", "r1", ("o1",))],
        480: [Assignment("c1", "r1", ("o2",))],
    }
    sim = simulate(tiny, Scripted(plan), EngineConfig(strict=True))
    o1, o2 = sim.orders["o1"], sim.orders["o2"]
    assert (o1.picked_up_at, o1.delivered_at) == (1200, 1800)
    assert (o2.picked_up_at, o2.delivered_at) == (2400, 3120)
    moves = [(m.departure / 60, m.origin, m.destination) for m in sim.moves["c1"]]
    assert moves == [(5, "0", "r1"), (22, "r1", "o1"), (32, "o1", "r1"), (42, "r1", "o2")]
    assert sim.undelivered == {"o3": "never_assigned", "o4": "never_assigned"}
    from simulations.engine import Simulator

    s = Simulator(tiny, Scripted(plan), EngineConfig())
    s.run()
    assert s.position_at("c1", 0) == (0.0, 0.0)
    assert s.position_at("c1", 25 * 60) == (0.0, 300.0)  # halfway r1 -> o1 (22 -> 28)
    assert s.position_at("c1", 29 * 60) == (0.0, 600.0)
    assert s.position_at("c2", 30 * 60) == (1000.0, 500.0)  # never moved


@pytest.mark.parametrize(
    ("decision", "at", "reason"),
    [
        (Assignment("c1", "r1", ("o1",)), 240, "not_placed"),
        (Assignment("c1", "r1", ("zz",)), 300, "unknown_order"),
        (Assignment("c9", "r1", ("o1",)), 300, "unknown_courier"),
        (Assignment("c2", "r1", ("o1",)), 300, "off_duty"),
        (Assignment("c1", "r2", ("o1",)), 300, "wrong_restaurant"),
        (Assignment("c1", "r1", ()), 300, "empty_bundle"),
        (Assignment("c1", "r1", ("o1", "o1")), 300, "duplicate_order"),
        (Assignment("c3", "r1", ("o4",)), 9000, "pickup_after_off"),
        (
            Reroute("c1", (StopRef("o1", "pickup"), StopRef("o1", "dropoff"))),
            300,
            "reroute_in_mdrp_mode",
        ),
    ],
)
def test_bad_decisions_are_rejected_not_applied(
    tiny: Scenario, decision: Decision, at: float, reason: str
) -> None:
    sim = simulate(tiny, Scripted({at: [decision]}))
    assert [r.reason for r in sim.rejections] == [reason]
    assert all(o.status == "placed" for o in sim.orders.values())
    with pytest.raises(SimulationError, match=reason):
        simulate(tiny, Scripted({at: [decision]}), EngineConfig(strict=True))


def test_assigned_order_cannot_be_assigned_again(tiny: Scenario) -> None:
    a = Assignment("c1", "r1", ("o1",))
    sim = simulate(tiny, Scripted({300: [a], 360: [a]}))
    assert [r.reason for r in sim.rejections] == ["not_pending"]
    assert sim.orders["o1"].status == "delivered"


def test_free_mode_reroute_steals_and_releases(tiny: Scenario) -> None:
    p: StopKind = "pickup"
    d: StopKind = "dropoff"
    plan: dict[float, list[Decision]] = {
        # c1 heads for o1 at r1 (travel 0, then waits for the food until 20)
        300: [Reroute("c1", (StopRef("o1", p), StopRef("o1", d)))],
        # c2 (on at 10) is given o2; at minute 11 c1 takes o2 over (c2 has not reached
        # r1: it is driving there, its committed leg is the pickup of o2 ...)
        600: [Reroute("c2", (StopRef("o2", p), StopRef("o2", d)))],
        # ... so stealing o2 is refused; c1 re-plans instead: o1 then drop-off of o1 only
        660: [
            Reroute("c1", (StopRef("o2", p), StopRef("o1", d), StopRef("o2", d))),
            Reroute("c1", (StopRef("o1", d),)),
        ],
        # c2 gives o2 back (empty plan after its committed leg is not allowed: the
        # committed pickup needs its drop-off, so this is refused too)
        720: [Reroute("c2", ())],
    }
    sim = simulate(tiny, Scripted(plan), EngineConfig(mode="free"))
    assert [r.reason for r in sim.rejections] == ["committed_elsewhere", "missing_dropoff"]
    assert sim.orders["o1"].courier_id == "c1" and sim.orders["o1"].status == "delivered"
    assert sim.orders["o2"].courier_id == "c2" and sim.orders["o2"].status == "delivered"


def test_free_mode_reroute_reassigns_queued_orders(tiny: Scenario) -> None:
    p: StopKind = "pickup"
    d: StopKind = "dropoff"
    plan: dict[float, list[Decision]] = {
        # c1 gets o1 and o2 queued after a first leg to r1 for o1
        480: [
            Reroute("c1", (StopRef("o1", p), StopRef("o2", p), StopRef("o1", d), StopRef("o2", d)))
        ],
    }

    class Then(Scripted):
        def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
            if now == 600:
                # c2 tries to take o2: refused, c1 is at r1 and its visit there already
                # includes o2 (consecutive pickups at one place are one visit)
                return [Reroute("c2", (StopRef("o2", p), StopRef("o2", d)))]
            return super().on_tick(now, view)

    sim = simulate(tiny, Then(plan), EngineConfig(mode="free"))
    # c1 was at r1 at minute 8 (travel 0) and merged both pickups into its visit
    assert [r.reason for r in sim.rejections] == ["committed_elsewhere"]
    assert sim.orders["o2"].courier_id == "c1"
    assert sim.orders["o1"].picked_up_at == sim.orders["o2"].picked_up_at == 1200


def test_free_mode_unassigns_orders_left_out(tiny: Scenario) -> None:
    p: StopKind = "pickup"
    d: StopKind = "dropoff"
    plan: dict[float, list[Decision]] = {
        # c1 (at r1) gets o1; queued after it: o3 at r2
        300: [Reroute("c1", (StopRef("o1", p), StopRef("o1", d)))],
        1200: [Reroute("c1", (StopRef("o1", d), StopRef("o3", p), StopRef("o3", d)))],
        # before reaching r2, c1 drops o3 from its plan: o3 is pending again
        1260: [Reroute("c1", (StopRef("o1", d),))],
    }
    seen: list[tuple[float, str]] = []

    class Watch(Scripted):
        def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
            if now in (1230, 1290):
                o: Order = view.order("o3")
                seen.append((now, o.status))
            return super().on_tick(now, view)

    sim = simulate(tiny, Watch(plan), EngineConfig(mode="free", tick_s=30))
    assert seen == [(1230, "assigned"), (1290, "placed")]
    assert sim.rejections == []
    assert sim.orders["o3"].status == "placed"
    assert sim.undelivered["o3"] == "never_assigned"


def test_courier_speed_factor_scales_travel(tiny: Scenario) -> None:
    """A courier with speed_factor 0.5 drives every leg in half the model's time, and the
    projection a policy sees agrees with what happens."""
    from dataclasses import replace

    fast = replace(tiny.courier_index["c1"], speed_factor=0.5)
    sc = replace(tiny, couriers=tuple(fast if c.id == "c1" else c for c in tiny.couriers))
    seen: list[float] = []

    class Probe(Scripted):
        def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
            if now == 1200:
                p = view.project(Assignment("c1", "r2", ("o3",)))
                seen.extend(t for _, _, t in p.stops)
            return super().on_tick(now, view)

    # minute 20: c1 at r1 (0, 0) gets o3 at r2 (1000 m: 10 min, 5 when twice as fast):
    # arrive 25, pickup max(30, 27) = 30, leave 32, 1000 m to the door in 5: drop 39
    sim = simulate(sc, Probe({1200: [Assignment("c1", "r2", ("o3",))]}), EngineConfig(strict=True))
    o3 = sim.orders["o3"]
    assert (o3.picked_up_at, o3.delivered_at) == (30 * 60, 39 * 60)
    assert seen == [30 * 60, 39 * 60]
    assert [(m.departure / 60, m.arrival / 60) for m in sim.moves["c1"]] == [(20, 25), (32, 37)]
    # the validator times moves with the courier's own factor too
    assert validate_solution(sc, solution_from_result(sim)) == []

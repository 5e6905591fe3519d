"""One tiny, hand-checkable case per modelled constraint of the OR-Tools engine.

Each case is built so that dropping the constraint would change the answer. Points sit
on a line (``x`` positions); travel time = distance = |x_i - x_j|, service 0 unless set.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from dispatch.problem import (
    Objective,
    ProblemBuilder,
    RoutingProblem,
    RoutingSolution,
    evaluate_routes,
)
from dispatch.solvers.ortools import SearchConfig, solve

T = 1.0  # seconds per solve: optimum long before, with margin for a loaded machine


def line_matrix(xs: Sequence[int]) -> npt.NDArray[np.int64]:
    x = np.asarray(xs, dtype=np.int64)
    out: npt.NDArray[np.int64] = np.abs(x[:, None] - x[None, :])
    return out


def visits(sol: RoutingSolution, vehicle: int) -> list[int]:
    route = sol.route_of(vehicle)
    return [] if route is None else list(route.nodes)


def accounted(problem: RoutingProblem, sol: RoutingSolution) -> None:
    """Every request is routed exactly once or dropped, never lost."""
    served = [
        s.request
        for r in sol.routes
        for s in r.visits
        if s.kind == "delivery" and s.request is not None
    ]
    dropped = [d.request for d in sol.dropped]
    assert sorted(served + dropped) == list(range(len(problem.requests)))


def test_precedence_pickup_before_delivery_on_one_vehicle() -> None:
    # Open route from 0; pickup at 10, delivery at 5: the short order 5, 10 is illegal.
    b = ProblemBuilder()
    xs = [0, 10, 5]
    depot, p, d = (b.add_node() for _ in xs)
    b.add_request(p, d)
    b.add_vehicle(depot, None, capacity=1)
    sol = solve(b.build(line_matrix(xs)), T)
    assert visits(sol, 0) == [p, d]
    assert sol.objective.travel_time_units == 15


def test_pair_served_by_one_vehicle() -> None:
    # Vehicles at 0 and 20; pickup at 1, delivery at 19: splitting would cost 2.
    b = ProblemBuilder()
    xs = [0, 20, 1, 19]
    s0, s1, p, d = (b.add_node() for _ in xs)
    b.add_request(p, d)
    b.add_vehicle(s0, None, capacity=1)
    b.add_vehicle(s1, None, capacity=1)
    sol = solve(b.build(line_matrix(xs)), T)
    assert visits(sol, 0) == [p, d]
    assert visits(sol, 1) == []


def test_time_window_forces_order_and_waiting_is_reported() -> None:
    # R2's pickup at 10 must start by 10; R1 first (5, 6) would reach it at 12.
    b = ProblemBuilder()
    depot = b.add_node()
    p1, d1 = b.add_node(service=1), b.add_node(service=1)
    p2, d2 = b.add_node(0, 10, service=1), b.add_node(service=1)
    late = b.add_node(40, 100)  # R3's pickup opens at 40: the vehicle waits there
    d3 = b.add_node()
    xs = [0, 5, 6, 10, 11, 12, 13]
    b.add_request(p1, d1)
    b.add_request(p2, d2)
    b.add_request(late, d3)
    b.add_vehicle(depot, None, capacity=3)
    sol = solve(b.build(line_matrix(xs)), T)
    route = visits(sol, 0)
    assert route[0] == p2
    stop = next(s for s in sol.routes[0].visits if s.node == late)
    assert stop.start == 40 and stop.arrival < 40
    assert sol.objective.waiting_units >= 40 - stop.arrival


def _promise_problem(due: int | None) -> RoutingProblem:
    b = ProblemBuilder(objective=Objective(travel_time=1, lateness=100))
    xs = [0, 5, 4, 10, 12]
    depot, p1, d1, p2, d2 = (b.add_node() for _ in xs)
    b.add_request(p1, d1)
    b.add_request(p2, d2, due=due)
    b.add_vehicle(depot, None, capacity=2)
    return b.build(line_matrix(xs))


def test_soft_promise_changes_the_route() -> None:
    # Without a due time R1 goes first (14); with R2 due at 12, R1 first would be 2 late.
    free = solve(_promise_problem(None), T)
    assert visits(free, 0)[0] == 1
    promised = solve(_promise_problem(12), T)
    assert visits(promised, 0)[:2] == [3, 4]
    assert promised.objective.lateness == 0
    # Soft, not hard: an impossible promise is paid for, the request is still served.
    late = solve(_promise_problem(5), T)
    assert not late.dropped and late.objective.lateness_units > 0


def test_hard_latest_infeasible_is_dropped_with_reason() -> None:
    b = ProblemBuilder()
    xs = [0, 1, 2, 50, 100]
    depot, p1, d1 = (b.add_node() for _ in range(3))
    p2, d2 = b.add_node(), b.add_node(0, 60)  # delivery at 100 must start by 60
    b.add_request(p1, d1)
    b.add_request(p2, d2)
    b.add_vehicle(depot, None, capacity=2)
    problem = b.build(line_matrix(xs))
    sol = solve(problem, T)
    assert [(d.request, d.reason) for d in sol.dropped] == [(1, "time_window")]
    assert visits(sol, 0) == [p1, d1]
    accounted(problem, sol)


def test_capacity_interleaving_and_overload_reason() -> None:
    # Capacity 1: p1 p2 d1 d2 (length 4) would carry 2; must go p1 d1 p2 d2.
    b = ProblemBuilder()
    xs = [0, 1, 3, 2, 4, 5, 6]
    depot, p1, d1, p2, d2, p3, d3 = (b.add_node() for _ in xs)
    b.add_request(p1, d1)
    b.add_request(p2, d2)
    b.add_request(p3, d3, load=2)  # never fits
    b.add_vehicle(depot, None, capacity=1)
    problem = b.build(line_matrix(xs))
    sol = solve(problem, T)
    assert visits(sol, 0) == [p1, d1, p2, d2]
    assert max(s.load for s in sol.routes[0].stops) <= 1
    assert [(d.request, d.reason) for d in sol.dropped] == [(2, "capacity")]


def test_shift_end_no_pickup_after_it() -> None:
    # Vehicle 0 (at 0) ends its shift at 5 and cannot reach the pickup at 10 by then;
    # vehicle 1 (at 30) can, although it is farther away.
    b = ProblemBuilder()
    xs = [0, 30, 10, 9]
    s0, s1, p, d = (b.add_node() for _ in xs)
    b.add_request(p, d)
    b.add_vehicle(s0, None, capacity=1, shift_end=5)
    b.add_vehicle(s1, None, capacity=1)
    sol = solve(b.build(line_matrix(xs)), T)
    assert visits(sol, 1) == [p, d]
    # Alone, the shift-ended vehicle is reported as the reason.
    b2 = ProblemBuilder()
    s0, p, d = (b2.add_node() for _ in range(3))
    b2.add_request(p, d)
    b2.add_vehicle(s0, None, capacity=1, shift_end=5)
    sol2 = solve(b2.build(line_matrix([0, 10, 9])), T)
    assert [d.reason for d in sol2.dropped] == ["shift_end"]


def test_open_route_has_no_return_cost() -> None:
    xs = [0, 10, 20]
    for end, expected in ((None, 20), (0, 40)):
        b = ProblemBuilder()
        depot, p, d = (b.add_node() for _ in xs)
        b.add_request(p, d)
        b.add_vehicle(depot, end, capacity=1)
        sol = solve(b.build(line_matrix(xs)), T)
        assert sol.objective.travel_time_units == expected
        assert sol.routes[0].stops[-1].kind == ("end" if end is not None else "delivery")


def test_on_board_request_stays_on_its_vehicle() -> None:
    # Goods on vehicle 1 (at 50) go to 1, right next to vehicle 0 (at 0).
    b = ProblemBuilder()
    xs = [0, 50, 1]
    s0, s1, d = (b.add_node() for _ in xs)
    b.add_request(None, d, load=2, allowed_vehicles=(1,))
    b.add_vehicle(s0, None, capacity=5)
    b.add_vehicle(s1, None, capacity=5)
    sol = solve(b.build(line_matrix(xs)), T)
    route = sol.route_of(1)
    assert route is not None and list(route.nodes) == [d]
    assert route.stops[0].load == 2 and route.stops[-1].load == 0


def test_locked_request_not_moved() -> None:
    b = ProblemBuilder()
    xs = [0, 50, 1, 2]
    s0, s1, p, d = (b.add_node() for _ in xs)
    b.add_request(p, d, locked_vehicle=1)
    b.add_vehicle(s0, None, capacity=1)
    b.add_vehicle(s1, None, capacity=1)
    sol = solve(b.build(line_matrix(xs)), T)
    assert visits(sol, 1) == [p, d] and visits(sol, 0) == []


def test_optional_request_dropped_by_penalty_never_lost() -> None:
    b = ProblemBuilder()
    xs = [0, 1, 2, 500, 501]
    depot, p1, d1, p2, d2 = (b.add_node() for _ in xs)
    b.add_request(p1, d1)
    b.add_request(p2, d2, drop_penalty=10)  # 1000 of travel > 10 of penalty
    b.add_vehicle(depot, 0, capacity=1)
    problem = b.build(line_matrix(xs))
    sol = solve(problem, T)
    assert [(d.request, d.reason) for d in sol.dropped] == [(1, "dropped_by_penalty")]
    assert sol.objective.dropped == 10
    accounted(problem, sol)


def test_mandatory_but_overconstrained_is_reported_not_lost() -> None:
    # Two mandatory requests whose pickups must both start at time 10, 20 apart.
    b = ProblemBuilder()
    xs = [0, 10, 11, -10, -11]
    depot = b.add_node()
    p1, d1 = b.add_node(10, 10), b.add_node()
    p2, d2 = b.add_node(10, 10), b.add_node()
    b.add_request(p1, d1)
    b.add_request(p2, d2)
    b.add_vehicle(depot, None, capacity=2)
    problem = b.build(line_matrix(xs))
    sol = solve(problem, T)
    assert len(sol.dropped) == 1 and sol.dropped[0].reason == "no_room"
    accounted(problem, sol)


def _six_requests(initial: Sequence[Sequence[int]] | None) -> RoutingProblem:
    b = ProblemBuilder()
    xs = [0, 0, 3, 7, 4, 9, 12, 14, 11, 15, 16, 18, 2, 5]
    depots = [b.add_node(), b.add_node()]
    nodes = [b.add_node() for _ in xs[2:]]
    for i in range(0, len(nodes), 2):
        b.add_request(nodes[i], nodes[i + 1])
    for dep in depots:
        b.add_vehicle(dep, dep, capacity=3)
    return b.build(line_matrix(xs), initial_routes=initial)


def test_warm_start_reproduces_or_improves_initial_routes() -> None:
    initial = [[2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13]]
    problem = _six_requests(initial)
    before = evaluate_routes(problem, {0: initial[0], 1: initial[1]}).total
    # solution_limit=1: only the warm start itself is accepted, it comes back as is.
    same = solve(problem, T, solution_limit=1)
    assert [list(r.nodes) for r in same.routes] == initial
    better = solve(problem, T)
    assert better.objective.total <= before
    assert not better.dropped


def test_same_seed_same_routes() -> None:
    problem = _six_requests(None)
    cfg = SearchConfig()
    a = solve(problem, T, seed=3, config=cfg, solution_limit=200)
    b = solve(problem, T, seed=3, config=cfg, solution_limit=200)
    assert [list(r.nodes) for r in a.routes] == [list(r.nodes) for r in b.routes]
    assert a.objective == b.objective


def test_stats_are_filled() -> None:
    sol = solve(_six_requests(None), T)
    assert sol.stats.first_solution_s is not None and sol.stats.trace
    assert sol.stats.status in {"success", "optimal", "partial_success", "fail_timeout"}


@pytest.mark.parametrize("fixed", [0, 1000])
def test_vehicle_fixed_cost_uses_fewer_vehicles(fixed: int) -> None:
    # Two requests near two depots; with a high fixed cost one vehicle does both.
    b = ProblemBuilder(objective=Objective(vehicle_fixed=fixed))
    d0, d1 = b.add_node(), b.add_node()
    p1, q1, p2, q2 = (b.add_node() for _ in range(4))
    b.add_request(p1, q1)
    b.add_request(p2, q2)
    b.add_vehicle(d0, None, capacity=2)
    b.add_vehicle(d1, None, capacity=2)
    xs = [0, 30, 1, 2, 30, 31]
    sol = solve(b.build(line_matrix(xs)), T)
    assert sol.vehicles_used == (1 if fixed else 2)


def _six_requests_fixed(initial: Sequence[Sequence[int]] | None) -> RoutingProblem:
    base = _six_requests(initial)
    return replace(base, objective=Objective(vehicle_fixed=1000))


def test_fleet_phases_rebuild_the_warm_start_and_drop_a_vehicle() -> None:
    # Fixed costs switch on the warm-started ILS phases (fleet_strategy "warm").
    initial = [[2, 3, 4, 5], [6, 7, 8, 9, 10, 11, 12, 13]]
    problem = _six_requests_fixed(initial)
    assert SearchConfig().eliminate_routes and SearchConfig().fleet_strategy == "warm"
    # One accepted solution per phase: each phase's first solution is the plan it was
    # given (rebuilt by EVALUATOR_STRATEGY), and the elimination attempt fails.
    same = solve(problem, 2.0, solution_limit=1)
    assert [list(r.nodes) for r in same.routes] == initial
    assert same.stats.phases["initial_vehicles"] == 2
    # With time, everything fits on one vehicle (capacity 3, loads of 1 in sequence).
    sol = solve(problem, 2.0)
    accounted(problem, sol)
    assert not sol.dropped and sol.vehicles_used == 1


def test_fleet_phases_from_scratch_match_the_single_ils_run() -> None:
    problem = _six_requests_fixed(None)
    phased = solve(problem, 1.0)
    single = solve(problem, 1.0, config=SearchConfig(eliminate_routes=False))
    accounted(problem, phased)
    assert not phased.dropped and phased.vehicles_used == 1
    assert phased.objective.total <= single.objective.total


def _live_routing_models() -> int:
    gc.collect()
    return sum(type(o).__name__ == "RoutingModel" for o in gc.get_objects())


@pytest.mark.parametrize("initial", [None, [[2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13]]])
def test_models_are_freed_after_solving(initial: list[list[int]] | None) -> None:
    # A model the garbage collector cannot free keeps its native memory (hundreds of MB
    # for a city-sized re-plan) for the life of the process: the live service died of it.
    before = _live_routing_models()
    for _ in range(3):
        solve(_six_requests(initial), T, solution_limit=50)
    assert _live_routing_models() == before


def _churn_problem(churn: int) -> RoutingProblem:
    # Vehicle 0 waits at 0, vehicle 1 at 10; the request (pickup 2, delivery 3) was
    # vehicle 1's. Moving it to vehicle 0 saves 2 x 8 of travel.
    b = ProblemBuilder()
    b.objective = replace(b.objective, churn=churn)
    xs = [0, 10, 2, 3]
    d0, d1, p, d = (b.add_node() for _ in xs)
    b.add_request(p, d, previous_vehicle=1, drop_penalty=10_000)
    b.add_vehicle(d0, None, capacity=1)
    b.add_vehicle(d1, None, capacity=1)
    return b.build(line_matrix(xs))


@pytest.mark.parametrize(("churn", "served_by"), [(5, 0), (50, 1)])
def test_churn_keeps_a_request_on_its_vehicle_unless_moving_saves_more(
    churn: int, served_by: int
) -> None:
    # vehicle 0: 3 of travel; vehicle 1 (the previous one): 8 + 1 = 9
    sol = solve(_churn_problem(churn), T)
    assert visits(sol, served_by) == [2, 3]
    assert visits(sol, 1 - served_by) == []


def test_a_big_groups_plan_restores_within_a_short_search() -> None:
    limit_s = 1.0
    # 120 couriers, 480 requests each previously theirs (every one priced for churn):
    # restoring the current plan must take a fraction of a re-plan's budget. Through
    # OR-Tools' soft same-vehicle constraints it took longer than 1 s, so the search
    # timed out before it had even its start and the re-plan found nothing.
    rng = np.random.default_rng(3)
    b = ProblemBuilder()
    b.objective = replace(b.objective, churn=120)
    n_vehicles, per_vehicle = 120, 4
    xs = [int(x) for x in rng.integers(0, 5000, n_vehicles)]
    depots = [b.add_node() for _ in range(n_vehicles)]
    initial: list[list[int]] = []
    for v in range(n_vehicles):
        route = []
        for _ in range(per_vehicle):
            a, c = (int(x) for x in rng.integers(0, 5000, 2))
            xs += [a, c]
            p, d = b.add_node(), b.add_node()
            b.add_request(p, d, previous_vehicle=v, drop_penalty=1_000_000)
            route += [p, d]
        initial.append(route)
    for dep in depots:
        b.add_vehicle(dep, None, capacity=per_vehicle)
    problem = b.build(line_matrix(xs), initial_routes=initial)
    sol = solve(problem, limit_s, solution_limit=1)  # only the start itself is accepted
    assert {v: visits(sol, v) for v in range(n_vehicles)} == dict(enumerate(initial))
    assert not sol.dropped


@pytest.mark.parametrize("fixed", [0, 1000], ids=["plain", "fleet-phases"])
def test_nothing_servable_is_all_dropped_not_a_crash(fixed: int) -> None:
    """Every request over every vehicle's capacity: the plan has no route. Building the
    next phase's model on that empty fleet made OR-Tools abort the whole process (a
    failed CHECK, `o2o solve` dumped core); now the requests come back dropped."""
    b = ProblemBuilder(objective=Objective(vehicle_fixed=fixed))
    depot, p, q = b.add_node(), b.add_node(), b.add_node()
    b.add_request(p, q, load=5)
    b.add_vehicle(depot, depot, capacity=2)
    problem = b.build(line_matrix([0, 3, 6]))
    sol = solve(problem, T)
    accounted(problem, sol)
    assert not sol.routes and [d.request for d in sol.dropped] == [0]

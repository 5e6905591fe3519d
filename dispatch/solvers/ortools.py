"""OR-Tools routing engine for :class:`~dispatch.problem.RoutingProblem` (the only module
that imports ``ortools``).

Model
-----
- arc cost = ``travel_time * duration + distance * distance`` from one registered
  integer matrix (``RegisterTransitMatrix``), never per-pair Python geometry;
- time dimension: transit = service at the origin + travel; slack = waiting (priced by
  ``Objective.waiting``); node windows are hard on the start of service; a delivery's
  ``due`` is a soft upper bound (``SetCumulVarSoftUpperBound``) priced per time unit;
- capacity dimension starting at each vehicle's on-board load;
- pickup and delivery: same vehicle, pickup first (``AddPickupAndDelivery``);
- open routes end at a dummy node reached from anywhere at zero time and cost;
- shift end caps the start of pickups served by that vehicle;
- every request is a disjunction: optional ones with their drop penalty, mandatory ones
  with a penalty above any route cost, so that an overconstrained problem still returns
  a plan (with the request in ``dropped``) instead of no plan at all.

Search
------
Default: parallel cheapest insertion, then OR-Tools' iterated local search
(``SolveWithIteratedLocalSearch``) with SISR ruin-and-recreate and simulated-annealing
acceptance, greedy descent inside. A warm start (``initial_routes``) runs guided local
search from those routes (the live dispatcher's path).

With vehicles' fixed costs in the objective (Li & Lim's "vehicles first"), the search
runs in three warm-started phases (``SearchConfig.fleet_strategy == "warm"``): ILS on
the whole fleet; route elimination (drop the smallest route's vehicle, let ILS reinsert
its requests into the other routes, keep the plan if everything is served); ILS on the
kept fleet for the rest of the time. These phases use pure ruin-and-recreate
(``warm_phases_ils = "sa,noimprove"``: no local search after each perturbation, many
more iterations) and recreate whole pickup-delivery pairs at their best place, requests
in random order. OR-Tools' ILS has no warm start from an assignment, so each phase
rebuilds the previous plan as its first solution with ``EVALUATOR_STRATEGY`` (path
cheapest arc on an evaluator that is 0 on the plan's arcs), which also reheats the
annealing. On 12 Li & Lim instances (2 per family, 10 s each) this cut vehicles from
84 to 79 (best-known count on 11/12 instead of 6/12) and the mean gap at best-known
vehicles from about 4.6 % to 0.2 %.

Determinism: one thread and a seeded order of our own heuristics. OR-Tools' local
search itself is deterministic, but a *time* limit stops it at a machine-dependent
point; pass ``solution_limit`` to make a run repeatable bit for bit.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from ortools.constraint_solver import pywrapcp, routing_enums_pb2, routing_ils_pb2

from dispatch.problem import (
    Dropped,
    RoutingProblem,
    RoutingSolution,
    SolveStats,
    evaluate_plan,
)

__all__ = ["SearchConfig", "solve"]
_DEBUG = False

_FSS = routing_enums_pb2.FirstSolutionStrategy
_LSM = routing_enums_pb2.LocalSearchMetaheuristic
_RUIN_ONE = routing_ils_pb2.RuinCompositionStrategy.RUN_ONE_RANDOMLY
_STATUS = {
    0: "not_solved",
    1: "success",
    2: "partial_success",
    3: "fail",
    4: "fail_timeout",
    5: "invalid",
    6: "infeasible",
    7: "optimal",
}


@dataclass(frozen=True)
class SearchConfig:
    """Search settings (the same for every instance; defaults measured on Li & Lim).

    Attributes
    ----------
    ils:
        OR-Tools iterated local search (``SolveWithIteratedLocalSearch``) with SISR
        ruin-and-recreate; the value picks the reference-solution acceptance:
        ``"sa"`` (simulated annealing, automatic temperatures), ``"greedy"``, ``"more"``
        (more nodes performed) or ``"absences[,remove]"`` (SISR fleet minimisation).
        Empty: plain ``SolveWithParameters`` with ``metaheuristic``. ILS cannot start
        from given routes, so a warm start always uses ``warm_metaheuristic``.
    ils_min_requests:
        below this many requests (or with goods on board) use ``warm_metaheuristic``
        without ILS (see ``solve``).
    metaheuristic:
        ``LocalSearchMetaheuristic`` name (GREEDY_DESCENT under ILS: ILS is the outer loop).
    warm_metaheuristic:
        metaheuristic used from a warm start (``SolveFromAssignmentWithParameters``).
    first_solution:
        ``FirstSolutionStrategy`` name, used when there is no warm start.
    gls_lambda:
        guided local search penalty coefficient.
    sisr_visits, sisr_seq:
        SISR ruin: average removed visits, maximum removed sequence length.
    eliminate_routes:
        fleet minimisation when vehicles have fixed costs, by ``fleet_strategy``:
        ``"warm"`` (default; see the module docstring: ILS for ``fleet_share`` of the
        time, route elimination attempts of up to ``attempt_s`` until
        ``elimination_share``, then ILS on the kept fleet, all warm-started and run with
        ``warm_phases_ils``); ``"ils"`` (SISR absences phase with ``fleet_ils``, then
        a distance phase) and ``"loop"`` (guided local search reinsertion) are older
        experiments that measured no better than one ILS run.
    elimination_ils:
        ILS acceptance of elimination attempts ("" = the phases' ILS).
    warm_phases_ils, warm_phases_recreate_pd, warm_phases_recreate_sorting:
        ILS setting of the ``"warm"`` phases (same syntax as ``ils``) and their
        recreate defaults (whole pickup-delivery pairs at their best place, requests in
        random order), used where ``recreate_pd`` / ``recreate_sorting`` are unset.
    recreate, recreate_pd, recreate_sorting:
        ILS recreate heuristic, its pickup-and-delivery strategy and insertion sorting
        properties (``LocalCheapestInsertionParameters`` enum names).
    random_walk_visits, num_ruined_routes:
        extra ruin strategies (random walk, spatially close routes) run one at random
        with SISR when non-zero.
    sa_temperatures, sa_temperature_factor:
        fixed (initial, final) annealing temperatures, or a factor on OR-Tools'
        automatic ones (0.1 and 0.001 x the mean arc cost); automatic by default.
    operators:
        local search operators switched on (``LocalSearchNeighborhoodOperators``).
    """

    ils: str = "sa"
    ils_min_requests: int = 4
    metaheuristic: str = "GREEDY_DESCENT"
    warm_metaheuristic: str = "GUIDED_LOCAL_SEARCH"
    first_solution: str = "PARALLEL_CHEAPEST_INSERTION"
    gls_lambda: float = 0.1
    sisr_visits: int = 10
    sisr_seq: int = 10
    eliminate_routes: bool = True
    fleet_strategy: str = "warm"
    fleet_ils: str = "absences,remove"
    fleet_share: float = 0.35
    elimination_share: float = 0.75
    attempt_s: float = 2.0
    elimination_penalty: float = 0.0
    elimination_metaheuristic: str = "GUIDED_LOCAL_SEARCH"
    elimination_ils: str = ""
    warm_phases_ils: str = "sa,noimprove"
    warm_phases_recreate_pd: str = "BEST_PICKUP_DELIVERY_PAIR"
    warm_phases_recreate_sorting: tuple[str, ...] = ("SORTING_PROPERTY_RANDOM",)
    initial_s: float = 1.0
    recreate: str = "LOCAL_CHEAPEST_INSERTION"
    recreate_pd: str = ""
    recreate_sorting: tuple[str, ...] = ()
    sa_temperatures: tuple[float, float] | None = None
    sa_temperature_factor: float = 0.0
    random_walk_visits: int = 0
    num_ruined_routes: int = 0
    operators: tuple[str, ...] = (
        "use_relocate_pair",
        "use_light_relocate_pair",
        "use_exchange_pair",
        "use_relocate_subtrip",
        "use_exchange_subtrip",
        "use_relocate_neighbors",
        "use_cross",
        "use_relocate_expensive_chain",
    )
    disabled_operators: tuple[str, ...] = ()
    use_full_propagation: bool = False
    log_search: bool = False


@dataclass
class _Trace:
    t0: float
    first_s: float | None = None
    first_obj: int | None = None
    points: list[tuple[float, int]] = field(default_factory=list)

    def record(self, objective: int) -> None:
        now = time.perf_counter() - self.t0
        if self.first_s is None:
            self.first_s, self.first_obj = now, objective
        if not self.points or objective < self.points[-1][1]:
            self.points.append((now, objective))


class _Model:
    """One OR-Tools model of ``problem`` restricted to the vehicles in ``fleet``.

    Problem node ``i`` is manager node ``i``; node ``n`` is the dummy end of open routes.
    Model vehicle ``k`` is problem vehicle ``fleet[k]``.
    """

    def __init__(
        self,
        problem: RoutingProblem,
        fleet: Sequence[int],
        with_fixed_costs: bool,
        mandatory_penalty: int | None = None,
    ) -> None:
        if not fleet:
            # OR-Tools aborts the whole process (a failed CHECK, not an exception) on a
            # routing model with no vehicle; callers skip phases that would build one.
            raise ValueError("a routing model needs at least one vehicle")
        self.problem = p = problem
        self.fleet = list(fleet)
        n = p.n_nodes
        open_ = any(p.vehicles[v].end is None for v in self.fleet)
        self.n = n + (1 if open_ else 0)
        starts = [p.vehicles[v].start for v in self.fleet]
        ends = [n if p.vehicles[v].end is None else p.vehicles[v].end for v in self.fleet]
        self.manager = m = pywrapcp.RoutingIndexManager(self.n, len(self.fleet), starts, ends)
        self.routing = r = pywrapcp.RoutingModel(m)
        obj = p.objective

        def pad(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            # Open routes: zero to/from the dummy end.
            if not open_:
                return a
            out = np.zeros((self.n, self.n), dtype=np.int64)
            out[:n, :n] = a
            return out

        cost = pad(obj.travel_time * p.durations + obj.distance * p.distances)
        self._cost_matrix = cost
        transit = pad(p.durations + p.service[:, None])
        if open_:
            transit[:n, n] = 0
        self._register_costs(cost)
        self._mandatory = mandatory_penalty
        time_cb = r.RegisterTransitMatrix(transit.tolist())
        horizon = int(max(p.horizon, *(p.vehicles[v].start_time for v in self.fleet))) + 1
        r.AddDimension(time_cb, horizon, horizon, False, "time")
        self.time = td = r.GetDimensionOrDie("time")
        if obj.waiting:
            td.SetSlackCostCoefficientForAllVehicles(obj.waiting)
        loads = p.node_loads().tolist() + ([0] if open_ else [])
        load_cb = r.RegisterUnaryTransitVector([int(x) for x in loads])
        caps = [int(p.vehicles[v].capacity) for v in self.fleet]
        r.AddDimensionWithVehicleCapacity(load_cb, 0, caps, False, "load")
        self.load = ld = r.GetDimensionOrDie("load")
        start_loads = p.start_loads()
        for k, v in enumerate(self.fleet):
            veh = p.vehicles[v]
            s, e = r.Start(k), r.End(k)
            td.CumulVar(s).SetRange(
                max(veh.start_time, int(p.earliest[veh.start])), int(p.latest[veh.start])
            )
            if veh.end is not None:
                td.CumulVar(e).SetRange(int(p.earliest[veh.end]), int(p.latest[veh.end]))
            ld.CumulVar(s).SetValue(int(start_loads[v]))
            if with_fixed_costs and p.vehicle_fixed_cost(v):
                r.SetFixedCostOfVehicle(p.vehicle_fixed_cost(v), k)
            r.AddVariableMinimizedByFinalizer(td.CumulVar(e))
            r.AddVariableMaximizedByFinalizer(td.CumulVar(s))
        self._add_requests(open_)
        # Nodes of no request that are not this fleet's starts/ends (e.g. the start of
        # a vehicle left out of the fleet) are never visited.
        depots = set(starts) | set(ends)
        used = {node for rq in p.requests for node in rq.nodes} | depots
        for node in range(n):
            if node not in used:
                r.ActiveVar(m.NodeToIndex(node)).SetValue(0)

    def _register_costs(self, cost: np.ndarray[Any, Any]) -> None:
        p, r = self.problem, self.routing
        r.SetArcCostEvaluatorOfAllVehicles(r.RegisterTransitMatrix(cost.tolist()))
        churn = p.objective.churn
        if not churn:
            return
        # Churn: a request served by another vehicle than before costs `churn`. Each
        # vehicle counts, in a dimension of its own transits, the first stops it serves
        # of requests that another vehicle of this fleet had; the span cost prices them.
        # (OR-Tools' soft same-vehicle constraints say the same, but restoring a plan
        # through them took 0.55 s on an 81-courier group where this takes 0.02 s, so
        # re-plans with less time than that found not even their own start.)
        pos = {v: k for k, v in enumerate(self.fleet)}
        had: dict[int, list[int]] = {}  # model vehicle -> first stops of its requests
        for rq in p.requests:
            k = pos.get(rq.previous_vehicle) if rq.previous_vehicle is not None else None
            if k is None:
                continue
            had.setdefault(k, []).append(rq.pickup if rq.pickup is not None else rq.delivery)
        if not had:
            return
        churnable = [0] * self.n  # per node: a unary transit vector is indexed by node
        for nodes in had.values():
            for node in nodes:
                churnable[node] = 1
        shared = r.RegisterUnaryTransitVector(churnable)
        transits = []
        for k in range(len(self.fleet)):
            own = had.get(k)
            if own is None:
                transits.append(shared)
                continue
            mine = list(churnable)
            for node in own:
                mine[node] = 0
            transits.append(r.RegisterUnaryTransitVector(mine))
        total = sum(len(nodes) for nodes in had.values())
        r.AddDimensionWithVehicleTransits(transits, 0, total, True, "churn")
        r.GetDimensionOrDie("churn").SetSpanCostCoefficientForAllVehicles(churn)

    def _add_requests(self, open_: bool) -> None:
        p, r, m, td = self.problem, self.routing, self.manager, self.time
        solver = r.solver()
        nv_all = len(p.vehicles)
        pos = {v: k for k, v in enumerate(self.fleet)}
        obj = p.objective
        big = self._mandatory or self.mandatory_penalty()
        shift_ends = [p.vehicles[v].shift_end for v in self.fleet]
        for rq in p.requests:
            cands = [pos[v] for v in rq.candidate_vehicles(nv_all) if v in pos]
            idx = [m.NodeToIndex(node) for node in rq.nodes]
            if len(cands) < len(self.fleet):
                # SetAllowedVehiclesForIndex rejects Python lists in OR-Tools 9.15's
                # SWIG layer; restricting the vehicle variable is equivalent (-1 keeps
                # the node droppable through its disjunction).
                for i in idx:
                    r.VehicleVar(i).SetValues([-1, *cands])
            penalty = big if rq.drop_penalty is None else rq.drop_penalty * obj.dropped
            if rq.on_board:
                r.AddDisjunction(idx, penalty)
            else:
                pi, di = idx
                half = (penalty + 1) // 2
                r.AddDisjunction([pi], half)
                r.AddDisjunction([di], penalty - half)
                r.AddPickupAndDelivery(pi, di)
                solver.Add(r.VehicleVar(pi) == r.VehicleVar(di))
                solver.Add(td.CumulVar(pi) <= td.CumulVar(di))
                pi_node = rq.nodes[0]
                ends = {shift_ends[k] for k in cands}
                if len(ends) == 1:
                    (cap,) = ends
                    if cap is not None:  # one shift end for all: a plain upper bound
                        td.CumulVar(pi).SetMax(max(int(p.earliest[pi_node]), cap))
                else:
                    # Per-vehicle shift ends: start(pickup) <= shift_end[k] when on k,
                    # as (vehicle == k) * (latest - shift_end) + start <= latest.
                    latest_p = int(p.latest[pi_node])
                    for k in cands:
                        s_k = shift_ends[k]
                        if s_k is not None and s_k < latest_p:
                            on_k = solver.IsEqualCstVar(r.VehicleVar(pi), k)
                            solver.Add(on_k * (latest_p - s_k) + td.CumulVar(pi) <= latest_p)
            for node in rq.nodes:
                i = m.NodeToIndex(node)
                td.CumulVar(i).SetRange(int(p.earliest[node]), int(p.latest[node]))
            if rq.due is not None:
                weight = obj.lateness if rq.lateness_penalty is None else rq.lateness_penalty
                if weight:
                    td.SetCumulVarSoftUpperBound(m.NodeToIndex(rq.delivery), rq.due, weight)

    def mandatory_penalty(self) -> int:
        """Above any plan's cost without drops: n x max arc cost, plus vehicles."""
        p = self.problem
        fixed = sum(p.vehicle_fixed_cost(v) for v in range(len(p.vehicles)))
        arc = int(self._cost_matrix.max()) + 1
        late = max([1] + [rq.lateness_penalty or p.objective.lateness for rq in p.requests])
        span = (p.horizon + 1) * (late + p.objective.waiting + p.objective.churn + 1)
        return int(min(2**52, 10 * (self.n * arc + fixed + len(p.requests) * span + 1)))

    def mean_arc_cost(self) -> float:
        """Mean arc cost between the problem's nodes (SA temperature scale)."""
        n = self.problem.n_nodes
        return float(self._cost_matrix[:n, :n].mean())

    def set_start_evaluator(self, routes: Mapping[int, Sequence[int]]) -> None:
        """First-solution evaluator: 0 on the arcs of ``routes``, high elsewhere.

        Path cheapest arc then rebuilds each route from its start node; vehicles that
        share start and end nodes may swap routes (harmless when they are identical).
        """
        m, p = self.manager, self.problem
        pos = {v: k for k, v in enumerate(self.fleet)}
        big = int(self._cost_matrix.max()) + 1
        cost = np.full((self.n, self.n), big, dtype=np.int64)
        for v, nodes in routes.items():
            k = pos.get(v)
            if k is None or not nodes:
                continue
            veh = p.vehicles[v]
            end = self.n - 1 if veh.end is None else veh.end
            tour = [veh.start, *nodes, end]
            for a, b in itertools.pairwise(tour):
                cost[a, b] = 0
        table = cost.tolist()

        def evaluator(i: int, j: int) -> int:
            return int(table[m.IndexToNode(i)][m.IndexToNode(j)])

        self._evaluator = evaluator  # keep it alive while the model lives
        self.routing.SetFirstSolutionEvaluator(evaluator)

    # --- assignments <-> routes -------------------------------------------------
    def routes_to_assignment(self, routes: Mapping[int, Sequence[int]]) -> Any:
        """Problem-vehicle -> node list as an OR-Tools assignment; None if infeasible."""
        pos = {v: k for k, v in enumerate(self.fleet)}
        lists = [[] for _ in self.fleet]  # type: list[list[int]]
        for v, nodes in routes.items():
            if v in pos:
                lists[pos[v]] = [int(n) for n in nodes]
        return self.routing.ReadAssignmentFromRoutes(lists, True)

    def assignment_to_routes(self, sol: Any) -> dict[int, list[int]]:
        r, m = self.routing, self.manager
        out: dict[int, list[int]] = {}
        for k, v in enumerate(self.fleet):
            i = sol.Value(r.NextVar(r.Start(k)))
            nodes = []
            while not r.IsEnd(i):
                nodes.append(m.IndexToNode(i))
                i = sol.Value(r.NextVar(i))
            if nodes:
                out[v] = nodes
        return out


def _search_params(cfg: SearchConfig, seconds: float, mean_arc: float = 0.0) -> Any:
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = getattr(_FSS, cfg.first_solution)
    params.local_search_metaheuristic = getattr(_LSM, cfg.metaheuristic)
    params.guided_local_search_lambda_coefficient = cfg.gls_lambda
    params.use_full_propagation = cfg.use_full_propagation
    params.log_search = cfg.log_search
    ops = params.local_search_operators
    for name in cfg.operators:
        setattr(ops, name, 2)  # OptionalBoolean.BOOL_TRUE
    for name in cfg.disabled_operators:
        setattr(ops, name, 3)  # BOOL_FALSE
    if cfg.ils:
        params.use_iterated_local_search = True
        ils = params.iterated_local_search_parameters
        rr = ils.ruin_recreate_parameters
        del rr.ruin_strategies[:]
        ruin = rr.ruin_strategies.add()
        ruin.sisr.avg_num_removed_visits = cfg.sisr_visits
        ruin.sisr.max_removed_sequence_size = cfg.sisr_seq
        ruin.sisr.bypass_factor = 0.01
        if cfg.random_walk_visits:
            rw = rr.ruin_strategies.add()
            rw.random_walk.num_removed_visits = cfg.random_walk_visits
            rr.ruin_composition_strategy = _RUIN_ONE
        if cfg.num_ruined_routes:
            sp = rr.ruin_strategies.add()
            sp.spatially_close_routes.num_ruined_routes = cfg.num_ruined_routes
            rr.ruin_composition_strategy = _RUIN_ONE
        rr.recreate_strategy.heuristic = getattr(_FSS, cfg.recreate)
        lci = rr.recreate_strategy.parameters.local_cheapest_insertion
        if cfg.recreate_pd:
            lci.pickup_delivery_strategy = getattr(lci, cfg.recreate_pd)
        for prop in cfg.recreate_sorting:
            lci.insertion_sorting_properties.append(getattr(lci, prop))
        kind = cfg.ils.split(",")
        ref = ils.reference_solution_acceptance_strategy
        if kind[0] == "absences":
            ref.absences_based.remove_route_with_lowest_absences = "remove" in kind
        elif kind[0] == "more":
            ref.more_nodes_performed.SetInParent()
        elif kind[0] == "greedy":
            ref.greedy_descent.SetInParent()
        elif kind[0] == "sa":
            sa = ref.simulated_annealing
            if cfg.sa_temperatures is not None:
                sa.initial_temperature, sa.final_temperature = cfg.sa_temperatures
            elif cfg.sa_temperature_factor and mean_arc:
                # Like OR-Tools' automatic temperatures (0.1 and 0.001 x the mean arc
                # cost), scaled by the factor.
                sa.initial_temperature = 0.1 * cfg.sa_temperature_factor * mean_arc
                sa.final_temperature = 0.001 * cfg.sa_temperature_factor * mean_arc
            else:
                sa.automatic_temperatures = True
        if "noimprove" in kind:
            ils.improve_perturbed_solution = False
    params.time_limit.FromMilliseconds(max(1, int(seconds * 1000)))
    return params


def _run(
    model: _Model,
    cfg: SearchConfig,
    seconds: float,
    start: Mapping[int, Sequence[int]] | None,
    trace: _Trace | None,
    solution_limit: int | None = None,
    warm_ils: bool = False,
) -> tuple[dict[int, list[int]] | None, int | None, str]:
    """Search on ``model`` for ``seconds``; returns routes, objective, status.

    With ``warm_ils`` (and ``cfg.ils``), iterated local search starts from ``start``:
    its first solution is built by ``EVALUATOR_STRATEGY`` (path cheapest arc) with an
    evaluator that is 0 on the arcs of ``start`` and high elsewhere, which rebuilds
    those routes (nodes of no route are left unperformed for the search to insert).
    """
    params = _search_params(cfg, seconds, model.mean_arc_cost())
    if solution_limit is not None:
        params.solution_limit = solution_limit
    r = model.routing
    ils_warm = warm_ils and start is not None and bool(cfg.ils)
    if ils_warm:
        assert start is not None
        model.set_start_evaluator(start)
        params.first_solution_strategy = _FSS.EVALUATOR_STRATEGY
    r.CloseModelWithParameters(params)
    if trace is not None:
        # The callback must not reference ``r``: the model owns the callback, so a
        # closure over its Python proxy is a cycle through C++ that no garbage
        # collector sees, and every solve's model (hundreds of MB) would stay alive.
        cost = r.CostVar()
        r.AddAtSolutionCallback(lambda: trace.record(int(cost.Min())))
    init = model.routes_to_assignment(start) if start is not None and not ils_warm else None
    if init is not None:
        # OR-Tools' ILS has no warm start from an assignment: plain local search.
        params.use_iterated_local_search = False
        params.local_search_metaheuristic = getattr(_LSM, cfg.warm_metaheuristic)
        sol = r.SolveFromAssignmentWithParameters(init, params)
    elif cfg.ils:
        sol = r.SolveWithIteratedLocalSearch(params)
    else:
        sol = r.SolveWithParameters(params)
    status = _STATUS.get(r.status(), str(r.status()))
    if sol is not None and status == "not_solved":
        status = "success"  # ILS does not set the model's status
    if sol is None:
        return None, None, status
    return model.assignment_to_routes(sol), int(sol.ObjectiveValue()), status


def solve(
    problem: RoutingProblem,
    time_limit_s: float,
    seed: int = 0,
    deterministic: bool = True,
    config: SearchConfig | None = None,
    solution_limit: int | None = None,
) -> RoutingSolution:
    """Solve ``problem`` within ``time_limit_s`` wall-clock seconds on one core.

    Parameters
    ----------
    seed:
        seeds our own randomised choices. OR-Tools routing exposes no seed and its
        search is deterministic for a given amount of work, so today the seed changes
        nothing (kept in the signature for restarts and other engines).
    deterministic:
        one search thread (OR-Tools routing is single-threaded anyway; the flag is
        explicit for callers and future parallel modes). Combine with
        ``solution_limit`` for bit-for-bit repeatable runs.
    solution_limit:
        optional cap on accepted solutions per OR-Tools search: a work limit that makes
        runs repeatable regardless of machine speed.
    """
    del deterministic  # one thread is all OR-Tools routing uses
    cfg = config or SearchConfig()
    if cfg.ils and (
        len(problem.requests) < cfg.ils_min_requests or any(r.on_board for r in problem.requests)
    ):
        # OR-Tools 9.15's ILS was seen to ignore the time limit and spin on a one-visit
        # problem (an on-board delivery); small or on-board problems use plain GLS.
        cfg = replace(cfg, ils="", metaheuristic=cfg.warm_metaheuristic)
    t0 = time.perf_counter()
    trace = _Trace(t0)
    rng = np.random.default_rng(seed)
    p = problem
    fleet = list(range(len(p.vehicles)))
    pre_dropped = _precheck(p)
    has_fixed = any(p.vehicle_fixed_cost(v) > 0 for v in fleet)
    eliminate = cfg.eliminate_routes and has_fixed

    def left() -> float:
        return time_limit_s - (time.perf_counter() - t0)

    phases: dict[str, object] = {}
    start: Mapping[int, Sequence[int]] | None = None
    if p.initial_routes is not None:
        start = {v: r for v, r in enumerate(p.initial_routes) if r}
    routes: dict[int, list[int]] | None
    if not fleet:  # no vehicle: every request unassigned, nothing to search
        routes, status = {}, "NO_VEHICLES"
    elif eliminate and cfg.fleet_strategy == "warm":
        routes, status = _solve_warm_phases(
            p, cfg, fleet, start, t0, time_limit_s, trace, phases, solution_limit
        )
    elif eliminate and cfg.fleet_strategy == "ils":
        # Phase 1: fleet minimisation, fixed costs in the objective.
        model = _Model(p, fleet, with_fixed_costs=True)
        fcfg = replace(cfg, metaheuristic="GREEDY_DESCENT", ils=cfg.fleet_ils)
        routes, _, status = _run(
            model, fcfg, cfg.fleet_share * left(), start, trace, solution_limit
        )
        phases["fleet_vehicles"] = None if routes is None else len(routes)
        if routes:  # an empty plan (nothing could be served) has no fleet to refine
            model = _Model(p, sorted(routes), with_fixed_costs=False)
            routes2, _, status = _run(model, cfg, max(0.05, left()), routes, trace, solution_limit)
            if routes2 is not None and _cost(p, routes2) <= _cost(p, routes):
                routes = routes2
    else:
        model = _Model(p, fleet, with_fixed_costs=not eliminate)
        budget = min(cfg.initial_s, left()) if eliminate else left()
        routes, _, status = _run(model, cfg, budget, start, trace, solution_limit)
        phases["initial_vehicles"] = None if routes is None else len(routes)
        if routes and eliminate:
            routes, tried = _eliminate(p, cfg, routes, fleet, rng, t0, time_limit_s, trace)
            phases["elimination_attempts"] = tried
            model = _Model(p, sorted(routes), with_fixed_costs=False)
            routes2, _, status = _run(model, cfg, max(0.05, left()), routes, trace, solution_limit)
            if routes2 is not None and _cost(p, routes2) <= _cost(p, routes):
                routes = routes2
    wall = time.perf_counter() - t0
    stats = SolveStats(
        status=status,
        wall_time_s=wall,
        first_solution_s=trace.first_s,
        first_objective=trace.first_obj,
        trace=tuple(trace.points),
        phases=phases,
    )
    return _build_solution(p, routes or {}, pre_dropped, stats)


def _solve_warm_phases(
    p: RoutingProblem,
    cfg: SearchConfig,
    fleet: list[int],
    start: Mapping[int, Sequence[int]] | None,
    t0: float,
    time_limit_s: float,
    trace: _Trace,
    phases: dict[str, object],
    solution_limit: int | None,
) -> tuple[dict[int, list[int]] | None, str]:
    """ILS, then route elimination, then ILS on the kept fleet, each warm-started.

    1. ILS with fixed costs on the whole fleet for ``fleet_share`` of the budget;
    2. until ``elimination_share`` of the budget: drop the smallest route's vehicle from
       the fleet, warm-start ILS from the other routes (the dropped route's requests
       unperformed) for up to ``attempt_s``; keep the result if it serves everything,
       else try the next smallest route;
    3. ILS warm-started from the best plan on its fleet for the rest of the time.
    """

    def left() -> float:
        return time_limit_s - (time.perf_counter() - t0)

    if cfg.ils and cfg.warm_phases_ils:
        cfg = replace(
            cfg,
            ils=cfg.warm_phases_ils,
            recreate_pd=cfg.recreate_pd or cfg.warm_phases_recreate_pd,
            recreate_sorting=cfg.recreate_sorting or cfg.warm_phases_recreate_sorting,
        )
    model = _Model(p, fleet, with_fixed_costs=True)
    routes, _, status = _run(
        model, cfg, cfg.fleet_share * left(), start, trace, solution_limit, warm_ils=True
    )
    phases["initial_vehicles"] = None if routes is None else len(routes)
    if not routes:  # None, or nothing could be served: no fleet to shrink or refine
        return routes, status
    deadline = t0 + cfg.elimination_share * time_limit_s
    ecfg = replace(cfg, ils=cfg.elimination_ils or cfg.ils)
    failed: set[int] = set()
    tried = 0
    while len(routes) > 1:
        budget = min(cfg.attempt_s, deadline - time.perf_counter())
        candidates = [v for v in routes if v not in failed]
        if budget < 0.1 or not candidates:
            break
        # Smallest route first (fewest stops, then shortest): easiest to absorb.
        cur = routes
        victim = min(candidates, key=lambda v: (len(cur[v]), _route_cost(p, v, cur[v])))
        keep = {v: r for v, r in routes.items() if v != victim}
        model = _Model(p, sorted(keep), with_fixed_costs=True)
        new, _, _ = _run(model, ecfg, budget, keep, None, solution_limit, warm_ils=True)
        tried += 1
        if new is not None and _all_served(p, new):
            routes = new
            failed.clear()
        else:
            failed.add(victim)
    phases["elimination_attempts"] = tried
    phases["eliminated_vehicles"] = len(routes)
    if left() > 0.1:
        model = _Model(p, sorted(routes), with_fixed_costs=True)
        routes2, _, status2 = _run(model, cfg, left(), routes, trace, solution_limit, warm_ils=True)
        if routes2 is not None and _cost(p, routes2) <= _cost(p, routes):
            routes, status = routes2, status2
    return routes, status


def _eliminate(
    p: RoutingProblem,
    cfg: SearchConfig,
    routes: dict[int, list[int]],
    fleet: list[int],
    rng: np.random.Generator,
    t0: float,
    time_limit_s: float,
    trace: _Trace,
) -> tuple[dict[int, list[int]], int]:
    """Route elimination: remove a route, reinsert its requests with fewer vehicles."""
    deadline = t0 + cfg.elimination_share * time_limit_s
    tried = 0
    failed: set[int] = set()
    while time.perf_counter() < deadline:
        candidates = [v for v in routes if v not in failed]
        if len(routes) <= 1 or not candidates:
            break
        # Smallest route first (fewest stops, then shortest): easiest to absorb.
        candidates.sort(key=lambda v: (len(routes[v]), _route_cost(p, v, routes[v])))
        victim = candidates[0]
        keep = {v: r for v, r in routes.items() if v != victim}
        budget = min(cfg.attempt_s, deadline - time.perf_counter())
        if budget <= 0.05:
            break
        pen = int(cfg.elimination_penalty * int(p.durations.max())) or None
        model = _Model(p, sorted(keep), with_fixed_costs=False, mandatory_penalty=pen)
        ecfg = SearchConfig(
            **{
                **cfg.__dict__,
                "metaheuristic": cfg.elimination_metaheuristic,
                "ils": cfg.elimination_ils,
            }
        )
        new, _, _ = _run(model, ecfg, budget, keep, None)
        if cfg.log_search or _DEBUG:
            miss = sum(len(rq.nodes) for rq in p.requests) - sum(
                len(x) for x in (new or {}).values()
            )
            print(f"  attempt {tried} victim {victim} len {len(routes[victim])} -> missing {miss}")
        tried += 1
        if new is not None and _all_served(p, new):
            routes = new
            failed.clear()
        else:
            failed.add(victim)
    del fleet, rng, trace
    return routes, tried


def _all_served(p: RoutingProblem, routes: dict[int, list[int]]) -> bool:
    served = {n for r in routes.values() for n in r}
    return all(rq.drop_penalty is not None or rq.delivery in served for rq in p.requests)


def _route_cost(p: RoutingProblem, v: int, nodes: Sequence[int]) -> int:
    veh = p.vehicles[v]
    tour = [veh.start, *nodes] + ([veh.end] if veh.end is not None else [])
    return int(sum(p.durations[a, b] for a, b in itertools.pairwise(tour)))


def _cost(p: RoutingProblem, routes: dict[int, list[int]]) -> tuple[int, int]:
    """(mandatory requests left out, objective): the order plans are compared in."""
    served = {n for r in routes.values() for n in r}
    missing = sum(1 for rq in p.requests if rq.drop_penalty is None and rq.delivery not in served)
    return missing, evaluate_plan(p, routes)[1].total


def _precheck(p: RoutingProblem) -> dict[int, str]:
    """Requests no allowed vehicle can serve even alone, with the reason."""
    out: dict[int, str] = {}
    nv = len(p.vehicles)
    for i, rq in enumerate(p.requests):
        cands = rq.candidate_vehicles(nv)
        if not cands:
            out[i] = "no_feasible_vehicle"
            continue
        reasons = []
        for v in cands:
            reason = _solo_reason(p, v, rq.pickup, rq.delivery, rq.load)
            if reason is None:
                break
            reasons.append(reason)
        else:
            for r in ("capacity", "shift_end", "time_window"):
                if r in reasons:
                    out[i] = r
                    break
    return out


def _solo_reason(
    p: RoutingProblem, v: int, pickup: int | None, delivery: int, load: int
) -> str | None:
    veh = p.vehicles[v]
    if load > veh.capacity:
        return "capacity"
    t = max(veh.start_time, int(p.earliest[veh.start]))
    at = veh.start
    for node in (pickup, delivery):
        if node is None:
            continue
        t = max(t + int(p.service[at]) + int(p.durations[at, node]), int(p.earliest[node]))
        if node == pickup and veh.shift_end is not None and t > veh.shift_end:
            return "shift_end"
        if t > p.latest[node] and pickup is not None:
            return "time_window"
        at = node
    if veh.end is not None:
        t += int(p.service[at]) + int(p.durations[at, veh.end])
        if t > p.latest[veh.end]:
            return "time_window"
    return None


def _build_solution(
    p: RoutingProblem,
    routes: dict[int, list[int]],
    pre_dropped: dict[int, str],
    stats: SolveStats,
) -> RoutingSolution:
    built, bd = evaluate_plan(p, routes)
    served = {s.request for r in built for s in r.visits}
    dropped = []
    for i, rq in enumerate(p.requests):
        if i in served:
            continue
        reason = pre_dropped.get(i) or (
            "dropped_by_penalty" if rq.drop_penalty is not None else "no_room"
        )
        dropped.append(Dropped(request=i, id=rq.id, reason=reason))
    return RoutingSolution(routes=tuple(built), dropped=tuple(dropped), objective=bd, stats=stats)

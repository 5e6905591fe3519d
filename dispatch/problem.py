"""The routing problem the dispatch solvers optimise, and the solutions they return.

Framework-free on purpose (no OR-Tools types): a :class:`RoutingProblem` is a frozen
snapshot built once (by :class:`ProblemBuilder`, an instance reader or the dispatcher)
and handed to any solver (``dispatch.solvers``).

Units: every time (windows, service, durations, due times, shift ends) is an integer in
one *time unit* chosen by the caller (seconds in live dispatch; ``LILIM_SCALE`` x the
instance unit for Li & Lim), every distance an integer in one *distance unit* (metres
live). Costs are integers too: the :class:`Objective` weights turn units into cost.

Nodes are indices into the matrices. A request is a pickup node and a delivery node
served by the same vehicle, pickup first; an *on-board* request has no pickup (the goods
are already on a vehicle) and only a delivery on that vehicle.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "DROP_REASONS",
    "Dropped",
    "Objective",
    "ObjectiveBreakdown",
    "ProblemBuilder",
    "ProblemError",
    "Request",
    "Route",
    "RoutingProblem",
    "RoutingSolution",
    "SolveStats",
    "Stop",
    "Vehicle",
    "evaluate_plan",
    "evaluate_routes",
    "schedule_route",
]

IntArray = npt.NDArray[np.int64]

DROP_REASONS = (
    "no_feasible_vehicle",  # no allowed vehicle exists (or all are shift-ended)
    "capacity",  # the load alone exceeds every allowed vehicle's capacity
    "time_window",  # even a vehicle doing only this request misses a hard window
    "shift_end",  # no allowed vehicle can start the pickup before its shift ends
    "dropped_by_penalty",  # optional request the optimiser found cheaper to drop
    "no_room",  # mandatory request feasible alone but not together with the others
)
"""Why a request is in :attr:`RoutingSolution.dropped`, most specific reason first."""


class ProblemError(ValueError):
    """An inconsistent problem (bad index, shape, window, pair); ``reason`` is a slug."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Objective:
    """Integer weights of the solver's single objective (a weighted sum).

    Each weight multiplies a quantity in problem units, so e.g. ``travel_time=1`` prices
    one time unit of driving at one cost unit. Defaults favour short travel times.

    Attributes
    ----------
    travel_time:
        cost per time unit of travel (the duration matrix), summed over arcs driven.
    distance:
        cost per distance unit driven (the distance matrix).
    lateness:
        cost per time unit a delivery starts after its request's ``due`` time, for
        requests that do not set their own ``lateness_penalty``.
    waiting:
        cost per time unit a vehicle idles before a window opens (dimension slack).
    vehicle_fixed:
        cost of using a vehicle (non-empty route), for vehicles without their own
        ``fixed_cost``. A large value gives the "fewest vehicles first" hierarchy.
    churn:
        cost per request served by another vehicle than ``Request.previous_vehicle``
        (stability of a re-optimised plan).
    dropped:
        multiplier on each optional request's ``drop_penalty``.
    """

    travel_time: int = 1
    distance: int = 0
    lateness: int = 1
    waiting: int = 0
    vehicle_fixed: int = 0
    churn: int = 0
    dropped: int = 1

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 0:
                raise ProblemError("bad_objective", f"Objective.{name} must be an int >= 0")


@dataclass(frozen=True)
class Request:
    """One pickup-and-delivery request.

    Attributes
    ----------
    id:
        caller's identifier, echoed in solutions.
    pickup, delivery:
        node indices; ``pickup is None`` means the goods are already on board of the
        single vehicle in ``allowed_vehicles`` (mandatory there; its hard latest is
        relaxed if it can no longer be met, since the goods cannot be dropped).
    load:
        units picked up at ``pickup`` and delivered at ``delivery`` (capacity units).
    due:
        soft promise: the delivery should start by then (time units); later costs
        ``lateness_penalty`` (or :attr:`Objective.lateness`) per time unit.
        The delivery node's ``latest`` stays the hard limit.
    lateness_penalty:
        cost per time unit late; None uses the objective's default.
    allowed_vehicles:
        vehicle indices that may serve the request; None means all.
    locked_vehicle:
        the request must stay on this vehicle (a committed assignment).
    drop_penalty:
        cost of leaving the request unserved; None means mandatory.
    previous_vehicle:
        the vehicle of a previous plan, for the churn cost; None if new.
    """

    id: str | int
    pickup: int | None
    delivery: int
    load: int = 0
    due: int | None = None
    lateness_penalty: int | None = None
    allowed_vehicles: tuple[int, ...] | None = None
    locked_vehicle: int | None = None
    drop_penalty: int | None = None
    previous_vehicle: int | None = None

    @property
    def on_board(self) -> bool:
        """True for goods already on a vehicle (no pickup stop)."""
        return self.pickup is None

    @property
    def nodes(self) -> tuple[int, ...]:
        """The request's stops, pickup first."""
        return (self.delivery,) if self.pickup is None else (self.pickup, self.delivery)

    def candidate_vehicles(self, n_vehicles: int) -> tuple[int, ...]:
        """Vehicles that may serve the request (lock, then allow-list, then all)."""
        if self.locked_vehicle is not None:
            return (self.locked_vehicle,)
        if self.allowed_vehicles is not None:
            return tuple(sorted(set(self.allowed_vehicles)))
        return tuple(range(n_vehicles))


@dataclass(frozen=True)
class Vehicle:
    """A vehicle (courier) and its shift.

    Attributes
    ----------
    start:
        node where the route starts (the courier's position now, or a depot).
    end:
        node where the route must end; None is an open route that ends at its last
        stop at no cost (couriers do not return anywhere).
    capacity:
        load limit (same units as ``Request.load``); on-board loads count from start.
    start_time:
        earliest departure from ``start`` (time units).
    shift_end:
        no pickup may start after this time; deliveries of goods on board may. None
        means no limit beyond the node windows.
    fixed_cost:
        cost of using the vehicle; None uses :attr:`Objective.vehicle_fixed`.
    id:
        caller's identifier, echoed in solutions.
    """

    start: int
    end: int | None
    capacity: int
    start_time: int = 0
    shift_end: int | None = None
    fixed_cost: int | None = None
    id: str | int | None = None


def _frozen_int_array(values: npt.ArrayLike, name: str, ndim: int) -> IntArray:
    arr = np.array(values)
    if arr.ndim != ndim:
        raise ProblemError("bad_shape", f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ProblemError("not_integer", f"{name} must hold integers (scale and round first)")
    out = arr.astype(np.int64)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class RoutingProblem:
    """An immutable pickup-and-delivery problem with time windows.

    Attributes
    ----------
    durations:
        (N, N) travel times between nodes, time units, integers >= 0.
    distances:
        (N, N) travel distances, distance units, integers >= 0.
    earliest, latest:
        (N,) hard window on the *start of service* at each node, time units.
    service:
        (N,) service duration at each node, time units.
    requests, vehicles:
        see :class:`Request` and :class:`Vehicle`.
    objective:
        the cost weights.
    initial_routes:
        optional warm start: one node list per vehicle (start/end excluded); the solver
        begins from it when it is feasible.
    """

    durations: IntArray
    distances: IntArray
    earliest: IntArray
    latest: IntArray
    service: IntArray
    requests: tuple[Request, ...]
    vehicles: tuple[Vehicle, ...]
    objective: Objective = field(default_factory=Objective)
    initial_routes: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name, ndim in (
            ("durations", 2),
            ("distances", 2),
            ("earliest", 1),
            ("latest", 1),
            ("service", 1),
        ):
            set_(self, name, _frozen_int_array(getattr(self, name), name, ndim))
        set_(self, "requests", tuple(self.requests))
        set_(self, "vehicles", tuple(self.vehicles))
        if self.initial_routes is not None:
            set_(
                self, "initial_routes", tuple(tuple(int(n) for n in r) for r in self.initial_routes)
            )
        self._validate()

    @property
    def n_nodes(self) -> int:
        return int(self.durations.shape[0])

    @property
    def horizon(self) -> int:
        """Latest time anything can happen (max node ``latest``)."""
        return int(self.latest.max()) if self.n_nodes else 0

    def node_loads(self) -> IntArray:
        """(N,) load change at each node: +load at pickups, -load at deliveries."""
        loads = np.zeros(self.n_nodes, dtype=np.int64)
        for r in self.requests:
            if r.pickup is not None:
                loads[r.pickup] += r.load
            loads[r.delivery] -= r.load
        return loads

    def start_loads(self) -> IntArray:
        """(V,) load on board of each vehicle at its start (on-board requests)."""
        loads = np.zeros(len(self.vehicles), dtype=np.int64)
        for r in self.requests:
            if r.on_board:
                loads[r.candidate_vehicles(len(self.vehicles))[0]] += r.load
        return loads

    def vehicle_fixed_cost(self, v: int) -> int:
        fc = self.vehicles[v].fixed_cost
        return self.objective.vehicle_fixed if fc is None else fc

    def _validate(self) -> None:
        n = self.n_nodes
        for name in ("durations", "distances"):
            m = getattr(self, name)
            if m.shape != (n, n):
                raise ProblemError("bad_shape", f"{name} must be ({n}, {n}), got {m.shape}")
            if (m < 0).any():
                raise ProblemError("negative", f"{name} has negative entries")
        for name in ("earliest", "latest", "service"):
            if getattr(self, name).shape != (n,):
                raise ProblemError("bad_shape", f"{name} must have {n} entries")
        if (self.earliest > self.latest).any():
            bad = int(np.flatnonzero(self.earliest > self.latest)[0])
            raise ProblemError("bad_window", f"node {bad} has earliest > latest")
        if (self.service < 0).any():
            raise ProblemError("negative", "service times must be >= 0")
        nv = len(self.vehicles)
        if nv == 0:
            raise ProblemError("no_vehicles", "a problem needs at least one vehicle")
        used: set[int] = set()
        for v in self.vehicles:
            for node in (v.start, v.end):
                if node is not None and not 0 <= node < n:
                    raise ProblemError("bad_node", f"vehicle node {node} out of range")
            if v.capacity < 0:
                raise ProblemError("negative", "capacities must be >= 0")
            used.update(x for x in (v.start, v.end) if x is not None)
        ids: set[str | int] = set()
        for r in self.requests:
            if r.id in ids:
                raise ProblemError("duplicate_id", f"request id {r.id!r} appears twice")
            ids.add(r.id)
            for node in r.nodes:
                if not 0 <= node < n:
                    raise ProblemError("bad_node", f"request {r.id!r}: node {node} out of range")
                if node in used:
                    raise ProblemError(
                        "shared_node", f"request {r.id!r}: node {node} used twice (copy it)"
                    )
                used.add(node)
            if r.load < 0:
                raise ProblemError("negative", f"request {r.id!r}: load must be >= 0")
            for k in (*(r.allowed_vehicles or ()), r.locked_vehicle, r.previous_vehicle):
                if k is not None and not 0 <= k < nv:
                    raise ProblemError("bad_vehicle", f"request {r.id!r}: vehicle {k}")
            if r.on_board and len(r.candidate_vehicles(nv)) != 1:
                raise ProblemError(
                    "on_board_vehicle", f"on-board request {r.id!r} needs exactly one vehicle"
                )
        if self.initial_routes is not None:
            if len(self.initial_routes) != nv:
                raise ProblemError("bad_initial", "initial_routes needs one list per vehicle")
            seen = [x for route in self.initial_routes for x in route]
            if len(seen) != len(set(seen)):
                raise ProblemError("bad_initial", "a node appears twice in initial_routes")


@dataclass
class ProblemBuilder:
    """Friendly way to assemble a :class:`RoutingProblem` node by node.

    Example: ``b = ProblemBuilder(); d = b.add_node(); p = b.add_node(0, 600, 60); ...;
    b.add_vehicle(start=d, end=None, capacity=4); problem = b.build(durations, distances)``.
    """

    objective: Objective = field(default_factory=Objective)
    _earliest: list[int] = field(default_factory=list)
    _latest: list[int] = field(default_factory=list)
    _service: list[int] = field(default_factory=list)
    _requests: list[Request] = field(default_factory=list)
    _vehicles: list[Vehicle] = field(default_factory=list)

    def add_node(self, earliest: int = 0, latest: int = 2**40, service: int = 0) -> int:
        """Add a node with its hard window and service time; returns its index."""
        self._earliest.append(int(earliest))
        self._latest.append(int(latest))
        self._service.append(int(service))
        return len(self._earliest) - 1

    def add_request(self, pickup: int | None, delivery: int, load: int = 1, **kw: object) -> int:
        """Add a request (keywords as in :class:`Request`; ``id`` defaults to its index)."""
        kw.setdefault("id", len(self._requests))
        self._requests.append(Request(pickup=pickup, delivery=delivery, load=load, **kw))  # type: ignore[arg-type]
        return len(self._requests) - 1

    def add_vehicle(self, start: int, end: int | None, capacity: int, **kw: object) -> int:
        """Add a vehicle (keywords as in :class:`Vehicle`); returns its index."""
        self._vehicles.append(Vehicle(start=start, end=end, capacity=capacity, **kw))  # type: ignore[arg-type]
        return len(self._vehicles) - 1

    def build(
        self,
        durations: npt.ArrayLike,
        distances: npt.ArrayLike | None = None,
        initial_routes: Sequence[Sequence[int]] | None = None,
    ) -> RoutingProblem:
        """Freeze; ``distances`` defaults to ``durations`` (unit speed)."""
        return RoutingProblem(
            durations=np.asarray(durations),
            distances=np.asarray(durations if distances is None else distances),
            earliest=np.asarray(self._earliest, dtype=np.int64),
            latest=np.asarray(self._latest, dtype=np.int64),
            service=np.asarray(self._service, dtype=np.int64),
            requests=tuple(self._requests),
            vehicles=tuple(self._vehicles),
            objective=self.objective,
            initial_routes=None
            if initial_routes is None
            else tuple(tuple(r) for r in initial_routes),
        )


@dataclass(frozen=True)
class Stop:
    """One visit on a route. Times in problem time units.

    ``arrival`` is when the vehicle gets there, ``start`` when service starts
    (``start - arrival`` is waiting), ``load`` the load on board after the stop.
    ``request`` is the index into ``problem.requests`` (None at start/end).
    """

    node: int
    arrival: int
    start: int
    load: int
    request: int | None = None
    kind: str = "pickup"  # "start" | "pickup" | "delivery" | "end"


@dataclass(frozen=True)
class Route:
    """One vehicle's route: start stop, visits, end stop (absent for open routes)."""

    vehicle: int
    stops: tuple[Stop, ...]
    distance: int
    duration: int

    @property
    def visits(self) -> tuple[Stop, ...]:
        """The pickup and delivery stops only."""
        return tuple(s for s in self.stops if s.kind in ("pickup", "delivery"))

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(s.node for s in self.visits)


@dataclass(frozen=True)
class Dropped:
    """A request left unserved and why (one of :data:`DROP_REASONS`)."""

    request: int
    id: str | int
    reason: str


@dataclass(frozen=True)
class ObjectiveBreakdown:
    """The solution's cost by term (each already weighted), plus raw totals.

    Raw totals: ``travel_time_units`` (sum of durations driven), ``distance_units``,
    ``lateness_units`` (sum of time late over due), ``waiting_units``.
    """

    total: int
    travel_time: int
    distance: int
    lateness: int
    waiting: int
    vehicles_fixed: int
    churn: int
    dropped: int
    travel_time_units: int
    distance_units: int
    lateness_units: int
    waiting_units: int


@dataclass(frozen=True)
class SolveStats:
    """How the search went. Times are wall-clock seconds since the solve started.

    ``trace`` is (seconds, objective) at each improvement of the best solution.
    """

    status: str
    wall_time_s: float
    first_solution_s: float | None
    first_objective: int | None
    trace: tuple[tuple[float, int], ...] = ()
    phases: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RoutingSolution:
    """A solver's answer: non-empty routes, dropped requests, costs and statistics.

    Every request is either on exactly one route or in ``dropped``.
    """

    routes: tuple[Route, ...]
    dropped: tuple[Dropped, ...]
    objective: ObjectiveBreakdown
    stats: SolveStats

    @property
    def vehicles_used(self) -> int:
        return sum(1 for r in self.routes if r.visits)

    def route_of(self, vehicle: int) -> Route | None:
        """The route of ``vehicle``, or None when it stays unused."""
        return next((r for r in self.routes if r.vehicle == vehicle), None)

    def vehicle_of_request(self) -> dict[int, int]:
        """Request index -> vehicle index, for served requests."""
        return {
            s.request: r.vehicle for r in self.routes for s in r.visits if s.request is not None
        }


def schedule_route(p: RoutingProblem, v: int, nodes: Sequence[int]) -> list[tuple[int, int, int]]:
    """(node, arrival, start) from vehicle start to end: service starts as early as
    possible, and the departure is delayed while that removes waiting downstream."""
    veh = p.vehicles[v]
    tour = [veh.start, *nodes] + ([veh.end] if veh.end is not None else [])
    # Forward pass: earliest starts.
    starts = [max(veh.start_time, int(p.earliest[veh.start]))]
    arrivals = [starts[0]]
    for a, b in itertools.pairwise(tour):
        arr = starts[-1] + int(p.service[a]) + int(p.durations[a, b])
        arrivals.append(arr)
        starts.append(max(arr, int(p.earliest[b])))
    # Push the departure later while no start moves past its latest nor gets later.
    if len(tour) > 1:
        slack = min(
            (int(p.latest[b]) - s for b, s in zip(tour[1:], starts[1:], strict=True)),
            default=0,
        )
        wait = sum(s - a for s, a in zip(starts[1:], arrivals[1:], strict=True))
        shift = max(0, min(slack, wait, int(p.latest[veh.start]) - starts[0]))
        if shift:
            starts[0] += shift
            arrivals[0] = starts[0]
            for i in range(1, len(tour)):
                a, b = tour[i - 1], tour[i]
                arrivals[i] = starts[i - 1] + int(p.service[a]) + int(p.durations[a, b])
                starts[i] = max(arrivals[i], int(p.earliest[b]))
    return list(zip(tour, arrivals, starts, strict=True))


def evaluate_plan(
    p: RoutingProblem, routes: Mapping[int, Sequence[int]]
) -> tuple[list[Route], ObjectiveBreakdown]:
    """Schedule ``routes`` (vehicle -> nodes, start/end excluded) and price them.

    Feasibility is not checked (solvers guarantee it); the breakdown uses the same
    weights as the solvers, with waiting from the earliest-start schedule.
    """
    obj = p.objective
    req_of: dict[int, tuple[int, str]] = {}
    for i, rq in enumerate(p.requests):
        if rq.pickup is not None:
            req_of[rq.pickup] = (i, "pickup")
        req_of[rq.delivery] = (i, "delivery")
    start_loads = p.start_loads()
    out: list[Route] = []
    tt = dist = late = wait = fixed = churn = 0
    late_cost = 0
    served: set[int] = set()
    for v in sorted(routes):
        nodes = routes[v]
        if not nodes:
            continue
        veh = p.vehicles[v]
        sched = schedule_route(p, v, nodes)
        load = int(start_loads[v])
        stops = []
        for j, (node, arr, st) in enumerate(sched):
            if j == 0:
                kind, ridx = "start", None
            elif j == len(sched) - 1 and veh.end is not None:
                kind, ridx = "end", None
            else:
                ridx, kind = req_of[node]
                rq = p.requests[ridx]
                load += rq.load if kind == "pickup" else -rq.load
                wait += st - arr
                if kind == "delivery":
                    served.add(ridx)
                    if rq.due is not None and st > rq.due:
                        late += st - rq.due
                        w = obj.lateness if rq.lateness_penalty is None else rq.lateness_penalty
                        late_cost += w * (st - rq.due)
                if (kind == "pickup" or rq.on_board) and rq.previous_vehicle is not None:
                    churn += rq.previous_vehicle != v
            stops.append(Stop(node=node, arrival=arr, start=st, load=load, request=ridx, kind=kind))
        tour = [s.node for s in stops]
        d = int(sum(p.distances[a, b] for a, b in itertools.pairwise(tour)))
        t = int(sum(p.durations[a, b] for a, b in itertools.pairwise(tour)))
        tt += t
        dist += d
        fixed += p.vehicle_fixed_cost(v)
        out.append(
            Route(
                vehicle=v, stops=tuple(stops), distance=d, duration=stops[-1].start - stops[0].start
            )
        )
    drop_cost = 0
    for i, rq in enumerate(p.requests):
        if i not in served and rq.drop_penalty is not None:
            drop_cost += rq.drop_penalty * obj.dropped
    bd = ObjectiveBreakdown(
        total=obj.travel_time * tt
        + obj.distance * dist
        + late_cost
        + obj.waiting * wait
        + fixed
        + obj.churn * churn
        + drop_cost,
        travel_time=obj.travel_time * tt,
        distance=obj.distance * dist,
        lateness=late_cost,
        waiting=obj.waiting * wait,
        vehicles_fixed=fixed,
        churn=obj.churn * churn,
        dropped=drop_cost,
        travel_time_units=tt,
        distance_units=dist,
        lateness_units=late,
        waiting_units=wait,
    )
    return out, bd


def evaluate_routes(p: RoutingProblem, routes: Mapping[int, Sequence[int]]) -> ObjectiveBreakdown:
    """The objective breakdown of ``routes`` (see :func:`evaluate_plan`)."""
    return evaluate_plan(p, routes)[1]

"""The rolling-horizon dispatcher: events in, plan changes out.

A stateful object that both the simulator and the live service drive, and that knows
neither: callers report what happened (order placed or cancelled, courier moved,
picked up, delivered, shift on/off) and advance the clock with :meth:`tick`; every call
returns the resulting :data:`Event` objects (route changed, order (re)assigned or
unassigned, ETA changed, delay predicted).

How it decides:

* A new order is inserted at once by cheapest feasible insertion among the nearest
  couriers (milliseconds), so nobody waits for the next full solve.
* Every ``replan_every_s`` the whole open problem is re-optimised with OR-Tools
  (``dispatch.solvers.ortools``), warm-started from the current plan. Stability: each
  courier's next stop is frozen (they may already be driving there), orders whose
  courier is about to arrive at the store are locked, and moving an order to another
  courier costs ``churn_s`` seconds-equivalent in the objective.
* ETAs are re-timed from the courier's latest position after every plan change and
  movement; a delay event is emitted once when an order's drop-off ETA passes its
  promise by more than ``delay_threshold_s``, and again only if the delay grows by
  ``delay_growth_s``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from dispatch.eta import RouteCheck, Visit, time_route
from dispatch.model import (
    Courier,
    DispatchError,
    Order,
    Place,
    Plan,
    Route,
    StopKind,
    UnknownId,
)
from dispatch.problem import Objective, ProblemBuilder, RoutingProblem, RoutingSolution
from geo.travel import TravelTimeModel

DROP_PENALTY = 50_000_000
"""Cost of leaving an order unserved by a re-plan: above any lateness it could avoid."""
MIN_GROUP_SEARCH_S = 0.25
"""Least search time a group's solve is given (less found nothing in time: measured on
groups of 60 couriers and ~150 orders, whose OR-Tools model alone takes ~0.6 s)."""


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """Operator-set knobs. Costs are in seconds of courier driving."""

    replan_every_s: float = 30.0
    solve_time_limit_s: float = 1.0
    solution_limit: int | None = None
    """Work limit per solve; set it (with ``seed``) for runs that repeat exactly."""
    seed: int = 0
    lateness_weight: int = 3
    """Cost per second of a drop-off past its promise (3 = a late second costs 3 s)."""
    churn_s: int = 120
    """Cost of moving an already assigned order to another courier."""
    waiting_weight: int = 0
    """Cost per second a courier waits at a store for food that is not ready."""
    lock_within_s: float = 120.0
    """An order is locked to its courier once their pickup ETA is this close."""
    freeze_next_stop: bool = True
    max_couriers_per_solve: int = 60
    """Bigger fleets are split into nearby groups solved one after another."""
    full_replan_every_s: float = 300.0
    """A re-plan solves only the groups where something happened since their last solve
    (an order placed, cancelled, unplanned or predicted late; a shift started or ended;
    a courier picked up or delivered what its route did not say); the whole city is
    re-optimised at this cadence. 0: every re-plan solves every group."""
    insertion_candidates: int = 6
    """Nearest couriers tried by the insertion heuristic."""
    delay_threshold_s: float = 0.0
    delay_growth_s: float = 300.0
    eta_change_s: float = 30.0
    """ETA changes smaller than this are not re-announced."""
    default_latest_after_promise_s: float | None = None
    """Hard latest drop-off for orders without ``latest_by`` (None: no hard limit)."""


SETTING_RANGES: dict[str, tuple[float, float]] = {
    "replan_every_s": (0.0, 3600.0),
    "solve_time_limit_s": (0.001, 30.0),
    "solution_limit": (1, 10_000_000),
    "seed": (0, 2**31 - 1),
    "lateness_weight": (0, 100),
    "churn_s": (0, 3600),
    "waiting_weight": (0, 100),
    "lock_within_s": (0.0, 86_400.0),
    "max_couriers_per_solve": (1, 1000),
    "full_replan_every_s": (0.0, 86_400.0),
    "insertion_candidates": (1, 100),
    "delay_threshold_s": (0.0, 86_400.0),
    "delay_growth_s": (0.0, 86_400.0),
    "eta_change_s": (0.0, 3600.0),
    "default_latest_after_promise_s": (0.0, 7 * 86_400.0),
}
"""Sane range of each numeric :class:`DispatchSettings` field, inclusive, for operators'
input. Outside them the solver breaks rather than misbehaves: costs are int64 in
OR-Tools (a lateness weight of 2**63 overflowed every re-plan), weights beyond ~100 make
an hour's lateness outweigh :data:`DROP_PENALTY`, and a solution limit of 0 is refused
as invalid search parameters."""


# -- events out ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RouteChanged:
    courier_id: str
    route: Route
    t: float


@dataclass(frozen=True, slots=True)
class OrderAssigned:
    order_id: str
    courier_id: str
    previous_courier_id: str | None
    t: float


@dataclass(frozen=True, slots=True)
class OrderUnassigned:
    order_id: str
    reason: str
    t: float


@dataclass(frozen=True, slots=True)
class EtaChanged:
    order_id: str
    pickup_eta: float | None
    dropoff_eta: float | None
    t: float


@dataclass(frozen=True, slots=True)
class DelayPredicted:
    order_id: str
    dropoff_eta: float
    promised_by: float
    delay_s: float
    t: float


@dataclass(frozen=True, slots=True)
class OrderStatusChanged:
    order_id: str
    status: str
    courier_id: str | None
    t: float


Event = (
    RouteChanged
    | OrderAssigned
    | OrderUnassigned
    | EtaChanged
    | DelayPredicted
    | (OrderStatusChanged)
)


@dataclass
class DispatcherStats:
    replans: int = 0
    replans_rejected: int = 0
    insertions: int = 0
    insertion_failures: int = 0
    groups_solved: int = 0
    groups_skipped: int = 0
    """Groups a re-plan left as they were (nothing happened in them)."""
    groups_deferred: int = 0
    """Groups a re-plan had no time left for (solved by a later one)."""
    last_solve_s: float = 0.0


class Dispatcher:
    """Rolling-horizon dispatcher over one travel-time model (see module docstring)."""

    def __init__(
        self,
        travel: TravelTimeModel,
        settings: DispatchSettings | None = None,
        now: float = 0.0,
    ) -> None:
        self.travel = travel
        self.settings = settings or DispatchSettings()
        self.now = now
        self.orders: dict[str, Order] = {}
        self.couriers: dict[str, Courier] = {}
        self.visits: dict[str, list[Visit]] = {}
        # The plan's parts, kept mutable: a position fix replaces one route, and copying
        # every route into a new Plan on each fix was quadratic in fleet size. ``plan``
        # builds the immutable view when someone reads it.
        self._routes: dict[str, Route] = {}
        self._plan_unassigned: dict[str, str] = {}
        self._plan_at = now
        self._plan: Plan | None = None
        self.stats = DispatcherStats()
        self.last_solution: RoutingSolution | None = None
        self._last_replan = -math.inf
        self._last_full_replan = -math.inf
        # What happened since the last solve of its group (see DispatchSettings).
        self._dirty_couriers: set[str] = set()
        self._dirty_orders: set[str] = set()
        self._announced_eta: dict[str, tuple[float | None, float | None]] = {}
        self._announced_delay: dict[str, float] = {}
        self._unassigned: dict[str, str] = {}

    # -- queries ----------------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        """Routes of every courier and the open orders no route serves, as of now."""
        if self._plan is None:
            self._plan = Plan(self._plan_at, dict(self._routes), dict(self._plan_unassigned))
        return self._plan

    def order(self, order_id: str) -> Order:
        try:
            return self.orders[order_id]
        except KeyError:
            raise UnknownId("unknown_order", f"unknown order {order_id!r}") from None

    def courier(self, courier_id: str) -> Courier:
        try:
            return self.couriers[courier_id]
        except KeyError:
            raise UnknownId("unknown_courier", f"unknown courier {courier_id!r}") from None

    def etas(self, order_id: str) -> tuple[float | None, float | None]:
        """(pickup ETA, drop-off ETA) of an open order in the current plan."""
        order = self.order(order_id)
        if order.mode == "self_pickup":
            return (max(order.ready_at, self.now), None) if order.is_open else (None, None)
        return self.plan.eta(order_id, "pickup"), self.plan.eta(order_id, "dropoff")

    def plan_cost(self) -> dict[str, float]:
        """The current plan scored like the optimiser scores it (seconds-equivalent).

        ``cost`` = travel + ``lateness_weight`` x lateness + a drop penalty per order
        no route serves (churn is not counted: it depends on the previous plan).
        """
        travel = late = 0.0
        for cid, visits in self.visits.items():
            c = self.couriers.get(cid)
            if c is not None and visits:
                timed = self._time(c, visits)
                travel += timed.travel_s
                late += timed.lateness_s
        unserved = len(self._plan_unassigned)
        cost = travel + self.settings.lateness_weight * late + DROP_PENALTY * unserved
        return {"cost": cost, "travel_s": travel, "lateness_s": late, "unassigned": unserved}

    def open_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open]

    # -- events in --------------------------------------------------------------------
    def place_order(self, order: Order) -> list[Event]:
        """A new order: insert it right away into the best courier's route."""
        if order.id in self.orders:
            raise DispatchError("duplicate_order", f"order {order.id!r} already exists")
        if order.status != "placed":
            raise DispatchError("bad_order", f"a new order must be 'placed', not {order.status}")
        self._advance(order.placed_at)
        self.orders[order.id] = order
        if not order.needs_courier:
            eta = max(order.ready_at, self.now)
            self._announced_eta[order.id] = (eta, None)
            return [EtaChanged(order.id, eta, None, self.now)]
        self._dirty_orders.add(order.id)
        return self._insert(order)

    def cancel_order(self, order_id: str, at: float) -> list[Event]:
        self._advance(at)
        order = self.order(order_id)
        courier_id = order.courier_id
        self.orders[order_id] = order.transition("cancelled", at)
        events: list[Event] = [OrderStatusChanged(order_id, "cancelled", courier_id, at)]
        if courier_id is not None and courier_id in self.couriers:
            self._dirty_couriers.add(courier_id)
            c = self.couriers[courier_id]
            if order_id in c.on_board:
                self.couriers[courier_id] = replace(
                    c, on_board=tuple(o for o in c.on_board if o != order_id)
                )
            self.visits[courier_id] = [
                v for v in self.visits.get(courier_id, []) if v[0].id != order_id
            ]
            events += self._retime([courier_id], route_changed=True)
        self._forget(order_id)
        return events

    def start_shift(self, courier: Courier) -> list[Event]:
        """A courier comes on shift (or is updated while on shift)."""
        self._advance(courier.position_t)
        old = self.couriers.get(courier.id)
        on_board = old.on_board if old is not None else courier.on_board
        self.couriers[courier.id] = replace(courier, on_shift=True, on_board=on_board)
        self.visits.setdefault(courier.id, [])
        self._dirty_couriers.add(courier.id)
        return self._place_pending()

    def end_shift(self, courier_id: str, at: float) -> list[Event]:
        """Shift over: orders not yet picked up go back to the pool; on-board stay."""
        self._advance(at)
        c = self.courier(courier_id)
        self.couriers[courier_id] = replace(c, on_shift=False, shift_end=min(c.shift_end, at))
        self._dirty_couriers.add(courier_id)
        kept = [v for v in self.visits.get(courier_id, []) if v[0].id in c.on_board]
        events: list[Event] = []
        for order_id in {v[0].id for v in self.visits.get(courier_id, [])} - set(c.on_board):
            events += self._unassign(order_id, "courier_shift_ended")
            self._dirty_orders.add(order_id)
        self.visits[courier_id] = kept
        events += self._retime([courier_id], route_changed=True)
        return events + self._place_pending()

    def courier_moved(
        self, courier_id: str, place: Place, at: float, radius_m: float = 0.0
    ) -> list[Event]:
        """A new fused position: re-time the courier's route and refresh its ETAs."""
        self._advance(at)
        c = self.courier(courier_id)
        if at < c.position_t:
            return []  # an older position than the one we have: nothing to learn
        self.couriers[courier_id] = replace(
            c, position=place, position_t=at, position_radius_m=radius_m
        )
        return self._retime([courier_id], route_changed=False, orders_changed=False)

    def picked_up(self, order_id: str, courier_id: str, at: float) -> list[Event]:
        self._advance(at)
        order = self.order(order_id)
        c = self.courier(courier_id)
        if order.status == "placed" and order.needs_courier:
            order = order.transition("assigned", at, courier_id)  # picked up unplanned
        if order.courier_id not in (None, courier_id):
            raise DispatchError(
                "wrong_courier", f"order {order_id} is assigned to {order.courier_id}"
            )
        if not any(
            v[0].id == order_id and v[1] == "pickup" for v in self.visits.get(courier_id, [])
        ):
            self._dirty_couriers.add(courier_id)  # not what its route said
        self.orders[order_id] = order.transition("picked_up", at, courier_id)
        self.couriers[courier_id] = replace(c, on_board=(*c.on_board, order_id))
        visits = [
            v
            for v in self.visits.get(courier_id, [])
            if not (v[0].id == order_id and v[1] == "pickup")
        ]
        if not any(v[0].id == order_id for v in visits):
            visits.append((self.orders[order_id], "dropoff"))
        self.visits[courier_id] = [(self.orders[v[0].id], v[1]) for v in visits]
        for other, vs in self.visits.items():
            if other != courier_id:
                self.visits[other] = [v for v in vs if v[0].id != order_id]
        return [
            OrderStatusChanged(order_id, "picked_up", courier_id, at),
            *self._retime([courier_id], route_changed=True),
        ]

    def delivered(self, order_id: str, courier_id: str | None, at: float) -> list[Event]:
        self._advance(at)
        order = self.order(order_id)
        if order.needs_courier and courier_id is not None and order.courier_id != courier_id:
            raise DispatchError(
                "wrong_courier", f"order {order_id} is carried by {order.courier_id}"
            )
        if not order.needs_courier and order.status == "placed":
            order = order.transition("picked_up", at)
        elif order.needs_courier and order.status != "picked_up" and order.courier_id:
            self._dirty_couriers.add(order.courier_id)  # delivered without a pickup
        self.orders[order_id] = order.transition("delivered", at)
        events: list[Event] = [OrderStatusChanged(order_id, "delivered", order.courier_id, at)]
        cid = order.courier_id
        if cid is not None and cid in self.couriers:
            c = self.couriers[cid]
            self.couriers[cid] = replace(c, on_board=tuple(o for o in c.on_board if o != order_id))
            self.visits[cid] = [v for v in self.visits.get(cid, []) if v[0].id != order_id]
            events += self._retime([cid], route_changed=True)
        self._forget(order_id)
        return events

    def tick(self, now: float) -> list[Event]:
        """Advance the clock; re-plan when the cadence says so."""
        self._advance(now)
        if now - self._last_replan < self.settings.replan_every_s:
            return []
        return self.replan()

    def load_snapshot(self, couriers: Sequence[Courier], orders: Sequence[Order]) -> list[Event]:
        """Take over a whole city at once (a restart, a simulation start) with a plan.

        Inserting a thousand orders one by one costs seconds; this builds a feasible
        first plan in one pass instead: orders by ready time, each appended to the
        courier who can reach its store earliest (vectorised over couriers), pickup and
        drop-off back to back, so capacity holds whenever a courier can carry one order.
        :meth:`replan` then improves it, warm-started from this plan.
        """
        for c in couriers:
            self._advance(c.position_t)
            self.couriers[c.id] = c
            self.visits.setdefault(c.id, [])
        for o in orders:
            if o.id in self.orders:
                raise DispatchError("duplicate_order", f"order {o.id!r} already exists")
            self.orders[o.id] = o
        active = [c for c in self.couriers.values() if c.on_shift and c.capacity >= 1]
        new_visits: dict[str, list[Visit]] = {cid: list(v) for cid, v in self.visits.items()}
        for o in orders:  # orders already with a courier stay there
            if o.courier_id is None or o.courier_id not in new_visits or not o.is_open:
                continue
            if o.status == "assigned":
                new_visits[o.courier_id] += [(o, "pickup"), (o, "dropoff")]
            elif o.status == "picked_up":
                new_visits[o.courier_id].insert(0, (o, "dropoff"))
        if active:
            free_at = np.empty(len(active))
            where = np.empty((len(active), 2))
            for i, c in enumerate(active):
                timed = self._time(c, new_visits[c.id])
                free_at[i] = timed.end if timed.stops else max(self.now, c.position_t)
                last = timed.stops[-1].place if timed.stops else c.position
                where[i] = last.point
            shift_end = np.array([c.shift_end for c in active])
            speed = np.array([c.speed_factor for c in active])
            pending = sorted(
                (o for o in orders if o.needs_courier and o.status == "placed"),
                key=lambda o: (o.ready_at, o.id),
            )
            for o in pending:
                to_store = self.travel.duration_matrix(where, np.asarray([o.pickup.point]))
                arrive = free_at + to_store[:, 0] * speed
                begin = np.maximum(arrive, o.ready_at)
                begin[begin > shift_end] = np.inf
                i = int(np.argmin(begin))
                if not np.isfinite(begin[i]):
                    self._unassigned[o.id] = "no_feasible_courier"
                    continue
                c = active[i]
                leg = self.travel.duration_matrix(
                    np.asarray([o.pickup.point]), np.asarray([o.dropoff.point])
                )[0, 0]
                free_at[i] = begin[i] + o.pickup_service_s + leg * speed[i] + o.dropoff_service_s
                where[i] = o.dropoff.point
                new_visits[c.id] += [(o, "pickup"), (o, "dropoff")]
        events = self._apply(new_visits, {})
        for o in orders:
            if not o.needs_courier and o.is_open:
                eta = max(o.ready_at, self.now)
                self._announced_eta[o.id] = (eta, None)
                events.append(EtaChanged(o.id, eta, None, self.now))
        return events

    # -- the full re-plan -------------------------------------------------------------
    def replan(self) -> list[Event]:
        """Re-optimise the open orders with OR-Tools, warm-started from the plan.

        Large cities are cut into groups of at most ``max_couriers_per_solve`` nearby
        couriers (k-means on where they are), each solved on its own share of the time
        budget: OR-Tools model construction grows much faster than linearly with
        vehicles x nodes, and couriers kilometres apart rarely trade orders. Only groups
        where something happened since the last re-plan are solved, except every
        ``full_replan_every_s`` (see :class:`DispatchSettings`): a group whose couriers
        merely moved along their routes keeps its plan (position fixes re-time it), and
        solving it again cost most of a city-wide re-plan's CPU for nothing.
        """
        from dispatch.solvers.ortools import solve  # only module that imports OR-Tools

        self._last_replan = self.now
        groups = self._partition()
        full = self.now - self._last_full_replan >= self.settings.full_replan_every_s
        if full:
            self._last_full_replan = self.now
        else:
            todo = [g for g in groups if self._needs_solve(*g)]
            self.stats.groups_skipped += len(groups) - len(todo)
            groups = todo
        self._dirty_couriers.clear()
        self._dirty_orders.clear()
        budget = self.settings.solve_time_limit_s
        bounded_by_time = self.settings.solution_limit is None
        if bounded_by_time and groups:  # who goes first rotates: nobody waits for ever
            first = self.stats.replans % len(groups)
            groups = groups[first:] + groups[:first]
        t0 = time.perf_counter()
        new_visits: dict[str, list[Visit]] = {cid: list(v) for cid, v in self.visits.items()}
        dropped: dict[str, str] = {}
        solved = False
        for k, (cids, oids) in enumerate(groups):
            if bounded_by_time and k > 0 and time.perf_counter() - t0 >= budget:
                # Out of time: the other groups wait for the next re-plan (as news) rather
                # than each get a sliver of search that finds nothing (see
                # MIN_GROUP_SEARCH_S) while new orders wait behind this re-plan.
                for rest, _ in groups[k:]:
                    self._dirty_couriers.update(rest)
                self.stats.groups_deferred += len(groups) - k
                break
            built = self._build_problem(cids, oids)
            if built is None:
                continue
            problem, vehicle_ids, node_visit, frozen = built
            left = budget - (time.perf_counter() - t0)
            solution = solve(
                problem,
                max(
                    min(budget, MIN_GROUP_SEARCH_S) if bounded_by_time else 0.05,
                    left / (len(groups) - k),
                ),
                seed=self.settings.seed,
                solution_limit=self.settings.solution_limit,
            )
            self.last_solution = solution
            sub_dropped = {str(problem.requests[d.request].id): d.reason for d in solution.dropped}
            served = {o.id for cid in vehicle_ids for o, _k in self.visits.get(cid, [])}
            self.stats.groups_solved += 1
            if served & set(sub_dropped):
                # The search ran out of time before matching the current plan: never
                # trade a served order for an unserved one; keep this group's plan
                # (valid, and re-timed by every fix) until news or the next full
                # re-plan: trying again at once would only fail again.
                self.stats.replans_rejected += 1
                continue
            solved = True
            for cid in vehicle_ids:
                new_visits[cid] = list(frozen.get(cid, []))
            for r in solution.routes:
                cid = vehicle_ids[r.vehicle]
                for st in r.visits:
                    order_id, kind = node_visit[st.node]
                    new_visits[cid].append((self.orders[order_id], kind))
            dropped.update(sub_dropped)
        elapsed = time.perf_counter() - t0
        self.stats.replans += 1
        self.stats.last_solve_s = elapsed
        if not solved:
            return []
        return self._apply(new_visits, dropped)

    def _needs_solve(self, courier_ids: set[str], order_ids: set[str]) -> bool:
        """Whether something happened in a group since it was last solved (an order no
        route serves counts: every re-plan tries again to place it)."""
        return (
            not self._dirty_couriers.isdisjoint(courier_ids)
            or not self._dirty_orders.isdisjoint(order_ids)
            or not self._plan_unassigned.keys().isdisjoint(order_ids)
        )

    def _partition(self) -> list[tuple[set[str], set[str]]]:
        """Groups of (couriers, open orders) solved independently; see :meth:`replan`.

        Orders already with a courier stay in that courier's group; unassigned orders
        join the group whose centre is nearest their store.
        """
        s = self.settings
        cids = [cid for cid, c in self.couriers.items() if c.on_shift or c.on_board]
        open_ids = {o.id for o in self.orders.values() if o.is_open and o.needs_courier}
        k = max(1, math.ceil(len(cids) / s.max_couriers_per_solve))
        if k == 1:
            return [(set(cids), open_ids)]
        pts = np.asarray([self.couriers[c].position.point for c in cids], dtype=np.float64)
        scale = np.ones(2)
        if self.travel.coords == "latlon":
            scale[1] = math.cos(math.radians(float(pts[:, 0].mean())))
        pts = pts * scale
        rng = np.random.default_rng(s.seed)
        centres = pts[rng.choice(len(pts), size=k, replace=False)]
        for _ in range(10):  # Lloyd iterations; a rough split is all we need
            label = np.argmin(((pts[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
            for j in range(k):
                if (label == j).any():
                    centres[j] = pts[label == j].mean(axis=0)
        label = np.argmin(((pts[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
        groups: list[tuple[set[str], set[str]]] = [(set(), set()) for _ in range(k)]
        group_of: dict[str, int] = {}
        for cid, j in zip(cids, label, strict=True):
            groups[int(j)][0].add(cid)
            group_of[cid] = int(j)
        staffed = np.array([bool(g[0]) for g in groups])
        for oid in sorted(open_ids):
            o = self.orders[oid]
            if o.courier_id in group_of:
                groups[group_of[o.courier_id]][1].add(oid)
                continue
            p = np.asarray(o.pickup.point, dtype=np.float64) * scale
            d = ((centres - p) ** 2).sum(axis=1)
            d[~staffed] = np.inf
            groups[int(np.argmin(d))][1].add(oid)
        return [g for g in groups if g[0]]

    def _build_problem(
        self, courier_ids: set[str], order_ids: set[str]
    ) -> (
        tuple[RoutingProblem, list[str], dict[int, tuple[str, StopKind]], dict[str, list[Visit]]]
        | None
    ):
        s = self.settings
        now = self.now
        b = ProblemBuilder(
            objective=Objective(
                travel_time=1,
                lateness=s.lateness_weight,
                waiting=s.waiting_weight,
                churn=s.churn_s,
                dropped=1,
            )
        )
        points: list[tuple[float, float]] = []
        vehicle_ids: list[str] = []
        node_visit: dict[int, tuple[str, StopKind]] = {}
        frozen: dict[str, list[Visit]] = {}
        on_board_of: dict[str, str] = {}
        start_info: dict[str, tuple[Place, float]] = {}
        for cid in sorted(courier_ids):
            c = self.couriers[cid]
            visits = self.visits.get(cid, [])
            if not c.on_shift and not c.on_board:
                continue
            place, t_start = c.position, max(now, c.position_t)
            if s.freeze_next_stop and visits:
                timed = self._time(c, visits)
                first = timed.stops[0]
                frozen[cid] = [visits[0]]
                place, t_start = first.place, first.departure
                if visits[0][1] == "pickup":
                    on_board_of[visits[0][0].id] = cid
            start_info[cid] = (place, t_start)
        horizon = 10**9
        for cid, (place, t_start) in start_info.items():
            c = self.couriers[cid]
            node = b.add_node(0, horizon, 0)
            points.append(place.point)
            shift_end = int(max(0.0, c.shift_end - now)) if c.on_shift else 0
            b.add_vehicle(
                start=node,
                end=None,
                capacity=c.capacity,
                start_time=int(max(0.0, t_start - now)),
                shift_end=shift_end,
                id=cid,
            )
            vehicle_ids.append(cid)
        if not vehicle_ids:
            return None
        vindex = {cid: i for i, cid in enumerate(vehicle_ids)}
        frozen_done = {v[0].id for vs in frozen.values() for v in vs if v[1] == "dropoff"}
        initial: dict[str, list[int]] = {cid: [] for cid in vehicle_ids}
        node_of: dict[tuple[str, str], int] = {}
        n_requests = 0
        for oid in sorted(order_ids):
            order = self.orders[oid]
            if not order.is_open or not order.needs_courier or order.id in frozen_done:
                continue
            carrier = order.courier_id if order.status == "picked_up" else on_board_of.get(order.id)
            if order.status == "picked_up" and carrier not in vindex:
                continue  # its courier is gone from the problem; nothing to decide
            latest = order.latest_by
            if latest is None and s.default_latest_after_promise_s is not None:
                latest = order.promised_by + s.default_latest_after_promise_s
            d_latest = horizon if latest is None else int(max(0.0, latest - now))
            if carrier is not None and carrier in vindex:
                pickup = None
                allowed: tuple[int, ...] | None = (vindex[carrier],)
            else:
                pickup = b.add_node(
                    int(max(0.0, order.ready_at - now)), horizon, int(order.pickup_service_s)
                )
                points.append(order.pickup.point)
                node_visit[pickup] = (order.id, "pickup")
                node_of[(order.id, "pickup")] = pickup
                allowed = None
            delivery = b.add_node(0, d_latest, int(order.dropoff_service_s))
            points.append(order.dropoff.point)
            node_visit[delivery] = (order.id, "dropoff")
            node_of[(order.id, "dropoff")] = delivery
            locked = None
            if pickup is not None and order.locked and order.courier_id in vindex:
                locked = vindex[order.courier_id]
            previous = vindex.get(order.courier_id) if order.courier_id else None
            b.add_request(
                pickup,
                delivery,
                load=order.size,
                id=order.id,
                due=int(max(0.0, order.promised_by - now)),
                allowed_vehicles=allowed,
                locked_vehicle=locked,
                drop_penalty=None if pickup is None else DROP_PENALTY,
                previous_vehicle=previous,
            )
            n_requests += 1
        if n_requests == 0:
            return None
        for cid in vehicle_ids:
            for order, kind in self.visits.get(cid, [])[len(frozen.get(cid, [])) :]:
                warm = node_of.get((order.id, kind))
                if warm is not None:
                    initial[cid].append(warm)
        durations = np.ceil(
            self.travel.duration_matrix(np.asarray(points), np.asarray(points))
        ).astype(np.int64)
        problem = b.build(durations, durations, initial_routes=[initial[c] for c in vehicle_ids])
        return problem, vehicle_ids, node_visit, frozen

    # -- the insertion heuristic ------------------------------------------------------
    def _insert(self, order: Order) -> list[Event]:
        best = self.best_insertion(order)
        self.stats.insertions += 1
        if best is None:
            self.stats.insertion_failures += 1
            self._unassigned[order.id] = "no_feasible_courier"
            return [
                OrderUnassigned(order.id, "no_feasible_courier", self.now),
                *self._retime([], route_changed=False),
            ]
        cid, visits = best
        return self._apply({cid: visits}, {})

    def best_insertion(self, order: Order) -> tuple[str, list[Visit]] | None:
        """Cheapest feasible insertion of ``order`` among the nearest couriers.

        Cost = added travel seconds + ``lateness_weight`` x added lateness seconds.
        The courier's frozen next stop stays first. Returns (courier, new visits).

        Added travel is exact from one small matrix and is a lower bound of the added
        cost (an insertion can only delay stops, never make them less late), so the
        candidates are timed in order of added travel and the search stops as soon as
        that bound exceeds the best feasible cost found: usually after a few timings.
        """
        s = self.settings
        active = [c for c in self.couriers.values() if c.on_shift and c.shift_end > self.now]
        if not active:
            return None
        pts = np.asarray([c.position.point for c in active], dtype=np.float64)
        to_pickup = self.travel.duration_matrix(pts, np.asarray([order.pickup.point]))[:, 0]
        ranked = [active[int(i)] for i in np.argsort(to_pickup, kind="stable")]
        ranked = ranked[: s.insertion_candidates]
        # One matrix for all candidates: per courier a block [position, stops..., P, D].
        blocks: list[tuple[Courier, list[Visit], int]] = []
        points: list[tuple[float, float]] = []
        for c in ranked:
            current = self.visits.get(c.id, [])
            blocks.append((c, current, len(points)))
            points += [c.position.point, *(_visit_point(v) for v in current)]
            points += [order.pickup.point, order.dropoff.point]
        arr = np.asarray(points, dtype=np.float64)
        full = self.travel.duration_matrix(arr, arr)
        options: list[tuple[float, int, int, int]] = []  # (cost lower bound, block, i, j)
        base_cost: dict[int, float] = {}
        w = s.lateness_weight
        mats: list[list[list[float]]] = []  # per block, as lists: cheap scalar indexing
        for b, (c, current, off) in enumerate(blocks):
            n = len(current)
            m = full[off : off + n + 3, off : off + n + 3] * c.speed_factor
            mats.append(m.tolist())
            pk, dl = n + 1, n + 2
            # Base schedule: after position i, how many drop-offs are already late and
            # how much waiting could absorb a delay. Pushing a route back by d seconds
            # adds at least late_after[i] * (d - wait_after[i]) seconds of lateness.
            start_t = max(self.now, c.position_t)
            base = time_route(
                c,
                current,
                c.position,
                start_t,
                self.travel,
                m[list(range(n)), list(range(1, n + 1))],
            )
            base_cost[b] = base.travel_s + w * base.lateness_s
            late_after = [0] * (n + 1)
            wait_after = [0.0] * (n + 1)
            for k in range(n - 1, -1, -1):
                st = base.stops[k]
                o = current[k][0]
                late_after[k] = late_after[k + 1] + (
                    1 if st.kind == "dropoff" and st.start > o.promised_by else 0
                )
                wait_after[k] = wait_after[k + 1] + (st.start - st.arrival)
            svc_p, svc_d = order.pickup_service_s, order.dropoff_service_s
            first = 1 if (s.freeze_next_stop and current) else 0
            for i in range(first, n + 1):
                # Pickup goes between stop i (0 = the courier) and stop i + 1.
                nxt_i = i + 1 if i < n else None
                add_p = m[i, pk] + (m[pk, nxt_i] - m[i, nxt_i] if nxt_i is not None else 0.0)
                for j in range(i, n + 1):
                    nxt_j = j + 1 if j < n else None
                    if j == i:
                        tail = m[dl, nxt_i] - m[i, nxt_i] if nxt_i is not None else 0.0
                        added = m[i, pk] + m[pk, dl] + tail
                        push = added + svc_p + svc_d
                    else:
                        added = (
                            add_p
                            + m[j, dl]
                            + (m[dl, nxt_j] - m[j, nxt_j] if nxt_j is not None else 0.0)
                        )
                        push = add_p + svc_p
                    late_lb = late_after[i] * max(0.0, push - wait_after[i])
                    options.append((float(added + w * late_lb), b, i, j))
        options.sort()
        best: tuple[float, str, list[Visit]] | None = None

        def evaluate(b: int, i: int, j: int) -> tuple[float, str, list[Visit]] | None:
            c, current, _off = blocks[b]
            n = len(current)
            mm = mats[b]
            start_t = max(self.now, c.position_t)
            seq = [*range(i + 1), n + 1, *range(i + 1, j + 1), n + 2, *range(j + 1, n + 1)]
            cand = [*current[:i], (order, "pickup"), *current[i:j], (order, "dropoff")]
            cand += current[j:]
            legs = [mm[a][z] for a, z in itertools.pairwise(seq)]
            check = time_route(c, cand, c.position, start_t, self.travel, legs, False)
            if not check.feasible:
                return None
            cost = check.travel_s + s.lateness_weight * check.lateness_s - base_cost[b]
            return cost, c.id, cand

        # Appending delays nobody: cheap to check and a good first bound.
        for b, (_c, current, _off) in enumerate(blocks):
            found = evaluate(b, len(current), len(current))
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        for added, b, i, j in options:
            if best is not None and added >= best[0]:
                break  # the bound: nothing further down can be cheaper
            found = evaluate(b, i, j)
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        return None if best is None else (best[1], best[2])

    # -- plumbing ---------------------------------------------------------------------
    def _time(self, c: Courier, visits: Sequence[Visit]) -> RouteCheck:
        return time_route(c, visits, c.position, max(self.now, c.position_t), self.travel)

    def _advance(self, t: float) -> None:
        if not math.isfinite(t):
            raise DispatchError("bad_time", f"time must be finite, got {t}")
        self.now = max(self.now, t)

    def _place_pending(self) -> list[Event]:
        events: list[Event] = []
        for order_id in list(self._unassigned):
            order = self.orders[order_id]
            if order.is_open and order.status == "placed":
                best = self.best_insertion(order)
                if best is not None:
                    events += self._apply({best[0]: best[1]}, {})
        return events

    def _unassign(self, order_id: str, reason: str) -> list[Event]:
        order = self.orders[order_id]
        self._unassigned[order_id] = reason
        if order.status == "assigned":
            self.orders[order_id] = order.transition("placed", self.now)
        return [OrderUnassigned(order_id, reason, self.now)]

    def _forget(self, order_id: str) -> None:
        self._unassigned.pop(order_id, None)
        self._announced_eta.pop(order_id, None)
        self._announced_delay.pop(order_id, None)

    def _apply(self, new_visits: dict[str, list[Visit]], dropped: dict[str, str]) -> list[Event]:
        """Install new routes for the couriers in ``new_visits`` (others keep theirs).

        Emits status changes, route events, ETA and delay events. An order that left a
        changed route without joining another one goes back to the pool.
        """
        events: list[Event] = []
        changed: list[str] = []
        assigned_to: dict[str, str] = {}
        removed: set[str] = set()
        for cid, visits in new_visits.items():
            visits = [(self.orders[o.id], k) for o, k in visits]
            before = self.visits.get(cid, [])
            if [(o.id, k) for o, k in visits] != [(o.id, k) for o, k in before]:
                changed.append(cid)
                removed.update(o.id for o, _k in before)
            self.visits[cid] = visits
            for o, _k in visits:
                assigned_to[o.id] = cid
        for order_id, cid in assigned_to.items():
            order = self.orders[order_id]
            if order.status in ("placed", "assigned") and order.courier_id != cid:
                previous = order.courier_id
                self.orders[order_id] = order.transition("assigned", self.now, cid)
                self._unassigned.pop(order_id, None)
                events.append(OrderAssigned(order_id, cid, previous, self.now))
        for order_id in sorted(removed - assigned_to.keys()):
            if self.orders[order_id].status == "assigned":
                events += self._unassign(order_id, dropped.get(order_id, "dropped_by_plan"))
        for order_id, reason in dropped.items():
            if self.orders[order_id].status == "placed":
                self._unassigned[order_id] = reason
        return events + self._retime(changed, route_changed=True)

    def _retime(
        self, courier_ids: Sequence[str], route_changed: bool, orders_changed: bool = True
    ) -> list[Event]:
        """Re-time routes, rebuild the plan, emit route/ETA/delay events.

        ``orders_changed=False`` (a position fix: no order changed status or courier)
        keeps the plan's unassigned orders instead of scanning every order: that scan ran
        on each fix of each courier, quadratic in fleet size.
        """
        events: list[Event] = []
        routes = self._routes
        todo = list(courier_ids)
        for cid in todo:
            c = self.couriers.get(cid)
            if c is None:
                continue
            timed = self._time(c, self.visits.get(cid, []))
            route = Route(cid, timed.stops)
            # Orders whose courier is about to reach the store are locked to them.
            routes[cid] = route
            if route_changed and cid in courier_ids:
                events.append(RouteChanged(cid, route, self.now))
            for stop in timed.stops:
                if stop.kind == "pickup" and stop.arrival - self.now <= self.settings.lock_within_s:
                    o = self.orders[stop.order_id]
                    if not o.locked and o.courier_id == cid:
                        self.orders[o.id] = replace(o, locked=True)
        if orders_changed:
            self._plan_unassigned = {
                o.id: self._unassigned.get(o.id, "not_planned")
                for o in self.orders.values()
                if o.status == "placed" and o.mode != "self_pickup"  # open, needs a courier
            }
        self._plan_at = self.now
        self._plan = None
        etas: dict[str, list[float | None]] = {}
        for cid in todo:
            for st in routes[cid].stops if cid in routes else ():
                etas.setdefault(st.order_id, [None, None])[st.kind == "dropoff"] = st.eta
        events += self._eta_events(etas)
        return events

    def _eta_events(self, etas: dict[str, list[float | None]]) -> list[Event]:
        """ETA and delay announcements for orders whose (pickup, drop-off) ETAs are given."""
        s = self.settings
        events: list[Event] = []
        for order_id in sorted(etas):
            order = self.orders[order_id]
            pickup, dropoff = etas[order_id]
            last = self._announced_eta.get(order_id)
            if (
                last is None
                or _moved(last[0], pickup, s.eta_change_s)
                or _moved(last[1], dropoff, s.eta_change_s)
            ):
                self._announced_eta[order_id] = (pickup, dropoff)
                events.append(EtaChanged(order_id, pickup, dropoff, self.now))
            if dropoff is not None:
                delay = dropoff - order.promised_by
                if delay > s.delay_threshold_s:
                    prev = self._announced_delay.get(order_id)
                    if prev is None or delay >= prev + s.delay_growth_s:
                        self._announced_delay[order_id] = delay
                        self._dirty_orders.add(order_id)
                        events.append(
                            DelayPredicted(order_id, dropoff, order.promised_by, delay, self.now)
                        )
        return events


def _visit_point(v: Visit) -> tuple[float, float]:
    return v[0].pickup.point if v[1] == "pickup" else v[0].dropoff.point


def _moved(old: float | None, new: float | None, tolerance: float) -> bool:
    if old is None or new is None:
        return old is not new
    return abs(old - new) >= tolerance

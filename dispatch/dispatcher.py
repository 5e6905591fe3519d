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

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

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
    insertion_candidates: int = 8
    """Nearest couriers tried by the insertion heuristic."""
    delay_threshold_s: float = 0.0
    delay_growth_s: float = 300.0
    eta_change_s: float = 30.0
    """ETA changes smaller than this are not re-announced."""
    default_latest_after_promise_s: float | None = None
    """Hard latest drop-off for orders without ``latest_by`` (None: no hard limit)."""


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
    last_solve_s: float = 0.0
    solve_seconds: list[float] = field(default_factory=list)


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
        self.plan = Plan(now)
        self.stats = DispatcherStats()
        self.last_solution: RoutingSolution | None = None
        self._last_replan = -math.inf
        self._announced_eta: dict[str, tuple[float | None, float | None]] = {}
        self._announced_delay: dict[str, float] = {}
        self._unassigned: dict[str, str] = {}

    # -- queries ----------------------------------------------------------------------
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
        unserved = len(self.plan.unassigned)
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
        return self._insert(order)

    def cancel_order(self, order_id: str, at: float) -> list[Event]:
        self._advance(at)
        order = self.order(order_id)
        courier_id = order.courier_id
        self.orders[order_id] = order.transition("cancelled", at)
        events: list[Event] = [OrderStatusChanged(order_id, "cancelled", courier_id, at)]
        if courier_id is not None and courier_id in self.couriers:
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
        return self._place_pending()

    def end_shift(self, courier_id: str, at: float) -> list[Event]:
        """Shift over: orders not yet picked up go back to the pool; on-board stay."""
        self._advance(at)
        c = self.courier(courier_id)
        self.couriers[courier_id] = replace(c, on_shift=False, shift_end=min(c.shift_end, at))
        kept = [v for v in self.visits.get(courier_id, []) if v[0].id in c.on_board]
        events: list[Event] = []
        for order_id in {v[0].id for v in self.visits.get(courier_id, [])} - set(c.on_board):
            events += self._unassign(order_id, "courier_shift_ended")
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
        return self._retime([courier_id], route_changed=False)

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
        """Re-optimise every open order with OR-Tools, warm-started from the plan."""
        from dispatch.solvers.ortools import solve  # only module that imports OR-Tools

        self._last_replan = self.now
        built = self._build_problem()
        if built is None:
            return self._retime(list(self.visits), route_changed=False)
        problem, vehicle_ids, node_visit, frozen = built
        t0 = time.perf_counter()
        solution = solve(
            problem,
            self.settings.solve_time_limit_s,
            seed=self.settings.seed,
            solution_limit=self.settings.solution_limit,
        )
        elapsed = time.perf_counter() - t0
        self.last_solution = solution
        self.stats.replans += 1
        self.stats.last_solve_s = elapsed
        self.stats.solve_seconds.append(elapsed)
        new_visits: dict[str, list[Visit]] = {cid: list(frozen.get(cid, [])) for cid in self.visits}
        for r in solution.routes:
            cid = vehicle_ids[r.vehicle]
            for s in r.visits:
                order_id, kind = node_visit[s.node]
                new_visits[cid].append((self.orders[order_id], kind))
        dropped = {str(problem.requests[d.request].id): d.reason for d in solution.dropped}
        served = {o.id for vs in self.visits.values() for o, _k in vs}
        if served & set(dropped):
            # The search ran out of time before matching the current plan: never trade
            # a served order for an unserved one; keep the plan we have.
            self.stats.replans_rejected += 1
            return []
        return self._apply(new_visits, dropped)

    def _build_problem(
        self,
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
        for cid, c in self.couriers.items():
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
        for order in self.orders.values():
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
        new = {k: list(v) for k, v in self.visits.items()}
        new[cid] = visits
        return self._apply(new, {})

    def best_insertion(self, order: Order) -> tuple[str, list[Visit]] | None:
        """Cheapest feasible insertion of ``order`` among the nearest couriers.

        Cost = added travel seconds + ``lateness_weight`` x added lateness seconds.
        The courier's frozen next stop stays first. Returns (courier, new visits).
        """
        s = self.settings
        active = [c for c in self.couriers.values() if c.on_shift and c.shift_end > self.now]
        if not active:
            return None
        pts = np.asarray([c.position.point for c in active], dtype=np.float64)
        to_pickup = self.travel.duration_matrix(pts, np.asarray([order.pickup.point]))[:, 0]
        ranked = np.argsort(to_pickup, kind="stable")[: s.insertion_candidates]
        best: tuple[float, str, list[Visit]] | None = None
        for idx in ranked:
            c = active[int(idx)]
            current = self.visits.get(c.id, [])
            # One small matrix per courier: point 0 is the courier, 1..n its stops,
            # n+1 / n+2 the new pickup / drop-off; every candidate's legs index into it.
            n = len(current)
            arr = np.asarray(
                [
                    c.position.point,
                    *(_visit_point(v) for v in current),
                    order.pickup.point,
                    order.dropoff.point,
                ],
                dtype=np.float64,
            )
            m = self.travel.duration_matrix(arr, arr) * c.speed_factor
            start_t = max(self.now, c.position_t)

            def timed(
                seq: list[int],
                visits: list[Visit],
                m: npt.NDArray[np.float64] = m,
                c: Courier = c,
                start_t: float = start_t,
            ) -> RouteCheck:
                return time_route(c, visits, c.position, start_t, self.travel, m[seq[:-1], seq[1:]])

            base_idx = list(range(n + 1))
            base = timed(base_idx, current)
            base_cost = base.travel_s + s.lateness_weight * base.lateness_s
            first = 1 if (s.freeze_next_stop and current) else 0
            for i in range(first, n + 1):
                for j in range(i, n + 1):
                    seq = [
                        *base_idx[: i + 1],
                        n + 1,
                        *base_idx[i + 1 : j + 1],
                        n + 2,
                        *base_idx[j + 1 :],
                    ]
                    cand = [
                        *current[:i],
                        (order, "pickup"),
                        *current[i:j],
                        (order, "dropoff"),
                        *current[j:],
                    ]
                    check = timed(seq, cand)
                    if not check.feasible:
                        continue
                    cost = check.travel_s + s.lateness_weight * check.lateness_s - base_cost
                    if best is None or cost < best[0]:
                        best = (cost, c.id, cand)
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
                    new = {k: list(v) for k, v in self.visits.items()}
                    new[best[0]] = best[1]
                    events += self._apply(new, {})
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
        """Install new routes: status changes, route events, ETA and delay events."""
        events: list[Event] = []
        changed: list[str] = []
        assigned_to: dict[str, str] = {}
        for cid, visits in new_visits.items():
            visits = [(self.orders[o.id], k) for o, k in visits]
            old = [(o.id, k) for o, k in self.visits.get(cid, [])]
            if [(o.id, k) for o, k in visits] != old:
                changed.append(cid)
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
        for order in list(self.orders.values()):
            if order.status == "assigned" and order.id not in assigned_to:
                events += self._unassign(order.id, dropped.get(order.id, "dropped_by_plan"))
            elif order.status == "placed" and order.id in dropped:
                self._unassigned[order.id] = dropped[order.id]
        return events + self._retime(changed, route_changed=True)

    def _retime(self, courier_ids: Sequence[str], route_changed: bool) -> list[Event]:
        """Re-time routes, rebuild the plan, emit route/ETA/delay events."""
        events: list[Event] = []
        routes = dict(self.plan.routes)
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
        unassigned = {
            o.id: self._unassigned.get(o.id, "not_planned")
            for o in self.orders.values()
            if o.is_open and o.needs_courier and o.status == "placed"
        }
        self.plan = Plan(self.now, routes, unassigned)
        touched = {s.order_id for cid in todo if cid in routes for s in routes[cid].stops}
        events += self._eta_events(touched)
        return events

    def _eta_events(self, order_ids: set[str]) -> list[Event]:
        s = self.settings
        events: list[Event] = []
        for order_id in sorted(order_ids):
            order = self.orders[order_id]
            pickup = self.plan.eta(order_id, "pickup")
            dropoff = self.plan.eta(order_id, "dropoff")
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

"""Deterministic discrete-event simulator of a delivery day under a dispatch policy.

**Time** is seconds from the start of the day (MDRP minutes x 60, matching
:mod:`dispatch.model`); the solution writer converts to minutes. Nothing here reads the
wall clock; the only randomness is ``view.rng``, seeded from :attr:`EngineConfig.seed`,
so a scenario, policy and seed always give the same day.

**Events** sit in a heap of ``(time, rank, seq, kind, subject)``. ``rank`` orders events
of one instant so that every tick sees the world settled: shifts start, orders are placed
and become ready, couriers arrive, serve and leave, shifts end, and only then does the
dispatcher tick. ``seq`` (insertion order) breaks the remaining ties, so equal-time
events are processed in a reproducible order.

**Couriers** execute a queue of stops (pickup or drop-off of one order). A courier leaves
a place, travels (``travel`` model), arrives, serves, and leaves again, following the MDRP
timing rules (a courier's travel time is the model's time multiplied by its
:attr:`~dispatch.model.Courier.speed_factor`, 1 for every MDRP and generated-city
courier): consecutive pickups at one restaurant (of one bundle in mdrp mode) are one
visit whose pickup time is ``max(latest ready time, arrival + pickup_service / 2)``; the
courier leaves half a pickup service later. A drop-off happens at ``arrival +
dropoff_service / 2`` and the courier leaves half a drop-off service later, so
consecutive drop-offs are at least one drop-off service apart. Idle couriers wait where
they are. Pickups never happen after the courier's off-time; drop-offs may.

**Prepositioning** (mdrp mode): a :class:`~simulations.policy.Reposition` sends an idle
courier to a restaurant, where it waits. The move is one queued stop of its own kind; it
is always completed (an assignment given meanwhile is queued behind it, as after any
committed work), so the couriers file shows it as an ordinary move ending at a restaurant
id, and a later pickup at that restaurant starts with a zero-length move there.

**Assignment updates** (mdrp mode): when a courier arrives at a restaurant for a pickup
the policy's optional ``on_courier_arrived`` hook is called; an
:class:`~simulations.policy.AssignmentUpdate` (from it or any hook while the courier waits
there, before the pickup) adds pending orders of that restaurant to the bundle: their
pickup stops join the visit, the bundle's drop-offs are re-sequenced and the pickup moves
to ``max(pickup, added ready times)`` (a SERVICE event made stale by that is skipped).
The solution files show one bundle whose assignment time is the update's.

See :mod:`simulations.policy` for what policies may decide and when.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

import numpy as np
import numpy.typing as npt

from dispatch.model import Courier, Order, Place, Point
from geo.travel import TravelTimeModel
from simulations.policy import (
    Assignment,
    AssignmentUpdate,
    Decision,
    Mode,
    Policy,
    Reposition,
    Reroute,
    StopRef,
    policy_modes,
)
from simulations.scenarios.base import Parameters, Scenario

__all__ = [
    "CourierState",
    "EngineConfig",
    "EventKind",
    "Move",
    "PickupVisit",
    "Projection",
    "Rejection",
    "SimResult",
    "SimView",
    "SimulationError",
    "Simulator",
    "simulate",
]

Phase = Literal["off", "idle", "travel", "service"]
ProgressFn = Callable[[float, float], None]
"""Called as ``progress(now_s, horizon_s)`` after every tick."""


class SimulationError(RuntimeError):
    """A rejected decision in strict mode, or an engine invariant broken (a bug)."""


class EventKind(IntEnum):
    """Event kinds; the value is the rank among events of the same instant."""

    SHIFT_ON = 0
    ORDER_PLACED = 1
    ORDER_READY = 2
    ARRIVE = 3
    SERVICE = 4
    DEPART = 5
    SHIFT_OFF = 6
    TICK = 7


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How to run: ``mode`` (mdrp rules or free routing), dispatcher ``tick_s`` (seconds),
    ``seed`` of ``view.rng``, ``strict`` (raise on a rejected decision instead of
    recording it), ``record_events`` (keep the processed event log, for tests)."""

    mode: Mode = "mdrp"
    tick_s: float = 60.0
    seed: int = 0
    strict: bool = False
    record_events: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("mdrp", "free"):
            raise ValueError(f"mode must be mdrp or free, got {self.mode!r}")
        if not (math.isfinite(self.tick_s) and self.tick_s > 0):
            raise ValueError(f"tick_s must be > 0, got {self.tick_s}")


@dataclass(frozen=True, slots=True)
class Rejection:
    """A decision the engine did not apply, and why (``reason`` is a slug)."""

    time: float
    decision: Decision
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Move:
    """One drive: leave ``origin`` at ``departure``, reach ``destination`` at ``arrival``
    (seconds). Place ids: ``"0"`` for the courier's start, else restaurant or order id."""

    courier_id: str
    departure: float
    arrival: float
    origin: str
    destination: str
    origin_point: Point
    destination_point: Point


@dataclass(frozen=True, slots=True)
class PickupVisit:
    """One pickup: ``order_ids`` collected at ``restaurant_id`` at ``time`` (seconds)."""

    courier_id: str
    restaurant_id: str
    time: float
    arrival: float
    order_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CourierState:
    """A courier as policies see it (a snapshot; times in seconds).

    ``free_at``/``free_place``: when and where all work it has been given ends (for an
    idle courier, when it became idle; it can start new work at ``max(now, free_at)``).
    ``committed``: the stops of the leg in progress (cannot change); ``queue``: the stops
    after it (replaceable in free mode). ``on_board``: picked up, not yet delivered;
    ``assigned``: given to it, not yet picked up. A courier driving to a restaurant on a
    :class:`~simulations.policy.Reposition` is in phase ``travel`` with no order stops in
    ``committed``; ``free_at``/``free_place`` are its arrival there. ``pickup_at``: while
    the courier is at a restaurant waiting for a bundle's pickup (phase ``service``,
    ``committed`` its pickups), when that pickup happens; else None.
    """

    id: str
    shift_start: float
    shift_end: float
    on_duty: bool
    phase: Phase
    free_at: float
    free_place: Place
    committed: tuple[StopRef, ...]
    queue: tuple[StopRef, ...]
    on_board: tuple[str, ...]
    assigned: tuple[str, ...]
    capacity: int
    pickup_at: float | None = None

    @property
    def idle(self) -> bool:
        """No work at all: waiting where its last stop was (or at its start)."""
        return self.phase == "idle"


@dataclass(frozen=True, slots=True)
class Projection:
    """What a courier's queue would do: per stop ``(stop, arrival, service time)``;
    ``end``/``end_place`` when and where it ends; ``reason`` is set if infeasible."""

    stops: tuple[tuple[StopRef, float, float], ...]
    end: float
    end_place: Place
    reason: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


_Kind = Literal["pickup", "dropoff", "reposition"]


@dataclass(frozen=True, slots=True)
class _Update:
    """A checked assignment update: new pickup time, new queue, projection."""

    pickup: float
    queue: list[_QStop]
    projection: Projection


@dataclass(slots=True)
class _QStop:
    """A queued stop; ``reposition`` stops have no order (``order_id`` is "")."""

    order_id: str
    kind: _Kind
    place: Place
    bundle: int


@dataclass(slots=True)
class _Run:
    """Mutable engine-side courier state."""

    courier: Courier
    phase: Phase = "off"
    place: Place = field(default_factory=lambda: Place((0.0, 0.0)))
    since: float = 0.0
    until: float = 0.0  # arrival (travel) or departure (service)
    group: list[_QStop] = field(default_factory=list)
    queue: list[_QStop] = field(default_factory=list)
    on_board: dict[str, None] = field(default_factory=dict)
    assigned: dict[str, None] = field(default_factory=dict)
    moves: list[Move] = field(default_factory=list)
    move_t: list[float] = field(default_factory=list)
    on_duty: bool = False
    version: int = 0
    service_t: float = 0.0


@dataclass
class SimResult:
    """Everything a run produced. Times in seconds.

    ``orders``: final state of every order (``picked_up_at``/``delivered_at`` set when
    done). ``assigned_at``: when each order was last given to its courier. ``undelivered``
    maps each order not delivered to why (``never_assigned`` or a stuck status).
    ``updates``: assignment updates applied (orders added to bundles at restaurants).
    """

    scenario: Scenario
    config: EngineConfig
    policy: str
    orders: dict[str, Order]
    assigned_at: dict[str, float]
    moves: dict[str, list[Move]]
    pickups: list[PickupVisit]
    rejections: list[Rejection]
    undelivered: dict[str, str]
    ticks: int
    events: int
    assignments: int
    event_log: list[tuple[float, EventKind, str]]
    end_time: float
    updates: int = 0


class SimView:
    """Read-only window on the running simulation, handed to policy callbacks.

    Valid only during the callback: it reads live engine state. Lists it returns are
    fresh copies; :class:`~dispatch.model.Order` and :class:`CourierState` are frozen.
    """

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self.rng: np.random.Generator = np.random.default_rng(sim.config.seed)

    @property
    def now(self) -> float:
        """Current simulated time, seconds."""
        return self._sim.now

    @property
    def mode(self) -> Mode:
        return self._sim.config.mode

    @property
    def params(self) -> Parameters:
        return self._sim.scenario.params

    @property
    def scenario_name(self) -> str:
        return self._sim.scenario.name

    @property
    def travel(self) -> TravelTimeModel:
        """The scenario's :class:`geo.travel.TravelTimeModel` (seconds between points)."""
        return self._sim.scenario.travel

    def travel_s(
        self, origins: Sequence[Place], destinations: Sequence[Place]
    ) -> npt.NDArray[np.float64]:
        """Travel seconds, shape (len(origins), len(destinations)), one batched call.

        The model's times: a courier whose ``speed_factor`` is not 1 drives them times
        its factor (:meth:`project` accounts for it)."""
        if not origins or not destinations:
            return np.zeros((len(origins), len(destinations)))
        return self._sim.scenario.travel.duration_matrix(
            [p.point for p in origins], [p.point for p in destinations]
        )

    def pending_orders(self) -> list[Order]:
        """Placed, not assigned (status "placed"), by (placement, id)."""
        orders = self._sim.orders
        out = [orders[oid] for oid in self._sim.pending]
        out.sort(key=lambda o: (o.placed_at, o.id))
        return out

    def open_orders(self) -> list[Order]:
        """Known orders not yet delivered: placed, assigned or picked up."""
        return [self._sim.orders[oid] for oid in self._sim.open_ids]

    def order(self, order_id: str) -> Order:
        """A known (placed) order's current state; KeyError for unknown/future ones."""
        if order_id not in self._sim.known:
            raise KeyError(order_id)
        return self._sim.orders[order_id]

    def restaurant_of(self, order_id: str) -> str:
        return self._sim.scenario.restaurant_of[order_id]

    def restaurant(self, restaurant_id: str) -> Place:
        return self._sim.scenario.restaurants[restaurant_id]

    def couriers(self) -> list[CourierState]:
        """Couriers on duty now (shift started, not ended), in shift-start order."""
        return [self._sim.state_of(cid) for cid in self._sim.on_duty]

    def courier(self, courier_id: str) -> CourierState:
        """Any courier's state (also off duty)."""
        return self._sim.state_of(courier_id)

    def courier_model(self, courier_id: str) -> Courier:
        """The courier as a :class:`dispatch.model.Courier` at ``now`` (position, load)."""
        run = self._sim.runs[courier_id]
        c = run.courier
        return Courier(
            id=c.id,
            position=Place(self._sim.position_at(courier_id, self.now), None),
            position_t=self.now,
            shift_start=c.shift_start,
            shift_end=c.shift_end,
            capacity=c.capacity,
            speed_factor=c.speed_factor,
            on_shift=run.on_duty,
            on_board=tuple(run.on_board),
        )

    def position_at(self, courier_id: str, t: float) -> Point:
        return self._sim.position_at(courier_id, t)

    def project(self, decision: Decision) -> Projection:
        """What the engine would do with ``decision`` now (no state changes)."""
        return self._sim.project(decision)


class Simulator:
    """One run of ``policy`` over ``scenario``; call :meth:`run` once."""

    def __init__(self, scenario: Scenario, policy: Policy, config: EngineConfig) -> None:
        modes = policy_modes(policy)
        if config.mode not in modes:
            raise SimulationError(
                f"policy {policy.name!r} runs in {' or '.join(modes)} mode only, not {config.mode}"
            )
        self.scenario = scenario
        self.policy = policy
        self.config = config
        self.now = 0.0
        self._heap: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self.orders: dict[str, Order] = {o.id: o for o in scenario.orders}
        self.known: dict[str, None] = {}
        self.pending: dict[str, None] = {}
        self.open_ids: dict[str, None] = {}
        self.assigned_at: dict[str, float] = {}
        self.runs: dict[str, _Run] = {c.id: _Run(c, place=c.position) for c in scenario.couriers}
        self.on_duty: dict[str, None] = {}
        self.pickups: list[PickupVisit] = []
        self.rejections: list[Rejection] = []
        self.event_log: list[tuple[float, EventKind, str]] = []
        self._bundles = itertools.count(1)
        self._assignments = 0
        self._updates = 0
        self._ticks = 0
        self._events = 0
        self._unplaced = len(scenario.orders)
        self._travel_cache: dict[tuple[Point, Point], float] = {}
        self._state_cache: dict[str, tuple[int, CourierState]] = {}
        self._hp = scenario.params.pickup_service_s / 2.0
        self._hd = scenario.params.dropoff_service_s / 2.0
        self.view = SimView(self)

    # ------------------------------------------------------------------ helpers

    def _push(self, t: float, kind: EventKind, subject: str) -> None:
        heapq.heappush(self._heap, (t, int(kind), next(self._seq), subject))

    def travel_time(self, a: Place, b: Place, speed_factor: float = 1.0) -> float:
        """Seconds from ``a`` to ``b`` for a courier with ``speed_factor`` (the travel
        model's time times the factor; the model's time is cached per point pair)."""
        if a.point == b.point:
            return 0.0
        key = (a.point, b.point)
        t = self._travel_cache.get(key)
        if t is None:
            t = float(self.scenario.travel.duration_matrix([a.point], [b.point])[0, 0])
            self._travel_cache[key] = t
        return t if speed_factor == 1.0 else t * speed_factor

    def _merges(self, first: _QStop, nxt: _QStop) -> bool:
        """Does pickup ``nxt`` join the visit of pickup ``first``?"""
        return (
            nxt.kind == "pickup"
            and nxt.place.id == first.place.id
            and nxt.place.point == first.place.point
            and (self.config.mode == "free" or nxt.bundle == first.bundle)
        )

    def _reject(self, decision: Decision, reason: str, message: str) -> None:
        if self.config.strict:
            raise SimulationError(f"t={self.now:.0f}s {reason}: {message} ({decision})")
        self.rejections.append(Rejection(self.now, decision, reason, message))

    # ------------------------------------------------------------------ projection

    def _start_of(self, run: _Run) -> tuple[float, Place, list[_QStop]]:
        """Where and when the courier's replaceable queue starts, and stops before it
        that still need timing (the committed travel target)."""
        if run.phase == "travel":
            return run.until, run.place, list(run.group)
        if run.phase == "service":
            return run.until, run.place, []
        start = max(self.now, run.since, run.courier.shift_start)
        return start, run.place, []

    def _schedule(self, run: _Run, t: float, place: Place, stops: Sequence[_QStop]) -> Projection:
        """Time ``stops`` from ``place`` at ``t`` by the engine's own rules."""
        out: list[tuple[StopRef, float, float]] = []
        off = run.courier.shift_end
        i, n = 0, len(stops)
        while i < n:
            s = stops[i]
            arr = t + self.travel_time(place, s.place, run.courier.speed_factor)
            if s.kind == "pickup":
                j = i + 1
                while j < n and self._merges(s, stops[j]):
                    j += 1
                ready = max(self.orders[q.order_id].ready_at for q in stops[i:j])
                pick = max(ready, arr + self._hp)
                if pick > off:
                    return Projection(
                        tuple(out),
                        t,
                        place,
                        "pickup_after_off",
                        f"courier {run.courier.id} would pick up {s.order_id} at "
                        f"{pick:.0f}s, after its off-time {off:.0f}s",
                    )
                out.extend((StopRef(q.order_id, "pickup"), arr, pick) for q in stops[i:j])
                t = pick + self._hp
                i = j
            elif s.kind == "reposition":
                t = arr
                i += 1
            else:
                drop = arr + self._hd
                out.append((StopRef(s.order_id, "dropoff"), arr, drop))
                t = drop + self._hd
                i += 1
            place = s.place
        return Projection(tuple(out), t, place)

    def _project_queue(self, run: _Run, queue: Sequence[_QStop]) -> Projection:
        t, place, head = self._start_of(run)
        return self._schedule(run, t, place, [*head, *queue])

    def state_of(self, courier_id: str) -> CourierState:
        """The courier's :class:`CourierState`, cached until its state changes."""
        run = self.runs[courier_id]
        hit = self._state_cache.get(courier_id)
        if hit is not None and hit[0] == run.version:
            return hit[1]
        if run.phase in ("idle", "off"):
            free_at, free_place = run.since, run.place
        else:
            p = self._project_queue(run, run.queue)
            free_at, free_place = p.end, p.end_place
        c = run.courier
        pickup_at = None
        first = run.group[0] if run.group else None
        if (
            run.phase == "service"
            and first is not None
            and first.kind == "pickup"
            and self.orders[first.order_id].status == "assigned"
        ):
            pickup_at = run.service_t
        state = CourierState(
            id=c.id,
            shift_start=c.shift_start,
            shift_end=c.shift_end,
            on_duty=run.on_duty,
            phase=run.phase,
            free_at=free_at,
            free_place=free_place,
            committed=tuple(_refs(run.group)),
            queue=tuple(_refs(run.queue)),
            on_board=tuple(run.on_board),
            assigned=tuple(run.assigned),
            capacity=c.capacity,
            pickup_at=pickup_at,
        )
        self._state_cache[courier_id] = (run.version, state)
        return state

    def position_at(self, courier_id: str, t: float) -> Point:
        """Where the courier is at ``t`` (seconds), interpolating along its moves.

        Before its first move: its start. Between departure and arrival: linear in time
        (planar) or in coordinates. Beyond the last known move: its destination.
        """
        run = self.runs[courier_id]
        i = bisect.bisect_right(run.move_t, t) - 1
        if i < 0:
            return run.courier.position.point
        m = run.moves[i]
        if t >= m.arrival or m.arrival <= m.departure:
            return m.destination_point
        f = (t - m.departure) / (m.arrival - m.departure)
        (x0, y0), (x1, y1) = m.origin_point, m.destination_point
        return (x0 + f * (x1 - x0), y0 + f * (y1 - y0))

    # ------------------------------------------------------------------ decisions

    def _check_orders(self, decision: Decision, run: _Run, order_ids: Sequence[str]) -> bool:
        for oid in order_ids:
            if oid not in self.orders:
                self._reject(decision, "unknown_order", f"no order {oid}")
                return False
            if oid not in self.known:
                self._reject(decision, "not_placed", f"order {oid} is not placed yet")
                return False
        return True

    def project(self, decision: Decision) -> Projection:
        """The courier's schedule if ``decision`` were applied (only timing is checked;
        for a :class:`Reposition` every rule is)."""
        run = self.runs.get(decision.courier_id)
        if run is None:
            return Projection((), self.now, Place((0.0, 0.0)), "unknown_courier", "")
        if isinstance(decision, Reposition):
            checked = self._reposition_check(run, decision)
            if isinstance(checked, tuple):
                return Projection((), self.now, run.place, checked[0], checked[1])
            return checked
        if isinstance(decision, AssignmentUpdate):
            upd = self._update_check(run, decision)
            if isinstance(upd, tuple):
                return Projection((), self.now, run.place, upd[0], upd[1])
            return upd.projection
        if isinstance(decision, Assignment):
            missing = [o for o in decision.order_ids if o not in self.known]
            if missing:
                return Projection((), self.now, run.place, "unknown_order", f"{missing}")
            queue = [*run.queue, *self._bundle_stops(decision, 0)]
        else:
            stops = self._reroute_stops(run, decision)
            if isinstance(stops, tuple):
                return Projection((), self.now, run.place, stops[0], stops[1])
            queue = stops
        return self._project_queue(run, queue)

    def _bundle_stops(self, a: Assignment, bundle: int) -> list[_QStop]:
        o = self.orders
        return [_QStop(oid, "pickup", o[oid].pickup, bundle) for oid in a.order_ids] + [
            _QStop(oid, "dropoff", o[oid].dropoff, bundle) for oid in a.order_ids
        ]

    def _apply(self, decisions: Sequence[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Assignment):
                self._assign(d)
            elif isinstance(d, Reroute):
                if self.config.mode != "free":
                    self._reject(d, "reroute_in_mdrp_mode", "mdrp mode takes assignments only")
                else:
                    self._reroute(d)
            elif isinstance(d, Reposition):
                self._reposition(d)
            elif isinstance(d, AssignmentUpdate):
                self._update(d)
            else:
                raise SimulationError(
                    f"policy returned {d!r}, not an Assignment, Reroute, Reposition or "
                    "AssignmentUpdate"
                )

    def _reposition_check(self, run: _Run, r: Reposition) -> Projection | tuple[str, str]:
        """The projection of a valid reposition, or (reason, message)."""
        cid = run.courier.id
        if self.config.mode != "mdrp":
            return "reposition_in_free_mode", "prepositioning is an mdrp-mode variant"
        if not run.on_duty:
            return "off_duty", f"courier {cid} is not on duty"
        if run.phase != "idle" or run.queue or run.group:
            return "courier_busy", f"courier {cid} is {run.phase}, not idle"
        place = self.scenario.restaurants.get(r.restaurant_id)
        if place is None:
            return "unknown_restaurant", f"no restaurant {r.restaurant_id}"
        if place.point == run.place.point:
            return "already_there", f"courier {cid} is at {r.restaurant_id} already"
        stop = _QStop("", "reposition", place, 0)
        p = self._project_queue(run, [stop])
        if p.end > run.courier.shift_end:
            return (
                "arrive_after_off",
                f"courier {cid} would reach {r.restaurant_id} at {p.end:.0f}s, after its "
                f"off-time {run.courier.shift_end:.0f}s",
            )
        return p

    def _reposition(self, r: Reposition) -> None:
        run = self.runs.get(r.courier_id)
        if run is None:
            self._reject(r, "unknown_courier", f"no courier {r.courier_id}")
            return
        checked = self._reposition_check(run, r)
        if isinstance(checked, tuple):
            self._reject(r, *checked)
            return
        run.queue.append(_QStop("", "reposition", self.scenario.restaurants[r.restaurant_id], 0))
        run.version += 1
        self._depart(run, self.now)

    def _assign(self, a: Assignment) -> None:
        run = self.runs.get(a.courier_id)
        if run is None:
            self._reject(a, "unknown_courier", f"no courier {a.courier_id}")
            return
        if not run.on_duty:
            self._reject(a, "off_duty", f"courier {a.courier_id} is not on duty")
            return
        if not a.order_ids:
            self._reject(a, "empty_bundle", "an assignment needs orders")
            return
        if len(set(a.order_ids)) != len(a.order_ids):
            self._reject(a, "duplicate_order", "an order appears twice in the bundle")
            return
        if not self._check_orders(a, run, a.order_ids):
            return
        for oid in a.order_ids:
            if oid not in self.pending:
                self._reject(a, "not_pending", f"order {oid} is {self.orders[oid].status}")
                return
            if self.scenario.restaurant_of[oid] != a.restaurant_id:
                self._reject(a, "wrong_restaurant", f"order {oid} is not from {a.restaurant_id}")
                return
        stops = self._bundle_stops(a, next(self._bundles))
        p = self._project_queue(run, [*run.queue, *stops])
        if not p.ok:
            self._reject(a, p.reason or "", p.message)
            return
        for oid in a.order_ids:
            self.orders[oid] = self.orders[oid].transition("assigned", self.now, run.courier.id)
            del self.pending[oid]
            run.assigned[oid] = None
            self.assigned_at[oid] = self.now
        run.queue.extend(stops)
        run.version += 1
        self._assignments += 1
        if run.phase == "idle":
            self._depart(run, self.now)

    def _update_check(self, run: _Run, u: AssignmentUpdate) -> _Update | tuple[str, str]:
        """What a valid assignment update does, or (reason, message)."""
        cid = run.courier.id
        if self.config.mode != "mdrp":
            return "update_in_free_mode", "assignment updates are an mdrp-mode variant"
        if not u.order_ids:
            return "empty_bundle", "an update needs orders"
        if len(set(u.order_ids)) != len(u.order_ids):
            return "duplicate_order", "an order appears twice in the update"
        for oid in u.order_ids:
            if oid not in self.orders:
                return "unknown_order", f"no order {oid}"
            if oid not in self.known:
                return "not_placed", f"order {oid} is not placed yet"
        first = run.group[0] if run.group else None
        if run.phase != "service" or first is None or first.kind != "pickup":
            return "not_at_restaurant", f"courier {cid} is {run.phase}, not at a pickup"
        if first.place.id != u.restaurant_id:
            return (
                "not_at_restaurant",
                f"courier {cid} is at {first.place.id}, not {u.restaurant_id}",
            )
        if self.orders[first.order_id].status != "assigned":
            return "already_picked_up", f"courier {cid} has picked up its bundle"
        for oid in u.order_ids:
            if oid not in self.pending:
                return "not_pending", f"order {oid} is {self.orders[oid].status}"
            if self.scenario.restaurant_of[oid] != u.restaurant_id:
                return "wrong_restaurant", f"order {oid} is not from {u.restaurant_id}"
        k = 0  # the bundle's drop-offs lead the queue
        while (
            k < len(run.queue)
            and run.queue[k].kind == "dropoff"
            and run.queue[k].bundle == first.bundle
        ):
            k += 1
        old = [q.order_id for q in run.queue[:k]]
        seq = list(u.dropoffs) if u.dropoffs else [*old, *u.order_ids]
        if sorted(seq) != sorted([*old, *u.order_ids]):
            return "bad_sequence", f"drop-offs {seq} are not the bundle's orders"
        ready = max(self.orders[oid].ready_at for oid in u.order_ids)
        pick = max(run.service_t, ready)
        if pick > run.courier.shift_end:
            return (
                "pickup_after_off",
                f"courier {cid} would pick up at {pick:.0f}s, after its off-time "
                f"{run.courier.shift_end:.0f}s",
            )
        o = self.orders
        drops = [_QStop(oid, "dropoff", o[oid].dropoff, first.bundle) for oid in seq]
        queue = [*drops, *run.queue[k:]]
        p = self._schedule(run, pick + self._hp, first.place, queue)
        if not p.ok:
            return p.reason or "", p.message
        arrival = run.moves[-1].arrival if run.moves else self.now
        picks = tuple(
            (StopRef(oid, "pickup"), arrival, pick)
            for oid in [*(q.order_id for q in run.group), *u.order_ids]
        )
        return _Update(pick, queue, Projection((*picks, *p.stops), p.end, p.end_place))

    def _update(self, u: AssignmentUpdate) -> None:
        run = self.runs.get(u.courier_id)
        if run is None:
            self._reject(u, "unknown_courier", f"no courier {u.courier_id}")
            return
        upd = self._update_check(run, u)
        if isinstance(upd, tuple):
            self._reject(u, *upd)
            return
        first = run.group[0]
        for oid in u.order_ids:
            self.orders[oid] = self.orders[oid].transition("assigned", self.now, run.courier.id)
            del self.pending[oid]
            run.assigned[oid] = None
            self.assigned_at[oid] = self.now
            run.group.append(_QStop(oid, "pickup", self.orders[oid].pickup, first.bundle))
        run.queue = upd.queue
        if upd.pickup != run.service_t:  # later: the pending SERVICE event becomes stale
            run.service_t = upd.pickup
            self._push(upd.pickup, EventKind.SERVICE, run.courier.id)
        run.until = upd.pickup + self._hp
        run.version += 1
        self._updates += 1

    def _reroute_stops(self, run: _Run, r: Reroute) -> list[_QStop] | tuple[str, str]:
        """The new queue of a valid reroute, or (reason, message)."""
        committed = {(s.order_id, s.kind) for s in run.group}
        committed_pick = [s.order_id for s in run.group if s.kind == "pickup"]
        committed_drop = {s.order_id for s in run.group if s.kind == "dropoff"}
        seen: set[tuple[str, str]] = set()
        stops: list[_QStop] = []
        picked: dict[str, None] = {}
        load = len(run.on_board) + len(committed_pick) - len(committed_drop)
        must_drop = {*run.on_board, *committed_pick} - committed_drop
        for s in r.stops:
            key = (s.order_id, s.kind)
            if key in committed:
                continue  # the courier does it anyway
            if key in seen:
                return "duplicate_stop", f"{s.kind} of {s.order_id} appears twice"
            seen.add(key)
            o = self.orders.get(s.order_id)
            if o is None or s.order_id not in self.known:
                return "unknown_order", f"order {s.order_id} is unknown or not placed yet"
            if s.kind == "pickup":
                if o.status == "placed":
                    pass
                elif o.status == "assigned":
                    other = self.runs[o.courier_id or ""]
                    if any(q.order_id == s.order_id for q in other.group):
                        return "committed_elsewhere", f"order {s.order_id} is being picked up"
                else:
                    return "not_pending", f"order {s.order_id} is {o.status}"
                picked[s.order_id] = None
                must_drop.add(s.order_id)
                load += 1
                if load > run.courier.capacity:
                    return "capacity", f"courier {run.courier.id} would carry {load} orders"
                stops.append(_QStop(s.order_id, "pickup", o.pickup, -1))
            else:
                if s.order_id not in must_drop:
                    return "not_on_board", f"drop-off of {s.order_id} before/without pickup"
                must_drop.discard(s.order_id)
                load -= 1
                stops.append(_QStop(s.order_id, "dropoff", o.dropoff, -1))
        if must_drop:
            return "missing_dropoff", f"no drop-off for {sorted(must_drop)}"
        if picked and not run.on_duty:
            return "off_duty", f"courier {run.courier.id} is not on duty"
        return stops

    def _reroute(self, r: Reroute) -> None:
        run = self.runs.get(r.courier_id)
        if run is None:
            self._reject(r, "unknown_courier", f"no courier {r.courier_id}")
            return
        stops = self._reroute_stops(run, r)
        if isinstance(stops, tuple):
            self._reject(r, *stops)
            return
        p = self._project_queue(run, stops)
        if not p.ok:
            self._reject(r, p.reason or "", p.message)
            return
        new = {s.order_id for s in stops if s.kind == "pickup"}
        committed = {s.order_id for s in run.group}
        for oid in list(run.assigned):
            if oid not in new and oid not in committed:
                self._unassign(run, oid)
        for s in stops:
            if s.kind != "pickup":
                continue
            o = self.orders[s.order_id]
            if o.status == "assigned" and o.courier_id == run.courier.id:
                continue
            if o.status == "assigned":
                other = self.runs[o.courier_id or ""]
                other.queue = [q for q in other.queue if q.order_id != s.order_id]
                other.assigned.pop(s.order_id, None)
                other.version += 1
            else:
                del self.pending[s.order_id]
            self.orders[s.order_id] = o.transition("assigned", self.now, run.courier.id)
            run.assigned[s.order_id] = None
            self.assigned_at[s.order_id] = self.now
        run.queue = stops
        run.version += 1
        if run.phase == "idle" and run.queue:
            self._depart(run, self.now)

    def _unassign(self, run: _Run, oid: str) -> None:
        run.assigned.pop(oid, None)
        run.queue = [q for q in run.queue if q.order_id != oid]
        run.version += 1
        self.orders[oid] = self.orders[oid].transition("placed", self.now)
        self.pending[oid] = None
        self.assigned_at.pop(oid, None)

    # ------------------------------------------------------------------ courier life

    def _depart(self, run: _Run, t: float) -> None:
        """Courier at ``run.place`` free to leave at ``t``: start the next stop or idle."""
        run.group = []
        run.version += 1
        if not run.queue:
            run.phase, run.since = "idle", t
            return
        s = run.queue.pop(0)
        arr = t + self.travel_time(run.place, s.place, run.courier.speed_factor)
        move = Move(
            run.courier.id, t, arr, run.place.id or "", s.place.id or "",
            run.place.point, s.place.point,
        )  # fmt: skip
        run.moves.append(move)
        run.move_t.append(t)
        run.phase, run.since, run.until = "travel", t, arr
        run.group = [s]
        run.place = s.place
        self._push(arr, EventKind.ARRIVE, run.courier.id)

    def _arrive(self, run: _Run, t: float) -> None:
        first = run.group[0]
        run.version += 1
        if first.kind == "reposition":  # waits here unless work was queued meanwhile
            self._depart(run, t)
            return
        if first.kind == "dropoff":
            run.phase, run.since, run.until = "service", t, t + 2 * self._hd
            run.service_t = t + self._hd
            self._push(run.service_t, EventKind.SERVICE, run.courier.id)
            return
        while run.queue and self._merges(first, run.queue[0]):
            run.group.append(run.queue.pop(0))
        ready = max(self.orders[q.order_id].ready_at for q in run.group)
        pick = max(ready, t + self._hp)
        if pick > run.courier.shift_end:  # only reachable by a stale free-mode plan
            for q in run.group:
                self._unassign(run, q.order_id)
            run.phase, run.since, run.until = "service", t, t
            run.group = []
            self._depart(run, t)
            return
        run.phase, run.since, run.until = "service", t, pick + self._hp
        run.service_t = pick
        self._push(pick, EventKind.SERVICE, run.courier.id)
        hook = getattr(self.policy, "on_courier_arrived", None)
        if hook is not None and self.config.mode == "mdrp":
            cid = run.courier.id
            self._apply(hook(t, self.state_of(cid), first.place.id or "", self.view))

    def _serve(self, run: _Run, t: float) -> None:
        cid = run.courier.id
        first = run.group[0]
        if first.kind == "pickup":
            ids = tuple(q.order_id for q in run.group)
            for oid in ids:
                self.orders[oid] = self.orders[oid].transition("picked_up", t, cid)
                run.assigned.pop(oid, None)
                run.on_board[oid] = None
            arrival = run.moves[-1].arrival if run.moves else t
            self.pickups.append(PickupVisit(cid, first.place.id or "", t, arrival, ids))
        else:
            oid = first.order_id
            self.orders[oid] = self.orders[oid].transition("delivered", t)
            run.on_board.pop(oid, None)
            self.open_ids.pop(oid, None)
        run.version += 1
        self._push(run.until, EventKind.DEPART, cid)

    # ------------------------------------------------------------------ main loop

    def _ticking(self) -> bool:
        """Is there anything a dispatcher could still decide?"""
        if self._unplaced or self.pending:
            return True
        if self.config.mode == "free":
            return any(self.orders[o].status == "assigned" for o in self.open_ids)
        return False

    def run(self, progress: ProgressFn | None = None) -> SimResult:
        """Process every event; returns the :class:`SimResult`."""
        sc = self.scenario
        horizon = sc.horizon_s
        for c in sc.couriers:
            self._push(c.shift_start, EventKind.SHIFT_ON, c.id)
            self._push(c.shift_end, EventKind.SHIFT_OFF, c.id)
        for o in sc.orders:
            self._push(o.placed_at, EventKind.ORDER_PLACED, o.id)
        starts = [o.placed_at for o in sc.orders] + [c.shift_start for c in sc.couriers]
        tick = self.config.tick_s
        if starts:
            first_tick = math.ceil(min(starts) / tick) * tick
            if first_tick <= horizon:
                self._push(first_tick, EventKind.TICK, "")
        self.policy.start(self.view)
        record = self.config.record_events
        heap = self._heap
        while heap:
            t, rank, _, subject = heapq.heappop(heap)
            if rank == EventKind.SERVICE and t != self.runs[subject].service_t:
                continue  # moved later by an assignment update
            if t < self.now:
                raise SimulationError(f"event at {t} after the clock reached {self.now}")
            self.now = t
            self._events += 1
            kind = EventKind(rank)
            if record:
                self.event_log.append((t, kind, subject))
            if kind == EventKind.ARRIVE:
                self._arrive(self.runs[subject], t)
            elif kind == EventKind.SERVICE:
                self._serve(self.runs[subject], t)
            elif kind == EventKind.DEPART:
                self._depart(self.runs[subject], t)
            elif kind == EventKind.ORDER_PLACED:
                self.known[subject] = None
                self.pending[subject] = None
                self.open_ids[subject] = None
                self._unplaced -= 1
                o = self.orders[subject]
                self._push(max(t, o.ready_at), EventKind.ORDER_READY, subject)
                self._apply(self.policy.on_order_placed(t, o, self.view))
            elif kind == EventKind.ORDER_READY:
                self._apply(self.policy.on_order_ready(t, self.orders[subject], self.view))
            elif kind == EventKind.SHIFT_ON:
                run = self.runs[subject]
                run.on_duty = True
                run.phase, run.since = "idle", t
                run.version += 1
                self.on_duty[subject] = None
            elif kind == EventKind.SHIFT_OFF:
                run = self.runs[subject]
                run.on_duty = False
                run.version += 1
                self.on_duty.pop(subject, None)
            else:  # TICK
                self._ticks += 1
                self._apply(self.policy.on_tick(t, self.view))
                if progress is not None:
                    progress(t, horizon)
                if t + tick <= horizon and self._ticking():
                    self._push(t + tick, EventKind.TICK, "")
        if progress is not None:
            progress(horizon, horizon)
        undelivered: dict[str, str] = {}
        for oid, o in self.orders.items():
            if o.status == "delivered":
                continue
            undelivered[oid] = "never_assigned" if o.status == "placed" else f"stuck_{o.status}"
        return SimResult(
            scenario=sc,
            config=self.config,
            policy=self.policy.name,
            orders=dict(self.orders),
            assigned_at=dict(self.assigned_at),
            moves={cid: list(r.moves) for cid, r in self.runs.items()},
            pickups=list(self.pickups),
            rejections=list(self.rejections),
            undelivered=undelivered,
            ticks=self._ticks,
            events=self._events,
            assignments=self._assignments,
            event_log=self.event_log,
            end_time=self.now,
            updates=self._updates,
        )


def _refs(stops: Sequence[_QStop]) -> list[StopRef]:
    """Order stops as policies see them (reposition stops carry no order)."""
    return [
        StopRef(s.order_id, "pickup" if s.kind == "pickup" else "dropoff")
        for s in stops
        if s.kind != "reposition"
    ]


def simulate(
    scenario: Scenario,
    policy: Policy,
    config: EngineConfig | None = None,
    progress: ProgressFn | None = None,
) -> SimResult:
    """Replay ``scenario`` under ``policy``; see :class:`Simulator`."""
    return Simulator(scenario, policy, config or EngineConfig()).run(progress)

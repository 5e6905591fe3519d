"""The seam between the simulator and dispatch policies.

A policy is anything with the :class:`Policy` methods. The engine calls
:meth:`Policy.start` once, :meth:`Policy.on_tick` at every dispatcher tick (cadence set in
:class:`~simulations.engine.EngineConfig`) and the two order hooks as orders are placed
and become ready. Each call gets ``now`` (seconds from the start of the day) and a
read-only :class:`~simulations.engine.SimView`, and returns **decisions** that the engine
checks and applies immediately, in the order given:

- :class:`Assignment` (both modes): one courier, one restaurant, a bundle of that
  restaurant's pending orders in drop-off sequence. In ``mdrp`` mode this is the only
  decision there is, and the MDRP no-diversion rule holds: a busy courier finishes what it
  was given; the new bundle starts after its last queued drop-off.
- :class:`Reposition` (``mdrp`` mode, the published *prepositioning* variant): send an
  idle courier (on duty, no work queued, not moving) to a restaurant ahead of demand. It
  drives there and waits. The move, once started, is completed (the MDRP couriers file
  cannot express an interrupted move): an assignment given while it drives starts from
  the restaurant when it arrives (``free_at``/``free_place`` say so). A reposition is
  rejected when the courier is busy or off duty, when it is at the restaurant already, or
  when it would arrive after its off-time. In the solution files it is just a move whose
  destination is a restaurant id. Policies that never return one get the basic variant.
- :class:`AssignmentUpdate` (``mdrp`` mode, the published *assignment updates* variant):
  add pending orders of the same restaurant to the bundle a courier is about to pick up,
  while it is at that restaurant (arrived, pickup not yet done). The engine calls the
  optional hook ``on_courier_arrived(now, courier, restaurant_id, view)`` (no-op in
  :class:`BasePolicy`) when a courier arrives for a pickup, the natural moment for it; an
  update returned from any other hook is applied the same way while the courier waits
  there. The bundle's pickup time becomes ``max(its pickup time, the added orders' ready
  times)`` (an order not ready yet delays the whole bundle: the policy decides whether
  that is worth it); the drop-off sequence is ``dropoffs`` (every order of the bundle)
  or, when empty, the current sequence followed by the added orders. Rejected: in free
  mode, when the courier is not at a restaurant waiting for a pickup (en route, idle,
  dropping off), when the pickup has happened, orders not pending or of another
  restaurant, a ``dropoffs`` that is not the bundle's orders, and when the courier's work
  would then have a pickup after its off-time. In the solution files the bundle is one
  assignment line whose ``assignment_time`` is the update's time (every order in it is
  placed by then); :func:`simulations.validate.validate_solution` accepts such a line
  only with ``rules="updates"``. Policies that never return one get the basic variant.
- :class:`Reroute` (``free`` mode only): the courier's whole future stop sequence. The
  leg in progress (the stop it is driving to, or the restaurant/customer it is serving)
  is committed and not replaceable (committed stops named in a reroute are skipped);
  everything after it is replaced. The sequence must drop off every order the courier
  carries or is committed to pick up, each pickup before its drop-off, within the
  courier's capacity, with every pickup before its off-time. Orders the courier held
  but the new sequence omits go back to pending; orders held by another courier (not yet
  in its committed leg) are taken from it. Consecutive pickups at one place are one
  visit (one pickup time).

A decision the engine cannot apply (stale order, pickup after the courier's off-time,
...) is not applied and is recorded as a :class:`~simulations.engine.Rejection` with a
reason; the run's KPIs count them. Decisions take effect at ``now``: computing them costs
no simulated time (an OR-Tools policy that wants to model solve latency can hold its
answer until a later tick).

Plugging in an optimiser (e.g. ``dispatch.solvers.ortools``): write a class with these
methods in ``simulations/policies/``, build a routing problem in ``on_tick`` from
``view.pending_orders()``, ``view.couriers()`` (each :class:`CourierState` says when and
where its committed work ends: ``free_at``, ``free_place``) and ``view.travel``; turn the
solution into :class:`Assignment` s (mdrp mode; check them first with
``view.project(...)``) or one :class:`Reroute` per courier (free mode;
:func:`reroutes_from_plan` converts a :class:`dispatch.model.Plan`), and register it with
:func:`simulations.policies.register_policy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from dispatch.model import Order, Plan, StopKind

if TYPE_CHECKING:
    from simulations.engine import CourierState, SimView

__all__ = [
    "Assignment",
    "AssignmentUpdate",
    "BasePolicy",
    "Decision",
    "Mode",
    "Policy",
    "Reposition",
    "Reroute",
    "StopRef",
    "policy_modes",
    "reroutes_from_plan",
]

Mode = Literal["mdrp", "free"]


@dataclass(frozen=True, slots=True)
class StopRef:
    """An instruction: pick up or drop off one order (its place comes from the order)."""

    order_id: str
    kind: StopKind


@dataclass(frozen=True, slots=True)
class Assignment:
    """Send ``courier_id`` to ``restaurant_id`` for ``order_ids`` (drop-off sequence)."""

    courier_id: str
    restaurant_id: str
    order_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reroute:
    """Free mode: the courier's new stop sequence after its committed leg."""

    courier_id: str
    stops: tuple[StopRef, ...]


@dataclass(frozen=True, slots=True)
class Reposition:
    """MDRP mode, prepositioning: send the idle ``courier_id`` to wait at ``restaurant_id``."""

    courier_id: str
    restaurant_id: str


@dataclass(frozen=True, slots=True)
class AssignmentUpdate:
    """MDRP mode, assignment updates: add ``order_ids`` (pending, of ``restaurant_id``) to
    the bundle ``courier_id`` is at ``restaurant_id`` to pick up. ``dropoffs``: the whole
    bundle's new drop-off sequence (empty: the current one, then ``order_ids``)."""

    courier_id: str
    restaurant_id: str
    order_ids: tuple[str, ...]
    dropoffs: tuple[str, ...] = ()


Decision = Assignment | Reroute | Reposition | AssignmentUpdate


@runtime_checkable
class Policy(Protocol):
    """A dispatch policy. All times are seconds from the start of the day.

    Policies must be deterministic given the view (use ``view.rng`` for randomness, never
    an unseeded generator or the wall clock) and must not keep references to mutable
    engine state between calls. Subclass :class:`BasePolicy` to get no-op hooks.
    """

    name: str

    def start(self, view: SimView) -> None:
        """Called once before the first event (reset per-run state here)."""
        ...

    def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
        """The dispatcher's periodic decision round."""
        ...

    def on_order_placed(self, now: float, order: Order, view: SimView) -> Sequence[Decision]:
        """An order became known (event-driven policies may decide at once)."""
        ...

    def on_order_ready(self, now: float, order: Order, view: SimView) -> Sequence[Decision]:
        """An order's food is ready at its restaurant."""
        ...


class BasePolicy:
    """No-op hooks; override what the policy needs."""

    name = "base"

    def start(self, view: SimView) -> None:
        return None

    def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
        return ()

    def on_order_placed(self, now: float, order: Order, view: SimView) -> Sequence[Decision]:
        return ()

    def on_order_ready(self, now: float, order: Order, view: SimView) -> Sequence[Decision]:
        return ()

    def on_courier_arrived(
        self, now: float, courier: CourierState, restaurant_id: str, view: SimView
    ) -> Sequence[Decision]:
        """Optional hook (mdrp mode): ``courier`` arrived at ``restaurant_id`` for a pickup
        that has not happened yet (the moment for an :class:`AssignmentUpdate`)."""
        return ()


def policy_modes(policy: object) -> tuple[Mode, ...]:
    """The modes ``policy`` can run in: its ``modes`` attribute, else both."""
    modes: tuple[Mode, ...] = getattr(policy, "modes", ("mdrp", "free"))
    return modes


def reroutes_from_plan(plan: Plan) -> list[Reroute]:
    """One :class:`Reroute` per route of a dispatch :class:`~dispatch.model.Plan`.

    Stop times in the plan are ignored: the simulator times the stops itself. Stops of
    the courier's committed leg may be left in (the engine skips them); every order the
    courier carries or is committed to pick up needs its drop-off in the route.
    """
    return [
        Reroute(cid, tuple(StopRef(s.order_id, s.kind) for s in route.stops))
        for cid, route in plan.routes.items()
    ]

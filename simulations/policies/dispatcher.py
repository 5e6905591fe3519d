"""``dispatcher``: the live service's :class:`dispatch.Dispatcher` driving a simulated day.

Every tick the dispatcher, with the run's :class:`~dispatch.dispatcher.DispatchSettings`,
is loaded with the city as the engine reports it (couriers on duty at their current
positions with what they carry, open orders with their couriers; orders in a courier's
committed leg locked to it), re-plans it once (seeded, with a solution limit so runs
repeat) and its routes are applied as :class:`~simulations.policy.Reroute` s. Free
routing mode only (its routes chain restaurants and divert couriers). Couriers off duty
keep their queues. This is how ops see what the service itself would have done with a
day (``POST /v1/whatif`` runs it as ``live``); the ``ortools`` policy is the stronger
simulator policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from dispatch.dispatcher import Dispatcher, DispatchSettings
from dispatch.model import Order
from simulations.engine import SimView
from simulations.policy import BasePolicy, Decision, Mode, reroutes_from_plan

__all__ = ["SIM_SOLUTION_LIMIT", "DispatcherPolicy", "sim_settings"]

SIM_SOLUTION_LIMIT = 30
"""Solution limit of each simulated re-plan when the settings set none (repeatable)."""


def sim_settings(s: DispatchSettings) -> DispatchSettings:
    """``s`` as the simulator runs it: re-plan every group on every tick, bounded
    repeatable solves, the engine's committed leg instead of freezing and locking."""
    return replace(
        s,
        replan_every_s=0.0,
        full_replan_every_s=0.0,
        solution_limit=s.solution_limit or SIM_SOLUTION_LIMIT,
        lock_within_s=0.0,
        freeze_next_stop=False,
    )


class DispatcherPolicy(BasePolicy):
    """See the module docstring."""

    modes: tuple[Mode, ...] = ("free",)

    def __init__(self, settings: DispatchSettings | None = None, name: str = "dispatcher") -> None:
        self.name = name
        self.settings = sim_settings(settings or DispatchSettings())

    def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
        if not view.pending_orders():
            return []  # nothing new to place: every courier keeps its route
        states = {c.id: c for c in view.couriers()}
        if not states:
            return []
        couriers = [view.courier_model(cid) for cid in states]
        committed = {s.order_id for c in states.values() for s in c.committed}
        orders: list[Order] = []
        for o in view.open_orders():
            if o.status != "placed" and o.courier_id not in states:
                continue  # with a courier off duty: it finishes its queue
            orders.append(replace(o, locked=True) if o.id in committed else o)
        d = Dispatcher(view.travel, self.settings, now=now)
        d.load_snapshot(couriers, orders)
        d.replan()
        out: list[Decision] = []
        for r in reroutes_from_plan(d.plan):
            state = states.get(r.courier_id)
            if state is None:
                continue
            same = tuple((s.order_id, s.kind) for s in r.stops if s not in state.committed)
            if same == tuple((s.order_id, s.kind) for s in state.queue):
                continue  # unchanged
            if view.project(r).ok:
                out.append(r)
        return out

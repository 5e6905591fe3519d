"""The floor: each pending order, oldest first, goes alone to the nearest idle courier."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simulations.engine import SimView
from simulations.policy import Assignment, BasePolicy, Decision

__all__ = ["GreedyPolicy"]


class GreedyPolicy(BasePolicy):
    """Nearest idle courier, one order per assignment, no waiting for food.

    At every tick, pending orders in placement order each take the idle on-duty courier
    with the shortest travel time to the restaurant (ties: earlier shift start) that can
    still pick up before its off-time. Orders with no such courier wait for a later tick.
    """

    name = "greedy"

    def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
        pending = view.pending_orders()
        if not pending:
            return ()
        idle = [c for c in view.couriers() if c.idle]
        if not idle:
            return ()
        restaurant_ids = list(dict.fromkeys(view.restaurant_of(o.id) for o in pending))
        column = {r: j for j, r in enumerate(restaurant_ids)}
        travel = view.travel_s(
            [c.free_place for c in idle], [view.restaurant(r) for r in restaurant_ids]
        )
        off = np.array([c.shift_end for c in idle])
        free = np.ones(len(idle), dtype=bool)
        half_pickup = view.params.pickup_service_s / 2.0
        out: list[Decision] = []
        for o in pending:
            rid = view.restaurant_of(o.id)
            t = travel[:, column[rid]]
            ok = free & (np.maximum(o.ready_at, now + t + half_pickup) <= off)
            if not ok.any():
                continue
            i = int(np.argmin(np.where(ok, t, np.inf)))
            free[i] = False
            out.append(Assignment(idle[i].id, rid, (o.id,)))
            if not free.any():
                break
        return out

"""Restaurant bundling: the MDRP-style heuristic that beats one-order-at-a-time.

Every tick, pending orders are grouped by restaurant and cut into bundles of up to
``max_bundle`` orders whose ready times lie within ``ready_window_s`` of the bundle's
first. Bundles are served most urgent first (earliest ready, then earliest placed). Each
goes to the courier, idle or free within ``soon_free_s``, that can reach the restaurant
first (a busy courier takes it after its queued work: no diversion); its drop-offs are in
nearest-neighbour order from the restaurant. A bundle is held back while even its best
courier would arrive more than ``hold_s`` before the food is ready: waiting lets more
orders join and keeps the courier free for food that is ready sooner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dispatch.model import Order, Place
from simulations.engine import SimView
from simulations.policy import Assignment, BasePolicy, Decision

__all__ = ["BundlingPolicy", "nearest_neighbour_sequence"]


def nearest_neighbour_sequence(view: SimView, start: Place, orders: Sequence[Order]) -> list[str]:
    """Order ids in nearest-neighbour drop-off order from ``start`` (ties: given order)."""
    if len(orders) <= 1:
        return [o.id for o in orders]
    places = [start, *(o.dropoff for o in orders)]
    t = view.travel_s(places, places)
    left = list(range(1, len(places)))
    at, seq = 0, []
    while left:
        nxt = min(left, key=lambda j: t[at, j])
        left.remove(nxt)
        seq.append(orders[nxt - 1].id)
        at = nxt
    return seq


@dataclass
class BundlingPolicy(BasePolicy):
    """See the module docstring. Times in seconds."""

    max_bundle: int = 3
    ready_window_s: float = 480.0
    soon_free_s: float = 600.0
    hold_s: float = 600.0
    name: str = "bundling"

    def _bundles(self, view: SimView, pending: Sequence[Order]) -> list[tuple[str, list[Order]]]:
        by_restaurant: dict[str, list[Order]] = {}
        for o in pending:
            by_restaurant.setdefault(view.restaurant_of(o.id), []).append(o)
        bundles: list[tuple[str, list[Order]]] = []
        for rid, orders in by_restaurant.items():
            orders.sort(key=lambda o: (o.ready_at, o.placed_at, o.id))
            current: list[Order] = []
            for o in orders:
                if current and (
                    len(current) >= self.max_bundle
                    or o.ready_at - current[0].ready_at > self.ready_window_s
                ):
                    bundles.append((rid, current))
                    current = []
                current.append(o)
            if current:
                bundles.append((rid, current))
        bundles.sort(key=lambda b: (b[1][0].ready_at, min(o.placed_at for o in b[1]), b[1][0].id))
        return bundles

    def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
        pending = view.pending_orders()
        if not pending:
            return ()
        couriers = [c for c in view.couriers() if c.free_at <= now + self.soon_free_s]
        if not couriers:
            return ()
        bundles = self._bundles(view, pending)
        restaurant_ids = list(dict.fromkeys(rid for rid, _ in bundles))
        column = {r: j for j, r in enumerate(restaurant_ids)}
        travel = view.travel_s(
            [c.free_place for c in couriers], [view.restaurant(r) for r in restaurant_ids]
        )
        start = np.maximum(now, np.array([c.free_at for c in couriers]))
        off = np.array([c.shift_end for c in couriers])
        free = np.ones(len(couriers), dtype=bool)
        half_pickup = view.params.pickup_service_s / 2.0
        out: list[Decision] = []
        for rid, orders in bundles:
            ready = max(o.ready_at for o in orders)
            arrival = start + travel[:, column[rid]]
            ok = free & (np.maximum(ready, arrival + half_pickup) <= off)
            if not ok.any():
                continue
            i = int(np.argmin(np.where(ok, arrival, np.inf)))
            if arrival[i] < ready - self.hold_s:
                continue
            free[i] = False
            seq = nearest_neighbour_sequence(view, view.restaurant(rid), orders)
            out.append(Assignment(couriers[i].id, rid, tuple(seq)))
            if not free.any():
                break
        return out

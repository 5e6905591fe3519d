"""Key performance indicators of a delivery day, as the MDRP literature reports them.

Computed from the solution rows (minutes) and the scenario alone, so they apply to any
solution in the MDRP file format, not just ours. All times are **minutes**; pay is in the
instance's currency units. Statistics of an empty set are ``None``.

- click-to-door (c2d) = drop-off - placement; ready-to-door = drop-off - ready;
  ready-to-pickup = pickup - ready. ``late_share``: share of delivered orders with c2d
  above the target (40 min); ``overage_mean``: mean of max(0, c2d - target) over delivered
  orders; ``over_max_share``: c2d above the maximum (90 min).
- courier pay = max(pay per order x orders delivered, guaranteed pay per hour x duty
  hours), summed over all couriers (unused ones are paid the guarantee too);
  ``guarantee_share``: couriers whose per-order earnings fall short of the guarantee.
- ``utilisation``: share of duty time spent driving, picking up or dropping off, over all
  couriers (the MDRP README's definition): per courier, the union of its drives (departure
  to departure + travel time x its speed factor), pickup services (pickup time -/+ half
  the pickup service) and drop-off services (drop-off time -/+ half the drop-off
  service), clipped to its duty window [on, off], summed and divided by the summed duty
  time. Waiting for food or for work is idle time. Work after the off-time (drop-offs may
  finish after it) is not duty time and is not counted, so the figure never exceeds 1.
  (Until 2026-11 the drives and services were summed unclipped, so couriers finishing
  drop-offs after their off-time could push it above 1 on scarce fleets.)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from simulations.scenarios.base import Scenario
from simulations.solution import OrderRow, Solution

__all__ = ["KPI_KEYS", "Kpis", "compute_kpis"]

Kpis = dict[str, float | int | None]

KPI_KEYS = (
    "orders", "delivered", "undelivered", "delivered_share",
    "c2d_mean", "c2d_p10", "c2d_p50", "c2d_p90", "c2d_max",
    "late_share", "overage_mean", "over_max_share",
    "ready_to_door_mean", "ready_to_pickup_mean",
    "couriers", "courier_hours", "courier_pay_total", "cost_per_order", "guarantee_share",
    "orders_per_courier_hour", "bundles", "bundles_per_courier_hour", "orders_per_bundle",
    "utilisation",
)  # fmt: skip


def _r(x: float | np.floating[Any]) -> float:
    return round(float(x), 4)


def compute_kpis(scenario: Scenario, solution: Solution) -> Kpis:
    """The KPIs of ``solution`` on ``scenario`` (keys :data:`KPI_KEYS`)."""
    p = scenario.params
    target, maximum = p.target_c2d_s / 60.0, p.max_c2d_s / 60.0
    rows = [r for r in solution.orders if r.order in scenario.order_index]
    c2d = np.array([r.dropoff_time - r.placement_time for r in rows], dtype=np.float64)
    r2d = np.array([r.dropoff_time - r.ready_time for r in rows], dtype=np.float64)
    r2p = np.array([r.pickup_time - r.ready_time for r in rows], dtype=np.float64)
    n_orders, n_done = len(scenario.orders), len(rows)

    def stat(values: np.ndarray, fn: str, q: float = 0.0) -> float | None:
        if values.size == 0:
            return None
        if fn == "mean":
            return _r(values.mean())
        if fn == "max":
            return _r(values.max())
        return _r(np.percentile(values, q))

    per_courier = Counter(r.courier for r in rows)
    hours = {c.id: (c.shift_end - c.shift_start) / 3600.0 for c in scenario.couriers}
    total_hours = sum(hours.values())
    pay_total, guaranteed = 0.0, 0
    for cid, h in hours.items():
        by_orders = p.pay_per_order * per_courier.get(cid, 0)
        by_hours = p.guaranteed_pay_per_hour * h
        pay_total += max(by_orders, by_hours)
        guaranteed += by_orders < by_hours

    bundles = len(solution.assignments)
    return {
        "orders": n_orders,
        "delivered": n_done,
        "undelivered": n_orders - n_done,
        "delivered_share": _r(n_done / n_orders) if n_orders else None,
        "c2d_mean": stat(c2d, "mean"),
        "c2d_p10": stat(c2d, "pct", 10),
        "c2d_p50": stat(c2d, "pct", 50),
        "c2d_p90": stat(c2d, "pct", 90),
        "c2d_max": stat(c2d, "max"),
        "late_share": _r(np.mean(c2d > target + 1e-9)) if n_done else None,
        "overage_mean": stat(np.maximum(c2d - target, 0.0), "mean"),
        "over_max_share": _r(np.mean(c2d > maximum + 1e-9)) if n_done else None,
        "ready_to_door_mean": stat(r2d, "mean"),
        "ready_to_pickup_mean": stat(r2p, "mean"),
        "couriers": len(scenario.couriers),
        "courier_hours": _r(total_hours),
        "courier_pay_total": _r(pay_total),
        "cost_per_order": _r(pay_total / n_done) if n_done else None,
        "guarantee_share": _r(guaranteed / len(hours)) if hours else None,
        "orders_per_courier_hour": _r(n_done / total_hours) if total_hours else None,
        "bundles": bundles,
        "bundles_per_courier_hour": _r(bundles / total_hours) if total_hours else None,
        "orders_per_bundle": _r(n_done / bundles) if bundles else None,
        "utilisation": _r(_busy_minutes(scenario, solution, rows) / (total_hours * 60.0))
        if total_hours
        else None,
    }


def _busy_minutes(scenario: Scenario, solution: Solution, rows: list[OrderRow]) -> float:
    """Minutes of duty time spent driving or in pickup / drop-off service, all couriers."""
    p = scenario.params
    hp, hd = p.pickup_service_s / 120.0, p.dropoff_service_s / 120.0
    busy: dict[str, list[tuple[float, float]]] = {}
    cache: dict[tuple[tuple[float, float], tuple[float, float]], float] = {}
    for m in solution.moves:
        c = scenario.courier_index.get(m.courier)
        if c is None:
            continue
        a = _point(scenario, m.origin, c.position.point)
        b = _point(scenario, m.destination, c.position.point)
        if a is None or b is None:
            continue
        t = cache.get((a, b))
        if t is None:
            t = float(scenario.travel.duration_matrix([a], [b])[0, 0]) / 60.0
            cache[(a, b)] = t
        busy.setdefault(m.courier, []).append(
            (m.departure_time, m.departure_time + t * c.speed_factor)
        )
    for v in solution.assignments:
        busy.setdefault(v.courier, []).append((v.pickup_time - hp, v.pickup_time + hp))
    for r in rows:
        busy.setdefault(r.courier, []).append((r.dropoff_time - hd, r.dropoff_time + hd))
    total = 0.0
    for cid, spans in busy.items():
        c = scenario.courier_index.get(cid)
        if c is None:
            continue
        lo, hi = c.shift_start / 60.0, c.shift_end / 60.0
        end = lo
        for s0, s1 in sorted(spans):
            s0, s1 = max(s0, end), min(s1, hi)
            if s1 > s0:
                total += s1 - s0
                end = s1
    return total


def _point(
    scenario: Scenario, place: str, start: tuple[float, float]
) -> tuple[float, float] | None:
    if place == "0":
        return start
    r = scenario.restaurants.get(place)
    if r is not None:
        return r.point
    o = scenario.order_index.get(place)
    return o.dropoff.point if o is not None else None

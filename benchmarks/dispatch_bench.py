"""Live re-planning figures for ``o2o bench dispatch``: city snapshots and insertions.

A snapshot is a seeded synthetic city at one instant: couriers scattered (some carrying
an order), open orders at restaurants with ready times in the next minutes and a
40-minute promise. Measured per size:

* ``first_feasible_s``: from nothing to a feasible plan for every open order
  (:meth:`Dispatcher.load_snapshot`).
* ``objective_1s`` / ``objective_5s``: the plan's objective after a warm-started OR-Tools
  re-plan with a 1 s / 5 s limit (``objective_first`` is the warm start's).
* insertion latency: placing new orders one at a time into the 1,000-order snapshot.
* ``position_fix_us``: applying one courier position fix (re-timing that courier's route
  and its ETAs, :meth:`Dispatcher.courier_moved`) in the same snapshot; the live service
  does this for every courier every second.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from dispatch.dispatcher import Dispatcher, DispatchSettings
from dispatch.model import Courier, Order, Place
from geo.coords import LocalFrame
from geo.travel import GreatCircleModel

SIZES = ((100, 50), (300, 150), (1000, 400))
CENTER = (52.52, 13.405)
NOW = 12 * 3600.0


def make_snapshot(
    n_orders: int, n_couriers: int, seed: int = 0
) -> tuple[list[Courier], list[Order]]:
    """Couriers and open orders of a synthetic city at ``NOW`` (seconds of the day)."""
    rng = np.random.default_rng(seed)
    frame = LocalFrame(*CENTER)

    def place(xy: Any, pid: str | None = None) -> Place:
        return Place(frame.to_latlon(float(xy[0]), float(xy[1])), pid)

    restaurants = [place(rng.normal(0, 2500, 2), f"r{i}") for i in range(max(10, n_orders // 6))]
    orders: list[Order] = []
    for i in range(n_orders):
        r = restaurants[int(rng.integers(len(restaurants)))]
        rx, ry = frame.to_xy(*r.point)
        placed = NOW - float(rng.uniform(0, 900))
        orders.append(
            Order(
                f"o{i}",
                r,
                place((rx + rng.normal(0, 1500), ry + rng.normal(0, 1500))),
                placed_at=placed,
                ready_at=placed + float(rng.uniform(600, 1500)),
                promised_by=placed + 2400.0,
                pickup_service_s=120.0,
                dropoff_service_s=120.0,
            )
        )
    couriers: list[Courier] = []
    carried = 0
    for i in range(n_couriers):
        on_board: tuple[str, ...] = ()
        if rng.random() < 0.3:
            oid = f"ob{carried}"
            carried += 1
            on_board = (oid,)
            r = restaurants[int(rng.integers(len(restaurants)))]
            rx, ry = frame.to_xy(*r.point)
            orders.append(
                Order(
                    oid,
                    r,
                    place((rx + rng.normal(0, 1500), ry + rng.normal(0, 1500))),
                    placed_at=NOW - 1500.0,
                    ready_at=NOW - 600.0,
                    promised_by=NOW + 900.0,
                    dropoff_service_s=120.0,
                    status="picked_up",
                    courier_id=f"c{i}",
                    picked_up_at=NOW - 300.0,
                )
            )
        couriers.append(
            Courier(
                f"c{i}",
                place(rng.normal(0, 3000, 2)),
                NOW,
                NOW - 3600.0,
                NOW + 3 * 3600.0,
                capacity=3,
                on_board=on_board,
            )
        )
    return couriers, orders


def _dispatcher(limit_s: float, seed: int) -> Dispatcher:
    travel = GreatCircleModel.constant_speed(4.5)  # e-bike in town, 1.3 detour
    return Dispatcher(travel, DispatchSettings(solve_time_limit_s=limit_s, seed=seed), now=NOW)


def run_snapshot(
    n_orders: int, n_couriers: int, seed: int = 0, limits: tuple[float, float] = (1.0, 5.0)
) -> dict[str, Any]:
    """One snapshot size; objective keys are named after the standard limits (1 s, 5 s)."""
    couriers, orders = make_snapshot(n_orders, n_couriers, seed)
    out: dict[str, Any] = {"orders": n_orders, "couriers": n_couriers}
    for limit, tag in zip(limits, ("1s", "5s"), strict=True):
        d = _dispatcher(limit, seed)
        t0 = time.perf_counter()
        d.load_snapshot(couriers, orders)
        first = time.perf_counter() - t0
        first_cost = d.plan_cost()
        t0 = time.perf_counter()
        d.replan()
        wall = time.perf_counter() - t0
        cost = d.plan_cost()
        if tag == "1s":
            out["first_feasible_s"] = round(first, 3)
            out["unassigned_first"] = first_cost["unassigned"]
            out["objective_first"] = round(first_cost["cost"])
        out[f"objective_{tag}"] = round(cost["cost"])
        out[f"replan_wall_{tag}"] = round(wall, 3)
        out[f"replan_kept_plan_{tag}"] = d.stats.replans_rejected > 0
        out[f"travel_h_{tag}"] = round(cost["travel_s"] / 3600, 2)
        out[f"lateness_h_{tag}"] = round(cost["lateness_s"] / 3600, 2)
    return out


def run_insertions(
    n: int = 200, seed: int = 0, snapshot: tuple[int, int] = (1000, 400)
) -> dict[str, float]:
    """Latency of placing ``n`` new orders one by one into a (1,000-order) snapshot."""
    couriers, orders = make_snapshot(*snapshot, seed)
    d = _dispatcher(1.0, seed)
    d.load_snapshot(couriers, orders)
    _, extra = make_snapshot(n, 1, seed + 1)
    news = [o for o in extra if o.status == "placed"][:n]
    ms = []
    for i, o in enumerate(news):
        o2 = Order(
            f"new{i}",
            o.pickup,
            o.dropoff,
            NOW,
            o.ready_at - o.placed_at + NOW,
            NOW + 2400.0,
            pickup_service_s=120.0,
            dropoff_service_s=120.0,
        )
        t0 = time.perf_counter()
        d.place_order(o2)
        ms.append((time.perf_counter() - t0) * 1000.0)
    a = np.asarray(ms)
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "max": round(float(a.max()), 3),
        "n": int(a.size),
    }


def run_position_fixes(
    rounds: int = 5, seed: int = 0, snapshot: tuple[int, int] = (1000, 400)
) -> dict[str, float]:
    """Microseconds per position fix: every courier of the snapshot moves ``rounds`` times
    (a few metres each time, one second apart)."""
    couriers, orders = make_snapshot(*snapshot, seed)
    d = _dispatcher(1.0, seed)
    d.load_snapshot(couriers, orders)
    rng = np.random.default_rng(seed + 2)
    us = []
    for r in range(1, rounds + 1):
        for c in couriers:
            lat, lon = d.couriers[c.id].position.point
            step = rng.normal(0.0, 2e-5, 2)
            place = Place((lat + float(step[0]), lon + float(step[1])))
            t0 = time.perf_counter()
            d.courier_moved(c.id, place, NOW + r)
            us.append((time.perf_counter() - t0) * 1e6)
    a = np.asarray(us)
    return {
        "mean": round(float(a.mean()), 1),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
        "n": int(a.size),
    }


def run(
    sizes: tuple[tuple[int, int], ...] = SIZES,
    seed: int = 0,
    insertions: int = 200,
    limits: tuple[float, float] = (1.0, 5.0),
    insertion_snapshot: tuple[int, int] = (1000, 400),
) -> dict[str, Any]:
    return {
        "snapshots": [run_snapshot(o, c, seed, limits) for o, c in sizes],
        "insertion_ms": run_insertions(insertions, seed, insertion_snapshot),
        "position_fix_us": run_position_fixes(seed=seed, snapshot=insertion_snapshot),
    }

"""Li & Lim 100-task PDPTW benchmark of the dispatch engine and two peers.

Usage: ``python -m benchmarks.lilim_bench [INSTANCES_DIR] [--time-limit S] [--limit N]
[--engine lilim|vroom|pyvrp|all]`` prints one JSON object. Li & Lim ranks solutions by
vehicles first, then distance; every engine's routes are re-checked and re-measured here
in floating point from the file's data (README conventions: unrounded Euclidean
distances, travel time = distance, hard windows on the start of service, capacity,
pairing and precedence), so all figures compare with ``bks.csv`` and with each other.

Engines:

- ``lilim``: our OR-Tools engine (:func:`dispatch.solvers.ortools.solve`);
- ``vroom``: VROOM (``pyvroom``) with shipments, one thread, its own stopping rule;
- ``pyvrp``: PyVRP (>= 0.14) with native pickup-and-delivery (shipments), one thread.

All three get the same integer data: times and distances x :data:`LILIM_SCALE`, arcs
rounded up (so integer-feasible routes are feasible in reals), and a fixed cost per
vehicle above any total distance (vehicles first).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dispatch.instances.lilim import (
    LILIM_SCALE,
    LiLimInstance,
    read_bks,
    read_lilim,
    route_distance,
)
from dispatch.solvers.ortools import SearchConfig, solve

__all__ = [
    "DEFAULT_DIR",
    "ENGINES",
    "check_routes",
    "run",
    "run_all",
    "run_pyvrp",
    "run_vroom",
    "solve_file",
]

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "lilim" / "instances"
ENGINES = ("lilim", "vroom", "pyvrp")
PEER_VEHICLE_COST = 10**8
"""Peers' fixed cost per vehicle (scaled units): above any instance's total scaled
distance (< 4e6), below the int32 range VROOM may use internally."""
_EPS = 1e-6

Routes = list[list[int]]
# One engine on one instance: routes (task ids, depot excluded), unassigned pickup ids.
SolveOne = Callable[[LiLimInstance], tuple[Routes, list[int]]]


# --- feasibility --------------------------------------------------------------------
def check_routes(
    inst: LiLimInstance, routes: Sequence[Sequence[int]], unassigned: Sequence[int] = ()
) -> list[str]:
    """Violations of ``routes`` (task ids, depot excluded) in the benchmark's rules.

    Recomputes, in floating point from the coordinates, arrival and service start times
    (waiting until ``earliest``, hard ``latest``, return to the depot by its ``latest``),
    loads (0 at the depot, never above Q nor below 0), pairing and precedence, and that
    every task is served once: a request may be absent only if its pickup id is in
    ``unassigned``. An empty list means feasible.
    """
    p = inst.problem
    scale = float(LILIM_SCALE)
    n = p.n_nodes - 1
    earliest = p.earliest / scale
    latest = p.latest / scale
    service = p.service / scale
    demand = {rq.pickup: rq.load for rq in p.requests if rq.pickup is not None}
    demand.update({rq.delivery: -rq.load for rq in p.requests})
    out: list[str] = []
    if len(routes) > inst.max_vehicles:
        out.append(f"{len(routes)} routes > {inst.max_vehicles} vehicles")
    where: dict[int, tuple[int, int]] = {}
    for k, route in enumerate(routes):
        for pos, task in enumerate(route):
            if not 1 <= task <= n:
                out.append(f"route {k}: task {task} is not a task id")
            elif task in where:
                out.append(f"task {task} visited twice")
            else:
                where[task] = (k, pos)
        t = float(earliest[0])
        load = 0
        at = 0
        for task in [*route, 0]:
            if not 0 <= task <= n:
                continue
            arrive = t + _arc(inst, at, task)
            start = max(arrive, float(earliest[task]))
            if start > latest[task] + _EPS:
                what = "depot return" if task == 0 else f"task {task}"
                out.append(f"route {k}: {what} starts at {start:.3f} > latest {latest[task]:g}")
            t = start + float(service[task])
            at = task
            if task:
                load += demand.get(task, 0)
                if not 0 <= load <= inst.capacity:
                    out.append(f"route {k}: load {load} after task {task} outside [0, Q]")
    listed = set(unassigned)
    for rq in p.requests:
        assert rq.pickup is not None
        pk, dl = where.get(rq.pickup), where.get(rq.delivery)
        if pk is None and dl is None:
            if rq.pickup not in listed:
                out.append(f"request {rq.pickup}->{rq.delivery} neither served nor listed")
            continue
        if rq.pickup in listed:
            out.append(f"request {rq.pickup} listed as unassigned but visited")
        if pk is None or dl is None or pk[0] != dl[0]:
            out.append(f"request {rq.pickup}->{rq.delivery} not on one route")
        elif pk[1] > dl[1]:
            out.append(f"request {rq.pickup}->{rq.delivery}: delivery before pickup")
    return out


def _arc(inst: LiLimInstance, a: int, b: int) -> float:
    """Unrounded Euclidean distance (= travel time) between tasks ``a`` and ``b``."""
    return math.hypot(*(inst.coords[a] - inst.coords[b]))


# --- engines ------------------------------------------------------------------------
def solve_file(
    path: str | Path,
    time_limit_s: float = 10.0,
    seed: int = 0,
    config: SearchConfig | None = None,
) -> dict[str, Any]:
    """Solve one instance file with our engine; routes are task ids, depot excluded.

    Returns ``{"vehicles", "distance" (unrounded Euclidean), "routes", "unassigned"
    (pickup task ids of unserved requests), "status", "wall_time_s"}``.
    """
    inst = read_lilim(path)
    sol = solve(inst.problem, time_limit_s, seed=seed, config=config)
    routes = [list(r.nodes) for r in sol.routes if r.visits]
    return {
        "vehicles": len(routes),
        "distance": sum(route_distance(inst.coords, r) for r in routes),
        "routes": routes,
        "unassigned": [int(d.id) for d in sol.dropped],
        "status": sol.stats.status,
        "wall_time_s": round(sol.stats.wall_time_s, 3),
    }


def _ours(time_limit_s: float, seed: int, config: SearchConfig | None) -> SolveOne:
    def solve_one(inst: LiLimInstance) -> tuple[Routes, list[int]]:
        sol = solve(inst.problem, time_limit_s, seed=seed, config=config)
        routes = [list(r.nodes) for r in sol.routes if r.visits]
        return routes, [int(d.id) for d in sol.dropped]

    return solve_one


def _vroom_solver() -> SolveOne | None:
    try:
        import vroom  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None

    def solve_one(inst: LiLimInstance) -> tuple[Routes, list[int]]:
        p = inst.problem
        vin = vroom.Input()
        # Same integers as our engine: x LILIM_SCALE, arcs rounded up.
        vin.set_durations_matrix("car", p.durations)
        costs = vroom.VehicleCosts(fixed=PEER_VEHICLE_COST)
        depot_tw = vroom.TimeWindow(int(p.earliest[0]), int(p.latest[0]))
        for v in range(len(p.vehicles)):
            vin.add_vehicle(
                vroom.Vehicle(
                    v + 1,
                    start=0,
                    end=0,
                    capacity=[inst.capacity],
                    time_window=depot_tw,
                    costs=costs,
                )
            )

        def step(node: int) -> Any:
            tw = vroom.TimeWindow(int(p.earliest[node]), int(p.latest[node]))
            return vroom.ShipmentStep(
                node, location=node, default_service=int(p.service[node]), time_windows=[tw]
            )

        for rq in p.requests:
            assert rq.pickup is not None
            vin.add_shipment(step(rq.pickup), step(rq.delivery), amount=vroom.Amount([rq.load]))
        sol = vin.solve(exploration_level=5, nb_threads=1)
        routes: dict[int, list[int]] = {}
        for row in sol.routes.itertuples():
            if row.type in ("pickup", "delivery"):
                routes.setdefault(int(row.vehicle_id), []).append(int(row.id))
        served = {t for r in routes.values() for t in r}
        unassigned = [int(rq.id) for rq in p.requests if rq.pickup not in served]
        return [r for r in routes.values() if r], unassigned

    return solve_one


def _pyvrp_solver(time_limit_s: float, seed: int) -> SolveOne | None:
    try:
        import pyvrp  # type: ignore[import-not-found,unused-ignore]
        from pyvrp.stop import MaxRuntime  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    if not hasattr(pyvrp.Model, "add_shipment"):
        return None  # PyVRP < 0.14: no pickup-and-delivery

    def solve_one(inst: LiLimInstance) -> tuple[Routes, list[int]]:
        p = inst.problem
        m = pyvrp.Model()
        locs = [m.add_location(x=float(x), y=float(y)) for x, y in inst.coords.tolist()]
        depot = m.add_depot(locs[0], tw_early=int(p.earliest[0]), tw_late=int(p.latest[0]))
        m.add_vehicle_type(
            num_available=len(p.vehicles),
            capacity=inst.capacity,
            start_depot=depot,
            end_depot=depot,
            fixed_cost=PEER_VEHICLE_COST,
            tw_early=int(p.earliest[0]),
            tw_late=int(p.latest[0]),
        )
        # Same integers as our engine: x LILIM_SCALE, arcs rounded up.
        dur = p.durations.tolist()
        for i, a in enumerate(locs):
            for j, b in enumerate(locs):
                if i != j:
                    m.add_edge(a, b, distance=dur[i][j], duration=dur[i][j])
        pickups = []
        for rq in p.requests:
            assert rq.pickup is not None
            pu, de = rq.pickup, rq.delivery
            m.add_shipment(
                locs[pu],
                locs[de],
                pickup_tw_early=int(p.earliest[pu]),
                pickup_tw_late=int(p.latest[pu]),
                pickup_service_duration=int(p.service[pu]),
                delivery_tw_early=int(p.earliest[de]),
                delivery_tw_late=int(p.latest[de]),
                delivery_service_duration=int(p.service[de]),
                amount=rq.load,
            )
            pickups.append((pu, de))
        res = m.solve(MaxRuntime(time_limit_s), seed=seed, display=False)
        if not res.best.is_feasible():
            return [], [pu for pu, _ in pickups]
        routes: Routes = []
        for route in res.best.routes():
            tasks = []
            for act in route.schedule():
                if act.is_pickup():
                    tasks.append(pickups[act.idx][0])
                elif act.is_delivery():
                    tasks.append(pickups[act.idx][1])
            if tasks:
                routes.append(tasks)
        served = {t for r in routes for t in r}
        return routes, [pu for pu, _ in pickups if pu not in served]

    return solve_one


# --- benchmark loop ------------------------------------------------------------------
def _bks_path(instances_dir: Path) -> Path:
    return instances_dir.parent / "bks.csv"


def _files(instances_dir: Path, limit: int | None, names: Sequence[str] | None) -> list[Path]:
    files = sorted(instances_dir.glob("*.txt"))
    if names is not None:
        files = [f for f in files if f.stem in names]
    return files[:limit] if limit is not None else files


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if not r["unassigned"] and not r["infeasible"]]
    at_bks = [r for r in ok if r["vehicles"] == r["bks_vehicles"]]
    le_bks = [r for r in ok if r["vehicles"] <= r["bks_vehicles"]]
    gaps = [r["gap_pct"] for r in at_bks]
    walls = [r["wall_time_s"] for r in rows]
    return {
        "instances": len(rows),
        "vehicles_total": sum(r["vehicles"] for r in rows),
        "bks_vehicles_total": sum(r["bks_vehicles"] for r in rows),
        "share_vehicles_le_bks": len(le_bks) / len(rows) if rows else math.nan,
        "count_vehicles_le_bks": len(le_bks),
        "mean_gap_pct": round(sum(gaps) / len(gaps), 3) if gaps else math.nan,
        "unassigned_total": sum(len(r["unassigned"]) for r in rows),
        "infeasible": sum(1 for r in rows if r["infeasible"]),
        "wall_time_per_instance_s": round(sum(walls) / len(walls), 3) if walls else math.nan,
    }


def _bench(
    engine: str,
    solve_one: SolveOne,
    instances_dir: str | Path,
    limit: int | None,
    names: Sequence[str] | None,
    verbose: bool,
) -> dict[str, Any]:
    """Run ``solve_one`` on each instance, check and measure its routes, summarise."""
    instances_dir = Path(instances_dir)
    bks = read_bks(_bks_path(instances_dir))
    rows = []
    t0 = time.perf_counter()
    for f in _files(instances_dir, limit, names):
        inst = read_lilim(f)
        t1 = time.perf_counter()
        routes, unassigned = solve_one(inst)
        wall = time.perf_counter() - t1
        routes = [r for r in routes if r]
        violations = check_routes(inst, routes, unassigned)
        dist = sum(route_distance(inst.coords, r) for r in routes)
        best = bks[f.stem]
        rows.append(
            {
                "instance": f.stem,
                "vehicles": len(routes),
                "distance": round(dist, 2),
                "bks_vehicles": best.vehicles,
                "bks_distance": best.distance,
                "gap_pct": round(100.0 * (dist / best.distance - 1.0), 3),
                "unassigned": unassigned,
                "infeasible": bool(violations),
                "violations": violations[:5],
                "wall_time_s": round(wall, 3),
            }
        )
        if verbose:
            print(json.dumps({"engine": engine, **rows[-1]}), file=sys.stderr, flush=True)
    out = _summarise(rows)
    out["wall_time_s"] = round(time.perf_counter() - t0, 1)
    out["per_instance"] = rows
    return out


def run(
    instances_dir: str | Path = DEFAULT_DIR,
    time_limit_s: float = 10.0,
    limit: int | None = None,
    seed: int = 0,
    config: SearchConfig | None = None,
    names: list[str] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Our engine on every instance (sorted by name; the first ``limit``) vs BKS.

    ``mean_gap_pct`` averages the distance gap over instances solved feasibly with the
    best-known vehicle count; ``share_vehicles_le_bks`` is the share of instances
    solved feasibly, nothing unserved, with at most the best-known vehicles;
    ``infeasible`` counts instances whose routes :func:`check_routes` rejects.
    """
    out = _bench("lilim", _ours(time_limit_s, seed, config), instances_dir, limit, names, verbose)
    out.update(engine="lilim", time_limit_s=time_limit_s, seed=seed)
    return out


def run_vroom(
    instances_dir: str | Path = DEFAULT_DIR,
    limit: int | None = None,
    names: list[str] | None = None,
    verbose: bool = True,
) -> dict[str, Any] | None:
    """Same benchmark with VROOM (``pyvroom``: shipments, one thread, exploration
    level 5, no time limit); None when it is not installed."""
    solve_one = _vroom_solver()
    if solve_one is None:
        return None
    out = _bench("vroom", solve_one, instances_dir, limit, names, verbose)
    out.update(engine="vroom", time_limit_s=None, exploration_level=5)
    return out


def run_pyvrp(
    instances_dir: str | Path = DEFAULT_DIR,
    time_limit_s: float = 10.0,
    limit: int | None = None,
    seed: int = 0,
    names: list[str] | None = None,
    verbose: bool = True,
) -> dict[str, Any] | None:
    """Same benchmark with PyVRP's pickup-and-delivery (``Model.add_shipment``, PyVRP
    >= 0.14; its search is single-threaded), ``time_limit_s`` per instance; None when
    it is not installed or too old."""
    solve_one = _pyvrp_solver(time_limit_s, seed)
    if solve_one is None:
        return None
    out = _bench("pyvrp", solve_one, instances_dir, limit, names, verbose)
    out.update(engine="pyvrp", time_limit_s=time_limit_s, seed=seed)
    return out


def run_all(
    instances_dir: str | Path = DEFAULT_DIR,
    time_limit_s: float = 10.0,
    limit: int | None = None,
    seed: int = 0,
    verbose: bool = False,
) -> dict[str, Any]:
    """Our engine, VROOM and PyVRP on the same instances, one after the other.

    Returns ``{"lilim": {...}, "vroom": {...} | None, "pyvrp": {...} | None}`` (None:
    peer not installed); each summary has ``instances``, ``mean_gap_pct``,
    ``share_vehicles_le_bks``, ``vehicles_total``, ``infeasible``,
    ``wall_time_per_instance_s`` and ``per_instance``.
    """
    return {
        "lilim": run(instances_dir, time_limit_s, limit, seed, verbose=verbose),
        "vroom": run_vroom(instances_dir, limit, verbose=verbose),
        "pyvrp": run_pyvrp(instances_dir, time_limit_s, limit, seed, verbose=verbose),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("instances_dir", nargs="?", default=str(DEFAULT_DIR))
    ap.add_argument("--engine", choices=(*ENGINES, "all"), default="lilim")
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--names", default=None, help="comma-separated instance names")
    ap.add_argument("--config", default=None, help="SearchConfig fields as JSON (lilim)")
    args = ap.parse_args(argv)
    cfg = SearchConfig(**json.loads(args.config)) if args.config else None
    names = args.names.split(",") if args.names else None
    d, tl, lim = args.instances_dir, args.time_limit, args.limit
    res: dict[str, Any] | None
    if args.engine == "all":
        res = run_all(d, tl, lim, args.seed, verbose=True)
    elif args.engine == "vroom":
        res = run_vroom(d, lim, names)
    elif args.engine == "pyvrp":
        res = run_pyvrp(d, tl, lim, args.seed, names)
    else:
        res = run(d, tl, lim, args.seed, cfg, names)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

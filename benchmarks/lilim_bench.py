"""Li & Lim 100-task PDPTW benchmark of the dispatch engine (and optional peers).

Usage: ``python -m benchmarks.lilim_bench [INSTANCES_DIR] [--time-limit S] [--limit N]``
prints one JSON object. Li & Lim ranks solutions by vehicles first, then distance; the
distance is recomputed from the routes in floating point (README conventions), so the
figures compare with ``bks.csv``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from dispatch.instances.lilim import read_bks, read_lilim, route_distance
from dispatch.solvers.ortools import SearchConfig, solve

__all__ = ["DEFAULT_DIR", "run", "run_pyvrp", "run_vroom", "solve_file"]

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "lilim" / "instances"


def solve_file(
    path: str | Path,
    time_limit_s: float = 10.0,
    seed: int = 0,
    config: SearchConfig | None = None,
) -> dict[str, Any]:
    """Solve one instance file; routes are task ids in visiting order, depot excluded.

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
        "unassigned": [d.id for d in sol.dropped],
        "status": sol.stats.status,
        "wall_time_s": round(sol.stats.wall_time_s, 3),
    }


def _bks_path(instances_dir: Path) -> Path:
    return instances_dir.parent / "bks.csv"


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    at_bks = [r for r in rows if r["vehicles"] == r["bks_vehicles"] and not r["unassigned"]]
    le_bks = [r for r in rows if r["vehicles"] <= r["bks_vehicles"] and not r["unassigned"]]
    gaps = [r["gap_pct"] for r in at_bks]
    return {
        "instances": len(rows),
        "vehicles_total": sum(r["vehicles"] for r in rows),
        "bks_vehicles_total": sum(r["bks_vehicles"] for r in rows),
        "share_vehicles_le_bks": len(le_bks) / len(rows) if rows else math.nan,
        "count_vehicles_le_bks": len(le_bks),
        "mean_gap_pct": sum(gaps) / len(gaps) if gaps else math.nan,
        "unassigned_total": sum(len(r["unassigned"]) for r in rows),
    }


def run(
    instances_dir: str | Path = DEFAULT_DIR,
    time_limit_s: float = 10.0,
    limit: int | None = None,
    seed: int = 0,
    config: SearchConfig | None = None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Solve every instance (sorted by name; the first ``limit``) and compare to BKS.

    ``mean_gap_pct`` averages the distance gap over instances solved with the
    best-known vehicle count; ``share_vehicles_le_bks`` is the share of instances
    with at most the best-known vehicles (and nothing unserved).
    """
    instances_dir = Path(instances_dir)
    bks = read_bks(_bks_path(instances_dir))
    files = sorted(instances_dir.glob("*.txt"))
    if names is not None:
        files = [f for f in files if f.stem in names]
    files = files[:limit] if limit is not None else files
    rows = []
    t0 = time.perf_counter()
    for f in files:
        res = solve_file(f, time_limit_s, seed, config)
        best = bks[f.stem]
        rows.append(
            {
                "instance": f.stem,
                "vehicles": res["vehicles"],
                "distance": round(res["distance"], 2),
                "bks_vehicles": best.vehicles,
                "bks_distance": best.distance,
                "gap_pct": round(100.0 * (res["distance"] / best.distance - 1.0), 3),
                "unassigned": res["unassigned"],
                "wall_time_s": res["wall_time_s"],
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    out = _summarise(rows)
    out.update(
        time_limit_s=time_limit_s,
        seed=seed,
        wall_time_s=round(time.perf_counter() - t0, 1),
        per_instance=rows,
    )
    return out


def _peer_rows(instances_dir: Path, limit: int | None, solve_one: Any) -> dict[str, Any]:
    bks = read_bks(_bks_path(instances_dir))
    files = sorted(instances_dir.glob("*.txt"))
    files = files[:limit] if limit is not None else files
    rows = []
    for f in files:
        inst = read_lilim(f)
        routes, unassigned = solve_one(f)
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
            }
        )
    out = _summarise(rows)
    out["per_instance"] = rows
    return out


def run_vroom(
    instances_dir: str | Path = DEFAULT_DIR, limit: int | None = None
) -> dict[str, Any] | None:
    """Same benchmark with VROOM (``pyvroom``); None when it is not installed.

    VROOM wants integers: coordinates-based costs are given as a matrix x100, rounded.
    """
    try:
        import vroom  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    import numpy as np

    def solve_one(path: Path) -> tuple[list[list[int]], list[int]]:
        inst = read_lilim(path)
        p = inst.problem
        scale = 100
        diff = inst.coords[:, None, :] - inst.coords[None, :, :]
        matrix = np.ceil(np.sqrt((diff**2).sum(axis=2)) * scale).astype(np.int64)
        problem = vroom.Input()
        problem.set_durations_matrix("car", matrix.tolist())
        for v in range(len(p.vehicles)):
            problem.add_vehicle(
                vroom.Vehicle(
                    v,
                    start=0,
                    end=0,
                    capacity=[inst.capacity],
                    time_window=vroom.TimeWindow(0, int(p.latest[0]) // 10),
                )
            )
        f = 1000 // scale
        for rq in p.requests:
            assert rq.pickup is not None
            problem.add_shipment(
                vroom.ShipmentStep(
                    rq.pickup,
                    location=rq.pickup,
                    service=int(p.service[rq.pickup]) // f,
                    time_windows=[
                        vroom.TimeWindow(
                            int(p.earliest[rq.pickup]) // f, int(p.latest[rq.pickup]) // f
                        )
                    ],
                ),
                vroom.ShipmentStep(
                    rq.delivery,
                    location=rq.delivery,
                    service=int(p.service[rq.delivery]) // f,
                    time_windows=[
                        vroom.TimeWindow(
                            int(p.earliest[rq.delivery]) // f, int(p.latest[rq.delivery]) // f
                        )
                    ],
                ),
                amount=[rq.load],
            )
        sol = problem.solve(exploration_level=5, nb_threads=1)
        routes: dict[int, list[int]] = {}
        for row in sol.routes.itertuples():
            if row.type in ("pickup", "delivery"):
                routes.setdefault(int(row.vehicle_id), []).append(int(row.id))
        served = {n for r in routes.values() for n in r}
        unassigned = [rq.id for rq in p.requests if rq.pickup not in served]
        return list(routes.values()), [int(x) for x in unassigned]

    return _peer_rows(Path(instances_dir), limit, solve_one)


def run_pyvrp(
    instances_dir: str | Path = DEFAULT_DIR,
    time_limit_s: float = 10.0,
    limit: int | None = None,
) -> dict[str, Any] | None:
    """Same benchmark with PyVRP (needs a version with pickup-and-delivery); None when
    it is not installed. Not implemented beyond the availability check yet."""
    try:
        import pyvrp  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return None
    del time_limit_s, limit, instances_dir
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("instances_dir", nargs="?", default=str(DEFAULT_DIR))
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--names", default=None, help="comma-separated instance names")
    ap.add_argument("--config", default=None, help="SearchConfig fields as JSON")
    args = ap.parse_args(argv)
    cfg = SearchConfig(**json.loads(args.config)) if args.config else None
    names = args.names.split(",") if args.names else None
    res = run(args.instances_dir, args.time_limit, args.limit, args.seed, cfg, names)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

"""Reader for the Li & Lim PDPTW benchmark (../shared/data/lilim/README.md).

Distances follow the benchmark conventions: unrounded Euclidean, travel time equals
distance. OR-Tools needs integers, so times and distances are scaled by
:data:`LILIM_SCALE` and travel times rounded **up** (a route that fits its windows in
integers fits them in reals). Report distances with :func:`route_distance`, which
recomputes them in floating point from the coordinates, as ``bks.csv`` does.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dispatch.problem import Objective, Request, RoutingProblem, Vehicle
from geo.travel import to_int_matrix

__all__ = [
    "LILIM_SCALE",
    "LILIM_VEHICLE_COST",
    "BestKnown",
    "LiLimInstance",
    "read_bks",
    "read_lilim",
    "route_distance",
]

LILIM_SCALE = 1000
"""Integer units per instance unit (x1000: 0.001 precision per arc)."""
LILIM_VEHICLE_COST = 10**9
"""Fixed cost per vehicle, above any total scaled distance (~5e6): vehicles first."""


@dataclass(frozen=True)
class BestKnown:
    """One row of ``bks.csv``: fewest vehicles, then distance (2 decimals)."""

    vehicles: int
    distance: float


@dataclass(frozen=True)
class LiLimInstance:
    """A parsed instance: the problem plus what is needed to report in file terms.

    ``coords`` is (n+1, 2) in instance units, row = task id (0 is the depot). Problem
    node i is task id i, so routes' nodes are the instance's task ids.
    """

    name: str
    problem: RoutingProblem
    coords: npt.NDArray[np.float64]
    max_vehicles: int
    capacity: int


def read_lilim(path: str | Path, n_vehicles: int | None = None) -> LiLimInstance:
    """Parse a Li & Lim file into a :class:`LiLimInstance`.

    All vehicles start and end at the depot (task 0), with the file's capacity and the
    depot's ``latest`` as the return deadline; each vehicle costs
    :data:`LILIM_VEHICLE_COST`; cost per arc is the scaled distance. ``n_vehicles``
    overrides the file's K (an upper bound, not a target).
    """
    path = Path(path)
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    k, cap = int(lines[0][0]), int(lines[0][1])
    rows = np.array([[int(x) for x in ln[:9]] for ln in lines[1:]], dtype=np.int64)
    if rows.shape[1] != 9 or not np.array_equal(rows[:, 0], np.arange(len(rows))):
        raise ValueError(f"{path}: expected 9 fields per task and ids 0..n in order")
    coords = rows[:, 1:3].astype(np.float64)
    diff = coords[:, None, :] - coords[None, :, :]
    euclid = np.sqrt((diff**2).sum(axis=2))
    dist = to_int_matrix(euclid, LILIM_SCALE)
    requests = []
    for task in rows:
        tid, demand, sib_p, sib_d = int(task[0]), int(task[3]), int(task[7]), int(task[8])
        if tid != 0 and sib_p == 0 and sib_d != 0:
            if rows[sib_d, 7] != tid or rows[sib_d, 3] != -demand:
                raise ValueError(f"{path}: task {tid} and its delivery {sib_d} disagree")
            requests.append(Request(id=tid, pickup=tid, delivery=sib_d, load=demand))
    nv = k if n_vehicles is None else n_vehicles
    problem = RoutingProblem(
        durations=dist,
        distances=dist,
        earliest=rows[:, 4] * LILIM_SCALE,
        latest=rows[:, 5] * LILIM_SCALE,
        service=rows[:, 6] * LILIM_SCALE,
        requests=tuple(requests),
        vehicles=tuple(Vehicle(start=0, end=0, capacity=cap, id=v) for v in range(nv)),
        objective=Objective(travel_time=1, lateness=0, vehicle_fixed=LILIM_VEHICLE_COST),
    )
    return LiLimInstance(path.stem, problem, coords, k, cap)


def route_distance(coords: npt.NDArray[np.float64], route: Sequence[int]) -> float:
    """Length of depot -> ``route`` (task ids) -> depot in instance units, unrounded."""
    tour = [0, *route, 0]
    return float(sum(math.hypot(*(coords[a] - coords[b])) for a, b in itertools.pairwise(tour)))


def read_bks(path: str | Path) -> dict[str, BestKnown]:
    """Read ``bks.csv`` (``instance,vehicles,distance``) into name -> :class:`BestKnown`."""
    with Path(path).open(newline="") as fh:
        return {
            row["instance"]: BestKnown(int(row["vehicles"]), float(row["distance"]))
            for row in csv.DictReader(fh)
        }

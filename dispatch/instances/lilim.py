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
LILIM_MAX_FIELD = 10**7
"""Largest absolute value of a field (the benchmark's are below 10**4)."""


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
    lines = [(n, ln.split()) for n, ln in enumerate(path.read_text().splitlines(), 1) if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty file")
    k, cap = _ints(path, *lines[0], 2)
    task_lines = [n for n, _ in lines[1:]]
    parsed = [_ints(path, n, fields, 9) for n, fields in lines[1:]]
    for i, (n, task) in enumerate(zip(task_lines, parsed, strict=True)):
        if task[0] != i:
            raise ValueError(f"{path}:{n}: expected task id {i} (ids 0..n in order), got {task[0]}")
    rows = np.array(parsed, dtype=np.int64).reshape(-1, 9)
    if len(rows) == 0:
        raise ValueError(f"{path}: no depot line (task 0)")
    requests = [
        Request(id=tid, pickup=tid, delivery=int(rows[tid, 8]), load=int(rows[tid, 3]))
        for tid in _pickups(path, rows, task_lines)
    ]
    coords = rows[:, 1:3].astype(np.float64)
    diff = coords[:, None, :] - coords[None, :, :]
    euclid = np.sqrt((diff**2).sum(axis=2))
    dist = to_int_matrix(euclid, LILIM_SCALE)
    # More vehicles than requests can never all be used (a route serves at least one),
    # and a file's K of millions would only build millions of idle vehicles.
    nv = min(k if n_vehicles is None else n_vehicles, max(1, len(requests)))
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


def _ints(path: Path, line: int, fields: list[str], count: int) -> list[int]:
    """The first ``count`` fields of a line as bounded integers.

    Bounded so that scaling by :data:`LILIM_SCALE` and summing along routes stays far
    from int64 overflow (numpy would wrap silently, OR-Tools would abort).
    """
    if len(fields) < count:
        raise ValueError(f"{path}:{line}: expected {count} integer fields, got {len(fields)}")
    values = []
    for i, x in enumerate(fields[:count], 1):
        try:
            values.append(int(x))
        except ValueError:
            raise ValueError(f"{path}:{line}: field {i} is not an integer: {x[:40]!r}") from None
    if any(abs(v) > LILIM_MAX_FIELD for v in values):
        raise ValueError(f"{path}:{line}: a value exceeds the limit of {LILIM_MAX_FIELD:,}")
    return values


def _pickups(path: Path, rows: npt.NDArray[np.int64], lines: list[int]) -> list[int]:
    """Pickup task ids, once every task is checked to pair with an existing sibling.

    A dangling or one-sided sibling would silently drop a task from the problem (a
    delivery nobody picks up is never served), so the file is refused instead.
    """
    n = len(rows) - 1
    where = [f"{path}:{line}" for line in lines]
    for tid in range(len(rows)):
        sib_p, sib_d = int(rows[tid, 7]), int(rows[tid, 8])
        if tid == 0:
            if sib_p or sib_d:
                raise ValueError(f"{where[0]}: the depot (task 0) cannot name a pickup or delivery")
            continue
        for sib, kind in ((sib_p, "pickup"), (sib_d, "delivery")):
            if sib == tid:
                raise ValueError(f"{where[tid]}: task {tid} names itself as its {kind}")
            if not 0 <= sib <= n:
                raise ValueError(
                    f"{where[tid]}: task {tid} names {kind} {sib}, which does not exist"
                )
        if (sib_p == 0) == (sib_d == 0):
            raise ValueError(
                f"{where[tid]}: task {tid} must name exactly one of a pickup (field 8) or a "
                f"delivery (field 9), got {sib_p} and {sib_d}"
            )
    pickups = []
    for tid in range(1, len(rows)):
        sib_p, sib_d = int(rows[tid, 7]), int(rows[tid, 8])
        if sib_d:
            if rows[sib_d, 7] != tid:
                raise ValueError(
                    f"{where[tid]}: pickup {tid}'s delivery {sib_d} does not name {tid} "
                    "as its pickup"
                )
            if rows[sib_d, 3] != -rows[tid, 3]:
                raise ValueError(
                    f"{where[tid]}: pickup {tid} and its delivery {sib_d} disagree on the demand"
                )
            pickups.append(tid)
        elif rows[sib_p, 8] != tid:
            raise ValueError(
                f"{where[tid]}: delivery {tid}'s pickup {sib_p} does not name {tid} as its delivery"
            )
    return pickups


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

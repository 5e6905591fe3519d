"""MDRP solution files: build them from a run, write them, read them back.

Three whitespace-separated files with one header line each (../shared/data/mdrp/README.md):

- ``solution_info_assignments.txt``: ``assignment_time pickup_time courier order [order ...]``
- ``solution_info_orders.txt``: ``order placement_time ready_time pickup_time dropoff_time courier``
- ``solution_info_couriers.txt``: ``courier departure_time origin destination``

Times in the files are **minutes** (the simulator's seconds / 60), written as integers
when whole, else as the shortest decimal that reads back to the same float: a generated
city's times are not whole minutes, and an evaluator checks them against each other with
float-noise tolerance, so any rounding here could turn a feasible run infeasible on disk.
Every row keeps the file line it came from (``line``), so validator messages can point at
it; rows built in memory get the line they will have when written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simulations.engine import SimResult
from simulations.scenarios.mdrp import START_ID

__all__ = [
    "ASSIGNMENTS_FILE",
    "ASSIGNMENTS_HEADER",
    "COURIERS_FILE",
    "COURIERS_HEADER",
    "ORDERS_FILE",
    "ORDERS_HEADER",
    "AssignmentRow",
    "MoveRow",
    "OrderRow",
    "Solution",
    "SolutionFormatError",
    "fmt_minutes",
    "read_solution",
    "solution_from_result",
    "write_solution",
]

ASSIGNMENTS_FILE = "solution_info_assignments.txt"
ORDERS_FILE = "solution_info_orders.txt"
COURIERS_FILE = "solution_info_couriers.txt"
ASSIGNMENTS_HEADER = ("assignment_time", "pickup_time", "courier", "order")
ORDERS_HEADER = (
    "order", "placement_time", "ready_time", "pickup_time", "dropoff_time", "courier",
)  # fmt: skip
COURIERS_HEADER = ("courier", "departure_time", "origin", "destination")


class SolutionFormatError(ValueError):
    """A solution file that cannot be parsed; ``file`` and ``line`` say where."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}")
        self.file = file
        self.line = line


@dataclass(frozen=True, slots=True)
class AssignmentRow:
    """One bundle: assigned and picked up at these minutes, drop-off sequence."""

    assignment_time: float
    pickup_time: float
    courier: str
    orders: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One delivered order (minutes)."""

    order: str
    placement_time: float
    ready_time: float
    pickup_time: float
    dropoff_time: float
    courier: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class MoveRow:
    """One move (minutes); ``origin`` "0" is the courier's start."""

    courier: str
    departure_time: float
    origin: str
    destination: str
    line: int = 0


@dataclass(frozen=True)
class Solution:
    """The content of the three files, rows in file order."""

    assignments: list[AssignmentRow] = field(default_factory=list)
    orders: list[OrderRow] = field(default_factory=list)
    moves: list[MoveRow] = field(default_factory=list)


def fmt_minutes(x: float) -> str:
    """Minutes as the files write them: ``12`` when whole, else the shortest exact
    round-trip (``12.5``, ``628.8333333333334``); see the module docstring."""
    r = round(x)
    if abs(x - r) < 1e-9:
        return str(int(r))
    return repr(float(x))


def solution_from_result(result: SimResult) -> Solution:
    """The three files' rows from a finished run.

    One assignment row per pickup visit (in mdrp mode exactly the policy's bundles),
    orders in their actual drop-off order; ``assignment_time`` is when the bundle's orders
    were (last) given to the courier. Moves are grouped by courier in scenario order.
    """
    orders = result.orders
    arows: list[AssignmentRow] = []
    visits = sorted(
        result.pickups,
        key=lambda v: (max(result.assigned_at[o] for o in v.order_ids), v.time, v.courier_id),
    )
    for v in visits:
        seq = sorted(v.order_ids, key=lambda o: (orders[o].delivered_at or float("inf"), o))
        arows.append(
            AssignmentRow(
                assignment_time=max(result.assigned_at[o] for o in v.order_ids) / 60.0,
                pickup_time=v.time / 60.0,
                courier=v.courier_id,
                orders=tuple(seq),
                line=len(arows) + 2,
            )
        )
    orows: list[OrderRow] = []
    for o in result.scenario.orders:
        done = orders[o.id]
        if done.status != "delivered" or done.picked_up_at is None or done.delivered_at is None:
            continue
        orows.append(
            OrderRow(
                order=o.id,
                placement_time=o.placed_at / 60.0,
                ready_time=o.ready_at / 60.0,
                pickup_time=done.picked_up_at / 60.0,
                dropoff_time=done.delivered_at / 60.0,
                courier=done.courier_id or "",
                line=len(orows) + 2,
            )
        )
    mrows: list[MoveRow] = []
    for c in result.scenario.couriers:
        for m in result.moves.get(c.id, []):
            mrows.append(
                MoveRow(
                    c.id, m.departure / 60.0, m.origin or START_ID, m.destination, len(mrows) + 2
                )
            )
    return Solution(arows, orows, mrows)


def write_solution(solution: Solution, out_dir: Path | str) -> list[Path]:
    """Write the three files into ``out_dir`` (created if needed); returns their paths."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    a_lines = [" ".join(ASSIGNMENTS_HEADER)] + [
        " ".join([fmt_minutes(r.assignment_time), fmt_minutes(r.pickup_time), r.courier, *r.orders])
        for r in solution.assignments
    ]
    o_lines = [" ".join(ORDERS_HEADER)] + [
        " ".join(
            [
                r.order,
                fmt_minutes(r.placement_time),
                fmt_minutes(r.ready_time),
                fmt_minutes(r.pickup_time),
                fmt_minutes(r.dropoff_time),
                r.courier,
            ]
        )
        for r in solution.orders
    ]
    m_lines = [" ".join(COURIERS_HEADER)] + [
        " ".join([r.courier, fmt_minutes(r.departure_time), r.origin, r.destination])
        for r in solution.moves
    ]
    paths = []
    for name, lines in (
        (ASSIGNMENTS_FILE, a_lines),
        (ORDERS_FILE, o_lines),
        (COURIERS_FILE, m_lines),
    ):
        path = d / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def _lines(path: Path, header: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise SolutionFormatError(path.name, 0, "file is missing")
    text = path.read_text(encoding="utf-8").splitlines()
    if not text or tuple(text[0].split()) != header:
        raise SolutionFormatError(path.name, 1, f"header must be {' '.join(header)}")
    return [(n, line.split()) for n, line in enumerate(text[1:], 2) if line.strip()]


def _minutes(value: str, file: str, line: int, name: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise SolutionFormatError(file, line, f"{name} {value!r} is not a number") from None
    if x != x or abs(x) == float("inf"):
        raise SolutionFormatError(file, line, f"{name} {value!r} is not finite")
    return x


def read_solution(directory: Path | str) -> Solution:
    """Parse the three files; :class:`SolutionFormatError` on the first malformed line."""
    d = Path(directory)
    arows = []
    for n, f in _lines(d / ASSIGNMENTS_FILE, ASSIGNMENTS_HEADER):
        if len(f) < 4:
            raise SolutionFormatError(ASSIGNMENTS_FILE, n, "needs times, courier and orders")
        arows.append(
            AssignmentRow(
                _minutes(f[0], ASSIGNMENTS_FILE, n, "assignment_time"),
                _minutes(f[1], ASSIGNMENTS_FILE, n, "pickup_time"),
                f[2],
                tuple(f[3:]),
                n,
            )
        )
    orows = []
    for n, f in _lines(d / ORDERS_FILE, ORDERS_HEADER):
        if len(f) != len(ORDERS_HEADER):
            raise SolutionFormatError(ORDERS_FILE, n, f"expected {len(ORDERS_HEADER)} fields")
        times = [
            _minutes(v, ORDERS_FILE, n, h) for v, h in zip(f[1:5], ORDERS_HEADER[1:5], strict=True)
        ]
        orows.append(OrderRow(f[0], times[0], times[1], times[2], times[3], f[5], n))
    mrows = []
    for n, f in _lines(d / COURIERS_FILE, COURIERS_HEADER):
        if len(f) != len(COURIERS_HEADER):
            raise SolutionFormatError(COURIERS_FILE, n, f"expected {len(COURIERS_HEADER)} fields")
        mrows.append(
            MoveRow(f[0], _minutes(f[1], COURIERS_FILE, n, "departure_time"), f[2], f[3], n)
        )
    return Solution(arows, orows, mrows)

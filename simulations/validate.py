"""Check an MDRP solution against every feasibility rule of ../shared/data/mdrp/README.md.

:func:`validate_solution` takes parsed rows (:mod:`simulations.solution`, minutes) and the
instance (:class:`~simulations.scenarios.base.Scenario`, seconds) and returns typed
:class:`Violation` s; an empty list means feasible. :func:`validate_dir` reads the three
files first and reports unreadable ones as ``format`` violations. Times are compared in
minutes with a tolerance of 1e-6. Travel times come from the scenario's travel model (the
MDRP ``ceil(distance / meters_per_minute)`` rule).

**Rules** (``rules``): ``"basic"`` (default) is the README's basic variant plus
prepositioning (a move to a restaurant without a pickup is not flagged); a courier drives
to a restaurant only once it has been given the bundle, so an assignment made after the
courier left for the pickup is an ``assigned_en_route`` violation. ``"updates"`` is the
*assignment updates* variant: a bundle may also be assigned (updated: orders added) while
the courier is at the restaurant, between its arrival and the pickup. ``"free"`` (the
simulator's free-routing mode, not an MDRP variant: couriers are re-routed on the way)
skips that rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dispatch.model import Point
from simulations.scenarios.base import Scenario
from simulations.scenarios.mdrp import START_ID
from simulations.solution import Solution, SolutionFormatError, read_solution

__all__ = ["RULES", "Rules", "Violation", "validate_dir", "validate_solution"]

Rules = Literal["basic", "updates", "free"]

EPS = 1e-6
"""Minutes of slack in every time comparison (float noise, not a real allowance)."""

RULES: Mapping[str, str] = {
    "format": "a file is missing, has a wrong header or an unparsable line",
    "unknown_id": "a courier, order or place id the instance does not have",
    "order_once": "an order in more than one assignment (or twice in one), or two order lines",
    "assigned_before_placed": "an assignment made before all its orders were placed",
    "one_restaurant": "a bundle with orders of more than one restaurant",
    "pickup_after_off": "a pickup after the courier's off-time",
    "pickup_before_ready": "a pickup before the ready time of an order of the bundle",
    "dropoff_sequence": "drop-offs out of bundle sequence, closer than one drop-off service, "
    "or before the pickup",
    "order_record": "an order line that disagrees with the instance or with its assignment",
    "move_chain": "a move that does not start where the courier's previous move ended "
    "(the first one: at its start, origin 0), or moves of a courier not grouped together",
    "move_timing": "a departure before the previous move's arrival or before the on-time",
    "not_at_place": "at a pickup or drop-off time the courier is not at that place",
    "service_time": "less than half a service time between arrival and a pickup/drop-off, "
    "or between it and leaving",
    "assigned_en_route": "an assignment made after the courier left for its restaurant "
    "(with rules='updates': unless made while it is there, at or before the pickup)",
}
"""Rule id -> what it forbids."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: ``rule`` (a :data:`RULES` key), the file and 1-based line."""

    rule: str
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: [{self.rule}] {self.message}"


_A, _O, _C = (
    "solution_info_assignments.txt",
    "solution_info_orders.txt",
    "solution_info_couriers.txt",
)


@dataclass(slots=True)
class _Visit:
    place: str
    start: float  # departure of the move that ends here
    arrival: float
    departure: float  # when it leaves again (inf after the last move)
    line: int


def _line(row_line: int, index: int) -> int:
    return row_line or index + 2


def validate_solution(
    scenario: Scenario, solution: Solution, rules: Rules = "basic"
) -> list[Violation]:
    """All violations of ``solution`` (rows in minutes) for ``scenario`` (seconds) under
    ``rules`` (module docstring)."""
    if rules not in ("basic", "updates", "free"):
        raise ValueError(f"rules must be basic, updates or free, got {rules!r}")
    out: list[Violation] = []

    def bad(rule: str, file: str, line: int, message: str) -> None:
        out.append(Violation(rule, file, line, message))

    orders = scenario.order_index
    couriers = scenario.courier_index
    rest_of = scenario.restaurant_of
    hp = scenario.params.pickup_service_s / 120.0  # half a service, minutes
    hd = scenario.params.dropoff_service_s / 120.0
    drop_service = scenario.params.dropoff_service_s / 60.0

    # ---- assignments
    bundle_of: dict[str, int] = {}  # order -> index into solution.assignments
    for i, a in enumerate(solution.assignments):
        n = _line(a.line, i)
        if a.courier not in couriers:
            bad("unknown_id", _A, n, f"unknown courier {a.courier}")
        if not a.orders:
            bad("format", _A, n, "an assignment without orders")
        known = []
        for oid in a.orders:
            if oid not in orders:
                bad("unknown_id", _A, n, f"unknown order {oid}")
                continue
            if oid in bundle_of:
                j = bundle_of[oid]
                where = (
                    "twice in this assignment"
                    if j == i
                    else (f"also on line {_line(solution.assignments[j].line, j)}")
                )
                bad("order_once", _A, n, f"order {oid} is {where}")
                continue
            bundle_of[oid] = i
            known.append(oid)
        for oid in known:
            placed = orders[oid].placed_at / 60.0
            if a.assignment_time < placed - EPS:
                bad(
                    "assigned_before_placed", _A, n,
                    f"assigned at {a.assignment_time:g}, order {oid} placed at {placed:g}",
                )  # fmt: skip
            ready = orders[oid].ready_at / 60.0
            if a.pickup_time < ready - EPS:
                bad(
                    "pickup_before_ready", _A, n,
                    f"pickup at {a.pickup_time:g}, order {oid} ready at {ready:g}",
                )  # fmt: skip
        if len({rest_of[o] for o in known}) > 1:
            rs = sorted({rest_of[o] for o in known})
            bad("one_restaurant", _A, n, f"orders of restaurants {', '.join(rs)}")
        c = couriers.get(a.courier)
        if c is not None and a.pickup_time > c.shift_end / 60.0 + EPS:
            bad(
                "pickup_after_off", _A, n,
                f"pickup at {a.pickup_time:g} after courier {a.courier}'s off-time "
                f"{c.shift_end / 60.0:g}",
            )  # fmt: skip

    # ---- orders
    order_row: dict[str, int] = {}
    for i, r in enumerate(solution.orders):
        n = _line(r.line, i)
        o = orders.get(r.order)
        if o is None:
            bad("unknown_id", _O, n, f"unknown order {r.order}")
            continue
        if r.order in order_row:
            j = order_row[r.order]
            bad(
                "order_once",
                _O,
                n,
                f"order {r.order} also on line {_line(solution.orders[j].line, j)}",
            )
            continue
        order_row[r.order] = i
        if (
            abs(r.placement_time - o.placed_at / 60.0) > EPS
            or abs(r.ready_time - o.ready_at / 60.0) > EPS
        ):
            bad(
                "order_record", _O, n,
                f"order {r.order}: placement/ready {r.placement_time:g}/{r.ready_time:g} differ "
                f"from the instance's {o.placed_at / 60.0:g}/{o.ready_at / 60.0:g}",
            )  # fmt: skip
        if r.courier not in couriers:
            bad("unknown_id", _O, n, f"unknown courier {r.courier}")
        k = bundle_of.get(r.order)
        if k is None:
            bad("order_record", _O, n, f"order {r.order} is delivered but in no assignment")
            continue
        a = solution.assignments[k]
        if r.courier != a.courier:
            bad(
                "order_record",
                _O,
                n,
                f"order {r.order}: courier {r.courier}, assigned to {a.courier}",
            )
        if abs(r.pickup_time - a.pickup_time) > EPS:
            bad(
                "order_record", _O, n,
                f"order {r.order}: pickup {r.pickup_time:g}, its assignment says {a.pickup_time:g}",
            )  # fmt: skip

    # ---- drop-off sequence of each bundle
    for i, a in enumerate(solution.assignments):
        n = _line(a.line, i)
        prev: tuple[str, float] | None = None
        for oid in a.orders:
            if bundle_of.get(oid) != i:
                continue
            row = order_row.get(oid)
            if row is None:
                bad("order_record", _A, n, f"order {oid} of this bundle has no order line")
                continue
            drop = solution.orders[row].dropoff_time
            if drop < a.pickup_time - EPS:
                bad(
                    "dropoff_sequence",
                    _A,
                    n,
                    f"order {oid} dropped off at {drop:g}, before the pickup",
                )
            if prev is not None and drop < prev[1] + drop_service - EPS:
                bad(
                    "dropoff_sequence", _A, n,
                    f"order {oid} dropped off at {drop:g}, less than {drop_service:g} min after "
                    f"{prev[0]} at {prev[1]:g}",
                )  # fmt: skip
            prev = (oid, drop)

    # ---- moves
    def point_of(place: str, courier: str) -> Point | None:
        if place == START_ID:
            c = couriers.get(courier)
            return c.position.point if c is not None else None
        if place in scenario.restaurants:
            return scenario.restaurants[place].point
        o = orders.get(place)
        return o.dropoff.point if o is not None else None

    cache: dict[tuple[Point, Point], float] = {}

    def travel_min(a: Point, b: Point) -> float:
        t = cache.get((a, b))
        if t is None:
            t = float(scenario.travel.duration_matrix([a], [b])[0, 0]) / 60.0
            cache[(a, b)] = t
        return t

    visits: dict[str, list[_Visit]] = {}
    finished: set[str] = set()
    current: str | None = None
    for i, m in enumerate(solution.moves):
        n = _line(m.line, i)
        c = couriers.get(m.courier)
        if c is None:
            bad("unknown_id", _C, n, f"unknown courier {m.courier}")
            continue
        if m.courier != current:
            if current is not None:
                finished.add(current)
            if m.courier in finished:
                bad("move_chain", _C, n, f"moves of courier {m.courier} are not grouped together")
            current = m.courier
        vs = visits.setdefault(m.courier, [])
        a_pt = point_of(m.origin, m.courier)
        b_pt = point_of(m.destination, m.courier) if m.destination != START_ID else None
        if a_pt is None or b_pt is None:
            missing = m.origin if a_pt is None else m.destination
            bad("unknown_id", _C, n, f"unknown place {missing}")
            continue
        if not vs:
            if m.origin != START_ID:
                bad("move_chain", _C, n, f"first move of {m.courier} starts at {m.origin}, not 0")
            if m.departure_time < c.shift_start / 60.0 - EPS:
                bad(
                    "move_timing", _C, n,
                    f"departs at {m.departure_time:g}, before on-time {c.shift_start / 60.0:g}",
                )  # fmt: skip
        else:
            last = vs[-1]
            if m.origin != last.place:
                bad(
                    "move_chain",
                    _C,
                    n,
                    f"starts at {m.origin}, previous move ended at {last.place}",
                )
            if m.departure_time < last.arrival - EPS:
                bad(
                    "move_timing", _C, n,
                    f"departs at {m.departure_time:g}, before arriving at {last.place} at "
                    f"{last.arrival:g}",
                )  # fmt: skip
            last.departure = m.departure_time
        arrival = m.departure_time + travel_min(a_pt, b_pt) * c.speed_factor
        vs.append(_Visit(m.destination, m.departure_time, arrival, float("inf"), n))

    def at_place(
        courier: str, place: str, t: float, half: float, what: str, file: str, n: int
    ) -> _Visit | None:
        for v in visits.get(courier, []):
            if v.place == place and v.arrival - EPS <= t <= v.departure + EPS:
                if t < v.arrival + half - EPS or v.departure < t + half - EPS:
                    bad(
                        "service_time", file, n,
                        f"{what} at {t:g}: courier {courier} arrived {v.arrival:g} and left "
                        f"{v.departure:g} (half a service is {half:g})",
                    )  # fmt: skip
                return v
        bad("not_at_place", file, n, f"{what} at {t:g}: courier {courier} is not at {place}")
        return None

    for i, a in enumerate(solution.assignments):
        known = [o for o in a.orders if bundle_of.get(o) == i]
        if not known or a.courier not in couriers:
            continue
        rid = rest_of[known[0]]
        n = _line(a.line, i)
        v = at_place(a.courier, rid, a.pickup_time, hp, f"pickup at {rid}", _A, n)
        if v is None or rules == "free" or a.assignment_time <= v.start + EPS:
            continue
        if rules == "updates" and v.arrival - EPS <= a.assignment_time <= a.pickup_time + EPS:
            continue  # an update at the restaurant
        bad(
            "assigned_en_route", _A, n,
            f"assigned at {a.assignment_time:g}, after courier {a.courier} left for {rid} at "
            f"{v.start:g}" + (f" (arrived {v.arrival:g})" if rules == "updates" else ""),
        )  # fmt: skip
    for i, r in enumerate(solution.orders):
        if r.order not in orders or r.courier not in couriers or order_row.get(r.order) != i:
            continue
        at_place(
            r.courier, r.order, r.dropoff_time, hd, f"drop-off of {r.order}", _O, _line(r.line, i)
        )
    return out


def validate_dir(
    scenario: Scenario, directory: Path | str, rules: Rules = "basic"
) -> list[Violation]:
    """Read the three solution files in ``directory`` and validate them under ``rules``."""
    try:
        solution = read_solution(directory)
    except SolutionFormatError as e:
        return [Violation("format", e.file, e.line, str(e))]
    return validate_solution(scenario, solution, rules)

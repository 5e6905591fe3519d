"""Reader for Meal Delivery Routing Problem instances (../shared/data/mdrp/README.md).

An instance directory holds ``restaurants.txt``, ``orders.txt``, ``couriers.txt`` and
``instance_parameters.txt``, tab-separated with one header line. Instance times are whole
minutes; the :class:`~simulations.scenarios.base.Scenario` is in **seconds** (x 60) like
the rest of the simulator, and the solution writer converts back. Travel follows the MDRP
rule ``ceil(euclidean / meters_per_minute)`` minutes via
:class:`geo.travel.PlanarEuclideanModel`.
"""

from __future__ import annotations

from pathlib import Path

from dispatch.model import Courier, DispatchError, Order, Place
from geo.travel import PlanarEuclideanModel
from simulations.scenarios.base import Parameters, Scenario, ScenarioError

__all__ = ["MDRP_FILES", "START_ID", "is_mdrp_dir", "read_mdrp"]

MDRP_FILES = ("restaurants.txt", "orders.txt", "couriers.txt", "instance_parameters.txt")
START_ID = "0"
"""Place id of every courier's start location (``origin`` 0 in the moves file)."""
DEFAULT_CAPACITY = 3
"""Courier capacity put on :class:`~dispatch.model.Courier`. The MDRP itself sets no
bundle size limit and the simulator does not enforce one in MDRP mode; policies may."""

_HEADERS = {
    "restaurants.txt": ("restaurant", "x", "y"),
    "orders.txt": ("order", "x", "y", "placement_time", "restaurant", "ready_time"),
    "couriers.txt": ("courier", "x", "y", "on_time", "off_time"),
    "instance_parameters.txt": (
        "meters_per_minute",
        "pickup service minutes",
        "dropoff service minutes",
        "target click-to-door",
        "maximum click-to-door",
        "pay per order",
        "guaranteed pay per hour",
    ),
}


def is_mdrp_dir(path: Path) -> bool:
    """True when ``path`` is a directory holding the four MDRP instance files."""
    return path.is_dir() and all((path / f).is_file() for f in MDRP_FILES)


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty data line, after checking the header."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e}") from e
    expected = _HEADERS[path.name]
    if not lines or tuple(h.strip() for h in lines[0].split("\t")) != expected:
        raise ScenarioError(f"{path}:1: header must be {' TAB '.join(expected)}")
    out = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != len(expected):
            raise ScenarioError(f"{path}:{n}: expected {len(expected)} fields, got {len(fields)}")
        out.append((n, fields))
    return out


def _num(value: str, path: Path, n: int, name: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ScenarioError(f"{path}:{n}: {name} {value!r} is not a number") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise ScenarioError(f"{path}:{n}: {name} {value!r} is not finite")
    return x


def read_mdrp(directory: Path | str, capacity: int = DEFAULT_CAPACITY) -> Scenario:
    """Read an MDRP instance directory into a :class:`Scenario` (times in seconds).

    Raises :class:`ScenarioError` naming the file and line of the first problem.
    """
    d = Path(directory)
    if not is_mdrp_dir(d):
        raise ScenarioError(f"{d}: not an MDRP instance directory (needs {', '.join(MDRP_FILES)})")
    prows = _rows(d / "instance_parameters.txt")
    if len(prows) != 1:
        raise ScenarioError(f"{d / 'instance_parameters.txt'}: expected exactly one data line")
    n, f = prows[0]
    pp = d / "instance_parameters.txt"
    vals = [_num(v, pp, n, h) for v, h in zip(f, _HEADERS[pp.name], strict=True)]
    mpm, pick_min, drop_min, target_min, max_min, ppo, gpph = vals
    if mpm <= 0 or pick_min < 0 or drop_min < 0:
        raise ScenarioError(f"{pp}:{n}: speed must be > 0 and service times >= 0")
    if ppo < 0 or gpph < 0:
        raise ScenarioError(f"{pp}:{n}: pay per order and guaranteed pay per hour must be >= 0")
    params = Parameters(
        pickup_service_s=pick_min * 60.0,
        dropoff_service_s=drop_min * 60.0,
        target_c2d_s=target_min * 60.0,
        max_c2d_s=max_min * 60.0,
        pay_per_order=ppo,
        guaranteed_pay_per_hour=gpph,
        meters_per_minute=mpm,
    )

    restaurants: dict[str, Place] = {}
    rp = d / "restaurants.txt"
    for n, (rid, x, y) in _rows(rp):
        if rid in restaurants:
            raise ScenarioError(f"{rp}:{n}: duplicate restaurant {rid}")
        if rid == START_ID:
            raise ScenarioError(f"{rp}:{n}: restaurant id {START_ID} is reserved for starts")
        restaurants[rid] = Place((_num(x, rp, n, "x"), _num(y, rp, n, "y")), rid)

    orders: list[Order] = []
    restaurant_of: dict[str, str] = {}
    op = d / "orders.txt"
    for n, (oid, x, y, placed, rid, ready) in _rows(op):
        if rid not in restaurants:
            raise ScenarioError(f"{op}:{n}: order {oid}: unknown restaurant {rid}")
        if oid in restaurant_of or oid in restaurants or oid == START_ID:
            raise ScenarioError(f"{op}:{n}: order id {oid} repeats or clashes with a place id")
        placed_s = _num(placed, op, n, "placement_time") * 60.0
        try:
            order = Order(
                id=oid,
                pickup=restaurants[rid],
                dropoff=Place((_num(x, op, n, "x"), _num(y, op, n, "y")), oid),
                placed_at=placed_s,
                ready_at=_num(ready, op, n, "ready_time") * 60.0,
                promised_by=placed_s + params.target_c2d_s,
                latest_by=placed_s + max(params.max_c2d_s, params.target_c2d_s),
                pickup_service_s=params.pickup_service_s,
                dropoff_service_s=params.dropoff_service_s,
            )
        except DispatchError as e:
            raise ScenarioError(f"{op}:{n}: {e}") from e
        orders.append(order)
        restaurant_of[oid] = rid

    couriers: list[Courier] = []
    cp = d / "couriers.txt"
    seen: set[str] = set()
    for n, (cid, x, y, on, off) in _rows(cp):
        if cid in seen:
            raise ScenarioError(f"{cp}:{n}: duplicate courier {cid}")
        seen.add(cid)
        on_s, off_s = _num(on, cp, n, "on_time") * 60.0, _num(off, cp, n, "off_time") * 60.0
        try:
            couriers.append(
                Courier(
                    id=cid,
                    position=Place((_num(x, cp, n, "x"), _num(y, cp, n, "y")), START_ID),
                    position_t=on_s,
                    shift_start=on_s,
                    shift_end=off_s,
                    capacity=capacity,
                    on_shift=False,
                )
            )
        except DispatchError as e:
            raise ScenarioError(f"{cp}:{n}: {e}") from e

    orders.sort(key=lambda o: (o.placed_at, o.id))
    couriers.sort(key=lambda c: (c.shift_start, c.id))
    return Scenario(
        name=d.name,
        orders=tuple(orders),
        couriers=tuple(couriers),
        restaurants=restaurants,
        restaurant_of=restaurant_of,
        params=params,
        travel=PlanarEuclideanModel(mpm),
        kind="mdrp",
        source=d,
    )

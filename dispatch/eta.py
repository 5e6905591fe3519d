"""Route timing: when a courier reaches, serves and leaves each stop.

The one place that turns a sequence of (order, pickup|dropoff) visits into times, used
by the dispatcher for ETAs after every re-plan and courier movement, and by the
insertion heuristic to check a candidate route. Rules: travel by the travel-time model
(scaled by the courier's speed factor), wait at a pickup until the order is ready,
spend the order's service time at each stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dispatch.model import Courier, Order, Place, Stop, StopKind
from geo.travel import TravelTimeModel, path_durations

Visit = tuple[Order, StopKind]


@dataclass(frozen=True, slots=True)
class RouteCheck:
    """Feasibility and cost of a timed route (seconds)."""

    stops: tuple[Stop, ...]
    feasible: bool
    reason: str | None
    lateness_s: float
    travel_s: float
    waiting_s: float

    @property
    def end(self) -> float:
        return self.stops[-1].departure if self.stops else 0.0


def leg_durations(
    travel: TravelTimeModel, points: Sequence[tuple[float, float]], speed_factor: float = 1.0
) -> list[float]:
    """Durations (s) of the legs between consecutive ``points`` (len(points) - 1 values)."""
    legs = path_durations(travel, points)
    return legs if speed_factor == 1.0 else [leg * speed_factor for leg in legs]


def time_route(
    courier: Courier,
    visits: Sequence[Visit],
    start: Place,
    start_time: float,
    travel: TravelTimeModel,
    legs: npt.NDArray[np.float64] | Sequence[float] | None = None,
    build_stops: bool = True,
) -> RouteCheck:
    """Time ``visits`` for ``courier`` leaving ``start`` at ``start_time``.

    Checks what a route must respect: capacity along the way (orders on board count
    from the start), each order's drop-off after its pickup, no pickup after the shift
    ends, drop-offs before ``latest_by``. Lateness is the sum over drop-offs of the time
    past ``promised_by``. ``legs`` may pass precomputed leg durations; with
    ``build_stops=False`` only feasibility and costs are computed (the insertion search
    times hundreds of candidates and needs no stop objects for them).
    """
    if legs is None:
        legs = leg_durations(
            travel,
            [
                start.point,
                *(o.pickup.point if k == "pickup" else o.dropoff.point for o, k in visits),
            ],
            courier.speed_factor,
        )
    load = _on_board_load(courier, visits)
    t = start_time
    stops: list[Stop] = []
    picked: set[str] = set(courier.on_board)
    reason: str | None = None
    lateness = travel_s = waiting = 0.0
    for i, (order, kind) in enumerate(visits):
        leg = float(legs[i])
        travel_s += leg
        arrival = t + leg
        if kind == "pickup":
            begin = max(arrival, order.ready_at)
            waiting += begin - arrival
            if reason is None and begin > courier.shift_end:
                reason = "shift_end"
            load += order.size
            if reason is None and load > courier.capacity:
                reason = "capacity"
            picked.add(order.id)
            depart = begin + order.pickup_service_s
            place = order.pickup
        else:
            begin = arrival
            if reason is None and order.id not in picked:
                reason = "dropoff_before_pickup"
            load -= order.size
            lateness += max(0.0, begin - order.promised_by)
            if reason is None and order.latest_by is not None and begin > order.latest_by:
                reason = "latest"
            depart = begin + order.dropoff_service_s
            place = order.dropoff
        if build_stops:
            stops.append(Stop(order.id, kind, place, arrival, begin, depart))
        t = depart
    return RouteCheck(tuple(stops), reason is None, reason, lateness, travel_s, waiting)


def _on_board_load(courier: Courier, visits: Sequence[Visit]) -> int:
    """Load at the start: sizes of on-board orders (found among the visits)."""
    on_board = set(courier.on_board)
    return sum(o.size for o, k in visits if k == "dropoff" and o.id in on_board)

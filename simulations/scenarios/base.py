"""What the simulator replays: a :class:`Scenario` (orders, couriers, restaurants, rules).

A scenario is immutable once built; every reader or generator (``mdrp.py`` now, the
generated city later) produces one. Times are **seconds** from the start of the day (MDRP
minutes x 60), distances metres, points in the travel model's coordinates (planar metres
for MDRP). Orders and couriers are the dispatch domain types, in their initial state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dispatch.model import Courier, Order, Place
from geo.travel import TravelTimeModel

__all__ = ["Parameters", "Scenario", "ScenarioError"]


class ScenarioError(ValueError):
    """A scenario that cannot be read or built; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Parameters:
    """The operating rules of a scenario (the MDRP ``instance_parameters.txt``).

    Service times and click-to-door limits are seconds; pay is in currency units per
    order and per duty hour. A courier is paid ``max(pay_per_order x delivered,
    guaranteed_pay_per_hour x duty hours)``.
    """

    pickup_service_s: float = 240.0
    dropoff_service_s: float = 240.0
    target_c2d_s: float = 2400.0
    max_c2d_s: float = 5400.0
    pay_per_order: float = 10.0
    guaranteed_pay_per_hour: float = 15.0
    meters_per_minute: float | None = None
    """Travel speed of the MDRP rule, when the scenario uses it (informative)."""


@dataclass(frozen=True)
class Scenario:
    """One day to replay.

    ``orders`` are sorted by (placement, id), ``couriers`` by (shift start, id), both in
    status "placed" / at their start place. ``restaurants`` maps id to place (the place's
    ``id`` is the restaurant id). ``travel`` gives travel seconds between points.
    """

    name: str
    orders: tuple[Order, ...]
    couriers: tuple[Courier, ...]
    restaurants: Mapping[str, Place]
    restaurant_of: Mapping[str, str]
    """order id -> restaurant id."""
    params: Parameters
    travel: TravelTimeModel
    kind: str = "mdrp"
    source: Path | None = None
    order_index: Mapping[str, Order] = field(init=False, repr=False)
    courier_index: Mapping[str, Courier] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "order_index", {o.id: o for o in self.orders})
        object.__setattr__(self, "courier_index", {c.id: c for c in self.couriers})
        if len(self.order_index) != len(self.orders):
            raise ScenarioError(f"{self.name}: duplicate order ids")
        if len(self.courier_index) != len(self.couriers):
            raise ScenarioError(f"{self.name}: duplicate courier ids")
        for o in self.orders:
            rid = self.restaurant_of.get(o.id)
            if rid is None or rid not in self.restaurants:
                raise ScenarioError(f"{self.name}: order {o.id} has no known restaurant")

    @property
    def horizon_s(self) -> float:
        """Last moment anything can be picked up: the latest shift end (seconds)."""
        return max((c.shift_end for c in self.couriers), default=0.0)

"""The rolling-horizon dispatcher on small cases where the right answer is known."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch.dispatcher import (
    DelayPredicted,
    Dispatcher,
    DispatchSettings,
    EtaChanged,
    OrderAssigned,
    RouteChanged,
)
from dispatch.model import Courier, DispatchError, IllegalTransition, Order, Place, UnknownId
from geo.travel import PlanarEuclideanModel

# 300 m/min = 5 m/s, unrounded: 1 km takes 200 s.
TRAVEL = PlanarEuclideanModel(meters_per_minute=300.0, round_up_minutes=False)


def courier(cid: str, x: float, y: float = 0.0, **kw: object) -> Courier:
    base: dict[str, object] = dict(
        position=Place((x, y)), position_t=0.0, shift_start=0.0, shift_end=10_000.0, capacity=3
    )
    base.update(kw)
    return Courier(cid, **base)  # type: ignore[arg-type]


def order(
    oid: str,
    px: float,
    dx: float,
    *,
    ready: float = 0.0,
    promise: float = 3_000.0,
    placed: float = 0.0,
    **kw: Any,
) -> Order:
    return Order(
        oid,
        Place((px, 0.0), f"r-{oid}"),
        Place((dx, 0.0)),
        placed_at=placed,
        ready_at=ready,
        promised_by=promise,
        **kw,
    )


def make(*couriers: Courier, **settings: object) -> Dispatcher:
    d = Dispatcher(TRAVEL, DispatchSettings(**settings))  # type: ignore[arg-type]
    for c in couriers:
        d.start_shift(c)
    return d


def test_new_order_goes_to_the_nearest_courier_with_exact_etas() -> None:
    d = make(courier("near", 1000.0), courier("far", 5000.0))
    events = d.place_order(order("o1", 0.0, -1000.0, ready=100.0, pickup_service_s=60.0))
    assert any(isinstance(e, OrderAssigned) and e.courier_id == "near" for e in events)
    assert any(isinstance(e, RouteChanged) and e.courier_id == "near" for e in events)
    assert d.order("o1").status == "assigned"
    pickup, dropoff = d.etas("o1")
    assert pickup == pytest.approx(200.0)  # 1 km at 5 m/s; ready at 100 already passed
    assert dropoff == pytest.approx(200.0 + 60.0 + 200.0)
    eta = [e for e in events if isinstance(e, EtaChanged)]
    assert eta and eta[-1].dropoff_eta == pytest.approx(460.0)


def test_pickup_waits_for_ready_time() -> None:
    d = make(courier("c", 0.0))
    d.place_order(order("o1", 100.0, 200.0, ready=900.0))
    pickup, dropoff = d.etas("o1")
    assert pickup == pytest.approx(900.0)
    assert dropoff == pytest.approx(920.0)


def test_capacity_is_never_exceeded_along_a_route() -> None:
    d = make(courier("c", 0.0, capacity=1))
    d.place_order(order("o1", 100.0, 1000.0))
    d.place_order(order("o2", 100.0, 1000.0))
    kinds = [(s.order_id, s.kind) for s in d.plan.routes["c"].stops]
    assert len(kinds) == 4
    on_board = 0
    for _oid, kind in kinds:
        on_board += 1 if kind == "pickup" else -1
        assert on_board <= 1


def test_no_pickup_after_the_shift_ends() -> None:
    d = make(courier("leaving", 0.0, shift_end=500.0), courier("staying", 3000.0))
    d.place_order(order("o1", 100.0, 200.0, ready=800.0))
    assert d.order("o1").courier_id == "staying"


def test_order_nobody_can_take_is_reported_not_lost() -> None:
    d = make(courier("c", 0.0, shift_end=100.0))
    events = d.place_order(order("o1", 100.0, 200.0, ready=800.0))
    assert d.order("o1").status == "placed"
    assert d.plan.unassigned["o1"] == "no_feasible_courier"
    assert any(e.__class__.__name__ == "OrderUnassigned" for e in events)


def test_self_pickup_gets_a_ready_time_eta_and_no_courier() -> None:
    d = make(courier("c", 0.0))
    events = d.place_order(order("o1", 100.0, 100.0, ready=600.0, mode="self_pickup"))
    assert d.order("o1").courier_id is None
    assert d.etas("o1") == (600.0, None)
    assert events == [EtaChanged("o1", 600.0, None, 0.0)]
    d.delivered("o1", None, 700.0)
    assert d.order("o1").status == "delivered"


def test_delay_is_announced_once_then_only_when_it_grows() -> None:
    d = make(courier("c", 10_000.0), delay_growth_s=300.0)
    events = d.place_order(order("o1", 0.0, 100.0, promise=1000.0))
    delays = [e for e in events if isinstance(e, DelayPredicted)]
    assert len(delays) == 1 and delays[0].delay_s == pytest.approx(2020.0 - 1000.0)
    # Slightly slower: no new announcement.
    events = d.courier_moved("c", Place((10_200.0, 0.0)), at=0.0)
    assert not [e for e in events if isinstance(e, DelayPredicted)]
    # Much slower (the courier drove away): announced again.
    events = d.courier_moved("c", Place((12_000.0, 0.0)), at=1.0)
    assert [e for e in events if isinstance(e, DelayPredicted)]


def test_status_life_cycle_and_bad_input() -> None:
    d = make(courier("a", 0.0), courier("b", 50_000.0))
    d.place_order(order("o1", 100.0, 200.0))
    assert d.order("o1").courier_id == "a"
    with pytest.raises(DispatchError) as e:
        d.picked_up("o1", "b", 10.0)
    assert e.value.reason == "wrong_courier"
    with pytest.raises(IllegalTransition):
        d.delivered("o1", "a", 10.0)  # not picked up yet
    with pytest.raises(UnknownId):
        d.picked_up("nope", "a", 10.0)
    with pytest.raises(UnknownId):
        d.courier_moved("ghost", Place((0.0, 0.0)), 10.0)
    with pytest.raises(DispatchError):
        d.place_order(order("o1", 0.0, 0.0))  # duplicate id
    d.picked_up("o1", "a", 30.0)
    assert d.courier("a").on_board == ("o1",)
    assert [s.kind for s in d.plan.routes["a"].stops] == ["dropoff"]
    d.delivered("o1", "a", 60.0)
    assert d.order("o1").status == "delivered" and d.courier("a").on_board == ()
    assert d.plan.routes["a"].stops == ()


def test_cancel_removes_the_order_from_its_route() -> None:
    d = make(courier("a", 0.0))
    d.place_order(order("o1", 100.0, 200.0))
    d.place_order(order("o2", 150.0, 250.0))
    d.cancel_order("o1", 5.0)
    assert d.order("o1").status == "cancelled"
    assert {s.order_id for s in d.plan.routes["a"].stops} == {"o2"}


def test_position_fixes_keep_the_plan_whole() -> None:
    """A fix re-times only its courier's route; the plan keeps every other route and the
    orders nobody serves (a fix no longer rescans all orders for them)."""
    d = make(courier("a", 0.0), courier("b", 8000.0), courier("gone", 0.0, shift_end=100.0))
    d.place_order(order("o1", 100.0, 200.0))
    d.place_order(order("o2", 8100.0, 8200.0))
    d.end_shift("gone", 50.0)
    d.place_order(order("late", 100.0, 200.0, ready=20_000.0, promise=21_000.0))
    before = d.plan
    events = d.courier_moved("a", Place((50.0, 0.0)), 60.0)
    assert d.plan.unassigned == before.unassigned
    assert "late" in d.plan.unassigned
    assert d.plan.routes["b"] == before.routes["b"]
    pickup = d.plan.routes["a"].stops[0]
    assert pickup.order_id == "o1" and pickup.arrival == pytest.approx(60.0 + 50.0 / 5.0)
    assert any(isinstance(e, EtaChanged) and e.order_id == "o1" for e in events)
    d.cancel_order("o1", 70.0)
    d.courier_moved("a", Place((60.0, 0.0)), 80.0)
    assert "o1" not in d.plan.unassigned and d.plan.routes["a"].stops == ()


def test_end_of_shift_returns_unpicked_orders_to_the_pool() -> None:
    d = make(courier("a", 0.0), courier("b", 8000.0))
    d.place_order(order("o1", 100.0, 200.0))
    d.place_order(order("o2", 120.0, 220.0))
    d.picked_up("o1", "a", 20.0)
    d.end_shift("a", 30.0)
    assert d.order("o1").courier_id == "a"  # on board: a still delivers it
    assert d.order("o2").courier_id == "b"  # re-inserted with the other courier
    assert [s.order_id for s in d.plan.routes["a"].stops] == ["o1"]


def test_pruned_insertion_finds_the_brute_force_optimum() -> None:
    """The travel lower bound may skip candidates, never the cheapest feasible one."""
    import numpy as np

    from dispatch.eta import Visit, time_route

    rng = np.random.default_rng(4)
    for trial in range(15):
        d = make(
            *(courier(f"c{i}", float(rng.uniform(-4000, 4000)), capacity=2) for i in range(4)),
            insertion_candidates=4,
        )
        for k in range(8):
            x = float(rng.uniform(-4000, 4000))
            d.place_order(
                order(
                    f"t{trial}o{k}",
                    x,
                    x + float(rng.uniform(-900, 900)),
                    ready=float(rng.uniform(0, 900)),
                    promise=float(rng.uniform(900, 2400)),
                )
            )
        new = order(
            "new",
            float(rng.uniform(-4000, 4000)),
            float(rng.uniform(-4000, 4000)),
            ready=300.0,
            promise=1500.0,
        )

        def cost(cid: str, visits: list[Visit], d: Dispatcher = d) -> float:
            c = d.courier(cid)
            r = time_route(c, visits, c.position, 0.0, TRAVEL)
            return r.travel_s + 3 * r.lateness_s if r.feasible else float("inf")

        brute = float("inf")
        for cid, current in d.visits.items():
            base = cost(cid, current)
            first = 1 if current else 0
            for i in range(first, len(current) + 1):
                for j in range(i, len(current) + 1):
                    cand = [
                        *current[:i],
                        (new, "pickup"),
                        *current[i:j],
                        (new, "dropoff"),
                        *current[j:],
                    ]
                    brute = min(brute, cost(cid, cand) - base)
        found = d.best_insertion(new)
        assert found is not None
        cid, visits = found
        assert cost(cid, visits) - cost(cid, d.visits[cid]) == pytest.approx(brute)

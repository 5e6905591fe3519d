"""Full re-plans with OR-Tools: improvement, stability, frozen stops, invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.dispatcher import DelayPredicted, Dispatcher, DispatchSettings, OrderAssigned
from dispatch.model import Courier, Order, Place
from tests.dispatch.test_dispatcher import TRAVEL, courier, make, order

FAST = dict(solve_time_limit_s=2.0, solution_limit=200, replan_every_s=60.0)


def total_travel(d: Dispatcher) -> float:
    return sum(d._time(d.courier(c), v).travel_s for c, v in d.visits.items())


def test_replan_never_worse_than_insertion_and_keeps_every_order() -> None:
    d = make(courier("a", 0.0), courier("b", 6000.0), **FAST)
    xs = [5000.0, 200.0, 5600.0, 800.0, 3000.0, 3300.0]
    for i, x in enumerate(xs):
        d.place_order(order(f"o{i}", x, x + 300.0, promise=20_000.0))
    before = total_travel(d)
    d.tick(60.0)
    assert d.stats.replans == 1
    assert total_travel(d) <= before + 1e-6
    planned = [s.order_id for r in d.plan.routes.values() for s in r.stops if s.kind == "pickup"]
    assert sorted(planned) == sorted(f"o{i}" for i in range(len(xs)))


def test_second_replan_without_news_changes_no_assignment() -> None:
    d = make(courier("a", 0.0), courier("b", 6000.0), **FAST)
    for i, x in enumerate([1000.0, 5000.0, 2000.0, 4500.0]):
        d.place_order(order(f"o{i}", x, x + 200.0))
    d.tick(60.0)
    events = d.tick(120.0)
    assert not [e for e in events if isinstance(e, OrderAssigned)]


def test_on_board_orders_stay_with_their_courier() -> None:
    d = make(courier("a", 0.0), courier("b", 100.0), **FAST)
    d.place_order(order("o1", 50.0, 9000.0))
    carrier = d.order("o1").courier_id
    assert carrier is not None
    d.picked_up("o1", carrier, 10.0)
    other = "b" if carrier == "a" else "a"
    # Move the carrier far away: any other courier would now be "better", but the food
    # is in the carrier's bag.
    d.courier_moved(carrier, Place((-20_000.0, 0.0)), 20.0)
    d.courier_moved(other, Place((8_900.0, 0.0)), 20.0)
    d.tick(100.0)
    assert d.order("o1").courier_id == carrier
    assert [s.order_id for s in d.plan.routes[carrier].stops] == ["o1"]


def test_next_stop_is_frozen_across_a_replan() -> None:
    d = make(courier("a", 0.0), **FAST)
    d.place_order(order("far", 4000.0, 4100.0))
    d.place_order(order("near", 100.0, 150.0))
    first = d.plan.routes["a"].stops[0]
    assert (first.order_id, first.kind) == ("far", "pickup")
    d.tick(60.0)
    now_first = d.plan.routes["a"].stops[0]
    assert (now_first.order_id, now_first.kind) == ("far", "pickup")
    # Without the freeze the optimiser would serve the near order first.
    d2 = make(courier("a", 0.0), freeze_next_stop=False, **FAST)
    d2.place_order(order("far", 4000.0, 4100.0))
    d2.place_order(order("near", 100.0, 150.0))
    d2.tick(60.0)
    assert d2.plan.routes["a"].stops[0].order_id == "near"


def test_replans_are_deterministic_with_a_work_limit() -> None:
    def run() -> list[tuple[str, tuple[tuple[str, str], ...]]]:
        d = make(courier("a", 0.0), courier("b", 3000.0), courier("c", -3000.0), **FAST)
        for i in range(9):
            x = (i * 1373.0) % 7000.0 - 3500.0
            d.place_order(order(f"o{i}", x, -x, placed=float(i)))
        d.tick(100.0)
        return [
            (c, tuple((s.order_id, s.kind) for s in r.stops))
            for c, r in sorted(d.plan.routes.items())
        ]

    assert run() == run()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["place", "pickup", "deliver", "cancel", "tick", "shift_end", "move"]),
            st.integers(0, 30),
            st.floats(-3000, 3000),
        ),
        min_size=5,
        max_size=40,
    )
)
def test_random_event_sequences_keep_the_plan_invariants(
    steps: list[tuple[str, int, float]],
) -> None:
    d = Dispatcher(
        TRAVEL, DispatchSettings(solve_time_limit_s=1.0, solution_limit=50, replan_every_s=120.0)
    )
    for i, x in enumerate((-2000.0, 0.0, 2500.0)):
        d.start_shift(Courier(f"c{i}", Place((x, 0.0)), 0.0, 0.0, 4000.0, capacity=2))
    t = 0.0
    n = 0
    for action, k, x in steps:
        t += 30.0
        opens = [o for o in d.orders.values() if o.is_open]
        if action == "place" or not opens:
            d.place_order(
                Order(f"o{n}", Place((x, 100.0)), Place((-x, 50.0)), t, t + 60.0, t + 1800.0)
            )
            n += 1
        elif action == "pickup":
            o = opens[k % len(opens)]
            if o.status == "assigned" and o.courier_id in d.couriers:
                d.picked_up(o.id, o.courier_id, t)
        elif action == "deliver":
            o = opens[k % len(opens)]
            if o.status == "picked_up":
                d.delivered(o.id, o.courier_id, t)
        elif action == "cancel":
            d.cancel_order(opens[k % len(opens)].id, t)
        elif action == "shift_end":
            cid = f"c{k % 3}"
            if d.courier(cid).on_shift and k % 5 == 0:
                d.end_shift(cid, t)
        elif action == "move":
            cid = f"c{k % 3}"
            d.courier_moved(cid, Place((x, 0.0)), t)
        else:
            d.tick(t)
        # Invariants after every event.
        seen: dict[str, str] = {}
        for cid, route in d.plan.routes.items():
            c = d.courier(cid)
            for s in route.stops:
                assert (s.order_id, s.kind) not in {(o, k2) for o, k2 in seen.items()}
                if s.kind == "pickup":
                    assert s.start <= c.shift_end + 1e-6
                    assert d.order(s.order_id).status in ("placed", "assigned")
            ids = {s.order_id for s in route.stops}
            for oid in ids:
                assert oid not in seen, f"{oid} on two routes"
                seen[oid] = cid
            for oid in c.on_board:
                assert oid in ids, "on-board order missing from its courier's route"
        for o in d.orders.values():
            if o.is_open and o.needs_courier:
                on_route = o.id in seen
                assert on_route != (o.id in d.plan.unassigned), o
                if o.status in ("assigned", "picked_up"):
                    assert seen.get(o.id) == o.courier_id


def test_snapshot_gets_a_feasible_plan_at_once_and_replan_improves_it() -> None:
    d = Dispatcher(TRAVEL, DispatchSettings(**FAST))  # type: ignore[arg-type]
    couriers = [courier(f"c{i}", i * 1500.0 - 3000.0) for i in range(5)]
    couriers[0] = Courier("c0", Place((-3000.0, 0.0)), 0.0, 0.0, 10_000.0, on_board=("ob",))
    orders = [
        order(f"o{i}", (i * 977.0) % 6000 - 3000, (i * 431.0) % 6000 - 3000, ready=float(i * 20))
        for i in range(30)
    ]
    carried = Order(
        "ob",
        Place((0.0, 0.0)),
        Place((-2500.0, 0.0)),
        0.0,
        0.0,
        900.0,
        status="picked_up",
        courier_id="c0",
    )
    d.load_snapshot(couriers, [*orders, carried])
    planned = {s.order_id for r in d.plan.routes.values() for s in r.stops}
    assert planned | set(d.plan.unassigned) == {o.id for o in orders} | {"ob"}
    assert "ob" in {s.order_id for s in d.plan.routes["c0"].stops}
    before = total_travel(d)
    d.replan()
    assert total_travel(d) <= before
    assert d.order("ob").courier_id == "c0"


def _two_towns(**kw: object) -> Dispatcher:
    """Two couriers in each of two towns 100 km apart: two groups of two."""
    d = make(
        courier("w1", 0.0),
        courier("w2", 500.0),
        courier("e1", 100_000.0),
        courier("e2", 100_500.0),
        max_couriers_per_solve=2,
        **{**FAST, **kw},
    )
    for i, x in enumerate([200.0, 100_200.0, 400.0, 100_400.0]):
        d.place_order(order(f"o{i}", x, x + 300.0, promise=20_000.0))
    return d


def test_replan_solves_only_the_groups_where_something_happened() -> None:
    d = _two_towns()
    d.tick(60.0)  # the first re-plan is a full one
    assert (d.stats.groups_solved, d.stats.groups_skipped) == (2, 0)
    d.courier_moved("w1", Place((50.0, 0.0)), 90.0)  # moving along is no news
    d.tick(120.0)
    assert (d.stats.groups_solved, d.stats.groups_skipped) == (2, 2)
    d.place_order(order("new", 100_300.0, 100_600.0, placed=130.0, promise=20_000.0))
    d.tick(180.0)  # only the eastern group has news
    assert (d.stats.groups_solved, d.stats.groups_skipped) == (3, 3)
    assert d.order("new").courier_id in ("e1", "e2")
    busy = d.order("o0").courier_id
    assert busy in ("w1", "w2")
    d.end_shift(busy, 200.0)  # its order goes to the other western courier
    d.tick(240.0)
    assert (d.stats.groups_solved, d.stats.groups_skipped) == (4, 4)
    assert d.stats.replans == 4


def test_whole_city_is_replanned_at_the_full_cadence_or_always_with_zero() -> None:
    d = _two_towns(full_replan_every_s=150.0)
    d.tick(60.0)
    d.tick(120.0)
    assert (d.stats.groups_solved, d.stats.groups_skipped) == (2, 2)
    d.tick(210.0)  # 150 s since the last full re-plan
    assert (d.stats.groups_solved, d.stats.groups_skipped) == (4, 2)
    always = _two_towns(full_replan_every_s=0.0)
    for t in (60.0, 120.0, 180.0):
        always.tick(t)
    assert (always.stats.groups_solved, always.stats.groups_skipped) == (6, 0)


def test_late_and_unplaced_orders_keep_their_group_in_the_next_replan() -> None:
    d = _two_towns()
    d.tick(60.0)
    # An order no courier can carry (bigger than any bag): unplanned, so its group is
    # solved again at every re-plan, trying to place it.
    d.place_order(order("lost", 200.0, 300.0, placed=70.0, size=5))
    assert "lost" in d.plan.unassigned
    d.tick(120.0)
    d.tick(180.0)
    assert (d.stats.groups_solved, d.stats.groups_skipped) == (4, 2)
    # A drop-off predicted past its promise (a delay announcement) is news too.
    late = _two_towns(delay_threshold_s=0.0)
    late.tick(60.0)
    carrier = late.order("o1").courier_id  # an eastern order
    assert carrier in ("e1", "e2")
    events = late.courier_moved(carrier, Place((300_000.0, 0.0)), 70.0)  # 200 km off
    assert any(isinstance(e, DelayPredicted) for e in events)
    late.tick(120.0)
    assert (late.stats.groups_solved, late.stats.groups_skipped) == (3, 1)


def test_a_replan_out_of_time_leaves_the_other_groups_to_the_next_one() -> None:
    # No work limit: the re-plan is bounded by its time budget, which one group's solve
    # uses up (each is given at least MIN_GROUP_SEARCH_S, capped by the budget).
    d = _two_towns(solution_limit=None, solve_time_limit_s=0.05)
    d.tick(60.0)  # full: one group solved, the other deferred
    assert (d.stats.groups_solved, d.stats.groups_deferred) == (1, 1)
    d.tick(120.0)  # the deferred one comes first now; the solved one has no news
    assert (d.stats.groups_solved, d.stats.groups_skipped, d.stats.groups_deferred) == (2, 1, 1)
    d.tick(180.0)
    assert (d.stats.groups_solved, d.stats.groups_skipped) == (2, 3)

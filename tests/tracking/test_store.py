"""StateStore contract, run against both backends (memory and a private redis-server)."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import replace

import pytest

from dispatch.model import IllegalTransition, Order
from geo.coords import haversine_m
from tests.tracking.conftest import (
    BERLIN,
    MakeStore,
    courier,
    estimate,
    offset,
    order,
    placed,
    plan,
    run,
)
from tracking import (
    BadInput,
    Conflict,
    Event,
    NotFound,
    courier_topic,
    order_topic,
)


def test_orders_crud_and_open_index(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        orders = [order(i) for i in range(5)]
        for o in orders:
            await store.put_order(o)
        assert await store.get_order("o3") == orders[3]
        assert await store.list_orders() == orders
        done = orders[1].transition("cancelled", 300.0)
        await store.put_order(done)
        assert await store.get_order("o1") == done
        assert [o.id for o in await store.list_orders(open_only=True)] == ["o0", "o2", "o3", "o4"]
        assert len(await store.list_orders()) == 5
        await store.aclose()

    run(main())


def test_unknown_ids_raise_typed_not_found(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        with pytest.raises(NotFound) as info:
            await store.get_order("nope")
        assert (info.value.kind, info.value.id, info.value.reason) == ("order", "nope", "not_found")
        with pytest.raises(NotFound, match="courier"):
            await store.get_courier("nope")
        with pytest.raises(NotFound, match="position"):
            await store.get_position("nope")
        with pytest.raises(NotFound):
            await store.update_order("nope", lambda o: o)
        assert await store.get_plan() is None
        assert await store.get_route("c1") is None
        with pytest.raises(BadInput):
            await store.get_order("")
        await store.aclose()

    run(main())


def test_couriers_crud(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        cs = [courier(i, on_board=(f"o{i}",)) for i in (2, 1, 3)]
        for c in cs:
            await store.put_courier(c)
        assert await store.get_courier("c1") == cs[1]
        assert [c.id for c in await store.list_couriers()] == ["c1", "c2", "c3"]
        off = replace(cs[0], on_shift=False)
        await store.put_courier(off)
        assert await store.get_courier("c2") == off
        await store.aclose()

    run(main())


def test_positions_round_trip_and_replace(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        first, later = estimate(52.52, 13.40, t=10.0), estimate(52.53, 13.41, t=20.0)
        assert await store.put_position("c1", first) is None  # nothing replaced
        assert await store.get_position("c1") == first
        assert await store.put_position("c1", later) == 10.0  # the t it replaced
        got = await store.get_position("c1")
        assert got == later and got.extra == later.extra
        await store.remove_position("c1")
        with pytest.raises(NotFound):
            await store.get_position("c1")
        assert await store.put_position("c1", first) is None
        await store.remove_position("c1")
        assert await store.couriers_near(52.53, 13.41, 1_000.0) == []
        for lat, lon in ((0.0, 0.0), (89.0, 10.0), (float("nan"), 1.0)):
            with pytest.raises(BadInput):
                await store.put_position("c1", replace(estimate(52.5, 13.4), lat=lat, lon=lon))
        await store.aclose()

    run(main())


def test_routes_updated_one_by_one(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        base = plan(500.0, ("c1", "c2", "c3"))
        later = plan(600.0, ("c2", "c1"))  # each courier gets the other's stops
        assert later.routes["c2"] != base.routes["c2"]
        await store.put_routes({"c1": later.routes["c1"]})  # before any plan: one is made
        assert await store.get_route("c1") == later.routes["c1"]
        await store.put_plan(base)
        await store.put_routes({"c2": later.routes["c2"], "c3": None})
        got = await store.get_plan()
        assert got is not None and got.created_at == base.created_at
        assert got.unassigned == base.unassigned
        assert got.routes == {"c1": base.routes["c1"], "c2": later.routes["c2"]}
        assert await store.get_route("c3") is None
        with pytest.raises(BadInput):  # a route filed under another courier
            await store.put_routes({"c1": later.routes["c2"]})
        assert await store.get_route("c1") == base.routes["c1"]  # nothing applied
        await store.aclose()

    run(main())


def test_plan_replaced_as_a_whole(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        first = plan(500.0, ("c1", "c2", "c3"))
        await store.put_plan(first)
        assert await store.get_plan() == first
        assert await store.get_route("c2") == first.routes["c2"]
        second = plan(600.0, ("c1",))
        await store.put_plan(second)
        assert await store.get_plan() == second
        assert await store.get_route("c2") is None  # no stale route from the old plan
        assert await store.get_route("c1") == second.routes["c1"]
        await store.aclose()

    run(main())


def test_idempotent_create_returns_the_first_order(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        o = order(1)
        assert await store.put_order_idempotent("key-1", o, events=[placed(o)]) == (o, True)
        # A retried POST with a fresh server-side id names the same key: same order back.
        retry = order(2)
        assert await store.put_order_idempotent("key-1", retry, events=[placed(retry)]) == (
            o,
            False,
        )
        with pytest.raises(NotFound):
            await store.get_order("o2")
        assert len(await store.events.read_after()) == 1  # the retry appended nothing
        # The stored order in its *current* state comes back.
        assigned = o.transition("assigned", 200.0, "c1")
        await store.put_order(assigned)
        assert (await store.put_order_idempotent("key-1", o))[0] == assigned
        # The same order id under another key is a conflict, not a second order.
        with pytest.raises(Conflict):
            await store.put_order_idempotent("key-2", o)
        with pytest.raises(BadInput):
            await store.put_order_idempotent("", o)
        await store.aclose()

    run(main())


def test_concurrent_idempotent_creates_make_exactly_one(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        # Every task tries to create its own order under one key, as retried POSTs do.
        attempts = [order(i) for i in range(20)]
        results = await asyncio.gather(
            *(store.put_order_idempotent("same-key", o, events=[placed(o)]) for o in attempts)
        )
        created = [o for o, was_created in results if was_created]
        assert len(created) == 1
        assert {o.id for o, _ in results} == {created[0].id}
        assert [o.id for o in await store.list_orders()] == [created[0].id]
        evs = await store.events.read_after()
        assert [e.payload["order"] for e in evs] == [created[0].id]
        # Distinct keys all succeed, concurrently.
        more = [order(f"x{i}") for i in range(10)]
        results = await asyncio.gather(
            *(store.put_order_idempotent(f"k{i}", o) for i, o in enumerate(more))
        )
        assert all(c for _, c in results)
        await store.aclose()

    run(main())


def test_update_order_is_atomic_under_concurrency(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        await store.put_order(order(1, size=0))

        def bump(o: Order) -> Order:
            return replace(o, size=o.size + 1)

        def ev(old: Order, new: Order) -> list[Event]:
            return [Event("eta_updated", (order_topic(new.id),), {"size": new.size}, 1.0)]

        await asyncio.gather(*(store.update_order("o1", bump, events=ev) for _ in range(25)))
        assert (await store.get_order("o1")).size == 25  # no lost update
        sizes = [e.payload["size"] for e in await store.events.read_after(topics=["order:o1"])]
        assert sorted(sizes) == list(range(1, 26))  # one event per committed update
        await store.aclose()

    run(main())


def test_update_order_transition_and_refusal(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        o = order(1)
        await store.put_order(o)

        def assigned_events(old: Order, new: Order) -> list[Event]:
            return [
                Event(
                    "order_assigned",
                    (order_topic(new.id), courier_topic(new.courier_id or "")),
                    {"order": new.id, "courier": new.courier_id, "from": old.status},
                    200.0,
                )
            ]

        new = await store.update_order(
            "o1", lambda x: x.transition("assigned", 200.0, "c7"), events=assigned_events
        )
        assert new.status == "assigned" and await store.get_order("o1") == new
        (ev,) = await store.events.read_after(topics=["courier:c7"])
        assert ev.payload == {"order": "o1", "courier": "c7", "from": "placed"}
        before = await store.events.last_id()
        # An illegal change raises and writes nothing (neither state nor events).
        with pytest.raises(IllegalTransition):
            await store.update_order("o1", lambda x: x.transition("delivered", 300.0))
        assert await store.get_order("o1") == new
        assert await store.events.last_id() == before
        with pytest.raises(BadInput, match="turned order o1 into o2"):
            await store.update_order("o1", lambda x: replace(x, id="o2"))
        await store.aclose()

    run(main())


def test_writes_append_their_events_atomically(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        o = order(1)
        await store.put_order(o, events=[placed(o)])
        await store.put_courier(
            courier(1), events=[Event("courier_updated", ("courier:c1",), {}, 1.0)]
        )
        await store.put_position(
            "c1",
            estimate(*BERLIN),
            events=[Event("courier_position", ("courier:c1",), {"lat": BERLIN[0]}, 2.0)],
        )
        await store.put_plan(plan(), events=[Event("plan_updated", ("ops",), {}, 3.0)])
        types = [e.type for e in await store.events.read_after()]
        assert types == ["order_placed", "courier_updated", "courier_position", "plan_updated"]
        # A bad event (payload not JSON) aborts the whole write: the state is unchanged.
        bad = Event("order_placed", ("order:o2",), {"x": float("inf")}, 1.0)
        with pytest.raises(BadInput):
            await store.put_order(order(2), events=[placed(order(2)), bad])
        with pytest.raises(NotFound):
            await store.get_order("o2")
        assert len(await store.events.read_after()) == 4
        await store.aclose()

    run(main())


@pytest.mark.parametrize("seed", [1, 2])
def test_couriers_near_matches_brute_force_haversine(make_store: MakeStore, seed: int) -> None:
    rng = random.Random(seed)
    positions = {}
    for i in range(300):
        # Dense near the centre, some far out; a few exactly on ring distances.
        r = rng.choice([rng.uniform(0, 800), rng.uniform(0, 6_000), rng.uniform(0, 60_000)])
        a = rng.uniform(0, 2 * math.pi)
        lat, lon = offset(*BERLIN, r * math.sin(a), r * math.cos(a))
        positions[f"c{i:03d}"] = estimate(lat, lon, t=float(i))

    async def main() -> None:
        store = make_store()
        for cid, est in positions.items():
            await store.put_position(cid, est)
        centres = [BERLIN, offset(*BERLIN, 1_500, -700)]
        # Radii that fall exactly on some couriers' distances test the boundary.
        some = sorted(positions.items())[7][1]
        exact_r = haversine_m(*BERLIN, some.lat, some.lon)
        for lat, lon in centres:
            for radius in (0.0, 50.0, 250.0, 1_000.0, 5_000.0, exact_r, 100_000.0):
                want = sorted(
                    (haversine_m(lat, lon, e.lat, e.lon), cid)
                    for cid, e in positions.items()
                    if haversine_m(lat, lon, e.lat, e.lon) <= radius
                )
                got = await store.couriers_near(lat, lon, radius)
                assert [(n.distance_m, n.courier_id) for n in got] == want, radius
                assert all(n.estimate == positions[n.courier_id] for n in got)
        # since= drops stale positions; limit= keeps the nearest.
        got = await store.couriers_near(*BERLIN, 5_000.0, since=150.0, limit=5)
        want5 = sorted(
            (haversine_m(*BERLIN, e.lat, e.lon), cid)
            for cid, e in positions.items()
            if e.t >= 150.0 and haversine_m(*BERLIN, e.lat, e.lon) <= 5_000.0
        )[:5]
        assert [(n.distance_m, n.courier_id) for n in got] == want5
        with pytest.raises(BadInput):
            await store.couriers_near(*BERLIN, -1.0)
        with pytest.raises(BadInput):
            await store.couriers_near(95.0, 0.0, 10.0)
        await store.aclose()

    run(main())


def test_couriers_near_follows_moves(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        await store.put_position("c1", estimate(*BERLIN))
        far = offset(*BERLIN, 10_000, 0)
        await store.put_position("c1", estimate(*far))
        assert await store.couriers_near(*BERLIN, 2_000.0) == []
        assert [n.courier_id for n in await store.couriers_near(*far, 10.0)] == ["c1"]
        await store.aclose()

    run(main())


def test_bad_arguments_are_typed(make_store: MakeStore) -> None:
    async def main() -> None:
        store = make_store()
        with pytest.raises(BadInput):
            await store.put_order("not an order")  # type: ignore[arg-type]
        with pytest.raises(BadInput):
            await store.put_order(order(1), events=["not an event"])  # type: ignore[list-item]
        with pytest.raises(BadInput):
            await store.couriers_near(*BERLIN, 10.0, limit=0)
        bad_plan = replace(plan(), routes={"c9": plan().routes["c1"]})
        with pytest.raises(BadInput):
            await store.put_plan(bad_plan)
        await store.aclose()

    run(main())

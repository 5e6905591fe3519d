"""Redis-only behaviour: crash durability, corrupt data, expiry, availability errors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.typing import EncodableT, FieldT

from dispatch.model import Order
from geo.estimate import Estimate
from tests.conftest import RedisServer
from tests.tracking.conftest import estimate, order, placed, plan, redis_factory, run
from tracking import (
    ZERO_ID,
    BadInput,
    CorruptData,
    Event,
    EventsTrimmed,
    NotFound,
    RedisEventLog,
    RedisStore,
    Unavailable,
    event_id_key,
    order_topic,
)
from tracking.events import is_stub


def test_acknowledged_writes_and_events_survive_sigkill(redis_server: RedisServer) -> None:
    """Writers and a subscriber run until redis-server is SIGKILLed mid-flight; after a
    restart on the same AOF every acknowledged write and event is there, and the
    subscriber resumes from its last id without missing or repeating anything."""
    acked_orders: list[Order] = []
    acked_events: list[str] = []
    acked_positions: dict[str, Estimate] = {}
    seen: list[str] = []

    async def before_crash() -> None:
        store = RedisStore.from_url(redis_server.url)
        await store.put_plan(plan())

        async def writer(w: int) -> None:
            i = 0
            try:
                while True:
                    o = order(f"{w}-{i}")
                    await store.put_order_idempotent(f"key-{w}-{i}", o, events=[placed(o)])
                    acked_orders.append(o)
                    ev = Event("courier_position", (f"courier:c{w}",), {"i": i}, float(i))
                    acked_events.append(await store.events.append(ev))
                    fix = estimate(52.52, 13.40, t=float(i), device=f"c{w}")
                    moved = Event("courier_position", (f"courier:c{w}",), {"t": i}, float(i))
                    await store.put_position(f"c{w}", fix, events=[moved])
                    acked_positions[f"c{w}"] = fix
                    i += 1
            except Unavailable:
                return

        async def subscriber() -> None:
            try:
                async for e in store.events.subscribe(ZERO_ID):
                    seen.append(e.id or "")
            except Unavailable:
                return

        tasks = [asyncio.create_task(writer(w)) for w in range(4)]
        tasks.append(asyncio.create_task(subscriber()))
        while len(acked_orders) < 300:
            await asyncio.sleep(0.002)
        redis_server.kill()  # SIGKILL while writes are in flight
        await asyncio.gather(*tasks)
        await store.aclose()

    run(before_crash())
    assert len(acked_orders) >= 300 and len(seen) > 0
    redis_server.start()

    async def after_restart() -> None:
        store = RedisStore.from_url(redis_server.url)
        assert await store.persistence() == "aof-always"
        for o in acked_orders:
            assert await store.get_order(o.id) == o
            assert (await store.put_order_idempotent(f"key-{o.id[1:]}", order("x")))[0] == o
        stored = {o.id for o in await store.list_orders()}
        assert {o.id for o in acked_orders} <= stored
        assert len(stored) <= len(acked_orders) + 4  # at most one unacknowledged per writer
        assert await store.get_plan() == plan()
        log = await store.events.read_after()
        ids = [e.id for e in log if e.id is not None]
        assert set(acked_events) <= set(ids)
        placed_ids = {e.payload["order"] for e in log if e.type == "order_placed"}
        assert placed_ids == stored  # state and its events committed together
        moves = {(e.topics[0], e.payload["t"]) for e in log if "t" in e.payload}
        for cid, fix in acked_positions.items():  # at most one unacknowledged write later
            got = await store.get_position(cid)
            assert got == fix or (got.t == fix.t + 1 and got.device == cid)
            assert (f"courier:{cid}", int(got.t)) in moves  # and its event with it
        # The restarted server has no scripts cached: the position write loads its own.
        before = await store.get_position("c0")
        again = estimate(52.52, 13.40, t=1e6, device="c0")
        assert await store.put_position("c0", again) == before.t
        assert await store.get_position("c0") == again
        # New ids after the restart continue the sequence.
        new_id = await store.events.append(Event("delay", ("ops",), {}, 1.0))
        assert event_id_key(new_id) > event_id_key(ids[-1])
        # The subscriber resumes from its last id: exactly the rest, in order, then live.
        resumed: list[str] = []
        async for e in store.events.subscribe(seen[-1]):
            resumed.append(e.id or "")
            if e.id == new_id:
                break
        assert seen + resumed == [*ids, new_id]
        await store.aclose()

    run(after_restart())


def test_corrupt_records_raise_corrupt_data(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = redis_factory(redis_server)()
        raw = Redis.from_url(redis_server.url)
        await raw.set("o2o:order:o1", "{not json")
        with pytest.raises(CorruptData, match="order o1"):
            await store.get_order("o1")
        await raw.set("o2o:order:o2", '{"id": "o2", "pickup": 3}')
        with pytest.raises(CorruptData, match="order o2"):
            await store.get_order("o2")
        await raw.sadd("o2o:orders", "o3")  # index names an order that is not there
        with pytest.raises(CorruptData):
            await store.list_orders()
        await raw.set("o2o:couriers", "a string, not a hash")
        with pytest.raises(CorruptData, match="another Redis type"):
            await store.get_courier("c1")
        await raw.hset("o2o:plan", "route:c1", "{}")  # a plan without its meta field
        with pytest.raises(CorruptData, match="meta"):
            await store.get_plan()
        await raw.xadd("o2o:events", {"type": "delay", "t": "1.0"})  # missing fields
        with pytest.raises(CorruptData, match="malformed event"):
            await store.events.read_after()
        await raw.aclose()
        await store.aclose()

    run(main())


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("t", "nan", "not finite"),
        ("t", "inf", "not finite"),
        ("t", "soon", "malformed event"),
        ("topics", '["ok", 7]', "malformed event"),
        ("topics", '["has space"]', "malformed event"),
        ("topics", '{"a": 1}', "topics must be an array"),
        ("payload", "[1, 2]", "not an object"),
        ("type", "teleported", "unknown event type"),
    ],
)
def test_each_part_of_a_logged_event_is_checked_on_decode(
    redis_server: RedisServer, field: str, value: str, needle: str
) -> None:
    """Events read back from the log are built without the constructor's checks
    (:meth:`Event.checked`): the decoder must refuse every bad part itself."""

    async def main() -> None:
        store = redis_factory(redis_server)()
        raw = Redis.from_url(redis_server.url)
        start = await store.events.last_id()
        entry: dict[FieldT, EncodableT] = {
            "type": "delay",
            "t": "1.0",
            "topics": '["ops"]',
            "payload": "{}",
            "prev": "0-0",
        }
        await raw.xadd("o2o:events", {**entry, field: value})
        with pytest.raises(CorruptData, match=needle):
            await store.events.read_after(start)
        await raw.aclose()
        await store.aclose()

    run(main())


def test_rejected_events_are_not_decoded(redis_server: RedisServer) -> None:
    """A subscriber's ``select`` sees type and topics only: an event it rejects is not
    decoded (a corrupt payload there goes unnoticed), one it wants still is."""

    async def main() -> None:
        store = redis_factory(redis_server)()
        raw = Redis.from_url(redis_server.url)
        start = await store.events.last_id()
        for topic in ("courier:c0", "courier:c1"):
            await raw.xadd(
                "o2o:events",
                {
                    "type": "courier_position",
                    "t": "1.0",
                    "topics": f'["{topic}"]',
                    "payload": "{not json",
                    "prev": "0-0",
                },
            )

        def only_c1(event_type: str, topics: Sequence[str], key: object) -> bool:
            return "courier:c1" in topics

        events = store.events.subscribe(start, select=lambda t, ts, k: "courier:c9" in ts)
        first, second = await anext(events), await anext(events)
        assert is_stub(first) and is_stub(second)
        with pytest.raises(CorruptData, match="not JSON"):
            await anext(store.events.subscribe(start, select=only_c1))
        await raw.aclose()
        await store.aclose()

    run(main())


def test_idempotency_keys_expire(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = redis_factory(redis_server)(idempotency_ttl_s=0.05)
        assert (await store.put_order_idempotent("k", order(1)))[1]
        assert not (await store.put_order_idempotent("k", order(2)))[1]
        await asyncio.sleep(0.1)
        assert (await store.put_order_idempotent("k", order(2)))[1]  # a new order now
        await store.aclose()

    run(main())


def test_expired_topic_streams_are_reported_not_silently_skipped(
    redis_server: RedisServer,
) -> None:
    async def main() -> None:
        client = Redis.from_url(redis_server.url)
        log = RedisEventLog(client, topic_ttl_s=0.2, block_ms=100)
        start = await log.append(Event("delay", ("ops",), {}, 0.0))
        await log.append(Event("order_placed", (order_topic("a"),), {}, 1.0))
        await asyncio.sleep(0.4)  # order:a's stream expires with its only event
        assert await client.exists(log.topic_key(order_topic("a"))) == 0
        with pytest.raises(EventsTrimmed):
            await log.read_after(start, topics=[order_topic("a")])
        # A reader whose last id is recent enough cannot have missed expired events.
        recent = await log.append(Event("delay", ("ops",), {}, 2.0))
        assert await log.read_after(recent, topics=[order_topic("a")]) == []
        # A recreated stream does not hide the expired events before it either.
        await log.append(Event("order_assigned", (order_topic("a"),), {}, 3.0))
        with pytest.raises(EventsTrimmed):
            await log.read_after(start, topics=[order_topic("a")])
        assert [e.type for e in await log.read_after(recent, topics=[order_topic("a")])] == [
            "order_assigned"
        ]
        await client.aclose()

    run(main())


@pytest.mark.parametrize(
    "options", [{"decode_responses": True}, {"protocol": 3}], ids=["decoded", "resp3"]
)
def test_other_client_settings_work_too(redis_server: RedisServer, options: dict[str, Any]) -> None:
    async def main() -> None:
        store = RedisStore(Redis.from_url(redis_server.url, **options), owns_client=True)
        o = order(1)
        await store.put_order_idempotent("k", o, events=[placed(o)])
        assert (await store.put_order_idempotent("k", order(2)))[0] == o
        await store.put_position("c1", estimate(52.52, 13.405))
        assert [n.courier_id for n in await store.couriers_near(52.52, 13.405, 10.0)] == ["c1"]
        assert [e.type for e in await store.events.read_after()] == ["order_placed"]
        start = await store.events.last_id()
        sub = store.events.subscribe(start, topics=["ops"])
        nxt = asyncio.ensure_future(anext(sub))
        # The global stream, and topics that never expire, take XREAD's entries as they
        # come (no second read): both reply shapes (RESP2 list, RESP3 map) must parse.
        everything = store.events.subscribe(start)
        untimed = RedisEventLog(store.client, topic_ttl_s=None)
        two_topics = untimed.subscribe(start, topics=["ops", "order:o7"])
        firsts = [asyncio.ensure_future(anext(s)) for s in (everything, two_topics)]
        await asyncio.sleep(0.05)
        await store.put_plan(plan(), events=[Event("plan_updated", ("ops",), {}, 2.0)])
        assert (await asyncio.wait_for(nxt, 5)).type == "plan_updated"
        assert [(await asyncio.wait_for(f, 5)).type for f in firsts] == ["plan_updated"] * 2
        more = [Event("delay", (t,), {"n": i}, 3.0) for i, t in enumerate(["ops", "order:o7"])]
        ids = await store.events.append_many(more)
        for s in (everything, two_topics):
            got = [await asyncio.wait_for(anext(s), 5) for _ in more]
            assert [(e.id, e.payload) for e in got] == [
                (i, e.payload) for i, e in zip(ids, more, strict=True)
            ]
        for s in (sub, everything, two_topics):
            await s.aclose()  # type: ignore[attr-defined]
        await store.aclose()

    run(main())


def test_unreachable_redis_raises_unavailable(redis_server: RedisServer) -> None:
    async def main() -> None:
        client = Redis.from_url(redis_server.url, retry=Retry(NoBackoff(), 0))
        store = RedisStore(client, owns_client=True)
        await store.put_order(order(1))
        redis_server.kill()
        with pytest.raises(Unavailable):
            await store.get_order("o1")
        with pytest.raises(Unavailable):
            await store.put_order_idempotent("k", order(2))
        with pytest.raises(Unavailable):
            await store.events.read_after()
        await store.aclose()

    run(main())
    redis_server.start()

    async def again() -> None:
        store = RedisStore.from_url(redis_server.url)
        assert (await store.get_order("o1")) == order(1)
        with pytest.raises(NotFound):
            await store.get_order("o2")
        await store.aclose()

    run(again())


def test_a_caught_up_subscription_reads_at_most_once_per_interval(
    redis_server: RedisServer,
) -> None:
    """Events appended between two reads come together in the next one (one round trip),
    none lost, none before the interval is over."""

    async def main() -> None:
        store = RedisStore(Redis.from_url(redis_server.url), owns_client=True)
        paced = RedisEventLog(store.client, read_interval_s=0.3)
        sub = paced.subscribe(await store.events.last_id())
        first = asyncio.ensure_future(anext(sub))
        await asyncio.sleep(0.05)
        await store.events.append(Event("delay", ("ops",), {"n": 0}, 1.0))
        assert (await asyncio.wait_for(first, 5)).payload == {"n": 0}
        read_at = asyncio.get_running_loop().time()
        ids = []
        for n in (1, 2):
            ids.append(await store.events.append(Event("delay", ("ops",), {"n": n}, 1.0)))
            await asyncio.sleep(0.05)
        second = await asyncio.wait_for(anext(sub), 5)
        got_at = asyncio.get_running_loop().time()
        third = await asyncio.wait_for(anext(sub), 5)
        assert [second.id, third.id] == ids
        assert got_at - read_at >= 0.25  # waited for the interval, then both in one read
        assert asyncio.get_running_loop().time() - got_at < 0.05
        await sub.aclose()  # type: ignore[attr-defined]
        await store.aclose()

    run(main())


@pytest.mark.parametrize("bad", [-0.1, 2.0, float("nan")])
def test_bad_read_interval_refused(redis_server: RedisServer, bad: float) -> None:
    with pytest.raises(BadInput, match="read_interval_s"):
        RedisEventLog(Redis.from_url(redis_server.url), read_interval_s=bad)

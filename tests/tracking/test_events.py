"""EventLog contract, run against both backends, plus memory id generation."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Sequence

import pytest

from tests.tracking.conftest import MakeStore, run
from tracking import (
    ZERO_ID,
    BadEventId,
    BadInput,
    Event,
    EventLog,
    EventsTrimmed,
    MemoryEventLog,
    event_id_key,
    order_topic,
    parse_event_id,
)
from tracking.events import IdKey, format_event_id, is_stub


def ev(i: int, *topics: str, type: str = "eta_updated") -> Event:
    return Event(type, topics, {"i": i}, float(i))  # type: ignore[arg-type]


def log_of(make_store: MakeStore, **kw: int) -> EventLog:
    return make_store(**kw).events


async def close(log: EventLog) -> None:
    client = getattr(log, "client", None)
    if client is not None:
        await client.aclose()


def test_ids_are_strictly_increasing_and_redis_shaped(make_store: MakeStore) -> None:
    async def main() -> None:
        log = log_of(make_store)
        assert await log.last_id() == ZERO_ID
        ids = [await log.append(ev(i, "ops")) for i in range(50)]
        ids += await log.append_many([ev(i, "ops") for i in range(50, 60)])
        assert all(re.fullmatch(r"\d+-\d+", i) for i in ids)
        keys = [event_id_key(i) for i in ids]
        assert all(a < b for a, b in itertools.pairwise(keys))
        assert await log.last_id() == ids[-1]
        read = await log.read_after()
        assert [e.id for e in read] == ids
        assert [e.payload["i"] for e in read] == list(range(60))
        assert read[3] == ev(3, "ops").with_id(ids[3])
        await close(log)

    run(main())


def test_resume_after_last_id_returns_exactly_the_missed_events(make_store: MakeStore) -> None:
    async def main() -> None:
        log = log_of(make_store)
        ids = [await log.append(ev(i, "ops")) for i in range(30)]
        for k in (0, 1, 17, 28, 29):
            got = await log.read_after(ids[k])
            assert [e.id for e in got] == ids[k + 1 :]
        assert await log.read_after(ZERO_ID) == await log.read_after()
        # Paging with limit walks the same sequence without gaps or repeats.
        seen: list[str] = []
        cursor = ZERO_ID
        while page := await log.read_after(cursor, limit=7):
            seen += [e.id or "" for e in page]
            cursor = seen[-1]
        assert seen == ids
        await close(log)

    run(main())


def test_topic_filtering_and_merging(make_store: MakeStore) -> None:
    async def main() -> None:
        log = log_of(make_store)
        a, b, c = order_topic("a"), order_topic("b"), "courier:c1"
        plan = [(a,), (b,), (a, c), (c,), (b, c), (a,), ("ops",)]
        ids = [await log.append(ev(i, *ts)) for i, ts in enumerate(plan)]
        only_a = await log.read_after(topics=[a])
        assert [e.payload["i"] for e in only_a] == [0, 2, 5]
        assert all(a in e.topics for e in only_a)
        # Several topics: merged in id order, an event on two of them delivered once.
        both = await log.read_after(topics=[a, c])
        assert [e.payload["i"] for e in both] == [0, 2, 3, 4, 5]
        assert [e.payload["i"] for e in await log.read_after(ids[2], topics=[a, c], limit=2)] == [
            3,
            4,
        ]
        assert await log.read_after(topics=["order:none"]) == []
        with pytest.raises(BadInput):
            await log.read_after(topics=[])
        with pytest.raises(BadInput):
            await log.read_after(topics="order:a")
        with pytest.raises(BadInput):
            await log.read_after(topics=["has space"])
        await close(log)

    run(main())


def test_retention_is_bounded_and_gaps_are_reported(make_store: MakeStore) -> None:
    async def main() -> None:
        log = log_of(make_store, maxlen=20, topic_maxlen=5)
        ids = [await log.append(ev(i, "ops")) for i in range(400)]
        kept = await log.read_after()
        # Approximate trimming (MAXLEN ~): at least the newest 20, never far more.
        assert 20 <= len(kept) <= 20 + 100
        assert [e.id for e in kept] == ids[-len(kept) :]
        topic_kept = await log.read_after(topics=["ops"])
        assert 5 <= len(topic_kept) <= 5 + 100
        assert [e.id for e in topic_kept] == ids[-len(topic_kept) :]
        # Resuming from an id whose successors were trimmed is refused, not silently short.
        with pytest.raises(EventsTrimmed) as info:
            await log.read_after(ids[0])
        assert info.value.reason == "events_trimmed"
        with pytest.raises(EventsTrimmed):
            await log.read_after(ZERO_ID)
        with pytest.raises(EventsTrimmed):
            await log.read_after(ids[0], topics=["ops"])
        # Resuming from just before the oldest retained event is fine.
        first = len(ids) - len(kept)
        assert await log.read_after(ids[first - 1]) == kept
        # A subscriber resuming too far back is told so on its first step.
        with pytest.raises(EventsTrimmed):
            await anext(aiter(log.subscribe(ids[0])))
        await close(log)

    run(main())


def test_subscribe_receives_live_events_in_order(make_store: MakeStore) -> None:
    async def main() -> None:
        log = log_of(make_store)
        start = await log.last_id()
        await log.append(ev(0, "ops"))  # before the subscription starts: still delivered
        got: list[Event] = []

        async def consume(n: int) -> None:
            async for e in log.subscribe(start):
                got.append(e)
                if len(got) == n:
                    return

        task = asyncio.create_task(consume(40))
        for i in range(1, 40):
            await log.append(ev(i, "ops"))
            if i % 10 == 0:
                await asyncio.sleep(0.05)  # let the subscriber block and be woken
        await asyncio.wait_for(task, 10)
        assert [e.payload["i"] for e in got] == list(range(40))
        assert [e.id for e in got] == [e.id for e in await log.read_after(start)]
        await close(log)

    run(main())


def test_subscribe_select_turns_unwanted_events_into_stubs(make_store: MakeStore) -> None:
    """Every id still comes through (a subscriber's cursor moves on), but what ``select``
    rejects is a stub: same id and type, no topics or payload."""

    async def main() -> None:
        log = log_of(make_store)
        start = await log.last_id()
        for i in range(300):  # more than one read batch
            await log.append(ev(i, f"courier:c{i % 3}", type="courier_position"))
        ids = [e.id for e in await log.read_after(start)]
        asked: list[tuple[str, tuple[str, ...], str]] = []

        def select(event_type: str, topics: Sequence[str], key: IdKey) -> bool:
            asked.append((event_type, tuple(topics), format_event_id(key)))
            return "courier:c1" in topics

        got: list[Event] = []
        async for e in log.subscribe(start, select=select):
            got.append(e)
            if len(got) == 300:
                break
        assert [e.id for e in got] == ids
        kept = [e for e in got if not is_stub(e)]
        assert [e.payload["i"] for e in kept] == [i for i in range(300) if i % 3 == 1]
        assert all(e.topics == ("courier:c1",) for e in kept)
        stubs = [e for e in got if is_stub(e)]
        assert len(stubs) == 200 and all(e.type == "courier_position" for e in stubs)
        assert all(e.payload == {} and e.topics == () for e in stubs)
        assert asked[0] == ("courier_position", ("courier:c0",), ids[0])
        await close(log)

    run(main())


def test_subscribe_to_one_order_gets_only_that_order(make_store: MakeStore) -> None:
    async def main() -> None:
        log = log_of(make_store)
        mine, other = order_topic("mine"), order_topic("other")
        start = await log.last_id()
        got: list[Event] = []

        async def consume() -> None:
            async for e in log.subscribe(start, topics=[mine]):
                got.append(e)
                if e.type == "order_delivered":
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        for i in range(30):
            await log.append(ev(i, other, "ops"))
            if i % 7 == 0:
                await log.append(ev(i, mine))
            if i % 10 == 0:
                await asyncio.sleep(0.02)
        await log.append(ev(99, mine, type="order_delivered"))
        await asyncio.wait_for(task, 10)
        assert [e.payload["i"] for e in got] == [0, 7, 14, 21, 28, 99]
        assert all(e.topics == (mine,) for e in got)
        await close(log)

    run(main())


def test_subscribe_without_last_id_starts_at_the_end(make_store: MakeStore) -> None:
    async def main() -> None:
        log = log_of(make_store)
        for i in range(5):
            await log.append(ev(i, "ops"))
        sub = log.subscribe()
        first = asyncio.ensure_future(anext(sub))
        await asyncio.sleep(0.1)  # the generator has taken its starting point
        await log.append(ev(5, "ops"))
        assert (await asyncio.wait_for(first, 5)).payload["i"] == 5
        await sub.aclose()  # type: ignore[attr-defined]
        await close(log)

    run(main())


def test_bad_ids_and_events_are_typed_errors(make_store: MakeStore) -> None:
    async def main() -> None:
        log = log_of(make_store)
        for bad in ("", "12", "a-b", "1-2-3", "-1-0", "1.5-0", " 1-0"):
            with pytest.raises(BadEventId):
                await log.read_after(bad)
        with pytest.raises(BadInput):
            await log.append(ev(1, "ops").with_id("1-1"))
        with pytest.raises(BadInput):
            await log.read_after(limit=0)
        await close(log)

    run(main())
    with pytest.raises(BadInput):
        Event("not_a_type", ("ops",), {}, 1.0)  # type: ignore[arg-type]
    with pytest.raises(BadInput):
        Event("delay", ("ops",), {}, float("nan"))
    with pytest.raises(BadInput):
        Event("delay", ("*",), {}, 1.0)
    with pytest.raises(BadInput):
        Event("delay", "ops", {}, 1.0)  # type: ignore[arg-type]
    assert Event("delay", ("a:1", "a:1", "ops"), {}, 1.0).topics == ("a:1", "ops")


def test_event_id_parsing_and_ordering() -> None:
    assert parse_event_id("1700000000000-12") == (1_700_000_000_000, 12)
    ids = ["10-0", "9-5", "9-10", "0-0", "10-1"]
    assert sorted(ids, key=event_id_key) == ["0-0", "9-5", "9-10", "10-0", "10-1"]
    with pytest.raises(BadEventId):
        parse_event_id(f"{2**64}-0")


def test_memory_ids_follow_the_redis_rule() -> None:
    now = [1_000.0]
    log = MemoryEventLog(clock=lambda: now[0])

    async def main() -> list[str]:
        ids = [await log.append(ev(0, "ops")), await log.append(ev(1, "ops"))]
        now[0] = 1_000.5
        ids.append(await log.append(ev(2, "ops")))
        now[0] = 999.0  # the clock steps back: ids keep increasing
        ids.append(await log.append(ev(3, "ops")))
        return ids

    assert run(main()) == ["1000000-0", "1000000-1", "1000500-0", "1000500-1"]

"""The dispatcher inside the service: driven by the log, one leader among workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dispatch.dispatcher import DispatchSettings
from tests.conftest import RedisServer
from tests.tracking.conftest import run
from tracking.dispatch_core import DispatchCore, Outcome, Positions, ProcessRunner
from tracking.dispatch_loop import DispatchLoop, PositionSampler
from tracking.live import Live, OrderRequest
from tracking.redis_leader import RedisLeadership
from tracking.redis_store import RedisStore
from tracking.store import MemoryStore, StateStore

FAST = DispatchSettings(solve_time_limit_s=0.2, replan_every_s=5.0)
STORE = (52.52, 13.405)
HOME = (52.53, 13.42)


async def _until(pred: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def _assigned(store: StateStore, oid: str) -> bool:
    return (await store.get_order(oid)).status == "assigned"


@pytest.mark.parametrize("isolate", [False, True], ids=["thread", "process"])
def test_orders_get_assigned_routed_and_cancelled_through_the_log(isolate: bool) -> None:
    async def go() -> None:
        store = MemoryStore()
        live = Live(store)
        loop = DispatchLoop(store, settings=FAST, tick_s=0.1, isolate=isolate)
        task = asyncio.create_task(loop.run())
        await live.start_shift("c1", lat=STORE[0] - 0.01, lon=STORE[1])
        order, _ = await live.place_order(
            OrderRequest(STORE, HOME), customer_id="u1", idempotency_key=None
        )
        await _until(lambda: _assigned(store, order.id))
        route = await store.get_route("c1")
        assert route is not None and [s.kind for s in route.stops] == ["pickup", "dropoff"]
        types = [e.type for e in await store.events.read_after(None)]
        assert {"order_assigned", "route_updated", "eta_updated"} <= set(types)
        await live.cancel_order(order.id)

        async def emptied() -> bool:
            r = await store.get_route("c1")
            return r is not None and not r.stops

        await _until(emptied)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run(go())


async def _two_workers_one_leading(
    redis_server: RedisServer, **loop_options: Any
) -> tuple[list[RedisStore], list[DispatchLoop], list[asyncio.Task[None]]]:
    """Two workers' dispatch loops on one Redis (1 s lease), once one of them leads."""
    stores = [RedisStore.from_url(redis_server.url) for _ in range(2)]
    loops = [
        DispatchLoop(
            s,
            settings=FAST,
            tick_s=0.1,
            leadership=RedisLeadership(s.client, ttl_s=1.0),
            **loop_options,
        )
        for s in stores
    ]
    tasks = [asyncio.create_task(lp.run()) for lp in loops]

    async def one_leads() -> bool:
        return sum(lp.leading for lp in loops) == 1

    await _until(one_leads)
    return stores, loops, tasks


def test_one_leader_among_workers_and_takeover_after_it_dies(redis_server: RedisServer) -> None:
    async def go() -> None:
        stores, loops, tasks = await _two_workers_one_leading(redis_server)
        await asyncio.sleep(1.5)  # the lease is renewed, so nobody else takes over
        assert sum(lp.leading for lp in loops) == 1
        leader = next(i for i, lp in enumerate(loops) if lp.leading)
        other = 1 - leader
        # the leader's process dies without releasing the lease
        tasks[leader].cancel()
        with contextlib.suppress(BaseException):
            await tasks[leader]
        await stores[leader].client.set("o2o:dispatch:leader", "dead-worker", xx=True, px=1000)

        async def took_over() -> bool:
            return loops[other].leading

        await _until(took_over, timeout=5)
        live = Live(stores[other])
        await live.start_shift("c1", lat=STORE[0], lon=STORE[1])
        order, _ = await live.place_order(
            OrderRequest(STORE, HOME), customer_id="u1", idempotency_key="k"
        )
        await _until(lambda: _assigned(stores[other], order.id))
        tasks[other].cancel()
        with contextlib.suppress(BaseException):
            await tasks[other]
        for s in stores:
            await s.aclose()

    run(go())


def test_the_lease_holds_while_the_dispatcher_is_busy(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-plan longer than the lease (a big day in a niced process on a busy machine)
    must not cost the lead: the lease is renewed on its own schedule. Renewing between
    dispatcher calls lost the lead under load and rebuilt the dispatcher again and again."""
    slow_s = 2.5  # each tick, with a 1 s lease

    def slow_tick(self: DispatchCore, now: float, positions: Positions) -> Outcome:
        time.sleep(slow_s)  # in the dispatcher's thread, like a long solve
        return Outcome([], [])

    monkeypatch.setattr(DispatchCore, "tick", slow_tick)

    async def go() -> None:
        stores, loops, tasks = await _two_workers_one_leading(redis_server, isolate=False)
        leader = next(i for i, lp in enumerate(loops) if lp.leading)
        deadline = time.monotonic() + 2 * slow_s + 1
        while time.monotonic() < deadline:  # through two slow ticks
            assert loops[leader].leading and not loops[1 - leader].leading
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        for s in stores:
            await s.aclose()

    run(go())


def test_a_killed_dispatcher_process_is_rebuilt_from_the_store() -> None:
    """The solver's process dying (a crash, the kernel's OOM killer) costs a rebuild,
    never the service, and orders placed afterwards are still dispatched."""

    async def go() -> None:
        store = MemoryStore()
        live = Live(store)
        loop = DispatchLoop(store, settings=FAST, tick_s=0.1)
        task = asyncio.create_task(loop.run())
        await live.start_shift("c1", lat=STORE[0] - 0.01, lon=STORE[1])
        first, _ = await live.place_order(
            OrderRequest(STORE, HOME), customer_id="u1", idempotency_key=None
        )
        await _until(lambda: _assigned(store, first.id))
        runner = loop.runner
        assert isinstance(runner, ProcessRunner) and runner.pid is not None
        os.kill(runner.pid, signal.SIGKILL)
        second, _ = await live.place_order(
            OrderRequest(STORE, HOME), customer_id="u2", idempotency_key=None
        )
        await _until(lambda: _assigned(store, second.id), timeout=20)
        assert loop.errors >= 1
        assert isinstance(loop.runner, ProcessRunner) and loop.runner.pid != runner.pid
        assert (await store.get_order(first.id)).status == "assigned"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run(go())


def test_the_position_sampler_takes_one_fix_per_courier_per_interval() -> None:
    """Positions are decoded for the dispatcher once per courier per ``every_s`` of log
    time; other user events always; the dispatcher's own decisions never."""
    sample = PositionSampler(5.0)
    a, b = ("courier:a", "area:x"), ("courier:b",)
    taken_a = [s for s in range(12) if sample("courier_position", a, (s * 1000, 0))]
    assert taken_a == [0, 5, 10]
    assert sample("courier_position", b, (1000, 0))  # its own clock
    assert not sample("courier_position", b, (1500, 0))
    assert sample("order_placed", ("order:o1",), (1600, 0))
    assert not sample("eta_updated", ("order:o1",), (1700, 0))
    every = PositionSampler(0.0)
    assert all(every("courier_position", a, (s, 0)) for s in range(5))
    with pytest.raises(ValueError):
        PositionSampler(-1.0)


@pytest.mark.parametrize("every_s", [0.0, 60.0])
def test_the_dispatcher_gets_sampled_positions(
    every_s: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A courier posting fixes in quick succession: with sampling off the dispatcher's
    next tick has the newest fix; with a long interval it has the first one only."""
    seen: list[Positions] = []
    real_tick = DispatchCore.tick

    def tick(self: DispatchCore, now: float, positions: Positions) -> Outcome:
        if positions:
            seen.append(dict(positions))
        return real_tick(self, now, positions)

    monkeypatch.setattr(DispatchCore, "tick", tick)

    async def go() -> None:
        store = MemoryStore()
        live = Live(store)
        loop = DispatchLoop(
            store, settings=FAST, tick_s=0.1, isolate=False, position_every_s=every_s
        )
        task = asyncio.create_task(loop.run())
        await live.start_shift("c1", lat=STORE[0], lon=STORE[1])
        await _until(lambda: _is_leading(loop))
        t = time.time() - 5
        for i in range(5):  # driving north, 0.0001° (11 m) per fix
            fix = {"t": t + i, "kind": "gps", "lat": STORE[0] + 0.0001 * i, "lon": STORE[1]}
            await live.post_observations("c1", [{**fix, "accuracy": 5}])
        await _until(lambda: _has(seen))
        await asyncio.sleep(0.3)  # a few more ticks: nothing else arrives
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run(go())
    lats = [p["c1"][0].point[0] for p in seen]
    if every_s:
        assert len(lats) == 1 and lats[0] == pytest.approx(STORE[0], abs=2e-5)
    else:
        assert lats[-1] > STORE[0] + 0.0003  # the newest fix (fused: near 0.0004)


async def _is_leading(loop: DispatchLoop) -> bool:
    return loop.leading


async def _has(seen: list[Positions]) -> bool:
    return bool(seen)


def test_stored_settings_out_of_range_are_dropped_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A settings document saved before a range was tightened (or written by hand) must
    not stop the dispatcher: the bad key is dropped with a warning, the rest apply."""
    from dispatch.dispatcher import DispatchSettings
    from tracking.errors import BadInput
    from tracking.live import settings_from_doc, settings_from_stored

    base = DispatchSettings()
    stored = {"lateness_weight": 2**63, "churn_s": 60, "seed": "x"}
    with pytest.raises(BadInput):
        settings_from_doc(stored, base)
    with caplog.at_level("WARNING", logger="o2o.live"):
        got = settings_from_stored(stored, base)
    assert (got.lateness_weight, got.churn_s, got.seed) == (base.lateness_weight, 60, base.seed)
    assert "lateness_weight" in caplog.text and "seed" in caplog.text
    assert settings_from_stored(None, base) == base

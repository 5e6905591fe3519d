"""The websocket hub without a network: fan-out, backpressure, coalescing, resume."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dispatch.model import Courier, Order, Place, Route, Stop
from tracking.channels import CourierChannel, OpsChannel, OrderChannel
from tracking.events import Event, courier_topic, event_id_key, order_topic
from tracking.hub import (
    CLOSE_FELL_BEHIND,
    PACE_SLACK,
    ChannelClosed,
    ChannelLimits,
    Frame,
    Hub,
    Subscription,
    serve_channel,
)
from tracking.live import Live, order_event
from tracking.store import MemoryStore


def _order(oid: str = "o1", courier: str | None = "c1") -> Order:
    o = Order(oid, Place((52.52, 13.40)), Place((52.53, 13.42)), 0.0, 0.0, 3600.0)
    return o.transition("assigned", 1.0, courier) if courier else o


def _position(cid: str, t: float) -> Event:
    est = {
        "device": cid,
        "t": t,
        "lat": 52.52,
        "lon": 13.40,
        "radius68": 5.0,
        "radius95": 8.0,
        "velocity": [0.0, 0.0],
        "sources": ["gps"],
        "indoor": None,
        "h3": "8a1f1d48942ffff",
        "near": None,
        "extra": {},
    }
    return Event("courier_position", (courier_topic(cid),), {"courier_id": cid, "estimate": est}, t)


class Collector:
    def __init__(self, delay: float = 0.0) -> None:
        self.frames: list[Frame] = []
        self.delay = delay

    async def send(self, frame: Frame) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.frames.append(frame)


async def _until(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def test_statuses_all_arrive_in_order_and_positions_are_coalesced() -> None:
    async def run() -> None:
        store = MemoryStore()
        order = _order()
        await store.put_order(order)
        hub = Hub(store.events)
        hub.start()
        out = Collector()
        limits = ChannelLimits(position_interval_s=0.3, heartbeat_s=60)
        task = asyncio.create_task(
            serve_channel(hub, OrderChannel(store, "o1"), out.send, limits=limits)
        )
        await _until(lambda: out.frames)
        assert out.frames[0]["type"] == "snapshot"
        # 50 positions in a burst: latest wins, so far fewer frames than fixes
        for i in range(50):
            await store.events.append(_position("c1", 10.0 + i))
        picked = order.transition("picked_up", 20.0, "c1")
        await store.put_order(picked, events=[order_event("order_picked_up", picked, 20.0)])
        await _until(lambda: any(f.get("status") == "picked_up" for f in out.frames))
        await asyncio.sleep(0.5)
        positions = [f for f in out.frames if f["type"] == "position"]
        assert 1 <= len(positions) <= 3
        assert positions[-1]["t"] == 59.0  # the newest fix is never lost
        # another courier's positions never reach this customer
        await store.events.append(_position("c2", 70.0))
        await asyncio.sleep(0.4)
        assert all(f.get("courier_id") != "c2" for f in out.frames)
        task.cancel()
        await hub.stop()

    asyncio.run(run())


def test_position_pacing_recovers_after_a_late_fix() -> None:
    # A courier posting exactly at the coalescing interval: after one late fix (a stall)
    # the following on-time fixes must again go out at once, not a stall later forever.
    interval = 0.2

    async def run() -> None:
        store = MemoryStore()
        await store.put_order(_order())
        hub = Hub(store.events)
        hub.start()
        received: dict[float, float] = {}

        async def send(frame: Frame) -> None:
            if frame["type"] == "position":
                received[frame["t"]] = time.monotonic()

        limits = ChannelLimits(position_interval_s=interval, heartbeat_s=60)
        task = asyncio.create_task(
            serve_channel(hub, OrderChannel(store, "o1"), send, limits=limits)
        )
        await asyncio.sleep(0.2)
        posted: dict[float, float] = {}
        t0 = time.monotonic()
        for i in range(14):
            due = t0 + i * interval + (0.19 if i == 4 else 0.0)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            posted[float(i)] = time.monotonic()
            await store.events.append(_position("c1", float(i)))
        await asyncio.sleep(interval)
        task.cancel()
        await hub.stop()
        # Paced at exactly the interval, the schedule stayed 0.19 s late for good and
        # every later fix waited 0.09 s (what is over half an interval early); the pace's
        # slack pays that back within five frames.
        delays = [received[t] - posted[t] for t in sorted(posted) if t >= 10 and t in received]
        assert len(delays) == 4, sorted(received)
        assert max(delays) < 0.05, delays

    asyncio.run(run())


def test_a_fast_poster_is_still_coalesced_to_about_one_frame_per_interval() -> None:
    # The pace's slack (PACE_SLACK) lets the schedule catch up after a stall; it must
    # not let a courier posting ten times a second through at more than about the
    # interval's rate: over T seconds at most T / pace frames, plus the one that may go
    # half an interval early and the first.
    interval, seconds = 0.2, 2.0

    async def run() -> list[float]:
        store = MemoryStore()
        await store.put_order(_order())
        hub = Hub(store.events)
        hub.start()
        sent: list[float] = []

        async def send(frame: Frame) -> None:
            if frame["type"] == "position":
                sent.append(time.monotonic())

        limits = ChannelLimits(position_interval_s=interval, heartbeat_s=60)
        task = asyncio.create_task(
            serve_channel(hub, OrderChannel(store, "o1"), send, limits=limits)
        )
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < seconds:
            await store.events.append(_position("c1", 100.0 + i))
            i += 1
            await asyncio.sleep(interval / 10)
        await asyncio.sleep(interval)
        task.cancel()
        await hub.stop()
        return [t - t0 for t in sent if t - t0 <= seconds]

    frames = asyncio.run(run())
    assert PACE_SLACK <= 0.15  # "about one per interval", as the issue asks
    pace = interval * (1 - PACE_SLACK)
    assert seconds / interval - 2 <= len(frames) <= seconds / pace + 2, frames


def test_slow_consumer_is_closed_without_slowing_others() -> None:
    async def run() -> None:
        store = MemoryStore()
        await store.put_order(_order())
        hub = Hub(store.events)
        hub.start()
        limits = ChannelLimits(
            position_interval_s=0.0, heartbeat_s=60, send_timeout_s=0.3, max_queue=200
        )
        slow, fast = Collector(delay=10.0), Collector()
        slow_task = asyncio.create_task(
            serve_channel(hub, OrderChannel(store, "o1"), slow.send, limits=limits)
        )
        fast_task = asyncio.create_task(
            serve_channel(hub, OrderChannel(store, "o1"), fast.send, limits=limits)
        )
        await _until(lambda: fast.frames)
        start = time.monotonic()
        for i in range(100):
            await store.events.append(
                Event(
                    "eta_updated",
                    (order_topic("o1"),),
                    {"order_id": "o1", "pickup_eta": None, "dropoff_eta": 100.0 + i},
                    1.0,
                )
            )
        await _until(lambda: len([f for f in fast.frames if f["type"] == "eta"]) == 100)
        assert time.monotonic() - start < 2.0  # the fast client was never held up
        with pytest.raises(ChannelClosed) as closed:
            await asyncio.wait_for(slow_task, 5)
        assert closed.value.code == CLOSE_FELL_BEHIND
        assert hub.subscribers == 1  # the slow one is gone, the fast one stays
        fast_task.cancel()
        await hub.stop()

    asyncio.run(run())


def test_a_send_stuck_past_its_timeout_closes_yet_outside_cancels_stay_cancels() -> None:
    """The hub's watchdog (not a timer per frame) ends a send that takes too long; a
    connection cancelled from outside (the client went) ends as cancelled, not as a
    client that fell behind."""

    async def run() -> None:
        store = MemoryStore()
        await store.put_order(_order())
        hub = Hub(store.events, watchdog_s=0.05)
        hub.start()
        limits = ChannelLimits(position_interval_s=0.0, heartbeat_s=60, send_timeout_s=0.3)
        stuck = Collector(delay=60.0)
        start = time.monotonic()
        task = asyncio.create_task(
            serve_channel(hub, OrderChannel(store, "o1"), stuck.send, limits=limits)
        )
        with pytest.raises(ChannelClosed) as closed:
            await asyncio.wait_for(task, 5)
        assert closed.value.code == CLOSE_FELL_BEHIND
        assert 0.3 <= time.monotonic() - start < 1.0
        assert hub.subscribers == 0 and not hub._sending

        patient = Collector(delay=60.0)
        limits = ChannelLimits(position_interval_s=0.0, heartbeat_s=60, send_timeout_s=30.0)
        task = asyncio.create_task(
            serve_channel(hub, OrderChannel(store, "o1"), patient.send, limits=limits)
        )
        await _until(lambda: hub._sending)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert hub.subscribers == 0 and not hub._sending
        await hub.stop()

    asyncio.run(run())


def test_resume_from_last_event_id_replays_exactly_what_was_missed() -> None:
    async def run() -> None:
        store = MemoryStore()
        order = _order()
        await store.put_order(order)
        hub = Hub(store.events)
        hub.start()
        limits = ChannelLimits(position_interval_s=0.0, heartbeat_s=60)
        first = Collector()
        task = asyncio.create_task(
            serve_channel(hub, OrderChannel(store, "o1"), first.send, limits=limits)
        )
        await _until(lambda: first.frames)
        eta = Event(
            "eta_updated",
            (order_topic("o1"),),
            {"order_id": "o1", "pickup_eta": None, "dropoff_eta": 500.0},
            2.0,
        )
        await store.events.append(eta)
        await _until(lambda: any(f["type"] == "eta" for f in first.frames))
        task.cancel()  # the client drops
        last = max((f["id"] for f in first.frames), key=event_id_key)
        picked = order.transition("picked_up", 3.0, "c1")
        await store.put_order(picked, events=[order_event("order_picked_up", picked, 3.0)])
        done = picked.transition("delivered", 4.0)
        await store.put_order(done, events=[order_event("order_delivered", done, 4.0)])
        again = Collector()
        task = asyncio.create_task(
            serve_channel(
                hub, OrderChannel(store, "o1"), again.send, last_event_id=last, limits=limits
            )
        )
        await _until(lambda: any(f.get("status") == "delivered" for f in again.frames))
        statuses = [f["status"] for f in again.frames if f["type"] == "status"]
        assert statuses == ["picked_up", "delivered"]
        assert not any(f["type"] == "eta" for f in again.frames)  # nothing replayed twice
        task.cancel()
        await hub.stop()

    asyncio.run(run())


def test_subscription_queue_bound_and_latest_wins() -> None:
    sub = Subscription(["t"], max_queue=2)
    for i in range(3):
        sub.offer(Event("eta_updated", ("t",), {"order_id": "o"}, float(i), id=f"{i}-0"))
    assert sub.overflowed == "queue_full" and len(sub.queue) == 2
    for t in (1.0, 2.0, 3.0):
        sub.offer(_position("c1", t).with_id(f"{int(t)}-1"))
    assert list(sub.positions) == ["c1"] and sub.positions["c1"].t == 3.0


def test_snapshots_carry_delay_routes_acks_and_the_service_clock() -> None:
    """What a page opened late needs: the last delay, every route, the last ack, and the
    service's clock (the demo runs faster than the wall clock)."""

    async def run() -> None:
        store = MemoryStore()
        live = Live(store, clock=lambda: 1234.5)
        await store.put_order(_order())
        stop = Stop("o1", "dropoff", Place((52.53, 13.42)), 50.0, 50.0, 60.0)
        route_event = Event(
            "route_updated", (courier_topic("c1"),), {"courier_id": "c1", "route": {}}, 1.0
        )
        await store.put_routes({"c1": Route("c1", (stop,))}, events=[route_event])
        await store.events.append(
            Event(
                "delay",
                (order_topic("o1"), "ops"),
                {"order_id": "o1", "dropoff_eta": 4000.0, "promised_by": 3600.0, "delay_s": 400.0},
                2.0,
            )
        )
        (snap,), _ = await OrderChannel(store, "o1", live.clock).opening(None)
        assert snap["now"] == 1234.5
        assert snap["delay"]["delay_s"] == 400.0
        courier = CourierChannel(store, "c1", live.acknowledge_route, live.clock)
        await store.put_courier(Courier("c1", Place((52.5, 13.4)), 0.0, 0.0, 99999.0))
        (snap,), _ = await courier.opening(None)
        assert snap["acknowledged_route_id"] is None
        route_id = snap["route_id"]
        assert route_id is not None
        assert await courier.receive({"type": "ack", "id": route_id}) is None
        (snap,), _ = await CourierChannel(store, "c1", live.acknowledge_route).opening(None)
        assert snap["acknowledged_route_id"] == route_id
        (snap,), _ = await OpsChannel(store, None, live.clock).opening(None)
        assert [s["order_id"] for s in snap["routes"]["c1"]["stops"]] == ["o1"]
        assert [d["order_id"] for d in snap["delays"]] == ["o1"]

    asyncio.run(run())


def test_a_hub_behind_the_log_sheds_late_positions_never_statuses() -> None:
    """A process that reads events long after they were appended (its CPU saturated)
    sheds the positions among them, except one per courier every stale_position_s, and
    still delivers every status; the lag it reads at is reported. With shedding off,
    the burst's newest fix arrives."""

    async def run(stale_position_s: float | None) -> tuple[Hub, list[float]]:
        store = MemoryStore()
        order = _order()
        await store.put_order(order)
        behind = [0.0]
        hub = Hub(
            store.events,
            stale_position_s=stale_position_s,
            clock=lambda: time.time() + behind[0],
        )
        hub.start()
        out = Collector()
        limits = ChannelLimits(position_interval_s=0.0, heartbeat_s=60)
        task = asyncio.create_task(
            serve_channel(hub, OrderChannel(store, "o1"), out.send, limits=limits)
        )

        def positions() -> list[float]:
            return [f["t"] for f in out.frames if f["type"] == "position"]

        await _until(lambda: out.frames)
        await store.events.append(_position("c1", 10.0))
        await _until(lambda: positions() == [10.0])
        behind[0] = 30.0  # from now on the hub reads every event 30 s after its append
        await store.events.append(_position("c1", 11.0))  # nothing of c1 for 30 s: sent
        await _until(lambda: positions()[-1] == 11.0)
        for i in range(4):  # within 5 s of the last one sent: shed (when shedding)
            await store.events.append(_position("c1", 12.0 + i))
        picked = order.transition("picked_up", 20.0, "c1")
        await store.put_order(picked, events=[order_event("order_picked_up", picked, 20.0)])
        await _until(lambda: any(f.get("status") == "picked_up" for f in out.frames))
        assert hub.lag_s == pytest.approx(30.0, abs=2.0)
        behind[0] = 0.0  # caught up
        await store.events.append(_position("c1", 30.0))
        await _until(lambda: positions()[-1] == 30.0)
        task.cancel()
        await hub.stop()
        return hub, positions()

    hub, seen = asyncio.run(run(5.0))
    assert seen == [10.0, 11.0, 30.0]
    assert hub.positions_shed == 4
    hub, seen = asyncio.run(run(None))
    # nothing shed: the burst's newest fix arrives (latest wins inside the connection)
    assert seen[:2] == [10.0, 11.0] and seen[-2:] == [15.0, 30.0]
    assert hub.positions_shed == 0
    with pytest.raises(ValueError):
        Hub(MemoryStore().events, stale_position_s=0)

"""Reliability of the live service against real processes: an order's whole life over
HTTP and websockets, Redis killed with SIGKILL mid-stream, an API worker killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import websockets

from api.app import create_app
from api.settings import Settings
from dispatch.model import Order, Place
from tests.api.conftest import (
    ORDER,
    SECRET,
    Server,
    auth,
    recv_until,
    start_serve_process,
    stop_process,
    token,
    worker_of,
)
from tests.conftest import RedisServer
from tracking.events import OPS_TOPIC, event_id_key
from tracking.hub import Subscription
from tracking.live import order_event
from tracking.redis_store import RedisStore

OPS = token("ops", "ops-1")


def _gps(lat: float, lon: float, t: float | None = None) -> list[dict[str, Any]]:
    return [
        {
            "t": time.time() if t is None else t,
            "kind": "gps",
            "lat": lat,
            "lon": lon,
            "accuracy": 5.0,
        }
    ]


def _wait(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_order_life_end_to_end(server: Server) -> None:
    """placed -> dispatched -> courier gets the route -> courier moves -> customer sees
    the courier and a changing ETA -> picked up -> delivered, over real HTTP + ws."""
    cust, cour = token("customer", "alice"), token("courier", "c1")
    p, d = ORDER["pickup"], ORDER["dropoff"]

    async def run() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            start = (p["lat"] - 0.02, p["lon"] - 0.02)  # ~2.6 km from the store
            r = await http.post(
                "/v1/couriers/c1/shift",
                headers=auth(cour),
                json={"action": "start", "lat": start[0], "lon": start[1]},
            )
            assert r.status_code == 200, r.text
            async with websockets.connect(f"{server.ws}/v1/couriers/c1/route?token={cour}") as cw:
                snap = json.loads(await cw.recv())
                assert snap["type"] == "snapshot" and snap["route"]["stops"] == []
                r = await http.post(
                    "/v1/orders", json=ORDER, headers={**auth(cust), "Idempotency-Key": "life-1"}
                )
                assert r.status_code == 201, r.text
                oid = r.json()["id"]
                route = await recv_until(cw, lambda f: f["type"] == "route" and f["stops"])
                assert [(s["order_id"], s["kind"]) for s in route["stops"]] == [
                    (oid, "pickup"),
                    (oid, "dropoff"),
                ]
                await cw.send(json.dumps({"type": "ack", "id": route["id"]}))
                ack = await recv_until(cw, lambda f: f["type"] == "ack")
                assert ack["route_id"] == route["id"]

                seen: list[dict[str, Any]] = []
                async with websockets.connect(
                    f"{server.ws}/v1/orders/{oid}/track?token={cust}"
                ) as tw:
                    first = json.loads(await tw.recv())
                    seen.append(first)
                    assert first["type"] == "snapshot"
                    assert first["order"]["status"] == "assigned"
                    assert first["order"]["courier_id"] == "c1"
                    eta0 = first["eta"]["dropoff"]
                    assert eta0 is not None
                    # the courier rides toward the store in 5 steps, a minute apart
                    t0 = time.time() - 420
                    for i in range(1, 6):
                        f = i / 5
                        lat = start[0] + (p["lat"] - start[0]) * f
                        lon = start[1] + (p["lon"] - start[1]) * f
                        r = await http.post(
                            "/v1/couriers/c1/observations",
                            headers=auth(cour),
                            json=_gps(lat, lon, t0 + 60 * i),
                        )
                        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
                        pos = await recv_until(tw, lambda fr: fr["type"] == "position", seen=seen)
                        assert pos["courier_id"] == "c1"
                        assert abs(pos["lat"] - lat) < 1e-3
                    r = await http.post(f"/v1/orders/{oid}/pickup", headers=auth(cour))
                    assert r.status_code == 200, r.text
                    await recv_until(tw, lambda fr: fr.get("status") == "picked_up", seen=seen)
                    for i in range(1, 4):
                        f = i / 3
                        r = await http.post(
                            "/v1/couriers/c1/observations",
                            headers=auth(cour),
                            json=_gps(
                                p["lat"] + (d["lat"] - p["lat"]) * f,
                                p["lon"] + (d["lon"] - p["lon"]) * f,
                                t0 + 300 + 40 * i,
                            ),
                        )
                        assert r.status_code == 200
                        await recv_until(tw, lambda fr: fr["type"] == "position", seen=seen)
                    r = await http.post(f"/v1/orders/{oid}/dropoff", headers=auth(cour))
                    assert r.status_code == 200, r.text
                    await recv_until(tw, lambda fr: fr.get("status") == "delivered", seen=seen)
                etas = [fr["dropoff_eta"] for fr in seen if fr["type"] == "eta"]
                assert etas, "the customer never got an ETA update"
                assert len({round(e) for e in [eta0, *etas]}) >= 2, "the ETA never changed"
                statuses = [fr["status"] for fr in seen if fr["type"] == "status"]
                assert statuses == ["picked_up", "delivered"]
                ids = [fr["id"] for fr in seen if fr["type"] == "status"]
                assert ids == sorted(ids, key=event_id_key)
                final = (await http.get(f"/v1/orders/{oid}", headers=auth(cust))).json()
                assert final["status"] == "delivered" and final["delivered_at"] is not None
                route = await recv_until(cw, lambda fr: fr["type"] == "route" and not fr["stops"])

    asyncio.run(run())


# -- Redis killed mid-stream --------------------------------------------------------------


def test_redis_sigkill_loses_no_acknowledged_order_and_subscribers_resume(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Orders stream in while Redis is SIGKILLed and restarted (AOF, fsync always).

    Every order the API acknowledged (201) exists afterwards, and an ops subscriber that
    resumes with its last event id ends up with an ``order_placed`` frame for each.
    """
    srv = start_serve_process(tmp_path, "--store", redis_server.url)
    cust = token("customer", "bob")
    acked: list[str] = []
    refused = 0
    frames: list[dict[str, Any]] = []

    async def subscriber(stop: asyncio.Event) -> None:
        last: str | None = None
        while not stop.is_set():
            q = f"&last_event_id={last}" if last else ""
            try:
                async with websockets.connect(f"{srv.ws}/v1/ops/live?token={OPS}{q}") as ws:
                    while True:
                        f = json.loads(await ws.recv())
                        frames.append(f)
                        if "id" in f and f["type"] != "position":
                            last = max([last or "0-0", f["id"]], key=event_id_key)
            except (OSError, websockets.ConnectionClosed):
                await asyncio.sleep(0.2)

    async def run() -> None:
        nonlocal refused
        stop = asyncio.Event()
        sub = asyncio.create_task(subscriber(stop))
        async with httpx.AsyncClient(base_url=srv.url, timeout=5) as http:
            for i in range(60):
                if i == 20:
                    redis_server.kill()
                if i == 30:
                    redis_server.start()
                try:
                    r = await http.post(
                        "/v1/orders", json=ORDER, headers={**auth(cust), "Idempotency-Key": f"k{i}"}
                    )
                except httpx.HTTPError:
                    refused += 1
                    continue
                if r.status_code == 201:
                    acked.append(r.json()["id"])
                else:
                    assert r.status_code == 503, r.text  # never a 500, never a silent drop
                    assert r.headers["content-type"].startswith("application/problem+json")
                    refused += 1
                await asyncio.sleep(0.05)
            deadline = time.monotonic() + 15
            placed: set[str] = set()
            while time.monotonic() < deadline:
                placed = {
                    f["order"]["id"]
                    for f in frames
                    if f["type"] == "order" and f["event"] == "order_placed"
                }
                snap = {o["id"] for f in frames if f["type"] == "snapshot" for o in f["orders"]}
                if set(acked) <= placed | snap:
                    break
                await asyncio.sleep(0.2)
            stop.set()
            sub.cancel()
            with contextlib.suppress(BaseException):
                await sub
            for oid in acked:
                r = await http.get(f"/v1/orders/{oid}", headers=auth(cust))
                assert r.status_code == 200, f"acknowledged order {oid} lost: {r.text}"
            assert set(acked) <= placed | snap, "the subscriber missed acknowledged orders"

    try:
        asyncio.run(run())
    finally:
        stop_process(srv.proc)  # type: ignore[arg-type]
    assert refused > 0, "Redis was down for 10 requests; some must have been refused"
    assert len(acked) >= 40

    # what the store holds is what was acknowledged: nothing more, nothing less
    async def count() -> int:
        store = RedisStore.from_url(redis_server.url)
        try:
            return len(await store.list_orders())
        finally:
            await store.aclose()

    assert asyncio.run(count()) >= len(acked)


# -- an API worker killed -----------------------------------------------------------------


def test_killed_worker_clients_resume_on_the_other(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two workers on Redis; SIGKILL the worker serving some customers. They reconnect
    (to the surviving worker) with their last event id and miss no status."""
    srv = start_serve_process(tmp_path, "--store", redis_server.url, "--workers", "2")
    port = int(srv.url.rsplit(":", 1)[1])
    ops = httpx.Client(base_url=srv.url, headers=auth(OPS), timeout=10)
    n = 8
    oids = []
    for i in range(n):
        r = ops.post("/v1/orders", json={**ORDER, "customer_id": f"cust{i}"})
        assert r.status_code == 201, r.text
        oids.append(r.json()["id"])

    got: dict[str, list[str]] = {o: [] for o in oids}
    reconnects: dict[str, int] = dict.fromkeys(oids, 0)

    async def watcher(oid: str, tok: str, ready: asyncio.Event, pids: dict[str, int]) -> None:
        last: str | None = None
        while True:
            q = f"&last_event_id={last}" if last else ""
            try:
                async with websockets.connect(
                    f"{srv.ws}/v1/orders/{oid}/track?token={tok}{q}"
                ) as ws:
                    pid = worker_of(ws.local_address[1], port)
                    if pid is not None:
                        pids[oid] = pid
                    while True:
                        f = json.loads(await ws.recv())
                        if f["type"] == "status":
                            got[oid].append(f["status"])
                        if "id" in f and f["type"] != "position":
                            last = max([last or "0-0", f["id"]], key=event_id_key)
                        # ready once the opening frame is in: every watcher then holds an
                        # id to resume from (a watcher that reconnected without one would
                        # get a fresh snapshot, not the missed status frames under test)
                        ready.set()
                        if f["type"] == "status" and f["status"] == "cancelled":
                            return
            except (OSError, websockets.ConnectionClosed):
                reconnects[oid] += 1
                await asyncio.sleep(0.1)

    async def run() -> None:
        pids: dict[str, int] = {}
        readies = [asyncio.Event() for _ in oids]
        tasks = [
            asyncio.create_task(watcher(o, token("customer", f"cust{i}"), readies[i], pids))
            for i, o in enumerate(oids)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies)), 15)
        victims = {pids[o] for o in oids if o in pids}
        assert len(pids) == n, "could not map every connection to its worker"
        victim = max(victims, key=lambda pid: sum(1 for o in oids if pids[o] == pid))
        on_victim = [o for o in oids if pids[o] == victim]
        os.kill(victim, signal.SIGKILL)
        # statuses change while the victims are reconnecting (fresh connections: the
        # pooled ones may have been to the killed worker)
        async with httpx.AsyncClient(base_url=srv.url, headers=auth(OPS), timeout=10) as http:
            for o in oids:
                r = await http.post(f"/v1/orders/{o}/cancel", json={})
                assert r.status_code == 200, r.text
        await asyncio.wait_for(asyncio.gather(*tasks), 60)  # a restart on a loaded machine
        for o in on_victim:
            assert reconnects[o] >= 1, f"{o} was on the killed worker but never reconnected"
        for o in oids:
            assert got[o][-1] == "cancelled", (o, got[o])
            assert got[o].count("cancelled") == 1

    try:
        asyncio.run(run())
    finally:
        ops.close()
        stop_process(srv.proc)  # type: ignore[arg-type]


def test_track_while_redis_is_down_says_retry_not_unknown(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A customer opening their tracking socket while the store is down must be told to
    retry (1013), never that their order does not exist (4404); once Redis is back the
    same socket URL serves the snapshot."""
    srv = start_serve_process(tmp_path, "--store", redis_server.url)
    cust = token("customer", "bob")
    try:
        with srv.client(cust) as http:
            r = http.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "k-down"})
            assert r.status_code == 201, r.text
            oid = r.json()["id"]
        url = f"{srv.ws}/v1/orders/{oid}/track?token={cust}"

        async def first_frame() -> dict[str, Any] | int:
            try:
                async with websockets.connect(url, open_timeout=10) as ws:
                    while True:  # a refusal comes as an error frame, then the close
                        f = dict(json.loads(await asyncio.wait_for(ws.recv(), 15)))
                        if f["type"] != "error":
                            return f
            except websockets.ConnectionClosed as e:
                return e.rcvd.code if e.rcvd is not None else -1

        redis_server.kill()
        assert asyncio.run(first_frame()) == 1013
        redis_server.start()
        deadline = time.monotonic() + 20
        while (got := asyncio.run(first_frame())) == 1013 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert isinstance(got, dict) and got["type"] == "snapshot", got
    finally:
        assert srv.proc is not None
        stop_process(srv.proc)


def test_fan_out_and_lease_do_not_wait_for_the_request_pool(redis_server: RedisServer) -> None:
    """With every pooled request connection busy (a burst of requests), events still
    reach subscribers and the dispatcher's lease still renews: they have their own
    connections. Sharing the pool stopped fan-out and lost the lease under load."""

    async def run() -> None:
        app = create_app(Settings(secret=SECRET, store=redis_server.url, redis_connections=1))
        svc = app.state.svc
        async with app.router.lifespan_context(app):
            lease = svc.loop.leadership
            deadline = time.monotonic() + 5
            while not await lease.client.exists(lease.key) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # the dispatch loop takes the lease
            pool = svc.store.client.connection_pool
            held = await pool.get_connection()  # the whole request pool
            other = RedisStore.from_url(redis_server.url)  # another worker writes
            try:
                sub = Subscription([OPS_TOPIC])
                svc.hub.attach(sub)
                placed = _placed_order()
                await other.put_order(placed, events=[order_event("order_placed", placed, 0.0)])
                deadline = time.monotonic() + 5
                while not sub.queue and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert sub.queue, "the hub stopped while the request pool was busy"
                assert await asyncio.wait_for(lease.renew(), 3)
            finally:
                await pool.release(held)
                await other.aclose()

    asyncio.run(run())


def _placed_order() -> Order:
    return Order("o-pool", Place((52.52, 13.40)), Place((52.53, 13.42)), 0.0, 0.0, 3600.0)

"""The access matrix: every REST endpoint and websocket channel against every role.

One module-scoped server holds the world the matrix is checked against: customer
``alice`` owns ORDER_ID (assigned to courier ``bob``), customer ``carol`` owns another
order that ``bob`` also carries, courier ``dave`` has neither. Each row of ``REST`` and
``WS`` is an endpoint; each column a caller (``ROLES``). Endpoints that change an order
get a fresh one per case, so a wrongly allowed call shows up in its own case only.

Expected: ops may do everything; a customer only their own orders and tracking; a
courier only their own state and route and the orders assigned to them; a viewer (share
link) only GET and track of its one order, until it expires; 401 for a missing, garbage,
forged or expired token; 403 for what is not yours. Websocket refusals close with 4401,
4403 or 4404.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.auth import create_token
from api.settings import Settings
from dispatch.dispatcher import DispatchSettings
from tests.api.conftest import ORDER, SECRET, Server, auth, recv_until, token, wait_ready
from tests.conftest import free_port
from tracking.store import MemoryStore

ALICE, CAROL, BOB, DAVE, OPS = "alice", "carol", "bob", "dave", "ops-1"
NEAR_PICKUP = {"lat": 52.5205, "lon": 13.4055}
CAROLS_ORDER = {
    "pickup": {"lat": 52.5210, "lon": 13.4060},
    "dropoff": {"lat": 52.5412, "lon": 13.3777},
}
BERLIN = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "berlin",
            "properties": {},
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[13.0, 52.3], [13.8, 52.3], [13.8, 52.7], [13.0, 52.7], [13.0, 52.3]]
                ],
            },
        }
    ],
}

ROLES = (
    "owner",  # customer alice, who placed the order
    "other_customer",  # customer carol
    "courier",  # courier bob, assigned to the order
    "other_courier",  # courier dave
    "ops",
    "viewer",  # share-link token for the order
    "other_viewer",  # share-link token for carol's order
    "no_token",
    "garbage",  # not a JWT
    "forged",  # an ops JWT signed with another secret
    "expired",  # an ops token past its exp
    "expired_viewer",  # the order's share link, expired
)
OK = 0
"""Websocket accepted: the first frame is a snapshot."""

# fmt: off
Y, N, U = 200, 403, 401  # allowed, forbidden (not yours / not your role), unauthenticated
# Columns (ROLES): owner, other_customer, courier, other_courier, ops, viewer, other_viewer,
#                  no_token, garbage, forged, expired, expired_viewer
REST: dict[str, tuple[int, ...]] = {
    "POST /v1/orders":                            (201, 201, N, N, 201, N, N, U, U, U, U, U),
    "GET /v1/orders":                             (Y, Y, Y, Y, Y, N, N, U, U, U, U, U),
    "GET /v1/orders/{order_id}":                  (Y, N, Y, N, Y, Y, N, U, U, U, U, U),
    "POST /v1/orders/{order_id}/cancel":          (Y, N, N, N, Y, N, N, U, U, U, U, U),
    "POST /v1/orders/{order_id}/share":           (Y, N, N, N, Y, N, N, U, U, U, U, U),
    "POST /v1/orders/{order_id}/pickup":          (N, N, Y, N, Y, N, N, U, U, U, U, U),
    "POST /v1/orders/{order_id}/dropoff":         (N, N, Y, N, Y, N, N, U, U, U, U, U),
    "POST /v1/couriers/{courier_id}/shift":       (N, N, Y, N, Y, N, N, U, U, U, U, U),
    "GET /v1/couriers/{courier_id}":              (N, N, Y, N, Y, N, N, U, U, U, U, U),
    "GET /v1/couriers/{courier_id}/route":        (N, N, Y, N, Y, N, N, U, U, U, U, U),
    "POST /v1/couriers/{courier_id}/observations": (N, N, Y, N, Y, N, N, U, U, U, U, U),
    "GET /v1/fleet":                              (N, N, N, N, Y, N, N, U, U, U, U, U),
    "GET /v1/zones":                              (N, N, N, N, Y, N, N, U, U, U, U, U),
    "PUT /v1/zones":                              (N, N, N, N, Y, N, N, U, U, U, U, U),
    "GET /v1/dispatch/settings":                  (N, N, N, N, Y, N, N, U, U, U, U, U),
    "PUT /v1/dispatch/settings":                  (N, N, N, N, Y, N, N, U, U, U, U, U),
}
WN, WU = 4403, 4401  # websocket close codes: not yours, unauthenticated
WS: dict[str, tuple[int, ...]] = {
    "/v1/orders/{order_id}/track":     (OK, WN, WN, WN, OK, OK, WN, WU, WU, WU, WU, WU),
    "/v1/couriers/{courier_id}/route": (WN, WN, OK, WN, OK, WN, WN, WU, WU, WU, WU, WU),
    "/v1/ops/live":                    (WN, WN, WN, WN, OK, WN, WN, WU, WU, WU, WU, WU),
}
# fmt: on

ORDER_MUTATIONS = {
    "POST /v1/orders/{order_id}/cancel": "assigned",
    "POST /v1/orders/{order_id}/pickup": "assigned",
    "POST /v1/orders/{order_id}/dropoff": "picked_up",
}
"""Endpoints that change the order they name: each case gets a fresh order in this state."""


def body_for(endpoint: str) -> Any:
    now = time.time()
    return {
        "POST /v1/orders": ORDER,
        "POST /v1/orders/{order_id}/cancel": {"reason": "changed my mind"},
        "POST /v1/orders/{order_id}/share": {"ttl_s": 600},
        "POST /v1/orders/{order_id}/pickup": {"override_reason": "matrix test"},
        "POST /v1/orders/{order_id}/dropoff": {"override_reason": "matrix test"},
        "POST /v1/couriers/{courier_id}/shift": {"action": "start", **NEAR_PICKUP, "capacity": 50},
        "POST /v1/couriers/{courier_id}/observations": [
            {"t": now, "kind": "gps", **NEAR_PICKUP, "accuracy": 5.0}
        ],
        "PUT /v1/zones": BERLIN,
        "PUT /v1/dispatch/settings": {"solve_time_limit_s": 0.3},
    }.get(endpoint)


# -- the world -------------------------------------------------------------------------


def expired_token(role: str, subject: str, order_id: str | None = None) -> str:
    return create_token(SECRET, role, subject, 60, order_id=order_id, now=time.time() - 3600)  # type: ignore[arg-type]


def forged_token() -> str:
    now = int(time.time())
    claims = {"sub": OPS, "role": "ops", "iat": now, "exp": now + 3600}
    return jwt.encode(claims, "another-secret-0123456789abcdef-0123456789", algorithm="HS256")


def bearer(role: str, order_id: str, other_order_id: str) -> str | None:
    """The token ``role`` presents when it asks about ``order_id``."""
    match role:
        case "owner":
            return token("customer", ALICE)
        case "other_customer":
            return token("customer", CAROL)
        case "courier":
            return token("courier", BOB)
        case "other_courier":
            return token("courier", DAVE)
        case "ops":
            return token("ops", OPS)
        case "viewer":
            return token("viewer", ALICE, order_id=order_id)
        case "other_viewer":
            return token("viewer", CAROL, order_id=other_order_id)
        case "no_token":
            return None
        case "garbage":
            return "not-a-token"
        case "forged":
            return forged_token()
        case "expired":
            return expired_token("ops", OPS)
        case "expired_viewer":
            return expired_token("viewer", ALICE, order_id)
    raise AssertionError(role)


def headers_for(tok: str | None) -> dict[str, str]:
    return auth(tok) if tok else {}


def wait_status(
    c: httpx.Client, order_id: str, status: str, timeout: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc: dict[str, Any] = c.get(f"/v1/orders/{order_id}").json()
        if doc.get("status") == status:
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} not {status} after {timeout} s: {doc}")
        time.sleep(0.02)


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    doc: dict[str, Any] = r.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(doc), doc
    assert doc["status"] == status
    assert doc["instance"] == r.request.url.path
    return doc


@dataclass
class World:
    server: Server
    order_id: str
    """alice's order, assigned to bob."""
    other_order_id: str
    """carol's order, also assigned to bob."""
    made: list[str] = field(default_factory=list)

    def ops(self) -> httpx.Client:
        return self.server.client(token("ops", OPS))

    def fresh_order(self, state: str) -> str:
        """A new order of alice's, assigned to bob and, if asked, picked up."""
        with self.server.client(token("customer", ALICE)) as alice, self.ops() as ops:
            r = alice.post("/v1/orders", json=ORDER)
            assert r.status_code == 201, r.text
            oid: str = r.json()["id"]
            self.made.append(oid)
            assert wait_status(ops, oid, "assigned")["courier_id"] == BOB
            if state == "picked_up":
                r = ops.post(f"/v1/orders/{oid}/pickup", json={"override_reason": "setup"})
                assert r.status_code == 200, r.text
        return oid

    def finish(self, order_id: str) -> None:
        """Close an order a case made (so bob's route stays short)."""
        with self.ops() as ops:
            status = ops.get(f"/v1/orders/{order_id}").json()["status"]
            if status in ("placed", "assigned"):
                ops.post(f"/v1/orders/{order_id}/cancel")
            elif status == "picked_up":
                ops.post(f"/v1/orders/{order_id}/dropoff", json={"override_reason": "cleanup"})


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    settings = Settings(secret=SECRET, position_interval_s=0.2, heartbeat_s=5.0)
    app = create_app(
        settings, store=MemoryStore(), dispatch_settings=DispatchSettings(solve_time_limit_s=0.3)
    )
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        server = Server(url, app=app)
        with server.client(token("courier", BOB)) as bob:
            r = bob.post(
                f"/v1/couriers/{BOB}/shift", json={"action": "start", **NEAR_PICKUP, "capacity": 50}
            )
            assert r.status_code == 200, r.text
        with (
            server.client(token("customer", ALICE)) as alice,
            server.client(token("customer", CAROL)) as carol,
            server.client(token("ops", OPS)) as ops,
        ):
            mine = alice.post("/v1/orders", json=ORDER).json()["id"]
            theirs = carol.post("/v1/orders", json=CAROLS_ORDER).json()["id"]
            for oid in (mine, theirs):
                assert wait_status(ops, oid, "assigned")["courier_id"] == BOB
        yield World(server, mine, theirs)
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


# -- REST ------------------------------------------------------------------------------

REST_CASES = [
    pytest.param(endpoint, role, expected[i], id=f"{endpoint}-{role}")
    for endpoint, expected in REST.items()
    for i, role in enumerate(ROLES)
]


def test_matrix_is_complete() -> None:
    endpoints = {
        "POST /v1/orders",
        "GET /v1/orders",
        "GET /v1/orders/{order_id}",
        "POST /v1/orders/{order_id}/cancel",
        "POST /v1/orders/{order_id}/share",
        "POST /v1/orders/{order_id}/pickup",
        "POST /v1/orders/{order_id}/dropoff",
        "POST /v1/couriers/{courier_id}/shift",
        "GET /v1/couriers/{courier_id}",
        "GET /v1/couriers/{courier_id}/route",
        "POST /v1/couriers/{courier_id}/observations",
        "GET /v1/fleet",
        "GET /v1/zones",
        "PUT /v1/zones",
        "GET /v1/dispatch/settings",
        "PUT /v1/dispatch/settings",
    }
    assert set(REST) == endpoints
    assert set(WS) == {
        "/v1/orders/{order_id}/track",
        "/v1/couriers/{courier_id}/route",
        "/v1/ops/live",
    }
    assert all(len(row) == len(ROLES) for row in (*REST.values(), *WS.values()))


@pytest.mark.parametrize(("endpoint", "role", "expected"), REST_CASES)
def test_rest_access(world: World, endpoint: str, role: str, expected: int) -> None:
    method, template = endpoint.split(" ")
    state = ORDER_MUTATIONS.get(endpoint)
    order_id = world.fresh_order(state) if state else world.order_id
    path = template.format(order_id=order_id, courier_id=BOB)
    tok = bearer(role, order_id, world.other_order_id)
    body = body_for(endpoint)
    try:
        with world.server.client() as c:
            r = c.request(method, path, json=body, headers=headers_for(tok))
        if expected >= 400:
            doc = assert_problem(r, expected)
            if expected == 401:
                assert r.headers.get("www-authenticate") == "Bearer"
                assert doc["reason"] in {"missing_token", "invalid_token", "token_expired"}
            return
        assert r.status_code == expected, r.text
        check_success(world, endpoint, role, order_id, r.json())
    finally:
        if state:
            world.finish(order_id)
        if endpoint == "POST /v1/orders" and r.status_code == 201:
            world.finish(r.json()["id"])


def check_success(world: World, endpoint: str, role: str, order_id: str, doc: Any) -> None:
    """What an allowed call returns is the caller's, and only the caller's."""
    if endpoint == "POST /v1/orders":
        owner = {"owner": ALICE, "other_customer": CAROL, "ops": OPS}[role]
        assert doc["customer_id"] == owner and doc["status"] == "placed"
    elif endpoint == "GET /v1/orders":
        sees = {
            "owner": {world.order_id},
            "other_customer": {world.other_order_id},
            "courier": {world.order_id, world.other_order_id},
            "other_courier": set(),
            "ops": {world.order_id, world.other_order_id},
        }[role]
        ids = {o["id"] for o in doc["orders"]}
        assert ids & {world.order_id, world.other_order_id} == sees
        if role in ("owner", "other_customer"):
            customer = ALICE if role == "owner" else CAROL
            assert all(o["customer_id"] == customer for o in doc["orders"])
        if role in ("courier", "other_courier"):
            courier = BOB if role == "courier" else DAVE
            assert all(o["courier_id"] == courier for o in doc["orders"])
    elif endpoint == "GET /v1/orders/{order_id}":
        assert doc["id"] == order_id and doc["courier_id"] == BOB
    elif endpoint.endswith("/cancel"):
        assert doc["id"] == order_id and doc["status"] == "cancelled"
    elif endpoint.endswith("/share"):
        link = doc["token"]
        assert doc["url"].endswith(f"/track/{order_id}?token={link}")
        with world.server.client(link) as viewer:
            assert viewer.get(f"/v1/orders/{order_id}").status_code == 200
            assert viewer.get(f"/v1/orders/{world.other_order_id}").status_code == 403
            assert viewer.post(f"/v1/orders/{order_id}/cancel").status_code == 403
    elif endpoint.endswith("/pickup"):
        assert doc["order"]["id"] == order_id and doc["order"]["status"] == "picked_up"
    elif endpoint.endswith("/dropoff"):
        assert doc["order"]["id"] == order_id and doc["order"]["status"] == "delivered"
    elif endpoint.endswith("/shift") or endpoint == "GET /v1/couriers/{courier_id}":
        assert doc["id"] == BOB and doc["on_shift"] is True
    elif endpoint.endswith("/route"):
        assert doc["courier_id"] == BOB
        assert {s["order_id"] for s in doc["stops"]} >= {world.order_id}
    elif endpoint.endswith("/observations"):
        assert doc["accepted"] == 1 and doc["rejected"] == []
    elif endpoint == "GET /v1/fleet":
        assert BOB in {c["id"] for c in doc["couriers"]}
    elif endpoint.endswith("/zones"):
        assert doc["type"] == "FeatureCollection"
    elif endpoint.endswith("/settings"):
        assert doc["solve_time_limit_s"] == pytest.approx(0.3)
    else:
        raise AssertionError(f"no check for {endpoint}")


# -- websockets ------------------------------------------------------------------------


async def ws_outcome(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """(OK, snapshot) when the channel opens; (close code, error frame) when refused."""
    async with connect(url, additional_headers=headers, open_timeout=5, close_timeout=2) as ws:
        first: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if first.get("type") == "snapshot":
            return OK, first
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        rcvd = closed.value.rcvd
        assert rcvd is not None, "the server must close with a code"
        return rcvd.code, first


def ws_target(world: World, channel: str, role: str, via: str) -> tuple[str, dict[str, str]]:
    tok = bearer(role, world.order_id, world.other_order_id)
    path = channel.format(order_id=world.order_id, courier_id=BOB)
    url = f"{world.server.ws}{path}"
    if via == "query":
        return (url + f"?token={tok}" if tok else url), {}
    return url, headers_for(tok)


WS_CASES = [
    pytest.param(channel, role, via, expected[i], id=f"{channel}-{role}-{via}")
    for channel, expected in WS.items()
    for i, role in enumerate(ROLES)
    for via in ("query", "header")
]


@pytest.mark.parametrize(("channel", "role", "via", "expected"), WS_CASES)
def test_websocket_access(world: World, channel: str, role: str, via: str, expected: int) -> None:
    url, headers = ws_target(world, channel, role, via)
    code, first = asyncio.run(ws_outcome(url, headers))
    assert code == expected, first
    if expected != OK:
        assert first["type"] == "error" and first["code"] == expected
        return
    if channel.endswith("/track"):
        assert first["order"]["id"] == world.order_id
        assert all(s["order_id"] == world.order_id for s in first["stops"])
    elif channel.endswith("/route"):
        assert first["courier"]["id"] == BOB
        assert world.order_id in {s["order_id"] for s in first["route"]["stops"]}
    else:
        assert {world.order_id, world.other_order_id} <= {o["id"] for o in first["orders"]}


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("/v1/orders/o-nonexistent/track", "ops"),
        ("/v1/orders/o-nonexistent/track", "owner"),
        ("/v1/couriers/nobody/route", "ops"),
    ],
)
def test_websocket_unknown_ids_close_4404(world: World, path: str, role: str) -> None:
    tok = bearer(role, world.order_id, world.other_order_id)
    code, first = asyncio.run(ws_outcome(f"{world.server.ws}{path}?token={tok}", {}))
    assert (code, first["code"]) == (4404, 4404)


def test_websocket_unknown_courier_asking_for_itself_closes_4404(world: World) -> None:
    tok = token("courier", "nobody")
    code, _ = asyncio.run(ws_outcome(f"{world.server.ws}/v1/couriers/nobody/route?token={tok}", {}))
    assert code == 4404


def test_bad_authorization_schemes_are_401(world: World) -> None:
    ops = token("ops", OPS)
    for value in (f"Basic {ops}", "Bearer", ops, f"Token {ops}", f"Bearer {ops}x"):
        with world.server.client() as c:
            r = c.get("/v1/fleet", headers={"Authorization": value})
        assert_problem(r, 401)


def test_token_claims_are_checked(world: World) -> None:
    """Well-signed tokens that do not name a valid role and subject are refused."""
    now = int(time.time())
    bad_claims: list[dict[str, Any]] = [
        {"sub": OPS, "role": "admin", "exp": now + 60},  # no such role
        {"sub": "", "role": "ops", "exp": now + 60},
        {"role": "ops", "exp": now + 60},
        {"sub": OPS, "role": "ops"},  # never expires
        {"sub": ALICE, "role": "viewer", "exp": now + 60},  # a viewer of nothing
        {"sub": ALICE, "role": "customer", "exp": now + 60, "ord": 5},  # only viewers
        {"sub": ALICE, "role": "viewer", "exp": now + 60, "ord": ""},
        {"sub": ALICE, "role": "viewer", "exp": now + 60, "ord": None},
    ]
    for claims in bad_claims:
        forged = jwt.encode(claims, SECRET, algorithm="HS256")
        with world.server.client(forged) as c:
            assert_problem(c.get(f"/v1/orders/{world.order_id}"), 401)
    none_alg = jwt.encode({"sub": OPS, "role": "ops", "exp": now + 60}, None, algorithm="none")
    with world.server.client(none_alg) as c:
        assert_problem(c.get("/v1/fleet"), 401)


# -- privacy and expiry ----------------------------------------------------------------


def test_tracking_never_carries_another_orders_data(server: Server) -> None:
    """alice and her share link follow her order while bob also carries carol's orders:
    positions and routes flow, but no frame names carol's orders, carol or her places."""
    bob_c = server.client(token("courier", BOB))
    ops = server.client(token("ops", OPS))
    alice = server.client(token("customer", ALICE))
    carol = server.client(token("customer", CAROL))
    assert bob_c.post(
        f"/v1/couriers/{BOB}/shift", json={"action": "start", **NEAR_PICKUP}
    ).is_success
    mine = alice.post("/v1/orders", json=ORDER).json()["id"]
    theirs = carol.post("/v1/orders", json=CAROLS_ORDER).json()["id"]
    for oid in (mine, theirs):
        assert wait_status(ops, oid, "assigned")["courier_id"] == BOB
    link = alice.post(f"/v1/orders/{mine}/share").json()["token"]
    later: list[str] = []

    def activity() -> None:
        """Everything that touches bob and carol's orders, then alice's order ends."""
        t = time.time()
        for i, (lat, lon) in enumerate([(52.5206, 13.4056), (52.5208, 13.4058)]):
            fix = {"t": t + i, "kind": "gps", "lat": lat, "lon": lon, "accuracy": 5.0}
            assert bob_c.post(f"/v1/couriers/{BOB}/observations", json=[fix]).is_success
            time.sleep(0.3)
        override = {"override_reason": "privacy test"}
        assert bob_c.post(f"/v1/orders/{theirs}/pickup", json=override).is_success
        third = carol.post("/v1/orders", json=CAROLS_ORDER).json()["id"]
        later.append(third)
        assert wait_status(ops, third, "assigned")["courier_id"] == BOB
        time.sleep(0.3)
        assert carol.post(f"/v1/orders/{third}/cancel", json={"reason": "carol"}).is_success
        assert bob_c.post(f"/v1/orders/{theirs}/dropoff", json=override).is_success
        assert bob_c.post(f"/v1/orders/{mine}/pickup", json=override).is_success
        assert bob_c.post(f"/v1/orders/{mine}/dropoff", json=override).is_success

    async def follow(tok: str, started: asyncio.Event) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        url = f"{server.ws}/v1/orders/{mine}/track?token={tok}"
        async with connect(url) as ws:
            await recv_until(ws, lambda f: f["type"] == "snapshot", seen=seen)
            started.set()
            await recv_until(
                ws, lambda f: f["type"] == "status" and f["status"] == "delivered", 20, seen
            )
        return seen

    async def scenario() -> list[list[dict[str, Any]]]:
        ready = [asyncio.Event(), asyncio.Event()]
        watchers = [
            asyncio.create_task(follow(tok, ev))
            for tok, ev in zip((token("customer", ALICE), link), ready, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in ready)), 10)
        await asyncio.to_thread(activity)
        return list(await asyncio.gather(*watchers))

    try:
        streams = asyncio.run(scenario())
    finally:
        for c in (bob_c, ops, alice, carol):
            c.close()
    secrets = [theirs, *later, CAROL, "52.5412", "13.3777"]
    for frames in streams:
        kinds = {f["type"] for f in frames}
        assert {"snapshot", "position", "status"} <= kinds, kinds  # the filters were exercised
        for f in frames:
            text = json.dumps(f)
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"frame leaks {leaked}: {text}"
            if "order" in f:
                assert f["order"]["id"] == mine
            for stop in f.get("stops") or []:
                assert stop["order_id"] == mine
            if f["type"] == "position":
                assert f["courier_id"] == BOB
        statuses = [f["status"] for f in frames if f["type"] == "status"]
        assert statuses[-2:] == ["picked_up", "delivered"]


def test_expired_viewer_is_cut_off(server: Server) -> None:
    """A share link reads its order until it expires: REST then answers 401, and an open
    tracking socket is closed with 4401 when the link runs out."""
    with (
        server.client(token("courier", BOB)) as bob,
        server.client(token("customer", ALICE)) as alice,
    ):
        assert bob.post(
            f"/v1/couriers/{BOB}/shift", json={"action": "start", **NEAR_PICKUP}
        ).is_success
        oid = alice.post("/v1/orders", json=ORDER).json()["id"]
        before = time.time()
        r = alice.post(f"/v1/orders/{oid}/share", json={"ttl_s": 1.5})
        after = time.time()
        assert r.status_code == 200, r.text
        link, expires_at = r.json()["token"], r.json()["expires_at"]
    assert before + 1.5 <= expires_at <= after + 2.5  # whole seconds, rounded up
    assert jwt.decode(link, SECRET, algorithms=["HS256"])["exp"] == expires_at
    with server.client(link) as viewer:
        assert viewer.get(f"/v1/orders/{oid}").status_code == 200

    async def watch() -> tuple[float, int | None]:
        async with connect(f"{server.ws}/v1/orders/{oid}/track?token={link}") as ws:
            await recv_until(ws, lambda f: f["type"] == "snapshot")
            with pytest.raises(ConnectionClosed) as closed:
                await recv_until(ws, lambda f: False, timeout=10)
        rcvd = closed.value.rcvd
        return time.time(), None if rcvd is None else rcvd.code

    closed_at, code = asyncio.run(watch())
    assert code == 4401
    assert expires_at - 0.5 <= closed_at <= expires_at + 2.0
    with server.client(link) as viewer:
        doc = assert_problem(viewer.get(f"/v1/orders/{oid}"), 401)
        assert doc["reason"] == "token_expired"


def test_sub_second_share_link_is_usable(server: Server) -> None:
    with server.client(token("customer", ALICE)) as alice:
        oid = alice.post("/v1/orders", json=ORDER).json()["id"]
        r = alice.post(f"/v1/orders/{oid}/share", json={"ttl_s": 0.5})
    assert r.status_code == 200, r.text
    with server.client(r.json()["token"]) as viewer:
        assert viewer.get(f"/v1/orders/{oid}").status_code == 200


def test_courier_sees_orders_only_while_theirs(world: World) -> None:
    """A courier's GET is allowed for orders assigned to them, not other couriers'."""
    with world.server.client(token("courier", DAVE)) as dave, world.ops() as ops:
        assert ops.post(
            f"/v1/couriers/{DAVE}/shift", json={"action": "start", "lat": 48.1, "lon": 11.5}
        ).is_success
        try:
            assert_problem(dave.get(f"/v1/orders/{world.order_id}"), 403)
            assert_problem(dave.post(f"/v1/orders/{world.order_id}/pickup", json={}), 403)
            assert dave.get(f"/v1/couriers/{DAVE}").status_code == 200
            assert dave.get(f"/v1/couriers/{DAVE}/route").json() == {
                "courier_id": DAVE,
                "stops": [],
            }
            assert_problem(dave.get(f"/v1/couriers/{BOB}/route"), 403)
        finally:
            ops.post(f"/v1/couriers/{DAVE}/shift", json={"action": "end"})

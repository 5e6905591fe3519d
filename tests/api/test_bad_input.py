"""Bad input gets an RFC 9457 problem (application/problem+json with type, title, status,
detail and instance) with the right 4xx, and never a 5xx: non-finite and out-of-range
numbers, absurd times, oversized bodies and batches, unknown ids, illegal status changes,
malformed JSON, wrong content types, unknown fields; malformed websocket frames and
resume ids; Idempotency-Key retries, sequential and concurrent."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.settings import Settings
from dispatch.dispatcher import DispatchSettings
from tests.api.conftest import ORDER, SECRET, Server, recv_until, token, wait_ready
from tests.conftest import free_port
from tracking.store import MemoryStore

OPS = token("ops", "ops-1")
BOB = "bob"
NEAR_PICKUP = {"lat": 52.5205, "lon": 13.4055}
LIMIT = 1_000_000
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


@dataclass
class Api:
    server: Server
    made: list[str] = field(default_factory=list)

    def ops(self) -> httpx.Client:
        return self.server.client(OPS)

    def order(self, state: str = "assigned", customer: str = "alice") -> str:
        """A new order, assigned to bob and then moved to ``state``."""
        with self.server.client(token("customer", customer)) as c, self.ops() as ops:
            r = c.post("/v1/orders", json=ORDER)
            assert r.status_code == 201, r.text
            oid: str = r.json()["id"]
            self.made.append(oid)
            wait_status(ops, oid, "assigned")
            steps = {
                "assigned": [],
                "picked_up": ["pickup"],
                "delivered": ["pickup", "dropoff"],
                "cancelled": ["cancel"],
            }[state]
            for step in steps:
                body = None if step == "cancel" else {"override_reason": "setup"}
                r = ops.post(f"/v1/orders/{oid}/{step}", json=body)
                assert r.status_code == 200, r.text
        return oid

    def tidy(self) -> None:
        """Close the orders a test left open (bob's route stays short)."""
        with self.ops() as ops:
            for oid in self.made:
                status = ops.get(f"/v1/orders/{oid}").json()["status"]
                if status in ("placed", "assigned"):
                    ops.post(f"/v1/orders/{oid}/cancel")
                elif status == "picked_up":
                    ops.post(f"/v1/orders/{oid}/dropoff", json={"override_reason": "tidy"})
        self.made.clear()


@pytest.fixture(scope="module")
def shared() -> Iterator[Api]:
    settings = Settings(secret=SECRET, position_interval_s=0.2, heartbeat_s=5.0)
    app = create_app(
        settings, store=MemoryStore(), dispatch_settings=DispatchSettings(solve_time_limit_s=0.3)
    )
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=65_536)
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        server = Server(url, app=app)
        with server.client(token("courier", BOB)) as bob:
            shift = {"action": "start", **NEAR_PICKUP, "capacity": 50}
            assert bob.post(f"/v1/couriers/{BOB}/shift", json=shift).status_code == 200
        yield Api(server)
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def api(shared: Api) -> Iterator[Api]:
    yield shared
    shared.tidy()


def wait_status(c: httpx.Client, order_id: str, status: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while c.get(f"/v1/orders/{order_id}").json().get("status") != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} not {status} after {timeout} s")
        time.sleep(0.02)


def assert_problem(r: httpx.Response, status: int, reason: str | None = None) -> dict[str, Any]:
    """``r`` is an RFC 9457 problem with this status (and reason slug, if given)."""
    assert r.status_code == status, f"{r.status_code} {r.text[:500]}"
    assert r.headers["content-type"].split(";")[0] == "application/problem+json", r.headers
    doc: dict[str, Any] = r.json()
    assert set(doc) >= PROBLEM_KEYS, doc
    assert doc["status"] == status
    assert doc["instance"] == r.request.url.path
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["detail"], str) and doc["detail"]
    assert doc["type"] == f"/problems/{doc['reason']}"
    if reason is not None:
        assert doc["reason"] == reason, doc
    return doc


def raw(
    api: Api,
    method: str,
    path: str,
    body: bytes | str,
    content_type: str = "application/json",
    tok: str = OPS,
) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    headers = {"Authorization": f"Bearer {tok}", "Content-Type": content_type}
    with api.server.client() as c:
        return c.request(method, path, content=content, headers=headers)


def order_doc(**changes: Any) -> dict[str, Any]:
    return {**ORDER, **changes}


# -- numbers ---------------------------------------------------------------------------

NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, "-" + "9" * 400]
"""JSON has no NaN or infinities, but parsers take them; an integer of 400 digits is
valid JSON that Python parses exactly and no float can hold."""
X = "__number__"
"""Where a raw number literal goes (json.dumps cannot write NaN into a chosen slot)."""


def fix_with(**fields: Any) -> list[dict[str, Any]]:
    return [{"t": time.time(), "kind": "gps", **NEAR_PICKUP, "accuracy": 5.0, **fields}]


NUMBER_SLOTS: dict[str, tuple[str, str, Any]] = {
    "order pickup.lat": ("POST", "/v1/orders", order_doc(pickup={"lat": X, "lon": 13.4})),
    "order dropoff.lon": ("POST", "/v1/orders", order_doc(dropoff={"lat": 52.5, "lon": X})),
    "order ready_at": ("POST", "/v1/orders", order_doc(ready_at=X)),
    "order promised_by": ("POST", "/v1/orders", order_doc(promised_by=X)),
    "order service time": ("POST", "/v1/orders", order_doc(pickup_service_s=X)),
    "order size": ("POST", "/v1/orders", order_doc(size=X)),
    "shift lat": ("POST", "/v1/couriers/carl/shift", {"action": "start", "lat": X, "lon": 13.4}),
    "shift end": ("POST", "/v1/couriers/carl/shift", {"action": "start", "shift_end": X}),
    "share ttl": ("POST", "/v1/orders/{order}/share", {"ttl_s": X}),
    "settings": ("PUT", "/v1/dispatch/settings", {"replan_every_s": X}),
    "zones": (
        "PUT",
        "/v1/zones",
        {"type": "Polygon", "coordinates": [[[13, 52], [X, 52], [14, 53], [13, 52]]]},
    ),
    "observation t": ("POST", "/v1/couriers/bob/observations", fix_with(t=X)),
    "observation lat": ("POST", "/v1/couriers/bob/observations", fix_with(lat=X)),
    "observation accuracy": ("POST", "/v1/couriers/bob/observations", fix_with(accuracy=X)),
    "observation speed": ("POST", "/v1/couriers/bob/observations", fix_with(speed=X)),
}


@pytest.mark.parametrize("literal", NON_FINITE, ids=lambda v: v if len(v) < 10 else f"int{len(v)}")
@pytest.mark.parametrize("slot", list(NUMBER_SLOTS))
def test_non_finite_numbers_are_422(api: Api, slot: str, literal: str) -> None:
    method, path, doc = NUMBER_SLOTS[slot]
    if "{order}" in path:
        path = path.replace("{order}", api.order())
    if "observation" in slot:
        doc = fix_with(**{k: X for k, v in doc[0].items() if v == X})  # a fresh t
    body = json.dumps(doc).replace(f'"{X}"', literal)
    assert literal in body
    problem = assert_problem(raw(api, method, path, body), 422)
    if "observation" in slot:
        assert problem["reason"] == "no_usable_observation"
    with api.ops() as ops:
        assert ops.get("/v1/couriers/carl").status_code == 404  # nothing half-created


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(90.5, 13.4), (-91.0, 13.4), (52.5, 180.5), (52.5, -181.0), (86.0, 13.4), (0.0, 0.0)],
    ids=["lat>90", "lat<-90", "lon>180", "lon<-180", "beyond-geo-index", "null-island"],
)
def test_out_of_range_coordinates_are_422(api: Api, lat: float, lon: float) -> None:
    point = {"lat": lat, "lon": lon}
    with api.ops() as ops:
        assert_problem(ops.post("/v1/orders", json=order_doc(pickup=point)), 422)
        assert_problem(ops.post("/v1/orders", json=order_doc(dropoff=point)), 422)
        shift = {"action": "start", **point}
        assert_problem(ops.post("/v1/couriers/carl/shift", json=shift), 422)
        fix = {"t": time.time(), "kind": "gps", **point, "accuracy": 5.0}
        doc = assert_problem(ops.post(f"/v1/couriers/{BOB}/observations", json=[fix]), 422)
        assert doc["reason"] == "no_usable_observation"
        assert ops.get("/v1/couriers/carl").status_code == 404  # nothing was half-created


def test_bad_items_in_a_batch_do_not_cost_the_good_ones(api: Api) -> None:
    t = time.time()
    good = {"t": t, "kind": "gps", **NEAR_PICKUP, "accuracy": 5.0}
    items = [good, {**good, "lat": X}, 17, None, {"t": t, "kind": "teleport"}]
    batch = json.dumps(items).replace(f'"{X}"', "NaN")
    r = raw(api, "POST", f"/v1/couriers/{BOB}/observations", batch)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["accepted"] == 1
    assert [x["index"] for x in doc["rejected"]] == [1, 2, 3, 4]
    assert doc["rejected"][0]["reason"] == "non_finite"


def test_a_huge_integer_costs_only_its_own_item(api: Api) -> None:
    t = time.time()
    good = {"t": t, "kind": "gps", **NEAR_PICKUP, "accuracy": 5.0}
    batch = json.dumps([good, {**good, "t": t + 0.5, "accuracy": X}]).replace(
        f'"{X}"', "1" + "0" * 400
    )
    r = raw(api, "POST", f"/v1/couriers/{BOB}/observations", batch)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert [(x["index"], x["reason"]) for x in r.json()["rejected"]] == [(1, "non_finite")]


@pytest.mark.parametrize(
    ("offsets", "rejected"),
    [([0.0, 0.0, 1.0], [1]), ([1.0, 2.0, 1.0], [2]), ([2.0, 1.0, 1.0], [2])],
    ids=["same-t-twice", "late-duplicate", "duplicate-after-sorting"],
)
def test_rejected_duplicates_name_their_own_index(
    api: Api, offsets: list[float], rejected: list[int]
) -> None:
    """The batch is fused in time order; a rejection names the item that was rejected,
    not an accepted one with the same time."""
    t = time.time() - 5
    items = [
        {
            "t": t + dt,
            "kind": "gps",
            "lat": NEAR_PICKUP["lat"] + i * 1e-5,
            "lon": 13.4055,
            "accuracy": 5.0,
        }
        for i, dt in enumerate(offsets)
    ]
    who = f"dup-{len(api.made)}-{time.monotonic_ns()}"
    with api.server.client(token("courier", who)) as c:
        start = {"action": "start", **NEAR_PICKUP}
        assert c.post(f"/v1/couriers/{who}/shift", json=start).status_code == 200
        r = c.post(f"/v1/couriers/{who}/observations", json=items)
        c.post(f"/v1/couriers/{who}/shift", json={"action": "end"})
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["rejected"]] == rejected, r.json()


def test_a_fix_beyond_the_service_latitude_never_poisons_the_courier(api: Api) -> None:
    """lat 86 is a valid WGS84 latitude but beyond what the store can hold: it is
    rejected on its own, and the courier's next real fixes are still accepted."""
    t = time.time()
    far = {"t": t - 5, "kind": "gps", "lat": 86.0, "lon": 13.4, "accuracy": 5.0}
    good = {"t": t - 4, "kind": "gps", **NEAR_PICKUP, "accuracy": 5.0}
    with api.ops() as ops:
        doc = assert_problem(ops.post("/v1/couriers/zed/observations", json=[far]), 422)
        assert "out_of_range" in doc["detail"]
        r = ops.post("/v1/couriers/zed/observations", json=[good])
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1
        mixed = [{**good, "t": t - 3}, {**far, "t": t - 2}, {**good, "t": t - 1}]
        r = ops.post("/v1/couriers/zed/observations", json=mixed)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 2
        assert [(x["index"], x["reason"]) for x in r.json()["rejected"]] == [(1, "out_of_range")]


# -- times -----------------------------------------------------------------------------

DAY = 86400.0


@pytest.mark.parametrize("name", ["ready_at", "promised_by"])
@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (8 * DAY, "time_too_far_ahead"),
        (1e12, "time_too_far_ahead"),
        (-2 * 3600.0, "time_too_far_back"),
        (-1e12, "time_too_far_back"),
    ],
)
def test_order_times_far_away_are_422(api: Api, name: str, offset: float, reason: str) -> None:
    with api.ops() as ops:
        r = ops.post("/v1/orders", json=order_doc(**{name: time.time() + offset}))
    assert_problem(r, 422, reason)


@pytest.mark.parametrize("value", [1e308, -1e308, 0, -1, "tomorrow", True, [1]])
def test_absurd_order_times_are_422(api: Api, value: Any) -> None:
    with api.ops() as ops:
        assert_problem(ops.post("/v1/orders", json=order_doc(ready_at=value)), 422)
        assert_problem(ops.post("/v1/orders", json=order_doc(promised_by=value)), 422)


def test_promise_before_ready_is_422(api: Api) -> None:
    now = time.time()
    with api.ops() as ops:
        r = ops.post("/v1/orders", json=order_doc(ready_at=now + 3600, promised_by=now + 60))
    assert_problem(r, 422, "bad_promise")


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(3600.0, "time_in_future"), (1e12, "time_in_future"), (-2 * DAY, "too_old")],
)
def test_observation_times_far_away_are_rejected(api: Api, offset: float, reason: str) -> None:
    fix = {"t": time.time() + offset, "kind": "gps", **NEAR_PICKUP, "accuracy": 5.0}
    with api.ops() as ops:
        doc = assert_problem(ops.post(f"/v1/couriers/{BOB}/observations", json=[fix]), 422)
    assert reason in doc["detail"]


@pytest.mark.parametrize("offset", [2 * DAY, -60.0, 1e300])
def test_shift_end_out_of_range_is_422(api: Api, offset: float) -> None:
    shift = {"action": "start", **NEAR_PICKUP, "shift_end": time.time() + offset}
    with api.ops() as ops:
        assert_problem(ops.post("/v1/couriers/carl/shift", json=shift), 422, "bad_shift_end")


# -- sizes -----------------------------------------------------------------------------

BODY_ROUTES = [
    ("POST", "/v1/orders"),
    ("POST", "/v1/orders/{order}/cancel"),
    ("POST", "/v1/orders/{order}/share"),
    ("POST", "/v1/orders/{order}/pickup"),
    ("POST", "/v1/orders/{order}/dropoff"),
    ("POST", "/v1/couriers/bob/shift"),
    ("POST", "/v1/couriers/bob/observations"),
    ("PUT", "/v1/zones"),
    ("PUT", "/v1/dispatch/settings"),
]
ROUTE_IDS = [f"{m} {p}" for m, p in BODY_ROUTES]


def padded(size: int) -> bytes:
    """A valid JSON document of ``size`` bytes."""
    head = b'{"pad":"'
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=ROUTE_IDS)
def test_oversized_bodies_are_413(api: Api, method: str, path: str) -> None:
    path = path.replace("{order}", "o-any")
    assert_problem(raw(api, method, path, padded(LIMIT + 1)), 413, "body_too_large")


STREAMED = [BODY_ROUTES[0], *BODY_ROUTES[6:]]


@pytest.mark.parametrize(("method", "path"), STREAMED, ids=[f"{m} {p}" for m, p in STREAMED])
def test_oversized_streamed_bodies_are_413(api: Api, method: str, path: str) -> None:
    """Without a Content-Length (chunked upload) the limit is counted, not trusted."""

    def chunks() -> Iterator[bytes]:
        body = padded(LIMIT + 50_000)
        for i in range(0, len(body), 64_000):
            yield body[i : i + 64_000]

    headers = {"Authorization": f"Bearer {OPS}", "Content-Type": "application/json"}
    with api.server.client() as c:
        r = c.request(method, path, content=chunks(), headers=headers)
        assert "content-length" not in r.request.headers
        assert_problem(r, 413, "body_too_large")
    with api.ops() as ops:  # and the service is fine afterwards
        assert ops.get("/v1/fleet").status_code == 200


def test_small_streamed_body_is_read(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        body = json.dumps(ORDER).encode()
        yield body[:10]
        yield body[10:]

    headers = {"Authorization": f"Bearer {OPS}", "Content-Type": "application/json"}
    with api.server.client() as c:
        r = c.post("/v1/orders", content=chunks(), headers=headers)
    assert r.status_code == 201, r.text
    api.made.append(r.json()["id"])


def test_body_at_the_limit_is_not_413(api: Api) -> None:
    assert_problem(raw(api, "PUT", "/v1/zones", padded(LIMIT)), 422)


def test_batches_over_1000_observations_are_413(api: Api) -> None:
    t = time.time()
    fix = {"t": t, "kind": "gps", **NEAR_PICKUP, "accuracy": 5.0}
    with api.ops() as ops:
        r = ops.post(f"/v1/couriers/{BOB}/observations", json=[fix] * 1001)
        assert_problem(r, 413, "batch_too_large")
        batch = [{**fix, "t": t - 1000 + i} for i in range(1000)]
        r = ops.post("/v1/couriers/batcher/observations", json=batch)  # a fresh filter
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1000


# -- ids and states --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/orders/o-nonexistent", None),
        ("POST", "/v1/orders/o-nonexistent/cancel", None),
        ("POST", "/v1/orders/o-nonexistent/share", None),
        ("POST", "/v1/orders/o-nonexistent/pickup", {"override_reason": "x"}),
        ("POST", "/v1/orders/o-nonexistent/dropoff", {"override_reason": "x"}),
        ("GET", "/v1/couriers/nobody", None),
        ("GET", "/v1/couriers/nobody/route", None),
        ("POST", "/v1/couriers/nobody/shift", {"action": "end"}),
        ("POST", "/v1/couriers/nobody/shift", {"action": "start"}),  # no position known
    ],
)
def test_unknown_ids(api: Api, method: str, path: str, body: Any) -> None:
    with api.ops() as ops:
        r = ops.request(method, path, json=body)
    if path.endswith("/shift") and body == {"action": "start"}:
        assert_problem(r, 422, "no_position")
    else:
        assert_problem(r, 404, "not_found")


@pytest.mark.parametrize(
    ("state", "action"),
    [
        ("assigned", "dropoff"),  # before the pickup
        ("picked_up", "pickup"),
        ("picked_up", "cancel"),  # the courier has it
        ("delivered", "cancel"),
        ("delivered", "dropoff"),
        ("delivered", "pickup"),
        ("cancelled", "cancel"),
        ("cancelled", "pickup"),
        ("cancelled", "dropoff"),
    ],
)
def test_illegal_transitions_are_409(api: Api, state: str, action: str) -> None:
    oid = api.order(state)
    with api.ops() as ops:
        before = ops.get(f"/v1/orders/{oid}").json()
        body = None if action == "cancel" else {"override_reason": "x"}
        assert_problem(ops.post(f"/v1/orders/{oid}/{action}", json=body), 409)
        assert ops.get(f"/v1/orders/{oid}").json() == before  # nothing changed


def test_courier_transitions_are_409_too(api: Api) -> None:
    oid = api.order("assigned")
    with api.server.client(token("courier", BOB)) as bob:
        r = bob.post(f"/v1/orders/{oid}/dropoff", json={"override_reason": "x"})
        assert_problem(r, 409, "not_picked_up")
        assert bob.post(f"/v1/orders/{oid}/pickup", json={"override_reason": "x"}).is_success
        assert_problem(bob.post(f"/v1/orders/{oid}/pickup", json={"override_reason": "x"}), 409)
    with api.server.client(token("customer", "alice")) as alice:
        assert_problem(alice.post(f"/v1/orders/{oid}/cancel"), 409, "already_picked_up")


# -- JSON, content types, fields -------------------------------------------------------

MALFORMED = {
    "syntax": b"{bad",
    "truncated": b'{"pickup": {"lat": 52.5',
    "trailing": b'{"a": 1} x',
    "not-utf8": b'{"a": "\xff\xfe"}',
    "deep": b"[" * 100_000,
    "single-quotes": b"{'a': 1}",
}


@pytest.mark.parametrize("kind", list(MALFORMED))
@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=ROUTE_IDS)
def test_malformed_json_is_400(api: Api, method: str, path: str, kind: str) -> None:
    path = path.replace("{order}", "o-any")
    assert_problem(raw(api, method, path, MALFORMED[kind]), 400, "malformed_json")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data"],
)
@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=ROUTE_IDS)
def test_wrong_content_type_is_415(api: Api, method: str, path: str, content_type: str) -> None:
    path = path.replace("{order}", "o-any")
    body = json.dumps(ORDER)
    assert_problem(raw(api, method, path, body, content_type), 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/merge-patch+json"]
)
def test_json_content_types_are_accepted(api: Api, content_type: str) -> None:
    r = raw(api, "POST", "/v1/orders", json.dumps(ORDER), content_type)
    assert r.status_code == 201, r.text
    api.made.append(r.json()["id"])


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES, ids=ROUTE_IDS)
def test_a_body_without_content_type_is_415(api: Api, method: str, path: str) -> None:
    path = path.replace("{order}", "o-any")
    with api.ops() as ops:
        r = ops.request(method, path, content=json.dumps(ORDER))
    assert "content-type" not in r.request.headers
    assert_problem(r, 415, "unsupported_media_type")


def test_optional_bodies_may_be_empty_whatever_the_content_type(api: Api) -> None:
    oid = api.order()
    r = raw(api, "POST", f"/v1/orders/{oid}/share", b"", "text/plain")
    assert r.status_code == 200, r.text
    r = raw(api, "POST", f"/v1/orders/{oid}/cancel", b"")
    assert r.status_code == 200, r.text


EXTRA_FIELDS = [
    ("POST", "/v1/orders", order_doc(tip=5)),
    ("POST", "/v1/orders", order_doc(pickup={**ORDER["pickup"], "floor": 3})),
    ("POST", "/v1/orders/{order}/cancel", {"reason": "x", "refund": True}),
    ("POST", "/v1/orders/{order}/share", {"ttl_s": 60, "scope": "all"}),
    ("POST", "/v1/orders/{order}/pickup", {"override_reason": "x", "photo": "..."}),
    ("POST", "/v1/orders/{order}/dropoff", {"override_reason": "x", "photo": "..."}),
    ("POST", "/v1/couriers/bob/shift", {"action": "start", **NEAR_PICKUP, "vehicle": "bike"}),
    ("PUT", "/v1/dispatch/settings", {"lateness_weight": 3, "turbo": True}),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), EXTRA_FIELDS, ids=[f"{m} {p}" for m, p, _ in EXTRA_FIELDS]
)
def test_extra_fields_are_422(api: Api, method: str, path: str, body: Any) -> None:
    path = path.replace("{order}", api.order())
    with api.ops() as ops:
        doc = assert_problem(ops.request(method, path, json=body), 422, "invalid_request")
    assert any(e["type"] == "extra_forbidden" for e in doc["errors"]), doc


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/orders", [ORDER]),
        ("POST", "/v1/orders", "order"),
        ("POST", "/v1/orders", {}),
        ("POST", "/v1/orders", order_doc(mode="drone")),
        ("POST", "/v1/orders", order_doc(size=-1)),
        ("POST", "/v1/orders", order_doc(size=101)),
        ("POST", "/v1/orders", order_doc(pickup={"lat": "52.5", "lon": None})),
        ("POST", "/v1/orders", order_doc(pickup={"lat": "52.5", "lon": 13.4})),
        ("POST", "/v1/orders", order_doc(dropoff={"lat": 52.5, "lon": True})),
        ("POST", "/v1/orders", order_doc(size="2")),
        ("POST", "/v1/orders", order_doc(size=1.5)),
        ("POST", "/v1/couriers/bob/shift", {"action": "start", "lat": True, "lon": 13.4}),
        ("POST", "/v1/orders", order_doc(customer_id="")),
        ("POST", "/v1/couriers/bob/shift", {"action": "pause"}),
        ("POST", "/v1/couriers/bob/shift", {"action": "start", "lat": 52.5}),  # no lon
        ("POST", "/v1/couriers/bob/shift", {"action": "start", **NEAR_PICKUP, "capacity": 51}),
        ("POST", "/v1/couriers/bob/observations", {"t": 1, "kind": "gps"}),
        ("POST", "/v1/couriers/bob/observations", [{"t": "now", "kind": "gps"}]),
        ("PUT", "/v1/zones", []),
        (
            "PUT",
            "/v1/zones",
            {
                "type": "Feature",
                "properties": {"x": json.loads("[" * 300 + "]" * 300)},
                "geometry": {"type": "Polygon", "coordinates": [[[13, 52], [14, 52], [14, 53]]]},
            },
        ),
        ("PUT", "/v1/zones", {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}),
        ("PUT", "/v1/dispatch/settings", {"seed": "x"}),
        ("PUT", "/v1/dispatch/settings", {"solve_time_limit_s": 0}),
        ("PUT", "/v1/dispatch/settings", {"lateness_weight": -1}),
        ("PUT", "/v1/dispatch/settings", {"lateness_weight": 2**63}),  # int64 overflow
        ("PUT", "/v1/dispatch/settings", {"lateness_weight": 10**9}),  # every solve refused
        ("PUT", "/v1/dispatch/settings", {"solution_limit": 0}),  # invalid search params
        ("PUT", "/v1/dispatch/settings", {"seed": True}),
        ("PUT", "/v1/dispatch/settings", {"replan_every_s": "5"}),
        ("PUT", "/v1/dispatch/settings", {"insertion_candidates": 10**6}),
        ("GET", "/v1/orders?status=bogus", None),
        ("GET", "/v1/orders?limit=0", None),
        ("GET", "/v1/orders?limit=ten", None),
    ],
)
def test_wrong_shapes_and_types_are_422(api: Api, method: str, path: str, body: Any) -> None:
    with api.ops() as ops:
        assert_problem(ops.request(method, path, json=body), 422)
        assert ops.get("/v1/zones").status_code == 200  # nothing half-stored
        assert ops.get("/v1/dispatch/settings").status_code == 200


def test_unknown_paths_and_methods_are_problems(api: Api) -> None:
    with api.ops() as ops:
        assert_problem(ops.get("/v1/nope"), 404)
        assert_problem(ops.delete("/v1/orders"), 405)
        assert_problem(ops.put("/v1/fleet", json={}), 405)


def test_settings_report_what_the_service_runs_with(api: Api) -> None:
    """The server runs with solve_time_limit_s=0.3: GET and PUT say so (not the library
    default), and an operator change keeps it."""
    with api.ops() as ops:
        assert ops.get("/v1/dispatch/settings").json()["solve_time_limit_s"] == 0.3
        r = ops.put("/v1/dispatch/settings", json={"lateness_weight": 5})
        assert r.status_code == 200, r.text
        assert (r.json()["lateness_weight"], r.json()["solve_time_limit_s"]) == (5, 0.3)
        got = ops.get("/v1/dispatch/settings").json()
        assert (got["lateness_weight"], got["solve_time_limit_s"]) == (5, 0.3)
        assert ops.put("/v1/dispatch/settings", json={}).json()["lateness_weight"] == 3


# -- idempotency -----------------------------------------------------------------------


def customer_orders(api: Api, customer: str) -> list[dict[str, Any]]:
    with api.server.client(token("customer", customer)) as c:
        orders: list[dict[str, Any]] = c.get("/v1/orders?status=all").json()["orders"]
    return orders


def test_same_idempotency_key_twice_is_one_order(api: Api) -> None:
    who = "idem-seq"
    with api.server.client(token("customer", who)) as c:
        first = c.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "k-1"})
        second = c.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert first.json()["id"] == second.json()["id"]
    assert first.headers["Location"] == second.headers["Location"]
    api.made.append(first.json()["id"])
    assert [o["id"] for o in customer_orders(api, who)] == [first.json()["id"]]


def test_idempotency_keys_of_different_customers_never_meet(api: Api) -> None:
    """Customer ``k:x`` with key ``U`` and customer ``k`` with key ``x:U`` are two
    orders; each sees only its own (a shared slot once replayed one to the other)."""
    with api.server.client(token("customer", "k:x")) as c:
        first = c.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "U"})
    with api.server.client(token("customer", "k")) as c:
        second = c.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "x:U"})
    assert (first.status_code, second.status_code) == (201, 201), second.text
    assert first.json()["id"] != second.json()["id"]
    assert second.json()["customer_id"] == "k"
    api.made += [first.json()["id"], second.json()["id"]]


def test_the_documented_key_length_is_accepted_whatever_the_customer(api: Api) -> None:
    with api.server.client(token("customer", "a-customer-with-a-long-id")) as c:
        ok = c.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "k" * 256})
        again = c.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "k" * 256})
        too_long = c.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "k" * 257})
    assert ok.status_code == 201, ok.text
    assert again.status_code == 200 and again.json()["id"] == ok.json()["id"]
    assert_problem(too_long, 422)
    api.made.append(ok.json()["id"])


def test_concurrent_retries_create_exactly_one_order(api: Api) -> None:
    who = "idem-concurrent"
    barrier = threading.Barrier(20)

    def attempt(_: int) -> httpx.Response:
        with api.server.client(token("customer", who)) as c:
            barrier.wait(5)
            return c.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "same"})

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(attempt, range(20)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] * 19 + [201], [r.text for r in results if r.status_code >= 300]
    ids = {r.json()["id"] for r in results}
    assert len(ids) == 1
    api.made.extend(ids)
    assert [o["id"] for o in customer_orders(api, who)] == list(ids)


def test_concurrent_retries_over_async_connections(api: Api) -> None:
    who = "idem-async"

    async def burst() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {token('customer', who)}", "Idempotency-Key": "a"}
        async with httpx.AsyncClient(base_url=api.server.url, timeout=10) as c:
            return list(
                await asyncio.gather(
                    *(c.post("/v1/orders", json=ORDER, headers=headers) for _ in range(20))
                )
            )

    results = asyncio.run(burst())
    assert sorted(r.status_code for r in results) == [200] * 19 + [201]
    assert len({r.json()["id"] for r in results}) == 1
    api.made.append(results[0].json()["id"])
    assert len(customer_orders(api, who)) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"dropoff": {"lat": 52.54, "lon": 13.43}},
        {"pickup": {**ORDER["pickup"], "id": "store-9"}},
        {"size": 2},
        {"mode": "station"},
        {"promised_by": "+2h"},
        {"ready_at": "+10m"},
        {"pickup_service_s": 300},
    ],
    ids=["dropoff", "place-id", "size", "mode", "promised_by", "ready_at", "service-time"],
)
def test_same_key_different_body_is_409(api: Api, change: dict[str, Any]) -> None:
    now = time.time()
    offsets = {"+2h": now + 7200, "+10m": now + 600}
    base = {**ORDER, "promised_by": now + 3600, "ready_at": now}
    other = {k: offsets.get(v, v) if isinstance(v, str) else v for k, v in change.items()}
    who = f"idem-diff-{'-'.join(change)}"
    with api.server.client(token("customer", who)) as c:
        first = c.post("/v1/orders", json=base, headers={"Idempotency-Key": "k"})
        assert first.status_code == 201, first.text
        api.made.append(first.json()["id"])
        r = c.post("/v1/orders", json={**base, **other}, headers={"Idempotency-Key": "k"})
        assert_problem(r, 409, "idempotency_key_reused")
        again = c.post("/v1/orders", json=base, headers={"Idempotency-Key": "k"})
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert len(customer_orders(api, who)) == 1


def test_keys_are_per_customer(api: Api) -> None:
    ids = []
    for who in ("idem-a", "idem-b"):
        with api.server.client(token("customer", who)) as c:
            r = c.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "shared"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    api.made.extend(ids)
    assert ids[0] != ids[1]


def test_overlong_idempotency_key_is_422(api: Api) -> None:
    with api.server.client(token("customer", "idem-long")) as c:
        r = c.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "k" * 257})
    assert_problem(r, 422)
    assert customer_orders(api, "idem-long") == []


# -- websockets ------------------------------------------------------------------------


async def reply(ws: ClientConnection) -> dict[str, Any]:
    """The next reply to a client frame (skipping pushed frames: events, heartbeats)."""
    return await recv_until(ws, lambda f: f.get("type") in ("error", "pong"), timeout=5)


def ws_url(api: Api, path: str) -> str:
    return f"{api.server.ws}{path}?token={OPS}"


CHANNELS = {
    "ops": ("/v1/ops/live", OPS),
    "courier": (f"/v1/couriers/{BOB}/route", token("courier", BOB)),
    "order": ("/v1/orders/{order}/track", token("customer", "alice")),
}
BAD_FRAMES: list[str | bytes] = [
    "not json",
    "[]",
    "42",
    '"ping"',
    "null",
    "NaN",
    '{"type": "nope"}',
    '{"no": "type"}',
    "[" * 20_000,  # nests deeper than the decoder's recursion limit
    b"\x00\xff binary",
    b'{"type": "ping"}',  # binary frames are not part of the protocol
    "",
]


def channel_url(api: Api, name: str) -> str:
    path, tok = CHANNELS[name]
    if "{order}" in path:
        path = path.replace("{order}", api.order())
    return f"{api.server.ws}{path}?token={tok}"


@pytest.mark.parametrize("name", list(CHANNELS))
def test_malformed_frames_get_an_error_and_the_connection_stays(api: Api, name: str) -> None:
    url = channel_url(api, name)

    async def run() -> None:
        async with connect(url) as ws:
            await recv_until(ws, lambda f: f["type"] == "snapshot")
            for frame in BAD_FRAMES:
                await ws.send(frame)
                got = await reply(ws)
                assert got["type"] == "error" and got["reason"] == "bad_frame", (frame, got)
            await ws.send(json.dumps({"type": "ping"}))
            assert (await reply(ws))["type"] == "pong"

    asyncio.run(run())


def test_bad_acks_are_errors_on_the_courier_channel(api: Api) -> None:
    url = channel_url(api, "courier")

    async def run() -> None:
        async with connect(url) as ws:
            await recv_until(ws, lambda f: f["type"] == "snapshot")
            for ack in ({"type": "ack"}, {"type": "ack", "id": "1-0"}, {"type": "ack", "id": 7}):
                await ws.send(json.dumps(ack))
                got = await reply(ws)
                assert (got["type"], got["reason"]) == ("error", "unknown_route")
            await ws.send(json.dumps({"type": "ping"}))
            assert (await reply(ws))["type"] == "pong"

    asyncio.run(run())


@pytest.mark.parametrize("name", list(CHANNELS))
def test_many_malformed_frames_close_1008(api: Api, name: str) -> None:
    url = channel_url(api, name)

    async def run() -> tuple[int, int]:
        errors = 0
        async with connect(url) as ws:
            await recv_until(ws, lambda f: f["type"] == "snapshot")
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(100):
                    await ws.send("garbage")
                    frame = await reply(ws)
                    errors += frame["type"] == "error"
        assert closed.value.rcvd is not None
        return errors, closed.value.rcvd.code

    errors, code = asyncio.run(run())
    assert code == 1008
    assert 20 <= errors <= 22  # a handful of mistakes is tolerated, not a flood


@pytest.mark.parametrize(
    "last_id",
    [
        "bad",
        "1-",
        "-1-0",
        "1-0-0",
        "1.5-0",
        "abc-def",
        "99999999999999999999999-0",  # beyond u64
        "9999999999999-0",  # well-formed, but ahead of every event the log has
    ],
)
@pytest.mark.parametrize("name", list(CHANNELS))
def test_bad_last_event_id_closes_4400(api: Api, name: str, last_id: str) -> None:
    url = channel_url(api, name) + f"&last_event_id={last_id}"

    async def run() -> tuple[dict[str, Any], int | None]:
        async with connect(url) as ws:
            first: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        rcvd = closed.value.rcvd
        return first, None if rcvd is None else rcvd.code

    first, code = asyncio.run(run())
    assert code == 4400
    assert first["type"] == "error" and first["code"] == 4400


def test_good_last_event_id_resumes(api: Api) -> None:
    """The id of a snapshot resumes: the next event arrives, with no new snapshot."""

    async def run() -> dict[str, Any]:
        async with connect(ws_url(api, "/v1/ops/live")) as ws:
            snap = await recv_until(ws, lambda f: f["type"] == "snapshot")
        async with connect(ws_url(api, "/v1/ops/live") + f"&last_event_id={snap['id']}") as ws:
            with api.ops() as ops:
                r = await asyncio.to_thread(
                    ops.put, "/v1/dispatch/settings", json={"lateness_weight": 4}
                )
                assert r.status_code == 200
            frame = await recv_until(ws, lambda f: f["type"] in ("config", "snapshot", "error"))
        return frame

    frame = asyncio.run(run())
    assert frame["type"] == "config" and frame["event"] == "settings_updated"
    with api.ops() as ops:
        ops.put("/v1/dispatch/settings", json={})


def test_bad_area_filters_close_4400(api: Api) -> None:
    async def code_for(query: str) -> int | None:
        async with connect(ws_url(api, "/v1/ops/live") + query) as ws:
            await asyncio.wait_for(ws.recv(), 5)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        rcvd = closed.value.rcvd
        return None if rcvd is None else rcvd.code

    for query in ("&cells=zzz", "&cells=8001fffffffffff", "&zone=nowhere"):
        assert asyncio.run(code_for(query)) == 4400, query


def test_a_zone_too_big_for_a_live_view_is_refused_from_its_area(api: Api) -> None:
    """A 16° x 16° zone has ~400,000 resolution-7 cells: listing them blocked the
    worker's event loop for ~15 s before the 500-cell limit refused it."""
    ring = [[5.0, 44.0], [21.0, 44.0], [21.0, 60.0], [5.0, 60.0], [5.0, 44.0]]
    big = {
        "type": "Feature",
        "id": "big",
        "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }

    async def closed_with() -> tuple[int | None, str]:
        async with connect(ws_url(api, "/v1/ops/live") + "&zone=big") as ws:
            await asyncio.wait_for(ws.recv(), 5)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        rcvd = closed.value.rcvd
        return (None, "") if rcvd is None else (rcvd.code, rcvd.reason)

    with api.ops() as ops:
        assert ops.put("/v1/zones", json=big).status_code == 200
        try:
            code, reason = asyncio.run(closed_with())
        finally:
            assert (
                ops.put("/v1/zones", json={"type": "FeatureCollection", "features": []}).status_code
                == 200
            )
    assert code == 4400 and "km²" in reason, reason


def test_close_reasons_fit_the_frame_whatever_the_characters(api: Api) -> None:
    """An unknown zone named with 4-byte characters: the reason quoting it is cut to the
    123 bytes a close frame allows, and the client still gets the 4400."""

    async def closed_with() -> tuple[int | None, str]:
        async with connect(ws_url(api, "/v1/ops/live") + "&zone=" + "😀" * 40) as ws:
            await asyncio.wait_for(ws.recv(), 5)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        rcvd = closed.value.rcvd
        return (None, "") if rcvd is None else (rcvd.code, rcvd.reason)

    code, reason = asyncio.run(closed_with())
    assert code == 4400 and reason.startswith("unknown zone"), reason
    assert len(reason.encode()) <= 123


def test_a_client_frame_over_64_kib_closes_1009(api: Api) -> None:
    async def closed_with() -> int | None:
        async with connect(ws_url(api, "/v1/ops/live")) as ws:
            await asyncio.wait_for(ws.recv(), 5)
            await ws.send(json.dumps({"type": "ping", "pad": "x" * 70_000}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
        rcvd = closed.value.rcvd
        return None if rcvd is None else rcvd.code

    assert asyncio.run(closed_with()) == 1009
    with api.ops() as ops:
        assert ops.get("/healthz").status_code == 200

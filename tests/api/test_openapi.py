"""The OpenAPI document is complete (every endpoint, its body, its successes and its
problem responses), and schemathesis, generating requests from it with an ops token,
gets no server error and no answer the document does not describe from any operation."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import WebSocketRoute

from tests.api.conftest import ORDER, Server, token

OPS = token("ops", "ops-1")
MAX_EXAMPLES = 20

# (method, path): (success status, request body: "required", "optional" or "none")
ENDPOINTS: dict[tuple[str, str], tuple[str, str]] = {
    ("post", "/v1/orders"): ("201", "required"),
    ("get", "/v1/orders"): ("200", "none"),
    ("get", "/v1/orders/{order_id}"): ("200", "none"),
    ("post", "/v1/orders/{order_id}/cancel"): ("200", "optional"),
    ("post", "/v1/orders/{order_id}/share"): ("200", "optional"),
    ("post", "/v1/orders/{order_id}/pickup"): ("200", "optional"),
    ("post", "/v1/orders/{order_id}/dropoff"): ("200", "optional"),
    ("post", "/v1/couriers/{courier_id}/shift"): ("200", "required"),
    ("get", "/v1/couriers/{courier_id}"): ("200", "none"),
    ("get", "/v1/couriers/{courier_id}/route"): ("200", "none"),
    ("post", "/v1/couriers/{courier_id}/observations"): ("200", "required"),
    ("get", "/v1/fleet"): ("200", "none"),
    ("get", "/v1/zones"): ("200", "none"),
    ("put", "/v1/zones"): ("200", "required"),
    ("get", "/v1/dispatch/settings"): ("200", "none"),
    ("put", "/v1/dispatch/settings"): ("200", "required"),
}
HEALTH = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
WEBSOCKETS = {"/v1/orders/{order_id}/track", "/v1/couriers/{courier_id}/route", "/v1/ops/live"}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
BERLIN = {
    "type": "Polygon",
    "coordinates": [[[13.0, 52.3], [13.8, 52.3], [13.8, 52.7], [13.0, 52.7], [13.0, 52.3]]],
}
OTHERS = re.compile(r"^/v1/whatif")
"""Endpoints built elsewhere (what-if simulations: long-running jobs) and not fuzzed here."""


def openapi(server: Server) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/openapi.json", timeout=10)
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in ("get", "put", "post", "patch", "delete")
    }


# -- the document ----------------------------------------------------------------------


def test_every_endpoint_is_documented(server: Server) -> None:
    ops = operations(openapi(server))
    missing = set(ENDPOINTS) - set(ops)
    assert not missing
    ours = {key for key in ops if not OTHERS.match(key[1])}
    assert ours == set(ENDPOINTS) | HEALTH, "an undocumented-here endpoint: add it to ENDPOINTS"
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("method", "path"), list(ENDPOINTS), ids=[f"{m} {p}" for m, p in ENDPOINTS]
)
def test_operation_is_complete(server: Server, method: str, path: str) -> None:
    op = operations(openapi(server))[(method, path)]
    success, body = ENDPOINTS[(method, path)]
    assert op.get("tags") and op.get("summary")
    responses = op["responses"]
    assert "schema" in responses[success]["content"]["application/json"]
    errors = {"401", "403", "422"}
    if "{" in path:
        errors.add("404")
        names = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert names == set(re.findall(r"{(\w+)}", path))
    if body != "none":
        errors |= {"400", "413", "415"}
        request = op["requestBody"]
        assert request.get("required", False) is (body == "required")
        assert "schema" in request["content"]["application/json"]
    else:
        assert "requestBody" not in op
    assert errors <= set(responses), f"undocumented: {errors - set(responses)}"
    for code, response in responses.items():
        assert response.get("description"), code
        if code.startswith(("4", "5")):
            assert response["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}
    auth = [p for p in op.get("parameters", []) if p["name"].lower() == "authorization"]
    assert auth and auth[0]["in"] == "header"


def test_details_clients_rely_on(server: Server) -> None:
    doc = openapi(server)
    ops = operations(doc)
    place = ops[("post", "/v1/orders")]
    headers = {p["name"].lower() for p in place["parameters"] if p["in"] == "header"}
    assert "idempotency-key" in headers
    assert {"200", "201", "409"} <= set(place["responses"])  # replay, created, key reused
    body = ops[("post", "/v1/couriers/{courier_id}/observations")]["requestBody"]
    batch = body["content"]["application/json"]["schema"]
    assert batch["type"] == "array" and batch["maxItems"] == 1000
    assert batch["items"] == {"$ref": "#/components/schemas/ObservationDoc"}
    schemas = doc["components"]["schemas"]
    for name in ("OrderIn", "OrderOut", "ShiftIn", "CourierOut", "RouteOut", "ObservationDoc"):
        assert name in schemas
    assert set(schemas["OrderIn"]["required"]) == {"pickup", "dropoff"}
    assert schemas["OrderIn"]["additionalProperties"] is False  # unknown fields: 422
    problem = schemas["Problem"]
    assert {"type", "title", "status", "detail", "instance"} <= set(problem["required"])


def test_every_reference_resolves_and_every_component_is_used(server: Server) -> None:
    doc = openapi(server)
    text = json.dumps(doc)
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', text))
    schemas = set(doc["components"]["schemas"])
    assert refs <= schemas, f"dangling $ref: {refs - schemas}"
    assert schemas <= refs, f"unused components: {schemas - refs}"
    assert "$defs" not in text  # nested definitions would hide from the components


def test_websocket_channels_are_served(server: Server) -> None:
    """OpenAPI cannot describe websockets; they are routes of the app all the same."""
    paths = {r.path for r in server.app.routes if isinstance(r, WebSocketRoute)}
    assert paths >= WEBSOCKETS


def test_real_problems_match_the_documented_schema(server: Server) -> None:
    doc = openapi(server)
    schema = doc["components"]["schemas"]["Problem"]
    with server.client() as anonymous, server.client(OPS) as ops:
        answers = [
            anonymous.get("/v1/fleet"),  # 401
            server.client(token("customer", "c")).get("/v1/fleet"),  # 403
            ops.get("/v1/orders/o-missing"),  # 404
            ops.post("/v1/orders", json={"pickup": {}}),  # 422 with errors
            ops.post("/v1/orders", content=b"{", headers={"Content-Type": "application/json"}),
        ]
    for r in answers:
        assert r.headers["content-type"] == "application/problem+json"
        jsonschema_rs.validate(schema, r.json())


# -- schemathesis ----------------------------------------------------------------------

CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZED = sorted(ENDPOINTS) + sorted(HEALTH)


def with_ops_token(case: Case[Any]) -> None:
    for name in [k for k in case.headers or {} if k.lower() == "authorization"]:
        del case.headers[name]
    case.headers["Authorization"] = f"Bearer {OPS}"


def valid_body(method: str, path: str) -> Any:
    """A request that should succeed (the explicit example every run starts with)."""
    pickup, dropoff = ORDER["pickup"], ORDER["dropoff"]
    return {
        ("post", "/v1/orders"): ORDER,
        ("post", "/v1/orders/{order_id}/cancel"): {"reason": "fuzz"},
        ("post", "/v1/orders/{order_id}/share"): {"ttl_s": 60},
        ("post", "/v1/orders/{order_id}/pickup"): {},  # at the pickup: no override needed
        ("post", "/v1/orders/{order_id}/dropoff"): {"override_reason": "fuzz"},
        ("post", "/v1/couriers/{courier_id}/shift"): {"action": "start", **pickup},
        ("post", "/v1/couriers/{courier_id}/observations"): [
            {"t": time.time(), "kind": "gps", **dropoff, "accuracy": 5.0}
        ],
        ("put", "/v1/zones"): BERLIN,
        ("put", "/v1/dispatch/settings"): {"lateness_weight": 4},
    }.get((method, path), NOT_SET)


def prepare(server: Server, path: str) -> str:
    """bob on shift, standing at the pickup of an order assigned to him (picked up when
    the drop-off is to be confirmed); returns the order's id."""
    with server.client(OPS) as ops:
        shift = {"action": "start", **ORDER["pickup"], "capacity": 10}
        assert ops.post("/v1/couriers/bob/shift", json=shift).status_code == 200
        fix = {"t": time.time() - 300, "kind": "gps", **ORDER["pickup"], "accuracy": 5.0}
        assert ops.post("/v1/couriers/bob/observations", json=[fix]).status_code == 200
        order_id: str = ops.post("/v1/orders", json=ORDER).json()["id"]
        deadline = time.monotonic() + 10
        while ops.get(f"/v1/orders/{order_id}").json()["status"] != "assigned":
            assert time.monotonic() < deadline, "the order was never assigned"
            time.sleep(0.02)
        if path.endswith("/dropoff"):
            r = ops.post(f"/v1/orders/{order_id}/pickup", json={})
            assert r.status_code == 200, r.text
    return order_id


@pytest.mark.parametrize(("method", "path"), FUZZED, ids=[f"{m} {p}" for m, p in FUZZED])
def test_schemathesis_finds_no_server_error(server: Server, method: str, path: str) -> None:
    """Positive (and, where there is input to break, negative) cases generated from the
    document, sent to a real server as ops. Path ids are half real (an order assigned to
    a courier on shift, the courier) and half random, so handlers run past their lookups;
    each run starts with one valid request, which must succeed."""
    order_id = prepare(server, path)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operation = schema[path][method.upper()]
    known = {"order_id": order_id, "courier_id": "bob"}
    fixed = {k: v for k, v in known.items() if f"{{{k}}}" in path}
    valid = operation.Case(
        path_parameters=fixed, body=valid_body(method, path), media_type="application/json"
    )
    modes = [GenerationMode.POSITIVE]
    if ENDPOINTS.get((method, path), ("", "none"))[1] != "none" or path == "/v1/orders":
        modes.append(GenerationMode.NEGATIVE)
    failures: list[str] = []
    seen: set[int] = set()
    valid_status: list[int] = []

    def fuzz(mode: GenerationMode) -> None:
        strategy = st.one_of(
            operation.as_strategy(generation_mode=mode, path_parameters=fixed),
            operation.as_strategy(generation_mode=mode),
        )

        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        @example(case=valid)
        def run(case: Case[Any]) -> None:
            with_ops_token(case)
            response = case.call(base_url=server.url, timeout=10)
            seen.add(response.status_code)
            if case is valid and not valid_status:
                valid_status.append(response.status_code)
            for check in CHECKS:
                try:
                    case.validate_response(response, checks=[check])
                except Exception as failure:  # a check's report: collect, don't shrink
                    if len(failures) < 5:
                        failures.append(
                            f"{mode.value} {check.__name__}: {response.status_code} "
                            f"{case.as_curl_command()}\n{str(failure)[:800]}"
                        )

        run()

    for mode in modes:
        fuzz(mode)
    assert not failures, "\n\n".join(failures)
    assert all(code < 500 for code in seen)
    assert valid_status and 200 <= valid_status[0] < 300, f"the valid request got {valid_status}"

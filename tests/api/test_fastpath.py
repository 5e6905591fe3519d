"""The ingest route served ahead of FastAPI (:class:`api.fastpath.DirectRoute`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from api.app import create_app
from api.fastpath import DirectRoute
from api.settings import Settings
from tests.api.conftest import Server, auth, token
from tests.api.test_bad_input import assert_problem
from tests.api.test_metrics import _sample

JSON = {"Content-Type": "application/json"}


def test_the_ingest_route_is_served_by_the_outermost_layer() -> None:
    """Ahead of Starlette's error middleware and every middleware of ours: the fast path
    does the body limit and the metrics itself (the tests above and below check that)."""
    app = create_app(Settings(secret="s" * 32, store="memory"))
    stack = app.build_middleware_stack()
    assert isinstance(stack, DirectRoute)
    assert stack.route.path == "/v1/couriers/{courier_id}/observations"
    assert stack.max_body == Settings(secret="s" * 32).max_body_bytes


def test_observation_posts_answer_and_count_as_through_the_framework(server: Server) -> None:
    bob = token("courier", "bob")
    fix: dict[str, Any] = {
        "t": time.time(),
        "kind": "gps",
        "lat": 52.52,
        "lon": 13.40,
        "accuracy": 8.0,
    }
    path = "/v1/couriers/bob/observations"
    with server.client(bob) as http:
        ok = http.post(path, json=[fix])
        assert ok.status_code == 200, ok.text
        assert ok.json()["accepted"] == 1 and ok.json()["position"]["lat"] == pytest.approx(52.52)
        # a chunked body (no Content-Length) goes the long way, through FastAPI's route
        later = {**fix, "t": fix["t"] + 1}
        body = json.dumps([later]).encode()
        chunked = http.post(path, content=iter([body[:9], body[9:]]), headers=JSON)
        assert "content-length" not in chunked.request.headers
        assert chunked.status_code == 200 and chunked.json()["accepted"] == 1, chunked.text
        assert_problem(http.post("/v1/couriers/eve/observations", json=[fix]), 403)
        bad = {**auth(bob), **JSON}
        assert_problem(http.post(path, content=b"[{", headers=bad), 400, "malformed_json")
        assert_problem(http.post(path, content=b"[]", headers=auth(bob)), 415)
        # other methods on the same path still go through FastAPI
        assert_problem(http.get(path), 405, "method_not_allowed")
        text = http.get("/metrics").text
    route = "/v1/couriers/{courier_id}/observations"
    for status, n in (("200", 2), ("403", 1), ("400", 1), ("415", 1), ("405", 1)):
        assert _sample(text, "o2o_http_requests_total", route=route, status=status) == n


class Base(Exception):
    pass


class Derived(Base):
    pass


async def _endpoint(request: Request) -> Response:
    what = request.path_params["name"]
    if what == "derived":
        raise Derived("from the endpoint")
    if what == "crash":
        raise RuntimeError("nobody handles this")
    return JSONResponse({"direct": what})


async def _fallback(request: Request) -> Response:
    return PlainTextResponse("through the app")


def _app(records: list[tuple[int, float]] | None = None) -> Starlette:
    route = Route("/things/{name}", _endpoint, methods=["POST"])
    app = Starlette(routes=[route, Route("/things/{name}", _fallback, methods=["GET"])])

    async def on_base(request: Request, exc: Exception) -> Response:
        return JSONResponse({"handled": type(exc).__name__}, status_code=418)

    record = None if records is None else (lambda s, t: records.append((s, t)))
    app.add_middleware(
        DirectRoute, route=route, handlers={Base: on_base}, max_body=10, record=record
    )
    return app


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_direct_route_records_each_answer_and_leaves_big_bodies_to_the_app() -> None:
    asyncio.run(_records_and_limits())


async def _records_and_limits() -> None:
    records: list[tuple[int, float]] = []
    transport = httpx.ASGITransport(app=_app(records))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/things/x", content=b"0123456789")).json() == {"direct": "x"}
        assert (await client.post("/things/derived")).status_code == 418
        # over max_body, or streamed: served by the app's own route (same endpoint), so
        # not recorded by the fast path
        big = await client.post("/things/y", content=b"0123456789a")
        chunked = await client.post("/things/z", content=_chunks(b"a", b"b"))
        assert [big.json(), chunked.json()] == [{"direct": "y"}, {"direct": "z"}]
    assert [s for s, _ in records] == [200, 418]
    assert all(0 <= t < 5 for _, t in records)


def test_direct_route_answers_its_method_and_maps_errors_by_class() -> None:
    asyncio.run(_answers_and_maps())


async def _answers_and_maps() -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/things/x")).json() == {"direct": "x"}
        r = await client.post("/things/derived")  # a subclass finds its base's handler
        assert (r.status_code, r.json()) == (418, {"handled": "Derived"})
        assert (await client.get("/things/x")).text == "through the app"
        assert (await client.post("/things/x/more")).status_code == 404
        with pytest.raises(RuntimeError, match="nobody handles this"):
            await client.post("/things/crash")


def test_direct_route_matches_below_a_root_path() -> None:
    asyncio.run(_below_root_path())


async def _below_root_path() -> None:
    transport = httpx.ASGITransport(app=_app(), root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/api/things/y")).json() == {"direct": "y"}

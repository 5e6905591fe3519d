"""The ingest route served ahead of FastAPI (:class:`api.fastpath.DirectRoute`)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from api.fastpath import DirectRoute
from tests.api.conftest import Server, auth, token
from tests.api.test_bad_input import assert_problem
from tests.api.test_metrics import _sample


def test_observation_posts_answer_and_count_as_through_the_framework(server: Server) -> None:
    bob = token("courier", "bob")
    fix = {"t": time.time(), "kind": "gps", "lat": 52.52, "lon": 13.40, "accuracy": 8.0}
    path = "/v1/couriers/bob/observations"
    with server.client(bob) as http:
        ok = http.post(path, json=[fix])
        assert ok.status_code == 200, ok.text
        assert ok.json()["accepted"] == 1 and ok.json()["position"]["lat"] == pytest.approx(52.52)
        assert_problem(http.post("/v1/couriers/eve/observations", json=[fix]), 403)
        bad = {**auth(bob), "Content-Type": "application/json"}
        assert_problem(http.post(path, content=b"[{", headers=bad), 400, "malformed_json")
        assert_problem(http.post(path, content=b"[]", headers=auth(bob)), 415)
        # other methods on the same path still go through FastAPI
        assert_problem(http.get(path), 405, "method_not_allowed")
        text = http.get("/metrics").text
    route = "/v1/couriers/{courier_id}/observations"
    for status, n in (("200", 1), ("403", 1), ("400", 1), ("415", 1), ("405", 1)):
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


def _app() -> Starlette:
    route = Route("/things/{name}", _endpoint, methods=["POST"])
    app = Starlette(routes=[route, Route("/things/{name}", _fallback, methods=["GET"])])

    async def on_base(request: Request, exc: Exception) -> Response:
        return JSONResponse({"handled": type(exc).__name__}, status_code=418)

    app.add_middleware(DirectRoute, route=route, handlers={Base: on_base})
    return app


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

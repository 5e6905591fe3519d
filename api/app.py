"""The FastAPI service: REST for customers, couriers and ops, plus the live websockets.

``create_app`` builds one worker's app: the store (memory, or Redis shared by all
workers), :class:`tracking.live.Live` for the commands, the websocket
:class:`tracking.hub.Hub`, and the :class:`tracking.dispatch_loop.DispatchLoop` (every
worker runs one; a Redis lease lets exactly one lead). Handlers only check who may do
what and translate JSON; the work is in ``tracking``.

Access (the full matrix is in ``tests/api/test_access.py``): ops may do everything; a
customer sees and cancels only orders they placed; a courier sees only their own shift,
position and route and the orders assigned to them; a viewer (share link) reads one
order and its tracking channel until the link expires.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Body, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import redact
from api.auth import (
    AuthError,
    Principal,
    Role,
    TokenCache,
    check_secret,
    create_token,
    verify_token,
)
from api.fastpath import DirectRoute
from api.metrics import Metrics, Timed
from api.problems import Problem, install, problem_body
from api.schemas import (
    CancelIn,
    ConfirmIn,
    ConfirmOut,
    CourierOut,
    DispatchSettingsIn,
    Fleet,
    Health,
    IngestOut,
    ObservationDoc,
    OrderIn,
    OrderList,
    OrderOut,
    ProblemOut,
    RouteOut,
    ShareIn,
    ShareOut,
    ShiftIn,
)
from api.settings import Settings
from dispatch.dispatcher import DispatchSettings
from dispatch.model import Courier, Order
from geo.estimate import Estimate
from tracking.channels import order_json, route_json
from tracking.dispatch_loop import DispatchLoop, Leadership
from tracking.errors import NotFound, TrackingError
from tracking.events import EventLog, MemoryEventLog
from tracking.hub import ChannelLimits, Hub
from tracking.live import (
    Forbidden,
    Live,
    LiveConfig,
    OrderRequest,
)
from tracking.runtime import tune_gc
from tracking.store import MemoryStore, StateStore
from tracking.tasks import cancel_and_wait

log = logging.getLogger("o2o.api")
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


@dataclass
class Services:
    """Everything one worker's handlers use (``app.state.svc``)."""

    settings: Settings
    secret: str
    store: StateStore
    live: Live
    hub: Hub
    metrics: Metrics
    limits: ChannelLimits
    loop: DispatchLoop | None = None
    store_kind: str = "memory"
    tokens: TokenCache = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = TokenCache(self.secret)

    def principal(self, token: str | None) -> Principal:
        if not token:
            raise AuthError("missing_token", "send 'Authorization: Bearer <token>'")
        return self.tokens.verify(token)


INGEST_PATH = "/v1/couriers/{courier_id}/observations"
"""The route couriers post to every second; :class:`DirectRoute` serves it."""


def app_services(request: Request) -> Services:
    """This worker's services (plain function, for code outside dependencies)."""
    svc: Services = request.app.state.svc
    return svc


async def services(request: Request) -> Services:
    return app_services(request)


Svc = Annotated[Services, Depends(services)]


async def principal(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer token")] = None,
) -> Principal:
    """Dependencies are ``async`` on purpose: FastAPI runs plain ``def`` dependencies in a
    thread pool, which cost a quarter of the CPU of an observation post."""
    return app_services(request).principal(bearer_token(authorization))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header (None when there is none)."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthError("bad_authorization", "use 'Authorization: Bearer <token>'")
    return value.strip()


Caller = Annotated[Principal, Depends(principal)]


async def json_body(request: Request, p: Caller) -> None:
    """A request body must be declared JSON (``application/json`` or ``+json``); any
    other Content-Type, or none, is a 415 rather than a confusing 422. Checked after the
    token, so an unauthenticated caller learns nothing; empty bodies (the optional ones of
    cancel, share and the confirmations) may come without."""
    check_json_body(request)


def check_json_body(request: Request) -> None:
    """:func:`json_body` without the dependency machinery (for the ingest hot path)."""
    length = request.headers.get("content-length")
    if length in ("0", None) and "transfer-encoding" not in request.headers:
        return
    ctype = request.headers.get("content-type")
    media = (ctype or "").partition(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    if kind == "application" and (subtype == "json" or subtype.endswith("+json")):
        return
    sent = f"not {media!r}" if media else "the request has none"
    raise Problem(
        415, "unsupported_media_type", f"send JSON (Content-Type: application/json); {sent}"
    )


JSON_BODY = [Depends(json_body)]


def require(p: Principal, *roles: Role) -> None:
    if p.role not in roles:
        raise Problem(403, "forbidden_role", f"{p.role} may not do this")


def can_see(p: Principal, o: Order) -> bool:
    if p.role == "ops":
        return True
    if p.role == "customer":
        return o.customer_id == p.subject
    if p.role == "courier":
        return o.courier_id == p.subject
    return p.order_id == o.id


async def visible_order(svc: Services, p: Principal, order_id: str) -> Order:
    order = await svc.store.get_order(order_id)
    if not can_see(p, order):
        raise Forbidden("not_yours", "this order is not yours")
    return order


def own_courier(p: Principal, courier_id: str) -> None:
    if p.role == "ops" or (p.role == "courier" and p.subject == courier_id):
        return
    raise Forbidden("not_yours", "this courier is not you")


def courier_out(c: Courier, est: Estimate | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": c.id,
        "on_shift": c.on_shift,
        "lat": c.position.point[0],
        "lon": c.position.point[1],
        "position_t": c.position_t,
        "shift_start": c.shift_start,
        "shift_end": c.shift_end,
        "capacity": c.capacity,
        "on_board": list(c.on_board),
    }
    if est is not None:
        out["position"] = estimate_out(est)
    return out


def estimate_out(est: Estimate) -> dict[str, Any]:
    return {
        "lat": est.lat,
        "lon": est.lon,
        "radius_m": est.radius68,
        "radius95_m": est.radius95,
        "t": est.t,
        "h3": est.h3,
        "velocity": list(est.velocity),
    }


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413 before the app sees them.

    A body with a Content-Length is judged by it without being read. A streamed body
    (chunked, no length) is read here up to the limit: over it, the 413 goes out at once;
    within it, the app gets the buffered body. The refusal therefore never has to travel
    through the app (or its middleware) as an exception, which would turn it into a 500
    or a dropped connection.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                too_big = True
            if too_big:
                await self._refuse(scope, send)
                return
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body at all
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away mid-body
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            problem_body(
                413,
                "body_too_large",
                f"request bodies are limited to {self.limit} bytes",
                scope.get("path", ""),
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


@dataclass
class _Backend:
    """The store, plus what must not wait behind requests for a pooled connection: the
    log readers (the hub's fan-out, the dispatcher's feed) and the leader lease. With
    one shared pool, a burst of requests starved them: the fan-out to every socket
    stopped and the lease lapsed, so the dispatcher was rebuilt mid-load."""

    store: StateStore
    reader_log: EventLog
    leadership: Leadership | None
    kind: str
    extra: Any = None  # a second Redis client, closed with the store


class GzipReads:
    """Gzip large ``GET`` responses (map libraries, fleet and order lists, reports).

    Writes answer with a few hundred bytes; skipping the gzip layer for them saves its
    per-request work on the busiest routes (observation posts, every second per courier).
    """

    def __init__(self, app: ASGIApp, minimum_size: int = 2048) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _build_store(settings: Settings) -> _Backend:
    maxlen, topic_maxlen = settings.events_maxlen, settings.topic_maxlen
    if settings.store == "memory":
        log_ = MemoryEventLog(maxlen=maxlen, topic_maxlen=topic_maxlen)
        return _Backend(MemoryStore(log=log_), log_, None, "memory")
    if settings.store.startswith(("redis://", "rediss://", "unix://")):
        from redis.asyncio import BlockingConnectionPool, Redis

        from tracking.redis_events import RedisEventLog
        from tracking.redis_leader import RedisLeadership
        from tracking.redis_store import RedisStore

        def client(max_connections: int) -> Redis:
            # Blocking pools: under load a caller waits (up to 5 s) for a free
            # connection instead of failing with "Too many connections".
            pool = BlockingConnectionPool.from_url(
                settings.store, max_connections=max_connections, timeout=5.0
            )
            return Redis(connection_pool=pool)

        requests, control = client(settings.redis_connections), client(4)
        prefix = settings.redis_prefix
        log = RedisEventLog(requests, prefix=prefix, maxlen=maxlen, topic_maxlen=topic_maxlen)
        reader = RedisEventLog(
            control,
            prefix=prefix,
            maxlen=maxlen,
            topic_maxlen=topic_maxlen,
            read_interval_s=settings.log_read_interval_s,
        )
        return _Backend(
            RedisStore(requests, prefix=prefix, log=log, owns_client=True),
            reader,
            RedisLeadership(control, prefix=prefix),
            "redis",
            control,
        )
    raise ValueError(f"--store must be 'memory' or a redis:// URL, got {settings.store!r}")


def _json_response(doc: dict[str, Any]) -> Response:
    """``JSONResponse(doc)`` written by orjson: the answer to every observation post."""
    try:
        return Response(orjson.dumps(doc), media_type="application/json")
    except TypeError:
        return JSONResponse(doc)


class ServiceApp(FastAPI):
    """FastAPI with :attr:`fast_path` as the outermost layer of its middleware stack."""

    fast_path: Callable[..., ASGIApp] | None = None
    """``fast_path(stack, handlers=...)``: the layer (a :class:`DirectRoute`) that
    serves the ingest route ahead of everything else, given the app's exception handlers
    as registered when the stack is built (at the first request)."""

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if self.fast_path is None:
            return stack
        return self.fast_path(stack, handlers=self.exception_handlers)


def create_app(
    settings: Settings | None = None,
    *,
    store: StateStore | None = None,
    clock: Callable[[], float] = time.time,
    live_config: LiveConfig | None = None,
    dispatch_settings: DispatchSettings | None = None,
) -> FastAPI:
    """One worker's app. ``store`` overrides ``settings.store`` (tests, the demo)."""
    redact.install()  # tokens in ?token= never reach the logs
    settings = settings or Settings()
    secret = check_secret(settings.secret.get_secret_value() if settings.secret else None)
    if store is None:
        backend = _build_store(settings)
    else:
        backend = _Backend(store, store.events, None, "memory")
    store, leadership, kind = backend.store, backend.leadership, backend.kind
    metrics = Metrics()
    cfg = live_config or LiveConfig(max_batch=settings.max_batch)
    base = dispatch_settings or DispatchSettings(
        replan_every_s=settings.replan_every_s,
        solve_time_limit_s=settings.solve_time_limit_s,
    )
    live = Live(store, cfg, clock, base_settings=base)
    hub = Hub(backend.reader_log, stale_position_s=settings.stale_position_s or None)
    loop = (
        DispatchLoop(
            store,
            settings=base,
            leadership=leadership,
            reader_log=backend.reader_log,
            isolate=settings.dispatch_process,
            clock=clock,
            position_every_s=settings.dispatch_position_every_s,
        )
        if settings.dispatch
        else None
    )
    svc = Services(
        settings=settings,
        secret=secret,
        store=store,
        live=live,
        hub=hub,
        metrics=metrics,
        limits=ChannelLimits(
            position_interval_s=settings.position_interval_s,
            heartbeat_s=settings.heartbeat_s,
            send_timeout_s=settings.send_timeout_s,
            max_queue=settings.ws_queue,
        ),
        loop=loop,
        store_kind=kind,
    )
    metrics.watch(
        lambda: {
            "ws_subscribers": float(hub.subscribers),
            "hub_events_dispatched": float(hub.dispatched),
            "hub_log_outages": float(hub.outages),
            "hub_lag_seconds": hub.lag_s,
            "hub_positions_shed": float(hub.positions_shed),
            "dispatch_leading": float(bool(loop and loop.leading)),
            "dispatch_errors": float(loop.errors if loop else 0),
            **{f"dispatch_{k}": v for k, v in (loop.dispatcher_stats if loop else {}).items()},
        }
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.start()
        # (task, how long it may take to stop)
        tasks = [
            (asyncio.create_task(metrics.publish_forever(), name="metrics"), 2.0),
            (asyncio.create_task(metrics.measure_loop_lag(), name="loop-lag"), 2.0),
        ]
        if loop:  # it stops its log reader and its child process first
            tasks.append((asyncio.create_task(loop.run(), name="dispatch"), 10.0))
        try:
            yield
        finally:
            hub.close_all("restart")
            await asyncio.sleep(0)
            for task, stop_s in tasks:
                await cancel_and_wait(task, stop_s)
            await hub.stop()
            await store.aclose()
            if backend.extra is not None:
                await backend.extra.aclose()

    app = ServiceApp(
        title="o2o",
        version="0.1.0",
        summary="Live location, dispatch and delivery tracking",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry layer asks, on every request, whether a provider is
        # configured (3 % of an observation post's CPU); on only when asked for.
        telemetry=None if settings.otel else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.svc = svc
    install(app)
    _routes(app)
    ingest = app.router.routes[0]
    assert isinstance(ingest, APIRoute) and ingest.path == INGEST_PATH
    # Outermost: observation posts skip every layer below (api/fastpath.py), doing the
    # body limit and the request metrics themselves.
    app.fast_path = functools.partial(
        DirectRoute,
        route=ingest,
        max_body=settings.max_body_bytes,
        record=metrics.recorder("POST", INGEST_PATH),
    )
    app.add_middleware(Timed, metrics=metrics)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(GzipReads)
    from api.ws import register as register_websockets

    register_websockets(app)
    from api.whatif import register as register_whatif

    register_whatif(app)
    from api.web import register as register_web

    register_web(app)  # last: its catch-all static routes must not shadow the API
    _document_problems(app)
    return app


PROBLEM_RESPONSES: dict[str, str] = {
    "400": "Malformed JSON",
    "401": "Missing, malformed or expired token",
    "403": "Not allowed for this caller (role, or not theirs)",
    "404": "Unknown id",
    "413": "Body or batch too large",
    "415": "The body is not JSON",
    "422": "Invalid request (one entry per bad field in errors)",
}


def _document_problems(app: FastAPI) -> None:
    """Complete the OpenAPI document: every /v1 operation lists the errors it can
    answer (401, 403 and 422 everywhere, 404 with a path id, 400 and 413 with a body, 415
    where the body must be JSON), and every error is an ``application/problem+json``
    Problem."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        json_only = {
            (method.lower(), route.path)
            for route in app.routes
            if isinstance(route, APIRoute)
            and any(d.call is json_body for d in route.dependant.dependencies)
            for method in route.methods or ()
        }
        doc = build()
        ref = {"$ref": "#/components/schemas/Problem"}
        for path, item in doc.get("paths", {}).items():
            for method, op in item.items():
                responses: dict[str, Any] = op.setdefault("responses", {})
                if path.startswith("/v1/"):
                    codes = ["401", "403", "422"]
                    if "{" in path:
                        codes.append("404")
                    if "requestBody" in op:
                        codes += ["400", "413"]
                    if (method, path) in json_only:
                        codes.append("415")
                    for code in codes:
                        responses.setdefault(code, {"description": PROBLEM_RESPONSES[code]})
                for code, resp in responses.items():
                    if code[:1] in ("4", "5"):
                        resp["content"] = {"application/problem+json": {"schema": ref}}
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name, model in (("Problem", ProblemOut), ("ObservationDoc", ObservationDoc)):
            # Models no route declares (problems come from handlers, observations are
            # read raw): their schemas and those they use go to the components.
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for sub, sub_schema in model_schema.pop("$defs", {}).items():
                schemas.setdefault(sub, sub_schema)
            schemas[name] = model_schema
        for unused in ("HTTPValidationError", "ValidationError"):  # replaced by Problem
            if f'"#/components/schemas/{unused}"' not in json.dumps(doc):
                schemas.pop(unused, None)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (``o2o serve`` starts workers with it)."""
    logging.basicConfig(level=os.environ.get("O2O_LOG_LEVEL", "INFO"))
    settings = Settings()
    app = create_app(settings)
    tune_gc(settings.gc_thresholds)  # a worker process: see tracking.runtime
    return app


ORDER_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid token"},
    403: {"description": "Not yours"},
    404: {"description": "Unknown order"},
}


def _routes(app: FastAPI) -> None:
    # -- orders -----------------------------------------------------------------------
    @app.post(
        "/v1/orders",
        status_code=201,
        response_model=OrderOut,
        tags=["customers"],
        dependencies=JSON_BODY,
        responses={
            200: {"model": OrderOut, "description": "Replayed (same Idempotency-Key)"},
            409: {"description": "Idempotency-Key reused for another order"},
            422: {"description": "Invalid order"},
        },
    )
    async def place_order(
        body: OrderIn,
        svc: Svc,
        p: Caller,
        response: Response,
        idempotency_key: Annotated[
            str | None, Header(max_length=256, description="Retry-safe creation key")
        ] = None,
    ) -> dict[str, Any]:
        require(p, "customer", "ops")
        customer = p.subject
        if body.customer_id is not None:
            if p.role != "ops":
                raise Forbidden("not_yours", "only ops may place orders for someone else")
            customer = body.customer_id
        if idempotency_key is not None and not idempotency_key.strip():
            raise Problem(422, "bad_idempotency_key", "Idempotency-Key must not be blank")
        req = OrderRequest(
            pickup=(body.pickup.lat, body.pickup.lon),
            dropoff=(body.dropoff.lat, body.dropoff.lon),
            mode=body.mode,
            ready_at=body.ready_at,
            promised_by=body.promised_by,
            size=body.size,
            pickup_service_s=body.pickup_service_s,
            dropoff_service_s=body.dropoff_service_s,
            pickup_place_id=body.pickup.id,
            dropoff_place_id=body.dropoff.id,
        )
        order, created = await svc.live.place_order(
            req, customer_id=customer, idempotency_key=idempotency_key
        )
        if created:
            svc.metrics.orders.inc()
        else:
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
        response.headers["Location"] = f"/v1/orders/{order.id}"
        return order_json(order)

    @app.get("/v1/orders", response_model=OrderList, tags=["ops", "customers", "couriers"])
    async def list_orders(
        svc: Svc,
        p: Caller,
        status: Annotated[str, Query(pattern="^(open|all)$")] = "open",
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> dict[str, Any]:
        require(p, "ops", "customer", "courier")
        orders = await svc.store.list_orders(open_only=status == "open")
        mine = [o for o in orders if can_see(p, o)]
        return {"orders": [order_json(o) for o in mine[:limit]]}

    @app.get(
        "/v1/orders/{order_id}",
        response_model=OrderOut,
        tags=["customers"],
        responses=ORDER_RESPONSES,
    )
    async def get_order(order_id: str, svc: Svc, p: Caller) -> dict[str, Any]:
        return order_json(await visible_order(svc, p, order_id))

    @app.post(
        "/v1/orders/{order_id}/cancel",
        response_model=OrderOut,
        tags=["customers"],
        dependencies=JSON_BODY,
        responses={**ORDER_RESPONSES, 409: {"description": "Cannot cancel now"}},
    )
    async def cancel_order(
        order_id: str, svc: Svc, p: Caller, body: Annotated[CancelIn | None, Body()] = None
    ) -> dict[str, Any]:
        require(p, "customer", "ops")
        await visible_order(svc, p, order_id)
        reason = body.reason if body else None
        return order_json(await svc.live.cancel_order(order_id, reason=reason))

    @app.post(
        "/v1/orders/{order_id}/share",
        response_model=ShareOut,
        tags=["customers"],
        dependencies=JSON_BODY,
        responses=ORDER_RESPONSES,
    )
    async def share_order(
        order_id: str, svc: Svc, p: Caller, body: Annotated[ShareIn | None, Body()] = None
    ) -> dict[str, Any]:
        """A read-only tracking link for one order that expires (default 6 h)."""
        require(p, "customer", "ops")
        await visible_order(svc, p, order_id)
        ttl = body.ttl_s if body else svc.settings.share_ttl_s
        token = create_token(svc.secret, "viewer", p.subject, ttl, order_id=order_id)
        base = svc.settings.public_url.rstrip("/")
        return {
            "token": token,
            "url": f"{base}/track/{order_id}?token={token}",
            "expires_at": verify_token(svc.secret, token).expires_at,  # exactly the token's
        }

    for kind in ("pickup", "dropoff"):
        _confirm_route(app, kind)

    # -- couriers ---------------------------------------------------------------------
    @app.post(
        "/v1/couriers/{courier_id}/shift",
        response_model=CourierOut,
        tags=["couriers"],
        dependencies=JSON_BODY,
        responses={
            403: {"description": "Not you"},
            404: {"description": "Unknown courier"},
            422: {"description": "No position to start from"},
        },
    )
    async def shift(courier_id: str, body: ShiftIn, svc: Svc, p: Caller) -> dict[str, Any]:
        own_courier(p, courier_id)
        if body.action == "start":
            c = await svc.live.start_shift(
                courier_id,
                lat=body.lat,
                lon=body.lon,
                shift_end=body.shift_end,
                capacity=body.capacity,
            )
        else:
            c = await svc.live.end_shift(courier_id)
        return courier_out(c)

    @app.get("/v1/couriers/{courier_id}", response_model=CourierOut, tags=["couriers"])
    async def get_courier(courier_id: str, svc: Svc, p: Caller) -> dict[str, Any]:
        own_courier(p, courier_id)
        c = await svc.store.get_courier(courier_id)
        try:
            est: Estimate | None = await svc.store.get_position(courier_id)
        except NotFound:
            est = None
        return courier_out(c, est)

    @app.get("/v1/couriers/{courier_id}/route", response_model=RouteOut, tags=["couriers"])
    async def get_route(courier_id: str, svc: Svc, p: Caller) -> dict[str, Any]:
        own_courier(p, courier_id)
        await svc.store.get_courier(courier_id)
        return route_json(await svc.store.get_route(courier_id), courier_id)

    @app.post(
        INGEST_PATH,
        response_model=IngestOut,
        tags=["couriers"],
        openapi_extra={
            "parameters": [
                {
                    "name": "courier_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "title": "Courier Id"},
                },
                {
                    "name": "authorization",
                    "in": "header",
                    "required": False,
                    "description": "Bearer token",
                    "schema": {
                        "anyOf": [{"type": "string"}, {"type": "null"}],
                        "description": "Bearer token",
                        "title": "Authorization",
                    },
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "array",
                            "maxItems": 1000,
                            "items": {"$ref": "#/components/schemas/ObservationDoc"},
                        }
                    }
                },
            },
        },
        responses={
            413: {"description": "Batch too large"},
            415: {"description": PROBLEM_RESPONSES["415"]},
            422: {"description": "Nothing in the batch was usable"},
        },
    )
    async def observations(request: Request) -> Response:
        """Raw GPS / Wi-Fi / cell / beacon observations, fused into the courier's position.

        Each item is checked on its own; bad ones come back in ``rejected`` with their
        index and reason, good ones are used (a 422 only when none is usable).
        """
        # Every courier posts here every second. The same checks as the other routes,
        # in the same order, but called directly: FastAPI's parameter and dependency
        # resolution and its response-model validation were over half of this route's
        # CPU. The parameters are documented in ``openapi_extra`` instead, and
        # :class:`DirectRoute` calls this with a plain Request, ahead of FastAPI.
        courier_id: str = request.path_params["courier_id"]
        svc = app_services(request)
        p = svc.principal(bearer_token(request.headers.get("authorization")))
        check_json_body(request)
        own_courier(p, courier_id)
        raw = await request.body()
        try:
            records = orjson.loads(raw)
        except ValueError:  # not JSON to orjson; json also takes NaN, rejected per item
            try:
                records = json.loads(raw)
            except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
                msg = f"the request body is not valid JSON: {e}"
                raise Problem(400, "malformed_json", msg) from e
        if not isinstance(records, list):
            raise Problem(422, "not_a_list", "send a JSON list of observations")
        if len(records) > svc.live.config.max_batch:
            raise Problem(
                413,
                "batch_too_large",
                f"at most {svc.live.config.max_batch} observations per request",
            )
        try:
            result = await svc.live.post_observations(courier_id, records)
        except TrackingError:
            svc.metrics.obs_rejected.inc(len(records))
            raise
        rejected = sorted(result.rejected, key=lambda r: (r["index"] is None, r["index"] or 0))
        if result.accepted:
            svc.metrics.obs_accepted.inc(result.accepted)
        if rejected:
            svc.metrics.obs_rejected.inc(len(rejected))
        return _json_response(
            {
                "accepted": result.accepted,
                "rejected": rejected,
                "position": None if result.position is None else estimate_out(result.position),
            }
        )

    # Routes are matched in order and each miss costs a regex; the ingest route, which
    # takes most requests, goes first (no other route's path can match its own).
    ingest = app.router.routes.pop()
    if getattr(ingest, "path", None) != INGEST_PATH:
        raise RuntimeError("the ingest route must be the last one registered here")
    app.router.routes.insert(0, ingest)

    # -- ops --------------------------------------------------------------------------
    @app.get("/v1/fleet", response_model=Fleet, tags=["ops"])
    async def fleet(svc: Svc, p: Caller) -> dict[str, Any]:
        require(p, "ops")
        out = []
        for c in await svc.store.list_couriers():
            try:
                est: Estimate | None = await svc.store.get_position(c.id)
            except NotFound:
                est = None
            out.append(courier_out(c, est))
        return {"couriers": out}

    @app.get("/v1/zones", tags=["ops"])
    async def get_zones(svc: Svc, p: Caller) -> dict[str, Any]:
        """Service zones as a GeoJSON FeatureCollection (empty: no area limit)."""
        require(p, "ops")
        zones = await svc.live.zones(max_age_s=0)
        return zones.to_geojson() if zones else {"type": "FeatureCollection", "features": []}

    @app.put("/v1/zones", tags=["ops"], dependencies=JSON_BODY)
    async def put_zones(
        svc: Svc, p: Caller, geojson: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        """Replace the service zones (GeoJSON; orders outside every zone are refused)."""
        require(p, "ops")
        return (await svc.live.put_zones(geojson)).to_geojson()

    @app.get("/v1/dispatch/settings", tags=["ops"])
    async def get_settings(svc: Svc, p: Caller) -> dict[str, Any]:
        require(p, "ops")
        return _settings_json(await svc.live.settings())

    @app.put("/v1/dispatch/settings", tags=["ops"], dependencies=JSON_BODY)
    async def put_settings(
        svc: Svc,
        p: Caller,
        body: Annotated[DispatchSettingsIn, Body()],  # type: ignore[valid-type]
    ) -> dict[str, Any]:
        """Change dispatch knobs (any subset; the rest return to defaults)."""
        require(p, "ops")
        doc = body.model_dump(exclude_none=True)  # type: ignore[attr-defined]
        return _settings_json(await svc.live.put_settings(doc))

    # -- operations -------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> dict[str, Any]:
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        responses={503: {"description": "Store unreachable"}},
    )
    async def readyz(svc: Svc, request: Request) -> Any:
        """Ready for traffic: the store answers and the hub follows the log."""
        try:
            await asyncio.wait_for(svc.store.events.last_id(), 2.0)
        except (TrackingError, TimeoutError) as e:
            return JSONResponse(
                problem_body(503, "store_unavailable", f"store not reachable: {e}", "/readyz"),
                status_code=503,
                media_type="application/problem+json",
            )
        return {
            "status": "ready",
            "store": svc.store_kind,
            "hub": "following" if svc.hub.connected else "reconnecting",
            "dispatcher": "leading" if svc.loop and svc.loop.leading else "standby",
        }

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics(svc: Svc) -> Response:
        body, media_type = svc.metrics.exposition()
        return Response(body, media_type=media_type)


def _settings_json(s: DispatchSettings) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(s)


def _confirm_route(app: FastAPI, kind: str) -> None:
    async def confirm(
        order_id: str, svc: Svc, p: Caller, body: Annotated[ConfirmIn | None, Body()] = None
    ) -> dict[str, Any]:
        require(p, "courier", "ops")
        if p.role == "courier":
            await visible_order(svc, p, order_id)
        result = await svc.live.confirm(
            order_id,
            "pickup" if kind == "pickup" else "dropoff",
            courier_id=p.subject if p.role == "courier" else None,
            override_reason=body.override_reason if body else None,
        )
        return {
            "order": order_json(result.order),
            "distance_m": result.distance_m,
            "override_reason": result.override_reason,
        }

    confirm.__name__ = f"confirm_{kind}"
    app.post(
        f"/v1/orders/{{order_id}}/{kind}",
        response_model=ConfirmOut,
        tags=["couriers"],
        dependencies=JSON_BODY,
        summary=f"Confirm the {kind} (checked against the geofence)",
        responses={
            **ORDER_RESPONSES,
            409: {"description": "Wrong state"},
            422: {"description": "Outside the geofence without an override reason"},
        },
    )(confirm)

"""Serve one hot route straight from its endpoint, ahead of the framework's layers.

Every courier posts observations every second, so that one route takes nearly all of
the service's requests. Through FastAPI a request crosses Starlette's error middleware,
FastAPI's telemetry and body-limit layers, our gzip, body-limit and metrics middlewares,
the router's matching and the request handler's dependency solving before the endpoint
runs, and the answer goes back out through a wrapper of ``send`` per layer; profiled
under load those layers cost about as much CPU as the endpoint itself (validation,
fusion and the store write).

:class:`DirectRoute` is the outermost layer of the app's middleware stack (see
:class:`api.app.ServiceApp`) and answers ``POST`` on the route's path by calling the
endpoint with a plain :class:`~starlette.requests.Request`, doing itself what the layers
it skips would do for such a request: the body limit (only requests that declare a
``Content-Length`` within it take this path; a larger or streamed body goes the long
way, where :class:`api.app.BodyLimit` answers it), the request metrics (``record``) and
the error answers (the app's registered exception handlers, so they are the same problem
documents as through the framework; the handler for ``Exception`` is the 500). Every
other request, other methods on the same path included, passes through untouched. The
route stays registered with FastAPI, which documents it in the OpenAPI schema and serves
the requests that go the long way.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]
Record = Callable[[int, float], None]
"""``record(status, seconds)``: count one answered request and its duration."""


class DirectRoute:
    """ASGI middleware answering ``method`` on ``route``'s path with its endpoint.

    ``max_body``: with a limit, only requests whose ``Content-Length`` is within it (and
    that are not chunked) are served here; the rest pass through to ``app``.
    """

    def __init__(
        self,
        app: ASGIApp,
        route: Route,
        handlers: Mapping[Any, Handler],
        method: str = "POST",
        *,
        max_body: int | None = None,
        record: Record | None = None,
    ) -> None:
        self.app = app
        self.route = route
        self.endpoint: Endpoint = route.endpoint
        self.regex = route.path_regex
        self.method = method
        self.max_body = max_body
        self.record = record
        self.handlers = dict(handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        match = self.regex.match(_route_path(scope))
        if match is None or (self.max_body is not None and not self._small_body(scope)):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope["route"] = self.route  # the metrics label by route template
        scope["path_params"] = match.groupdict()
        request = Request(scope, receive, send)
        status = 500  # what the client gets if answering fails
        try:
            try:
                response = await self.endpoint(request)
            except Exception as exc:
                handler = self._handler_for(exc)
                if handler is None:
                    raise
                answer = handler(request, exc)
                response = await answer if inspect.isawaitable(answer) else answer
            status = response.status_code
            await response(scope, receive, send)
        finally:
            if self.record is not None:
                self.record(status, time.perf_counter() - start)

    def _small_body(self, scope: Scope) -> bool:
        """Whether the request declares a body length within ``max_body`` (not chunked)."""
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                return False
        if length is None:
            return True  # no body at all
        try:
            return int(length) <= self.max_body  # type: ignore[operator]
        except ValueError:
            return False

    def _handler_for(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            handler: Handler | None = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the ``root_path`` a proxy mounts us under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        return path[len(root) :]
    return path

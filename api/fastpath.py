"""Serve one hot route straight from its endpoint, ahead of the framework's layers.

Every courier posts observations every second, so that one route takes nearly all of
the service's requests. Through FastAPI a request crosses its exception, body-limit,
telemetry and exit-stack middlewares, the router's matching and the request handler's
dependency solving before the endpoint runs; profiled under load those layers cost
about as much CPU as the endpoint itself (validation, fusion and the store write).

:class:`DirectRoute` sits inside the service's own middlewares (metrics and the body
limit still see the request) and answers ``POST`` on the route's path by calling the
endpoint with a plain :class:`~starlette.requests.Request`. Errors go through the app's
registered exception handlers, so the answers are the same problem documents as through
the framework. Every other request, other methods on the same path included, passes
through untouched. The route stays registered with FastAPI, which documents it in the
OpenAPI schema.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


class DirectRoute:
    """ASGI middleware answering ``method`` on ``route``'s path with its endpoint."""

    def __init__(
        self,
        app: ASGIApp,
        route: Route,
        handlers: Mapping[Any, Handler],
        method: str = "POST",
    ) -> None:
        self.app = app
        self.route = route
        self.endpoint: Endpoint = route.endpoint
        self.regex = route.path_regex
        self.method = method
        # Snapshot of the exception handlers; the app registers them before it serves.
        self.handlers = dict(handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        match = self.regex.match(_route_path(scope))
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # the metrics middleware labels by route template
        scope["path_params"] = match.groupdict()
        request = Request(scope, receive, send)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

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

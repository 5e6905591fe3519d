"""RFC 9457 problem details for every error the service returns.

Every error body is ``application/problem+json`` with ``type`` (``/problems/<reason>``),
``title``, ``status``, ``detail``, ``instance`` (the request path) and ``reason`` (the
machine-readable slug the domain error carried); validation errors add ``errors`` (one
entry per bad field). The typed errors of every package map here in one place, so no
route handler formats an error and no domain error becomes a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from api.auth import AuthError
from dispatch.model import DispatchError, IllegalTransition, UnknownId
from geo.errors import GeoError
from tracking.errors import (
    BadInput,
    Conflict,
    CorruptData,
    NotFound,
    TrackingError,
    Unavailable,
)
from tracking.live import Forbidden, TooLarge, Unprocessable

log = logging.getLogger("o2o.api")
MEDIA_TYPE = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(self, status: int, reason: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.extra = extra


def problem_body(
    status: int, reason: str, detail: str, instance: str, **extra: Any
) -> dict[str, Any]:
    return {
        "type": f"/problems/{reason}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": instance,
        "reason": reason,
        **extra,
    }


def problem_response(
    request: Request, status: int, reason: str, detail: str, **extra: Any
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        problem_body(status, reason, detail, request.url.path, **extra),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def status_of(exc: Exception) -> int:
    """HTTP status of a domain error."""
    match exc:
        case NotFound() | UnknownId():
            return 404
        case Forbidden():
            return 403
        case Conflict() | IllegalTransition():
            return 409
        case TooLarge():
            return 413
        case Unavailable():
            return 503
        case CorruptData():
            return 500
        case BadInput() | Unprocessable() | DispatchError() | GeoError():
            return 422
        case AuthError():
            return 401
        case _:
            return 500


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    async def domain(request: Request, exc: Exception) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        resp = problem_response(request, status, getattr(exc, "reason", "error"), str(exc))
        if headers:
            resp.headers.update(headers)
        return resp

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(request, exc.status, exc.reason, exc.detail, **exc.extra)

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "type": e.get("type"),
                "msg": e.get("msg"),
            }
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(
                request, 400, "malformed_json", "the request body is not valid JSON", errors=errors
            )
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        return problem_response(request, 422, "invalid_request", detail, errors=errors)

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        reason = {404: "no_such_path", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = str(exc.detail)
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's "There was an error parsing the body": JSON nested too deeply,
            # bytes that are not UTF-8 and the like.
            reason, detail = "malformed_json", "the request body is not valid JSON"
        resp = problem_response(request, exc.status_code, reason, detail)
        if exc.headers:
            resp.headers.update(exc.headers)
        return resp

    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "internal_error", "unexpected server error")

    async def gone(request: Request, exc: Exception) -> JSONResponse:
        # The client hung up mid-body: nobody will read an answer, and it is not a
        # server fault (no 5xx, no error log).
        return problem_response(request, 400, "client_disconnected", "the client went away")

    app.add_exception_handler(ClientDisconnect, gone)
    for cls in (TrackingError, DispatchError, GeoError, AuthError):
        app.add_exception_handler(cls, domain)
    app.add_exception_handler(Problem, problem)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(Exception, crash)

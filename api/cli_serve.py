"""``o2o serve`` and ``o2o token create``: run the live service, mint its tokens.

Both read the signing key from ``O2O_SECRET``. ``serve`` hands its options to the worker
processes through ``O2O_*`` variables (uvicorn starts each worker afresh, and
:func:`api.app.app_from_env` reads them), so every worker runs the same configuration.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Annotated

import typer

token_app = typer.Typer(help="Bearer tokens for the service (signed with O2O_SECRET).")


def _fail(message: str) -> None:
    typer.echo(f"o2o: error: {message}", err=True)
    raise typer.Exit(2)


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
"""uvicorn's log levels (it raises a bare KeyError on any other)."""


def check_log_level(value: str) -> str:
    """``value`` lower-cased if it is one of :data:`LOG_LEVELS`, else a one-line error."""
    level = value.lower()
    if level not in LOG_LEVELS:
        _fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def serve(
    store: Annotated[
        str, typer.Option(help="'memory' (one process) or a redis:// URL (shared, durable)")
    ] = "memory",
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (Redis store only)", min=1)] = 1,
    dispatch: Annotated[bool, typer.Option(help="Run the dispatcher in the service")] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    proxy_headers: Annotated[
        bool,
        typer.Option(
            help="Trust X-Forwarded-For/-Proto from --forwarded-allow-ips (behind a proxy)"
        ),
    ] = False,
    forwarded_allow_ips: Annotated[
        str, typer.Option(help="Proxies whose X-Forwarded-* headers are trusted")
    ] = "127.0.0.1",
    ws_compression: Annotated[
        bool,
        typer.Option(help="Accept permessage-deflate on websockets (costs CPU per frame)"),
    ] = False,
) -> None:
    """Run the live service (REST + websockets) on the given store."""
    import uvicorn

    from api.auth import AuthError, check_secret

    log_level = check_log_level(log_level)
    try:
        check_secret(os.environ.get("O2O_SECRET"))
    except AuthError as e:
        _fail(str(e))
    if store != "memory" and not store.startswith(("redis://", "rediss://", "unix://")):
        _fail(f"--store must be 'memory' or a redis:// URL, got {store!r}")
    if workers > 1 and store == "memory":
        _fail("the memory store lives in one process; use --store redis://... for --workers > 1")
    os.environ["O2O_STORE"] = store
    os.environ["O2O_DISPATCH"] = "1" if dispatch else "0"
    os.environ["O2O_LOG_LEVEL"] = log_level.upper()
    # Workers > 1: prometheus_client's multiprocess mode, which it picks when first
    # imported, so the variable must be set before uvicorn starts (spawns) the workers.
    own_metrics_dir = None
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        if not os.path.isdir(metrics_dir):
            _fail(f"PROMETHEUS_MULTIPROC_DIR={metrics_dir!r} is not a directory")
    elif workers > 1:
        own_metrics_dir = tempfile.mkdtemp(prefix="o2o-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_metrics_dir
    try:
        uvicorn.run(
            "api.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            # Off unless asked: nothing here uses the client's address, and parsing the
            # headers costs every request (a few % of the service's CPU under load).
            proxy_headers=proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips,
            # one write per answer instead of two (head, body)
            http="api.http_protocol:CoalescingHttpToolsProtocol",
            ws_max_size=65_536,
            # Off unless asked, as in most websocket servers: the frames are a few hundred
            # bytes, where compressing each one (and the client inflating it) costs more
            # CPU than the bytes it saves are worth (docs/api.md).
            ws_per_message_deflate=ws_compression,
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            timeout_graceful_shutdown=5,
            loop=_loop(),
        )
    finally:
        if own_metrics_dir is not None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


def _loop() -> str:
    """uvloop with batched accepts (:mod:`api.accept`) where uvloop is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "auto"
    return "api.accept:new_event_loop"


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="customer, courier or ops")],
    subject: Annotated[str, typer.Option(help="The customer, courier or ops user id")],
    ttl: Annotated[int, typer.Option(help="Seconds the token is valid", min=1)] = 86_400,
) -> None:
    """Print one bearer token (and nothing else) on stdout."""
    from api.auth import ISSUED_ROLES, AuthError, create_token

    if role not in ISSUED_ROLES:
        _fail(f"--role must be one of {', '.join(ISSUED_ROLES)}")
    try:
        token = create_token(os.environ.get("O2O_SECRET") or "", role, subject, ttl)  # type: ignore[arg-type]
    except AuthError as e:
        _fail(str(e))
        return
    sys.stdout.write(token + "\n")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")

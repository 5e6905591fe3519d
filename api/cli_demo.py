"""``o2o demo``: the service with a generated city driving it, in one command.

Starts the service in this process (memory store; a signing key generated for the run
when ``O2O_SECRET`` is not set), then a :class:`api.demo_driver.DemoDriver` that uses it
over real HTTP like phones would: couriers on shift posting GPS fixes every second and
following their routes, customers placing orders, the dispatcher assigning them. The
city runs on a clock ``--speed`` times faster than the wall clock (the service shares
it, and every response carries it as ``X-O2O-Clock``). Prints the URLs of the ops
console, one courier's view and a few customers' tracking pages (with their tokens) as
soon as the service is ready, then one status line every 10 s; stops after
``--duration`` seconds, or on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable, Generator
from typing import Annotated, Any

import typer

__all__ = ["demo", "register"]


def _fail(message: str) -> None:
    typer.echo(f"o2o: error: {message}", err=True)
    raise typer.Exit(2)


def _say(line: str) -> None:
    print(line, flush=True)


def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one)", min=0, max=65535)] = 8000,
    couriers: Annotated[int, typer.Option(help="Couriers on shift", min=1, max=500)] = 8,
    orders_per_hour: Annotated[
        float, typer.Option(help="Orders per hour of the city clock", min=0, max=100_000)
    ] = 30.0,
    speed: Annotated[
        float, typer.Option(help="City clock speed (1 = real time)", min=0.1, max=3600)
    ] = 10.0,
    duration: Annotated[
        float, typer.Option(help="Wall seconds to run (0: until Ctrl-C)", min=0)
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the city and of the order stream")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Run the service with a generated city driving it; print the pages to open."""
    from api.auth import AuthError, check_secret
    from api.cli_serve import check_log_level
    from api.demo_driver import DemoOptions

    log_level = check_log_level(log_level)
    secret = os.environ.get("O2O_SECRET")
    generated = not secret
    if not secret:
        secret = secrets.token_urlsafe(48)
    else:
        try:
            check_secret(secret)
        except AuthError as e:
            _fail(str(e))
    sock = _listen(host, port)
    options = DemoOptions(
        couriers=couriers,
        orders_per_hour=orders_per_hour,
        speed=speed,
        duration_s=duration,
        seed=seed,
    )
    if generated:
        _say(
            "note: O2O_SECRET is not set: this run signs its tokens with a key generated "
            "for it (the tokens below work until the demo stops)"
        )
    try:
        code = asyncio.run(_run(sock, host, options, secret, log_level))
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket (bound here so a busy port is a clear error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        _fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
    return sock


def _url_host(host: str, family: int) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if family == socket.AF_INET6 else host


async def _run(sock: socket.socket, host: str, options: Any, secret: str, log_level: str) -> int:
    import uvicorn

    from api.app import create_app
    from api.demo_driver import AcceleratedClock, DemoDriver, Http, demo_city
    from api.settings import Settings
    from dispatch.dispatcher import DispatchSettings
    from tracking.store import MemoryStore

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield  # the demo handles Ctrl-C itself (stop the city, then the service)

    clock = AcceleratedClock(options.speed)
    app = create_app(
        Settings(secret=secret, store="memory", dispatch=True),
        store=MemoryStore(),
        clock=clock,
        dispatch_settings=DispatchSettings(replan_every_s=30.0, solve_time_limit_s=0.5),
    )
    _clock_header(app, clock)
    server = Server(
        uvicorn.Config(
            app,
            log_level=log_level,
            ws_max_size=65_536,
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            timeout_graceful_shutdown=3,
        )
    )
    stop = asyncio.Event()
    _on_signals(stop, server)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            _say("o2o demo: the service did not start")
            return 1
        await asyncio.sleep(0.02)
    port = sock.getsockname()[1]
    base = f"http://{_url_host(host, sock.family)}:{port}"
    http = Http(base, workers=min(64, 2 * options.couriers + 8))
    try:
        city = await asyncio.to_thread(demo_city, options.seed, options.couriers)
        driver = DemoDriver(http, clock, secret, options, city, echo=_say)
        try:
            first = await driver.setup()
        except RuntimeError as e:
            _say(f"o2o demo: could not set the city up: {e}")
            return 1
        _say(
            f"o2o demo: service at {base} (memory store), city {city.name}: "
            f"{options.couriers} couriers, {options.orders_per_hour:g} orders/h, "
            f"clock x{options.speed:g}"
        )
        c = driver.couriers[0]
        _say(f"ops console:    {base}/ops?token={driver.ops_token}")
        _say(f"courier view:   {base}/courier?token={c.token}&courier={c.id}&geo=off")
        for o in first:
            _say(f"order tracking: {base}/track/{o.id}?token={o.token}")
        _say(f"API docs:       {base}/docs")
        _say(
            f"running for {options.duration_s:g} s"
            if options.duration_s
            else "running: press Ctrl-C to stop"
        )
        if options.duration_s:
            asyncio.get_running_loop().call_later(options.duration_s, stop.set)
        serving.add_done_callback(lambda _: stop.set())
        await driver.run(stop)
        _say(await driver.status_line("done"))
    finally:
        http.close()
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await serving
    return 0


def _clock_header(app: Any, clock: Callable[[], float]) -> None:
    """Every response says the city clock (``X-O2O-Clock``, epoch seconds), so pages can
    tell how far it runs ahead of the browser's clock."""

    async def stamp(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        response = await call_next(request)
        response.headers["X-O2O-Clock"] = f"{clock():.3f}"
        return response

    app.middleware("http")(stamp)


def _on_signals(stop: asyncio.Event, server: Any) -> None:
    loop = asyncio.get_running_loop()

    def handler(sig: signal.Signals) -> Callable[[], None]:
        def on_signal() -> None:
            if stop.is_set():
                server.force_exit = True  # a second Ctrl-C: do not wait for connections
                server.should_exit = True
            else:
                _say(f"o2o demo: {sig.name}: stopping")
                stop.set()

        return on_signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler(sig))


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command("demo")(demo)

"""uvloop's event loop, accepting every queued connection at once.

libuv (since 1.45, which uvloop bundles) accepts one connection per poll of the
listening socket and relies on level-triggered polling for the next: one per event loop
iteration. A worker whose loop is busy (an iteration of a saturated worker takes 0.1-1.5
s) then accepts a handful of connections a second, and the others wait in the kernel's
accept queue with their first request already sent. Measured at full size on one worker
(2,000 couriers, 5,000 customers): 260-700 connections queued for the whole window, 12
accepts in 10 s, first requests on new connections answered up to 60 s late, after the
couriers' clients had given up on them (``docs/benchmarks.md``, session 7).

:class:`BatchAcceptLoop` serves TCP with a reader on the listening socket that accepts
up to :data:`ACCEPT_BATCH` connections each time it is readable (asyncio's own loop
accepts up to the backlog), each handed to uvloop with ``connect_accepted_socket``.
Everything else is uvloop's. ``o2o serve`` runs uvicorn with it
(``loop="api.accept:new_event_loop"``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

import uvloop

log = logging.getLogger("o2o.accept")

ACCEPT_BATCH = 16
"""Connections accepted per readiness of the listening socket, at most. Small enough
that with several workers on one socket a busy worker (slow iterations) takes fewer
new connections than an idle one; large enough that a worker with 0.5 s iterations
still accepts 32 a second."""

_GONE = {errno.ECONNABORTED, errno.EPROTO}
"""accept() errors of one connection that went away: go on with the next."""
_OUT_OF = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
"""accept() errors of a full process or system: pause accepting (the socket stays
readable, so trying again at once would spin), as asyncio does."""
RETRY_S = 1.0


class BatchServer(asyncio.AbstractServer):
    """The listening sockets of :meth:`BatchAcceptLoop.create_server`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sockets: Iterable[socket.socket],
    ) -> None:
        self._loop = loop
        self._factory = protocol_factory
        self._sockets = list(sockets)
        self._serving = False
        self._pending: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        for s in self._sockets:
            s.setblocking(False)
        self._start()

    def _start(self) -> None:
        if self._serving:
            return
        self._serving = True
        for s in self._sockets:
            self._loop.add_reader(s.fileno(), self._accept, s)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _GONE:
                    continue
                if e.errno in _OUT_OF and self._serving:
                    log.warning("accept failed (%s); pausing for %.0f s", e, RETRY_S)
                    self._loop.remove_reader(listener.fileno())
                    self._loop.call_later(RETRY_S, self._resume, listener)
                    return
                raise
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _resume(self, listener: socket.socket) -> None:
        if self._serving:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except Exception as e:  # a reset before it was set up: that connection only
            log.debug("accepted connection not set up: %r", e)
            conn.close()

    # -- asyncio.AbstractServer -----------------------------------------------------------
    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def close(self) -> None:
        if self._serving:
            for s in self._sockets:
                self._loop.remove_reader(s.fileno())
        self._serving = False
        for s in self._sockets:
            s.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._start()

    async def serve_forever(self) -> None:
        self._start()
        await self._closed.wait()


class BatchAcceptLoop(uvloop.Loop):
    """uvloop, with plain-TCP servers that accept in batches (see the module)."""

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        **kwargs: Any,
    ) -> asyncio.AbstractServer:
        if ssl is not None or kwargs or (sock is not None and sock.type != socket.SOCK_STREAM):
            server: asyncio.AbstractServer = await super().create_server(
                protocol_factory,
                host,
                port,  # type: ignore[arg-type]  # uvloop's stubs: None is its default
                sock=sock,  # type: ignore[arg-type]
                backlog=backlog,
                ssl=ssl,
                **kwargs,
            )
            return server
        if sock is not None:  # bound, maybe not yet listening (uvicorn's workers)
            sock.listen(backlog)
        sockets = [sock] if sock is not None else _bind(host, port, backlog)
        return BatchServer(self, protocol_factory, sockets)


def _bind(host: str | None, port: int | None, backlog: int) -> list[socket.socket]:
    """Listening sockets for every address of ``host`` (all interfaces when None), as
    asyncio's ``create_server`` binds them."""
    infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    out: list[socket.socket] = []
    seen: set[tuple[Any, ...]] = set()
    try:
        for family, kind, proto, _name, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            s = socket.socket(family, kind, proto)
            out.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            s.listen(backlog)
    except OSError:
        for s in out:
            s.close()
        raise
    return out


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop factory uvicorn takes as ``loop="api.accept:new_event_loop"``."""
    return BatchAcceptLoop()

"""A lean websocket client for the tracking bench's thousands of customers.

The bench's load generator shares the machine's cores with the service it measures, so
every core-second it spends is one the service cannot use. ``websockets``' asyncio client
hands each message through an assembler, a future and a task switch (``async for``);
with 5,000 sockets each receiving about one small frame a second, that plumbing cost
~17 of ~63 µs of the client's CPU per frame (measured: 1,500 sockets each fed a frame
every 0.2 s, docs/benchmarks.md). :class:`WatchProtocol` runs the same library's
sans-I/O :class:`websockets.client.ClientProtocol` (handshake, framing, masking,
permessage-deflate, answers to pings and the closing handshake) on a bare
:class:`asyncio.Protocol` and calls ``on_text`` straight from ``data_received``, i.e.
the frame is timestamped as soon as the event loop reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

__all__ = ["WatchProtocol", "watch_socket"]

MAX_FRAME = 1 << 20


class WatchProtocol(asyncio.Protocol):
    """One websocket that only listens: text frames go to ``on_text`` as they arrive.

    ``opened`` resolves when the handshake succeeds (or fails with the
    :class:`~websockets.exceptions.InvalidHandshake` the library raises); ``closed``
    resolves with the close code the server sent, or ``None`` when the connection ended
    without one (reset, EOF: "abnormal").
    """

    def __init__(self, url: str, on_text: Callable[[str], None], compression: bool) -> None:
        extensions = enable_client_permessage_deflate(None) if compression else None
        self.ws = ClientProtocol(parse_uri(url), extensions=extensions, max_size=MAX_FRAME)
        self.on_text = on_text
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        # A handshake that fails after its waiter gave up must not log "never retrieved".
        self.opened.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self.on_text(bytes(event.data).decode())
            elif isinstance(event, Response) and not self.opened.done():
                if ws.handshake_exc is not None:
                    self.opened.set_exception(ws.handshake_exc)
                else:
                    self.opened.set_result(None)
        self._flush()  # pongs, the close reply
        if ws.close_expected() and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(
                self.ws.handshake_exc or ConnectionResetError("closed during the handshake")
            )
        if not self.closed.done():
            rcvd = self.ws.close_rcvd
            self.closed.set_result(rcvd.code if rcvd is not None else None)

    def _flush(self) -> None:
        out = self.ws.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(c for c in out if c))

    async def close(self, timeout_s: float = 2.0) -> None:
        """The closing handshake (code 1000), then the socket, within ``timeout_s``."""
        if self.transport is None or self.closed.done():
            return
        with contextlib.suppress(Exception):
            self.ws.send_close(1000)
            self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout_s)
        except TimeoutError:
            self.transport.abort()


async def watch_socket(
    url: str, on_text: Callable[[str], None], *, compression: bool, open_timeout_s: float
) -> WatchProtocol:
    """Connect and complete the handshake; raises ``OSError``, ``TimeoutError`` or
    ``websockets.exceptions.InvalidHandshake`` as ``websockets``' own ``connect`` does."""
    loop = asyncio.get_running_loop()
    uri = parse_uri(url)
    protocol = WatchProtocol(url, on_text, compression)
    async with asyncio.timeout(open_timeout_s):
        try:
            await loop.create_connection(lambda: protocol, uri.host, uri.port)
            await protocol.opened
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.abort()
            raise
    return protocol

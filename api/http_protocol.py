"""uvicorn's httptools protocol, answering each response's head and body in one write.

uvicorn writes a response's status line and headers to the transport when the app sends
``http.response.start`` and the body when it sends ``http.response.body``: two
``send()`` system calls, two TCP segments, and on the client's side often two wake-ups
to read one small JSON answer. Every courier posts observations every second, so under
load that second write is a large share of the answers' cost (profiled at full size:
the head's write alone took 3-4 % of a worker).

:class:`CoalescingHttpToolsProtocol` gives each request/response cycle a
:class:`HeldHead` in front of the connection's transport: the cycle's first write (the
head, or an interim ``100 Continue``) is held until its next write, which goes out with
it in one ``writelines``, or until the event loop's next turn, whichever comes first.
A streamed response therefore still gets its head at once, not at its first chunk.
Websocket upgrades keep the bare transport. ``o2o serve`` runs uvicorn with
``http="api.http_protocol:CoalescingHttpToolsProtocol"``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "HeldHead"]


class HeldHead:
    """A transport that holds the first write until the second (or the loop's next turn).

    Everything but ``write``, ``writelines`` and ``close`` goes to the real transport.
    """

    __slots__ = ("_done", "_held", "_loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._done = False
        """The first write has been held (and maybe flushed): later writes go straight out."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self.transport.writelines((held, data))
        elif self._done:
            self.transport.write(data)
        else:
            self._done = True
            self._held = bytes(data)
            self._loop.call_soon(self.flush)

    def writelines(self, chunks: Any) -> None:
        self.flush()
        self.transport.writelines(chunks)

    def flush(self) -> None:
        """Write what is held, if anything (unless the connection is already closing)."""
        held = self._held
        if held is None:
            return
        self._held = None
        if not self.transport.is_closing():
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` whose request/response cycles write through :class:`HeldHead`."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # An upgrade returns early and leaves the previous (finished, wrapped) cycle.
        if cycle is not None and not isinstance(cycle.transport, HeldHead):
            cycle.transport = HeldHead(self.transport, self.loop)  # type: ignore[assignment]

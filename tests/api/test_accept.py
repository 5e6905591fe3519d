"""The service's event loop accepts every queued connection, however busy it is."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from api.accept import ACCEPT_BATCH, BatchServer, new_event_loop


def _accept_while_busy(n: int, iteration_s: float) -> tuple[float, int]:
    """Seconds until ``n`` connections, opened at once by another thread, are all
    accepted by a server whose loop spends ``iteration_s`` per iteration; and how many
    loop iterations that took."""
    accepted: list[float] = []
    iterations = 0

    class Counting(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(time.monotonic())

    async def main() -> float:
        nonlocal iterations
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Counting, "127.0.0.1", 0, backlog=1024)
        assert isinstance(server, BatchServer)
        port = server.sockets[0].getsockname()[1]
        busy = True

        def hog() -> None:  # every loop iteration runs this once: a saturated worker
            nonlocal iterations
            if busy:
                iterations += 1
                time.sleep(iteration_s)
                loop.call_soon(hog)

        loop.call_soon(hog)
        clients: list[socket.socket] = []
        opener = threading.Thread(
            target=lambda: clients.extend(
                socket.create_connection(("127.0.0.1", port)) for _ in range(n)
            )
        )
        start = time.monotonic()
        opener.start()
        while len(accepted) < n and time.monotonic() - start < 30:
            await asyncio.sleep(0.01)
        took = time.monotonic() - start
        busy = False
        opener.join()
        for c in clients:
            c.close()
        server.close()
        await server.wait_closed()
        assert not server.is_serving()
        return took

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        took = runner.run(main())
    assert len(accepted) == n
    return took, iterations


def test_a_busy_loop_accepts_queued_connections_in_batches() -> None:
    """uvloop alone accepts one connection per loop iteration (libuv >= 1.45): 150
    queued connections took 3.1 s of 20 ms iterations here. The batch loop takes up
    to ACCEPT_BATCH per iteration."""
    n = 150
    took, iterations = _accept_while_busy(n, 0.02)
    assert iterations <= n // ACCEPT_BATCH + 25, (took, iterations)
    assert took < 1.5, (took, iterations)


def test_the_server_stops_listening_when_closed() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port: int = server.sockets[0].getsockname()[1]
        assert server.is_serving()
        server.close()
        await server.wait_closed()
        return port

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        port = runner.run(main())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

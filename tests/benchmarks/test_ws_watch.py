"""The bench's lean websocket client against a real ``websockets`` server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidHandshake

from benchmarks.ws_watch import watch_socket

Handler = Callable[[ServerConnection], Awaitable[None]]


async def _with_server(
    handler: Handler, check: Callable[[str], Awaitable[None]], **kw: Any
) -> None:
    async with serve(handler, "127.0.0.1", 0, **kw) as server:
        port = server.sockets[0].getsockname()[1]
        await check(f"ws://127.0.0.1:{port}/track?token=x")


@pytest.mark.parametrize("compression", ["deflate", None])
def test_frames_in_order_then_the_close_code(compression: str | None) -> None:
    got: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        for i in range(50):
            await ws.send(f'{{"n":{i},"pad":"{"x" * 300}"}}')
        await ws.send(b"binary frames are ignored")
        await ws.close(4408, "fell behind")

    async def check(url: str) -> None:
        ws = await watch_socket(url, got.append, compression=True, open_timeout_s=5)
        assert await asyncio.wait_for(ws.closed, 5) == 4408
        extensions = ws.ws.extensions
        assert bool(extensions) == (compression == "deflate")

    asyncio.run(_with_server(handler, check, compression=compression))
    assert [int(t.split(",")[0].removeprefix('{"n":')) for t in got] == list(range(50))


def test_answers_pings_and_closes_cleanly() -> None:
    """The server pings every 50 ms and drops a client that does not answer within
    100 ms; ours stays connected, then closes with 1000 when asked."""
    seen: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        try:
            await ws.wait_closed()
        finally:
            seen.append(ws.close_code or 0)

    async def check(url: str) -> None:
        got: list[str] = []
        ws = await watch_socket(url, got.append, compression=False, open_timeout_s=5)
        await asyncio.sleep(0.5)
        assert not ws.closed.done() and got == ["hello"]
        await ws.close()
        assert ws.closed.result() == 1000

    asyncio.run(_with_server(handler, check, ping_interval=0.05, ping_timeout=0.1))
    assert seen == [1000]


def test_refused_handshake_raises_like_websockets() -> None:
    async def handler(ws: ServerConnection) -> None:  # never reached
        await ws.close()

    def refuse(connection: ServerConnection, request: Any) -> Any:
        return connection.respond(HTTPStatus.FORBIDDEN, "no\n")

    async def check(url: str) -> None:
        with pytest.raises(InvalidHandshake):
            await watch_socket(url, lambda _: None, compression=False, open_timeout_s=5)

    asyncio.run(_with_server(handler, check, process_request=refuse))


def test_nothing_listening_and_a_silent_server() -> None:
    async def check_refused() -> None:
        with pytest.raises(OSError):
            await watch_socket(
                "ws://127.0.0.1:1/", lambda _: None, compression=False, open_timeout_s=5
            )

    async def check_silent() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(TimeoutError):
                await watch_socket(
                    f"ws://127.0.0.1:{port}/", lambda _: None, compression=False, open_timeout_s=0.3
                )

    asyncio.run(check_refused())
    asyncio.run(check_silent())

"""The service's HTTP protocol: each answer's head and body in one write, nothing held
longer than the event loop's turn, and everything HTTP/1.1 still works through it
(keep-alive, pipelining, streaming, 100-continue, websocket upgrades)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect

from api.http_protocol import CoalescingHttpToolsProtocol, HeldHead
from tests.api.conftest import start_serve_process, stop_process, token
from tests.conftest import free_port


class Recorder(asyncio.Transport):
    """A transport that records what is written, call by call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[bytes]]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append(("write", [bytes(data)]))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(("writelines", [bytes(d) for d in list_of_data]))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append(("close", []))
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.0.0.1", 4242)}.get(name, default)


def test_head_and_body_go_out_in_one_call() -> None:
    async def main() -> list[tuple[str, list[bytes]]]:
        rec = Recorder()
        held = HeldHead(rec, asyncio.get_running_loop())
        held.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert rec.calls == []  # held until the body
        held.write(b'{"ok":true}')
        held.write(b"more")  # later writes go straight out
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return rec.calls

    assert asyncio.run(main()) == [
        ("writelines", [b"HTTP/1.1 200 OK\r\n\r\n", b'{"ok":true}']),
        ("write", [b"more"]),
    ]


def test_a_head_alone_goes_out_on_the_loops_next_turn() -> None:
    async def main() -> tuple[list[Any], list[Any]]:
        rec = Recorder()
        held = HeldHead(rec, asyncio.get_running_loop())
        held.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        before = list(rec.calls)
        await asyncio.sleep(0)
        return before, rec.calls

    before, after = asyncio.run(main())
    assert before == []
    assert after == [("write", [b"HTTP/1.1 100 Continue\r\n\r\n"])]


def test_close_writes_what_is_held_first_and_a_closed_transport_gets_nothing() -> None:
    async def main() -> tuple[list[Any], list[Any]]:
        rec = Recorder()
        held = HeldHead(rec, asyncio.get_running_loop())
        held.write(b"head")
        held.close()
        await asyncio.sleep(0)
        first = rec.calls

        rec2 = Recorder()
        held2 = HeldHead(rec2, asyncio.get_running_loop())
        held2.write(b"head")
        rec2.closing = True  # the peer went away before the loop turned
        await asyncio.sleep(0)
        return first, rec2.calls

    first, second = asyncio.run(main())
    assert first == [("write", [b"head"]), ("close", [])]
    assert second == []


def test_everything_else_is_the_real_transports() -> None:
    rec = Recorder()
    held = HeldHead(rec, asyncio.new_event_loop())
    assert held.get_extra_info("peername") == ("10.0.0.1", 4242)
    assert held.is_closing() is False


# -- through a real uvicorn server ------------------------------------------------------


def _app(release: threading.Event) -> Starlette:
    async def hello(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"path": request.url.path, "got": body.decode()})

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> Any:
            yield b"first;"
            while not release.is_set():
                await asyncio.sleep(0.01)
            yield b"last"

        return StreamingResponse(chunks(), media_type="text/plain")

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.close()

    return Starlette(
        routes=[
            Route("/hello", hello, methods=["GET", "POST"]),
            Route("/stream", stream),
            WebSocketRoute("/echo", echo),
        ]
    )


@pytest.fixture
def live() -> Iterator[tuple[int, threading.Event]]:
    release = threading.Event()
    port = free_port()
    config = uvicorn.Config(
        _app(release),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        http=CoalescingHttpToolsProtocol,
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield port, release
    release.set()
    srv.should_exit = True
    thread.join(timeout=10)


def _read_until(sock: socket.socket, marker: bytes, count: int = 1) -> bytes:
    data = b""
    while data.count(marker) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_keep_alive_and_pipelined_requests_are_answered_in_order(
    live: tuple[int, threading.Event],
) -> None:
    port, _ = live
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _read_until(sock, b'"got":""}')
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        # two requests in one segment: the second waits for the first's answer
        sock.sendall(
            b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"
            b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nb"
        )
        both = _read_until(sock, b'"got":"b"}')
    assert both.count(b"HTTP/1.1 200 OK") == 2
    assert both.index(b'"got":"a"') < both.index(b'"got":"b"')


def test_a_streamed_answers_head_is_not_held_until_its_end(
    live: tuple[int, threading.Event],
) -> None:
    port, release = live
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_until(sock, b"first;")  # while the app still waits to finish
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked" in head
        release.set()
        rest = _read_until(sock, b"0\r\n\r\n")
    assert b"last" in rest


def test_expect_100_continue_gets_its_interim_answer_before_the_body(
    live: tuple[int, threading.Event],
) -> None:
    port, _ = live
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = _read_until(sock, b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"hi")
        answer = _read_until(sock, b'"got":"hi"}')
    assert b"HTTP/1.1 200 OK" in answer


def test_websocket_upgrades_still_work(live: tuple[int, threading.Event]) -> None:
    port, _ = live
    with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5) as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"


# -- o2o serve: websocket compression only when asked -----------------------------------


@pytest.mark.parametrize(("args", "negotiated"), [((), False), (("--ws-compression",), True)])
def test_serve_accepts_permessage_deflate_only_with_ws_compression(
    tmp_path: Path, args: tuple[str, ...], negotiated: bool
) -> None:
    srv = start_serve_process(tmp_path, "--no-dispatch", *args)
    try:
        assert srv.proc is not None
        url = f"{srv.ws}/v1/ops/live?token={token('ops', 'op1')}"
        with connect(url, compression="deflate", open_timeout=10) as ws:
            assert ws.response is not None
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            assert ("permessage-deflate" in extensions) is negotiated
            assert '"snapshot"' in str(ws.recv(timeout=10))
    finally:
        if srv.proc is not None:
            stop_process(srv.proc)

"""Live-service fixtures: a real uvicorn server (in a thread, or as `o2o serve`
processes), tokens for every role, and small HTTP/websocket helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import Result

from api.app import create_app
from api.auth import Role, create_token
from api.http_protocol import CoalescingHttpToolsProtocol
from api.settings import Settings
from dispatch.dispatcher import DispatchSettings
from tests.conftest import free_port
from tracking.store import MemoryStore

SECRET = "test-secret-0123456789abcdef-0123456789"
ROOT = Path(__file__).resolve().parents[2]


def token(role: Role, subject: str, ttl: float = 3600, order_id: str | None = None) -> str:
    return create_token(SECRET, role, subject, ttl, order_id=order_id)


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@dataclass
class Server:
    """A running service: ``url`` (http), ``ws`` (ws base), and the app when in-process."""

    url: str
    app: Any = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://")

    def client(self, tok: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=auth(tok) if tok else {}, timeout=10)


def wait_ready(
    url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout} s")


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Server]]:
    """Start in-process servers (memory store unless given); all stopped at teardown."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(store: Any = None, **settings: Any) -> Server:
        opts: dict[str, Any] = {
            "secret": SECRET,
            "position_interval_s": 0.2,
            "heartbeat_s": 5.0,
            # In-process servers keep the dispatcher on a thread (a child process per
            # server costs a second to start); `o2o serve` tests run it in its process.
            "dispatch_process": False,
        }
        opts.update(settings)
        dispatch = opts.pop("dispatch_settings", DispatchSettings(solve_time_limit_s=0.3))
        app = create_app(Settings(**opts), store=store or MemoryStore(), dispatch_settings=dispatch)
        port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ws_max_size=65_536,
            http=CoalescingHttpToolsProtocol,  # as `o2o serve` runs
        )
        srv = uvicorn.Server(config)
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        running.append((srv, thread))
        return Server(url, app=app)

    yield start
    for srv, _ in running:
        srv.should_exit = True
    for _, thread in running:
        thread.join(timeout=10)


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory()


def start_serve_process(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """`o2o serve` as its own process (group), as operators run it."""
    port = free_port()
    log = tmp / f"serve-{port}.log"
    full_env = {
        **os.environ,
        "O2O_SECRET": SECRET,
        "O2O_POSITION_INTERVAL_S": "0.2",
        "O2O_SOLVE_TIME_LIMIT_S": "0.3",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "api.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *args,
        ],
        cwd=ROOT,
        env=full_env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 30, proc)
    except RuntimeError:
        stop_process(proc)
        raise RuntimeError(log.read_text()[-3000:]) from None
    return Server(url, proc=proc, log=log)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def worker_of(local_port: int, server_port: int) -> int | None:
    """Pid of the process holding the server end of a client's TCP connection."""
    want = f"{server_port:04X}", f"{local_port:04X}"
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1].endswith(":" + want[0]) and cols[2].endswith(":" + want[1]):
                    inode = cols[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return int(pid)
    return None


async def recv_until(
    ws: Any,
    pred: Callable[[dict[str, Any]], bool],
    timeout: float = 10.0,
    seen: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Frames until one matches ``pred`` (all are appended to ``seen``)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no matching frame in {timeout} s; saw {seen and seen[-5:]}")
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), left))
        if seen is not None:
            seen.append(frame)
        if pred(frame):
            return frame


ORDER = {"pickup": {"lat": 52.5200, "lon": 13.4050}, "dropoff": {"lat": 52.5300, "lon": 13.4200}}


def one_line_error(r: Result) -> str:
    """A CLI run that failed as a user error: exit 2 and one ``o2o: error:`` line on
    stderr, no traceback. Returns that line."""
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 2, r.output
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("o2o: error: ")
    return line

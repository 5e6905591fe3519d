"""``o2o demo`` as users run it: a process that serves, drives a city and prints URLs."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from api.auth import verify_token
from tests.api.conftest import ROOT, SECRET, auth, stop_process
from tests.conftest import free_port


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, pattern: str, timeout: float = 30.0) -> str:
        """The next printed line matching ``pattern`` (as the lines come)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; got {self.seen}")


def start_demo(*args: str, secret: str | None = None) -> Demo:
    env = {k: v for k, v in os.environ.items() if k != "O2O_SECRET"}
    if secret is not None:
        env["O2O_SECRET"] = secret
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "demo", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    demo = Demo(proc)
    threading.Thread(target=demo.read, daemon=True).start()
    return demo


@pytest.fixture
def demos() -> Iterator[list[Demo]]:
    running: list[Demo] = []
    yield running
    for d in running:
        stop_process(d.proc)  # type: ignore[arg-type]  # text mode: same process API


def test_demo_serves_a_city_that_delivers(demos: list[Demo]) -> None:
    port = free_port()
    demo = start_demo(
        "--port", str(port), "--duration", "8", "--speed", "300",
        "--couriers", "6", "--orders-per-hour", "60", "--seed", "3",
    )  # fmt: skip
    demos.append(demo)
    base = f"http://127.0.0.1:{port}"
    assert "O2O_SECRET is not set" in demo.until(r"^note:")
    ops_url = demo.until(r"^ops console:").split()[-1]
    courier_url = demo.until(r"^courier view:").split()[-1]
    tracking = [demo.until(r"^order tracking:").split()[-1] for _ in range(3)]
    demo.until(r"^API docs:")

    assert ops_url.startswith(f"{base}/ops?token=")
    ops = parse_qs(urlsplit(ops_url).query)["token"][0]
    q = parse_qs(urlsplit(courier_url).query)
    assert urlsplit(courier_url).path == "/courier"
    courier, courier_id = q["token"][0], q["courier"][0]

    with httpx.Client(base_url=base, timeout=10) as c:
        fleet = c.get("/v1/fleet", headers=auth(ops))
        assert fleet.status_code == 200
        assert len(fleet.json()["couriers"]) == 6
        assert all(x["on_shift"] for x in fleet.json()["couriers"])
        assert float(fleet.headers["x-o2o-clock"]) > time.time() + 60  # the city runs x300
        me = c.get(f"/v1/couriers/{courier_id}", headers=auth(courier))
        assert me.status_code == 200 and me.json()["on_shift"]
        assert c.get("/v1/fleet", headers=auth(courier)).status_code == 403
        for url in tracking:
            parts = urlsplit(url)
            m = re.fullmatch(r"/track/(o-[0-9a-f]+)", parts.path)
            assert m is not None, url
            tok = parse_qs(parts.query)["token"][0]
            r = c.get(f"/v1/orders/{m.group(1)}", headers=auth(tok))
            assert r.status_code == 200, r.text
            assert r.json()["customer_id"].startswith("cu-")

        delivered: list[str] = []
        created = 0
        while demo.proc.poll() is None and not delivered:
            try:
                r = c.get("/v1/orders", params={"status": "all"}, headers=auth(ops))
            except httpx.HTTPError:
                break  # the demo is shutting down
            orders = r.json()["orders"]
            created = max(created, len(orders))
            delivered = [o["id"] for o in orders if o["status"] == "delivered"]
            time.sleep(0.25)
    assert created > 3, "the order stream placed nothing after the first orders"
    assert delivered, "no order was delivered while the demo ran"

    done = demo.until(r"^done:", timeout=20)
    m = re.search(r"(\d+) delivered", done)
    assert m is not None and int(m.group(1)) >= 1
    assert demo.proc.wait(timeout=20) == 0


def test_demo_signs_with_the_configured_secret(demos: list[Demo]) -> None:
    port = free_port()
    demo = start_demo("--port", str(port), "--duration", "1", "--couriers", "2", secret=SECRET)
    demos.append(demo)
    ops_url = demo.until(r"^ops console:").split()[-1]
    token = parse_qs(urlsplit(ops_url).query)["token"][0]
    assert verify_token(SECRET, token).role == "ops"
    assert demo.proc.wait(timeout=20) == 0
    assert not any(line.startswith("note:") for line in demo.seen)


def test_demo_refuses_a_weak_secret_or_a_busy_port() -> None:
    weak = start_demo("--duration", "1", secret="short")
    assert weak.proc.wait(timeout=20) == 2
    assert "at least 32 characters" in weak.until(r"O2O_SECRET")
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        busy = start_demo("--port", str(port), "--duration", "1", secret=SECRET)
        assert busy.proc.wait(timeout=20) == 2
        assert "cannot listen" in busy.until(r"error")

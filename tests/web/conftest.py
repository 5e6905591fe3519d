"""Browser-test fixtures: the npm assets, Debian's Chromium driven by Playwright, a live
service (``tests/api/conftest.py``'s in-process uvicorn), and helpers that drive a
delivery over HTTP as a courier's phone and a customer's app would."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.sync.client import connect

from api.app import create_app
from api.cli_demo import _clock_header
from api.demo_driver import AcceleratedClock
from api.settings import Settings
from api.web import SETUP_HINT, WEB_DIR, missing_vendor
from dispatch.dispatcher import DispatchSettings
from tests.api.conftest import SECRET, Server, auth, server_factory, token, wait_ready
from tests.conftest import free_port
from tracking.store import MemoryStore

__all__ = ["server_factory"]  # a fixture, re-exported for these tests

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
UPDATE_SCREENSHOTS = os.environ.get("O2O_UPDATE_SCREENSHOTS") == "1"
"""Write into docs/screenshots (to commit after a UI change); otherwise into a temp dir,
so a test run leaves the working tree clean."""
CHROMIUM = os.environ.get("O2O_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
def web_assets() -> Path:
    """web/node_modules, installed with ``npm ci`` from the committed lock when missing."""
    if missing_vendor():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(f"web/node_modules is missing and npm is not installed: {SETUP_HINT}")
        r = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=WEB_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0 or missing_vendor():
            pytest.fail(
                f"`npm ci` in web/ failed ({r.returncode}); {SETUP_HINT}\n{r.stdout}{r.stderr}"
            )
    return WEB_DIR / "node_modules"


@pytest.fixture(scope="package")
def browser(web_assets: Path) -> Iterator[Any]:
    """Headless Debian Chromium (Playwright's own browser download is not used)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (.ci/run does this)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]'")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    except Exception:
        pw.stop()
        raise
    yield b
    b.close()
    pw.stop()


@dataclass
class Pages:
    """New browser pages (each in its own context); JS errors are collected."""

    browser: Any
    contexts: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(
        self,
        url: str,
        viewport: dict[str, int] | None = None,
        requests: list[str] | None = None,
        **ctx: Any,
    ) -> Any:
        """A new page at ``url``; with ``requests``, every URL it asks for (from the
        start) is appended to that list."""
        context = self.browser.new_context(viewport=viewport or DESKTOP, **ctx)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: self.errors.append(f"{url}: {e}"))
        if requests is not None:
            page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
        page.goto(url)
        return page


@pytest.fixture
def pages(browser: Any) -> Iterator[Pages]:
    p = Pages(browser)
    yield p
    for c in p.contexts:
        c.close()
    assert not p.errors, p.errors


UNLABELLED = """() => [...document.querySelectorAll("button, input, select, textarea, a[href]")]
  .filter((e) => e.offsetParent !== null || e.type === "checkbox")
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")
    && !e.getAttribute("title") && !(e.textContent || "").trim() && !e.getAttribute("alt"))
  .map((e) => e.outerHTML.slice(0, 120))"""


def screenshots(page: Any, name: str) -> None:
    """<name>-phone.png and -desktop.png of the page as it is now (in docs/screenshots
    with O2O_UPDATE_SCREENSHOTS=1); at both sizes nothing scrolls sideways and every
    control has an accessible name."""
    folder = SCREENSHOTS if UPDATE_SCREENSHOTS else Path(tempfile.gettempdir()) / "o2o-shots"
    folder.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(size)
        page.wait_for_timeout(400)  # the map follows the resize
        page.screenshot(path=str(folder / f"{name}-{label}.png"))
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= size["width"], f"{name} scrolls sideways at {label} size ({width} px)"
        assert page.evaluate(UNLABELLED) == [], f"{name}: controls without a name"
    page.set_viewport_size(before)


# -- driving a delivery over HTTP -------------------------------------------------------

LatLon = tuple[float, float]


def lerp(a: LatLon, b: LatLon, k: float) -> LatLon:
    return (a[0] + (b[0] - a[0]) * k, a[1] + (b[1] - a[1]) * k)


def distance_m(a: LatLon, b: LatLon) -> float:
    dy = (b[0] - a[0]) * 111_195.0
    dx = (b[1] - a[1]) * 111_195.0 * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(dx, dy)


@dataclass
class Drive:
    """One service, used by a courier, a customer and ops over HTTP."""

    server: Server
    courier: str = "c1"
    customer: str = "u1"
    t: float = field(default_factory=lambda: time.time() - 400.0)
    step_s: float = 3.0
    """Observation timestamps advance this much per fix: an accelerated courier whose
    phone timestamps stay realistic (10 m/s) while the test posts many fixes a second."""

    @cached_property
    def courier_token(self) -> str:
        return token("courier", self.courier)

    @cached_property
    def customer_token(self) -> str:
        return token("customer", self.customer)

    @cached_property
    def ops_token(self) -> str:
        return token("ops", "ops1")

    def call(self, tok: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method, self.server.url + path, json=body, headers=auth(tok), timeout=10
        )

    def ok(self, tok: str, method: str, path: str, body: Any = None) -> Any:
        r = self.call(tok, method, path, body)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def gps(self, at: LatLon, accuracy: float = 8.0) -> Any:
        self.t = min(self.t + self.step_s, time.time())
        obs = {"t": self.t, "kind": "gps", "lat": at[0], "lon": at[1], "accuracy": accuracy}
        path = f"/v1/couriers/{self.courier}/observations"
        return self.ok(self.courier_token, "POST", path, [obs])

    def start_shift(self, at: LatLon) -> Any:
        self.gps(at)
        path = f"/v1/couriers/{self.courier}/shift"
        return self.ok(self.courier_token, "POST", path, {"action": "start"})

    def place(
        self,
        pickup: LatLon,
        dropoff: LatLon,
        promised_in_s: float | None = None,
        customer: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "pickup": {"lat": pickup[0], "lon": pickup[1]},
            "dropoff": {"lat": dropoff[0], "lon": dropoff[1]},
        }
        if promised_in_s is not None:
            body["promised_by"] = time.time() + promised_in_s
        tok = token("customer", customer) if customer else self.customer_token
        order: dict[str, Any] = self.ok(tok, "POST", "/v1/orders", body)
        return order

    def order(self, order_id: str) -> dict[str, Any]:
        got: dict[str, Any] = self.ok(self.ops_token, "GET", f"/v1/orders/{order_id}")
        return got

    def wait_status(self, order_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            o = self.order(order_id)
            if o["status"] == status:
                return o
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} is {o['status']}, not {status}")
            time.sleep(0.05)

    def ride(self, a: LatLon, b: LatLon, pause_s: float = 0.12) -> None:
        """GPS fixes from ``a`` to ``b`` at 10 m/s of phone time, ``pause_s`` apart."""
        steps = max(1, round(distance_m(a, b) / (10.0 * self.step_s)))
        for i in range(1, steps + 1):
            self.gps(lerp(a, b, i / steps))
            time.sleep(pause_s)

    def confirm(self, order_id: str, kind: str) -> Any:
        return self.ok(self.courier_token, "POST", f"/v1/orders/{order_id}/{kind}")


@pytest.fixture
def live(server_factory: Callable[..., Server], web_assets: Path) -> Server:
    """A fresh in-process service for one test."""
    return server_factory()


@pytest.fixture
def drive(live: Server) -> Drive:
    return Drive(live)


def ws_snapshot(server: Server, path: str, tok: str) -> dict[str, Any]:
    """The snapshot frame a fresh websocket on ``path`` opens with."""
    with connect(f"{server.ws}{path}?token={tok}", open_timeout=5) as ws:
        frame: dict[str, Any] = json.loads(ws.recv(timeout=5))
    assert frame["type"] == "snapshot", frame
    return frame


@dataclass
class ClockServer(Server):
    """A service whose clock is not the browser's (``clock``), like ``o2o demo``: it
    answers with ``X-O2O-Clock`` as the demo does."""

    clock: AcceleratedClock = field(default_factory=lambda: AcceleratedClock(1.0))


@pytest.fixture
def clock_server_factory(web_assets: Path) -> Iterator[Callable[..., ClockServer]]:
    """In-process services on a clock ``speed`` times faster than the wall clock and
    ``ahead_s`` ahead of it (the server_factory of tests/api takes no clock)."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(speed: float = 10.0, ahead_s: float = 0.0) -> ClockServer:
        clock = AcceleratedClock(speed, start=time.time() + ahead_s)
        app = create_app(
            Settings(secret=SECRET, position_interval_s=0.2, heartbeat_s=5.0),
            store=MemoryStore(),
            clock=clock,
            dispatch_settings=DispatchSettings(solve_time_limit_s=0.3),
        )
        _clock_header(app, clock)
        port = free_port()
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        running.append((srv, thread))
        return ClockServer(url, app=app, clock=clock)

    yield start
    for srv, _ in running:
        srv.should_exit = True
    for _, thread in running:
        thread.join(timeout=10)

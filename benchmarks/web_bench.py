"""The customer tracking page in a real browser: first render, and smoothness at 1 Hz.

``python -m benchmarks.web_bench [--runs 5] [--seconds 10] [--viewport phone|desktop]``
prints one JSON object. It starts ``o2o serve`` (memory store) on a free local port,
puts a courier on shift with an order assigned to them, and drives headless Debian
Chromium (``/usr/bin/chromium``, or ``O2O_CHROMIUM``) with Playwright:

* **first render**, ``runs`` times in a fresh browser context (empty cache): the
  browser's navigation timings (``response_end_ms``, ``dom_content_loaded_ms``,
  ``load_ms``), ``fcp_ms`` (first contentful paint) and ``markers_ms``: the time from
  navigation start until the map shows the pickup, drop-off and courier markers (the
  page has its snapshot from the websocket and Leaflet has drawn them). Median, min
  and max over the runs.
* **smoothness**: the courier's phone posts one GPS fix a second for ``seconds``
  seconds (the service pushes one position a second: ``position_interval_s`` 1.0,
  its default) while the page animates the marker between fixes. A requestAnimationFrame
  loop records every frame interval (``frame_ms`` p50/p95/p99/max; ``frames_over_50ms``
  counts visible hitches), a PerformanceObserver counts long tasks (> 50 ms main-thread
  work), and ``marker_frames`` is how many frames moved the marker.

Needs the dev extra (``playwright``), Chromium (``apt-get install chromium``) and
``npm ci`` in ``web/``. Headless Chromium renders in software, so absolute numbers are
this machine's, not a phone's; the comparison between runs is what they are for.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("O2O_CHROMIUM", "/usr/bin/chromium")
SECRET = "web-bench-secret-0123456789abcdef-0123"
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}
START = (52.5170, 13.4000)
PICKUP = (52.5200, 13.4050)
DROPOFF = (52.5240, 13.4120)
QUIET = ("--log-level", "warning")
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

INIT_SCRIPT = """
(() => {
  window.__bench = { longtasks: [], markersAt: null };
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__bench.longtasks.push([e.startTime, e.duration]);
    }).observe({ type: "longtask", buffered: true });
  } catch (e) {}
  const watch = () => {
    const map = document.getElementById("map");
    if (!map) return requestAnimationFrame(watch);
    const check = () => {
      if (window.__bench.markersAt === null && map.dataset.markers === "3") {
        // the next frame is the one that shows them
        requestAnimationFrame(() => { window.__bench.markersAt = performance.now(); });
      }
    };
    new MutationObserver(check).observe(map, { attributes: true });
    check();
  };
  document.addEventListener("DOMContentLoaded", watch);
})();
"""

FRAME_RECORDER = """
(seconds) => new Promise((resolve) => {
  const frames = [];
  const start = performance.now();
  const glide0 = window.o2oTrack.glide.frames;
  const fixes0 = window.o2oTrack.glide.fixes;
  const long0 = window.__bench.longtasks.length;
  let last = start;
  const tick = (now) => {
    frames.push(now - last);
    last = now;
    if (now - start < seconds * 1000) requestAnimationFrame(tick);
    else resolve({
      frames,
      marker_frames: window.o2oTrack.glide.frames - glide0,
      longtasks: window.__bench.longtasks.slice(long0),
      fixes: window.o2oTrack.glide.fixes - fixes0,
    });
  };
  requestAnimationFrame(tick);
})
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return math.nan
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _summary(xs: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(xs), 1),
        "min": round(min(xs), 1),
        "max": round(max(xs), 1),
    }


class Service:
    """``o2o serve`` in its own process group, with tokens for a courier and a customer."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "O2O_SECRET": SECRET, "O2O_POSITION_INTERVAL_S": "1.0"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port), *QUIET],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("o2o serve did not become ready")
            time.sleep(0.1)
        self.courier = _cli("token", "create", "--role", "courier", "--subject", "c1", env=self.env)
        self.customer = _cli(
            "token", "create", "--role", "customer", "--subject", "u1", env=self.env
        )

    def call(self, tok: str, method: str, path: str, body: Any = None) -> Any:
        r = httpx.request(
            method,
            self.url + path,
            json=body,
            headers={"Authorization": f"Bearer {tok}"},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()

    def gps(self, at: tuple[float, float]) -> None:
        obs = {"t": time.time(), "kind": "gps", "lat": at[0], "lon": at[1], "accuracy": 8.0}
        self.call(self.courier, "POST", "/v1/couriers/c1/observations", [obs])

    def assigned_order(self) -> str:
        self.gps(START)
        self.call(self.courier, "POST", "/v1/couriers/c1/shift", {"action": "start"})
        body = {
            "pickup": {"lat": PICKUP[0], "lon": PICKUP[1]},
            "dropoff": {"lat": DROPOFF[0], "lon": DROPOFF[1]},
        }
        order = self.call(self.customer, "POST", "/v1/orders", body)
        deadline = time.monotonic() + 15
        while self.call(self.customer, "GET", f"/v1/orders/{order['id']}")["status"] != "assigned":
            if time.monotonic() > deadline:
                raise RuntimeError("the order was not assigned")
            time.sleep(0.1)
        return str(order["id"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _first_render(browser: Any, url: str, viewport: dict[str, int]) -> dict[str, float]:
    context = browser.new_context(viewport=viewport)
    try:
        page = context.new_page()
        page.add_init_script(INIT_SCRIPT)
        page.goto(url)
        page.wait_for_function("() => window.__bench.markersAt !== null", timeout=20_000)
        got: dict[str, float] = page.evaluate(
            """() => {
              const nav = performance.getEntriesByType("navigation")[0];
              const fcp = performance.getEntriesByName("first-contentful-paint")[0];
              return {
                response_end_ms: nav.responseEnd,
                dom_content_loaded_ms: nav.domContentLoadedEventEnd,
                load_ms: nav.loadEventEnd,
                fcp_ms: fcp ? fcp.startTime : NaN,
                markers_ms: window.__bench.markersAt,
              };
            }"""
        )
        return got
    finally:
        context.close()


def _smoothness(
    browser: Any, svc: Service, url: str, viewport: dict[str, int], seconds: float
) -> dict[str, Any]:
    context = browser.new_context(viewport=viewport)
    stop = threading.Event()
    posted = 0

    def ride() -> None:  # 1 Hz fixes on the way to the pickup at a cyclist's 8 m/s
        nonlocal posted
        dy = (PICKUP[0] - START[0]) * 111_195.0
        dx = (PICKUP[1] - START[1]) * 111_195.0 * math.cos(math.radians(START[0]))
        step = 8.0 / math.hypot(dx, dy)
        for i in range(int(seconds) + 2):
            if stop.is_set():
                return
            k = min(1.0, (i + 1) * step)
            svc.gps((START[0] + (PICKUP[0] - START[0]) * k, START[1] + (PICKUP[1] - START[1]) * k))
            posted += 1
            stop.wait(1.0)

    try:
        page = context.new_page()
        page.add_init_script(INIT_SCRIPT)
        page.goto(url)
        page.wait_for_function("() => window.__bench.markersAt !== null", timeout=20_000)
        page.wait_for_timeout(500)
        rider = threading.Thread(target=ride, daemon=True)
        rider.start()
        got = page.evaluate(FRAME_RECORDER, seconds)
        stop.set()
        rider.join(5)
    finally:
        stop.set()
        context.close()
    frames: list[float] = got["frames"][1:]
    long_ms = [d for _, d in got["longtasks"]]
    return {
        "seconds": seconds,
        "fixes_posted": posted,
        "frames": len(frames),
        "fps": round(len(frames) / seconds, 1),
        "frame_ms": {
            "p50": round(_pct(frames, 0.50), 1),
            "p95": round(_pct(frames, 0.95), 1),
            "p99": round(_pct(frames, 0.99), 1),
            "max": round(max(frames), 1),
        },
        "frames_over_50ms": sum(f > 50 for f in frames),
        "long_tasks": len(long_ms),
        "long_task_ms_total": round(sum(long_ms), 1),
        "position_frames": got["fixes"],
        "marker_frames": got["marker_frames"],
    }


def run(runs: int = 5, seconds: float = 10.0, viewport: str = "phone") -> dict[str, Any]:
    """Measure the tracking page (see the module docstring); the result as a dict."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # the dev extra
        raise SystemExit("web_bench needs playwright: pip install -e '.[dev]'") from e
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install -y chromium")
    if not (ROOT / "web" / "node_modules").is_dir():
        raise SystemExit("web/node_modules is missing: run `npm ci` in web/")
    size = VIEWPORTS[viewport]
    svc = Service()
    try:
        order = svc.assigned_order()
        url = f"{svc.url}/track/{order}?token={svc.customer}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                _first_render(browser, url, size)  # warm the server and the OS caches
                samples = [_first_render(browser, url, size) for _ in range(runs)]
                smooth = _smoothness(browser, svc, url, size, seconds)
                version = browser.version
            finally:
                browser.close()
    finally:
        svc.stop()
    keys = ["response_end_ms", "dom_content_loaded_ms", "load_ms", "fcp_ms", "markers_ms"]
    return {
        "page": "/track/{order_id}",
        "browser": f"chromium {version} headless",
        "viewport": viewport,
        "runs": runs,
        "first_render": {k: _summary([s[k] for s in samples]) for k in keys},
        "smoothness_1hz": smooth,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="first-render runs (fresh contexts)")
    ap.add_argument("--seconds", type=float, default=10.0, help="smoothness window")
    ap.add_argument("--viewport", choices=sorted(VIEWPORTS), default="phone")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.runs, args.seconds, args.viewport), indent=2))


if __name__ == "__main__":
    main()

"""Prometheus metrics of the live service (``/metrics``).

Two modes, chosen when :class:`Metrics` is built:

* **One process** (the default, one worker, and tests that build many apps in one
  process): each app has its own ``CollectorRegistry`` and ``/metrics`` reports it.
* **Several workers** (``o2o serve --workers N`` with N > 1): ``o2o serve`` exports
  ``PROMETHEUS_MULTIPROC_DIR`` (a fresh private directory, removed on exit, unless the
  operator set one: they empty it between runs) before uvicorn starts the workers, so
  prometheus_client keeps every worker's values in memory-mapped files there. Whichever
  worker a scrape reaches answers for the whole service
  (``prometheus_client.multiprocess.MultiProcessCollector``):

  - counters and histograms (requests, latency, observations, orders, websocket frames
    and closes) are summed over the workers, dead ones included, so totals never go
    back when a worker is restarted;
  - ``o2o_ws_connections`` is summed over the live workers (labels unchanged);
  - the live gauges of :meth:`Metrics.watch` (``o2o_ws_subscribers``,
    ``o2o_hub_events_dispatched``, ``o2o_dispatch_leading``, ...) stay one series per
    live worker, labelled ``worker`` (its pid) as with one process: ops see which worker
    leads the dispatcher or holds the sockets, and sum them in PromQL when they want a
    total. Each worker publishes them every :attr:`Metrics.refresh_s` seconds (and the
    answering worker at the scrape itself), and withdraws them when it stops; a scrape
    also drops those of workers that died without stopping (SIGKILL, OOM).

  Metric names and labels are the same in both modes; the multi-worker text lacks the
  ``*_created`` samples (prometheus_client does not keep them in that mode) and a
  labelled family appears once it has a sample. One app per process in this mode: two
  apps in one process would share their files' series.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

Probe = Callable[[], dict[str, float]]


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode when this process runs in it
    (``PROMETHEUS_MULTIPROC_DIR`` was set when prometheus_client was first imported)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and getattr(values.ValueClass, "_multiprocess", False):
        return path
    return None


class Metrics:
    refresh_s = 1.0
    """How often each worker publishes its live gauges (multi-worker mode)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        """This process's metrics (what ``/metrics`` reports with one process)."""
        self.multiprocess_dir = multiprocess_dir()
        r = self.registry
        self.requests = Counter(
            "o2o_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "o2o_http_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.observations = Counter(
            "o2o_observations", "Observations received", ["result"], registry=r
        )
        # Counted on every observation post: labelled once, not per request.
        self.obs_accepted = self.observations.labels("accepted")
        self.obs_rejected = self.observations.labels("rejected")
        self.orders = Counter("o2o_orders_placed", "Orders created", registry=r)
        self.ws_frames = Counter(
            "o2o_ws_frames_sent", "Websocket frames sent", ["channel"], registry=r
        )
        self.ws_closed = Counter(
            "o2o_ws_closed", "Websockets closed by the server", ["code"], registry=r
        )
        # With several workers: the sum over the live ones (ignored with one process).
        self.ws_open = Gauge(
            "o2o_ws_connections",
            "Open websockets",
            ["channel"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.loop_lag = Histogram(
            "o2o_event_loop_lag_seconds",
            "How late a worker's event loop ran a timer: every request and socket waits "
            "that long for its turn",
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self._probes: list[Probe] = []
        self._probe_gauges: dict[str, Gauge] = {}
        self._service: CollectorRegistry | None = None
        if self.multiprocess_dir is not None:
            self._service = CollectorRegistry()
            MultiProcessCollector(self._service, self.multiprocess_dir)  # type: ignore[no-untyped-call]

    def recorder(self, method: str, route: str) -> Callable[[int, float], None]:
        """``record(status, seconds)`` for one route, what :class:`Timed` counts for
        every request, with the labelled series looked up once per status rather than
        per request (for :class:`api.fastpath.DirectRoute`)."""
        counts: dict[int, Any] = {}
        latency = self.latency.labels(route)

        def record(status: int, seconds: float) -> None:
            child = counts.get(status)
            if child is None:
                child = counts[status] = self.requests.labels(method, route, str(status))
            child.inc()
            latency.observe(seconds)

        return record

    def exposition(self) -> tuple[bytes, str]:
        """The text ``/metrics`` answers, and its media type: this app's registry with
        one process, every worker's metrics with several."""
        if self._service is None or self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        self.publish()
        _withdraw_dead_workers(self.multiprocess_dir)
        return generate_latest(self._service), CONTENT_TYPE_LATEST

    def watch(self, probe: Probe) -> None:
        """Expose gauges read from ``probe`` (hub and dispatcher state), labelled by
        ``worker``: read at scrape time with one process, published every
        :attr:`refresh_s` with several workers."""
        if self.multiprocess_dir is None:
            self.registry.register(_Probe(probe))
        else:
            self._probes.append(probe)
            self.publish()

    def publish(self) -> None:
        """Write this worker's live gauges to its multiprocess file (multi-worker mode)."""
        worker = str(os.getpid())
        for probe in self._probes:
            for name, value in probe().items():
                g = self._probe_gauges.get(name)
                if g is None:
                    # livesum over the live workers; each has its own ``worker`` label,
                    # so this is one series per live worker, as with one process.
                    g = self._probe_gauges[name] = Gauge(
                        f"o2o_{name}",
                        name.replace("_", " "),
                        ["worker"],
                        registry=self.registry,
                        multiprocess_mode="livesum",
                    )
                g.labels(worker).set(value)

    def retire(self) -> None:
        """Withdraw this worker's live gauges (it is stopping)."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]

    async def measure_loop_lag(self, every_s: float = 0.25) -> None:
        """Record how late this event loop wakes a sleeper, until cancelled. CPU use
        alone hides a backlog; this is the wait every request and frame shares."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(every_s)
            self.loop_lag.observe(max(0.0, loop.time() - start - every_s))

    async def publish_forever(self) -> None:
        """Publish the live gauges every :attr:`refresh_s` until cancelled, then withdraw
        them (run for the app's lifespan, on its event loop, where the probes' state
        lives); returns at once with one process."""
        if self.multiprocess_dir is None:
            return
        try:
            while True:
                await asyncio.sleep(self.refresh_s)
                try:
                    self.publish()
                except Exception:  # a metrics hiccup must not end the worker
                    log.exception("publishing the live gauges failed")
        finally:
            self.retire()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _withdraw_dead_workers(path: str) -> None:
    """Remove the live-gauge files of workers that died without :meth:`Metrics.retire`
    (pids are of this host: uvicorn's workers share it)."""
    for f in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = os.path.basename(f)[: -len(".db")].rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            mark_process_dead(int(pid), path)  # type: ignore[no-untyped-call]


class _Probe(Collector):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def collect(self) -> Iterator[GaugeMetricFamily]:
        worker = str(os.getpid())
        for name, value in self.probe().items():
            g = GaugeMetricFamily(f"o2o_{name}", name.replace("_", " "), labels=["worker"])
            g.add_metric([worker], value)
            yield g


class Timed:
    """Pure ASGI middleware counting HTTP requests by route template (not raw path: ids
    would explode the label set) and timing them.

    Not ``BaseHTTPMiddleware``: that runs every request through an extra task group and
    memory stream, a measurable share of a small request's CPU under load.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", "unmatched")
            m = self.metrics
            m.requests.labels(scope["method"], name, str(status)).inc()
            m.latency.labels(name).observe(time.perf_counter() - start)

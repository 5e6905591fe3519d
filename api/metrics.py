"""Prometheus metrics of one worker process (``/metrics``).

Each app gets its own registry (tests build many apps in one process). With several
workers each reports its own numbers, labelled by ``worker`` (the pid), for the
scraper to sum.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.orders = Counter("o2o_orders_placed", "Orders created", registry=r)
        self.ws_frames = Counter(
            "o2o_ws_frames_sent", "Websocket frames sent", ["channel"], registry=r
        )
        self.ws_closed = Counter(
            "o2o_ws_closed", "Websockets closed by the server", ["code"], registry=r
        )
        self.ws_open = Gauge("o2o_ws_connections", "Open websockets", ["channel"], registry=r)

    def exposition(self) -> tuple[bytes, str]:
        """The text ``/metrics`` answers, and its media type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def watch(self, probe: Callable[[], dict[str, float]]) -> None:
        """Expose gauges read at scrape time (hub and dispatcher state)."""
        self.registry.register(_Probe(probe))


class _Probe(Collector):
    def __init__(self, probe: Callable[[], dict[str, float]]) -> None:
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

"""Prometheus metrics of one worker process (``/metrics``).

Each app gets its own registry (tests build many apps in one process). With several
workers each reports its own numbers, labelled by ``worker`` (the pid), for the
scraper to sum.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


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


def timed(metrics: Metrics) -> Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]:
    """HTTP middleware counting requests by route template (not raw path: ids would
    explode the label set)."""

    async def middleware(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, name, str(response.status_code)).inc()
        metrics.latency.labels(name).observe(time.perf_counter() - start)
        return response

    return middleware

"""``/metrics`` of ``o2o serve --workers 2`` answers for the whole service: one scrape,
whichever worker takes it, counts every worker's requests and shows every live worker's
gauges (and no dead worker's)."""

from __future__ import annotations

import http.client
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import Server, start_serve_process, stop_process, worker_of
from tests.conftest import RedisServer

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _get(srv: Server, path: str) -> tuple[int, bytes, int | None]:
    """GET on a new connection: status, body, and the pid of the worker that served it."""
    port = int(srv.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        assert conn.sock is not None  # kept alive: the worker still holds its end
        return r.status, body, worker_of(conn.sock.getsockname()[1], port)
    finally:
        conn.close()


def _scrape(srv: Server) -> Samples:
    status, body, _ = _get(srv, "/metrics")
    assert status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for lab, v in samples.get(name, []) if labels.items() <= lab.items()]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def _workers(samples: Samples, name: str) -> dict[int, float]:
    return {int(lab["worker"]): v for lab, v in samples.get(name, [])}


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def test_one_scrape_reports_every_workers_requests_and_gauges(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    srv = start_serve_process(tmp_path, "--store", redis_server.url, "--workers", "2")
    assert srv.proc is not None
    try:
        # New connections until both workers have served some (and at least 40).
        served: dict[int, int] = {}
        n = 0
        deadline = time.monotonic() + 10
        while n < 40 or len(served) < 2:
            assert time.monotonic() < deadline, f"requests reached one worker only: {served}"
            status, _, pid = _get(srv, "/healthz")
            assert status == 200 and pid is not None
            served[pid] = served.get(pid, 0) + 1
            n += 1
        assert len(served) == 2, served

        # One scrape (one worker answers) counts all n: each worker served fewer.
        m = _scrape(srv)
        route = {"method": "GET", "route": "/healthz", "status": "200"}
        assert _value(m, "o2o_http_requests_total", **route) == n
        assert _value(m, "o2o_http_request_seconds_count", route="/healthz") == n
        assert _value(m, "o2o_http_request_seconds_bucket", route="/healthz", le="+Inf") == n

        # Live gauges: one series per worker, labelled by its pid; one dispatch leader.
        def both_published() -> bool:
            g = _scrape(srv)
            leading = _workers(g, "o2o_dispatch_leading")
            return set(_workers(g, "o2o_ws_subscribers")) == set(served) and (
                set(leading) == set(served) and sum(leading.values()) == 1
            )

        _until(both_published, 10, f"gauges of workers {set(served)} and one leader")

        # A worker killed outright: its requests stay counted, its gauges go.
        victim = min(served)
        os.kill(victim, signal.SIGKILL)

        def victim_gone() -> bool:
            g = _scrape(srv)
            assert _value(g, "o2o_http_requests_total", **route) == n
            return victim not in _workers(g, "o2o_ws_subscribers")

        _until(victim_gone, 10, f"worker {victim}'s gauges withdrawn")
    finally:
        stop_process(srv.proc)

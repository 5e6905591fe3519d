"""Prometheus metrics and response compression of the live service."""

from __future__ import annotations

import time

from tests.api.conftest import ORDER, Server, auth, token


def _sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{{{want}}} in /metrics")


def test_requests_are_counted_by_route_template_and_status(server: Server) -> None:
    cust = token("customer", "ann")
    with server.client(cust) as http:
        for i in range(2):
            r = http.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": f"m{i}"})
            assert r.status_code == 201
        assert http.get("/v1/orders/no-such-order").status_code == 404
        bad = {**auth(cust), "Content-Type": "application/json", "Idempotency-Key": "m-bad"}
        assert http.post("/v1/orders", content=b"{", headers=bad).status_code == 400
        text = http.get("/metrics").text
    route = "/v1/orders/{order_id}"
    assert _sample(text, "o2o_http_requests_total", route="/v1/orders", status="201") == 2
    assert _sample(text, "o2o_http_requests_total", route=route, status="404") == 1
    assert _sample(text, "o2o_http_requests_total", route="/v1/orders", status="400") == 1
    assert _sample(text, "o2o_http_request_seconds_count", route="/v1/orders") == 3


def test_large_reads_are_gzipped_and_writes_are_not(server: Server) -> None:
    cust = token("customer", "gus")
    with server.client(cust) as http:
        doc = http.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
        assert doc.status_code == 200 and doc.headers.get("content-encoding") == "gzip"
        assert "paths" in doc.json()  # httpx decompresses
        r = http.post(
            "/v1/orders",
            json=ORDER,
            headers={"Accept-Encoding": "gzip", "Idempotency-Key": "gz"},
        )
        assert r.status_code == 201 and "content-encoding" not in r.headers


def _plain(text: str, name: str) -> float:
    """An unlabelled sample (0 when not there yet)."""
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_event_loop_lag_is_measured(server: Server) -> None:
    """Each worker samples how late its event loop wakes a timer (4 times a second)."""
    with server.client() as http:
        deadline = time.monotonic() + 5
        while True:
            text = http.get("/metrics").text
            count = _plain(text, "o2o_event_loop_lag_seconds_count")
            if count >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert count >= 2
    assert _sample(text, "o2o_event_loop_lag_seconds_bucket", le="+Inf") == count


def test_hub_lag_and_shed_positions_are_exposed(server: Server) -> None:
    """How far behind the log each worker's fan-out reads, and what it shed for it."""
    with server.client(token("customer", "hal")) as http:
        r = http.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "hub-lag"})
        assert r.status_code == 201
        time.sleep(0.3)  # the hub reads the order's event
        text = http.get("/metrics").text
    assert 0.0 < _sample(text, "o2o_hub_lag_seconds") < 5.0  # read, and read soon
    assert _sample(text, "o2o_hub_positions_shed") == 0


def test_replan_counters_are_exposed(server: Server) -> None:
    """Ops see whether re-plans run and whether their solves find anything."""
    with server.client(token("customer", "rex")) as http:
        r = http.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "replans"})
        assert r.status_code == 201
        deadline = time.monotonic() + 10
        while True:
            text = http.get("/metrics").text
            if _sample(text, "o2o_dispatch_replans") >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert _sample(text, "o2o_dispatch_replans") >= 1  # the first tick re-plans at once
    for name in ("replans_rejected", "groups_solved", "groups_skipped", "groups_deferred"):
        assert _sample(text, f"o2o_dispatch_{name}") >= 0
    assert _sample(text, "o2o_dispatch_last_solve_seconds") >= 0

"""What-if simulations through the live service: a real server, a real worker process."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from api.whatif import MIN_STORE_ORDERS, WhatIfJob, WhatIfTooLong, run_whatif
from dispatch.dispatcher import DispatchSettings
from simulations.scenarios import default_city, scale_city
from tests.api.conftest import Server, auth, token
from tests.conftest import RedisServer
from tracking.redis_store import RedisStore

OPS = token("ops", "ops-1")


def wait_done(client: httpx.Client, whatif_id: str, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/v1/whatif/{whatif_id}")
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        if doc["status"] != "running":
            return doc
        time.sleep(0.2)
    raise AssertionError(f"what-if {whatif_id} still running after {timeout} s")


def test_ops_compares_a_setting_on_the_default_city(server: Server) -> None:
    with server.client(OPS) as c:
        r = c.post(
            "/v1/whatif",
            json={"settings": {"lateness_weight": 10, "replan_every_s": 60}, "scale": 0.01},
        )
        assert r.status_code == 202, r.text
        created = r.json()
        assert created["status"] == "running"
        assert created["id"]
        assert created["scenario"] == "default_city"  # the store has no orders today
        assert any("default city" in n for n in created["notes"])
        assert r.headers["location"] == f"/v1/whatif/{created['id']}"

        doc = wait_done(c, created["id"])
        assert doc["status"] == "done", doc["error"]
        assert doc["error"] is None
        base, variant = doc["kpis"]["baseline"], doc["kpis"]["variant"]
        for k in (base, variant):
            assert k["orders"] == doc["orders"] == 20
            assert k["delivered"] > 0
            assert k["c2d_mean"] is not None
            assert k["violations"] == 0
        assert base["tick_s"] == 30 and variant["tick_s"] == 60
        assert doc["settings"]["baseline"]["lateness_weight"] == 3
        assert doc["settings"]["variant"]["lateness_weight"] == 10
        assert doc["policy"] == {"baseline": "live", "variant": "live"}
        assert doc["report_url"] == f"/v1/whatif/{created['id']}/report"

        report = c.get(doc["report_url"])
        assert report.status_code == 200
        assert report.headers["content-type"].startswith("text/html")
        assert "What-if variant" in report.text and "<svg" in report.text
        baseline = c.get(doc["report_url"], params={"run": "baseline"})
        assert "What-if baseline" in baseline.text

        listed = c.get("/v1/whatif").json()["runs"]
        assert [r["id"] for r in listed] == [created["id"]]
    # a browser opens the report with ?token=
    opened = httpx.get(f"{server.url}{doc['report_url']}", params={"token": OPS})
    assert opened.status_code == 200 and "What-if variant" in opened.text
    # the link carries a token: not cached, not passed on as a Referer
    assert opened.headers["cache-control"] == "no-store"
    assert opened.headers["referrer-policy"] == "no-referrer"


def test_a_run_stops_at_its_time_budget() -> None:
    """A what-if holds the only worker process: it stops at its wall-clock budget with
    an error that says so, instead of blocking the runs queued behind it."""
    settings = DispatchSettings()
    job = WhatIfJob(
        settings, settings, "live", 1.0, city=scale_city(default_city(), 0.02), max_run_s=0.0
    )
    with pytest.raises(WhatIfTooLong, match=r"stopped after 0 s .* try a smaller scale"):
        run_whatif(job)


def test_variant_with_another_policy_and_more_couriers(server: Server) -> None:
    with server.client(OPS) as c:
        r = c.post("/v1/whatif", json={"policy": "greedy", "couriers_scale": 2.0, "scale": 0.01})
        assert r.status_code == 202, r.text
        doc = wait_done(c, r.json()["id"])
        assert doc["status"] == "done", doc["error"]
        assert doc["policy"]["variant"] == "greedy"
        k = doc["kpis"]
        assert k["variant"]["couriers"] == 2 * k["baseline"]["couriers"]


def test_todays_orders_from_the_store(server: Server) -> None:
    courier = token("courier", "c-1")
    customer = token("customer", "cu-1")
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.post(
            "/v1/couriers/c-1/shift",
            json={"action": "start", "lat": 52.52, "lon": 13.405},
            headers=auth(courier),
        )
        assert r.status_code == 200, r.text
        for i in range(MIN_STORE_ORDERS + 2):
            body = {
                "pickup": {"lat": 52.52 + 0.001 * (i % 3), "lon": 13.405, "id": f"store-{i % 3}"},
                "dropoff": {"lat": 52.53 + 0.001 * i, "lon": 13.42},
            }
            assert c.post("/v1/orders", json=body, headers=auth(customer)).status_code == 201
        r = c.post("/v1/whatif", json={"couriers_scale": 3}, headers=auth(OPS))
        assert r.status_code == 202, r.text
        assert r.json()["scenario"] == "store"
        assert r.json()["orders"] == MIN_STORE_ORDERS + 2
    with server.client(OPS) as c:
        doc = wait_done(c, r.json()["id"])
    assert doc["status"] == "done", doc["error"]
    assert doc["kpis"]["baseline"]["couriers"] == 1
    assert doc["kpis"]["variant"]["couriers"] == 3
    assert doc["kpis"]["baseline"]["orders"] == MIN_STORE_ORDERS + 2
    assert doc["kpis"]["variant"]["delivered"] == MIN_STORE_ORDERS + 2


def test_only_ops(server: Server) -> None:
    for role, subject in (("customer", "cu-1"), ("courier", "c-1")):
        with server.client(token(role, subject)) as c:  # type: ignore[arg-type]
            r = c.post("/v1/whatif", json={"scale": 0.01})
            assert r.status_code == 403
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["reason"] == "forbidden_role"
            assert c.get("/v1/whatif/w-1").status_code == 403
            assert c.get("/v1/whatif").status_code == 403
    assert httpx.post(f"{server.url}/v1/whatif", json={}).status_code == 401


def test_unknown_id(server: Server) -> None:
    with server.client(OPS) as c:
        for path in ("/v1/whatif/w-nope", "/v1/whatif/w-nope/report"):
            r = c.get(path)
            assert r.status_code == 404
            assert r.json()["reason"] == "unknown_whatif"


def test_bad_requests(server: Server) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"settings": {"no_such_knob": 1}}, "unknown_setting"),
        ({"settings": {"lateness_weight": "high"}}, "bad_setting"),
        ({"settings": {"churn_s": -5}}, "bad_setting"),
        ({"settings": {"solve_time_limit_s": 100}}, "bad_setting"),
        ({"settings": {"freeze_next_stop": 1}}, "bad_setting"),
        ({"policy": "clairvoyant"}, "unknown_policy"),
        ({"couriers_scale": 0}, "invalid_request"),
        ({"couriers_scale": 6}, "invalid_request"),
        ({"scale": 2}, "invalid_request"),
        ({"settings": {}, "surprise": True}, "invalid_request"),
        ({"couriers_scale": "0.5"}, "invalid_request"),  # a quoted number is not a number
        ({"scale": True}, "invalid_request"),
    ]
    with server.client(OPS) as c:
        for body, reason in cases:
            r = c.post("/v1/whatif", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["reason"] == reason, (body, r.json())
        assert c.get("/v1/whatif").json()["runs"] == []  # nothing was started


def test_too_many_queued(server: Server) -> None:
    server.app.state.whatif.max_unfinished = 1
    with server.client(OPS) as c:
        first = c.post("/v1/whatif", json={"scale": 0.01})
        assert first.status_code == 202
        second = c.post("/v1/whatif", json={"scale": 0.01})
        assert second.status_code == 429
        assert second.headers["retry-after"]
        assert second.json()["reason"] == "too_many_whatifs"
        r = c.get(f"/v1/whatif/{first.json()['id']}/report")  # the worker is still starting
        assert r.status_code == 409 and r.json()["reason"] == "whatif_running"
        assert wait_done(c, first.json()["id"])["status"] == "done"
        assert c.post("/v1/whatif", json={"scale": 0.01}).status_code == 202


def test_a_killed_worker_fails_its_run_and_the_next_run_gets_a_new_one(server: Server) -> None:
    with server.client(OPS) as c:
        long = c.post("/v1/whatif", json={"scale": 0.1})  # tens of seconds
        assert long.status_code == 202
        deadline = time.monotonic() + 30
        while not multiprocessing.active_children():
            assert time.monotonic() < deadline, "no worker process was started"
            time.sleep(0.05)
        for p in multiprocessing.active_children():
            assert p.pid is not None
            os.kill(p.pid, signal.SIGKILL)  # as the OOM killer would
        doc = wait_done(c, long.json()["id"], timeout=30)
        assert doc["status"] == "failed"
        assert "BrokenProcessPool" in doc["error"]
        again = c.post("/v1/whatif", json={"scale": 0.01})
        assert again.status_code == 202
        assert wait_done(c, again.json()["id"])["status"] == "done"


def test_any_worker_answers_for_a_run(
    server_factory: Callable[..., Server], redis_server: RedisServer
) -> None:
    """Two workers on one Redis: a what-if started on one is listed, polled to the end and
    its report served by the other (a poll may reach any worker)."""
    a = server_factory(store=RedisStore.from_url(redis_server.url))
    b = server_factory(store=RedisStore.from_url(redis_server.url))
    with a.client(OPS) as ca, b.client(OPS) as cb:
        r = ca.post("/v1/whatif", json={"scale": 0.01})
        assert r.status_code == 202, r.text
        wid = r.json()["id"]
        assert wid in [run["id"] for run in cb.get("/v1/whatif").json()["runs"]]
        doc = wait_done(cb, wid)
        assert doc["status"] == "done", doc
        assert doc["kpis"] == wait_done(ca, wid)["kpis"]
        report = cb.get(f"/v1/whatif/{wid}/report")
        assert report.status_code == 200 and "<html" in report.text.lower()
        assert cb.get("/v1/whatif/nope").status_code == 404

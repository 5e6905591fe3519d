"""The pages in a real browser (Debian Chromium via Playwright) against a live service."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.api.conftest import token
from tests.web.conftest import ClockServer, Drive, Pages, lerp, screenshots, ws_snapshot

START = (52.5170, 13.4000)
PICKUP = (52.5200, 13.4050)
DROPOFF = (52.5240, 13.4120)


def courier_at(page: Any) -> tuple[float, float] | None:
    got = page.evaluate("() => window.o2oTrack && window.o2oTrack.glide.current")
    return None if got is None else (got[0], got[1])


def step_state(page: Any, step: str) -> str | None:
    got: str | None = page.get_attribute(f'#timeline li[data-step="{step}"]', "data-state")
    return got


def test_tracking_page_follows_the_courier_to_delivered(drive: Drive, pages: Pages) -> None:
    drive.start_shift(START)
    order = drive.place(PICKUP, DROPOFF)
    page = pages.open(f"{drive.server.url}/track/{order['id']}?token={drive.customer_token}")
    page.wait_for_selector('body[data-status="assigned"]', timeout=10_000)
    page.wait_for_selector('#map[data-markers="3"]')
    first = courier_at(page)
    assert first is not None
    frames0 = page.evaluate("() => window.o2oTrack.glide.frames")
    drive.ride(START, PICKUP)
    page.wait_for_function(
        "([lat, lon]) => { const c = window.o2oTrack.glide.current;"
        " return Math.abs(c[0] - lat) < 5e-4 && Math.abs(c[1] - lon) < 5e-4; }",
        arg=list(PICKUP),
        timeout=5_000,
    )
    moved = page.evaluate("() => window.o2oTrack.glide.frames") - frames0
    assert moved > 20, f"only {moved} animation frames: the marker jumped"
    drive.confirm(order["id"], "pickup")
    page.wait_for_selector('body[data-status="picked_up"]', timeout=5_000)
    middle = lerp(PICKUP, DROPOFF, 0.6)
    drive.ride(PICKUP, middle)
    drive.t += 60  # a minute without a fix, then a poor one: the page shows the uncertainty
    radius = drive.gps(middle, accuracy=100.0)["position"]["radius_m"]
    assert radius > 40
    page.wait_for_selector("path.o2o-uncertainty", timeout=3_000)
    assert "approximate" in page.inner_text("#accuracy")
    screenshots(page, "track")
    drive.ride(middle, DROPOFF)
    drive.confirm(order["id"], "dropoff")
    page.wait_for_selector('body[data-status="delivered"]', timeout=5_000)
    for step in ("placed", "assigned", "picked_up", "delivered"):
        assert step_state(page, step) == "done", step
    assert page.get_attribute('#timeline li[data-step="delivered"]', "aria-current") == "step"
    assert "Delivered at" in page.inner_text("#eta")
    statuses = page.evaluate("() => window.o2oTrack.state.statuses")
    assert statuses[-2:] == ["picked_up", "delivered"]


def test_tracking_page_resumes_after_a_drop_without_missing_a_status(
    drive: Drive, pages: Pages
) -> None:
    drive.start_shift(START)
    order = drive.place(PICKUP, DROPOFF)
    page = pages.open(f"{drive.server.url}/track/{order['id']}?token={drive.customer_token}")
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    page.wait_for_selector('body[data-status="assigned"]', timeout=10_000)

    # 1. the network goes away while the courier picks the order up
    page.context.set_offline(True)
    page.wait_for_selector('#conn[data-state="offline"]', timeout=5_000)
    drive.ride(START, PICKUP, pause_s=0.0)
    drive.confirm(order["id"], "pickup")
    assert page.get_attribute("body", "data-status") == "assigned"
    page.context.set_offline(False)
    page.wait_for_selector('body[data-status="picked_up"]', timeout=10_000)
    assert "last_event_id=" in sockets[-1].url
    assert step_state(page, "picked_up") == "done"

    # 2. the server drops every socket (a restart); the drop-off happens meanwhile
    hub = drive.server.app.state.svc.hub
    hub._task.get_loop().call_soon_threadsafe(hub.close_all, "restart")
    drive.ride(PICKUP, DROPOFF, pause_s=0.0)
    drive.confirm(order["id"], "dropoff")
    page.wait_for_selector('body[data-status="delivered"]', timeout=10_000)
    assert "last_event_id=" in sockets[-1].url
    connects = page.evaluate("() => window.o2oTrack.socket.connects")
    assert len(connects) == 3 and all(c["resumed_from"] for c in connects[1:])
    statuses = page.evaluate("() => window.o2oTrack.state.statuses")
    assert statuses[-2:] == ["picked_up", "delivered"], statuses  # frames, not snapshots
    for step in ("placed", "assigned", "picked_up", "delivered"):
        assert step_state(page, step) == "done", step


def test_a_customer_cannot_open_another_customers_order(drive: Drive, pages: Pages) -> None:
    order = drive.place(PICKUP, DROPOFF)
    other = token("customer", "someone-else")
    page = pages.open(f"{drive.server.url}/track/{order['id']}?token={other}")
    page.wait_for_selector('body[data-error="4403"]', timeout=5_000)
    assert "do not have access" in page.inner_text("#notice")
    assert page.get_attribute("#conn", "data-state") == "error"
    assert page.query_selector("body[data-status]") is None  # nothing of the order shows
    page.wait_for_timeout(1500)
    assert page.evaluate("() => window.o2oTrack.socket.connects.length") == 1  # no retry

    unknown = pages.open(f"{drive.server.url}/track/o-nope?token={drive.customer_token}")
    unknown.wait_for_selector('body[data-error="4404"]', timeout=5_000)

    # the owner's share link opens it read-only
    share = drive.ok(drive.customer_token, "POST", f"/v1/orders/{order['id']}/share")
    shared = pages.open(drive.server.url + share["url"])
    shared.wait_for_selector('body[data-status="placed"]', timeout=5_000)
    assert "Finding a courier" in shared.inner_text("#headline")


def test_courier_view_acknowledges_a_route_and_confirms_with_an_override(
    drive: Drive, pages: Pages
) -> None:
    url = f"{drive.server.url}/courier?token={drive.courier_token}&courier={drive.courier}"
    page = pages.open(
        url,
        geolocation={"latitude": START[0], "longitude": START[1], "accuracy": 10},
        permissions=["geolocation"],
    )
    page.wait_for_selector('body[data-shift="off"]')
    page.wait_for_function("() => window.o2oCourier.state.posted > 0", timeout=5_000)
    page.click("#start-shift")
    page.wait_for_selector('body[data-shift="on"]')
    page.wait_for_selector('#conn[data-state="live"]')

    order = drive.place(PICKUP, DROPOFF)
    page.wait_for_selector("#ack-row:not([hidden])", timeout=10_000)
    assert page.locator("#stops li").count() == 2
    assert "New route" in page.inner_text("#route-banner")
    screenshots(page, "courier")
    route_id = page.evaluate("() => window.o2oCourier.state.pendingAck")
    page.reload()  # not acknowledged yet: the page still asks
    page.wait_for_selector("#ack-row:not([hidden])", timeout=5_000)
    assert page.evaluate("() => window.o2oCourier.state.pendingAck") == route_id
    assert "Please acknowledge" in page.inner_text("#route-banner")
    page.focus("#ack")  # keyboard only
    page.keyboard.press("Enter")
    page.wait_for_selector(f'body[data-acked="{route_id}"]', timeout=5_000)
    assert "acknowledged" in page.inner_text("#route-banner")

    # after a reload the acknowledged route is not asked about again
    page.reload()
    page.wait_for_selector('#conn[data-state="live"]')
    page.wait_for_selector(f'body[data-acked="{route_id}"]', timeout=5_000)
    assert page.locator("#stops li").count() == 2
    assert page.is_hidden("#ack-row")
    assert page.evaluate("() => window.o2oCourier.state.pendingAck") is None
    assert "acknowledge" not in page.inner_text("#route-banner").lower()

    # ~500 m from the pickup: the server asks for a reason, the page prompts for one
    page.click(f'#stops li[data-order="{order["id"]}"][data-kind="pickup"] button')
    page.wait_for_selector("#override[open]", timeout=5_000)
    assert "pickup" in page.inner_text("#override-why")
    page.fill("#override-reason", "customer met me at the corner")
    page.click("#override-ok")
    page.wait_for_selector("#notice.ok", timeout=5_000)
    picked = drive.wait_status(order["id"], "picked_up")
    assert picked["courier_id"] == drive.courier

    page.click("#end-shift")
    page.wait_for_selector('body[data-shift="off"]')
    assert not drive.ok(drive.courier_token, "GET", f"/v1/couriers/{drive.courier}")["on_shift"]


def test_courier_view_with_geo_off_posts_no_fixes_until_asked(drive: Drive, pages: Pages) -> None:
    drive.start_shift(START)  # o2o demo: the driver posts this courier's fixes
    url = f"{drive.server.url}/courier?token={drive.courier_token}&courier={drive.courier}"
    requests: list[str] = []
    page = pages.open(
        url + "&geo=off",
        geolocation={"latitude": PICKUP[0], "longitude": PICKUP[1], "accuracy": 10},
        permissions=["geolocation"],
        requests=requests,
    )
    page.wait_for_selector('body[data-shift="on"]')
    page.wait_for_selector('#conn[data-state="live"]')
    toggle = page.get_by_label("Share my location (GPS)")
    assert toggle.is_visible() and not toggle.is_checked()
    assert "geo=off" in page.inner_text("#gps-state")
    # the map follows the service's position (the driver's fixes), not the phone's
    there = lerp(START, PICKUP, 0.5)
    drive.ride(START, there, pause_s=0.0)
    page.wait_for_function(
        "([lat, lon]) => { const p = window.o2oCourier.state.position;"
        " return p && Math.abs(p[0] - lat) < 3e-4 && Math.abs(p[1] - lon) < 3e-4; }",
        arg=list(there),
        timeout=8_000,
    )
    posts = [r for r in requests if r.startswith("POST") and "/observations" in r]
    assert posts == []

    toggle.check()  # the courier turns sharing on: the phone's fixes go out
    page.wait_for_function("() => window.o2oCourier.state.posted > 0", timeout=5_000)
    toggle.uncheck()
    assert "off" in page.inner_text("#gps-state")


ZONE = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "mitte",
            "properties": {"name": "Mitte"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[13.30, 52.45], [13.48, 52.45], [13.48, 52.56], [13.30, 52.56], [13.30, 52.45]]
                ],
            },
        }
    ],
}


def test_ops_console_lists_a_late_order_within_two_seconds(drive: Drive, pages: Pages) -> None:
    drive.ok(drive.ops_token, "PUT", "/v1/zones", ZONE)
    far = Drive(drive.server, courier="c-far")
    far.start_shift((52.4700, 13.3300))  # ~7 km from the pickup: no way to make a minute
    for cid, at in (("c-near", (52.5000, 13.4600)), ("c-idle", (52.5400, 13.3400))):
        Drive(drive.server, courier=cid).start_shift(at)
    page = pages.open(f"{drive.server.url}/ops?token={drive.ops_token}")
    page.wait_for_selector('#conn[data-state="live"]')
    page.wait_for_selector('#map[data-zones="1"]')
    fine = drive.place((52.5050, 13.3800), (52.5150, 13.3900), customer="u2")
    drive.wait_status(fine["id"], "assigned")

    late = drive.place(PICKUP, DROPOFF, promised_in_s=60)
    page.wait_for_selector(f'#alerts li[data-order="{late["id"]}"]', timeout=10_000)
    seen_at = time.time()
    page.wait_for_selector(f'#orders tr[data-order="{late["id"]}"][data-risk="late"]', timeout=500)
    delay_t = page.evaluate(f"() => window.o2oOps.state.delays.get({late['id']!r}).t")
    assert seen_at - delay_t < 2.0, f"listed {seen_at - delay_t:.2f} s after the delay event"
    first = page.get_attribute("#orders tbody tr:first-child", "data-order")
    assert first == late["id"]  # sorted by risk of lateness
    assert int(page.get_attribute("#map", "data-cells") or 0) >= 1  # demand cells
    screenshots(page, "ops")

    page.click('#orders th[data-key="promised"] button')
    page.wait_for_selector('#orders th[data-key="promised"][aria-sort="ascending"]')
    page.select_option("#metric", "idle")
    page.wait_for_function("() => document.getElementById('legend').textContent.includes('idle')")

    # dispatch settings round trip
    page.fill("#set-lateness_weight", "5")
    page.click("#settings-save")
    page.wait_for_selector("#settings-state:has-text('Saved')")
    assert drive.ok(drive.ops_token, "GET", "/v1/dispatch/settings")["lateness_weight"] == 5


def test_ops_whatif_panel(drive: Drive, pages: Pages) -> None:
    page = pages.open(f"{drive.server.url}/ops?token={drive.ops_token}")
    page.wait_for_selector('#conn[data-state="live"]')
    # a service without the what-if API: the panel says so
    page.route(
        "**/v1/whatif",
        lambda route: route.fulfill(
            status=404,
            json={"title": "Not found", "status": 404, "detail": "Not Found"},
            content_type="application/problem+json",
        ),
    )
    page.click("#wi-run")
    page.wait_for_selector('#wi-state[data-state="unavailable"]', timeout=5_000)
    assert "not available" in page.inner_text("#wi-state")
    page.unroute("**/v1/whatif")

    # the real what-if API: a simulated day in a worker process, then the comparison
    page.fill("#wi-scale", "1.2")
    page.select_option("#wi-policy", "bundling")
    page.fill("#wi-settings", '{"lateness_weight": 7}')
    page.click("#wi-run")
    page.wait_for_selector('#wi-state[data-state="done"]', timeout=90_000)
    rows = page.locator("#wi-kpis tr[data-kpi]")
    assert rows.count() >= 3, "the KPI comparison table is empty"
    href = page.get_attribute("#wi-report", "href") or ""
    assert href.startswith(f"{drive.server.url}/v1/whatif/") and "token=" in href
    report = httpx.get(href, timeout=10)
    assert report.status_code == 200 and "<html" in report.text.lower()


def test_ops_console_takes_routes_from_the_snapshot(drive: Drive, pages: Pages) -> None:
    drive.start_shift(START)
    order = drive.place(PICKUP, DROPOFF)
    drive.wait_status(order["id"], "assigned")
    path = f"/v1/couriers/{drive.courier}/route"
    deadline = time.monotonic() + 10
    while not drive.ok(drive.ops_token, "GET", path)["stops"]:
        assert time.monotonic() < deadline, "no route"
        time.sleep(0.05)
    requests: list[str] = []
    page = pages.open(f"{drive.server.url}/ops?token={drive.ops_token}", requests=requests)
    page.wait_for_selector('#conn[data-state="live"]')
    courier = json.dumps(drive.courier)
    page.wait_for_function(f"() => (window.o2oOps.state.routes.get({courier}) || []).length == 2")
    row = f'#orders tr[data-order="{order["id"]}"]'
    page.wait_for_selector(row)
    assert page.inner_text(f"{row} td:nth-of-type(5)") != "—"  # the ETA, from the route

    # live route frames still update it
    second = drive.place(PICKUP, DROPOFF, customer="u2")
    page.wait_for_function(
        f"() => window.o2oOps.state.routes.get({courier})"
        f".some((s) => s.order_id === {json.dumps(second['id'])})",
        timeout=10_000,
    )
    routes = [r for r in requests if re.search(r"/v1/couriers/[^/]+/route", r)]
    assert routes == [], routes


def test_a_page_opened_after_a_delay_shows_it(drive: Drive, pages: Pages) -> None:
    far = Drive(drive.server, courier="c-far")
    far.start_shift((52.4700, 13.3300))  # ~7 km from the pickup: no way to make a minute
    order = drive.place(PICKUP, DROPOFF, promised_in_s=60)
    path = f"/v1/orders/{order['id']}/track"
    deadline = time.monotonic() + 10
    while (delay := ws_snapshot(drive.server, path, drive.customer_token)["delay"]) is None:
        assert time.monotonic() < deadline, "no delay was announced"
        time.sleep(0.1)

    page = pages.open(f"{drive.server.url}/track/{order['id']}?token={drive.customer_token}")
    page.wait_for_selector('body[data-status="assigned"]', timeout=5_000)
    step = '#timeline li[data-step="delayed"]'
    page.wait_for_selector(step)  # visible
    assert page.get_attribute(step, "data-state") == "alert"
    assert "Running late" in page.inner_text(step)
    got = page.evaluate("() => window.o2oTrack.state.delay")
    assert got["id"] == delay["id"] and got["delay_s"] == delay["delay_s"]
    assert page.evaluate("() => window.o2oTrack.state.statuses") == []  # from the snapshot
    assert "late" in page.inner_text("#eta")
    # the timeline and the summary tell the same story: one lateness, one ETA
    summary = re.search(
        r"Arriving around (.+?) \(.*running about (.+?) late", page.inner_text("#eta")
    )
    timeline = re.search(r"Running late — about (.+?)\s*\(new ETA (.+?)\)", page.inner_text(step))
    assert summary and timeline, (page.inner_text("#eta"), page.inner_text(step))
    assert (timeline[1], timeline[2]) == (summary[2], summary[1])
    # the ETA moves after the delay was announced: both follow it (the timeline kept
    # the announcement's figures), and both drop the lateness once the ETA is on time
    promised = page.evaluate("() => window.o2oTrack.state.order.promised_by")
    for late_s, shown in ((900, True), (-300, False)):
        frame = {"type": "eta", "pickup_eta": promised - 1200, "dropoff_eta": promised + late_s}
        page.evaluate("(f) => window.o2oTrack.onFrame(f)", frame)
        eta, line = page.inner_text("#eta"), page.inner_text(step) if shown else ""
        assert ("late" in eta) == shown and page.is_visible(step) == shown, (eta, line)
        if shown:
            assert "about 15 min" in eta and "about 15 min" in line, (eta, line)


SERVICE_CLOCK_CASES = """async () => {
  const { ServiceClock } = await import("/assets/app/common.js");
  const c = new ServiceClock();
  const out = {};
  out.before = c.now(5000);                       // no reading: the browser's clock
  c.observe(1000, 0);
  c.observe(1003, 3000);                          // under 5 s apart: no rate yet
  out.early = [c.rate, c.now(4000)];
  c.observe(1100, 10000);                         // x10
  out.fast = [c.rate, c.now(11000)];
  c.observe(1250, 25000);
  c.observe(1265, 40000);                         // then real time: the old x10 is dropped
  out.slowed = c.rate;
  c.observe(500, 41000);                          // went back: starts over at rate 1
  out.back = [c.rate, c.now(42000)];
  c.observe(500 + 1e9, 51000);                    // absurd: clamped
  out.clamped = c.rate;
  return out;
}"""


def test_pages_show_times_on_the_service_clock(
    clock_server_factory: Callable[..., ClockServer], pages: Pages
) -> None:
    # the service's clock (as under o2o demo) runs 10x, and 2 h ahead of the browser's
    server = clock_server_factory(speed=10.0, ahead_s=7200.0)
    drive = Drive(server)
    body = {
        "pickup": {"lat": PICKUP[0], "lon": PICKUP[1]},
        "dropoff": {"lat": DROPOFF[0], "lon": DROPOFF[1]},
        "promised_by": server.clock() + 630.0,  # "in 10 min" on the service clock
    }
    order = drive.ok(drive.customer_token, "POST", "/v1/orders", body)
    page = pages.open(f"{server.url}/track/{order['id']}?token={drive.customer_token}")
    page.wait_for_selector('body[data-status="placed"]', timeout=5_000)
    assert re.search(r"\(in (9|10) min\)", page.inner_text("#promise")), page.inner_text("#promise")

    ops = pages.open(f"{server.url}/ops?token={drive.ops_token}")
    row = f'#orders tr[data-order="{order["id"]}"]'
    ops.wait_for_selector(row, timeout=5_000)
    margin = ops.get_attribute(f"{row} .badge", "title") or ""
    assert re.fullmatch(r"(8|9|10) min to spare", margin), margin  # not "2 h 10 min"

    # a second reading (GET /healthz with X-O2O-Clock, 6 s later) shows the rate
    page.wait_for_function("() => Math.abs(window.o2oClock.rate - 10) < 1", timeout=10_000)
    est = page.evaluate("() => window.o2oClock.now()")
    assert abs(est - server.clock()) < 5.0  # seconds of the x10 clock

    got = page.evaluate(SERVICE_CLOCK_CASES)
    assert got["before"] == 5
    assert got["early"] == [1, 1004]
    assert got["fast"] == [10, 1110]
    assert abs(got["slowed"] - 1) < 1e-9
    assert got["back"] == [1, 501]
    assert got["clamped"] == 3600


def test_courier_view_says_why_it_is_not_connected(drive: Drive, pages: Pages) -> None:
    """No shift yet: "Not connected"; refused (someone else's page): "Disconnected" and
    why. Never a "Connecting…" that stays for ever."""
    fresh = "c-no-shift-yet"
    page = pages.open(f"{drive.server.url}/courier?token={token('courier', fresh)}&courier={fresh}")
    page.wait_for_selector('#conn[data-state="idle"]', timeout=5_000)
    assert page.inner_text("#conn") == "Not connected"
    theirs = pages.open(
        f"{drive.server.url}/courier?token={token('courier', fresh)}&courier={drive.courier}"
    )
    theirs.wait_for_selector('#conn[data-state="error"]', timeout=5_000)
    assert "(403)" in theirs.inner_text("#notice")

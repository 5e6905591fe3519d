"""The pages and assets over plain HTTP: where they are mounted, what they embed, and
what happens without ``web/node_modules``."""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import api.web
from api.web import VENDOR, WEB_DIR
from tests.api.conftest import Server, token
from tests.web.conftest import Pages


def config_of(html: str) -> dict[str, object]:
    m = re.search(r'<script type="application/json" id="o2o-config">(.*?)</script>', html)
    assert m, "the page embeds its configuration"
    got: dict[str, object] = json.loads(m.group(1))
    return got


def test_pages_and_assets_are_served_beside_the_api(live: Server) -> None:
    for path in ("/track/o-1?token=x", "/courier?token=x", "/ops?token=x"):
        r = httpx.get(live.url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-store"
        assert config_of(r.text)["missing"] == []
    for path in (
        "/assets/app/common.js",
        "/assets/app/app.css",
        "/assets/leaflet/leaflet-src.esm.js",
        "/assets/leaflet/leaflet.css",
        "/assets/h3-js/h3-js.es.js",
    ):
        assert httpx.get(live.url + path).status_code == 200, path
    js = httpx.get(live.url + "/assets/app/track.js")
    assert "javascript" in js.headers["content-type"]
    assert js.headers["cache-control"] == "no-cache"
    again = httpx.get(
        live.url + "/assets/app/track.js", headers={"If-None-Match": js.headers["etag"]}
    )
    assert again.status_code == 304
    # only the built files of the packages are public, and nothing outside them
    assert httpx.get(live.url + "/assets/leaflet/../package.json").status_code == 404
    assert httpx.get(live.url + "/assets/app/%2e%2e/track.html").status_code == 404
    # the API, health, metrics and docs are not shadowed
    assert httpx.get(live.url + "/healthz").json()["status"] == "ok"
    assert httpx.get(live.url + "/readyz").status_code == 200
    assert httpx.get(live.url + "/metrics").status_code == 200
    assert httpx.get(live.url + "/docs").status_code == 200
    spec = httpx.get(live.url + "/openapi.json").json()
    api_paths = ("/v1/", "/healthz", "/readyz", "/metrics")
    assert not [p for p in spec["paths"] if not p.startswith(api_paths)]
    ops = {"Authorization": f"Bearer {token('ops', 'o')}"}
    r = httpx.get(live.url + "/v1/orders", headers=ops)
    assert r.status_code == 200


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def test_tiles_are_optional_and_configurable(
    live: Server, monkeypatch: pytest.MonkeyPatch, pages: Pages
) -> None:
    monkeypatch.setenv("O2O_TILES_URL", "https://tiles.example/{z}/{x}/{y}.png")
    attribution = '© <a href="https://tiles.example/">Example</a></script>'
    monkeypatch.setenv("O2O_TILES_ATTRIBUTION", attribution)
    html = httpx.get(live.url + "/ops?token=x").text
    tiles = config_of(html)["tiles"]
    assert tiles == {
        "url": "https://tiles.example/{z}/{x}/{y}.png",
        "attribution": attribution,
        "max_zoom": 19,
    }
    block = html.split('id="o2o-config">')[1].split("</script>")[0]
    assert "<" not in block  # escaped: the data block cannot end early
    fetched: list[str] = []

    def tile(route: Any) -> None:
        fetched.append(route.request.url)
        route.fulfill(status=200, body=PNG, content_type="image/png")

    context = pages.browser.new_context()
    pages.contexts.append(context)
    page = context.new_page()
    page.route("https://tiles.example/**", tile)
    page.goto(f"{live.url}/ops?token={token('ops', 'o')}")
    page.wait_for_selector("#map img.leaflet-tile-loaded", timeout=5_000)
    assert fetched and all(re.search(r"/\d+/\d+/\d+\.png$", u) for u in fetched)
    assert "© Example" in page.inner_text(".leaflet-control-attribution")

    monkeypatch.delenv("O2O_TILES_URL")  # no tiles: a plain background, nothing fetched
    fetched.clear()
    page.goto(f"{live.url}/ops?token={token('ops', 'o')}")
    page.wait_for_selector('#map[data-map="ready"]')
    page.wait_for_timeout(300)
    assert fetched == [] and page.query_selector("#map img.leaflet-tile") is None


def test_without_node_modules_the_pages_load_and_say_what_is_missing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    server_factory: Callable[..., Server],
    pages: Pages,
) -> None:
    bare = tmp_path / "web"
    shutil.copytree(WEB_DIR, bare, ignore=shutil.ignore_patterns("node_modules"))
    monkeypatch.setattr(api.web, "WEB_DIR", bare)
    server = server_factory()
    r = httpx.get(server.url + "/assets/leaflet/leaflet.css")
    assert r.status_code == 503 and "npm ci" in r.text
    html = httpx.get(server.url + "/ops?token=x").text
    assert config_of(html)["missing"] == list(VENDOR)

    order = httpx.post(
        server.url + "/v1/orders",
        json={"pickup": {"lat": 52.52, "lon": 13.405}, "dropoff": {"lat": 52.53, "lon": 13.42}},
        headers={"Authorization": f"Bearer {token('customer', 'u1')}"},
    ).json()
    page = pages.open(f"{server.url}/track/{order['id']}?token={token('customer', 'u1')}")
    page.wait_for_selector('#map[data-map="missing"]')
    assert "not installed" in page.inner_text("#map")
    assert "npm ci" in page.inner_text("#map")
    page.wait_for_selector('body[data-status="placed"]')  # the rest of the page works
    ops = pages.open(f"{server.url}/ops?token={token('ops', 'o')}")
    ops.wait_for_selector('#map[data-map="missing"]')
    ops.wait_for_selector('#conn[data-state="live"]')

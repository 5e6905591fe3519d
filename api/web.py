"""Browser pages the service serves: customer tracking, the courier view, the ops console.

Pages (HTML from ``web/*.html``, plain JS modules from ``web/static``, no build step):

- ``/track/{order_id}?token=...`` a customer's (or a share link's) live tracking page;
- ``/courier?token=...&courier=<id>`` a courier's route, shift and confirmations;
- ``/ops?token=...`` the ops console (fleet, orders, H3 layer, settings, what-if).

Assets live under ``/assets/``: ``/assets/app/`` (our scripts and styles),
``/assets/leaflet/`` and ``/assets/h3-js/`` (the map library and H3, served from
``web/node_modules`` as installed by ``npm ci`` in ``web/``; nothing comes from a CDN, so
the pages work offline). Without ``web/node_modules`` the pages still load and say that
the map library is missing. Base-map tiles are optional: ``O2O_TILES_URL`` (a Leaflet
URL template such as ``https://tile.example/{z}/{x}/{y}.png``) and
``O2O_TILES_ATTRIBUTION``; without them the map is a plain background that still shows
zones, H3 cells, routes and markers.

The pages come from the repository's ``web/`` (``O2O_WEB_DIR`` to serve another copy,
e.g. from a non-editable install). Tokens travel in the page URL (browsers cannot set
headers on a websocket), so pages are sent with ``Referrer-Policy: no-referrer`` and
``Cache-Control: no-store``.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

WEB_DIR = Path(os.environ.get("O2O_WEB_DIR") or Path(__file__).resolve().parent.parent / "web")
SETUP_HINT = "run `npm ci` in web/ (the project's setup, .ci/run, does this)"
CONFIG_MARK = "<!--o2o-config-->"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "geolocation=(self)",
}
VENDOR = {
    "leaflet": Path("node_modules/leaflet/dist"),
    "h3-js": Path("node_modules/h3-js/dist/browser"),
}
"""URL name under /assets/ -> folder under web/ (only the built files, not the packages)."""
PAGES = {"track": "track.html", "courier": "courier.html", "ops": "ops.html"}


def vendor_dir(name: str, web_dir: Path) -> Path:
    return web_dir / VENDOR[name]


def missing_vendor(web_dir: Path | None = None) -> list[str]:
    """The vendored libraries whose files are not installed (empty when all are)."""
    root = web_dir or WEB_DIR
    return [name for name in VENDOR if not vendor_dir(name, root).is_dir()]


class _Assets:
    """Static files from a folder that may appear later (``npm ci`` after start-up);
    while it is missing every request gets a 503 that says how to install it."""

    def __init__(self, directory: Path, what: str) -> None:
        self.directory = directory
        self.what = what
        self.static = StaticFiles(directory=directory, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.directory.is_dir():
            body = f"{self.what} is not installed: {SETUP_HINT}\n".encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"cache-control", b"no-store"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def revalidated(message: Message) -> None:
            # Always revalidate (a cheap 304): a new release's scripts are never stale.
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"cache-control", b"no-cache"),
                ]
            await send(message)

        await self.static(scope, receive, revalidated)


def page_config(web_dir: Path) -> dict[str, Any]:
    """What a page learns from the server (embedded as JSON, read by web/static/common.js)."""
    return {
        "tiles": {
            "url": os.environ.get("O2O_TILES_URL") or None,
            "attribution": os.environ.get("O2O_TILES_ATTRIBUTION") or "",
            "max_zoom": int(os.environ.get("O2O_TILES_MAX_ZOOM") or 19),
        },
        "assets": {
            "leaflet": "/assets/leaflet/leaflet-src.esm.js",
            "leaflet_css": "/assets/leaflet/leaflet.css",
            "h3": "/assets/h3-js/h3-js.es.js",
        },
        "missing": missing_vendor(web_dir),
        "setup_hint": SETUP_HINT,
    }


def render_page(name: str, web_dir: Path) -> str:
    """The page's HTML with its configuration embedded (a JSON data block, not a script)."""
    text = (web_dir / PAGES[name]).read_text(encoding="utf-8")
    doc = json.dumps(page_config(web_dir), separators=(",", ":"))
    # "</" cannot end the data block early; & < > are escaped for the HTML parser.
    block = (
        '<script type="application/json" id="o2o-config">'
        + doc.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        + "</script>"
    )
    if CONFIG_MARK not in text:
        raise RuntimeError(f"{PAGES[name]} has no {html.escape(CONFIG_MARK)} marker")
    return text.replace(CONFIG_MARK, block, 1)


def register(app: FastAPI, web_dir: Path | None = None) -> None:
    """Mount the pages and their assets on ``app`` (paths outside /v1 and the health,
    metrics and docs routes); ``web_dir`` defaults to the repository's ``web/``."""
    root = web_dir or WEB_DIR

    def page(name: str) -> Response:
        try:
            return HTMLResponse(render_page(name, root), headers=PAGE_HEADERS)
        except FileNotFoundError:
            return PlainTextResponse(
                f"the web pages are not installed here ({root}); set O2O_WEB_DIR to the "
                "project's web/ folder",
                status_code=503,
            )

    @app.get("/track/{order_id}", response_class=HTMLResponse, include_in_schema=False)
    async def track_page(order_id: str) -> Response:
        return page("track")

    @app.get("/courier", response_class=HTMLResponse, include_in_schema=False)
    async def courier_page() -> Response:
        return page("courier")

    @app.get("/ops", response_class=HTMLResponse, include_in_schema=False)
    async def ops_page() -> Response:
        return page("ops")

    app.mount("/assets/app", _Assets(root / "static", "the page scripts"), name="web-app")
    for name in VENDOR:
        app.mount(
            f"/assets/{name}",
            _Assets(vendor_dir(name, root), f"the {name} library"),
            name=f"web-{name}",
        )

"""The live websockets: a customer's order, a courier's route, the ops view.

Each connection authenticates (``?token=`` since browsers cannot set headers, or the
``Authorization`` header), is checked against what it asks for, then runs
:func:`tracking.hub.serve_channel` (frames out) beside a reader (frames in: acks and
pings). Refusals close with a clear code: 4401 bad token (and when the token expires
while connected: a share link reads only until it expires), 4403 not yours, 4404 unknown,
4400 bad ``last_event_id`` (malformed, or ahead of the log), 4408 fell behind (reconnect
with ``last_event_id``), 1012 server restarting, 1013 store unavailable (retry), 1008
too many malformed frames (each malformed frame, binary ones included, is answered with
an ``error`` frame first), 1009 a client frame over 64 KiB (uvicorn's ``ws_max_size``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Annotated, Any

import h3
import orjson
from fastapi import FastAPI, Query, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api.app import Services, can_see
from api.auth import AuthError, Principal
from tracking.channels import CourierChannel, OpsChannel, OrderChannel
from tracking.errors import BadEventId, NotFound, TrackingError, Unavailable
from tracking.events import cell_topic, parse_event_id
from tracking.hub import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    Channel,
    ChannelClosed,
    Frame,
    serve_channel,
)
from tracking.live import POSITION_CELL_RES

log = logging.getLogger("o2o.ws")
_FRAME_ENCODER = json.JSONEncoder(separators=(",", ":"))
"""For what orjson refuses (see :func:`_encode_frame`)."""


def _encode_frame(frame: Frame) -> str:
    """A frame's JSON text: orjson (every position goes to each of its watchers, so this
    runs a few times per phone fix), ``json`` for the odd value orjson refuses. A NaN
    goes out as ``null`` (browsers' JSON.parse refuses ``NaN``)."""
    try:
        return orjson.dumps(frame).decode()
    except TypeError:
        return _FRAME_ENCODER.encode(frame)


MAX_BAD_FRAMES = 20
MAX_CELL_TOPICS = 500
POSITION_CELL_KM2 = h3.average_hexagon_area(POSITION_CELL_RES, "km^2")

Token = Annotated[str | None, Query(description="Bearer token (browsers cannot set headers)")]
LastId = Annotated[
    str | None, Query(description="Resume after this event id (the highest id received)")
]


def _token(ws: WebSocket, token: str | None) -> str | None:
    if token:
        return token
    auth = ws.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await ws.send_json({"type": "error", "code": code, "reason": reason})
            # a close frame's reason is at most 123 bytes of UTF-8, not characters
            await ws.close(code, reason.encode()[:123].decode(errors="ignore"))


async def _close_for(ws: WebSocket, e: TrackingError, not_found: str) -> None:
    """Close for a store error: only a real miss says "unknown"; a store that cannot
    answer says "try again later" (1013), so clients retry instead of giving up."""
    if isinstance(e, NotFound):
        await _close(ws, CLOSE_NOT_FOUND, not_found)
    elif isinstance(e, Unavailable):
        await _close(ws, CLOSE_TRY_AGAIN, "service busy or store unavailable; reconnect")
    elif isinstance(e, BadEventId):
        await _close(ws, CLOSE_BAD_REQUEST, e.reason)
    else:
        log.error("websocket store error: %r", e)
        await _close(ws, 1011, e.reason)


async def _open(ws: WebSocket, token: str | None) -> tuple[Services, Principal] | None:
    svc: Services = ws.app.state.svc
    await ws.accept()
    try:
        return svc, svc.principal(_token(ws, token))
    except AuthError as e:
        await _close(ws, CLOSE_UNAUTHORIZED, e.reason)
        return None


async def _check_last_id(svc: Services, last_id: str | None) -> str | None:
    """Why ``last_event_id`` cannot be resumed from (None when it can, or is absent).

    An id ahead of the log's newest was never sent by this service: resuming from it
    would silently skip every event up to it, so it is refused like a malformed one."""
    if last_id is None:
        return None
    try:
        key = parse_event_id(last_id)
    except BadEventId as e:
        return str(e)
    newest = await svc.store.events.last_id()
    if key > parse_event_id(newest):
        return f"last_event_id {last_id[:40]!r} is ahead of the newest event {newest}"
    return None


def _parse_frame(message: Any) -> Any:
    """A client frame as JSON; None (answered with an error frame) for anything else:
    binary frames, text that is not JSON, JSON nested too deeply to decode."""
    text = message.get("text")
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


async def _expiry(p: Principal) -> None:
    """Ends the connection when the caller's token expires (a share link is read-only
    *until it expires*, not for as long as its socket stays open)."""
    if p.expires_at is None:
        await asyncio.Event().wait()
        return
    await asyncio.sleep(max(0.0, p.expires_at - time.time()))
    raise ChannelClosed(CLOSE_UNAUTHORIZED, "token expired")


async def _run(
    ws: WebSocket,
    svc: Services,
    p: Principal,
    channel: Channel,
    last_id: str | None,
    name: str,
) -> None:
    bad_id = await _check_last_id(svc, last_id)
    if bad_id is not None:
        await _close(ws, CLOSE_BAD_REQUEST, bad_id)
        return
    lock = asyncio.Lock()
    sent = svc.metrics.ws_frames.labels(name)  # looked up once, counted per frame

    async def send(frame: Frame) -> None:
        async with lock:
            await ws.send_text(_encode_frame(frame))
        sent.inc()

    async def read() -> None:
        bad = 0
        while True:
            raw = await ws.receive()
            if raw["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(raw.get("code", 1000), raw.get("reason"))
            message = _parse_frame(raw)
            reply = await channel.receive(message)
            if reply is not None:
                if reply.get("type") == "error":
                    bad += 1
                    if bad > MAX_BAD_FRAMES:
                        raise ChannelClosed(CLOSE_POLICY, "too many malformed frames")
                await send(reply)

    svc.metrics.ws_open.labels(name).inc()
    writer = asyncio.create_task(
        serve_channel(svc.hub, channel, send, last_event_id=last_id, limits=svc.limits)
    )
    reader = asyncio.create_task(read())
    expiry = asyncio.create_task(_expiry(p))
    try:
        done, _ = await asyncio.wait({writer, reader, expiry}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if isinstance(exc, ChannelClosed):
                svc.metrics.ws_closed.labels(str(exc.code)).inc()
                await _close(ws, exc.code, exc.reason)
            elif isinstance(exc, TrackingError):
                await _close_for(ws, exc, str(exc))
            elif isinstance(exc, WebSocketDisconnect | RuntimeError) or exc is None:
                pass
            else:
                log.error("websocket %s failed: %r", name, exc)
                await _close(ws, 1011, "internal error")
    finally:
        for task in (writer, reader, expiry):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        svc.metrics.ws_open.labels(name).dec()


def register(app: FastAPI) -> None:
    @app.websocket("/v1/orders/{order_id}/track")
    async def track(
        ws: WebSocket, order_id: str, token: Token = None, last_event_id: LastId = None
    ) -> None:
        """Customer (or share link, or ops): snapshot, then position/eta/status/delay."""
        opened = await _open(ws, token)
        if opened is None:
            return
        svc, p = opened
        try:
            order = await svc.store.get_order(order_id)
        except TrackingError as e:
            await _close_for(ws, e, "unknown order")
            return
        if not can_see(p, order) or p.role == "courier":
            await _close(ws, CLOSE_FORBIDDEN, "not your order")
            return
        await _run(
            ws, svc, p, OrderChannel(svc.store, order_id, svc.live.clock), last_event_id, "order"
        )

    @app.websocket("/v1/couriers/{courier_id}/route")
    async def route(
        ws: WebSocket, courier_id: str, token: Token = None, last_event_id: LastId = None
    ) -> None:
        """The courier's route as it changes; acknowledge with {"type":"ack","id":...}."""
        opened = await _open(ws, token)
        if opened is None:
            return
        svc, p = opened
        if not (p.role == "ops" or (p.role == "courier" and p.subject == courier_id)):
            await _close(ws, CLOSE_FORBIDDEN, "not you")
            return
        try:
            await svc.store.get_courier(courier_id)
        except TrackingError as e:
            await _close_for(ws, e, "unknown courier: start a shift first")
            return
        channel = CourierChannel(svc.store, courier_id, svc.live.acknowledge_route, svc.live.clock)
        await _run(ws, svc, p, channel, last_event_id, "courier")

    @app.websocket("/v1/ops/live")
    async def ops(
        ws: WebSocket,
        token: Token = None,
        last_event_id: LastId = None,
        cells: Annotated[str | None, Query(description="Comma-separated H3 cells")] = None,
        zone: Annotated[str | None, Query(description="A service zone id")] = None,
    ) -> None:
        """Ops: fleet and orders; positions everywhere, or only in some cells or a zone."""
        opened = await _open(ws, token)
        if opened is None:
            return
        svc, p = opened
        if p.role != "ops":
            await _close(ws, CLOSE_FORBIDDEN, "ops only")
            return
        try:
            topics = await _area_topics(svc, cells, zone)
        except ValueError as e:
            await _close(ws, CLOSE_BAD_REQUEST, str(e))
            return
        await _run(ws, svc, p, OpsChannel(svc.store, topics, svc.live.clock), last_event_id, "ops")


async def _area_topics(svc: Services, cells: str | None, zone: str | None) -> list[str] | None:
    """Position topics (res-7 cells) covering the asked-for area; None for everywhere."""
    if not cells and not zone:
        return None
    found: set[str] = set()
    for c in (cells or "").split(","):
        c = c.strip()
        if not c:
            continue
        if not h3.is_valid_cell(c):
            raise ValueError(f"not an H3 cell: {c[:20]!r}")
        res = h3.get_resolution(c)
        if res > POSITION_CELL_RES:
            found.add(h3.cell_to_parent(c, POSITION_CELL_RES))
        elif POSITION_CELL_RES - res > 3:
            raise ValueError("cells coarser than resolution 4 cover too much; use fewer")
        else:
            found.update(h3.cell_to_children(c, POSITION_CELL_RES))
        if len(found) > MAX_CELL_TOPICS:
            raise ValueError(f"the cells cover more than {MAX_CELL_TOPICS} cells of resolution 7")
    if zone:
        zones = await svc.live.zones(max_age_s=0)
        if zones is None or zone not in zones:
            raise ValueError(f"unknown zone {zone[:40]!r}")
        geom = zones[zone].geometry
        # Listing a country's cells blocks the event loop for seconds (and its memory
        # grows with the area): refuse from the area first, with room for the estimate.
        km2 = zones[zone].area_m2 / 1e6
        if km2 > 2 * MAX_CELL_TOPICS * POSITION_CELL_KM2:
            raise ValueError(
                f"zone {zone[:40]!r} covers about {km2:,.0f} km²; live views take at most "
                f"{MAX_CELL_TOPICS} cells of ~{POSITION_CELL_KM2:.1f} km²: use cells= or a "
                "smaller zone"
            )
        shape = h3.geo_to_h3shape(geom.__geo_interface__)
        inner = h3.h3shape_to_cells(shape, POSITION_CELL_RES)
        found.update(n for c in inner for n in h3.grid_disk(c, 1))
        if not inner:
            lat, lon = geom.representative_point().y, geom.representative_point().x
            found.update(h3.grid_disk(h3.latlng_to_cell(lat, lon, POSITION_CELL_RES), 1))
    if len(found) > MAX_CELL_TOPICS:
        raise ValueError(f"the area needs {len(found)} cells; at most {MAX_CELL_TOPICS}")
    return [cell_topic(c) for c in sorted(found)]

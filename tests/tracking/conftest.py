"""Fixtures for the tracking contract tests: one factory per backend.

Tests are plain sync functions that drive their coroutine with :func:`run` (no
pytest-asyncio). A redis.asyncio client binds to the event loop it first connects on, so
the factories are called *inside* the coroutine, never at fixture time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import pytest
from redis.asyncio import Redis

from dispatch.model import Courier, Order, Place, Plan, Route, Stop
from geo.cells import latlng_to_cell
from geo.estimate import Estimate
from tests.conftest import RedisServer
from tracking import (
    Event,
    MemoryEventLog,
    MemoryStore,
    RedisEventLog,
    RedisStore,
    StateStore,
    order_topic,
)

T = TypeVar("T")
TIMEOUT_S = 30.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one test coroutine on a fresh loop, failing instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S))


class MakeStore(Protocol):
    def __call__(
        self,
        *,
        maxlen: int = ...,
        topic_maxlen: int = ...,
        idempotency_ttl_s: float | None = ...,
    ) -> StateStore: ...


def make_memory(
    *, maxlen: int = 10_000, topic_maxlen: int = 1_000, idempotency_ttl_s: float | None = None
) -> MemoryStore:
    return MemoryStore(log=MemoryEventLog(maxlen=maxlen, topic_maxlen=topic_maxlen))


def redis_factory(server: RedisServer) -> Callable[..., RedisStore]:
    def make(
        *,
        maxlen: int = 10_000,
        topic_maxlen: int = 1_000,
        idempotency_ttl_s: float | None = 3600.0,
    ) -> RedisStore:
        client = Redis.from_url(server.url)
        log = RedisEventLog(client, maxlen=maxlen, topic_maxlen=topic_maxlen, block_ms=200)
        return RedisStore(client, log=log, idempotency_ttl_s=idempotency_ttl_s, owns_client=True)

    return make


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> MakeStore:
    """Store factory; the same contract test runs once per backend."""
    if request.param == "memory":
        return make_memory
    server: RedisServer = request.getfixturevalue("redis_server")
    return redis_factory(server)


# -- tiny domain data --------------------------------------------------------------------

BERLIN = (52.5200, 13.4050)


def order(i: int | str, **kw: Any) -> Order:
    fields: dict[str, Any] = {
        "id": f"o{i}",
        "pickup": Place((52.5200, 13.4050), "r1"),
        "dropoff": Place((52.5300, 13.4150)),
        "placed_at": 100.0,
        "ready_at": 400.0,
        "promised_by": 2_000.0,
    }
    fields.update(kw)
    return Order(**fields)


def courier(i: int | str, **kw: Any) -> Courier:
    fields: dict[str, Any] = {
        "id": f"c{i}",
        "position": Place(BERLIN),
        "position_t": 50.0,
        "shift_start": 0.0,
        "shift_end": 28_800.0,
    }
    fields.update(kw)
    return Courier(**fields)


def estimate(lat: float, lon: float, t: float = 100.0, device: str = "d1") -> Estimate:
    return Estimate(
        device=device,
        t=t,
        lat=lat,
        lon=lon,
        radius68=6.0,
        radius95=9.7,
        velocity=(1.25, -0.5),
        sources=("gps", "wifi"),
        indoor=False,
        h3=latlng_to_cell(lat, lon, 9),
    )


def plan(t: float = 500.0, couriers: tuple[str, ...] = ("c1", "c2")) -> Plan:
    routes = {}
    for k, cid in enumerate(couriers):
        o = f"o{k}"
        routes[cid] = Route(
            cid,
            (
                Stop(o, "pickup", Place((52.52, 13.405), "r1"), 400.0, 410.0, 470.0),
                Stop(o, "dropoff", Place((52.53, 13.415)), 900.0, 900.0, 960.0),
            ),
        )
    return Plan(created_at=t, routes=routes, unassigned={"o9": "no_capacity"})


def placed(o: Order, t: float = 100.0) -> Event:
    return Event("order_placed", (order_topic(o.id), "ops"), {"order": o.id}, t)


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """A point ``north_m``/``east_m`` metres from ``lat``/``lon`` (small offsets)."""
    dlat = north_m / 111_195.0
    dlon = east_m / (111_195.0 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon

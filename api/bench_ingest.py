"""CPU per observation post inside one service process: the ingest hot path alone.

The live benchmark (``benchmarks.tracking_bench``) measures the whole service with
sockets, HTTP parsing, websockets and a load generator on the same cores, which makes
its figures move with whatever else runs. This one drives the ASGI app directly (no
sockets, no HTTP parsing, dispatcher off) and reports the process's CPU time per post:
routing, authentication, validation, fusion, the store write and its event, the
response. It moves only with the code, so it tells whether a change to the hot path
helped. Redis runs as a private ``redis-server`` (AOF, ``appendfsync always``) whose CPU
is not counted.

``o2o bench ingest --json [--store memory|redis|both]`` (also
``python -m api.bench_ingest --json``). It lives in ``api`` because it drives the app,
and nothing may import ``api``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from api.app import create_app
from api.auth import create_token
from api.settings import Settings
from benchmarks.tracking_bench import redis_server

SECRET = "ingest-bench-secret-0123456789abcdef"


async def _call(app: Any, path: str, token: str, body: Any) -> int:
    """One POST through the ASGI app; its status."""
    raw = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the app never asks again
        raise AssertionError("unreachable")

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def _measure(store: str, couriers: int, rounds: int, warmup: int) -> dict[str, Any]:
    app = create_app(Settings(secret=SECRET, store=store, dispatch=False))
    async with app.router.lifespan_context(app):
        tokens = {f"c{i}": create_token(SECRET, "courier", f"c{i}", 3600) for i in range(couriers)}
        for cid, tok in tokens.items():
            shift = {"action": "start", "lat": 52.52, "lon": 13.40}
            status = await _call(app, f"/v1/couriers/{cid}/shift", tok, shift)
            if status != 200:
                raise RuntimeError(f"shift start answered {status}")
        t0 = time.time() - rounds - warmup - 5

        async def post(cid: str, tok: str, k: int) -> int:
            fix = {
                "t": t0 + k,
                "kind": "gps",
                "lat": 52.52 + k * 1e-5,
                "lon": 13.40,
                "accuracy": 8.0,
            }
            return await _call(app, f"/v1/couriers/{cid}/observations", tok, [fix])

        async def one_round(k: int) -> None:
            answers = await asyncio.gather(*(post(c, t, k) for c, t in tokens.items()))
            bad = [a for a in answers if a != 200]
            if bad:
                raise RuntimeError(f"observation posts answered {sorted(set(bad))}")

        for k in range(warmup):  # filters, caches and connections warm
            await one_round(k)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for k in range(warmup, warmup + rounds):
            await one_round(k)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    posts = couriers * rounds
    return {
        "store": store.split(":", 1)[0],
        "posts": posts,
        "cpu_us_per_post": round(cpu / posts * 1e6, 1),
        "wall_us_per_post": round(wall / posts * 1e6, 1),
    }


def run(
    stores: list[str], couriers: int = 300, rounds: int = 20, warmup: int = 3
) -> dict[str, Any]:
    """One entry per store: ``{store, posts, cpu_us_per_post, wall_us_per_post}``."""
    out = []
    for kind in stores:
        if kind == "memory":
            out.append(asyncio.run(_measure("memory", couriers, rounds, warmup)))
        elif kind == "redis":
            with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as (url, _pgid):
                out.append(asyncio.run(_measure(url, couriers, rounds, warmup)))
        else:
            raise ValueError(f"store must be memory or redis, got {kind!r}")
    return {"couriers": couriers, "rounds": rounds, "runs": out}


def main(
    json_out: Annotated[bool, typer.Option("--json", help="print the JSON object only")] = False,
    store: Annotated[str, typer.Option(help="memory, redis or both")] = "both",
    couriers: Annotated[int, typer.Option(min=1, help="couriers posting each round")] = 300,
    rounds: Annotated[int, typer.Option(min=1, help="measured rounds (one post each)")] = 20,
) -> None:
    stores = ["memory", "redis"] if store == "both" else [store]
    result = run(stores, couriers=couriers, rounds=rounds)
    if json_out:
        typer.echo(json.dumps(result))
        return
    for r in result["runs"]:
        typer.echo(f"{r['store']}: {r['cpu_us_per_post']} µs CPU per post ({r['posts']} posts)")


def register(bench_app: typer.Typer) -> None:
    """Add ``o2o bench ingest`` to the ``bench`` group."""
    bench_app.command(
        "ingest", help="CPU per observation post inside one service process; prints JSON."
    )(main)


if __name__ == "__main__":
    typer.run(main)

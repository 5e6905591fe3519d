"""``o2o bench tracking``: the live service under couriers and customers, over real sockets.

Each configuration (``memory:1``, ``redis:2``: store and worker processes) starts the
service as operators do (``python -m api.cli serve``; for Redis a private
``redis-server`` with AOF, ``appendfsync always``, in a temporary folder), then runs a
load generator split over a few processes (``--clients``), each an asyncio program:

* couriers: a shift each (``POST /v1/couriers/{id}/shift``), then one GPS observation
  per second (``POST /v1/couriers/{id}/observations``), each courier on its own HTTP/1.1
  keep-alive connection, the next post one second after the previous one was sent (a
  courier whose post is still in flight sends the next as soon as it returns: a closed
  loop, so ``obs_per_s`` drops below the target when the service cannot keep up). The
  observation's ``t`` is the wall time at which it is sent.
* customers ("watchers"): an order each (``POST /v1/orders``, pickup next to a courier),
  then the order's websocket (``/v1/orders/{id}/track``, the ``websockets`` client,
  offering permessage-deflate as browsers do; the service accepts it only with
  ``compression``, as ``o2o serve --ws-compression``). A ``position`` frame of the
  order's courier gives one latency sample: its receive wall time minus its ``t`` (the
  observation's send time), i.e. courier post -> fusion -> store -> event log -> hub ->
  coalescing -> customer frame. Only the courier the customer's order is assigned to counts; a
  position of any other courier is counted as ``foreign_positions`` (it must be 0).
* status: during the measured window a share of the orders (``--deliveries``) is picked
  up and, a second later, delivered by its courier (``POST /v1/orders/{id}/pickup`` and
  ``/dropoff`` with the courier's token and ``{"override_reason": "bench"}``).

After the setup (shifts, orders, websockets) the bench waits until the dispatcher has
assigned the orders (``GET /v1/orders`` as ops), then measures for ``--duration``
seconds, stops the couriers and waits for frames in flight. ``status_sent`` is then
read back from the service's event log: every watcher reconnects with
``?last_event_id=`` set to the id of its first snapshot, and the service replays every
status event of that order since (:func:`tracking.channels.read_backlog`, the durable
log, not the live fan-out). ``status_received`` counts the distinct status frames the
live connections got up to the same point; they must be equal (``status_lost`` counts
the difference, ``status_mismatches`` shows up to 5 orders where they differ).

``errors`` counts everything that went wrong on the wire: non-2xx answers to
observations, orders and shifts, HTTP and websocket connection failures, websocket
closes the client did not ask for (e.g. 4408 "fell behind"), error frames, 5xx answers
to confirmations. Confirmations refused with 403/409 because the dispatcher moved the
order in between are reported as ``confirm_refused``, not as errors.

The load generator runs on the same machine as the service and competes for the same
cores (its CPU seconds are reported per run under ``cpu_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import jwt
import orjson

from tracking.runtime import tune_gc

__all__ = [
    "DEFAULT_CONFIGS",
    "Load",
    "RunConfig",
    "machine_info",
    "parse_configs",
    "run",
    "run_one",
]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = "memory:1,redis:2"
CENTER = (52.52, 13.405)
M_PER_DEG = 111_320.0
CITY_RADIUS_M = 5_000.0
GRACE_S = 2.0
"""Wait after the window for frames in flight (positions are coalesced up to 1 s)."""
MISMATCH_SAMPLES = 5
"""Orders whose live and logged status events differ, shown in the result (diagnosis)."""
VERIFY_FIRST_FRAME_S = 30.0
"""How long a replay may take to start on a service still draining its backlog."""
WARMUP_S = 1.0
"""Least time between the couriers' first posts and the window (duration / 12, <= 5 s)."""
CONFIRM_BODY = b'{"override_reason":"bench"}'


def create_token(secret: str, role: str, subject: str, ttl_s: float) -> str:
    """A bearer token in the service's documented format (docs/api.md: HS256 JWT with
    ``sub``, ``role``, ``iat``, ``exp``), minted as any outside client holding the key
    would (benchmarks do not import ``api``)."""
    now = int(time.time())
    claims = {"sub": subject, "role": role, "iat": now, "exp": now + int(ttl_s)}
    return jwt.encode(claims, secret, algorithm="HS256")


# -- configurations ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One service configuration: ``store`` is ``memory`` or ``redis``."""

    store: str
    workers: int

    @property
    def label(self) -> str:
        return f"{self.store}:{self.workers}"


def parse_configs(text: str) -> list[RunConfig]:
    """``"memory:1,redis:2"`` -> configurations; ValueError for anything else."""
    out: list[RunConfig] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        store, _, workers = part.partition(":")
        store = store.strip().lower()
        if store not in ("memory", "redis"):
            raise ValueError(f"store must be memory or redis, got {store!r} in {part!r}")
        try:
            n = int(workers) if workers.strip() else 1
        except ValueError:
            raise ValueError(f"workers must be an integer in {part!r}") from None
        if n < 1:
            raise ValueError(f"workers must be >= 1 in {part!r}")
        if store == "memory" and n != 1:
            raise ValueError("the memory store runs in one process: use memory:1")
        out.append(RunConfig(store, n))
    if not out:
        raise ValueError("no configuration given (e.g. memory:1,redis:2)")
    return out


# -- the machine -------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib: float | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def calibration_fixes(n: int) -> list[dict[str, Any]]:
    """A courier walking north at about 1 m/s with a little sideways jitter, 1 Hz."""
    return [
        {
            "device": "c",
            "t": float(i),
            "kind": "gps",
            "accuracy": 8.0,
            "lat": 52.52 + 1e-5 * i,
            "lon": 13.40 + 5e-6 * (i % 7),
        }
        for i in range(n)
    ]


def calibrate(passes: int = 20, fixes: int = 500, gap_s: float = 0.05) -> float:
    """Microseconds per GPS fix fused (``geo``) and its estimate JSON-encoded and read back,
    the median of ``passes`` passes spread over about 1.5 s: how fast one core of this
    machine runs the service's kind of Python around now. The machines vary by 2x from day
    to day (docs/benchmarks.md); this is a rough indicator of that, not a normaliser.

    A median, not a best: on the shared machines one pass can be twice as fast as the
    next a second later, and the best of a few passes was as noisy as the day itself.
    """
    from geo.estimate import Estimate  # only here: the load generator never needs them
    from geo.fusion import FusionEngine

    trace = calibration_fixes(fixes)
    times: list[float] = []
    for i in range(passes):
        if i:
            time.sleep(gap_s)
        engine = FusionEngine()
        t0 = time.perf_counter()
        for fix in trace:
            est = engine.process_dict(fix)
            if isinstance(est, Estimate):
                orjson.loads(orjson.dumps(est.to_dict()))
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) / fixes * 1e6, 1)


def _load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _group_procs(pgids: Iterable[int]) -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds (user + system)) of the live processes in these
    process groups."""
    wanted = set(pgids)
    out: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields_ = stat[stat.rfind(")") + 2 :].split()
        # after "pid (comm) ": state ppid pgrp session ... utime(14) stime(15), 1-based
        if int(fields_[2]) in wanted:
            out[int(entry.name)] = (int(fields_[1]), (int(fields_[11]) + int(fields_[12])) / _TICK)
    return out


def _group_cpu_s(pgids: Iterable[int]) -> float:
    """CPU seconds (user + system) of the live processes in these process groups."""
    return sum(cpu for _, cpu in _group_procs(pgids).values())


def _dispatcher_cpu_s(service_pid: int, workers: int) -> float:
    """CPU seconds of the dispatcher process the leading worker runs, a part of the
    service's CPU that varies from run to run with how many re-plans find work to do.

    With several workers it is a grandchild of ``o2o serve`` (serve -> workers ->
    dispatcher); with one, uvicorn runs the app in the serve process itself and the
    dispatcher is its child. multiprocessing's resource tracker, an idle sibling of the
    dispatcher, is counted with it."""
    procs = _group_procs([service_pid])
    if workers <= 1:
        return sum(cpu for ppid, cpu in procs.values() if ppid == service_pid)
    return sum(cpu for ppid, cpu in procs.values() if procs.get(ppid, (0, 0.0))[0] == service_pid)


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


# -- processes: redis-server and the service ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def redis_server(folder: Path, appendfsync: str = "always") -> Iterator[tuple[str, int]]:
    """A private redis-server with AOF in ``folder``: yields (url, process group)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (needed for the Redis store)")
    port = _free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(folder / "redis.log"),
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        _stop(proc)


def _memory_limit_bytes() -> int:
    """Address-space cap per service process: 60 % of the machine's memory (0: none).

    A service that outgrows it fails on its own (MemoryError, the run is reported as
    ``failed``) instead of waking the kernel's out-of-memory killer on a shared machine.
    """
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(int(line.split()[1]) * 1024 * 0.6)
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class Service:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@contextlib.contextmanager
def service(
    folder: Path,
    store_url: str,
    workers: int,
    secret: str,
    position_interval_s: float | None = None,
    ready_timeout_s: float = 60.0,
    ws_compression: bool = False,
) -> Iterator[Service]:
    """``python -m api.cli serve`` as its own process group, ready when this yields."""
    import httpx

    port = _free_port()
    log = folder / f"serve-{port}.log"
    env = {**os.environ, "O2O_SECRET": secret}
    if position_interval_s is not None:
        env["O2O_POSITION_INTERVAL_S"] = repr(float(position_interval_s))
    cmd = [sys.executable, "-m", "api.cli", "serve", "--store", store_url]
    cmd += ["--workers", str(workers), "--port", str(port), "--log-level", "warning"]
    if ws_compression:
        cmd.append("--ws-compression")
    limit = _memory_limit_bytes()

    def cap_memory() -> None:  # in the child, before exec: inherited by the workers
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=cap_memory if limit > 0 else None,
        )
    svc = Service(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + ready_timeout_s
        ok = 0
        while ok < 5 * workers:  # several answers in a row: every worker is up
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited ({proc.returncode}):\n{svc.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service was not ready in {ready_timeout_s} s")
            try:
                r = httpx.get(f"{svc.url}/readyz", timeout=2, trust_env=False)
                ok = ok + 1 if r.status_code == 200 else 0
            except httpx.HTTPError:
                ok = 0
            time.sleep(0.1 if ok == 0 else 0.02)
        yield svc
    finally:
        _stop(proc)


# -- the synthetic city ------------------------------------------------------------------


def _offset(lat: float, lon: float, dist_m: float, bearing: float) -> tuple[float, float]:
    dlat = dist_m * math.cos(bearing) / M_PER_DEG
    dlon = dist_m * math.sin(bearing) / (M_PER_DEG * math.cos(math.radians(lat)))
    return round(lat + dlat, 7), round(lon + dlon, 7)


def make_city(couriers: int, watchers: int, seed: int) -> tuple[list[Any], list[Any]]:
    """Courier homes spread over a disk; order j is picked up near courier j % couriers.

    Returns ``[[courier id, lat, lon], ...]`` and
    ``[[watcher index, pickup lat, pickup lon, dropoff lat, dropoff lon], ...]``.
    """
    rng = random.Random(seed)
    homes: list[Any] = []
    for i in range(couriers):
        r = CITY_RADIUS_M * math.sqrt(rng.random())
        lat, lon = _offset(*CENTER, r, rng.uniform(0, 2 * math.pi))
        homes.append([f"c{i:05d}", lat, lon])
    orders: list[Any] = []
    for j in range(watchers):
        _, hlat, hlon = homes[j % couriers]
        plat, plon = _offset(hlat, hlon, rng.uniform(20, 250), rng.uniform(0, 2 * math.pi))
        dlat, dlon = _offset(plat, plon, rng.uniform(800, 2000), rng.uniform(0, 2 * math.pi))
        orders.append([j, plat, plon, dlat, dlon])
    return homes, orders


# -- statistics --------------------------------------------------------------------------


def _pct(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return round(float(sorted_values[k]), 1)


# -- the load generator (one process) ----------------------------------------------------


class HttpError(Exception):
    pass


class HttpConn:
    """One HTTP/1.1 keep-alive connection with just enough of the protocol for the
    service's JSON answers: a few microseconds per request, where an HTTP library would
    cost the load generator more CPU than the service it measures."""

    IDLE_S = 4.0
    """uvicorn closes idle keep-alive connections after 5 s; reconnect before that."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout_s
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, token: str, body: bytes | None = None, extra: str = ""
    ) -> tuple[int, bytes]:
        if self.writer is not None and time.monotonic() - self.used > self.IDLE_S:
            self.close()
        if self.writer is None:
            try:
                await self._connect()
            except (OSError, TimeoutError) as e:
                raise HttpError(f"connect: {e!r}") from e
        assert self.reader is not None and self.writer is not None
        payload = body or b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n{extra}\r\n"
        )
        try:
            self.writer.write(head.encode() + payload)
            async with asyncio.timeout(self.timeout_s):  # no task per request, unlike wait_for
                status, data, keep = await self._response()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            self.close()
            raise HttpError(f"{type(e).__name__}: {e}") from e
        self.used = time.monotonic()
        if not keep:
            self.close()
        return status, data

    async def _response(self) -> tuple[int, bytes, bool]:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = -1
        chunked = False
        keep = True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                keep = False
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            return status, b"".join(p[:-2] for p in parts), keep
        if length < 0:
            return status, await self.reader.read(), False
        return status, await self.reader.readexactly(length), keep


class HttpPool:
    """A few connections shared by occasional requests (confirmations, setup)."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self.idle: list[HttpConn] = []
        self.sem = asyncio.Semaphore(size)

    async def request(
        self, method: str, path: str, token: str, body: bytes | None = None, extra: str = ""
    ) -> tuple[int, bytes]:
        async with self.sem:
            conn = self.idle.pop() if self.idle else HttpConn(self.host, self.port)
            try:
                out = await conn.request(method, path, token, body, extra)
            except HttpError:
                conn.close()
                raise
            self.idle.append(conn)
            return out

    def close(self) -> None:
        for c in self.idle:
            c.close()
        self.idle.clear()


def _key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Counters:
    errors: Counter[str] = field(default_factory=Counter)
    obs_sent: int = 0
    obs_accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    post_ms: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    latency_at_s: list[float] = field(default_factory=list)
    """When each latency sample was taken, seconds into the window."""
    to_log_ms: list[float | None] = field(default_factory=list)
    """Per latency sample, the part before the event log: its id's time minus ``t``
    (None for a frame without an id)."""
    positions: int = 0
    foreign_positions: int = 0
    confirm: Counter[str] = field(default_factory=Counter)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1


@dataclass
class Courier:
    id: str
    lat: float
    lon: float
    token: str
    phase: float
    radius_m: float
    omega: float
    rng: random.Random

    def observation(self, t: float) -> bytes:
        """A GPS fix on a slow circle around home (4 m/s) with 3 m of noise."""
        a = self.phase + self.omega * t
        north = self.radius_m * math.cos(a) + self.rng.gauss(0, 3)
        east = self.radius_m * math.sin(a) + self.rng.gauss(0, 3)
        lat = self.lat + north / M_PER_DEG
        lon = self.lon + east / (M_PER_DEG * math.cos(math.radians(self.lat)))
        return (
            f'[{{"t":{t!r},"kind":"gps","lat":{lat:.7f},"lon":{lon:.7f},"accuracy":5}}]'
        ).encode()


@dataclass
class Watcher:
    index: int
    customer: str
    token: str
    pickup: tuple[float, float]
    dropoff: tuple[float, float]
    order_id: str | None = None
    courier_id: str | None = None
    open: bool = True
    snapshot_id: str | None = None
    last_id: str | None = None
    status_ids: dict[str, str] = field(default_factory=dict)
    """Status frames received live: event id -> status."""
    ws: Any = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)


class LoadClient:
    """One load-generator process: its share of couriers and watchers (see module doc)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        url = str(spec["url"])
        hostport = url.split("://", 1)[1]
        host, _, port = hostport.partition(":")
        self.host, self.port = host, int(port)
        self.ws_base = url.replace("http://", "ws://")
        self.secret = str(spec["secret"])
        # Offered on every socket, as browsers do; the service decides (--ws-compression).
        self.compression = "deflate"
        rng = random.Random(int(spec["seed"]))
        self.rng = rng
        self.couriers = [
            Courier(
                cid,
                lat,
                lon,
                create_token(self.secret, "courier", cid, 6 * 3600),
                rng.uniform(0, 2 * math.pi),
                r := rng.uniform(100, 400),
                4.0 / r * rng.choice((-1, 1)),
                random.Random(rng.random()),
            )
            for cid, lat, lon in spec["couriers"]
        ]
        self.courier_tokens = {c.id: c.token for c in self.couriers}
        self.watchers = [
            Watcher(
                j,
                f"cust{j:05d}",
                create_token(self.secret, "customer", f"cust{j:05d}", 6 * 3600),
                (plat, plon),
                (dlat, dlon),
            )
            for j, plat, plon, dlat, dlon in spec["watchers"]
        ]
        self.k = Counters()
        self.t0 = math.inf
        self.t1 = math.inf
        self.closing = False
        self.stop_couriers = False
        self.service_down = False
        self.pool = HttpPool(self.host, self.port, int(spec.get("pool", 32)))
        self.connect_gate = asyncio.Semaphore(int(spec.get("setup_concurrency", 32)))
        self._courier_token_cache: dict[str, str] = {}

    # -- helpers ----------------------------------------------------------------------
    def courier_token(self, cid: str) -> str:
        tok = self.courier_tokens.get(cid) or self._courier_token_cache.get(cid)
        if tok is None:
            tok = create_token(self.secret, "courier", cid, 6 * 3600)
            self._courier_token_cache[cid] = tok
        return tok

    @staticmethod
    async def limited(jobs: Iterable[Awaitable[object]], limit: int) -> None:
        sem = asyncio.Semaphore(limit)

        async def one(job: Awaitable[object]) -> None:
            async with sem:
                await job

        await asyncio.gather(*(one(j) for j in jobs))

    # -- setup ------------------------------------------------------------------------
    async def start_shift(self, c: Courier) -> None:
        body = json.dumps({"action": "start", "lat": c.lat, "lon": c.lon}).encode()
        for attempt in range(3):
            try:
                st, _ = await self.pool.request("POST", f"/v1/couriers/{c.id}/shift", c.token, body)
            except HttpError:
                self.k.error("shift_connection")
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if st != 200:
                self.k.error(f"shift_http_{st}")
            return

    async def place_order(self, w: Watcher) -> None:
        body = json.dumps(
            {
                "pickup": {"lat": w.pickup[0], "lon": w.pickup[1]},
                "dropoff": {"lat": w.dropoff[0], "lon": w.dropoff[1]},
            }
        ).encode()
        key = f"Idempotency-Key: bench-{w.index}\r\n"
        for attempt in range(3):
            try:
                st, data = await self.pool.request("POST", "/v1/orders", w.token, body, key)
            except HttpError:
                self.k.error("order_connection")
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if st in (200, 201):
                doc = json.loads(data)
                w.order_id = str(doc["id"])
                w.courier_id = doc.get("courier_id")
            else:
                self.k.error(f"order_http_{st}")
            return

    # -- couriers ---------------------------------------------------------------------
    async def courier_loop(self, c: Courier, start: float) -> None:
        conn = HttpConn(self.host, self.port)
        path = f"/v1/couriers/{c.id}/observations"
        k = self.k
        next_t = start + self.rng.random()
        try:
            while not self.stop_couriers:
                delay = next_t - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                t = time.time()
                if self.stop_couriers or t >= self.t1:
                    return
                body = c.observation(t)
                sent = time.perf_counter()
                try:
                    st, data = await conn.request("POST", path, c.token, body)
                except HttpError:
                    k.error("obs_connection")
                    await asyncio.sleep(0.5)
                    next_t = time.time()
                    continue
                counted = self.t0 <= t < self.t1
                if st == 200:
                    doc = orjson.loads(data)
                    accepted = int(doc.get("accepted", 0))
                    if counted:
                        k.obs_sent += 1
                        k.obs_accepted += accepted
                        for r in doc.get("rejected") or ():
                            k.rejected[str(r.get("reason"))] += 1
                        k.post_ms.append(round((time.perf_counter() - sent) * 1000, 2))
                else:
                    k.error(f"obs_http_{st}")
                    if counted:
                        k.obs_sent += 1
                next_t = max(next_t + 1.0, time.time())
        finally:
            conn.close()

    # -- watchers ---------------------------------------------------------------------
    def on_frame(self, w: Watcher, text: str | bytes) -> None:
        now = time.time()
        f = orjson.loads(text)
        kind = f.get("type")
        fid = f.get("id")
        if isinstance(fid, str) and (w.last_id is None or _key(fid) > _key(w.last_id)):
            w.last_id = fid
        if kind == "position":
            self.k.positions += 1
            if f.get("courier_id") != w.courier_id:
                self.k.foreign_positions += 1
            elif self.t0 <= now <= self.t1:
                self.k.latencies_ms.append(round((now - float(f["t"])) * 1000, 2))
                self.k.latency_at_s.append(round(now - self.t0, 2))
                self.k.to_log_ms.append(
                    round(_key(fid)[0] - float(f["t"]) * 1000, 2) if isinstance(fid, str) else None
                )
        elif kind == "status":
            if isinstance(fid, str):
                w.status_ids[fid] = str(f.get("status"))
            order = f.get("order") or {}
            w.open = f.get("status") in ("placed", "assigned", "picked_up")
            w.courier_id = order.get("courier_id") if w.open else None
        elif kind == "snapshot":
            order = f.get("order") or {}
            if w.snapshot_id is None and isinstance(fid, str):
                w.snapshot_id = fid
            w.open = order.get("status") in ("placed", "assigned", "picked_up")
            w.courier_id = order.get("courier_id") if w.open else None
        elif kind == "error":
            self.k.error(f"ws_error_frame_{f.get('reason', '?')}")

    async def watch(self, w: Watcher) -> None:
        from websockets.exceptions import InvalidHandshake

        from benchmarks.ws_watch import watch_socket

        resume: str | None = None
        failures = 0
        while not self.closing:
            opened = time.monotonic()
            url = f"{self.ws_base}/v1/orders/{w.order_id}/track?token={w.token}"
            if resume is not None:
                url += f"&last_event_id={resume}"
            code: object = "eof"
            await self.connect_gate.acquire()  # ramp up: a few openings at a time
            held = True

            def on_text(text: str) -> None:
                nonlocal held
                if held:
                    held = False
                    self.connect_gate.release()
                self.on_frame(w, text)
                w.connected.set()

            try:
                ws = await watch_socket(
                    url, on_text, compression=self.compression == "deflate", open_timeout_s=60
                )
                w.ws = ws
                rcvd = await ws.closed
                code = "abnormal" if rcvd is None else rcvd
            except (OSError, TimeoutError, InvalidHandshake) as e:
                code = type(e).__name__
            finally:
                w.ws = None
                if held:
                    held = False
                    self.connect_gate.release()
            if self.closing:
                return
            self.k.error(f"ws_closed_{code}")
            w.connected.set()  # a connection was tried; setup must not wait forever
            resume = w.last_id
            # Reconnect as a browser would: backing off, with jitter, up to 8 s.
            failures = 1 if time.monotonic() - opened > 30 else failures + 1
            await asyncio.sleep(min(8.0, 0.25 * 2**failures) * self.rng.uniform(0.5, 1.0))

    async def verify(self, w: Watcher) -> tuple[set[str], str | None, bool]:
        """Status event ids in the log since the first snapshot (replayed by the service),
        the id the replay ends at (None: the order is over, nothing can follow), and
        whether the replay could be read (a failed replay is an error, and retried)."""
        ids: set[str] = set()
        cutoff: str | None = None
        ok = False
        for attempt in range(4):
            if self.service_down:
                break
            ids, cutoff, ok = await self._verify_once(w)
            if ok:
                break
            await asyncio.sleep(0.5 * 2**attempt)
        return ids, cutoff, ok

    async def _verify_once(self, w: Watcher) -> tuple[set[str], str | None, bool]:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        ids: set[str] = set()
        url = (
            f"{self.ws_base}/v1/orders/{w.order_id}/track?token={w.token}"
            f"&last_event_id={w.snapshot_id}"
        )
        try:
            async with connect(
                url, compression=self.compression, proxy=None, ping_interval=None, open_timeout=60
            ) as ws:
                # The opening (backlog, then the latest position) is sent in one go: a
                # first frame that does not come means a service still busy, not an
                # empty log (counting it as one would make every live status frame look
                # unexpected). A gap after the first frames ends the replay at the last
                # id it reached (any frame's: route, eta and delay frames come in id
                # order with the statuses), not at the last status, which may be none.
                first = True
                reached = w.snapshot_id
                while True:
                    try:
                        text = await asyncio.wait_for(
                            ws.recv(), VERIFY_FIRST_FRAME_S if first else 1.0
                        )
                    except TimeoutError:
                        if first:
                            self.k.error("verify_timeout")
                            return ids, None, False
                        return ids, reached, True
                    first = False
                    f = json.loads(text)
                    kind = f.get("type")
                    fid = f.get("id")
                    if isinstance(fid, str) and (reached is None or _key(fid) > _key(reached)):
                        reached = fid
                    if kind == "status" and isinstance(fid, str):
                        ids.add(fid)
                        if f.get("status") in ("delivered", "cancelled"):
                            return ids, None, True
                    elif kind == "position" and isinstance(fid, str):
                        return ids, fid, True  # the last frame of a resume's opening
                    elif kind in ("snapshot", "error"):
                        self.k.error(f"verify_{kind}")
                        return ids, reached, False
        except ConnectionRefusedError:
            self.service_down = True  # nothing listens any more: no point retrying
            self.k.error("verify_refused")
            return ids, None, False
        except (ConnectionClosed, OSError, TimeoutError, InvalidHandshake):
            self.k.error("verify_connection")
            return ids, None, False

    # -- confirmations ----------------------------------------------------------------
    async def deliver(self, w: Watcher, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        for kind in ("pickup", "dropoff"):
            cid = w.courier_id
            if cid is None or not w.open:
                self.k.confirm["skipped_no_courier"] += 1
                return
            try:
                st, _ = await self.pool.request(
                    "POST", f"/v1/orders/{w.order_id}/{kind}", self.courier_token(cid), CONFIRM_BODY
                )
            except HttpError:
                self.k.error("confirm_connection")
                return
            if st == 200:
                self.k.confirm[f"{kind}_ok"] += 1
            elif st in (403, 409):
                self.k.confirm[f"{kind}_refused_{st}"] += 1
                return
            else:
                self.k.error(f"confirm_http_{st}")
                return
            await asyncio.sleep(1.0)

    # -- the whole run ----------------------------------------------------------------
    async def report_setup(self, since: float) -> None:
        """Setup progress on stderr (the client's log) every 5 s."""
        while True:
            await asyncio.sleep(5)
            placed = sum(1 for w in self.watchers if w.order_id is not None)
            opened = sum(1 for w in self.watchers if w.connected.is_set())
            print(
                f"setup {time.monotonic() - since:.0f} s: {placed} orders, {opened} sockets, "
                f"errors {dict(self.k.errors)}",
                file=sys.stderr,
                flush=True,
            )

    async def main(self, control: IO[str], out: IO[str]) -> None:
        loop = asyncio.get_running_loop()

        def emit(doc: dict[str, Any]) -> None:
            out.write(json.dumps(doc) + "\n")
            out.flush()

        conc = int(self.spec.get("setup_concurrency", 32))
        setup_start = time.monotonic()
        deadline = setup_start + float(self.spec.get("setup_timeout_s", 600))
        reporter = asyncio.create_task(self.report_setup(setup_start))

        async def bounded(jobs: Iterable[Awaitable[object]]) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.limited(jobs, conc), max(1.0, deadline - time.monotonic())
                )

        # Shifts, orders and websockets first, then the couriers' load: the setup does
        # not crawl behind a service already saturated by positions.
        await bounded(self.start_shift(c) for c in self.couriers)
        await bounded(self.place_order(w) for w in self.watchers)
        watched = [w for w in self.watchers if w.order_id is not None]
        watch_tasks = [asyncio.create_task(self.watch(w)) for w in watched]
        await bounded(w.connected.wait() for w in watched)
        reporter.cancel()
        emit(
            {
                "ready": True,
                "orders": len(watched),
                "connected": sum(1 for w in watched if w.ws is not None),
                "setup_s": round(time.monotonic() - setup_start, 2),
            }
        )
        go = json.loads(await loop.run_in_executor(None, control.readline))
        start, self.t0, self.t1 = float(go["start"]), float(go["t0"]), float(go["t1"])
        courier_tasks = [asyncio.create_task(self.courier_loop(c, start)) for c in self.couriers]
        await asyncio.sleep(max(0.0, self.t0 - time.time()))
        cpu0 = time.process_time()
        following = sum(1 for w in watched if w.courier_id is not None and w.ws is not None)
        share = float(self.spec.get("deliveries", 0.1))
        candidates = [w for w in watched if w.courier_id is not None]
        chosen = self.rng.sample(candidates, round(share * len(candidates)))
        span = max(0.0, self.t1 - self.t0 - 2.5)
        deliveries = [
            asyncio.create_task(self.deliver(w, self.t0 + self.rng.uniform(0, span)))
            for w in chosen
        ]
        await asyncio.sleep(max(0.0, self.t1 - time.time()))
        self.stop_couriers = True
        await asyncio.gather(*courier_tasks, *deliveries, return_exceptions=True)
        cpu1 = time.process_time()
        await asyncio.sleep(GRACE_S)
        # Read back what the log holds for each order, live connections still open.
        verified: dict[int, tuple[set[str], str | None, bool]] = {}

        async def check(w: Watcher) -> None:
            verified[w.index] = await self.verify(w)

        await self.limited(
            (check(w) for w in watched if w.snapshot_id is not None),
            int(self.spec.get("setup_concurrency", 32)),
        )
        self.closing = True
        for w in watched:
            if w.ws is not None:
                with contextlib.suppress(Exception):
                    await w.ws.close()
        await asyncio.gather(*watch_tasks, return_exceptions=True)
        self.pool.close()
        sent = received = lost = unexpected = unverified = 0
        mismatches: list[dict[str, Any]] = []
        for w in watched:
            if w.snapshot_id is None:
                unverified += 1
                continue
            logged, cutoff, ok = verified.get(w.index, (set(), None, False))
            if not ok:
                unverified += 1  # what the log holds is unknown: counted in neither
                continue
            live = {i for i in w.status_ids if cutoff is None or _key(i) <= _key(cutoff)}
            live.discard(w.snapshot_id)
            sent += len(logged)
            received += len(live)
            lost += len(logged - live)
            unexpected += len(live - logged)
            if live != logged and len(mismatches) < MISMATCH_SAMPLES:
                mismatches.append(
                    {
                        "order": w.order_id,
                        "snapshot_id": w.snapshot_id,
                        "cutoff": cutoff,
                        "live_only": {i: w.status_ids[i] for i in sorted(live - logged)},
                        "log_only": sorted(logged - live),
                        "live": dict(sorted(w.status_ids.items())),
                    }
                )
        emit(
            {
                "result": {
                    "errors": dict(self.k.errors),
                    "obs_sent": self.k.obs_sent,
                    "obs_accepted": self.k.obs_accepted,
                    "obs_rejected": dict(self.k.rejected),
                    "post_ms": self.k.post_ms,
                    "latencies_ms": self.k.latencies_ms,
                    "latency_at_s": self.k.latency_at_s,
                    "to_log_ms": self.k.to_log_ms,
                    "positions": self.k.positions,
                    "foreign_positions": self.k.foreign_positions,
                    "confirm": dict(self.k.confirm),
                    "status_sent": sent,
                    "status_received": received,
                    "status_lost": lost,
                    "status_unexpected": unexpected,
                    "status_mismatches": mismatches,
                    "unverified": unverified,
                    "watchers": len(watched),
                    "following": following,
                    "cpu_window_s": round(cpu1 - cpu0, 2),
                }
            }
        )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not on Windows
        return None
    return uvloop.new_event_loop


def client_main() -> None:
    """Entry of a load-generator process: spec on stdin's first line, JSON lines out."""
    spec = json.loads(sys.stdin.readline())
    out = sys.stdout
    tune_gc()  # as the service's workers: thousands of sockets, few cycles
    try:
        # The load generator shares the machine with the service: the C event loop
        # leaves it more of the CPU (as the service itself uses it through uvicorn).
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(LoadClient(spec).main(sys.stdin, out))
    except Exception as e:  # reported to the parent, which fails the run
        out.write(json.dumps({"fatal": f"{type(e).__name__}: {e}"}) + "\n")
        out.flush()
        raise


# -- the orchestrator --------------------------------------------------------------------


class ClientProc:
    """A load-generator subprocess speaking JSON lines."""

    def __init__(self, spec: dict[str, Any], log: Path) -> None:
        self.log = log
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.tracking_bench", "--client"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                text=True,
            )
        self.send(spec)

    def send(self, doc: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(doc) + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"load client exited ({self.proc.returncode}):\n{tail}")
        doc: dict[str, Any] = json.loads(line)
        if "fatal" in doc:
            raise RuntimeError(f"load client failed: {doc['fatal']}")
        return doc

    def stop(self) -> None:
        _stop(self.proc, timeout=5)


def _wait_assigned(
    url: str,
    token: str,
    orders: int,
    timeout_s: float,
    alive: Callable[[], bool],
    stall_s: float = 15.0,
) -> dict[str, int]:
    """Poll ``GET /v1/orders`` until no open order waits for a courier, or no progress
    for ``stall_s``, or the service is gone; returns the open orders by status."""
    import httpx

    started = time.monotonic()
    deadline = started + timeout_s
    best = math.inf
    last_progress = time.monotonic()
    counts: dict[str, int] = {}
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60, trust_env=False
    ) as client:
        while True:
            try:
                r = client.get("/v1/orders", params={"status": "open", "limit": 10_000})
                docs = r.json()["orders"] if r.status_code == 200 else []
            except (httpx.HTTPError, ValueError, KeyError):
                docs = []
            counts = dict(Counter(str(d["status"]) for d in docs))
            waiting = counts.get("placed", 0) + max(0, orders - len(docs))
            now = time.monotonic()
            if waiting < best:
                best, last_progress = waiting, now
            if waiting == 0 or now - last_progress > stall_s or now > deadline or not alive():
                return counts
            time.sleep(min(2.0, 0.25 + (now - started) / 10))


@dataclass(frozen=True)
class Load:
    """What every configuration of one :func:`run` is put under, and how it is set up."""

    couriers: int
    watchers: int
    duration_s: float
    clients: int
    deliveries: float = 0.1
    position_interval_s: float | None = None
    compression: bool = False
    appendfsync: str = "always"
    seed: int = 0
    setup_timeout_s: float = 600.0
    work_dir: Path | None = None
    redis_max_connections: int | None = None


def run_one(
    config: RunConfig, load: Load, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """One configuration end to end; the ``runs`` entry (see module docstring)."""
    started = time.monotonic()

    def say(what: str) -> None:
        if progress is not None:
            progress(f"{config.label}: {what} ({time.monotonic() - started:.1f} s)")

    secret = secrets.token_urlsafe(36)
    homes, orders = make_city(load.couriers, load.watchers, load.seed)
    clients = load.clients
    with contextlib.ExitStack() as stack:
        if load.work_dir is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="o2o-bench-")))
        else:
            folder = Path(load.work_dir) / config.label.replace(":", "-")
            folder.mkdir(parents=True, exist_ok=True)
        pgids: dict[str, list[int]] = {"service": [], "redis": [], "load": []}
        store_url = "memory"
        if config.store == "redis":
            store_url, redis_pgid = stack.enter_context(redis_server(folder, load.appendfsync))
            pgids["redis"].append(redis_pgid)
            if load.redis_max_connections is not None:  # redis-py reads pool options from the URL
                store_url += f"?max_connections={load.redis_max_connections}"
        svc = stack.enter_context(
            service(
                folder,
                store_url,
                config.workers,
                secret,
                load.position_interval_s,
                ws_compression=load.compression,
            )
        )
        pgids["service"].append(svc.proc.pid)
        say("service ready")
        procs: list[ClientProc] = []

        def stop_clients() -> None:
            for p in procs:
                p.stop()

        stack.callback(stop_clients)
        for i in range(clients):
            spec = {
                "url": svc.url,
                "secret": secret,
                "seed": load.seed * 1000 + i,
                "couriers": homes[i::clients],
                "watchers": orders[i::clients],
                "deliveries": load.deliveries,
                "setup_timeout_s": load.setup_timeout_s,
            }
            procs.append(ClientProc(spec, folder / f"client-{i}.log"))
            pgids["load"].append(procs[-1].proc.pid)
        t_setup = time.monotonic()
        ready = [p.read() for p in procs]
        say("shifts started, orders placed, websockets open")
        ops = create_token(secret, "ops", "bench-ops", 6 * 3600)
        open_orders = _wait_assigned(
            svc.url, ops, load.watchers, load.setup_timeout_s, lambda: svc.proc.poll() is None
        )
        say(f"orders assigned ({open_orders}); couriers start posting")
        setup_s = time.monotonic() - t_setup
        start = time.time() + 0.5
        t0 = start + min(5.0, max(WARMUP_S, load.duration_s / 12))
        t1 = t0 + load.duration_s
        for p in procs:
            p.send({"start": start, "t0": t0, "t1": t1})
        time.sleep(max(0.0, t0 - time.time()))
        cpu0 = {k: _group_cpu_s(v) for k, v in pgids.items()}
        cpu0["machine"] = _busy_cpu_s()
        cpu0["dispatcher"] = _dispatcher_cpu_s(svc.proc.pid, config.workers)
        load0 = _load_avg()
        # The service's own view every ~10 s, from a thread: a saturated service may
        # take many seconds to answer, which must not shift the CPU window's end.
        hub_lag: list[dict[str, float]] = []
        window_over = threading.Event()

        def sample_hub() -> None:
            while not window_over.wait(min(HUB_SAMPLE_S, max(0.0, t1 - time.time()))):
                if sample := _hub_gauges(svc.url):
                    hub_lag.append({"at_s": round(time.time() - t0, 1), **sample})
                if time.time() >= t1:
                    return

        sampler = threading.Thread(target=sample_hub, daemon=True)
        sampler.start()
        time.sleep(max(0.0, t1 - time.time()))
        cpu1 = {k: _group_cpu_s(v) for k, v in pgids.items()}
        cpu1["machine"] = _busy_cpu_s()
        cpu1["dispatcher"] = _dispatcher_cpu_s(svc.proc.pid, config.workers)
        load1 = _load_avg()
        window_over.set()
        sampler.join(HUB_SCRAPE_TIMEOUT_S)
        say("window over; checking status events against the log")
        results = [p.read()["result"] for p in procs]
        say("done")
        failed = None
        code = svc.proc.poll()
        if code is not None:  # measured all the same: the clients saw it fail
            failed = f"the service exited with {code} during the run" + (
                " (SIGKILL: the kernel's out-of-memory killer?)" if code == -signal.SIGKILL else ""
            )
            say(f"{failed}; last log lines: {svc.tail(500)!r}")
    return _summarise(
        config,
        results,
        ready,
        load,
        setup_s=setup_s,
        open_orders=open_orders,
        cpu={k: round(cpu1[k] - cpu0[k], 1) for k in cpu0},
        load_avg=load1 or load0,
        failed=failed,
        hub_lag=hub_lag,
    )


HUB_SAMPLE_S = 10.0
HUB_SCRAPE_TIMEOUT_S = 30.0


def _hub_gauges(url: str) -> dict[str, float]:
    """``o2o_hub_lag_seconds`` per worker (``lag_s:<pid>``), ``o2o_hub_positions_shed``
    summed over workers (``positions_shed``) and the leading dispatcher's re-plan
    counters (``dispatch_<name>``, :data:`tracking.dispatch_core.STATS`) from the
    service's ``/metrics``; {} if the scrape fails (the run goes on)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from tracking.dispatch_core import STATS  # here: the load clients never need it

    dispatch_gauges = {f"o2o_dispatch_{name}" for name in STATS}

    try:
        text = httpx.get(f"{url}/metrics", timeout=HUB_SCRAPE_TIMEOUT_S, trust_env=False).text
        families = list(text_string_to_metric_families(text))
    except (httpx.HTTPError, ValueError):
        return {}
    out: dict[str, float] = {}
    shed = 0.0
    dispatch: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == "o2o_hub_lag_seconds":
                out[f"lag_s:{sample.labels.get('worker', '')}"] = round(sample.value, 2)
            elif sample.name == "o2o_hub_positions_shed":
                shed += sample.value
            elif sample.name in dispatch_gauges:  # the leading worker's; others have 0
                key = "dispatch_" + sample.name.removeprefix("o2o_dispatch_")
                dispatch[key] = max(dispatch.get(key, 0.0), round(sample.value, 3))
    if out:
        out["positions_shed"] = shed
        out.update(dispatch)
    return out


def _summarise(
    config: RunConfig,
    results: list[dict[str, Any]],
    ready: list[dict[str, Any]],
    load: Load,
    *,
    setup_s: float,
    open_orders: dict[str, int],
    cpu: dict[str, float],
    load_avg: list[float],
    failed: str | None = None,
    hub_lag: list[dict[str, float]] | None = None,
) -> dict[str, Any]:
    duration_s, couriers = load.duration_s, load.couriers
    redis = config.store == "redis"
    interval_s = 1.0 if load.position_interval_s is None else load.position_interval_s
    errors: Counter[str] = Counter()
    confirm: Counter[str] = Counter()
    lat: list[float] = []
    post: list[float] = []
    to_log: list[float] = []
    from_log: list[float] = []
    slices = max(1, min(6, math.ceil(duration_s / 10)))
    width = duration_s / slices
    by_slice: list[list[float]] = [[] for _ in range(slices)]
    log_by_slice: list[list[float]] = [[] for _ in range(slices)]
    for r in results:
        errors.update(r["errors"])
        confirm.update(r["confirm"])
        lat += r["latencies_ms"]
        post += r["post_ms"]
        samples = zip(r["latencies_ms"], r["latency_at_s"], r["to_log_ms"], strict=True)
        for ms, at, before in samples:
            i = max(0, min(slices - 1, int(at / width)))
            by_slice[i].append(ms)
            if before is not None:
                to_log.append(before)
                from_log.append(ms - before)
                log_by_slice[i].append(ms - before)
    lat.sort()
    post.sort()
    to_log.sort()
    from_log.sort()
    timeline = []
    for i, values in enumerate(by_slice):
        values.sort()
        log_by_slice[i].sort()
        timeline.append(
            {
                "from_s": round(i * width, 1),
                "p50": _pct(values, 50),
                "p99": _pct(values, 99),
                "from_log_p99": _pct(log_by_slice[i], 99),
            }
        )

    def total(key: str) -> int:
        return int(sum(r[key] for r in results))

    cpu["load_generator"] = cpu.pop("load")
    machine = cpu.pop("machine")
    dispatcher = cpu.pop("dispatcher", None)
    cpu["other_processes"] = round(max(0.0, machine - sum(cpu.values())), 1)
    cpu["available"] = round(duration_s * (os.cpu_count() or 1), 1)
    if dispatcher is not None:  # part of "service", not counted twice above
        cpu["service_dispatcher"] = round(max(0.0, dispatcher), 1)
    accepted = total("obs_accepted")
    return {
        "store": config.store,
        "workers": config.workers,
        "couriers": couriers,
        "watchers": load.watchers,
        "obs_per_s": round(accepted / duration_s, 1),
        "latency_ms": {"p50": _pct(lat, 50), "p99": _pct(lat, 99)},
        "status_sent": total("status_sent"),
        "status_received": total("status_received"),
        "errors": sum(errors.values()),
        # -- details (extra keys) --
        "duration_s": duration_s,
        "position_interval_s": interval_s,
        "obs_target_per_s": couriers,
        "obs_posted": total("obs_sent"),
        "obs_rejected": dict(sum((Counter(r["obs_rejected"]) for r in results), Counter())),
        "post_ms": {"p50": _pct(post, 50), "p99": _pct(post, 99)},
        "latency_detail_ms": {
            "p90": _pct(lat, 90),
            "p999": _pct(lat, 99.9),
            "max": _pct(lat, 100),
            "samples": len(lat),
        },
        "latency_timeline_ms": timeline,
        "latency_split_ms": {
            "to_log": {"p50": _pct(to_log, 50), "p99": _pct(to_log, 99)},
            "from_log": {"p50": _pct(from_log, 50), "p99": _pct(from_log, 99)},
        },
        "positions_received": total("positions"),
        "foreign_positions": total("foreign_positions"),
        "watchers_connected": sum(int(r["connected"]) for r in ready),
        "watchers_following": total("following"),
        "open_orders_at_start": open_orders,
        "status_lost": total("status_lost"),
        "status_unexpected": total("status_unexpected"),
        "status_mismatches": [m for r in results for m in r.get("status_mismatches", [])][
            :MISMATCH_SAMPLES
        ],
        "status_unverified": total("unverified"),
        "confirmations": dict(sorted(confirm.items())),
        "error_kinds": dict(sorted(errors.items())),
        "setup_s": round(setup_s, 1),
        "cpu_s": cpu,
        # Steadier than obs_per_s and the latencies for comparing code: what each
        # observation taken in the window cost, all its fan-out included.
        "cpu_ms_per_obs": {
            k: round(cpu[k] / accepted * 1000, 3) if accepted else None
            for k in ("service", "redis", "load_generator")
            if k in cpu
        }
        | (
            # the workers alone: what the service's code costs per observation, without
            # the dispatcher's re-plans (which vary from run to run)
            {
                "service_workers": round(
                    (cpu["service"] - cpu["service_dispatcher"]) / accepted * 1000, 3
                )
            }
            if accepted and "service_dispatcher" in cpu
            else {}
        ),
        "load_avg": load_avg,
        "clients": load.clients,
        "ws_compression": load.compression,
        "redis_appendfsync": load.appendfsync if redis else None,
        "redis_max_connections": load.redis_max_connections if redis else None,
        "hub_lag": hub_lag or [],
        "failed": failed,
    }


NOTES = [
    "The load generator (its CPU seconds: cpu_s.load_generator) runs on the same machine "
    "and shares its cores with the service and redis-server; cpu_s are CPU seconds used "
    "during the measured window (duration_s) by each group of processes.",
    "latency_ms: courier's POST (observation t = send time) to the customer's position "
    "frame, receive wall time minus t, only positions of the order's own courier. The "
    "service coalesces positions to one frame per position_interval_s per subscriber, "
    "which can hold a fix back by up to that interval.",
    "machine.calibration_us_before / _after: microseconds per GPS fix fused and its "
    "estimate JSON-encoded and read back, median of 20 passes over ~1.5 s, before and "
    "after the runs: this machine's single-core speed for the service's kind of Python "
    "around then (lower is faster; on a shared machine six calls back to back ranged "
    "39-59 us, so a rough guide); compare runs of different days against it.",
    "latency_split_ms: each latency sample cut at the event's id (the time the log "
    "appended it): to_log is the observation's way in (client queue, HTTP, fusion, the "
    "store's write), from_log its way out (hub read, fan-out, websocket, client). "
    "latency_timeline_ms[].from_log_p99 is the second part per 10 s of the window.",
    "status_sent: status events in the service's event log for the watched orders since "
    "each customer's first snapshot (replayed through ?last_event_id=); status_received: "
    "distinct status frames the live connections got, up to the id the replay read; "
    "status_lost / status_unexpected: in the log only / live only; status_mismatches: "
    "up to 5 such orders in detail; status_unverified: orders whose replay failed.",
    "hub_lag: the service's /metrics every 10 s of the window (at_s: when, into the window; "
    "a saturated service may answer late or not at all): lag_s:<worker> is how long "
    "after its append that worker read the last event it read (its fan-out's backlog); "
    "positions_shed: positions not fanned out because they were read too late "
    "(O2O_STALE_POSITION_S), summed over workers since the start; dispatch_<name> "
    "(replans, replans_rejected, groups_solved, groups_skipped, groups_deferred, "
    "last_solve_seconds): the dispatcher's counters since the service started (set-up "
    "included).",
]


def run(
    configs: Sequence[RunConfig] | str = DEFAULT_CONFIGS,
    *,
    couriers: int = 2000,
    watchers: int = 5000,
    duration_s: float = 60.0,
    clients: int | None = None,
    deliveries: float = 0.1,
    position_interval_s: float | None = None,
    compression: bool = False,
    appendfsync: str = "always",
    seed: int = 0,
    setup_timeout_s: float = 600.0,
    work_dir: Path | None = None,
    redis_max_connections: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The whole benchmark: one ``runs`` entry per configuration, plus the machine."""
    cfgs = parse_configs(configs) if isinstance(configs, str) else list(configs)
    if couriers < 1 or watchers < 0 or duration_s <= 0 or not 0 <= deliveries <= 1:
        raise ValueError("need couriers >= 1, watchers >= 0, duration > 0, 0 <= deliveries <= 1")
    if clients is None:
        clients = max(1, min(4, os.cpu_count() or 1, math.ceil((couriers + watchers) / 2000)))
    clients = max(1, min(clients, couriers, max(watchers, 1)))  # each one has work
    load = Load(
        couriers=couriers,
        watchers=watchers,
        duration_s=duration_s,
        clients=clients,
        deliveries=deliveries,
        position_interval_s=position_interval_s,
        compression=compression,
        appendfsync=appendfsync,
        seed=seed,
        setup_timeout_s=setup_timeout_s,
        work_dir=work_dir,
        redis_max_connections=redis_max_connections,
    )
    machine = machine_info()
    machine["load_avg_before"] = _load_avg()
    machine["calibration_us_before"] = calibrate()
    runs = []
    for cfg in cfgs:
        if progress is not None:
            progress(f"{cfg.label}: {couriers} couriers, {watchers} watchers, {duration_s:g} s")
        runs.append(run_one(cfg, load, progress))
        if progress is not None:  # each run as soon as it is known
            progress(f"{cfg.label}: result {json.dumps(runs[-1])}")
    machine["load_avg_after"] = _load_avg()
    machine["calibration_us_after"] = calibrate()
    return {"runs": runs, "machine": machine, "notes": NOTES}


if __name__ == "__main__":
    if sys.argv[1:] == ["--client"]:
        client_main()
    else:
        print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_CONFIGS)))

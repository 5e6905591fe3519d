"""The live dispatcher's side of the service: what it does with each event, and where it
runs.

:class:`DispatchCore` wraps one :class:`dispatch.Dispatcher` and turns log events into
dispatcher calls; it holds all the dispatcher's state, so the service process never
touches the dispatcher directly and only exchanges events and decisions with it. That
is what lets it run in a child process (:class:`ProcessRunner`, the service's default):
OR-Tools holds the GIL for the whole of a re-plan (seconds for a city), which froze
every websocket and request of the worker that led; in a child process a re-plan costs
the worker nothing but the CPU it uses, and a crash or runaway memory in the solver
ends the child, not the worker (the loop rebuilds from the store and starts a new one).
:class:`ThreadRunner` runs it on one thread of the service instead (tests, the demo).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from dispatch.dispatcher import Dispatcher, DispatchSettings
from dispatch.dispatcher import Event as DispatchEvent
from dispatch.model import Courier, DispatchError, Order, Place
from geo.travel import TravelTimeModel
from tracking.codec import courier_from_dict, order_from_dict
from tracking.errors import TrackingError
from tracking.events import Event
from tracking.live import settings_from_stored
from tracking.runtime import tune_gc

Positions = dict[str, tuple[Place, float, float]]
"""Courier id -> (where, fix time, 68 % radius), the latest fix of each since the last tick."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the dispatcher decided, and what it refused (logged by the service)."""

    events: Sequence[DispatchEvent]
    refused: Sequence[str] = ()
    stats: Mapping[str, float] | None = None
    """The dispatcher's counters after a tick (see :data:`STATS`)."""


STATS = {
    "replans": "replans",
    "replans_rejected": "replans_rejected",
    "groups_solved": "groups_solved",
    "groups_skipped": "groups_skipped",
    "groups_deferred": "groups_deferred",
    "last_solve_seconds": "last_solve_s",
}
"""Re-plan counters the service exposes (``o2o_dispatch_<name>``), by the
:class:`~dispatch.dispatcher.DispatcherStats` field each reads: a city whose group
solves are mostly rejected (no solution in their time) is re-planning for nothing."""


class DispatcherFailed(TrackingError):
    """The dispatcher (or its process) failed; the loop rebuilds it from the store."""


class DispatchCore:
    """One dispatcher and the rules that feed it from the event log."""

    def __init__(
        self,
        travel: TravelTimeModel,
        settings: DispatchSettings,
        base: DispatchSettings,
        now: float,
    ) -> None:
        self.d = Dispatcher(travel, settings, now=now)
        self.base = base

    def load(self, couriers: Sequence[Courier], orders: Sequence[Order]) -> Outcome:
        return Outcome(self.d.load_snapshot(couriers, orders))

    def apply(self, e: Event) -> Outcome:
        """One user event (anything but positions); a refused one is reported, not fatal."""
        d, p = self.d, e.payload
        try:
            if e.type == "settings_updated":
                d.settings = settings_from_stored(p.get("settings"), self.base)
                return Outcome(())
            if e.type == "courier_updated":
                c = courier_from_dict(p["courier"])
                if c.on_shift:
                    return Outcome(d.start_shift(c))
                if c.id in d.couriers:
                    return Outcome(d.end_shift(c.id, e.t))
                return Outcome(())
            return Outcome(self._order_event(e, order_from_dict(p["order"])))
        except (DispatchError, TrackingError, KeyError, TypeError, ValueError) as err:
            return Outcome((), (f"{e.type} {e.id}: {err}",))

    def _order_event(self, e: Event, order: Order) -> Sequence[DispatchEvent]:
        d = self.d
        known = order.id in d.orders
        if e.type == "order_placed":
            return [] if known else d.place_order(order)
        if not known:
            return []
        if e.type == "order_cancelled":
            return d.cancel_order(order.id, e.t)
        if e.type == "order_picked_up" and order.courier_id is not None:
            if order.courier_id not in d.couriers:
                return []
            return d.picked_up(order.id, order.courier_id, e.t)
        if e.type == "order_delivered":
            return d.delivered(order.id, None, e.t)
        return []

    def tick(self, now: float, positions: Positions) -> Outcome:
        """Apply each courier's latest position, then advance the clock (maybe re-plan)."""
        out: list[DispatchEvent] = []
        refused: list[str] = []
        for cid, (place, t, radius) in positions.items():
            c = self.d.couriers.get(cid)
            if c is None or not c.on_shift:
                continue
            try:
                out += self.d.courier_moved(cid, place, t, radius)
            except DispatchError as err:
                refused.append(f"position of {cid}: {err}")
        out += self.d.tick(now)
        st = self.d.stats
        stats = {name: float(getattr(st, field)) for name, field in STATS.items()}
        return Outcome(out, refused, stats)


class Runner(Protocol):
    """Where a :class:`DispatchCore` runs; calls are serialised, one at a time."""

    async def call(self, method: str, *args: Any) -> Outcome: ...

    async def close(self) -> None: ...


class ThreadRunner:
    """The core on one dedicated thread of this process."""

    def __init__(self, *core_args: Any) -> None:
        self._core = DispatchCore(*core_args)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dispatcher")

    async def call(self, method: str, *args: Any) -> Outcome:
        fn = getattr(self._core, method)
        try:
            result: Outcome = await asyncio.get_running_loop().run_in_executor(
                self._executor, fn, *args
            )
        except Exception as e:  # a bug or a solver failure: rebuild, never stop dispatching
            raise DispatcherFailed("dispatcher_failed", f"{method}: {e!r}") from e
        return result

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _child(conn: multiprocessing.connection.Connection, core_args: tuple[Any, ...]) -> None:
    """The child process: build the core, then answer calls until the pipe closes."""
    with contextlib.suppress(AttributeError, OSError):
        os.nice(5)  # the service's requests and sockets come first on a busy machine
    core = DispatchCore(*core_args)
    tune_gc()  # a re-plan builds tens of thousands of objects: see tracking.runtime
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", getattr(core, method)(*args))
        except Exception as e:  # sent back, not raised here: the service decides
            reply = ("error", f"{method}: {e!r}")
        try:
            conn.send(reply)
        except OSError:  # the service went away mid-call
            return


class ProcessRunner:
    """The core in a child process (spawned: no state shared with the service).

    Each call is pickled over a pipe; the wait for the reply runs on a thread, so the
    event loop never blocks. A child that dies or fails raises :class:`DispatcherFailed`.
    """

    def __init__(self, *core_args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child, args=(child_conn, core_args), name="o2o-dispatcher", daemon=True
        )
        self._proc.start()
        child_conn.close()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dispatcher-pipe")

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def _roundtrip(self, message: tuple[str, tuple[Any, ...]]) -> tuple[str, Any]:
        self._conn.send(message)
        reply: tuple[str, Any] = self._conn.recv()
        return reply

    async def call(self, method: str, *args: Any) -> Outcome:
        try:
            status, value = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._roundtrip, (method, args)
            )
        except (EOFError, OSError) as e:
            code = self._proc.exitcode
            raise DispatcherFailed(
                "dispatcher_died", f"dispatcher process ended (exit code {code}): {e!r}"
            ) from e
        if status != "ok":
            raise DispatcherFailed("dispatcher_failed", str(value))
        result: Outcome = value
        return result

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        proc = self._proc
        await asyncio.get_running_loop().run_in_executor(None, proc.join, 2.0)
        if proc.is_alive():
            proc.kill()
            await asyncio.get_running_loop().run_in_executor(None, proc.join, 2.0)

"""Ops what-ifs: replay the current day with other dispatch settings, in a worker process.

``POST /v1/whatif`` (ops) takes ``{"settings": {<any DispatchSettings keys>},
"couriers_scale": 1.0, "policy": null, "scale": null}`` and answers 202 at once; the day
is simulated twice in a separate process: the **baseline** (the live dispatcher with the
settings in force: the operator's, ``Live.settings()``, on the service's base settings)
and the **variant** (those settings with the given ones on top, ``couriers_scale``
times the couriers, and ``policy`` when given: one of the simulator's policies instead
of the live dispatcher). ``GET /v1/whatif/{id}``
polls it (``status`` running / done / failed, both runs' KPIs when done);
``GET /v1/whatif/{id}/report`` is the variant's HTML report (``?run=baseline`` the
baseline's), from :mod:`simulations.report`.

**The day.** The store's orders placed since local midnight (cancelled and self-pickup
orders left out) and the couriers whose shift reaches into today become a
:class:`~simulations.scenarios.base.Scenario` (seconds after midnight, pickup places as
restaurants, each courier starting at their last known position). With fewer than
:data:`MIN_STORE_ORDERS` orders, or no courier, the built-in default city is replayed
instead (scaled by ``scale``, default :data:`DEFAULT_CITY_SCALE`, so a run takes seconds),
and the response says ``"scenario": "default_city"``. ``scale`` < 1 replays that share
of the day's orders and couriers.

**The live dispatcher in the simulator** (policy ``live``): every tick (the settings'
``replan_every_s``, at least :data:`MIN_TICK_S`) a :class:`dispatch.Dispatcher` with the
run's settings is loaded with the simulated city and re-plans it, and its routes are
applied (free routing mode; the same loop as the simulator's ``ortools`` free mode).
Solves are capped by a solution limit (:data:`SIM_SOLUTION_LIMIT` unless the settings
set one) so runs repeat. The settings that only change announcements (ETA and delay
thresholds) or that the simulator models by its own commitment rule
(``freeze_next_stop``, ``lock_within_s``) do not change the KPIs; the response lists
them in ``notes`` when they were changed.

Runs live in the memory of the service worker that took the POST (the last
:data:`MAX_KEPT`), one at a time on a single process of its own
(``ProcessPoolExecutor(max_workers=1)``, created on first use, shut down with the app or
at exit); more than :data:`MAX_UNFINISHED` unfinished runs on that worker: 429. Each run
is also published in the store (``whatif:<id>`` and ``whatif:<id>:reports`` documents
and a ``whatif:index`` of the last :data:`MAX_KEPT`; older ones shrink to stubs) when it
starts and when it ends, so with several workers (Redis store) any of them lists it,
reports its status and serves its report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import secrets
import statistics
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.app import Caller, Services, Svc, app_services, principal, require
from api.auth import Principal
from api.problems import MEDIA_TYPE, Problem, problem_body
from dispatch.dispatcher import Dispatcher, DispatchSettings
from dispatch.model import Courier, Order, Place
from geo.travel import GreatCircleModel, TravelTimeModel
from simulations.engine import SimView
from simulations.policies import make_policy, policy_names
from simulations.policy import BasePolicy, Decision, Policy, reroutes_from_plan
from simulations.report import render_report
from simulations.run import RunResult, run_scenario
from simulations.scenarios import CityConfig, Parameters, Scenario, default_city, scale_city
from simulations.scenarios.city import generate_city
from simulations.scenarios.mdrp import START_ID
from simulations.sweep import scale_fleet
from tracking.errors import BadInput, TrackingError
from tracking.live import settings_from_doc
from tracking.store import StateStore

log = logging.getLogger("o2o.whatif")

MIN_STORE_ORDERS = 20
"""Fewer orders placed today than this: the default city is replayed instead."""
DEFAULT_CITY_SCALE = 0.05
"""Share of the default city's day replayed when ``scale`` is not given (about 100
orders and 16 couriers: a run takes seconds)."""
MAX_KEPT = 20
"""Runs kept in memory and in the store's index (the oldest finished one goes first)."""
_DOC = "whatif:"
_REPORTS = ":reports"
_INDEX = "whatif:index"
MAX_UNFINISHED = 4
"""Runs running or queued at once; more: 429."""
SIM_SOLUTION_LIMIT = 30
"""Solution limit of each simulated re-plan when the settings set none (repeatable)."""
MIN_TICK_S = 5.0
"""Shortest dispatcher tick simulated (``replan_every_s`` below it is raised to it)."""
LIVE_POLICY = "live"
LIVE_SPEED_MPS = 6.0
"""Speed of the live dispatcher's default travel model (``tracking.dispatch_loop``)."""
NO_KPI_EFFECT = frozenset(
    {"freeze_next_stop", "lock_within_s", "delay_threshold_s", "delay_growth_s", "eta_change_s"}
)
"""Settings that do not change a simulated day (see the module docstring)."""

ScenarioKind = Literal["store", "default_city"]
Status = Literal["running", "done", "failed"]
WhichRun = Literal["baseline", "variant"]


# -- request and response bodies ---------------------------------------------------------


class WhatIfIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Any subset of the dispatch settings (GET /v1/dispatch/settings); "
        "applied on top of the settings in force.",
    )
    couriers_scale: float = Field(
        1.0, gt=0, le=5, allow_inf_nan=False, description="Variant fleet: couriers x this."
    )
    policy: str | None = Field(
        None,
        max_length=64,
        description="Variant policy: 'live' (the service's dispatcher, the default) or "
        "one of the simulator's policies (greedy, bundling, ortools).",
    )
    scale: float | None = Field(
        None,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Share of the day's orders and couriers to replay (default: all of "
        f"today's; {DEFAULT_CITY_SCALE} of the default city).",
    )


Kpis = dict[str, float | int | None]


class WhatIfKpis(BaseModel):
    baseline: Kpis
    variant: Kpis


class WhatIfOut(BaseModel):
    id: str
    status: Status
    error: str | None
    kpis: WhatIfKpis | None
    report_url: str | None
    scenario: ScenarioKind
    """``store`` (today's orders) or ``default_city`` (too few orders today)."""
    policy: dict[str, str]
    """``{"baseline": "live", "variant": ...}``."""
    settings: dict[str, dict[str, Any]]
    """Effective settings of both runs."""
    couriers_scale: float
    scale: float
    orders: int
    couriers: int
    """Orders and couriers of the baseline day."""
    created_at: float
    finished_at: float | None
    notes: list[str]


class WhatIfList(BaseModel):
    runs: list[WhatIfOut]


# -- the live dispatcher as a simulator policy ---------------------------------------------


class LiveDispatchPolicy(BasePolicy):
    """The service's dispatcher (``dispatch.Dispatcher`` with ``settings``) re-planning
    the simulated city every tick (free routing mode only)."""

    def __init__(self, settings: DispatchSettings) -> None:
        self.name = LIVE_POLICY
        self.settings = sim_settings(settings)

    def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
        if not view.pending_orders():
            return []  # nothing new to place: every courier keeps its route
        states = {c.id: c for c in view.couriers()}
        if not states:
            return []
        couriers = [view.courier_model(cid) for cid in states]
        committed = {s.order_id for c in states.values() for s in c.committed}
        orders: list[Order] = []
        for o in view.open_orders():
            if o.status != "placed" and o.courier_id not in states:
                continue  # with a courier off duty: it finishes its queue
            orders.append(replace(o, locked=True) if o.id in committed else o)
        d = Dispatcher(view.travel, self.settings, now=now)
        d.load_snapshot(couriers, orders)
        d.replan()
        out: list[Decision] = []
        for r in reroutes_from_plan(d.plan):
            state = states.get(r.courier_id)
            if state is None:
                continue
            same = tuple((s.order_id, s.kind) for s in r.stops if s not in state.committed)
            if same == tuple((s.order_id, s.kind) for s in state.queue):
                continue
            if view.project(r).ok:
                out.append(r)
        return out


def sim_settings(s: DispatchSettings) -> DispatchSettings:
    """``s`` as the simulator runs it: re-plan on every tick, bounded repeatable solves,
    the engine's committed leg instead of freezing and locking."""
    return replace(
        s,
        replan_every_s=0.0,
        solution_limit=s.solution_limit or SIM_SOLUTION_LIMIT,
        lock_within_s=0.0,
        freeze_next_stop=False,
    )


def tick_s(s: DispatchSettings) -> float:
    """The simulated dispatcher tick of settings ``s``."""
    return max(float(s.replan_every_s), MIN_TICK_S)


# -- the job (runs in the worker process) ------------------------------------------------


@dataclass(frozen=True)
class WhatIfJob:
    """Everything the worker needs (pickled): the day, or the city to generate it from."""

    baseline: DispatchSettings
    variant: DispatchSettings
    variant_policy: str
    couriers_scale: float
    scenario: Scenario | None = None
    city: CityConfig | None = None
    seed: int = 0


def _policy(name: str, settings: DispatchSettings) -> Policy:
    return LiveDispatchPolicy(settings) if name == LIVE_POLICY else make_policy(name)


def run_whatif(job: WhatIfJob) -> dict[str, Any]:
    """Simulate the baseline and the variant; their KPIs and HTML reports (the worker)."""
    if job.scenario is not None:
        day = job.scenario
    elif job.city is not None:
        day = generate_city(job.city)
    else:
        raise ValueError("a what-if needs a scenario or a city")
    ring = job.city.area.ring if job.city is not None else None
    h3_res = job.city.area.h3_res if job.city is not None else None
    variant_day = scale_fleet(day, job.couriers_scale, job.seed)
    out: dict[str, Any] = {"kpis": {}, "reports": {}, "orders": len(day.orders)}
    runs: list[tuple[WhichRun, Scenario, str, DispatchSettings]] = [
        ("baseline", day, LIVE_POLICY, job.baseline),
        ("variant", variant_day, job.variant_policy, job.variant),
    ]
    for which, sc, name, settings in runs:
        result: RunResult = run_scenario(
            sc, _policy(name, settings), mode="free", seed=job.seed, tick_s=tick_s(settings)
        )
        out["kpis"][which] = dict(result.kpis)
        out["reports"][which] = render_report(
            result,
            sc,
            service_area=ring,
            h3_res=h3_res,
            title=f"What-if {which}: {sc.name} ({name})",
        )
    return out


# -- today's day from the store -------------------------------------------------------------


def local_midnight(now: float) -> float:
    """Epoch seconds of the last local midnight before ``now``."""
    d = datetime.fromtimestamp(now)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def day_scenario(
    orders: Sequence[Order],
    couriers: Sequence[Courier],
    midnight: float,
    travel: TravelTimeModel,
    *,
    name: str = "today",
) -> Scenario:
    """The day of ``orders`` and ``couriers`` (epoch times) as a scenario in seconds after
    ``midnight``, every order back in status placed and every courier at their start.

    Pickup places become the restaurants (their place id, else ``p<n>`` per distinct
    point); drop-off places take the order's id, as in generated cities.
    """
    order_ids = {o.id for o in orders}
    restaurants: dict[str, Place] = {}
    by_key: dict[tuple[str | None, float, float], str] = {}
    restaurant_of: dict[str, str] = {}
    day: list[Order] = []
    for o in sorted(orders, key=lambda o: (o.placed_at, o.id)):
        lat, lon = o.pickup.point
        key = (o.pickup.id, round(lat, 5), round(lon, 5))
        rid = by_key.get(key)
        if rid is None:
            rid = o.pickup.id or f"p{len(restaurants) + 1}"
            n = 1
            while rid in restaurants or rid in order_ids or rid == START_ID:
                n += 1
                rid = f"{o.pickup.id or 'p'}#{n}"
            by_key[key] = rid
            restaurants[rid] = Place(o.pickup.point, rid)
        restaurant_of[o.id] = rid
        placed = o.placed_at - midnight
        day.append(
            Order(
                id=o.id,
                pickup=restaurants[rid],
                dropoff=Place(o.dropoff.point, o.id),
                placed_at=placed,
                ready_at=o.ready_at - midnight,
                promised_by=max(o.promised_by - midnight, placed),
                latest_by=None if o.latest_by is None else o.latest_by - midnight,
                size=o.size,
                pickup_service_s=o.pickup_service_s,
                dropoff_service_s=o.dropoff_service_s,
                mode=o.mode,
            )
        )
    fleet: list[Courier] = []
    for c in couriers:
        start = max(c.shift_start - midnight, 0.0)
        end = c.shift_end - midnight
        if end <= start or c.capacity < 1:
            continue
        fleet.append(
            Courier(
                id=c.id,
                position=Place(c.position.point, START_ID),
                position_t=start,
                shift_start=start,
                shift_end=end,
                capacity=c.capacity,
                speed_factor=c.speed_factor,
                on_shift=False,
            )
        )
    fleet.sort(key=lambda c: (c.shift_start, c.id))

    def median(values: list[float], default: float) -> float:
        return float(statistics.median(values)) if values else default

    target = median([o.promised_by - o.placed_at for o in day], 45 * 60.0)
    params = Parameters(
        pickup_service_s=median([o.pickup_service_s for o in day], 60.0),
        dropoff_service_s=median([o.dropoff_service_s for o in day], 60.0),
        target_c2d_s=target,
        max_c2d_s=max(target, 90 * 60.0),
    )
    return Scenario(
        name=name,
        orders=tuple(day),
        couriers=tuple(fleet),
        restaurants=restaurants,
        restaurant_of=restaurant_of,
        params=params,
        travel=travel,
        kind="city",
    )


def sample_orders(orders: Sequence[Order], share: float, seed: int = 0) -> list[Order]:
    """``max(1, round(len x share))`` of ``orders``, drawn with ``seed`` (all for 1)."""
    if share >= 1.0 or not orders:
        return list(orders)
    keep = max(1, round(len(orders) * share))
    pick = np.random.default_rng(seed).permutation(len(orders))[:keep]
    return [orders[int(i)] for i in sorted(pick)]


async def store_scenario(
    svc: Services, now: float, scale: float, travel: TravelTimeModel
) -> Scenario | None:
    """Today's scenario from ``svc.store``; None when too few orders or no courier."""
    midnight = local_midnight(now)
    orders = [
        o
        for o in await svc.store.list_orders()
        if midnight <= o.placed_at <= now and o.status != "cancelled" and o.needs_courier
    ]
    couriers = [c for c in await svc.store.list_couriers() if c.shift_end > midnight]
    if len(orders) < MIN_STORE_ORDERS or not couriers:
        return None
    day = day_scenario(
        sample_orders(orders, scale),
        couriers,
        midnight,
        travel,
        name=f"today {datetime.fromtimestamp(now):%Y-%m-%d}",
    )
    if not day.couriers:
        return None
    return scale_fleet(day, scale) if scale < 1.0 else day


# -- runs ------------------------------------------------------------------------------------


@dataclass
class WhatIfRun:
    id: str
    scenario: ScenarioKind
    policy: dict[str, str]
    settings: dict[str, dict[str, Any]]
    couriers_scale: float
    scale: float
    orders: int
    couriers: int
    created_at: float
    notes: list[str]
    future: Future[dict[str, Any]] | None = None
    status: Status = "running"
    error: str | None = None
    kpis: dict[str, Kpis] | None = None
    reports: dict[str, str] = field(default_factory=dict)
    finished_at: float | None = None

    def refresh(self, now: float) -> None:
        """Take the worker's answer once it is there."""
        f = self.future
        if f is None or not f.done():
            return
        self.future = None
        self.finished_at = now
        if f.cancelled():
            self.status, self.error = "failed", "cancelled (the service is shutting down)"
            return
        exc = f.exception()
        if exc is not None:
            self.status, self.error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("what-if %s failed: %s", self.id, self.error)
            return
        result = f.result()
        self.kpis = result["kpis"]
        self.reports = result["reports"]
        self.orders = int(result["orders"])
        self.status = "done"

    def fail(self, error: str, now: float) -> None:
        if self.status == "running":
            self.status, self.error, self.finished_at, self.future = "failed", error, now, None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "error": self.error,
            "kpis": self.kpis,
            "report_url": f"/v1/whatif/{self.id}/report" if self.status == "done" else None,
            "scenario": self.scenario,
            "policy": self.policy,
            "settings": self.settings,
            "couriers_scale": self.couriers_scale,
            "scale": self.scale,
            "orders": self.orders,
            "couriers": self.couriers,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "notes": self.notes,
        }


class WhatIfRunner:
    """The app's what-if runs and the one worker process that simulates them."""

    def __init__(
        self,
        *,
        max_kept: int = MAX_KEPT,
        max_unfinished: int = MAX_UNFINISHED,
        clock: Callable[[], float] = time.time,
        store: StateStore | None = None,
    ) -> None:
        self.max_kept = max_kept
        self.max_unfinished = max_unfinished
        self.clock = clock
        self.store = store
        """Where runs are published for the other workers (None: this process only)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.reserved = 0
        """Requests between the room check and the submit (building their day)."""
        self.runs: OrderedDict[str, WhatIfRun] = OrderedDict()
        self._executor: ProcessPoolExecutor | None = None
        self.closed = False

    def executor(self) -> ProcessPoolExecutor:
        """The worker pool, started on first use (spawned: the service runs threads)."""
        if self._executor is None:
            ex = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            weakref.finalize(self, _stop_executor, ex)
            self._executor = ex
        return self._executor

    def unfinished(self) -> int:
        now = self.clock()
        for r in self.runs.values():
            r.refresh(now)
        return sum(1 for r in self.runs.values() if r.status == "running")

    def has_room(self) -> bool:
        return not self.closed and self.unfinished() + self.reserved < self.max_unfinished

    def submit(self, run: WhatIfRun, job: WhatIfJob) -> WhatIfRun:
        if self.closed:
            raise Problem(503, "shutting_down", "the service is shutting down")
        try:
            run.future = self.executor().submit(run_whatif, job)
        except BrokenProcessPool:  # the worker died (killed, out of memory): start afresh
            log.warning("what-if worker pool broken; starting a new one")
            broken, self._executor = self._executor, None
            if broken is not None:
                _stop_executor(broken)
            run.future = self.executor().submit(run_whatif, job)
        loop = asyncio.get_running_loop()

        def done(_f: Future[dict[str, Any]]) -> None:  # on the pool's thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: shutting down
                loop.call_soon_threadsafe(self._spawn_finished, run)

        run.future.add_done_callback(done)
        self.runs[run.id] = run
        self._evict()
        return run

    def _spawn_finished(self, run: WhatIfRun) -> None:
        task = asyncio.ensure_future(self._finished(run))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _finished(self, run: WhatIfRun) -> None:
        await self.publish(run)

    # -- shared with the other workers (through the store) ----------------------------
    async def publish(self, run: WhatIfRun, *, new: bool = False) -> None:
        """Store the run (and, when ``new``, list it) so every worker can answer for it.

        With several workers a poll may reach any of them; only the one that runs it
        holds it in memory. The view and the (large) reports are separate documents, so
        a listing never reads reports. A store that cannot be written is logged, not
        fatal: this worker still answers for its own runs."""
        if self.store is None:
            return
        run.refresh(self.clock())
        try:
            await self.store.put_doc(_DOC + run.id, run.view())
            if run.reports:
                await self.store.put_doc(_DOC + run.id + _REPORTS, run.reports)
            if new:
                index = await self.store.get_doc(_INDEX) or {}
                ids = [run.id, *(i for i in index.get("ids", []) if i != run.id)]
                await self.store.put_doc(_INDEX, {"ids": ids[: self.max_kept]})
                for old in ids[self.max_kept :]:  # no longer listed: keep only stubs
                    for name in (_DOC + old, _DOC + old + _REPORTS):
                        await self.store.put_doc(name, {"expired": True})
        except TrackingError as e:
            log.warning("what-if %s not shared with the other workers: %s", run.id, e)

    async def _shared(self, name: str) -> dict[str, Any] | None:
        doc = None if self.store is None else await self.store.get_doc(name)
        return None if doc is None or doc.get("expired") else doc

    async def lookup(self, run_id: str) -> dict[str, Any]:
        """A run's view, from this worker or, failing that, the store."""
        run = self.runs.get(run_id)
        if run is not None:
            run.refresh(self.clock())
            return run.view()
        view = await self._shared(_DOC + run_id)
        if view is None:
            raise Problem(404, "unknown_whatif", f"no what-if {run_id!r} (or no longer kept)")
        return view

    async def reports(self, run_id: str) -> dict[str, str]:
        """A finished run's reports (empty until it is done)."""
        run = self.runs.get(run_id)
        if run is not None:
            return run.reports
        return await self._shared(_DOC + run_id + _REPORTS) or {}

    async def listing(self) -> list[dict[str, Any]]:
        """Recent runs of every worker, newest first (this worker's from memory)."""
        self.unfinished()  # refresh
        out = {r.id: r.view() for r in self.runs.values()}
        with contextlib.suppress(TrackingError):
            for i in ((await self._shared(_INDEX)) or {}).get("ids", []):
                if i not in out and (view := await self._shared(_DOC + i)) is not None:
                    out[i] = view
        return sorted(out.values(), key=lambda v: v["created_at"], reverse=True)

    def _evict(self) -> None:
        while len(self.runs) > self.max_kept:
            done = next((k for k, r in self.runs.items() if r.status != "running"), None)
            if done is None:
                return
            del self.runs[done]

    def shutdown(self) -> list[WhatIfRun]:
        """Stop the worker (a run in progress is abandoned) and fail what is unfinished;
        returns the runs it failed."""
        self.closed = True
        now = self.clock()
        failed = []
        for r in self.runs.values():
            r.refresh(now)
            if r.status == "running":
                failed.append(r)
            r.fail("the service shut down before the run finished", now)
        ex, self._executor = self._executor, None
        if ex is not None:
            _stop_executor(ex)
        return failed


def _stop_executor(ex: ProcessPoolExecutor) -> None:
    """Shut the pool down without waiting, and end its worker (a long simulation must
    not hold up the service's exit)."""
    processes: Mapping[int, Any] = dict(getattr(ex, "_processes", None) or {})
    ex.shutdown(wait=False, cancel_futures=True)
    for p in processes.values():
        with contextlib.suppress(Exception):
            if p.is_alive():
                p.terminate()


# -- request checks -------------------------------------------------------------------------


async def settings_in_force(svc: Services) -> DispatchSettings:
    """The dispatcher's settings now: the operator's on the service's base settings."""
    return await svc.live.settings()


def variant_settings(doc: Mapping[str, Any], base: DispatchSettings) -> DispatchSettings:
    """``doc`` on top of ``base`` (422 for unknown keys or bad values)."""
    for name, value in doc.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInput("bad_setting", f"{name} must be a finite number")
    return settings_from_doc(dict(doc), base)


def variant_policy(name: str | None) -> str:
    if name is None:
        return LIVE_POLICY
    known = [LIVE_POLICY, *policy_names()]
    if name not in known:
        raise Problem(
            422, "unknown_policy", f"policy must be one of {', '.join(known)}, got {name!r}"
        )
    return name


def notes_for(doc: Mapping[str, Any], policy: str, scenario: ScenarioKind) -> list[str]:
    notes: list[str] = []
    if scenario == "default_city":
        notes.append(
            f"fewer than {MIN_STORE_ORDERS} orders today (or no courier): "
            "the built-in default city was replayed instead"
        )
    quiet = sorted(set(doc) & NO_KPI_EFFECT)
    if quiet:
        notes.append(
            f"{', '.join(quiet)} do not change a simulated day (announcements only, or "
            "modelled by the simulator's committed leg)"
        )
    if policy != LIVE_POLICY and doc:
        changed = sorted(set(doc) - {"replan_every_s"})
        if changed:
            notes.append(
                f"the variant runs the {policy} policy: only replan_every_s (its tick) of "
                "the settings applies to it"
            )
    return notes


# -- routes ---------------------------------------------------------------------------------


def runner_of(request: Request) -> WhatIfRunner:
    r: WhatIfRunner = request.app.state.whatif
    return r


async def report_caller(
    request: Request,
    token: Annotated[
        str | None, Query(description="Bearer token, for opening the report in a browser")
    ] = None,
    authorization: Annotated[str | None, Header(description="Bearer token")] = None,
) -> Principal:
    if token:
        return app_services(request).principal(token)
    return await principal(request, authorization)


WHATIF_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid token"},
    403: {"description": "Not ops"},
}


def _lifespan_with(
    app: FastAPI, runner: WhatIfRunner
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            try:
                yield state
            finally:
                for run in runner.shutdown():  # the store is still open here
                    await runner.publish(run)

    return lifespan


async def _prepare(
    svc: Services,
    body: WhatIfIn,
    baseline: DispatchSettings,
    variant: DispatchSettings,
    policy: str,
) -> tuple[WhatIfRun, WhatIfJob]:
    """The run's record and the worker's job: today's day, or the default city."""
    now = svc.live.clock()
    travel = svc.loop.travel if svc.loop is not None else None
    travel = travel or GreatCircleModel.constant_speed(LIVE_SPEED_MPS)
    day = await store_scenario(svc, now, body.scale or 1.0, travel)
    kind: ScenarioKind = "store" if day is not None else "default_city"
    city: CityConfig | None = None
    orders: int
    couriers: int
    if day is None:
        scale = body.scale or DEFAULT_CITY_SCALE
        city = await asyncio.to_thread(lambda: scale_city(default_city(), scale))
        orders, couriers = city.demand.orders, city.fleet.couriers
    else:
        scale = body.scale or 1.0
        orders, couriers = len(day.orders), len(day.couriers)
    run = WhatIfRun(
        id=f"w-{secrets.token_hex(6)}",
        scenario=kind,
        policy={"baseline": LIVE_POLICY, "variant": policy},
        settings={"baseline": asdict(baseline), "variant": asdict(variant)},
        couriers_scale=body.couriers_scale,
        scale=scale,
        orders=orders,
        couriers=couriers,
        created_at=now,
        notes=notes_for(body.settings, policy, kind),
    )
    job = WhatIfJob(
        baseline=baseline,
        variant=variant,
        variant_policy=policy,
        couriers_scale=body.couriers_scale,
        scenario=day,
        city=city,
    )
    return run, job


def register(app: FastAPI) -> None:
    """Add the what-if endpoints to ``app`` (and stop its worker with the app)."""
    svc: Services | None = getattr(app.state, "svc", None)
    runner = (
        WhatIfRunner(clock=svc.live.clock, store=svc.store) if svc is not None else WhatIfRunner()
    )
    app.state.whatif = runner
    app.router.lifespan_context = _lifespan_with(app, runner)

    @app.post(
        "/v1/whatif",
        status_code=202,
        response_model=WhatIfOut,
        tags=["ops"],
        responses={
            **WHATIF_RESPONSES,
            422: {"description": "Unknown or bad settings, unknown policy"},
            429: {"description": "Too many what-ifs running or queued"},
            503: {"description": "Shutting down"},
        },
    )
    async def create_whatif(
        body: WhatIfIn, svc: Svc, p: Caller, request: Request, response: Response
    ) -> Any:
        """Simulate today with other settings (in a worker); poll ``GET /v1/whatif/{id}``."""
        require(p, "ops")
        runner = runner_of(request)
        baseline = await settings_in_force(svc)
        variant = variant_settings(body.settings, baseline)
        policy = variant_policy(body.policy)
        if not runner.has_room():
            if runner.closed:
                raise Problem(503, "shutting_down", "the service is shutting down")
            doc = problem_body(
                429,
                "too_many_whatifs",
                f"{runner.max_unfinished} what-ifs are running or queued; try again later",
                request.url.path,
            )
            doc["title"] = "Too many requests"
            return JSONResponse(
                doc, status_code=429, media_type=MEDIA_TYPE, headers={"Retry-After": "10"}
            )
        runner.reserved += 1
        try:
            run, job = await _prepare(svc, body, baseline, variant, policy)
            runner.submit(run, job)
        finally:
            runner.reserved -= 1
        await runner.publish(run, new=True)
        response.headers["Location"] = f"/v1/whatif/{run.id}"
        return run.view()

    @app.get("/v1/whatif", response_model=WhatIfList, tags=["ops"], responses=WHATIF_RESPONSES)
    async def list_whatifs(p: Caller, request: Request) -> dict[str, Any]:
        """Recent what-ifs (of every worker), newest first."""
        require(p, "ops")
        return {"runs": await runner_of(request).listing()}

    @app.get(
        "/v1/whatif/{whatif_id}",
        response_model=WhatIfOut,
        tags=["ops"],
        responses={**WHATIF_RESPONSES, 404: {"description": "Unknown what-if"}},
    )
    async def get_whatif(whatif_id: str, p: Caller, request: Request) -> dict[str, Any]:
        """A what-if's status and, once done, the KPIs (minutes) of both runs."""
        require(p, "ops")
        return await runner_of(request).lookup(whatif_id)

    @app.get(
        "/v1/whatif/{whatif_id}/report",
        response_class=HTMLResponse,
        tags=["ops"],
        responses={
            **WHATIF_RESPONSES,
            200: {"content": {"text/html": {}}, "description": "The HTML report"},
            404: {"description": "Unknown what-if"},
            409: {"description": "Still running, or failed"},
        },
    )
    async def whatif_report(
        whatif_id: str,
        request: Request,
        p: Annotated[Principal, Depends(report_caller)],
        run: Annotated[WhichRun, Query(description="Which run's report")] = "variant",
    ) -> HTMLResponse:
        """The HTML report of the variant (or ``?run=baseline``); also ``?token=``."""
        require(p, "ops")
        runner = runner_of(request)
        status = (await runner.lookup(whatif_id))["status"]
        reports = await runner.reports(whatif_id)
        if status != "done" or run not in reports:
            raise Problem(409, f"whatif_{status}", f"what-if {whatif_id} is {status}; no report")
        return HTMLResponse(reports[run])

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
applied (free routing mode; the simulator's ``dispatcher`` policy,
:mod:`simulations.policies.dispatcher`). Solves are capped by a solution limit
(:data:`~simulations.policies.dispatcher.SIM_SOLUTION_LIMIT` unless the settings
set one) so runs repeat. The settings that only change announcements (ETA and delay
thresholds) or that the simulator models by its own commitment rule
(``freeze_next_stop``, ``lock_within_s``), and ``full_replan_every_s`` (the simulator
solves every group on every tick), do not change the KPIs; the response lists them in
``notes`` when they were changed.

Runs live in the memory of the service worker that took the POST (the last
:data:`MAX_KEPT`), one at a time on a single process of its own
(``ProcessPoolExecutor(max_workers=1)``, created on first use, shut down with the app or
at exit); more than :data:`MAX_UNFINISHED` unfinished runs on that worker: 429. A run
stops (``failed``, saying why) after :data:`MAX_RUN_S` seconds of computing, so a huge
day cannot hold the worker for ever; there is no cancel yet (queued runs also read
``running``). Each run
is also published in the store (``whatif:<id>`` and ``whatif:<id>:reports`` documents
and a ``whatif:index`` of the last :data:`MAX_KEPT`; older ones shrink to stubs) when it
starts and when it ends, so with several workers (Redis store) any of them lists it,
reports its status and serves its report.

**Lost workers.** While a run is running, the worker that took it (its owner) re-publishes
its view every :data:`HEARTBEAT_S` seconds (``O2O_WHATIF_HEARTBEAT_S``; one store write per
running run) with ``heartbeat_at`` (wall-clock epoch seconds) and ``heartbeat_s``. A worker
that reads a published run still ``running`` whose last heartbeat is more than
:data:`STALE_HEARTBEATS` of its intervals old (a view without one: its ``created_at``)
reports it ``failed``, its error saying the worker running it was lost, ``finished_at`` its
last heartbeat (:func:`judged`); the listing applies the same rule, so the two agree.

Only the owner writes a run's documents; the other workers judge, they never write a
verdict back. The store has no compare-and-set, so a verdict written back could cross a
slow owner's last write: overwrite a finished run, or be overwritten by it. A verdict is a
function of the document and the time alone, so every worker reaches the same one, and the
owner keeps a lease so that it never contradicts it (on a shared store; see
:meth:`WhatIfRunner.publish`): it counts a heartbeat only when its write completed within
one interval; once ``STALE_HEARTBEATS - 1`` intervals pass without one it gives the run up
itself (failed with the same error, logged; a result that comes later is dropped) and
publishes that; and it reports a finished run as done only once that state is published,
within the lease. So each ``running`` or ``done`` it writes lands before any worker can
judge the run lost, and afterwards it writes only the same ``failed``. Assumed: the
workers' clocks agree within one interval (``o2o serve --workers`` runs them on one host),
and a store write, failed ones included, lands within one interval of its start or never
(the Redis client gives up after 5 s, the default interval). The memory store lives in one
process, whose runs are all in its memory: there the heartbeat is written and nothing else
changes (no lease; a run is never given up).
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
from api.web import PAGE_HEADERS
from dispatch.dispatcher import DispatchSettings
from dispatch.model import Courier, Order, Place
from geo.travel import GreatCircleModel, TravelTimeModel
from simulations.policies import make_policy, policy_names
from simulations.policies.dispatcher import DispatcherPolicy
from simulations.policy import Policy
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
MAX_RUN_S = 300.0
"""Wall-clock budget of one what-if (baseline and variant together): one run takes the
only worker process, and a big day with slow settings once held it (and the runs queued
behind it) for many minutes. Checked after every simulated dispatcher tick."""


class WhatIfTooLong(RuntimeError):
    """A what-if stopped at :data:`MAX_RUN_S` (its error says so, and what to change)."""


MIN_TICK_S = 5.0
"""Shortest dispatcher tick simulated (``replan_every_s`` below it is raised to it)."""
LIVE_POLICY = "live"
LIVE_SPEED_MPS = 6.0
"""Speed of the live dispatcher's default travel model (``tracking.dispatch_loop``)."""
NO_KPI_EFFECT = frozenset(
    {
        "freeze_next_stop",
        "lock_within_s",
        "delay_threshold_s",
        "delay_growth_s",
        "eta_change_s",
        "full_replan_every_s",
    }
)
"""Settings that do not change a simulated day (see the module docstring)."""
HEARTBEAT_S = 5.0
"""Seconds between two heartbeats of a running run's published view (the default of
``O2O_WHATIF_HEARTBEAT_S``, :attr:`api.settings.Settings.whatif_heartbeat_s`)."""
STALE_HEARTBEATS = 4
"""A published run still ``running`` whose last heartbeat is older than this many of its
heartbeat intervals is reported failed: the worker running it was lost (20 s by default).
Its owner gives it up itself after one interval less without a heartbeat (its lease)."""

ScenarioKind = Literal["store", "default_city"]
Status = Literal["running", "done", "failed"]
WhichRun = Literal["baseline", "variant"]


# -- request and response bodies ---------------------------------------------------------


class WhatIfIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

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
    heartbeat_at: float | None = None
    """Last heartbeat (epoch s) of the worker running it, published every ``heartbeat_s``
    while it runs; a running what-if whose heartbeat is more than :data:`STALE_HEARTBEATS`
    intervals old is reported failed (its worker was lost)."""
    heartbeat_s: float | None = None


class WhatIfList(BaseModel):
    runs: list[WhatIfOut]


# -- the live dispatcher as a simulator policy ---------------------------------------------


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
    max_run_s: float = MAX_RUN_S


def _policy(name: str, settings: DispatchSettings) -> Policy:
    return DispatcherPolicy(settings, LIVE_POLICY) if name == LIVE_POLICY else make_policy(name)


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
    deadline = time.monotonic() + job.max_run_s

    def within_budget(now_s: float, horizon_s: float) -> None:
        if time.monotonic() > deadline:
            raise WhatIfTooLong(
                f"stopped after {job.max_run_s:g} s of computing, the limit for a what-if "
                f"(simulated up to {now_s / 3600:.1f} h of {horizon_s / 3600:.1f} h); try a "
                "smaller scale, fewer couriers or a shorter solve time limit"
            )

    runs: list[tuple[WhichRun, Scenario, str, DispatchSettings]] = [
        ("baseline", day, LIVE_POLICY, job.baseline),
        ("variant", variant_day, job.variant_policy, job.variant),
    ]
    for which, sc, name, settings in runs:
        result: RunResult = run_scenario(
            sc,
            _policy(name, settings),
            mode="free",
            seed=job.seed,
            tick_s=tick_s(settings),
            progress=within_budget,
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


def stale_after(heartbeat_s: float) -> float:
    """Seconds without a heartbeat after which a running run counts as lost."""
    return STALE_HEARTBEATS * heartbeat_s


def lost_error(heartbeat_s: float) -> str:
    """The error of a run whose worker was lost (the same from every worker)."""
    return (
        "worker lost: the service worker running this what-if stopped (killed or crashed) "
        f"and sent no heartbeat for {stale_after(heartbeat_s):g} s; start it again"
    )


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def judged(view: dict[str, Any], now: float, heartbeat_s: float = HEARTBEAT_S) -> dict[str, Any]:
    """A published ``view`` as it reads at ``now`` (wall clock): still ``running`` with its
    last heartbeat more than :data:`STALE_HEARTBEATS` intervals old (its own
    ``heartbeat_s``, else ``heartbeat_s``; no heartbeat: since ``created_at``), it is
    ``failed``, its worker lost, ``finished_at`` its last heartbeat. Anything else is
    returned as it is."""
    if view.get("status") != "running":
        return view
    interval = _number(view.get("heartbeat_s")) or heartbeat_s
    last = _number(view.get("heartbeat_at"))
    if last is None:
        last = _number(view.get("created_at"))
    if last is None or now - last <= stale_after(interval):
        return view
    return {
        **view,
        "status": "failed",
        "error": lost_error(interval),
        "report_url": None,
        "finished_at": last,
    }


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
    heartbeat_s: float = HEARTBEAT_S
    heartbeat_at: float | None = None
    """The last heartbeat published (wall clock)."""
    lease_from: float = 0.0
    """The last heartbeat whose write completed within ``heartbeat_s`` (the owner's lease
    runs from it; see :meth:`WhatIfRunner.publish`)."""
    published_end: bool = False
    """Its final state is in the store (until then heartbeats retry it)."""
    publishing: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)
    """Held by :meth:`WhatIfRunner.publish` (one at a time; its write decides the lease)."""

    def outcome(self, now: float) -> dict[str, Any] | None:
        """The fields the worker's answer sets, once it is there (None before)."""
        f = self.future
        if f is None or not f.done():
            return None
        out: dict[str, Any] = {"future": None, "finished_at": now}
        if f.cancelled():
            out.update(status="failed", error="cancelled (the service is shutting down)")
        elif (exc := f.exception()) is not None:
            out.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        else:
            result = f.result()
            out.update(
                status="done",
                kpis=result["kpis"],
                reports=result["reports"],
                orders=int(result["orders"]),
            )
        return out

    def apply(self, outcome: Mapping[str, Any]) -> None:
        if self.status != "running":
            return
        for name, value in outcome.items():
            setattr(self, name, value)
        if outcome.get("status") == "failed":
            log.warning("what-if %s failed: %s", self.id, self.error)

    def refresh(self, now: float) -> None:
        """Take the worker's answer once it is there."""
        outcome = self.outcome(now)
        if outcome is not None:
            self.apply(outcome)

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
            "heartbeat_at": self.heartbeat_at,
            "heartbeat_s": self.heartbeat_s,
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
        heartbeat_s: float = HEARTBEAT_S,
        wall: Callable[[], float] = time.time,
        shared: bool | None = None,
    ) -> None:
        self.max_kept = max_kept
        self.max_unfinished = max_unfinished
        self.clock = clock
        """The service's clock (``created_at``, ``finished_at``; the demo's runs fast)."""
        self.store = store
        """Where runs are published for the other workers (None: this process only)."""
        self.heartbeat_s = heartbeat_s
        self.wall = wall
        """Real time, for heartbeats (compared across workers)."""
        self.shared = (store is not None and store.shared) if shared is None else shared
        """Other processes read the store: runs have a lease."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._beating: asyncio.Task[None] | None = None
        self.reserved = 0
        """Requests between the room check and the submit (building their day)."""
        self.runs: OrderedDict[str, WhatIfRun] = OrderedDict()
        self._executor: ProcessPoolExecutor | None = None
        self.closed = False

    @property
    def lease_s(self) -> float:
        """Seconds the owner goes on claiming a run without a heartbeat that counted: one
        interval less than the others wait before they judge it lost."""
        return stale_after(self.heartbeat_s) - self.heartbeat_s

    def executor(self) -> ProcessPoolExecutor:
        """The worker pool, started on first use (spawned: the service runs threads)."""
        if self._executor is None:
            ex = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            weakref.finalize(self, _stop_executor, ex)
            self._executor = ex
        return self._executor

    def settle(self, run: WhatIfRun) -> None:
        """Bring this worker's own ``run`` up to date before answering for it: take the
        worker's answer (memory store), or give the run up once its lease has run out
        (shared store: there the answer is taken by :meth:`publish`)."""
        if not self.shared:
            run.refresh(self.clock())
        elif run.status == "running" and not run.publishing.locked() and self._lease_out(run):
            self._lose(run)
            self._spawn(self.publish(run))

    def _lease_out(self, run: WhatIfRun) -> bool:
        return self.shared and self.wall() - run.lease_from > self.lease_s

    def _lose(self, run: WhatIfRun) -> None:
        """Give ``run`` up as the other workers do (its heartbeats stopped landing)."""
        f = run.future
        last = run.heartbeat_at if run.heartbeat_at is not None else run.lease_from
        run.fail(lost_error(run.heartbeat_s), last)
        if f is not None:
            f.cancel()  # still queued: never run it; running: its result is dropped
        log.warning(
            "what-if %s given up: no heartbeat published for %g s (the store is down or "
            "this worker stalled); the other workers report it failed too",
            run.id,
            self.lease_s,
        )

    def unfinished(self) -> int:
        for r in self.runs.values():
            self.settle(r)
        return sum(1 for r in self.runs.values() if r.status == "running")

    def has_room(self) -> bool:
        return not self.closed and self.unfinished() + self.reserved < self.max_unfinished

    def submit(self, run: WhatIfRun, job: WhatIfJob) -> WhatIfRun:
        if self.closed:
            raise Problem(503, "shutting_down", "the service is shutting down")
        try:
            future = self.executor().submit(run_whatif, job)
        except BrokenProcessPool:  # the worker died (killed, out of memory): start afresh
            log.warning("what-if worker pool broken; starting a new one")
            broken, self._executor = self._executor, None
            if broken is not None:
                _stop_executor(broken)
            future = self.executor().submit(run_whatif, job)
        self.track(run, future)
        return run

    def track(self, run: WhatIfRun, future: Future[dict[str, Any]]) -> None:
        """Keep ``run``, computed by ``future``: publish it when it ends, heartbeat it until
        then (the loop's thread)."""
        run.future = future
        run.heartbeat_s = self.heartbeat_s
        run.lease_from = self.wall()
        loop = asyncio.get_running_loop()

        def done(_f: Future[dict[str, Any]]) -> None:  # on the pool's thread
            with contextlib.suppress(RuntimeError):  # the loop is gone: shutting down
                loop.call_soon_threadsafe(self._spawn_finished, run)

        future.add_done_callback(done)
        self.runs[run.id] = run
        self._evict()
        if self.store is not None and (self._beating is None or self._beating.done()):
            self._beating = asyncio.ensure_future(self._heartbeats())

    def _spawn(self, job: Any) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    def _spawn_finished(self, run: WhatIfRun) -> None:
        self._spawn(self._finished(run))

    async def _finished(self, run: WhatIfRun) -> None:
        await self.publish(run)

    async def _heartbeats(self) -> None:
        """Re-publish every running run each ``heartbeat_s`` (and a finished one whose end
        could not be published yet), until none is left."""
        while not self.closed:
            await asyncio.sleep(self.heartbeat_s)
            due = [r for r in self.runs.values() if not r.published_end]
            if not due or self.closed:
                return
            for run in due:
                try:
                    await self.publish(run)
                except Exception:  # keep beating for the other runs
                    log.exception("what-if %s: heartbeat failed", run.id)

    # -- shared with the other workers (through the store) ----------------------------
    async def publish(self, run: WhatIfRun, *, new: bool = False) -> None:
        """Store the run (and, when ``new``, list it) so every worker can answer for it;
        ``heartbeat_at`` is now.

        With several workers a poll may reach any of them; only the one that runs it
        holds it in memory. The view and the (large) reports are separate documents, so
        a listing never reads reports. A store that cannot be written is logged, not
        fatal: this worker still answers for its own runs.

        On a shared store the owner holds a lease on a running run: a heartbeat counts
        (renews it) when its write completed within ``heartbeat_s``. Once the lease has
        run out (``lease_s``, one interval short of when the other workers judge the run
        lost) the run is given up: failed, with the error they report, and published so.
        The worker's answer is shown (applied to ``run``) only once its write succeeded:
        a run never reads done here while it may read failed elsewhere."""
        if self.store is None:
            return
        async with run.publishing:  # one at a time, so the latest state lands last
            await self._publish(run, new)

    async def _publish(self, run: WhatIfRun, new: bool) -> None:
        assert self.store is not None
        stamp = self.wall()
        outcome = None
        if not self.shared:
            run.refresh(self.clock())
        elif run.status == "running":
            if self._lease_out(run):
                self._lose(run)
            else:
                outcome = run.outcome(self.clock())
        shown = replace(run, **outcome) if outcome else run
        view = {**shown.view(), "heartbeat_at": stamp}
        try:
            if shown.reports:  # before the view: a done view always has its reports
                await self.store.put_doc(_DOC + run.id + _REPORTS, shown.reports)
            await self.store.put_doc(_DOC + run.id, view)
            run.heartbeat_at = stamp
            if self.wall() - stamp <= self.heartbeat_s:
                run.lease_from = stamp
            if outcome:
                run.apply(outcome)
            run.published_end = shown.status != "running"
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
        """A run's view, from this worker or, failing that, the store (:func:`judged`)."""
        run = self.runs.get(run_id)
        if run is not None:
            self.settle(run)
            return run.view()
        view = await self._shared(_DOC + run_id)
        if view is None:
            raise Problem(404, "unknown_whatif", f"no what-if {run_id!r} (or no longer kept)")
        return judged(view, self.wall(), self.heartbeat_s)

    async def reports(self, run_id: str) -> dict[str, str]:
        """A finished run's reports (empty until it is done)."""
        run = self.runs.get(run_id)
        if run is not None:
            return run.reports
        return await self._shared(_DOC + run_id + _REPORTS) or {}

    async def listing(self) -> list[dict[str, Any]]:
        """Recent runs of every worker, newest first (this worker's from memory; the
        others' judged as :meth:`lookup` does)."""
        self.unfinished()  # settle
        out = {r.id: r.view() for r in self.runs.values()}
        with contextlib.suppress(TrackingError):
            for i in ((await self._shared(_INDEX)) or {}).get("ids", []):
                if i not in out and (view := await self._shared(_DOC + i)) is not None:
                    out[i] = judged(view, self.wall(), self.heartbeat_s)
        return sorted(out.values(), key=lambda v: v["created_at"], reverse=True)

    def _evict(self) -> None:
        while len(self.runs) > self.max_kept:
            done = next((k for k, r in self.runs.items() if r.status != "running"), None)
            if done is None:
                return
            del self.runs[done]

    def shutdown(self) -> list[WhatIfRun]:
        """Stop the worker (a run in progress is abandoned) and fail what is unfinished;
        returns the runs to publish once more (those it failed, and those whose answer
        came but was not published yet)."""
        self.closed = True
        if self._beating is not None:
            self._beating.cancel()
        now = self.clock()
        changed = []
        for r in self.runs.values():
            if r.status != "running":
                continue
            if self._lease_out(r) and not r.publishing.locked():
                self._lose(r)
            r.refresh(now)  # an answer not yet published (shared store) is published now
            r.fail("the service shut down before the run finished", now)
            changed.append(r)
        ex, self._executor = self._executor, None
        if ex is not None:
            _stop_executor(ex)
        return changed


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
        WhatIfRunner(
            clock=svc.live.clock,
            store=svc.store,
            heartbeat_s=svc.settings.whatif_heartbeat_s,
        )
        if svc is not None
        else WhatIfRunner()
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
        # the link carries the ops token: never cached, never sent on as a Referer
        return HTMLResponse(reports[run], headers=PAGE_HEADERS)

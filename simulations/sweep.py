"""What-if sweeps: one scenario replayed over a grid of operating changes.

A :class:`SweepGrid` crosses five axes, in this order (the last one varies fastest):

- ``fleet``: fleet size scale. A generated city scales its ``[fleet]`` shift blocks
  (largest-remainder rounding, so the total is ``round(couriers x scale)`` exactly, and
  the orders are untouched: the fleet draws from its own random stream). Any other
  scenario (an MDRP instance) gets :func:`scale_fleet`: below 1 a seeded sample of the
  couriers, above 1 every courier plus duplicated shifts with jittered start positions.
- ``prep``: preparation time scale, ``ready_at - placed_at`` times the scale
  (:func:`scale_prep`).
- ``tick``: the dispatcher's cadence, seconds (the engine tick).
- ``policy``: the dispatch policy name.
- ``seed``: the run's seed. It seeds the policies' random generator, the courier sample
  of :func:`scale_fleet` and, for a generated city, the day itself (the city's own seed
  plus this one, so seed 0 is the day ``o2o simulate`` replays).

:func:`run_sweep` runs every grid point (in parallel processes when asked) and returns a
:class:`SweepResult`: one record per run in grid order (grid values, then the KPIs of
:func:`~simulations.run.run_scenario`) and a summary with the mean over seeds of every
numeric KPI per (fleet, prep, tick, policy). Everything but ``wall_s`` is the same for
the same scenario and grid whatever the number of processes.
:meth:`SweepResult.write` puts ``sweep.json``, ``sweep.csv`` (the runs) and ``sweep.html``
(inline SVG plots, self-contained) in a folder.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dispatch.model import Courier, Order, Place
from simulations.parallel import map_in_order
from simulations.policies import PolicyUnavailable, make_policy
from simulations.policy import Mode, policy_modes
from simulations.report import (
    CSS,
    INK,
    ROUTES,
    Axes,
    Svg,
    esc,
    nice_top,
)
from simulations.run import run_scenario
from simulations.scenarios.base import Scenario, ScenarioError
from simulations.scenarios.city import (
    CityConfig,
    default_city,
    default_city_path,
    generate_city,
    is_city_file,
    load_city,
)
from simulations.scenarios.mdrp import is_mdrp_dir, read_mdrp

__all__ = [
    "AXES",
    "JITTER_M",
    "MIN_TICK_S",
    "SUMMARY_COLUMNS",
    "ScenarioSource",
    "SweepError",
    "SweepGrid",
    "SweepPoint",
    "SweepProgress",
    "SweepResult",
    "SweepSource",
    "fmt_value",
    "render_html",
    "resolve_source",
    "run_sweep",
    "scale_city_fleet",
    "scale_fleet",
    "scale_prep",
]

AXES = ("fleet", "prep", "tick", "policy", "seed")
"""Grid axes, outermost first; the keys that open every run record."""
JITTER_M = 300.0
"""Standard deviation (metres, per axis) of a duplicated courier's start position."""
MIN_TICK_S = 1.0
"""Shortest dispatch tick, as ``o2o simulate --tick``: finer ticks only multiply the
dispatcher calls (a tick of 1e-9 s would never finish a day)."""
SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("couriers", "couriers", "int"),
    ("delivered_share", "delivered", "pct"),
    ("c2d_mean", "c2d mean", "min"),
    ("c2d_p90", "c2d p90", "min"),
    ("late_share", "late", "pct"),
    ("cost_per_order", "cost/order", "num"),
    ("orders_per_courier_hour", "orders/courier-h", "num"),
    ("utilisation", "utilisation", "pct"),
)
"""(KPI key, column heading, kind) of the comparison tables (CLI and HTML)."""
_NOT_AVERAGED = frozenset({*AXES, "tick_s"})

SweepProgress = Callable[[int, int], None]
"""``progress(done, total)``, called after each finished run."""


class SweepError(ValueError):
    """A grid that cannot be run (empty axis, bad scale, unknown policy)."""


# --------------------------------------------------------------------------- grid


def _positive(axis: str, values: Sequence[float], what: str) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SweepError(f"{axis}: {v!r} is not a number")
        if not (math.isfinite(v) and v > 0):
            raise SweepError(f"{axis}: {what} must be > 0, got {v:g}")


def _distinct(axis: str, values: Sequence[object]) -> None:
    if not values:
        raise SweepError(f"{axis}: empty list (give at least one value)")
    seen: set[object] = set()
    for v in values:
        if v in seen:
            shown = f"{v:g}" if isinstance(v, float) else repr(v) if isinstance(v, str) else v
            raise SweepError(f"{axis}: {shown} is listed twice")
        seen.add(v)


def _split(axis: str, text: str) -> list[str]:
    items = [s.strip() for s in text.split(",")]
    if not text.strip():
        raise SweepError(f"{axis}: empty list (give at least one value)")
    if any(not s for s in items):
        raise SweepError(f"{axis}: empty item in {text!r}")
    return items


def _floats(axis: str, text: str) -> tuple[float, ...]:
    out = []
    for s in _split(axis, text):
        try:
            out.append(float(s))
        except ValueError:
            raise SweepError(f"{axis}: {s!r} is not a number") from None
    return tuple(out)


def _ints(axis: str, text: str) -> tuple[int, ...]:
    out = []
    for s in _split(axis, text):
        try:
            out.append(int(s))
        except ValueError:
            raise SweepError(f"{axis}: {s!r} is not a whole number") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One run of the grid."""

    fleet: float
    prep: float
    tick: float
    policy: str
    seed: int

    @property
    def group(self) -> tuple[float, float, float, str]:
        """The point without its seed: the key of its summary row."""
        return (self.fleet, self.prep, self.tick, self.policy)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet,
            "prep": self.prep,
            "tick": self.tick,
            "policy": self.policy,
            "seed": self.seed,
        }


@dataclass(frozen=True, slots=True)
class SweepGrid:
    """The values of each axis (see the module docstring) and the engine ``mode``.

    Every axis needs at least one value and no repeats; scales are > 0, ticks >= 1 s,
    seeds >= 0 and policies must be available. Violations raise :class:`SweepError` here,
    before any work.
    """

    fleet: tuple[float, ...] = (1.0,)
    prep: tuple[float, ...] = (1.0,)
    tick: tuple[float, ...] = (60.0,)
    policy: tuple[str, ...] = ("bundling",)
    seed: tuple[int, ...] = (0,)
    mode: Mode = "mdrp"

    def __post_init__(self) -> None:
        for axis in AXES:
            object.__setattr__(self, axis, tuple(getattr(self, axis)))
            _distinct("seeds" if axis == "seed" else axis, getattr(self, axis))
        _positive("fleet", self.fleet, "a fleet scale")
        _positive("prep", self.prep, "a preparation time scale")
        _positive("tick", self.tick, "a tick (seconds)")
        for t in self.tick:
            if t < MIN_TICK_S:
                raise SweepError(f"tick: a tick (seconds) must be >= {MIN_TICK_S:g}, got {t:g}")
        for s in self.seed:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise SweepError(f"seeds: seeds are whole numbers >= 0, got {s!r}")
        if self.mode not in ("mdrp", "free"):
            raise SweepError(f"mode: must be mdrp or free, got {self.mode!r}")
        for name in self.policy:
            try:
                modes = policy_modes(make_policy(name))
            except PolicyUnavailable as e:
                raise SweepError(f"policy: {e.args[0] if e.args else e}") from None
            if self.mode not in modes:
                raise SweepError(f"policy: {name} runs in {' or '.join(modes)} mode only")

    @classmethod
    def parse(
        cls,
        fleet: str | None = None,
        prep: str | None = None,
        tick: str | None = None,
        policy: str | None = None,
        seeds: str | None = None,
        mode: str = "mdrp",
    ) -> SweepGrid:
        """A grid from comma-separated lists (``"0.8,1.0,1.2"``); ``None`` keeps the
        default of that axis."""
        kw: dict[str, Any] = {}
        if fleet is not None:
            kw["fleet"] = _floats("fleet", fleet)
        if prep is not None:
            kw["prep"] = _floats("prep", prep)
        if tick is not None:
            kw["tick"] = _floats("tick", tick)
        if policy is not None:
            kw["policy"] = tuple(_split("policy", policy))
        if seeds is not None:
            kw["seed"] = _ints("seeds", seeds)
        if mode not in ("mdrp", "free"):
            raise SweepError(f"mode: must be mdrp or free, got {mode!r}")
        m: Mode = "mdrp" if mode == "mdrp" else "free"
        return cls(mode=m, **kw)

    def points(self) -> list[SweepPoint]:
        """Every run, in grid order (fleet outermost, seed innermost)."""
        return [
            SweepPoint(f, p, t, pol, s)
            for f, p, t, pol, s in itertools.product(
                self.fleet, self.prep, self.tick, self.policy, self.seed
            )
        ]

    @property
    def size(self) -> int:
        return len(self.fleet) * len(self.prep) * len(self.tick) * len(self.policy) * len(self.seed)

    def as_dict(self) -> dict[str, Any]:
        return {a: list(getattr(self, a)) for a in AXES} | {"mode": self.mode}


# --------------------------------------------------------------------------- transforms


def _apportion(counts: Sequence[int], factor: float) -> list[int]:
    """``counts`` scaled by ``factor`` to whole numbers summing to exactly
    ``max(1, round(sum x factor))`` (largest remainder, ties to the earlier block)."""
    total = sum(counts)
    if total == 0:
        return list(counts)
    target = max(1, round(total * factor))
    exact = [c * target / total for c in counts]
    out = [math.floor(x) for x in exact]
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: target - sum(out)]:
        out[i] += 1
    return out


def scale_city_fleet(config: CityConfig, factor: float) -> CityConfig:
    """The city with ``round(couriers x factor)`` couriers (at least one), spread over
    its shift blocks in proportion to their size (largest remainder; the block that
    ends last keeps at least one courier); demand and everything else unchanged."""
    if not (math.isfinite(factor) and factor > 0):
        raise SweepError(f"fleet: a fleet scale must be > 0, got {factor:g}")
    if factor == 1.0:
        return config
    shifts = config.fleet.shifts
    counts = _apportion([s.couriers for s in shifts], factor)
    # keep the day covered to its end: the latest-ending staffed block stays staffed
    staffed = [i for i, s in enumerate(shifts) if s.couriers]
    last = max(staffed, key=lambda i: (shifts[i].end_min, -i))
    if counts[last] == 0:
        donor = max(range(len(counts)), key=lambda i: (counts[i], -i))
        counts[donor] -= 1
        counts[last] += 1
    new = tuple(replace(s, couriers=n) for s, n in zip(shifts, counts, strict=True))
    return replace(config, fleet=replace(config.fleet, shifts=new))


def _jitter(place: Place, dx: float, dy: float, kind: str) -> Place:
    a, b = place.point
    if kind == "city":  # (lat, lon) degrees
        lat = a + dy / 111_320.0
        lon = b + dx / (111_320.0 * max(math.cos(math.radians(a)), 1e-6))
        return Place((round(lat, 6), round(lon, 6)), place.id)
    return Place((round(a + dx, 1), round(b + dy, 1)), place.id)


def scale_fleet(
    scenario: Scenario, factor: float, seed: int = 0, jitter_m: float = JITTER_M
) -> Scenario:
    """``scenario`` with ``max(1, round(couriers x factor))`` couriers.

    Below 1: the first ones of a permutation of the couriers drawn from ``seed`` (so a
    smaller fleet is a subset of a larger one). Above 1: all couriers, then duplicates
    of the couriers in that permutation order (round-robin): the same shift, a start
    position moved by a normal ``jitter_m`` per axis and the id ``"<id>~<copy>"``.
    The same scenario, factor and seed always give the same fleet.
    """
    if not (math.isfinite(factor) and factor > 0):
        raise SweepError(f"fleet: a fleet scale must be > 0, got {factor:g}")
    couriers = scenario.couriers
    n = len(couriers)
    if factor == 1.0 or n == 0:
        return scenario
    target = max(1, round(n * factor))
    rng_pick, rng_jitter = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0xF1EE7]).spawn(2)
    )
    perm = [int(i) for i in rng_pick.permutation(n)]
    if target <= n:
        keep = sorted(perm[:target])
        chosen = [couriers[i] for i in keep]
    else:
        chosen = list(couriers)
        taken = {c.id for c in couriers}
        extra = target - n
        shifts = rng_jitter.normal(0.0, jitter_m, size=(extra, 2))
        for j in range(extra):
            src: Courier = couriers[perm[j % n]]
            copy = j // n + 1
            cid = f"{src.id}~{copy}"
            while cid in taken:
                copy += 1
                cid = f"{src.id}~{copy}"
            taken.add(cid)
            pos = _jitter(src.position, float(shifts[j, 0]), float(shifts[j, 1]), scenario.kind)
            chosen.append(replace(src, id=cid, position=pos))
        chosen.sort(key=lambda c: (c.shift_start, c.id))
    return replace(scenario, couriers=tuple(chosen))


def scale_prep(scenario: Scenario, factor: float) -> Scenario:
    """``scenario`` with every order's preparation time (``ready_at - placed_at``) times
    ``factor``, rounded to whole seconds (whole minutes for MDRP instances, whose times
    are whole minutes)."""
    if not (math.isfinite(factor) and factor > 0):
        raise SweepError(f"prep: a preparation time scale must be > 0, got {factor:g}")
    if factor == 1.0:
        return scenario
    unit = 60.0 if scenario.kind == "mdrp" else 1.0

    def ready(o: Order) -> float:
        prep = max(o.ready_at - o.placed_at, 0.0) * factor
        return o.placed_at + round(prep / unit) * unit

    orders = tuple(replace(o, ready_at=ready(o)) for o in scenario.orders)
    return replace(scenario, orders=orders)


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class SweepSource:
    """A resolved scenario source, cheap to send to worker processes: a city config (the
    day is generated per run), an MDRP directory (read once per process) or a built
    scenario (pickled)."""

    kind: Literal["city", "mdrp", "scenario"]
    name: str
    city: CityConfig | None = None
    path: str | None = None
    scenario: Scenario | None = None

    def base(self, seed: int, fleet: float) -> Scenario:
        """The scenario of one run, fleet already scaled."""
        if self.kind == "city":
            assert self.city is not None
            city = scale_city_fleet(self.city, fleet)
            source = Path(self.path) if self.path else None
            return generate_city(city, city.seed + seed, source=source)
        if self.kind == "mdrp":
            assert self.path is not None
            return scale_fleet(_read_mdrp(self.path), fleet, seed)
        assert self.scenario is not None
        return scale_fleet(self.scenario, fleet, seed)


ScenarioSource = Path | str | CityConfig | Scenario | SweepSource | None
"""What :func:`run_sweep` accepts: a city file (``.toml``) or MDRP directory path, a
:class:`CityConfig`, a built :class:`Scenario`, or ``None`` for the built-in city."""


@lru_cache(maxsize=4)
def _read_mdrp(path: str) -> Scenario:
    return read_mdrp(path)


def resolve_source(source: ScenarioSource) -> SweepSource:
    """Check and load ``source`` (raises :class:`ScenarioError` for a bad path or file)."""
    if isinstance(source, SweepSource):
        return source
    if source is None:
        return SweepSource("city", default_city().name, city=default_city(),
                           path=str(default_city_path()))  # fmt: skip
    if isinstance(source, CityConfig):
        return SweepSource("city", source.name, city=source)
    if isinstance(source, Scenario):
        return SweepSource("scenario", source.name, scenario=source)
    p = Path(source)
    if is_mdrp_dir(p):
        return SweepSource("mdrp", _read_mdrp(str(p)).name, path=str(p))
    if not p.exists():
        raise ScenarioError(f"{p}: does not exist")
    if p.is_file() and is_city_file(p):
        city = load_city(p)
        return SweepSource("city", city.name, city=city, path=str(p))
    raise ScenarioError(
        f"{p}: not a known scenario (an MDRP directory needs restaurants.txt, orders.txt, "
        "couriers.txt and instance_parameters.txt; a generated city is a .toml file)"
    )


# --------------------------------------------------------------------------- running


def _run_one(task: tuple[SweepSource, SweepPoint, Mode]) -> dict[str, Any]:
    source, point, mode = task
    scenario = scale_prep(source.base(point.seed, point.fleet), point.prep)
    result = run_scenario(scenario, point.policy, mode=mode, seed=point.seed, tick_s=point.tick)
    kpis = {k: v for k, v in result.kpis.items() if k not in ("seed", "tick_s")}
    return point.as_dict() | kpis


def _mean(values: Iterable[Any]) -> float | None:
    xs = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return round(sum(xs) / len(xs), 4) if xs else None


def _summarise(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["fleet"], r["prep"], r["tick"], r["policy"]), []).append(r)
    out = []
    for (fleet, prep, tick, policy), rs in groups.items():
        row: dict[str, Any] = {"fleet": fleet, "prep": prep, "tick": tick, "policy": policy}
        row["seeds"] = len(rs)
        for key in rs[0]:
            if key not in _NOT_AVERAGED:
                row[key] = _mean(r[key] for r in rs)
        out.append(row)
    return out


@dataclass(frozen=True)
class SweepResult:
    """Runs in grid order (grid values then KPIs, minutes) and the per-point summary
    (means over seeds; ``seeds`` is the number of runs averaged)."""

    scenario: str
    kind: str
    grid: SweepGrid
    runs: list[dict[str, Any]]
    summary: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "kind": self.kind,
            "grid": self.grid.as_dict(),
            "runs": self.runs,
            "summary": self.summary,
        }

    def to_csv(self) -> str:
        """The runs as CSV (one row per run, columns in record order)."""
        columns: list[str] = []
        for r in self.runs:
            columns.extend(k for k in r if k not in columns)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns, lineterminator="\n")
        writer.writeheader()
        for r in self.runs:
            writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})
        return buf.getvalue()

    def write(self, out_dir: Path | str) -> dict[str, Path]:
        """Write ``sweep.json``, ``sweep.csv`` and ``sweep.html`` into ``out_dir``."""
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"json": d / "sweep.json", "csv": d / "sweep.csv", "html": d / "sweep.html"}
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        paths["json"].write_text(text, encoding="utf-8")
        paths["csv"].write_text(self.to_csv(), encoding="utf-8")
        paths["html"].write_text(render_html(self), encoding="utf-8")
        return paths


def run_sweep(
    scenario_source: ScenarioSource,
    grid: SweepGrid,
    processes: int = 1,
    progress: SweepProgress | None = None,
) -> SweepResult:
    """Run ``scenario_source`` at every point of ``grid``; see the module docstring.

    ``processes`` > 1 runs points in that many spawned worker processes (a script doing
    so needs the usual ``if __name__ == "__main__":`` guard); results come back in grid
    order either way. ``progress(done, total)`` is called after each run. A bad source
    (or a fleet scale that takes a city past its limits) raises :class:`ScenarioError`
    before any run.
    """
    source = resolve_source(scenario_source)
    if source.city is not None:
        for f in grid.fleet:  # a scaled fleet past the city limits fails here, not in a worker
            scale_city_fleet(source.city, f)
    tasks = [(source, p, grid.mode) for p in grid.points()]
    runs = map_in_order(_run_one, tasks, processes, progress)
    return SweepResult(source.name, source.kind, grid, runs, _summarise(runs))


# --------------------------------------------------------------------------- html

_W, _H = 560.0, 330.0
_BOX = (62.0, 40.0, _W - 16.0, _H - 52.0)
_DASHES = (None, "7 4", "2 3", "10 3 2 3", "4 4 1 4")
_X_LABEL = {
    "fleet": "fleet size scale (x couriers)",
    "prep": "preparation time scale",
    "tick": "dispatch tick (seconds)",
}


def fmt_value(value: Any, kind: str) -> str:
    """A KPI for a table cell: ``pct`` shares as percentages, ``min`` one decimal."""
    if value is None:
        return "–"
    if kind == "int":
        return f"{float(value):,.0f}"
    if kind == "pct":
        return f"{100 * float(value):.1f}%"
    if kind == "min":
        return f"{float(value):.1f}"
    return f"{float(value):,.2f}"


def _x_axis(grid: SweepGrid) -> str:
    return next((a for a in ("fleet", "prep", "tick") if len(getattr(grid, a)) > 1), "fleet")


def _series_label(policy: str, rest: dict[str, float], grid: SweepGrid) -> str:
    parts = [policy]
    for axis, v in rest.items():
        if len(getattr(grid, axis)) > 1:
            parts.append(f"{axis} {v:g}" + (" s" if axis == "tick" else "x"))
    return " · ".join(parts)


def _legend_rows(labels: Sequence[str]) -> list[list[tuple[float, int]]]:
    """Legend entries laid out in rows: (x offset, entry index) per row."""
    rows: list[list[tuple[float, int]]] = [[]]
    x = 0.0
    for i, label in enumerate(labels):
        w = 34 + 6.4 * len(label)
        if rows[-1] and _BOX[0] + x + w > _W - 8:
            rows.append([])
            x = 0.0
        rows[-1].append((x, i))
        x += w
    return rows


def _plot(result: SweepResult, key: str, ylabel: str, kind: str, plot_id: str) -> str:
    """``key`` of the summary against the first axis with several values (default fleet),
    one line per policy (colour) and combination of the other axes (dash); whiskers
    span the seeds' values."""
    grid = result.grid
    xa = _x_axis(grid)
    others = [a for a in ("fleet", "prep", "tick") if a != xa]
    combos = list(itertools.product(*(getattr(grid, a) for a in others)))
    series = [
        (ROUTES[pi % len(ROUTES)], _DASHES[ci % len(_DASHES)], policy,
         dict(zip(others, combo, strict=True)))
        for pi, policy in enumerate(grid.policy)
        for ci, combo in enumerate(combos)
    ]  # fmt: skip
    labels = [_series_label(policy, rest, grid) for _, _, policy, rest in series]
    rows = _legend_rows(labels)
    extra = 14.0 * (len(rows) - 1)
    svg = Svg(_W, _H + extra)
    xs = [float(v) for v in getattr(grid, xa)]
    spread: dict[tuple[Any, ...], list[float]] = {}
    for r in result.runs:
        v = r.get(key)
        if isinstance(v, int | float):
            spread.setdefault((r["fleet"], r["prep"], r["tick"], r["policy"]), []).append(v)
    values = [float(v) for r in result.summary if isinstance(v := r.get(key), int | float)]
    values += [v for vs in spread.values() for v in vs]
    if not values:
        svg.text(_W / 2, _H / 2, "no data", anchor="middle", size=14)
        return svg.render(plot_id, ylabel)
    lo_x, hi_x = min(xs), max(xs)
    pad = (hi_x - lo_x) * 0.06 or max(abs(lo_x) * 0.1, 0.1)
    peak = max(values) * 1.08
    top = min(1.0, max(0.1, math.ceil(peak * 10 - 1e-9) / 10)) if kind == "pct" else nice_top(peak)
    left, box_top, right, bottom = _BOX
    ax = Axes(svg, left, box_top + extra, right, bottom + extra, (lo_x - pad, hi_x + pad),
               (0.0, top))  # fmt: skip
    yfmt: Callable[[float], str] = (
        (lambda v: f"{100 * v:.0f}%") if kind == "pct" else (lambda v: f"{v:g}")
    )
    ax.frame(xs, lambda v: f"{v:g}", yfmt, _X_LABEL[xa], ylabel)
    for (colour, dash, policy, rest), label in zip(series, labels, strict=True):
        pts: list[tuple[float, float, dict[str, Any]]] = []
        for r in result.summary:
            if r["policy"] != policy or any(r[a] != rest[a] for a in others):
                continue
            v = r.get(key)
            if isinstance(v, int | float):
                pts.append((float(r[xa]), float(v), r))
        pts.sort(key=lambda t: t[0])
        for (x0, y0, _), (x1, y1, _) in itertools.pairwise(pts):
            svg.line(ax.x(x0), ax.y(y0), ax.x(x1), ax.y(y1), colour, width=2.0, dash=dash)
        for x, y, r in pts:
            seeds = spread.get((r["fleet"], r["prep"], r["tick"], r["policy"]), [])
            tip = f"{label}, {xa} {x:g}: {ylabel} {fmt_value(y, kind)}"
            if len(seeds) > 1:
                svg.line(ax.x(x), ax.y(min(seeds)), ax.x(x), ax.y(max(seeds)), colour)
                lo, hi = fmt_value(min(seeds), kind), fmt_value(max(seeds), kind)
                tip += f" (seeds {lo} to {hi})"
            svg.circle(ax.x(x), ax.y(y), 3.5, colour, stroke="#fff", tip=tip)
    for row_no, row in enumerate(rows):
        ly = 16.0 + 14.0 * row_no
        for dx, i in row:
            colour, dash, _, _ = series[i]
            lx = left + dx
            svg.line(lx, ly - 4, lx + 18, ly - 4, colour, width=2.0, dash=dash)
            svg.text(lx + 22, ly, labels[i], size=11, fill=INK)
    return svg.render(plot_id, ylabel)


_PLOTS = (
    ("c2d_mean", "click-to-door mean (min)", "min", "Click-to-door",
     "Mean minutes from order to door of delivered orders; whiskers span the seeds."),
    ("late_share", "late share", "pct", "Late deliveries",
     "Share of delivered orders later than the promise."),
    ("cost_per_order", "cost per order", "num", "Cost per order",
     "Courier pay (per order, or the hourly guarantee) over delivered orders."),
    ("delivered_share", "delivered share", "pct", "Delivered",
     "Share of the day's orders delivered."),
)  # fmt: skip

_EXTRA_CSS = """
table.sweep { border-collapse: collapse; width: 100%; background: #fff;
  border: 1px solid #e4e7eb; border-radius: 8px; font-variant-numeric: tabular-nums; }
table.sweep th, table.sweep td { padding: 4px 10px; border-bottom: 1px solid #e4e7eb; }
table.sweep th { text-align: left; color: #52606d; font-weight: 600; }
table.sweep td.n { text-align: right; }
"""


def _summary_table(result: SweepResult) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in ("fleet", "prep", "tick (s)", "policy", "seeds"))
    head += "".join(f"<th>{esc(label)}</th>" for _, label, _ in SUMMARY_COLUMNS)
    rows = []
    for r in result.summary:
        cells = [f"{r['fleet']:g}x", f"{r['prep']:g}x", f"{r['tick']:g}", r["policy"]]
        body = "".join(f"<td>{esc(str(c))}</td>" for c in cells)
        body += f'<td class="n">{r["seeds"]}</td>'
        body += "".join(
            f'<td class="n" data-kpi="{key}">{esc(fmt_value(r.get(key), kind))}</td>'
            for key, _, kind in SUMMARY_COLUMNS
        )
        rows.append(f"<tr>{body}</tr>")
    return (
        f'<table class="sweep"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def render_html(result: SweepResult) -> str:
    """The sweep page: the summary table and KPI-vs-grid plots, inline SVG only."""
    grid = result.grid

    def card(heading: str, body: str, caption: str) -> str:
        return (
            f'<figure class="card"><h3>{esc(heading)}</h3>{body}'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )

    plots = "".join(
        card(title, _plot(result, key, label, kind, f"plot-{key}"), caption)
        for key, label, kind, title, caption in _PLOTS
    )
    axes = " · ".join(
        f"{a} {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in getattr(grid, a))}"
        for a in AXES
    )
    sub = f"{result.kind} {result.scenario} · mode {grid.mode} · {len(result.runs)} runs · {axes}"
    heading = f"What-if sweep: {result.scenario}"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(heading)}</title>
<style>{CSS}{_EXTRA_CSS}</style>
</head>
<body>
<main>
<header>
<h1>{esc(heading)}</h1>
<p class="sub">{esc(sub)}</p>
</header>
<h2>Means over seeds</h2>
{_summary_table(result)}
<h2>KPIs across the grid</h2>
<section class="grid">{plots}</section>
<footer>o2o sweep · every run's KPIs are in sweep.json and sweep.csv ·
self-contained page: inline SVG, no scripts, nothing loaded from the network.</footer>
</main>
</body>
</html>
"""

"""One self-contained HTML report of a simulated day: KPIs, plots and a map.

:func:`write_report` turns a :class:`~simulations.run.RunResult` and its scenario into a
single ``report.html`` that needs nothing else: the plots and maps are inline SVG drawn
here (no plotting library, no scripts, no fonts or images fetched), hover tooltips are SVG
``<title>`` elements. It holds

- headline tiles and the KPI table (minutes, shares as percentages);
- click-to-door distribution; orders by hour placed (on time / late / undelivered);
  couriers on shift and busy through the day; courier utilisation distribution;
- a map of the day: demand per hex cell (H3 cells for lat/lon scenarios, a planar hex
  grid for MDRP's metre coordinates) and the routes of a sample of couriers.

Times on the axes are the scenario's clock: time of day for generated cities, time
since the start of the instance for MDRP. ``render_report`` returns the HTML text
without writing anything.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h3
import numpy as np
import numpy.typing as npt

from geo.cells import cell_counts
from geo.coords import LocalFrame
from simulations.run import RunResult
from simulations.scenarios.base import Scenario

__all__ = ["render_report", "write_report"]

FloatArray = npt.NDArray[np.float64]
XY = tuple[float, float]

INK = "#1f2933"
MUTED = "#52606d"
GRID = "#e4e7eb"
ON_TIME = "#3b82c4"
LATE = "#f29d38"
OVER_MAX = "#d64545"
UNDELIVERED = "#9aa5b1"
BUSY = "#3b82c4"
SHIFT = "#9aa5b1"
HEAT = ("#fff5d6", "#fee39b", "#fdc46a", "#fb9a47", "#f0682f", "#d6402b", "#a8232a")
ROUTES = (
    "#1f77b4", "#e6550d", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#393b79",
)  # fmt: skip


# --------------------------------------------------------------------------- svg


def _n(v: float) -> str:
    """A coordinate for SVG: one decimal, no trailing zeros."""
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def esc(s: str) -> str:
    return html.escape(s, quote=True)


class Svg:
    """A tiny SVG writer: shapes in pixel coordinates, ``<title>`` tooltips."""

    def __init__(self, width: float, height: float) -> None:
        self.width = width
        self.height = height
        self.parts: list[str] = []

    def _el(self, tag: str, attrs: dict[str, str | float | None], tip: str | None) -> None:
        text = " ".join(
            f'{k}="{_n(v) if isinstance(v, float) else esc(str(v))}"'
            for k, v in attrs.items()
            if v is not None
        )
        if tip:
            self.parts.append(f"<{tag} {text}><title>{esc(tip)}</title></{tag}>")
        else:
            self.parts.append(f"<{tag} {text}/>")

    def rect(
        self, x: float, y: float, w: float, h: float, fill: str, *,
        stroke: str | None = None, opacity: float | None = None, tip: str | None = None,
    ) -> None:  # fmt: skip
        attrs: dict[str, str | float | None] = {"x": x, "y": y, "width": max(w, 0.0)}
        attrs |= {"height": max(h, 0.0), "fill": fill, "stroke": stroke, "opacity": opacity}
        self._el("rect", attrs, tip)

    def line(
        self, x1: float, y1: float, x2: float, y2: float, stroke: str, *,
        width: float = 1.0, dash: str | None = None,
    ) -> None:  # fmt: skip
        attrs: dict[str, str | float | None] = {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
        attrs |= {"stroke": stroke, "stroke-width": width, "stroke-dasharray": dash}
        self._el("line", attrs, None)

    def path(
        self, points: Sequence[XY], *, stroke: str | None = None, fill: str = "none",
        width: float = 1.5, opacity: float | None = None, closed: bool = False,
        tip: str | None = None,
    ) -> None:  # fmt: skip
        if len(points) < 2:
            return
        d = "M" + " L".join(f"{_n(x)},{_n(y)}" for x, y in points) + (" Z" if closed else "")
        attrs: dict[str, str | float | None] = {"d": d, "fill": fill, "stroke": stroke}
        attrs |= {"stroke-width": width if stroke else None, "opacity": opacity}
        attrs |= {"stroke-linejoin": "round", "stroke-linecap": "round"}
        self._el("path", attrs, tip)

    def circle(
        self, x: float, y: float, r: float, fill: str, *, stroke: str | None = None,
        width: float = 1.0, tip: str | None = None,
    ) -> None:  # fmt: skip
        attrs: dict[str, str | float | None] = {"cx": x, "cy": y, "r": r, "fill": fill}
        attrs |= {"stroke": stroke, "stroke-width": width if stroke else None}
        self._el("circle", attrs, tip)

    def text(
        self, x: float, y: float, s: str, *, size: float = 12.0, anchor: str = "start",
        fill: str = MUTED, weight: str | None = None, rotate: float | None = None,
    ) -> None:  # fmt: skip
        transform = f"rotate({_n(rotate)} {_n(x)} {_n(y)})" if rotate is not None else None
        attrs: dict[str, str | float | None] = {"x": x, "y": y, "font-size": size}
        attrs |= {"text-anchor": anchor, "fill": fill, "font-weight": weight}
        attrs |= {"transform": transform}
        text = " ".join(
            f'{k}="{_n(v) if isinstance(v, float) else esc(str(v))}"'
            for k, v in attrs.items()
            if v is not None
        )
        self.parts.append(f"<text {text}>{esc(s)}</text>")

    def render(self, element_id: str, label: str) -> str:
        return (
            f'<svg id="{esc(element_id)}" class="plot" viewBox="0 0 {_n(self.width)} '
            f'{_n(self.height)}" role="img" aria-label="{esc(label)}" '
            f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif">'
            + "".join(self.parts)
            + "</svg>"
        )


def _nice(x: float) -> float:
    """The 1-2-2.5-5 x 10^k number nearest above ``x`` (> 0)."""
    if x <= 0:
        return 1.0
    mag = 10.0 ** math.floor(math.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * mag >= x - 1e-12:
            return m * mag
    return 10 * mag


def nice_top(v: float, n: int = 5) -> float:
    """A round upper axis limit at or above ``v`` (a multiple of the tick step)."""
    step = _nice(max(v, 1.0) / n)
    return math.ceil(max(v, 1.0) / step - 1e-9) * step


def _ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    step = _nice((hi - lo) / max(n, 1))
    start = math.ceil(lo / step - 1e-9) * step
    out = []
    v = start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def _time_ticks(lo_s: float, hi_s: float) -> list[float]:
    span_h = (hi_s - lo_s) / 3600.0
    step = next((s for s in (0.5, 1, 2, 3, 4, 6, 12) if span_h / s <= 9), 24)
    first = math.ceil(lo_s / (step * 3600.0)) * step * 3600.0
    return [float(t) for t in np.arange(first, hi_s + 1.0, step * 3600.0)]


def _int(v: float) -> str:
    return f"{v:,.0f}"


@dataclass
class Axes:
    """A plot area inside an :class:`Svg`: data ranges mapped to a pixel box."""

    svg: Svg
    left: float
    top: float
    right: float
    bottom: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    def x(self, v: float) -> float:
        lo, hi = self.xlim
        return self.left + (v - lo) / ((hi - lo) or 1.0) * (self.right - self.left)

    def y(self, v: float) -> float:
        lo, hi = self.ylim
        return self.bottom - (v - lo) / ((hi - lo) or 1.0) * (self.bottom - self.top)

    def frame(
        self,
        xticks: Iterable[float],
        xfmt: Callable[[float], str],
        yfmt: Callable[[float], str],
        xlabel: str,
        ylabel: str,
    ) -> None:
        s = self.svg
        for v in _ticks(*self.ylim, n=5):
            yy = self.y(v)
            s.line(self.left, yy, self.right, yy, GRID)
            s.text(self.left - 6, yy + 4, yfmt(v), size=11, anchor="end")
        s.line(self.left, self.bottom, self.right, self.bottom, MUTED)
        for v in xticks:
            xx = self.x(v)
            s.line(xx, self.bottom, xx, self.bottom + 4, MUTED)
            s.text(xx, self.bottom + 17, xfmt(v), size=11, anchor="middle")
        s.text((self.left + self.right) / 2, self.bottom + 35, xlabel, size=12, anchor="middle")
        mid = (self.top + self.bottom) / 2
        s.text(14, mid, ylabel, size=12, anchor="middle", rotate=-90.0)


def _legend(svg: Svg, x: float, y: float, items: Sequence[tuple[str, str]]) -> None:
    """Colour swatches with labels in one row starting at (x, y)."""
    for colour, label in items:
        svg.rect(x, y - 9, 11, 11, colour)
        svg.text(x + 15, y, label, size=11.5)
        x += 26 + 6.6 * len(label)


# --------------------------------------------------------------------------- day data


@dataclass(frozen=True)
class _Day:
    """What the plots need, in seconds (times) and minutes (click-to-door)."""

    placed: FloatArray
    c2d_min: FloatArray  # NaN when undelivered
    t0: float
    t1: float
    clock: bool


def _day(result: RunResult, scenario: Scenario) -> _Day:
    orders = result.sim.orders
    placed = np.array([o.placed_at for o in scenario.orders], dtype=np.float64)
    done = [orders[o.id].delivered_at for o in scenario.orders]
    c2d = np.array(
        [
            np.nan if d is None else (d - o.placed_at) / 60.0
            for d, o in zip(done, scenario.orders, strict=True)
        ],
        dtype=np.float64,
    )
    delivered = [o.delivered_at for o in orders.values() if o.delivered_at is not None]
    starts = [*placed.tolist(), *(c.shift_start for c in scenario.couriers)]
    ends = [*delivered, *(c.shift_end for c in scenario.couriers), *placed.tolist()]
    t0 = math.floor(min(starts, default=0.0) / 3600.0) * 3600.0
    t1 = max(t0 + 3600.0, math.ceil(max(ends, default=0.0) / 3600.0) * 3600.0)
    return _Day(placed, c2d, t0, t1, scenario.kind != "mdrp")


def _time_fmt(day: _Day) -> Callable[[float], str]:
    def fmt(t: float) -> str:
        h, m = int(t // 3600), int(t % 3600 // 60)
        return f"{h:02d}:{m:02d}" if day.clock else (f"{h}h" if m == 0 else f"{h}h{m:02d}")

    return fmt


def _time_label(day: _Day) -> str:
    return "time of day" if day.clock else "time since the start of the instance"


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


# --------------------------------------------------------------------------- plots

_W, _H = 560.0, 330.0
_BOX = (58.0, 34.0, _W - 16.0, _H - 52.0)


def _c2d_histogram(day: _Day, scenario: Scenario) -> str:
    target = scenario.params.target_c2d_s / 60.0
    maximum = scenario.params.max_c2d_s / 60.0
    c2d = day.c2d_min[~np.isnan(day.c2d_min)]
    svg = Svg(_W, _H)
    if c2d.size == 0:
        svg.text(_W / 2, _H / 2, "no order was delivered", anchor="middle", size=14)
        return svg.render("plot-c2d", "click-to-door distribution")
    top = max(float(np.percentile(c2d, 99.5)), target * 1.25)
    width = 2.0 if top <= 100 else 5.0 if top <= 250 else 10.0
    edges = np.arange(0.0, math.ceil(top / width) * width + width, width)
    counts, _ = np.histogram(np.minimum(c2d, edges[-1] - 1e-9), edges)
    ax = Axes(svg, *_BOX, (0.0, float(edges[-1])), (0.0, nice_top(float(counts.max()) * 1.08)))
    ax.frame(_ticks(0.0, float(edges[-1]), 8), _int, _int, "click-to-door (minutes)", "orders")
    for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True):
        mid = (lo + hi) / 2
        colour = ON_TIME if mid <= target else LATE if mid <= maximum else OVER_MAX
        last = hi >= edges[-1]
        label = f"{lo:g} min or more: {n} orders" if last else f"{lo:g}-{hi:g} min: {n} orders"
        x0, x1 = ax.x(float(lo)) + 0.5, ax.x(float(hi)) - 0.5
        svg.rect(x0, ax.y(float(n)), x1 - x0, ax.bottom - ax.y(float(n)), colour, tip=label)
    tx = ax.x(target)
    svg.line(tx, ax.top, tx, ax.bottom, INK, width=1.2, dash="4 3")
    svg.text(tx + 4, ax.top + 10, f"target {target:g} min", size=11, fill=INK)
    p50, p90 = np.percentile(c2d, [50, 90])
    late = float(np.mean(c2d > target + 1e-9))
    svg.text(
        _W - 16, 18, f"median {p50:.1f} min · p90 {p90:.1f} min · {_pct(late)} late",
        size=12, anchor="end", fill=INK,
    )  # fmt: skip
    _legend(svg, _BOX[0], 18, [(ON_TIME, "on time"), (LATE, "late"), (OVER_MAX, "over max")])
    return svg.render("plot-c2d", "click-to-door distribution")


def _lateness_by_hour(day: _Day, scenario: Scenario) -> str:
    target = scenario.params.target_c2d_s / 60.0
    svg = Svg(_W, _H)
    if day.placed.size == 0:
        svg.text(_W / 2, _H / 2, "no orders", anchor="middle", size=14)
        return svg.render("plot-lateness", "orders by hour placed")
    hours = np.floor(day.placed / 3600.0).astype(np.int64)
    h0, h1 = int(hours.min()), int(hours.max()) + 1
    undelivered = np.isnan(day.c2d_min)
    late = ~undelivered & (np.nan_to_num(day.c2d_min) > target + 1e-9)
    rows = []
    for h in range(h0, h1):
        m = hours == h
        n_late, n_und = int((m & late).sum()), int((m & undelivered).sum())
        rows.append((h, int(m.sum()) - n_late - n_und, n_late, n_und))
    ymax = nice_top(max(r[1] + r[2] + r[3] for r in rows) * 1.12)
    ax = Axes(svg, *_BOX, (h0 * 3600.0, h1 * 3600.0), (0.0, ymax))
    ax.frame(
        _time_ticks(h0 * 3600.0, h1 * 3600.0),
        _time_fmt(day),
        _int,
        _time_label(day),
        "orders placed",
    )
    fmt = _time_fmt(day)
    bar = ax.x(3600.0 + h0 * 3600.0) - ax.x(h0 * 3600.0)
    for h, ok, n_late, n_und in rows:
        x0 = ax.x(h * 3600.0) + bar * 0.12
        base = 0.0
        total = ok + n_late + n_und
        tip = f"{fmt(h * 3600.0)}: {total} orders, {n_late} late, {n_und} undelivered"
        for n, colour in ((ok, ON_TIME), (n_late, LATE), (n_und, UNDELIVERED)):
            if n:
                svg.rect(
                    x0, ax.y(base + n), bar * 0.76, ax.y(base) - ax.y(base + n), colour, tip=tip
                )
            base += n
        if total and bar >= 22:
            share = (n_late + n_und) / total
            svg.text(x0 + bar * 0.38, ax.y(total) - 4, _pct(share), size=10, anchor="middle")
    svg.text(_W - 16, 18, "labels: share late or undelivered", size=11, anchor="end")
    _legend(svg, _BOX[0], 18, [(ON_TIME, "on time"), (LATE, "late"), (UNDELIVERED, "undelivered")])
    return svg.render("plot-lateness", "orders by hour placed: on time, late, undelivered")


def _busy_intervals(result: RunResult, scenario: Scenario) -> dict[str, list[tuple[float, float]]]:
    """Per courier, merged intervals from a bundle's assignment to its last drop-off."""
    sim = result.sim
    half_drop = scenario.params.dropoff_service_s / 2.0
    raw: dict[str, list[tuple[float, float]]] = {}
    for v in sim.pickups:
        start = min(sim.assigned_at.get(o, v.arrival) for o in v.order_ids)
        drops = [sim.orders[o].delivered_at for o in v.order_ids]
        end = max((d for d in drops if d is not None), default=v.time) + half_drop
        raw.setdefault(v.courier_id, []).append((start, end))
    out: dict[str, list[tuple[float, float]]] = {}
    for cid, spans in raw.items():
        spans.sort()
        merged = [spans[0]]
        for a, b in spans[1:]:
            if a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        out[cid] = merged
    return out


def _count_over(grid: FloatArray, spans: Iterable[tuple[float, float]]) -> FloatArray:
    """How many of the half-open ``spans`` contain each grid time."""
    delta = np.zeros(grid.size + 1)
    for a, b in spans:
        delta[np.searchsorted(grid, a, "left")] += 1
        delta[np.searchsorted(grid, b, "left")] -= 1
    out: FloatArray = np.cumsum(delta)[:-1]
    return out


def _couriers_over_day(day: _Day, result: RunResult, scenario: Scenario) -> str:
    grid = np.arange(day.t0, day.t1 + 1.0, 300.0)
    on = _count_over(grid, ((c.shift_start, c.shift_end) for c in scenario.couriers))
    busy = _count_over(grid, (s for v in _busy_intervals(result, scenario).values() for s in v))
    svg = Svg(_W, _H)
    ax = Axes(svg, *_BOX, (day.t0, day.t1), (0.0, nice_top(float(on.max(initial=0)) * 1.08)))
    ax.frame(_time_ticks(day.t0, day.t1), _time_fmt(day), _int, _time_label(day), "couriers")

    def steps(values: FloatArray) -> list[XY]:
        pts: list[XY] = []
        for i, v in enumerate(values):
            x0 = ax.x(float(grid[i]))
            x1 = ax.x(float(grid[i + 1])) if i + 1 < grid.size else x0
            pts += [(x0, ax.y(float(v))), (x1, ax.y(float(v)))]
        return pts

    pb = steps(busy)
    svg.path([(pb[0][0], ax.bottom), *pb, (pb[-1][0], ax.bottom)], fill=BUSY, opacity=0.35)
    svg.path(pb, stroke=BUSY, width=1.6)
    svg.path(steps(on), stroke=SHIFT, width=2.0, tip="couriers on shift")
    peak_on, peak_busy = int(on.max(initial=0)), int(busy.max(initial=0))
    svg.text(
        _W - 16, 18, f"peak {peak_on} on shift, {peak_busy} busy", size=12, anchor="end", fill=INK
    )
    _legend(svg, _BOX[0], 18, [(SHIFT, "on shift"), (BUSY, "busy (with orders)")])
    return svg.render("plot-couriers", "couriers on shift and busy over the day")


def _utilisation(result: RunResult, scenario: Scenario) -> FloatArray:
    """Per courier: (driving + pickup and drop-off service) / duty time."""
    sim = result.sim
    p = scenario.params
    visits: dict[str, int] = {}
    drops: dict[str, int] = {}
    for v in sim.pickups:
        visits[v.courier_id] = visits.get(v.courier_id, 0) + 1
    for o in sim.orders.values():
        if o.delivered_at is not None and o.courier_id:
            drops[o.courier_id] = drops.get(o.courier_id, 0) + 1
    out = []
    for c in scenario.couriers:
        duty = c.shift_end - c.shift_start
        if duty <= 0:
            continue
        drive = sum(m.arrival - m.departure for m in sim.moves.get(c.id, []))
        work = drive + visits.get(c.id, 0) * p.pickup_service_s
        work += drops.get(c.id, 0) * p.dropoff_service_s
        out.append(work / duty)
    return np.array(out, dtype=np.float64)


def _utilisation_histogram(result: RunResult, scenario: Scenario) -> str:
    u = _utilisation(result, scenario)
    svg = Svg(_W, _H)
    if u.size == 0:
        svg.text(_W / 2, _H / 2, "no couriers", anchor="middle", size=14)
        return svg.render("plot-utilisation", "courier utilisation")
    edges = np.linspace(0.0, 1.0, 21)
    counts, _ = np.histogram(np.clip(u, 0.0, 1.0 - 1e-9), edges)
    ax = Axes(svg, *_BOX, (0.0, 1.0), (0.0, nice_top(float(counts.max()) * 1.08)))
    ax.frame(
        _ticks(0.0, 1.0, 5), _pct, _int, "utilisation: driving + service / shift time", "couriers"
    )
    for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True):
        x0, x1 = ax.x(float(lo)) + 0.5, ax.x(float(hi)) - 0.5
        tip = f"{_pct(float(lo))}-{_pct(float(hi))}: {n} couriers"
        svg.rect(x0, ax.y(float(n)), x1 - x0, ax.bottom - ax.y(float(n)), BUSY, tip=tip)
    mean = float(u.mean())
    svg.line(
        ax.x(min(mean, 1.0)), ax.top, ax.x(min(mean, 1.0)), ax.bottom, INK, width=1.2, dash="4 3"
    )
    idle = int((u == 0).sum())
    svg.text(
        _W - 16, 18, f"mean {_pct(mean)} · {len(u)} couriers · {idle} without orders",
        size=12, anchor="end", fill=INK,
    )  # fmt: skip
    return svg.render("plot-utilisation", "courier utilisation distribution")


# --------------------------------------------------------------------------- map


class _Projection:
    """Scenario points -> planar metres (lat/lon via a local frame; planar as is)."""

    def __init__(self, scenario: Scenario) -> None:
        self.latlon = scenario.travel.coords == "latlon"
        pts = [p.point for p in scenario.restaurants.values()] or [(0.0, 0.0)]
        lat0 = float(np.mean([p[0] for p in pts]))
        lon0 = float(np.mean([p[1] for p in pts]))
        self.frame = LocalFrame(lat0, lon0) if self.latlon else None

    def xy(self, points: Sequence[XY]) -> FloatArray:
        a = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if self.frame is None:
            return a
        x, y = self.frame.to_xy_array(a[:, 0], a[:, 1])
        return np.column_stack([x, y])


@dataclass(frozen=True)
class _View:
    """Planar metres -> map pixels (north up, equal scale on both axes)."""

    x0: float
    y0: float
    scale: float
    left: float
    top: float
    height: float

    def px(self, x: float, y: float) -> XY:
        return self.left + (x - self.x0) * self.scale, self.top + self.height - (
            y - self.y0
        ) * self.scale

    def many(self, xy: FloatArray) -> list[XY]:
        return [self.px(float(x), float(y)) for x, y in xy]


def _view(extent: FloatArray, width: float, height: float, pad: float) -> _View:
    lo, hi = extent.min(axis=0), extent.max(axis=0)
    span = np.maximum(hi - lo, 1.0)
    scale = min((width - 2 * pad) / span[0], (height - 2 * pad) / span[1])
    # centre the drawing in the box
    x0 = float(lo[0] - ((width - 2 * pad) / scale - span[0]) / 2)
    y0 = float(lo[1] - ((height - 2 * pad) / scale - span[1]) / 2)
    return _View(x0, y0, float(scale), pad, pad, height - 2 * pad)


def _auto_res(extent_m: float) -> int:
    """The H3 resolution whose cells are about 1/30 of the drawing across."""
    want = extent_m / 30.0
    return min(
        range(4, 12), key=lambda r: abs(math.log(h3.average_hexagon_edge_length(r, "m") / want))
    )


def _demand_hexes(
    scenario: Scenario, proj: _Projection, h3_res: int | None, extent_m: float
) -> tuple[list[tuple[FloatArray, int]], str]:
    """(hexagon in planar metres, orders) per occupied cell, and a caption."""
    drops = [o.dropoff.point for o in scenario.orders]
    if not drops:
        return [], "no orders"
    if proj.latlon:
        res = h3_res if h3_res is not None else _auto_res(extent_m)
        ll = np.asarray(drops, dtype=np.float64)
        counts = cell_counts(ll[:, 0], ll[:, 1], res)
        out = [
            (proj.xy([tuple(v) for v in h3.cell_to_boundary(cell)]), n)
            for cell, n in sorted(counts.items())
        ]
        edge = h3.average_hexagon_edge_length(res, "m")
        return out, f"H3 resolution {res} cells (edge about {edge:,.0f} m)"
    edge = _nice(extent_m / 30.0)
    xy = proj.xy(drops)
    # pointy-top axial coordinates, cube rounding
    q = (math.sqrt(3) / 3 * xy[:, 0] - xy[:, 1] / 3) / edge
    r = (2 / 3 * xy[:, 1]) / edge
    s = -q - r
    rq, rr, rs = np.round(q), np.round(r), np.round(s)
    dq, dr, ds = np.abs(rq - q), np.abs(rr - r), np.abs(rs - s)
    fix_q = (dq > dr) & (dq > ds)
    fix_r = ~fix_q & (dr > ds)
    rq = np.where(fix_q, -rr - rs, rq)
    rr = np.where(fix_r, -rq - rs, rr)
    cells: dict[tuple[int, int], int] = {}
    for cq, cr in zip(rq.astype(int).tolist(), rr.astype(int).tolist(), strict=True):
        cells[(cq, cr)] = cells.get((cq, cr), 0) + 1
    angles = np.radians(np.arange(6) * 60.0 + 30.0)
    hexes = []
    for (cq, cr), n in sorted(cells.items()):
        cx, cy = edge * math.sqrt(3) * (cq + cr / 2), edge * 1.5 * cr
        hexes.append((np.column_stack([cx + edge * np.cos(angles), cy + edge * np.sin(angles)]), n))
    return hexes, f"planar hex cells (edge {edge:,.0f} m)"


def _heat_breaks(max_count: int) -> list[int]:
    """Upper bounds of up to len(HEAT) colour classes covering 1..max_count."""
    want = max_count / len(HEAT)
    mag = 10 ** max(0, math.floor(math.log10(max(want, 1.0))))
    step = next(m * mag for m in (1, 2, 3, 4, 5, 6, 8, 10) if m * mag >= want)
    return [min(max_count, step * (i + 1)) for i in range(math.ceil(max_count / step))]


def _scale_bar(svg: Svg, view: _View, width: float, y: float) -> None:
    metres = _nice(width * 0.18 / view.scale)
    px = metres * view.scale
    x = view.left + 6
    svg.rect(x, y - 4, px, 4, INK)
    label = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    svg.text(x + px + 6, y, label, size=11, fill=INK)
    nx = width - view.left - 12
    svg.text(nx, view.top + 16, "N", size=12, anchor="middle", fill=INK, weight="600")
    svg.path(
        [(nx - 5, view.top + 30), (nx, view.top + 20), (nx + 5, view.top + 30)],
        stroke=INK,
        width=1.4,
    )


def _outline(svg: Svg, view: _View, area: FloatArray | None) -> None:
    if area is not None and len(area) >= 3:
        svg.path(view.many(area), stroke="#7b8794", fill="#f5f7fa", width=1.4, closed=True)


def _map_panels(
    result: RunResult,
    scenario: Scenario,
    service_area: Sequence[XY] | None,
    h3_res: int | None,
    max_routes: int,
) -> tuple[str, str, str, str]:
    """(demand SVG, its caption, routes SVG, its caption)."""
    proj = _Projection(scenario)
    area = None
    if service_area is not None and proj.latlon and len(service_area) >= 3:
        area = proj.xy([(lat, lon) for lon, lat in service_area])
    rest = proj.xy([p.point for p in scenario.restaurants.values()])
    drops = proj.xy([o.dropoff.point for o in scenario.orders])
    starts = proj.xy([c.position.point for c in scenario.couriers])
    parts = [a for a in (area, rest, drops, starts) if a is not None and len(a)]
    extent = np.vstack(parts) if parts else np.zeros((1, 2))
    span = float(np.max(extent.max(axis=0) - extent.min(axis=0)))
    hexes, caption = _demand_hexes(scenario, proj, h3_res, span)
    if hexes:
        extent = np.vstack([extent, *(h for h, _ in hexes)])
    size, pad = 540.0, 16.0
    view = _view(extent, size, size, pad)

    # demand heat map
    heat = Svg(size, size + 34)
    _outline(heat, view, area)
    max_n = max((n for _, n in hexes), default=1)
    breaks = _heat_breaks(max_n)
    colour_of = [
        HEAT[round(i * (len(HEAT) - 1) / max(len(breaks) - 1, 1))] for i in range(len(breaks))
    ]
    for poly, n in hexes:
        k = next(i for i, b in enumerate(breaks) if n <= b)
        heat.path(
            view.many(poly),
            fill=HEAT[k],
            stroke="#ffffff",
            width=0.6,
            closed=True,
            tip=f"{n} orders",
        )
    if area is not None and len(area) >= 3:
        heat.path(view.many(area), stroke="#52606d", width=1.2, closed=True)
    for x, y in view.many(rest):
        heat.rect(x - 2.0, y - 2.0, 4.0, 4.0, INK, stroke="#ffffff")
    _scale_bar(heat, view, size, size - 8)
    lx, ly = pad, size + 22
    heat.text(lx, ly, "orders per cell", size=11.5, fill=INK)
    lx += 92
    lo = 1
    for k, b in enumerate(breaks):
        heat.rect(lx, ly - 10, 14, 12, colour_of[k], stroke="#cbd2d9")
        label = f"{lo}" if lo == b else f"{lo}-{b}"
        heat.text(lx + 17, ly, label, size=11)
        lx += 24 + 6.4 * len(label)
        lo = b + 1
    heat.rect(size - pad - 84, size - 16, 6, 6, INK, stroke="#ffffff")
    heat.text(size - pad, size - 9, "pickup places", size=11, anchor="end")
    demand_caption = f"Orders by customer location, {caption}; squares are restaurants and stores."

    # routes of a sample of couriers
    sim = result.sim
    moving = [c for c in scenario.couriers if sim.moves.get(c.id)]
    k = min(max_routes, len(moving))
    picked = (
        [moving[int(i)] for i in np.unique(np.round(np.linspace(0, len(moving) - 1, k)))]
        if k
        else []
    )
    delivered: dict[str, int] = {}
    for o in sim.orders.values():
        if o.delivered_at is not None and o.courier_id:
            delivered[o.courier_id] = delivered.get(o.courier_id, 0) + 1
    rows = math.ceil(len(picked) / 2)
    routes = Svg(size, size + 12 + 18 * rows)
    _outline(routes, view, area)
    for x, y in view.many(rest):
        routes.circle(x, y, 1.4, "#b6bec8")
    fmt = _time_fmt(_day(result, scenario))
    for i, c in enumerate(picked):
        colour = ROUTES[i % len(ROUTES)]
        moves = sim.moves[c.id]
        pts = proj.xy([moves[0].origin_point, *(m.destination_point for m in moves)])
        px = view.many(pts)
        label = f"{c.id} {fmt(c.shift_start)}-{fmt(c.shift_end)}, {delivered.get(c.id, 0)} orders"
        routes.path(px, stroke=colour, width=1.7, opacity=0.85, tip=label)
        routes.circle(*px[0], 3.6, "#ffffff", stroke=colour, width=1.8, tip=f"{c.id} start")
        for m, (x, y) in zip(moves, px[1:], strict=True):
            if m.destination in scenario.restaurants:
                routes.rect(x - 2.6, y - 2.6, 5.2, 5.2, colour)
            else:
                routes.circle(x, y, 2.2, colour)
        row, col = divmod(i, 2)
        lx, ly = pad + col * (size / 2), size + 16 + 18 * row
        routes.rect(lx, ly - 9, 14, 4, colour)
        routes.text(lx + 20, ly - 3, label, size=11)
    _scale_bar(routes, view, size, size - 8)
    n_all = len(moving)
    routes_caption = (
        f"Routes of {len(picked)} of the {n_all} couriers who drove (spread over the shift "
        "blocks): ○ start, ■ pickup, ● drop-off; grey dots are pickup places."
    )
    return (
        heat.render("map-demand", "demand heat map"),
        demand_caption,
        routes.render("map-routes", "courier routes"),
        routes_caption,
    )


# --------------------------------------------------------------------------- kpis

_KPI_GROUPS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("Orders", (
        ("orders", "orders", "int"),
        ("delivered", "delivered", "int"),
        ("delivered_share", "delivered share", "pct"),
        ("never_assigned", "never assigned", "int"),
        ("stuck", "stuck (engine bug if > 0)", "int"),
    )),
    ("Click-to-door (minutes)", (
        ("c2d_mean", "mean", "min"),
        ("c2d_p10", "p10", "min"),
        ("c2d_p50", "median", "min"),
        ("c2d_p90", "p90", "min"),
        ("c2d_max", "max", "min"),
        ("late_share", "late (over target)", "pct"),
        ("overage_mean", "mean overage", "min"),
        ("over_max_share", "over the maximum", "pct"),
    )),
    ("Food and couriers", (
        ("ready_to_pickup_mean", "ready to pickup, mean (min)", "min"),
        ("ready_to_door_mean", "ready to door, mean (min)", "min"),
        ("couriers", "couriers", "int"),
        ("courier_hours", "courier hours", "num"),
        ("utilisation", "utilisation", "pct"),
        ("orders_per_courier_hour", "orders per courier hour", "num"),
        ("bundles", "bundles (pickup visits)", "int"),
        ("orders_per_bundle", "orders per bundle", "num"),
    )),
    ("Cost and run", (
        ("courier_pay_total", "courier pay, total", "num"),
        ("cost_per_order", "cost per order", "num"),
        ("guarantee_share", "couriers on the hourly guarantee", "pct"),
        ("violations", "MDRP rule violations", "int"),
        ("rejected_decisions", "rejected decisions", "int"),
        ("events", "events", "int"),
        ("ticks", "dispatcher ticks", "int"),
        ("wall_s", "run time (s)", "num"),
    )),
)  # fmt: skip


def _fmt_kpi(value: float | int | None, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "int":
        return _int(float(value))
    if kind == "pct":
        return f"{100 * float(value):.1f}%"
    if kind == "min":
        return f"{float(value):.1f}"
    return f"{float(value):,.2f}"


def _kpi_tables(result: RunResult) -> str:
    k = result.kpis
    out = []
    for title, rows in _KPI_GROUPS:
        body = "".join(
            f'<tr><th scope="row">{esc(label)}</th><td data-kpi="{key}">'
            f"{_fmt_kpi(k.get(key), kind)}</td></tr>"
            for key, label, kind in rows
            if key in k
        )
        out.append(f'<table class="kpis"><caption>{esc(title)}</caption>{body}</table>')
    return '<div class="kpi-grid">' + "".join(out) + "</div>"


def _tiles(result: RunResult, scenario: Scenario) -> str:
    k = result.kpis
    target = scenario.params.target_c2d_s / 60.0
    late = k.get("late_share")
    on_time = None if late is None else 1.0 - float(late)

    def kpi(key: str, kind: str) -> str:
        return _fmt_kpi(k.get(key), kind)

    tiles = [
        ("delivered", kpi("delivered_share", "pct"),
         f"{kpi('delivered', 'int')} of {kpi('orders', 'int')} orders"),
        ("on time", _fmt_kpi(on_time, "pct"), f"of delivered, within {target:g} min"),
        ("click-to-door", f"{kpi('c2d_p50', 'min')} min",
         f"median; p90 {kpi('c2d_p90', 'min')} min"),
        ("orders / courier hour", kpi("orders_per_courier_hour", "num"),
         f"utilisation {kpi('utilisation', 'pct')}"),
        ("cost per order", kpi("cost_per_order", "num"),
         f"pay total {kpi('courier_pay_total', 'num')}"),
    ]  # fmt: skip
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile"><div class="tile-label">{esc(a)}</div>'
            f'<div class="tile-value">{esc(b)}</div><div class="tile-note">{esc(c)}</div></div>'
            for a, b, c in tiles
        )
        + "</div>"
    )


# --------------------------------------------------------------------------- page

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f0f2f5; color: #1f2933;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 40px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; }
.sub { color: #52606d; margin: 0; }
.warn { background: #fde8e8; border: 1px solid #d64545; padding: 8px 12px; border-radius: 6px; }
.tiles { display: grid; grid-template-columns: repeat(5, 1fr); gap: 12px; margin-top: 18px; }
.tile, .card, .kpis { background: #fff; border: 1px solid #e4e7eb; border-radius: 8px; }
.tile { padding: 12px 14px; }
.tile-label { color: #52606d; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.tile-value { font-size: 26px; font-weight: 650; margin: 2px 0; }
.tile-note { color: #52606d; font-size: 12px; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px; }
.card { margin: 0; padding: 12px 14px 10px; }
.card h3 { font-size: 14px; margin: 0 0 4px; }
.card figcaption { color: #52606d; font-size: 12.5px; margin-top: 4px; }
svg.plot { width: 100%; height: auto; display: block; }
.kpi-grid { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 12px;
  align-items: start; }
.kpis { border-collapse: separate; border-spacing: 0; width: 100%; padding: 6px 10px 8px; }
.kpis caption { text-align: left; font-weight: 600; padding: 0 0 6px; }
.kpis th { text-align: left; font-weight: 400; color: #52606d; padding: 2px 8px 2px 0; }
.kpis td { text-align: right; font-variant-numeric: tabular-nums; padding: 2px 0; }
footer { color: #7b8794; font-size: 12px; margin-top: 28px; }
@media (max-width: 900px) { .grid, .kpi-grid, .tiles { grid-template-columns: 1fr; } }
"""


def render_report(
    result: RunResult,
    scenario: Scenario,
    *,
    service_area: Sequence[XY] | None = None,
    h3_res: int | None = None,
    max_routes: int = 8,
    title: str | None = None,
) -> str:
    """The report's HTML text; see :func:`write_report`."""
    k = result.kpis
    day = _day(result, scenario)
    demand, demand_caption, routes, routes_caption = _map_panels(
        result, scenario, service_area, h3_res, max_routes
    )
    kind = "generated city" if scenario.kind == "city" else f"{scenario.kind} instance"
    source = f" ({scenario.source})" if scenario.source else ""
    sub = (
        f"{kind}{source} · policy {result.sim.policy} · mode {result.sim.config.mode} · "
        f"seed {result.sim.config.seed} · {len(scenario.orders):,} orders · "
        f"{len(scenario.couriers):,} couriers · {len(scenario.restaurants):,} pickup places"
    )
    warn = ""
    if result.violations:
        warn = (
            f'<p class="warn">{len(result.violations)} MDRP rule violations: the simulator '
            "broke a rule (a bug); the figures below are not trustworthy.</p>"
        )
    target = scenario.params.target_c2d_s / 60.0

    def card(heading: str, body: str, caption: str) -> str:
        return (
            f'<figure class="card"><h3>{esc(heading)}</h3>{body}'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )

    plots = "".join(
        [
            card(
                "Click-to-door",
                _c2d_histogram(day, scenario),
                f"Minutes from order to door of delivered orders; the promise is {target:g} min. "
                "The last bar gathers the slowest 0.5 %.",
            ),
            card(
                "Lateness over the day",
                _lateness_by_hour(day, scenario),
                "Orders by the hour they were placed, split by outcome.",
            ),
            card(
                "Active couriers",
                _couriers_over_day(day, result, scenario),
                "Couriers on shift and couriers busy (from a bundle's assignment to its last "
                "drop-off), every 5 minutes.",
            ),
            card(
                "Courier utilisation",
                _utilisation_histogram(result, scenario),
                "Per courier: time driving or serving over shift time; waiting is idle. "
                "Dashed: the mean.",
            ),
        ]
    )
    maps = card("Demand", demand, demand_caption) + card("Courier routes", routes, routes_caption)
    heading = title or f"Delivery day: {scenario.name}"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(heading)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header>
<h1>{esc(heading)}</h1>
<p class="sub">{esc(sub)}</p>
</header>
{warn}
{_tiles(result, scenario)}
<h2>Key performance indicators</h2>
{_kpi_tables(result)}
<h2>The day</h2>
<section class="grid">{plots}</section>
<h2>Map of the day</h2>
<section class="grid">{maps}</section>
<footer>o2o simulate · {k.get("events", 0)} events, simulated in {k.get("wall_s", 0)} s ·
self-contained report: inline SVG, no scripts, nothing loaded from the network.</footer>
</main>
</body>
</html>
"""


def write_report(
    result: RunResult,
    scenario: Scenario,
    path: Path | str,
    *,
    service_area: Sequence[XY] | None = None,
    h3_res: int | None = None,
    max_routes: int = 8,
    title: str | None = None,
) -> Path:
    """Write the report of ``result`` (a run of ``scenario``) to ``path``; returns it.

    ``service_area``: the area's ring in GeoJSON ``(lon, lat)`` order, drawn on the maps
    (lat/lon scenarios only). ``h3_res``: resolution of the demand heat map (default:
    chosen from the map's size). ``max_routes``: couriers whose routes are drawn.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(
        result,
        scenario,
        service_area=service_area,
        h3_res=h3_res,
        max_routes=max_routes,
        title=title,
    )
    p.write_text(text, encoding="utf-8")
    return p

"""``o2o bench geo``: fusion quality against known truth, and its speed.

A seeded synthetic city (geo.synthetic) gives couriers driving, waiting at restaurant
counters with beacons and walking into buildings, with realistic, heavy-tailed and
time-correlated source noise plus invalid records. Every accepted observation yields a
fused estimate that is scored against the exact truth at that instant.

Baselines, scored at the same instants:

* ``gps_only``: the raw GPS fixes themselves (scored at their own timestamps).
* ``best_single``: what a system without fusion reports: the latest fix of the source
  kind with the smallest reported uncertainty among those still fresh.
* ``oracle_single``: the latest fresh fix with the smallest *true* error (an oracle no
  real system has; listed to show the head-room).

``by_phase`` breaks the fused error and calibration down by what the courier truly
did (driving, walking, waiting at a counter, indoors, ...), beside the best single source.
"""

from __future__ import annotations

import math
import time
from typing import Any

import h3
import numpy as np

from geo.coords import haversine_matrix_m
from geo.errors import InvalidObservation
from geo.estimate import R68_PER_SIGMA, R95_PER_SIGMA, Estimate, PositionFix
from geo.fusion import FusionConfig, FusionEngine
from geo.observations import observation_from_dict
from geo.sources.base import Unlocatable
from geo.synthetic import PHASES, Trace, TruthTrack, World, make_world, simulate_day
from geo.zones import Geofence, GeofenceMonitor

FRESH_S = {"gps": 2.0, "beacon": 3.0, "wifi": 12.0, "cell": 40.0}
"""How long a single source's last fix is still used by the no-fusion baseline."""
COUNTER_RADIUS_M = 3.0


def _errors_m(lat: list[float], lon: list[float], tlat: list[float], tlon: list[float]) -> Any:
    a = np.radians(np.asarray(lat))
    b = np.radians(np.asarray(tlat))
    dl = np.radians(np.asarray(lon) - np.asarray(tlon))
    h = np.sin((b - a) / 2) ** 2 + np.cos(a) * np.cos(b) * np.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.minimum(1.0, np.sqrt(h)))


def _summary(errors: Any) -> dict[str, float]:
    e = np.asarray(errors, dtype=np.float64)
    if e.size == 0:
        return {"median_m": math.nan, "p95_m": math.nan, "n": 0}
    return {
        "median_m": round(float(np.median(e)), 2),
        "p95_m": round(float(np.percentile(e, 95)), 2),
        "n": int(e.size),
    }


def _source_summary(rows: Any, sigma: Any) -> dict[str, float]:
    """Error and calibration of one source kind's own fixes."""
    err = _errors_m(*rows.T.tolist())
    return {
        **_summary(err),
        "r68": round(float(np.mean(err <= sigma * R68_PER_SIGMA)), 4),
        "r95": round(float(np.mean(err <= sigma * R95_PER_SIGMA)), 4),
    }


def _phase_at(track: TruthTrack, t: float) -> str:
    """What the courier was doing at ``t`` (one of :data:`geo.synthetic.PHASES`)."""
    i = max(0, int(np.searchsorted(track.t, t, side="right")) - 1)
    return str(track.phase[i])


def _by_phase(
    phase: Any, err: Any, r68: Any, r95: Any, has_bs: Any, bs_err: Any
) -> dict[str, dict[str, float]]:
    """Fused error and calibration per true activity, beside the best single source.

    ``share`` is the phase's share of all scored estimates; ``best_single_median_m``
    is over the estimates of that phase for which a fresh single fix existed.
    """
    bs_full = np.full(err.shape, np.nan)
    bs_full[has_bs] = bs_err
    out: dict[str, dict[str, float]] = {}
    for name in PHASES:
        m = phase == name
        if not m.any():
            continue
        bs = bs_full[m]
        bs = bs[~np.isnan(bs)]
        out[name] = {
            "share": round(float(m.mean()), 4),
            "fused_median_m": round(float(np.median(err[m])), 2),
            "fused_p95_m": round(float(np.percentile(err[m], 95)), 2),
            "best_single_median_m": round(float(np.median(bs)), 2) if bs.size else math.nan,
            "r68": round(float(np.mean((err <= r68)[m])), 4),
            "r95": round(float(np.mean((err <= r95)[m])), 4),
        }
    return out


def score_trace(world: World, trace: Trace, config: FusionConfig | None = None) -> dict[str, Any]:
    """Fuse the trace and score every estimate and the baselines against the truth."""
    engine = FusionEngine(world.registry(), config)
    fences = [
        Geofence(rid, c.lat, c.lon, COUNTER_RADIUS_M, "pickup", frozenset({c.beacon_id}))
        for rid, c in world.counters.items()
    ]
    beacon_to_fence = {c.beacon_id: rid for rid, c in world.counters.items()}
    monitor = GeofenceMonitor(fences)
    inside: dict[str, set[str]] = {}
    latest: dict[str, dict[str, tuple[float, PositionFix]]] = {}

    fused: list[Estimate] = []
    truth_rows: list[tuple[float, float, bool, str]] = []
    phases: list[str] = []
    best_single: list[tuple[float, float]] = []
    oracle_single: list[float] = []
    gps_fix: list[tuple[float, float, float, float]] = []
    source_err: dict[str, list[tuple[float, float, float, float]]] = {}
    source_sigma: dict[str, list[float]] = {}
    counter_tp = counter_fp = counter_fn = 0

    for record in trace.records:
        try:
            obs = observation_from_dict(record)
        except InvalidObservation:
            engine.process_dict(record)  # counted as rejected, like any bad input
            continue
        result = engine.process(obs)
        if not isinstance(result, Estimate):
            continue
        track = trace.truth[result.device]
        tlat, tlon, tindoor, tcounter = track.at(result.t)
        fused.append(result)
        truth_rows.append((tlat, tlon, tindoor, tcounter))
        phases.append(_phase_at(track, result.t))
        # The single-source baselines see the same accepted observation.
        try:
            fix: PositionFix | None = engine.sources[obs.kind].locate(obs)
        except Unlocatable:
            fix = None
        if fix is not None:
            latest.setdefault(result.device, {})[obs.kind] = (obs.t, fix)
            source_err.setdefault(obs.kind, []).append((fix.lat, fix.lon, tlat, tlon))
            source_sigma.setdefault(obs.kind, []).append(fix.sigma)
            if obs.kind == "gps":
                gps_fix.append((fix.lat, fix.lon, tlat, tlon))
        fresh = [
            f
            for kind, (t0, f) in latest.get(result.device, {}).items()
            if result.t - t0 <= FRESH_S[kind]
        ]
        if fresh:
            best = min(fresh, key=lambda f: f.sigma)
            best_single.append((best.lat, best.lon))
            errs = haversine_matrix_m(
                [tlat], [tlon], [f.lat for f in fresh], [f.lon for f in fresh]
            )
            oracle_single.append(float(errs.min()))
        else:
            best_single.append((math.nan, math.nan))
            oracle_single.append(math.nan)
        for ev in monitor.update(result):
            s = inside.setdefault(result.device, set())
            if ev.kind == "enter":
                s.add(ev.fence_id)
            else:
                s.discard(ev.fence_id)
        predicted = inside.get(result.device, set())
        actual = beacon_to_fence.get(tcounter) if tcounter else None
        if actual is not None and actual in predicted:
            counter_tp += 1
        elif actual is not None:
            counter_fn += 1
        if predicted - ({actual} if actual else set()):
            counter_fp += 1

    f_lat = [e.lat for e in fused]
    f_lon = [e.lon for e in fused]
    t_lat = [r[0] for r in truth_rows]
    t_lon = [r[1] for r in truth_rows]
    err = _errors_m(f_lat, f_lon, t_lat, t_lon)
    r68 = np.array([e.radius68 for e in fused])
    r95 = np.array([e.radius95 for e in fused])
    bs = np.array(best_single)
    has_bs = ~np.isnan(bs[:, 0])
    bs_err = _errors_m(
        list(bs[has_bs, 0]),
        list(bs[has_bs, 1]),
        list(np.asarray(t_lat)[has_bs]),
        list(np.asarray(t_lon)[has_bs]),
    )
    indoor = np.array([r[2] for r in truth_rows], dtype=bool)
    cells_hit = np.mean(
        [
            e.h3 == h3.latlng_to_cell(la, lo, 10)
            for e, la, lo in zip(fused, t_lat, t_lon, strict=True)
        ]
    )
    gps = np.array(gps_fix)
    out: dict[str, Any] = {
        "fused": _summary(err),
        "fused_outdoor": _summary(err[~indoor]),
        "fused_indoor": _summary(err[indoor]),
        "gps_only": _summary(_errors_m(*gps.T.tolist()) if gps.size else []),
        "best_single": _summary(bs_err),
        "best_single_indoor": _summary(bs_err[indoor[has_bs]]),
        "oracle_single": _summary([e for e in oracle_single if not math.isnan(e)]),
        "sources": {
            k: _source_summary(np.array(v), np.array(source_sigma[k]))
            for k, v in sorted(source_err.items())
        },
        "calibration": {
            "r68": round(float(np.mean(err <= r68)), 4),
            "r95": round(float(np.mean(err <= r95)), 4),
            "r68_outdoor": round(float(np.mean((err <= r68)[~indoor])), 4),
            "r95_outdoor": round(float(np.mean((err <= r95)[~indoor])), 4),
            "r68_indoor": round(float(np.mean((err <= r68)[indoor])), 4),
            "r95_indoor": round(float(np.mean((err <= r95)[indoor])), 4),
        },
        "by_phase": _by_phase(np.array(phases), err, r68, r95, has_bs, bs_err),
        "h3_hit_rate_res10": round(float(cells_hit), 4),
        "geofence": {
            "precision": round(counter_tp / max(1, counter_tp + counter_fp), 4),
            "recall": round(counter_tp / max(1, counter_tp + counter_fn), 4),
            "true_positive": counter_tp,
            "false_positive": counter_fp,
            "false_negative": counter_fn,
        },
        "records": len(trace.records),
        "estimates": len(fused),
        "injected_bad": dict(trace.bad),
        "engine": engine.stats(),
    }
    if out["best_single"]["median_m"]:
        out["fused_vs_best_single_median"] = round(
            out["fused"]["median_m"] / out["best_single"]["median_m"], 3
        )
    return out


def measure_speed(
    world: World, trace: Trace, latency_samples: int, config: FusionConfig | None = None
) -> dict[str, Any]:
    """Batch throughput on one core, then single-update latency on a warm engine."""
    observations = trace.observations
    engine = FusionEngine(world.registry(), config)
    start = time.perf_counter()
    engine.process_batch(observations)
    batch_s = time.perf_counter() - start
    engine = FusionEngine(world.registry(), config)
    start = time.perf_counter()
    engine.process_many(observations)
    each_s = time.perf_counter() - start

    engine = FusionEngine(world.registry(), config)
    warm = len(observations) // 2
    engine.process_many(observations[:warm])
    sample = observations[warm : warm + latency_samples]
    lat_ns = np.empty(len(sample), dtype=np.int64)
    process = engine.process
    clock = time.perf_counter_ns
    for i, obs in enumerate(sample):
        t0 = clock()
        process(obs)
        lat_ns[i] = clock() - t0
    us = lat_ns / 1000.0
    return {
        "throughput_obs_per_s": round(len(observations) / batch_s),
        "throughput_with_every_estimate_obs_per_s": round(len(observations) / each_s),
        "batch_seconds": round(batch_s, 3),
        "update_latency_us": {
            "p50": round(float(np.percentile(us, 50)), 2),
            "p99": round(float(np.percentile(us, 99)), 2),
            "max": round(float(us.max()), 2),
            "samples": int(us.size),
        },
    }


def run(
    couriers: int = 100,
    duration_s: float = 3600.0,
    seed: int = 7,
    latency_samples: int = 20_000,
    config: FusionConfig | None = None,
) -> dict[str, Any]:
    """The whole benchmark; returns the JSON-ready result object."""
    t0 = time.perf_counter()
    world = make_world(seed)
    trace = simulate_day(world, couriers=couriers, duration_s=duration_s, seed=seed)
    gen_s = time.perf_counter() - t0
    result: dict[str, Any] = {
        "config": {"couriers": couriers, "duration_s": duration_s, "seed": seed},
    }
    result.update(score_trace(world, trace, config))
    result.update(measure_speed(world, trace, latency_samples, config))
    result["generate_seconds"] = round(gen_s, 2)
    return result

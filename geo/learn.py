"""Learning the station registry from GPS-tagged scans, as crowd-sourced services do.

Phones that report a GPS fix and, within ``max_dt`` seconds, a Wi-Fi scan or a beacon
sighting tell us "AP *a* was heard at -71 dBm about here". Many such samples locate the
station (Mozilla's ichnaea builds its Wi-Fi database the same way):

1. *Pairing.* Each scan is paired with fixes of the same device: linear interpolation
   between the bracketing fixes when both are within ``max_dt``, else the nearest one,
   whose uncertainty grows by the distance the phone may have covered meanwhile.
2. *Weighting.* A sample's position says where the *phone* was; the station is within
   the RSSI-implied range of it, in an unknown direction. Each sample therefore carries
   the per-axis variance ``E[d^2] / 2 + gps_sigma^2``, so a loud sample (the phone was
   next to the AP) counts far more than a faint one, and an accurate fix more than a
   vague one.
3. *Consistency.* Samples much farther from the count-median than any radio range (a
   router taken to a new flat, a phone hotspot riding a bus) mark the station
   ``moved``; a lone far sample is a GPS glitch and is dropped.
4. *Estimate.* Position and radio model (``tx_power``, ``path_loss``) are fitted
   jointly by robust maximum likelihood in the dB domain, started from the weighted
   mean and from the loudest samples. Jointly, because along one survey line "farther
   and louder" looks like "nearer and quieter"; the position uncertainty is the
   marginal covariance, which keeps that trade-off. Phones do not report stations
   below their sensitivity, so the fit corrects for censoring at the detection floor
   (the weakest RSSI of the batch); without that the far, lucky samples flatten the
   slope (path-loss exponents came out ~1.6 for true ~2.8 on simulated surveys).
   Priors (``RadioModel``) keep the model sane with little data, and it is only stored
   when the samples span enough distance to define it. ``radius`` is the 68 % radius
   of the position error, calibrated (see ``RADIUS_*``).
5. *Merge.* With an existing registry, learnt entries combine sample-weighted; new
   samples far from an existing entry flag it ``moved``; surveyed entries (``samples ==
   0``) keep their position; beacons keep their surveyed ``tx_power``; entries not seen
   are kept unchanged. The existing registry is not modified.

Cells are learnt only when new (position = weighted mean of sightings, range = the 95th
percentile of their distances, at least ``min_cell_range_m``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

import numpy as np
import numpy.typing as npt

from geo.coords import EARTH_RADIUS_M, haversine_m
from geo.estimate import R68_PER_SIGMA
from geo.observations import BeaconSighting, CellObservation, GpsFix, Observation, WifiScan
from geo.registry import (
    DEFAULT_BEACON_PATH_LOSS,
    DEFAULT_WIFI_PATH_LOSS,
    DEFAULT_WIFI_TX_POWER,
    Beacon,
    CellTower,
    Registry,
    WifiAp,
)

DEFAULT_BEACON_TX_POWER = -59.0
"""Typical iBeacon/Eddystone calibrated RSSI at 1 m (dBm)."""
M_PER_DEG = math.radians(1.0) * EARTH_RADIUS_M

FloatArray = npt.NDArray[np.float64]
POS_PRIOR_M = 200.0
"""Weak prior on a station's position about its start (keeps degenerate fits finite)."""
RADIUS_COV_SCALE = 2.0
RADIUS_FLOOR_M2 = 9.0
RADIUS_MEAN_SHARE = 0.06
"""Per-axis variance of a learnt position = ``RADIUS_COV_SCALE * fit covariance +
RADIUS_FLOOR_M2 + RADIUS_MEAN_SHARE * variance of the weighted mean``. The fit
covariance alone is 2-4x optimistic: survey lines leave a mirror ambiguity across the
street and the censoring correction is approximate. Calibrated on simulated street-grid
surveys (5 m GPS noise, 5.5 dB shadowing): the true position is inside ``radius`` for
~89 % and inside the 95 % radius for ~95 % of stations (heavy-tailed, on purpose
conservative at 68 %)."""


@dataclass(frozen=True, slots=True)
class RadioModel:
    """Priors and limits for learning one kind of station (dBm, dB, metres).

    ``tx_sd``/``n_sd`` are the prior spreads of transmit power and path-loss exponent
    that regularise the regression; ``tx_range``/``n_range`` clamp its result;
    ``moved_m`` is how far beyond a sample's RSSI-implied upper range it may lie from
    the station's consensus before it counts as evidence the station moved.
    """

    tx0: float
    n0: float
    tx_sd: float
    n_sd: float
    shadowing_db: float
    tx_range: tuple[float, float]
    n_range: tuple[float, float]
    max_range_m: float
    moved_m: float
    height_m: float


WIFI_MODEL = RadioModel(
    tx0=DEFAULT_WIFI_TX_POWER,
    n0=DEFAULT_WIFI_PATH_LOSS,
    tx_sd=6.0,
    n_sd=0.6,
    shadowing_db=6.0,
    tx_range=(-75.0, -15.0),
    n_range=(1.6, 5.0),
    max_range_m=400.0,
    moved_m=250.0,
    height_m=3.0,
)
BEACON_MODEL = RadioModel(
    tx0=DEFAULT_BEACON_TX_POWER,
    n0=DEFAULT_BEACON_PATH_LOSS,
    tx_sd=6.0,
    n_sd=0.5,
    shadowing_db=4.0,
    tx_range=(-100.0, -30.0),
    n_range=(1.4, 4.5),
    max_range_m=100.0,
    moved_m=60.0,
    height_m=1.0,
)


@dataclass(frozen=True, slots=True)
class LearnStats:
    """What happened to the input (counts)."""

    gps_fixes: int = 0
    gps_too_inaccurate: int = 0
    """Fixes ignored because their 68 % radius exceeded ``max_accuracy_m``."""
    wifi_scans: int = 0
    wifi_scans_used: int = 0
    beacon_sightings: int = 0
    beacon_sightings_used: int = 0
    cell_observations: int = 0
    cell_observations_used: int = 0
    without_fix: int = 0
    """Scans/sightings with no usable fix of the same device within ``max_dt``."""
    samples_dropped: int = 0
    """Isolated samples far from their station's consensus (GPS glitches)."""
    wifi_learned: int = 0
    wifi_updated: int = 0
    wifi_moved: int = 0
    """Wi-Fi entries flagged ``moved`` in this run (already-flagged ones not counted)."""
    beacons_learned: int = 0
    beacons_updated: int = 0
    beacons_disagreeing: int = 0
    """Surveyed beacons whose new sightings are far from them (the registry has no
    ``moved`` flag for beacons: check these by hand)."""
    cells_learned: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class LearnResult:
    registry: Registry
    stats: LearnStats


@dataclass(frozen=True, slots=True)
class StationFit:
    """One station learnt from this batch alone.

    ``radius`` is the 68 % radius (metres) of the position error; ``tx_power`` and
    ``path_loss`` are ``None`` when the samples did not span enough distance to fit
    them; ``dropped`` counts isolated far samples that were ignored.
    """

    lat: float
    lon: float
    radius: float
    samples: int
    tx_power: float | None
    path_loss: float | None
    moved: bool
    dropped: int


@dataclass(slots=True)
class _Samples:
    lat: list[float]
    lon: list[float]
    rssi: list[float]
    sigma: list[float]

    def add(self, lat: float, lon: float, rssi: float, sigma: float) -> None:
        self.lat.append(lat)
        self.lon.append(lon)
        self.rssi.append(rssi)
        self.sigma.append(sigma)


def _new_samples() -> _Samples:
    return _Samples([], [], [], [])


@dataclass(slots=True)
class _Track:
    """GPS fixes of one device, in time order: (t, lat, lon, sigma_m, speed_mps)."""

    t: list[float]
    fixes: list[tuple[float, float, float, float | None]]


def _position_at(
    track: _Track, t: float, max_dt: float, default_speed: float
) -> tuple[float, float, float] | None:
    """Phone position ``(lat, lon, per-axis sigma m)`` at time ``t``, or ``None``."""
    i = bisect.bisect_left(track.t, t)
    n = len(track.t)
    prev = i - 1 if i > 0 else -1
    if i < n and track.t[i] == t:
        prev = i
    nxt = i if i < n else -1
    dt_p = t - track.t[prev] if prev >= 0 else math.inf
    dt_n = track.t[nxt] - t if nxt >= 0 else math.inf
    if dt_p <= max_dt and dt_n <= max_dt and prev != nxt:
        la0, lo0, s0, _v0 = track.fixes[prev]
        la1, lo1, s1, _v1 = track.fixes[nxt]
        span = track.t[nxt] - track.t[prev]
        f = 0.0 if span <= 0 else dt_p / span
        dlon = (lo1 - lo0 + 540.0) % 360.0 - 180.0
        lon = (lo0 + f * dlon + 540.0) % 360.0 - 180.0
        return la0 + f * (la1 - la0), lon, (1.0 - f) * s0 + f * s1
    if min(dt_p, dt_n) > max_dt:
        return None
    j, dt = (prev, dt_p) if dt_p <= dt_n else (nxt, dt_n)
    la, lo, s, v = track.fixes[j]
    speed = default_speed if v is None else v
    return la, lo, math.hypot(s, speed * dt)


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# Abramowitz & Stegun 7.1.26: erfc(x) ~= t * poly(t) * exp(-x^2), t = 1 / (1 + p x).
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _mills(u: FloatArray) -> FloatArray:
    """Inverse Mills ratio ``phi(u) / Phi(u)`` of the standard normal, vectorised.

    A&S 7.1.26 (absolute error 1.5e-7 in erfc) for ``u >= -4`` and the asymptotic
    series ``-u / (1 - u^-2 + 3 u^-4 - 15 u^-6)`` below (0.1 % at -4), so there is no
    0/0 deep in the tail.
    """
    x = np.abs(u) * math.sqrt(0.5)
    t = 1.0 / (1.0 + _AS_P * x)
    a1, a2, a3, a4, a5 = _AS_A
    poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))  # erfc(x) * exp(x^2)
    gauss = np.exp(-0.5 * u * u)
    pos = _INV_SQRT_2PI * gauss / (1.0 - 0.5 * poly * gauss)
    neg = _INV_SQRT_2PI / (0.5 * poly)
    uu = np.minimum(u, -4.0)
    inv2 = 1.0 / (uu * uu)
    tail = -uu / (1.0 - inv2 + 3.0 * inv2 * inv2 - 15.0 * inv2 * inv2 * inv2)
    out: FloatArray = np.where(u >= 0.0, pos, np.where(u >= -4.0, neg, tail))
    return out


def _joint_fit(
    x: FloatArray,
    y: FloatArray,
    rs: FloatArray,
    sg: FloatArray,
    model: RadioModel,
    floor_dbm: float | None,
    start: tuple[float, float, float, float],
    pos_prior_var: float,
    model_sd: tuple[float, float],
    huber_k: float = 2.0,
    max_iter: int = 25,
) -> tuple[float, float, float, float, float, float]:
    """Joint maximum-likelihood station position and radio model (dB domain).

    Unknowns ``(x, y, tx, n)``; per sample ``rssi = tx - n * 10 log10(rho) + e`` with
    ``e`` the shadowing plus the GPS error projected on the range. The weighted mean
    (``start``) is pulled towards where the phones were; the RSSI gradient tells on
    which side of a survey line the station is, but along one line position and
    ``tx`` trade off (farther and louder looks the same), so they are fitted *jointly*
    and the position uncertainty is the *marginal* covariance, which keeps that
    degeneracy. Gaussian priors: position about ``start`` (``pos_prior_var``),
    ``tx``/``n`` about the model's defaults (``model_sd``, tiny for a surveyed
    beacon). Censoring at ``floor_dbm``: phones do not report stations below their
    sensitivity, so far samples are only the lucky loud ones and would flatten the
    slope; Heckman-style, ``E[rssi | heard] = mu + sd * mills(u)`` with
    ``u = (mu - floor) / sd``, and samples deep in the censored zone weigh less (their
    variance shrinks by ``mills * (mills + u)``).
    Damped Gauss-Newton with Huber weights. Returns ``(x, y, tx, n, var, cost)`` where
    ``var`` is the largest eigenvalue of the marginal position covariance (m^2) and
    ``cost`` the final robust cost (to compare starts).
    """
    ax, ay, tx, n = start
    sd = model.shadowing_db
    c10 = 10.0 / math.log(10.0)
    prior = np.array(
        [1.0 / pos_prior_var, 1.0 / pos_prior_var, model_sd[0] ** -2, model_sd[1] ** -2]
    )
    mean0 = np.array(
        [ax, ay, model.tx0 if model_sd[0] > 0.01 else tx, model.n0 if model_sd[1] > 0.01 else n]
    )
    cov = np.diag(1.0 / prior)
    cost = math.inf
    for _ in range(max_iter):
        dx = ax - x
        dy = ay - y
        q = dx * dx + dy * dy + model.height_m**2
        level = 5.0 * np.log10(q)
        mu = tx - n * level
        wcen = np.ones_like(rs)
        corr = np.zeros_like(rs)
        if floor_dbm is not None:
            u = (mu - floor_dbm) / sd
            mills = _mills(u)
            corr = sd * mills
            wcen = np.maximum(1.0 - mills * (mills + u), 0.02)
        r = rs - corr - mu
        v = sd * sd + (n * c10) ** 2 * sg * sg / q
        a = np.abs(r) / np.sqrt(v)
        w = wcen * np.where(a <= huber_k, 1.0, huber_k / np.maximum(a, 1e-12)) / v
        theta = np.array([ax, ay, tx, n])
        hub = np.where(a <= huber_k, 0.5 * a * a, huber_k * (a - 0.5 * huber_k))
        cost = float((wcen * hub).sum()) + 0.5 * float((prior * (theta - mean0) ** 2).sum())
        # d mu / d(ax, ay, tx, n); residual r = rssi - mu.
        g = n * c10 / q
        jac = np.stack([-g * dx, -g * dy, np.ones_like(rs), -level], axis=1)
        info = (jac * w[:, None]).T @ jac + np.diag(prior)
        grad = (jac * w[:, None]).T @ r - prior * (theta - mean0)
        try:
            cov = np.asarray(np.linalg.inv(info), dtype=np.float64)
        except np.linalg.LinAlgError:
            break
        step = cov @ grad
        # Damping: no more than 25 m, 4 dB or 0.4 of exponent per iteration.
        scale = min(
            1.0,
            25.0 / max(1e-9, math.hypot(step[0], step[1])),
            4.0 / max(1e-9, abs(step[2])),
            0.4 / max(1e-9, abs(step[3])),
        )
        ax += scale * step[0]
        ay += scale * step[1]
        tx = min(max(tx + scale * step[2], model.tx_range[0]), model.tx_range[1])
        n = min(max(n + scale * step[3], model.n_range[0]), model.n_range[1])
        if scale * math.hypot(step[0], step[1]) < 0.05 and scale * abs(step[2]) < 0.02:
            break
    cxx, cxy, cyy = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
    lam = 0.5 * (cxx + cyy) + math.sqrt(0.25 * (cxx - cyy) ** 2 + cxy * cxy)
    return ax, ay, tx, n, lam, cost


def fit_station(
    lat: npt.ArrayLike,
    lon: npt.ArrayLike,
    rssi: npt.ArrayLike,
    gps_sigma: npt.ArrayLike,
    model: RadioModel = WIFI_MODEL,
    *,
    tx_power: float | None = None,
    path_loss: float | None = None,
    floor_dbm: float | None = None,
    min_fit_samples: int = 6,
    min_level_spread_db: float = 2.0,
) -> StationFit:
    """Estimate one station from its samples (phone positions, RSSI dBm, GPS sigma m).

    ``tx_power``/``path_loss`` fix the radio model (a surveyed beacon) instead of
    fitting it. ``floor_dbm`` is the phones' detection floor (dBm), used to correct the
    path-loss regression for censoring. See the module docstring for the method.
    """
    la = np.asarray(lat, dtype=np.float64)
    lo = np.asarray(lon, dtype=np.float64)
    rs = np.asarray(rssi, dtype=np.float64)
    sg = np.asarray(gps_sigma, dtype=np.float64)
    lat0 = float(np.median(la))
    lon0 = float(np.median(lo))
    mlon = M_PER_DEG * math.cos(math.radians(lat0))
    x = ((lo - lon0 + 540.0) % 360.0 - 180.0) * mlon
    y = (la - lat0) * M_PER_DEG
    h2 = model.height_m**2
    sd = model.shadowing_db

    fixed = tx_power is not None and path_loss is not None
    tx = model.tx0 if tx_power is None else tx_power
    n = model.n0 if path_loss is None else path_loss
    var_db = sd * sd + (1.0 if fixed else model.tx_sd**2)

    def sample_var(tx_: float, n_: float, var_db_: float) -> tuple[FloatArray, FloatArray]:
        k = 10.0 * n_ / math.log(10.0)
        d = np.clip(np.exp((tx_ - rs) / k), 1.0, model.max_range_m)
        s2 = var_db_ / (k * k)
        # E[d^2] under the uniform-area prior (see WifiSource): d_med^2 exp(6 s^2).
        return 0.5 * d * d * math.exp(6.0 * s2) + sg * sg, d * math.exp(2.5 * math.sqrt(s2))

    v, reach = sample_var(tx, n, var_db)
    # Consistency: distance to the count-median, beyond what the RSSI allows.
    far = np.hypot(x - np.median(x), y - np.median(y)) > model.moved_m + reach + 2.0 * sg
    n_far = int(far.sum())
    moved = n_far >= 2 and n_far >= 0.05 * len(rs)
    dropped = 0 if moved else n_far
    keep = ~far
    if not keep.any():  # no majority at all (e.g. a hotspot on a long drive)
        keep = np.ones_like(far)
    x, y, rs, sg, v = x[keep], y[keep], rs[keep], sg[keep], v[keep]

    w = 1.0 / v
    sw = float(w.sum())
    ax = float((w * x).sum() / sw)
    ay = float((w * y).sum() / sw)
    # Unresolved one-sidedness of the weighted mean: how much less the samples spread
    # across their minor axis than the ranges they imply.
    wn = w / sw
    dx = x - ax
    dy = y - ay
    cxx = float((wn * dx * dx).sum())
    cyy = float((wn * dy * dy).sum())
    cxy = float((wn * dx * dy).sum())
    minor = 0.5 * (cxx + cyy) - math.sqrt(0.25 * (cxx - cyy) ** 2 + cxy * cxy)
    ring = float((wn * (v - sg * sg)).sum())  # mean per-axis E[d^2]/2 about the station
    mean_var = 1.0 / sw * max(1.0, math.sqrt(len(rs)) / 2.0) + 0.25 * max(0.0, ring - minor)
    fitted = False
    if not fixed and len(rs) >= min_fit_samples:
        # Store a radio model only when the samples span enough distance to define one.
        lv = 5.0 * np.log10((x - ax) ** 2 + (y - ay) ** 2 + h2)
        lvl_mean = float((wn * lv).sum())
        fitted = math.sqrt(float((wn * (lv - lvl_mean) ** 2).sum())) >= min_level_spread_db
    model_sd = (0.001, 0.001) if fixed else (model.tx_sd, model.n_sd)
    # Two starts: the weighted mean, and the loudest few samples (many faint far-off
    # samples can drag the mean out of the right basin).
    top = np.argsort(-rs)[: max(3, len(rs) // 20)]
    starts = [(ax, ay), (float(x[top].mean()), float(y[top].mean()))]
    best: tuple[float, float, float, float, float, float] | None = None
    for sx, sy in starts:
        cand = _joint_fit(x, y, rs, sg, model, floor_dbm, (sx, sy, tx, n), POS_PRIOR_M**2, model_sd)
        if best is None or cand[5] < best[5]:
            best = cand
    assert best is not None
    ax, ay, tx_j, n_j, pos_var, _cost = best
    if fitted:
        tx, n = tx_j, n_j
    # Where the samples give no direction at all (a few readings at one spot) the fit
    # covariance is just the prior; the station is still within the samples' ranges.
    pos_var = min(pos_var, ring + 1.0 / sw)
    sigma2 = RADIUS_COV_SCALE * pos_var + RADIUS_FLOOR_M2 + RADIUS_MEAN_SHARE * mean_var
    lat_s = lat0 + ay / M_PER_DEG
    lon_s = (lon0 + ax / mlon + 540.0) % 360.0 - 180.0
    return StationFit(
        float(lat_s),
        float(lon_s),
        math.sqrt(sigma2) * R68_PER_SIGMA,
        len(rs),
        float(tx) if fitted else tx_power,
        float(n) if fitted else path_loss,
        moved,
        dropped,
    )


def _detection_floor(store: dict[str, _Samples], min_samples: int = 50) -> float | None:
    """The phones' detection floor (dBm): just below the weakest RSSI heard.

    Phones report stations down to their sensitivity and not below, so the weakest
    reading of many marks the floor. Without truncation the minimum lies deep in the
    tail, where the correction it drives is negligible. ``None`` with too few samples.
    """
    values = [r for s in store.values() for r in s.rssi if not math.isnan(r)]
    if len(values) < min_samples:
        return None
    return min(values) - 0.5


def _fit_cell(s: _Samples, min_range_m: float) -> tuple[float, float, float]:
    """Cell position (weighted mean of sightings) and coverage range (m)."""
    la = np.asarray(s.lat)
    lo = np.asarray(s.lon)
    rs = np.asarray(s.rssi)
    w = np.where(np.isnan(rs), 1.0, 10.0 ** ((np.nan_to_num(rs, nan=-100.0) + 100.0) / 20.0))
    lat0 = float((w * la).sum() / w.sum())
    lon0 = float((w * lo).sum() / w.sum())
    dist = [haversine_m(lat0, lon0, a, b) for a, b in zip(s.lat, s.lon, strict=True)]
    return lat0, lon0, max(min_range_m, float(np.percentile(dist, 95)))


def _combine_wifi(old: WifiAp, fit: StationFit, moved_m: float) -> tuple[WifiAp, bool]:
    """Merge a learnt fit into an existing entry; returns (entry, newly flagged moved)."""
    dist = haversine_m(old.lat, old.lon, fit.lat, fit.lon)
    s_old = old.radius / R68_PER_SIGMA
    s_new = fit.radius / R68_PER_SIGMA
    far = dist > max(moved_m, 3.0 * math.hypot(s_old, s_new))
    if old.moved or fit.moved or far:
        # Keep the newest estimate so an operator can see where it went.
        return (
            replace(
                old,
                lat=fit.lat,
                lon=fit.lon,
                radius=fit.radius,
                samples=fit.samples,
                moved=True,
            ),
            not old.moved,
        )
    if old.samples <= 0:
        # Surveyed entry: trust its position, fill in a radio model it lacks.
        return (
            replace(
                old,
                tx_power=old.tx_power if old.tx_power is not None else fit.tx_power,
                path_loss=old.path_loss if old.path_loss is not None else fit.path_loss,
            ),
            False,
        )
    wo, wf = float(old.samples), float(fit.samples)
    tot = wo + wf
    dlon = (fit.lon - old.lon + 540.0) % 360.0 - 180.0
    lon = (old.lon + wf / tot * dlon + 540.0) % 360.0 - 180.0
    lat = old.lat + wf / tot * (fit.lat - old.lat)
    radius = math.hypot(wo * old.radius, wf * fit.radius) / tot

    def mix(a: float | None, b: float | None) -> float | None:
        if a is None or b is None:
            return a if b is None else b
        return (wo * a + wf * b) / tot

    return (
        WifiAp(
            old.bssid,
            lat,
            lon,
            mix(old.tx_power, fit.tx_power),
            mix(old.path_loss, fit.path_loss),
            radius,
            old.samples + fit.samples,
            False,
        ),
        False,
    )


def _copy_registry(reg: Registry | None) -> Registry:
    out = Registry()
    if reg is not None:
        out.wifi = {k: replace(v) for k, v in reg.wifi.items()}
        out.beacons = {k: replace(v) for k, v in reg.beacons.items()}
        out.cells = {k: replace(v) for k, v in reg.cells.items()}
    return out


def learn_registry(
    observations: Iterable[Observation],
    existing: Registry | None = None,
    max_dt: float = 2.0,
    *,
    max_accuracy_m: float = 100.0,
    default_speed_mps: float = 5.0,
    min_cell_range_m: float = 500.0,
    wifi_model: RadioModel = WIFI_MODEL,
    beacon_model: RadioModel = BEACON_MODEL,
) -> LearnResult:
    """Learn (or update) a registry from GPS fixes and scans of the same devices.

    ``max_dt`` (s) is the largest gap between a scan and the fix it is paired with;
    fixes whose 68 % radius exceeds ``max_accuracy_m`` are ignored; a fix paired
    without a partner on the other side is assumed to be ``default_speed_mps`` stale
    per second when it reports no speed. ``existing`` is copied, never modified.
    """
    tracks: dict[str, _Track] = {}
    pending: list[WifiScan | BeaconSighting | CellObservation] = []
    n_fix = n_bad_fix = 0
    for obs in observations:
        if isinstance(obs, GpsFix):
            n_fix += 1
            if obs.accuracy > max_accuracy_m:
                n_bad_fix += 1
                continue
            tr = tracks.get(obs.device)
            if tr is None:
                tr = tracks[obs.device] = _Track([], [])
            fix = (obs.lat, obs.lon, obs.accuracy / R68_PER_SIGMA, obs.speed)
            if tr.t and obs.t < tr.t[-1]:  # out of order: keep the track sorted
                j = bisect.bisect_right(tr.t, obs.t)
                tr.t.insert(j, obs.t)
                tr.fixes.insert(j, fix)
            else:
                tr.t.append(obs.t)
                tr.fixes.append(fix)
        else:
            pending.append(obs)

    wifi: dict[str, _Samples] = {}
    beacons: dict[str, _Samples] = {}
    cells: dict[str, _Samples] = {}
    counts = {"wifi": [0, 0], "beacon": [0, 0], "cell": [0, 0]}
    without_fix = 0
    for obs in pending:
        c = counts[obs.kind]
        c[0] += 1
        tr = tracks.get(obs.device)
        pos = None if tr is None else _position_at(tr, obs.t, max_dt, default_speed_mps)
        if pos is None:
            without_fix += 1
            continue
        c[1] += 1
        lat, lon, sig = pos
        if isinstance(obs, WifiScan):
            store, readings = wifi, obs.aps
        elif isinstance(obs, BeaconSighting):
            store, readings = beacons, obs.beacons
        else:
            store, readings = cells, obs.cells
        for r in readings:
            if r.rssi is None and store is not cells:
                continue
            s = store.get(r.id)
            if s is None:
                s = store[r.id] = _new_samples()
            s.add(lat, lon, math.nan if r.rssi is None else r.rssi, sig)

    reg = _copy_registry(existing)
    st = {"learned": 0, "updated": 0, "moved": 0, "dropped": 0}
    wifi_floor = _detection_floor(wifi)
    for bssid, s in wifi.items():
        fit = fit_station(s.lat, s.lon, s.rssi, s.sigma, wifi_model, floor_dbm=wifi_floor)
        st["dropped"] += fit.dropped
        old = reg.wifi.get(bssid)
        if old is None:
            reg.wifi[bssid] = WifiAp(
                bssid,
                fit.lat,
                fit.lon,
                fit.tx_power,
                fit.path_loss,
                fit.radius,
                fit.samples,
                fit.moved,
            )
            st["learned"] += 1
            st["moved"] += int(fit.moved)
        else:
            reg.wifi[bssid], newly = _combine_wifi(old, fit, wifi_model.moved_m)
            st["updated"] += 1
            st["moved"] += int(newly)

    b_learned = b_updated = b_disagree = 0
    beacon_floor = _detection_floor(beacons)
    for ident, s in beacons.items():
        old_b = reg.beacons.get(ident)
        if old_b is None:
            fit = fit_station(s.lat, s.lon, s.rssi, s.sigma, beacon_model, floor_dbm=beacon_floor)
            st["dropped"] += fit.dropped
            reg.beacons[ident] = Beacon(
                ident,
                fit.lat,
                fit.lon,
                DEFAULT_BEACON_TX_POWER if fit.tx_power is None else fit.tx_power,
                beacon_model.n0 if fit.path_loss is None else fit.path_loss,
            )
            b_learned += 1
            continue
        fit = fit_station(
            s.lat,
            s.lon,
            s.rssi,
            s.sigma,
            beacon_model,
            tx_power=old_b.tx_power,
            path_loss=old_b.path_loss,
        )
        st["dropped"] += fit.dropped
        b_updated += 1
        gate = max(beacon_model.moved_m, 3.0 * fit.radius / R68_PER_SIGMA)
        if fit.moved or haversine_m(old_b.lat, old_b.lon, fit.lat, fit.lon) > gate:
            b_disagree += 1

    c_learned = 0
    for ident, s in cells.items():
        if ident in reg.cells:
            continue
        lat, lon, rng = _fit_cell(s, min_cell_range_m)
        reg.cells[ident] = CellTower(ident, lat, lon, rng)
        c_learned += 1

    stats = LearnStats(
        gps_fixes=n_fix,
        gps_too_inaccurate=n_bad_fix,
        wifi_scans=counts["wifi"][0],
        wifi_scans_used=counts["wifi"][1],
        beacon_sightings=counts["beacon"][0],
        beacon_sightings_used=counts["beacon"][1],
        cell_observations=counts["cell"][0],
        cell_observations_used=counts["cell"][1],
        without_fix=without_fix,
        samples_dropped=st["dropped"],
        wifi_learned=st["learned"],
        wifi_updated=st["updated"],
        wifi_moved=st["moved"],
        beacons_learned=b_learned,
        beacons_updated=b_updated,
        beacons_disagreeing=b_disagree,
        cells_learned=c_learned,
    )
    return LearnResult(reg, stats)

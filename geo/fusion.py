"""Per-device fusion of every source into one position with an honest uncertainty.

The filter is a Kalman filter on a local east/north metric plane. Per axis its state is
position, velocity (constant-velocity motion, white acceleration) and a *GPS bias*.
Because every measurement is treated as isotropic (a position with one sigma per axis)
and the process noise is the same on both axes, the two axes are independent 3-state
filters that share one covariance. The whole update is therefore a few dozen scalar
operations, not matrix algebra, which is what keeps a single update in microseconds
without numpy.

What the filter models, and why (numbers from ``o2o bench geo``):

* **GPS error is mostly a slowly drifting bias.** A phone's error is roughly
  proportional to the accuracy it reports, and most of it (``floors["gps"]``, 0.7 of
  the variance) drifts over tens of seconds (multipath geometry, atmosphere); only the
  rest is white. A white-noise filter averages 1 Hz fixes and trusts them far beyond
  what they are worth, so the occasional unbiased Wi-Fi or cell fix is drowned. Here
  the bias is a unit-variance Gauss-Markov state (correlation time ``gps_bias_tau_s``)
  that an outdoor fix of sigma ``s`` sees as ``sqrt(0.7) * s * bias``: Wi-Fi, and
  Doppler velocity integrated over time, then pull the bias out (fused median error
  1.9 m instead of 3.0 m on the benchmark, best single source 3.6 m).
* **Doppler velocity is precise and bias-free.** GPS speed/bearing is used as a
  velocity measurement with a realistic sigma (``speed_noise`` + ``speed_noise_rel`` x
  speed); a reading far from the state is a manoeuvre and widens the velocity prior.
* **Motion modes.** Standing still (Doppler speed below ``still_speed``, or a beacon
  saying the device is at its counter) the process noise drops to
  ``still_accel_noise``, so fixes average; any moving reading restores it at once.
* **Errors that the states do not model** (Wi-Fi shadowing repeats at one spot, indoor
  GPS is pulled towards the street) keep the older mechanism: beside the covariance, a
  reported-only *shared-error* sigma, the part of each fix's variance (``floors``) that
  does not average out, blended with the same gains as the state. A proximity (one
  beacon) fix anchors the estimate on the beacon whatever the distance, so beyond
  ``proximity_m`` and without GPS the reported sigma is at least the fix's own.
* **Outliers** (multipath jumps, moved access points) are gated by Mahalanobis distance
  (never tighter than the fix's own sigma allows, so a phone whiter than modelled does
  not lose fixes) and by physically impossible speed; surprising non-GPS fixes inside
  the gate are down-weighted (Huber-like). A run of consistent rejections means the
  filter, not the sensors, is wrong, so it re-initialises on them.

Estimates are causal: an estimate at ``t`` uses observations up to ``t`` only.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import h3

from geo.coords import LocalFrame, as_float
from geo.errors import GeoError, InvalidObservation
from geo.estimate import R68_PER_SIGMA, R95_PER_SIGMA, Estimate, PositionFix
from geo.observations import GpsFix, Kind, Observation, observation_from_dict
from geo.registry import Registry
from geo.sources.base import SourceModel, Unlocatable
from geo.sources.beacon import BeaconSource
from geo.sources.cell import CellSource
from geo.sources.gps import GpsSource
from geo.sources.wifi import WifiSource

_REANCHOR_M = 20_000.0


@dataclass(frozen=True, slots=True)
class FusionConfig:
    """Tuning of the filter. Defaults were calibrated on ``o2o bench geo`` (seed 1)."""

    resolution: int = 10
    """H3 resolution of ``Estimate.h3``."""
    accel_noise: float = 1.0
    """White-noise acceleration spectral density q (m^2/s^3) of the motion model while
    moving (or when nothing says otherwise)."""
    still_accel_noise: float = 0.05
    """q while the device stands still: GPS Doppler says so (red light, parked, idle) or
    a beacon says it is at a counter (waiting, a step now and then: a 0.7 m/s shuffle
    every ~30 s is about 0.05)."""
    mode_ttl_s: float = 2.0
    """A motion mode (still, waiting) holds this long after the last evidence for it."""
    still_speed: float = 0.3
    """A GPS speed (m/s) below this, without bearing, means standing still."""
    vehicle_speed: float = 3.0
    """A GPS speed (m/s) above this means a vehicle, hence outdoors."""
    max_speed_sd: float = 15.0
    """Cap on velocity sigma (m/s): after a gap the device moved at most courier speeds."""
    initial_speed_sd: float = 5.0
    speed_noise: float = 0.25
    speed_noise_rel: float = 0.03
    """Per-axis sigma (m/s) of a GPS Doppler velocity: ``speed_noise + speed_noise_rel *
    speed`` (Doppler does not see the position error: multipath and bias leave it)."""
    gps_bias_tau_s: float = 45.0
    """Correlation time (s) of the GPS bias state (first-order Gauss-Markov)."""
    gate_chi2: float = 13.82
    """Mahalanobis gate (chi-square, 2 dof, 99.9 %)."""
    soft_chi2: float = 5.99
    """Beyond this (chi-square, 2 dof, 95 %) a non-GPS fix inside the gate is counted as
    noisier than it claims, so one bad scan moves the estimate only a bounded amount."""
    max_speed: float = 60.0
    """A jump needing more than this speed (m/s), beyond 3 sigma, is impossible."""
    reinit_after: int = 6
    """Consecutive consistent rejections that make the filter restart on them (above
    the few seconds that one multipath excursion lasts)."""
    late_tolerance_s: float = 2.0
    """Observations up to this much older than the filter are applied, not rejected."""
    floors: Mapping[str, float] = field(
        default_factory=lambda: {"gps": 0.7, "wifi": 0.3, "beacon": 0.0, "cell": 0.3}
    )
    """Share of each source's error variance that is shared between its consecutive
    fixes (does not average out). For outdoor GPS it is the variance share of the
    estimated bias state; for the others (and indoor GPS, see ``indoor_gps_floor``) it
    only widens the reported radius. Beacons have none: a proximity fix's sigma is
    already its stand-off from the beacon (the 68th percentile of the RSSI range), and
    waiting at a counter is handled by the still mode. Calibrated on ``o2o bench geo
    --seed 1``."""
    proximity_m: float = 3.0
    gps_recent_s: float = 5.0
    """A one-beacon (proximity) fix whose range exceeds ``proximity_m`` while no GPS
    fix was used for ``gps_recent_s``: the reported sigma is at least the fix's own."""
    indoor_gps_inflation: float = 2.0
    """GPS sigma multiplier while the device is believed indoors (multipath, walls)."""
    indoor_gps_floor: float = 0.3
    """Shared share of indoor GPS error: walls bias it towards the street, no state
    models that."""
    near_ttl_s: float = 5.0
    sources_window_s: float = 30.0
    ttl_s: float = 900.0
    """Devices not heard from for this long are expired by :meth:`FusionEngine.expire`."""
    max_devices: int = 200_000
    """Hard bound on tracked devices; the least recently updated is evicted beyond it."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """An observation that changed nothing, and why (``reason`` is machine-readable)."""

    device: str
    t: float
    kind: str
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Latest estimate of every device that a batch moved, and what the batch rejected."""

    estimates: dict[str, Estimate]
    rejected: list[Rejected]
    rejected_at: list[int] = field(default_factory=list)
    """Each rejection's position in the batch (``(t, kind)`` does not tell duplicates apart)."""


class DeviceFilter:
    """The filter state of one device. Mutable and small (a few dozen floats).

    Per axis the state is ``(position, velocity, GPS bias)``. The bias is *normalised*:
    a unit-variance first-order Gauss-Markov process, which an outdoor GPS fix of
    per-axis sigma ``sigma`` sees scaled by ``sqrt(share) * sigma`` (a phone's error is
    proportional to the accuracy it reports, and most of it drifts slowly). Both axes
    share one symmetric 3 x 3 covariance (``pxx pxv pxb / pvv pvb / pbb``) because every
    measurement is isotropic, so each update is a few dozen scalar operations.
    """

    __slots__ = (
        "bias",
        "bx",
        "by",
        "consec_rejects",
        "frame",
        "indoor_score",
        "last_kind_t",
        "last_used",
        "mode_t",
        "near",
        "near_t",
        "pbb",
        "pvb",
        "pvv",
        "pxb",
        "pxv",
        "pxx",
        "q",
        "rejects_x",
        "rejects_y",
        "ring_lnd",
        "ring_t",
        "ring_x",
        "ring_y",
        "t",
        "vx",
        "vy",
        "x",
        "y",
    )

    def __init__(self, fix_x: float, fix_y: float, frame: LocalFrame, t: float) -> None:
        self.frame = frame
        self.x, self.y, self.vx, self.vy = fix_x, fix_y, 0.0, 0.0
        self.bx = self.by = 0.0
        self.pxx = self.pxv = self.pvv = 0.0
        self.pxb = self.pvb = 0.0
        self.pbb = 1.0
        self.q = 1.0
        """Process noise of the current motion mode (m^2/s^3)."""
        self.mode_t = -math.inf
        """When the motion mode was last confirmed."""
        self.bias = 0.0
        """Reported-only sigma of the errors shared between consecutive non-GPS fixes."""
        self.t = t
        self.last_kind_t: dict[str, float] = {}
        self.last_used: dict[Kind, float] = {}
        self.indoor_score = 0.0
        self.near: str | None = None
        self.near_t = -math.inf
        self.consec_rejects = 0
        self.rejects_x = 0.0
        self.rejects_y = 0.0
        self.ring_lnd = 0.0
        self.ring_t = -math.inf
        self.ring_x = self.ring_y = 0.0

    def reset(
        self, x: float, y: float, var: float, t: float, speed_sd: float, pxb: float = 0.0
    ) -> None:
        """Restart at ``(x, y)`` with position variance ``var``, at rest, bias unknown.

        ``pxb``: covariance of the position with the bias state (``-sqrt(share) *
        sigma`` when the position is an outdoor GPS fix, which contains the bias).
        """
        self.x, self.y, self.vx, self.vy = x, y, 0.0, 0.0
        self.bx = self.by = 0.0
        self.pxx, self.pxv, self.pvv = var, 0.0, speed_sd * speed_sd
        self.pxb, self.pvb, self.pbb = pxb, 0.0, 1.0
        self.bias = 0.0
        self.t = t
        self.consec_rejects = 0

    def predict(self, t: float, q: float, max_pvv: float, tau: float) -> None:
        """Constant velocity with white acceleration ``q``; the bias decays over ``tau``."""
        dt = t - self.t
        if dt <= 0.0:
            return
        pxv, pvv, pvb = self.pxv, self.pvv, self.pvb
        dt2 = dt * dt
        a = math.exp(-dt / tau)
        self.x += self.vx * dt
        self.y += self.vy * dt
        self.bx *= a
        self.by *= a
        self.pxx += 2.0 * dt * pxv + dt2 * pvv + q * dt2 * dt / 3.0
        self.pxv = pxv + dt * pvv + q * dt2 / 2.0
        self.pxb = a * (self.pxb + dt * pvb)
        self.pvb = a * pvb
        self.pbb = a * a * self.pbb + 1.0 - a * a
        pvv += q * dt
        if pvv > max_pvv:
            # Cap velocity uncertainty, scaling its cross terms so P stays positive definite.
            c = math.sqrt(max_pvv / pvv)
            self.pxv *= c
            self.pvb *= c
            pvv = max_pvv
        self.pvv = pvv
        self.t = t

    def update_position(self, zx: float, zy: float, r2: float, s: float, floor: float) -> None:
        """Fuse a position ``z = p + s * bias + white noise of variance r2``.

        ``s = 0`` for every source but outdoor GPS. ``floor`` (share of ``r2``) feeds
        the reported-only shared-error sigma :attr:`bias`.
        """
        g0 = self.pxx + s * self.pxb  # P H^T
        g1 = self.pxv + s * self.pvb
        g2 = self.pxb + s * self.pbb
        inv = 1.0 / (g0 + s * g2 + r2)
        kp = g0 * inv
        kv = g1 * inv
        kb = g2 * inv
        if floor > 0.0 or self.bias > 0.0:
            self.bias += kp * (math.sqrt(floor * r2) - self.bias)
        ex = zx - self.x - s * self.bx
        ey = zy - self.y - s * self.by
        self.x += kp * ex
        self.y += kp * ey
        self.vx += kv * ex
        self.vy += kv * ey
        self.bx += kb * ex
        self.by += kb * ey
        self._correct(g0, g1, g2, kp, kv, kb)

    def update_velocity(self, zvx: float, zvy: float, rv2: float) -> None:
        """Fuse a velocity measurement (GPS Doppler) of per-axis variance ``rv2``."""
        g0, g1, g2 = self.pxv, self.pvv, self.pvb
        inv = 1.0 / (g1 + rv2)
        kp = g0 * inv
        kv = g1 * inv
        kb = g2 * inv
        ex, ey = zvx - self.vx, zvy - self.vy
        self.x += kp * ex
        self.y += kp * ey
        self.vx += kv * ex
        self.vy += kv * ey
        self.bx += kb * ex
        self.by += kb * ey
        self._correct(g0, g1, g2, kp, kv, kb)

    def _correct(self, g0: float, g1: float, g2: float, kp: float, kv: float, kb: float) -> None:
        """``P -= K (P H^T)^T``, keeping the variances positive against round-off."""
        pxx = self.pxx - g0 * kp
        pvv = self.pvv - g1 * kv
        pbb = self.pbb - g2 * kb
        self.pxx = pxx if pxx > 1e-6 else 1e-6
        self.pvv = pvv if pvv > 1e-9 else 1e-9
        self.pbb = pbb if pbb > 1e-9 else 1e-9
        self.pxv -= g1 * kp
        self.pxb -= g2 * kp
        self.pvb -= g2 * kv

    @property
    def indoor(self) -> bool | None:
        if self.indoor_score > 0.5:
            return True
        if self.indoor_score < -0.5:
            return False
        return None


class FusionEngine:
    """Fuses observations of many devices; one :class:`DeviceFilter` per device.

    Memory is bounded: devices are kept in least-recently-updated order, evicted beyond
    ``config.max_devices`` and expired after ``config.ttl_s`` by :meth:`expire`.
    Every observation either yields an :class:`Estimate` or a :class:`Rejected` that is
    also counted in :attr:`rejected` by reason. Stations unknown to the registry are
    counted in :attr:`unknown_stations` by kind.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        config: FusionConfig | None = None,
        sources: Mapping[str, SourceModel] | None = None,
    ) -> None:
        self.config = config or FusionConfig()
        reg = registry if registry is not None else Registry()
        self.sources: dict[str, SourceModel] = {
            "gps": GpsSource(),
            "wifi": WifiSource(reg),
            "beacon": BeaconSource(reg),
            "cell": CellSource(reg),
        }
        if sources:
            self.sources.update(sources)
        self.devices: OrderedDict[str, DeviceFilter] = OrderedDict()
        self.rejected: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.unknown_stations: Counter[str] = Counter()
        self.excluded_stations: Counter[str] = Counter()
        self.evicted = 0
        self.expired = 0
        self.reinitialised = 0
        self._max_pvv = self.config.max_speed_sd**2
        self._vehicle = self.config.vehicle_speed
        self._gps_white = 1.0 - self.config.floors.get("gps", 0.0)
        self._gps_bias = math.sqrt(self.config.floors.get("gps", 0.0))

    # -- entry points -------------------------------------------------------------
    def process_dict(self, record: Any) -> Estimate | Rejected:
        """Validate a JSON observation and fuse it; invalid input becomes a Rejected."""
        try:
            obs = observation_from_dict(record)
        except InvalidObservation as e:
            device = record.get("device") if isinstance(record, Mapping) else None
            t = record.get("t") if isinstance(record, Mapping) else None
            kind = record.get("kind") if isinstance(record, Mapping) else None
            return self._reject(
                str(device) if device is not None else "",
                as_float(t) if isinstance(t, int | float) and not isinstance(t, bool) else math.nan,
                str(kind) if kind is not None else "",
                e.reason,
                str(e),
            )
        return self.process(obs)

    def process(self, obs: Observation) -> Estimate | Rejected:
        """Fuse one observation of one device; its estimate right after, or why not."""
        dev = self._ingest(obs)
        if isinstance(dev, Rejected):
            return dev
        return self._estimate(obs.device, dev, obs.t)

    def process_many(self, observations: Iterable[Observation]) -> list[Estimate | Rejected]:
        """Fuse a time-ordered stream of many devices; one result per observation."""
        process = self.process
        return [process(o) for o in observations]

    def process_batch(self, observations: Iterable[Observation]) -> BatchResult:
        """The batch path: fuse a stream, return only each device's latest estimate.

        What ingestion wants (a phone posts a batch; only where it is *now* matters):
        intermediate estimates are never built, which roughly halves the cost per
        observation compared with :meth:`process_many`.
        """
        ingest = self._ingest
        touched: dict[str, DeviceFilter] = {}
        rejected: list[Rejected] = []
        rejected_at: list[int] = []
        for k, obs in enumerate(observations):
            r = ingest(obs)
            if isinstance(r, Rejected):
                rejected.append(r)
                rejected_at.append(k)
            else:
                touched[obs.device] = r
        estimates = {d: self._estimate(d, f, f.t) for d, f in touched.items()}
        return BatchResult(estimates, rejected, rejected_at)

    def _ingest(self, obs: Observation) -> DeviceFilter | Rejected:
        cfg = self.config
        dev = self.devices.get(obs.device)
        kind = obs.kind
        if dev is not None:
            last = dev.last_kind_t.get(kind)
            if last is not None and obs.t <= last:
                reason = "duplicate" if obs.t == last else "out_of_order"
                return self._reject(obs.device, obs.t, kind, reason, f"t={obs.t} <= {last}")
            if obs.t < dev.t - cfg.late_tolerance_s:
                return self._reject(
                    obs.device, obs.t, kind, "out_of_order", f"t={obs.t} before filter {dev.t}"
                )
        try:
            fix = self.sources[kind].locate(obs)
        except Unlocatable as e:
            self.unknown_stations[kind] += e.unknown
            if dev is not None:
                dev.last_kind_t[kind] = obs.t
            return self._reject(obs.device, obs.t, kind, e.reason, str(e))
        except GeoError as e:
            return self._reject(obs.device, obs.t, kind, e.reason, str(e))
        if fix.unknown:
            self.unknown_stations[kind] += fix.unknown
        if fix.excluded:
            self.excluded_stations[kind] += len(fix.excluded)

        if dev is None:
            dev = self._new_device(obs.device, fix, obs.t)
        else:
            self.devices.move_to_end(obs.device)
            outcome = self._fuse(dev, obs, fix)
            if outcome is not None:
                dev.last_kind_t[kind] = obs.t
                return self._reject(obs.device, obs.t, kind, outcome)
        dev.last_kind_t[kind] = obs.t
        dev.last_used[kind] = obs.t
        self._update_context(dev, obs, fix)
        self.accepted[kind] += 1
        return dev

    def last_t(self, device: str) -> float | None:
        """Time of the device's last accepted fix (cheaper than :meth:`estimate`)."""
        dev = self.devices.get(device)
        return None if dev is None else dev.t

    def estimate(self, device: str, t: float | None = None) -> Estimate | None:
        """The device's current estimate, predicted forward to ``t`` when given."""
        dev = self.devices.get(device)
        if dev is None:
            return None
        if t is None or t <= dev.t:
            return self._estimate(device, dev, dev.t)
        dt = t - dev.t
        ppp = dev.pxx + 2 * dt * dev.pxv + dt * dt * dev.pvv
        ppp += dev.q * dt**3 / 3
        return self._estimate(device, dev, t, x=dev.x + dev.vx * dt, y=dev.y + dev.vy * dt, ppp=ppp)

    def expire(self, now: float) -> int:
        """Forget devices whose last update is older than ``config.ttl_s``."""
        cutoff = now - self.config.ttl_s
        stale = [d for d, f in self.devices.items() if f.t < cutoff]
        for d in stale:
            del self.devices[d]
        self.expired += len(stale)
        return len(stale)

    def forget(self, device: str) -> bool:
        return self.devices.pop(device, None) is not None

    def stats(self) -> dict[str, Any]:
        return {
            "devices": len(self.devices),
            "accepted": dict(self.accepted),
            "rejected": dict(self.rejected),
            "unknown_stations": dict(self.unknown_stations),
            "excluded_stations": dict(self.excluded_stations),
            "reinitialised": self.reinitialised,
            "evicted": self.evicted,
            "expired": self.expired,
        }

    # -- internals ----------------------------------------------------------------
    def _reject(self, device: str, t: float, kind: str, reason: str, msg: str = "") -> Rejected:
        self.rejected[reason] += 1
        return Rejected(device, t, kind, reason, msg)

    def _new_device(self, device: str, fix: PositionFix, t: float) -> DeviceFilter:
        frame = LocalFrame(fix.lat, fix.lon)
        dev = DeviceFilter(0.0, 0.0, frame, t)
        s = self._gps_bias * fix.sigma if fix.kind == "gps" else 0.0
        # A first GPS fix is position plus bias: their errors are anti-correlated.
        dev.reset(0.0, 0.0, fix.sigma**2, t, self.config.initial_speed_sd, -s)
        self.devices[device] = dev
        if len(self.devices) > self.config.max_devices:
            self.devices.popitem(last=False)
            self.evicted += 1
        return dev

    def _fuse(self, dev: DeviceFilter, obs: Observation, fix: PositionFix) -> str | None:
        """Apply ``fix`` to ``dev``; return a rejection reason or None when applied."""
        cfg = self.config
        zx, zy = dev.frame.to_xy(fix.lat, fix.lon)
        if abs(zx) > _REANCHOR_M or abs(zy) > _REANCHOR_M:
            # Keep the flat-earth frame small: re-centre it on the current state.
            dev.frame = LocalFrame(*dev.frame.to_latlon(dev.x, dev.y))
            dev.x = dev.y = 0.0
            zx, zy = dev.frame.to_xy(fix.lat, fix.lon)
        sigma = fix.sigma
        gps = obs if isinstance(obs, GpsFix) else None
        s = 0.0  # how much of the GPS bias state this fix sees
        if gps is None:
            r2 = sigma * sigma
            floor = cfg.floors.get(fix.kind, 0.3)
        elif dev.indoor is True:
            sigma *= cfg.indoor_gps_inflation
            r2 = sigma * sigma
            floor = cfg.indoor_gps_floor
        else:
            r2 = self._gps_white * sigma * sigma
            s = self._gps_bias * sigma
            floor = 0.0
        t = max(obs.t, dev.t)
        dt = t - dev.t
        lag = dev.t - obs.t
        if lag > 0:
            r2 += (dev.vx * dev.vx + dev.vy * dev.vy) * lag * lag

        # Motion mode, hence process noise, for the interval that ends with this fix.
        q = dev.q
        if gps is not None and gps.speed is not None:
            q = cfg.still_accel_noise if gps.speed < cfg.still_speed else cfg.accel_noise
            dev.mode_t = t
        elif fix.near is not None:
            q = cfg.still_accel_noise
            dev.mode_t = t
        elif t - dev.mode_t > cfg.mode_ttl_s:
            q = cfg.accel_noise
        if q > dev.q:
            dev.q = q  # it started moving somewhere in the interval
        dev.predict(t, dev.q, self._max_pvv, cfg.gps_bias_tau_s)
        dev.q = q

        ex = zx - dev.x - s * dev.bx
        ey = zy - dev.y - s * dev.by
        d2 = ex * ex + ey * ey
        var = dev.pxx + s * (2.0 * dev.pxb + s * dev.pbb) + r2
        gate = dev.pxx + sigma * sigma
        if gate < var:
            gate = var
        # The gate never rejects what the fix's own sigma calls plausible, whatever the
        # filter believes about its bias: a phone whose error is whiter than modelled
        # must not lose fixes to the model.
        if d2 > cfg.gate_chi2 * gate:
            # Beyond what the uncertainty allows; is it also beyond physics?
            slack = 3.0 * math.sqrt(gate)
            reason = (
                "impossible_speed"
                if math.sqrt(d2) - slack > cfg.max_speed * max(dt, 1.0)
                else "gated_outlier"
            )
            return self._gated(dev, zx, zy, r2, s, t, reason)
        dev.consec_rejects = 0
        if gps is None and d2 > cfg.soft_chi2 * var:
            # Huber-like: a surprising but possible scan counts as if it were noisier.
            r2 += d2 / cfg.soft_chi2 - var
        dev.update_position(zx, zy, r2, s, floor)
        if (
            fix.range_m is not None
            and fix.range_m > cfg.proximity_m
            and sigma > dev.bias
            and t - dev.last_used.get("gps", -math.inf) > cfg.gps_recent_s
        ):
            # A proximity fix is the beacon's position, whatever the distance: walking
            # away from the counter, only the growing range says so. With no GPS to move
            # the estimate, its uncertainty is at least the fix's own (the ring).
            dev.bias = sigma
        if gps is not None and gps.speed is not None:
            speed = gps.speed
            if gps.bearing is not None:
                b = math.radians(gps.bearing)
                sd = cfg.speed_noise + cfg.speed_noise_rel * speed
                self._velocity(dev, speed * math.sin(b), speed * math.cos(b), sd * sd)
            elif speed < cfg.still_speed:
                self._velocity(dev, 0.0, 0.0, cfg.speed_noise * cfg.speed_noise)
        return None

    def _velocity(self, dev: DeviceFilter, zvx: float, zvy: float, rv2: float) -> None:
        """A Doppler velocity; an implausible one is a manoeuvre: widen the velocity prior."""
        ex, ey = zvx - dev.vx, zvy - dev.vy
        d2 = ex * ex + ey * ey
        gate = self.config.gate_chi2
        if d2 > gate * (dev.pvv + rv2):
            dev.pvv = d2 / gate - rv2
        dev.update_velocity(zvx, zvy, rv2)

    def _gated(
        self, dev: DeviceFilter, zx: float, zy: float, r2: float, s: float, t: float, reason: str
    ) -> str | None:
        """Count a gated fix; restart the filter on a run of mutually consistent ones.

        ``r2`` and ``s`` describe the fix as in :meth:`DeviceFilter.update_position`."""
        cfg = self.config
        if dev.consec_rejects and (zx - dev.rejects_x) ** 2 + (zy - dev.rejects_y) ** 2 > (
            cfg.gate_chi2 * 2.0 * (r2 + s * s)
        ):
            dev.consec_rejects = 0
        if dev.consec_rejects == 0:
            dev.rejects_x, dev.rejects_y = zx, zy
        dev.consec_rejects += 1
        if dev.consec_rejects >= cfg.reinit_after:
            dev.reset(zx, zy, r2 + s * s, t, cfg.initial_speed_sd, -s)
            self.reinitialised += 1
            return None
        return reason

    def _update_context(self, dev: DeviceFilter, obs: Observation, fix: PositionFix) -> None:
        """Indoor/outdoor belief and beacon proximity, from the sources' own hints."""
        if isinstance(obs, GpsFix) and obs.speed is not None and obs.speed >= self._vehicle:
            dev.indoor_score = -3.0  # faster than anyone walks indoors: in a vehicle
        elif fix.indoor is True:
            dev.indoor_score = min(3.0, dev.indoor_score + (1.5 if fix.kind == "beacon" else 0.7))
        elif isinstance(obs, GpsFix):
            dev.indoor_score = max(-3.0, dev.indoor_score - (1.0 if obs.accuracy < 12 else 0.3))
        if fix.kind == "beacon":
            dev.near = fix.near
            dev.near_t = obs.t

    def _estimate(
        self,
        device: str,
        dev: DeviceFilter,
        t: float,
        x: float | None = None,
        y: float | None = None,
        ppp: float | None = None,
    ) -> Estimate:
        cfg = self.config
        lat, lon = dev.frame.to_latlon(dev.x if x is None else x, dev.y if y is None else y)
        sigma = math.sqrt((dev.pxx if ppp is None else ppp) + dev.bias * dev.bias)
        used = dev.last_used
        if len(used) == 1:
            sources: tuple[Kind, ...] = tuple(used)
        else:
            window = t - cfg.sources_window_s
            sources = tuple(
                sorted(
                    (k for k, lt in used.items() if lt >= window),
                    key=used.__getitem__,
                    reverse=True,
                )
            )
        near = dev.near if t - dev.near_t <= cfg.near_ttl_s else None
        return Estimate(
            device=device,
            t=t,
            lat=lat,
            lon=lon,
            radius68=sigma * R68_PER_SIGMA,
            radius95=sigma * R95_PER_SIGMA,
            velocity=(dev.vx, dev.vy),
            sources=sources,
            indoor=dev.indoor,
            h3=h3.latlng_to_cell(lat, lon, cfg.resolution),
            near=near,
        )


def fuse_track(
    observations: Iterable[Observation | Mapping[str, Any]],
    registry: Registry | None = None,
    *,
    resolution: int = 10,
    config: FusionConfig | None = None,
) -> list[Estimate]:
    """Fuse a recorded trace (observations or their JSON dicts) into estimates.

    One estimate per accepted observation, in input order. Use :class:`FusionEngine`
    directly to also see the rejected observations and counters.
    """
    engine = FusionEngine(registry, replace(config or FusionConfig(), resolution=resolution))
    out: list[Estimate] = []
    for o in observations:
        r = engine.process_dict(o) if isinstance(o, Mapping) else engine.process(o)
        if isinstance(r, Estimate):
            out.append(r)
    return out

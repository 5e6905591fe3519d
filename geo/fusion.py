"""Per-device fusion of every source into one position with an honest uncertainty.

The filter is a constant-velocity Kalman filter on a local east/north metric plane.
Because every measurement is treated as isotropic (a position with one sigma per axis)
and the process noise is the same on both axes, the east and north axes are two
independent 2-state filters that share one covariance. The whole update is therefore a
handful of scalar operations, not matrix algebra, which is what keeps a single update
in microseconds without numpy.

Honesty of the reported radius is the point. Two things make a textbook filter
over-confident on phone data and both are handled here:

* Source errors are correlated in time (GPS multipath and atmospheric bias drift over
  tens of seconds; Wi-Fi shadowing is identical for repeated scans at one spot). A
  filter that assumes white noise averages them down to nothing. The filter therefore
  keeps, beside its white-noise covariance (which sets the gains), a *shared-bias*
  sigma: the part of each measurement's error (``floor * r**2`` of its variance, per
  source kind) that does not average out, blended with the same gains as the state.
  The reported uncertainty is the sum of both.
* Outliers (multipath jumps, moved access points) are gated by Mahalanobis distance
  and by physically impossible speed. A run of consistent rejections means the filter,
  not the sensors, is wrong, so it re-initialises on them instead of drifting away.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import h3

from geo.coords import LocalFrame
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
    """White-noise acceleration spectral density q (m^2/s^3) of the motion model."""
    max_speed_sd: float = 15.0
    """Cap on velocity sigma (m/s): after a gap the device moved at most courier speeds."""
    initial_speed_sd: float = 5.0
    speed_noise: float = 1.0
    """Sigma (m/s) of a GPS speed/bearing velocity measurement."""
    gate_chi2: float = 13.82
    """Mahalanobis gate (chi-square, 2 dof, 99.9 %)."""
    max_speed: float = 60.0
    """A jump needing more than this speed (m/s), beyond 3 sigma, is impossible."""
    reinit_after: int = 4
    """Consecutive consistent rejections that make the filter restart on them."""
    late_tolerance_s: float = 2.0
    """Observations up to this much older than the filter are applied, not rejected."""
    floors: Mapping[str, float] = field(
        default_factory=lambda: {"gps": 0.3, "wifi": 0.3, "beacon": 0.1, "cell": 0.3}
    )
    """Share of each source's error variance that is shared between its consecutive
    fixes (does not average out); calibrated on ``o2o bench geo --seed 1``."""
    indoor_gps_inflation: float = 2.0
    """GPS sigma multiplier while the device is believed indoors (multipath, walls)."""
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


class DeviceFilter:
    """The filter state of one device. Mutable and small (a few dozen floats)."""

    __slots__ = (
        "bias",
        "consec_rejects",
        "frame",
        "indoor_score",
        "last_kind_t",
        "last_used",
        "near",
        "near_t",
        "ppp",
        "ppv",
        "pvv",
        "rejects_x",
        "rejects_y",
        "t",
        "vx",
        "vy",
        "x",
        "y",
    )

    def __init__(self, fix_x: float, fix_y: float, frame: LocalFrame, t: float) -> None:
        self.frame = frame
        self.x, self.y, self.vx, self.vy = fix_x, fix_y, 0.0, 0.0
        self.ppp, self.ppv, self.pvv = 0.0, 0.0, 0.0
        self.bias = 0.0
        self.t = t
        self.last_kind_t: dict[str, float] = {}
        self.last_used: dict[Kind, float] = {}
        self.indoor_score = 0.0
        self.near: str | None = None
        self.near_t = -math.inf
        self.consec_rejects = 0
        self.rejects_x = 0.0
        self.rejects_y = 0.0

    def reset(self, x: float, y: float, var: float, t: float, speed_sd: float) -> None:
        self.x, self.y, self.vx, self.vy = x, y, 0.0, 0.0
        self.ppp, self.ppv, self.pvv = var, 0.0, speed_sd * speed_sd
        self.bias = 0.0
        self.t = t
        self.consec_rejects = 0

    def predict(self, t: float, q: float, max_pvv: float) -> None:
        dt = t - self.t
        if dt <= 0.0:
            return
        ppp, ppv, pvv = self.ppp, self.ppv, self.pvv
        dt2 = dt * dt
        self.x += self.vx * dt
        self.y += self.vy * dt
        self.ppp = ppp + 2.0 * dt * ppv + dt2 * pvv + q * dt2 * dt / 3.0
        self.ppv = ppv + dt * pvv + q * dt2 / 2.0
        self.pvv = pvv + q * dt
        if self.pvv > max_pvv:
            # Cap velocity uncertainty, scaling the cross term so P stays positive definite.
            self.ppv *= math.sqrt(max_pvv / self.pvv)
            self.pvv = max_pvv
        self.t = t

    def update_position(self, zx: float, zy: float, r2: float, floor: float) -> None:
        prior = self.ppp
        s = prior + r2
        kp = prior / s
        self.bias += kp * (math.sqrt(floor * r2) - self.bias)
        kv = self.ppv / s
        ex, ey = zx - self.x, zy - self.y
        self.x += kp * ex
        self.y += kp * ey
        self.vx += kv * ex
        self.vy += kv * ey
        self.pvv -= self.ppv * kv
        self.ppv *= r2 / s
        self.ppp = prior * r2 / s

    def update_velocity(self, zvx: float, zvy: float, rv2: float) -> None:
        s = self.pvv + rv2
        kp = self.ppv / s
        kv = self.pvv / s
        ex, ey = zvx - self.vx, zvy - self.vy
        self.x += kp * ex
        self.y += kp * ey
        self.vx += kv * ex
        self.vy += kv * ey
        self.ppp = max(self.ppp - self.ppv * kp, 1e-6)
        self.ppv *= rv2 / s
        self.pvv *= rv2 / s

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
                float(t) if isinstance(t, int | float) and not isinstance(t, bool) else math.nan,
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
        for obs in observations:
            r = ingest(obs)
            if isinstance(r, Rejected):
                rejected.append(r)
            else:
                touched[obs.device] = r
        return BatchResult({d: self._estimate(d, f, f.t) for d, f in touched.items()}, rejected)

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

    def estimate(self, device: str, t: float | None = None) -> Estimate | None:
        """The device's current estimate, predicted forward to ``t`` when given."""
        dev = self.devices.get(device)
        if dev is None:
            return None
        if t is None or t <= dev.t:
            return self._estimate(device, dev, dev.t)
        dt = t - dev.t
        ppp = dev.ppp + 2 * dt * dev.ppv + dt * dt * dev.pvv
        ppp += self.config.accel_noise * dt**3 / 3
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
        dev.reset(0.0, 0.0, fix.sigma**2, t, self.config.initial_speed_sd)
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
        if fix.kind == "gps" and dev.indoor is True:
            sigma *= cfg.indoor_gps_inflation
        r2 = sigma * sigma
        t = max(obs.t, dev.t)
        dt = t - dev.t
        lag = dev.t - obs.t
        if lag > 0:
            r2 += (dev.vx * dev.vx + dev.vy * dev.vy) * lag * lag
        dev.predict(t, cfg.accel_noise, self._max_pvv)
        ex, ey = zx - dev.x, zy - dev.y
        d2 = ex * ex + ey * ey
        s = dev.ppp + r2
        if d2 > cfg.gate_chi2 * s:
            # Beyond what the uncertainty allows; is it also beyond physics?
            slack = 3.0 * math.sqrt(s)
            reason = (
                "impossible_speed"
                if math.sqrt(d2) - slack > cfg.max_speed * max(dt, 1.0)
                else "gated_outlier"
            )
            return self._gated(dev, zx, zy, r2, t, reason)
        dev.consec_rejects = 0
        dev.update_position(zx, zy, r2, cfg.floors.get(fix.kind, 0.3))
        if isinstance(obs, GpsFix) and obs.speed is not None:
            if obs.bearing is not None:
                b = math.radians(obs.bearing)
                dev.update_velocity(
                    obs.speed * math.sin(b), obs.speed * math.cos(b), cfg.speed_noise**2
                )
            elif obs.speed < 0.3:
                dev.update_velocity(0.0, 0.0, cfg.speed_noise**2)
        return None

    def _gated(
        self, dev: DeviceFilter, zx: float, zy: float, r2: float, t: float, reason: str
    ) -> str | None:
        """Count a gated fix; restart the filter on a run of mutually consistent ones."""
        cfg = self.config
        if dev.consec_rejects and (zx - dev.rejects_x) ** 2 + (zy - dev.rejects_y) ** 2 > (
            cfg.gate_chi2 * 2.0 * r2
        ):
            dev.consec_rejects = 0
        if dev.consec_rejects == 0:
            dev.rejects_x, dev.rejects_y = zx, zy
        dev.consec_rejects += 1
        if dev.consec_rejects >= cfg.reinit_after:
            dev.reset(zx, zy, r2, t, cfg.initial_speed_sd)
            self.reinitialised += 1
            return None
        return reason

    def _update_context(self, dev: DeviceFilter, obs: Observation, fix: PositionFix) -> None:
        """Indoor/outdoor belief and beacon proximity, from the sources' own hints."""
        if fix.indoor is True:
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
        sigma = math.sqrt((dev.ppp if ppp is None else ppp) + dev.bias * dev.bias)
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

"""BLE beacons: trilateration with three or more, proximity to the nearest otherwise.

Beacons sit at pickup counters indoors; each has a surveyed ``tx_power`` (RSSI at 1 m)
and a path-loss exponent (about 2 in open rooms). Ranging is poor: 3-4 dB of
shadowing is ~40 % of range at exponent 2, so with fewer than three beacons the fix is
the nearest beacon's position with a sigma from its RSSI-implied range (the device is
on a ring of that radius in an unknown direction), and with three or more it is the
same robust dB-domain fit the Wi-Fi source uses (:func:`geo.sources.wifi.solve_log_distance`).
``near`` names the nearest beacon when the device is confidently within ``proximity_m``
of it (its range one shadowing sigma above the estimate still is): the fusion filter
and dispatch use it for "courier is at the counter".
"""

from __future__ import annotations

import math
from typing import Literal

from geo.estimate import R68_PER_SIGMA, PositionFix
from geo.observations import BeaconSighting, Observation
from geo.registry import Registry
from geo.sources.base import Unlocatable
from geo.sources.wifi import (
    LOG_SLOPE,
    M_PER_DEG,
    Station,
    consistent_subset,
    max_eigen,
    solve_log_distance,
    weighted_centroid,
)

_Z68 = 0.4677
"""Standard-normal quantile of 0.68."""


class BeaconSource:
    """Locates a beacon sighting against the registry's beacons.

    Parameters (metres, dB): ``proximity_m`` range within which the device is ``near``
    a beacon; ``shadowing_db`` RSSI spread about the path-loss law; ``tx_db`` error of
    a surveyed ``tx_power``; ``min_sigma_m`` floor of the per-axis sigma;
    ``prior_sigma_m`` weak prior about the centroid for trilateration;
    ``max_range_m`` cap on one RSSI-implied range; ``height_m`` vertical offset between
    phone and beacon; ``outlier_slack_m`` extra distance tolerated before a beacon is
    called inconsistent with the others (a beacon carried to another shop);
    ``missing_rssi_dbm`` RSSI assumed when a reading has none; ``near_z``: ``near`` is
    set only when the nearest beacon's range at ``near_z`` sigma of shadowing is within
    ``proximity_m`` (1 sigma: an estimate of <= ~1.8 m for 3 m, since a plain estimate
    <= 3 m is truly within 3 m only ~60 % of the time).
    """

    kind: Literal["beacon"] = "beacon"

    def __init__(
        self,
        registry: Registry,
        proximity_m: float = 3.0,
        *,
        shadowing_db: float = 4.0,
        tx_db: float = 2.0,
        min_sigma_m: float = 0.5,
        prior_sigma_m: float = 30.0,
        max_range_m: float = 80.0,
        height_m: float = 0.5,
        huber_k: float = 2.0,
        outlier_z: float = 2.5,
        outlier_slack_m: float = 10.0,
        missing_rssi_dbm: float = -90.0,
        near_z: float = 1.0,
    ) -> None:
        self.registry = registry
        self.proximity_m = proximity_m
        self.var_db = shadowing_db**2 + tx_db**2
        self.min_sigma2 = min_sigma_m**2
        self.prior_var = prior_sigma_m**2
        self.max_range_m = max_range_m
        self.height2 = height_m**2
        self.huber_k = huber_k
        self.outlier_z = outlier_z
        self.outlier_slack_m = outlier_slack_m
        self.missing_rssi_dbm = missing_rssi_dbm
        self.near_z = near_z

    def locate(self, obs: Observation) -> PositionFix:
        """Position of a sighting; raises :class:`Unlocatable` when no known beacon is heard."""
        if not isinstance(obs, BeaconSighting):
            raise Unlocatable("wrong_kind", f"BeaconSource cannot locate a {obs.kind} observation")
        known = self.registry.beacons
        unknown = 0
        stations: list[Station] = []
        seen: set[str] = set()
        lat0 = lon0 = mlon = 0.0
        for reading in obs.beacons:
            if reading.id in seen:
                continue
            seen.add(reading.id)
            b = known.get(reading.id)
            if b is None:
                unknown += 1
                continue
            if not stations:
                lat0, lon0 = b.lat, b.lon
                mlon = M_PER_DEG * math.cos(math.radians(lat0))
            rssi = self.missing_rssi_dbm if reading.rssi is None else reading.rssi
            dlon = (b.lon - lon0 + 540.0) % 360.0 - 180.0
            stations.append(
                Station(
                    b.id,
                    dlon * mlon,
                    (b.lat - lat0) * M_PER_DEG,
                    rssi,
                    b.tx_power,
                    min(max(b.path_loss, 1.0), 6.0) * LOG_SLOPE,
                    0.0,
                    self.var_db,
                    self.max_range_m,
                )
            )
        if not stations:
            raise Unlocatable(
                "no_known_stations",
                f"none of {unknown} beacons is in the registry",
                unknown=unknown,
            )
        split = consistent_subset(stations, self.outlier_z, self.outlier_slack_m)
        if split is None:
            raise Unlocatable(
                "inconsistent_stations",
                f"the {len(stations)} known beacons are too far apart to be heard together",
                unknown=unknown,
            )
        kept, dropped = split
        nearest = min(kept, key=lambda s: s.d)
        ring: float | None = None
        if len(kept) >= 3:
            x, y, _v = weighted_centroid(kept)
            x, y, cxx, cxy, cyy, chi2 = solve_log_distance(
                kept, x, y, self.prior_var, self.height2, self.huber_k
            )
            inflation = max(1.0, (chi2 + 2.0) / (len(kept) + 0.0))
            # The linearised covariance is optimistic at exponent ~2 (40 % range errors
            # are far from linear) and outside the beacons' hull; part of the nearest
            # beacon's ring keeps the tails honest (calibrated on simulated shops).
            var = 1.5 * inflation * max_eigen(cxx, cxy, cyy) + 0.3 * nearest.ring_var()
        else:
            # Proximity: the device lies on a ring around the beacon. A Gaussian with the
            # ring's second moment has a 68 % radius that covers the whole ring, so report
            # instead the sigma whose 68 % radius is the 68th percentile of the range
            # (counters are approached on purpose: no uniform-area prior here).
            q68 = nearest.d * math.exp(_Z68 * nearest.ln_sd)
            x, y, var = nearest.x, nearest.y, (q68 / R68_PER_SIGMA) ** 2 + nearest.s2
            ring = nearest.d
        sigma = math.sqrt(var + self.min_sigma2)
        return PositionFix(
            lat0 + y / M_PER_DEG,
            (lon0 + x / mlon + 540.0) % 360.0 - 180.0,
            sigma,
            "beacon",
            stations=len(kept),
            unknown=unknown,
            excluded=tuple(s.id for s in dropped),
            near=nearest.id if nearest.reach(self.near_z) <= self.proximity_m else None,
            indoor=True,
            range_m=ring,
        )

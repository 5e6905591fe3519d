"""Wi-Fi: position from the RSSI of access points whose positions the registry knows.

Model. Each AP follows the log-distance path-loss law
``rssi = tx_power - 10 * path_loss * log10(rho)`` with ``rho = sqrt(d^2 + h^2)`` metres
(``h`` keeps the model finite right under an AP) plus log-normal shadowing of a few dB.
The position is the robust maximum-likelihood fit of that law in the dB domain
(Gauss-Newton with Huber weights on a local east/north plane), which weighs near APs
(steep RSSI gradient) far more than distant ones, as it should.

Robustness. Before fitting, APs whose registered position cannot be reconciled with the
rest of the scan (a router that moved, a phone hotspot learnt somewhere else) are
excluded: every AP gets an RSSI-implied upper range, and only the largest group of
mutually reachable APs is kept. A scan whose APs split into equal groups is refused
rather than guessed.

Uncertainty. ``sigma`` (per-axis, metres) combines the fit covariance (the shadowing,
the unknown transmit power of APs without a learnt model and the AP position
uncertainty ``WifiAp.radius`` all enter each AP's variance), inflation when the
residuals are larger than the model expects, the largest axis of the error ellipse
(the fusion filter wants an isotropic sigma; under-covering the long axis would be
dishonest) and a floor for what the model ignores (multipath, walls, AP errors that
are correlated between neighbours). With one or two APs the position is the weighted
centroid and sigma follows from the RSSI-implied ranges: one weak AP may be 100+ m away.

``indoor`` stays ``None``: hearing access points says little about walls (APs are heard
from the street and the terrace as well as from inside).
"""

from __future__ import annotations

import math
from typing import Literal

from geo.coords import EARTH_RADIUS_M
from geo.estimate import R68_PER_SIGMA, PositionFix
from geo.observations import Observation, WifiScan
from geo.registry import DEFAULT_WIFI_PATH_LOSS, DEFAULT_WIFI_TX_POWER, Registry
from geo.sources.base import Unlocatable

M_PER_DEG = math.radians(1.0) * EARTH_RADIUS_M
"""Metres per degree of latitude on the mean-radius sphere."""
LOG_SLOPE = 10.0 / math.log(10.0)
"""dB per natural-log unit of distance, per unit of path-loss exponent."""


class Station:
    """One usable station of a scan, already in the local frame (metres, dB).

    Mutable on purpose and slotted: the sources build a handful per call and the solver
    reads them in tight loops, so attribute access must be cheap.
    """

    __slots__ = ("d", "id", "k", "ln_sd", "rssi", "s2", "tx", "var_db", "x", "y")

    def __init__(
        self,
        ident: str,
        x: float,
        y: float,
        rssi: float,
        tx: float,
        k: float,
        s2: float,
        var_db: float,
        max_range: float,
    ) -> None:
        self.id = ident
        self.x = x
        self.y = y
        self.rssi = rssi
        self.tx = tx
        self.k = k
        """dB per natural-log unit of distance: 10 * path_loss / ln 10."""
        self.s2 = s2
        """Per-axis variance of the station's registered position (m^2)."""
        self.var_db = var_db
        """Variance of the RSSI about the model (dB^2): shadowing + transmit power."""
        self.ln_sd = math.sqrt(var_db) / k
        """Standard deviation of ln(range) implied by ``var_db``."""
        self.d = min(max_range, max(1.0, math.exp((tx - rssi) / k)))
        """Median RSSI-implied range (m)."""

    def ring_var(self) -> float:
        """Per-axis variance (m^2) of the device about this station knowing only the range.

        The device lies on a ring in an unknown direction: ``E[d^2] / 2`` per axis, plus
        the uncertainty of the station's own position. ``E[d^2]`` is taken under the
        posterior of the range with a uniform-area prior (``p(d) ~ d``): ln d is normal
        with mean ``ln d_med + 2 s^2``, so ``E[d^2] = d_med^2 exp(6 s^2)``. Without that
        prior a weak AP heard alone looks 1.5-2x closer than it is.
        """
        v = self.ln_sd * self.ln_sd
        return 0.5 * self.d * self.d * math.exp(6.0 * v) + self.s2

    def reach(self, z: float) -> float:
        """Upper range (m) at ``z`` standard deviations of shadowing, plus position slack."""
        return self.d * math.exp(z * self.ln_sd) + z * math.sqrt(2.0 * self.s2)


def weighted_centroid(stations: list[Station]) -> tuple[float, float, float]:
    """Inverse-ring-variance centroid ``(x, y, per-axis variance)``.

    Used for one or two stations and as the solver's starting point: each station says
    "the device is within about ``d`` of me", so nearer stations count more.
    """
    sw = sx = sy = 0.0
    for s in stations:
        w = 1.0 / s.ring_var()
        sw += w
        sx += w * s.x
        sy += w * s.y
    return sx / sw, sy / sw, 1.0 / sw


def consistent_subset(
    stations: list[Station], z: float, slack_m: float
) -> tuple[list[Station], list[Station]] | None:
    """Split stations into (kept, excluded) by positional consensus; ``None`` if ambiguous.

    Two stations are compatible when one point can hear both: their distance is within
    the sum of their upper ranges plus ``slack_m``. The fast path (everything near the
    count-median of station positions) avoids the quadratic check for clean scans.
    A group must be a strict majority, or no honest position exists.
    """
    n = len(stations)
    if n == 1:
        return stations, []
    reach = [s.reach(z) for s in stations]
    xs = sorted(s.x for s in stations)
    ys = sorted(s.y for s in stations)
    h = n // 2
    mx = xs[h] if n % 2 else 0.5 * (xs[h - 1] + xs[h])
    my = ys[h] if n % 2 else 0.5 * (ys[h - 1] + ys[h])
    spread = sorted(reach)[h]
    if all(
        math.hypot(s.x - mx, s.y - my) <= r + spread + slack_m
        for s, r in zip(stations, reach, strict=True)
    ):
        return stations, []
    best_i, best_n, best_w = -1, -1, -math.inf
    groups: list[list[int]] = []
    for i, si in enumerate(stations):
        g = [
            j
            for j, sj in enumerate(stations)
            if math.hypot(si.x - sj.x, si.y - sj.y) <= reach[i] + reach[j] + slack_m
        ]
        groups.append(g)
        w = -si.d  # tie-break: the group anchored on the nearest station
        if len(g) > best_n or (len(g) == best_n and w > best_w):
            best_i, best_n, best_w = i, len(g), w
    if 2 * best_n <= n:
        return None
    members = set(groups[best_i])
    kept = [s for j, s in enumerate(stations) if j in members]
    excluded = [s for j, s in enumerate(stations) if j not in members]
    return kept, excluded


def solve_log_distance(
    stations: list[Station],
    x0: float,
    y0: float,
    prior_var: float,
    height2: float,
    huber_k: float,
    max_iter: int = 10,
    tol_m: float = 0.5,
) -> tuple[float, float, float, float, float, float]:
    """Robust Gauss-Newton fit of the log-distance model in the dB domain.

    Per station, with ``z = (rssi - tx + k ln rho) / sd``, minimises ``sum huber(z)``
    plus a weak prior ``|p - p0|^2 / (2 prior_var)`` at the centroid ``p0`` that keeps
    badly conditioned geometries (collinear APs) from running away. ``sd`` includes the
    station position uncertainty projected on the range (``k^2 s2 / rho^2``), so a
    vaguely known AP cannot pin the fit. Stops when a step is below ``tol_m`` metres or
    a fifth of the current per-axis sigma.
    Returns ``(x, y, cxx, cxy, cyy, chi2)``: the position, its covariance (inverse
    Gauss-Newton information at the solution, without Huber down-weighting) and the
    chi-square of the residuals.

    (Conditioning each reading on having been heard, ``/ Phi((mu - floor) / sd)``, was
    tried: it pushes far-off scans outward and doubled the 90th-percentile error on
    simulated blocks, because the APs *not* heard are not modelled.)
    """
    ip = 1.0 / prior_var
    # Per station: (x, y, rssi - tx, k / 2, k, var_db, k^2 * s2).
    rows = [(s.x, s.y, s.rssi - s.tx, 0.5 * s.k, s.k, s.var_db, s.k * s.k * s.s2) for s in stations]
    hk = huber_k
    log = math.log
    sqrt = math.sqrt

    def evaluate(
        px: float, py: float, robust: bool
    ) -> tuple[float, float, float, float, float, float, float, bool]:
        """(cost, a11, a12, a22, b1, b2, chi2, clipped) of the normal equations at (px, py).

        ``clipped``: some residual was Huber-down-weighted."""
        ex = px - x0
        ey = py - y0
        cost = 0.5 * ip * (ex * ex + ey * ey)
        a11 = a22 = ip
        a12 = 0.0
        b1 = ip * ex
        b2 = ip * ey
        chi2 = 0.0
        clipped = False
        for sx, sy, c, hk2, k, var_db, ks2 in rows:
            dx = px - sx
            dy = py - sy
            q = dx * dx + dy * dy + height2
            v = var_db + ks2 / q
            r = c + hk2 * log(q)
            z2 = r * r / v
            chi2 += z2
            if z2 <= hk * hk or not robust:
                cost += 0.5 * z2
                w = 1.0 / v
            else:
                a = sqrt(z2)
                cost += hk * (a - 0.5 * hk)
                w = hk / (a * v)
                clipped = True
            g = k / q
            jx = g * dx
            jy = g * dy
            wjx = w * jx
            wjy = w * jy
            a11 += wjx * jx
            a12 += wjx * jy
            a22 += wjy * jy
            b1 += wjx * r
            b2 += wjy * r
        return cost, a11, a12, a22, b1, b2, chi2, clipped

    x, y = x0, y0
    cur, a11, a12, a22, b1, b2, chi2, clipped = evaluate(x, y, True)
    for _ in range(max_iter):
        det = a11 * a22 - a12 * a12
        if det <= 0.0:
            break
        sx = -(a22 * b1 - a12 * b2) / det
        sy = -(a11 * b2 - a12 * b1) / det
        step = 1.0
        for _h in range(5):
            nx = x + step * sx
            ny = y + step * sy
            cand = evaluate(nx, ny, True)
            if cand[0] <= cur:
                x, y = nx, ny
                cur, a11, a12, a22, b1, b2, chi2, clipped = cand
                break
            step *= 0.5
        else:
            break
        # Converged when the step is small against the position's own uncertainty
        # (a fifth of a sigma) or below ``tol_m``: more digits would be noise.
        step2 = step * step * (sx * sx + sy * sy)
        if step2 < tol_m * tol_m or step2 * det < 0.02 * (a11 + a22):
            break
    if clipped:  # covariance without the Huber down-weighting
        _c, a11, a12, a22, _b1, _b2, chi2, _cl = evaluate(x, y, False)
    det = a11 * a22 - a12 * a12
    return x, y, a22 / det, -a12 / det, a11 / det, chi2


def max_eigen(cxx: float, cxy: float, cyy: float) -> float:
    """Largest eigenvalue of a symmetric 2x2 matrix."""
    m = 0.5 * (cxx + cyy)
    return m + math.sqrt(max(0.0, 0.25 * (cxx - cyy) ** 2 + cxy * cxy))


class WifiSource:
    """Locates a Wi-Fi scan against the registry's access points.

    Parameters (dB and metres):
    ``shadowing_db`` log-normal shadowing of one RSSI reading about the path-loss law;
    ``tx_unknown_db`` extra spread of the transmit power for APs without a learnt model;
    ``tx_learnt_db`` residual error of a learnt transmit power;
    ``min_sigma_m`` floor of the per-axis sigma; ``sigma_scale`` multiplies the modelled
    sigma. Calibrated on simulated street-grid areas (40 APs in 500 m x 500 m, 5.5 dB
    shadowing, registry learnt from GPS-tagged walks and drives): with 0.9 the truth is
    inside ``radius95`` 95-97 % and inside ``radius68`` 83-88 % of the time (the
    one- and two-AP fixes are rings, which an isotropic Gaussian over-covers at 68 %);
    with an exact registry 94 % / 81 %.
    ``prior_sigma_m`` weak prior about the centroid (about the longest Wi-Fi range);
    ``max_range_m`` cap on one RSSI-implied range; ``height_m`` vertical offset of APs;
    ``outlier_z`` shadowing z-score of the upper range used for consensus;
    ``outlier_slack_m`` extra distance tolerated before calling an AP inconsistent;
    ``missing_rssi_dbm`` RSSI assumed when a reading has none;
    ``max_aps`` only the strongest this many known APs enter the solve.
    """

    kind: Literal["wifi"] = "wifi"

    def __init__(
        self,
        registry: Registry,
        *,
        shadowing_db: float = 6.0,
        tx_unknown_db: float = 5.0,
        tx_learnt_db: float = 2.5,
        min_sigma_m: float = 8.0,
        sigma_scale: float = 0.9,
        prior_sigma_m: float = 150.0,
        max_range_m: float = 400.0,
        height_m: float = 3.0,
        huber_k: float = 2.0,
        outlier_z: float = 2.5,
        outlier_slack_m: float = 60.0,
        missing_rssi_dbm: float = -85.0,
        max_aps: int = 12,
    ) -> None:
        self.registry = registry
        self.max_aps = max_aps
        self.var_unknown = shadowing_db**2 + tx_unknown_db**2
        self.var_learnt = shadowing_db**2 + tx_learnt_db**2
        self.min_sigma2 = min_sigma_m**2
        self.sigma_scale = sigma_scale
        self.prior_var = prior_sigma_m**2
        self.max_range_m = max_range_m
        self.height2 = height_m**2
        self.huber_k = huber_k
        self.outlier_z = outlier_z
        self.outlier_slack_m = outlier_slack_m
        self.missing_rssi_dbm = missing_rssi_dbm

    def locate(self, obs: Observation) -> PositionFix:
        """Position of a scan; raises :class:`Unlocatable` when no known AP is usable."""
        if not isinstance(obs, WifiScan):
            raise Unlocatable("wrong_kind", f"WifiSource cannot locate a {obs.kind} observation")
        wifi = self.registry.wifi
        unknown = 0
        flagged: list[str] = []
        stations: list[Station] = []
        seen: set[str] = set()
        lat0 = lon0 = mlon = 0.0
        for reading in obs.aps:
            ident = reading.id
            if ident in seen:
                continue  # duplicate reading in one scan: keep the first
            seen.add(ident)
            ap = wifi.get(ident)
            if ap is None:
                unknown += 1
                continue
            if ap.moved:
                flagged.append(ident)
                continue
            if not stations:
                lat0, lon0 = ap.lat, ap.lon
                mlon = M_PER_DEG * math.cos(math.radians(lat0))
            rssi = self.missing_rssi_dbm if reading.rssi is None else reading.rssi
            if ap.tx_power is None or ap.path_loss is None:
                tx = DEFAULT_WIFI_TX_POWER if ap.tx_power is None else ap.tx_power
                n = DEFAULT_WIFI_PATH_LOSS if ap.path_loss is None else ap.path_loss
                var_db = self.var_unknown
            else:
                tx, n, var_db = ap.tx_power, ap.path_loss, self.var_learnt
            n = min(max(n, 1.0), 6.0)  # a corrupt exponent must not divide by zero
            s_ap = ap.radius / R68_PER_SIGMA
            dlon = (ap.lon - lon0 + 540.0) % 360.0 - 180.0
            stations.append(
                Station(
                    ident,
                    dlon * mlon,
                    (ap.lat - lat0) * M_PER_DEG,
                    rssi,
                    tx,
                    n * LOG_SLOPE,
                    s_ap * s_ap,
                    var_db,
                    self.max_range_m,
                )
            )
        if not stations:
            if flagged:
                raise Unlocatable(
                    "only_moved_stations",
                    f"all {len(flagged)} known APs are flagged as moved",
                    unknown=unknown,
                )
            raise Unlocatable(
                "no_known_stations", f"none of {unknown} APs is in the registry", unknown=unknown
            )
        if len(stations) > self.max_aps:
            # The strongest APs carry nearly all the information (weak ones have wide
            # range errors); capping them bounds the solve time of dense scans.
            stations.sort(key=lambda st: st.rssi, reverse=True)
            del stations[self.max_aps :]
        split = consistent_subset(stations, self.outlier_z, self.outlier_slack_m)
        if split is None:
            raise Unlocatable(
                "inconsistent_stations",
                f"the {len(stations)} known APs disagree about where the scan was taken",
                unknown=unknown,
            )
        kept, dropped = split
        x, y, var = weighted_centroid(kept)
        if len(kept) >= 3:
            x, y, cxx, cxy, cyy, chi2 = solve_log_distance(
                kept, x, y, self.prior_var, self.height2, self.huber_k
            )
            dof = len(kept) - 2
            inflation = max(1.0, (chi2 + 2.0) / (dof + 2.0))
            var = inflation * max_eigen(cxx, cxy, cyy)
        sigma = math.sqrt(self.sigma_scale**2 * var + self.min_sigma2)
        lat = lat0 + y / M_PER_DEG
        lon = (lon0 + x / mlon + 540.0) % 360.0 - 180.0
        excluded = tuple(flagged) + tuple(s.id for s in dropped)
        return PositionFix(
            lat, lon, sigma, "wifi", stations=len(kept), unknown=unknown, excluded=excluded
        )

"""``ortools``: rolling-horizon bundle matching with CP-SAT and delayed commitment.

**MDRP mode** (``view.mode == "mdrp"``), every dispatcher tick:

1. *Who and what.* Couriers on duty whose committed work ends within
   ``courier_horizon_s`` (``free_at``/``free_place``: a busy courier takes new work only
   after its queue, the no-diversion rule) and pending orders whose food is ready within
   ``order_horizon_s``.
2. *Candidate bundles* per restaurant: every order alone, and when couriers are scarce
   (more orders than couriers in the horizon, the Reyes et al. target bundle size
   ``ceil(orders / couriers)``, at most ``max_bundle``) pairs and triples of orders whose
   ready times lie within ``bundle_window_s``; drop-offs in the best permutation
   (smallest sum of drop-off times).
3. *Scores.* For a courier free at ``t`` at place ``p``: pickup ``P = max(latest ready,
   t + travel(p, restaurant) + pickup_service/2)``, drop-off times by the engine's rules.
   The cost of the pair is, in seconds, ``sum over its orders of (drop-off - ideal
   drop-off)`` (ideal: picked up the moment the food is ready and driven straight to the
   door, so the cost is the click-to-door above the unavoidable floor) ``+ late_weight x
   click-to-door beyond the target + travel_weight x courier driving + wait_weight x
   the courier's idle wait (ready - arrival, when it would be early) - urgency_weight x
   the delay its orders have already incurred - reward_s x orders``. Each bundle keeps
   its ``couriers_per_bundle`` cheapest couriers.

   The wait term is what a courier held for an order that is ready only later costs:
   with one bundle per courier in the matching, a free courier matched (but, by 5., not
   yet sent) to food ready in 20 minutes is not available for food that is ready now.
   Charging its idle wait keeps free couriers for urgent orders and gives later ones to
   couriers who become free about when the food is ready. The price is more driving (a
   farther courier who would wait less may be sent). (Tuned on seeds 0, 4, 6: wait_weight
   0 -> 1 cut mean click-to-door from 33.12 to 32.68 min over their 72 instances; 31.08
   to 30.82 on the 48 of seeds 2 and 8, not used for tuning; 2 gave 32.83 on the 72.)
4. *Selection* (OR-Tools CP-SAT, one worker, fixed seed, deterministic time limit): a set
   of pairs with every order in at most one and every courier in at most one, minimum
   total cost. The reward makes covering orders come first; among covers the cheapest.
5. *Delayed commitment.* A chosen pair becomes an :class:`Assignment` only if waiting one
   more tick would make its pickup later (the courier must leave now: ``max(now + tick,
   t) + travel + pickup_service/2 > ready``) and the courier is free before the next
   tick. Everything else stays open and is re-optimised at the next tick, so later orders
   can still join a bundle and couriers are not tied up early. Every assignment is
   checked with ``view.project`` before it is returned.

6. *Prepositioning* (opt-in, ``preposition=True``; the published MDRP variant, registered
   as ``ortools-prepos``). After the matching, idle couriers that no pair of the selection
   uses (surplus now) may be sent to wait at a restaurant where demand is expected and
   few couriers are near. Demand of a restaurant is the number of orders placed there in
   the last ``prepos_window_s`` (seen through ``on_order_placed``: no future orders). For a
   restaurant ``r``, ``D(r)`` sums the demand of the restaurants within
   ``prepos_radius_s`` of it and ``S(r)`` counts couriers whose work ends (``free_place``)
   within that radius by ``now + prepos_supply_horizon_s`` and that the selection does
   not use (idle, repositioning or about to be free). Each surplus courier, longest idle
   first, compares the best ``D/S`` of the restaurants near where it is (``S`` counts it
   already; 0 when none is near) with ``D(r)/(S(r) + 1)`` of the restaurants it can reach
   within ``prepos_max_move_s``; it moves to the best one if that is more than
   ``prepos_gain`` times better (and ``D(r) >= prepos_min_demand``), and the counts are
   updated before the next courier. Only couriers with at least
   ``prepos_min_shift_left_s`` of shift left move, and only to a restaurant they reach at
   least half that before their off-time, so a courier is never sent off duty (the engine
   also rejects a reposition that would end after the off-time). A reposition, once sent,
   is completed (the engine's rule): the price of a wrong guess is that the courier must
   finish the move before it can take work elsewhere. (Parameters chosen on 12 instances
   of seeds 0, 4, 6 among 9 settings, all within 0.2 min of each other; over all 120
   instances it moves the mean click-to-door 31.94 -> 31.84 min, p90 46.95 -> 47.03,
   cost per order $11.13 -> $10.97: a small gain, not the 31.0 min target.)

7. *Assignment updates* (opt-in, ``assignment_updates=True``; the published MDRP variant,
   registered as ``ortools-updates``). When a courier arrives at a restaurant for a
   bundle (the engine's ``on_courier_arrived`` hook) and, if ``update_on_tick``, at every
   tick while it waits there for the food (orders placed meanwhile), pending orders of
   that restaurant are added to its bundle, one at a time in order of ready time, while
   the bundle has fewer than ``update_max_bundle`` orders. An order qualifies if its food
   is ready by the pickup that happens anyway plus ``update_slack_s`` (0: nobody in the
   bundle waits longer at the restaurant) and if the bundle, drop-offs re-sequenced for
   the smallest sum of drop-off times, delays the drop-offs of the orders already in it
   by at most ``update_max_delay_s`` in total, counting ``late_weight`` times the extra
   click-to-door beyond the target. The order itself is picked up now instead of waiting
   for a courier of its own; the price is paid by the bundle's orders (bounded by the
   delay cap) and by the courier's later availability. Updates are computed before the
   tick's matching, so the matching sees what is still pending. (Measured: neutral. On
   12 instances of seeds 0, 4, 6 seven settings (slack 0-120 s, delay cap 300-900 s,
   with/without tick updates) were all within 0.03 min of the plain policy's 33.36 min
   and slack 600 s was worse, 33.86; the defaults are the rule's natural ones, slack 0,
   not the best of noise. Over all 120 instances: 575 updates, mean click-to-door
   31.94 -> 31.94 min, p90 46.95 -> 47.02, cost per order unchanged. With delayed
   commitment a courier rarely finds an unassigned order of its restaurant that is
   ready by its pickup: the matching has bundled what was known when it was sent.)

**Free mode** (couriers may chain pickups of several restaurants): the same matching,
whose candidates also hold *chains* when couriers are scarcest (target bundle size of at
least ``chain_min_size``): an order of one restaurant and one of another at most
``chain_radius_s`` away, picked up in that order (:func:`chain_bundles`), given to the
courier as a :class:`~simulations.policy.Reroute` (its queue, then the chain); everything
else is an :class:`Assignment` as in mdrp mode. Why only then: every restaurant visit
costs the pickup service time (4 minutes in the MDRP instances), so the first order of a
chain is delivered at least that much later than alone. On 12 development instances
(seeds 0, 4, 6) chains whenever bundles were allowed (target size 2) made the mean
click-to-door worse, 31.96 -> 32.17 min (capping a chain's extra click-to-door at 10 or
15 minutes: 32.01, 32.07); from size 3 on they changed one instance, the scarcest
(4r50t100s2p125: 39.98 -> 39.87), and left the rest as in mdrp mode. (The former free
mode re-planned the city with the routing :class:`dispatch.Dispatcher` every tick: on
0o50t75s1p100 33.31 min against 27.64 in mdrp mode, in 99 s instead of 3 s; it is the
``dispatcher`` policy now, :mod:`simulations.policies.dispatcher`.) Over all 120
instances free mode gains 0.01 min (docs/benchmarks.md, per instance family).

Everything is deterministic: no wall clock, no unseeded randomness, CP-SAT with one
worker and a deterministic time limit.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

from dispatch.model import Order
from simulations.engine import CourierState, SimView
from simulations.policy import (
    Assignment,
    AssignmentUpdate,
    BasePolicy,
    Decision,
    Reposition,
    Reroute,
    StopRef,
)

__all__ = ["Bundle", "OrToolsPolicy", "candidate_bundles", "chain_bundles"]


@dataclass(frozen=True, slots=True)
class Bundle:
    """Orders of one restaurant in drop-off sequence, timed relative to the pickup.

    ``ready``: latest ready time; ``offsets``: each drop-off time minus the pickup time;
    ``end_offset``: when the courier is free again, minus the pickup time; ``ideal``: sum
    of the orders' ideal drop-off times; ``placed``: placement times; ``drive``: seconds
    driven after the pickup.

    A free-mode *chain* (``chain`` not empty: ``(restaurant, order ids)`` per pickup, in
    visiting order) starts at ``restaurant``, the first of them; its ``ready`` is then
    the first pickup time from which no later pickup waits for food, and ``offsets`` are
    relative to that first pickup.
    """

    restaurant: str
    order_ids: tuple[str, ...]
    ready: float
    offsets: tuple[float, ...]
    end_offset: float
    ideal: float
    placed: tuple[float, ...]
    drive: float
    chain: tuple[tuple[str, tuple[str, ...]], ...] = ()


def candidate_bundles(
    view: SimView,
    restaurant: str,
    orders: Sequence[Order],
    max_size: int,
    window_s: float,
    max_orders: int = 8,
    now: float = 0.0,
) -> list[Bundle]:
    """Singles, and groups of up to ``max_size`` orders whose ready times (``now`` for food
    that is ready already) lie within ``window_s``, each in its best drop-off sequence
    (only the ``max_orders`` earliest ready orders enter groups)."""
    hp = view.params.pickup_service_s / 2.0
    hd = view.params.dropoff_service_s / 2.0
    rest = view.restaurant(restaurant)
    orders = sorted(orders, key=lambda o: (o.ready_at, o.placed_at, o.id))
    places = [rest, *(o.dropoff for o in orders)]
    t = view.travel_s(places, places)
    ideal = [o.ready_at + hp + t[0, i + 1] + hd for i, o in enumerate(orders)]
    out: list[Bundle] = []

    def make(idx: tuple[int, ...]) -> Bundle:
        best: tuple[float, tuple[int, ...], list[float], float, float] | None = None
        for perm in itertools.permutations(idx) if len(idx) > 1 else (idx,):
            at, clock, offs, drive = 0, hp, [], 0.0
            for j in perm:
                leg = t[at, j + 1]
                drive += leg
                clock += leg + hd
                offs.append(clock)
                clock += hd
                at = j + 1
            key = sum(offs)
            if best is None or key < best[0] - 1e-9:
                best = (key, perm, offs, clock, drive)
        assert best is not None
        _, perm, offs, end, drive = best
        return Bundle(
            restaurant,
            tuple(orders[j].id for j in perm),
            max(orders[j].ready_at for j in perm),
            tuple(offs),
            end,
            sum(ideal[j] for j in perm),
            tuple(orders[j].placed_at for j in perm),
            drive,
        )

    for i in range(len(orders)):
        out.append(make((i,)))
    head = min(len(orders), max_orders)
    for size in range(2, max_size + 1):
        for idx in itertools.combinations(range(head), size):
            readies = [max(now, orders[j].ready_at) for j in idx]
            if max(readies) - min(readies) <= window_s:
                out.append(make(idx))
    return out


def chain_bundles(
    view: SimView,
    by_rest: dict[str, list[Order]],
    window_s: float,
    radius_s: float,
    head: int = 4,
    now: float = 0.0,
) -> list[Bundle]:
    """Free mode: two orders of two restaurants at most ``radius_s`` apart, picked up one
    after the other (each way round) and dropped off in the better order, for pairs whose
    ready times (``now`` for food that is ready already) lie within ``window_s``; only the
    ``head`` earliest ready orders of each restaurant take part.

    The first pickup is timed so that the courier never waits at the second restaurant
    (``Bundle.ready``); the engine picks up the first order as soon as it can and waits at
    the second instead, which makes no drop-off later than the bundle says.
    """
    hp = view.params.pickup_service_s / 2.0
    hd = view.params.dropoff_service_s / 2.0
    rids = sorted(by_rest)
    if len(rids) < 2:
        return []
    heads = {
        r: sorted(by_rest[r], key=lambda o: (o.ready_at, o.placed_at, o.id))[:head] for r in rids
    }
    pool = [o for r in rids for o in heads[r]]
    at = {o.id: len(rids) + k for k, o in enumerate(pool)}  # drop-off rows of t
    places = [*(view.restaurant(r) for r in rids), *(o.dropoff for o in pool)]
    t = view.travel_s(places, places)
    out: list[Bundle] = []
    n = len(rids)
    near = t[:n, :n] <= radius_s
    np.fill_diagonal(near, False)
    for i, j in zip(*np.nonzero(near), strict=True):
        gap = float(t[i, j])
        p2 = 2 * hp + gap  # second pickup, relative to the first
        for o1 in heads[rids[i]]:
            for o2 in heads[rids[j]]:
                if abs(max(now, o1.ready_at) - max(now, o2.ready_at)) > window_s:
                    continue
                d1, d2 = at[o1.id], at[o2.id]
                # drop-offs in the better order: first o1 (a) or first o2 (b)
                a1 = p2 + hp + t[j, d1] + hd
                b1 = p2 + hp + t[j, d2] + hd
                b2 = b1 + hd + t[d2, d1] + hd
                a2 = a1 + hd + t[d1, d2] + hd
                if a1 + a2 <= b1 + b2 + 1e-9:
                    seq, offs = (o1, o2), [a1, a2]
                    drive = gap + t[j, d1] + t[d1, d2]
                else:
                    seq, offs = (o2, o1), [b1, b2]
                    drive = gap + t[j, d2] + t[d2, d1]
                ideal = o1.ready_at + t[i, d1] + o2.ready_at + t[j, d2] + 2 * (hp + hd)
                ready = max(o1.ready_at, o2.ready_at - p2)
                out.append(
                    Bundle(
                        rids[i],
                        (seq[0].id, seq[1].id),
                        ready,
                        (float(offs[0]), float(offs[1])),
                        float(offs[1] + hd),
                        float(ideal),
                        (seq[0].placed_at, seq[1].placed_at),
                        float(drive),
                        ((rids[i], (o1.id,)), (rids[j], (o2.id,))),
                    )
                )
    return out


@dataclass
class OrToolsPolicy(BasePolicy):
    """See the module docstring. Times in seconds."""

    courier_horizon_s: float = 900.0
    order_horizon_s: float = 1800.0
    max_bundle: int = 3
    min_bundle: int = 2
    bundle_window_s: float = 600.0
    couriers_per_bundle: int = 8
    travel_weight: float = 0.6
    late_weight: float = 1.0
    urgency_weight: float = 2.0
    wait_weight: float = 1.0
    reward_s: float = 7200.0
    solver_deterministic_time: float = 2.0
    tick_s: float = 60.0
    chain_radius_s: float = 300.0
    chain_head: int = 4
    chain_min_size: int = 3
    preposition: bool = False
    prepos_window_s: float = 1800.0
    prepos_radius_s: float = 300.0
    prepos_supply_horizon_s: float = 600.0
    prepos_max_move_s: float = 900.0
    prepos_min_shift_left_s: float = 1800.0
    prepos_gain: float = 2.0
    prepos_min_demand: float = 3.0
    assignment_updates: bool = False
    update_max_bundle: int = 4
    update_slack_s: float = 0.0
    update_max_delay_s: float = 600.0
    update_on_tick: bool = True
    name: str = "ortools"
    _last_tick: float | None = field(default=None, init=False, repr=False)
    _placed: list[tuple[float, str]] = field(default_factory=list, init=False, repr=False)

    def start(self, view: SimView) -> None:
        self._last_tick = None
        self._placed = []

    # ------------------------------------------------------------------ mdrp

    def _tick_length(self, now: float) -> float:
        last, self._last_tick = self._last_tick, now
        if last is None or now <= last:
            return self.tick_s
        return now - last

    def on_order_placed(self, now: float, order: Order, view: SimView) -> Sequence[Decision]:
        if self.preposition:
            self._placed.append((now, view.restaurant_of(order.id)))
        return ()

    def on_tick(self, now: float, view: SimView) -> Sequence[Decision]:
        tick = self._tick_length(now)
        used: set[str] = set()
        out: list[Decision] = []
        taken: set[str] = set()  # orders added to bundles this tick: not pending any more
        if self.assignment_updates and self.update_on_tick and view.mode == "mdrp":
            out.extend(self._tick_updates(now, view, taken))
        out.extend(self._match_tick(now, tick, view, used, taken))
        if self.preposition and view.mode == "mdrp":
            sent = {d.courier_id for d in out}
            out.extend(self._preposition(now, view, used | sent))
        return out

    def _match_tick(
        self, now: float, tick: float, view: SimView, used: set[str], taken: set[str]
    ) -> list[Decision]:
        pending = [
            o
            for o in view.pending_orders()
            if o.ready_at <= now + self.order_horizon_s and o.id not in taken
        ]
        if not pending:
            return []
        couriers = [c for c in view.couriers() if c.free_at <= now + self.courier_horizon_s]
        if not couriers:
            return []
        by_rest: dict[str, list[Order]] = {}
        for o in pending:
            by_rest.setdefault(view.restaurant_of(o.id), []).append(o)
        ratio = len(pending) / len(couriers)
        size = max(1, min(self.max_bundle, math.ceil(ratio - 1e-9)))
        if self.min_bundle > size:
            size = self.min_bundle
        bundles: list[Bundle] = []
        for rid in sorted(by_rest):
            bundles.extend(
                candidate_bundles(view, rid, by_rest[rid], size, self.bundle_window_s, now=now)
            )
        if view.mode == "free" and size >= self.chain_min_size and self.chain_radius_s > 0:
            bundles.extend(
                chain_bundles(
                    view, by_rest, self.bundle_window_s, self.chain_radius_s, self.chain_head,
                    now=now,
                )
            )  # fmt: skip
        rids = sorted(by_rest)
        col = {r: j for j, r in enumerate(rids)}
        travel = view.travel_s([c.free_place for c in couriers], [view.restaurant(r) for r in rids])
        t0 = np.array([max(now, c.free_at, c.shift_start) for c in couriers])
        off = np.array([c.shift_end for c in couriers])
        hp = view.params.pickup_service_s / 2.0
        target = view.params.target_c2d_s
        k = min(self.couriers_per_bundle, len(couriers))
        sunk = self._sunk(now, view, bundles)
        pairs: list[tuple[int, int, float]] = []  # (courier, bundle, cost)
        for b_i, b in enumerate(bundles):
            tr = travel[:, col[b.restaurant]]
            pick = np.maximum(b.ready, t0 + tr + hp)
            n = len(b.order_ids)
            cost = n * pick + (sum(b.offsets) - b.ideal)
            for off_i, placed in zip(b.offsets, b.placed, strict=True):
                cost = cost + self.late_weight * np.maximum(0.0, pick + off_i - placed - target)
            cost = cost + self.travel_weight * (tr + b.drive) - self.reward_s * n
            if self.wait_weight:
                cost = cost + self.wait_weight * np.maximum(0.0, b.ready - (t0 + tr + hp))
            cost = cost - self.urgency_weight * sum(sunk[oid] for oid in b.order_ids)
            cost = np.where(pick <= off, cost, np.inf)
            best = np.argsort(cost, kind="stable")[:k]
            for c_i in best:
                if math.isfinite(cost[c_i]):
                    pairs.append((int(c_i), b_i, float(cost[c_i])))
        if not pairs:
            return []
        chosen = self._select(pairs, bundles, len(couriers))
        out: list[Decision] = []
        for c_i, b_i in chosen:
            c, b = couriers[c_i], bundles[b_i]
            used.add(c.id)
            leg = float(travel[c_i, col[b.restaurant]])
            if not self._commit_now(now, tick, b, float(t0[c_i]), leg, hp):
                continue
            d = self._decision(c, b)
            if view.project(d).ok:
                out.append(d)
        return out

    @staticmethod
    def _decision(c: CourierState, b: Bundle) -> Assignment | Reroute:
        """An assignment; a chain (free mode) is a reroute: the courier's queue, then it."""
        if not b.chain:
            return Assignment(c.id, b.restaurant, b.order_ids)
        picks = [StopRef(oid, "pickup") for _, ids in b.chain for oid in ids]
        drops = [StopRef(oid, "dropoff") for oid in b.order_ids]
        return Reroute(c.id, (*c.queue, *picks, *drops))

    def on_courier_arrived(
        self, now: float, courier: CourierState, restaurant_id: str, view: SimView
    ) -> Sequence[Decision]:
        if not self.assignment_updates or view.mode != "mdrp":
            return ()
        return self._update_bundle(now, courier, view, set())

    def _tick_updates(self, now: float, view: SimView, taken: set[str]) -> list[Decision]:
        """Updates for every courier waiting at a restaurant for a pickup; adds the orders
        they take to ``taken``."""
        out: list[Decision] = []
        for c in view.couriers():
            if c.pickup_at is not None and c.pickup_at > now:
                for u in self._update_bundle(now, c, view, taken):
                    taken.update(u.order_ids)
                    out.append(u)
        return out

    def _update_bundle(
        self, now: float, courier: CourierState, view: SimView, taken: set[str]
    ) -> list[AssignmentUpdate]:
        """Orders to add to the bundle ``courier`` waits for (module docstring, 7.)."""
        bundle = [s.order_id for s in courier.committed if s.kind == "pickup"]
        pick = courier.pickup_at
        if not bundle or pick is None or len(bundle) >= self.update_max_bundle:
            return []
        rid = view.restaurant_of(bundle[0])
        extra = [
            o
            for o in view.pending_orders()
            if o.ready_at <= pick + self.update_slack_s
            and o.id not in taken
            and view.restaurant_of(o.id) == rid
        ]
        if not extra:
            return []
        extra.sort(key=lambda o: (o.ready_at, o.placed_at, o.id))
        seq = [s.order_id for s in courier.queue[: len(bundle)]]  # its drop-off sequence
        orders = {oid: view.order(oid) for oid in seq}
        orders.update((o.id, o) for o in extra)
        ids = [*seq, *(o.id for o in extra)]
        places = [view.restaurant(rid), *(orders[i].dropoff for i in ids)]
        t = view.travel_s(places, places)
        col = {oid: j + 1 for j, oid in enumerate(ids)}
        hp = view.params.pickup_service_s / 2.0
        hd = view.params.dropoff_service_s / 2.0
        target = view.params.target_c2d_s

        def drops(order: Sequence[str], at: float) -> list[float]:
            clock, here, out = at + hp, 0, []
            for oid in order:
                clock += t[here, col[oid]] + hd
                out.append(clock)
                clock += hd
                here = col[oid]
            return out

        def over(oid: str, drop: float) -> float:
            return max(0.0, drop - orders[oid].placed_at - target)

        base = dict(zip(seq, drops(seq, pick), strict=True))
        added: list[str] = []
        for o in extra:
            if len(seq) >= self.update_max_bundle:
                break
            at = max(pick, o.ready_at)
            best: tuple[float, list[str]] | None = None
            for perm in itertools.permutations([*seq, o.id]):
                d = dict(zip(perm, drops(perm, at), strict=True))
                key = sum(d.values())
                if best is None or key < best[0] - 1e-9:
                    best = (key, list(perm))
            assert best is not None
            d = dict(zip(best[1], drops(best[1], at), strict=True))
            harm = sum(
                d[i] - base[i] + self.late_weight * (over(i, d[i]) - over(i, base[i])) for i in base
            )
            if harm > self.update_max_delay_s:
                continue
            seq, pick = best[1], at
            added.append(o.id)
        if not added:
            return []
        u = AssignmentUpdate(courier.id, rid, tuple(added), tuple(seq))
        return [u] if view.project(u).ok else []

    def _preposition(self, now: float, view: SimView, used: set[str]) -> list[Decision]:
        """Send surplus idle couriers toward recent demand (module docstring, 6.)."""
        cut = now - self.prepos_window_s
        k = bisect.bisect_right(self._placed, (cut, "\uffff"))
        if k:
            del self._placed[:k]  # placement times only grow
        demand: dict[str, float] = {}
        for _, rid in self._placed:
            demand[rid] = demand.get(rid, 0.0) + 1.0
        if not demand:
            return []
        supply = [
            c
            for c in view.couriers()
            if c.id not in used and c.free_at <= now + self.prepos_supply_horizon_s
        ]
        idle = [
            c
            for c in supply
            if c.idle and not c.queue and c.free_at <= now
            and c.shift_end - now >= self.prepos_min_shift_left_s
        ]  # fmt: skip
        if not idle:
            return []
        idle.sort(key=lambda c: (c.free_at, c.id))
        rids = sorted(demand)
        places = [view.restaurant(r) for r in rids]
        w = np.array([demand[r] for r in rids])
        near_rr = view.travel_s(places, places) <= self.prepos_radius_s
        dem = near_rr.astype(float) @ w  # D(r)
        tr_sr = view.travel_s([c.free_place for c in supply], places)
        near_sr = tr_sr <= self.prepos_radius_s
        cnt = near_sr.sum(axis=0).astype(float)  # S(r)
        row = {c.id: i for i, c in enumerate(supply)}
        out: list[Decision] = []
        for c in idle:
            tr = tr_sr[row[c.id]]
            here = tr <= self.prepos_radius_s
            # where it is: the best D/S among restaurants near it (S counts it already)
            value_here = float((dem / np.maximum(cnt, 1.0))[here].max(initial=0.0))
            value = dem / (cnt + 1.0)
            ok = (
                (tr <= self.prepos_max_move_s)
                & (now + tr <= c.shift_end - self.prepos_min_shift_left_s / 2)
                & (dem >= self.prepos_min_demand)
                & ~here
            )
            if not ok.any():
                continue
            value = np.where(ok, value, -np.inf)
            j = int(np.argmax(value))
            if value[j] <= self.prepos_gain * value_here + 1e-9:
                continue
            r = Reposition(c.id, rids[j])
            if not view.project(r).ok:
                continue
            out.append(r)
            cnt = cnt - near_sr[row[c.id]] + near_rr[j]
        return out

    @staticmethod
    def _sunk(now: float, view: SimView, bundles: Sequence[Bundle]) -> dict[str, float]:
        """Per order, the cost it has already incurred whoever serves it: its delay and
        overage if a courier picked it up now and drove straight to the door."""
        hp = view.params.pickup_service_s / 2.0
        target = view.params.target_c2d_s
        out: dict[str, float] = {}
        for b in bundles:
            if len(b.order_ids) != 1:
                continue
            oid, placed = b.order_ids[0], b.placed[0]
            shift = max(0.0, now + hp - b.ready)
            out[oid] = shift + max(0.0, b.ideal + shift - placed - target)
        return out

    @staticmethod
    def _commit_now(now: float, tick: float, b: Bundle, start: float, tr: float, hp: float) -> bool:
        if start > now + tick:
            return False  # free only after the next tick: decide then
        later = max(now + tick, start) + tr + hp
        return later > b.ready + 1e-9

    def _select(
        self, pairs: list[tuple[int, int, float]], bundles: list[Bundle], n_couriers: int
    ) -> list[tuple[int, int]]:
        model = cp_model.CpModel()
        xs = [model.new_bool_var(f"x{i}") for i in range(len(pairs))]
        by_order: dict[str, list[cp_model.IntVar]] = {}
        by_courier: dict[int, list[cp_model.IntVar]] = {}
        for x, (c_i, b_i, _) in zip(xs, pairs, strict=True):
            by_courier.setdefault(c_i, []).append(x)
            for oid in bundles[b_i].order_ids:
                by_order.setdefault(oid, []).append(x)
        for group in (*by_order.values(), *by_courier.values()):
            if len(group) > 1:
                model.add_at_most_one(group)
        model.minimize(sum(round(cost) * x for x, (_, _, cost) in zip(xs, pairs, strict=True)))
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.random_seed = 0
        solver.parameters.max_deterministic_time = self.solver_deterministic_time
        status = solver.solve(model)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return []
        chosen = [(c_i, b_i) for x, (c_i, b_i, _) in zip(xs, pairs, strict=True) if solver.value(x)]
        # most urgent first, so the engine sees them in a stable order
        chosen.sort(key=lambda p: (bundles[p[1]].ready, bundles[p[1]].order_ids))
        return chosen

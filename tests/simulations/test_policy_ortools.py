"""The ``ortools`` policy: feasible, repeatable, and better than the heuristics where the
optimisation matters (bundling when couriers are scarce, delayed commitment)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations.policies import make_policy
from simulations.policies.ortools import OrToolsPolicy
from simulations.run import run_scenario
from simulations.scenarios import Scenario, read_mdrp

PARAMS = (
    "meters_per_minute\tpickup service minutes\tdropoff service minutes\t"
    "target click-to-door\tmaximum click-to-door\tpay per order\tguaranteed pay per hour\n"
    "100\t4\t4\t40\t90\t10\t15\n"
)


def _instance(tmp: Path, restaurants: str, orders: str, couriers: str) -> Scenario:
    """A hand-made MDRP instance (tab-separated rows after the header)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "instance_parameters.txt").write_text(PARAMS)
    (tmp / "restaurants.txt").write_text("restaurant\tx\ty\n" + restaurants)
    (tmp / "orders.txt").write_text(
        "order\tx\ty\tplacement_time\trestaurant\tready_time\n" + orders
    )
    (tmp / "couriers.txt").write_text("courier\tx\ty\ton_time\toff_time\n" + couriers)
    return read_mdrp(tmp)


def test_registered() -> None:
    assert isinstance(make_policy("ortools"), OrToolsPolicy)


def test_tiny_feasible(tiny: Scenario, tmp_path: Path) -> None:
    r = run_scenario(tiny, "ortools", out_dir=tmp_path, strict=True)
    assert r.violations == [] and r.kpis["rejected_decisions"] == 0
    # o4 cannot be picked up by anyone before their off-time; the rest are delivered
    assert r.kpis["delivered"] == 3 and r.sim.undelivered == {"o4": "never_assigned"}
    assert r.kpis["c2d_mean"] is not None and r.kpis["c2d_mean"] <= 25.6667  # bundling's


def test_real_small_feasible_and_deterministic(real_small: Scenario, tmp_path: Path) -> None:
    a = run_scenario(real_small, "ortools", out_dir=tmp_path / "a")
    b = run_scenario(real_small, "ortools", out_dir=tmp_path / "b")
    assert a.kpis["c2d_mean"] == b.kpis["c2d_mean"]
    assert a.violations == [] and a.kpis["rejected_decisions"] == 0
    assert a.kpis["delivered_share"] is not None and a.kpis["delivered_share"] >= 0.99
    bundling = run_scenario(real_small, "bundling")
    assert float(a.kpis["c2d_mean"] or 0) < float(bundling.kpis["c2d_mean"] or 0)
    for name in (
        "solution_info_assignments.txt",
        "solution_info_orders.txt",
        "solution_info_couriers.txt",
    ):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_bundles_when_couriers_are_scarce(tmp_path: Path) -> None:
    """One courier, two orders of one restaurant ready a minute apart, doors close
    together: one trip with both beats two trips (greedy's second order waits)."""
    sc = _instance(
        tmp_path,
        "r1\t0\t0\n",
        "o1\t0\t1000\t0\tr1\t15\no2\t100\t1000\t1\tr1\t16\n",
        "c1\t0\t500\t0\t120\n",
    )
    r = run_scenario(sc, "ortools", strict=True)
    assert r.violations == []
    assert [a.orders for a in r.solution.assignments] in ([("o1", "o2")], [("o2", "o1")])
    greedy = run_scenario(sc, "greedy")
    assert float(r.kpis["c2d_mean"] or 0) < float(greedy.kpis["c2d_mean"] or 0)


def test_delayed_commitment_and_nearer_courier(tmp_path: Path) -> None:
    """The food is ready at minute 30: nothing is committed early, and the order is picked
    up the minute it is ready. Without the wait charge the courier who is 2 minutes away
    (not the one 15 minutes away, who is free first) gets it just in time. With it
    (the default) the far courier, who would wait less at the restaurant, is sent at
    the last minute it can leave (13 = 30 - 15 - 2) and the near one stays free: the
    price of keeping free couriers for urgent work is more driving."""
    sc = _instance(
        tmp_path,
        "r1\t0\t0\n",
        "o1\t0\t1000\t0\tr1\t30\n",
        "far\t1500\t0\t0\t120\nnear\t200\t0\t1\t120\n",
    )
    r = run_scenario(sc, OrToolsPolicy(wait_weight=0.0), strict=True)
    assert r.violations == []
    (a,) = r.solution.assignments
    assert a.courier == "near" and a.assignment_time >= 25
    (o,) = r.solution.orders
    assert o.pickup_time == 30
    r = run_scenario(sc, "ortools", strict=True)
    assert r.violations == []
    (a,) = r.solution.assignments
    assert (a.courier, a.assignment_time) == ("far", 13)
    (o,) = r.solution.orders
    assert o.pickup_time == 30


def _urgent_and_future(tmp_path: Path) -> Scenario:
    """One courier at r1. o1 (r1) is ready at minute 28; o2 (r2, 6 minutes away, door
    3 minutes back towards r1) at minute 5."""
    return _instance(
        tmp_path,
        "r1\t0\t0\nr2\t600\t0\n",
        "o1\t0\t500\t0\tr1\t28\no2\t300\t0\t0\tr2\t5\n",
        "c1\t0\t0\t0\t180\n",
    )


def test_a_future_order_does_not_hold_the_only_courier(tmp_path: Path) -> None:
    """The courier's idle wait until o1 is ready is charged (``wait_weight``), so the
    matching sends it to the urgent o2 at once (at r2 at 6, pickup at 8) and it is back
    at r1 (drop-off at 13 + 2, leave at 17, back at 20) before o1 is ready. Without the
    charge the courier is held for o1 (no delay for it) and o2 waits."""
    sc = _urgent_and_future(tmp_path)
    r = run_scenario(sc, OrToolsPolicy(wait_weight=1.0), strict=True)
    assert r.violations == [] and r.kpis["rejected_decisions"] == 0
    picks = {o.order: o.pickup_time for o in r.solution.orders}
    assert picks == {"o2": 8, "o1": 28}
    held = run_scenario(sc, OrToolsPolicy(wait_weight=0.0), strict=True)
    assert {o.order: o.pickup_time for o in held.solution.orders}["o2"] > 8


def test_default_settings_charge_waiting(tmp_path: Path) -> None:
    policy = make_policy("ortools")
    assert isinstance(policy, OrToolsPolicy) and policy.wait_weight > 0
    r = run_scenario(_urgent_and_future(tmp_path), policy, strict=True)
    assert {o.order: o.pickup_time for o in r.solution.orders} == {"o2": 8, "o1": 28}


def _two_restaurants(tmp_path: Path) -> Scenario:
    """One courier; o1 at r1 and o2 at r2 (2 minutes apart), both ready at minute 10,
    doors 10 minutes away and 2 minutes from each other."""
    return _instance(
        tmp_path,
        "r1\t0\t0\nr2\t200\t0\n",
        "o1\t0\t1000\t0\tr1\t10\no2\t200\t1000\t0\tr2\t10\n",
        "c1\t0\t0\t0\t180\n",
    )


def test_free_mode_chains_pickups_of_two_restaurants(tmp_path: Path) -> None:
    """With chains allowed, the courier picks up at one restaurant (10) and at the other
    (16), then drops both off (30 and 36; one after the other: 24 and about 50)."""
    sc = _two_restaurants(tmp_path)
    policy = OrToolsPolicy(chain_min_size=2)
    free = run_scenario(sc, policy, mode="free", strict=True)
    assert free.violations == [] and free.kpis["rejected_decisions"] == 0
    rows = {o.order: o for o in free.solution.orders}
    assert sorted(o.pickup_time for o in rows.values()) == [10, 16]
    assert sorted(o.dropoff_time for o in rows.values()) == [30, 36]
    mdrp = run_scenario(sc, OrToolsPolicy(chain_min_size=2), mode="mdrp", strict=True)
    assert mdrp.violations == []
    assert float(free.kpis["c2d_mean"] or 0) < float(mdrp.kpis["c2d_mean"] or 0)


def test_chains_only_when_couriers_are_scarcest(tmp_path: Path) -> None:
    """By default (``chain_min_size`` 3) two orders for one courier are not chained: free
    mode then decides as mdrp mode does."""
    sc = _two_restaurants(tmp_path)
    free = run_scenario(sc, "ortools", mode="free", strict=True)
    mdrp = run_scenario(sc, "ortools", mode="mdrp", strict=True)
    times = [(o.order, o.pickup_time, o.dropoff_time) for o in free.solution.orders]
    assert times == [(o.order, o.pickup_time, o.dropoff_time) for o in mdrp.solution.orders]


def test_dispatcher_policy_is_free_mode_only(tmp_path: Path) -> None:
    from simulations.engine import SimulationError

    sc = _two_restaurants(tmp_path)
    r = run_scenario(sc, "dispatcher", mode="free", strict=True)
    assert r.violations == [] and r.kpis["delivered"] == 2
    with pytest.raises(SimulationError, match="free mode only"):
        run_scenario(sc, "dispatcher", mode="mdrp")

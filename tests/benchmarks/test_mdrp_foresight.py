"""The foresight experiment (benchmarks.mdrp_foresight) on hand-made MDRP instances."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.mdrp_foresight import run
from tests.simulations.conftest import TINY

PARAMS = (
    "meters_per_minute\tpickup service minutes\tdropoff service minutes\t"
    "target click-to-door\tmaximum click-to-door\tpay per order\tguaranteed pay per hour\n"
    "100\t4\t4\t40\t90\t10\t15\n"
)


def test_foresight_keeps_the_rules_and_the_floor() -> None:
    out = run([TINY], minutes=[0, 10], policy="ortools")
    plain, early = out["instances"]
    assert (plain["foresight_min"], early["foresight_min"]) == (0, 10)
    for r in (plain, early):
        assert r["violations"] == 0 and r["rejected_decisions"] == 0
        assert r["undelivered"] == 1  # o4: nobody can pick it up before their off-time
        assert r["c2d_mean"] >= r["floor_mean"] - 1e-6  # nothing beats the floor
        assert r["wait_mean"] >= 0
    assert plain["floor_mean"] == early["floor_mean"]  # a property of the day
    assert set(out["aggregate"]) == {"0", "10"}
    assert out["aggregate"]["10"]["c2d_mean"] == pytest.approx(early["c2d_mean"], abs=1e-3)


def test_foresight_sends_the_far_courier_before_the_order_is_placed(tmp_path: Path) -> None:
    """The only courier is 20 minutes away; the food is ready 2 minutes after the order
    is placed. Online, the food waits about 18 minutes; knowing the order 20 minutes
    ahead, the courier is there when it is ready, and click-to-door still counts from
    the true placement."""
    day = tmp_path / "far"
    day.mkdir()
    (day / "couriers.txt").write_text("courier\tx\ty\ton_time\toff_time\nc1\t2000\t0\t0\t200\n")
    (day / "restaurants.txt").write_text("restaurant\tx\ty\nr1\t0\t0\n")
    (day / "orders.txt").write_text(
        "order\tx\ty\tplacement_time\trestaurant\tready_time\no1\t0\t500\t30\tr1\t32\n"
    )
    (day / "instance_parameters.txt").write_text(PARAMS)
    out = run([day], minutes=[0, 20], policy="ortools")
    plain, early = out["instances"]
    assert plain["violations"] == early["violations"] == 0
    assert plain["wait_mean"] > 15
    assert early["wait_mean"] < 1
    # Floor: ready 2 min after placement, half services 2 + 2, 5 min drive = 11 min.
    assert early["floor_mean"] == pytest.approx(11.0)
    assert early["c2d_mean"] == pytest.approx(early["floor_mean"] + early["wait_mean"], abs=0.01)
    assert plain["c2d_mean"] - early["c2d_mean"] > 15

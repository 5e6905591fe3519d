"""Both policies on the tiny instance (KPIs worked out by hand) and on a real one.

Tiny instance, 100 m/min, 4-minute services, minutes below:

greedy: c1 takes o1 at 5 (at r1 already, waits for ready 20, drop 30); c2 comes on at 10
and takes o2 (12 min to r1: pickup max(18, 24) = 24, drop 36); o3 (placed 20) waits for
c1 to be free at 32, 12 min to r2: pickup 46, drop 60. c2d 25, 28, 40 (exactly the target:
not late). Driving 28 + 20 min, service 6 x 4 min, over 4 duty hours: utilisation 0.3.

bundling: o1 (ready 20) is held while c1 would be at r1 more than 10 min early; at 8 o2
joins; at 10 the bundle (o2, o1) goes to c1: pickup 20, drops o1 at 30 and o2 at 36
(nearest first). o3 goes to c2 at 20: 5 min to r2, pickup 30, drop 44. c2d 25, 28, 24.

o4 can be picked up by nobody before their off-time: undelivered, never assigned. Pay:
everyone earns less per order than the guarantee: 2 h + 1 h + 1 h x 15 = 60.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.kpis import KPI_KEYS
from simulations.run import run_scenario
from simulations.scenarios import Scenario
from simulations.validate import validate_dir

TINY_EXPECTED = {
    "greedy": {
        "delivered": 3, "c2d_mean": 31.0, "c2d_max": 40.0, "c2d_p50": 28.0, "late_share": 0.0,
        "ready_to_pickup_mean": 7.3333, "bundles": 3, "utilisation": 0.3,
    },
    "bundling": {
        "delivered": 3, "c2d_mean": 25.6667, "c2d_max": 28.0, "c2d_p50": 25.0,
        "late_share": 0.0, "ready_to_pickup_mean": 0.6667, "bundles": 2,
        "utilisation": round(43 / 240, 4),
    },
}  # fmt: skip


@pytest.mark.parametrize("policy", ["greedy", "bundling"])
def test_tiny_by_hand(tiny: Scenario, policy: str, tmp_path: Path) -> None:
    result = run_scenario(tiny, policy, out_dir=tmp_path)
    k = result.kpis
    assert result.violations == [] and k["violations"] == 0
    for key, value in TINY_EXPECTED[policy].items():
        assert k[key] == value, key
    assert k["orders"] == 4 and k["delivered_share"] == 0.75 and k["never_assigned"] == 1
    assert k["stuck"] == 0 and k["rejected_decisions"] == 0
    assert k["courier_pay_total"] == 60.0 and k["cost_per_order"] == 20.0
    assert k["guarantee_share"] == 1.0 and k["orders_per_courier_hour"] == 0.75
    assert result.sim.undelivered == {"o4": "never_assigned"}
    doc = json.loads((tmp_path / "kpis.json").read_text())
    assert set(KPI_KEYS) | {"wall_s", "violations", "policy", "scenario"} <= set(doc)
    assert validate_dir(tiny, tmp_path) == []


@pytest.mark.parametrize("mode", ["mdrp", "free"])
def test_real_small_instance_is_feasible(real_small: Scenario, mode: str) -> None:
    for policy in ("greedy", "bundling"):
        result = run_scenario(real_small, policy, mode=mode)  # type: ignore[arg-type]
        k = result.kpis
        assert result.violations == [], result.violations[:3]
        assert k["rejected_decisions"] == 0 and k["stuck"] == 0
        assert k["delivered"] + k["never_assigned"] == k["orders"] == 252  # type: ignore[operator]
        assert k["delivered_share"] is not None and k["delivered_share"] > 0.95

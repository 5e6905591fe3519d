"""KPIs worked out by hand: utilisation is the share of duty time spent working."""

from __future__ import annotations

from dataclasses import replace

from simulations.engine import EngineConfig, simulate
from simulations.kpis import compute_kpis
from simulations.policy import Assignment
from simulations.scenarios import Scenario
from simulations.solution import solution_from_result
from tests.simulations.test_engine import Scripted


def _only_c2(tiny: Scenario, off_min: float, speed_factor: float = 1.0) -> Scenario:
    c2 = replace(tiny.courier_index["c2"], shift_end=off_min * 60.0, speed_factor=speed_factor)
    return replace(tiny, couriers=(c2,))


def test_utilisation_counts_only_duty_time(tiny: Scenario) -> None:
    """c2 (on 10-31) gets o3 at minute 20: drives 20-25 to r2 (500 m), picks up at 30
    (service 28-32), drives 32-42 to the door and drops off at 44 (service 42-46). Only
    20-25 and 28-31 are duty time: 8 of 21 minutes. Summing every drive and service
    (5 + 10 + 4 + 4 = 23 minutes) would claim 110 % of the shift."""
    sc = _only_c2(tiny, 31)
    sim = simulate(sc, Scripted({1200: [Assignment("c2", "r2", ("o3",))]}), EngineConfig())
    assert sim.orders["o3"].delivered_at == 44 * 60
    k = compute_kpis(sc, solution_from_result(sim))
    assert k["delivered"] == 1
    assert k["utilisation"] == round(8 / 21, 4)


def test_utilisation_within_the_shift_is_drive_plus_service(tiny: Scenario) -> None:
    sc = _only_c2(tiny, 70)
    sim = simulate(sc, Scripted({1200: [Assignment("c2", "r2", ("o3",))]}), EngineConfig())
    k = compute_kpis(sc, solution_from_result(sim))
    assert k["utilisation"] == round(23 / 60, 4)


def test_utilisation_uses_the_couriers_speed_factor(tiny: Scenario) -> None:
    """Twice as fast: drives 20-22.5 and 32-37, pickup service 28-32, drop-off 37-41."""
    sc = _only_c2(tiny, 70, speed_factor=0.5)
    sim = simulate(sc, Scripted({1200: [Assignment("c2", "r2", ("o3",))]}), EngineConfig())
    assert sim.orders["o3"].delivered_at == 39 * 60
    k = compute_kpis(sc, solution_from_result(sim))
    assert k["utilisation"] == round(15.5 / 60, 4)

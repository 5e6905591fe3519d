"""Scenarios the simulator replays; :func:`load_scenario` recognises the kind by its files."""

from __future__ import annotations

from pathlib import Path

from simulations.scenarios.base import Parameters, Scenario, ScenarioError
from simulations.scenarios.mdrp import is_mdrp_dir, read_mdrp

__all__ = ["Parameters", "Scenario", "ScenarioError", "is_mdrp_dir", "load_scenario", "read_mdrp"]


def load_scenario(path: Path | str) -> Scenario:
    """Read the scenario at ``path`` (today: an MDRP instance directory)."""
    p = Path(path)
    if is_mdrp_dir(p):
        return read_mdrp(p)
    if not p.exists():
        raise ScenarioError(f"{p}: does not exist")
    raise ScenarioError(
        f"{p}: not a known scenario (an MDRP directory needs restaurants.txt, orders.txt, "
        "couriers.txt and instance_parameters.txt)"
    )

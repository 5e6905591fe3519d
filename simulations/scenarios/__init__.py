"""Scenarios the simulator replays; :func:`load_scenario` recognises the kind by its files.

Two kinds: an MDRP instance directory (:mod:`~simulations.scenarios.mdrp`) and a generated
city file, ``*.toml`` (:mod:`~simulations.scenarios.city`).
"""

from __future__ import annotations

from pathlib import Path

from simulations.scenarios.base import Parameters, Scenario, ScenarioError
from simulations.scenarios.city import (
    CityConfig,
    default_city,
    default_city_path,
    generate_city,
    is_city_file,
    load_city,
    load_city_scenario,
    save_city,
    scale_city,
)
from simulations.scenarios.mdrp import is_mdrp_dir, read_mdrp

__all__ = [
    "CityConfig",
    "Parameters",
    "Scenario",
    "ScenarioError",
    "default_city",
    "default_city_path",
    "generate_city",
    "is_city_file",
    "is_mdrp_dir",
    "load_city",
    "load_city_scenario",
    "load_scenario",
    "read_mdrp",
    "save_city",
    "scale_city",
]


def load_scenario(path: Path | str, seed: int | None = None) -> Scenario:
    """Read the scenario at ``path``: an MDRP instance directory or a city file (``.toml``,
    generated with ``seed``, default the file's own seed; MDRP ignores ``seed``)."""
    p = Path(path)
    if is_mdrp_dir(p):
        return read_mdrp(p)
    if not p.exists():
        raise ScenarioError(f"{p}: does not exist")
    if p.is_file() and is_city_file(p):
        return load_city_scenario(p, seed)
    raise ScenarioError(
        f"{p}: not a known scenario (an MDRP directory needs restaurants.txt, orders.txt, "
        "couriers.txt and instance_parameters.txt; a generated city is a .toml file)"
    )

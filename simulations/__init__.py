"""Discrete-event simulation of delivery days under pluggable dispatch policies.

``from simulations import run_scenario, load_scenario`` is the usual entry point; see
docs in :mod:`simulations.engine` (time model, events) and :mod:`simulations.policy`
(the :class:`Policy` seam).
"""

from simulations.engine import CourierState, EngineConfig, SimResult, SimView, simulate
from simulations.kpis import KPI_KEYS, compute_kpis
from simulations.policies import PolicyUnavailable, make_policy, policy_names, register_policy
from simulations.policy import (
    Assignment,
    AssignmentUpdate,
    BasePolicy,
    Policy,
    Reposition,
    Reroute,
    StopRef,
)
from simulations.run import RunResult, run_scenario
from simulations.scenarios import Scenario, ScenarioError, load_scenario, read_mdrp
from simulations.solution import Solution, read_solution, write_solution
from simulations.validate import Violation, validate_dir, validate_solution

__all__ = [
    "KPI_KEYS",
    "Assignment",
    "AssignmentUpdate",
    "BasePolicy",
    "CourierState",
    "EngineConfig",
    "Policy",
    "PolicyUnavailable",
    "Reposition",
    "Reroute",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "SimResult",
    "SimView",
    "Solution",
    "StopRef",
    "Violation",
    "compute_kpis",
    "load_scenario",
    "make_policy",
    "policy_names",
    "read_mdrp",
    "read_solution",
    "register_policy",
    "run_scenario",
    "simulate",
    "validate_dir",
    "validate_solution",
    "write_solution",
]

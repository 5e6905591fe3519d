"""One entry point: replay a scenario under a named policy and collect everything.

:func:`run_scenario` runs the engine, builds the MDRP solution, validates it, computes the
KPIs and (with ``out_dir``) writes ``kpis.json`` and the three solution files. ``wall_s``
is the only wall-clock figure and is measured here, around the run: the simulation
itself never reads a clock.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from simulations.engine import EngineConfig, ProgressFn, Rejection, SimResult, simulate
from simulations.kpis import Kpis, compute_kpis
from simulations.policies import make_policy
from simulations.policy import Mode, Policy
from simulations.scenarios.base import Scenario
from simulations.solution import Solution, solution_from_result, write_solution
from simulations.validate import Rules, Violation, validate_solution

__all__ = ["RunResult", "run_scenario"]


@dataclass(frozen=True)
class RunResult:
    """KPIs (minutes), the solution rows, its violations and the raw engine result."""

    kpis: Kpis
    solution: Solution
    violations: list[Violation]
    rejections: list[Rejection]
    sim: SimResult


def run_scenario(
    scenario: Scenario,
    policy_name: str | Policy,
    mode: Mode = "mdrp",
    seed: int = 0,
    out_dir: Path | str | None = None,
    progress: ProgressFn | None = None,
    tick_s: float = 60.0,
    strict: bool = False,
) -> RunResult:
    """Simulate, validate, score; write ``kpis.json`` + solution files into ``out_dir``.

    Besides :data:`~simulations.kpis.KPI_KEYS` the KPIs hold ``scenario``, ``policy``,
    ``mode``, ``seed``, ``tick_s``, ``violations`` (count), ``rejected_decisions``,
    ``never_assigned``, ``stuck`` (assigned or picked up but never delivered: always 0
    unless the engine is broken), ``assignment_updates`` (orders added to bundles at
    restaurants), ``events``, ``ticks`` and ``wall_s``.

    The solution is validated under the rules the run follows: ``free`` in free mode,
    ``updates`` for a policy whose ``assignment_updates`` attribute is true (the published
    variant), else ``basic``.
    """
    policy = make_policy(policy_name) if isinstance(policy_name, str) else policy_name
    config = EngineConfig(mode=mode, tick_s=tick_s, seed=seed, strict=strict)
    start = time.perf_counter()
    sim = simulate(scenario, policy, config, progress)
    solution = solution_from_result(sim)
    rules: Rules = "free" if mode == "free" else "basic"
    if mode == "mdrp" and getattr(policy, "assignment_updates", False):
        rules = "updates"
    violations = validate_solution(scenario, solution, rules)
    kpis: Kpis = compute_kpis(scenario, solution)
    wall = time.perf_counter() - start
    never = sum(1 for why in sim.undelivered.values() if why == "never_assigned")
    meta: dict[str, float | int | None] = {
        "violations": len(violations),
        "rejected_decisions": len(sim.rejections),
        "never_assigned": never,
        "stuck": len(sim.undelivered) - never,
        "assignment_updates": sim.updates,
        "events": sim.events,
        "ticks": sim.ticks,
        "seed": seed,
        "tick_s": tick_s,
        "wall_s": round(wall, 3),
    }
    kpis.update(meta)
    if out_dir is not None:
        d = Path(out_dir)
        write_solution(solution, d)
        doc = {"scenario": scenario.name, "policy": policy.name, "mode": mode, **kpis}
        (d / "kpis.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return RunResult(kpis, solution, violations, sim.rejections, sim)

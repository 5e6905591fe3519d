"""``o2o bench mdrp``: dispatch policies replayed over MDRP instances.

Each (instance, policy) pair is one :func:`simulations.run_scenario` in mdrp mode; the
per-instance records carry every KPI (minutes) plus ``violations`` from the validator.
Aggregates per policy come two ways:

- ``weighted``: pooled over orders, as the literature's totals are: delivered share =
  all delivered / all orders; ``c2d_mean``, ``c2d_p90`` and ``late_share`` are means of
  the per-instance values weighted by delivered orders (for the mean and the late share
  that equals pooling every delivered order).
- ``unweighted``: plain means over instances (every instance counts the same).

``courier_pay_total``, ``wall_s``, ``violations`` and ``rejected_decisions`` are sums.

``families`` gives, per policy, unweighted means over the instances of each family of
the MDRP README's names (``<seed><size><travel><shifts><prep>``: ``seed 0``, ``o100``,
``r50``, ``t75``, ``s2``, ``p125``, ...; instances named otherwise are left out), so a
change can be read where it happens (scarce couriers, slower food, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simulations.parallel import map_in_order
from simulations.policies import make_policy
from simulations.policy import Mode
from simulations.run import run_scenario
from simulations.scenarios import is_mdrp_dir, read_mdrp

__all__ = ["aggregate", "families", "find_instances", "run"]

AVERAGED = ("delivered_share", "c2d_mean", "c2d_p90", "late_share")
FAMILY_KPIS = (
    "delivered_share", "c2d_mean", "c2d_p90", "late_share", "overage_mean",
    "ready_to_pickup_mean", "utilisation", "cost_per_order",
)  # fmt: skip
NAME = re.compile(r"^(\d+)(o100|o50|r50)(t100|t75)(s1|s2)(p100|p125)$")


def find_instances(paths: Sequence[Path | str]) -> list[Path]:
    """MDRP instance directories: each path itself, or its instance subdirectories."""
    out: list[Path] = []
    for p in map(Path, paths):
        if is_mdrp_dir(p):
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(d for d in p.iterdir() if is_mdrp_dir(d)))
    return out


def _one(task: tuple[str, str, Mode, float]) -> dict[str, Any]:
    directory, policy, mode, tick_s = task
    scenario = read_mdrp(directory)
    result = run_scenario(scenario, policy, mode=mode, tick_s=tick_s)
    return {"name": scenario.name, "policy": policy, **result.kpis}


def _mean(values: list[float], weights: list[float] | None = None) -> float | None:
    if not values:
        return None
    w = weights if weights is not None else [1.0] * len(values)
    total = sum(w)
    return round(sum(v * x for v, x in zip(values, w, strict=True)) / total, 4) if total else None


def aggregate(records: Sequence[dict[str, Any]], policy: str) -> dict[str, Any]:
    """Weighted and unweighted aggregates of one policy's per-instance records."""
    rs = [r for r in records if r["policy"] == policy]
    orders = sum(r["orders"] for r in rs)
    delivered = sum(r["delivered"] for r in rs)
    weighted: dict[str, float | None] = {
        "delivered_share": round(delivered / orders, 4) if orders else None
    }
    unweighted: dict[str, float | None] = {}
    for key in AVERAGED:
        have = [r for r in rs if r[key] is not None]
        unweighted[key] = _mean([r[key] for r in have])
        if key != "delivered_share":
            weighted[key] = _mean([r[key] for r in have], [r["delivered"] for r in have])
    return {
        "instances": len(rs),
        "orders": orders,
        "delivered": delivered,
        "weighted": weighted,
        "unweighted": unweighted,
        "courier_pay_total": round(sum(r["courier_pay_total"] for r in rs), 2),
        "wall_s": round(sum(r["wall_s"] for r in rs), 3),
        "violations": sum(r["violations"] for r in rs),
        "rejected_decisions": sum(r["rejected_decisions"] for r in rs),
    }


def families(records: Sequence[dict[str, Any]], policy: str) -> dict[str, dict[str, Any]]:
    """Per family of instance names, ``instances`` and unweighted means of
    :data:`FAMILY_KPIS` (module docstring)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        m = NAME.match(str(r["name"]))
        if r["policy"] != policy or m is None:
            continue
        for key in (f"seed {m[1]}", *m.groups()[1:]):
            groups.setdefault(key, []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(groups, key=lambda k: (not k.startswith("seed"), k)):
        rs = groups[key]
        row: dict[str, Any] = {"instances": len(rs)}
        for kpi in FAMILY_KPIS:
            row[kpi] = _mean([r[kpi] for r in rs if r.get(kpi) is not None])
        out[key] = row
    return out


def run(
    dirs: Sequence[Path | str],
    policies: Sequence[str] = ("greedy", "bundling"),
    processes: int = 1,
    mode: Mode = "mdrp",
    tick_s: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Replay every instance under every policy; ``processes`` > 1 runs them in parallel.

    ``dirs`` may name instance directories or folders of them. ``progress(done, total)``
    is called after each run. A malformed instance raises
    :class:`~simulations.scenarios.ScenarioError` before any run. Records come back in
    (instance, policy) order whatever the parallelism, so the output is reproducible
    apart from ``wall_s``. Workers are spawned (not forked: the CLI's progress bar runs a
    thread), so a script calling this with ``processes`` > 1 needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    for p in policies:
        make_policy(p)  # fail early on unknown or unavailable names
    instances = find_instances(dirs)
    for d in instances:
        read_mdrp(d)  # fail early (ScenarioError) on a malformed instance, not mid-bench
    tasks = [(str(d), p, mode, tick_s) for d in instances for p in policies]
    records = map_in_order(_one, tasks, processes, progress)
    return {
        "instances": records,
        "aggregate": {p: aggregate(records, p) for p in policies},
        "families": {p: families(records, p) for p in policies},
    }

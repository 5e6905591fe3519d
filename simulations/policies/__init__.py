"""Dispatch policies and the name -> factory registry used by ``run_scenario`` and the CLI.

``greedy`` (one order at a time to the nearest idle courier, the floor), ``bundling``
(per-restaurant bundles to the courier who can be there first) and ``ortools``
(:mod:`simulations.policies.ortools`: CP-SAT bundle matching with delayed commitment in
mdrp mode, the same with chained pickups in free mode) ship here. ``ortools-prepos`` is
``ortools`` with prepositioning (the published MDRP variant: surplus idle couriers sent
to wait near recent demand); ``ortools-updates`` is ``ortools`` with assignment updates
(the other published variant: pending orders of a restaurant added to the bundle of a
courier who is there for a pickup) and ``ortools-prepos-updates`` has both.
``dispatcher`` (free mode only) is the live service's routing dispatcher
(:mod:`simulations.policies.dispatcher`). They are registered through lazy factories, so
OR-Tools is only imported when it is used.
"""

from __future__ import annotations

from collections.abc import Callable

from simulations.policies.bundling import BundlingPolicy
from simulations.policies.greedy import GreedyPolicy
from simulations.policy import Policy

__all__ = [
    "BundlingPolicy",
    "GreedyPolicy",
    "PolicyFactory",
    "PolicyUnavailable",
    "make_policy",
    "policy_names",
    "register_policy",
]

PolicyFactory = Callable[[], Policy]


class PolicyUnavailable(LookupError):
    """A policy name that is unknown or not implemented yet."""


def _ortools() -> Policy:
    from simulations.policies.ortools import OrToolsPolicy

    return OrToolsPolicy()


def _dispatcher() -> Policy:
    from simulations.policies.dispatcher import DispatcherPolicy

    return DispatcherPolicy()


def _ortools_prepos() -> Policy:
    from simulations.policies.ortools import OrToolsPolicy

    return OrToolsPolicy(preposition=True, name="ortools-prepos")


def _ortools_updates() -> Policy:
    from simulations.policies.ortools import OrToolsPolicy

    return OrToolsPolicy(assignment_updates=True, name="ortools-updates")


def _ortools_prepos_updates() -> Policy:
    from simulations.policies.ortools import OrToolsPolicy

    return OrToolsPolicy(preposition=True, assignment_updates=True, name="ortools-prepos-updates")


_REGISTRY: dict[str, PolicyFactory] = {
    "greedy": GreedyPolicy,
    "bundling": BundlingPolicy,
    "ortools": _ortools,
    "ortools-prepos": _ortools_prepos,
    "ortools-updates": _ortools_updates,
    "ortools-prepos-updates": _ortools_prepos_updates,
    "dispatcher": _dispatcher,
}


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Make ``name`` available to :func:`make_policy` (replacing any previous entry)."""
    _REGISTRY[name] = factory


def policy_names() -> list[str]:
    """Registered names, including reserved ones that are not available yet."""
    return list(_REGISTRY)


def make_policy(name: str) -> Policy:
    """A fresh policy instance; :class:`PolicyUnavailable` for unknown/unavailable names."""
    factory = _REGISTRY.get(name)
    if factory is None:
        raise PolicyUnavailable(f"unknown policy {name!r} (known: {', '.join(_REGISTRY)})")
    return factory()

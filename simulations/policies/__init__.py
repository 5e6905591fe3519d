"""Dispatch policies and the name -> factory registry used by ``run_scenario`` and the CLI.

``greedy`` (one order at a time to the nearest idle courier, the floor) and ``bundling``
(per-restaurant bundles to the courier who can be there first) ship here. ``ortools`` is
reserved: until an OR-Tools-backed policy is registered under that name,
:func:`make_policy` raises :class:`PolicyUnavailable`. To plug one in, add a lazy factory
(import inside the function so ``ortools`` is only imported when used)::

    def _ortools() -> Policy:
        from simulations.policies.ortools import OrToolsPolicy
        return OrToolsPolicy()

    register_policy("ortools", _ortools)
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


def _ortools_not_yet() -> Policy:
    raise PolicyUnavailable("the ortools policy is not available yet (use greedy or bundling)")


_REGISTRY: dict[str, PolicyFactory] = {
    "greedy": GreedyPolicy,
    "bundling": BundlingPolicy,
    "ortools": _ortools_not_yet,
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

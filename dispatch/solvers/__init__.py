"""Solvers for :class:`~dispatch.problem.RoutingProblem`.

Import the engine you need (``from dispatch.solvers.ortools import solve``); this package
does not import OR-Tools itself so that the domain stays importable without it.
"""

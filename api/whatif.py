"""Ops what-if simulations run by the service (built under issue #7)."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI) -> None:
    """Add the what-if endpoints to ``app``."""
    return None

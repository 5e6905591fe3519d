"""Browser pages the service serves (built under issue #7; see web/)."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI) -> None:
    """Mount the pages and their assets on ``app``."""
    return None

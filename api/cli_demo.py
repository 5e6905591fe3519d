"""``o2o demo`` (built under issue #7)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    del app

"""Typed errors of the geo package.

Every rejection carries a machine-readable ``reason`` so callers can count and report
rejections by cause instead of parsing messages.
"""

from __future__ import annotations


class GeoError(ValueError):
    """Base class for bad input to the geo package."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidCoordinate(GeoError):
    """A latitude/longitude that is not finite, out of range or on null island."""


class InvalidObservation(GeoError):
    """An observation that cannot be used at all (malformed, non-finite, absurd)."""

"""The protocol every source model follows: one observation in, one position fix out."""

from __future__ import annotations

from typing import Protocol

from geo.errors import GeoError
from geo.estimate import PositionFix
from geo.observations import Kind, Observation


class Unlocatable(GeoError):
    """A well-formed observation that yields no position (e.g. only unknown stations).

    ``unknown`` counts the stations in the observation that the registry does not know,
    so callers can account for them even when the observation is unusable.
    """

    def __init__(self, reason: str, message: str, unknown: int = 0) -> None:
        super().__init__(reason, message)
        self.unknown = unknown


class SourceModel(Protocol):
    """Turns observations of one ``kind`` into position fixes.

    ``locate`` raises :class:`Unlocatable` with a reason when it cannot say anything.
    """

    @property
    def kind(self) -> Kind: ...

    def locate(self, obs: Observation) -> PositionFix: ...

"""Typed errors of the tracking package.

Like ``geo`` and ``dispatch``, every error carries a machine-readable ``reason`` slug, so
the API can map the whole family to problem-details responses in one place (``NotFound``
-> 404, ``Conflict`` -> 409, ``EventsTrimmed`` -> "re-sync from a snapshot",
``Unavailable`` -> 503) without parsing messages or knowing which backend raised.
"""

from __future__ import annotations


class TrackingError(Exception):
    """Base class of every error the state store and the event log raise."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotFound(TrackingError):
    """An order, courier or position id the store does not hold.

    ``kind`` is ``"order"``, ``"courier"`` or ``"position"``; ``id`` the id asked for.
    """

    def __init__(self, kind: str, id: str) -> None:
        super().__init__("not_found", f"unknown {kind} {id!r}")
        self.kind = kind
        self.id = id


class Conflict(TrackingError):
    """A write that contradicts stored state (e.g. an order id already created under a
    different idempotency key)."""


class BadInput(TrackingError, ValueError):
    """A malformed argument: an event id, a topic, a payload that is not JSON, a radius."""


class BadEventId(BadInput):
    """An event id not of the form ``"<ms>-<seq>"`` (two non-negative decimal integers)."""


class CorruptData(TrackingError):
    """Stored data that does not decode to a domain object.

    Raised instead of returning half-built objects: a corrupt record is an operations
    problem (a bad migration, a hand edit, another writer) that must be visible.
    """


class EventsTrimmed(TrackingError):
    """Events after ``last_id`` were dropped by retention, so a resume would silently miss
    them; the reader must re-sync from a state snapshot and resume from a fresh id."""

    def __init__(self, last_id: str, stream: str) -> None:
        super().__init__(
            "events_trimmed",
            f"events after {last_id} on {stream!r} are no longer retained; re-sync from a snapshot",
        )
        self.last_id = last_id
        self.stream = stream


class Unavailable(TrackingError):
    """The backend (Redis) cannot be reached or is still loading; retry later.

    Whether a write that failed this way was applied is unknown (the reply may be what was
    lost), exactly as for any networked store.
    """

"""Request and response bodies of the HTTP API (pydantic, at the edge only).

Requests forbid unknown fields, non-finite numbers and values of the wrong JSON type, so
a typo, a NaN or a quoted number is a clear 422 rather than a silently ignored or
converted value. Responses mirror the JSON the websocket frames use
(:mod:`tracking.channels`), so a client parses one shape for both.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from dispatch.dispatcher import SETTING_RANGES, DispatchSettings

Lat = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Lon = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Seconds = Annotated[float, Field(allow_inf_nan=False)]
Text = Annotated[str, Field(min_length=1, max_length=128)]


class Strict(BaseModel):
    """A request body: unknown fields refused, and JSON types taken as they are (strict
    mode): ``"lat": true`` or ``"lat": "52"`` is a 422, not 1.0 or 52.0."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Point(Strict):
    lat: Lat
    lon: Lon
    id: Text | None = Field(None, description="A store, station or address id.")


class OrderIn(Strict):
    pickup: Point
    dropoff: Point
    mode: Literal["door", "station", "self_pickup"] = "door"
    ready_at: Seconds | None = Field(None, description="Epoch seconds the food is ready.")
    promised_by: Seconds | None = Field(None, description="Epoch seconds of the promise.")
    size: int = Field(1, ge=0, le=100)
    pickup_service_s: float = Field(60.0, ge=0, le=3600, allow_inf_nan=False)
    dropoff_service_s: float = Field(60.0, ge=0, le=3600, allow_inf_nan=False)
    customer_id: Text | None = Field(None, description="Ops only: place for this customer.")


class PointOut(BaseModel):
    lat: float
    lon: float
    id: str | None


class OrderOut(BaseModel):
    id: str
    status: Literal["placed", "assigned", "picked_up", "delivered", "cancelled"]
    mode: str
    pickup: PointOut
    dropoff: PointOut
    placed_at: float
    ready_at: float
    promised_by: float
    size: int
    courier_id: str | None
    customer_id: str | None
    picked_up_at: float | None
    delivered_at: float | None
    cancelled_at: float | None


class OrderList(BaseModel):
    orders: list[OrderOut]


class CancelIn(Strict):
    reason: Annotated[str, Field(max_length=500)] | None = None


class ConfirmIn(Strict):
    override_reason: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(
        None, description="Why the courier confirms away from the geofence (reviewed by ops)."
    )


class ConfirmOut(BaseModel):
    order: OrderOut
    distance_m: float | None
    override_reason: str | None


class ShiftIn(Strict):
    action: Literal["start", "end"]
    lat: Lat | None = None
    lon: Lon | None = None
    shift_end: Seconds | None = None
    capacity: int | None = Field(None, ge=0, le=50)


class Position(BaseModel):
    lat: float
    lon: float
    radius_m: float
    radius95_m: float
    t: float
    h3: str
    velocity: list[float]


class CourierOut(BaseModel):
    id: str
    on_shift: bool
    lat: float
    lon: float
    position_t: float
    shift_start: float
    shift_end: float
    capacity: int
    on_board: list[str]
    position: Position | None = None


class Fleet(BaseModel):
    couriers: list[CourierOut]


class StopOut(BaseModel):
    order_id: str
    kind: Literal["pickup", "dropoff"]
    place: PointOut
    eta: float
    arrival: float
    departure: float


class RouteOut(BaseModel):
    courier_id: str
    stops: list[StopOut]


class RejectedObservation(BaseModel):
    index: int | None
    reason: str
    detail: str
    t: float | None = None


class IngestOut(BaseModel):
    accepted: int
    rejected: list[RejectedObservation]
    position: Position | None


class ShareIn(Strict):
    ttl_s: float = Field(6 * 3600.0, gt=0, le=7 * 86400, allow_inf_nan=False)


class ShareOut(BaseModel):
    token: str
    url: str
    expires_at: float


class Reading(Strict):
    id: str | None = None
    bssid: str | None = None
    rssi: float | None = None


class ObservationDoc(BaseModel):
    """One raw observation (the geo observation format); ``device`` defaults to the
    courier. Checked item by item: bad items are reported, good ones kept."""

    model_config = ConfigDict(extra="allow")
    device: str | None = None
    t: float
    kind: Literal["gps", "wifi", "beacon", "cell"]
    lat: float | None = None
    lon: float | None = None
    accuracy: float | None = None
    speed: float | None = None
    bearing: float | None = None
    aps: list[Reading] | None = None
    beacons: list[Reading] | None = None
    cells: list[Reading] | None = None


def _settings_model() -> type[BaseModel]:
    """Every field optional, with its sane range (documented in OpenAPI) and strict types
    (``"seed": true`` or ``"5"`` is refused, not read as 1 or 5)."""
    hints = get_type_hints(DispatchSettings)
    spec: dict[str, Any] = {}
    for f in fields(DispatchSettings):
        lo, hi = SETTING_RANGES.get(f.name, (None, None))
        spec[f.name] = (hints[f.name] | None, Field(None, ge=lo, le=hi))
    return create_model(
        "DispatchSettingsIn",
        __config__=ConfigDict(extra="forbid", allow_inf_nan=False, strict=True),
        **spec,
    )


DispatchSettingsIn = _settings_model()
"""Any subset of :class:`dispatch.dispatcher.DispatchSettings`; the rest keep defaults."""


class ProblemOut(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``): every error."""

    model_config = ConfigDict(extra="allow", title="Problem")
    type: str = Field(description="'/problems/<reason>'")
    title: str
    status: int
    detail: str
    instance: str = Field(description="The request path.")
    reason: str = Field(description="Machine-readable slug (also the end of ``type``).")
    errors: list[dict[str, Any]] | None = Field(
        None, description="Validation errors: one per bad field (loc, type, msg)."
    )


class Health(BaseModel):
    status: str
    store: str | None = None
    dispatcher: str | None = None
    hub: str | None = None

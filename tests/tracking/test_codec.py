"""The JSON codec: every domain type round-trips exactly; bad stored data fails clearly."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.model import DELIVERY_MODES, ORDER_STATUSES, Courier, Order, Place, Plan, Route, Stop
from geo.estimate import Estimate
from geo.observations import KINDS
from tests.tracking.conftest import courier, estimate, order, plan
from tracking import BadInput, CorruptData, Event
from tracking.codec import (
    courier_from_dict,
    courier_to_dict,
    decode,
    dumps,
    encode,
    estimate_from_dict,
    estimate_to_dict,
    event_from_dict,
    event_to_dict,
    loads,
    order_from_dict,
    order_to_dict,
    place_from_dict,
    place_to_dict,
    plan_from_dict,
    plan_to_dict,
    route_from_dict,
    route_to_dict,
    stop_from_dict,
    stop_to_dict,
)
from tracking.events import EVENT_TYPES

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
times = st.floats(min_value=-1e9, max_value=1e10, allow_nan=False)
ids = st.text(min_size=1, max_size=12)
places = st.builds(Place, point=st.tuples(finite, finite), id=st.none() | ids)
stops = st.builds(
    Stop,
    order_id=ids,
    kind=st.sampled_from(["pickup", "dropoff"]),
    place=places,
    arrival=finite,
    start=finite,
    departure=finite,
)
routes = st.builds(Route, courier_id=ids, stops=st.lists(stops, max_size=4).map(tuple))


@st.composite
def orders(draw: st.DrawFn) -> Order:
    placed_at = draw(times)
    promised_by = placed_at + draw(st.floats(0, 1e6))
    latest = draw(st.none() | st.floats(0, 1e6))
    return Order(
        id=draw(ids),
        pickup=draw(places),
        dropoff=draw(places),
        placed_at=placed_at,
        ready_at=draw(times),
        promised_by=promised_by,
        latest_by=None if latest is None else promised_by + latest,
        size=draw(st.integers(0, 50)),
        pickup_service_s=draw(st.floats(0, 3600)),
        dropoff_service_s=draw(st.floats(0, 3600)),
        mode=draw(st.sampled_from(DELIVERY_MODES)),
        status=draw(st.sampled_from(ORDER_STATUSES)),
        courier_id=draw(st.none() | ids),
        locked=draw(st.booleans()),
        picked_up_at=draw(st.none() | times),
        delivered_at=draw(st.none() | times),
        cancelled_at=draw(st.none() | times),
    )


@st.composite
def couriers(draw: st.DrawFn) -> Courier:
    start = draw(times)
    return Courier(
        id=draw(ids),
        position=draw(places),
        position_t=draw(times),
        shift_start=start,
        shift_end=start + draw(st.floats(0, 1e5)),
        capacity=draw(st.integers(0, 10)),
        speed_factor=draw(st.floats(0.01, 10)),
        on_shift=draw(st.booleans()),
        on_board=tuple(draw(st.lists(ids, max_size=3))),
        position_radius_m=draw(st.floats(0, 1e4)),
    )


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    rs = draw(st.lists(routes, max_size=4))
    return Plan(
        created_at=draw(times),
        routes={r.courier_id: r for r in rs},
        unassigned=draw(st.dictionaries(ids, st.text(max_size=20), max_size=3)),
    )


estimates = st.builds(
    Estimate,
    device=ids,
    t=times,
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    radius68=st.floats(0, 1e5),
    radius95=st.floats(0, 1e5),
    velocity=st.tuples(finite, finite),
    sources=st.lists(st.sampled_from(KINDS), max_size=4).map(tuple),
    indoor=st.none() | st.booleans(),
    h3=st.text(min_size=1, max_size=15),
    near=st.none() | ids,
    extra=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=2),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)
events = st.builds(
    Event,
    type=st.sampled_from(EVENT_TYPES),
    topics=st.lists(st.from_regex(r"[a-z]{1,5}:[a-z0-9]{1,5}", fullmatch=True), max_size=3).map(
        tuple
    ),
    payload=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    t=times,
    id=st.none()
    | st.tuples(st.integers(0, 2**63), st.integers(0, 99)).map(lambda p: f"{p[0]}-{p[1]}"),
)


def _through_json(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(d, allow_nan=False))
    return out


@given(places)
def test_place_round_trip(p: Place) -> None:
    assert place_from_dict(_through_json(place_to_dict(p))) == p


@given(orders())
def test_order_round_trip(o: Order) -> None:
    back = order_from_dict(_through_json(order_to_dict(o)))
    assert back == o
    assert decode(encode(o), Order) == o


@given(couriers())
def test_courier_round_trip(c: Courier) -> None:
    assert courier_from_dict(_through_json(courier_to_dict(c))) == c
    assert decode(encode(c), Courier) == c


@given(stops)
def test_stop_round_trip(s: Stop) -> None:
    assert stop_from_dict(_through_json(stop_to_dict(s))) == s


@given(routes)
def test_route_round_trip(r: Route) -> None:
    back = route_from_dict(_through_json(route_to_dict(r)))
    assert back == r
    assert isinstance(back.stops, tuple)


@given(plans())
def test_plan_round_trip(p: Plan) -> None:
    assert plan_from_dict(_through_json(plan_to_dict(p))) == p
    assert decode(encode(p), Plan) == p


@given(estimates)
def test_estimate_round_trip_keeps_full_precision_and_extra(e: Estimate) -> None:
    back = estimate_from_dict(_through_json(estimate_to_dict(e)))
    assert back == e
    assert back.extra == e.extra  # compare=False on the dataclass: check explicitly
    assert (back.lat, back.lon, back.velocity) == (e.lat, e.lon, e.velocity)


@given(events)
def test_event_round_trip(e: Event) -> None:
    assert event_from_dict(_through_json(event_to_dict(e))) == e
    assert decode(encode(e), Event) == e


def test_fixed_examples_round_trip() -> None:
    for obj, cls in (
        (order(1), Order),
        (courier(1, on_board=("o1", "o2")), Courier),
        (plan(), Plan),
        (estimate(52.5, 13.4), Estimate),
    ):
        assert decode(encode(obj), cls) == obj


def test_unknown_keys_are_ignored() -> None:
    d = order_to_dict(order(1)) | {"added_in_a_later_version": [1, 2]}
    assert order_from_dict(d) == order(1)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("placed_at"), "'placed_at' must be present"),
        (lambda d: d.update(size="3"), "'size' must be an integer"),
        (lambda d: d.update(size=True), "'size' must be an integer"),
        (lambda d: d.update(status="lost"), "'status' must be one of"),
        (lambda d: d.update(locked=1), "'locked' must be a boolean"),
        (lambda d: d.update(pickup={"point": [1.0]}), "o1.pickup"),
        (lambda d: d.update(promised_by=50.0), "promised before it was placed"),
    ],
)
def test_bad_order_fields_raise_corrupt_data_naming_the_field(mutate: Any, needle: str) -> None:
    d = order_to_dict(order(1))
    mutate(d)
    with pytest.raises(CorruptData, match=needle) as info:
        order_from_dict(d)
    assert info.value.reason in {"bad_field", "invalid_object"}


def test_bad_json_text_raises_corrupt_data() -> None:
    with pytest.raises(CorruptData, match="not JSON"):
        decode("{not json", Order, "order o1")
    with pytest.raises(CorruptData, match="not an object"):
        decode("[1, 2]", Order)
    with pytest.raises(CorruptData, match="not JSON"):
        decode(b"\xff\xfe", Courier)


def test_plan_route_under_wrong_courier_is_corrupt() -> None:
    d = plan_to_dict(plan())
    d["routes"]["c1"]["courier_id"] = "c2"
    with pytest.raises(CorruptData, match="route under 'c1'"):
        plan_from_dict(d)


def test_non_finite_values_are_refused_on_encode() -> None:
    e = Event("delay", ("ops",), {"minutes": math.nan}, 1.0)
    with pytest.raises(BadInput, match="not JSON"):
        encode(e)
    with pytest.raises(BadInput, match="not JSON"):
        encode(Event("delay", ("ops",), {"x": object()}, 1.0))


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | finite | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_dumps_reads_back_as_json_wrote_it(value: Any) -> None:
    """The fast encoder writes what the strict one would (the same values back), with or
    without nulls in the document (which send it the strict way)."""
    doc = {"v": value}
    text = dumps(doc)
    assert json.loads(text) == json.loads(json.dumps(doc, allow_nan=False))
    assert loads(text, "doc") == doc


def test_dumps_refuses_nan_hidden_next_to_nulls_and_odd_types() -> None:
    class Row(list[Any]):
        pass

    for bad in (
        {"a": None, "b": [math.inf]},
        {"x": [math.nan]},
        {"o": {1, 2}},
        # subclasses orjson writes as their base: the check must look inside them too
        {"a": None, "od": OrderedDict(x=math.nan)},
        {"a": None, "row": Row([1.0, -math.inf])},
    ):
        with pytest.raises(BadInput, match="not JSON"):
            dumps(bad)
    assert dumps(cast(Any, {1: "int key"})) == '{"1":"int key"}'  # as json writes it
    for text in ('{"x": NaN}', '{"x": -Infinity}', "{not json"):
        with pytest.raises(CorruptData, match="not JSON"):
            loads(text, "a stored value")
    for big in (2**64, -(2**63) - 1, [1, {"x": 10**30}]):
        with pytest.raises(BadInput, match="beyond 64 bits"):
            dumps({"big": big})
    assert loads(dumps({"edge": [2**64 - 1, -(2**63)]}), "v") == {"edge": [2**64 - 1, -(2**63)]}


def test_event_with_malformed_id_is_corrupt() -> None:
    d = event_to_dict(Event("delay", ("ops",), {}, 1.0)) | {"id": "12"}
    with pytest.raises(CorruptData, match="event id"):
        event_from_dict(d)

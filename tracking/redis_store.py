"""Redis backend of the state store (see :class:`tracking.store.StateStore`).

Layout (``p`` = the prefix; values are :mod:`tracking.codec` JSON):

=====================  =======  ==========================================================
``p:order:<id>``       string   one order (a key per order, so ``WATCH`` is per order)
``p:orders``           set      ids of all orders
``p:orders:open``      set      ids of placed / assigned / picked-up orders
``p:idem:<key>``       string   idempotency key -> order id (expires after a TTL)
``p:couriers``         hash     courier id -> courier
``p:positions``        hash     courier id -> latest fused Estimate (full precision)
``p:geo``              GEO set  courier id -> position, for "couriers near here"
``p:plan``             hash     ``meta`` (created_at, unassigned), ``route:<courier id>``
``p:events...``        streams  the event log (:mod:`tracking.redis_events`)
=====================  =======  ==========================================================

Durability: every write is one ``MULTI``/``EXEC`` that holds the state change *and* the
append of its events (the append is a Lua script queued in the same transaction), awaited
before the method returns. Redis applies a transaction as a unit and, with
``appendonly yes`` + ``appendfsync always``, writes it to the AOF and fsyncs before
replying, so anything acknowledged survives ``kill -9`` (tested). With ``everysec`` up to
a second of acknowledged writes can be lost; :meth:`RedisStore.persistence` reports the
server's setting so the service can refuse or warn at start-up.

Read-modify-write (idempotent create, :meth:`RedisStore.update_order`) uses optimistic
``WATCH``: read, compute, ``MULTI``/``EXEC``; if a watched key changed meanwhile, ``EXEC``
does nothing and the whole step is retried on fresh data.

"Couriers near here" uses Redis GEO (``GEOSEARCH ... BYRADIUS``) rather than H3 buckets:
one sorted set kept current by the same ``GEOADD`` that moves a courier (no stale bucket
memberships to clean up), one command per query at any radius. Redis measures on a
slightly different sphere and stores positions as 52-bit geohashes (~0.6 m), so the
search uses a small margin and the candidates are then filtered exactly with
:func:`geo.coords.haversine_m` on the stored estimates: both backends give identical
answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis.exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from dispatch.model import Courier, Order, Plan, Route
from geo.estimate import Estimate
from tracking.codec import (
    decode,
    dumps,
    encode,
    estimate_time,
    loads,
    plan_from_dict,
    route_from_dict,
    route_to_dict,
)
from tracking.errors import BadInput, Conflict, CorruptData, NotFound, TrackingError, Unavailable
from tracking.events import Event
from tracking.redis_batch import ScriptBatch
from tracking.redis_events import (
    APPEND_EVENTS_LUA,
    DEFAULT_PREFIX,
    RedisEventLog,
    redis_errors,
    to_str,
)
from tracking.store import (
    Nearby,
    OrderEvents,
    apply_change,
    check_doc,
    check_id,
    check_idempotency_key,
    check_instance,
    check_limit,
    check_plan,
    check_point,
    check_radius,
    check_routes,
    select_nearby,
)

if TYPE_CHECKING:
    from tracking.store import StateStore

DEFAULT_IDEMPOTENCY_TTL_S = 24 * 3600.0
MAX_WATCH_RETRIES = 100
_PUT_POSITION_LUA = (
    APPEND_EVENTS_LUA
    + """
-- KEYS[1]: positions hash; KEYS[2]: geo set; then the event log's keys.
-- ARGV[1]: courier id; ARGV[2]: encoded estimate; ARGV[3], ARGV[4]: lon, lat; then the
-- event log's arguments. Returns {the replaced estimate or nil, the new event ids}.
-- GEOADD first: the one command that could refuse (all is validated before the call).
redis.call('GEOADD', KEYS[2], ARGV[3], ARGV[4], ARGV[1])
local prev = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {prev, append_events(2, 4)}
"""
)
_META = "meta"
_ROUTE = "route:"


class RedisStore:
    """:class:`~tracking.store.StateStore` on Redis (``redis.asyncio``).

    ``client``: built by the caller (RESP2 or 3, ``decode_responses`` or not); the
    store closes it only when it created it (:meth:`from_url`). ``log``: the event log
    to append write events to; by default a :class:`RedisEventLog` on the same client and
    prefix. It must use the same client, since its append runs in this store's
    transactions. ``idempotency_ttl_s``: how long a key keeps naming its order (None:
    forever); a retry after that creates a new order unless the order id repeats.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        log: RedisEventLog | None = None,
        idempotency_ttl_s: float | None = DEFAULT_IDEMPOTENCY_TTL_S,
        owns_client: bool = False,
    ) -> None:
        if log is not None and log.client is not client:
            raise BadInput("bad_log", "the event log must use the store's Redis client")
        if idempotency_ttl_s is not None and not idempotency_ttl_s > 0:
            raise BadInput("bad_ttl", f"idempotency_ttl_s must be > 0, got {idempotency_ttl_s}")
        self.client = client
        self.prefix = prefix
        self._log = log if log is not None else RedisEventLog(client, prefix=prefix)
        self._idem_ttl_ms = (
            None if idempotency_ttl_s is None else max(1, round(idempotency_ttl_s * 1000))
        )
        self._owns_client = owns_client
        self._put_position = ScriptBatch(client, client.register_script(_PUT_POSITION_LUA))

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """A store with its own client for ``url`` (closed by :meth:`aclose`)."""
        return cls(Redis.from_url(url), owns_client=True, **kwargs)

    @property
    def events(self) -> RedisEventLog:
        return self._log

    @property
    def shared(self) -> bool:
        return True  # every worker, every process with the URL

    async def aclose(self) -> None:
        await self._put_position.aclose()  # writes in flight get their replies first
        if self._owns_client:
            self._owns_client = False
            await self.client.aclose()

    async def persistence(self) -> str:
        """The server's durability: ``"aof-always"`` (acknowledged writes survive a
        crash), ``"aof-everysec"``, ``"aof-no"``, ``"none"``, or ``"unknown"`` where
        ``CONFIG`` is not allowed (managed Redis)."""
        try:
            with redis_errors():
                conf = await self.client.config_get("append*")
        except Unavailable:
            raise
        except TrackingError:  # CONFIG disabled or renamed: not an error for the store
            return "unknown"
        values = {to_str(k): to_str(v) for k, v in conf.items()}
        if values.get("appendonly") != "yes":
            return "none"
        return f"aof-{values.get('appendfsync', 'unknown')}"

    # -- keys --------------------------------------------------------------------------

    def _order_key(self, order_id: str) -> str:
        return f"{self.prefix}:order:{order_id}"

    def _idem_key(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

    @property
    def _orders_key(self) -> str:
        return f"{self.prefix}:orders"

    @property
    def _open_key(self) -> str:
        return f"{self.prefix}:orders:open"

    @property
    def _couriers_key(self) -> str:
        return f"{self.prefix}:couriers"

    @property
    def _positions_key(self) -> str:
        return f"{self.prefix}:positions"

    @property
    def _geo_key(self) -> str:
        return f"{self.prefix}:geo"

    @property
    def _plan_key(self) -> str:
        return f"{self.prefix}:plan"

    # -- helpers -----------------------------------------------------------------------

    async def _write(self, queue: Callable[[Pipeline], None], events: Sequence[Event]) -> None:
        """One ``MULTI``/``EXEC``: the commands ``queue`` adds, then the event append.

        Everything is encoded and validated before anything is sent (the pipeline
        buffers until ``execute``), so bad input never leaves a half-applied write.
        """
        with redis_errors():
            async with self.client.pipeline(transaction=True) as pipe:
                queue(pipe)
                if events:
                    await self._log.queue_append(pipe, events)
                await pipe.execute()

    def _queue_order(self, pipe: Pipeline, order: Order, text: str) -> None:
        pipe.set(self._order_key(order.id), text)
        pipe.sadd(self._orders_key, order.id)
        if order.is_open:
            pipe.sadd(self._open_key, order.id)
        else:
            pipe.srem(self._open_key, order.id)

    # -- orders ------------------------------------------------------------------------

    async def put_order(self, order: Order, *, events: Sequence[Event] = ()) -> None:
        check_instance(order, Order, "order")
        text = encode(order)
        await self._write(lambda pipe: self._queue_order(pipe, order, text), events)

    async def put_order_idempotent(
        self, key: str, order: Order, *, events: Sequence[Event] = ()
    ) -> tuple[Order, bool]:
        check_idempotency_key(key)
        check_instance(order, Order, "order")
        text = encode(order)
        idem, okey = self._idem_key(key), self._order_key(order.id)
        with redis_errors():
            for _ in range(MAX_WATCH_RETRIES):
                async with self.client.pipeline(transaction=True) as pipe:
                    await pipe.watch(idem, okey)
                    existing = await pipe.get(idem)
                    if existing is not None:
                        oid = to_str(existing)
                        raw = await pipe.get(self._order_key(oid))
                        if raw is None:
                            raise CorruptData(
                                "dangling_key", f"idempotency key {key!r} names missing order {oid}"
                            )
                        return decode(raw, Order, f"order {oid}"), False
                    if await pipe.exists(okey):
                        raise Conflict("order_exists", f"order {order.id} exists under another key")
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(idem, order.id, px=self._idem_ttl_ms)
                    self._queue_order(pipe, order, text)
                    if events:
                        await self._log.queue_append(pipe, events)
                    try:
                        await pipe.execute()
                    except rexc.WatchError:
                        continue  # someone wrote the key or the order first: look again
                    return decode(text, Order), True
        raise Conflict("contention", f"idempotency key {key!r}: too much contention")

    async def get_order(self, order_id: str) -> Order:
        check_id("order", order_id)
        with redis_errors():
            raw = await self.client.get(self._order_key(order_id))
        if raw is None:
            raise NotFound("order", order_id)
        return decode(raw, Order, f"order {order_id}")

    async def update_order(
        self,
        order_id: str,
        change: Callable[[Order], Order],
        *,
        events: OrderEvents | None = None,
    ) -> Order:
        check_id("order", order_id)
        okey = self._order_key(order_id)
        with redis_errors():
            for _ in range(MAX_WATCH_RETRIES):
                async with self.client.pipeline(transaction=True) as pipe:
                    await pipe.watch(okey)
                    raw = await pipe.get(okey)
                    if raw is None:
                        raise NotFound("order", order_id)
                    old = decode(raw, Order, f"order {order_id}")
                    new, evs = apply_change(old, change, events)
                    text = encode(new)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    self._queue_order(pipe, new, text)
                    if evs:
                        await self._log.queue_append(pipe, evs)
                    try:
                        await pipe.execute()
                    except rexc.WatchError:
                        continue  # a concurrent write won: redo change() on fresh data
                    return decode(text, Order)
        raise Conflict("contention", f"order {order_id}: too much contention")

    async def list_orders(self, *, open_only: bool = False) -> list[Order]:
        with redis_errors():
            members = await self.client.smembers(self._open_key if open_only else self._orders_key)
            ids = sorted(to_str(m) for m in members)
            raws = await self.client.mget([self._order_key(i) for i in ids]) if ids else []
        out = []
        for oid, raw in zip(ids, raws, strict=True):
            if raw is None:
                raise CorruptData("dangling_index", f"order index names missing order {oid}")
            order = decode(raw, Order, f"order {oid}")
            if not open_only or order.is_open:
                out.append(order)
        return out

    # -- couriers ----------------------------------------------------------------------

    async def put_courier(self, courier: Courier, *, events: Sequence[Event] = ()) -> None:
        check_instance(courier, Courier, "courier")
        text = encode(courier)

        def queue(pipe: Pipeline) -> None:
            pipe.hset(self._couriers_key, courier.id, text)

        await self._write(queue, events)

    async def get_courier(self, courier_id: str) -> Courier:
        check_id("courier", courier_id)
        with redis_errors():
            raw = await self.client.hget(self._couriers_key, courier_id)
        if raw is None:
            raise NotFound("courier", courier_id)
        return decode(raw, Courier, f"courier {courier_id}")

    async def list_couriers(self) -> list[Courier]:
        with redis_errors():
            raw = await self.client.hgetall(self._couriers_key)
        items = sorted((to_str(k), v) for k, v in raw.items())
        return [decode(v, Courier, f"courier {k}") for k, v in items]

    # -- positions ---------------------------------------------------------------------

    async def put_position(
        self, courier_id: str, estimate: Estimate, *, events: Sequence[Event] = ()
    ) -> float | None:
        check_id("courier", courier_id)
        check_instance(estimate, Estimate, "estimate")
        check_point(estimate.lat, estimate.lon)
        text = encode(estimate)

        # Every courier writes this every second: one script call (atomic, like MULTI,
        # and durable alike), not a MULTI/EXEC of five commands through redis-py's
        # pipeline, which was most of a post's CPU in the worker; concurrent calls share
        # round trips (:mod:`tracking.redis_batch`).
        ekeys, eargs = self._log.script_args(events)
        with redis_errors():
            replaced, _ids = await self._put_position(
                [self._positions_key, self._geo_key, *ekeys],
                [courier_id, text, repr(estimate.lon), repr(estimate.lat), *eargs],
            )
        if replaced is None:
            return None
        return estimate_time(replaced, f"position of {courier_id}")

    async def get_position(self, courier_id: str) -> Estimate:
        check_id("courier", courier_id)
        with redis_errors():
            raw = await self.client.hget(self._positions_key, courier_id)
        if raw is None:
            raise NotFound("position", courier_id)
        return decode(raw, Estimate, f"position of {courier_id}")

    async def remove_position(self, courier_id: str, *, events: Sequence[Event] = ()) -> None:
        check_id("courier", courier_id)

        def queue(pipe: Pipeline) -> None:
            pipe.hdel(self._positions_key, courier_id)
            pipe.zrem(self._geo_key, courier_id)

        await self._write(queue, events)

    async def couriers_near(
        self,
        lat: float,
        lon: float,
        radius_m: float,
        *,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[Nearby]:
        check_point(lat, lon)
        radius = check_radius(radius_m)
        check_limit(limit)
        # Margin for Redis's sphere (6 372 797.6 m vs our 6 371 008.8 m, +0.03 %) and its
        # geohash quantisation (< 1 m); the exact filter below removes the extra.
        search = radius * 1.001 + 5.0
        with redis_errors():
            members = await self.client.geosearch(
                self._geo_key, longitude=lon, latitude=lat, radius=search, unit="m"
            )
            ids = [to_str(m) for m in members]
            raws = await self.client.hmget(self._positions_key, ids) if ids else []
        # A position removed between the two reads is simply gone (not corruption).
        candidates = [
            (cid, decode(raw, Estimate, f"position of {cid}"))
            for cid, raw in zip(ids, raws, strict=True)
            if raw is not None
        ]
        return select_nearby(candidates, lat, lon, radius, since, limit)

    # -- plan --------------------------------------------------------------------------

    async def put_plan(self, plan: Plan, *, events: Sequence[Event] = ()) -> None:
        check_plan(plan)
        fields = {_META: dumps({"created_at": plan.created_at, "unassigned": plan.unassigned})}
        for cid, route in plan.routes.items():
            fields[_ROUTE + cid] = dumps(route_to_dict(route))

        def queue(pipe: Pipeline) -> None:
            pipe.delete(self._plan_key)
            pipe.hset(self._plan_key, mapping=fields)  # type: ignore[arg-type]

        await self._write(queue, events)

    async def get_plan(self) -> Plan | None:
        with redis_errors():
            raw = await self.client.hgetall(self._plan_key)
        if not raw:
            return None
        fields = {to_str(k): v for k, v in raw.items()}
        if _META not in fields:
            raise CorruptData("bad_plan", f"{self._plan_key} has no {_META!r} field")
        meta = loads(fields.pop(_META), "plan meta")
        routes = {}
        for name, value in fields.items():
            if not name.startswith(_ROUTE):
                raise CorruptData("bad_plan", f"{self._plan_key} has a stray field {name!r}")
            routes[name[len(_ROUTE) :]] = loads(value, f"plan {name}")
        data = {
            "created_at": meta.get("created_at"),
            "unassigned": meta.get("unassigned"),
            "routes": routes,
        }
        return plan_from_dict(data)

    async def put_routes(
        self, routes: Mapping[str, Route | None], *, events: Sequence[Event] = ()
    ) -> None:
        check_routes(routes)
        sets = {_ROUTE + cid: dumps(route_to_dict(r)) for cid, r in routes.items() if r}
        dels = [_ROUTE + cid for cid, r in routes.items() if r is None]
        meta = _META
        empty_meta = dumps({"created_at": 0.0, "unassigned": {}})

        def queue(pipe: Pipeline) -> None:
            pipe.hsetnx(self._plan_key, meta, empty_meta)
            if sets:
                pipe.hset(self._plan_key, mapping=sets)  # type: ignore[arg-type]
            if dels:
                pipe.hdel(self._plan_key, *dels)

        await self._write(queue, events)

    def _doc_key(self, name: str) -> str:
        return f"{self.prefix}:doc:{name}"

    async def put_doc(
        self, name: str, doc: Mapping[str, Any], *, events: Sequence[Event] = ()
    ) -> None:
        text = dumps(check_doc(name, doc))
        key = self._doc_key(name)

        def queue(pipe: Pipeline) -> None:
            pipe.set(key, text)

        await self._write(queue, events)

    async def get_doc(self, name: str) -> dict[str, Any] | None:
        with redis_errors():
            raw = await self.client.get(self._doc_key(check_id("document", name)))
        return None if raw is None else loads(raw, f"document {name}")

    async def get_route(self, courier_id: str) -> Route | None:
        check_id("courier", courier_id)
        with redis_errors():
            raw = await self.client.hget(self._plan_key, _ROUTE + courier_id)
        if raw is None:
            return None
        return route_from_dict(loads(raw, f"route of {courier_id}"), f"route of {courier_id}")


if TYPE_CHECKING:  # both backends satisfy the protocol (checked by mypy, costs nothing)

    def _is_state_store(s: RedisStore) -> StateStore:
        return s

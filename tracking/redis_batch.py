"""Concurrent calls of one Lua script, sent to Redis as pipelined round trips.

Every courier posts a position every second, and each post is one script call
(:meth:`tracking.redis_store.RedisStore.put_position`). Through redis-py a lone call
checks a connection out of the pool under a lock and a timeout, wraps the call in its
retry machinery and checks it back in: under load that was about 40 % of a post's CPU
in the worker, for a command Redis runs in microseconds. :class:`ScriptBatch` queues the
calls made while a round trip is in flight and sends them together in the next one, one
pipeline (not a transaction: each call is atomic on its own), so a call costs little
more than its packing and parsing and Redis fsyncs its AOF once per batch.

Each caller still awaits its own reply, which Redis sends only after it ran the call
(and, with ``appendfsync always``, logged it): acknowledgement and durability are as
before. A call Redis refuses gets its own error; a lost connection fails the calls of
that batch (they may or may not have run, as with a lone call). After a restart the
script cache is empty: the calls refused with ``NOSCRIPT`` did not run, so the script
is loaded and those calls are sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["ScriptBatch"]

Call = tuple[Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatch:
    """``await batch(keys, args)`` runs ``script`` like ``script(keys, args)`` would.

    ``max_batch``: calls per round trip; ``max_inflight``: round trips at once (each
    holds one pooled connection while it runs). With one (the default) Redis runs the
    calls in the order they were made; with more, batches on different connections may
    run in either order.
    """

    def __init__(
        self, client: Redis, script: AsyncScript, *, max_batch: int = 256, max_inflight: int = 1
    ) -> None:
        if max_batch < 1 or max_inflight < 1:
            raise ValueError("max_batch and max_inflight must be >= 1")
        self.client = client
        self.script = script
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queue: list[Call] = []
        self._inflight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0
        """Pipelines sent so far (with :attr:`calls`, how well calls were batched)."""
        self.calls = 0

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((keys, args, fut))
        if not self._scheduled and self._inflight < self.max_inflight:
            # At the end of this loop turn, so the calls made in it go together.
            self._scheduled = True
            loop.call_soon(self._start)
        return await fut

    def _start(self) -> None:
        self._scheduled = False
        while self._queue and self._inflight < self.max_inflight:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            self._inflight += 1
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Call]) -> None:
        try:
            results = await self._send([(keys, args) for keys, args, _ in batch])
        except BaseException as e:  # the round trip failed (or was cancelled): all of it
            for _, _, fut in batch:
                if fut.done():
                    continue
                if isinstance(e, Exception):
                    fut.set_exception(e)
                else:
                    fut.cancel()
            if not isinstance(e, Exception):
                raise
        else:
            for (_, _, fut), result in zip(batch, results, strict=True):
                if fut.done():  # its caller went away; the call ran all the same
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
        finally:
            self._inflight -= 1
            if self._queue and not self._scheduled:
                self._start()

    async def _send(self, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        self.round_trips += 1
        self.calls += len(calls)
        results = await self._pipeline(calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:  # a restarted (or flushed) server: those calls did not run
            await self.client.script_load(self.script.script)
            again = await self._pipeline([calls[i] for i in missing])
            for i, r in zip(missing, again, strict=True):
                results[i] = r
        return results

    async def _pipeline(self, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        pipe: Pipeline = self.client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(self.script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    async def aclose(self) -> None:
        """Wait for the round trips in flight (callers get their replies)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

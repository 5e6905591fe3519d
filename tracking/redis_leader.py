"""A Redis lease naming the one process that runs the dispatcher.

``SET key token NX PX ttl`` takes the lease; the holder extends it well before it runs
out (a script checks the token first, so a process that lost the lease can never extend
someone else's). If the leader dies, the lease expires within ``ttl_s`` and another
worker takes over, rebuilding the dispatcher from the store.
"""

from __future__ import annotations

import asyncio
import secrets

from redis.asyncio import Redis

from tracking.errors import Unavailable
from tracking.redis_events import DEFAULT_PREFIX, redis_errors

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLeadership:
    """:class:`tracking.dispatch_loop.Leadership` on one Redis key."""

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX, ttl_s: float = 10.0) -> None:
        self.client = client
        self.key = f"{prefix}:dispatch:leader"
        self.token = secrets.token_hex(16)
        self.ttl_ms = max(1000, round(ttl_s * 1000))

    async def acquire(self) -> None:
        while True:
            try:
                with redis_errors():
                    if await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
                        return
            except Unavailable:
                pass
            await asyncio.sleep(self.ttl_ms / 3000)

    @property
    def renew_every_s(self) -> float:
        return self.ttl_ms / 4000  # four tries before the lease runs out

    async def renew(self) -> bool:
        with redis_errors():
            done = await self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms)
        return bool(done)

    async def release(self) -> None:
        with redis_errors():
            await self.client.eval(_RELEASE, 1, self.key, self.token)

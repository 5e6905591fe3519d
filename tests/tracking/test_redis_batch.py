"""Pipelined script calls (tracking.redis_batch) against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tests.conftest import RedisServer
from tests.tracking.conftest import run
from tracking.redis_batch import ScriptBatch

# Appends ARGV[1] to a list and returns the list's new length; refuses the value "bad"
# (a call Redis runs and fails), as a store script refuses what it cannot apply.
SCRIPT = """
if ARGV[1] == 'bad' then return redis.error_reply('ERR refused bad') end
return redis.call('RPUSH', KEYS[1], ARGV[1])
"""


def test_concurrent_calls_share_round_trips_and_each_gets_its_reply(
    redis_server: RedisServer,
) -> None:
    async def main() -> None:
        client = Redis.from_url(redis_server.url, decode_responses=True)
        await client.delete("batch:a", "batch:b")
        batch = ScriptBatch(client, client.register_script(SCRIPT), max_batch=50)
        results = await asyncio.gather(
            *(batch([f"batch:{'ab'[i % 2]}"], [str(i)]) for i in range(400))
        )
        # Every call ran exactly once, in the order the calls were made, per key.
        assert sorted(results[0::2]) == list(range(1, 201))
        assert await client.lrange("batch:a", 0, -1) == [str(i) for i in range(0, 400, 2)]
        assert await client.lrange("batch:b", 0, -1) == [str(i) for i in range(1, 400, 2)]
        assert batch.calls == 400
        assert batch.round_trips <= 400 // 50 + 1  # batched, not one trip per call
        await batch.aclose()
        await client.aclose()

    run(main())


def test_a_refused_call_fails_alone(redis_server: RedisServer) -> None:
    async def main() -> None:
        client = Redis.from_url(redis_server.url, decode_responses=True)
        await client.delete("batch:r")
        batch = ScriptBatch(client, client.register_script(SCRIPT))
        out = await asyncio.gather(
            batch(["batch:r"], ["x"]),
            batch(["batch:r"], ["bad"]),
            batch(["batch:r"], ["y"]),
            return_exceptions=True,
        )
        assert out[0] == 1 and out[2] == 2
        assert isinstance(out[1], ResponseError) and "refused bad" in str(out[1])
        assert await client.lrange("batch:r", 0, -1) == ["x", "y"]
        await client.aclose()

    run(main())


def test_an_empty_script_cache_is_refilled_and_nothing_runs_twice(
    redis_server: RedisServer,
) -> None:
    """After a restart (here: SCRIPT FLUSH) the calls refused with NOSCRIPT did not run;
    they are sent again once, after the script is loaded."""

    async def main() -> None:
        client = Redis.from_url(redis_server.url, decode_responses=True)
        await client.delete("batch:s")
        batch = ScriptBatch(client, client.register_script(SCRIPT))
        await batch(["batch:s"], ["0"])
        await client.script_flush()
        await asyncio.gather(*(batch(["batch:s"], [str(i)]) for i in range(1, 21)))
        assert await client.lrange("batch:s", 0, -1) == [str(i) for i in range(21)]
        await client.aclose()

    run(main())


def test_a_lost_server_fails_the_calls_then_they_work_again(redis_server: RedisServer) -> None:
    async def main() -> None:
        client = Redis.from_url(redis_server.url, decode_responses=True)
        await client.delete("batch:k")
        batch = ScriptBatch(client, client.register_script(SCRIPT))
        assert await batch(["batch:k"], ["before"]) == 1
        redis_server.kill()
        with pytest.raises(RedisConnectionError):
            await asyncio.gather(*(batch(["batch:k"], ["lost"]) for _ in range(5)))
        redis_server.start()
        assert await batch(["batch:k"], ["after"]) == 2  # AOF kept "before"
        await client.aclose()

    run(main())


def test_bad_limits_are_refused() -> None:
    client = Redis()
    script = client.register_script(SCRIPT)
    with pytest.raises(ValueError):
        ScriptBatch(client, script, max_batch=0)
    with pytest.raises(ValueError):
        ScriptBatch(client, script, max_inflight=0)

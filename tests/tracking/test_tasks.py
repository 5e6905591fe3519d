"""Stopping background tasks without hanging on them."""

from __future__ import annotations

import asyncio
import time

from tests.tracking.conftest import run
from tracking.tasks import cancel_and_wait


def test_a_task_that_ignores_cancellation_is_left_after_the_timeout() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def stubborn() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await release.wait()  # what a stuck clean-up looks like

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        started = time.monotonic()
        await cancel_and_wait(task, 0.2)
        assert 0.15 < time.monotonic() - started < 2.0
        assert not task.done()
        release.set()
        await task

    run(main())


def test_a_task_that_stops_or_fails_is_awaited_quietly() -> None:
    async def main() -> None:
        async def fails() -> None:
            raise RuntimeError("boom")

        failing = asyncio.create_task(fails())
        await asyncio.sleep(0)
        await cancel_and_wait(failing)  # no exception escapes
        sleeper = asyncio.create_task(asyncio.sleep(3600))
        await cancel_and_wait(sleeper)
        assert sleeper.cancelled()

    run(main())

"""Stopping background tasks without hanging on them."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("o2o.tasks")

STOP_TIMEOUT_S = 2.0


async def cancel_and_wait(task: asyncio.Task[object], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Cancel ``task`` and wait up to ``timeout_s`` for it to finish; never raises.

    A Redis read cancelled inside redis-py now and then never finishes (its clean-up
    awaits a connection close that does not come); awaiting such a task outright hung a
    worker's shutdown. It is left behind, with a warning, after the timeout.
    """
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("task %s did not stop within %.1f s; leaving it", task.get_name(), timeout_s)
    elif not task.cancelled() and task.exception() is not None:
        log.debug("task %s ended with %r", task.get_name(), task.exception())

"""Run independent simulations in worker processes, results in task order."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_in_order(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    processes: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[R]:
    """``[fn(t) for t in tasks]``, on up to ``processes`` spawned workers.

    Results keep the order of ``tasks`` whatever the process count, so runs compare
    one to one. Spawn (not fork) because callers may run a progress-bar thread; a
    script calling this with ``processes > 1`` needs the ``__main__`` guard.
    ``progress(done, total)`` is called after each task.
    """
    results: list[R] = []
    if processes <= 1 or len(tasks) <= 1:
        for task in tasks:
            results.append(fn(task))
            if progress is not None:
                progress(len(results), len(tasks))
        return results
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(processes, len(tasks))) as pool:
        for result in pool.imap(fn, tasks):
            results.append(result)
            if progress is not None:
                progress(len(results), len(tasks))
    return results

"""Process-level tuning for the service's long-running processes: the garbage collector.

An API worker holding a few thousand websockets keeps 600,000-850,000 objects that the
cyclic garbage collector tracks (about 170 per connection: the coroutines of the ASGI
stack, tasks, futures, closures, headers). With CPython's default thresholds
(700, 10, 10) a loaded worker promoted everything in flight (a request waiting for
Redis lives longer than the ~10 ms between young collections) to the oldest generation
and ran a *full* collection about every two seconds: 0.5-0.9 s each, a quarter of the
worker's CPU, and a stall for every request and socket of that worker while it ran
(measured under ``o2o bench tracking``, docs/benchmarks.md).

:func:`tune_gc` raises the youngest generation's threshold so objects get the time to
die young (most are freed by reference counting anyway; the collector is only for
cycles), and freezes what the process built at start-up (modules, the app, schemas)
so no collection walks it again. The oldest generation keeps CPython's own rule (after
``thresholds[2]`` middle collections, and only once it has grown by a quarter), so
cyclic garbage of closed connections is still reclaimed, every several minutes under
full load rather than every two seconds.
"""

from __future__ import annotations

import gc

DEFAULT_GC_THRESHOLDS: tuple[int, int, int] = (50_000, 20, 10)
"""Young collections every 50,000 net allocations instead of 700, middle ones every 20
of those; the oldest as CPython (10)."""


def tune_gc(
    thresholds: tuple[int, int, int] | None = DEFAULT_GC_THRESHOLDS, *, freeze: bool = True
) -> None:
    """Set the collector's thresholds (None keeps CPython's) and, with ``freeze``, move
    every object alive now out of the collector's reach (call it once the process has
    built its long-lived state, before it serves)."""
    if thresholds is not None:
        if len(thresholds) != 3 or any(t < 1 for t in thresholds):
            raise ValueError(f"gc thresholds must be three positive integers, got {thresholds}")
        gc.set_threshold(*thresholds)
    if freeze:
        gc.collect()  # what is garbage already goes now, not frozen for ever
        gc.freeze()

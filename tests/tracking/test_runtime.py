"""Garbage-collector tuning of the service's processes (run in subprocesses: it is
process-wide state that pytest's own process must keep)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tracking.runtime import tune_gc

SECRET = "s" * 40


def _run(code: str, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=True,
    )
    return out.stdout.strip()


def test_thresholds_set_and_startup_objects_frozen_yet_new_cycles_collected() -> None:
    out = _run(
        """
        import gc
        from tracking.runtime import tune_gc
        tune_gc((1000, 5, 7))
        frozen = gc.get_freeze_count()
        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        print(gc.get_threshold(), frozen > 1000, gc.collect() >= 2)
        """
    )
    assert out == "(1000, 5, 7) True True"


def test_service_worker_takes_the_thresholds_from_the_environment() -> None:
    code = """
        import gc
        from api.app import app_from_env
        app_from_env()
        print(gc.get_threshold(), gc.get_freeze_count() > 0)
        """
    assert _run(code, O2O_SECRET=SECRET) == "(50000, 20, 10) True"
    assert _run(code, O2O_SECRET=SECRET, O2O_GC_THRESHOLDS="[700,10,10]") == "(700, 10, 10) True"


@pytest.mark.parametrize("bad", [(0, 10, 10), (700, 10)])
def test_bad_thresholds_refused(bad: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="three positive integers"):
        tune_gc(bad, freeze=False)  # type: ignore[arg-type]

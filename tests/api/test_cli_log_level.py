"""``o2o serve`` and ``o2o demo`` refuse a log level uvicorn does not know, in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.api.conftest import ROOT, SECRET


def _o2o(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "O2O_SECRET": SECRET}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_an_unknown_log_level_is_a_one_line_error(command: str) -> None:
    p = _o2o(command, "--port", "0", "--log-level", "bogus")
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == [
        "o2o: error: --log-level must be one of critical, error, warning, info, debug, trace, "
        "got 'bogus'"
    ]
    assert p.stdout == ""


def test_log_levels_are_taken_in_any_case() -> None:
    from api.cli_serve import check_log_level

    assert check_log_level("WARNING") == "warning"

"""Fixtures: the tiny hand-made MDRP instance and (when present) a real small one."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations.scenarios import Scenario, read_mdrp
from tests.conftest import SHARED_DATA

TINY = Path(__file__).parent / "data" / "tiny"
REAL_SMALL = SHARED_DATA / "mdrp" / "instances" / "0o50t75s1p100"


@pytest.fixture(scope="session")
def tiny() -> Scenario:
    return read_mdrp(TINY)


@pytest.fixture(scope="session")
def real_small() -> Scenario:
    if not REAL_SMALL.is_dir():
        pytest.skip(f"{REAL_SMALL} is not available")
    return read_mdrp(REAL_SMALL)

"""The foundation itself: lint/type checks, the import direction, the Redis fixture."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import RedisServer

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("geo", "dispatch", "tracking", "api", "simulations")
# Which of our packages each package may import (docs/architecture.md).
ALLOWED = {
    "geo": set(),
    "dispatch": {"geo"},
    "simulations": {"geo", "dispatch"},
    "tracking": {"geo", "dispatch"},
    "api": {"geo", "dispatch", "tracking", "simulations", "benchmarks"},
    "benchmarks": {"geo", "dispatch", "tracking", "simulations"},
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package: str) -> None:
    bad = {
        f"{p.relative_to(ROOT)} imports {sorted(imp - ALLOWED[package] - {package})}"
        for p in (ROOT / package).rglob("*.py")
        if (imp := _imported_packages(p)) - ALLOWED[package] - {package}
    }
    assert not bad


def test_ruff_clean() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_private_redis_survives_kill_with_aof(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set("k", "v")
    redis_server.kill()
    redis_server.start()
    assert redis.Redis.from_url(redis_server.url).get("k") == b"v"

"""Smoke run of the in-process ingest benchmark on both stores."""

from __future__ import annotations

import json

from api.bench_ingest import run


def test_ingest_bench_smoke() -> None:
    result = run(["memory", "redis"], couriers=10, rounds=2, warmup=1)
    json.dumps(result)
    assert [r["store"] for r in result["runs"]] == ["memory", "redis"]
    for r in result["runs"]:
        assert r["posts"] == 20
        assert 0 < r["cpu_us_per_post"] < 1_000_000

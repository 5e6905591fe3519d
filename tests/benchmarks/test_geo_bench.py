"""Smoke run of ``o2o bench geo``: the JSON interface and that fusion pays off."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from api.cli import app

REQUIRED = [
    "fused.median_m", "fused.p95_m", "gps_only.median_m", "best_single.median_m",
    "calibration.r68", "calibration.r95", "h3_hit_rate_res10", "geofence.precision",
    "geofence.recall", "throughput_obs_per_s", "update_latency_us.p50",
    "update_latency_us.p99",
]  # fmt: skip


def test_bench_geo_prints_the_documented_json() -> None:
    r = CliRunner().invoke(
        app,
        ["bench", "geo", "--json", "--couriers", "4", "--duration", "900",
         "--latency-samples", "500", "--seed", "2"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    for dotted in REQUIRED:
        node = result
        for part in dotted.split("."):
            node = node[part]
        assert isinstance(node, int | float), dotted
    assert result["fused"]["median_m"] < result["gps_only"]["median_m"]
    assert result["fused"]["p95_m"] < result["gps_only"]["p95_m"]
    assert 0.5 < result["calibration"]["r68"] < result["calibration"]["r95"] <= 1.0
    assert result["h3_hit_rate_res10"] > 0.8
    assert result["geofence"]["precision"] > 0.8 and result["geofence"]["recall"] > 0.8
    # Every injected bad record was rejected and counted under its own reason.
    bad = result["injected_bad"]
    rejected = result["engine"]["rejected"]
    assert rejected.get("non_finite", 0) == bad["nan_lat"]
    assert rejected.get("null_island", 0) == bad["null_island"]
    assert rejected.get("absurd_accuracy", 0) == bad["absurd_accuracy"]
    assert rejected.get("duplicate", 0) == bad["duplicate"]

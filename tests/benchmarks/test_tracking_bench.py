"""Smoke run of ``o2o bench tracking``: real service processes (memory store, and Redis
with 2 workers), real couriers over HTTP and customers over websockets, small sizes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from benchmarks.tracking_bench import (
    LoadClient,
    RunConfig,
    Watcher,
    calibrate,
    calibration_fixes,
    parse_configs,
    run,
)
from geo.estimate import Estimate
from geo.fusion import FusionEngine

REQUIRED = {
    "store",
    "workers",
    "couriers",
    "watchers",
    "obs_per_s",
    "latency_ms",
    "status_sent",
    "status_received",
    "errors",
}


def test_parse_configs() -> None:
    assert parse_configs("memory:1, redis:2") == [RunConfig("memory", 1), RunConfig("redis", 2)]
    assert parse_configs("redis") == [RunConfig("redis", 1)]
    for bad in ("", "memory:2", "mongo:1", "redis:0", "redis:x"):
        with pytest.raises(ValueError):
            parse_configs(bad)


def test_tracking_bench_smoke() -> None:
    result = run(
        "memory:1,redis:2", couriers=20, watchers=40, duration_s=5.0, clients=1, deliveries=0.25
    )
    json.dumps(result)  # one JSON object
    assert [(r["store"], r["workers"]) for r in result["runs"]] == [("memory", 1), ("redis", 2)]
    assert result["machine"]["nproc"] >= 1
    assert 0 < result["machine"]["calibration_us_before"] < 10_000
    assert 0 < result["machine"]["calibration_us_after"] < 10_000
    for r in result["runs"]:
        assert set(r) >= REQUIRED
        assert set(r["latency_ms"]) == {"p50", "p99"}
        assert (r["couriers"], r["watchers"]) == (20, 40)
        assert r["errors"] == 0, r["error_kinds"]
        assert r["obs_per_s"] > 0
        per_obs = r["cpu_ms_per_obs"]  # the window's CPU over the observations it took
        service_ms = r["cpu_s"]["service"] / (r["obs_per_s"] * r["duration_s"]) * 1000
        assert per_obs["service"] == pytest.approx(service_ms, rel=0.02)
        assert per_obs["load_generator"] > 0
        # the dispatcher's share of the service, and the workers' CPU per observation
        assert 0 <= r["cpu_s"]["service_dispatcher"] <= r["cpu_s"]["service"]
        workers_s = r["cpu_s"]["service"] - r["cpu_s"]["service_dispatcher"]
        assert per_obs["service_workers"] == pytest.approx(
            per_obs["service"] * workers_s / r["cpu_s"]["service"], rel=0.05, abs=0.01
        )
        assert r["watchers_connected"] == 40
        assert r["status_sent"] > 0  # at least the confirmations and assignments
        assert r["status_sent"] == r["status_received"]
        assert r["status_lost"] == r["status_unverified"] == 0
        assert r["confirmations"].get("pickup_ok", 0) > 0
        assert r["foreign_positions"] == 0
        p50, p99 = r["latency_ms"]["p50"], r["latency_ms"]["p99"]
        assert p50 is not None and p99 is not None and 0 < p50 <= p99
        # cut at the log's append time: both parts are real durations within the whole
        split = r["latency_split_ms"]
        assert -5 <= split["to_log"]["p50"] <= p99 and 0 <= split["from_log"]["p50"] <= p99
        assert r["status_mismatches"] == []
        # the service's own view of its fan-out: one lag per worker, nothing shed
        (last, *_) = r["hub_lag"][::-1]
        assert len([k for k in last if k.startswith("lag_s:")]) == r["workers"]
        assert last["positions_shed"] == 0
        # the dispatcher's counters come along
        assert {"dispatch_replans", "dispatch_replans_rejected", "dispatch_groups_solved"} <= set(
            last
        )


def test_calibration_fuses_every_fix() -> None:
    # A pass whose fixes were rejected would time the rejection path only, a figure
    # that says little about the machine: every fix must become an estimate.
    engine = FusionEngine()
    out = [engine.process_dict(fix) for fix in calibration_fixes(300)]
    assert all(isinstance(e, Estimate) for e in out), {type(e).__name__ for e in out}
    assert calibrate(passes=3, fixes=50, gap_s=0.0) > 0


def test_cli_rejects_bad_configs() -> None:
    import typer

    from api.cli_bench_tracking import register

    app = typer.Typer()
    register(app)
    out = CliRunner().invoke(app, ["--configs", "memory:3", "--json"])
    assert out.exit_code == 2


def _replay_client(port: int) -> tuple[LoadClient, Watcher]:
    client = LoadClient(
        {
            "url": f"http://127.0.0.1:{port}",
            "secret": "s" * 32,
            "seed": 1,
            "couriers": [],
            "watchers": [[0, 52.5, 13.4, 52.51, 13.41]],
            "compression": False,
        }
    )
    w = client.watchers[0]
    w.order_id, w.snapshot_id = "o1", "1-0"
    return client, w


OPENING = [
    {"type": "status", "id": "2-0", "status": "picked_up"},
    {"type": "position", "id": "3-0", "lat": 52.5, "lon": 13.4},
]
NO_COURIER = [  # an order nobody carries yet: route and eta frames, no status, no position
    {"type": "route", "id": "2-0", "stops": []},
    {"type": "eta", "id": "4-0", "pickup_eta": 1.0, "dropoff_eta": 2.0},
]


@pytest.mark.parametrize(
    ("frames", "expected", "errors"),
    [
        ([], (set(), None, False), {"verify_timeout": 1}),
        (OPENING, ({"2-0"}, "3-0", True), {}),
        (NO_COURIER, (set(), "4-0", True), {}),
    ],
)
def test_replay_reports_how_far_it_read(
    frames: list[dict[str, object]],
    expected: tuple[set[str], str | None, bool],
    errors: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replay says which status events the log holds and up to which id it read.
    A service too busy to start the replay in time leaves the order unverified (retried,
    then counted in neither), instead of reading as "nothing was logged, nothing can
    follow", which made every live status frame of the order look unexpected; a replay
    that stops after frames that are not statuses ends at their id, not at "nothing"."""
    import asyncio

    from websockets.asyncio.server import ServerConnection, serve

    import benchmarks.tracking_bench as tb

    monkeypatch.setattr(tb, "VERIFY_FIRST_FRAME_S", 0.3)

    async def handler(ws: ServerConnection) -> None:
        for f in frames:
            await ws.send(json.dumps(f))
        await asyncio.sleep(2)

    async def main() -> tuple[tuple[set[str], str | None, bool], dict[str, int]]:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            client, w = _replay_client(port)
            got = await client._verify_once(w)
            return got, dict(client.k.errors)

    assert asyncio.run(main()) == (expected, errors)


@pytest.mark.parametrize("workers", [1, 2])
def test_dispatcher_cpu_is_the_process_the_app_starts(workers: int) -> None:
    """``cpu_s.service_dispatcher``: the process the app starts (the dispatcher), not the
    processes that run the app. Two workers: top -> worker -> dispatcher; one worker
    (uvicorn runs the app in the serve process): top -> dispatcher. The app's process and
    the dispatcher each burn about half a second of CPU."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from benchmarks.tracking_bench import _dispatcher_cpu_s, _group_cpu_s

    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.5: pass\n"
    dispatcher = burn + "time.sleep(60)"
    app = (
        f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {dispatcher!r}])\n"
        + burn
        + "time.sleep(60)"
    )
    if workers == 1:
        top = app
    else:
        top = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {app!r}]).wait()"
    proc = subprocess.Popen([sys.executable, "-c", top], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            total, got = _group_cpu_s([proc.pid]), _dispatcher_cpu_s(proc.pid, workers)
            if got >= 0.5 and total - got >= 0.5:
                break
            time.sleep(0.1)
        assert 0.5 <= got < 1.0  # the dispatcher's burn and start-up only
        assert total - got >= 0.5  # the app's burn is not in it
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

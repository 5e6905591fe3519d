"""``o2o geo fuse`` and ``o2o geo learn`` as outside tools use them: files in, files out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h3
import numpy as np
import pytest
from typer.testing import CliRunner

from api.cli import app
from geo.coords import haversine_m
from geo.observations import observation_to_dict
from geo.synthetic import make_world, simulate_day, write_trace
from tests.api.conftest import one_line_error

runner = CliRunner()


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    world = make_world(3, size_m=1500, restaurants=6, buildings=30)
    trace = simulate_day(world, couriers=3, duration_s=600, seed=3, bad_rate=0.01)
    d = tmp_path_factory.mktemp("trace")
    obs_path, reg_path = write_trace(trace, world, d)
    with obs_path.open("a") as fh:
        fh.write("{this is not json\n")
    return obs_path, reg_path, len(trace.records)


def test_fuse_writes_one_estimate_per_accepted_observation(
    small_trace: tuple[Path, Path, int], tmp_path: Path
) -> None:
    obs_path, reg_path, n_records = small_trace
    out = tmp_path / "est.jsonl"
    r = runner.invoke(
        app,
        [
            "geo",
            "fuse",
            str(obs_path),
            "--registry",
            str(reg_path),
            "--out",
            str(out),
            "--resolution",
            "9",
        ],
    )
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    summary = json.loads(r.stderr.strip().splitlines()[-1].removeprefix("summary: "))
    rejected = sum(summary["rejected"].values())
    assert len(lines) == summary["estimates"]
    assert len(lines) + rejected == n_records + 1  # every record accounted for, + the bad line
    assert summary["rejected"]["malformed_json"] == 1
    assert f"{obs_path}:{n_records + 1}: malformed JSON" in r.stderr
    assert {"non_finite", "null_island"} & set(summary["rejected"])
    first = lines[0]
    assert {"device", "t", "lat", "lon", "radius68", "radius95", "h3", "sources", "indoor"} <= set(
        first
    )
    assert all(h3.get_resolution(e["h3"]) == 9 for e in lines)
    assert all(e["radius95"] > e["radius68"] > 0 for e in lines)


def test_fuse_to_stdout_without_registry_uses_gps_only(small_trace: tuple[Path, Path, int]) -> None:
    obs_path, _, _ = small_trace
    r = runner.invoke(app, ["geo", "fuse", str(obs_path)])
    assert r.exit_code == 0
    sources = {s for line in r.stdout.splitlines() for s in json.loads(line)["sources"]}
    assert sources == {"gps"}
    assert '"no_known_stations"' in r.stderr


def test_missing_files_give_a_clear_error(tmp_path: Path) -> None:
    r = runner.invoke(app, ["geo", "fuse", str(tmp_path / "nope.jsonl")])
    assert r.exit_code == 2
    assert "does not exist" in r.stderr
    bad_reg = tmp_path / "reg.json"
    bad_reg.write_text('{"wifi": [{"bssid": "x", "lat": 95, "lon": 0}]}')
    obs = tmp_path / "o.jsonl"
    obs.write_text("")
    r = runner.invoke(app, ["geo", "fuse", str(obs), "--registry", str(bad_reg)])
    assert r.exit_code == 2
    assert "wifi[0]" in r.stderr


def test_learned_registry_locates_a_wifi_only_phone_honestly(tmp_path: Path) -> None:
    """Crowd-source a registry from GPS-tagged scans, then locate phones with Wi-Fi only."""
    world = make_world(5, size_m=1200, restaurants=4, buildings=20)
    survey = simulate_day(world, couriers=6, duration_s=1800, seed=5, bad_rate=0.0)
    survey_path = tmp_path / "survey.jsonl"
    survey_path.write_text("".join(json.dumps(r) + "\n" for r in survey.records))
    learned = tmp_path / "learned.json"
    r = runner.invoke(app, ["geo", "learn", str(survey_path), "--out", str(learned)])
    assert r.exit_code == 0, r.output
    reg = json.loads(learned.read_text())
    assert len(reg["wifi"]) > 100

    # Another day, other couriers: only their Wi-Fi scans reach the locator.
    probe = simulate_day(world, couriers=3, duration_s=900, seed=99, bad_rate=0.0)
    wifi_only = [o for o in probe.observations if o.kind == "wifi"]
    probe_path = tmp_path / "probe.jsonl"
    probe_path.write_text("".join(json.dumps(observation_to_dict(o)) + "\n" for o in wifi_only))
    r = runner.invoke(app, ["geo", "fuse", str(probe_path), "--registry", str(learned)])
    assert r.exit_code == 0
    est = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(est) >= 0.9 * len(wifi_only)
    errors, r95 = [], []
    for e in est:
        tlat, tlon, _, _ = probe.truth[e["device"]].at(e["t"])
        errors.append(haversine_m(e["lat"], e["lon"], tlat, tlon))
        r95.append(e["radius95"])
    assert np.median(errors) < 40
    assert 0.85 <= np.mean(np.array(errors) <= np.array(r95)) <= 1.0
    assert all(e["sources"] == ["wifi"] for e in est)


O2O = Path(sys.executable).parent / "o2o"


@pytest.mark.skipif(not O2O.exists(), reason="console script not installed")
def test_console_script_runs(small_trace: tuple[Path, Path, int]) -> None:
    obs_path, reg_path, _ = small_trace
    p = subprocess.run(
        [str(O2O), "geo", "fuse", str(obs_path), "--registry", str(reg_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert p.stdout.count("\n") > 100
    assert "summary:" in p.stderr


@pytest.mark.parametrize("command", ["fuse", "learn"])
def test_a_failed_run_leaves_an_existing_out_file_alone(command: str, tmp_path: Path) -> None:
    out = tmp_path / "existing.jsonl"
    out.write_text("precious\n")
    r = runner.invoke(app, ["geo", command, str(tmp_path / "missing.jsonl"), "--out", str(out)])
    assert "does not exist" in one_line_error(r)
    assert out.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.jsonl"]


@pytest.mark.parametrize("command", ["fuse", "learn"])
@pytest.mark.parametrize(
    ("where", "says"), [("no/such/folder/x.json", "does not exist"), (".", "is a directory")]
)
def test_an_unwritable_out_is_aone_line_error(
    command: str, where: str, says: str, small_trace: tuple[Path, Path, int], tmp_path: Path
) -> None:
    obs_path, _, _ = small_trace
    r = runner.invoke(app, ["geo", command, str(obs_path), "--out", str(tmp_path / where)])
    assert says in one_line_error(r)
    assert list(tmp_path.iterdir()) == []


def test_fuse_replaces_out_whole_and_keeps_its_mode(
    small_trace: tuple[Path, Path, int], tmp_path: Path
) -> None:
    obs_path, reg_path, _ = small_trace
    out = tmp_path / "est.jsonl"
    out.write_text("old\n")
    out.chmod(0o640)
    r = runner.invoke(
        app, ["geo", "fuse", str(obs_path), "--registry", str(reg_path), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "old" not in out.read_text() and out.read_text().count("\n") > 100
    assert out.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["est.jsonl"]  # no temp file left


def test_inputs_that_are_not_files_are_named_for_what_they_are(tmp_path: Path) -> None:
    r = runner.invoke(app, ["geo", "fuse", str(tmp_path)])
    assert "is a directory" in one_line_error(r)
    r = runner.invoke(app, ["geo", "fuse", "/dev/null"])
    assert "is not a regular file" in one_line_error(r)
    obs = tmp_path / "o.jsonl"
    obs.write_text("")
    r = runner.invoke(app, ["geo", "fuse", str(obs), "--registry", str(tmp_path)])
    assert "registry" in one_line_error(r) and "is a directory" in r.stderr


@pytest.mark.parametrize("max_dt", ["-1", "0", "nan", "inf"])
def test_learn_needs_a_finite_positive_max_dt(max_dt: str, tmp_path: Path) -> None:
    obs = tmp_path / "o.jsonl"
    obs.write_text("")
    out = tmp_path / "reg.json"
    r = runner.invoke(app, ["geo", "learn", str(obs), "--out", str(out), "--max-dt", max_dt])
    assert "--max-dt" in one_line_error(r)
    assert not out.exists()

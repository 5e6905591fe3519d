"""``o2o solve`` as outside tools use it: a Li & Lim file in, one JSON object out."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from tests.api.conftest import one_line_error

TINY = Path(__file__).resolve().parents[1] / "dispatch" / "data" / "tiny_lilim.txt"
runner = CliRunner()


def _coords_and_tasks(path: Path) -> tuple[dict[int, tuple[float, float]], set[int]]:
    lines = path.read_text().split("\n")[1:]
    coords: dict[int, tuple[float, float]] = {}
    for line in lines:
        f = line.split()
        if len(f) >= 9:
            coords[int(f[0])] = (float(f[1]), float(f[2]))
    return coords, set(coords) - {0}


def test_solve_prints_routes_covering_every_task_and_the_true_distance() -> None:
    r = runner.invoke(app, ["solve", str(TINY), "--time-limit", "1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert {"vehicles", "distance", "routes", "unassigned"} <= set(out)
    coords, tasks = _coords_and_tasks(TINY)
    visited = [t for route in out["routes"] for t in route]
    assert len(visited) == len(set(visited))
    assert set(visited) == tasks and out["unassigned"] == []
    assert out["vehicles"] == len(out["routes"])
    dist = 0.0
    for route in out["routes"]:
        stops = [0, *route, 0]
        dist += sum(math.dist(coords[a], coords[b]) for a, b in itertools.pairwise(stops))
    assert math.isclose(out["distance"], dist, rel_tol=1e-9)


def test_solve_rejects_missing_and_malformed_files(tmp_path: Path) -> None:
    r = runner.invoke(app, ["solve", str(tmp_path / "none.txt")])
    assert r.exit_code == 2 and "does not exist" in r.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("not an instance\n")
    r = runner.invoke(app, ["solve", str(bad)])
    assert r.exit_code == 2 and "not a valid Li & Lim instance" in r.stderr


@pytest.mark.parametrize(
    ("option", "value"), [("--time-limit", "inf"), ("--time-limit", "1e400"), ("--seed", "-1")]
)
def test_solve_rejects_bad_options_as_option_errors(option: str, value: str) -> None:
    line = one_line_error(runner.invoke(app, ["solve", str(TINY), option, value]))
    assert option in line and "not a valid Li & Lim instance" not in line


def test_solve_names_what_a_non_file_instance_is(tmp_path: Path) -> None:
    assert "is a directory" in one_line_error(runner.invoke(app, ["solve", str(tmp_path)]))
    r = runner.invoke(app, ["solve", "/dev/null"])
    assert "is not a regular file" in one_line_error(r)


@pytest.mark.parametrize(
    "task1",
    [
        "1\t99999999999999999999\t68\t10\t0\t967\t90\t0\t2",  # overflows int64
        "1\t45\t68\t-10\t0\t967\t90\t11\t0",  # delivery of a pickup that does not exist
    ],
)
def test_solve_reports_a_bad_task_line_without_a_traceback(task1: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text(f"25\t200\t1\n0\t40\t50\t0\t0\t1236\t0\t0\t0\n{task1}\n")
    line = one_line_error(runner.invoke(app, ["solve", str(bad), "--time-limit", "0.5"]))
    assert "not a valid Li & Lim instance" in line and f"{bad}:3:" in line


def test_bench_dispatch_rejects_an_infinite_time_limit(tmp_path: Path) -> None:
    args = ["bench", "dispatch", "--time-limit", "inf", "--no-snapshots", "--json"]
    r = runner.invoke(app, [*args, "--lilim-dir", str(tmp_path / "none")])
    assert "--time-limit" in one_line_error(r)

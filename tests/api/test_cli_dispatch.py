"""``o2o solve`` as outside tools use it: a Li & Lim file in, one JSON object out."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

from typer.testing import CliRunner

from api.cli import app

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

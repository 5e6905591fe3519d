"""What-if sweeps: the grid, the scenario transforms, the runs and ``o2o sweep``."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from api.cli_sim import register
from simulations.scenarios import CityConfig, Scenario, ScenarioError, default_city, scale_city
from simulations.scenarios.city import Shift
from simulations.sweep import (
    AXES,
    SweepError,
    SweepGrid,
    SweepPoint,
    run_sweep,
    scale_city_fleet,
    scale_fleet,
    scale_prep,
)
from tests.simulations.conftest import TINY

app = typer.Typer()
bench = typer.Typer()
app.add_typer(bench, name="bench")
register(app, bench)
runner = CliRunner()


@pytest.fixture(scope="module")
def small_city() -> CityConfig:
    return scale_city(default_city(), 0.05)  # 100 orders, 16 couriers


def _strip_wall(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in runs]


# --------------------------------------------------------------------------- grid


def test_grid_parses_lists_and_orders_points() -> None:
    g = SweepGrid.parse(fleet="0.8, 1.2", tick="60,300", policy="greedy,bundling", seeds="0,1")
    assert g.fleet == (0.8, 1.2) and g.prep == (1.0,) and g.tick == (60.0, 300.0)
    assert g.policy == ("greedy", "bundling") and g.seed == (0, 1) and g.mode == "mdrp"
    points = g.points()
    assert len(points) == g.size == 16
    assert points[0] == SweepPoint(0.8, 1.0, 60.0, "greedy", 0)
    assert points[1] == SweepPoint(0.8, 1.0, 60.0, "greedy", 1)  # seed varies fastest
    assert points[-1] == SweepPoint(1.2, 1.0, 300.0, "bundling", 1)
    assert SweepGrid().size == 1 and SweepGrid.parse().points() == SweepGrid().points()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fleet": ""}, "fleet: empty list"),
        ({"fleet": "1,,2"}, "fleet: empty item"),
        ({"fleet": "0.5,abc"}, "fleet: 'abc' is not a number"),
        ({"fleet": "0,1"}, "fleet: a fleet scale must be > 0"),
        ({"prep": "-1"}, "prep: a preparation time scale must be > 0"),
        ({"prep": "nan"}, "prep: a preparation time scale must be > 0"),
        ({"tick": "0"}, "tick: a tick (seconds) must be > 0"),
        ({"tick": "60,0.5"}, "tick: a tick (seconds) must be >= 1, got 0.5"),
        ({"tick": "60,60.0"}, "tick: 60 is listed twice"),
        ({"policy": "greedy,magic"}, "unknown policy 'magic'"),
        ({"seeds": "1.5"}, "seeds: '1.5' is not a whole number"),
        ({"seeds": "-1"}, "seeds: seeds are whole numbers >= 0"),
        ({"mode": "fast"}, "mode: must be mdrp or free"),
    ],
)
def test_grid_errors(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(SweepError, match=re.escape(message)):
        SweepGrid.parse(**kwargs)


def test_grid_constructor_validates_too() -> None:
    with pytest.raises(SweepError, match="policy: empty list"):
        SweepGrid(policy=())
    with pytest.raises(SweepError, match="fleet: a fleet scale must be > 0"):
        SweepGrid(fleet=(1.0, -0.5))


# --------------------------------------------------------------------------- transforms


def test_scale_fleet_samples_and_duplicates(tiny: Scenario) -> None:
    ids = {c.id for c in tiny.couriers}
    half = scale_fleet(tiny, 0.5, seed=3)
    assert len(half.couriers) == 2 and {c.id for c in half.couriers} <= ids
    assert half.orders == tiny.orders
    assert scale_fleet(tiny, 0.5, seed=3) == half  # deterministic
    assert scale_fleet(tiny, 1.0) is tiny
    more = scale_fleet(tiny, 2.5, seed=1)
    assert len(more.couriers) == 8 and len({c.id for c in more.couriers}) == 8
    originals = {c.id: c for c in tiny.couriers}
    copies = [c for c in more.couriers if c.id not in ids]
    assert len(copies) == 5
    for c in copies:
        src = originals[c.id.split("~")[0]]
        assert (c.shift_start, c.shift_end) == (src.shift_start, src.shift_end)
        assert c.position.point != src.position.point  # jittered start
        assert c.position.id == src.position.id
    starts = [(c.shift_start, c.id) for c in more.couriers]
    assert starts == sorted(starts)
    with pytest.raises(SweepError):
        scale_fleet(tiny, 0.0)


def test_scale_prep_stretches_preparation(tiny: Scenario) -> None:
    slow = scale_prep(tiny, 2.0)
    for a, b in zip(tiny.orders, slow.orders, strict=True):
        assert b.placed_at == a.placed_at and b.id == a.id
        assert b.ready_at - b.placed_at == 2 * (a.ready_at - a.placed_at)
        assert b.ready_at % 60 == 0  # MDRP times stay whole minutes
    assert scale_prep(tiny, 1.0) is tiny


def test_scale_city_fleet_keeps_the_total_exact(small_city: CityConfig) -> None:
    total = small_city.fleet.couriers
    for f in (0.25, 0.5, 1.5, 2.0):
        scaled = scale_city_fleet(small_city, f)
        assert scaled.fleet.couriers == max(1, round(total * f))
        assert scaled.demand == small_city.demand
    assert scale_city_fleet(small_city, 0.001).fleet.couriers == 1


# --------------------------------------------------------------------------- runs


def test_tiny_mdrp_sweep_runs_in_grid_order() -> None:
    grid = SweepGrid.parse(fleet="0.5,2", prep="1,1.5", policy="greedy,bundling", seeds="0,1")
    result = run_sweep(TINY, grid)
    assert result.scenario == "tiny" and result.kind == "mdrp"
    assert len(result.runs) == 16
    assert [tuple(r[a] for a in AXES) for r in result.runs] == [
        (p.fleet, p.prep, p.tick, p.policy, p.seed) for p in grid.points()
    ]
    for r in result.runs:
        assert r["orders"] == 4 and r["violations"] == 0 and "c2d_mean" in r
        assert r["couriers"] == (2 if r["fleet"] == 0.5 else 6)
    assert len(result.summary) == 8
    first = result.summary[0]
    assert first["seeds"] == 2 and "seed" not in first
    runs = result.runs[:2]
    assert first["c2d_mean"] == pytest.approx((runs[0]["c2d_mean"] + runs[1]["c2d_mean"]) / 2)


def test_more_couriers_is_no_worse_in_a_small_city(small_city: CityConfig) -> None:
    grid = SweepGrid.parse(fleet="0.5,1.5", policy="greedy", seeds="0")
    result = run_sweep(small_city, grid)
    lean, rich = result.summary
    assert (lean["fleet"], rich["fleet"]) == (0.5, 1.5)
    assert (lean["couriers"], rich["couriers"]) == (8, 24)
    assert lean["orders"] == rich["orders"] == 100  # the fleet does not move the demand
    assert rich["c2d_mean"] <= lean["c2d_mean"]
    assert rich["late_share"] <= lean["late_share"]
    assert rich["delivered_share"] >= lean["delivered_share"]
    assert rich["violations"] == lean["violations"] == 0


def test_seeds_change_the_generated_day(small_city: CityConfig) -> None:
    result = run_sweep(small_city, SweepGrid.parse(policy="greedy", seeds="0,1"))
    a, b = _strip_wall(result.runs)
    assert a["seed"] == 0 and b["seed"] == 1
    assert a["c2d_mean"] != b["c2d_mean"]


def test_same_results_with_one_or_two_processes() -> None:
    grid = SweepGrid.parse(fleet="0.5,2", prep="1,1.5", policy="bundling", seeds="0,1")
    serial = run_sweep(TINY, grid, processes=1)
    calls: list[tuple[int, int]] = []
    parallel = run_sweep(TINY, grid, processes=2, progress=lambda d, t: calls.append((d, t)))
    assert _strip_wall(parallel.runs) == _strip_wall(serial.runs)
    assert calls == [(i, 8) for i in range(1, 9)]


# --------------------------------------------------------------------------- cli


def test_cli_writes_json_csv_and_html(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["sweep", str(TINY), "--fleet", "0.5,1,2", "--prep", "1,1.25"]
    args += ["--policy", "greedy,bundling", "--seeds", "0", "--processes", "1"]
    r = runner.invoke(app, [*args, "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert len(doc["runs"]) == 12 and len(doc["summary"]) == 12
    assert {"fleet", "prep", "tick", "policy", "seed", "c2d_mean"} <= set(doc["runs"][0])
    assert {p.name for p in out.iterdir()} == {"sweep.json", "sweep.csv", "sweep.html"}
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["runs"] == doc["runs"] and saved["grid"]["fleet"] == [0.5, 1.0, 2.0]
    with (out / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and rows[0]["policy"] == "greedy" and rows[-1]["fleet"] == "2.0"
    page = (out / "sweep.html").read_text()
    assert "<svg" in page and 'id="plot-c2d_mean"' in page and 'id="plot-cost_per_order"' in page
    assert not re.search(r"https?:", page)
    assert "<script" not in page


def test_cli_table_and_errors() -> None:
    r = runner.invoke(app, ["sweep", str(TINY), "--fleet", "0.5,1", "--policy", "greedy"])
    assert r.exit_code == 0, r.output
    assert "c2d mean" in r.stdout and "greedy" in r.stdout
    for args, message in [
        (["--fleet", "0,1"], "--fleet: a fleet scale must be > 0"),
        (["--policy", "magic"], "unknown policy 'magic'"),
        (["--seeds", ""], "--seeds: empty list"),
        (["--scale", "0.5"], "--scale applies to generated cities"),
    ]:
        r = runner.invoke(app, ["sweep", str(TINY), *args])
        assert r.exit_code == 2 and message in r.stderr, (args, r.output)
    r = runner.invoke(app, ["sweep", str(TINY.parent)])
    assert r.exit_code == 2 and "not a known scenario" in r.stderr


def test_city_errors_come_before_any_run(tmp_path: Path, small_city: CityConfig) -> None:
    bad = tmp_path / "outside.toml"
    bad.write_text("[area]\ncenter = [51.0, 8.25]\n", encoding="utf-8")
    r = runner.invoke(app, ["sweep", str(bad), "--policy", "greedy", "--processes", "1"])
    assert r.exit_code == 2, r.output
    assert r.stderr == f"o2o: error: {bad}: area.center: must lie inside the service area ring\n"
    crowded = replace(small_city, fleet=replace(small_city.fleet, shifts=(Shift(600, 1400, 6000),)))
    grid = SweepGrid.parse(fleet="1,2", policy="greedy")
    done: list[int] = []
    with pytest.raises(ScenarioError, match="at most 10,000 couriers"):
        run_sweep(crowded, grid, progress=lambda d, t: done.append(d))
    assert done == []  # not after the fleet 1 run (nor in a worker)


def test_cli_scaled_city(tmp_path: Path) -> None:
    city = tmp_path / "city.toml"
    city.write_text('name = "mini"\n[demand]\norders = 40\n', encoding="utf-8")
    r = runner.invoke(app, ["sweep", str(city), "--scale", "0.2", "--policy", "greedy", "--json"])
    assert r.exit_code == 0, r.output
    (run,) = json.loads(r.stdout)["runs"]
    assert run["orders"] == 8 and run["violations"] == 0

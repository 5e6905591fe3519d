"""``o2o simulate`` and ``o2o bench mdrp`` through a typer app of our own."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from api.cli_sim import register
from benchmarks.mdrp_bench import run
from simulations.scenarios import ScenarioError, load_scenario
from simulations.validate import validate_dir
from tests.simulations.conftest import TINY

app = typer.Typer()
bench = typer.Typer()
app.add_typer(bench, name="bench")
register(app, bench)
runner = CliRunner()


def test_simulate_json_and_out_dir(tmp_path: Path) -> None:
    r = runner.invoke(
        app, ["simulate", str(TINY), "--policy", "greedy", "--json", "--out", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["policy"] == "greedy" and doc["delivered"] == 3 and doc["violations"] == 0
    assert {p.name for p in tmp_path.iterdir()} == {
        "kpis.json", "report.html", "solution_info_assignments.txt",
        "solution_info_orders.txt", "solution_info_couriers.txt",
    }  # fmt: skip
    r = runner.invoke(app, ["simulate", str(TINY), "--mode", "free"])
    assert r.exit_code == 0, r.output
    assert "c2d_mean" in r.stdout


def test_simulate_errors() -> None:
    r = runner.invoke(app, ["simulate", str(TINY), "--policy", "magic"])
    assert r.exit_code == 2 and "unknown policy" in r.stderr
    r = runner.invoke(app, ["simulate", str(TINY.parent), "--policy", "greedy"])
    assert r.exit_code == 2 and "not a known scenario" in r.stderr
    r = runner.invoke(app, ["simulate", str(TINY), "--policy", "dispatcher"])
    assert r.exit_code == 2 and "--mode free only" in r.stderr


def test_generated_city_files_pass_the_validator_from_disk(tmp_path: Path) -> None:
    """What an independent evaluator reads: the files, not the run's in-memory rows."""
    args = ["simulate", "--scale", "0.05", "--json", "--out", str(tmp_path)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["violations"] == 0
    scenario = load_scenario(tmp_path / "city.toml")
    assert scenario.kind == "city" and len(scenario.orders) == 100
    assert validate_dir(scenario, tmp_path) == []


@pytest.mark.parametrize("command", ["simulate", "sweep"])
def test_out_must_be_a_folder_we_can_write(tmp_path: Path, command: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = [command, str(TINY), "--policy", "greedy", "--out"]
    for out, message in [
        (afile, "is a file, not a folder"),
        (afile / "sub", "cannot create the folder (Not a directory)"),
    ]:
        r = runner.invoke(app, [*args, str(out)])
        assert r.exit_code == 2 and r.stderr == f"o2o: error: --out {out}: {message}\n", r.output
    blocked = tmp_path / "out"
    (blocked / ("kpis.json" if command == "simulate" else "sweep.json")).mkdir(parents=True)
    r = runner.invoke(app, [*args, str(blocked)])
    assert r.exit_code == 2, r.output
    (line,) = r.stderr.strip().splitlines()  # one line, after the progress bar's
    assert line.startswith(f"o2o: error: cannot write {blocked}"), r.output


def test_bench_mdrp_malformed_instance_is_a_clean_error(tmp_path: Path) -> None:
    shutil.copytree(TINY, tmp_path / "a")  # sorts first: would run before "bad" is read
    d = tmp_path / "bad"
    shutil.copytree(TINY, d)
    with (d / "orders.txt").open("a") as fh:
        fh.write("o9\tabc\t0\t5\tr1\t20\n")
    message = f"{d / 'orders.txt'}:6: x 'abc' is not a number"
    r = runner.invoke(app, ["bench", "mdrp", str(tmp_path), "--processes", "1"])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == f"o2o: error: {message}"
    done: list[int] = []
    with pytest.raises(ScenarioError, match=re.escape(message)):
        run([tmp_path], ["greedy"], progress=lambda d, t: done.append(d))
    assert done == []  # found before any run, not mid-bench


def test_bench_mdrp_json() -> None:
    r = runner.invoke(app, ["bench", "mdrp", str(TINY.parent), "--json", "--processes", "1"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [(i["name"], i["policy"]) for i in doc["instances"]] == [
        ("tiny", "greedy"),
        ("tiny", "bundling"),
    ]
    agg = doc["aggregate"]["bundling"]
    assert agg["weighted"]["delivered_share"] == 0.75
    assert agg["weighted"]["c2d_mean"] == agg["unweighted"]["c2d_mean"] == 25.6667
    assert agg["violations"] == 0 and agg["courier_pay_total"] == 60.0


def test_bench_in_parallel_gives_the_same_records() -> None:
    serial = run([TINY], ["greedy", "bundling"], processes=1)
    parallel = run([TINY], ["greedy", "bundling"], processes=2)
    strip = [{k: v for k, v in rec.items() if k != "wall_s"} for rec in serial["instances"]]
    assert strip == [
        {k: v for k, v in rec.items() if k != "wall_s"} for rec in parallel["instances"]
    ]


def test_families_average_instances_by_name_parts() -> None:
    from benchmarks.mdrp_bench import FAMILY_KPIS, families

    def rec(name: str, c2d: float, policy: str = "ortools") -> dict[str, object]:
        return {"name": name, "policy": policy, "c2d_mean": c2d, "cost_per_order": None}

    records = [
        rec("0o100t75s1p100", 30.0),
        rec("0o50t75s2p125", 34.0),
        rec("4o100t100s1p100", 40.0),
        rec("4o100t100s1p100", 99.0, policy="greedy"),
        rec("tiny", 10.0),
    ]
    fam = families(records, "ortools")
    assert list(fam)[:2] == ["seed 0", "seed 4"]
    assert fam["seed 0"]["c2d_mean"] == 32.0 and fam["seed 0"]["instances"] == 2
    assert fam["o100"]["c2d_mean"] == 35.0 and fam["t75"]["c2d_mean"] == 32.0
    assert fam["p125"] == {**dict.fromkeys(FAMILY_KPIS), "instances": 1, "c2d_mean": 34.0}
    assert sum(f["instances"] for k, f in fam.items() if k.startswith("seed")) == 3

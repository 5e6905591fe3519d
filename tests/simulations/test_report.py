"""The HTML report (self-contained, all plots and maps) and ``o2o simulate`` writing it."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from api.cli_sim import register
from simulations.report import render_report, write_report
from simulations.run import RunResult, run_scenario
from simulations.scenarios import Scenario, generate_city, load_city, save_city, scale_city
from simulations.scenarios.city import CityConfig, default_city
from tests.simulations.conftest import TINY

PLOTS = ("plot-c2d", "plot-lateness", "plot-couriers", "plot-utilisation")
MAPS = ("map-demand", "map-routes")

app = typer.Typer()
bench = typer.Typer()
app.add_typer(bench, name="bench")
register(app, bench)
runner = CliRunner()


@pytest.fixture(scope="module")
def small_city() -> CityConfig:
    return scale_city(default_city(), 0.05)


@pytest.fixture(scope="module")
def city_run(small_city: CityConfig) -> tuple[RunResult, Scenario]:
    sc = generate_city(small_city)
    return run_scenario(sc, "bundling"), sc


def _svgs(text: str) -> dict[str, ET.Element]:
    """Every inline SVG, parsed as XML (so escaping mistakes fail), by id."""
    out = {}
    for chunk in re.findall(r"<svg\b.*?</svg>", text, flags=re.S):
        el = ET.fromstring(chunk)
        out[el.attrib["id"]] = el
    return out


def _assert_self_contained(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert "<img" not in text.lower() and "@import" not in text and "url(" not in text
    assert re.search(r"\b(src|href)\s*=", text) is None


def test_city_report_is_self_contained(
    city_run: tuple[RunResult, Scenario], small_city: CityConfig, tmp_path: Path
) -> None:
    result, sc = city_run
    path = write_report(
        result, sc, tmp_path / "deep" / "report.html", service_area=small_city.area.ring,
        h3_res=small_city.area.h3_res, max_routes=5,
    )  # fmt: skip
    text = path.read_text(encoding="utf-8")
    _assert_self_contained(text)
    assert text.startswith("<!doctype html>")
    svgs = _svgs(text)
    assert set(PLOTS + MAPS) <= set(svgs)
    for key in ("c2d_mean", "late_share", "utilisation", "cost_per_order"):
        assert f'data-kpi="{key}"' in text
    assert "H3 resolution 8" in text and sc.name in text
    # the histogram has bars, the maps have hexagons and at most 5 courier routes
    assert len(svgs["plot-c2d"].findall("rect")) > 5
    assert len(svgs["map-demand"].findall("path")) > 10
    routes = [p for p in svgs["map-routes"].findall("path") if p.get("stroke-width") == "1.7"]
    assert 1 <= len(routes) <= 5


def test_mdrp_report_uses_planar_hexes(tiny: Scenario) -> None:
    result = run_scenario(tiny, "greedy")
    text = render_report(result, tiny)
    _assert_self_contained(text)
    assert set(PLOTS + MAPS) <= set(_svgs(text))
    assert "planar hex cells" in text and "time since the start" in text


def test_report_of_a_day_without_couriers(small_city: CityConfig) -> None:
    config = scale_city(small_city, 0.1)
    sc = generate_city(config)
    no_one = Scenario(
        name="nobody", orders=sc.orders, couriers=(), restaurants=sc.restaurants,
        restaurant_of=sc.restaurant_of, params=sc.params, travel=sc.travel, kind="city",
    )  # fmt: skip
    result = run_scenario(no_one, "greedy")
    assert result.kpis["delivered"] == 0
    text = render_report(result, no_one, service_area=config.area.ring)
    assert set(PLOTS + MAPS) <= set(_svgs(text))
    assert "no order was delivered" in text and "no couriers" in text


def test_simulate_without_scenario_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = runner.invoke(app, ["simulate", "--scale", "0.05", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["scenario"] == "default-city" and doc["policy"] == "bundling"
    assert doc["orders"] == 100 and doc["violations"] == 0
    assert {"kpis.json", "report.html", "city.toml"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "kpis.json").read_text())["orders"] == 100
    assert f"report: {out / 'report.html'}" in r.stderr
    _assert_self_contained((out / "report.html").read_text(encoding="utf-8"))
    # the city it ran is saved and reproduces the same day
    again = runner.invoke(
        app, ["simulate", str(out / "city.toml"), "--json", "--out", str(tmp_path / "again")]
    )
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["c2d_mean"] == doc["c2d_mean"]


def test_simulate_a_city_file_and_options(tmp_path: Path, small_city: CityConfig) -> None:
    path = save_city(small_city, tmp_path / "town.toml")
    r = runner.invoke(
        app, ["simulate", str(path), "--city-seed", "3", "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 0, r.output
    assert "report:" in r.stdout and "c2d_mean" in r.stdout
    assert load_city(tmp_path / "o" / "city.toml").seed == 3
    r = runner.invoke(app, ["simulate", str(TINY), "--scale", "0.5"])
    assert r.exit_code == 2 and "generated cities" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[fleet]\nspeed_kmh = -1\n", encoding="utf-8")
    r = runner.invoke(app, ["simulate", str(bad)])
    assert r.exit_code == 2 and "fleet.speed_kmh" in r.stderr

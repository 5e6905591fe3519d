"""Reading MDRP instance directories: units, recognition, errors with file and line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from geo.travel import PlanarEuclideanModel
from simulations.scenarios import Scenario, ScenarioError, is_mdrp_dir, load_scenario, read_mdrp
from tests.simulations.conftest import TINY


def test_tiny_is_read_in_seconds(tiny: Scenario) -> None:
    assert is_mdrp_dir(TINY)
    assert [o.id for o in tiny.orders] == ["o1", "o2", "o3", "o4"]
    o1 = tiny.order_index["o1"]
    assert (o1.placed_at, o1.ready_at, o1.promised_by, o1.latest_by) == (300, 1200, 2700, 5700)
    assert o1.pickup.id == "r1" and o1.pickup.point == (0.0, 0.0)
    assert o1.dropoff.id == "o1" and o1.dropoff.point == (0.0, 600.0)
    assert o1.pickup_service_s == 240 and o1.status == "placed"
    c2 = tiny.courier_index["c2"]
    assert (c2.shift_start, c2.shift_end, c2.position.point) == (600, 4200, (1000.0, 500.0))
    assert tiny.params.target_c2d_s == 2400 and tiny.params.guaranteed_pay_per_hour == 15
    assert isinstance(tiny.travel, PlanarEuclideanModel)
    # 1118.03 m at 100 m/min: ceil(11.18) = 12 minutes
    assert tiny.travel.duration_matrix([(1000, 500)], [(0, 0)])[0, 0] == 720
    assert tiny.horizon_s == 160 * 60


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "inst"
    shutil.copytree(TINY, d)
    return d


def test_unknown_restaurant_names_file_and_line(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    text = (
        (d / "orders.txt").read_text().replace("o3\t1000\t1000\t20\tr2", "o3\t1000\t1000\t20\tr9")
    )
    (d / "orders.txt").write_text(text)
    with pytest.raises(ScenarioError, match=r"orders.txt:4: .*unknown restaurant r9"):
        read_mdrp(d)


def test_bad_header_and_number(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "couriers.txt").write_text("courier x y on off\n")
    with pytest.raises(ScenarioError, match=r"couriers.txt:1: header"):
        read_mdrp(d)
    d2 = tmp_path / "b"
    shutil.copytree(TINY, d2)
    (d2 / "restaurants.txt").write_text("restaurant\tx\ty\nr1\tzero\t0\nr2\t1\t1\n")
    with pytest.raises(ScenarioError, match=r"restaurants.txt:2: x 'zero'"):
        read_mdrp(d2)


def test_load_scenario_recognises_mdrp_dirs(tmp_path: Path) -> None:
    assert load_scenario(TINY).name == "tiny"
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path / "nope")
    with pytest.raises(ScenarioError, match="not a known scenario"):
        load_scenario(tmp_path)


def test_negative_pay_is_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    header = (d / "instance_parameters.txt").read_text().splitlines()[0]
    (d / "instance_parameters.txt").write_text(f"{header}\n100\t4\t4\t40\t90\t-10\t15\n")
    with pytest.raises(ScenarioError, match=r"instance_parameters.txt:2: pay per order .* >= 0"):
        read_mdrp(d)

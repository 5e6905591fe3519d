"""Li & Lim reader and benchmark entry points, on a tiny fixture and (when ../shared is
present) on the real lc101."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.lilim_bench import check_routes, run, solve_file
from dispatch.instances.lilim import LILIM_SCALE, read_bks, read_lilim, route_distance
from tests.conftest import SHARED_DATA

DATA = Path(__file__).parent / "data"
LILIM = SHARED_DATA / "lilim"
needs_shared = pytest.mark.skipif(not LILIM.is_dir(), reason="../shared/data/lilim absent")


def test_reader_on_tiny_fixture() -> None:
    inst = read_lilim(DATA / "tiny_lilim.txt")
    p = inst.problem
    assert inst.capacity == 20 and len(p.vehicles) == 3
    assert [(r.pickup, r.delivery, r.load) for r in p.requests] == [(1, 2, 5), (3, 4, 7), (5, 6, 4)]
    assert all(v.start == 0 and v.end == 0 for v in p.vehicles)
    # Scaled, rounded-up Euclidean: (10, 0) -> (0, 10) is 14.142... -> 14143.
    assert p.durations[1, 3] == 14143 and p.durations[0, 1] == 10 * LILIM_SCALE
    assert p.latest[0] == 200 * LILIM_SCALE and p.service[1] == LILIM_SCALE
    assert route_distance(inst.coords, [1, 2]) == pytest.approx(40.0)


def test_solve_file_on_tiny_fixture() -> None:
    res = solve_file(DATA / "tiny_lilim.txt", time_limit_s=1.0)
    assert res["vehicles"] == 1 and res["unassigned"] == []
    (route,) = res["routes"]
    assert sorted(route) == [1, 2, 3, 4, 5, 6]
    for pickup, delivery in ((1, 2), (3, 4), (5, 6)):
        assert route.index(pickup) < route.index(delivery)
    inst = read_lilim(DATA / "tiny_lilim.txt")
    assert res["distance"] == pytest.approx(route_distance(inst.coords, route))
    assert check_routes(inst, res["routes"], res["unassigned"]) == []


@needs_shared
def test_reader_on_lc101_and_bks() -> None:
    inst = read_lilim(LILIM / "instances" / "lc101.txt")
    p = inst.problem
    assert p.n_nodes == 107 and len(p.requests) == 53
    assert (3, 75) in {(r.pickup, r.delivery) for r in p.requests}
    assert len(p.vehicles) == 25 and inst.capacity == 200
    bks = read_bks(LILIM / "bks.csv")
    assert len(bks) == 56 and bks["lc101"].vehicles == 10
    assert bks["lc101"].distance == pytest.approx(828.94)


@needs_shared
def test_lc101_reaches_best_known_vehicles() -> None:
    res = run(LILIM / "instances", time_limit_s=2.0, names=["lc101"])
    (row,) = res["per_instance"]
    assert row["vehicles"] == row["bks_vehicles"] == 10 and not row["unassigned"]
    assert not row["infeasible"] and row["violations"] == []
    assert row["gap_pct"] < 1.0
    assert res["infeasible"] == 0 and res["count_vehicles_le_bks"] == 1


TINY_LINES = (DATA / "tiny_lilim.txt").read_text().splitlines()


@pytest.mark.parametrize(
    ("task", "fields", "at", "says"),
    [
        (2, "2 20 0 -5 0 150 1 9 0", 2, "task 2 names pickup 9, which does not exist"),
        (2, "2 20 0 -5 0 150 1 -1 0", 2, "task 2 names pickup -1, which does not exist"),
        (5, "5 -10 0 -5 0 100 1 1 0", 5, "delivery 5's pickup 1 does not name 5"),
        (4, "4 0 20 -7 20 150 1 1 0", 3, "pickup 3's delivery 4 does not name 3"),
        (1, "1 10 0 5 0 100 1 0 1", 1, "task 1 names itself as its delivery"),
        (5, "5 -10 0 4 0 100 1 0 0", 5, "must name exactly one of a pickup"),
        (5, "5 -10 0 4 0 100 1 6 6", 5, "must name exactly one of a pickup"),
        (0, "0 0 0 0 0 200 0 1 0", 0, "the depot (task 0) cannot name"),
        (2, "2 20 0 -6 0 150 1 1 0", 1, "pickup 1 and its delivery 2 disagree"),
        (1, "1 99999999999999999999 0 5 0 100 1 0 2", 1, "exceeds the limit"),
        (1, "1 10.5 0 5 0 100 1 0 2", 1, "field 2 is not an integer: '10.5'"),
        (1, "1 10 0 5 0 100 1 0", 1, "expected 9 integer fields, got 8"),
        (1, "2 10 0 5 0 100 1 0 2", 1, "expected task id 1"),
        (1, "1 10 0 5 0 100 1 0 2 extra", None, ""),  # extra fields are ignored
    ],
)
def test_reader_refuses_inconsistent_tasks_naming_the_line(
    task: int, fields: str, at: int | None, says: str, tmp_path: Path
) -> None:
    """A task's line is its id + 3 here (the header, a blank line, then the depot)."""
    lines = [TINY_LINES[0], "", *TINY_LINES[1:]]
    lines[task + 2] = fields.replace(" ", "\t")
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n")
    if at is None:
        assert len(read_lilim(path).problem.requests) == 3
        return
    with pytest.raises(ValueError, match=rf"^{re.escape(f'{path}:{at + 3}: ')}.*{re.escape(says)}"):
        read_lilim(path)


@needs_shared
def test_reader_refuses_a_truncated_lc101_and_accepts_every_real_instance(tmp_path: Path) -> None:
    head = (LILIM / "instances" / "lc101.txt").read_text().splitlines()[:3]
    path = tmp_path / "head3.txt"
    path.write_text("\n".join(head) + "\n")
    with pytest.raises(ValueError, match=rf"^{path}:3: task 1 names pickup 11, which does not"):
        read_lilim(path)
    files = sorted((LILIM / "instances").glob("*.txt"))
    assert len(files) == 56
    assert sum(len(read_lilim(f).problem.requests) for f in files) == 2904


def test_a_huge_vehicle_count_builds_no_more_vehicles_than_requests(tmp_path: Path) -> None:
    """K = 9,000,000 once meant nine million idle vehicles (minutes, gigabytes)."""
    f = tmp_path / "bigk.txt"
    f.write_text(
        "9000000\t200\t1\n0\t40\t50\t0\t0\t1236\t0\t0\t0\n"
        "1\t45\t68\t10\t0\t967\t90\t0\t2\n2\t45\t70\t-10\t0\t1000\t90\t1\t0\n"
    )
    inst = read_lilim(f)
    assert inst.max_vehicles == 9_000_000 and len(inst.problem.vehicles) == 1

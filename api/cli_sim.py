"""``o2o simulate`` and ``o2o bench mdrp``: the simulator from the shell.

:func:`register` adds the commands to the ``o2o`` app (``api/cli.py`` calls it). Heavy
packages are imported inside the commands so ``o2o --help`` stays fast. Errors the user
can fix exit with status 2 and one line on stderr; a run whose solution breaks an MDRP
rule (a simulator bug) prints the violations on stderr and exits with status 1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

__all__ = ["DEFAULT_MDRP_DIR", "register"]

DEFAULT_MDRP_DIR = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mdrp" / "instances"
)
"""``../shared/data/mdrp/instances`` relative to the repository root."""


def _fail(message: str) -> NoReturn:
    typer.echo(f"o2o: error: {message}", err=True)
    raise typer.Exit(2)


def _check_policy(name: str) -> None:
    from simulations.policies import PolicyUnavailable, make_policy

    try:
        make_policy(name)
    except PolicyUnavailable as e:
        _fail(str(e))


def _check_mode(mode: str) -> Any:
    if mode not in ("mdrp", "free"):
        _fail(f"--mode must be mdrp or free, got {mode!r}")
    return mode


def _table(title: str, rows: list[tuple[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in rows:
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


def simulate(
    scenario: Annotated[
        Path | None, typer.Argument(metavar="[SCENARIO]", help="an MDRP instance directory")
    ] = None,
    policy: Annotated[str, typer.Option(help="greedy | bundling | ortools")] = "bundling",
    mode: Annotated[str, typer.Option(help="mdrp (MDRP rules) | free (free routing)")] = "mdrp",
    out: Annotated[
        Path | None, typer.Option(help="write kpis.json and solution files here")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the policies' random generator")] = 0,
    tick: Annotated[float, typer.Option(min=1, help="dispatcher tick, seconds")] = 60.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the KPIs as one JSON object")
    ] = False,
) -> None:
    """Replay a delivery day under a dispatch policy; print its KPIs (minutes)."""
    if scenario is None:
        _fail(
            "no SCENARIO given: pass an MDRP instance directory (e.g. "
            f"{DEFAULT_MDRP_DIR}/0o50t75s1p100); the built-in generated city is not available yet"
        )
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from simulations.run import run_scenario
    from simulations.scenarios import ScenarioError, load_scenario

    _check_policy(policy)
    sim_mode = _check_mode(mode)
    try:
        sc = load_scenario(scenario)
    except ScenarioError as e:
        _fail(str(e))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[clock]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"{sc.name} {policy}", total=sc.horizon_s or 1.0, clock="")

        def progress(now: float, horizon: float) -> None:
            bar.update(
                task, completed=now, clock=f"{int(now // 3600):02d}:{int(now % 3600 // 60):02d}"
            )

        result = run_scenario(
            sc, policy, mode=sim_mode, seed=seed, out_dir=out, progress=progress, tick_s=tick
        )
    doc = {"scenario": sc.name, "policy": policy, "mode": mode, **result.kpis}
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        _table(f"o2o simulate {sc.name} --policy {policy} --mode {mode}", list(doc.items()))
    if result.violations:
        for v in result.violations[:20]:
            typer.echo(f"violation: {v}", err=True)
        typer.echo(
            f"o2o: {len(result.violations)} MDRP rule violations (a simulator bug)", err=True
        )
        raise typer.Exit(1)


def bench_mdrp(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[DIRS]...",
            help="instance directories or folders of them (default: all shared ones)",
        ),
    ] = None,
    policy: Annotated[
        list[str] | None,
        typer.Option(help="policy to run (repeatable; default greedy and bundling)"),
    ] = None,
    mode: Annotated[str, typer.Option(help="mdrp | free")] = "mdrp",
    processes: Annotated[
        int | None, typer.Option(min=1, help="parallel runs (default: CPU count)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON object only")] = False,
) -> None:
    """Replay MDRP instances under each policy; per-instance KPIs and aggregates."""
    from rich.console import Console
    from rich.progress import Progress

    from benchmarks.mdrp_bench import find_instances, run

    policies = policy or ["greedy", "bundling"]
    for p in policies:
        _check_policy(p)
    sim_mode = _check_mode(mode)
    paths = dirs or [DEFAULT_MDRP_DIR]
    if not find_instances(paths):
        _fail(f"no MDRP instance directories in {', '.join(map(str, paths))}")
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("bench mdrp", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = run(
            paths,
            policies,
            processes=processes or os.cpu_count() or 1,
            mode=sim_mode,
            progress=progress,
        )
    if as_json:
        typer.echo(json.dumps(result))
        return
    rows: list[tuple[str, Any]] = []
    for name, agg in result["aggregate"].items():
        for key, value in agg.items():
            if isinstance(value, dict):
                rows.extend((f"{name}.{key}.{k}", v) for k, v in value.items())
            else:
                rows.append((f"{name}.{key}", value))
    _table("o2o bench mdrp", rows)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add ``simulate`` to ``app`` and ``mdrp`` to ``bench_app``."""
    app.command("simulate")(simulate)
    bench_app.command("mdrp")(bench_mdrp)

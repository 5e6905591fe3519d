"""``o2o simulate``, ``o2o sweep`` and ``o2o bench mdrp``: the simulator from the shell.

``o2o simulate`` without a scenario generates the built-in default city
(``simulations/data/default_city.toml``) and writes ``kpis.json``, ``report.html``, the
solution files and the ``city.toml`` it ran into ``out/``; ``--out`` chooses another
folder (an MDRP directory writes files only with ``--out``, as before). ``o2o sweep``
replays a scenario over a grid of what-ifs (:mod:`simulations.sweep`) and prints the
comparison table; ``--out`` adds sweep.json, sweep.csv and sweep.html.

:func:`register` adds the commands to the ``o2o`` app (``api/cli.py`` calls it). Heavy
packages are imported inside the commands so ``o2o --help`` stays fast. Errors the user
can fix exit with status 2 and one line on stderr (``--out`` is created or refused
before the run, not after it); a run whose solution breaks an MDRP rule (a simulator
bug) prints the violations on stderr and exits with status 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

__all__ = ["DEFAULT_MDRP_DIR", "DEFAULT_OUT", "register"]

DEFAULT_MDRP_DIR = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mdrp" / "instances"
)
"""``../shared/data/mdrp/instances`` relative to the repository root."""
DEFAULT_OUT = "out"
"""Where ``o2o simulate`` writes a generated city's results when ``--out`` is not given."""


def _fail(message: str) -> NoReturn:
    typer.echo(f"o2o: error: {message}", err=True)
    raise typer.Exit(2)


def _make_out_dir(path: Path) -> None:
    """Create ``--out`` before the run: a bad folder fails at once, not after a long run."""
    if path.exists() and not path.is_dir():
        _fail(f"--out {path}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _fail(f"--out {path}: cannot create the folder ({e.strerror or e})")
    if not os.access(path, os.W_OK | os.X_OK):
        _fail(f"--out {path}: the folder is not writable")


def _write_failed(e: OSError, out: Path | None) -> NoReturn:
    """A full disk or a blocked file name in ``out``: one line, not a traceback."""
    _fail(f"cannot write {e.filename or out}: {e.strerror or e}")


def _check_policy(name: str, mode: str) -> None:
    from simulations.policies import PolicyUnavailable, make_policy
    from simulations.policy import policy_modes

    try:
        policy = make_policy(name)
    except PolicyUnavailable as e:
        _fail(str(e))
    modes = policy_modes(policy)
    if mode not in modes:
        _fail(f"policy {name} runs with --mode {' or '.join(modes)} only")


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
        Path | None,
        typer.Argument(
            metavar="[SCENARIO]",
            help="a city file (.toml) or an MDRP instance directory "
            "(default: the built-in generated city)",
        ),
    ] = None,
    policy: Annotated[
        str,
        typer.Option(
            help="greedy | bundling | ortools | ortools-prepos (with prepositioning) | "
            "ortools-updates (with assignment updates) | ortools-prepos-updates | "
            "dispatcher (the live service's dispatcher; --mode free)"
        ),
    ] = "bundling",
    mode: Annotated[str, typer.Option(help="mdrp (MDRP rules) | free (free routing)")] = "mdrp",
    out: Annotated[
        Path | None,
        typer.Option(
            help="write kpis.json, report.html and the solution files here "
            f"(default for a generated city: {DEFAULT_OUT}/)"
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the policies' random generator")] = 0,
    tick: Annotated[float, typer.Option(min=1, help="dispatcher tick, seconds")] = 60.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the KPIs as one JSON object")
    ] = False,
    city_seed: Annotated[
        int | None,
        typer.Option(help="seed of a generated city (default: the city file's own seed)"),
    ] = None,
    scale: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="generated city only: scale its orders and couriers (e.g. 0.1)"
        ),
    ] = None,
) -> None:
    """Replay a delivery day under a dispatch policy; print its KPIs (minutes), write a report.

    Without SCENARIO the built-in default city is generated and simulated, and
    kpis.json plus report.html land in out/ (see --out).
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from simulations.report import write_report
    from simulations.run import run_scenario
    from simulations.scenarios import (
        ScenarioError,
        default_city_path,
        generate_city,
        is_city_file,
        load_city,
        load_scenario,
        save_city,
        scale_city,
    )

    sim_mode = _check_mode(mode)
    _check_policy(policy, sim_mode)
    city = None
    try:
        if scenario is None or (is_city_file(scenario) and scenario.is_file()):
            path = default_city_path() if scenario is None else scenario
            city = load_city(path)
            if scale is not None:
                city = scale_city(city, scale)
            if city_seed is not None:
                city = replace(city, seed=city_seed)
            sc = generate_city(city, source=path)
            out = out if out is not None else Path(DEFAULT_OUT)
        else:
            if scale is not None or city_seed is not None:
                _fail("--scale and --city-seed apply to generated cities (.toml) only")
            sc = load_scenario(scenario)
    except ScenarioError as e:
        _fail(str(e))
    if out is not None:
        _make_out_dir(out)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[clock]}"),
        TimeElapsedColumn(),
    )
    report = None
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"{sc.name} {policy}", total=sc.horizon_s or 1.0, clock="")

            def progress(now: float, horizon: float) -> None:
                clock = f"{int(now // 3600):02d}:{int(now % 3600 // 60):02d}"
                bar.update(task, completed=now, clock=clock)

            result = run_scenario(
                sc, policy, mode=sim_mode, seed=seed, out_dir=out, progress=progress, tick_s=tick
            )
        if out is not None:
            report = write_report(
                result,
                sc,
                out / "report.html",
                service_area=city.area.ring if city is not None else None,
                h3_res=city.area.h3_res if city is not None else None,
            )
            if city is not None:
                save_city(city, out / "city.toml")
    except OSError as e:  # the only I/O here is writing into out/
        _write_failed(e, out)
    doc = {"scenario": sc.name, "policy": policy, "mode": mode, **result.kpis}
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        _table(f"o2o simulate {sc.name} --policy {policy} --mode {mode}", list(doc.items()))
    if report is not None:
        typer.echo(f"report: {report}", err=as_json)
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
    from simulations.scenarios import ScenarioError

    policies = policy or ["greedy", "bundling"]
    sim_mode = _check_mode(mode)
    for p in policies:
        _check_policy(p, sim_mode)
    paths = dirs or [DEFAULT_MDRP_DIR]
    if not find_instances(paths):
        _fail(f"no MDRP instance directories in {', '.join(map(str, paths))}")
    try:
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
    except ScenarioError as e:  # a malformed instance, found before any run
        _fail(str(e))
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


def sweep(
    scenario: Annotated[
        Path | None,
        typer.Argument(
            metavar="[SCENARIO]",
            help="a city file (.toml) or an MDRP instance directory "
            "(default: the built-in generated city)",
        ),
    ] = None,
    fleet: Annotated[
        str, typer.Option(help="fleet size scales, comma-separated (e.g. 0.8,1.0,1.2)")
    ] = "1.0",
    prep: Annotated[
        str, typer.Option(help="preparation time scales, comma-separated (e.g. 1.0,1.25)")
    ] = "1.0",
    tick: Annotated[
        str,
        typer.Option(help="dispatcher ticks in seconds (>= 1), comma-separated (e.g. 60,300)"),
    ] = "60",
    policy: Annotated[
        str,
        typer.Option(
            help="policies, comma-separated: greedy | bundling | ortools | ortools-prepos | "
            "ortools-updates | ortools-prepos-updates | dispatcher (--mode free)"
        ),
    ] = "bundling",
    seeds: Annotated[
        str,
        typer.Option(help="seeds, comma-separated; a generated city also varies its day"),
    ] = "0",
    mode: Annotated[str, typer.Option(help="mdrp (MDRP rules) | free (free routing)")] = "mdrp",
    processes: Annotated[
        int | None,
        typer.Option(min=1, help="parallel runs (default: CPU count, at most the grid size)"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="write sweep.json, sweep.csv and sweep.html (plots) here"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='print {"runs": [...], "summary": [...]} as JSON')
    ] = False,
    scale: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="generated city only: scale its orders and couriers first (e.g. 0.1)"
        ),
    ] = None,
) -> None:
    """What-if sweep: replay a scenario over a grid of fleet size, preparation time,
    dispatch tick, policy and seed; compare the KPIs (means over seeds).

    Fleet scale resizes a city's shift blocks, or samples (< 1) or duplicates (> 1,
    jittered starts) an MDRP instance's couriers. Prep scale stretches ready - placed.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Table

    from simulations.scenarios import (
        ScenarioError,
        default_city_path,
        is_city_file,
        load_city,
        scale_city,
    )
    from simulations.sweep import (
        SUMMARY_COLUMNS,
        ScenarioSource,
        SweepError,
        SweepGrid,
        fmt_value,
        resolve_source,
        run_sweep,
    )

    try:
        grid = SweepGrid.parse(fleet, prep, tick, policy, seeds, mode)
    except SweepError as e:
        _fail(f"--{e}")
    try:
        src: ScenarioSource = scenario
        if scale is not None:
            if scenario is not None and not (is_city_file(scenario) and scenario.is_file()):
                _fail("--scale applies to generated cities (.toml) only")
            src = scale_city(load_city(scenario or default_city_path()), scale)
        source = resolve_source(src)
    except ScenarioError as e:
        _fail(str(e))
    if out is not None:
        _make_out_dir(out)
    n = processes or min(os.cpu_count() or 1, grid.size)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"sweep {source.name}", total=grid.size)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = run_sweep(source, grid, processes=n, progress=progress)
    except ScenarioError as e:  # a fleet scale past the city's limits, before any run
        _fail(str(e))
    if out is not None:
        try:
            paths = result.write(out)
        except OSError as e:
            _write_failed(e, out)
        typer.echo(f"sweep: {paths['html']}", err=True)
    if as_json:
        typer.echo(json.dumps({"runs": result.runs, "summary": result.summary}))
    else:
        table = Table(title=f"o2o sweep {result.scenario} ({grid.mode}): means over seeds")
        for name in ("fleet", "prep", "tick s", "policy", "seeds"):
            table.add_column(name, justify="left" if name == "policy" else "right", no_wrap=True)
        for _, label, _ in SUMMARY_COLUMNS:
            table.add_column(label, justify="right", no_wrap=True)
        console = Console()
        if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
            console = Console(width=max(console.width, 160))
        for r in result.summary:
            cells = [f"{r['fleet']:g}", f"{r['prep']:g}", f"{r['tick']:g}", r["policy"]]
            cells.append(str(r["seeds"]))
            cells += [fmt_value(r.get(k), kind) for k, _, kind in SUMMARY_COLUMNS]
            table.add_row(*cells)
        console.print(table)
    bad = sum(int(r.get("violations") or 0) for r in result.runs)
    if bad:
        typer.echo(f"o2o: {bad} MDRP rule violations across the runs (a simulator bug)", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add ``simulate`` and ``sweep`` to ``app`` and ``mdrp`` to ``bench_app``."""
    app.command("simulate")(simulate)
    app.command("sweep")(sweep)
    bench_app.command("mdrp")(bench_mdrp)

"""The ``o2o`` command line.

Commands import their packages lazily so that ``o2o --help`` stays fast. Errors the
user can fix (missing files, bad registry) exit with status 2 and a one-line message on
stderr; data problems inside a file are reported per line and never abort a run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from api.bench_ingest import register as register_ingest_bench
from api.cli_bench_tracking import register as register_tracking_bench
from api.cli_demo import register as register_demo_command
from api.cli_serve import register as register_service_commands
from api.cli_sim import register as register_simulation_commands

app = typer.Typer(
    name="o2o",
    help="O2O location and delivery dispatch platform.",
    no_args_is_help=True,
    add_completion=False,
)
geo_app = typer.Typer(help="Positioning: fuse phone signals, learn station registries.")
bench_app = typer.Typer(help="Reproducible benchmarks that print one JSON object.")
app.add_typer(geo_app, name="geo")
app.add_typer(bench_app, name="bench")
register_simulation_commands(app, bench_app)
register_service_commands(app)
register_demo_command(app)
register_tracking_bench(bench_app)
register_ingest_bench(bench_app)


def _fail(message: str) -> NoReturn:
    typer.echo(f"o2o: error: {message}", err=True)
    raise typer.Exit(2)


def _load_registry(path: Path | None) -> Any:
    from geo.registry import Registry, RegistryError

    if path is None:
        return Registry()
    _check_input(path, "registry")
    try:
        return Registry.load(path)
    except (RegistryError, OSError) as e:
        _fail(f"registry {path}: {e}")


def _check_input(path: Path, what: str) -> None:
    """Fail unless ``path`` is a readable regular file, saying what it is otherwise."""
    if path.is_dir():
        _fail(f"{what} {path} is a directory")
    if path.exists() and not path.is_file():
        _fail(f"{what} {path} is not a regular file")
    if not path.exists():
        _fail(f"{what} {path} does not exist")
    try:
        path.open("rb").close()
    except OSError as e:
        _fail(f"{what} {path}: {e.strerror or e}")


def _check_positive(value: float, option: str) -> None:
    """Typer's ``min=`` lets ``inf`` and ``nan`` through; they crash the engines later."""
    if not (math.isfinite(value) and value > 0):
        _fail(f"{option} must be a finite number > 0, got {value}")


@contextlib.contextmanager
def _replacing(out: Path, stream: bool = False) -> Iterator[Path]:
    """A fresh temp path beside ``out`` that replaces ``out`` only if the body succeeds.

    So a failed or interrupted run never truncates or half-writes an existing file.
    Checked before any work, so a bad ``--out`` fails fast with one line. A device or
    pipe (``/dev/stdout``) must not be renamed over: with ``stream`` (the body opens the
    path once for writing) it is yielded as is, else refused.
    """
    target = Path(os.path.realpath(out))
    if target.is_dir():
        _fail(f"--out {out} is a directory")
    if target.exists() and not target.is_file():
        if not stream:
            _fail(f"--out {out} is not a regular file")
        yield target
        return
    if not target.parent.is_dir():
        gone = "is not a directory" if target.parent.exists() else "does not exist"
        _fail(f"--out {out}: {target.parent} {gone}")
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as e:
        _fail(f"cannot write --out {out}: {e.strerror or e}")
    try:
        yield tmp
        if target.exists():
            tmp.chmod(target.stat().st_mode & 0o7777)  # as writing in place would keep it
        tmp.replace(target)
    except OSError as e:  # e.g. disk full
        tmp.unlink(missing_ok=True)
        _fail(f"--out {out} not written: {e.strerror or e}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_jsonl(path: Path, bad: Counter[str]) -> Any:
    """Yield (line number, parsed object) for each line; report malformed lines."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                bad["malformed_json"] += 1
                typer.echo(f"{path}:{n}: malformed JSON ({e.msg}); skipped", err=True)


@geo_app.command("fuse")
def geo_fuse(
    observations: Annotated[Path, typer.Argument(help="OBSERVATIONS.jsonl")],
    registry: Annotated[
        Path | None, typer.Option(help="REGISTRY.json with Wi-Fi, beacon and cell stations")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="ESTIMATES.jsonl (default: stdout)")] = None,
    resolution: Annotated[int, typer.Option(min=0, max=15, help="H3 resolution")] = 10,
) -> None:
    """Fuse recorded observations into one estimate per accepted observation."""
    from geo.fusion import FusionConfig, FusionEngine, Rejected

    _check_input(observations, "observations file")
    engine = FusionEngine(_load_registry(registry), FusionConfig(resolution=resolution))
    bad: Counter[str] = Counter()
    written = 0
    with contextlib.ExitStack() as stack:
        sink = sys.stdout
        if out is not None:
            sink = stack.enter_context(stack.enter_context(_replacing(out, stream=True)).open("w"))
        for n, record in _read_jsonl(observations, bad):
            result = engine.process_dict(record)
            if isinstance(result, Rejected):
                if result.reason not in ("duplicate", "out_of_order", "gated_outlier"):
                    typer.echo(
                        f"{observations}:{n}: rejected ({result.reason}) {result.message}",
                        err=True,
                    )
                continue
            sink.write(json.dumps(result.to_dict()) + "\n")
            written += 1
    rejected = Counter(engine.rejected) + bad
    summary = {
        "estimates": written,
        "rejected": dict(rejected),
        "unknown_stations": dict(engine.unknown_stations),
        "excluded_stations": dict(engine.excluded_stations),
        "reinitialised": engine.reinitialised,
    }
    typer.echo(f"summary: {json.dumps(summary)}", err=True)


@geo_app.command("learn")
def geo_learn(
    observations: Annotated[Path, typer.Argument(help="OBSERVATIONS.jsonl with GPS fixes")],
    out: Annotated[Path, typer.Option(help="REGISTRY.json to write")],
    registry: Annotated[
        Path | None, typer.Option(help="existing REGISTRY.json to merge with")
    ] = None,
    max_dt: Annotated[float, typer.Option(help="max seconds between scan and GPS fix")] = 2.0,
) -> None:
    """Learn Wi-Fi and beacon positions from GPS-tagged scans, as crowd-sourcing does."""
    from geo.errors import InvalidObservation
    from geo.learn import learn_registry
    from geo.observations import Observation, observation_from_dict

    _check_positive(max_dt, "--max-dt")
    _check_input(observations, "observations file")
    existing = _load_registry(registry) if registry is not None else None
    with _replacing(out) as tmp:
        bad: Counter[str] = Counter()
        obs: list[Observation] = []
        for n, record in _read_jsonl(observations, bad):
            try:
                obs.append(observation_from_dict(record))
            except InvalidObservation as e:
                bad[e.reason] += 1
                typer.echo(f"{observations}:{n}: rejected ({e.reason}) {e}", err=True)
        result = learn_registry(obs, existing, max_dt=max_dt)
        result.registry.save(tmp)
    typer.echo(
        f"summary: {json.dumps({'rejected': dict(bad), **result.stats.as_dict()})}", err=True
    )


@bench_app.command("geo")
def bench_geo(
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON object only")] = False,
    couriers: Annotated[int, typer.Option(min=1, help="simulated couriers")] = 100,
    duration: Annotated[float, typer.Option(min=60, help="simulated seconds")] = 3600.0,
    seed: Annotated[int, typer.Option(help="seed of world and day")] = 7,
    latency_samples: Annotated[int, typer.Option(min=100)] = 20_000,
) -> None:
    """Accuracy, calibration, H3 and geofence quality, throughput and latency of fusion."""
    from benchmarks.geo_bench import run

    result = run(couriers=couriers, duration_s=duration, seed=seed, latency_samples=latency_samples)
    _print_result(result, "o2o bench geo", as_json)


@app.command("solve")
def solve_instance(
    instance: Annotated[Path, typer.Argument(help="a Li & Lim PDPTW instance file")],
    time_limit: Annotated[float, typer.Option(min=0.1, help="seconds")] = 10.0,
    seed: Annotated[int, typer.Option(help="seed of the search")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON object only")] = False,
) -> None:
    """Solve a static pickup-and-delivery batch (Li & Lim format) with the OR-Tools engine.

    Prints vehicles, distance (unrounded Euclidean, recomputed from the routes), routes
    (task ids in visiting order, depot excluded) and unassigned tasks.
    """
    from benchmarks.lilim_bench import solve_file
    from dispatch.problem import ProblemError

    _check_positive(time_limit, "--time-limit")
    if seed < 0:
        _fail(f"--seed must be >= 0, got {seed}")
    _check_input(instance, "instance")
    try:
        result = solve_file(instance, time_limit, seed)
    except (ProblemError, ValueError, IndexError) as e:
        _fail(f"{instance}: not a valid Li & Lim instance ({e})")
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"{instance.name}: {result['vehicles']} vehicles, distance {result['distance']:.2f}, "
        f"{len(result['unassigned'])} unassigned"
    )
    for i, route in enumerate(result["routes"], 1):
        typer.echo(f"  route {i}: {' '.join(map(str, route))}")


@bench_app.command("dispatch")
def bench_dispatch(
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON object only")] = False,
    time_limit: Annotated[
        float, typer.Option(min=0.1, help="seconds per Li & Lim instance")
    ] = 10.0,
    limit: Annotated[int | None, typer.Option(help="only the first N Li & Lim instances")] = None,
    peers: Annotated[bool, typer.Option(help="also run VROOM and PyVRP when installed")] = True,
    snapshots: Annotated[bool, typer.Option(help="run the live re-planning snapshots")] = True,
    lilim_dir: Annotated[Path | None, typer.Option(help="Li & Lim instances folder")] = None,
) -> None:
    """Li & Lim quality (ours and peers) and live re-planning latency of dispatch."""
    from benchmarks import dispatch_bench, lilim_bench

    _check_positive(time_limit, "--time-limit")
    folder = lilim_dir or lilim_bench.DEFAULT_DIR
    result: dict[str, Any] = {}
    if folder.is_dir():
        if peers:
            result.update(lilim_bench.run_all(folder, time_limit, limit))
        else:
            result["lilim"] = lilim_bench.run(folder, time_limit, limit)
    else:
        typer.echo(f"o2o: {folder} not found: Li & Lim part skipped", err=True)
    if snapshots:
        result.update(dispatch_bench.run())
    _print_result(result, "o2o bench dispatch", as_json)


def _print_result(result: dict[str, Any], title: str, as_json: bool) -> None:
    """A benchmark's result: one JSON object, or a table of its scalar leaves."""
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in _flatten(result):
        if "per_instance" not in key:
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows.extend(_flatten(v, f"{prefix}{k}."))
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


if __name__ == "__main__":
    app()

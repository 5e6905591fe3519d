"""``o2o bench tracking``: the live service under simulated couriers and customers.

:func:`register` adds the command to the ``bench`` group (``api/cli.py`` calls it). The
work is in :mod:`benchmarks.tracking_bench`; this module only parses options and prints.
Run it before it is wired into ``o2o`` with ``python -m api.cli_bench_tracking --json``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer

__all__ = ["SMOKE", "bench_tracking", "register"]

SMOKE = {"couriers": 20, "watchers": 40, "duration": 5.0}
"""Sizes of ``--smoke`` (what CI runs)."""


def _fail(message: str) -> NoReturn:
    typer.echo(f"o2o: error: {message}", err=True)
    raise typer.Exit(2)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


def bench_tracking(
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON object only")] = False,
    couriers: Annotated[
        int | None, typer.Option(min=1, help="couriers posting at 1 Hz [default: 2000]")
    ] = None,
    watchers: Annotated[
        int | None, typer.Option(min=0, help="customers on websockets [default: 5000]")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=1, help="measured seconds per run [default: 60]")
    ] = None,
    configs: Annotated[
        str, typer.Option(help="store:workers runs, comma-separated (memory:1, redis:N)")
    ] = "memory:1,redis:2",
    clients: Annotated[
        int | None, typer.Option(min=1, help="load-generator processes [default: by size]")
    ] = None,
    deliveries: Annotated[
        float, typer.Option(min=0, max=1, help="share of orders picked up and delivered")
    ] = 0.1,
    position_interval: Annotated[
        float | None,
        typer.Option(min=0, help="O2O_POSITION_INTERVAL_S for the service [default: its own]"),
    ] = None,
    compression: Annotated[
        bool,
        typer.Option(
            help="the service accepts permessage-deflate (o2o serve --ws-compression); "
            "the clients always offer it, as browsers do"
        ),
    ] = False,
    appendfsync: Annotated[str, typer.Option(help="Redis AOF fsync policy")] = "always",
    redis_max_connections: Annotated[
        int | None,
        typer.Option(min=1, help="the service's Redis pool per worker [default: 64]"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the city and the schedules")] = 0,
    smoke: Annotated[
        bool, typer.Option(help="small sizes (20 couriers, 40 watchers, 5 s) unless given")
    ] = False,
    work_dir: Annotated[
        Path | None, typer.Option(help="keep the service, Redis and client logs here")
    ] = None,
) -> None:
    """Couriers posting at 1 Hz and customers on websockets against `o2o serve`:
    observations per second, courier-to-customer latency, status events sent vs
    received, errors; one entry per store/workers configuration."""
    from benchmarks.tracking_bench import parse_configs, run

    if appendfsync not in ("always", "everysec", "no"):
        _fail("--appendfsync must be always, everysec or no")
    try:
        cfgs = parse_configs(configs)
    except ValueError as e:
        _fail(f"--configs: {e}")
    sizes: dict[str, Any] = {
        "couriers": 2000,
        "watchers": 5000,
        "duration": 60.0,
        **(SMOKE if smoke else {}),
    }
    for key, value in (("couriers", couriers), ("watchers", watchers), ("duration", duration)):
        if value is not None:
            sizes[key] = value

    if threading.current_thread() is threading.main_thread():
        # A plain `kill` must still stop the service, Redis and the load clients.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def progress(line: str) -> None:
        typer.echo(f"o2o bench tracking: {line}", err=True)  # stderr: --json stays clean

    try:
        result = run(
            cfgs,
            couriers=int(sizes["couriers"]),
            watchers=int(sizes["watchers"]),
            duration_s=float(sizes["duration"]),
            clients=clients,
            deliveries=deliveries,
            position_interval_s=position_interval,
            compression=compression,
            appendfsync=appendfsync,
            seed=seed,
            work_dir=work_dir,
            redis_max_connections=redis_max_connections,
            progress=progress,
        )
    except (RuntimeError, ValueError) as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(result))
        return
    _table(result)


def _table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="o2o bench tracking")
    columns = "store wrk couriers watchers obs/s p50_ms p99_ms status_sent received errors"
    for column in columns.split():
        table.add_column(column, justify="right")
    for r in result["runs"]:
        table.add_row(
            r["store"],
            str(r["workers"]),
            str(r["couriers"]),
            str(r["watchers"]),
            f"{r['obs_per_s']:.1f}",
            str(r["latency_ms"]["p50"]),
            str(r["latency_ms"]["p99"]),
            str(r["status_sent"]),
            str(r["status_received"]),
            str(r["errors"]),
        )
    console = Console()
    console.print(table)
    m = result["machine"]
    console.print(f"machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}")
    for r in result["runs"]:
        if r["error_kinds"]:
            console.print(f"{r['store']}:{r['workers']} errors: {r['error_kinds']}")


def register(bench_app: typer.Typer) -> None:
    """Add ``tracking`` to the ``o2o bench`` group."""
    bench_app.command("tracking")(bench_tracking)


if __name__ == "__main__":  # before api/cli.py registers it: one-command app
    _app = typer.Typer(add_completion=False)
    register(_app)
    _app()

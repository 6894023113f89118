"""`skylane worker start`: the fallback pull worker (see skylane.worker)."""

from __future__ import annotations

import logging
import threading
from typing import Annotated

import typer

from . import output
from .common import load_settings, make_client
from .server import LogLevel

app = typer.Typer(
    help="Pull workers: run a pool's runs from where push cannot reach.", no_args_is_help=True
)


def run_worker(
    pool: str,
    *,
    name: str | None,
    limit: int | None,
    prefetch: float,
    run_once: bool,
    log_level: str,
) -> None:
    """Register, then work until SIGINT or SIGTERM (or one pass with `run_once`)."""
    from skylane.signals import stop_on_signals
    from skylane.worker import Worker, WorkerOptions, default_worker_name

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    settings = load_settings()
    options = WorkerOptions(
        pool=pool, name=name or default_worker_name(), limit=limit, prefetch_seconds=prefetch
    )
    with make_client(settings) as client:
        worker = Worker(client, options, settings)
        worker.register()  # refuses a push pool without fallback, saying why
        if run_once:
            worker.run_once()
            return
        with stop_on_signals(threading.Event()) as stop:
            worker.start()
            output.print_text(worker.describe(), err=True)
            try:
                stop.wait()
            finally:
                output.print_text(
                    f"worker {options.name} stopping: handing back claims not yet submitted",
                    err=True,
                )
                worker.stop()


@app.command()
def start(
    pool: Annotated[str, typer.Option("--pool", help="The pool to take runs of.")],
    name: Annotated[
        str | None,
        typer.Option(help="Unique name in the pool (default: HOSTNAME-PID)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Most runs of this worker active at once (default: no cap)."),
    ] = None,
    prefetch: Annotated[
        float,
        typer.Option(
            min=0,
            max=3600,
            metavar="SECONDS",
            help="Claim runs scheduled up to this far ahead, so they start on time.",
        ),
    ] = 10.0,
    run_once: Annotated[
        bool,
        typer.Option(
            "--run-once", help="Claim and submit what is due once, check its runs once, exit."
        ),
    ] = False,
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False)] = LogLevel.INFO,
) -> None:
    """Take runs of a pull pool (process, ecs, cloud-run, aci), or of a push pool with
    fallback on, and run them with this machine's credentials. Stops cleanly on SIGTERM:
    claims not submitted yet go back to the pool for other workers."""
    run_worker(
        pool, name=name, limit=limit, prefetch=prefetch, run_once=run_once, log_level=log_level
    )

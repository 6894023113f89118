"""`skylane server`: initialise the database and run the control plane."""

from __future__ import annotations

import copy
import enum
import gc
import logging
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from skylane.errors import ConfigurationError
from skylane.models import ApiScope
from skylane.settings import DEFAULT_PORT, Settings

if TYPE_CHECKING:  # the server stack is imported only by the commands that run it
    from skylane.store.repository import Store

from . import output
from .common import Output, OutputOption, load_settings

app = typer.Typer(
    help="Run the control plane: API, dispatcher and reconciler.", no_args_is_help=True
)


class LogLevel(enum.StrEnum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="Database URL (sqlite:///path or postgresql://...); default: "
        "SKYLANE_DATABASE_URL, else a SQLite file in the data directory.",
    ),
]


def open_store(url: str) -> Store:
    """A store on a migrated database."""
    import sqlalchemy as sa

    from skylane.store import create_engine_for, migrate
    from skylane.store.db import redacted_url
    from skylane.store.repository import Store

    engine = create_engine_for(url)
    try:
        migrate(engine)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise ConfigurationError(
            f"cannot open the database {redacted_url(engine)}: {reason}", field="--db"
        ) from exc
    return Store(engine)


@app.command()
def init(
    db: DbOption = None,
    new_admin_key: Annotated[
        bool, typer.Option("--new-admin-key", help="Create another admin key even if one exists.")
    ] = False,
    output_format: OutputOption = Output.TABLE,
) -> None:
    """Create or upgrade the database and, the first time, an admin API key (shown once)."""
    settings = load_settings(database_url=db)
    store = open_store(settings.resolved_database_url)
    database = store.engine.url.render_as_string(hide_password=True)
    try:
        key = None
        if new_admin_key or not store.has_admin_key():
            _, key = store.create_api_key(name="admin", scopes=[ApiScope.ADMIN])
    finally:
        store.engine.dispose()
    if output_format is Output.JSON:
        output.print_json({"api_key": key, "database": database})
        return
    typer.echo(f"database ready: {database}")
    if key is None:
        typer.echo(
            "The database is already initialised and has an admin key; no new key was "
            "created (--new-admin-key makes another)."
        )
        return
    typer.echo("\nAdmin API key (shown only this once; store it now):\n")
    typer.echo(f"    {key}\n")
    typer.echo("Use it with `skylane config set api-key KEY`, or export SKYLANE_API_KEY=KEY.")


def _uvicorn_log_config(level: str) -> dict:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["skylane"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def _run_background_only(names: list[str], store: Store, settings: Settings, level: str) -> None:
    """Run background services without the API until SIGINT or SIGTERM."""
    from skylane.services.background import start_services, stop_services
    from skylane.signals import stop_on_signals

    logging.basicConfig(level=level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    with stop_on_signals(threading.Event()) as stop:
        started = start_services(names, store, settings)
        try:
            stop.wait()
        finally:
            output.print_text(f"stopping: {', '.join(names)}", err=True)
            stop_services(started)


@app.command()
def start(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help=f"Port to listen on (default: {DEFAULT_PORT})."),
    ] = None,
    db: DbOption = None,
    services: Annotated[
        str,
        typer.Option(
            help="Comma-separated services to run: api, scheduler, dispatcher, reconciler. Run "
            "any subset per process; several of each may share one PostgreSQL."
        ),
    ] = "api,scheduler,dispatcher,reconciler",
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False)] = LogLevel.INFO,
) -> None:
    """Run the control plane (migrates the database first). Stops cleanly on SIGINT/SIGTERM."""
    from skylane.services.background import parse_services

    chosen = parse_services(services)
    settings = load_settings(host=host, port=port, database_url=db)
    store = open_store(settings.resolved_database_url)
    database = store.engine.url.render_as_string(hide_password=True)
    if not store.has_admin_key():
        output.print_warning(
            "the database has no admin API key yet; run `skylane server init` to create one"
        )
    try:
        if "api" not in chosen:
            output.print_text(f"skylane {', '.join(chosen)}; database {database}", err=True)
            _run_background_only(chosen, store, settings, log_level)
            return
        import uvicorn

        from skylane.api.app import create_app

        background = [name for name in chosen if name != "api"]
        output.print_text(
            f"skylane API on http://{settings.host}:{settings.port}; database {database}; "
            f"services: {', '.join(chosen)}",
            err=True,
        )
        fastapi_app = create_app(settings, store, services=background)
        # Start-up leaves ~140k long-lived objects; freezing them keeps each full garbage
        # collection from walking them all (measured, SQLite: list p95 70 ms -> 35 ms, max
        # 123 ms -> 39 ms; BENCHMARKS.md).
        gc.collect()
        gc.freeze()
        uvicorn.run(
            fastapi_app,
            host=settings.host,
            port=settings.port,
            log_level=log_level.value,
            log_config=_uvicorn_log_config(log_level),
        )
    finally:
        store.engine.dispose()

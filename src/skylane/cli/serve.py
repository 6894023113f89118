"""`skylane serve`: a flow on a schedule on this machine (see skylane.serve)."""

from __future__ import annotations

from typing import Annotated

import typer

from skylane.errors import InvalidInput

from . import output
from .common import ParamOption, load_settings, make_client, parse_assignments


def serve(
    entrypoint: Annotated[
        str, typer.Argument(metavar="PATH:FUNCTION", help="e.g. flows/etl.py:etl")
    ],
    name: Annotated[
        str | None, typer.Option(help="Deployment name (default: the flow's name).")
    ] = None,
    cron: Annotated[
        str | None, typer.Option(metavar="EXPR", help="5-field cron, e.g. '*/15 * * * *'.")
    ] = None,
    interval: Annotated[
        int | None, typer.Option(min=1, metavar="SECONDS", help="Run every SECONDS.")
    ] = None,
    timezone: Annotated[str, typer.Option(help="Time zone of --cron.")] = "UTC",
    param: ParamOption = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Most runs at once (default: no cap).")
    ] = None,
) -> None:
    """Run a flow on a schedule on this machine: registers a deployment on this machine's
    `serve-<host>` pool and works its runs here until Ctrl-C. No image, no cloud."""
    import logging

    from skylane.serve import serve as serve_here

    if cron and interval:
        raise InvalidInput("give --cron or --interval, not both", field="--interval")
    logging.basicConfig(level="INFO", format="%(levelname)s: %(name)s: %(message)s")
    settings = load_settings()
    with make_client(settings) as client:
        serve_here(
            entrypoint,
            client=client,
            settings=settings,
            name=name,
            cron=cron,
            interval=interval,
            timezone=timezone,
            parameters=parse_assignments(param, "--param"),
            limit=limit,
            announce=lambda text: output.print_text(text, err=True),
        )

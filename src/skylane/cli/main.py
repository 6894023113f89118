"""The root `skylane` command and its error handling.

A `SkylaneError` becomes one red line on stderr (`error: <field>: <message>`) and exit code 1;
usage errors exit 2 as typer makes them; anything unexpected prints a short message, and the
traceback too when SKYLANE_DEBUG=1.
"""

from __future__ import annotations

import os
import traceback
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from skylane import __version__
from skylane.errors import SkylaneError

from . import config, deployment, key, output, pool, project, run, serve, server, worker


def error_message(exc: SkylaneError) -> str:
    message = exc.message
    if exc.field and not message.startswith(f"{exc.field}:"):
        return f"{exc.field}: {message}"
    return message


class SkylaneGroup(TyperGroup):
    """The root group: every subcommand runs inside its `invoke`, so errors are handled here."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort, BrokenPipeError):
            raise
        except SkylaneError as exc:
            output.print_error(error_message(exc))
            problems = exc.details.get("errors")
            if isinstance(problems, list) and len(problems) > 1:
                for problem in problems:
                    if isinstance(problem, dict):
                        output.print_text(
                            f"  - {problem.get('field')}: {problem.get('message')}", err=True
                        )
            raise typer.Exit(1) from None
        except Exception as exc:
            if os.environ.get("SKYLANE_DEBUG") == "1":
                traceback.print_exc()
                hint = ""
            else:
                hint = " (set SKYLANE_DEBUG=1 to see the traceback)"
            output.print_error(f"unexpected {type(exc).__name__}: {exc}{hint}")
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=SkylaneGroup,
    name="skylane",
    help="Push runs of Python code straight onto serverless container platforms.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(server.app, name="server")
app.add_typer(config.app, name="config")
app.add_typer(pool.app, name="pool")
app.add_typer(deployment.app, name="deployment")
app.add_typer(run.app, name="run")
app.add_typer(worker.app, name="worker")
app.add_typer(key.app, name="key")
app.command("init")(project.init)
app.command("deploy")(project.deploy)
app.command("serve")(serve.serve)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"skylane {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Push runs of Python code straight onto serverless container platforms."""


def main() -> None:
    app(prog_name="skylane")

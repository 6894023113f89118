"""`skylane deployment`: register entrypoints on a pool and start runs of them."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from skylane.client import SkylaneClient
from skylane.entrypoints import load_entrypoint, parameter_schema, parse_entrypoint
from skylane.errors import NotFound
from skylane.models import Deployment
from skylane.pool_types import parse_pool_type

from . import output
from .common import (
    JobVariableOption,
    Output,
    OutputOption,
    ParamOption,
    YesOption,
    confirm,
    exit_for,
    follow_run,
    make_client,
    parse_assignments,
)

app = typer.Typer(help="Deployments: an entrypoint on a pool, ready to run.", no_args_is_help=True)

FullName = Annotated[str, typer.Argument(metavar="FLOW/NAME", help="The deployment.")]


@app.command()
def create(
    name: Annotated[
        str, typer.Argument(help="Deployment name (the FLOW part is the function's name).")
    ],
    entrypoint: Annotated[str, typer.Option(metavar="PATH:FUNC", help="path/to/file.py:function")],
    pool: Annotated[str, typer.Option(help="The pool its runs go to.")],
    param: ParamOption = None,
    job_variable: JobVariableOption = None,
    image: Annotated[str | None, typer.Option(help="Container image of the runs.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag; repeat for more.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    concurrency_limit: Annotated[int | None, typer.Option(min=0)] = None,
    base_dir: Annotated[
        Path | None,
        typer.Option(
            help="Directory the entrypoint path is relative to (default: the current directory)."
        ),
    ] = None,
    output_format: OutputOption = Output.TABLE,
) -> None:
    """Create a deployment; the entrypoint is loaded here first to check it and to record its
    parameters' schema."""
    parameters = parse_assignments(param, "--param")
    job_variables = parse_assignments(job_variable, "--job-variable")
    # The user's module may print while it loads: keep stdout for our own output.
    with contextlib.redirect_stdout(sys.stderr):
        fn = load_entrypoint(entrypoint, base_dir)
        schema = parameter_schema(fn)
    flow_name = getattr(fn, "__name__", None) or parse_entrypoint(entrypoint).function
    with make_client() as client:
        _default_working_dir(client, pool, job_variables, base_dir)
        deployment = client.create_deployment(
            flow_name=flow_name,
            name=name,
            pool=pool,
            entrypoint=entrypoint,
            image=image,
            parameters=parameters,
            parameter_schema=schema,
            job_variables=job_variables,
            tags=tag or [],
            description=description,
            concurrency_limit=concurrency_limit,
        )
    if output_format is Output.JSON:
        output.print_json(deployment)
        return
    typer.echo(f"deployment {deployment.full_name} created on pool {deployment.pool_name}")
    typer.echo(f"start a run with: skylane deployment run {deployment.full_name}")


def _default_working_dir(
    client: SkylaneClient, pool: str, job_variables: dict[str, Any], base_dir: Path | None
) -> None:
    """A process pool runs the entrypoint on this machine: unless told otherwise, run it where
    it was found (the server may well have been started in another directory)."""
    if "working_dir" in job_variables:
        return
    try:
        target = client.get_pool(pool)
    except NotFound:
        return  # the create call below reports the missing pool
    properties = target.base_job_template.get("variables", {}).get("properties", {})
    if parse_pool_type(target.type).provider == "process" and "working_dir" in properties:
        job_variables["working_dir"] = str((base_dir or Path.cwd()).resolve())


@app.command("ls")
def list_deployments(
    pool: Annotated[str | None, typer.Option(help="Only this pool's deployments.")] = None,
    output_format: OutputOption = Output.TABLE,
) -> None:
    """List deployments."""
    with make_client() as client:
        deployments = client.list_deployments(pool)
    if output_format is Output.JSON:
        output.print_json(deployments)
        return
    rows = [
        (d.full_name, d.pool_name, d.entrypoint, d.image, ", ".join(d.tags), d.paused)
        for d in deployments
    ]
    output.show(output.table(["name", "pool", "entrypoint", "image", "tags", "paused"], rows))


def _show_deployment(deployment: Deployment) -> None:
    output.show(
        output.fields(
            [
                ("name", deployment.full_name),
                ("id", deployment.id),
                ("pool", deployment.pool_name),
                ("entrypoint", deployment.entrypoint),
                ("image", deployment.image),
                ("tags", ", ".join(deployment.tags) or None),
                ("description", deployment.description),
                ("concurrency limit", deployment.concurrency_limit),
                ("paused", deployment.paused),
                ("parameters", deployment.parameters or None),
                ("job variables", deployment.job_variables or None),
                ("created", deployment.created_at),
                ("updated", deployment.updated_at),
            ]
        ),
        "",
        output.schema_table(deployment.parameter_schema, title="parameters"),
    )


@app.command()
def inspect(full_name: FullName, output_format: OutputOption = Output.TABLE) -> None:
    """Show a deployment and its parameters."""
    with make_client() as client:
        deployment = client.get_deployment_by_name(full_name)
    if output_format is Output.JSON:
        output.print_json(deployment)
    else:
        _show_deployment(deployment)


@app.command()
def delete(full_name: FullName, yes: YesOption = False) -> None:
    """Delete a deployment."""
    with make_client() as client:
        deployment = client.get_deployment_by_name(full_name)
        confirm(f"Delete deployment {deployment.full_name}?", yes)
        client.delete_deployment(deployment.id)
    typer.echo(f"deployment {deployment.full_name} deleted")


@app.command()
def render(
    full_name: FullName,
    param: ParamOption = None,
    job_variable: JobVariableOption = None,
) -> None:
    """Print the exact provider requests a run would send (as JSON, secrets masked). Nothing
    is stored and no cloud is called."""
    parameters = parse_assignments(param, "--param")
    job_variables = parse_assignments(job_variable, "--job-variable")
    with make_client() as client:
        deployment = client.get_deployment_by_name(full_name)
        rendered = client.render_run(
            deployment.id, parameters=parameters, job_variables=job_variables
        )
    output.print_json(rendered)


@app.command("run")
def run_deployment(
    full_name: FullName,
    param: ParamOption = None,
    job_variable: JobVariableOption = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help=(
                "Follow the run: print its logs, then its final state; exit 0 only if it COMPLETED."
            ),
        ),
    ] = False,
    output_format: OutputOption = Output.TABLE,
) -> None:
    """Start a run of a deployment now."""
    parameters = parse_assignments(param, "--param")
    job_variables = parse_assignments(job_variable, "--job-variable")
    as_json = output_format is Output.JSON
    with make_client() as client:
        deployment = client.get_deployment_by_name(full_name)
        run = client.create_run(deployment.id, parameters=parameters, job_variables=job_variables)
        if not as_json:
            typer.echo(f"run {run.id} created ({run.state.value})")
        elif not watch:
            output.print_json(run)
        if not watch:
            return
        run = follow_run(client, run.id, print_logs=not as_json)
    if as_json:
        output.print_json(run)
    else:
        output.print_state(run.id, run.state.value)
        if run.state_message:
            output.print_text(run.state_message)
    exit_for(run)

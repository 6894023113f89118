"""`skylane deployment`: register entrypoints on a pool and start runs of them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from skylane.client import SkylaneClient
from skylane.errors import NotFound
from skylane.models import Deployment, Run, RunState, Schedule
from skylane.pool_types import with_default_working_dir

from . import output, schedule
from .common import (
    JobVariableOption,
    Output,
    OutputOption,
    ParamOption,
    YesOption,
    confirm,
    exit_for,
    follow_run,
    load_settings,
    make_client,
    parse_assignments,
)
from .schedule import CronOption, IntervalOption, RRuleOption, TimezoneOption

app = typer.Typer(help="Deployments: an entrypoint on a pool, ready to run.", no_args_is_help=True)
app.add_typer(schedule.app, name="schedule")

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
    cron: CronOption = None,
    interval: IntervalOption = None,
    rrule: RRuleOption = None,
    timezone: TimezoneOption = None,
    base_dir: Annotated[
        Path | None,
        typer.Option(
            help="Directory the entrypoint path is relative to (default: the current directory)."
        ),
    ] = None,
    output_format: OutputOption = Output.TABLE,
) -> None:
    """Create a deployment; the entrypoint is loaded here first to check it and to record its
    parameters' schema. With --cron, --interval or --rrule it runs on that schedule (add more
    with `skylane deployment schedule add`)."""
    parameters = parse_assignments(param, "--param")
    job_variables = parse_assignments(job_variable, "--job-variable")
    schedule_body = schedule.schedule_body(cron, interval, rrule, timezone)
    from skylane.entrypoints import describe_flow

    flow_name, schema = describe_flow(entrypoint, base_dir)
    with make_client() as client:
        job_variables = _default_working_dir(client, pool, job_variables, base_dir)
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
            schedules=[schedule_body] if schedule_body else [],
        )
        schedules = client.list_schedules(deployment.id) if schedule_body else []
    if output_format is Output.JSON:
        output.print_json(deployment)
        return
    typer.echo(f"deployment {deployment.full_name} created on pool {deployment.pool_name}")
    if schedules:
        output.show(schedule.schedules_table(schedules))
    typer.echo(f"start a run with: skylane deployment run {deployment.full_name}")


def _default_working_dir(
    client: SkylaneClient, pool: str, job_variables: dict[str, Any], base_dir: Path | None
) -> dict[str, Any]:
    try:
        target = client.get_pool(pool)
    except NotFound:
        return job_variables  # the create call below reports the missing pool
    return with_default_working_dir(
        target.type, target.base_job_template, job_variables, base_dir or Path.cwd()
    )


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


def _late_runs_table(runs: list[Run], late_after: float) -> Any:
    now = datetime.now(UTC)
    rows = [
        (run.id, output.state_text(run.state), run.scheduled_time, output.late_text(late))
        for run in runs
        if (late := run.late_by(now)) is not None and late >= late_after
    ]
    if not rows:
        return None
    return output.table(["late run", "state", "scheduled", "late by"], rows, wide=["late run"])


def _show_deployment(
    deployment: Deployment, schedules: list[Schedule], waiting: list[Run], late_after: float
) -> None:
    extras: list[Any] = []
    if schedules:
        extras += ["", schedule.schedules_table(schedules, next_count=5)]
    late = _late_runs_table(waiting, late_after)
    if late is not None:
        extras += ["", late]
    output.show(
        output.fields(
            [
                ("name", deployment.full_name),
                ("id", deployment.id),
                ("pool", deployment.pool_name),
                ("entrypoint", deployment.entrypoint),
                ("image", deployment.image),
                ("image digest", _digest_of(deployment.image)),
                ("source", _source_text(deployment)),
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
        *extras,
    )


def _digest_of(image: str | None) -> str | None:
    """The digest a deployment is pinned to, or None for an image named only by tag (what
    runs can then change when the tag is moved)."""
    if image and "@" in image:
        return image.rsplit("@", 1)[1]
    return None


def _source_text(deployment: Deployment) -> str | None:
    source = deployment.source
    if source is None:
        return None
    pinned = f" at {source.commit}" if source.commit else " (not pinned: the ref's newest commit)"
    return f"{source.git} {source.ref or 'HEAD'}{pinned}"


@app.command()
def inspect(full_name: FullName, output_format: OutputOption = Output.TABLE) -> None:
    """Show a deployment, its parameters, its schedules with their next run times, and its
    late runs (overdue and not submitted yet)."""
    settings = load_settings()
    with make_client(settings) as client:
        deployment = client.get_deployment_by_name(full_name)
        schedules = client.list_schedules(deployment.id)
        waiting = client.list_runs(
            deployment=deployment.id,
            states=[RunState.SCHEDULED, RunState.PENDING],
            until=datetime.now(UTC),
            limit=1000,
        )
    if output_format is Output.JSON:
        output.print_json({**output.dump(deployment), "schedules": output.dump(schedules)})
    else:
        _show_deployment(deployment, schedules, waiting, settings.late_after_seconds)


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

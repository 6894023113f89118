"""`skylane run`: list, inspect, follow and cancel runs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer

from skylane.models import Run, RunState

from . import output
from .common import Output, OutputOption, exit_for, follow_run, load_settings, make_client

app = typer.Typer(help="Runs: one execution of a deployment each.", no_args_is_help=True)

RunId = Annotated[uuid.UUID, typer.Argument(metavar="ID", help="The run's id.")]
LOG_PAGE = 1000


def _ended(run: Run) -> str:
    if run.ended_at is None:
        return ""
    duration = output.format_duration(run.started_at, run.ended_at)
    ended = output.format_time(run.ended_at)
    return f"{ended} ({duration})" if duration else ended


@app.command("ls")
def list_runs(
    pool: Annotated[str | None, typer.Option(help="Only runs of this pool.")] = None,
    deployment: Annotated[
        str | None, typer.Option(metavar="FLOW/NAME", help="Only runs of this deployment.")
    ] = None,
    state: Annotated[
        list[RunState] | None,
        typer.Option(case_sensitive=False, help="Only runs in this state; repeat for more."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many runs.")] = 50,
    upcoming: Annotated[
        bool,
        typer.Option(
            "--upcoming",
            help="Runs scheduled for later (schedules create them ahead), soonest first.",
        ),
    ] = False,
    output_format: OutputOption = Output.TABLE,
) -> None:
    """List runs due by now, newest first (runs overdue and not submitted yet are shown as
    late); with --upcoming, the runs still to come."""
    settings = load_settings()
    now = datetime.now(UTC)
    window = {"since": now, "oldest_first": True} if upcoming else {"until": now}
    with make_client(settings) as client:
        deployment_id = client.get_deployment_by_name(deployment).id if deployment else None
        runs = client.list_runs(
            pool=pool, deployment=deployment_id, states=state, limit=limit, **window
        )
    if output_format is Output.JSON:
        output.print_json(runs)
        return
    rows = [
        (
            run.id,
            run.deployment_name,
            output.run_state_text(run, settings.late_after_seconds),
            run.scheduled_time,
            run.started_at,
            _ended(run),
        )
        for run in runs
    ]
    output.show(
        output.table(
            ["id", "deployment", "state", "scheduled", "started", "ended (duration)"],
            rows,
            wide=["id"],
        )
    )


@app.command()
def inspect(run_id: RunId, output_format: OutputOption = Output.TABLE) -> None:
    """Show a run with its state history and submission attempts."""
    with make_client() as client:
        run = client.get_run(run_id)
    if output_format is Output.JSON:
        output.print_json(run)
        return
    history = [(h.timestamp, output.state_text(h.state), h.message) for h in run.history]
    attempts = [
        (a.number, a.provider_ref, a.claimed_by, a.submitted_at, a.ended_at, a.error)
        for a in run.attempts
    ]
    output.show(
        output.fields(
            [
                ("id", run.id),
                ("deployment", run.deployment_name),
                ("pool", run.pool_name),
                ("state", output.state_text(run.state)),
                ("state message", run.state_message),
                ("parameters", run.parameters or None),
                ("job variables", run.job_variables or None),
                ("git commit", run.source_commit),
                ("scheduled", run.scheduled_time),
                (
                    "next try",
                    run.not_before if run.state == RunState.SCHEDULED and run.attempts else None,
                ),
                ("created", run.created_at),
                ("started", run.started_at),
                ("ended", run.ended_at),
                ("duration", output.format_duration(run.started_at, run.ended_at) or None),
                ("last heartbeat", run.last_heartbeat_at),
            ]
        ),
        "",
        output.table(["time", "state", "message"], history, title="state history"),
        "",
        output.table(
            ["#", "provider ref", "claimed by", "submitted", "ended", "error"],
            attempts,
            title="attempts",
        ),
    )


@app.command()
def logs(
    run_id: RunId,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing until the run ends; exit 0 only if it COMPLETED."
        ),
    ] = False,
) -> None:
    """Print a run's log messages."""
    with make_client() as client:
        if follow:
            run = follow_run(client, run_id, print_logs=True)
            output.print_state(run.id, run.state.value, err=True)
            exit_for(run)
        after = 0
        while page := client.read_logs(run_id, after=after, limit=LOG_PAGE):
            for line in page:
                output.print_text(line.message)
            after = page[-1].id
        if after == 0:
            # The runtime sent nothing (e.g. the container never started): show what the
            # provider itself logged, if it keeps a log.
            provider_lines = client.read_provider_logs(run_id)
            if provider_lines:
                output.print_text(
                    "(no logs from the runtime; the provider's log follows)", err=True
                )
            for provider_line in provider_lines:
                output.print_text(provider_line["message"])


@app.command()
def cancel(run_id: RunId) -> None:
    """Cancel a run (it goes to CANCELLING, then CANCELLED once the provider stopped it)."""
    with make_client() as client:
        result = client.cancel_run(run_id)
    if not result.applied:
        typer.echo(f"run {run_id} was already {result.run.state.value}")
    else:
        output.print_state(run_id, result.run.state.value)


@app.command()
def execute() -> None:
    """Execute the run this container or process was started for (used by skylane itself).

    Reads SKYLANE_RUN_ID, SKYLANE_API_URL and SKYLANE_RUN_TOKEN from the environment.
    """
    from skylane.runtime import execute as execute_run

    raise typer.Exit(execute_run())

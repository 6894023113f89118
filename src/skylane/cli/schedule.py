"""`skylane deployment schedule`: when a deployment runs by itself."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from skylane.client import SkylaneClient
from skylane.errors import InvalidInput
from skylane.models import Deployment, Schedule
from skylane.schedules import CatchUp, check_timezone

from . import output
from .common import (
    Output,
    OutputOption,
    ParamOption,
    YesOption,
    confirm,
    make_client,
    parse_assignments,
)

app = typer.Typer(
    help="Schedules: cron, interval or RRULE, each active or paused.", no_args_is_help=True
)

FullName = Annotated[str, typer.Argument(metavar="FLOW/NAME", help="The deployment.")]
CronOption = Annotated[
    str | None,
    typer.Option("--cron", metavar="EXPR", help="5-field cron expression, e.g. '30 2 * * *'."),
]
IntervalOption = Annotated[
    int | None, typer.Option("--interval", metavar="SECONDS", min=1, help="Every N seconds.")
]
RRuleOption = Annotated[
    str | None,
    typer.Option("--rrule", metavar="RULE", help="RFC 5545 rule, e.g. 'FREQ=WEEKLY;BYDAY=MO,WE'."),
]
TimezoneOption = Annotated[
    str | None,
    typer.Option("--timezone", metavar="TZ", help="IANA time zone of the schedule (default: UTC)."),
]
AnchorOption = Annotated[
    str | None,
    typer.Option(
        "--anchor",
        metavar="TIME",
        help="Interval start / RRULE DTSTART, ISO 8601 (e.g. 2026-01-05T09:00); without an "
        "offset it is local time in --timezone.",
    ),
]
CatchUpOption = Annotated[
    CatchUp,
    typer.Option(
        "--catchup",
        case_sensitive=False,
        help="Times missed while the control plane was down or the pool paused: run the "
        "latest once, all of them, or none.",
    ),
]
ScheduleRef = Annotated[
    str | None,
    typer.Argument(
        metavar="[SCHEDULE]",
        help="Schedule id or id prefix (see `schedule ls`); may be left out when the "
        "deployment has one schedule.",
    ),
]
AllOption = Annotated[bool, typer.Option("--all", help="Every schedule of the deployment.")]


def schedule_body(
    cron: str | None,
    interval: int | None,
    rrule: str | None,
    timezone: str | None,
    *,
    anchor: str | None = None,
    parameters: dict[str, Any] | None = None,
    catchup: CatchUp | None = None,
    active: bool = True,
) -> dict[str, Any] | None:
    """The API body of one schedule from CLI options; None when no expression was given."""
    given = [
        name
        for name, value in (("--cron", cron), ("--interval", interval), ("--rrule", rrule))
        if value
    ]
    if len(given) > 1:
        raise InvalidInput(
            f"give one of --cron, --interval or --rrule, not {' and '.join(given)}", field=given[1]
        )
    if not given:
        if timezone or anchor:
            raise InvalidInput(
                "--timezone and --anchor need a schedule: add --cron, --interval or --rrule",
                field="--timezone" if timezone else "--anchor",
            )
        return None
    body: dict[str, Any] = {"cron": cron, "interval_seconds": interval, "rrule": rrule}
    body = {k: v for k, v in body.items() if v is not None}
    body["timezone"] = timezone or "UTC"
    body["active"] = active
    if anchor is not None:
        body["anchor"] = _parse_anchor(anchor, body["timezone"]).isoformat()
    if parameters:
        body["parameters"] = parameters
    if catchup is not None:
        body["catchup"] = catchup.value
    return body


def _parse_anchor(text: str, timezone: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(
            f"not an ISO 8601 time: {text!r}; e.g. 2026-01-05T09:00 or 2026-01-05T09:00+01:00",
            field="--anchor",
        ) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=check_timezone(timezone, field="--timezone"))
    return value


def expression(schedule: Schedule) -> str:
    if schedule.cron:
        return f"cron {schedule.cron}"
    if schedule.interval_seconds:
        return f"every {schedule.interval_seconds}s"
    return f"rrule {schedule.rrule}"


def schedules_table(schedules: list[Schedule], *, next_count: int = 3) -> Any:
    rows = [
        (
            str(s.id)[:8],
            expression(s),
            s.timezone,
            "active" if s.active else "paused",
            s.catchup,
            ", ".join(f"{k}={v!r}" for k, v in s.parameters.items()) or None,
            "\n".join(output.format_time(t) for t in s.next_times[:next_count]) or None,
        )
        for s in schedules
    ]
    return output.table(
        ["id", "schedule", "time zone", "status", "catch-up", "parameters", "next runs"], rows
    )


def _pick(client: SkylaneClient, deployment: Deployment, ref: str | None, all_: bool) -> list:
    schedules = client.list_schedules(deployment.id)
    if all_:
        return schedules
    if ref is None:
        if len(schedules) == 1:
            return schedules
        what = "no schedules" if not schedules else f"{len(schedules)} schedules"
        raise InvalidInput(
            f"deployment {deployment.full_name} has {what}; name one by id (see `skylane "
            f"deployment schedule ls {deployment.full_name}`) or use --all",
            field="SCHEDULE",
        )
    matches = [s for s in schedules if str(s.id).startswith(ref.lower())]
    if len(matches) != 1:
        problem = "no schedule" if not matches else f"{len(matches)} schedules"
        raise InvalidInput(
            f"{problem} of {deployment.full_name} match {ref!r}; `skylane deployment schedule "
            f"ls {deployment.full_name}` lists them",
            field="SCHEDULE",
        )
    return matches


@app.command("add")
def add(
    full_name: FullName,
    cron: CronOption = None,
    interval: IntervalOption = None,
    rrule: RRuleOption = None,
    timezone: TimezoneOption = None,
    anchor: AnchorOption = None,
    param: ParamOption = None,
    catchup: CatchUpOption = CatchUp.LATEST,
    paused: Annotated[bool, typer.Option("--paused", help="Add it paused.")] = False,
    output_format: OutputOption = Output.TABLE,
) -> None:
    """Add a schedule to a deployment; its upcoming runs are created at once."""
    body = schedule_body(
        cron,
        interval,
        rrule,
        timezone,
        anchor=anchor,
        parameters=parse_assignments(param, "--param"),
        catchup=catchup,
        active=not paused,
    )
    if body is None:
        raise InvalidInput("give one of --cron, --interval or --rrule", field="--cron")
    with make_client() as client:
        deployment = client.get_deployment_by_name(full_name)
        schedule = client.create_schedule(deployment.id, **body)
    if output_format is Output.JSON:
        output.print_json(schedule)
        return
    typer.echo(f"schedule {schedule.id} added to {deployment.full_name}")
    output.show(schedules_table([schedule], next_count=5))


@app.command("ls")
def list_schedules(full_name: FullName, output_format: OutputOption = Output.TABLE) -> None:
    """List a deployment's schedules with their next run times."""
    with make_client() as client:
        deployment = client.get_deployment_by_name(full_name)
        schedules = client.list_schedules(deployment.id)
    if output_format is Output.JSON:
        output.print_json(schedules)
    else:
        output.show(schedules_table(schedules))


def _set_active(full_name: str, ref: str | None, all_: bool, active: bool) -> None:
    with make_client() as client:
        deployment = client.get_deployment_by_name(full_name)
        for schedule in _pick(client, deployment, ref, all_):
            client.update_schedule(schedule.id, active=active)
            verb = "resumed" if active else "paused"
            typer.echo(f"schedule {str(schedule.id)[:8]} ({expression(schedule)}) {verb}")


@app.command()
def pause(full_name: FullName, schedule: ScheduleRef = None, all_: AllOption = False) -> None:
    """Pause a schedule: its runs still to come are removed until it is resumed."""
    _set_active(full_name, schedule, all_, active=False)


@app.command()
def resume(full_name: FullName, schedule: ScheduleRef = None, all_: AllOption = False) -> None:
    """Resume a schedule from now on (times it missed while paused are not caught up)."""
    _set_active(full_name, schedule, all_, active=True)


@app.command()
def delete(
    full_name: FullName,
    schedule: ScheduleRef = None,
    all_: AllOption = False,
    yes: YesOption = False,
) -> None:
    """Delete a schedule and its runs still to come (past runs stay)."""
    with make_client() as client:
        deployment = client.get_deployment_by_name(full_name)
        chosen = _pick(client, deployment, schedule, all_)
        names = ", ".join(f"{str(s.id)[:8]} ({expression(s)})" for s in chosen)
        confirm(f"Delete schedule(s) {names} of {deployment.full_name}?", yes)
        for item in chosen:
            client.delete_schedule(item.id)
            typer.echo(f"schedule {str(item.id)[:8]} ({expression(item)}) deleted")

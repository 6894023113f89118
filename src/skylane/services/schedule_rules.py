"""The rules for creating and changing schedules, and what the API shows of them.

Like `skylane.services.catalog`: validate first, write second. Every write is followed by a
scheduler pass over just the schedules it touched, so the API answers with the runs already
created (and the dispatcher already woken) instead of leaving them to the next pass.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from skylane.api.schemas import ScheduleCreate, ScheduleUpdate
from skylane.entrypoints import validate_parameters
from skylane.errors import InvalidInput
from skylane.models import Deployment, Schedule
from skylane.schedules import ScheduleSpec, default_anchor, parse_schedule
from skylane.services.scheduler import Scheduler, timetable_for
from skylane.settings import Settings
from skylane.store.repository import Store

EXPRESSION_FIELDS = frozenset({"cron", "interval_seconds", "rrule"})
# How many upcoming times the API shows per schedule.
NEXT_TIMES = 5


def checked_fields(
    deployment: Deployment, body: ScheduleCreate, *, field_prefix: str = ""
) -> dict[str, Any]:
    """The fields to store for `body` on `deployment`, or InvalidInput naming the field: the
    expression and time zone must parse, and the deployment's parameters with the schedule's
    overrides must satisfy its parameter schema (required ones included: these runs have no
    one to supply the rest)."""
    spec = ScheduleSpec(
        cron=body.cron,
        interval_seconds=body.interval_seconds,
        rrule=body.rrule,
        timezone=body.timezone,
        anchor=body.anchor,
    )
    parse_schedule(spec, field_prefix=field_prefix)
    prefix = f"{field_prefix}." if field_prefix else ""
    validate_parameters(
        deployment.parameter_schema,
        {**deployment.parameters, **body.parameters},
        field=f"{prefix}parameters",
    )
    # The anchor actually used is stored, so every replica computes the same times forever.
    anchor = body.anchor or default_anchor(spec, datetime.now(UTC))
    if anchor is not None:
        anchor = anchor.astimezone(UTC)  # what the store gives back, whatever the offset
    return {
        "cron": body.cron,
        "interval_seconds": body.interval_seconds,
        "rrule": body.rrule,
        "timezone": body.timezone,
        "anchor": anchor,
        "parameters": body.parameters,
        "active": body.active,
        "catchup": body.catchup.value,
    }


def check_deployment_schedules(store: Store, deployment: Deployment) -> None:
    """After a change to `deployment`'s parameters or schema: its schedules' runs must still
    validate, or the change is refused naming the schedule."""
    for schedule in store.schedules.list(deployment_id=deployment.id):
        try:
            validate_parameters(
                deployment.parameter_schema, {**deployment.parameters, **schedule.parameters}
            )
        except InvalidInput as exc:
            raise InvalidInput(
                f"schedule {schedule.id} ({describe(schedule)}) would create runs the change "
                f"rejects: {exc.message}",
                field=f"schedules[{schedule.id}].{exc.field}",
                details=exc.details,
            ) from exc


def with_next_times(schedule: Schedule, now: datetime | None = None) -> Schedule:
    if not schedule.active:
        return schedule
    now = now or datetime.now(UTC)
    times = timetable_for(schedule).after(now, limit=NEXT_TIMES)
    return schedule.model_copy(update={"next_times": times})


def describe(schedule: Schedule) -> str:
    return timetable_for(schedule).describe()


def materialize(store: Store, settings: Settings, schedule_ids: list[uuid.UUID]) -> None:
    if schedule_ids:
        Scheduler(store, settings).run_pass(schedule_ids=schedule_ids)


def list_schedules(store: Store, deployment_id: uuid.UUID) -> list[Schedule]:
    store.get_deployment(deployment_id)  # a NotFound naming the deployment, not []
    now = datetime.now(UTC)
    return [with_next_times(s, now) for s in store.schedules.list(deployment_id=deployment_id)]


def get_schedule(store: Store, schedule_id: uuid.UUID) -> Schedule:
    return with_next_times(store.schedules.get(schedule_id))


def create_schedule(
    store: Store, settings: Settings, deployment_id: uuid.UUID, body: ScheduleCreate
) -> Schedule:
    deployment = store.get_deployment(deployment_id)
    schedule = store.schedules.create(deployment.id, checked_fields(deployment, body))
    materialize(store, settings, [schedule.id])
    return with_next_times(schedule)


def update_schedule(
    store: Store, settings: Settings, schedule_id: uuid.UUID, body: ScheduleUpdate
) -> Schedule:
    current = store.schedules.get(schedule_id)
    changes = body.model_dump(exclude_unset=True)
    merged = {key: getattr(current, key) for key in ScheduleCreate.model_fields}
    if EXPRESSION_FIELDS & changes.keys():
        # A new expression replaces the old one, whichever kind it was.
        merged.update(dict.fromkeys(EXPRESSION_FIELDS))
    merged.update(changes)
    kind_changed = _expression_field(merged) != _expression_field(current.model_dump())
    if "anchor" not in changes and (kind_changed or "timezone" in changes):
        merged["anchor"] = None  # the default is worked out again for the new kind or zone
    deployment = store.get_deployment(current.deployment_id)
    fields = checked_fields(deployment, ScheduleCreate(**merged))
    schedule = store.schedules.update(schedule_id, fields)
    materialize(store, settings, [schedule.id])
    return with_next_times(schedule)


def _expression_field(fields: dict[str, Any]) -> str | None:
    return next((name for name in sorted(EXPRESSION_FIELDS) if fields.get(name)), None)


def delete_schedule(store: Store, schedule_id: uuid.UUID) -> None:
    store.schedules.delete(schedule_id)

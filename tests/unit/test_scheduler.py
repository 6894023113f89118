"""The scheduler and the store's side of schedules, on SQLite and PostgreSQL: runs created ahead
and exactly once, changes that leave no stale runs, pauses, catch-up after downtime.

Time is driven by passing `now` to `Scheduler.run_pass`: "five hours later" is a pass with
`now + 5 h`, the same as a control plane that was down for five hours and came back.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from skylane.api.schemas import (
    DeploymentCreate,
    DeploymentUpdate,
    PoolCreate,
    PoolUpdate,
    ScheduleCreate,
    ScheduleUpdate,
)
from skylane.errors import Conflict, InvalidInput
from skylane.models import Run, RunState
from skylane.services import catalog, schedule_rules
from skylane.services.scheduler import Scheduler
from skylane.settings import Settings
from skylane.store.repository import Store

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["name"],
}


@pytest.fixture
def plane_settings() -> Settings:
    return Settings(
        schedule_lookahead_seconds=3600,
        schedule_min_runs=3,
        schedule_max_runs=100,
        schedule_grace_seconds=300,
    )


def make_deployment(
    store: Store, settings: Settings, *schedules: ScheduleCreate, name: str = "nightly"
) -> uuid.UUID:
    if not any(p.name == "local" for p in store.list_pools()):
        catalog.create_pool(store, PoolCreate(name="local", type="process:push"))
    deployment = catalog.create_deployment(
        store,
        settings,
        DeploymentCreate(
            flow_name="hello",
            name=name,
            pool="local",
            entrypoint="flows/hello.py:hello",
            parameters={"name": "ops"},
            parameter_schema=SCHEMA,
            schedules=list(schedules),
        ),
    )
    return deployment.id


def runs_of(store: Store, deployment_id: uuid.UUID, **filters: Any) -> list[Run]:
    runs = store.list_runs(deployment_id=deployment_id, limit=10_000, **filters)
    return sorted(runs, key=lambda r: r.scheduled_time)


def on_grid(when: datetime, seconds: int) -> bool:
    # Interval schedules are aligned to their anchor, 2020-01-01 00:00 UTC by default.
    anchor = datetime(2020, 1, 1, tzinfo=UTC)
    return (when - anchor).total_seconds() % seconds == 0


def grid_times(start: datetime, end: datetime, seconds: int) -> list[datetime]:
    """Times of an every-`seconds` schedule (default anchor) with start < t < end."""
    anchor = datetime(2020, 1, 1, tzinfo=UTC)
    k = int((start - anchor).total_seconds() // seconds) + 1
    times = []
    while (t := anchor + timedelta(seconds=k * seconds)) < end:
        times.append(t)
        k += 1
    return times


def test_runs_are_created_ahead_once_per_time(store: Store, plane_settings: Settings) -> None:
    before = datetime.now(UTC)
    deployment_id = make_deployment(
        store,
        plane_settings,
        ScheduleCreate(interval_seconds=600, parameters={"count": 3}),
        ScheduleCreate(cron="0 9 * * *", timezone="Europe/Berlin"),
    )
    runs = runs_of(store, deployment_id)
    by_schedule: dict[uuid.UUID | None, list[Run]] = {}
    for run in runs:
        by_schedule.setdefault(run.schedule_id, []).append(run)
    interval_runs, daily_runs = sorted(by_schedule.values(), key=len, reverse=True)
    # Every 10 minutes for the next hour: 6 runs, on the grid, all in the future.
    assert len(interval_runs) == 6
    assert all(on_grid(r.scheduled_time, 600) and r.scheduled_time > before for r in runs)
    assert all(r.parameters == {"name": "ops", "count": 3} for r in interval_runs)
    assert all(r.state == RunState.SCHEDULED and r.history for r in runs)
    # A daily run: none in the next hour, so the next three days (min runs), 09:00 Berlin =
    # 08:00 UTC in winter, 07:00 UTC in summer.
    assert len(daily_runs) == 3
    assert {r.scheduled_time.hour for r in daily_runs} <= {7, 8}
    assert daily_runs[0].parameters == {"name": "ops"}

    # Nothing new until runs are used up: a pass now creates nothing.
    report = Scheduler(store, plane_settings).run_pass()
    assert report.runs_created == 0
    # 20 minutes on, the interval schedule is topped up to the next hour again: two runs.
    report = Scheduler(store, plane_settings).run_pass(datetime.now(UTC) + timedelta(minutes=20))
    assert report.runs_created == 2
    times = [r.scheduled_time for r in runs_of(store, deployment_id)]
    assert len(times) == len(set(times)) == 11


def test_the_store_refuses_a_second_run_for_a_schedule_and_time(
    store: Store, plane_settings: Settings
) -> None:
    deployment_id = make_deployment(store, plane_settings, ScheduleCreate(interval_seconds=600))
    work = store.schedules.list(deployment_id=deployment_id)[0]
    existing = runs_of(store, deployment_id)[0]
    # A replica that missed the version check would still not create a duplicate: the insert
    # skips a (schedule, time) that already has its run.
    with store._session() as s:
        from skylane.store.schedules import ScheduleStore

        created = ScheduleStore(store)._insert_runs(
            s,
            [
                {
                    "id": uuid.uuid4(),
                    "deployment_id": deployment_id,
                    "pool_id": None,
                    "pool_name": "local",
                    "flow_name": "hello",
                    "deployment_name": "hello/nightly",
                    "state": "SCHEDULED",
                    "parameters": {},
                    "job_variables": {},
                    "scheduled_time": existing.scheduled_time,
                    "schedule_id": work.id,
                    "created_at": existing.created_at,
                    "updated_at": existing.created_at,
                }
            ],
            existing.created_at,
        )
    assert created == []
    assert len(runs_of(store, deployment_id)) == 6


def test_concurrent_scheduler_passes_create_each_run_once(
    store: Store, plane_settings: Settings
) -> None:
    ids = [
        make_deployment(store, plane_settings, name=f"d{i}")
        for i in range(10)  # no schedules yet: the passes below create every run
    ]
    for deployment_id in ids:
        store.schedules.create(
            deployment_id,
            {"interval_seconds": 60, "timezone": "UTC", "anchor": datetime(2020, 1, 1, tzinfo=UTC)},
        )
    now = datetime.now(UTC)
    errors: list[BaseException] = []

    def scheduler_pass() -> None:
        try:
            Scheduler(store, plane_settings).run_pass(now)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scheduler_pass) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for deployment_id in ids:
        times = [r.scheduled_time for r in runs_of(store, deployment_id)]
        assert len(times) == len(set(times)) == 60


def test_a_changed_schedule_leaves_no_stale_runs(store: Store, plane_settings: Settings) -> None:
    deployment_id = make_deployment(store, plane_settings, ScheduleCreate(interval_seconds=600))
    schedule = store.schedules.list(deployment_id=deployment_id)[0]
    # One run was claimed by a dispatcher already: it is not the schedule's to take back.
    first = runs_of(store, deployment_id)[0]
    claimed = store.claim_due_runs(claimed_by="d1", lease_seconds=60, now=first.scheduled_time)
    assert [c.run.id for c in claimed] == [first.id]

    changed_at = datetime.now(UTC)
    updated = schedule_rules.update_schedule(
        store, plane_settings, schedule.id, ScheduleUpdate(interval_seconds=900)
    )
    assert updated.interval_seconds == 900
    runs = runs_of(store, deployment_id)
    scheduled = [r for r in runs if r.state == RunState.SCHEDULED]
    assert scheduled and all(on_grid(r.scheduled_time, 900) for r in scheduled)
    assert all(r.scheduled_time > changed_at for r in scheduled)
    assert [r.id for r in runs if r.state == RunState.PENDING] == [claimed[0].run.id]
    # Each of the next times has its one run (the claimed run may hold one of them).
    waiting = [r.scheduled_time for r in runs if not r.state.is_terminal]
    assert all(waiting.count(t) == 1 for t in updated.next_times[:3])

    # Pausing removes what is still to come; resuming starts from now.
    schedule_rules.update_schedule(store, plane_settings, schedule.id, ScheduleUpdate(active=False))
    assert runs_of(store, deployment_id, states=[RunState.SCHEDULED]) == []
    paused = schedule_rules.get_schedule(store, schedule.id)
    assert not paused.active and paused.next_times == []
    assert Scheduler(store, plane_settings).run_pass().runs_created == 0
    resumed_at = datetime.now(UTC)
    schedule_rules.update_schedule(store, plane_settings, schedule.id, ScheduleUpdate(active=True))
    # The 15-minute times of the next hour, except the one the claimed run already holds.
    grid = [resumed_at + timedelta(seconds=s) for s in range(1, 3601)]
    expected = {t.replace(microsecond=0) for t in grid if on_grid(t.replace(microsecond=0), 900)}
    expected.discard(claimed[0].run.scheduled_time)
    resumed = runs_of(store, deployment_id, states=[RunState.SCHEDULED])
    assert {r.scheduled_time for r in resumed} == expected

    # Deleting removes future runs; the claimed run stays, detached from the schedule.
    schedule_rules.delete_schedule(store, schedule.id)
    remaining = runs_of(store, deployment_id)
    assert [r.id for r in remaining] == [claimed[0].run.id]
    assert remaining[0].schedule_id is None


def test_new_deployment_parameters_reach_runs_still_to_come(
    store: Store, plane_settings: Settings
) -> None:
    deployment_id = make_deployment(store, plane_settings, ScheduleCreate(interval_seconds=600))
    catalog.update_deployment(
        store, plane_settings, deployment_id, DeploymentUpdate(parameters={"name": "finance"})
    )
    runs = runs_of(store, deployment_id)
    assert len(runs) == 6
    assert {r.parameters["name"] for r in runs} == {"finance"}
    # A schema change the schedule's runs would break is refused, naming the schedule.
    with pytest.raises(InvalidInput) as caught:
        catalog.update_deployment(
            store,
            plane_settings,
            deployment_id,
            DeploymentUpdate(
                parameter_schema={**SCHEMA, "required": ["name", "count"]},
            ),
        )
    assert caught.value.field is not None and caught.value.field.startswith("schedules[")
    assert "count" in caught.value.message


@pytest.mark.parametrize(
    "catchup",
    ["latest", "all", "none"],
)
def test_catch_up_after_downtime(store: Store, plane_settings: Settings, catchup: str) -> None:
    """Down for five hours with an every-10-minutes schedule: 6 runs were created before the
    outage, more times passed unseen, and the policy decides which of them still run."""
    deployment_id = make_deployment(
        store, plane_settings, ScheduleCreate(interval_seconds=600, catchup=catchup)
    )
    created_at = datetime.now(UTC)
    back = created_at + timedelta(hours=5)
    report = Scheduler(store, plane_settings).run_pass(back)

    grace = timedelta(seconds=plane_settings.schedule_grace_seconds)
    runs = runs_of(store, deployment_id)
    missed = [r for r in runs if r.scheduled_time < back - grace]
    alive = [r for r in missed if r.state == RunState.SCHEDULED]
    skipped = [r for r in missed if r.state == RunState.CANCELLED]
    expected_missed = len(grid_times(created_at, back - grace, 600))
    assert expected_missed in (29, 30)
    if catchup == "all":
        assert len(alive) == expected_missed and not skipped
    elif catchup == "latest":
        # The most recent missed time runs once; the pre-outage runs are skipped.
        assert len(alive) == 1
        assert alive[0].scheduled_time == max(r.scheduled_time for r in missed)
        assert len(skipped) == 6
        assert "catch-up policy 'latest'" in (skipped[0].state_message or "")
    else:
        assert alive == [] and len(skipped) == 6
        assert "catch-up policy 'none'" in (skipped[0].state_message or "")
    assert report.missed_runs_skipped == len(skipped)
    # Normal service resumes: the next hour after the outage is there, once.
    upcoming = [r for r in runs if r.scheduled_time >= back - grace]
    assert len(upcoming) >= 6
    times = [r.scheduled_time for r in runs]
    assert len(times) == len(set(times))


def test_paused_deployments_and_pools_get_no_runs_dispatched(
    store: Store, plane_settings: Settings
) -> None:
    deployment_id = make_deployment(store, plane_settings, ScheduleCreate(interval_seconds=600))
    later = datetime.now(UTC) + timedelta(minutes=15)
    catalog.update_deployment(store, plane_settings, deployment_id, DeploymentUpdate(paused=True))
    assert store.claim_due_runs(claimed_by="d", lease_seconds=60, now=later) == []
    catalog.update_deployment(store, plane_settings, deployment_id, DeploymentUpdate(paused=False))
    catalog.update_pool(store, plane_settings, "local", PoolUpdate(paused=True))
    assert store.claim_due_runs(claimed_by="d", lease_seconds=60, now=later) == []
    # Two hours on, still paused: no new runs, and of the six that missed their time only the
    # most recent is kept (catch-up "latest"); it goes out once the pool is resumed.
    back = later + timedelta(hours=2)
    report = Scheduler(store, plane_settings).run_pass(back)
    assert (report.runs_created, report.missed_runs_skipped) == (0, 5)
    catalog.update_pool(store, plane_settings, "local", PoolUpdate(paused=False))
    claimed = store.claim_due_runs(claimed_by="d", lease_seconds=60, now=back)
    assert [c.run.scheduled_time for c in claimed] == [
        runs_of(store, deployment_id)[-1].scheduled_time
    ]


def test_schedule_input_errors_name_the_field(store: Store, plane_settings: Settings) -> None:
    deployment_id = make_deployment(store, plane_settings)
    cases = [
        (ScheduleCreate(cron="61 * * * *"), "cron"),
        (ScheduleCreate(cron="0 9 * * *", timezone="Europe/Berln"), "timezone"),
        (ScheduleCreate(rrule="FREQ=SOMETIMES"), "rrule"),
        (ScheduleCreate(), "schedule"),
        (ScheduleCreate(interval_seconds=60, parameters={"count": "three"}), "parameters.count"),
    ]
    for body, field in cases:
        with pytest.raises(InvalidInput) as caught:
            schedule_rules.create_schedule(store, plane_settings, deployment_id, body)
        assert caught.value.field == field, (body, caught.value)
    assert store.schedules.list(deployment_id=deployment_id) == []

    with pytest.raises(InvalidInput) as caught:
        catalog.create_deployment(
            store,
            plane_settings,
            DeploymentCreate(
                flow_name="hello",
                name="other",
                pool="local",
                entrypoint="flows/hello.py:hello",
                parameters={"name": "x"},
                schedules=[ScheduleCreate(interval_seconds=60), ScheduleCreate(cron="* * *")],
            ),
        )
    assert caught.value.field == "schedules[1].cron"
    # Nothing was created: the deployment is checked with its schedules, then written.
    assert [d.name for d in store.list_deployments()] == ["nightly"]


def test_late_runs(store: Store, plane_settings: Settings) -> None:
    deployment_id = make_deployment(store, plane_settings, ScheduleCreate(interval_seconds=600))
    run = runs_of(store, deployment_id)[0]
    assert run.late_by(run.scheduled_time - timedelta(seconds=5)) is None
    assert run.late_by(run.scheduled_time + timedelta(seconds=42)) == 42
    claim = store.claim_due_runs(
        claimed_by="d", lease_seconds=60, now=run.scheduled_time + timedelta(seconds=1)
    )[0]
    store.record_submission(claim.attempt.idempotency_key, "ref-1")
    submitted = store.get_run(run.id)
    assert submitted.late_by(run.scheduled_time + timedelta(seconds=42)) is None


def test_a_scheduled_deployment_can_be_deleted(store: Store, plane_settings: Settings) -> None:
    deployment_id = make_deployment(store, plane_settings, ScheduleCreate(interval_seconds=600))
    manual = store.create_run(
        store.get_deployment(deployment_id), parameters={"name": "x"}, job_variables={}
    )
    # A run asked for by hand still has to be dealt with first...
    with pytest.raises(Conflict):
        store.delete_deployment(deployment_id)
    assert len(runs_of(store, deployment_id)) == 7
    # ...but the schedule's own runs still to come go with the deployment.
    store.cancel_run(manual.id)
    store.delete_deployment(deployment_id)
    assert store.list_deployments() == []
    assert store.schedules.list() == []


def test_missed_runs_wait_for_the_catch_up_decision(store: Store, plane_settings: Settings) -> None:
    """After an outage a dispatcher may start before the scheduler: the runs created before
    the outage must not go out before the catch-up policy has decided which of them run."""
    deployment_id = make_deployment(
        store, plane_settings, ScheduleCreate(interval_seconds=600, catchup="latest")
    )
    back = datetime.now(UTC) + timedelta(hours=5)
    missed_before = back - timedelta(seconds=plane_settings.schedule_grace_seconds)

    def claim() -> list[datetime]:
        claims = store.claim_due_runs(
            claimed_by="d", lease_seconds=60, now=back, missed_before=missed_before
        )
        return [c.run.scheduled_time for c in claims]

    assert claim() == []  # six runs are due, all missed, none decided yet
    Scheduler(store, plane_settings).run_pass(back)
    # "latest": the six are skipped; the most recent missed time runs, once.
    claimed = claim()
    latest_missed = max(t for t in grid_times(back - timedelta(hours=1), missed_before, 600))
    assert [t for t in claimed if t < missed_before] == [latest_missed]
    skipped = runs_of(store, deployment_id, states=[RunState.CANCELLED])
    assert len(skipped) == 6
    # A manual run is never held back, however late.
    manual = store.create_run(
        store.get_deployment(deployment_id),
        parameters={"name": "x"},
        job_variables={},
        scheduled_time=back - timedelta(hours=1),
    )
    assert manual.scheduled_time in claim()


@pytest.mark.parametrize(
    ("cron", "day", "expected_utc"),
    [
        # Spring forward in New York, 2027-03-14 02:00 -> 03:00: 02:30 runs once, at 03:00 EDT.
        ("30 2 * * *", "2027-03-14", ["2027-03-14T07:00:00+00:00"]),
        # Fall back, 2027-11-07 02:00 -> 01:00: 01:30 happens twice and runs once, the first.
        ("30 1 * * *", "2027-11-07", ["2027-11-07T05:30:00+00:00"]),
    ],
)
def test_daylight_saving_days_get_one_run(
    store: Store, plane_settings: Settings, cron: str, day: str, expected_utc: list[str]
) -> None:
    deployment_id = make_deployment(
        store, plane_settings, ScheduleCreate(cron=cron, timezone="America/New_York")
    )
    # The scheduler comes by the day before, with two days of lookahead.
    settings = plane_settings.model_copy(update={"schedule_lookahead_seconds": 2 * 86400})
    before = datetime.fromisoformat(day).replace(tzinfo=UTC) - timedelta(hours=12)
    Scheduler(store, settings).run_pass(before)
    zone = ZoneInfo("America/New_York")
    on_day = [
        r.scheduled_time.isoformat()
        for r in runs_of(store, deployment_id, states=[RunState.SCHEDULED])
        if r.scheduled_time.astimezone(zone).date().isoformat() == day
    ]
    assert on_day == expected_utc

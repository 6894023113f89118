"""Schedules end to end: real `skylane server start` processes (SQLite and PostgreSQL) whose
scheduler creates the runs of interval schedules ahead of time and whose dispatcher pushes them
to an `ecs:push` pool on moto_server.

What is checked is what a user would see in their AWS account and in the run list: each
scheduled time becomes exactly one ECS task, within a second of that time; no time is missed
and none runs twice, even with two scheduler replicas racing on PostgreSQL; a changed, paused
or deleted schedule leaves no stale run behind; and after the control plane was down, each
catch-up policy runs what it says.

moto's DescribeTasks has no `createdAt`, so the moment a task reached "ECS" is the moment its
RunTask call arrived at a pass-through `FaultProxy` in front of moto (no fault rules).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

from skylane.client import SkylaneClient
from skylane.models import Run, RunState, Schedule
from skylane.store import create_engine_for
from skylane.store.tables import RunRow
from skylane.testing.aws_faults import FaultProxy
from skylane.testing.databases import reset_postgres_schema
from skylane.testing.moto import FAKE_AWS_ENV
from skylane.testing.server import (
    SKYLANE,
    ServerProcess,
    restarted_server,
    running_server,
    stop_process,
)
from skylane.testing.waiting import wait_until
from tests.e2e.conftest import ECS_CLUSTER, FAST_SETTINGS

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flows:1.0"
FLOW = "def etl(day: str = 'today') -> None:\n    print('etl for', day)\n"
SETTINGS = {**FAST_SETTINGS, **FAKE_AWS_ENV}
# How long after its scheduled time a run must have reached ECS (and the slack given to a run
# whose time has just passed before it is expected there).
ON_TIME = 1.0
SETTLE = 1.5


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """A pass-through proxy in front of moto that logs every call and when it arrived."""
    with FaultProxy(moto_endpoint) as started:
        yield started


@pytest.fixture
def ecs(aws: boto3.Session, moto_endpoint: str) -> Any:
    """An ECS client on moto directly: the user's view of the account. The account's default
    VPC is made now (a real account has one; moto makes it on the first EC2 call after a reset,
    which takes a while and would land on the first run's submission)."""
    aws.client("ec2", endpoint_url=moto_endpoint).describe_vpcs()
    return aws.client("ecs", endpoint_url=moto_endpoint)


def database_url(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'skylane.db'}"
    url = request.getfixturevalue("postgres_server_url")
    reset_postgres_schema(url)
    return url


def start_server(
    url: str, tmp_path: Path, *, services: str | None = None, **settings: str
) -> contextlib.AbstractContextManager[ServerProcess]:
    extra = {} if services is None else {"services": services}
    return running_server(
        url,
        workdir=tmp_path / "project",
        home=tmp_path / "home",
        settings={**SETTINGS, **settings},
        **extra,
    )


def make_pool(client: SkylaneClient, endpoint: str) -> None:
    client.create_pool(
        name="aws", type="ecs:push", settings={"region": "us-east-1", "endpoint_url": endpoint}
    )


def make_deployment(client: SkylaneClient, name: str, **schedule: Any) -> uuid.UUID:
    """A deployment on the `aws` pool with one schedule (given with the deployment)."""
    deployment = client.create_deployment(
        flow_name="etl",
        name=name,
        pool="aws",
        entrypoint="flows/etl.py:etl",
        image=IMAGE,
        job_variables={"cluster": ECS_CLUSTER},
        schedules=[schedule] if schedule else [],
    )
    return deployment.id


def utcnow() -> datetime:
    return datetime.now(UTC)


def grid(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """The schedule's interval times `t` with `start < t <= end` (anchor + k * interval)."""
    assert schedule.anchor is not None and schedule.interval_seconds
    step = timedelta(seconds=schedule.interval_seconds)
    t = schedule.anchor + ((start - schedule.anchor) // step + 1) * step
    times = []
    while t <= end:
        times.append(t)
        t += step
    return times


def on_grid(t: datetime, anchor: datetime, interval: int) -> bool:
    return (t - anchor) % timedelta(seconds=interval) == timedelta(0)


def table(runs: list[Run], since: datetime | None = None) -> str:
    """Runs as lines of text, for assertion messages."""
    return "\n".join(
        f"{r.scheduled_time:%H:%M:%S.%f} {r.state:<9} created {r.created_at:%H:%M:%S.%f} "
        f"claimed {[f'{a.created_at:%H:%M:%S.%f}' for a in r.attempts]} "
        f"{(r.state_message or '')[:60]}"
        for r in runs
        if since is None or r.scheduled_time > since
    )


def refs(run: Run) -> list[str]:
    return [a.provider_ref for a in run.attempts if a.provider_ref]


def deployment_runs(client: SkylaneClient, deployment_id: uuid.UUID) -> list[Run]:
    runs = client.list_runs(deployment=deployment_id, limit=1000)
    assert len(runs) < 1000
    return sorted(runs, key=lambda r: r.scheduled_time)


def ecs_tasks(ecs: Any) -> dict[str, str]:
    """Every task in the cluster (running or stopped): task ARN -> its `skylane-run-id` tag.
    Returns a moment after listing them, so that the refs of tasks just started are written
    by the time the caller reads the runs (the dispatcher writes them in 20 ms batches)."""
    arns: list[str] = []
    for desired in ("RUNNING", "STOPPED"):
        for page in ecs.get_paginator("list_tasks").paginate(
            cluster=ECS_CLUSTER, desiredStatus=desired
        ):
            arns.extend(page["taskArns"])
    tasks: dict[str, str] = {}
    for start in range(0, len(arns), 100):
        described = ecs.describe_tasks(
            cluster=ECS_CLUSTER, tasks=arns[start : start + 100], include=["TAGS"]
        )
        for task in described["tasks"]:
            tags = {t["key"]: t["value"] for t in task.get("tags", [])}
            tasks[task["taskArn"]] = tags.get("skylane-run-id", "?")
    assert len(tasks) == len(set(arns))
    time.sleep(0.5)
    return tasks


def assert_tasks_match_runs(tasks: dict[str, str], runs: list[Run]) -> None:
    """Each task belongs to a run that records it as its one submission; no run has two. (Read
    `tasks` before `runs`.)"""
    by_id = {str(r.id): r for r in runs}
    per_run = Counter(tasks.values())
    assert {k: v for k, v in per_run.items() if v != 1} == {}, "a run has several ECS tasks"
    for arn, run_id in tasks.items():
        assert run_id in by_id, f"task {arn} belongs to no existing run ({run_id})"
        assert refs(by_id[run_id]) == [arn], (run_id, by_id[run_id].attempts)


# --- 1. runs reach ECS on time ---------------------------------------------------------------


# SQLite only: the PostgreSQL scheduler is exercised by the two-replica test below.
@pytest.mark.parametrize("backend", ["sqlite"])
def test_scheduled_runs_reach_ecs_on_time(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    ecs: Any,
    proxy: FaultProxy,
) -> None:
    proxy.clear_rules()
    proxy.reset_calls()
    with start_server(database_url(request, tmp_path, backend), tmp_path) as server:
        (server.workdir / "flows").mkdir()
        (server.workdir / "flows" / "etl.py").write_text(FLOW)
        client = server.client()
        make_pool(client, proxy.url)  # AWS calls through the proxy, which times them
        server.cli(
            "deployment",
            "create",
            "nightly",
            "--entrypoint",
            "flows/etl.py:etl",
            "--pool",
            "aws",
            "--image",
            IMAGE,
            "--job-variable",
            f"cluster={ECS_CLUSTER}",
            "--interval",
            "2",
            check=True,
        )
        deployment = client.get_deployment_by_name("etl/nightly")
        [schedule] = client.list_schedules(deployment.id)
        assert schedule.interval_seconds == 2 and schedule.active
        # Created ahead: the API answered after the first runs were written.
        assert deployment_runs(client, deployment.id)

        time.sleep(8)

        checked_at = utcnow()
        tasks = ecs_tasks(ecs)
        runs = deployment_runs(client, deployment.id)
        calls = [c for c in proxy.calls("RunTask") if c.outcome == "forwarded"]
        log = server.log_tail()

    assert_tasks_match_runs(tasks, runs)
    assert all(r.schedule_id == schedule.id for r in runs)
    # Every time of the 2 s grid since the schedule was created has its run, none missing,
    # none twice, and each of those whose time has passed is on ECS.
    due = [r for r in runs if r.scheduled_time <= checked_at - timedelta(seconds=SETTLE)]
    expected = grid(schedule, schedule.created_at, checked_at - timedelta(seconds=SETTLE))
    assert len(expected) >= 3, log
    assert [r.scheduled_time for r in due] == expected, log
    assert all(refs(r) for r in due), [(r.scheduled_time, r.state, r.attempts) for r in due]
    # One RunTask per run, each between 0 and 1 s after the run's scheduled time (never
    # early: runs created ahead wait for their time), each the call that made its task.
    by_id = {str(r.id): r for r in runs}
    lateness: dict[str, float] = {}
    started: set[str] = set()
    for call in calls:  # read last: may include runs submitted after `runs` was read
        [task] = call.response_json["tasks"]
        tags = {t["key"]: t["value"] for t in call.request_json["tags"]}
        run = by_id[tags["skylane-run-id"]]  # created ahead, so read already
        assert refs(run) in ([], [task["taskArn"]]), (run.id, run.attempts, task["taskArn"])
        assert run.scheduled_time.isoformat() not in lateness, "two RunTask calls for one run"
        lateness[run.scheduled_time.isoformat()] = call.received_at - run.scheduled_time.timestamp()
        started.add(task["taskArn"])
    assert set(tasks) <= started
    assert {r.scheduled_time.isoformat() for r in due} <= set(lateness)
    assert all(0 <= late <= ON_TIME for late in lateness.values()), lateness


# --- 2. two scheduler replicas on PostgreSQL -------------------------------------------------

REPLICAS = 2
DEPLOYMENTS = 20


def start_scheduler(server: ServerProcess, log_path: Path) -> subprocess.Popen[bytes]:
    """`skylane server start --services scheduler`: another process, same settings."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*SKYLANE, "server", "start", "--services", "scheduler"],
            env=server.env,
            cwd=server.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.postgres
def test_two_scheduler_replicas_create_no_duplicates(
    postgres_server_url: str, tmp_path: Path, ecs: Any, moto_endpoint: str
) -> None:
    reset_postgres_schema(postgres_server_url)
    # Short passes and a short lookahead: the replicas top the schedules up all the time.
    race = {
        "SKYLANE_SCHEDULER_INTERVAL_SECONDS": "0.2",
        "SKYLANE_SCHEDULE_LOOKAHEAD_SECONDS": "5",
        "SKYLANE_SCHEDULE_MIN_RUNS": "2",
    }
    logs = [tmp_path / f"scheduler-{i}.log" for i in range(REPLICAS)]
    with start_server(
        postgres_server_url, tmp_path, services="api,dispatcher,reconciler", **race
    ) as server:
        replicas = [start_scheduler(server, log) for log in logs]
        try:

            def replicas_started() -> bool:
                for process, log in zip(replicas, logs, strict=True):
                    assert process.poll() is None, log.read_text(errors="replace")
                return all("started; a pass every 0.2 s" in log.read_text() for log in logs)

            wait_until(replicas_started, "both scheduler replicas")
            client = server.client()
            make_pool(client, moto_endpoint)
            schedules = []
            for i in range(DEPLOYMENTS):
                deployment_id = make_deployment(client, f"d{i:02d}")
                schedules.append(client.create_schedule(deployment_id, interval_seconds=1 + i % 3))

            time.sleep(8)

            checked_at = utcnow()
            tasks = ecs_tasks(ecs)
            runs = client.list_runs(pool="aws", limit=1000)
            assert len(runs) < 1000
        finally:
            for process in replicas:
                stop_process(process)
        server_log = server.log_tail()
    replica_logs = [log.read_text(errors="replace") for log in logs]

    engine = create_engine_for(postgres_server_url)
    try:
        with engine.connect() as connection:
            repeated = connection.execute(
                sa.select(RunRow.schedule_id, RunRow.scheduled_time, sa.func.count())
                .group_by(RunRow.schedule_id, RunRow.scheduled_time)
                .having(sa.func.count() > 1)
            ).all()
            rows = connection.execute(sa.select(RunRow.schedule_id, RunRow.scheduled_time)).all()
    finally:
        engine.dispose()
    assert repeated == []
    times: dict[uuid.UUID, list[datetime]] = defaultdict(list)
    for schedule_id, scheduled_time in rows:
        times[schedule_id].append(scheduled_time)
    assert set(times) == {s.id for s in schedules}
    # Every time of each schedule's grid since it was created has exactly one run: no gap, no
    # extra; and the runs ahead continue the grid.
    due_by = checked_at - timedelta(seconds=3)
    for schedule in schedules:
        created = sorted(times[schedule.id])
        assert created == sorted(set(created))
        assert [t for t in created if t <= due_by] == grid(schedule, schedule.created_at, due_by)
        assert created == grid(schedule, schedule.created_at, created[-1])
        assert created[-1] > checked_at  # created ahead
    # Each run is on ECS once (those due a few seconds ago: all of them), none twice.
    assert_tasks_match_runs(tasks, runs)
    late = [(r.scheduled_time, r.state) for r in runs if r.scheduled_time <= due_by and not refs(r)]
    assert late == [], server_log
    assert len(tasks) >= 50
    # Both replicas did part of the work.
    for text in replica_logs:
        assert "scheduler scheduler@" in text and "started" in text, text
        assert "run(s) created" in text, text


# --- 3. a schedule changed, paused, resumed, deleted -----------------------------------------

# The new grid: every 3 s on the half second, which shares no time with the old one (every
# 2 s on the second), so each run says which definition it came from.
NEW_ANCHOR = datetime(2020, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)


# SQLite only: replacing a schedule's runs is the store's, tested on both databases in
# tests/unit/test_scheduler.py; this checks what reaches ECS.
@pytest.mark.parametrize("backend", ["sqlite"])
def test_changed_schedule_leaves_no_stale_runs(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, ecs: Any, moto_endpoint: str
) -> None:
    with start_server(database_url(request, tmp_path, backend), tmp_path) as server:
        client = server.client()
        make_pool(client, moto_endpoint)
        deployment_id = make_deployment(client, "nightly", interval_seconds=2)
        [schedule] = client.list_schedules(deployment_id)
        old_anchor = schedule.anchor
        assert old_anchor is not None

        def submitted(count: int) -> bool:
            return sum(1 for r in deployment_runs(client, deployment_id) if refs(r)) >= count

        wait_until(lambda: submitted(2), "two runs on the old schedule", context=server.log_tail)

        # Change: the runs to come are replaced by runs on the new grid, at once.
        changed_at = utcnow()
        changed = client.update_schedule(
            schedule.id, interval_seconds=3, anchor=NEW_ANCHOR.isoformat()
        )
        change_answered = utcnow()
        assert (changed.interval_seconds, changed.anchor) == (3, NEW_ANCHOR)
        assert changed.next_times and all(on_grid(t, NEW_ANCHOR, 3) for t in changed.next_times)
        ahead = [
            r for r in deployment_runs(client, deployment_id) if r.scheduled_time > change_answered
        ]
        assert ahead, "no runs created ahead on the new schedule"
        assert all(r.state == RunState.SCHEDULED for r in ahead)
        assert [r.scheduled_time for r in ahead] == grid(
            changed, change_answered, ahead[-1].scheduled_time
        )

        time.sleep(4.5)

        checked_at = utcnow()
        tasks = ecs_tasks(ecs)
        runs = deployment_runs(client, deployment_id)
        assert_tasks_match_runs(tasks, runs)  # no task for a run the change deleted
        before = [r.scheduled_time for r in runs if r.scheduled_time <= changed_at]
        after = [r for r in runs if r.scheduled_time > change_answered]
        assert before == grid(schedule, schedule.created_at, changed_at)
        # After the change only new-grid times, every one of them, each on ECS once its time
        # has passed.
        due_by = checked_at - timedelta(seconds=SETTLE)
        assert [r.scheduled_time for r in after if r.scheduled_time <= due_by] == grid(
            changed, change_answered, due_by
        )
        assert all(on_grid(r.scheduled_time, NEW_ANCHOR, 3) for r in after)
        assert all(refs(r) for r in after if r.scheduled_time <= due_by)
        # Between the request and its answer a run of either grid may have started; no more.
        between = [r for r in runs if changed_at < r.scheduled_time <= change_answered]
        assert len(between) <= 1, between

        # Pause: nothing ahead, nothing new on ECS.
        paused_at = utcnow()
        paused = client.update_schedule(schedule.id, active=False)
        pause_answered = utcnow()
        assert not paused.active and paused.next_times == []
        runs = deployment_runs(client, deployment_id)
        assert [r for r in runs if r.scheduled_time > pause_answered] == []
        assert not [
            r for r in runs if r.state == RunState.SCHEDULED and r.scheduled_time > paused_at
        ]
        time.sleep(3.2)  # more than an interval
        tasks = ecs_tasks(ecs)
        runs = deployment_runs(client, deployment_id)
        assert_tasks_match_runs(tasks, runs)
        assert [r for r in runs if r.scheduled_time > pause_answered] == []

        # Resume: from now on, the paused time is not caught up.
        resumed_at = utcnow()
        resumed = client.update_schedule(schedule.id, active=True)
        assert resumed.active and resumed.next_times
        runs = deployment_runs(client, deployment_id)
        assert [r for r in runs if pause_answered < r.scheduled_time <= resumed_at] == []
        ahead = [r for r in runs if r.scheduled_time > resumed_at]
        assert ahead and all(r.state == RunState.SCHEDULED for r in ahead)
        assert all(on_grid(r.scheduled_time, NEW_ANCHOR, 3) for r in ahead)

        # Delete: the past runs stay (without their schedule), the ones to come go.
        deleted_at = utcnow()
        client.delete_schedule(schedule.id)
        delete_answered = utcnow()
        assert client.list_schedules(deployment_id) == []
        remaining = deployment_runs(client, deployment_id)
        past = {r.id for r in runs if r.scheduled_time <= deleted_at}
        assert past <= {r.id for r in remaining}
        assert [r for r in remaining if r.scheduled_time > delete_answered] == []
        assert all(r.schedule_id is None for r in remaining)
        time.sleep(0.5)
        tasks = ecs_tasks(ecs)
        remaining = deployment_runs(client, deployment_id)
        assert_tasks_match_runs(tasks, remaining)
        assert [r for r in remaining if r.scheduled_time > delete_answered] == []


# --- 4. catch-up after the control plane was down --------------------------------------------

GRACE = 2.0
INTERVAL = 2
OUTAGE = 9.0
CATCHUP_SETTINGS = {
    "SKYLANE_SCHEDULE_GRACE_SECONDS": str(GRACE),
    "SKYLANE_SCHEDULE_LOOKAHEAD_SECONDS": "2",
    "SKYLANE_SCHEDULE_MIN_RUNS": "1",
    "SKYLANE_SCHEDULER_INTERVAL_SECONDS": "0.2",
}
POLICIES = ("latest", "all", "none")


def test_catch_up_after_an_outage(tmp_path: Path, ecs: Any, moto_endpoint: str) -> None:
    """Three interval schedules, catch-up latest, all and none, on one server process (SQLite);
    the server is stopped for 9 s (its runs created ahead stay SCHEDULED meanwhile), then
    started again on the same database."""
    url = f"sqlite:///{tmp_path / 'skylane.db'}"
    grace, step = timedelta(seconds=GRACE), timedelta(seconds=INTERVAL)

    with start_server(url, tmp_path, **CATCHUP_SETTINGS) as first:
        client = first.client()
        make_pool(client, moto_endpoint)
        ids = {
            p: make_deployment(client, p, interval_seconds=INTERVAL, catchup=p) for p in POLICIES
        }

        def submitted() -> bool:
            return all(any(refs(r) for r in deployment_runs(client, d)) for d in ids.values())

        wait_until(submitted, "a run of each schedule on ECS", context=first.log_tail)
    down_at = utcnow()  # nothing creates or submits runs any more

    time.sleep(OUTAGE)

    # The scheduler's first pass after the outage is no earlier than this...
    restarted_at = utcnow()
    with restarted_server(first, log_name="server-2.log") as second:
        client = second.client()
        time.sleep(3)
        checked_at = utcnow()
        tasks = ecs_tasks(ecs)
        runs = {p: deployment_runs(client, d) for p, d in ids.items()}
        schedules = {p: client.list_schedules(d)[0] for p, d in ids.items()}
        log = second.log_tail()

    assert_tasks_match_runs(tasks, [r for p in POLICIES for r in runs[p]])
    # ... and no later than the first run it created.
    first_fill = min(r.created_at for p in POLICIES for r in runs[p] if r.created_at > down_at)
    assert restarted_at < first_fill < restarted_at + timedelta(seconds=10)
    due_by = checked_at - timedelta(seconds=SETTLE)
    for policy in POLICIES:
        schedule, these = schedules[policy], runs[policy]
        context = (
            f"catch-up {policy}: stopped {down_at:%H:%M:%S.%f}, restarted "
            f"{restarted_at:%H:%M:%S.%f}, first fill {first_fill:%H:%M:%S.%f}; runs:\n"
        )
        # Times after the last run claimed before the outage were missed, up to `grace`
        # before the scheduler's first pass after it.
        last_claimed = max(
            r.scheduled_time for r in these if r.attempts and r.attempts[0].created_at < down_at
        )
        context += table(these, since=last_claimed - step)
        assert len(grid(schedule, last_claimed, restarted_at - grace)) >= 3, context
        # Runs created ahead before the outage whose time passed during it.
        stale = [r for r in these if r.scheduled_time > last_claimed and r.created_at < down_at]
        assert stale, context
        assert all(r.scheduled_time < restarted_at - grace - step for r in stale), context
        later = [r for r in these if r.scheduled_time > last_claimed]
        kept = [r for r in later if r.state != RunState.CANCELLED]
        skipped = [r for r in later if r.state == RunState.CANCELLED]
        for run in skipped:
            assert not refs(run), context
            assert f"catch-up policy '{policy}'" in (run.state_message or ""), context
        # One run per time, each submitted once its time (or the restart) has passed.
        times = [r.scheduled_time for r in these]
        assert times == sorted(set(times)), context
        assert all(refs(r) for r in kept if r.scheduled_time <= due_by), context + log
        if policy == "all":
            # Every missed time runs, once; nothing is skipped.
            assert skipped == [], context
            start = last_claimed
        else:
            # The runs created ahead before the outage are skipped, not submitted, and no run
            # is created for the other missed times.
            submitted_stale = [r for r in stale if r.state != RunState.CANCELLED]
            assert submitted_stale == [], (
                "runs created before the outage and missed by more than the grace were "
                f"submitted instead of skipped by catch-up {policy!r}\n{context}"
            )
            # Also skipped may be one time at the boundary: missed by just over `grace` when
            # the scheduler's first pass (slower to come under load) created it.
            stale_ids = {r.id for r in stale}
            boundary = [r for r in skipped if r.id not in stale_ids]
            assert stale_ids <= {r.id for r in skipped}, context
            assert all(r.scheduled_time <= first_fill - grace + step for r in boundary), context
            assert len(boundary) <= 1, context
            first_kept = kept[0].scheduled_time
            if policy == "latest":
                # Exactly one run for the missed times: the most recent one.
                assert restarted_at - grace - step < first_kept <= first_fill - grace, context
                assert len([r for r in kept if r.scheduled_time <= restarted_at - grace]) <= 1
                start = first_kept - step
            else:
                # None for the missed times: the first is the first time not missed.
                latest_first = first_fill - grace + step * (2 if boundary else 1)
                assert restarted_at - grace < first_kept <= latest_first, context
                start = first_kept - step
        # From there on, every time of the grid, none skipped.
        assert [r.scheduled_time for r in kept if r.scheduled_time <= due_by] == grid(
            schedule, start, due_by
        ), context

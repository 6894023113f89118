"""Fault tests of the dispatcher and reconciler, end to end: real control-plane processes, an
`ecs:push` pool on moto_server, and a fault-injecting proxy between them
(`skylane.testing.aws_faults`) that throttles, refuses or times out ECS calls.

On PostgreSQL the control plane is split as in production: one `server start --services
api,reconciler` and three `server start --services dispatcher` replicas. On SQLite one process
runs everything. What is checked is what a user would check in their AWS account: one ECS task
per run, never two, none lost; the rate limit held; the run's final state and message.
"""

from __future__ import annotations

import functools
import random
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from skylane.client import SkylaneClient
from skylane.models import Run, RunState
from skylane.testing.aws_faults import FaultProxy, token_bucket_violations
from skylane.testing.databases import reset_postgres_schema
from skylane.testing.moto import FAKE_AWS_ENV
from skylane.testing.server import SKYLANE, ServerProcess, running_server
from skylane.testing.waiting import wait_until
from tests.e2e.conftest import ECS_CLUSTER as CLUSTER

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flows:1.0"
REPLICAS = 3

# Short leases and deadlines so recoveries happen within seconds. The lease must outlive a
# whole submission (submit deadline plus one call's timeout) or a live replica could lose a
# claim it is submitting.
# moto ignores RunTask's clientToken, which is what makes a timed-out RunTask safe to repeat on
# real ECS; here only the look-up before the retry protects it, and that cannot see a task moto
# is still creating. So moto is kept responsive (8 submit threads per replica, a 2 s timeout):
# what these tests exercise is the kills and the injected faults, not an overloaded moto.
FAULT_SETTINGS = {
    **FAKE_AWS_ENV,
    "SKYLANE_CLAIM_LEASE_SECONDS": "7",
    "SKYLANE_SUBMIT_DEADLINE_SECONDS": "4",
    "SKYLANE_PROVIDER_TIMEOUT_SECONDS": "2",
    "SKYLANE_DISPATCHER_CONCURRENCY": "8",
    "SKYLANE_DISPATCHER_INTERVAL_SECONDS": "1",
    "SKYLANE_RECONCILER_INTERVAL_SECONDS": "0.5",
    "SKYLANE_HEARTBEAT_SECONDS": "1",
    "SKYLANE_CRASH_GRACE_SECONDS": "1",
    "SKYLANE_MAX_SUBMIT_ATTEMPTS": "10",
}


@pytest.fixture(scope="module")
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, seed=7) as started:
        yield started


@pytest.fixture
def ecs(aws: boto3.Session, moto_endpoint: str, proxy: FaultProxy) -> Any:
    """An ECS client on moto directly (not through the proxy): the user's view of the account."""
    proxy.clear_rules()
    proxy.reset_calls()
    return aws.client("ecs", endpoint_url=moto_endpoint)


@dataclass
class ControlPlane:
    """The API server (with the reconciler, and on SQLite the dispatcher) and, on PostgreSQL,
    dispatcher replicas that a test may kill and restart."""

    server: ServerProcess
    database_url: str
    replica_logs: Path
    replicas: list[subprocess.Popen[bytes]] = field(default_factory=list)
    restarts: int = 0

    @functools.cached_property
    def client(self) -> SkylaneClient:
        return self.server.client()

    def start_replica(self, index: int) -> subprocess.Popen[bytes]:
        env = {**self.server.env}
        log = (self.replica_logs / f"dispatcher-{index}.log").open("ab")
        process = subprocess.Popen(
            [*SKYLANE, "server", "start", "--services", "dispatcher"],
            env=env,
            cwd=self.server.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return process

    def kill_and_restart(self, index: int) -> None:
        self.replicas[index].kill()
        self.replicas[index].wait()
        self.replicas[index] = self.start_replica(index)
        self.restarts += 1

    def stop_replicas(self) -> None:
        for process in self.replicas:
            if process.poll() is None:
                process.terminate()
        for process in self.replicas:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    def logs(self) -> str:
        parts = [self.server.log_tail(3000)]
        for path in sorted(self.replica_logs.glob("dispatcher-*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def plane(
    request: pytest.FixtureRequest, tmp_path: Path, ecs: object, proxy: FaultProxy
) -> Iterator[ControlPlane]:
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'skylane.db'}"
        services = "api,dispatcher,reconciler"
    else:
        database_url = request.getfixturevalue("postgres_server_url")
        reset_postgres_schema(database_url)
        services = "api,reconciler"
    logs = tmp_path / "logs"
    logs.mkdir()
    with running_server(
        database_url,
        workdir=tmp_path / "project",
        home=tmp_path / "home",
        services=services,
        settings=FAULT_SETTINGS,
    ) as server:
        started = ControlPlane(server=server, database_url=database_url, replica_logs=logs)
        if request.param == "postgres":
            started.replicas = [started.start_replica(i) for i in range(REPLICAS)]
        try:
            yield started
        finally:
            started.stop_replicas()


def make_pool(plane: ControlPlane, proxy: FaultProxy, **settings: object) -> uuid.UUID:
    """An ecs:push pool whose AWS calls go through the proxy, and one deployment; its id."""
    client = plane.client
    client.create_pool(
        name="aws",
        type="ecs:push",
        settings={"region": "us-east-1", "endpoint_url": proxy.url, **settings},
    )
    deployment = client.create_deployment(
        flow_name="etl",
        name="nightly",
        pool="aws",
        entrypoint="flows/etl.py:etl",
        image=IMAGE,
        job_variables={"cluster": CLUSTER},
    )
    return deployment.id


def create_runs(
    plane: ControlPlane, deployment_id: uuid.UUID, count: int, *, due_in: float = 0
) -> list[uuid.UUID]:
    """`count` runs all due at the same instant, `due_in` seconds from now."""
    due = datetime.now(UTC) + timedelta(seconds=due_in)
    return [plane.client.create_run(deployment_id, scheduled_time=due).id for _ in range(count)]


def submitted_run(plane: ControlPlane, run_id: uuid.UUID) -> Run:
    def check() -> Run | None:
        run = plane.client.get_run(run_id)
        assert not run.state.is_terminal, run.state_message
        return run if submitted_refs(run) else None

    return wait_until(check, f"run {run_id} to be submitted", context=plane.logs)


def ended_run(plane: ControlPlane, run_id: uuid.UUID, timeout: float = 60.0) -> Run:
    def check() -> Run | None:
        run = plane.client.get_run(run_id)
        return run if run.state.is_terminal else None

    return wait_until(check, f"run {run_id} to end", timeout=timeout, context=plane.logs)


def all_runs(plane: ControlPlane) -> list[Run]:
    return plane.client.list_runs(limit=1000)


def submitted_refs(run: Run) -> list[str]:
    return [a.provider_ref for a in run.attempts if a.provider_ref]


def tasks_by_run(ecs: Any) -> Counter[str]:
    """How many ECS tasks exist for each run id (tag skylane-run-id), running or stopped."""
    arns: list[str] = []
    for desired in ("RUNNING", "STOPPED"):
        for page in ecs.get_paginator("list_tasks").paginate(
            cluster=CLUSTER, desiredStatus=desired
        ):
            arns.extend(page["taskArns"])
    counts: Counter[str] = Counter()
    for start in range(0, len(arns), 100):
        described = ecs.describe_tasks(
            cluster=CLUSTER, tasks=arns[start : start + 100], include=["TAGS"]
        )
        for task in described["tasks"]:
            tags = {t["key"]: t["value"] for t in task.get("tags", [])}
            counts[tags.get("skylane-run-id", "?")] += 1
    return counts


def assert_one_task_per_run(ecs: Any, runs: list[Run]) -> None:
    counts = tasks_by_run(ecs)
    expected = {str(run.id): 1 for run in runs}
    assert dict(counts) == expected, {k: v for k, v in counts.items() if v != 1}
    for run in runs:
        refs = submitted_refs(run)
        assert len(refs) == 1, (run.id, run.attempts)


# --- 1. replicas killed while 200 runs are due ---------------------------------------------


@pytest.mark.parametrize(
    "plane", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_replicas_killed_mid_dispatch_lose_no_run_and_start_none_twice(
    plane: ControlPlane, proxy: FaultProxy, ecs: Any
) -> None:
    deployment_id = make_pool(plane, proxy)
    run_ids = create_runs(plane, deployment_id, 200, due_in=1.0)

    stop = threading.Event()
    chooser = random.Random(11)

    def chaos() -> None:
        while not stop.wait(chooser.uniform(0.3, 0.6)):
            plane.kill_and_restart(chooser.randrange(REPLICAS))

    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()
    try:
        time.sleep(8)  # kill replicas while the 200 runs are being claimed and submitted
    finally:
        stop.set()
        killer.join()

    def all_submitted() -> list[Run] | None:
        runs = all_runs(plane)
        if len(runs) == 200 and all(submitted_refs(r) for r in runs):
            return runs
        return None

    runs = wait_until(all_submitted, "every run to be submitted", timeout=90, context=plane.logs)
    assert plane.restarts >= 10
    assert {r.id for r in runs} == set(run_ids)
    assert_one_task_per_run(ecs, runs)
    # Each task was recorded once, on the run it belongs to.
    refs = [submitted_refs(r)[0] for r in runs]
    assert len(set(refs)) == 200


# --- 2. the task is created, then the call times out -----------------------------------------


def test_a_timed_out_run_task_is_adopted_not_repeated(
    plane: ControlPlane, proxy: FaultProxy, ecs: Any
) -> None:
    deployment_id = make_pool(plane, proxy)
    # moto creates the task; the answer comes after the client's 2 s read timeout.
    proxy.timeout_after_forward("RunTask", delay=4.0, count=1)
    [run_id] = create_runs(plane, deployment_id, 1)

    run = submitted_run(plane, run_id)
    assert_one_task_per_run(ecs, [run])
    run_tasks = proxy.calls("RunTask")
    assert [c.outcome for c in run_tasks] == ["timeout"], run_tasks
    # The retry looked the key up (ListTasks by startedBy) instead of starting another task.
    started_by = [c.request_json["startedBy"] for c in proxy.calls("ListTasks")]
    assert run_tasks[0].request_json["startedBy"] in started_by
    assert len(run.attempts) == 1


# --- 3. half the RunTask calls throttled -----------------------------------------------------

BURST, PER_SECOND = 5, 10.0


@pytest.mark.parametrize(
    "plane", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_throttled_run_tasks_are_retried_within_the_shared_rate_limit(
    plane: ControlPlane, proxy: FaultProxy, ecs: Any
) -> None:
    # A small limit, so that it binds within the test; all three replicas share it (on
    # PostgreSQL only: one SQLite dispatcher sharing a limit with itself proves less).
    deployment_id = make_pool(
        plane, proxy, rate_limits=[{"burst": BURST, "per_second": PER_SECOND}]
    )
    proxy.throttle("RunTask", probability=0.5)
    run_ids = create_runs(plane, deployment_id, 60, due_in=1.0)

    def all_submitted() -> list[Run] | None:
        runs = [plane.client.get_run(run_id) for run_id in run_ids]
        return runs if all(submitted_refs(r) for r in runs) else None

    runs = wait_until(all_submitted, "every run to be submitted", timeout=120, context=plane.logs)
    assert all(r.state == RunState.PENDING for r in runs), [r.state_message for r in runs]
    assert_one_task_per_run(ecs, runs)
    calls = proxy.calls("RunTask")
    outcomes = Counter(c.outcome for c in calls)
    assert outcomes["forwarded"] == 60
    assert outcomes["throttled"] >= 20  # about as many as were forwarded
    # Every RunTask call, throttled or not, took a token: at most BURST + PER_SECOND * T calls
    # in any interval of T seconds. One call of slack for the moment between taking the token
    # and the request reaching the proxy.
    times = sorted(c.received_at for c in calls)
    assert token_bucket_violations(times, BURST, PER_SECOND, slack=1) == []


# --- 4. a permanent error --------------------------------------------------------------------


# The dispatcher's and reconciler's decision here is the same on either database; the
# replicas sharing PostgreSQL are what tests 1-3 are about. SQLite only, for CI time.
@pytest.mark.parametrize("plane", ["sqlite"], indirect=True)
def test_a_permanent_error_fails_the_run_after_one_call(
    plane: ControlPlane, proxy: FaultProxy, ecs: Any
) -> None:
    deployment_id = make_pool(plane, proxy)
    proxy.error(
        "RunTask",
        "AccessDeniedException",
        "User: arn:aws:sts::123456789012:assumed-role/ctl/s is not authorized to perform: "
        "ecs:RunTask on resource: *",
    )
    [run_id] = create_runs(plane, deployment_id, 1)
    run = ended_run(plane, run_id)
    assert run.state == RunState.FAILED
    assert "ecs:RunTask" in (run.state_message or "")
    assert "denied" in (run.state_message or "")
    time.sleep(2)  # no late retry by any replica
    assert len(proxy.calls("RunTask")) == 1
    assert tasks_by_run(ecs) == Counter()
    assert len(plane.client.get_run(run_id).attempts) == 1


# --- 5. the runtime stops heartbeating and the task has stopped -------------------------------


# The dispatcher's and reconciler's decision here is the same on either database; the
# replicas sharing PostgreSQL are what tests 1-3 are about. SQLite only, for CI time.
@pytest.mark.parametrize("plane", ["sqlite"], indirect=True)
def test_a_run_that_stops_heartbeating_with_its_task_stopped_is_crashed(
    plane: ControlPlane, proxy: FaultProxy, ecs: Any
) -> None:
    deployment_id = make_pool(plane, proxy)
    [run_id] = create_runs(plane, deployment_id, 1)
    submitted_run(plane, run_id)
    # Play the runtime inside the task: it has the run token from the task's environment.
    [call] = [c for c in proxy.calls("RunTask") if c.outcome == "forwarded"]
    [override] = call.request_json["overrides"]["containerOverrides"]
    env = {e["name"]: e["value"] for e in override["environment"]}
    runtime = SkylaneClient(plane.server.url, env["SKYLANE_RUN_TOKEN"])
    runtime.set_state(run_id, RunState.RUNNING)
    for _ in range(3):
        runtime.heartbeat(run_id)
        time.sleep(0.5)
    assert plane.client.get_run(run_id).state == RunState.RUNNING

    # The container dies with the runtime: no more heartbeats, and ECS stops the task.
    [arn] = ecs.list_tasks(cluster=CLUSTER)["taskArns"]
    ecs.stop_task(cluster=CLUSTER, task=arn, reason="Essential container in task exited")

    crashed = ended_run(plane, run_id, timeout=30)
    assert crashed.state == RunState.CRASHED
    assert "missed 3 heartbeats" in (crashed.state_message or "")
    # The reconciler records the cleanup just after the crash, not in the same write: a reader
    # can see CRASHED first.
    wait_until(
        lambda: plane.client.get_run(run_id).attempts[-1].cleaned_up_at,
        "the crashed run's attempt to be cleaned up",
        timeout=30,
        context=plane.logs,
    )

"""The Cloud Run Admin API v2 emulator (`skylane.testing.gcp`), driven through the official
`google-cloud-run` client over REST (and `google-cloud-logging` over HTTP for its logs), pointed
at it with an `http://` api_endpoint and anonymous credentials.

Over REST the client picks the exception class from the HTTP status alone, so a 409
ALREADY_EXISTS is raised as `Conflict` (not its subclass `AlreadyExists`), a 429
RESOURCE_EXHAUSTED as `TooManyRequests`, a 400 INVALID_ARGUMENT as `BadRequest` and a 403 as
`Forbidden`; the canonical status is in the response body."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

pytest.importorskip("google.cloud.run_v2")
pytest.importorskip("google.cloud.logging")

from google.api_core import exceptions as gexc  # noqa: E402
from google.api_core.client_options import ClientOptions  # noqa: E402
from google.api_core.future.polling import DEFAULT_POLLING  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import logging as gcl  # noqa: E402
from google.cloud import run_v2  # noqa: E402
from google.cloud.logging_v2.entries import LogEntry  # noqa: E402
from google.cloud.logging_v2.types import ListLogEntriesResponse  # noqa: E402
from google.longrunning import operations_pb2  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from skylane.testing.gcp import CloudRunEmulator, Fault  # noqa: E402
from skylane.testing.server import stop_process  # noqa: E402
from skylane.testing.waiting import wait_until as shared_wait_until  # noqa: E402

PARENT = "projects/p/locations/europe-west1"
# operation.result() polls after 1 s by default; the emulator's operations finish in ms.
FAST = DEFAULT_POLLING.with_delay(initial=0.01, maximum=0.05, multiplier=1.5)
Condition = run_v2.Condition


@pytest.fixture(scope="module")
def server() -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator(start_seconds=0.02, run_seconds=0.08) as started:
        yield started


@pytest.fixture
def emulator(server: CloudRunEmulator) -> CloudRunEmulator:
    server.reset()  # back to the constructor's timings, without faults, state or log
    return server


def clients(url: str) -> tuple[run_v2.JobsClient, run_v2.ExecutionsClient]:
    options = ClientOptions(api_endpoint=url)
    return (
        run_v2.JobsClient(
            transport="rest", client_options=options, credentials=AnonymousCredentials()
        ),
        run_v2.ExecutionsClient(
            transport="rest", client_options=options, credentials=AnonymousCredentials()
        ),
    )


@pytest.fixture
def jobs(emulator: CloudRunEmulator) -> run_v2.JobsClient:
    return clients(emulator.url)[0]


@pytest.fixture
def executions(emulator: CloudRunEmulator) -> run_v2.ExecutionsClient:
    return clients(emulator.url)[1]


def a_job(token: str | None = None, **container: Any) -> run_v2.Job:
    template = run_v2.ExecutionTemplate(
        labels={"skylane-run": "r1"},
        template=run_v2.TaskTemplate(
            containers=[
                run_v2.Container(
                    image="python:3.12-slim",
                    env=[run_v2.EnvVar(name="SKYLANE_RUN_ID", value="r1")],
                    **container,
                )
            ],
            max_retries=0,
        ),
    )
    return run_v2.Job(template=template, start_execution_token=token)


def create(jobs: run_v2.JobsClient, job_id: str, token: str | None = "tok") -> run_v2.Job:
    operation = jobs.create_job(parent=PARENT, job_id=job_id, job=a_job(token))
    return operation.result(timeout=5, polling=FAST)


def execution_name(job_id: str, execution_id: str) -> str:
    return f"{PARENT}/jobs/{job_id}/executions/{execution_id}"


def completed(execution: run_v2.Execution) -> run_v2.Condition:
    return next(c for c in execution.conditions if c.type_ == "Completed")


def wait_until(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    return shared_wait_until(check, "the emulator", timeout=timeout, interval=0.01)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def standalone_server(*flags: str) -> Iterator[str]:
    """`python -m skylane.testing.gcp` in a subprocess, its URL; it must exit 0 on SIGTERM."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skylane.testing.gcp",
            "--port",
            "0",
            "--start-seconds",
            "0",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        yield url
    finally:
        stop_process(process, grace=10)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""


def test_create_with_start_execution_token_starts_the_named_execution(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    job = create(jobs, "skylane-a1", token="r1")

    assert job.name == f"{PARENT}/jobs/skylane-a1"
    assert job.latest_created_execution.name == "skylane-a1-r1"
    assert job.execution_count == 1
    assert job.template.template.containers[0].image == "python:3.12-slim"
    created = emulator.requests(rpc="CreateJob")[0]
    assert created.query["jobId"] == "skylane-a1"
    assert created.body["startExecutionToken"] == "r1"

    execution = executions.get_execution(name=execution_name("skylane-a1", "skylane-a1-r1"))
    assert execution.job == "skylane-a1"
    assert execution.task_count == 1
    assert execution.labels == {"skylane-run": "r1"}
    env = execution.template.containers[0].env
    assert [(v.name, v.value) for v in env] == [("SKYLANE_RUN_ID", "r1")]
    assert execution.log_uri.startswith("https://console.cloud.google.com/logs/")
    assert "skylane-a1-r1" in execution.log_uri


def test_execution_goes_running_then_succeeded(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    emulator.configure(job="job", run_seconds=0.3)  # a running window polling cannot miss
    jobs.create_job(parent=PARENT, job_id="job", job=a_job("t"))
    name = execution_name("job", "job-t")

    running = wait_until(lambda: (e := executions.get_execution(name=name)).running_count and e)
    assert running.start_time and not running.completion_time
    assert running.reconciling
    assert completed(running).state == Condition.State.CONDITION_RECONCILING

    done = wait_until(lambda: (e := executions.get_execution(name=name)).completion_time and e)
    assert done.succeeded_count == 1
    assert done.running_count == 0 and done.failed_count == 0
    assert not done.reconciling
    assert completed(done).state == Condition.State.CONDITION_SUCCEEDED
    assert done.start_time <= done.completion_time
    reference = jobs.get_job(name=f"{PARENT}/jobs/job").latest_created_execution
    assert (
        reference.completion_status
        == run_v2.ExecutionReference.CompletionStatus.EXECUTION_SUCCEEDED
    )


def test_progression_follows_the_clock() -> None:
    clock = FakeClock()
    with CloudRunEmulator(start_seconds=10, run_seconds=60, clock=clock) as emulator:
        jobs, executions = clients(emulator.url)
        operation = jobs.create_job(parent=PARENT, job_id="slow", job=a_job("t"))
        # With a start token the create operation is done once the execution has started.
        assert not operation.done()
        name = execution_name("slow", "slow-t")

        pending = executions.get_execution(name=name)
        assert pending.reconciling and not pending.start_time and pending.running_count == 0
        assert completed(pending).state == Condition.State.CONDITION_PENDING
        assert jobs.get_job(name=f"{PARENT}/jobs/slow").reconciling

        clock.now += 10
        assert operation.done()
        assert operation.result().latest_created_execution.name == "slow-t"
        running = executions.get_execution(name=name)
        assert running.running_count == 1
        assert running.start_time.timestamp() == pytest.approx(clock.now)

        clock.now += 59.9
        assert not executions.get_execution(name=name).completion_time
        clock.now += 0.1
        finished = executions.get_execution(name=name)
        assert finished.succeeded_count == 1
        assert finished.completion_time.timestamp() == pytest.approx(clock.now)


def test_duplicate_create_conflicts_and_keeps_one_execution(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    create(jobs, "dup", token="t1")

    with pytest.raises(gexc.Conflict) as raised:
        jobs.create_job(parent=PARENT, job_id="dup", job=a_job("t1"))

    assert raised.value.response.json()["error"]["status"] == "ALREADY_EXISTS"
    assert "already exists" in raised.value.message
    listed = list(executions.list_executions(parent=f"{PARENT}/jobs/dup"))
    assert [e.name for e in listed] == [execution_name("dup", "dup-t1")]
    assert len(emulator.executions("dup")) == 1


def test_run_job_with_overrides(
    jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    create(jobs, "runner", token=None)
    overrides = run_v2.RunJobRequest.Overrides(
        container_overrides=[
            run_v2.RunJobRequest.Overrides.ContainerOverride(
                env=[run_v2.EnvVar(name="SKYLANE_RUN_ID", value="r2")], args=["--fast"]
            )
        ],
        task_count=2,
    )

    operation = jobs.run_job(
        request=run_v2.RunJobRequest(name=f"{PARENT}/jobs/runner", overrides=overrides)
    )

    # RunJob's operation is done when the execution is; its metadata names it at once.
    name = operation.metadata.name
    assert name.startswith(f"{PARENT}/jobs/runner/executions/runner-")
    assert len(name.rsplit("-", 1)[1]) == 5
    started = executions.get_execution(name=name)
    container = started.template.containers[0]
    assert [(v.name, v.value) for v in container.env] == [("SKYLANE_RUN_ID", "r2")]
    assert list(container.args) == ["--fast"]
    assert started.task_count == 2
    result = operation.result(timeout=5, polling=FAST)
    assert result.name == name
    assert result.succeeded_count == 2


def test_get_and_list_executions_newest_first_across_pages(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    create(jobs, "lister", token="first")
    second = jobs.run_job(name=f"{PARENT}/jobs/lister").metadata.name
    third = jobs.run_job(name=f"{PARENT}/jobs/lister").metadata.name

    pager = executions.list_executions(
        request=run_v2.ListExecutionsRequest(parent=f"{PARENT}/jobs/lister", page_size=2)
    )

    assert [e.name for e in pager] == [third, second, execution_name("lister", "lister-first")]
    assert len(emulator.requests(rpc="ListExecutions")) == 2
    assert executions.get_execution(name=second).name == second
    with pytest.raises(gexc.NotFound):
        executions.get_execution(name=execution_name("lister", "lister-nope"))


def test_cancel_execution(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    emulator.hold_execution("held-t")
    create(jobs, "held", token="t")
    name = execution_name("held", "held-t")
    wait_until(lambda: executions.get_execution(name=name).running_count)

    cancelled = executions.cancel_execution(name=name).result(timeout=5, polling=FAST)

    assert cancelled.cancelled_count == 1
    assert cancelled.running_count == 0 and cancelled.succeeded_count == 0
    assert cancelled.completion_time
    assert completed(cancelled).state == Condition.State.CONDITION_FAILED
    assert completed(cancelled).execution_reason == Condition.ExecutionReason.CANCELLED
    assert executions.get_execution(name=name).cancelled_count == 1
    with pytest.raises(gexc.BadRequest) as raised:
        executions.cancel_execution(name=name)
    assert raised.value.response.json()["error"]["status"] == "FAILED_PRECONDITION"


def test_delete_job_deletes_its_executions(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    create(jobs, "gone", token="t")

    deleted = jobs.delete_job(name=f"{PARENT}/jobs/gone").result(timeout=5, polling=FAST)

    assert deleted.name == f"{PARENT}/jobs/gone" and deleted.delete_time
    with pytest.raises(gexc.NotFound) as raised:
        jobs.get_job(name=f"{PARENT}/jobs/gone")
    assert raised.value.response.json()["error"]["status"] == "NOT_FOUND"
    with pytest.raises(gexc.NotFound):
        executions.get_execution(name=execution_name("gone", "gone-t"))
    with pytest.raises(gexc.NotFound):
        jobs.delete_job(name=f"{PARENT}/jobs/gone")
    assert emulator.executions() == []
    # The id is free again.
    assert create(jobs, "gone", token="t").execution_count == 1


def test_injected_errors_surface_as_api_exceptions(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient
) -> None:
    create(jobs, "faulty", token=None)
    name = f"{PARENT}/jobs/faulty"
    emulator.throttle(rpc="GetJob", count=2)
    emulator.unavailable(method="POST", path="*:run")
    emulator.internal_error(rpc="GetJob")

    for _ in range(2):
        with pytest.raises(gexc.TooManyRequests) as throttled:
            jobs.get_job(name=name)
        assert throttled.value.response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
        assert throttled.value.reason == "RATE_LIMIT_EXCEEDED"
    with pytest.raises(gexc.ServiceUnavailable):
        jobs.run_job(name=name)
    with pytest.raises(gexc.InternalServerError):
        jobs.get_job(name=name)

    assert jobs.get_job(name=name).name == name
    assert emulator.executions("faulty") == []  # the refused run started nothing
    assert [r.status for r in emulator.requests(rpc="GetJob")] == [429, 429, 500, 200]
    assert all(f.exhausted for f in emulator.faults())


def test_faults_over_http(emulator: CloudRunEmulator, jobs: run_v2.JobsClient) -> None:
    added = httpx.post(
        f"{emulator.url}/emulator/faults",
        json={"kind": "error", "code": 503, "rpc": "CreateJob", "count": None},
    ).json()["faults"][0]

    for _ in range(2):
        with pytest.raises(gexc.ServiceUnavailable) as raised:
            jobs.create_job(parent=PARENT, job_id="later", job=a_job())
        assert raised.value.response.json()["error"] == {
            "code": 503,
            "message": "The service is currently unavailable.",
            "status": "UNAVAILABLE",
        }
    listed = httpx.get(f"{emulator.url}/emulator/faults").json()["faults"]
    assert [(f["id"], f["fired"]) for f in listed] == [(added["id"], 2)]
    assert httpx.delete(f"{emulator.url}/emulator/faults/{added['id']}").status_code == 200

    assert create(jobs, "later").name == f"{PARENT}/jobs/later"
    bad = httpx.post(f"{emulator.url}/emulator/faults", json={"kind": "error", "cod": 429})
    assert bad.status_code == 400


def test_forbidden_project_names_the_permission(jobs: run_v2.JobsClient) -> None:
    with CloudRunEmulator(forbidden_projects=["locked"]) as emulator:
        locked, _ = clients(emulator.url)
        with pytest.raises(gexc.Forbidden) as raised:
            locked.create_job(parent="projects/locked/locations/l", job_id="j", job=a_job())
    assert "Permission 'run.jobs.create' denied" in raised.value.message
    assert raised.value.metadata == {"permission": "run.jobs.create"}
    assert raised.value.response.json()["error"]["status"] == "PERMISSION_DENIED"


def test_failed_execution_carries_the_message(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    message = "Task skylane-x-t-task0 failed with exit code 1"
    emulator.fail_execution("skylane-x-t", message)
    create(jobs, "skylane-x", token="t")
    name = execution_name("skylane-x", "skylane-x-t")

    failed = wait_until(lambda: (e := executions.get_execution(name=name)).completion_time and e)

    assert failed.failed_count == 1 and failed.succeeded_count == 0
    assert completed(failed).state == Condition.State.CONDITION_FAILED
    assert completed(failed).message == message
    assert completed(failed).execution_reason == Condition.ExecutionReason.NON_ZERO_EXIT_CODE

    # A job-wide outcome; RunJob's operation then ends in error with the message.
    emulator.configure(job="skylane-x", outcome="failed", message="boom")
    operation = jobs.run_job(name=f"{PARENT}/jobs/skylane-x")
    with pytest.raises(gexc.FailedPrecondition, match="boom"):
        operation.result(timeout=5, polling=FAST)
    assert completed(executions.get_execution(name=operation.metadata.name)).message == "boom"


def test_held_execution_finishes_when_told(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    emulator.configure(job="manual", outcome="manual")
    create(jobs, "manual", token="t")
    name = execution_name("manual", "manual-t")
    wait_until(lambda: executions.get_execution(name=name).running_count)
    time.sleep(0.15)  # longer than run_seconds
    assert executions.get_execution(name=name).running_count == 1

    emulator.finish_execution("manual-t", "failed", "Task manual-t-task0 failed: OOM")

    finished = executions.get_execution(name=name)
    assert finished.failed_count == 1
    assert completed(finished).message == "Task manual-t-task0 failed: OOM"
    with pytest.raises(ValueError):
        emulator.finish_execution("manual-t")
    # Over HTTP as well.
    emulator.hold_execution("manual2-t")
    create(jobs, "manual2", token="t")
    answer = httpx.post(
        f"{emulator.url}/emulator/finish", json={"execution": "manual2-t", "outcome": "succeeded"}
    )
    assert answer.status_code == 200 and answer.json()["succeededCount"] == 1


def test_timeout_after_create_leaves_the_job_created(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    emulator.timeout_after(rpc="CreateJob", seconds=2)

    # The REST transport lets the requests exception through, unwrapped.
    with pytest.raises(requests.exceptions.ReadTimeout):
        jobs.create_job(parent=PARENT, job_id="lost", job=a_job("t"), timeout=0.3)

    assert emulator.job("lost")["name"] == f"{PARENT}/jobs/lost"
    with pytest.raises(gexc.Conflict):
        jobs.create_job(parent=PARENT, job_id="lost", job=a_job("t"))
    assert [e["name"] for e in emulator.executions("lost")] == [execution_name("lost", "lost-t")]
    logged = emulator.requests(rpc="CreateJob")
    assert [(r.status, r.dropped) for r in logged] == [(200, True), (409, False)]


def test_timeout_after_drops_the_connection(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient
) -> None:
    emulator.timeout_after(rpc="CreateJob", seconds=0.05)
    with pytest.raises(requests.exceptions.ConnectionError):
        jobs.create_job(parent=PARENT, job_id="dropped", job=a_job())
    assert emulator.job("dropped")


@pytest.mark.parametrize(
    ("job_id", "token"),
    [
        ("Upper", None),
        ("1starts-with-digit", None),
        ("ends-with-hyphen-", None),
        ("under_score", None),
        ("a" * 64, None),
        ("long-enough-job-name", "t" * 43),  # 20 + 43 >= 63
        ("token-case", "Tok"),
    ],
)
def test_invalid_ids_are_refused(jobs: run_v2.JobsClient, job_id: str, token: str | None) -> None:
    with pytest.raises(gexc.BadRequest) as raised:
        jobs.create_job(parent=PARENT, job_id=job_id, job=a_job(token))
    assert raised.value.response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_a_job_needs_an_image(jobs: run_v2.JobsClient) -> None:
    job = run_v2.Job(template=run_v2.ExecutionTemplate(template=run_v2.TaskTemplate()))
    with pytest.raises(gexc.BadRequest, match="container"):
        jobs.create_job(parent=PARENT, job_id="empty", job=job)
    assert create(jobs, "a" * 63, token=None).name.endswith("a" * 63)


def test_request_log_over_http(emulator: CloudRunEmulator, jobs: run_v2.JobsClient) -> None:
    create(jobs, "logged")
    with pytest.raises(gexc.NotFound):
        jobs.get_job(name=f"{PARENT}/jobs/missing")

    logged = httpx.get(f"{emulator.url}/emulator/requests").json()
    create_call = logged[0]
    assert create_call["method"] == "POST"
    assert create_call["path"] == f"/v2/{PARENT}/jobs"
    assert create_call["query"]["jobId"] == "logged"
    assert create_call["body"]["template"]["template"]["containers"][0]["image"]
    assert create_call["status"] == 200
    assert isinstance(create_call["received_at"], float)
    assert logged[-1]["status"] == 404
    only = httpx.get(f"{emulator.url}/emulator/requests", params={"rpc": "GetJob"}).json()
    assert [r["path"] for r in only] == [f"/v2/{PARENT}/jobs/missing"]

    assert httpx.post(f"{emulator.url}/emulator/reset").status_code == 200
    assert httpx.get(f"{emulator.url}/emulator/requests").json() == []
    with pytest.raises(gexc.NotFound):
        jobs.get_job(name=f"{PARENT}/jobs/logged")


def test_answers_parse_strictly_as_the_api_types(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    """Every answer is valid for the proto messages, with no unknown fields (the client parses
    most answers leniently, so a misspelt field would otherwise go unnoticed)."""
    create(jobs, "strict", token="t")
    name = execution_name("strict", "strict-t")
    wait_until(lambda: executions.get_execution(name=name).completion_time)
    jobs.get_job(name=f"{PARENT}/jobs/strict")
    list(jobs.list_jobs(parent=PARENT))
    list(executions.list_executions(parent=f"{PARENT}/jobs/strict"))
    emulator.configure(job="strict", outcome="manual")
    running = jobs.run_job(name=f"{PARENT}/jobs/strict").metadata.name
    executions.cancel_execution(name=running)
    executions.delete_execution(name=name)
    jobs.delete_job(name=f"{PARENT}/jobs/strict")

    types: dict[str, Any] = {
        "GetJob": run_v2.Job,
        "ListJobs": run_v2.ListJobsResponse,
        "GetExecution": run_v2.Execution,
        "ListExecutions": run_v2.ListExecutionsResponse,
    }
    checked = set()
    for request in emulator.requests():
        assert request.status == 200, request
        message_type = types.get(request.rpc or "")
        message = message_type.pb(message_type()) if message_type else operations_pb2.Operation()
        json_format.ParseDict(request.response, message, ignore_unknown_fields=False)
        checked.add(request.rpc)
    assert checked >= {
        "CreateJob",
        "GetOperation",
        "GetJob",
        "ListJobs",
        "GetExecution",
        "ListExecutions",
        "RunJob",
        "CancelExecution",
        "DeleteExecution",
        "DeleteJob",
    }


def test_concurrent_creates_of_one_id_make_one_job(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient
) -> None:
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            jobs.create_job(parent=PARENT, job_id="race", job=a_job("t"))
            outcomes.append("created")
        except gexc.Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["created"]
    assert len(emulator.executions("race")) == 1


def test_standalone_module_serves_until_terminated() -> None:
    with standalone_server() as url:
        standalone, _ = clients(url)
        with pytest.raises(gexc.NotFound):
            standalone.get_job(name=f"{PARENT}/jobs/nothing")
        assert create(standalone, "remote").name == f"{PARENT}/jobs/remote"
        assert httpx.get(f"{url}/emulator/").json()["jobs"] == 1


def test_fault_rules_validate_their_fields() -> None:
    with pytest.raises(ValueError):
        Fault(kind="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Fault(code=200)
    with pytest.raises(ValueError):
        Fault.from_json({"kind": "error", "probability": 0.5})
    fault = Fault.from_json({"code": 429, "rpc": "RunJob"})
    assert (fault.status, fault.method, fault.count) == ("RESOURCE_EXHAUSTED", "*", 1)
    assert fault.matches("RunJob", "POST", "/v2/x:run")
    assert not fault.matches("GetJob", "GET", "/v2/x")


# -- containers run as processes, and their logs through Cloud Logging ----------------------

SECRETS = {"api-key": "s3cr3t", "projects/p/secrets/db:2": "pw2"}
SYSTEM_LOG = 'logName="projects/p/logs/run.googleapis.com%2Fvarlog%2Fsystem"'


@pytest.fixture(scope="module")
def runner_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudRunEmulator]:
    workdir = tmp_path_factory.mktemp("workdir")
    with CloudRunEmulator(
        start_seconds=0.01, run_containers=True, workdir=workdir, secrets=SECRETS
    ) as started:
        yield started


@pytest.fixture
def runner(runner_server: CloudRunEmulator) -> CloudRunEmulator:
    runner_server.reset()  # also stops what the previous test left running
    return runner_server


def logging_client(url: str) -> gcl.Client:
    return gcl.Client(
        project="p",
        credentials=AnonymousCredentials(),
        _use_grpc=False,
        client_options={"api_endpoint": url},
    )


def execution_logs(url: str, execution_id: str, *more: str) -> list[LogEntry]:
    """The entries of one execution through the Logging client, oldest first; `more`
    comparisons are added on lines of their own."""
    filter_ = "\n".join([f'labels."run.googleapis.com/execution_name"="{execution_id}"', *more])
    logs = logging_client(url)
    return list(
        logs.list_entries(resource_names=["projects/p"], filter_=filter_, order_by=gcl.ASCENDING)
    )


def run_python(
    jobs: run_v2.JobsClient,
    job_id: str,
    code: str,
    *,
    env: Sequence[run_v2.EnvVar] = (),
    timeout: timedelta | None = None,
) -> str:
    """Create job `job_id` running `python -c code`, started at once; its execution's name."""
    job = a_job("t", command=["python", "-c", code])
    job.template.template.containers[0].env.extend(env)
    if timeout is not None:
        job.template.template.timeout = timeout
    jobs.create_job(parent=PARENT, job_id=job_id, job=job)
    return execution_name(job_id, f"{job_id}-t")


def secret_env(name: str, secret: str, version: str) -> run_v2.EnvVar:
    selector = run_v2.SecretKeySelector(secret=secret, version=version)
    return run_v2.EnvVar(name=name, value_source=run_v2.EnvVarSource(secret_key_ref=selector))


def finished(executions: run_v2.ExecutionsClient, name: str) -> run_v2.Execution:
    return wait_until(lambda: (e := executions.get_execution(name=name)).completion_time and e)


def first_line(emulator: CloudRunEmulator, execution_id: str) -> str:
    return wait_until(lambda: emulator.log_entries(execution_id))[0]["textPayload"]


def gone(pid: int) -> bool:
    """Whether process `pid` has ended: no such process, or a zombie (an orphan's zombie waits
    for an init that, in some containers, never reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except ProcessLookupError:  # it went while being read
        return True
    except FileNotFoundError:  # gone meanwhile; without /proc (not Linux) os.kill decided
        return Path("/proc/self").exists()
    # The state follows the command name, in parentheses.
    return stat.rpartition(")")[2].split()[0] == "Z"


def idle(emulator: CloudRunEmulator) -> bool:
    """No process left whose exit is still to be recorded."""
    return httpx.get(f"{emulator.url}/emulator/").json()["processes"] == 0


def test_container_runs_and_its_output_is_logged(runner: CloudRunEmulator) -> None:
    jobs, executions = clients(runner.url)
    # The pause orders the lines: stdout and stderr are read apart, as Cloud Run reads them.
    code = (
        "import sys, time; print('hello', flush=True); time.sleep(0.05); "
        "print('oops', file=sys.stderr)"
    )
    name = run_python(jobs, "hello", code)

    done = finished(executions, name)

    assert done.succeeded_count == 1
    assert completed(done).state == Condition.State.CONDITION_SUCCEEDED
    entries = execution_logs(runner.url, "hello-t")
    assert [(e.payload, e.severity) for e in entries] == [("hello", "DEFAULT"), ("oops", "ERROR")]
    assert [e.log_name for e in entries] == [
        "projects/p/logs/run.googleapis.com%2Fstdout",
        "projects/p/logs/run.googleapis.com%2Fstderr",
    ]
    first = entries[0]
    assert first.resource.type == "cloud_run_job"
    assert first.resource.labels == {
        "project_id": "p",
        "job_name": "hello",
        "location": "europe-west1",
    }
    assert first.labels["run.googleapis.com/task_index"] == "0"
    assert first.labels["run.googleapis.com/task_attempt"] == "0"
    assert first.labels["instanceId"] == entries[1].labels["instanceId"]
    assert first.insert_id != entries[1].insert_id
    assert done.start_time <= first.timestamp <= entries[1].timestamp <= done.completion_time


def test_non_zero_exit_fails_the_execution(runner: CloudRunEmulator) -> None:
    jobs, executions = clients(runner.url)
    name = run_python(jobs, "three", "import sys; sys.exit(3)")

    failed = finished(executions, name)

    assert failed.failed_count == 1 and failed.succeeded_count == 0
    assert completed(failed).message == "Task three-t-task0 failed with exit code 3"
    assert completed(failed).execution_reason == Condition.ExecutionReason.NON_ZERO_EXIT_CODE
    system = execution_logs(runner.url, "three-t", SYSTEM_LOG)
    assert [(e.payload, e.severity) for e in system] == [("Container called exit(3).", "WARNING")]


def test_container_sees_its_env_and_secrets_not_the_hosts(
    runner: CloudRunEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYLANE_HOST_ONLY", "leaked")
    jobs, executions = clients(runner.url)
    env = [
        run_v2.EnvVar(name="GREETING", value="hi"),
        secret_env("API_KEY", "api-key", "latest"),
        secret_env("DB_PASSWORD", "projects/p/secrets/db", "2"),
    ]
    code = "import json, os; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
    name = run_python(jobs, "env", code, env=env)

    assert finished(executions, name).succeeded_count == 1

    seen = json.loads(runner.log_entries("env-t")[0]["textPayload"])
    environment = seen["env"]
    assert environment["GREETING"] == "hi"
    assert environment["SKYLANE_RUN_ID"] == "r1"
    assert environment["API_KEY"] == "s3cr3t"
    assert environment["DB_PASSWORD"] == "pw2"
    assert environment["CLOUD_RUN_EXECUTION"] == "env-t"
    assert environment["CLOUD_RUN_JOB"] == "env"
    assert environment["CLOUD_RUN_TASK_INDEX"] == "0"
    assert environment["CLOUD_RUN_TASK_COUNT"] == "1"
    assert environment["PATH"] == os.environ["PATH"]
    assert "SKYLANE_HOST_ONLY" not in environment
    assert "PYTEST_CURRENT_TEST" not in environment
    assert os.path.realpath(seen["cwd"]) == os.path.realpath(runner.workdir or "")


def test_run_job_overrides_reach_the_process(runner: CloudRunEmulator) -> None:
    jobs, _ = clients(runner.url)
    code = "import os, sys; print(sys.argv[1:], os.environ['SKYLANE_RUN_ID'])"
    jobs.create_job(
        parent=PARENT, job_id="over", job=a_job(command=["python", "-c", code], args=["--slow"])
    )
    override = run_v2.RunJobRequest.Overrides.ContainerOverride(
        env=[run_v2.EnvVar(name="SKYLANE_RUN_ID", value="r2")], args=["--fast"]
    )
    request = run_v2.RunJobRequest(
        name=f"{PARENT}/jobs/over",
        overrides=run_v2.RunJobRequest.Overrides(container_overrides=[override]),
    )

    execution = jobs.run_job(request=request).result(timeout=5, polling=FAST)

    assert execution.succeeded_count == 1
    assert first_line(runner, execution.name) == "['--fast'] r2"


def test_missing_secret_fails_the_execution_without_running(
    runner: CloudRunEmulator, tmp_path: Path
) -> None:
    jobs, executions = clients(runner.url)
    marker = tmp_path / "ran"
    env = [secret_env("TOKEN", "nope", "3")]
    name = run_python(jobs, "nosecret", f"open({str(marker)!r}, 'w').close()", env=env)

    failed = finished(executions, name)

    message = "Secret projects/p/secrets/nope/versions/3 was not found"
    assert failed.failed_count == 1
    assert completed(failed).message == message
    assert not marker.exists()
    assert [e["textPayload"] for e in runner.log_entries("nosecret-t")] == [message]


def test_failed_or_held_plans_run_no_process(runner: CloudRunEmulator, tmp_path: Path) -> None:
    """The way to stand for an image that never starts: the plan decides, nothing runs."""
    jobs, executions = clients(runner.url)
    marker = tmp_path / "ran"
    runner.configure(job="never", outcome="failed", message="Image not found")
    name = run_python(jobs, "never", f"open({str(marker)!r}, 'w').close()")

    failed = finished(executions, name)

    assert completed(failed).message == "Image not found"
    assert not marker.exists()
    assert idle(runner)


def test_cancel_stops_the_process_and_its_children(runner: CloudRunEmulator) -> None:
    jobs, executions = clients(runner.url)
    code = (
        "import os, subprocess, time; child = subprocess.Popen(['sleep', '30']); "
        "print(os.getpid(), child.pid, flush=True); time.sleep(30)"
    )
    name = run_python(jobs, "sleeper", code)
    pid, child = map(int, first_line(runner, "sleeper-t").split())
    assert executions.get_execution(name=name).running_count == 1
    cancelling = time.monotonic()

    executions.cancel_execution(name=name).result(timeout=5, polling=FAST)

    wait_until(lambda: gone(pid) and gone(child))
    # SIGTERM sufficed: SIGKILL would have come after the 3 s grace period.
    assert time.monotonic() - cancelling < 2
    wait_until(lambda: idle(runner))  # its exit was seen, and did not change the state
    after = executions.get_execution(name=name)
    assert after.cancelled_count == 1 and after.failed_count == 0
    assert completed(after).execution_reason == Condition.ExecutionReason.CANCELLED
    [system] = execution_logs(runner.url, "sleeper-t", SYSTEM_LOG)
    assert "cancelled" in system.payload


def test_task_timeout_stops_the_process(runner: CloudRunEmulator) -> None:
    jobs, executions = clients(runner.url)
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(30)"
    name = run_python(jobs, "slowpoke", code, timeout=timedelta(seconds=1))
    pid = int(first_line(runner, "slowpoke-t"))

    failed = finished(executions, name)

    assert failed.failed_count == 1
    assert completed(failed).message == (
        "Task slowpoke-t-task0 exceeded its timeout of 1s and was stopped."
    )
    ran = failed.completion_time - failed.start_time
    assert timedelta(seconds=1) <= ran < timedelta(seconds=1.5)
    wait_until(lambda: gone(pid))


def test_stop_kills_a_process_that_ignores_sigterm() -> None:
    code = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(os.getpid(), flush=True); time.sleep(30)"
    )
    with CloudRunEmulator(start_seconds=0, run_containers=True, stop_grace_seconds=0.2) as emulator:
        jobs, _ = clients(emulator.url)
        run_python(jobs, "stubborn", code)
        pid = int(first_line(emulator, "stubborn-t"))
        stopping = time.monotonic()

    assert gone(pid)
    assert time.monotonic() - stopping < 2
    # Killed by SIGKILL (9) after the grace period: exit code 128 + 9, as a container's.
    assert emulator.execution("stubborn-t")["conditions"][0]["message"].endswith("exit code 137")


def test_processes_die_with_an_emulator_never_stopped() -> None:
    script = """
import time, httpx
from skylane.testing.gcp import CloudRunEmulator
emulator = CloudRunEmulator(start_seconds=0, run_containers=True).start()
container = {"image": "x", "command": ["sh", "-c", "echo $$; exec sleep 30"]}
job = {"template": {"template": {"containers": [container]}}, "startExecutionToken": "t"}
httpx.post(f"{emulator.url}/v2/projects/p/locations/l/jobs", params={"jobId": "j"}, json=job)
while not emulator.log_entries():
    time.sleep(0.01)
print(emulator.log_entries()[0]["textPayload"])
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert gone(int(done.stdout))


def test_timed_executions_log_how_they_ended(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient, executions: run_v2.ExecutionsClient
) -> None:
    emulator.fail_execution("broken-t")
    create(jobs, "broken", token="t")
    emulator.hold_execution("held-t")
    create(jobs, "held", token="t")
    create(jobs, "fine", token="t")
    finished(executions, execution_name("broken", "broken-t"))
    finished(executions, execution_name("fine", "fine-t"))

    executions.cancel_execution(name=execution_name("held", "held-t"))

    assert [e.payload for e in execution_logs(emulator.url, "broken-t")] == [
        "Container called exit(1)."
    ]
    [cancelled] = execution_logs(emulator.url, "held-t")
    assert "held-t was cancelled" in cancelled.payload and cancelled.severity == "WARNING"
    assert execution_logs(emulator.url, "fine-t") == []


def test_list_log_entries_pages_newest_first(
    emulator: CloudRunEmulator, jobs: run_v2.JobsClient
) -> None:
    create(jobs, "pager", token="t")
    jobs.create_job(parent="projects/other/locations/l", job_id="pager", job=a_job("t"))
    for index in range(5):
        emulator.write_log(f"{PARENT}/jobs/pager/executions/pager-t", f"line {index}")
    emulator.write_log("projects/other/locations/l/jobs/pager/executions/pager-t", "elsewhere")
    logs = logging_client(emulator.url)

    newest_first = logs.list_entries(
        resource_names=["projects/p"],
        filter_='resource.labels.job_name="pager"',
        order_by=gcl.DESCENDING,
        page_size=2,
    )

    assert [e.payload for e in newest_first] == [f"line {i}" for i in reversed(range(5))]
    listed = emulator.requests(rpc="ListLogEntries")
    assert [r.body.get("pageToken") for r in listed] == [None, "2", "4"]
    assert [len(r.response["entries"]) for r in listed] == [2, 2, 1]
    for request in listed:
        message = ListLogEntriesResponse.pb(ListLogEntriesResponse())
        json_format.ParseDict(request.response, message, ignore_unknown_fields=False)


def test_filter_by_timestamp_severity_and_text() -> None:
    clock = FakeClock()
    with CloudRunEmulator(clock=clock) as emulator:
        jobs, _ = clients(emulator.url)
        jobs.create_job(parent=PARENT, job_id="timed", job=a_job("t"))
        start = clock.now
        for severity in ("DEBUG", "INFO", "WARNING", "ERROR"):
            emulator.write_log("timed-t", severity.lower(), severity)
            clock.now += 1
        logs = logging_client(emulator.url)

        def payloads(filter_: str) -> list[str]:
            found = logs.list_entries(resource_names=["projects/p"], filter_=filter_)
            return [entry.payload for entry in found]

        since = datetime.fromtimestamp(start + 2, UTC)
        assert payloads(f'timestamp>="{since:%Y-%m-%dT%H:%M:%SZ}"') == ["warning", "error"]
        assert payloads(f'timestamp<"{since.isoformat()}" AND severity>=INFO') == ["info"]
        assert payloads(
            'timestamp>="2023-01-01T00:00:00.000000+0000"\nseverity<="WARNING"\ntextPayload!="info"'
        ) == ["debug", "warning"]
        # The client adds `timestamp>=` a day ago when the filter has none: these are older.
        assert payloads("severity>=DEFAULT") == []


@pytest.mark.parametrize(
    ("filter_", "named"),
    [
        ('severity>=ERROR OR textPayload="boom"', "'OR'"),
        ("NOT severity>=ERROR", "'NOT'"),
        ("(severity>=ERROR)", "'('"),
        ('textPayload:"boom"', "'textPayload:\"boom\"'"),
        ('jsonPayload.message="boom"', "'jsonPayload.message'"),
        ("severity>=LOUD", "'LOUD'"),
    ],
)
def test_unsupported_filters_are_refused(
    emulator: CloudRunEmulator, filter_: str, named: str
) -> None:
    logs = logging_client(emulator.url)
    with pytest.raises(gexc.BadRequest) as raised:
        list(logs.list_entries(resource_names=["projects/p"], filter_=filter_))
    assert named in raised.value.message
    assert raised.value.response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_log_listing_checks_resource_names_and_can_be_faulted(emulator: CloudRunEmulator) -> None:
    logs = logging_client(emulator.url)
    with pytest.raises(gexc.BadRequest, match="folders/1"):
        list(logs.list_entries(resource_names=["folders/1"]))
    emulator.throttle(rpc="ListLogEntries")
    with pytest.raises(gexc.TooManyRequests, match="logging.googleapis.com"):
        list(logs.list_entries(resource_names=["projects/p"]))
    assert [r.status for r in emulator.requests(rpc="ListLogEntries")] == [400, 429]
    assert list(logs.list_entries(resource_names=["projects/p"])) == []


def test_log_entries_outlive_their_job(emulator: CloudRunEmulator, jobs: run_v2.JobsClient) -> None:
    emulator.hold_execution("ephemeral-t")  # running when deleted: that is logged too
    create(jobs, "ephemeral", token="t")
    posted = httpx.post(
        f"{emulator.url}/emulator/logs",
        json={"execution": "ephemeral-t", "text": "bye", "severity": "ERROR", "stream": "stderr"},
    )
    assert posted.status_code == 200
    assert posted.json()["logName"] == "projects/p/logs/run.googleapis.com%2Fstderr"

    jobs.delete_job(name=f"{PARENT}/jobs/ephemeral").result(timeout=5, polling=FAST)

    assert emulator.executions() == []
    listed = httpx.get(f"{emulator.url}/emulator/logs", params={"execution": "ephemeral-t"})
    cancelled = (
        "Execution ephemeral-t was cancelled: its running task ephemeral-t-task0 was stopped."
    )
    assert [(e["textPayload"], e["severity"]) for e in listed.json()] == [
        ("bye", "ERROR"),
        (cancelled, "WARNING"),
    ]
    assert [e.payload for e in execution_logs(emulator.url, "ephemeral-t")] == ["bye", cancelled]
    bad = httpx.post(f"{emulator.url}/emulator/logs", json={"execution": "ephemeral-t"})
    assert bad.status_code == 400
    emulator.reset()
    assert emulator.log_entries() == []


def test_standalone_runs_containers_in_its_workdir(tmp_path: Path) -> None:
    flags = ("--run-containers", "--workdir", str(tmp_path), "--secret", "api-key=from-cli")
    with standalone_server(*flags) as url:
        jobs, executions = clients(url)
        code = "import os; print(os.getcwd(), os.environ['API_KEY'])"
        name = run_python(jobs, "remote", code, env=[secret_env("API_KEY", "api-key", "1")])

        assert finished(executions, name).succeeded_count == 1
        [entry] = execution_logs(url, "remote-t")
    assert entry.payload == f"{os.path.realpath(tmp_path)} from-cli"

"""The Cloud Run Admin API v2 emulator (`skylane.testing.gcp`), driven through the official
`google-cloud-run` client over REST, pointed at it with an `http://` api_endpoint and anonymous
credentials.

Over REST the client picks the exception class from the HTTP status alone, so a 409
ALREADY_EXISTS is raised as `Conflict` (not its subclass `AlreadyExists`), a 429
RESOURCE_EXHAUSTED as `TooManyRequests`, a 400 INVALID_ARGUMENT as `BadRequest` and a 403 as
`Forbidden`; the canonical status is in the response body."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests

pytest.importorskip("google.cloud.run_v2")

from google.api_core import exceptions as gexc  # noqa: E402
from google.api_core.client_options import ClientOptions  # noqa: E402
from google.api_core.future.polling import DEFAULT_POLLING  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import run_v2  # noqa: E402
from google.longrunning import operations_pb2  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from skylane.testing.gcp import CloudRunEmulator, Fault  # noqa: E402

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
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


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
    process = subprocess.Popen(
        [sys.executable, "-m", "skylane.testing.gcp", "--port", "0", "--start-seconds", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        standalone, _ = clients(url)
        with pytest.raises(gexc.NotFound):
            standalone.get_job(name=f"{PARENT}/jobs/nothing")
        assert create(standalone, "remote").name == f"{PARENT}/jobs/remote"
        assert httpx.get(f"{url}/emulator/").json()["jobs"] == 1
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""


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

"""The Cloud Run adapter against `skylane.testing.gcp.CloudRunEmulator`, through the official
`google-cloud-run` client (REST transport, anonymous credentials)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

pytest.importorskip("google.cloud.run_v2")

from skylane import templates  # noqa: E402
from skylane.adapters import adapter_class  # noqa: E402
from skylane.adapters.base import ProviderStatus, RunContext  # noqa: E402
from skylane.adapters.cloud_run import CloudRunAdapter  # noqa: E402
from skylane.adapters.cloud_run_template import (  # noqa: E402
    LABEL_KEEP_JOB,
    CloudRunJobRequest,
    execution_token_for,
    job_id_for,
)
from skylane.errors import (  # noqa: E402
    PermanentProviderError,
    ProviderAuthError,
    ProviderNotFound,
    ThrottledError,
)
from skylane.models import Pool  # noqa: E402
from skylane.pool_types import parse_pool_type  # noqa: E402
from skylane.retries import RetryPolicy  # noqa: E402
from skylane.settings import Settings  # noqa: E402
from skylane.testing.gcp import CloudRunEmulator  # noqa: E402
from skylane.testing.waiting import wait_until  # noqa: E402

PROJECT = "skylane-test"
REGION = "europe-west1"
IMAGE = "python:3.12-slim"
TOKEN = "s3cr3t-run-token-value"


@pytest.fixture(scope="module")
def server() -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator(start_seconds=0.02, run_seconds=0.08) as started:
        yield started


@pytest.fixture
def emulator(server: CloudRunEmulator) -> CloudRunEmulator:
    server.reset()
    return server


def make_pool(url: str, project: str = PROJECT) -> Pool:
    now = datetime.now(UTC)
    return Pool(
        id=uuid.uuid4(),
        name="prod",
        type="cloud-run:push",
        base_job_template=CloudRunAdapter.default_template(),
        settings={"project": project, "region": REGION, "endpoint_url": url},
        created_at=now,
        updated_at=now,
    )


def make_adapter(emulator: CloudRunEmulator, project: str = PROJECT, **settings: Any) -> Any:
    adapter = CloudRunAdapter(make_pool(emulator.url, project), Settings(**settings))
    adapter.retry_policy = RetryPolicy(base=0.0, cap=0.05)
    return adapter


def make_context(key: str) -> RunContext:
    return RunContext(
        run_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        flow_name="etl",
        deployment_name="etl/nightly",
        pool_name="prod",
        entrypoint="flows/etl.py:etl",
        api_url="https://skylane.example.com",
        run_token=TOKEN,
        idempotency_key=key,
        image=IMAGE,
    )


def render(
    adapter: CloudRunAdapter, key: str, job_variables: dict[str, Any] | None = None
) -> CloudRunJobRequest:
    template = adapter.pool.base_job_template
    _, config = templates.resolve_job_configuration(template, {"image": IMAGE}, job_variables)
    return adapter.render(config, make_context(key))


def new_key() -> str:
    return f"skl-{uuid.uuid4().hex}-1"


def wait_for(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    return wait_until(check, "Cloud Run", timeout=timeout, interval=0.01)


def status_of(adapter: CloudRunAdapter, ref: str) -> Any:
    return adapter.statuses([ref])[ref]


def expected_ref(key: str) -> str:
    job = job_id_for(key)
    return (
        f"projects/{PROJECT}/locations/{REGION}/jobs/{job}/executions/"
        f"{job}-{execution_token_for(key)}"
    )


def test_pool_types_resolve_to_the_adapter() -> None:
    for name in ("cloud-run:push", "cloud-run-v2:push", "cloud-run"):
        assert adapter_class(parse_pool_type(name).provider) is CloudRunAdapter


def test_render_and_describe_never_show_the_token(emulator: CloudRunEmulator) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    request = render(adapter, key)
    assert request.project == PROJECT and request.region == REGION
    assert request.job_id == job_id_for(key)
    assert request.job["startExecutionToken"] == execution_token_for(key)
    assert request.job["labels"]["skylane-pool"] == "prod"
    assert TOKEN not in str(adapter.describe(request))
    assert TOKEN not in repr(request)
    assert LABEL_KEEP_JOB not in request.job["labels"]
    kept = render(adapter, key, {"keep_job": True})
    assert kept.keep_job and kept.job["labels"][LABEL_KEEP_JOB] == "true"


def test_submit_runs_to_success_and_is_idempotent(emulator: CloudRunEmulator) -> None:
    emulator.configure(start_seconds=0.1, run_seconds=0.3)
    adapter = make_adapter(emulator)
    key = new_key()
    request = render(adapter, key)

    ref = adapter.submit(request, key)

    assert ref == expected_ref(key)
    assert adapter.submit(request, key) == ref
    assert len(emulator.executions()) == 1
    assert [r.status for r in emulator.requests(rpc="CreateJob")] == [200, 409]
    wait_for(lambda: status_of(adapter, ref).status == ProviderStatus.RUNNING)
    done = wait_for(lambda: (s := status_of(adapter, ref)).status.ended and s)
    assert done.status == ProviderStatus.SUCCEEDED
    assert adapter.find(key) == ref
    sent = emulator.requests(rpc="CreateJob")[0]
    assert TOKEN in str(sent.body)  # the run gets its token; only messages never show it


def test_failed_execution_reports_the_message_and_logs(emulator: CloudRunEmulator) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    execution_id = expected_ref(key).rsplit("/", 1)[-1]
    emulator.fail_execution(execution_id, "Task failed with exit code 3")

    ref = adapter.submit(render(adapter, key), key)

    failed = wait_for(lambda: (s := status_of(adapter, ref)).status.ended and s)
    assert failed.status == ProviderStatus.FAILED
    assert failed.message.startswith("Task failed with exit code 3 — logs: https://")
    assert failed.exit_code == 3


def test_cancel_stops_the_execution(emulator: CloudRunEmulator) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    emulator.hold_execution(expected_ref(key).rsplit("/", 1)[-1])
    ref = adapter.submit(render(adapter, key), key)

    adapter.cancel(ref)

    assert status_of(adapter, ref).status == ProviderStatus.STOPPED
    adapter.cancel(ref)  # already finished: fine


def test_cleanup_deletes_the_job_unless_kept(emulator: CloudRunEmulator) -> None:
    adapter = make_adapter(emulator)
    key, kept_key = new_key(), new_key()
    ref = adapter.submit(render(adapter, key), key)
    kept = adapter.submit(render(adapter, kept_key, {"keep_job": True}), kept_key)
    wait_for(lambda: status_of(adapter, ref).status.ended)
    wait_for(lambda: status_of(adapter, kept).status.ended)

    adapter.cleanup(ref)
    adapter.cleanup(kept)
    adapter.cleanup(ref)  # gone already: fine

    names = [j["name"].rsplit("/", 1)[-1] for j in emulator.jobs() if not j.get("deleteTime")]
    assert names == [job_id_for(kept_key)]
    assert adapter.find(key) is None


@pytest.mark.parametrize("fault", ["unavailable", "internal_error"])
def test_server_error_once_then_success_makes_one_execution(
    emulator: CloudRunEmulator, fault: str
) -> None:
    getattr(emulator, fault)(rpc="CreateJob")
    adapter = make_adapter(emulator)
    key = new_key()

    ref = adapter.submit(render(adapter, key), key)

    assert ref == expected_ref(key)
    assert len(emulator.executions()) == 1
    assert len(emulator.requests(rpc="CreateJob")) == 2
    assert emulator.requests(rpc="GetJob")  # looked before trying again


def test_timeout_on_create_adopts_the_execution(emulator: CloudRunEmulator) -> None:
    emulator.timeout_after(rpc="CreateJob", seconds=1.0)
    adapter = make_adapter(emulator, provider_timeout_seconds=0.3)
    key = new_key()

    ref = adapter.submit(render(adapter, key), key)

    assert ref == expected_ref(key)
    assert len(emulator.executions()) == 1
    assert len(emulator.requests(rpc="CreateJob")) == 1  # found, not created again


def test_throttled_create_is_handed_back_at_once_with_a_30_second_floor(
    emulator: CloudRunEmulator,
) -> None:
    emulator.throttle(rpc="CreateJob", count=1)
    adapter = make_adapter(emulator)
    adapter.retry_policy = RetryPolicy(base=0.0, cap=0.05, longest_sleep=10.0)
    key = new_key()

    with pytest.raises(ThrottledError) as raised:
        adapter.submit(render(adapter, key), key)

    # Not slept on inside the call: the dispatcher frees the claim and retries at the time.
    assert raised.value.retry_after is not None and raised.value.retry_after >= 30.0
    assert raised.value.retryable
    assert len(emulator.requests(rpc="CreateJob")) == 1
    assert emulator.executions() == []


def test_forbidden_project_is_permanent_and_names_the_permission(
    emulator: CloudRunEmulator,
) -> None:
    emulator.forbid_project("locked")
    adapter = make_adapter(emulator, project="locked")
    key = new_key()

    with pytest.raises(PermanentProviderError) as raised:
        adapter.submit(render(adapter, key), key)

    assert "run.jobs.create" in raised.value.message
    assert raised.value.details["permission"] == "run.jobs.create"
    assert isinstance(raised.value, ProviderAuthError)
    assert TOKEN not in str(raised.value)
    assert len(emulator.requests(rpc="CreateJob")) == 1


def test_find_unknown_key_is_none_and_unknown_ref_not_found(emulator: CloudRunEmulator) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    assert adapter.find(key) is None
    state = status_of(adapter, expected_ref(key))
    assert state.status == ProviderStatus.NOT_FOUND
    assert adapter.logs(expected_ref(key)) == []


def test_logs_come_from_cloud_logging_for_that_execution_only_oldest_first(
    emulator: CloudRunEmulator,
) -> None:
    adapter = make_adapter(emulator)
    first_key, second_key = new_key(), new_key()
    first = adapter.submit(render(adapter, first_key), first_key)
    second = adapter.submit(render(adapter, second_key), second_key)
    emulator.write_log(first, "starting")
    emulator.write_log(second, "another run's line")
    time.sleep(0.01)
    middle = datetime.now(UTC)
    time.sleep(0.01)
    emulator.write_log(first, "Traceback: boom", severity="ERROR", stream="stderr")

    lines = adapter.logs(first)

    assert [(line.stream, line.message) for line in lines] == [
        ("stdout", "starting"),
        ("stderr", "Traceback: boom"),
    ]
    assert lines[0].timestamp < lines[1].timestamp
    assert [line.message for line in adapter.logs(first, since=middle)] == ["Traceback: boom"]
    # The lines outlive the job, as in Cloud Logging.
    adapter.cleanup(first)
    kept = [line.message for line in adapter.logs(first) if line.stream != "system"]
    assert kept == ["starting", "Traceback: boom"]
    [listed] = emulator.requests(rpc="ListLogEntries")[:1]
    assert listed.body["resourceNames"] == [f"projects/{PROJECT}"]


def test_logs_of_a_failed_execution_include_cloud_runs_own_line(
    emulator: CloudRunEmulator,
) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    ref = adapter.submit(render(adapter, key), key)
    emulator.finish_execution(ref, "failed", "Task failed with exit code 2")

    lines = adapter.logs(ref)

    assert any(line.stream == "system" and "exit(" in line.message for line in lines), lines


def test_logs_without_permission_fail_naming_it_and_an_unknown_ref_is_not_found(
    emulator: CloudRunEmulator,
) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    ref = adapter.submit(render(adapter, key), key)
    emulator.fail_next(403, rpc="ListLogEntries", count=None)

    with pytest.raises(PermanentProviderError) as raised:
        adapter.logs(ref)
    assert "logging.logEntries.list" in raised.value.message
    assert isinstance(raised.value, ProviderAuthError)

    with pytest.raises(ProviderNotFound):
        adapter.logs("arn:aws:ecs:us-east-1:1:task/flows/abc")

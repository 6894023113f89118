"""The ACI adapter against `skylane.testing.azure.AciEmulator` (Azure Resource Manager over TLS,
its own CA trusted through the pool's `ca_bundle`), through the official
`azure-mgmt-containerinstance` client: nothing of the adapter or the SDK is mocked. What the
emulator received (its request log) shows what the adapter sent."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.containerinstance")
pytest.importorskip("azure.identity")
pytest.importorskip("cryptography")

import azure.identity  # noqa: E402
from azure.core.exceptions import HttpResponseError  # noqa: E402

from skylane import templates  # noqa: E402
from skylane.adapters.aci import READ, WRITE, AciAdapter, translate_error  # noqa: E402
from skylane.adapters.aci_template import AciGroupRequest, default_template  # noqa: E402
from skylane.adapters.base import MemoryResourceCache, ProviderStatus  # noqa: E402
from skylane.errors import (  # noqa: E402
    CapacityError,
    InvalidInput,
    PermanentProviderError,
    ProviderAuthError,
    ProviderConflict,
    ProviderNotFound,
    QuotaError,
    ThrottledError,
    TransientProviderError,
)
from skylane.models import Pool  # noqa: E402
from skylane.retries import RetryPolicy  # noqa: E402
from skylane.security import MASK  # noqa: E402
from skylane.settings import Settings  # noqa: E402
from skylane.testing.azure import AciEmulator  # noqa: E402
from skylane.testing.waiting import wait_until  # noqa: E402
from tests.unit.test_aci_template import IMAGE, SUBSCRIPTION, TOKEN, make_context  # noqa: E402
from tests.unit.test_aci_template import make_pool as make_template_pool  # noqa: E402

RG = "flows"
LOCATION = "westeurope"
SECRET = "hunter2-db-password-value"
GET = "containerGroups.get"
PUT = "containerGroups.createOrUpdate"
STOP = "containerGroups.stop"
DELETE = "containerGroups.delete"


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[AciEmulator]:
    with AciEmulator(provision_seconds=0.05, run_seconds=0.1) as started:
        yield started


@pytest.fixture
def emulator(server: AciEmulator) -> AciEmulator:
    server.reset()
    return server


@pytest.fixture(scope="module")
def runner_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AciEmulator]:
    workdir = tmp_path_factory.mktemp("aci-workdir")
    with AciEmulator(
        provision_seconds=0.01, run_containers=True, workdir=workdir, stop_grace_seconds=0.5
    ) as started:
        yield started


@pytest.fixture
def runner(runner_server: AciEmulator) -> AciEmulator:
    runner_server.reset()  # also stops what a previous test left running
    return runner_server


def make_pool(url: str, ca_bundle: str | None, credentials: dict[str, Any] | None = None) -> Pool:
    settings = {
        "endpoint_url": url,
        "ca_bundle": ca_bundle,
        "subscription_id": SUBSCRIPTION,
        "resource_group_name": RG,
        "location": LOCATION,
    }
    pool = make_template_pool(default_template(), settings)
    return pool.model_copy(update={"credentials": credentials})


def make_adapter(
    emulator: AciEmulator,
    *,
    cache: MemoryResourceCache | None = None,
    **settings: Any,
) -> AciAdapter:
    adapter = AciAdapter(
        make_pool(emulator.url, emulator.ca_bundle), Settings(**settings), cache=cache
    )
    adapter.retry_policy = RetryPolicy(base=0.0, cap=0.01)  # quick retries
    return adapter


def new_key() -> str:
    return f"skl-{uuid.uuid4().hex}-1"


def render(adapter: AciAdapter, key: str, **job_variables: Any) -> AciGroupRequest:
    template = adapter.pool.base_job_template
    _, configuration = templates.resolve_job_configuration(
        template, {"image": IMAGE}, job_variables or None
    )
    return adapter.render(configuration, make_context(key))


def submit(adapter: AciAdapter, key: str | None = None, **job_variables: Any) -> tuple[str, str]:
    """(key, ref) of a new group."""
    key = key or new_key()
    return key, adapter.submit(render(adapter, key, **job_variables), key)


def ref_for(name: str, resource_group: str = RG) -> str:
    return (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.ContainerInstance/containerGroups/{name}"
    )


def status_of(adapter: AciAdapter, ref: str) -> Any:
    return adapter.statuses([ref])[ref]


def wait_for(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    return wait_until(check, "the container group", timeout=timeout, interval=0.01)


def ended(adapter: AciAdapter, ref: str) -> Any:
    return wait_for(lambda: (s := status_of(adapter, ref)).status.ended and s)


def calls(emulator: AciEmulator, *operations: str) -> list[tuple[str | None, int]]:
    """(operation, status) of the calls received, of `operations` only if given."""
    return [
        (r.operation, r.status)
        for r in emulator.requests()
        if not operations or r.operation in operations
    ]


def header(request: Any, name: str) -> str | None:
    return {k.lower(): v for k, v in request.headers.items()}.get(name.lower())


def container_env(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    variables = body["properties"]["containers"][0]["properties"]["environmentVariables"]
    return {item["name"]: item for item in variables}


def live_groups(emulator: AciEmulator) -> list[str]:
    return [group["name"] for group in emulator.groups()]


# -- submit ------------------------------------------------------------------------------------


def test_submit_looks_then_creates_once_and_a_second_submit_adopts(
    emulator: AciEmulator,
) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    request = render(adapter, key)

    ref = adapter.submit(request, key)

    assert ref == ref_for(key)
    assert calls(emulator) == [(GET, 404), (PUT, 201)]
    [put] = emulator.requests(PUT)
    assert header(put, "If-None-Match") == "*"
    assert put.body["properties"]["restartPolicy"] == "Never"
    assert container_env(put.body)["SKYLANE_RUN_TOKEN"] == {
        "name": "SKYLANE_RUN_TOKEN",
        "secureValue": TOKEN,
    }

    assert adapter.submit(request, key) == ref
    assert calls(emulator) == [(GET, 404), (PUT, 201), (GET, 200)]  # adopted, no second PUT
    assert live_groups(emulator) == [key]


def test_a_create_whose_answer_was_lost_is_adopted_on_the_retry(emulator: AciEmulator) -> None:
    emulator.timeout_after(PUT, seconds=1.0)
    adapter = make_adapter(emulator, provider_timeout_seconds=0.3)
    key = new_key()

    ref = adapter.submit(render(adapter, key), key)

    assert ref == ref_for(key)
    assert [r.dropped for r in emulator.requests(PUT)] == [True]  # one PUT, never answered
    assert calls(emulator, GET) == [(GET, 404), (GET, 200)]  # looked again, and found it
    assert live_groups(emulator) == [key]


def test_a_racing_create_is_refused_by_if_none_match_and_the_group_adopted(
    emulator: AciEmulator,
) -> None:
    key = new_key()
    first = make_adapter(emulator)
    ref = first.submit(render(first, key), key)
    # The second dispatcher looks before the first one's group is visible to it.
    emulator.fail_next(404, "ResourceNotFound", operation=GET, count=1)
    second = make_adapter(emulator)

    assert second.submit(render(second, key), key) == ref

    assert calls(emulator, PUT) == [(PUT, 201), (PUT, 412)]  # refused, not applied
    assert live_groups(emulator) == [key]


def test_secure_env_is_read_from_the_environment_at_submit(
    emulator: AciEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWS_DB_PASSWORD", raising=False)
    adapter = make_adapter(emulator)
    key = new_key()
    request = render(adapter, key, secure_env={"DB_PASSWORD": {"env": "FLOWS_DB_PASSWORD"}})
    monkeypatch.setenv("FLOWS_DB_PASSWORD", SECRET)  # set after render: read at submit

    adapter.submit(request, key)

    [put] = emulator.requests(PUT)
    assert container_env(put.body)["DB_PASSWORD"] == {"name": "DB_PASSWORD", "secureValue": SECRET}


def test_a_missing_secure_env_variable_names_the_job_variable_and_sends_nothing(
    emulator: AciEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWS_DB_PASSWORD", raising=False)
    adapter = make_adapter(emulator)
    key = new_key()
    request = render(adapter, key, secure_env={"DB_PASSWORD": {"env": "FLOWS_DB_PASSWORD"}})

    with pytest.raises(InvalidInput) as raised:
        adapter.submit(request, key)

    assert raised.value.field == "job_variables.secure_env.DB_PASSWORD"
    assert "FLOWS_DB_PASSWORD" in raised.value.message
    assert TOKEN not in str(raised.value.to_dict())
    assert emulator.requests() == []
    assert adapter.find(key) is None


def test_error_messages_never_show_the_run_token_or_a_secret(
    emulator: AciEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWS_DB_PASSWORD", SECRET)
    # Azure echoing what it was sent in an error message.
    emulator.fail_next(
        400, "InvalidRequestContent", f"bad values '{SECRET}' and '{TOKEN}'", operation=PUT
    )
    adapter = make_adapter(emulator)

    with pytest.raises(PermanentProviderError) as raised:
        submit(adapter, secure_env={"DB_PASSWORD": {"env": "FLOWS_DB_PASSWORD"}})

    shown = f"{raised.value} {raised.value.to_dict()}"
    assert SECRET not in shown and TOKEN not in shown
    assert "InvalidRequestContent" in raised.value.message and MASK in raised.value.message
    assert len(emulator.requests(PUT)) == 1  # a 400 is not retried


# -- find --------------------------------------------------------------------------------------


def test_find_returns_the_ref_and_works_from_a_fresh_adapter_sharing_the_cache(
    emulator: AciEmulator,
) -> None:
    cache = MemoryResourceCache()
    adapter = make_adapter(emulator, cache=cache)
    assert adapter.find(new_key()) is None

    # Another resource group than the pool's: only the cache knows where to look.
    key, ref = submit(adapter, resource_group_name="other-rg")

    assert ref == ref_for(key, "other-rg")
    assert adapter.find(key) == ref
    assert make_adapter(emulator, cache=cache).find(key) == ref
    assert make_adapter(emulator).find(key) is None  # looks in the pool's resource group
    adapter.cleanup(ref)
    assert make_adapter(emulator, cache=cache).find(key) is None


# -- statuses ----------------------------------------------------------------------------------


def test_statuses_go_from_pending_to_running_to_succeeded(emulator: AciEmulator) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    emulator.plan_group(key, provision_seconds=0.3, hold=True)
    _, ref = submit(adapter, key)

    assert status_of(adapter, ref).status == ProviderStatus.PENDING
    wait_for(lambda: status_of(adapter, ref).status == ProviderStatus.RUNNING)
    emulator.finish_group(key, exit_code=0)
    done = status_of(adapter, ref)

    assert (done.status, done.exit_code) == (ProviderStatus.SUCCEEDED, 0)


def test_a_failed_container_reports_its_exit_code(emulator: AciEmulator) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    emulator.plan_group(key, exit_code=2, run_seconds=0.05)
    _, ref = submit(adapter, key)

    failed = ended(adapter, ref)

    assert (failed.status, failed.exit_code) == (ProviderStatus.FAILED, 2)
    assert "exit code 2" in failed.message


def test_a_crashed_container_reports_its_last_log_lines(runner: AciEmulator) -> None:
    adapter = make_adapter(runner)
    code = "import sys\nfor i in range(1, 13): print(f'line {i:02d}', flush=True)\nsys.exit(3)"
    _, ref = submit(adapter, command=["python", "-c", code])

    failed = ended(adapter, ref)

    assert (failed.status, failed.exit_code) == (ProviderStatus.FAILED, 3)
    assert "exit code 3" in failed.message
    last = "\n".join(f"line {i:02d}" for i in range(3, 13))
    assert failed.message.endswith(f"last lines:\n{last}"), failed.message
    assert "line 02" not in failed.message


def test_a_group_that_fails_to_provision_reports_azures_event(emulator: AciEmulator) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    message = "Failed to pull image 'flows.azurecr.io/etl': manifest unknown"
    emulator.fail_provisioning(key, message=message)
    _, ref = submit(adapter, key)

    failed = ended(adapter, ref)

    assert failed.status == ProviderStatus.FAILED
    assert failed.exit_code is None
    assert message in failed.message


def test_deleted_groups_and_malformed_refs_are_not_found_and_unreadable_refs_left_out(
    emulator: AciEmulator,
) -> None:
    adapter = make_adapter(emulator)
    emulator.configure(hold=True)
    deleted_key, deleted = submit(adapter)
    unreadable_key, unreadable = submit(adapter)
    _, readable = submit(adapter)
    adapter.cleanup(deleted)
    emulator.fail_next(500, operation=GET, path=f"*/containerGroups/{unreadable_key}", count=None)

    answer = adapter.statuses([deleted, unreadable, readable, "not-a-ref"])

    assert set(answer) == {deleted, readable, "not-a-ref"}
    assert answer[deleted].status == ProviderStatus.NOT_FOUND
    assert deleted_key in answer[deleted].message
    assert answer["not-a-ref"].status == ProviderStatus.NOT_FOUND
    assert answer[readable].status in (ProviderStatus.PENDING, ProviderStatus.RUNNING)
    # Retried before being left out; when nothing can be read, the error is raised.
    assert len([r for r in emulator.requests(GET) if unreadable_key in r.path]) > 1
    with pytest.raises(TransientProviderError):
        adapter.statuses([unreadable])
    emulator.clear_faults()
    assert status_of(adapter, unreadable).status in (ProviderStatus.PENDING, ProviderStatus.RUNNING)


@pytest.mark.parametrize("keep", [False, True])
def test_a_group_still_provisioning_past_its_start_timeout_is_removed(
    emulator: AciEmulator, keep: bool
) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    emulator.plan_group(key, provision_seconds=30)
    _, ref = submit(adapter, key, task_start_timeout_seconds=1, keep_container_group=keep)

    assert status_of(adapter, ref).status == ProviderStatus.PENDING
    time.sleep(1.1)
    stopped = status_of(adapter, ref)

    assert stopped.status == ProviderStatus.STOPPED
    assert "did not start within 1 s" in stopped.message
    assert calls(emulator, STOP, DELETE) == [(STOP, 409), (DELETE, 200)]
    assert live_groups(emulator) == []
    assert status_of(adapter, ref) == stopped  # settled


# -- cancel and cleanup ------------------------------------------------------------------------


def test_cancel_stops_then_deletes(emulator: AciEmulator) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    emulator.hold_group(key)
    _, ref = submit(adapter, key)
    wait_for(lambda: status_of(adapter, ref).status == ProviderStatus.RUNNING)

    adapter.cancel(ref)

    assert calls(emulator, STOP, DELETE) == [(STOP, 204), (DELETE, 200)]
    assert live_groups(emulator) == []
    assert status_of(adapter, ref).status == ProviderStatus.NOT_FOUND


@pytest.mark.parametrize("keep", [False, True])
def test_cancel_while_provisioning_deletes_the_group(emulator: AciEmulator, keep: bool) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    emulator.plan_group(key, provision_seconds=0.3, hold=True)
    _, ref = submit(adapter, key, keep_container_group=keep)

    adapter.cancel(ref)

    [stop] = emulator.requests(STOP)
    assert stop.status == 409 and stop.response["error"]["code"] == "ContainerGroupTransitioning"
    # Deleted even when kept: a group that cannot be stopped yet would start the cancelled run.
    assert calls(emulator, DELETE) == [(DELETE, 200)]
    assert live_groups(emulator) == []
    time.sleep(0.35)  # past the time it would have started
    assert status_of(adapter, ref).status == ProviderStatus.NOT_FOUND


def test_keep_container_group_keeps_it_after_cleanup_and_cancel(emulator: AciEmulator) -> None:
    adapter = make_adapter(emulator)
    done_key, done = submit(adapter, keep_container_group=True)
    held_key = new_key()
    emulator.hold_group(held_key)
    _, held = submit(adapter, held_key, keep_container_group=True)
    assert ended(adapter, done).status == ProviderStatus.SUCCEEDED
    wait_for(lambda: status_of(adapter, held).status == ProviderStatus.RUNNING)

    adapter.cleanup(done)
    adapter.cancel(held)

    assert calls(emulator, STOP, DELETE) == [(STOP, 204)]
    assert sorted(live_groups(emulator)) == sorted([done_key, held_key])
    assert emulator.group(held_key)["properties"]["instanceView"]["state"] == "Stopped"
    assert status_of(adapter, held).status == ProviderStatus.STOPPED


def test_cleanup_of_a_group_already_deleted_is_fine(emulator: AciEmulator) -> None:
    adapter = make_adapter(emulator)
    _, ref = submit(adapter)

    adapter.cleanup(ref)
    adapter.cleanup(ref)
    adapter.cleanup("not-a-ref")

    assert calls(emulator, DELETE) == [(DELETE, 200)]
    assert live_groups(emulator) == []


# -- logs --------------------------------------------------------------------------------------


def test_logs_carry_their_timestamps_and_since_filters(emulator: AciEmulator) -> None:
    adapter = make_adapter(emulator)
    key = new_key()
    emulator.hold_group(key)
    _, ref = submit(adapter, key)
    wait_for(lambda: status_of(adapter, ref).status == ProviderStatus.RUNNING)
    before = datetime.now(UTC)
    emulator.write_log(key, "starting up")
    after = datetime.now(UTC)
    time.sleep(0.01)
    middle = datetime.now(UTC)
    time.sleep(0.01)
    emulator.write_log(key, "Traceback: boom", stream="stderr")

    lines = adapter.logs(ref)

    assert [line.message for line in lines] == ["starting up", "Traceback: boom"]
    # The time is Azure's (nanoseconds, cut to microseconds), not when the lines were read.
    assert before - timedelta(microseconds=1) <= lines[0].timestamp <= after
    assert lines[0].timestamp < lines[1].timestamp < middle + timedelta(seconds=1)
    assert [line.message for line in adapter.logs(ref, since=middle)] == ["Traceback: boom"]
    naive = middle.replace(tzinfo=None)
    assert [line.message for line in adapter.logs(ref, since=naive)] == ["Traceback: boom"]


def test_logs_of_a_missing_group_are_not_found(emulator: AciEmulator) -> None:
    adapter = make_adapter(emulator)
    _, ref = submit(adapter)
    adapter.cleanup(ref)

    with pytest.raises(ProviderNotFound):
        adapter.logs(ref)
    with pytest.raises(ProviderNotFound):
        adapter.logs("arn:aws:ecs:us-east-1:1:task/flows/abc")


# -- errors ------------------------------------------------------------------------------------


def test_throttling_with_a_long_retry_after_is_handed_back_with_it(emulator: AciEmulator) -> None:
    emulator.throttle(PUT, retry_after=30)
    adapter = make_adapter(emulator)

    with pytest.raises(ThrottledError) as raised:
        submit(adapter)

    assert raised.value.retry_after == 30.0
    assert raised.value.retryable
    assert calls(emulator, PUT) == [(PUT, 429)]
    assert live_groups(emulator) == []


def test_throttling_without_retry_after_waits_resource_managers_default(
    emulator: AciEmulator,
) -> None:
    emulator.throttle(PUT, retry_after=None)
    adapter = make_adapter(emulator)

    with pytest.raises(ThrottledError) as raised:
        submit(adapter)

    assert raised.value.retry_after == 15.0
    assert len(emulator.requests(PUT)) == 1


def test_a_short_retry_after_is_waited_before_the_retry(emulator: AciEmulator) -> None:
    emulator.throttle(PUT, retry_after=1)
    adapter = make_adapter(emulator)

    key, ref = submit(adapter)

    assert ref == ref_for(key)
    throttled, created = emulator.requests(PUT)
    assert (throttled.status, created.status) == (429, 201)
    assert created.received_at - throttled.received_at >= 1.0
    assert live_groups(emulator) == [key]


def test_an_exhausted_quota_is_a_quota_error_not_retried(emulator: AciEmulator) -> None:
    emulator.quota_reached()
    adapter = make_adapter(emulator)

    with pytest.raises(QuotaError) as raised:
        submit(adapter)

    assert raised.value.details["code"] == "ContainerGroupQuotaReached"
    assert not raised.value.retryable
    assert calls(emulator, PUT) == [(PUT, 409)]
    assert live_groups(emulator) == []


def test_a_region_without_capacity_is_a_capacity_error(emulator: AciEmulator) -> None:
    emulator.capacity_unavailable()
    adapter = make_adapter(emulator)

    with pytest.raises(CapacityError) as raised:
        submit(adapter)

    assert "no capacity" in raised.value.message
    assert calls(emulator, PUT) == [(PUT, 409)]  # parked by the dispatcher, not retried here
    assert live_groups(emulator) == []


def test_a_forbidden_create_names_the_permission(emulator: AciEmulator) -> None:
    emulator.forbid(PUT)
    adapter = make_adapter(emulator)

    with pytest.raises(PermanentProviderError) as raised:
        submit(adapter)

    assert "Microsoft.ContainerInstance/containerGroups/write" in raised.value.message
    assert raised.value.details["action"] == WRITE
    assert raised.value.details["http_status"] == 403
    assert calls(emulator, PUT) == [(PUT, 403)]
    assert isinstance(raised.value, ProviderAuthError)


def test_a_missing_resource_group_says_so() -> None:
    with AciEmulator(resource_groups=[RG]) as emulator:
        adapter = make_adapter(emulator)

        with pytest.raises(PermanentProviderError) as raised:
            submit(adapter, resource_group_name="no-such-rg")

        assert "resource group 'no-such-rg' does not exist" in raised.value.message
        assert raised.value.details["code"] == "ResourceGroupNotFound"
        assert calls(emulator, PUT) == [(PUT, 404)]
        # The pool's own resource group exists.
        key, ref = submit(adapter)
        assert ref == ref_for(key)


@pytest.mark.parametrize(("fault", "status"), [("internal_error", 500), ("unavailable", 503)])
def test_a_server_error_is_retried_then_the_group_created_once(
    emulator: AciEmulator, fault: str, status: int
) -> None:
    getattr(emulator, fault)(PUT)
    adapter = make_adapter(emulator)

    key, ref = submit(adapter)

    assert ref == ref_for(key)
    # Looked again before the second PUT: the first one may have gone through.
    assert calls(emulator) == [(GET, 404), (PUT, status), (GET, 404), (PUT, 201)]
    assert live_groups(emulator) == [key]


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "InvalidRequestContent", PermanentProviderError),
        (401, "InvalidAuthenticationToken", ProviderAuthError),
        (404, "ResourceNotFound", ProviderNotFound),
        (409, "ContainerGroupTransitioning", ProviderConflict),
        (412, "PreconditionFailed", ProviderConflict),
        (409, "ContainerGroupQuotaReached", QuotaError),
        (400, "SkuNotAvailable", CapacityError),
        (429, "TooManyRequests", ThrottledError),
        (500, "InternalServerError", TransientProviderError),
        (503, "ServiceUnavailable", TransientProviderError),
    ],
)
def test_translate_error_classifies_the_sdks_own_exceptions(
    emulator: AciEmulator, status: int, code: str, expected: type[Exception]
) -> None:
    emulator.fail_next(status, code, f"Azure says no to '{SECRET}'", operation=GET, retry_after=7)
    client = make_adapter(emulator).client(SUBSCRIPTION)
    with pytest.raises(HttpResponseError) as raised:
        client.container_groups.get(RG, "some-group")

    error = translate_error(raised.value, action=READ, resource="some-group", secrets=[SECRET])

    assert type(error) is expected
    assert error.details["http_status"] == status and error.details["code"] == code
    assert error.details["action"] == READ
    assert code in error.message and SECRET not in str(error.to_dict())
    if expected is ThrottledError:
        assert error.retry_after == 7.0


# -- credentials -------------------------------------------------------------------------------


class RecordingCredential(azure.identity.DefaultAzureCredential):
    """The real DefaultAzureCredential, its arguments recorded."""

    made: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        RecordingCredential.made.append(kwargs)
        super().__init__(**kwargs)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(RecordingCredential, "made", [])
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", RecordingCredential)
    return RecordingCredential.made


def test_a_loopback_endpoint_looks_up_no_azure_credential(
    emulator: AciEmulator, recording: list[dict[str, Any]]
) -> None:
    adapter = make_adapter(emulator)

    _, ref = submit(adapter)
    adapter.statuses([ref])

    assert recording == []


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        (None, {}),
        (
            {"managed_identity_client_id": "2f1c0000-0000-4000-8000-0000000000a1"},
            {"managed_identity_client_id": "2f1c0000-0000-4000-8000-0000000000a1"},
        ),
    ],
)
def test_azure_gets_default_azure_credential_with_the_pools_managed_identity(
    recording: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    credentials: dict[str, Any] | None,
    expected: dict[str, Any],
) -> None:
    monkeypatch.delenv("SKYLANE_ACI_ENDPOINT", raising=False)
    pool = make_pool("https://management.azure.com", None, credentials)
    adapter = AciAdapter(pool, Settings())

    credential = adapter._load_credential()  # made, never asked for a token

    assert isinstance(credential, azure.identity.DefaultAzureCredential)
    assert recording == [expected]

"""The platform APIs of `skylane.testing.gcp.CloudRunEmulator` (`skylane.testing.gcp_platform`),
driven through the official clients only: Service Usage, Artifact Registry and Resource Manager
over REST (an `http://` api_endpoint, anonymous credentials), IAM Admin over gRPC (an insecure
channel to `emulator.iam_target`).

Over REST the exception class comes from the HTTP status (409 ABORTED is `Conflict`, its status
in the body); over gRPC from the status code (`Aborted`, `PermissionDenied`...). Both carry
Google's ErrorInfo as `exc.reason` and `exc.metadata`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("google.cloud.iam_admin_v1")
pytest.importorskip("google.cloud.service_usage_v1")
pytest.importorskip("google.cloud.artifactregistry_v1")
pytest.importorskip("google.cloud.resourcemanager_v3")

import grpc  # noqa: E402
from google.api_core import exceptions as gexc  # noqa: E402
from google.api_core.client_options import ClientOptions  # noqa: E402
from google.api_core.future.polling import DEFAULT_POLLING  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import (  # noqa: E402
    artifactregistry_v1,
    iam_admin_v1,
    resourcemanager_v3,
    run_v2,
    service_usage_v1,
)
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport  # noqa: E402
from google.protobuf import field_mask_pb2  # noqa: E402

from skylane.testing.gcp import CloudRunEmulator  # noqa: E402
from skylane.testing.gcp_platform import MUTATING_RPCS, project_number  # noqa: E402
from skylane.testing.server import stop_process  # noqa: E402

P = "p-test"
LOCATION = "europe-west1"
PARENT = f"projects/{P}/locations/{LOCATION}"
REPO = f"{PARENT}/repositories/images"
FAST = DEFAULT_POLLING.with_delay(initial=0.01, maximum=0.05, multiplier=1.5)
Format = artifactregistry_v1.Repository.Format


@pytest.fixture(scope="module")
def server() -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator(start_seconds=0.02, run_seconds=0.05) as started:
        yield started


@pytest.fixture
def emulator(server: CloudRunEmulator) -> CloudRunEmulator:
    server.reset()
    return server


class Clients:
    """The official clients, pointed at one emulator."""

    def __init__(self, emulator: CloudRunEmulator) -> None:
        common: dict[str, Any] = {
            "transport": "rest",
            "credentials": AnonymousCredentials(),
            "client_options": ClientOptions(api_endpoint=emulator.url),
        }
        self.usage = service_usage_v1.ServiceUsageClient(**common)
        self.registry = artifactregistry_v1.ArtifactRegistryClient(**common)
        self.projects = resourcemanager_v3.ProjectsClient(**common)
        self.jobs = run_v2.JobsClient(**common)
        self.channel = grpc.insecure_channel(emulator.iam_target)
        self.iam = iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=self.channel))

    def close(self) -> None:
        self.channel.close()

    def service(self, name: str, project: str = P) -> Any:
        return self.usage.get_service(request={"name": f"projects/{project}/services/{name}"})

    def enable(self, name: str, project: str = P) -> Any:
        operation = self.usage.enable_service(
            request={"name": f"projects/{project}/services/{name}"}
        )
        return operation.result(timeout=5, polling=FAST)

    def create_repository(self, repository_id: str = "images", **fields: Any) -> Any:
        fields.setdefault("format_", Format.DOCKER)
        operation = self.registry.create_repository(
            parent=PARENT,
            repository_id=repository_id,
            repository=artifactregistry_v1.Repository(**fields),
        )
        return operation.result(timeout=5, polling=FAST)

    def create_account(self, account_id: str, project: str = P, **fields: Any) -> Any:
        return self.iam.create_service_account(
            request={
                "name": f"projects/{project}",
                "account_id": account_id,
                "service_account": iam_admin_v1.ServiceAccount(**fields),
            }
        )

    def project_policy(self, project: str = P) -> Any:
        return self.projects.get_iam_policy(
            request={"resource": f"projects/{project}", "options": {"requested_policy_version": 3}}
        )

    def set_project_policy(self, policy: Any, project: str = P) -> Any:
        return self.projects.set_iam_policy(
            request={"resource": f"projects/{project}", "policy": policy}
        )


@pytest.fixture
def clients(emulator: CloudRunEmulator) -> Iterator[Clients]:
    made = Clients(emulator)
    yield made
    made.close()


@pytest.fixture
def closed() -> Iterator[tuple[CloudRunEmulator, Clients]]:
    """A project where no API is enabled, as a new Google Cloud project."""
    with CloudRunEmulator(platform_apis_enabled=False) as started:
        made = Clients(started)
        yield started, made
        made.close()


def cleanup_policy(days: int = 14) -> artifactregistry_v1.CleanupPolicy:
    return artifactregistry_v1.CleanupPolicy(
        id="untagged",
        action=artifactregistry_v1.CleanupPolicy.Action.DELETE,
        condition=artifactregistry_v1.CleanupPolicyCondition(
            tag_state=artifactregistry_v1.CleanupPolicyCondition.TagState.UNTAGGED,
            older_than={"seconds": days * 86400},
        ),
    )


def job(account: str) -> run_v2.Job:
    container = run_v2.Container(image="python:3.12-slim", command=["true"])
    task = run_v2.TaskTemplate(containers=[container], service_account=account)
    return run_v2.Job(template=run_v2.ExecutionTemplate(template=task))


# --- Service Usage --------------------------------------------------------------------------


def test_every_api_is_enabled_by_default(emulator: CloudRunEmulator, clients: Clients) -> None:
    service = clients.service("iam.googleapis.com")
    assert service.state == service_usage_v1.State.ENABLED
    assert service.name == f"projects/{project_number(P)}/services/iam.googleapis.com"
    assert service.config.title == "Identity and Access Management (IAM) API"
    assert "run.googleapis.com" in emulator.enabled_services(P)


def test_enable_and_disable_are_operations(closed: tuple[CloudRunEmulator, Clients]) -> None:
    emulator, clients = closed
    assert (
        clients.service("artifactregistry.googleapis.com").state == service_usage_v1.State.DISABLED
    )
    assert emulator.enabled_services(P) == []
    answer = clients.enable("artifactregistry.googleapis.com")
    assert answer.service.state == service_usage_v1.State.ENABLED
    assert emulator.enabled_services(P) == ["artifactregistry.googleapis.com"]
    assert emulator.enabled_services("other") == []
    operation = clients.usage.disable_service(
        request={"name": f"projects/{P}/services/artifactregistry.googleapis.com"}
    )
    operation.result(timeout=5, polling=FAST)
    assert not emulator.service_enabled(P, "artifactregistry.googleapis.com")
    assert [r.rpc for r in emulator.requests()] == [
        "GetService",
        "EnableService",
        "DisableService",
    ]


def test_an_operation_that_takes_time_is_polled() -> None:
    with CloudRunEmulator(platform_apis_enabled=False, operation_seconds=0.15) as emulator:
        clients = Clients(emulator)
        try:
            operation = clients.usage.enable_service(
                request={"name": f"projects/{P}/services/artifactregistry.googleapis.com"}
            )
            assert not operation.done()
            operation.result(timeout=5, polling=FAST)
            repository = clients.create_repository()
            assert repository.name == REPO
        finally:
            clients.close()
        assert emulator.requests(rpc="GetOperation")
        assert {r.path.split("/operations/")[0] for r in emulator.requests(rpc="GetOperation")} == {
            "/v1",
            f"/v1/{PARENT}",
        }


def test_an_unknown_service_is_refused(clients: Clients) -> None:
    with pytest.raises(gexc.Forbidden, match="Not found or permission denied"):
        clients.service("not-a-service")


# --- APIs must be enabled -------------------------------------------------------------------


def test_a_disabled_api_refuses_calls_with_service_disabled(
    closed: tuple[CloudRunEmulator, Clients],
) -> None:
    _, clients = closed
    with pytest.raises(gexc.Forbidden) as refused:
        clients.registry.get_repository(name=REPO)
    assert refused.value.reason == "SERVICE_DISABLED"
    assert refused.value.metadata["service"] == "artifactregistry.googleapis.com"
    assert "Artifact Registry API has not been used in project" in refused.value.message
    with pytest.raises(gexc.PermissionDenied) as over_grpc:
        clients.create_account("runner-one")
    assert over_grpc.value.reason == "SERVICE_DISABLED"
    assert over_grpc.value.metadata["service"] == "iam.googleapis.com"
    with pytest.raises(gexc.Forbidden) as cloud_run:
        clients.jobs.create_job(parent=PARENT, job_id="j", job=job(""))
    assert cloud_run.value.reason == "SERVICE_DISABLED"
    # Resource Manager and Service Usage answer in any project.
    assert clients.project_policy().bindings
    clients.enable("artifactregistry.googleapis.com")
    with pytest.raises(gexc.NotFound):
        clients.registry.get_repository(name=REPO)


def test_disabled_apis_name_some_apis_of_some_projects() -> None:
    with CloudRunEmulator(disabled_apis={P: ["run.googleapis.com"]}) as emulator:
        clients = Clients(emulator)
        try:
            with pytest.raises(gexc.Forbidden, match="Cloud Run Admin API has not been used"):
                clients.jobs.get_job(name=f"{PARENT}/jobs/j")
            with pytest.raises(gexc.NotFound):
                clients.jobs.get_job(name=f"projects/other/locations/{LOCATION}/jobs/j")
            assert clients.create_repository().name == REPO
            emulator.reset()  # back to the constructor's: still disabled
            assert not emulator.service_enabled(P, "run.googleapis.com")
        finally:
            clients.close()


def test_a_just_enabled_api_refuses_calls_until_it_has_propagated() -> None:
    now = [1_000_000.0]
    with CloudRunEmulator(
        platform_apis_enabled=False, api_propagation_seconds=60, clock=lambda: now[0]
    ) as emulator:
        clients = Clients(emulator)
        try:
            clients.enable("artifactregistry.googleapis.com")
            assert clients.service("artifactregistry.googleapis.com").state == 2  # ENABLED
            with pytest.raises(gexc.Forbidden) as refused:
                clients.registry.get_repository(name=REPO)
            assert refused.value.reason == "SERVICE_DISABLED"
            now[0] += 61
            with pytest.raises(gexc.NotFound):
                clients.registry.get_repository(name=REPO)
        finally:
            clients.close()


# --- Artifact Registry ----------------------------------------------------------------------


def test_repository_create_get_update_delete(emulator: CloudRunEmulator, clients: Clients) -> None:
    created = clients.create_repository(
        description="images",
        labels={"skylane-pool": "prod"},
        cleanup_policies={"untagged": cleanup_policy()},
    )
    assert created.name == REPO and created.format_ == Format.DOCKER
    found = clients.registry.get_repository(name=REPO)
    assert found.labels == {"skylane-pool": "prod"}
    policy = found.cleanup_policies["untagged"]
    assert policy.action == artifactregistry_v1.CleanupPolicy.Action.DELETE
    assert policy.condition.older_than.total_seconds() == 14 * 86400
    assert emulator.repository(REPO)["cleanupPolicies"]["untagged"]["condition"] == {
        "tagState": "UNTAGGED",
        "olderThan": "1209600s",
    }
    listed = clients.registry.list_repositories(parent=PARENT)
    assert [r.name for r in listed] == [REPO]

    updated = clients.registry.update_repository(
        repository=artifactregistry_v1.Repository(name=REPO, description="other"),
        update_mask=field_mask_pb2.FieldMask(paths=["description", "cleanup_policies"]),
    )
    assert updated.description == "other" and not updated.cleanup_policies
    assert updated.labels == {"skylane-pool": "prod"}

    clients.registry.delete_repository(name=REPO).result(timeout=5, polling=FAST)
    assert emulator.repositories() == []
    with pytest.raises(gexc.NotFound):
        clients.registry.get_repository(name=REPO)
    with pytest.raises(gexc.NotFound):
        clients.registry.delete_repository(name=REPO)


def test_repository_rules(emulator: CloudRunEmulator, clients: Clients) -> None:
    clients.create_repository()
    with pytest.raises(gexc.Conflict, match="already exists"):
        clients.create_repository()
    for bad in ("Images", "1images", "images-", "x" * 64):
        with pytest.raises(gexc.BadRequest, match="Invalid repository id"):
            clients.create_repository(bad)
    with pytest.raises(gexc.BadRequest, match="format"):
        clients.create_repository("noformat", format_=Format.FORMAT_UNSPECIFIED)
    with pytest.raises(gexc.BadRequest, match="Invalid label"):
        clients.create_repository("labelled", labels={"Pool": "x"})
    bad_policy = artifactregistry_v1.CleanupPolicy(
        id="keep", action=artifactregistry_v1.CleanupPolicy.Action.DELETE
    )
    with pytest.raises(gexc.BadRequest, match="exactly one of condition"):
        clients.create_repository("policy", cleanup_policies={"keep": bad_policy})
    assert [r["name"] for r in emulator.repositories()] == [REPO]


def test_add_repository_stands_for_one_made_by_someone_else(
    emulator: CloudRunEmulator, clients: Clients
) -> None:
    emulator.add_repository(REPO, format="MAVEN", description="theirs")
    found = clients.registry.get_repository(name=REPO)
    assert found.format_ == Format.MAVEN and not found.labels


# --- Resource Manager project policies ------------------------------------------------------


def test_project_policy_read_modify_write_with_etags(
    emulator: CloudRunEmulator, clients: Clients
) -> None:
    policy = clients.project_policy()
    assert [(b.role, list(b.members)) for b in policy.bindings] == [
        ("roles/owner", ["user:owner@example.com"])
    ]
    stale = type(policy)()
    stale.CopyFrom(policy)
    policy.bindings.add(role="roles/run.developer", members=["user:alice@example.com"])
    written = clients.set_project_policy(policy)
    assert written.etag != policy.etag
    assert emulator.project_policy(P)["bindings"][1] == {
        "role": "roles/run.developer",
        "members": ["user:alice@example.com"],
    }
    stale.bindings.add(role="roles/viewer", members=["user:bob@example.com"])
    with pytest.raises(gexc.Conflict) as conflict:
        clients.set_project_policy(stale)
    assert conflict.value.response.json()["error"]["status"] == "ABORTED"
    assert "concurrent policy changes" in conflict.value.message
    # Without an etag the write goes through (Google overwrites).
    stale.etag = b""
    clients.set_project_policy(stale)
    assert [b["role"] for b in emulator.project_policy(P)["bindings"]] == [
        "roles/owner",
        "roles/viewer",
    ]


def test_project_policy_members_and_roles_are_checked(
    emulator: CloudRunEmulator, clients: Clients
) -> None:
    policy = clients.project_policy()
    for member, match in (
        ("alice@example.com", "Invalid member"),
        ("allUsers", "cannot be bound on a project"),
    ):
        attempt = type(policy)()
        attempt.CopyFrom(policy)
        attempt.bindings.add(role="roles/viewer", members=[member])
        with pytest.raises(gexc.BadRequest, match=match):
            clients.set_project_policy(attempt)
    attempt = type(policy)()
    attempt.CopyFrom(policy)
    attempt.bindings.add(role="viewer", members=["user:a@example.com"])
    with pytest.raises(gexc.BadRequest, match="does not exist in the resource's hierarchy"):
        clients.set_project_policy(attempt)
    # Once the emulator knows the project's accounts, a member must be one of them.
    clients.create_account("runner-one")
    attempt = type(policy)()
    attempt.CopyFrom(policy)
    attempt.bindings.add(
        role="roles/viewer", members=[f"serviceAccount:ghost-1@{P}.iam.gserviceaccount.com"]
    )
    with pytest.raises(
        gexc.BadRequest, match=f"ghost-1@{P}.iam.gserviceaccount.com does not exist"
    ):
        clients.set_project_policy(attempt)
    # A binding left without members disappears.
    attempt = type(policy)()
    attempt.CopyFrom(policy)
    attempt.bindings.add(role="roles/viewer", members=[])
    written = clients.set_project_policy(attempt)
    assert [b.role for b in written.bindings] == ["roles/owner"]


# --- IAM Admin over gRPC --------------------------------------------------------------------


def test_service_accounts_over_grpc(emulator: CloudRunEmulator, clients: Clients) -> None:
    account = clients.create_account("runner-one", display_name="Runner", description="d")
    email = f"runner-one@{P}.iam.gserviceaccount.com"
    assert account.email == email
    assert account.name == f"projects/{P}/serviceAccounts/{email}"
    assert len(account.unique_id) == 21 and account.unique_id.isdigit()
    assert account.oauth2_client_id == account.unique_id
    found = clients.iam.get_service_account(request={"name": f"projects/-/serviceAccounts/{email}"})
    assert (found.display_name, found.description) == ("Runner", "d")
    by_id = clients.iam.get_service_account(
        request={"name": f"projects/{P}/serviceAccounts/{account.unique_id}"}
    )
    assert by_id.email == email
    clients.create_account("runner-two")
    pages = clients.iam.list_service_accounts(request={"name": f"projects/{P}", "page_size": 1})
    listed = [a.email for a in pages]
    assert listed == [email, f"runner-two@{P}.iam.gserviceaccount.com"]
    assert [a["email"] for a in emulator.service_accounts(P)] == listed
    clients.iam.delete_service_account(request={"name": f"projects/{P}/serviceAccounts/{email}"})
    with pytest.raises(gexc.NotFound):
        clients.iam.get_service_account(request={"name": f"projects/{P}/serviceAccounts/{email}"})
    with pytest.raises(gexc.NotFound):
        clients.iam.delete_service_account(
            request={"name": f"projects/{P}/serviceAccounts/{email}"}
        )
    with pytest.raises(KeyError):
        emulator.service_account(email)


@pytest.mark.parametrize(
    "account_id", ["short", "Runner-one", "1runner", "runner-", "runner_one", "r" * 31]
)
def test_account_ids_follow_googles_rules(clients: Clients, account_id: str) -> None:
    with pytest.raises(gexc.InvalidArgument, match="Invalid form of account ID"):
        clients.create_account(account_id)


def test_a_second_account_of_one_id_already_exists(clients: Clients) -> None:
    clients.create_account("runner-one")
    with pytest.raises(gexc.AlreadyExists, match="already exists within project"):
        clients.create_account("runner-one")
    assert clients.create_account("runner-one", project="other-project").email == (
        "runner-one@other-project.iam.gserviceaccount.com"
    )


def test_service_account_policies_over_grpc(emulator: CloudRunEmulator, clients: Clients) -> None:
    runner = clients.create_account("runner-one")
    caller = clients.create_account("caller-one")
    resource = runner.name
    policy = clients.iam.get_iam_policy(request={"resource": resource})
    assert not policy.bindings
    stale = type(policy)()
    stale.CopyFrom(policy)
    policy.bindings.add(
        role="roles/iam.serviceAccountUser", members=[f"serviceAccount:{caller.email}"]
    )
    clients.iam.set_iam_policy(request={"resource": resource, "policy": policy})
    assert emulator.service_account_policy(runner.email)["bindings"] == [
        {"role": "roles/iam.serviceAccountUser", "members": [f"serviceAccount:{caller.email}"]}
    ]
    stale.bindings.add(role="roles/iam.serviceAccountUser", members=["user:a@example.com"])
    with pytest.raises(gexc.Aborted, match="concurrent policy changes"):
        clients.iam.set_iam_policy(request={"resource": resource, "policy": stale})
    current = clients.iam.get_iam_policy(request={"resource": resource})
    current.bindings.add(role="roles/run.developer", members=["user:a@example.com"])
    with pytest.raises(gexc.InvalidArgument, match="not supported for this resource"):
        clients.iam.set_iam_policy(request={"resource": resource, "policy": current})
    with pytest.raises(gexc.NotFound):
        clients.iam.get_iam_policy(
            request={
                "resource": f"projects/{P}/serviceAccounts/ghost-1@{P}.iam.gserviceaccount.com"
            }
        )
    # Deleting the caller leaves its bindings as IAM shows them: deleted:...?uid=
    clients.iam.delete_service_account(request={"name": caller.name})
    members = emulator.service_account_policy(runner.email)["bindings"][0]["members"]
    assert members == [f"deleted:serviceAccount:{caller.email}?uid={caller.unique_id}"]


def test_cloud_run_refuses_a_job_whose_account_does_not_exist(
    emulator: CloudRunEmulator, clients: Clients
) -> None:
    # Unknown projects' accounts are taken on trust, as before.
    clients.jobs.create_job(
        parent=PARENT, job_id="before", job=job(f"anyone@{P}.iam.gserviceaccount.com")
    ).result(timeout=5, polling=FAST)
    runner = clients.create_account("runner-one")
    with pytest.raises(
        gexc.BadRequest, match=f"ghost-1@{P}.iam.gserviceaccount.com does not exist"
    ):
        clients.jobs.create_job(
            parent=PARENT, job_id="ghost", job=job(f"ghost-1@{P}.iam.gserviceaccount.com")
        )
    clients.jobs.create_job(parent=PARENT, job_id="known", job=job(runner.email)).result(
        timeout=5, polling=FAST
    )
    clients.jobs.create_job(
        parent=PARENT, job_id="elsewhere", job=job("x-account@other.iam.gserviceaccount.com")
    ).result(timeout=5, polling=FAST)


# --- faults and the request log -------------------------------------------------------------


def test_rest_faults_name_the_permission_and_the_quota(
    emulator: CloudRunEmulator, clients: Clients
) -> None:
    emulator.fail_next(403, rpc="CreateRepository")
    with pytest.raises(gexc.Forbidden) as denied:
        clients.create_repository()
    assert denied.value.reason == "IAM_PERMISSION_DENIED"
    assert denied.value.metadata == {"permission": "artifactregistry.repositories.create"}
    assert f"'{REPO}'" in denied.value.message
    assert emulator.repositories() == []
    emulator.throttle(rpc="EnableService")
    with pytest.raises(gexc.TooManyRequests) as throttled:
        clients.enable("iam.googleapis.com")
    assert throttled.value.metadata["service"] == "serviceusage.googleapis.com"
    emulator.fail_next(403, rpc="SetIamPolicy", path="/v3/*")
    with pytest.raises(gexc.Forbidden) as denied:
        clients.set_project_policy(clients.project_policy())
    assert denied.value.metadata == {"permission": "resourcemanager.projects.setIamPolicy"}
    logged = emulator.requests(rpc="CreateRepository")
    assert logged[0].status == 403 and logged[0].fault is not None
    assert logged[0].query["repositoryId"] == "images"


def test_grpc_faults_answer_the_status_code(emulator: CloudRunEmulator, clients: Clients) -> None:
    emulator.fail_next(403, rpc="CreateServiceAccount")
    with pytest.raises(gexc.PermissionDenied) as denied:
        clients.create_account("runner-one")
    assert denied.value.metadata == {"permission": "iam.serviceAccounts.create"}
    assert emulator.service_accounts() == []
    emulator.throttle(rpc="GetServiceAccount")
    with pytest.raises(gexc.ResourceExhausted):
        clients.iam.get_service_account(request={"name": f"projects/{P}/serviceAccounts/x"})
    emulator.unavailable(path=f"/v1/projects/{P}/serviceAccounts*")
    with pytest.raises(gexc.ServiceUnavailable):
        clients.create_account("runner-one")
    emulator.fail_next(409, status="ABORTED", rpc="SetIamPolicy")
    account = clients.create_account("runner-one")
    with pytest.raises(gexc.Aborted):
        clients.iam.set_iam_policy(request={"resource": account.name, "policy": {"bindings": []}})
    create = emulator.requests(rpc="CreateServiceAccount")
    assert [r.status for r in create] == [403, 503, 200]
    assert create[-1].method == "POST" and create[-1].path == f"/v1/projects/{P}/serviceAccounts"
    assert create[-1].body == {
        "name": f"projects/{P}",
        "accountId": "runner-one",
        "serviceAccount": {},
    }
    assert create[-1].response["email"] == account.email


def test_a_lost_grpc_answer_still_did_the_call(
    emulator: CloudRunEmulator, clients: Clients
) -> None:
    emulator.timeout_after(rpc="CreateServiceAccount", seconds=1.0)
    with pytest.raises(gexc.DeadlineExceeded):
        clients.iam.create_service_account(
            request={"name": f"projects/{P}", "account_id": "runner-one"}, timeout=0.2
        )
    assert [a["email"] for a in emulator.service_accounts()] == [
        f"runner-one@{P}.iam.gserviceaccount.com"
    ]
    emulator.delay(rpc="GetServiceAccount", seconds=0.05)
    found = clients.iam.get_service_account(
        request={"name": f"projects/{P}/serviceAccounts/runner-one@{P}.iam.gserviceaccount.com"}
    )
    assert found.email.startswith("runner-one@")


def test_reads_are_never_mutating_calls(emulator: CloudRunEmulator, clients: Clients) -> None:
    clients.service("run.googleapis.com")
    clients.project_policy()
    with pytest.raises(gexc.NotFound):
        clients.registry.get_repository(name=REPO)
    with pytest.raises(gexc.NotFound):
        clients.iam.get_service_account(request={"name": f"projects/{P}/serviceAccounts/x"})
    assert [r.rpc for r in emulator.requests()] == [
        "GetService",
        "GetIamPolicy",
        "GetRepository",
        "GetServiceAccount",
    ]
    assert not {r.rpc for r in emulator.requests()} & MUTATING_RPCS


def test_reset_forgets_the_platform_and_the_control_api_shows_it(
    emulator: CloudRunEmulator, clients: Clients
) -> None:
    clients.create_repository()
    clients.create_account("runner-one")
    state = httpx.get(f"{emulator.url}/emulator/platform").json()
    assert [r["name"] for r in state["repositories"]] == [REPO]
    assert [a["email"] for a in state["service_accounts"]] == [
        f"runner-one@{P}.iam.gserviceaccount.com"
    ]
    emulator.reset()
    assert emulator.repositories() == [] and emulator.service_accounts() == []
    # The gRPC server lives on across a reset.
    assert clients.create_account("runner-one").email.startswith("runner-one@")


def test_the_iam_server_stops_with_the_emulator() -> None:
    emulator = CloudRunEmulator().start()
    target = emulator.iam_target
    assert target.startswith("127.0.0.1:")
    emulator.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = emulator.iam_target
    channel = grpc.insecure_channel(target)
    try:
        client = iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel))
        with pytest.raises(gexc.ServiceUnavailable):
            client.get_service_account(
                request={"name": "projects/p/serviceAccounts/x"}, retry=None, timeout=2
            )
    finally:
        channel.close()


def test_standalone_prints_the_iam_target_after_the_url() -> None:
    command = [sys.executable, "-m", "skylane.testing.gcp", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--platform-apis-disabled"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        target = process.stdout.readline().strip().removeprefix("iam_endpoint=")
        assert url.startswith("http://127.0.0.1:") and target.startswith("127.0.0.1:")
        channel = grpc.insecure_channel(target)
        try:
            client = iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel))
            with pytest.raises(gexc.PermissionDenied) as refused:
                client.create_service_account(
                    request={"name": f"projects/{P}", "account_id": "runner-one"}, timeout=5
                )
            assert refused.value.reason == "SERVICE_DISABLED"
        finally:
            channel.close()
    finally:
        stop_process(process, grace=10)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""

"""Provisioning a `cloud-run:push` pool (skylane.provisioning.gcp) against the in-process Google
Cloud emulator (`CloudRunEmulator`: Service Usage, Artifact Registry and Resource Manager over
REST, IAM Admin over gRPC), through the engine (plan, apply, deprovision) and the official SDK
clients. The project starts as a new one: no API enabled. Faults are the cloud refusing a call
(the emulator's fault injection, by method name)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.cloud.iam_admin_v1")
pytest.importorskip("google.cloud.artifactregistry_v1")
pytest.importorskip("google.cloud.service_usage_v1")
pytest.importorskip("google.cloud.resourcemanager_v3")
pytest.importorskip("google.cloud.run_v2")

from skylane import templates  # noqa: E402
from skylane.adapters.base import RunContext  # noqa: E402
from skylane.adapters.cloud_run import CloudRunAdapter  # noqa: E402
from skylane.errors import InvalidInput, PermanentProviderError, ProviderAuthError  # noqa: E402
from skylane.models import Pool  # noqa: E402
from skylane.provisioning import base  # noqa: E402
from skylane.provisioning import gcp as provisioning  # noqa: E402
from skylane.provisioning.gcp import (  # noqa: E402
    APIS,
    DISPATCHER_PROJECT_ROLES,
    account_prefix,
    cloud_run_provisioner,
    label_value,
    slug,
)
from skylane.provisioning.registry import Provisioner, ProvisionOptions  # noqa: E402
from skylane.retries import RetryPolicy  # noqa: E402
from skylane.settings import Settings  # noqa: E402
from skylane.testing.gcp import CloudRunEmulator  # noqa: E402
from skylane.testing.gcp_platform import MUTATING_RPCS  # noqa: E402

PROJECT = "skylane-test"
REGION = "europe-west1"
POOL = "prod"
DOMAIN = f"{PROJECT}.iam.gserviceaccount.com"
RUNTIME = f"skl-prod-run@{DOMAIN}"
DISPATCHER = f"skl-prod-dispatch@{DOMAIN}"
DISPATCHER_MEMBER = f"serviceAccount:{DISPATCHER}"
CONTROL_PLANE = "serviceAccount:control-plane@ops-project.iam.gserviceaccount.com"
REPOSITORY = f"projects/{PROJECT}/locations/{REGION}/repositories/skylane-prod"
OWNER = {"role": "roles/owner", "members": ["user:owner@example.com"]}
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
PLAN = [
    ("service-api", "run.googleapis.com"),
    ("service-api", "artifactregistry.googleapis.com"),
    ("service-api", "iam.googleapis.com"),
    ("artifact-registry-repository", "skylane-prod"),
    ("service-account", "skl-prod-run"),
    ("service-account", "skl-prod-dispatch"),
    ("project-iam-binding", f"roles/run.developer {DISPATCHER_MEMBER}"),
    ("project-iam-binding", f"roles/logging.viewer {DISPATCHER_MEMBER}"),
    ("service-account-iam-binding", f"roles/iam.serviceAccountUser {DISPATCHER_MEMBER}"),
]
CONTROL_PLANE_STEP = ("service-account-iam-binding", f"{TOKEN_CREATOR} control-plane")
# The call each step's create makes last, and so where a fault stops it.
CREATING_RPC = {
    "service-api": "EnableService",
    "artifact-registry-repository": "CreateRepository",
    "service-account": "CreateServiceAccount",
    "project-iam-binding": "SetIamPolicy",
    "service-account-iam-binding": "SetIamPolicy",
}


@pytest.fixture(scope="module")
def server() -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator(
        platform_apis_enabled=False, start_seconds=0.02, run_seconds=0.05
    ) as started:
        yield started


@pytest.fixture
def emulator(server: CloudRunEmulator) -> CloudRunEmulator:
    server.reset()
    return server


class Run:
    """One `skylane pool provision` run's provisioner, as the CLI builds it."""

    def __init__(self, emulator: CloudRunEmulator, **options: Any) -> None:
        options.setdefault("region", REGION)
        options.setdefault("project", PROJECT)
        settings = {"endpoint_url": emulator.url, "iam_endpoint": emulator.iam_target}
        settings.update(options.pop("settings", {}))
        pool = options.pop("pool", POOL)
        self.provisioner: Provisioner = cloud_run_provisioner(
            pool, ProvisionOptions(settings=settings, **options)
        )

    @property
    def context(self) -> base.Context:
        return self.provisioner.context

    @property
    def steps(self) -> list[base.Step]:
        return self.provisioner.steps

    def plan(self) -> list[base.PlanItem]:
        return base.plan(self.steps, self.context)

    def apply(self, **kwargs: Any) -> list[base.Provisioned]:
        return base.apply(self.plan(), self.context, **kwargs)

    def close(self) -> None:
        self.steps[0].gcp.clients.close()  # type: ignore[attr-defined]


@pytest.fixture
def runs(emulator: CloudRunEmulator) -> Iterator[Any]:
    made: list[Run] = []

    def make(**options: Any) -> Run:
        made.append(Run(emulator, **options))
        return made[-1]

    yield make
    for run in made:
        run.close()


def actions(items: list[base.PlanItem]) -> list[tuple[str, str, str]]:
    return [(i.step.kind, i.step.name, i.action.value) for i in items]


def mutating(emulator: CloudRunEmulator) -> list[str]:
    return [f"{r.rpc} {r.path}" for r in emulator.requests() if r.rpc in MUTATING_RPCS]


def bindings(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return list(policy.get("bindings") or [])


def state(emulator: CloudRunEmulator) -> dict[str, Any]:
    """Everything provisioning touches in the project."""
    accounts = [a["email"] for a in emulator.service_accounts()]
    return {
        "apis": emulator.enabled_services(PROJECT),
        "repositories": [r["name"] for r in emulator.repositories()],
        "accounts": accounts,
        "project_bindings": bindings(emulator.project_policy(PROJECT)),
        "account_bindings": {a: bindings(emulator.service_account_policy(a)) for a in accounts},
    }


EMPTY = {
    "apis": [],
    "repositories": [],
    "accounts": [],
    "project_bindings": [OWNER],
    "account_bindings": {},
}


# --- plan -----------------------------------------------------------------------------------


def test_plan_of_an_empty_project_creates_everything_and_changes_nothing(
    emulator: CloudRunEmulator, runs: Any
) -> None:
    run = runs(control_plane=CONTROL_PLANE)
    items = run.plan()
    assert actions(items) == [(k, n, "create") for k, n in [*PLAN, CONTROL_PLANE_STEP]]
    assert mutating(emulator) == []
    # APIs not enabled yet are not asked about what they hold (Google would refuse).
    assert {r.rpc for r in emulator.requests()} == {"GetService", "GetIamPolicy"}
    assert state(emulator) == EMPTY
    # Every id is computed, so the plan shows what the apply will publish.
    assert run.context.defaults == {
        "project": PROJECT,
        "region": REGION,
        "service_account_name": RUNTIME,
    }
    outputs = run.context.outputs
    assert outputs["image_registry"] == f"{REGION}-docker.pkg.dev"
    assert outputs["image_repository"] == f"{REGION}-docker.pkg.dev/{PROJECT}/skylane-prod"
    assert outputs["runtime_service_account"] == RUNTIME
    assert outputs["dispatcher_service_account"] == DISPATCHER
    assert outputs["dispatcher_credentials"] == {"impersonate_service_account": DISPATCHER}
    assert run.provisioner.pool_settings == {
        "endpoint_url": emulator.url,
        "iam_endpoint": emulator.iam_target,
        "project": PROJECT,
        "region": REGION,
        "control_plane": CONTROL_PLANE,
    }


def test_the_region_is_required_and_named(emulator: CloudRunEmulator) -> None:
    settings = {"endpoint_url": emulator.url, "iam_endpoint": emulator.iam_target}
    with pytest.raises(InvalidInput, match="--region") as missing:
        cloud_run_provisioner(POOL, ProvisionOptions(project=PROJECT, settings=settings))
    assert missing.value.field == "--region"
    with pytest.raises(InvalidInput) as bad:
        cloud_run_provisioner(
            POOL, ProvisionOptions(region="Europe West", project=PROJECT, settings=settings)
        )
    assert bad.value.field == "--region"
    # Without --project, against an endpoint there are no Application Default Credentials.
    with pytest.raises(InvalidInput) as no_project:
        cloud_run_provisioner(POOL, ProvisionOptions(region=REGION, settings=settings))
    assert no_project.value.field == "--project"
    # The settings' region and project do as well as the options.
    found = cloud_run_provisioner(
        POOL,
        ProvisionOptions(settings={**settings, "region": REGION, "project": PROJECT}),
    )
    assert (found.pool_settings["project"], found.pool_settings["region"]) == (PROJECT, REGION)
    found.steps[0].gcp.clients.close()  # type: ignore[attr-defined]


def test_an_endpoint_needs_the_iam_endpoint_too() -> None:
    options = ProvisionOptions(region=REGION, project=PROJECT, settings={"endpoint_url": "x"})
    with pytest.raises(InvalidInput, match="iam_endpoint"):
        cloud_run_provisioner(POOL, options)


@pytest.mark.parametrize(
    "member", ["control-plane@ops.iam.gserviceaccount.com", "serviceAccount:", "robot:x@y.z"]
)
def test_the_control_plane_must_be_an_iam_member(emulator: CloudRunEmulator, member: str) -> None:
    settings = {"endpoint_url": emulator.url, "iam_endpoint": emulator.iam_target}
    options = ProvisionOptions(
        region=REGION, project=PROJECT, control_plane=member, settings=settings
    )
    with pytest.raises(InvalidInput) as refused:
        cloud_run_provisioner(POOL, options)
    assert refused.value.field == "--control-plane"


# --- apply ----------------------------------------------------------------------------------


def test_apply_creates_what_the_plan_said(emulator: CloudRunEmulator, runs: Any) -> None:
    run = runs()
    records = run.apply()
    assert [(r.kind, r.name, r.created) for r in records] == [(k, n, True) for k, n in PLAN]
    assert emulator.enabled_services(PROJECT) == sorted(APIS)

    repository = emulator.repository(REPOSITORY)
    assert repository["format"] == "DOCKER"
    assert repository["labels"] == {"skylane-pool": "prod"}
    assert repository["cleanupPolicies"] == {
        "delete-untagged-images": {
            "id": "delete-untagged-images",
            "action": "DELETE",
            "condition": {"tagState": "UNTAGGED", "olderThan": "1209600s"},
        }
    }

    accounts = {a["email"]: a for a in emulator.service_accounts()}
    assert sorted(accounts) == [DISPATCHER, RUNTIME]
    assert accounts[RUNTIME]["description"].startswith("skylane-pool=prod: ")
    assert accounts[DISPATCHER]["description"].startswith("skylane-pool=prod: ")
    # The dispatcher may run jobs, read their logs, and act as the runtime account only.
    assert bindings(emulator.project_policy(PROJECT)) == [
        OWNER,
        {"role": "roles/run.developer", "members": [DISPATCHER_MEMBER]},
        {"role": "roles/logging.viewer", "members": [DISPATCHER_MEMBER]},
    ]
    assert bindings(emulator.service_account_policy(RUNTIME)) == [
        {"role": "roles/iam.serviceAccountUser", "members": [DISPATCHER_MEMBER]}
    ]
    # No one may impersonate the dispatcher unless asked; the runtime account has no role.
    assert bindings(emulator.service_account_policy(DISPATCHER)) == []
    assert [r.resource_id for r in records if r.kind == "service-account"] == [RUNTIME, DISPATCHER]
    binding_ids = [r.resource_id for r in records if r.kind == "project-iam-binding"]
    assert binding_ids == [
        f"projects/{PROJECT}#roles/run.developer#{DISPATCHER_MEMBER}",
        f"projects/{PROJECT}#roles/logging.viewer#{DISPATCHER_MEMBER}",
    ]


def test_the_control_plane_may_impersonate_the_dispatcher_only_when_asked(
    emulator: CloudRunEmulator, runs: Any
) -> None:
    records = runs(control_plane=CONTROL_PLANE).apply()
    assert (records[-1].kind, records[-1].name) == CONTROL_PLANE_STEP
    assert bindings(emulator.service_account_policy(DISPATCHER)) == [
        {"role": TOKEN_CREATOR, "members": [CONTROL_PLANE]}
    ]
    assert bindings(emulator.service_account_policy(RUNTIME)) == [
        {"role": "roles/iam.serviceAccountUser", "members": [DISPATCHER_MEMBER]}
    ]


def test_a_new_control_plane_replaces_the_one_in_the_settings(
    emulator: CloudRunEmulator, runs: Any
) -> None:
    first = runs(control_plane=CONTROL_PLANE)
    records = first.apply()
    other = "user:ops@example.com"
    second = runs(control_plane=other, settings=first.provisioner.pool_settings)
    assert second.provisioner.pool_settings["control_plane"] == other
    assert actions(second.plan())[-1] == (*CONTROL_PLANE_STEP, "create")
    applied = second.apply()
    assert bindings(emulator.service_account_policy(DISPATCHER)) == [
        {"role": TOKEN_CREATOR, "members": [other]}
    ]
    # Deprovision, given the pool's settings alone (as the CLI does), removes it too.
    merged = base.merge_records(records, applied)
    third = runs(settings=second.provisioner.pool_settings)
    removed = base.deprovision(merged, third.steps, third.context)
    assert CONTROL_PLANE_STEP in [(r.kind, r.name) for r in removed]
    assert emulator.service_accounts() == []


def test_a_second_run_is_all_exists_and_changes_nothing(
    emulator: CloudRunEmulator, runs: Any
) -> None:
    records = runs(control_plane=CONTROL_PLANE).apply()
    before = state(emulator)
    emulator.clear_requests()
    again = runs(control_plane=CONTROL_PLANE)
    items = again.plan()
    assert {i.action for i in items} == {base.Action.EXISTS}
    applied = base.apply(items, again.context)
    assert mutating(emulator) == []
    assert state(emulator) == before
    # Untagged bindings are found as not owned, and stay created in the pool's records.
    assert [r.created for r in applied if "binding" in r.kind] == [False] * 4
    merged = base.merge_records(records, applied)
    assert all(r.created for r in merged)
    assert again.context.defaults["service_account_name"] == RUNTIME


def test_a_lost_cleanup_policy_is_drift_and_an_apply_puts_it_back(
    emulator: CloudRunEmulator, runs: Any
) -> None:
    runs().apply()
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import artifactregistry_v1 as ar
    from google.protobuf import field_mask_pb2

    client = ar.ArtifactRegistryClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=emulator.url),
    )
    keep = ar.CleanupPolicy(
        id="keep-recent",
        action=ar.CleanupPolicy.Action.KEEP,
        most_recent_versions=ar.CleanupPolicyMostRecentVersions(keep_count=5),
    )
    client.update_repository(
        repository=ar.Repository(name=REPOSITORY, cleanup_policies={"keep-recent": keep}),
        update_mask=field_mask_pb2.FieldMask(paths=["cleanup_policies"]),
    )
    again = runs()
    items = again.plan()
    repository_item = next(i for i in items if i.step.kind == "artifact-registry-repository")
    assert repository_item.action == base.Action.UPDATE
    assert repository_item.detail == "no cleanup policy for untagged images"
    base.apply(items, again.context)
    policies = emulator.repository(REPOSITORY)["cleanupPolicies"]
    assert sorted(policies) == ["delete-untagged-images", "keep-recent"]
    assert {i.action for i in runs().plan()} == {base.Action.EXISTS}


# --- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(PLAN) + 1))
def test_a_failure_at_each_step_rolls_back_all_but_the_apis(
    emulator: CloudRunEmulator, runs: Any, index: int
) -> None:
    run = runs(control_plane=CONTROL_PLANE)
    items = run.plan()
    step = items[index].step
    rpc = CREATING_RPC[step.kind]
    message = f"refused in test ({uuid.uuid4().hex[:6]})"

    def refuse() -> None:
        emulator.fail_next(400, rpc=rpc, message=message)

    def progress(item: base.PlanItem, resource_id: str) -> None:
        if items.index(item) == index - 1:
            refuse()

    if index == 0:
        refuse()
    with pytest.raises(base.ProvisioningFailed) as failed:
        base.apply(items, run.context, progress=progress)
    assert failed.value.step is step
    assert str(failed.value).startswith(f"{step.kind} {step.name}: ")
    assert message in str(failed.value)
    assert failed.value.left_behind == []
    # Everything but the APIs enabled before the failure is gone again.
    assert state(emulator) == {**EMPTY, "apis": sorted(APIS[: min(index, len(APIS))])}
    rolled_back = {(r.kind, r.name) for r in failed.value.rolled_back}
    assert rolled_back == {(k, n) for k, n in PLAN[len(APIS) : index]}


def test_a_denied_call_names_the_permission_and_the_callers_credentials(
    emulator: CloudRunEmulator, runs: Any
) -> None:
    emulator.fail_next(403, rpc="CreateRepository")
    with pytest.raises(base.ProvisioningFailed) as failed:
        runs().apply()
    message = str(failed.value)
    assert "artifact-registry-repository skylane-prod" in message
    assert "grant your Google Cloud credentials artifactregistry.repositories.create" in message
    assert isinstance(failed.value.__cause__, ProviderAuthError)
    assert "the pool's credentials" not in message
    emulator.reset()
    emulator.fail_next(403, rpc="CreateServiceAccount")
    with pytest.raises(base.ProvisioningFailed) as failed:
        runs().apply()
    assert "grant your Google Cloud credentials iam.serviceAccounts.create" in str(failed.value)
    emulator.reset()
    emulator.fail_next(403, rpc="GetService", count=None)
    with pytest.raises(PermanentProviderError) as denied:
        runs().plan()
    assert "grant your Google Cloud credentials serviceusage.services.get" in denied.value.message
    assert isinstance(denied.value, ProviderAuthError)


def test_a_lost_create_answer_fails_the_apply_and_a_rerun_adopts(
    emulator: CloudRunEmulator, runs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provisioning, "CALL_TIMEOUT_SECONDS", 0.3)
    emulator.timeout_after(rpc="CreateRepository", seconds=1.0)
    with pytest.raises(base.ProvisioningFailed, match="may have gone through"):
        runs().apply()
    assert len(emulator.requests(rpc="CreateRepository")) == 1  # never sent twice
    # The repository was made, labelled: the next run finds it as the pool's own.
    items = runs().plan()
    assert actions(items)[3] == ("artifact-registry-repository", "skylane-prod", "exists")
    assert items[3].found is not None and items[3].found.owned


def test_transient_reads_and_concurrent_policy_changes_are_retried(
    emulator: CloudRunEmulator, runs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provisioning, "PROVIDER_CALLS", RetryPolicy(base=0.01, cap=0.05))
    emulator.unavailable(rpc="GetIamPolicy", path="/v3/*")
    emulator.fail_next(409, status="ABORTED", rpc="SetIamPolicy", path="/v3/*")
    emulator.fail_next(409, status="ABORTED", rpc="SetIamPolicy", path="*/serviceAccounts/*")
    runs().apply()
    assert bindings(emulator.service_account_policy(RUNTIME)) == [
        {"role": "roles/iam.serviceAccountUser", "members": [DISPATCHER_MEMBER]}
    ]
    set_policy = emulator.requests(rpc="SetIamPolicy")
    assert [r.status for r in set_policy] == [409, 200, 200, 409, 200]


def test_a_just_created_account_unknown_to_iam_is_waited_for(
    emulator: CloudRunEmulator, runs: Any
) -> None:
    emulator.fail_next(
        400, rpc="SetIamPolicy", message=f"Service account {DISPATCHER} does not exist.", count=2
    )
    runs().apply()
    assert bindings(emulator.project_policy(PROJECT))[1]["members"] == [DISPATCHER_MEMBER]


def test_a_just_enabled_api_that_still_refuses_is_waited_for() -> None:
    with CloudRunEmulator(platform_apis_enabled=False, api_propagation_seconds=0.3) as emulator:
        run = Run(emulator)
        try:
            run.apply()
        finally:
            run.close()
        refused = [r for r in emulator.requests(rpc="CreateRepository") if r.status == 403]
        assert refused and emulator.repositories()


def test_a_repository_of_another_format_is_refused(emulator: CloudRunEmulator, runs: Any) -> None:
    emulator.enable_service(PROJECT, "artifactregistry.googleapis.com")
    emulator.add_repository(REPOSITORY, format="MAVEN")
    with pytest.raises(PermanentProviderError, match="MAVEN repository"):
        runs().plan()


# --- deprovision ----------------------------------------------------------------------------


def test_deprovision_removes_what_was_created_and_nothing_else(
    emulator: CloudRunEmulator, runs: Any
) -> None:
    emulator.enable_service(PROJECT, "artifactregistry.googleapis.com")
    emulator.add_repository(REPOSITORY, description="the team's images")
    alice = {"role": "roles/run.developer", "members": ["user:alice@example.com"]}
    emulator.set_project_policy(PROJECT, [OWNER, alice])
    run = runs(control_plane=CONTROL_PLANE)
    items = run.plan()
    assert actions(items)[:4] == [
        ("service-api", "run.googleapis.com", "create"),
        ("service-api", "artifactregistry.googleapis.com", "exists"),
        ("service-api", "iam.googleapis.com", "create"),
        ("artifact-registry-repository", "skylane-prod", "exists"),
    ]
    assert items[3].detail == "adopted"
    records = base.apply(items, run.context)
    assert [r.created for r in records[:4]] == [True, False, True, False]
    assert bindings(emulator.project_policy(PROJECT))[1] == {
        "role": "roles/run.developer",
        "members": ["user:alice@example.com", DISPATCHER_MEMBER],
    }

    removed = base.deprovision(records, run.steps, run.context)
    # Newest first; neither the adopted repository nor the APIs.
    assert [(r.kind, r.name) for r in removed] == [CONTROL_PLANE_STEP, *reversed(PLAN[4:])]
    after = state(emulator)
    assert after["repositories"] == [REPOSITORY]
    assert emulator.repository(REPOSITORY)["description"] == "the team's images"
    assert after["accounts"] == []
    assert after["project_bindings"] == [OWNER, alice]
    # APIs stay enabled: disabling one deletes everything of it.
    assert after["apis"] == sorted(APIS)


def test_an_adopted_service_account_is_used_and_left_alone(
    emulator: CloudRunEmulator, runs: Any
) -> None:
    emulator.enable_service(PROJECT, "iam.googleapis.com")
    emulator.add_service_account(PROJECT, "skl-prod-run", description="made by hand")
    run = runs()
    items = run.plan()
    runtime = next(i for i in items if i.step.name == "skl-prod-run")
    assert (runtime.action, runtime.detail) == (base.Action.EXISTS, "adopted")
    records = base.apply(items, run.context)
    base.deprovision(records, run.steps, run.context)
    assert [a["email"] for a in emulator.service_accounts()] == [RUNTIME]
    assert bindings(emulator.service_account_policy(RUNTIME)) == []


# --- the published defaults -----------------------------------------------------------------


def test_the_published_defaults_make_a_job_that_runs_as_the_runtime_account(
    emulator: CloudRunEmulator, runs: Any
) -> None:
    run = runs()
    run.apply()
    template, missing = base.with_defaults(CloudRunAdapter.default_template(), run.context.defaults)
    assert missing == []
    now = datetime.now(UTC)
    pool = Pool(
        id=uuid.uuid4(),
        name=POOL,
        type="cloud-run:push",
        base_job_template=template,
        settings=run.provisioner.pool_settings,
        created_at=now,
        updated_at=now,
    )
    adapter = CloudRunAdapter(pool, Settings())
    key = f"skl-{uuid.uuid4().hex}-1"
    image = f"{run.context.outputs['image_repository']}/flow:1"
    _, config = templates.resolve_job_configuration(template, {"image": image}, None)
    context = RunContext(
        run_id=uuid.uuid4(),
        flow_name="etl",
        deployment_name="etl/nightly",
        pool_name=POOL,
        entrypoint="flows/etl.py:etl",
        api_url="https://skylane.example.com",
        run_token="token",
        idempotency_key=key,
        image=image,
    )
    request = adapter.render(config, context)
    assert (request.project, request.region) == (PROJECT, REGION)
    assert request.job["template"]["template"]["serviceAccount"] == RUNTIME
    ref = adapter.submit(request, key)
    assert ref.startswith(f"projects/{PROJECT}/locations/{REGION}/jobs/")
    job = emulator.job(request.job_id)
    assert job["template"]["template"]["serviceAccount"] == RUNTIME


# --- names ----------------------------------------------------------------------------------

ACCOUNT_ID = re.compile(r"^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$")
REPOSITORY_ID = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
LABEL = re.compile(r"^[a-z0-9_-]{0,63}$")


@pytest.mark.parametrize(
    "pool",
    [
        "prod",
        "a",
        "Prod",
        "9lives",
        "my_pool.v2",
        "production-europe",
        "production-europe-west-1",
        "x" * 200,
        "A.B_C-D",
    ],
)
def test_names_derived_from_any_pool_name_fit_google(pool: str) -> None:
    short = account_prefix(pool)
    for suffix in ("-run", "-dispatch"):
        assert ACCOUNT_ID.match(short + suffix), short + suffix
    assert REPOSITORY_ID.match(f"skylane-{slug(pool)}")
    assert LABEL.match(label_value(pool))
    # Deterministic, readable, and never shared by two pools.
    assert account_prefix(pool) == short and short.startswith("skl-")
    assert account_prefix(pool.upper() + "x") != short
    if pool == pool.lower() and len(pool) <= 17 and re.fullmatch(r"[a-z0-9-]+", pool):
        assert short == f"skl-{pool}"


def test_long_or_changed_names_get_a_hash_so_pools_never_collide() -> None:
    assert account_prefix("production-europe-west-1") != account_prefix("production-europe-west-2")
    assert account_prefix("prod") != account_prefix("Prod")
    assert slug("my.pool") != slug("my-pool")
    assert label_value("Prod") != label_value("prod")


def test_without_an_endpoint_the_callers_adc_are_used_impersonating_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import google.auth
    from google.auth import impersonated_credentials
    from google.auth.credentials import AnonymousCredentials

    for variable in (provisioning.ENDPOINT_VARIABLE, provisioning.IAM_ENDPOINT_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
    asked: list[Any] = []

    def default(scopes: Any = None, **_: Any) -> tuple[Any, str]:
        asked.append(scopes)
        return AnonymousCredentials(), "adc-project"

    monkeypatch.setattr(google.auth, "default", default)
    target = "provisioner@admin-project.iam.gserviceaccount.com"
    found = cloud_run_provisioner(
        POOL,
        ProvisionOptions(region=REGION, credentials={"impersonate_service_account": target}),
    )
    assert found.pool_settings == {"project": "adc-project", "region": REGION}
    clients = found.steps[0].gcp.clients  # type: ignore[attr-defined]
    credentials = clients._load()
    assert isinstance(credentials, impersonated_credentials.Credentials)
    assert credentials.service_account_email == target
    assert asked == [["https://www.googleapis.com/auth/cloud-platform"]]
    # The outputs name the project found; no call was made to compute them.
    context = found.context
    found.steps[4].publish(context, None)
    assert (
        context.defaults["service_account_name"]
        == "skl-prod-run@adc-project.iam.gserviceaccount.com"
    )


# --- Terraform: the root module --emit-terraform writes -----------------------------------------


def test_emitted_terraform_imports_each_resource_by_the_id_google_knows(
    emulator: CloudRunEmulator, runs: Any, tmp_path: Path
) -> None:
    from skylane.pool_types import parse_pool_type
    from skylane.provisioning import terraform
    from tests.unit.terraform_static import check_emitted_root

    member = "serviceAccount:control@ops.iam.gserviceaccount.com"
    run = runs(control_plane=member)
    records = run.apply()
    settings = run.provisioner.pool_settings
    root = terraform.emit_root_module(
        tmp_path, parse_pool_type("cloud-run:push"), POOL, settings, records
    )
    imports = check_emitted_root(root.directory, "cloud-run", records)
    assert root.inputs["control_plane_member"] == member
    assert 'project = "skylane-test"' in (tmp_path / "skylane.tf").read_text()
    for api in APIS:
        assert imports[f'module.pool.google_project_service.this["{api}"]'] == f"{PROJECT}/{api}"
        assert emulator.service_enabled(PROJECT, api)
    repository = imports["module.pool.google_artifact_registry_repository.this"]
    assert repository == REPOSITORY and emulator.repository(repository)
    for address, email in (("runtime", RUNTIME), ("dispatcher", DISPATCHER)):
        account = imports[f"module.pool.google_service_account.{address}"]
        assert account == f"projects/{PROJECT}/serviceAccounts/{email}"
        assert emulator.service_account(email)
    # IAM members: "<resource> <role> <member>", and the member holds the role there.
    bindings = emulator.project_policy(PROJECT)["bindings"]
    for role in DISPATCHER_PROJECT_ROLES:
        project, granted, who = imports[
            f'module.pool.google_project_iam_member.dispatcher["{role}"]'
        ].split(" ")
        assert (project, granted, who) == (PROJECT, role, DISPATCHER_MEMBER)
        assert who in next(b["members"] for b in bindings if b["role"] == role)
    act_as = imports["module.pool.google_service_account_iam_member.dispatcher_act_as_runtime"]
    assert act_as == (
        f"projects/{PROJECT}/serviceAccounts/{RUNTIME} roles/iam.serviceAccountUser "
        f"{DISPATCHER_MEMBER}"
    )
    token = imports["module.pool.google_service_account_iam_member.control_plane[0]"]
    assert token == (
        f"projects/{PROJECT}/serviceAccounts/{DISPATCHER} "
        f"roles/iam.serviceAccountTokenCreator {member}"
    )
    policy = emulator.service_account_policy(DISPATCHER)["bindings"]
    assert member in next(
        b["members"] for b in policy if b["role"] == "roles/iam.serviceAccountTokenCreator"
    )

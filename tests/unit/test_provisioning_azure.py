"""Provisioning an `aci:push` pool (skylane.provisioning.azure) against the in-process ARM
emulator (`skylane.testing.azure.AciEmulator`, over TLS, through the official SDK clients), via
the engine (plan, apply, deprovision). Nothing of skylane or the SDKs is mocked: faults are the
emulator's, and its request log shows what was sent."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.resource")
pytest.importorskip("azure.mgmt.containerregistry")
pytest.importorskip("azure.mgmt.msi")
pytest.importorskip("azure.mgmt.authorization")
pytest.importorskip("azure.mgmt.containerinstance")
pytest.importorskip("cryptography")

from azure.core.credentials import AccessToken  # noqa: E402
from azure.mgmt.authorization import AuthorizationManagementClient  # noqa: E402
from azure.mgmt.authorization.v2022_04_01.models import Permission, RoleDefinition  # noqa: E402
from azure.mgmt.containerregistry import ContainerRegistryManagementClient  # noqa: E402
from azure.mgmt.resource.resources import ResourceManagementClient  # noqa: E402

from skylane import templates  # noqa: E402
from skylane.adapters.aci import AciAdapter  # noqa: E402
from skylane.adapters.base import RunContext  # noqa: E402
from skylane.errors import InvalidInput, PermanentProviderError, ProviderAuthError  # noqa: E402
from skylane.models import Pool  # noqa: E402
from skylane.provisioning import base  # noqa: E402
from skylane.provisioning.azure import (  # noqa: E402
    ACR_PULL,
    DISPATCH_ACTIONS,
    aci_provisioner,
    assignment_name,
    registry_name,
    role_definition_guid,
    slug,
)
from skylane.provisioning.registry import Provisioner, ProvisionOptions  # noqa: E402
from skylane.settings import Settings  # noqa: E402
from skylane.testing.azure import AciEmulator  # noqa: E402
from skylane.testing.azure_resources import MUTATING  # noqa: E402

SUB = "8f1c2d3e-0000-4000-8000-00000000a1c1"
OTHER_SUB = "0a0b0c0d-1e1f-4a2b-8c3d-4e5f6a7b8c9d"
LOCATION = "westeurope"
POOL = "prod"
RG = "skylane-prod"
RG_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}"
REGISTRY = registry_name(SUB, POOL)
REGISTRY_ID = f"{RG_ID}/providers/Microsoft.ContainerRegistry/registries/{REGISTRY}"
LOGIN_SERVER = f"{REGISTRY}.azurecr.io"
IDENTITIES = f"{RG_ID}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
RUNTIME_ID = f"{IDENTITIES}/skylane-prod-runtime"
DISPATCHER_ID = f"{IDENTITIES}/skylane-prod-dispatcher"
ROLES = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions"
DISPATCH_ROLE_ID = f"{ROLES}/{role_definition_guid(RG_ID, 'skylane-prod-dispatch')}"
CONTROL_PLANE = "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"
MARKER = "[skylane-pool=prod]"

PLAN = [
    ("resource-group", RG),
    ("container-registry", REGISTRY),
    ("managed-identity", "skylane-prod-runtime"),
    ("role-assignment", "AcrPull@skylane-prod-runtime"),
    ("role-definition", "skylane-prod-dispatch"),
    ("managed-identity", "skylane-prod-dispatcher"),
    ("role-assignment", "skylane-prod-dispatch@skylane-prod-dispatcher"),
]
CONTROL_PLANE_STEP = ("role-assignment", "skylane-prod-dispatch@control-plane")
NEXT_CONTROL_PLANE = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"


class FixedToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", int(time.time()) + 3600)


@pytest.fixture(scope="module")
def server() -> Iterator[AciEmulator]:
    with AciEmulator(provision_seconds=0.01, run_seconds=0.05) as started:
        yield started


@pytest.fixture
def emulator(server: AciEmulator) -> AciEmulator:
    server.reset()
    return server


def endpoint(emulator: AciEmulator) -> dict[str, Any]:
    return {"endpoint_url": emulator.url, "ca_bundle": emulator.ca_bundle}


def make(
    emulator: AciEmulator,
    *,
    control_plane: str | None = None,
    pool: str = POOL,
    **settings: Any,
) -> Provisioner:
    """A provisioning run as the CLI builds it: the caller's options, the pool's settings."""
    options = ProvisionOptions(
        subscription=SUB,
        region="West Europe",
        control_plane=control_plane,
        settings={**endpoint(emulator), "lro_poll_seconds": 0.01, **settings},
    )
    return aci_provisioner(pool, options)


def plan(provisioner: Provisioner) -> list[base.PlanItem]:
    return base.plan(provisioner.steps, provisioner.context)


def apply(provisioner: Provisioner) -> list[base.Provisioned]:
    return base.apply(plan(provisioner), provisioner.context)


def actions(items: list[base.PlanItem]) -> list[tuple[str, str, str]]:
    return [(i.step.kind, i.step.name, i.action.value) for i in items]


def snapshot(emulator: AciEmulator) -> dict[str, list[Any]]:
    """Everything of the kinds provisioning touches."""
    return {
        "groups": sorted(
            (g["name"], tuple(sorted((g.get("tags") or {}).items())))
            for g in emulator.arm_resource_groups()
        ),
        "registries": sorted(
            (r["name"], r["properties"]["adminUserEnabled"]) for r in emulator.registries()
        ),
        "identities": sorted(i["id"] for i in emulator.identities()),
        "assignments": sorted(a["id"] for a in emulator.role_assignments()),
        "roles": sorted(d["id"] for d in emulator.role_definitions()),
        "container_groups": sorted(g["id"] for g in emulator.groups()),
    }


def mutating(emulator: AciEmulator) -> list[tuple[str, str | None]]:
    return [
        (r.method, r.operation)
        for r in emulator.requests()
        if r.operation in MUTATING or r.method in ("PUT", "PATCH", "DELETE")
    ]


def identity(emulator: AciEmulator, resource_id: str) -> dict[str, Any]:
    return next(i for i in emulator.identities() if i["id"] == resource_id)


def assignments_by_principal(emulator: AciEmulator) -> dict[str, dict[str, Any]]:
    return {a["properties"]["principalId"]: a for a in emulator.role_assignments()}


def authorization(emulator: AciEmulator) -> AuthorizationManagementClient:
    return AuthorizationManagementClient(
        FixedToken(), SUB, base_url=emulator.url, connection_verify=emulator.ca_bundle
    )


# --- where and how ------------------------------------------------------------------------


def test_the_options_name_what_is_missing_and_the_pool_keeps_where_it_went(
    emulator: AciEmulator,
) -> None:
    given = {**endpoint(emulator), "lro_poll_seconds": 0.01, "start_timeout_seconds": 600}
    with pytest.raises(InvalidInput) as no_subscription:
        aci_provisioner(POOL, ProvisionOptions(region=LOCATION, settings=given))
    assert no_subscription.value.field == "--subscription"
    with pytest.raises(InvalidInput) as not_a_guid:
        aci_provisioner(POOL, ProvisionOptions(subscription="my-sub", region=LOCATION))
    assert not_a_guid.value.field == "--subscription"
    with pytest.raises(InvalidInput) as no_region:
        aci_provisioner(POOL, ProvisionOptions(subscription=SUB, settings=given))
    assert no_region.value.field == "--region"
    with pytest.raises(InvalidInput) as bad_group:
        aci_provisioner(
            POOL, ProvisionOptions(subscription=SUB, region=LOCATION, resource_group="a/b")
        )
    assert bad_group.value.field == "--resource-group"
    with pytest.raises(InvalidInput) as bad_principal:
        make(emulator, control_plane="arn:aws:iam::1:role/x")
    assert bad_principal.value.field == "--control-plane"
    with pytest.raises(InvalidInput) as bad_poll:
        make(emulator, lro_poll_seconds="soon")
    assert bad_poll.value.field == "settings.lro_poll_seconds"

    provisioner = aci_provisioner(
        POOL, ProvisionOptions(subscription=SUB, region="West Europe", settings=given)
    )
    assert provisioner.pool_settings == {
        **endpoint(emulator),
        "start_timeout_seconds": 600,
        "subscription_id": SUB,
        "resource_group_name": RG,
        "location": LOCATION,
    }
    # From the pool's settings alone (a later run, or deprovision).
    again = aci_provisioner(
        POOL, ProvisionOptions(settings={**provisioner.pool_settings, "resource_group_name": "rg"})
    )
    assert again.pool_settings["resource_group_name"] == "rg"
    assert again.steps[0].name == "rg"


@pytest.mark.parametrize("pool", ["prod", "Data Team/ETL", "x" * 80, "ünïcode", "a--b", "-edge-"])
def test_names_derived_from_any_pool_name_fit_azure(pool: str) -> None:
    name = registry_name(SUB, pool)
    assert re.fullmatch(r"[a-z0-9]{5,50}", name), name
    assert name == registry_name(SUB.upper(), pool)  # stable
    assert name != registry_name(OTHER_SUB, pool)  # another subscription, another name
    assert registry_name(SUB, pool + "!") != name
    part = slug(pool)
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", part) and len(part) <= 40
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}", f"skylane-{part}-dispatcher")
    if pool == "prod":
        assert (part, name) == ("prod", f"skylaneprod{name[-8:]}")


# --- plan ---------------------------------------------------------------------------------


def test_a_plan_of_an_empty_subscription_creates_everything_and_changes_nothing(
    emulator: AciEmulator,
) -> None:
    provisioner = make(emulator)

    items = plan(provisioner)

    assert actions(items) == [(kind, name, "create") for kind, name in PLAN]
    assert mutating(emulator) == []
    assert {r.method for r in emulator.requests()} <= {"GET", "HEAD", "POST"}
    assert snapshot(emulator)["groups"] == []
    # What the template defaults will be is known already; ids made at creation are not.
    assert provisioner.context.defaults == {
        "subscription_id": SUB,
        "resource_group_name": RG,
        "location": LOCATION,
        "identities": [RUNTIME_ID],
        "image_registry": {"registry_url": LOGIN_SERVER, "identity": RUNTIME_ID},
    }
    outputs = provisioner.context.outputs
    assert (outputs["image_repository"], outputs["image_registry"]) == (LOGIN_SERVER,) * 2
    assert outputs["runtime_identity_id"] == RUNTIME_ID
    assert outputs["dispatcher_identity_id"] == DISPATCHER_ID
    assert outputs["dispatch_role_id"] == DISPATCH_ROLE_ID
    assert outputs["runtime_principal_id"] is None
    assert outputs["dispatcher_credentials"] is None


def test_a_registry_name_taken_elsewhere_is_said_in_the_plan(emulator: AciEmulator) -> None:
    emulator.add_registry(REGISTRY, subscription=OTHER_SUB, resource_group="theirs")

    with pytest.raises(PermanentProviderError, match=f"registry name {REGISTRY} is taken"):
        plan(make(emulator))

    assert mutating(emulator) == []


# --- apply --------------------------------------------------------------------------------


def test_apply_creates_what_the_plan_said(emulator: AciEmulator) -> None:
    provisioner = make(emulator)
    items = plan(provisioner)

    records = base.apply(items, provisioner.context)

    assert [(r.kind, r.name, r.created) for r in records] == [(k, n, True) for k, n in PLAN]
    by_step = {(r.kind, r.name): r.resource_id for r in records}
    assert by_step[PLAN[0]] == RG_ID
    assert by_step[PLAN[1]] == REGISTRY_ID
    assert by_step[PLAN[2]] == RUNTIME_ID
    assert by_step[PLAN[4]] == DISPATCH_ROLE_ID
    assert by_step[PLAN[5]] == DISPATCHER_ID

    group = emulator.resource_group(RG)
    assert group["tags"] == {"skylane-pool": POOL} and group["location"] == LOCATION
    [registry] = emulator.registries()
    assert registry["id"] == REGISTRY_ID and registry["sku"]["name"] == "Basic"
    assert registry["properties"]["adminUserEnabled"] is False  # keyless
    assert registry["tags"] == {"skylane-pool": POOL}
    runtime, dispatcher = identity(emulator, RUNTIME_ID), identity(emulator, DISPATCHER_ID)
    assert runtime["tags"] == dispatcher["tags"] == {"skylane-pool": POOL}
    assert len(emulator.identities()) == 2

    granted = assignments_by_principal(emulator)
    assert set(granted) == {
        runtime["properties"]["principalId"],
        dispatcher["properties"]["principalId"],
    }
    pull = granted[runtime["properties"]["principalId"]]
    assert pull["properties"]["scope"] == REGISTRY_ID  # on the registry only
    assert pull["properties"]["roleDefinitionId"] == f"{ROLES}/{ACR_PULL}"
    assert pull["properties"]["description"].endswith(MARKER)
    assert pull["id"] == by_step[PLAN[3]]
    dispatch = granted[dispatcher["properties"]["principalId"]]
    assert dispatch["properties"]["scope"] == RG_ID
    assert dispatch["properties"]["roleDefinitionId"] == DISPATCH_ROLE_ID
    assert dispatch["properties"]["description"].endswith(MARKER)
    assert dispatch["id"] == by_step[PLAN[6]]

    [role] = emulator.role_definitions()
    properties = role["properties"]
    assert properties["roleName"] == "skylane-prod-dispatch"
    assert properties["type"] == "CustomRole"
    assert properties["assignableScopes"] == [RG_ID]
    assert properties["description"].endswith(MARKER)
    [permission] = properties["permissions"]
    assert sorted(permission["actions"]) == sorted(
        [
            "Microsoft.ContainerInstance/containerGroups/write",
            "Microsoft.ContainerInstance/containerGroups/read",
            "Microsoft.ContainerInstance/containerGroups/delete",
            "Microsoft.ContainerInstance/containerGroups/stop/action",
            "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ]
    )
    assert sorted(permission["actions"]) == sorted(DISPATCH_ACTIONS)
    assert permission["notActions"] == permission["dataActions"] == []

    outputs = provisioner.context.outputs
    assert outputs["runtime_principal_id"] == runtime["properties"]["principalId"]
    assert outputs["dispatcher_credentials"] == {
        "managed_identity_client_id": dispatcher["properties"]["clientId"]
    }
    assert provisioner.context.defaults["image_registry"] == {
        "registry_url": LOGIN_SERVER,
        "identity": RUNTIME_ID,
    }


def test_a_second_run_is_all_exists_and_sends_nothing_that_changes(
    emulator: AciEmulator,
) -> None:
    first = make(emulator)
    records = apply(first)
    before = snapshot(emulator)
    emulator.clear_requests()

    again = make(emulator)
    items = plan(again)
    assert [a for *_, a in actions(items)] == ["exists"] * len(PLAN)
    assert [i.detail for i in items] == [""] * len(PLAN)  # all the pool's own
    second = base.apply(items, again.context)

    assert mutating(emulator) == []
    assert snapshot(emulator) == before
    assert second == records
    assert base.merge_records(records, second) == records
    assert again.context.defaults == first.context.defaults
    assert again.context.outputs == first.context.outputs


def test_the_published_defaults_make_a_runnable_template(emulator: AciEmulator) -> None:
    provisioner = make(emulator)
    apply(provisioner)
    template, missing = base.with_defaults(
        AciAdapter.default_template(), provisioner.context.defaults
    )
    assert missing == []
    now = datetime.now(UTC)
    pool = Pool(
        id=uuid.uuid4(),
        name=POOL,
        type="aci:push",
        base_job_template=template,
        settings=provisioner.pool_settings,
        credentials=provisioner.context.outputs["dispatcher_credentials"],
        created_at=now,
        updated_at=now,
    )
    image = f"{LOGIN_SERVER}/flows/etl:1.0"
    key = f"skl-{uuid.uuid4().hex}-1"
    _, config = templates.resolve_job_configuration(template, {"image": image})
    context = RunContext(
        run_id=uuid.uuid4(),
        flow_name="etl",
        deployment_name="etl/nightly",
        pool_name=POOL,
        entrypoint="flows/etl.py:etl",
        api_url="https://skylane.example.com",
        run_token="sklr_secret",
        idempotency_key=key,
        image=image,
    )
    adapter = AciAdapter(pool, Settings())

    ref = adapter.submit(adapter.render(config, context), key)

    assert ref.startswith(f"{RG_ID}/providers/Microsoft.ContainerInstance/containerGroups/")
    [group] = emulator.groups()
    assert group["id"] == ref and group["location"] == LOCATION
    assert group["identity"]["type"] == "UserAssigned"
    assert list(group["identity"]["userAssignedIdentities"]) == [RUNTIME_ID]
    assert group["properties"]["imageRegistryCredentials"] == [
        {"server": LOGIN_SERVER, "identity": RUNTIME_ID}
    ]
    assert group["properties"]["containers"][0]["properties"]["image"] == image


# --- drift --------------------------------------------------------------------------------


def test_drift_on_the_pools_own_resources_is_planned_as_update_and_fixed(
    emulator: AciEmulator,
) -> None:
    apply(make(emulator))
    acr = ContainerRegistryManagementClient(
        FixedToken(), SUB, base_url=emulator.url, connection_verify=emulator.ca_bundle
    )
    acr.registries.begin_update(RG, REGISTRY, {"properties": {"adminUserEnabled": True}}).result()
    [role] = emulator.role_definitions()
    authorization(emulator).role_definitions.create_or_update(
        RG_ID,
        role["name"],
        RoleDefinition(
            role_name="skylane-prod-dispatch",
            description=role["properties"]["description"],
            permissions=[Permission(actions=["*"])],
            assignable_scopes=[RG_ID],
        ),
    )

    provisioner = make(emulator)
    items = plan(provisioner)
    updates = {(i.step.kind, i.step.name): i.detail for i in items if i.action == "update"}
    assert updates == {
        ("container-registry", REGISTRY): "the admin user is enabled",
        ("role-definition", "skylane-prod-dispatch"): "its permissions differ",
    }
    base.apply(items, provisioner.context)

    assert emulator.registries()[0]["properties"]["adminUserEnabled"] is False
    [fixed] = emulator.role_definitions()
    assert sorted(fixed["properties"]["permissions"][0]["actions"]) == sorted(DISPATCH_ACTIONS)
    assert [a for *_, a in actions(plan(make(emulator)))] == ["exists"] * len(PLAN)


# --- failures roll back -------------------------------------------------------------------

CONTROL_PLANE_ASSIGNMENT = assignment_name(RG_ID, DISPATCH_ROLE_ID, CONTROL_PLANE)
ASSIGNMENTS_AT_GROUP = f"{RG_ID}/providers/Microsoft.Authorization/roleAssignments/*"
# (failing step, the operation the cloud refuses, which calls): every creating step, in order.
FAULTS = [
    (PLAN[0], "resourceGroups.createOrUpdate", "*"),
    (PLAN[1], "registries.create", "*"),
    (PLAN[1], "registries.getOperationStatus", "*"),  # the LRO fails after the PUT
    (PLAN[2], "userAssignedIdentities.createOrUpdate", "*/skylane-prod-runtime"),
    (PLAN[3], "roleAssignments.create", "*/registries/*"),
    (PLAN[4], "roleDefinitions.createOrUpdate", "*"),
    (PLAN[5], "userAssignedIdentities.createOrUpdate", "*/skylane-prod-dispatcher"),
    (PLAN[6], "roleAssignments.create", ASSIGNMENTS_AT_GROUP),
    (
        CONTROL_PLANE_STEP,
        "roleAssignments.create",
        ASSIGNMENTS_AT_GROUP.replace("*", CONTROL_PLANE_ASSIGNMENT),
    ),
]


@pytest.mark.parametrize(("step", "operation", "path"), FAULTS, ids=[f[1] for f in FAULTS])
def test_a_failure_at_each_step_rolls_back_to_nothing(
    emulator: AciEmulator, step: tuple[str, str], operation: str, path: str
) -> None:
    before = snapshot(emulator)
    provisioner = make(emulator, control_plane=CONTROL_PLANE)
    items = plan(provisioner)
    assert actions(items)[-1] == (*CONTROL_PLANE_STEP, "create")
    emulator.fail_next(400, "InvalidRequest", "refused in test", operation=operation, path=path)

    with pytest.raises(base.ProvisioningFailed) as failure:
        base.apply(items, provisioner.context)

    exc = failure.value
    assert (exc.step.kind, exc.step.name) == step
    assert exc.message.startswith(f"{step[0]} {step[1]}: ")
    assert "InvalidRequest: refused in test" in exc.message
    index = [(kind, name) for kind, name, _ in actions(items)].index(step)
    created = [(kind, name) for kind, name, _ in actions(items)[:index]]
    assert [(r.kind, r.name) for r in exc.rolled_back] == created[::-1]
    assert exc.left_behind == []
    assert snapshot(emulator) == before


def test_permission_errors_name_the_permission_and_the_callers_credentials(
    emulator: AciEmulator,
) -> None:
    provisioner = make(emulator)
    items = plan(provisioner)
    emulator.forbid("registries.create")

    with pytest.raises(base.ProvisioningFailed) as failure:
        base.apply(items, provisioner.context)

    message = failure.value.message
    assert "grant your Azure credentials Microsoft.ContainerRegistry/registries/write" in message
    assert "AuthorizationFailed" in message  # Azure's own words follow
    assert isinstance(failure.value.__cause__, ProviderAuthError)
    assert "control plane" not in message
    assert [r.kind for r in failure.value.rolled_back] == ["resource-group"]
    assert snapshot(emulator)["groups"] == []

    emulator.clear_faults()
    emulator.forbid("resourceGroups.get")
    with pytest.raises(PermanentProviderError) as denied:
        plan(make(emulator))
    assert "grant your Azure credentials Microsoft.Resources/subscriptions/resourceGroups/read" in (
        denied.value.message
    )
    assert isinstance(denied.value, ProviderAuthError)


def test_a_registry_that_does_not_finish_in_time_fails_and_is_removed(
    emulator: AciEmulator,
) -> None:
    provisioner = make(emulator, lro_timeout_seconds=0.3)
    items = plan(provisioner)
    emulator.delay("registries.getOperationStatus", seconds=1.5)

    with pytest.raises(base.ProvisioningFailed) as failure:
        base.apply(items, provisioner.context)

    assert failure.value.step.kind == "container-registry"
    assert "did not finish within 0.3 s" in failure.value.message
    assert snapshot(emulator)["registries"] == [] and snapshot(emulator)["groups"] == []


def test_an_assignment_refused_until_a_new_principal_replicates_is_tried_again(
    emulator: AciEmulator,
) -> None:
    emulator.fail_next(
        400,
        "PrincipalNotFound",
        "Principal abc does not exist in the directory.",
        operation="roleAssignments.create",
        count=2,
    )

    records = apply(make(emulator))

    assert all(r.created for r in records)
    assert [r.status for r in emulator.requests("roleAssignments.create")] == [400, 400, 201, 201]


# --- the control plane --------------------------------------------------------------------


def test_the_control_plane_is_given_the_dispatch_role_only_when_asked(
    emulator: AciEmulator,
) -> None:
    apply(make(emulator))
    assert CONTROL_PLANE not in assignments_by_principal(emulator)

    provisioner = make(emulator, control_plane=CONTROL_PLANE.upper())
    items = plan(provisioner)
    assert actions(items) == [
        *((kind, name, "exists") for kind, name in PLAN),
        (*CONTROL_PLANE_STEP, "create"),
    ]
    records = base.apply(items, provisioner.context)

    granted = assignments_by_principal(emulator)[CONTROL_PLANE]
    assert granted["properties"]["scope"] == RG_ID
    assert granted["properties"]["roleDefinitionId"] == DISPATCH_ROLE_ID
    assert granted["name"] == CONTROL_PLANE_ASSIGNMENT
    assert granted["id"] == records[-1].resource_id
    # Kept on the pool, so later runs and deprovision know it.
    assert provisioner.pool_settings["control_plane"] == CONTROL_PLANE
    later = aci_provisioner(POOL, ProvisionOptions(settings=provisioner.pool_settings))
    assert [(s.kind, s.name) for s in later.steps] == [*PLAN, CONTROL_PLANE_STEP]
    assert [a for *_, a in actions(plan(later))] == ["exists"] * (len(PLAN) + 1)


def test_a_new_control_plane_replaces_the_previous_one(emulator: AciEmulator) -> None:
    first = make(emulator, control_plane=CONTROL_PLANE)
    records = apply(first)

    second = aci_provisioner(
        POOL,
        ProvisionOptions(
            control_plane=NEXT_CONTROL_PLANE,
            settings={**first.pool_settings, "lro_poll_seconds": 0.01},
        ),
    )
    items = plan(second)
    assert actions(items)[-1] == (*CONTROL_PLANE_STEP, "create")
    merged = base.merge_records(records, base.apply(items, second.context))

    granted = assignments_by_principal(emulator)
    assert NEXT_CONTROL_PLANE in granted and CONTROL_PLANE not in granted  # the old one lost it
    assert second.pool_settings["control_plane"] == NEXT_CONTROL_PLANE
    [record] = [r for r in merged if (r.kind, r.name) == CONTROL_PLANE_STEP]
    assert record.created and record.resource_id == granted[NEXT_CONTROL_PLANE]["id"]

    # A previous one still there beside a new one that exists is drift, removed by an update.
    emulator.add_role_assignment(
        RG_ID,
        DISPATCH_ROLE_ID,
        CONTROL_PLANE,
        name=CONTROL_PLANE_ASSIGNMENT,
        description=f"made by an earlier run {MARKER}",
        principal_type=None,
    )
    third = aci_provisioner(
        POOL,
        ProvisionOptions(
            control_plane=NEXT_CONTROL_PLANE,
            settings={**first.pool_settings, "lro_poll_seconds": 0.01},
        ),
    )
    items = plan(third)
    assert (items[-1].action.value, items[-1].detail) == (
        "update",
        f"{CONTROL_PLANE} still has it",
    )
    base.apply(items, third.context)
    assert CONTROL_PLANE not in assignments_by_principal(emulator)
    assert NEXT_CONTROL_PLANE in assignments_by_principal(emulator)


# --- deprovision --------------------------------------------------------------------------


def test_deprovision_removes_everything_created_from_the_pools_records_and_settings(
    emulator: AciEmulator,
) -> None:
    before = snapshot(emulator)
    provisioner = make(emulator, control_plane=CONTROL_PLANE)
    records = apply(provisioner)
    stored = [base.Provisioned.from_json(r.to_json()) for r in records]

    # Later, as `pool deprovision` builds it: the pool's settings, no other option.
    later = aci_provisioner(POOL, ProvisionOptions(settings=provisioner.pool_settings))
    removed = base.deprovision(stored, later.steps, later.context)

    assert [(r.kind, r.name) for r in removed] == [(r.kind, r.name) for r in reversed(records)]
    assert snapshot(emulator) == before
    # Again: what is already gone is fine.
    base.deprovision(stored, later.steps, later.context)
    assert snapshot(emulator) == before


def test_deprovision_leaves_an_adopted_group_and_registry_and_what_else_is_there(
    emulator: AciEmulator,
) -> None:
    emulator.add_resource_group(RG, subscription=SUB, location=LOCATION)
    emulator.add_registry(REGISTRY, subscription=SUB, resource_group=RG, admin_user_enabled=True)
    someone = emulator.add_identity("someone-else", subscription=SUB, resource_group=RG)
    emulator.add_role_assignment(
        REGISTRY_ID, f"{ROLES}/{ACR_PULL}", someone["properties"]["principalId"]
    )
    before = snapshot(emulator)

    provisioner = make(emulator)
    items = plan(provisioner)
    assert [(i.action.value, i.detail) for i in items][:2] == [("exists", "adopted")] * 2
    records = base.apply(items, provisioner.context)
    assert [r.created for r in records] == [False, False, True, True, True, True, True]
    # An adopted registry is used as it is (its admin user is the owner's business).
    assert emulator.registries()[0]["properties"]["adminUserEnabled"] is True

    stored = [base.Provisioned.from_json(r.to_json()) for r in records]
    later = aci_provisioner(POOL, ProvisionOptions(settings=provisioner.pool_settings))
    removed = base.deprovision(stored, later.steps, later.context)

    assert [(r.kind, r.name) for r in removed] == [
        (r.kind, r.name) for r in reversed(records) if r.created
    ]
    assert snapshot(emulator) == before


def test_a_grant_made_by_hand_is_adopted_and_left_by_deprovision(emulator: AciEmulator) -> None:
    records = apply(make(emulator))
    pull = next(r for r in records if r.name == "AcrPull@skylane-prod-runtime")
    authorization(emulator).role_assignments.delete_by_id(pull.resource_id)
    runtime = identity(emulator, RUNTIME_ID)["properties"]["principalId"]
    by_hand = emulator.add_role_assignment(REGISTRY_ID, f"{ROLES}/{ACR_PULL}", runtime)

    provisioner = make(emulator)
    items = plan(provisioner)
    [item] = [i for i in items if i.step.name == pull.name]
    assert (item.action.value, item.detail) == ("exists", "adopted")
    again = base.apply(items, provisioner.context)
    merged = base.merge_records(records, again)
    assert next(r for r in merged if r.name == pull.name).created is False

    base.deprovision(merged, provisioner.steps, provisioner.context)
    # The group it lived in was skylane's, and went with everything in it; the role assignment
    # itself was never deleted on its own.
    deletes = [r.path for r in emulator.requests("roleAssignments.delete")]
    assert by_hand["id"] not in deletes


def test_the_pools_role_outlives_a_group_deleted_by_hand_and_is_reused(
    emulator: AciEmulator,
) -> None:
    before = snapshot(emulator)
    records = apply(make(emulator))
    ResourceManagementClient(
        FixedToken(), SUB, base_url=emulator.url, connection_verify=emulator.ca_bundle
    ).resource_groups.begin_delete(RG).result()
    assert len(emulator.role_definitions()) == 1  # a tenant's object: still there

    provisioner = make(emulator)
    items = plan(provisioner)
    assert [a for *_, a in actions(items)] == [
        "create",
        "create",
        "create",
        "create",
        "exists",
        "create",
        "create",
    ]
    again = base.apply(items, provisioner.context)
    assert [r.created for r in again] == [True] * len(PLAN)  # the role is the pool's own
    merged = base.merge_records(records, again)

    base.deprovision(merged, provisioner.steps, provisioner.context)
    assert snapshot(emulator) == before


# --- Terraform: the root module --emit-terraform writes -----------------------------------------


def test_emitted_terraform_imports_each_resource_by_the_id_azure_knows(
    emulator: AciEmulator, tmp_path: Path
) -> None:
    from skylane.pool_types import parse_pool_type
    from skylane.provisioning import terraform
    from tests.unit.terraform_static import check_emitted_root

    provisioner = make(emulator, control_plane=CONTROL_PLANE)
    records = apply(provisioner)
    root = terraform.emit_root_module(
        tmp_path, parse_pool_type("aci:push"), POOL, provisioner.pool_settings, records
    )
    imports = check_emitted_root(root.directory, "aci", records)
    assert root.inputs["registry_name"] == REGISTRY
    assert root.inputs["control_plane_object_id"] == CONTROL_PLANE
    assert f'subscription_id = "{SUB}"' in (tmp_path / "skylane.tf").read_text()
    assert imports["module.pool.azurerm_resource_group.this[0]"] == RG_ID
    assert imports["module.pool.azurerm_container_registry.this"] == REGISTRY_ID
    assert imports["module.pool.azurerm_user_assigned_identity.runtime"] == RUNTIME_ID
    assert imports["module.pool.azurerm_user_assigned_identity.dispatcher"] == DISPATCHER_ID
    # A role definition is imported as "<id>|<scope>", its scope the resource group.
    assert imports["module.pool.azurerm_role_definition.dispatch"] == f"{DISPATCH_ROLE_ID}|{RG_ID}"
    assignments = {a["id"] for a in emulator.role_assignments()}
    for name in ("runtime_acr_pull", "dispatcher", "control_plane[0]"):
        assert imports[f"module.pool.azurerm_role_assignment.{name}"] in assignments


def test_emitted_terraform_reads_an_adopted_resource_group_instead_of_importing_it(
    emulator: AciEmulator, tmp_path: Path
) -> None:
    from skylane.pool_types import parse_pool_type
    from skylane.provisioning import terraform
    from tests.unit.terraform_static import check_emitted_root

    resources = ResourceManagementClient(
        FixedToken(), SUB, base_url=emulator.url, connection_verify=emulator.ca_bundle
    )
    resources.resource_groups.create_or_update("platform", {"location": LOCATION})
    provisioner = make(emulator, resource_group_name="platform")
    records = apply(provisioner)
    assert [r.created for r in records if r.kind == "resource-group"] == [False]
    root = terraform.emit_root_module(
        tmp_path, parse_pool_type("aci:push"), POOL, provisioner.pool_settings, records
    )
    imports = check_emitted_root(root.directory, "aci", records)
    assert root.inputs["create_resource_group"] is False
    assert root.inputs["resource_group_name"] == "platform"
    assert not any("azurerm_resource_group" in to for to in imports)

"""The Resource Manager resources of `skylane.testing.azure_resources` (resource groups,
container registries, user-assigned identities, role definitions and assignments), served by
`AciEmulator`, driven through the official clients only (azure-mgmt-resource,
-containerregistry, -msi, -authorization and -containerinstance) over the emulator's TLS."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("azure.mgmt.resource")
pytest.importorskip("azure.mgmt.containerregistry")
pytest.importorskip("azure.mgmt.msi")
pytest.importorskip("azure.mgmt.authorization")
pytest.importorskip("azure.mgmt.containerinstance")
pytest.importorskip("cryptography")

from azure.core.credentials import AccessToken  # noqa: E402
from azure.core.exceptions import (  # noqa: E402
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.mgmt.authorization import AuthorizationManagementClient  # noqa: E402
from azure.mgmt.authorization.v2022_04_01.models import (  # noqa: E402
    Permission,
    RoleAssignmentCreateParameters,
    RoleDefinition,
)
from azure.mgmt.containerinstance import ContainerInstanceManagementClient, models  # noqa: E402
from azure.mgmt.containerregistry import ContainerRegistryManagementClient  # noqa: E402
from azure.mgmt.msi import ManagedServiceIdentityClient  # noqa: E402
from azure.mgmt.msi.v2024_11_30.models import Identity  # noqa: E402
from azure.mgmt.resource.resources import ResourceManagementClient  # noqa: E402

from skylane.testing.azure import AciEmulator, Fault  # noqa: E402
from skylane.testing.azure_resources import ACR_PULL, CONTRIBUTOR, MUTATING  # noqa: E402

SUB = "6f1c2b3a-0d4e-4f5a-8b6c-7d8e9f0a1b2c"
OTHER_SUB = "0a0b0c0d-1e1f-4a2b-8c3d-4e5f6a7b8c9d"
RG = "pool-rg"
RG_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}"
ACR_PULL_ID = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL}"
REGISTRY_BODY = {"location": "westeurope", "sku": {"name": "Basic"}}


class FixedToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", int(time.time()) + 3600)


class Clients:
    """The official clients of one subscription, pointed at the emulator."""

    def __init__(self, emulator: AciEmulator, subscription: str = SUB) -> None:
        options: dict[str, Any] = {
            "credential": FixedToken(),
            "subscription_id": subscription,
            "base_url": emulator.url,
            "connection_verify": emulator.ca_bundle,
            "retry_total": 0,
            "polling_interval": 0.01,
        }
        self.resources = ResourceManagementClient(**options)
        self.acr = ContainerRegistryManagementClient(**options)
        self.msi = ManagedServiceIdentityClient(**options)
        self.auth = AuthorizationManagementClient(**options)
        self.aci = ContainerInstanceManagementClient(**options)


@pytest.fixture(scope="module")
def server() -> Iterator[AciEmulator]:
    with AciEmulator(provision_seconds=0.01, run_seconds=0.05) as started:
        yield started


@pytest.fixture
def emulator(server: AciEmulator) -> Iterator[AciEmulator]:
    server.reset()
    yield server
    server.configure_resources(operation_seconds=0)


@pytest.fixture
def az(emulator: AciEmulator) -> Clients:
    return Clients(emulator)


def with_group(az: Clients, name: str = RG, **tags: str) -> Any:
    return az.resources.resource_groups.create_or_update(
        name, {"location": "West Europe", "tags": tags or None}
    )


def identity(az: Clients, name: str = "runner", group: str = RG) -> Any:
    return az.msi.user_assigned_identities.create_or_update(
        group, name, Identity(location="westeurope", tags={"team": "data"})
    )


def registry(az: Clients, name: str = "skylaneregistry1", group: str = RG) -> Any:
    return az.acr.registries.begin_create(group, name, REGISTRY_BODY).result()


def custom_role(az: Clients, name: str = "dispatch", scope: str = RG_ID, **kwargs: Any) -> Any:
    guid = kwargs.pop("guid", str(uuid.uuid4()))
    body = RoleDefinition(
        role_name=name,
        description=kwargs.pop("description", "d"),
        role_type="CustomRole",
        permissions=[Permission(actions=kwargs.pop("actions", ["Microsoft.X/read"]))],
        assignable_scopes=kwargs.pop("assignable_scopes", [scope]),
    )
    return az.auth.role_definitions.create_or_update(scope, guid, body)


def assign(az: Clients, scope: str, role: str, principal: str, name: str | None = None) -> Any:
    parameters = RoleAssignmentCreateParameters(
        role_definition_id=role, principal_id=principal, principal_type="ServicePrincipal"
    )
    return az.auth.role_assignments.create(scope, name or str(uuid.uuid4()), parameters)


def a_group(identity_id: str | None = None) -> models.ContainerGroup:
    container = models.Container(
        name="main",
        image="python:3.12-slim",
        resources=models.ResourceRequirements(
            requests=models.ResourceRequests(cpu=1.0, memory_in_gb=1.5)
        ),
    )
    group = models.ContainerGroup(
        location="westeurope", containers=[container], os_type="Linux", restart_policy="Never"
    )
    if identity_id:
        group.identity = models.ContainerGroupIdentity(
            type="UserAssigned",
            user_assigned_identities={identity_id: models.UserAssignedIdentities()},
        )
    return group


def error_code(raised: pytest.ExceptionInfo[HttpResponseError]) -> str:
    return str(raised.value.error.code if raised.value.error else "")


# -- resource groups ---------------------------------------------------------------------------


def test_a_resource_group_is_created_read_checked_and_listed(emulator: AciEmulator) -> None:
    az = Clients(emulator)
    groups = az.resources.resource_groups
    assert groups.check_existence(RG) is False
    with pytest.raises(ResourceNotFoundError) as missing:
        groups.get(RG)
    assert error_code(missing) == "ResourceGroupNotFound"

    created = with_group(az, **{"skylane-pool": "prod"})

    assert created.id == RG_ID and created.location == "westeurope"
    assert created.tags == {"skylane-pool": "prod"}
    assert created.properties.provisioning_state == "Succeeded"
    assert groups.check_existence(RG.upper()) is True  # names are case-insensitive
    assert groups.get(RG).tags == {"skylane-pool": "prod"}
    assert [g.name for g in groups.list()] == [RG]
    assert emulator.resource_group(RG)["tags"] == {"skylane-pool": "prod"}
    # A PUT again replaces the tags; another location is refused.
    assert groups.create_or_update(RG, {"location": "westeurope"}).tags is None
    with pytest.raises(ResourceExistsError) as moved:
        groups.create_or_update(RG, {"location": "northeurope"})
    assert error_code(moved) == "InvalidResourceGroupLocation"
    with pytest.raises(HttpResponseError) as bad:
        groups.create_or_update("bad name!", {"location": "westeurope"})
    assert error_code(bad) == "InvalidResourceGroupName"
    assert [(r.method, r.operation) for r in emulator.requests()][:3] == [
        ("HEAD", "resourceGroups.checkExistence"),
        ("GET", "resourceGroups.get"),
        ("PUT", "resourceGroups.createOrUpdate"),
    ]


def test_deleting_a_resource_group_is_an_lro_that_takes_everything_in_it(
    emulator: AciEmulator,
) -> None:
    az = Clients(emulator)
    with_group(az)
    with_group(az, "elsewhere")
    runner = identity(az)
    kept = identity(az, "kept", "elsewhere")
    acr = registry(az)
    role = custom_role(az)
    assign(az, acr.id, ACR_PULL_ID, runner.principal_id)
    assign(az, RG_ID, role.id, runner.principal_id)
    assign(az, f"/subscriptions/{SUB}/resourceGroups/elsewhere", ACR_PULL_ID, kept.principal_id)
    az.aci.container_groups.begin_create_or_update(RG, "run-1", a_group(runner.id)).result()
    emulator.configure_resources(operation_seconds=0.1)

    poller = az.resources.resource_groups.begin_delete(RG)
    poller.result(timeout=5)

    assert poller.done()
    statuses = [r.status for r in emulator.requests("operationResults.get")]
    assert statuses[0] == 202 and statuses[-1] == 204  # polled until done
    assert az.resources.resource_groups.check_existence(RG) is False
    assert emulator.registries() == []
    assert [i["name"] for i in emulator.identities()] == ["kept"]
    assert [a["properties"]["scope"] for a in emulator.role_assignments()] == [
        f"/subscriptions/{SUB}/resourceGroups/elsewhere"
    ]
    assert emulator.groups() == []  # its container groups went too
    # Custom roles belong to the tenant: they stay.
    assert [d["properties"]["roleName"] for d in emulator.role_definitions()] == ["dispatch"]
    with pytest.raises(ResourceNotFoundError) as missing:
        az.resources.resource_groups.begin_delete(RG)
    assert error_code(missing) == "ResourceGroupNotFound"


def test_a_group_created_through_the_api_exists_for_container_groups() -> None:
    with AciEmulator(resource_groups=["flows"], provision_seconds=0.01) as emulator:
        az = Clients(emulator)
        with pytest.raises(ResourceNotFoundError) as unknown:
            az.aci.container_groups.begin_create_or_update(RG, "run-1", a_group())
        assert error_code(unknown) == "ResourceGroupNotFound"

        with_group(az)
        az.aci.container_groups.begin_create_or_update(RG, "run-1", a_group()).result()
        az.aci.container_groups.begin_create_or_update("flows", "run-2", a_group()).result()

        assert sorted(g["name"] for g in emulator.groups()) == ["run-1", "run-2"]


def test_a_container_group_needs_its_identity_in_a_group_the_emulator_knows(
    emulator: AciEmulator, az: Clients
) -> None:
    with_group(az)
    missing_id = f"{RG_ID}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/nobody"
    with pytest.raises(HttpResponseError) as refused:
        az.aci.container_groups.begin_create_or_update(RG, "run-1", a_group(missing_id))
    assert refused.value.status_code == 400
    assert error_code(refused) == "FailedIdentityOperation"
    assert missing_id in str(refused.value.error.message)

    runner = identity(az)
    az.aci.container_groups.begin_create_or_update(RG, "run-1", a_group(runner.id)).result()
    # An identity in a group the emulator was never told about is taken on trust.
    elsewhere = missing_id.replace(RG, "unknown-rg")
    az.aci.container_groups.begin_create_or_update(RG, "run-2", a_group(elsewhere)).result()


# -- registries --------------------------------------------------------------------------------


def test_a_registry_is_created_by_an_lro_and_read_updated_and_deleted(
    emulator: AciEmulator, az: Clients
) -> None:
    with_group(az)
    emulator.configure_resources(operation_seconds=0.1)
    body = {**REGISTRY_BODY, "tags": {"skylane-pool": "prod"}}

    poller = az.acr.registries.begin_create(RG, "SkylaneReg01", body)
    created = poller.result(timeout=5)

    assert created.login_server == "skylanereg01.azurecr.io"
    assert created.provisioning_state == "Succeeded" and created.admin_user_enabled is False
    assert created.sku.name == "Basic" and created.tags == {"skylane-pool": "prod"}
    [put] = emulator.requests("registries.create")
    assert put.status == 201 and put.response["properties"]["provisioningState"] == "Creating"
    assert [r.response["status"] for r in emulator.requests("registries.getOperationStatus")][
        0
    ] == "InProgress"
    assert emulator.registries()[0]["properties"]["provisioningState"] == "Succeeded"

    updated = az.acr.registries.begin_update(
        RG, "skylanereg01", {"properties": {"adminUserEnabled": True}}
    ).result()
    assert updated.admin_user_enabled is True
    assert az.acr.registries.get(RG, "skylanereg01").admin_user_enabled is True
    assert [r.name for r in az.acr.registries.list_by_resource_group(RG)] == ["SkylaneReg01"]

    az.acr.registries.begin_delete(RG, "skylanereg01").result(timeout=5)
    assert emulator.registries() == []
    with pytest.raises(ResourceNotFoundError) as gone:
        az.acr.registries.get(RG, "skylanereg01")
    assert error_code(gone) == "ResourceNotFound"
    az.acr.registries.begin_delete(RG, "skylanereg01").result()  # 204: nothing to delete


def test_registry_names_are_global_and_checked(emulator: AciEmulator, az: Clients) -> None:
    emulator.add_registry("takenname1", subscription=OTHER_SUB, resource_group="theirs")
    with_group(az)
    check = az.acr.registries.check_name_availability

    taken = check({"name": "TakenName1", "type": "Microsoft.ContainerRegistry/registries"})
    assert (taken.name_available, taken.reason) == (False, "AlreadyExists")
    invalid = check({"name": "no-dashes", "type": "Microsoft.ContainerRegistry/registries"})
    assert (invalid.name_available, invalid.reason) == (False, "Invalid")
    free = check({"name": "freename1", "type": "Microsoft.ContainerRegistry/registries"})
    assert free.name_available is True

    with pytest.raises(ResourceExistsError) as in_use:
        az.acr.registries.begin_create(RG, "takenname1", REGISTRY_BODY)
    assert error_code(in_use) == "AlreadyInUse"
    with pytest.raises(HttpResponseError) as bad_name:
        az.acr.registries.begin_create(RG, "abc", REGISTRY_BODY)
    assert error_code(bad_name) == "InvalidResourceName"
    with pytest.raises(HttpResponseError) as bad_sku:
        az.acr.registries.begin_create(RG, "freename1", {**REGISTRY_BODY, "sku": {"name": "Gold"}})
    assert error_code(bad_sku) == "InvalidSkuName"
    with pytest.raises(ResourceNotFoundError) as no_group:
        az.acr.registries.begin_create("nowhere", "freename1", REGISTRY_BODY)
    assert error_code(no_group) == "ResourceGroupNotFound"


# -- identities --------------------------------------------------------------------------------


def test_an_identity_gets_a_principal_and_a_client_id(emulator: AciEmulator, az: Clients) -> None:
    with_group(az)
    created = identity(az)

    assert (
        created.id == f"{RG_ID}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/runner"
    )
    for value in (created.principal_id, created.client_id, created.tenant_id):
        uuid.UUID(value)
    assert created.tags == {"team": "data"}
    again = identity(az)  # a PUT again keeps the identity
    assert (again.principal_id, again.client_id) == (created.principal_id, created.client_id)
    assert az.msi.user_assigned_identities.get(RG, "runner").client_id == created.client_id
    assert [i["name"] for i in emulator.identities()] == ["runner"]

    az.msi.user_assigned_identities.delete(RG, "runner")
    az.msi.user_assigned_identities.delete(RG, "runner")  # gone already: fine
    with pytest.raises(ResourceNotFoundError):
        az.msi.user_assigned_identities.get(RG, "runner")


# -- role definitions --------------------------------------------------------------------------


def test_built_in_roles_are_read_by_id_and_listed_by_name(az: Clients) -> None:
    scope = f"/subscriptions/{SUB}"
    acr_pull = az.auth.role_definitions.get(scope, ACR_PULL)
    assert acr_pull.role_name == "AcrPull" and acr_pull.role_type == "BuiltInRole"
    assert acr_pull.id == ACR_PULL_ID
    assert acr_pull.permissions[0].actions == ["Microsoft.ContainerRegistry/registries/pull/read"]
    contributor = az.auth.role_definitions.get(scope, CONTRIBUTOR)
    assert contributor.role_name == "Contributor"
    found = list(az.auth.role_definitions.list(scope, filter="roleName eq 'Contributor'"))
    assert [d.name for d in found] == [CONTRIBUTOR]
    with pytest.raises(ResourceNotFoundError) as missing:
        az.auth.role_definitions.get(scope, str(uuid.uuid4()))
    assert error_code(missing) == "RoleDefinitionDoesNotExist"


def test_a_custom_role_is_written_at_a_group_and_its_name_is_unique(
    emulator: AciEmulator, az: Clients
) -> None:
    with_group(az)
    with_group(az, "other")
    guid = str(uuid.uuid4())
    actions = ["Microsoft.ContainerInstance/containerGroups/read"]

    created = custom_role(az, "skylane-dispatch", guid=guid, actions=actions)

    assert (
        created.id
        == f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    )
    assert created.role_type == "CustomRole" and created.assignable_scopes == [RG_ID]
    listed = az.auth.role_definitions.list(RG_ID, filter="roleName eq 'skylane-dispatch'")
    assert [d.name for d in listed] == [guid]
    customs = az.auth.role_definitions.list(f"/subscriptions/{SUB}", filter="type eq 'CustomRole'")
    assert [d.name for d in customs] == [guid]
    # Updated in place under the same GUID.
    updated = custom_role(az, "skylane-dispatch", guid=guid, actions=[*actions, "Microsoft.Y/read"])
    assert len(updated.permissions[0].actions) == 2
    with pytest.raises(ResourceExistsError) as same_name:
        custom_role(az, "SKYLANE-dispatch", scope=f"/subscriptions/{SUB}/resourceGroups/other")
    assert error_code(same_name) == "RoleDefinitionWithSameNameExists"
    with pytest.raises(HttpResponseError) as outside:
        custom_role(
            az, "elsewhere", assignable_scopes=[f"/subscriptions/{SUB}/resourceGroups/other"]
        )
    assert error_code(outside) == "InvalidCreateRoleDefinitionRequest"
    with pytest.raises(HttpResponseError) as built_in:
        custom_role(az, "AcrPull2", guid=ACR_PULL)
    assert error_code(built_in) == "BuiltInRoleDefinitionUpdateNotAllowed"

    assign(az, RG_ID, created.id, str(uuid.uuid4()))
    with pytest.raises(ResourceExistsError) as in_use:
        az.auth.role_definitions.delete(RG_ID, guid)
    assert error_code(in_use) == "RoleDefinitionHasAssignments"
    for assignment in emulator.role_assignments():
        az.auth.role_assignments.delete_by_id(assignment["id"])
    assert az.auth.role_definitions.delete(RG_ID, guid).name == guid
    assert az.auth.role_definitions.delete(RG_ID, guid) is None  # 204: gone already
    assert emulator.role_definitions() == []


# -- role assignments --------------------------------------------------------------------------


def test_role_assignments_at_any_scope_are_unique_per_principal_role_and_scope(
    emulator: AciEmulator, az: Clients
) -> None:
    with_group(az)
    runner = identity(az)
    acr = registry(az)
    name = str(uuid.uuid4())

    created = assign(az, acr.id, ACR_PULL_ID, runner.principal_id, name)

    assert created.id == f"{acr.id}/providers/Microsoft.Authorization/roleAssignments/{name}"
    assert created.scope == acr.id and created.principal_id == runner.principal_id
    assert created.role_definition_id == ACR_PULL_ID
    assert az.auth.role_assignments.get(acr.id, name).id == created.id
    with pytest.raises(ResourceNotFoundError) as elsewhere:
        az.auth.role_assignments.get(RG_ID, name)  # not at that scope
    assert error_code(elsewhere) == "RoleAssignmentNotFound"
    with pytest.raises(ResourceExistsError) as again:
        assign(az, acr.id, ACR_PULL_ID, runner.principal_id)  # another name, same grant
    assert error_code(again) == "RoleAssignmentExists"
    assert assign(az, acr.id, ACR_PULL_ID, runner.principal_id, name).name == name  # same: fine

    # Listing: at, above or under the scope; atScope() leaves out what is under it.
    group_level = assign(az, RG_ID, ACR_PULL_ID, runner.principal_id)
    other = str(uuid.uuid4())
    assign(az, RG_ID, ACR_PULL_ID, other)
    listed = az.auth.role_assignments.list_for_scope
    assert {a.name for a in listed(RG_ID)} == {name, group_level.name, *_named(listed, other)}
    assert {a.name for a in listed(RG_ID, filter="atScope()")} == {
        group_level.name,
        *_named(listed, other),
    }
    assert {a.name for a in listed(acr.id)} == {name, group_level.name, *_named(listed, other)}
    assert {a.name for a in listed(RG_ID, filter=f"principalId eq '{runner.principal_id}'")} == {
        name,
        group_level.name,
    }

    assert az.auth.role_assignments.delete(acr.id, name).name == name
    assert az.auth.role_assignments.delete(acr.id, name) is None
    az.auth.role_assignments.delete_by_id(group_level.id)
    assert [a["properties"]["principalId"] for a in emulator.role_assignments()] == [other]


def _named(listed: Any, principal: str) -> set[str]:
    return {a.name for a in listed(RG_ID, filter=f"principalId eq '{principal}'")}


def test_a_role_assignment_is_checked_as_azure_checks_it(
    emulator: AciEmulator, az: Clients
) -> None:
    with_group(az)
    with_group(az, "other")
    principal = str(uuid.uuid4())
    missing_role = ACR_PULL_ID.replace(ACR_PULL, str(uuid.uuid4()))
    role = custom_role(az)  # assignable at RG only

    cases = [
        (lambda: assign(az, RG_ID, missing_role, principal), "RoleDefinitionDoesNotExist"),
        (lambda: assign(az, RG_ID, ACR_PULL_ID, "not-a-guid"), "InvalidPrincipalId"),
        (
            lambda: assign(az, RG_ID, ACR_PULL_ID, principal, "not-a-guid"),
            "InvalidRoleAssignmentId",
        ),
        (
            lambda: assign(az, f"/subscriptions/{SUB}/resourceGroups/other", role.id, principal),
            "RoleAssignmentScopeNotAllowed",
        ),
        (
            lambda: assign(
                az,
                f"{RG_ID}/providers/Microsoft.ContainerRegistry/registries/nope1",
                ACR_PULL_ID,
                principal,
            ),
            "ResourceNotFound",
        ),
        (
            lambda: assign(az, f"/subscriptions/{SUB}/resourceGroups/gone", ACR_PULL_ID, principal),
            "ResourceGroupNotFound",
        ),
    ]
    for call, code in cases:
        with pytest.raises(HttpResponseError) as refused:
            call()
        assert error_code(refused) == code
    assert emulator.role_assignments() == []
    # Seeded ones are like any other.
    seeded = emulator.add_role_assignment(RG_ID, ACR_PULL_ID, principal, description="by hand")
    assert az.auth.role_assignments.get(RG_ID, seeded["name"]).description == "by hand"


# -- faults and the request log ----------------------------------------------------------------


def test_faults_apply_to_the_new_operations_by_name(emulator: AciEmulator, az: Clients) -> None:
    with_group(az)
    emulator.forbid("registries.create")
    emulator.throttle("roleAssignments.create", retry_after=7)
    emulator.add_fault(
        Fault(operation="userAssignedIdentities.createOrUpdate", status=409, code="Conflict")
    )

    with pytest.raises(HttpResponseError) as forbidden:
        registry(az)
    assert forbidden.value.status_code == 403
    assert error_code(forbidden) == "AuthorizationFailed"
    assert "Microsoft.ContainerRegistry/registries/write" in str(forbidden.value.error.message)
    with pytest.raises(HttpResponseError) as throttled:
        assign(az, RG_ID, ACR_PULL_ID, str(uuid.uuid4()))
    assert throttled.value.status_code == 429
    assert throttled.value.response.headers["Retry-After"] == "7"
    with pytest.raises(ResourceExistsError):
        identity(az)
    identity(az)  # the fault fired once

    assert emulator.registries() == [] and emulator.role_assignments() == []
    logged = [(r.operation, r.status, r.fault is not None) for r in emulator.requests()]
    assert logged == [
        ("resourceGroups.createOrUpdate", 201, False),
        ("registries.create", 403, True),
        ("roleAssignments.create", 429, True),
        ("userAssignedIdentities.createOrUpdate", 409, True),
        ("userAssignedIdentities.createOrUpdate", 201, False),
    ]
    assert {"registries.create", "roleAssignments.create", "resourceGroups.delete"} <= MUTATING
    assert not {"registries.get", "roleAssignments.list", "registries.checkNameAvailability"} & (
        MUTATING
    )
    with pytest.raises(ValueError, match="unknown operation"):
        Fault(operation="registries.explode")

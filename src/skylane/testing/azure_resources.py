"""The rest of Azure Resource Manager that provisioning an `aci:push` pool calls (see
`skylane.provisioning.azure`): resource groups, container registries, user-assigned managed
identities, role definitions and role assignments. `skylane.testing.azure.AciEmulator` serves
them next to its container groups: one URL, the same TLS, token and api-version checks, the
same faults and request log, in the JSON shapes the official clients parse:
`azure-mgmt-resource` (`ResourceManagementClient`, API 2025-04-01), `azure-mgmt-containerregistry`
(2025-11-01), `azure-mgmt-msi` (2024-11-30) and `azure-mgmt-authorization` (2022-04-01).

What it serves (`{rg}` is `/subscriptions/{sub}/resourceGroups/{name}`; fixed path segments and
names are case-insensitive, as in ARM; the operation names, for faults and the request log, in
parentheses):

- Resource groups. `PUT {rg}` (`resourceGroups.createOrUpdate`): 201 with the group, 200 when
  it exists in the same location (its tags replaced), 409 `InvalidResourceGroupLocation` in
  another; `location` is required (400 `LocationRequired`); a name is 1-90 letters, digits,
  `._-()`, not ending in a period (400 `InvalidResourceGroupName`). `GET {rg}`
  (`resourceGroups.get`), `HEAD {rg}` (`resourceGroups.checkExistence`: 204, or 404 without a
  body), `GET /subscriptions/{sub}/resourcegroups` (`resourceGroups.list`). `DELETE {rg}`
  (`resourceGroups.delete`): 202 with a `Location` to poll, `GET /subscriptions/{sub}/
  operationresults/{id}` (`operationResults.get`), 202 until `operation_seconds` have passed,
  then 204. The group and everything in it go at once: its registries, identities, the role
  assignments at or under it and its container groups; custom role definitions stay (they
  belong to the tenant), as in Azure. A missing group is 404 `ResourceGroupNotFound` to every
  call in it.
- Container registries, `{rg}/providers/Microsoft.ContainerRegistry/registries/{name}`. `PUT`
  (`registries.create`): 201 with `provisioningState` `Creating` and an `Azure-AsyncOperation`
  header (`{registry}/operationStatuses/{id}`, `registries.getOperationStatus`: `InProgress`
  until `operation_seconds` have passed, then `Succeeded`), 200 for one that exists in this
  group (updated). Names are 5-50 letters and digits (400 `InvalidResourceName`) and unique
  across all subscriptions (409 `AlreadyInUse`); `sku.name` Basic, Standard or Premium (400
  `InvalidSkuName`); `loginServer` is `{name}.azurecr.io` in lowercase; `adminUserEnabled`
  false unless sent. `GET` (`registries.get`), `PATCH` (`registries.update`: tags, sku,
  `adminUserEnabled`; 200), `DELETE` (`registries.delete`: 202 with a `Location`, as for a
  group, or 204 when there is none; the role assignments at or under it go too), `GET
  {rg}/providers/Microsoft.ContainerRegistry/registries` (`registries.listByResourceGroup`),
  `POST /subscriptions/{sub}/providers/Microsoft.ContainerRegistry/checkNameAvailability`
  (`registries.checkNameAvailability`: `{"nameAvailable", "reason"?: "Invalid" |
  "AlreadyExists", "message"?}`).
- User-assigned identities, `{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/
  {name}`: `PUT` (`userAssignedIdentities.createOrUpdate`: 201 with `properties` `principalId`,
  `clientId` (new uuids) and `tenantId`, 200 with its tags replaced when it exists; names 3-128
  letters, digits, `-` and `_`, starting with a letter or digit), `GET`
  (`userAssignedIdentities.get`), `DELETE` (`userAssignedIdentities.delete`: 200, 204 when
  there is none; role assignments of its principal stay, as in Azure), `GET` of the collection
  (`userAssignedIdentities.listByResourceGroup`).
- Role definitions, `{scope}/providers/Microsoft.Authorization/roleDefinitions[/{guid}]`, where
  a scope is `/subscriptions/{sub}` or a resource group's or a resource's id. Built-in roles
  (`BUILT_IN_ROLES`: AcrPull, AcrPush, Contributor, Owner, Reader, Managed Identity Operator)
  are readable at any scope (`roleDefinitions.get`); `GET` of the collection
  (`roleDefinitions.list`) takes `$filter=roleName eq 'NAME'` or `type eq 'CustomRole'` (and
  both, with `and`) and lists the built-in roles and the custom ones assignable at, above or
  under the scope. Custom roles: `PUT` (`roleDefinitions.createOrUpdate`, always 201; the name
  is a GUID, 400 `InvalidRoleDefinitionId`; `roleName` unique in the tenant, 409
  `RoleDefinitionWithSameNameExists`; `assignableScopes` must include the request's scope, 400
  `InvalidCreateRoleDefinitionRequest`; built-in ones cannot be changed, 400
  `BuiltInRoleDefinitionUpdateNotAllowed`), `DELETE` (`roleDefinitions.delete`: 200, 204 when
  there is none, 409 `RoleDefinitionHasAssignments` while assignments use it). Their id is
  `/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}`, whatever the
  scope they were written at.
- Role assignments, `{scope}/providers/Microsoft.Authorization/roleAssignments[/{guid}]`:
  `PUT` (`roleAssignments.create`: 201; the name is a GUID, 400 `InvalidRoleAssignmentId`;
  `roleDefinitionId` must name a known role, 400 `RoleDefinitionDoesNotExist`, assignable at
  the scope, 400 `RoleAssignmentScopeNotAllowed`; `principalId` a GUID, 400
  `InvalidPrincipalId`; the scope must exist, 404 `ResourceGroupNotFound` or
  `ResourceNotFound`; the same principal, role and scope under another name is 409
  `RoleAssignmentExists`; the same name with other properties 400
  `RoleAssignmentUpdateNotPermitted`, with the same ones 200), `GET` (`roleAssignments.get`:
  404 `RoleAssignmentNotFound`), `DELETE` (`roleAssignments.delete`: 200, 204 when there is
  none; by id too, the same path), `GET` of the collection (`roleAssignments.list`: those at,
  above or under the scope; `$filter` with `atScope()` (at or above only),
  `principalId eq 'ID'` or `assignedTo('ID')`, joined by `and`).

Every resource carries `id`, `name`, `type`, and `location` and `tags` where Azure has them.
Errors are `{"error": {"code", "message"}}`, their codes Azure's where known, else the
emulator's best guess. Where it differs from Azure: no subscription, provider registration,
quota or principal existence is checked; registries are never replicated, networked, encrypted
or given webhooks; role definitions' actions are not checked against real operations; one
tenant holds every subscription.

State, reading and writing it: the `ArmResourcesMixin` methods of the emulator
(`resource_group()`, `registries()`, `identities()`, `role_definitions()`,
`role_assignments()`, `add_resource_group()`, `add_registry()`, `add_identity()`,
`add_role_assignment()`, `configure_resources(operation_seconds=...)`).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from skylane.testing.emulator_base import timestamp

# The role definitions every tenant has, by GUID: (roleName, actions, notActions, description).
BUILT_IN_ROLES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str]] = {
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": (
        "AcrPull",
        ("Microsoft.ContainerRegistry/registries/pull/read",),
        (),
        "acr pull",
    ),
    "8311e382-0749-4cb8-b61a-304f252e45ec": (
        "AcrPush",
        (
            "Microsoft.ContainerRegistry/registries/pull/read",
            "Microsoft.ContainerRegistry/registries/push/write",
        ),
        (),
        "acr push",
    ),
    "b24988ac-6180-42a0-ab88-20f7382dd24c": (
        "Contributor",
        ("*",),
        (
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
        ),
        "Grants full access to manage all resources, but does not allow you to assign roles "
        "in Azure RBAC, manage assignments in Azure Blueprints, or share image galleries.",
    ),
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": (
        "Owner",
        ("*",),
        (),
        "Grants full access to manage all resources, including the ability to assign roles in "
        "Azure RBAC.",
    ),
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": (
        "Reader",
        ("*/read",),
        (),
        "View all resources, but does not allow you to make any changes.",
    ),
    "f1a07417-d97a-45cb-824c-7a7467783830": (
        "Managed Identity Operator",
        (
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Support/*",
        ),
        (),
        "Read and Assign User Assigned Identity",
    ),
}
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"

RESOURCE_GROUP_TYPE = "Microsoft.Resources/resourceGroups"
REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"
IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
ROLE_DEFINITION_TYPE = "Microsoft.Authorization/roleDefinitions"
ROLE_ASSIGNMENT_TYPE = "Microsoft.Authorization/roleAssignments"
REGISTRY_SUFFIX = "azurecr.io"
SKUS = ("Basic", "Standard", "Premium")
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal", "ForeignGroup", "Device")

# Operation names (faults, the request log) and the RBAC action each needs (403 messages).
ACTIONS: dict[str, str] = {
    "resourceGroups.createOrUpdate": "Microsoft.Resources/subscriptions/resourceGroups/write",
    "resourceGroups.get": "Microsoft.Resources/subscriptions/resourceGroups/read",
    "resourceGroups.checkExistence": "Microsoft.Resources/subscriptions/resourceGroups/read",
    "resourceGroups.list": "Microsoft.Resources/subscriptions/resourceGroups/read",
    "resourceGroups.delete": "Microsoft.Resources/subscriptions/resourceGroups/delete",
    "operationResults.get": "Microsoft.Resources/subscriptions/operationresults/read",
    "registries.create": f"{REGISTRY_TYPE}/write",
    "registries.update": f"{REGISTRY_TYPE}/write",
    "registries.get": f"{REGISTRY_TYPE}/read",
    "registries.listByResourceGroup": f"{REGISTRY_TYPE}/read",
    "registries.delete": f"{REGISTRY_TYPE}/delete",
    "registries.getOperationStatus": f"{REGISTRY_TYPE}/operationStatuses/read",
    "registries.checkNameAvailability": "Microsoft.ContainerRegistry/checkNameAvailability/read",
    "userAssignedIdentities.createOrUpdate": f"{IDENTITY_TYPE}/write",
    "userAssignedIdentities.get": f"{IDENTITY_TYPE}/read",
    "userAssignedIdentities.listByResourceGroup": f"{IDENTITY_TYPE}/read",
    "userAssignedIdentities.delete": f"{IDENTITY_TYPE}/delete",
    "roleDefinitions.createOrUpdate": f"{ROLE_DEFINITION_TYPE}/write",
    "roleDefinitions.get": f"{ROLE_DEFINITION_TYPE}/read",
    "roleDefinitions.list": f"{ROLE_DEFINITION_TYPE}/read",
    "roleDefinitions.delete": f"{ROLE_DEFINITION_TYPE}/delete",
    "roleAssignments.create": f"{ROLE_ASSIGNMENT_TYPE}/write",
    "roleAssignments.get": f"{ROLE_ASSIGNMENT_TYPE}/read",
    "roleAssignments.list": f"{ROLE_ASSIGNMENT_TYPE}/read",
    "roleAssignments.delete": f"{ROLE_ASSIGNMENT_TYPE}/delete",
}
OPERATIONS: tuple[str, ...] = tuple(ACTIONS)
# The operations that change something (a plan must send none of them).
MUTATING: frozenset[str] = frozenset(
    name
    for name in OPERATIONS
    if name.endswith((".createOrUpdate", ".create", ".update", ".delete"))
)

_SUB = r"^/subscriptions/(?P<subscription>[^/]+)"
_RG = _SUB + r"/resourceGroups/(?P<resource_group>[^/]+)"
_REGISTRIES = _RG + r"/providers/Microsoft\.ContainerRegistry/registries"
_REGISTRY = _REGISTRIES + r"/(?P<registry>[^/]+)"
_IDENTITIES = _RG + r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities"
_SCOPE = r"^(?P<scope>/subscriptions/[^/]+(?:/.+?)?)"
_ASSIGNMENTS = _SCOPE + r"/providers/Microsoft\.Authorization/roleAssignments"
_DEFINITIONS = _SCOPE + r"/providers/Microsoft\.Authorization/roleDefinitions"
ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(_SUB + r"/resourceGroups/?$", re.I), {"GET": "resourceGroups.list"}),
    (
        re.compile(_RG + r"/?$", re.I),
        {
            "PUT": "resourceGroups.createOrUpdate",
            "GET": "resourceGroups.get",
            "HEAD": "resourceGroups.checkExistence",
            "DELETE": "resourceGroups.delete",
        },
    ),
    (
        re.compile(_SUB + r"/operationResults/(?P<operation_id>[^/]+)/?$", re.I),
        {"GET": "operationResults.get"},
    ),
    (
        re.compile(
            _SUB + r"/providers/Microsoft\.ContainerRegistry/checkNameAvailability/?$",
            re.I,
        ),
        {"POST": "registries.checkNameAvailability"},
    ),
    (re.compile(_REGISTRIES + r"/?$", re.I), {"GET": "registries.listByResourceGroup"}),
    (
        re.compile(_REGISTRY + r"/?$", re.I),
        {
            "PUT": "registries.create",
            "GET": "registries.get",
            "PATCH": "registries.update",
            "DELETE": "registries.delete",
        },
    ),
    (
        re.compile(_REGISTRY + r"/operationStatuses/(?P<operation_id>[^/]+)/?$", re.I),
        {"GET": "registries.getOperationStatus"},
    ),
    (
        re.compile(_IDENTITIES + r"/?$", re.I),
        {"GET": "userAssignedIdentities.listByResourceGroup"},
    ),
    (
        re.compile(_IDENTITIES + r"/(?P<identity>[^/]+)/?$", re.I),
        {
            "PUT": "userAssignedIdentities.createOrUpdate",
            "GET": "userAssignedIdentities.get",
            "DELETE": "userAssignedIdentities.delete",
        },
    ),
    (re.compile(_ASSIGNMENTS + r"/?$", re.I), {"GET": "roleAssignments.list"}),
    (
        re.compile(_ASSIGNMENTS + r"/(?P<assignment>[^/]+)/?$", re.I),
        {
            "PUT": "roleAssignments.create",
            "GET": "roleAssignments.get",
            "DELETE": "roleAssignments.delete",
        },
    ),
    (re.compile(_DEFINITIONS + r"/?$", re.I), {"GET": "roleDefinitions.list"}),
    (
        re.compile(_DEFINITIONS + r"/(?P<definition>[^/]+)/?$", re.I),
        {
            "PUT": "roleDefinitions.createOrUpdate",
            "GET": "roleDefinitions.get",
            "DELETE": "roleDefinitions.delete",
        },
    ),
]

RESOURCE_GROUP_NAME = re.compile(r"^[-\w.()]{1,90}$")
REGISTRY_NAME = re.compile(r"^[a-zA-Z0-9]{5,50}$")
IDENTITY_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}$")
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
ROLE_DEFINITION_ID = re.compile(
    r"^(?:/subscriptions/(?P<subscription>[^/]+))?(?:/.*?)?"
    r"/providers/Microsoft\.Authorization/roleDefinitions/(?P<guid>[^/]+)$",
    re.I,
)
# A scope: a subscription, a resource group in it, or a resource in that group.
SCOPE = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)"
    r"(?:/resourceGroups/(?P<resource_group>[^/]+)"
    r"(?:/providers/(?P<namespace>[^/]+)/(?P<type>[^/]+)/(?P<name>[^/]+)(?P<rest>/.*)?)?)?/?$",
    re.I,
)
_FILTER_EQ = re.compile(r"^(?P<key>\w+)\s+eq\s+'(?P<value>[^']*)'$", re.I)
_FILTER_CALL = re.compile(r"^(?P<name>atScope|assignedTo)\((?:'(?P<value>[^']*)')?\)$", re.I)


class ArmError(Exception):
    """An error answered the way Azure Resource Manager answers them."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def normalize_location(location: str) -> str:
    """ "West Europe" as ARM writes it: `westeurope`."""
    return location.replace(" ", "").lower()


def _resource_not_found(kind: str, name: str, resource_group: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{kind}/{name}' under resource group '{resource_group}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def _group_not_found(name: str) -> ArmError:
    return ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")


def _invalid_content(what: str) -> ArmError:
    return ArmError(
        400,
        "InvalidRequestContent",
        f"The request content was invalid and could not be deserialized: '{what}'.",
    )


def _tags(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _invalid_content("'tags' must be an object of string values.")
    return dict(value)


def _location(body: Mapping[str, Any]) -> str:
    location = body.get("location")
    if not isinstance(location, str) or not location.strip():
        raise ArmError(
            400, "LocationRequired", "The location property is required for this definition."
        )
    return normalize_location(location)


def _properties(body: Mapping[str, Any]) -> dict[str, Any]:
    properties = body.get("properties")
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise _invalid_content("'properties' must be an object.")
    return properties


def _under(scope: str, ancestor: str) -> bool:
    """Whether `scope` is `ancestor` or below it (ARM ids, regardless of case)."""
    scope, ancestor = scope.rstrip("/").lower(), ancestor.rstrip("/").lower()
    return scope == ancestor or scope.startswith(ancestor + "/")


# -- state records ---------------------------------------------------------------------------


@dataclass(eq=False)
class _ResourceGroup:
    subscription: str
    name: str
    location: str
    tags: dict[str, str] | None
    created_at: float

    @property
    def id(self) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.name}"


@dataclass(eq=False)
class _Registry:
    subscription: str
    resource_group: str
    name: str
    location: str
    sku: str
    admin_user_enabled: bool
    tags: dict[str, str] | None
    created_at: float
    ready_at: float

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{REGISTRY_TYPE}/{self.name}"
        )

    @property
    def login_server(self) -> str:
        return f"{self.name.lower()}.{REGISTRY_SUFFIX}"


@dataclass(eq=False)
class _Identity:
    subscription: str
    resource_group: str
    name: str
    location: str
    tags: dict[str, str] | None
    principal_id: str
    client_id: str
    tenant_id: str

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{IDENTITY_TYPE}/{self.name}"
        )


@dataclass(eq=False)
class _RoleDefinition:
    guid: str
    role_name: str
    description: str
    built_in: bool
    actions: list[str]
    not_actions: list[str]
    data_actions: list[str] = field(default_factory=list)
    not_data_actions: list[str] = field(default_factory=list)
    assignable_scopes: list[str] = field(default_factory=lambda: ["/"])
    subscription: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def assignable_at(self, scope: str) -> bool:
        return any(s == "/" or _under(scope, s) for s in self.assignable_scopes)

    def related_to(self, scope: str) -> bool:
        """Listed at `scope`: built in, or assignable at, above or under it."""
        return self.built_in or any(
            s == "/" or _under(scope, s) or _under(s, scope) for s in self.assignable_scopes
        )


@dataclass(eq=False)
class _RoleAssignment:
    name: str
    scope: str
    role_definition_id: str
    principal_id: str
    principal_type: str | None
    description: str | None
    created_at: float

    @property
    def id(self) -> str:
        return f"{self.scope}/providers/{ROLE_ASSIGNMENT_TYPE}/{self.name}"

    @property
    def role_guid(self) -> str:
        return self.role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


@dataclass(eq=False)
class _AsyncOperation:
    id: str
    subscription: str
    started_at: float
    done_at: float
    registry: _Registry | None = None


# -- the state and its API -------------------------------------------------------------------


class ArmResources:
    """Resource groups, registries, identities and RBAC of an emulator. Every method is called
    holding the emulator's lock; `clock` gives the time, `tenant_id` the identities' tenant.
    `on_resource_group_deleted(subscription, name)` removes what else lives in a group deleted
    through the API (the container groups). LROs end `operation_seconds` after they start."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        tenant_id: str,
        on_resource_group_deleted: Callable[[str, str], None] | None = None,
        operation_seconds: float = 0.0,
    ) -> None:
        self.clock = clock
        self.tenant_id = tenant_id
        self.on_resource_group_deleted = on_resource_group_deleted
        self.operation_seconds = operation_seconds
        self.groups: dict[tuple[str, str], _ResourceGroup] = {}
        # Registry names are global: keyed by name alone.
        self.registries: dict[str, _Registry] = {}
        self.identities: dict[tuple[str, str, str], _Identity] = {}
        self.definitions: dict[str, _RoleDefinition] = {
            guid: _RoleDefinition(guid, name, text, True, list(actions), list(not_actions))
            for guid, (name, actions, not_actions, text) in BUILT_IN_ROLES.items()
        }
        self.assignments: dict[str, _RoleAssignment] = {}
        self.operations: dict[str, _AsyncOperation] = {}

    # -- lookups --------------------------------------------------------------------------

    def has_resource_group(self, subscription: str, name: str) -> bool:
        return (subscription.lower(), name.lower()) in self.groups

    def _group(self, subscription: str, name: str) -> _ResourceGroup:
        group = self.groups.get((subscription.lower(), name.lower()))
        if group is None:
            raise _group_not_found(name)
        return group

    def _scope_exists(self, scope: str) -> None:
        """404 unless `scope` is a subscription, an existing group or a resource in one (a
        registry or an identity must exist; other kinds are taken on trust)."""
        match = SCOPE.match(scope)
        if match is None:
            raise ArmError(
                400,
                "InvalidScope",
                f"The scope '{scope}' is not valid: it must be a subscription, a resource "
                "group or a resource id.",
            )
        subscription, resource_group = match["subscription"], match["resource_group"]
        if resource_group is None:
            return
        self._group(subscription, resource_group)
        kind = f"{match['namespace']}/{match['type']}".lower() if match["namespace"] else ""
        name = match["name"]
        if kind == REGISTRY_TYPE.lower():
            registry = self.registries.get(name.lower())
            if registry is None or not _under(scope, registry.id):
                raise _resource_not_found(REGISTRY_TYPE, name, resource_group)
        elif kind == IDENTITY_TYPE.lower():
            key = (subscription.lower(), resource_group.lower(), name.lower())
            if key not in self.identities:
                raise _resource_not_found(IDENTITY_TYPE, name, resource_group)

    def check_group_identities(self, identity: Any) -> None:
        """Refuse a container group naming a user-assigned identity that does not exist in a
        resource group this emulator knows (400 FailedIdentityOperation, as ARM answers)."""
        assigned = identity.get("userAssignedIdentities") if isinstance(identity, dict) else None
        for resource_id in assigned or {}:
            match = SCOPE.match(str(resource_id))
            if match is None or match["resource_group"] is None or match["name"] is None:
                continue
            subscription, resource_group = match["subscription"], match["resource_group"]
            if not self.has_resource_group(subscription, resource_group):
                continue  # a group the emulator was never told about: taken on trust
            key = (subscription.lower(), resource_group.lower(), match["name"].lower())
            if key not in self.identities:
                raise ArmError(
                    400,
                    "FailedIdentityOperation",
                    f"Identity operation for resource '{resource_id}' failed with error "
                    "'Failed to perform resource identity operation. Status: 'NotFound'. "
                    f'Response: \'{{"error":{{"code":"NotFound","message":"Resource '
                    f"'{resource_id}' was not found.\"}}}}''.",
                )

    # -- dispatch -------------------------------------------------------------------------

    def call(
        self,
        operation: str,
        params: Mapping[str, str],
        query: Mapping[str, str],
        raw_body: bytes,
        body: Any,
        base: str,
    ) -> tuple[int, Any, dict[str, str]]:
        """Answer one call: (status, JSON answer or None, extra headers)."""
        if raw_body.strip() and body is None:
            raise _invalid_content("The request body is not valid JSON.")
        now = self.clock()
        version = quote(query.get("api-version", ""), safe="")
        family, _, verb = operation.partition(".")
        if family == "operationResults":
            return self._operation_result(params, base, version, now)
        if family == "resourceGroups":
            return self._resource_groups(verb, params, body, base, version, now)
        if family == "registries":
            return self._registries(verb, params, body, base, version, now)
        if family == "userAssignedIdentities":
            return self._identities(verb, params, body, now)
        if family == "roleDefinitions":
            return self._role_definitions(verb, params, query, body, now)
        if family == "roleAssignments":
            return self._role_assignments(verb, params, query, body, now)
        raise ArmError(501, "NotImplemented", f"{operation} is not implemented.")

    def _operation(
        self, subscription: str, now: float, registry: _Registry | None = None
    ) -> _AsyncOperation:
        """A new LRO, done `operation_seconds` from now (a registry's create: when it is)."""
        op = _AsyncOperation(
            id=f"registries-{uuid.uuid4()}" if registry is not None else str(uuid.uuid4()),
            subscription=subscription,
            started_at=now,
            done_at=registry.ready_at if registry is not None else now + self.operation_seconds,
            registry=registry,
        )
        self.operations[op.id] = op
        return op

    def _location_header(self, op: _AsyncOperation, base: str, version: str) -> dict[str, str]:
        return {
            "Location": f"{base}/subscriptions/{op.subscription}/operationresults/{op.id}"
            f"?api-version={version}"
        }

    def _operation_result(
        self, params: Mapping[str, str], base: str, version: str, now: float
    ) -> tuple[int, Any, dict[str, str]]:
        op = self.operations.get(params["operation_id"])
        if op is None or op.subscription.lower() != params["subscription"].lower():
            raise ArmError(
                404,
                "OperationNotFound",
                f"The operation '{params['operation_id']}' could not be found.",
            )
        if now < op.done_at:
            return 202, None, self._location_header(op, base, version)
        return 204, None, {}

    # -- resource groups ------------------------------------------------------------------

    def _resource_groups(
        self,
        verb: str,
        params: Mapping[str, str],
        body: Any,
        base: str,
        version: str,
        now: float,
    ) -> tuple[int, Any, dict[str, str]]:
        subscription = params["subscription"]
        if verb == "list":
            mine = subscription.lower()
            found = [g for g in self.groups.values() if g.subscription.lower() == mine]
            return 200, {"value": [self._group_view(g) for g in found]}, {}
        name = params["resource_group"]
        key = (subscription.lower(), name.lower())
        if verb == "createOrUpdate":
            return self._put_group(subscription, name, body, now)
        if verb == "checkExistence":
            return (204 if key in self.groups else 404), None, {}
        if verb == "get":
            return 200, self._group_view(self._group(subscription, name)), {}
        if verb == "delete":
            group = self._group(subscription, name)
            self._delete_group(group)
            op = self._operation(subscription, now)
            return 202, None, self._location_header(op, base, version)
        raise ArmError(501, "NotImplemented", f"resourceGroups.{verb} is not implemented.")

    def _put_group(
        self, subscription: str, name: str, body: Any, now: float
    ) -> tuple[int, Any, dict[str, str]]:
        if not RESOURCE_GROUP_NAME.match(name) or name.endswith("."):
            raise ArmError(
                400,
                "InvalidResourceGroupName",
                f"The resource group name '{name}' is invalid: it must be 1-90 letters, digits, "
                "underscores, periods, hyphens or parentheses, and not end in a period.",
            )
        if not isinstance(body, dict):
            raise _invalid_content("The request body must be a JSON object.")
        location = _location(body)
        tags = _tags(body.get("tags"))
        existing = self.groups.get((subscription.lower(), name.lower()))
        if existing is not None:
            if existing.location != location:
                raise ArmError(
                    409,
                    "InvalidResourceGroupLocation",
                    f"Invalid resource group location '{location}'. The Resource group already "
                    f"exists in location '{existing.location}'.",
                )
            existing.tags = tags
            return 200, self._group_view(existing), {}
        group = _ResourceGroup(subscription, name, location, tags, now)
        self.groups[(subscription.lower(), name.lower())] = group
        return 201, self._group_view(group), {}

    def _delete_group(self, group: _ResourceGroup) -> None:
        """Remove the group and everything in it (role definitions belong to the tenant)."""
        self.groups.pop((group.subscription.lower(), group.name.lower()), None)
        for registry in list(self.registries.values()):
            if _under(registry.id, group.id):
                self._delete_registry(registry)
        for key, identity in list(self.identities.items()):
            if _under(identity.id, group.id):
                del self.identities[key]
        self._delete_assignments_under(group.id)
        if self.on_resource_group_deleted is not None:
            self.on_resource_group_deleted(group.subscription, group.name)

    def _delete_assignments_under(self, scope: str) -> None:
        for key, assignment in list(self.assignments.items()):
            if _under(assignment.scope, scope):
                del self.assignments[key]

    def _group_view(self, group: _ResourceGroup) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": group.id,
            "name": group.name,
            "type": RESOURCE_GROUP_TYPE,
            "location": group.location,
            "properties": {"provisioningState": "Succeeded"},
        }
        if group.tags is not None:
            view["tags"] = dict(group.tags)
        return view

    # -- registries -----------------------------------------------------------------------

    def _registries(
        self,
        verb: str,
        params: Mapping[str, str],
        body: Any,
        base: str,
        version: str,
        now: float,
    ) -> tuple[int, Any, dict[str, str]]:
        subscription = params["subscription"]
        if verb == "checkNameAvailability":
            if not isinstance(body, dict) or not isinstance(body.get("name"), str):
                raise _invalid_content("Required property 'name' not found in JSON.")
            if str(body.get("type", "")).lower() != REGISTRY_TYPE.lower():
                raise ArmError(
                    400,
                    "InvalidResourceType",
                    f"The resource type '{body.get('type')}' is invalid: it must be "
                    f"'{REGISTRY_TYPE}'.",
                )
            return 200, self._name_status(body["name"]), {}
        resource_group = params["resource_group"]
        group = self._group(subscription, resource_group)
        if verb == "listByResourceGroup":
            found = [r for r in self.registries.values() if _under(r.id, group.id)]
            return 200, {"value": [self._registry_view(r, now) for r in found]}, {}
        name = params["registry"]
        registry = self.registries.get(name.lower())
        mine = registry is not None and _under(registry.id, group.id)
        if verb == "getOperationStatus":
            op = self.operations.get(params["operation_id"])
            if op is None or op.registry is None or not mine:
                raise ArmError(
                    404,
                    "OperationNotFound",
                    f"The operation '{params['operation_id']}' could not be found.",
                )
            return 200, self._registry_operation_view(op, now), {}
        if verb == "create":
            return self._put_registry(group, name, body, base, version, now)
        if verb == "delete":
            if registry is None or not mine:
                return 204, None, {}
            self._delete_registry(registry)
            op = self._operation(subscription, now)
            return 202, None, self._location_header(op, base, version)
        if registry is None or not mine:
            raise _resource_not_found(REGISTRY_TYPE, name, resource_group)
        if verb == "get":
            return 200, self._registry_view(registry, now), {}
        if verb == "update":
            if not isinstance(body, dict):
                raise _invalid_content("The request body must be a JSON object.")
            if "tags" in body:
                registry.tags = _tags(body["tags"])
            if body.get("sku") is not None:
                registry.sku = _sku(body["sku"])
            properties = _properties(body)
            if "adminUserEnabled" in properties:
                registry.admin_user_enabled = bool(properties["adminUserEnabled"])
            return 200, self._registry_view(registry, now), {}
        raise ArmError(501, "NotImplemented", f"registries.{verb} is not implemented.")

    def _name_status(self, name: str) -> dict[str, Any]:
        if not REGISTRY_NAME.match(name):
            return {
                "nameAvailable": False,
                "reason": "Invalid",
                "message": "The specified resource name is invalid: a registry name must be "
                "5-50 alphanumeric characters.",
            }
        if name.lower() in self.registries:
            return {
                "nameAvailable": False,
                "reason": "AlreadyExists",
                "message": f"The registry {name} is already in use.",
            }
        return {"nameAvailable": True}

    def _put_registry(
        self,
        group: _ResourceGroup,
        name: str,
        body: Any,
        base: str,
        version: str,
        now: float,
    ) -> tuple[int, Any, dict[str, str]]:
        if not REGISTRY_NAME.match(name):
            raise ArmError(
                400,
                "InvalidResourceName",
                f"Resource name {name} is invalid. The name must be between 5 and 50 characters "
                "and can only contain alphanumeric characters.",
            )
        if not isinstance(body, dict):
            raise _invalid_content("The request body must be a JSON object.")
        location = _location(body)
        if body.get("sku") is None:
            raise _invalid_content("Required property 'sku' not found in JSON.")
        sku = _sku(body["sku"])
        tags = _tags(body.get("tags"))
        admin = bool(_properties(body).get("adminUserEnabled", False))
        existing = self.registries.get(name.lower())
        if existing is not None:
            if not _under(existing.id, group.id):
                raise ArmError(
                    409,
                    "AlreadyInUse",
                    f"The registry DNS name {existing.login_server} is already in use. You can "
                    "check if the name is already claimed using following API: https://"
                    "docs.microsoft.com/en-us/rest/api/containerregistry/registries/"
                    "checknameavailability",
                )
            existing.sku, existing.tags, existing.admin_user_enabled = sku, tags, admin
            return 200, self._registry_view(existing, now), {}
        registry = _Registry(
            subscription=group.subscription,
            resource_group=group.name,
            name=name,
            location=location,
            sku=sku,
            admin_user_enabled=admin,
            tags=tags,
            created_at=now,
            ready_at=now + self.operation_seconds,
        )
        self.registries[name.lower()] = registry
        op = self._operation(group.subscription, now, registry)
        status_url = f"{base}{registry.id}/operationStatuses/{op.id}?api-version={version}"
        view = self._registry_view(registry, now, state="Creating")
        return 201, view, {"Azure-AsyncOperation": status_url}

    def _delete_registry(self, registry: _Registry) -> None:
        self.registries.pop(registry.name.lower(), None)
        self._delete_assignments_under(registry.id)

    def _registry_operation_view(self, op: _AsyncOperation, now: float) -> dict[str, Any]:
        registry = op.registry
        assert registry is not None
        view: dict[str, Any] = {"id": op.id, "name": op.id, "startTime": timestamp(op.started_at)}
        if self.registries.get(registry.name.lower()) is not registry:
            view["status"] = "Canceled"
            view["error"] = {"code": "Canceled", "message": "The registry was deleted."}
        elif now < registry.ready_at:
            view["status"] = "InProgress"
        else:
            view["status"] = "Succeeded"
            view["endTime"] = timestamp(registry.ready_at)
        return view

    def _registry_view(
        self, registry: _Registry, now: float, state: str | None = None
    ) -> dict[str, Any]:
        state = state or ("Creating" if now < registry.ready_at else "Succeeded")
        view: dict[str, Any] = {
            "id": registry.id,
            "name": registry.name,
            "type": REGISTRY_TYPE,
            "location": registry.location,
            "sku": {"name": registry.sku, "tier": registry.sku},
            "properties": {
                "loginServer": registry.login_server,
                "creationDate": timestamp(registry.created_at),
                "provisioningState": state,
                "adminUserEnabled": registry.admin_user_enabled,
                "publicNetworkAccess": "Enabled",
                "zoneRedundancy": "Disabled",
                "anonymousPullEnabled": False,
            },
        }
        if registry.tags is not None:
            view["tags"] = dict(registry.tags)
        return view

    # -- identities -----------------------------------------------------------------------

    def _identities(
        self, verb: str, params: Mapping[str, str], body: Any, now: float
    ) -> tuple[int, Any, dict[str, str]]:
        subscription, resource_group = params["subscription"], params["resource_group"]
        group = self._group(subscription, resource_group)
        if verb == "listByResourceGroup":
            found = [i for i in self.identities.values() if _under(i.id, group.id)]
            return 200, {"value": [self._identity_view(i) for i in found]}, {}
        name = params["identity"]
        key = (subscription.lower(), resource_group.lower(), name.lower())
        identity = self.identities.get(key)
        if verb == "createOrUpdate":
            if not IDENTITY_NAME.match(name):
                raise ArmError(
                    400,
                    "InvalidResourceName",
                    f"Resource name '{name}' is invalid: it must be 3-128 letters, digits, "
                    "hyphens or underscores, starting with a letter or a digit.",
                )
            if not isinstance(body, dict):
                raise _invalid_content("The request body must be a JSON object.")
            location = _location(body)
            tags = _tags(body.get("tags"))
            if identity is not None:
                identity.tags = tags
                return 200, self._identity_view(identity), {}
            identity = _Identity(
                subscription=group.subscription,
                resource_group=group.name,
                name=name,
                location=location,
                tags=tags,
                principal_id=str(uuid.uuid4()),
                client_id=str(uuid.uuid4()),
                tenant_id=self.tenant_id,
            )
            self.identities[key] = identity
            return 201, self._identity_view(identity), {}
        if verb == "delete":
            if identity is None:
                return 204, None, {}
            del self.identities[key]
            return 200, None, {}
        if identity is None:
            raise _resource_not_found(IDENTITY_TYPE, name, resource_group)
        return 200, self._identity_view(identity), {}

    def _identity_view(self, identity: _Identity) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": identity.id,
            "name": identity.name,
            "type": IDENTITY_TYPE,
            "location": identity.location,
            "properties": {
                "tenantId": identity.tenant_id,
                "principalId": identity.principal_id,
                "clientId": identity.client_id,
                "isolationScope": "None",
            },
        }
        if identity.tags is not None:
            view["tags"] = dict(identity.tags)
        return view

    # -- role definitions -----------------------------------------------------------------

    def _role_definitions(
        self,
        verb: str,
        params: Mapping[str, str],
        query: Mapping[str, str],
        body: Any,
        now: float,
    ) -> tuple[int, Any, dict[str, str]]:
        scope = params["scope"].rstrip("/")
        subscription = scope.split("/")[2]
        if verb == "list":
            clauses = _filter(query.get("$filter", ""))
            found = [d for d in self.definitions.values() if d.related_to(scope)]
            for key, value in clauses:
                if key == "rolename":
                    found = [d for d in found if d.role_name.lower() == value.lower()]
                elif key == "type":
                    wanted = value.lower()
                    found = [
                        d
                        for d in found
                        if ("builtinrole" if d.built_in else "customrole") == wanted
                    ]
                else:
                    raise _bad_filter(query.get("$filter", ""))
            return 200, {"value": [self._definition_view(d, subscription) for d in found]}, {}
        guid = params["definition"].lower()
        definition = self.definitions.get(guid)
        if verb == "get":
            if definition is None:
                raise _no_role_definition(params["definition"])
            return 200, self._definition_view(definition, subscription), {}
        if verb == "delete":
            if definition is None:
                return 204, None, {}
            if definition.built_in:
                raise _built_in(definition)
            if any(a.role_guid == guid for a in self.assignments.values()):
                raise ArmError(
                    409,
                    "RoleDefinitionHasAssignments",
                    "There are existing role assignments referencing role "
                    f"'{definition.role_name}' ({guid}): remove them first.",
                )
            view = self._definition_view(definition, subscription)
            del self.definitions[guid]
            return 200, view, {}
        if verb == "createOrUpdate":
            return self._put_definition(scope, subscription, guid, definition, body, now)
        raise ArmError(501, "NotImplemented", f"roleDefinitions.{verb} is not implemented.")

    def _put_definition(
        self,
        scope: str,
        subscription: str,
        guid: str,
        existing: _RoleDefinition | None,
        body: Any,
        now: float,
    ) -> tuple[int, Any, dict[str, str]]:
        if not GUID.match(guid):
            raise ArmError(
                400,
                "InvalidRoleDefinitionId",
                f"The role definition ID '{guid}' is not valid: it must be a GUID.",
            )
        if existing is not None and existing.built_in:
            raise _built_in(existing)
        self._scope_exists(scope)
        if not isinstance(body, dict):
            raise _invalid_content("The request body must be a JSON object.")
        properties = _properties(body)
        role_name = properties.get("roleName")
        if not isinstance(role_name, str) or not role_name.strip():
            raise ArmError(
                400, "RoleDefinitionNameNullOrEmpty", "The role definition name cannot be empty."
            )
        for other in self.definitions.values():
            if other.guid != guid and other.role_name.lower() == role_name.lower():
                raise ArmError(
                    409,
                    "RoleDefinitionWithSameNameExists",
                    "A custom role with the same name already exists in this directory. Use a "
                    "different name.",
                )
        scopes = properties.get("assignableScopes")
        if not (isinstance(scopes, list) and scopes and all(isinstance(s, str) for s in scopes)):
            raise ArmError(
                400,
                "InvalidCreateRoleDefinitionRequest",
                "The request to create role definition is invalid: 'assignableScopes' must be "
                "a non-empty list of scopes.",
            )
        if not any(s.rstrip("/").lower() == scope.lower() for s in scopes):
            raise ArmError(
                400,
                "InvalidCreateRoleDefinitionRequest",
                f"The request to create role definition '{guid}' is invalid: the scope "
                f"'{scope}' of the request must be one of its assignable scopes.",
            )
        for assignable in scopes:
            self._scope_exists(assignable.rstrip("/"))
        permissions = properties.get("permissions")
        if not isinstance(permissions, list) or len(permissions) != 1:
            raise _invalid_content("'properties.permissions' must be a list of one permission.")
        permission = permissions[0] if isinstance(permissions[0], dict) else {}
        lists = {}
        for key in ("actions", "notActions", "dataActions", "notDataActions"):
            values = permission.get(key) or []
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                raise ArmError(
                    400,
                    "InvalidActionOrNotAction",
                    f"'{key}' must be a list of operation names.",
                )
            lists[key] = list(values)
        definition = _RoleDefinition(
            guid=guid,
            role_name=role_name,
            description=str(properties.get("description") or ""),
            built_in=False,
            actions=lists["actions"],
            not_actions=lists["notActions"],
            data_actions=lists["dataActions"],
            not_data_actions=lists["notDataActions"],
            assignable_scopes=[s.rstrip("/") for s in scopes],
            subscription=subscription,
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )
        self.definitions[guid] = definition
        return 201, self._definition_view(definition, subscription), {}

    def _definition_view(
        self, definition: _RoleDefinition, subscription: str | None
    ) -> dict[str, Any]:
        prefix = f"/subscriptions/{subscription}" if subscription else ""
        properties: dict[str, Any] = {
            "roleName": definition.role_name,
            "type": "BuiltInRole" if definition.built_in else "CustomRole",
            "description": definition.description,
            "assignableScopes": list(definition.assignable_scopes),
            "permissions": [
                {
                    "actions": list(definition.actions),
                    "notActions": list(definition.not_actions),
                    "dataActions": list(definition.data_actions),
                    "notDataActions": list(definition.not_data_actions),
                }
            ],
        }
        if not definition.built_in:
            properties["createdOn"] = timestamp(definition.created_at)
            properties["updatedOn"] = timestamp(definition.updated_at)
        return {
            "id": f"{prefix}/providers/{ROLE_DEFINITION_TYPE}/{definition.guid}",
            "name": definition.guid,
            "type": ROLE_DEFINITION_TYPE,
            "properties": properties,
        }

    # -- role assignments -----------------------------------------------------------------

    def _role_assignments(
        self,
        verb: str,
        params: Mapping[str, str],
        query: Mapping[str, str],
        body: Any,
        now: float,
    ) -> tuple[int, Any, dict[str, str]]:
        scope = params["scope"].rstrip("/")
        if verb == "list":
            at_scope, principals = False, []
            for key, value in _filter(query.get("$filter", "")):
                if key == "atscope()":
                    at_scope = True
                elif key in ("principalid", "assignedto()"):
                    principals.append(value.lower())
                else:
                    raise _bad_filter(query.get("$filter", ""))
            found = [
                a
                for a in self.assignments.values()
                if (_under(scope, a.scope) or (not at_scope and _under(a.scope, scope)))
                and all(a.principal_id.lower() == p for p in principals)
            ]
            return 200, {"value": [self._assignment_view(a) for a in found]}, {}
        name = params["assignment"].lower()
        assignment = self.assignments.get(name)
        here = assignment is not None and assignment.scope.lower() == scope.lower()
        if verb == "get":
            if not here:
                raise _no_assignment(params["assignment"])
            assert assignment is not None
            return 200, self._assignment_view(assignment), {}
        if verb == "delete":
            if assignment is None or not here:
                return 204, None, {}
            del self.assignments[name]
            return 200, self._assignment_view(assignment), {}
        if verb == "create":
            return self._put_assignment(scope, name, assignment, body, now)
        raise ArmError(501, "NotImplemented", f"roleAssignments.{verb} is not implemented.")

    def _put_assignment(
        self,
        scope: str,
        name: str,
        existing: _RoleAssignment | None,
        body: Any,
        now: float,
    ) -> tuple[int, Any, dict[str, str]]:
        if not GUID.match(name):
            raise ArmError(
                400,
                "InvalidRoleAssignmentId",
                f"The role assignment ID '{name}' is not valid. The role assignment ID must be "
                "a GUID.",
            )
        if not isinstance(body, dict):
            raise _invalid_content("The request body must be a JSON object.")
        properties = _properties(body)
        role = str(properties.get("roleDefinitionId") or "")
        principal = str(properties.get("principalId") or "")
        principal_type = properties.get("principalType")
        if not role:
            raise _invalid_content("Required property 'roleDefinitionId' not found in JSON.")
        if not GUID.match(principal):
            raise ArmError(
                400,
                "InvalidPrincipalId",
                f"The principal ID '{principal}' is not valid. The principal ID must be a GUID.",
            )
        if principal_type is not None and principal_type not in PRINCIPAL_TYPES:
            raise ArmError(
                400,
                "InvalidPrincipalType",
                f"The principal type '{principal_type}' is not valid: one of "
                f"{', '.join(PRINCIPAL_TYPES)}.",
            )
        self._scope_exists(scope)
        match = ROLE_DEFINITION_ID.match(role)
        definition = self.definitions.get(match["guid"].lower()) if match else None
        if definition is None:
            raise ArmError(
                400,
                "RoleDefinitionDoesNotExist",
                f"The specified role definition with ID '{role.rsplit('/', 1)[-1]}' does not "
                "exist.",
            )
        if not definition.assignable_at(scope):
            raise ArmError(
                400,
                "RoleAssignmentScopeNotAllowed",
                f"The role '{definition.role_name}' is not available for assignment at the "
                f"requested scope '{scope}'.",
            )
        if existing is not None:
            same = (
                existing.scope.lower() == scope.lower()
                and existing.principal_id.lower() == principal.lower()
                and existing.role_guid == definition.guid
            )
            if not same:
                raise ArmError(
                    400,
                    "RoleAssignmentUpdateNotPermitted",
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be "
                    "updated.",
                )
            existing.description = properties.get("description")
            return 200, self._assignment_view(existing), {}
        for other in self.assignments.values():
            if (
                other.scope.lower() == scope.lower()
                and other.principal_id.lower() == principal.lower()
                and other.role_guid == definition.guid
            ):
                raise ArmError(409, "RoleAssignmentExists", "The role assignment already exists.")
        assignment = _RoleAssignment(
            name=name,
            scope=scope,
            role_definition_id=role,
            principal_id=principal,
            principal_type=principal_type,
            description=properties.get("description"),
            created_at=now,
        )
        self.assignments[name] = assignment
        return 201, self._assignment_view(assignment), {}

    def _assignment_view(self, assignment: _RoleAssignment) -> dict[str, Any]:
        return {
            "id": assignment.id,
            "name": assignment.name,
            "type": ROLE_ASSIGNMENT_TYPE,
            "properties": {
                "roleDefinitionId": assignment.role_definition_id,
                "principalId": assignment.principal_id,
                "principalType": assignment.principal_type or "ServicePrincipal",
                "scope": assignment.scope,
                "description": assignment.description,
                "createdOn": timestamp(assignment.created_at),
                "updatedOn": timestamp(assignment.created_at),
            },
        }


def _sku(value: Any) -> str:
    name = value.get("name") if isinstance(value, dict) else None
    found = next((s for s in SKUS if isinstance(name, str) and s.lower() == name.lower()), None)
    if found is None:
        raise ArmError(
            400,
            "InvalidSkuName",
            f"The SKU '{name}' is invalid: it must be one of {', '.join(SKUS)}.",
        )
    return found


def _filter(text: str) -> list[tuple[str, str]]:
    """A `$filter` as (key, value) clauses: `name eq 'v'` gives (name lowercased, v), a call
    such as `atScope()` or `assignedTo('v')` gives (its name lowercased + "()", v or "")."""
    clauses = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.I) if text.strip() else []:
        eq = _FILTER_EQ.match(part.strip())
        call = _FILTER_CALL.match(part.strip())
        if eq:
            clauses.append((eq["key"].lower(), eq["value"]))
        elif call:
            clauses.append((call["name"].lower() + "()", call["value"] or ""))
        else:
            raise _bad_filter(text)
    return clauses


def _bad_filter(text: str) -> ArmError:
    return ArmError(400, "UnsupportedQuery", f"The filter '{text}' is not supported.")


def _no_role_definition(guid: str) -> ArmError:
    return ArmError(
        404,
        "RoleDefinitionDoesNotExist",
        f"The specified role definition with ID '{guid}' does not exist.",
    )


def _no_assignment(name: str) -> ArmError:
    return ArmError(404, "RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")


def _built_in(definition: _RoleDefinition) -> ArmError:
    return ArmError(
        400,
        "BuiltInRoleDefinitionUpdateNotAllowed",
        f"The built-in role '{definition.role_name}' cannot be changed or deleted.",
    )


# -- the emulator's side ---------------------------------------------------------------------


class ArmResourcesMixin:
    """What `AciEmulator` gains for these resources: reading and seeding its state. Needs the
    emulator's `_lock`, `_clock` and `_arm` (an `ArmResources`, remade by `reset()`)."""

    _lock: threading.Condition
    _clock: Callable[[], float]
    _arm: ArmResources
    _arm_operation_seconds: float = 0.0

    def _new_resources(
        self, tenant_id: str, on_resource_group_deleted: Callable[[str, str], None]
    ) -> ArmResources:
        return ArmResources(
            clock=self._clock,
            tenant_id=tenant_id,
            on_resource_group_deleted=on_resource_group_deleted,
            operation_seconds=self._arm_operation_seconds,
        )

    def configure_resources(self, *, operation_seconds: float) -> None:
        """How long registry creates and the deletes of groups and registries take (their
        LROs answer "in progress" until then); kept across `reset()`."""
        if operation_seconds < 0:
            raise ValueError(f"operation_seconds must be >= 0, not {operation_seconds}")
        with self._lock:
            self._arm_operation_seconds = float(operation_seconds)
            self._arm.operation_seconds = float(operation_seconds)

    # -- reading --------------------------------------------------------------------------

    def resource_group(self, name: str, subscription: str | None = None) -> dict[str, Any]:
        """A resource group as `get` answers it; KeyError if there is none (ValueError if the
        name is in several subscriptions and none is given)."""
        with self._lock:
            found = [
                g
                for (sub, rg), g in self._arm.groups.items()
                if rg == name.lower() and (subscription is None or sub == subscription.lower())
            ]
            if not found:
                raise KeyError(name)
            if len(found) > 1:
                raise ValueError(f"resource group {name!r} is in several subscriptions")
            return self._arm._group_view(found[0])

    def arm_resource_groups(self) -> list[dict[str, Any]]:
        """Every resource group created through the API (or seeded), in creation order."""
        with self._lock:
            return [self._arm._group_view(g) for g in self._arm.groups.values()]

    def registries(self) -> list[dict[str, Any]]:
        """Every container registry, as `get` answers them."""
        with self._lock:
            now = self._clock()
            return [self._arm._registry_view(r, now) for r in self._arm.registries.values()]

    def identities(self) -> list[dict[str, Any]]:
        """Every user-assigned identity, as `get` answers them."""
        with self._lock:
            return [self._arm._identity_view(i) for i in self._arm.identities.values()]

    def role_definitions(self, *, built_in: bool = False) -> list[dict[str, Any]]:
        """The custom role definitions (and the built-in ones with `built_in`)."""
        with self._lock:
            return [
                self._arm._definition_view(d, d.subscription)
                for d in self._arm.definitions.values()
                if built_in or not d.built_in
            ]

    def role_assignments(self) -> list[dict[str, Any]]:
        """Every role assignment, as `get` answers them."""
        with self._lock:
            return [self._arm._assignment_view(a) for a in self._arm.assignments.values()]

    # -- seeding (what exists before the code under test runs) ---------------------------

    def add_resource_group(
        self,
        name: str,
        *,
        subscription: str,
        location: str = "westeurope",
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a resource group as a PUT would; it as `get` answers it."""
        body = {"location": location, "tags": dict(tags) if tags is not None else None}
        with self._lock:
            _, view, _ = self._arm._put_group(subscription, name, body, self._clock())
            return view

    def add_registry(
        self,
        name: str,
        *,
        subscription: str,
        resource_group: str,
        location: str = "westeurope",
        sku: str = "Basic",
        admin_user_enabled: bool = False,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a container registry, provisioned at once, in an existing resource group (its
        resource group is created first if the emulator does not know it)."""
        with self._lock:
            now = self._clock()
            if not self._arm.has_resource_group(subscription, resource_group):
                self._arm._put_group(subscription, resource_group, {"location": location}, now)
            group = self._arm._group(subscription, resource_group)
            body = {
                "location": location,
                "sku": {"name": sku},
                "properties": {"adminUserEnabled": admin_user_enabled},
                "tags": dict(tags) if tags is not None else None,
            }
            self._arm._put_registry(group, name, body, "", "", now)
            registry = self._arm.registries[name.lower()]
            registry.ready_at = now
            return self._arm._registry_view(registry, now)

    def add_identity(
        self,
        name: str,
        *,
        subscription: str,
        resource_group: str,
        location: str = "westeurope",
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a user-assigned identity in an existing resource group."""
        params = {"subscription": subscription, "resource_group": resource_group, "identity": name}
        body = {"location": location, "tags": dict(tags) if tags is not None else None}
        with self._lock:
            _, view, _ = self._arm._identities("createOrUpdate", params, body, self._clock())
            return dict(view)

    def add_role_assignment(
        self,
        scope: str,
        role_definition_id: str,
        principal_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        principal_type: str | None = "ServicePrincipal",
    ) -> dict[str, Any]:
        """Create a role assignment (a new GUID name unless given), as a PUT would."""
        body = {
            "properties": {
                "roleDefinitionId": role_definition_id,
                "principalId": principal_id,
                "principalType": principal_type,
                "description": description,
            }
        }
        key = (name or str(uuid.uuid4())).lower()
        with self._lock:
            existing = self._arm.assignments.get(key)
            _, view, _ = self._arm._put_assignment(
                scope.rstrip("/"), key, existing, body, self._clock()
            )
            return dict(view)

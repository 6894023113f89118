"""What an `aci:push` pool needs in an Azure subscription, as provisioning steps (issue 8).

`aci_provisioner(pool, options)` reads where to provision (`--subscription`, `--region`,
`--resource-group`, `--control-plane`, or the pool's settings) and builds the steps with
`aci_steps`; `base.plan`, `base.apply` and `base.deprovision` carry them out. Everything lives in
one resource group of one subscription and location. What takes tags is tagged
`skylane-pool=POOL`; role assignments and role definitions take none, so their description
ends with `[skylane-pool=POOL]` instead, which is how a later run tells they are skylane's.
`<slug>` is the pool's name made safe for Azure names (see `slug`):

1. `resource-group` `skylane-<slug>` (or the one named): adopted as it is when it exists and is
   not the pool's. Deleting one skylane created deletes everything in it, which is why
   deprovision, newest first, removes it last.
2. `container-registry` `skylane<alphanumeric slug><hash>` (`registry_name`: 5-50 letters and
   digits, derived from the subscription and the pool, so stable and unlikely to be taken
   elsewhere; registry names are global, and a plan says so when another subscription has
   it): Basic SKU, admin user disabled (keyless: images are pulled with an identity). An admin
   user turned on later is drift, turned off again.
3. `managed-identity` `skylane-<slug>-runtime`: the user-assigned identity the container groups
   run as and pull their image with.
4. `role-assignment` `AcrPull@skylane-<slug>-runtime`: the built-in AcrPull role on the registry
   (and nothing else) for that identity.
5. `role-definition` `skylane-<slug>-dispatch`: a custom role assignable at the resource group
   only, with exactly `DISPATCH_ACTIONS`: what the ACI adapter calls on container groups (write,
   read, delete, stop, read logs), assigning the runtime identity to them, and reading the
   group. Not `containerGroups/*`, which would also allow `exec` and `attach` into a run's
   container (its secure environment, the run token among it). A changed definition of the
   pool's own is drift, put back.
6. `managed-identity` `skylane-<slug>-dispatcher`: the identity the control plane runs as
   (attach it to the control plane's VM or container app, or federate it with its workload
   identity; no secret either way), published as `dispatcher_credentials`
   (`{"managed_identity_client_id": ...}`, the pool's credentials for the ACI adapter).
7. `role-assignment` `skylane-<slug>-dispatch@skylane-<slug>-dispatcher`: the custom role at the
   resource group for that identity; with `--control-plane OBJECT_ID` (an Entra object id) a
   second one, `skylane-<slug>-dispatch@control-plane`, for that principal. The object id is
   kept in the pool's settings (`control_plane`), so a later run and deprovision know it; a new
   `--control-plane` replaces it, and the assignment the pool made for the previous one goes.

A role assignment's name is a uuid5 of its scope, role and principal (`assignment_name`), so
finding it is one GET; one made by hand under another name is found by listing and adopted.

Each step's `publish` works in a plan of an empty subscription too (ids are computed; the
principal and client ids of identities not created yet are None). `context.defaults`, keyed by
the `aci:push` template variables: `subscription_id`, `resource_group_name`, `location`,
`identities` (the runtime identity) and `image_registry` (`{"registry_url": login server,
"identity": runtime identity}`). `context.outputs`: `image_registry` and `image_repository`
(the login server), `registry_id`, `resource_group_id`, `runtime_identity_id`,
`dispatcher_identity_id`, their principal and client ids, `dispatch_role_id` and
`dispatcher_credentials`.

Calls go through the official SDK clients only (`ArmClients`: azure-mgmt-resource,
-containerregistry, -msi, -authorization, azure-identity), built as the ACI adapter builds its
own: the pool's `endpoint_url` and `ca_bundle` settings (or `SKYLANE_ACI_ENDPOINT`,
`SKYLANE_ACI_CA_BUNDLE`), the placeholder token on loopback only (a local emulator), else
`DefaultAzureCredential` with the caller's `managed_identity_client_id` if given. The SDK's own
retries are off; reads, updates and deletes are retried by `skylane.retries.PROVIDER_CALLS`,
creates are sent once (a lost answer rolls back; a re-run adopts what it finds). Long-running
operations are polled every `lro_poll_seconds` (setting; unless Azure says when) and waited on
at most `lro_timeout_seconds`. Errors are the adapter's `translate_error`, speaking of "your
Azure credentials": a 403 names the permission to grant. No client secret, certificate or
registry password is ever created or read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from skylane.adapters import aci as adapter
from skylane.errors import (
    InvalidInput,
    PermanentProviderError,
    ProviderConflict,
    ProviderError,
    ProviderNotFound,
)
from skylane.provisioning.base import POOL_TAG, Context, Found, Step
from skylane.provisioning.registry import Provisioner, ProvisionOptions
from skylane.retries import PROVIDER_CALLS

T = TypeVar("T")

log = logging.getLogger(__name__)

CALLER = "your Azure credentials"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
REGISTRY_SKU = "Basic"
REGISTRY_SUFFIX = "azurecr.io"
# What the ACI adapter needs on the pool's resource group, and nothing else.
DISPATCH_ACTIONS: tuple[str, ...] = (
    adapter.WRITE,
    adapter.READ,
    adapter.DELETE,
    adapter.STOP,
    adapter.LOGS,
    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
)
# The setting that keeps `--control-plane` for later runs and deprovision (as for Google's).
CONTROL_PLANE_SETTING = "control_plane"
# Settings of the provisioning run only, not kept on the pool.
POLL_SETTING = "lro_poll_seconds"
TIMEOUT_SETTING = "lro_timeout_seconds"
DEFAULT_POLL_SECONDS = 5.0
DEFAULT_LRO_TIMEOUT_SECONDS = 900.0
REQUEST_TIMEOUT_SECONDS = 60.0
# How long a refusal because something just made has not reached all of Azure yet (a new
# identity's principal, a new custom role, an assignment just deleted) is tried again.
REPLICATION_SECONDS = 120.0
ASSIGNMENTS = "Microsoft.Authorization/roleAssignments"

# The permission each call needs (named in 403 messages).
RG_READ = "Microsoft.Resources/subscriptions/resourceGroups/read"
RG_WRITE = "Microsoft.Resources/subscriptions/resourceGroups/write"
RG_DELETE = "Microsoft.Resources/subscriptions/resourceGroups/delete"
REGISTRY_READ = "Microsoft.ContainerRegistry/registries/read"
REGISTRY_WRITE = "Microsoft.ContainerRegistry/registries/write"
REGISTRY_DELETE = "Microsoft.ContainerRegistry/registries/delete"
REGISTRY_NAME_CHECK = "Microsoft.ContainerRegistry/checkNameAvailability/read"
IDENTITY_READ = "Microsoft.ManagedIdentity/userAssignedIdentities/read"
IDENTITY_WRITE = "Microsoft.ManagedIdentity/userAssignedIdentities/write"
IDENTITY_DELETE = "Microsoft.ManagedIdentity/userAssignedIdentities/delete"
ROLE_READ = "Microsoft.Authorization/roleDefinitions/read"
ROLE_WRITE = "Microsoft.Authorization/roleDefinitions/write"
ROLE_DELETE = "Microsoft.Authorization/roleDefinitions/delete"
ASSIGNMENT_READ = "Microsoft.Authorization/roleAssignments/read"
ASSIGNMENT_WRITE = "Microsoft.Authorization/roleAssignments/write"
ASSIGNMENT_DELETE = "Microsoft.Authorization/roleAssignments/delete"

_MAX_SLUG = 40  # "skylane-" + slug + "-dispatcher" stays well within every Azure name limit
_UNSAFE = re.compile(r"[^a-z0-9-]+")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_RESOURCE_GROUP = re.compile(r"^[-\w.()]{1,90}$")
_IN_GROUP = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/(?P<group>[^/]+)"
    r"/providers/[^/]+/[^/]+/(?P<name>[^/]+)$",
    re.I,
)


# --- names (pure) ---------------------------------------------------------------------------


def slug(pool: str) -> str:
    """The pool's name as a part of Azure resource names: lowercase letters, digits and dashes,
    at most 40 characters. A name that had to change gets a short hash of the original, so two
    pools never share resources."""
    cleaned = _UNSAFE.sub("-", pool.lower()).strip("-")
    if cleaned == pool and len(cleaned) <= _MAX_SLUG:
        return cleaned
    digest = hashlib.sha256(pool.encode()).hexdigest()[:6]
    return f"{cleaned[: _MAX_SLUG - 7].rstrip('-') or 'pool'}-{digest}"


def registry_name(subscription_id: str, pool: str) -> str:
    """The pool's container registry: `skylane`, the pool's letters and digits (at most 35) and
    8 hex digits of a hash of the subscription and the pool; 15-50 lowercase letters and
    digits. The same in every run, and another subscription's pool of the same name gets
    another (registry names are global)."""
    letters = re.sub(r"[^a-z0-9]+", "", pool.lower())[:35]
    digest = hashlib.sha256(f"{subscription_id.lower()}/{pool}".encode()).hexdigest()[:8]
    return f"skylane{letters}{digest}"


def assignment_name(scope: str, role_definition_id: str, principal_id: str) -> str:
    """A role assignment's name (a GUID) from what it grants: the same every run."""
    role = role_definition_id.rstrip("/").rsplit("/", 1)[-1]
    key = f"skylane:{scope.rstrip('/').lower()}|{role.lower()}|{principal_id.lower()}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def role_definition_guid(resource_group_id: str, role_name: str) -> str:
    """The GUID a custom role is created under: the same every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"skylane:{resource_group_id.lower()}|{role_name}"))


def _marker(context: Context) -> str:
    return f"[{POOL_TAG}={context.pool}]"


def _described(text: str, context: Context) -> str:
    """A description that says the resource is skylane's, for what takes no tags."""
    return f"{text} {_marker(context)}"


def _owned_description(description: str | None, context: Context) -> bool:
    return (description or "").rstrip().endswith(_marker(context))


def _owned_tags(tags: dict[str, str] | None, context: Context) -> bool:
    return (tags or {}).get(POOL_TAG) == context.pool


def _name_in_group(resource_id: str, fallback: str) -> str:
    match = _IN_GROUP.match(resource_id or "")
    return match["name"] if match else fallback


def _undo(cleanup: Callable[[], None]) -> None:
    """Remove a half-made resource after a failed create; the create's error is what counts."""
    with contextlib.suppress(Exception):
        cleanup()


# --- plumbing -------------------------------------------------------------------------------


class ArmClients:
    """The Resource Manager clients of one subscription, each made once, as the ACI adapter
    makes its own: `endpoint_url` and `ca_bundle`, the placeholder token on loopback, else
    DefaultAzureCredential (with `credentials["managed_identity_client_id"]` when given); the
    SDK's retries off. LROs are polled every `poll_seconds` unless Azure says when, and waited
    on at most `timeout_seconds`."""

    def __init__(
        self,
        subscription_id: str,
        *,
        endpoint_url: str | None = None,
        ca_bundle: str | None = None,
        credentials: dict[str, Any] | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        timeout_seconds: float = DEFAULT_LRO_TIMEOUT_SECONDS,
    ) -> None:
        self.subscription_id = subscription_id
        self.endpoint_url = (endpoint_url or adapter.DEFAULT_ENDPOINT).rstrip("/")
        self.ca_bundle = ca_bundle
        self.credentials = dict(credentials or {})
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self._credential: Any = None
        self._clients: dict[str, Any] = {}

    def _credential_for_calls(self) -> Any:
        if self._credential is None:
            if adapter.is_loopback(self.endpoint_url):
                self._credential = adapter.LoopbackCredential()
            else:
                from azure.identity import DefaultAzureCredential

                client_id = self.credentials.get("managed_identity_client_id")
                options = {"managed_identity_client_id": str(client_id)} if client_id else {}
                self._credential = DefaultAzureCredential(**options)
        return self._credential

    def _client(self, kind: str) -> Any:
        if kind not in self._clients:
            try:
                from azure.mgmt.authorization import AuthorizationManagementClient
                from azure.mgmt.containerregistry import ContainerRegistryManagementClient
                from azure.mgmt.msi import ManagedServiceIdentityClient
                from azure.mgmt.resource.resources import ResourceManagementClient
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise PermanentProviderError(
                    "provisioning aci:push pools needs azure-identity, azure-mgmt-resource, "
                    "azure-mgmt-containerregistry, azure-mgmt-msi and azure-mgmt-authorization "
                    f"(pip install 'skylane[azure]'): {exc}"
                ) from None
            classes = {
                "resources": ResourceManagementClient,
                "registries": ContainerRegistryManagementClient,
                "identities": ManagedServiceIdentityClient,
                "authorization": AuthorizationManagementClient,
            }
            try:
                credential = self._credential_for_calls()
            except Exception as exc:  # noqa: BLE001 - translated
                raise adapter.translate_error(
                    exc, action="authenticate", resource="Azure", caller=CALLER
                ) from None
            self._clients[kind] = classes[kind](
                credential=credential,
                subscription_id=self.subscription_id,
                base_url=self.endpoint_url,
                connection_verify=self.ca_bundle or True,
                retry_total=0,
                polling_interval=self.poll_seconds,
                connection_timeout=REQUEST_TIMEOUT_SECONDS,
                read_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        return self._clients[kind]

    @property
    def resources(self) -> Any:
        return self._client("resources")

    @property
    def registries(self) -> Any:
        return self._client("registries")

    @property
    def identities(self) -> Any:
        return self._client("identities")

    @property
    def authorization(self) -> Any:
        return self._client("authorization")

    def call(
        self,
        fn: Callable[[], T],
        *,
        action: str,
        resource: str,
        missing: bool = False,
        create: bool = False,
    ) -> T | None:
        """`fn()`, its Azure errors translated (naming `action`, the permission it needs, and
        the caller's credentials); None when Azure says not found and `missing`. Reads, updates
        and deletes are retried on throttling and 5xx; a `create` is sent once."""

        def once() -> T | None:
            try:
                return fn()
            except Exception as exc:
                error = (
                    exc
                    if isinstance(exc, ProviderError)
                    else adapter.translate_error(
                        exc, action=action, resource=resource, caller=CALLER
                    )
                )
                if missing and isinstance(error, ProviderNotFound):
                    return None
                if error is exc:
                    raise
                raise error from None

        if create:
            # Not retried: a create whose answer was lost may have gone through; the apply rolls
            # back and a re-run adopts what it finds.
            return once()
        return PROVIDER_CALLS.call(once, what=action)

    def wait(self, poller: Any, *, action: str, resource: str) -> Any:
        """The result of a long-running operation, waited on at most `timeout_seconds`."""
        try:
            result = poller.result(timeout=self.timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - translated
            raise adapter.translate_error(
                exc, action=action, resource=resource, caller=CALLER
            ) from None
        if not poller.done():
            raise PermanentProviderError(
                f"{action} on {resource} did not finish within {self.timeout_seconds:g} s; it "
                "goes on in Azure: run the command again later to pick it up (setting "
                f"{TIMEOUT_SETTING} waits longer)",
                details={"action": action, "ambiguous": True},
            )
        return result

    def until_replicated(self, fn: Callable[[], T], codes: Collection[str]) -> T:
        """`fn()`, tried again (for up to REPLICATION_SECONDS) while Azure refuses it with one
        of `codes`: what was just made or removed takes a while to reach every replica of
        Microsoft Entra ID and Azure RBAC. Such a refusal changed nothing, so trying again is
        safe, creates included."""
        deadline = time.monotonic() + REPLICATION_SECONDS
        delay = self.poll_seconds
        while True:
            try:
                return fn()
            except ProviderError as exc:
                if exc.details.get("code") not in codes or time.monotonic() + delay > deadline:
                    raise
                log.info("%s; trying again in %.1f s (not replicated yet)", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)


class _Where:
    """Where the pool's resources go: the clients, subscription, location and resource group."""

    def __init__(self, clients: ArmClients, location: str, resource_group: str) -> None:
        self.clients = clients
        self.subscription = clients.subscription_id
        self.location = location
        self.resource_group = resource_group

    @property
    def group_id(self) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"

    def resource_id(self, kind: str, name: str) -> str:
        return f"{self.group_id}/providers/{kind}/{name}"

    def role_definition_id(self, guid: str) -> str:
        return (
            f"/subscriptions/{self.subscription}/providers/Microsoft.Authorization/"
            f"roleDefinitions/{guid}"
        )


class _AzureStep:
    kind = ""

    def __init__(self, where: _Where, name: str) -> None:
        self.where = where
        self.az = where.clients
        self.name = name

    @property
    def what(self) -> str:
        return f"{self.kind} {self.name}"

    def update(self, context: Context, found: Found) -> None:  # pragma: no cover - no drift
        return None

    @staticmethod
    def group_missing(context: Context) -> bool:
        """Whether a plan found no resource group: nothing can be in it, nothing to ask."""
        return context.outputs.get("resource_group_exists") is False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# --- 1. resource group ----------------------------------------------------------------------


class ResourceGroupStep(_AzureStep):
    kind = "resource-group"

    def find(self, context: Context) -> Found | None:
        groups = self.az.resources.resource_groups
        group = self.az.call(
            lambda: groups.get(self.name), action=RG_READ, resource=self.what, missing=True
        )
        if group is None:
            return None
        return Found(str(group.id or self.where.group_id), _owned_tags(group.tags, context))

    def create(self, context: Context) -> str:
        groups = self.az.resources.resource_groups
        body = {"location": self.where.location, "tags": context.tags}
        group = self.az.call(
            lambda: groups.create_or_update(self.name, body),
            action=RG_WRITE,
            resource=self.what,
            create=True,
        )
        return str(getattr(group, "id", None) or self.where.group_id)

    def delete(self, context: Context, resource_id: str) -> None:
        """Delete the group and everything in it (deprovision reaches it last)."""
        name = resource_id.rstrip("/").rsplit("/", 1)[-1] if resource_id else self.name
        groups = self.az.resources.resource_groups

        def delete() -> None:
            poller = groups.begin_delete(name)
            self.az.wait(poller, action=RG_DELETE, resource=self.what)

        self.az.call(delete, action=RG_DELETE, resource=self.what, missing=True)

    def publish(self, context: Context, resource_id: str | None) -> None:
        context.outputs["resource_group_id"] = resource_id or self.where.group_id
        context.outputs["resource_group_exists"] = resource_id is not None
        context.defaults["subscription_id"] = self.where.subscription
        context.defaults["resource_group_name"] = self.name
        context.defaults["location"] = self.where.location


# --- 2. container registry ------------------------------------------------------------------


class ContainerRegistryStep(_AzureStep):
    kind = "container-registry"
    type = "Microsoft.ContainerRegistry/registries"

    def __init__(self, where: _Where, name: str) -> None:
        super().__init__(where, name)
        self.login_server: str | None = None

    def find(self, context: Context) -> Found | None:
        registries = self.az.registries.registries
        group = self.where.resource_group
        registry = None
        if not self.group_missing(context):
            registry = self.az.call(
                lambda: registries.get(group, self.name),
                action=REGISTRY_READ,
                resource=self.what,
                missing=True,
            )
        if registry is None:
            self._check_name()
            return None
        self.login_server = str(registry.login_server or "") or None
        owned = _owned_tags(registry.tags, context)
        drift = ["the admin user is enabled"] if owned and registry.admin_user_enabled else []
        registry_id = str(registry.id or self.where.resource_id(self.type, self.name))
        return Found(registry_id, owned, tuple(drift))

    def _check_name(self) -> None:
        """Registry names are global: say so in the plan when another subscription (or another
        resource group) has this one."""
        registries = self.az.registries.registries
        request = {"name": self.name, "type": self.type}
        status = self.az.call(
            lambda: registries.check_name_availability(request),
            action=REGISTRY_NAME_CHECK,
            resource=self.what,
        )
        if status is not None and status.name_available is False:
            raise PermanentProviderError(
                f"the container registry name {self.name} is taken ({status.reason}: "
                f"{status.message}): registry names are global, and another subscription or "
                f"resource group has it; provision into the resource group that holds it, or "
                "delete it",
                details={"registry": self.name},
            )

    def create(self, context: Context) -> str:
        registries = self.az.registries.registries
        group = self.where.resource_group
        body = {
            "location": self.where.location,
            "sku": {"name": REGISTRY_SKU},
            "properties": {"adminUserEnabled": False},
            "tags": context.tags,
        }
        poller = self.az.call(
            lambda: registries.begin_create(group, self.name, body),
            action=REGISTRY_WRITE,
            resource=self.what,
            create=True,
        )
        registry_id = self.where.resource_id(self.type, self.name)
        try:
            registry = self.az.wait(poller, action=REGISTRY_WRITE, resource=self.what)
        except Exception:
            _undo(lambda: self.delete(context, registry_id))
            raise
        self.login_server = str(getattr(registry, "login_server", None) or "") or None
        return str(getattr(registry, "id", None) or registry_id)

    def update(self, context: Context, found: Found) -> None:
        registries = self.az.registries.registries
        group = self.where.resource_group
        change = {"properties": {"adminUserEnabled": False}}

        def update() -> None:
            poller = registries.begin_update(group, self.name, change)
            self.az.wait(poller, action=REGISTRY_WRITE, resource=self.what)

        self.az.call(update, action=REGISTRY_WRITE, resource=self.what)

    def delete(self, context: Context, resource_id: str) -> None:
        registries = self.az.registries.registries
        group = self.where.resource_group
        match = _IN_GROUP.match(resource_id or "")
        if match:
            group = match["group"]
        name = _name_in_group(resource_id, self.name)

        def delete() -> None:
            poller = registries.begin_delete(group, name)
            self.az.wait(poller, action=REGISTRY_DELETE, resource=self.what)

        self.az.call(delete, action=REGISTRY_DELETE, resource=self.what, missing=True)

    def publish(self, context: Context, resource_id: str | None) -> None:
        server = (resource_id and self.login_server) or f"{self.name}.{REGISTRY_SUFFIX}"
        context.outputs["registry_id"] = resource_id or self.where.resource_id(self.type, self.name)
        context.outputs["image_registry"] = server
        context.outputs["image_repository"] = server


# --- 3. and 6. managed identities -----------------------------------------------------------


class ManagedIdentityStep(_AzureStep):
    """A user-assigned identity; `role` ("runtime", "dispatcher") names its outputs."""

    kind = "managed-identity"
    type = "Microsoft.ManagedIdentity/userAssignedIdentities"

    def __init__(self, where: _Where, name: str, *, role: str) -> None:
        super().__init__(where, name)
        self.role = role
        self.identity: Any = None

    def find(self, context: Context) -> Found | None:
        identities = self.az.identities.user_assigned_identities
        group = self.where.resource_group
        identity = None
        if not self.group_missing(context):
            identity = self.az.call(
                lambda: identities.get(group, self.name),
                action=IDENTITY_READ,
                resource=self.what,
                missing=True,
            )
        self.identity = identity
        if identity is None:
            return None
        identity_id = str(identity.id or self.where.resource_id(self.type, self.name))
        return Found(identity_id, _owned_tags(identity.tags, context))

    def create(self, context: Context) -> str:
        from azure.mgmt.msi.v2024_11_30.models import Identity

        identities = self.az.identities.user_assigned_identities
        group = self.where.resource_group
        body = Identity(location=self.where.location, tags=context.tags)
        identity = self.az.call(
            lambda: identities.create_or_update(group, self.name, body),
            action=IDENTITY_WRITE,
            resource=self.what,
            create=True,
        )
        self.identity = identity
        return str(getattr(identity, "id", None) or self.where.resource_id(self.type, self.name))

    def delete(self, context: Context, resource_id: str) -> None:
        identities = self.az.identities.user_assigned_identities
        match = _IN_GROUP.match(resource_id or "")
        group = match["group"] if match else self.where.resource_group
        name = _name_in_group(resource_id, self.name)
        self.az.call(
            lambda: identities.delete(group, name),
            action=IDENTITY_DELETE,
            resource=self.what,
            missing=True,
        )

    def publish(self, context: Context, resource_id: str | None) -> None:
        identity = self.identity if resource_id else None
        identity_id = resource_id or self.where.resource_id(self.type, self.name)
        principal = getattr(identity, "principal_id", None)
        client = getattr(identity, "client_id", None)
        context.outputs[f"{self.role}_identity_id"] = identity_id
        context.outputs[f"{self.role}_principal_id"] = str(principal) if principal else None
        context.outputs[f"{self.role}_client_id"] = str(client) if client else None
        if self.role == "runtime":
            context.defaults["identities"] = [identity_id]
            context.defaults["image_registry"] = {
                "registry_url": context.outputs.get("image_registry"),
                "identity": identity_id,
            }
        elif self.role == "dispatcher":
            context.outputs["dispatcher_credentials"] = (
                {"managed_identity_client_id": str(client)} if client else None
            )


# --- 4. and 7. role assignments -------------------------------------------------------------


class RoleAssignmentStep(_AzureStep):
    """`role` (a role definition id) granted to `principal` at `scope`, each read from the
    context when the step runs; None while unknown (a plan of an empty subscription).
    `replaces`: a principal that had this grant from an earlier run (a previous control plane)
    and loses it: its assignment, when the pool's own, is drift, deleted by an update, and by a
    create once the new one is made."""

    kind = "role-assignment"

    def __init__(
        self,
        where: _Where,
        name: str,
        *,
        scope: Callable[[Context], str | None],
        role: Callable[[Context], str | None],
        principal: Callable[[Context], str | None],
        principal_type: str | None,
        description: str,
        replaces: str | None = None,
    ) -> None:
        super().__init__(where, name)
        self.scope = scope
        self.role = role
        self.principal = principal
        self.principal_type = principal_type
        self.description = description
        self.replaces = replaces

    def _grant(self, context: Context) -> tuple[str, str, str] | None:
        scope, role, principal = self.scope(context), self.role(context), self.principal(context)
        if not (scope and role and principal):
            return None
        return scope, role, principal

    def find(self, context: Context) -> Found | None:
        grant = self._grant(context)
        if grant is None or self.group_missing(context):
            return None
        scope, role, principal = grant
        assignments = self.az.authorization.role_assignments
        name = assignment_name(scope, role, principal)
        found = self.az.call(
            lambda: assignments.get(scope, name),
            action=ASSIGNMENT_READ,
            resource=self.what,
            missing=True,
        )
        if found is None:
            # The same grant under another name (made by hand): used as it is.
            found = self._existing(scope, role, principal)
        if found is None:
            return None
        drift = []
        if self._replaced(context, scope, role) is not None:
            drift.append(f"{self.replaces} still has it")
        return Found(str(found.id), _owned_description(found.description, context), tuple(drift))

    def _replaced(self, context: Context, scope: str, role: str) -> Any:
        """The pool's assignment of this grant to the principal it replaces, if there is one."""
        if not self.replaces:
            return None
        old = self._existing(scope, role, self.replaces)
        return old if old is not None and _owned_description(old.description, context) else None

    def update(self, context: Context, found: Found) -> None:
        grant = self._grant(context)
        if grant is not None:
            old = self._replaced(context, grant[0], grant[1])
            if old is not None:
                self.delete(context, str(old.id))

    def _existing(self, scope: str, role: str, principal: str) -> Any:
        assignments = self.az.authorization.role_assignments
        listed = self.az.call(
            lambda: list(assignments.list_for_scope(scope, filter=f"principalId eq '{principal}'")),
            action=ASSIGNMENT_READ,
            resource=self.what,
            missing=True,
        )
        role_guid = role.rstrip("/").rsplit("/", 1)[-1].lower()
        for assignment in listed or []:
            same_scope = str(assignment.scope or "").rstrip("/").lower() == scope.lower()
            same_role = (
                str(assignment.role_definition_id or "").rstrip("/").rsplit("/", 1)[-1].lower()
                == role_guid
            )
            if same_scope and same_role:
                return assignment
        return None

    def create(self, context: Context) -> str:
        from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters

        grant = self._grant(context)
        if grant is None:  # pragma: no cover - the steps before it publish all three
            raise PermanentProviderError(f"{self.what}: its role, principal or scope is unknown")
        scope, role, principal = grant
        assignments = self.az.authorization.role_assignments
        parameters = RoleAssignmentCreateParameters(
            role_definition_id=role,
            principal_id=principal,
            principal_type=self.principal_type,
            description=_described(self.description, context),
        )
        name = assignment_name(scope, role, principal)
        try:
            created = self.az.until_replicated(
                lambda: self.az.call(
                    lambda: assignments.create(scope, name, parameters),
                    action=ASSIGNMENT_WRITE,
                    resource=self.what,
                    create=True,
                ),
                {"PrincipalNotFound", "RoleDefinitionDoesNotExist"},
            )
        except ProviderConflict as exc:
            if exc.details.get("code") != "RoleAssignmentExists":
                raise
            existing = self._existing(scope, role, principal)
            if existing is not None and _owned_description(existing.description, context):
                return str(existing.id)  # this pool's own, made by an earlier try
            raise ProviderConflict(
                f"{self.what}: principal {principal} was given this role on {scope} meanwhile, "
                "not by skylane; run again to use it as it is",
                details=exc.details,
            ) from None
        assignment_id = str(
            getattr(created, "id", None) or f"{scope}/providers/{ASSIGNMENTS}/{name}"
        )
        try:
            self.update(context, Found(assignment_id))
        except Exception:
            _undo(lambda: self.delete(context, assignment_id))
            raise
        return assignment_id

    def delete(self, context: Context, resource_id: str) -> None:
        assignments = self.az.authorization.role_assignments
        self.az.call(
            lambda: assignments.delete_by_id(resource_id),
            action=ASSIGNMENT_DELETE,
            resource=self.what,
            missing=True,
        )

    def publish(self, context: Context, resource_id: str | None) -> None:
        return None


# --- 5. the dispatch role -------------------------------------------------------------------


class RoleDefinitionStep(_AzureStep):
    """The custom role of the control plane: `DISPATCH_ACTIONS`, assignable at the resource
    group only."""

    kind = "role-definition"

    def __init__(self, where: _Where, name: str, *, description: str) -> None:
        super().__init__(where, name)
        self.description = description
        self.guid = role_definition_guid(where.group_id, name)

    def find(self, context: Context) -> Found | None:
        definitions = self.az.authorization.role_definitions
        # Ours, under its own GUID: custom roles belong to the tenant, so one outlives a
        # resource group deleted by hand, and is found (and reused) even then.
        found = self.az.call(
            lambda: definitions.get(f"/subscriptions/{self.where.subscription}", self.guid),
            action=ROLE_READ,
            resource=self.what,
            missing=True,
        )
        if found is None and not self.group_missing(context):
            # Someone's role of this name, assignable at the group: used as it is.
            scope = self.where.group_id
            listed = self.az.call(
                lambda: list(definitions.list(scope, filter=f"roleName eq '{self.name}'")),
                action=ROLE_READ,
                resource=self.what,
                missing=True,
            )
            found = next(
                (
                    d
                    for d in listed or []
                    if str(d.role_name or "").lower() == self.name.lower()
                    and str(d.role_type or "") == "CustomRole"
                ),
                None,
            )
        if found is None:
            return None
        owned = _owned_description(found.description, context)
        return Found(str(found.id), owned, tuple(self._drift(found) if owned else ()))

    def _drift(self, definition: Any) -> list[str]:
        permissions = list(definition.permissions or [])
        actions = {a.lower() for p in permissions for a in (p.actions or [])}
        others = [
            a
            for p in permissions
            for a in (*(p.not_actions or []), *(p.data_actions or []), *(p.not_data_actions or []))
        ]
        drift = []
        if actions != {a.lower() for a in DISPATCH_ACTIONS} or others:
            drift.append("its permissions differ")
        scopes = [str(s).rstrip("/").lower() for s in definition.assignable_scopes or []]
        if scopes != [self.where.group_id.lower()]:
            drift.append("its assignable scopes differ")
        return drift

    def _put(self, context: Context, guid: str) -> Any:
        from azure.mgmt.authorization.v2022_04_01.models import Permission, RoleDefinition

        definitions = self.az.authorization.role_definitions
        scope = self.where.group_id
        body = RoleDefinition(
            role_name=self.name,
            description=_described(self.description, context),
            role_type="CustomRole",
            permissions=[Permission(actions=list(DISPATCH_ACTIONS), not_actions=[])],
            assignable_scopes=[scope],
        )
        return lambda: definitions.create_or_update(scope, guid, body)

    def create(self, context: Context) -> str:
        try:
            created = self.az.call(
                self._put(context, self.guid),
                action=ROLE_WRITE,
                resource=self.what,
                create=True,
            )
        except ProviderConflict as exc:
            if exc.details.get("code") != "RoleDefinitionWithSameNameExists":
                raise
            raise ProviderConflict(
                f"{self.what}: a custom role of this name exists in the tenant already, for "
                "another subscription or resource group (role names are unique in a tenant): "
                f"delete it, or give the pool another name ({exc.message})",
                details=exc.details,
            ) from None
        return str(getattr(created, "id", None) or self.where.role_definition_id(self.guid))

    def update(self, context: Context, found: Found) -> None:
        guid = found.resource_id.rstrip("/").rsplit("/", 1)[-1]
        self.az.call(self._put(context, guid), action=ROLE_WRITE, resource=self.what)

    def delete(self, context: Context, resource_id: str) -> None:
        definitions = self.az.authorization.role_definitions
        guid = resource_id.rstrip("/").rsplit("/", 1)[-1] if resource_id else self.guid
        scope = self.where.group_id
        self.az.until_replicated(
            lambda: self.az.call(
                lambda: definitions.delete(scope, guid),
                action=ROLE_DELETE,
                resource=self.what,
                missing=True,
            ),
            {"RoleDefinitionHasAssignments"},
        )

    def publish(self, context: Context, resource_id: str | None) -> None:
        context.outputs["dispatch_role_id"] = resource_id or self.where.role_definition_id(
            self.guid
        )


# --- the list -------------------------------------------------------------------------------


def aci_steps(
    clients: ArmClients,
    pool_name: str,
    *,
    location: str,
    resource_group: str,
    control_plane: str | None = None,
    previous_control_plane: str | None = None,
) -> list[Step]:
    """The steps that provision an `aci:push` pool named `pool_name` in `resource_group` (of
    the clients' subscription) and `location`, in dependency order. `control_plane`: an Entra
    object id also given the dispatch role; its step is named after the role alone, so the
    pool's records name it whoever the principal, and `previous_control_plane`, the one it
    replaces, loses the role."""
    where = _Where(clients, location, resource_group)
    base = f"skylane-{slug(pool_name)}"
    runtime, dispatcher, dispatch = f"{base}-runtime", f"{base}-dispatcher", f"{base}-dispatch"

    def group_scope(context: Context) -> str | None:
        return where.group_id

    def dispatch_role(context: Context) -> str | None:
        return context.outputs.get("dispatch_role_id")

    steps: list[Step] = [
        ResourceGroupStep(where, resource_group),
        ContainerRegistryStep(where, registry_name(clients.subscription_id, pool_name)),
        ManagedIdentityStep(where, runtime, role="runtime"),
        RoleAssignmentStep(
            where,
            f"AcrPull@{runtime}",
            scope=lambda context: context.outputs.get("registry_id"),
            role=lambda context: where.role_definition_id(ACR_PULL),
            principal=lambda context: context.outputs.get("runtime_principal_id"),
            principal_type="ServicePrincipal",
            description=f"skylane pool {pool_name}: the runs pull their image",
        ),
        RoleDefinitionStep(
            where,
            dispatch,
            description=(
                f"skylane pool {pool_name}: run, watch and remove container groups in this "
                "resource group"
            ),
        ),
        ManagedIdentityStep(where, dispatcher, role="dispatcher"),
        RoleAssignmentStep(
            where,
            f"{dispatch}@{dispatcher}",
            scope=group_scope,
            role=dispatch_role,
            principal=lambda context: context.outputs.get("dispatcher_principal_id"),
            principal_type="ServicePrincipal",
            description=f"skylane pool {pool_name}: the dispatcher identity dispatches runs",
        ),
    ]
    if control_plane:
        steps.append(
            RoleAssignmentStep(
                where,
                f"{dispatch}@control-plane",
                scope=group_scope,
                role=dispatch_role,
                principal=lambda context: control_plane,
                principal_type=None,
                description=f"skylane pool {pool_name}: the control plane dispatches runs",
                replaces=previous_control_plane
                if previous_control_plane != control_plane
                else None,
            )
        )
    return steps


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None


def _seconds(settings: dict[str, Any], name: str, default: float) -> float:
    value = settings.get(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0:
        raise InvalidInput(f"{name} must be a number of seconds > 0", field=f"settings.{name}")
    return seconds


def aci_provisioner(pool_name: str, options: ProvisionOptions) -> Provisioner:
    """The provisioner of an `aci:push` pool: where (`options.subscription` or the pool's
    `subscription_id` setting, required; `options.region` or `location`, required;
    `options.resource_group` or `resource_group_name`, else `skylane-<slug>`), the steps, and
    the pool's settings afterwards (those given, with `subscription_id`,
    `resource_group_name`, `location` and, with a control plane, `control_plane`: deprovision,
    given the pool's settings alone, then has the control plane's step too; a new
    `--control-plane` replaces the one in the settings, which loses the role). InvalidInput
    names the option to fix."""
    settings = dict(options.settings)
    subscription = _text(options.subscription) or _text(settings.get("subscription_id"))
    if not subscription:
        raise InvalidInput(
            "an Azure subscription id is required: pass --subscription (or set the pool's "
            "subscription_id setting)",
            field="--subscription",
        )
    if not _GUID.match(subscription):
        raise InvalidInput(
            f"{subscription!r} is not an Azure subscription id (a GUID)", field="--subscription"
        )
    location = _text(options.region) or _text(settings.get("location"))
    if not location:
        raise InvalidInput(
            "an Azure location is required: pass --region (e.g. westeurope), or set the pool's "
            "location setting",
            field="--region",
        )
    location = location.replace(" ", "").lower()
    resource_group = (
        _text(options.resource_group)
        or _text(settings.get("resource_group_name"))
        or f"skylane-{slug(pool_name)}"
    )
    if not _RESOURCE_GROUP.match(resource_group) or resource_group.endswith("."):
        raise InvalidInput(
            f"{resource_group!r} is not a resource group name (1-90 letters, digits, '_', "
            "'-', '.', '(' or ')', not ending in '.')",
            field="--resource-group",
        )
    previous = _text(settings.get(CONTROL_PLANE_SETTING))
    previous = previous.lower() if previous and _GUID.match(previous) else None
    control_plane = _text(options.control_plane) or previous
    if control_plane is not None and not _GUID.match(control_plane):
        raise InvalidInput(
            f"{control_plane!r} is not an Entra object id (a GUID): give the object id of the "
            "control plane's identity (user, group, service principal or managed identity)",
            field="--control-plane",
        )
    clients = ArmClients(
        subscription,
        endpoint_url=_text(settings.get("endpoint_url"))
        or _text(os.environ.get(adapter.ENDPOINT_VARIABLE)),
        ca_bundle=_text(settings.get("ca_bundle"))
        or _text(os.environ.get(adapter.CA_BUNDLE_VARIABLE)),
        credentials=options.credentials,
        poll_seconds=_seconds(settings, POLL_SETTING, DEFAULT_POLL_SECONDS),
        timeout_seconds=_seconds(settings, TIMEOUT_SETTING, DEFAULT_LRO_TIMEOUT_SECONDS),
    )
    pool_settings = {
        key: value
        for key, value in settings.items()
        if key not in (POLL_SETTING, TIMEOUT_SETTING, CONTROL_PLANE_SETTING)
    }
    control_plane = control_plane.lower() if control_plane else None
    pool_settings.update(
        subscription_id=subscription, resource_group_name=resource_group, location=location
    )
    if control_plane:
        pool_settings[CONTROL_PLANE_SETTING] = control_plane
    steps = aci_steps(
        clients,
        pool_name,
        location=location,
        resource_group=resource_group,
        control_plane=control_plane,
        previous_control_plane=previous,
    )
    return Provisioner(steps=steps, context=Context(pool=pool_name), pool_settings=pool_settings)

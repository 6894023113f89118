"""A local emulator of the Azure Resource Manager calls an Azure Container Instances (ACI)
adapter makes: container groups (create, read, list, stop, delete), their containers' logs and
the create operation's status, answered in the JSON shapes the official
`azure-mgmt-containerinstance` SDK (10.1.0, API version 2023-05-01) parses, optionally with the
containers run as local processes.

Why: Azure has no emulator for Resource Manager, and what an ACI adapter must get right (an
idempotent create with `If-None-Match: *`, a group that takes time to provision and run, a
container's exit code, secure values, throttling and quota errors, calls that went through but
were never answered) cannot be shown with mocks of the client. `AciEmulator` is an HTTPS server
that answers those calls, with groups that move through their states as time passes (or as
their process runs), injectable faults, and a log of the requests it received.

Pointing the official client at it (azure-core refuses a bearer token over plain http, so the
emulator serves HTTPS with a certificate of its own; `ca_bundle` is the CA to trust)::

    import time

    from azure.core.credentials import AccessToken
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient
    from skylane.testing.azure import AciEmulator

    class FixedToken:  # any TokenCredential: the emulator accepts any bearer token
        def get_token(self, *scopes, **kwargs):
            return AccessToken("test-token", int(time.time()) + 3600)

    with AciEmulator(provision_seconds=0.05, run_seconds=0.2) as emulator:
        client = ContainerInstanceManagementClient(
            credential=FixedToken(),
            subscription_id="00000000-0000-0000-0000-000000000000",
            base_url=emulator.url,                 # "https://127.0.0.1:PORT"
            connection_verify=emulator.ca_bundle,  # the emulator's CA, a PEM file
            retry_total=0,                         # or the SDK retries 429 and 5xx itself
            polling_interval=0.01,                 # LRO polls: 30 s by default
        )
        group = client.container_groups.begin_create_or_update("rg", "name", group).result()
        emulator.throttle("containerGroups.get", count=2, retry_after=1)
        emulator.timeout_after("containerGroups.createOrUpdate", seconds=5)
        emulator.requests("containerGroups.createOrUpdate")  # what the client sent

What the SDK raises (the class comes from the HTTP status alone, against Azure too): 401
`ClientAuthenticationError`, 404 `ResourceNotFoundError`, 409 `ResourceExistsError` (quota,
capacity and `ContainerGroupTransitioning` errors too: their code tells them apart),
anything else `HttpResponseError`, among them 400, 403, 412 (`If-None-Match: *` on an existing
group; pass `error_map={412: ResourceExistsError}` to get that class), 429, 500 and 503. All are
`HttpResponseError`s: `exc.status_code`, `exc.error.code` (e.g. `ContainerGroupQuotaReached`),
`exc.error.message`, `exc.response.headers["Retry-After"]`. An unanswered call is
`azure.core.exceptions.ServiceResponseTimeoutError` when the client's `read_timeout` (per call,
or `connection_timeout`/`read_timeout` on the client) runs out, `ServiceResponseError` when the
connection is dropped. A create whose provisioning fails raises `HttpResponseError` from
`poller.result()` with the operation's error (`exc.error.code == "InaccessibleImage"`); errors
answered to the poller's own GETs are `HttpResponseError` whatever their status.

What it serves (`{cg}` is
`/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}`;
every call needs `api-version` in its query, else 400 `MissingApiVersionParameter`, and an
`Authorization: Bearer ...` header, else 401 `AuthenticationFailed`; any token is accepted; the
fixed segments of the path and the resource group name are case-insensitive, as in ARM):

- `PUT {cg}` (`containerGroups.createOrUpdate`): a new group is 201 with the group
  (provisioningState `Pending`) and an `Azure-AsyncOperation` header, `{base}/subscriptions/
  {sub}/providers/Microsoft.ContainerInstance/locations/{location}/operations/{id}?api-version=`;
  a group that exists is 412 `PreconditionFailed` under `If-None-Match: *`, else 200 with the
  group as it is, unchanged (real ACI updates what may be updated and may restart it);
- `GET {cg}` (`containerGroups.get`), `DELETE {cg}` (`containerGroups.delete`: 200 with the
  group as it was, its process stopped, or 204 when there is none), `POST {cg}/stop`
  (`containerGroups.stop`: 204; 409 `ContainerGroupTransitioning` while it provisions);
- `GET .../resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups`
  (`containerGroups.listByResourceGroup`) and `GET /subscriptions/{sub}/providers/
  Microsoft.ContainerInstance/containerGroups` (`containerGroups.list`): `{"value": [...],
  "nextLink"?}`, `list_page_size` groups a page (`$skiptoken` = the offset), in creation order;
  listed groups carry no instance views (neither the group's nor the containers'), as ARM's
  lists leave them out: read a group's state with `get`;
- `GET {cg}/containers/{container}/logs?tail=N&timestamps=true` (`containers.listLogs`):
  `{"content": "line\\nline\\n"}`, the last `tail` lines, each prefixed with its RFC 3339 time
  in nanoseconds and a space when asked; 404 `ResourceNotFound` for a missing group,
  `ContainerNotFound` for a container the group does not have; empty before the container ran;
- `GET /subscriptions/{sub}/providers/Microsoft.ContainerInstance/locations/{location}/
  operations/{id}` (`operations.get`): `{"id", "name", "status": "Creating" | "Succeeded" |
  "Failed" | "Canceled", "startTime", "endTime"?, "error"?: {"code", "message"}}`.

With `resource_groups=[...]`, only those resource groups (and those created through the API)
exist: every call on another is 404 `ResourceGroupNotFound` ("Resource group 'X' could not be
found."). Errors are `{"error": {"code", "message"}}`; a missing group is 404
`ResourceNotFound` ("The Resource 'Microsoft.ContainerInstance/containerGroups/NAME' under
resource group 'RG' was not found. ...").

Validation of a PUT, as ACI does (400; the message names the property): the name is 1-63
lowercase letters, digits and single hyphens, neither first nor last
(`InvalidContainerGroupName`); `location` is required (`LocationRequired`); a missing required
property (`properties`, `containers`, a container's `name`, `properties`, `image`, an env var's
`name`, a registry's `server`, `dnsConfig.nameServers`, a subnet's `id`) is
`InvalidRequestContent` naming it and its path; `osType` Linux|Windows (`InvalidOsType`);
`restartPolicy` Always|OnFailure|Never (default Always; `InvalidRestartPolicy`); container names
like group names, once each (`InvalidContainerName`, `DuplicateContainerNames`);
`resources.requests` with `cpu` and `memoryInGB` (`ResourceRequestsNotSpecified`), both > 0, an
optional `gpu` `{count >= 1, sku K80|P100|V100}` (`InvalidResourceRequests`); env vars
`{name, value}` or `{name, secureValue}`, not both (`InvalidEnvironmentVariable`);
`imageRegistryCredentials` `{server, username, password}` or `{server, identity}` with the
identity one of the group's user-assigned identities (`InvalidImageRegistryCredential`);
`identity` `{type: SystemAssigned | UserAssigned | "SystemAssigned, UserAssigned" | None,
userAssignedIdentities: {resource id: {}}}` (`InvalidIdentity`); `subnetIds` `[{id}]` of subnet
resource ids (`InvalidSubnetId`). Enumerations are matched without regard to case, as ARM does.

What a group looks like (`get`; names as in the JSON):

- `id`, `name`, `type` (`Microsoft.ContainerInstance/containerGroups`), `location` (normalized:
  "West Europe" is `westeurope`), `tags`, `zones` and `identity` when given (user-assigned
  identities get a `principalId` and `clientId`, a system-assigned one `principalId` and
  `tenantId`), and `properties` as sent, with `sku` Standard, `restartPolicy`,
  `initContainers` [], each container's `ports` and `environmentVariables` ([] by default),
  `provisioningState` and `instanceView` added. **Secure values are never returned**, as ARM
  does: an env var sent with `secureValue` comes back as `{"name"}` only, registry passwords,
  Azure Files storage keys and secret volumes' contents are left out.
- Timeline, from the PUT at t0, with the group's plan (`provision_seconds` P, `run_seconds` R,
  `exit_code`, `provision_error`, `hold`): before t0 + P/2 provisioningState `Pending`, group
  `instanceView.state` `Pending`, containers without an `instanceView` (not scheduled yet);
  until t0 + P `Creating`, containers `{"restartCount": 0, "currentState": {"state": "Waiting",
  "detailStatus": "ContainerCreating"}, "events": [Pulling]}`; then `Succeeded`, state
  `Running`, containers `currentState` `{"state": "Running", "startTime", "detailStatus": ""}`
  with events Pulling, Pulled, Started; R seconds later (held: when `finish_group` says;
  `run_containers`: when its process exits) `{"state": "Terminated", "startTime",
  "finishTime", "exitCode", "detailStatus": "Completed" | "Error"}` and the group's state
  `Succeeded` (exit code 0) or `Failed`. A `provision_error` makes provisioning `Failed` at
  t0 + P instead (group state `Failed`; containers `Waiting` with detailStatus the error's code
  and a `Failed` event of type Warning carrying its message), and the create operation `Failed`
  with that error. `stop` makes the group's state `Stopped` (provisioningState stays
  `Succeeded`); a running container becomes `{"state": "Terminated", "exitCode": 143,
  "detailStatus": "Stopped"}` (143 = SIGTERM, or its process's own exit code) with a `Killing`
  event. An event is `{"count": 1, "firstTimestamp", "lastTimestamp", "name", "message",
  "type": "Normal" | "Warning"}`; the group's own `instanceView.events` stay empty. Every
  container of a group follows the same timeline.
- The create operation is `Creating` while provisioning, then `Succeeded` or `Failed`, or
  `Canceled` when the group was deleted first.

Plans (`GroupPlan`) come from the constructor, `configure()` (every group) or `plan_group()` /
`configure(group=NAME)` (the groups of that name, in any resource group, existing or not yet);
`hold_group()` keeps one running until `finish_group(name, exit_code)`, and
`fail_provisioning()` makes one fail to provision. An existing unfinished group named changes
from now on (a start or end never moves into the past). Times come from `clock` (`time.time`
unless given).

Containers as processes (`run_containers=True`, opt-in; `--run-containers`): at its start time
(t0 + P) a group's first container's `command` runs as a local process (see
`skylane.testing.container_processes`: its own session, in `workdir`, `python`/`python3` as
argv[0] meaning `python`), with only its env vars (values and secure values) and PATH, HOME,
LANG, LC_ALL, TMPDIR and PYTHONPATH in its environment. Its stdout and stderr lines are the
container's logs, its exit ends the container (exit code 128 + N when killed by signal N) and
decides the group's state. `stop`, `delete`, `finish_group()`, `reset()` and `stop()` of the
emulator stop the process: SIGTERM to its group, SIGKILL `stop_grace_seconds` later. A
container without a command, or one that cannot start, ends at once with exit code 127 and the
reason in its logs and a `Failed` event. Held or failing plans run no process. It needs the real
clock.

Faults (`Fault`), tried in the order added on calls that passed the token and api-version
checks; the first that matches the call's operation (the names above, or "*"), HTTP method and
path (fnmatch, case-insensitive) and has fires left (`count`, None for ever) applies:

- `error`: answer `{"error": {"code", "message"}}` with `status` without doing the call:
  `throttle()` 429 `TooManyRequests` with `Retry-After`; `quota_reached()` 409
  `ContainerGroupQuotaReached` ("Resource type 'Microsoft.ContainerInstance/containerGroups'
  container group quota 'StandardCores' exceeded in region 'LOC'. Limit: '10', Usage: '10',
  Requested: '1'."); `capacity_unavailable()` 409 `ServiceUnavailable` ("The requested resource
  with '1' CPU and '1.5' GB memory is not available in the location 'LOC' at this moment.
  ..."), both on creates; `internal_error()` 500 `InternalServerError`; `unavailable()` 503
  `ServiceUnavailable`; `forbid()` 403 `AuthorizationFailed` naming the action (e.g.
  'Microsoft.ContainerInstance/containerGroups/write') and the scope; `fail_next()` any;
- `timeout` (`timeout_after()`): do the call, then hold the answer `seconds` and drop the
  connection (`drop=False`: answer late), so a client with a shorter timeout never hears that
  the call went through;
- `delay` (`delay()`): do the call and answer `seconds` later.

Control API under `/emulator/` (plain JSON; never logged, never faulted, no token needed):
`GET /emulator/` (counts: groups, processes, operations, faults, requests);
`GET /emulator/requests[?operation=&method=]` (`{method, path, operation, query, headers, body,
status, received_at, fault, dropped, response}`, Authorization left out) and `DELETE` to forget
them; `POST /emulator/reset`; `GET|POST|DELETE /emulator/faults` (POST a fault object, a list or
`{"faults": [...]}`), `DELETE /emulator/faults/{id}`; `POST /emulator/configure` (`{"group"?,
"provision_seconds"?, "run_seconds"?, "exit_code"?, "provision_error"?, "hold"?}`);
`GET /emulator/groups` (as `get` answers them), `GET /emulator/groups/{name}`;
`POST /emulator/finish` (`{"group", "exit_code"?}`); `POST /emulator/logs` (`{"group", "text",
"container"?, "stream"?}`).

Where it deliberately differs from Azure: no `update` (PATCH), `restart` or `start`; a PUT of an
existing group changes nothing; containers are never restarted, whatever `restartPolicy` says
(`restartCount` stays 0, no `previousState`); logs stay readable after a stop; ports, volumes,
probes, IP addresses and init containers are stored and echoed, never acted on; no subscription
or quota is checked unless a fault says so; error codes for the rarer validation failures are
the emulator's best guess.

Provisioning's resources (`skylane.testing.azure_resources`, which documents them): the same
emulator also serves resource groups (`resourceGroups.*`, `operationResults.get`), container
registries (`registries.*`), user-assigned identities (`userAssignedIdentities.*`), role
definitions (`roleDefinitions.*`) and role assignments (`roleAssignments.*`), through the same
checks, faults and request log; read and seed them with `resource_group()`, `registries()`,
`identities()`, `role_definitions()`, `role_assignments()`, `add_resource_group()`,
`add_registry()`, `add_identity()` and `add_role_assignment()`. A resource group created through
the API exists for container groups too (with `resource_groups=[...]` as well); deleting it
deletes its container groups. A container group naming a user-assigned identity that does not
exist in such a resource group is refused (400 `FailedIdentityOperation`).

Standalone: `python -m skylane.testing.azure [--host H] [--port N] [--no-tls] [--cert-dir DIR]
[--run-containers] [--workdir DIR] [--provision-seconds S] [--run-seconds S]` prints its URL on
the first line of stdout and the CA bundle's path on the second (with TLS), then serves until
SIGINT or SIGTERM (and stops its processes).
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import math
import os
import re
import signal
import ssl
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, cast
from urllib.parse import quote

from skylane.testing.azure_resources import ACTIONS as RESOURCE_ACTIONS
from skylane.testing.azure_resources import OPERATIONS as RESOURCE_OPERATIONS
from skylane.testing.azure_resources import ROUTES as RESOURCE_ROUTES
from skylane.testing.azure_resources import ArmError, ArmResourcesMixin
from skylane.testing.container_processes import (
    LocalContainerProcess,
    Stream,
    exit_status,
    inherited_env,
)
from skylane.testing.emulator_base import (
    CallRecord,
    EmulatorBase,
    EmulatorHandler,
    FaultBase,
    FaultKind,
    add_address_arguments,
    add_process_arguments,
    check_plan_fields,
    check_process_options,
    logged_body,
    parse_call,
    route_call,
    start_failure,
)
from skylane.testing.emulator_base import timestamp as _timestamp
from skylane.testing.local_http import json_or_none, serve_until_signalled

Phase = Literal["pending", "creating", "provision_failed", "running", "exited"]

API_VERSION = "2023-05-01"
PROVIDER = "Microsoft.ContainerInstance"
GROUP_TYPE = f"{PROVIDER}/containerGroups"
# Who the emulator says is calling (in 403 messages) and the tenant of identities.
CLIENT_ID = "8f7d6e5c-4b3a-4291-8c7d-6e5f4a3b2c1d"
OBJECT_ID = "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
# 128 + SIGTERM (143): what a container stopped by `stop` reports.
STOP_EXIT_CODE = exit_status(-signal.SIGTERM)
START_FAILURE_EXIT_CODE = 127

OPERATIONS: tuple[str, ...] = (
    "containerGroups.createOrUpdate",
    "containerGroups.get",
    "containerGroups.delete",
    "containerGroups.stop",
    "containerGroups.list",
    "containerGroups.listByResourceGroup",
    "containers.listLogs",
    "operations.get",
    *RESOURCE_OPERATIONS,
)
# The RBAC action each operation needs (named in 403 AuthorizationFailed).
ACTIONS: dict[str, str] = {
    "containerGroups.createOrUpdate": f"{GROUP_TYPE}/write",
    "containerGroups.get": f"{GROUP_TYPE}/read",
    "containerGroups.delete": f"{GROUP_TYPE}/delete",
    "containerGroups.stop": f"{GROUP_TYPE}/stop/action",
    "containerGroups.list": f"{GROUP_TYPE}/read",
    "containerGroups.listByResourceGroup": f"{GROUP_TYPE}/read",
    "containers.listLogs": f"{GROUP_TYPE}/containers/logs/read",
    "operations.get": f"{PROVIDER}/locations/operations/read",
    **RESOURCE_ACTIONS,
}

_SUB = r"^/subscriptions/(?P<subscription>[^/]+)"
_RG = _SUB + r"/resourceGroups/(?P<resource_group>[^/]+)"
_CGS = _RG + r"/providers/Microsoft\.ContainerInstance/containerGroups"
_CG = _CGS + r"/(?P<name>[^/]+)"
ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(_CGS + r"/?$", re.I), {"GET": "containerGroups.listByResourceGroup"}),
    (
        re.compile(_SUB + r"/providers/Microsoft\.ContainerInstance/containerGroups/?$", re.I),
        {"GET": "containerGroups.list"},
    ),
    (
        re.compile(_CG + r"/?$", re.I),
        {
            "PUT": "containerGroups.createOrUpdate",
            "GET": "containerGroups.get",
            "DELETE": "containerGroups.delete",
        },
    ),
    (re.compile(_CG + r"/stop/?$", re.I), {"POST": "containerGroups.stop"}),
    (
        re.compile(_CG + r"/containers/(?P<container>[^/]+)/logs/?$", re.I),
        {"GET": "containers.listLogs"},
    ),
    (
        re.compile(
            _SUB + r"/providers/Microsoft\.ContainerInstance/locations/(?P<location>[^/]+)"
            r"/operations/(?P<operation>[^/]+)/?$",
            re.I,
        ),
        {"GET": "operations.get"},
    ),
    *RESOURCE_ROUTES,
]

# 1-63 lowercase letters, digits and single hyphens, neither first nor last.
GROUP_NAME = re.compile(r"^(?!-)(?!.*--)[a-z0-9-]{1,63}(?<!-)$")
API_VERSION_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
OS_TYPES = ("Linux", "Windows")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
GPU_SKUS = ("K80", "P100", "V100")
IDENTITY_TYPES = ("SystemAssigned", "UserAssigned", "SystemAssigned, UserAssigned", "None")
USER_IDENTITY_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ManagedIdentity/"
    r"userAssignedIdentities/[^/]+$",
    re.I,
)
SUBNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/"
    r"virtualNetworks/[^/]+/subnets/[^/]+$",
    re.I,
)
# The names the emulator's certificate is valid for (and the host it listens on, if another).
CERTIFICATE_HOSTS = ("127.0.0.1", "localhost", "::1")
_UNSET: Any = object()


def _required(name: str, path: str) -> ArmError:
    where = f" Path '{path}'." if path else ""
    return ArmError(
        400,
        "InvalidRequestContent",
        "The request content was invalid and could not be deserialized: "
        f"'Required property '{name}' not found in JSON.{where}'.",
    )


def _invalid_content(what: str) -> ArmError:
    return ArmError(
        400,
        "InvalidRequestContent",
        f"The request content was invalid and could not be deserialized: '{what}'.",
    )


def _group_not_found(resource_group: str, name: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{GROUP_TYPE}/{name}' under resource group '{resource_group}' was not "
        "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


# -- plans, faults, the request log ----------------------------------------------------------


@dataclass
class GroupPlan:
    """How a container group unfolds: provisioned `provision_seconds` after its PUT (Pending for
    the first half, Creating for the second), its container running `run_seconds`, then
    exiting with `exit_code`; `hold` keeps it running until `finish_group`;
    `provision_error` (`{"code", "message"}`; a message alone means code `InaccessibleImage`;
    an empty message the one ACI gives for an image it cannot pull) makes provisioning fail."""

    provision_seconds: float = 0.05
    run_seconds: float = 0.2
    exit_code: int = 0
    provision_error: dict[str, str] | None = None
    hold: bool = False

    def __post_init__(self) -> None:
        _check_plan_values(asdict(self))
        self.provision_error = _provision_error(self.provision_error)


def _check_plan_values(values: Mapping[str, Any]) -> None:
    check_plan_fields(values, GroupPlan)
    for name in ("provision_seconds", "run_seconds"):
        if name in values and (
            not isinstance(values[name], int | float)
            or isinstance(values[name], bool)
            or not math.isfinite(values[name])
            or values[name] < 0
        ):
            raise ValueError(f"{name} must be a number >= 0, not {values[name]!r}")
    if "exit_code" in values and (
        not isinstance(values["exit_code"], int) or isinstance(values["exit_code"], bool)
    ):
        raise ValueError(f"exit_code must be an integer, not {values['exit_code']!r}")
    if "hold" in values and not isinstance(values["hold"], bool):
        raise ValueError(f"hold must be true or false, not {values['hold']!r}")
    if "provision_error" in values:
        _provision_error(values["provision_error"])


def _provision_error(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"code": "InaccessibleImage", "message": value}
    if isinstance(value, Mapping) and set(value) <= {"code", "message"}:
        code, message = value.get("code", "InaccessibleImage"), value.get("message", "")
        if isinstance(code, str) and code and isinstance(message, str):
            return {"code": code, "message": message}
    raise ValueError(
        f"provision_error is a message or {{'code', 'message'}}, not {value!r} (None: no error)"
    )


@dataclass
class Fault(FaultBase):
    """One fault: which calls it hits (`operation`, HTTP `method`, fnmatch `path`; "*" for any),
    how often (`count` times, None for ever) and how (`kind`: "error" answers `status` with
    `{"error": {"code", "message"}}` without doing the call, and a `Retry-After` header when
    `retry_after` is set; "timeout" does the call, holds the answer `seconds` and drops the
    connection unless `drop` is False; "delay" does the call and answers `seconds` later). An
    empty `code` or `message` is filled in from the status. `fired` counts how often it
    applied; `id` names it in the control API. Paths match regardless of case, as in ARM."""

    call_field: ClassVar[str] = "operation"
    fold_path_case: ClassVar[bool] = True

    kind: FaultKind = "error"
    operation: str = "*"
    method: str = "*"
    path: str = "*"
    status: int = 503
    code: str = ""
    message: str = ""
    count: int | None = 1
    seconds: float = 0.0
    retry_after: float | None = None
    drop: bool = True
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    fired: int = 0

    def __post_init__(self) -> None:
        self._check_target()
        if self.operation != "*" and self.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {self.operation!r}; one of {list(OPERATIONS)}")
        if not isinstance(self.status, int) or not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error status, not {self.status!r}")
        self._check_limits()
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after must be >= 0 or None, not {self.retry_after}")
        self.code = self.code or DEFAULT_CODES.get(self.status, "BadRequest")


DEFAULT_CODES: dict[int, str] = {
    400: "BadRequest",
    401: "AuthenticationFailed",
    403: "AuthorizationFailed",
    404: "NotFound",
    409: "Conflict",
    412: "PreconditionFailed",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


@dataclass(frozen=True)
class ReceivedRequest(CallRecord):
    """One API call the emulator received (control calls excepted). `query` holds the last value
    of each parameter, `headers` the request's headers without Authorization, `body` and
    `response` the parsed JSON (None if empty or not JSON), `status` the HTTP status answered
    (or that would have been, for a dropped answer), `operation` the API operation (None for an
    unknown route), `fault` the id of the fault that applied."""

    call_field: ClassVar[str] = "operation"

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int
    received_at: float
    operation: str | None = None
    fault: str | None = None
    dropped: bool = False
    response: Any = None


# -- state records ---------------------------------------------------------------------------


@dataclass(eq=False)
class _LogLine:
    at: float
    container: str
    stream: Stream
    text: str


@dataclass(eq=False)
class _Group:
    subscription: str
    resource_group: str
    name: str
    location: str
    spec: dict[str, Any]
    created_at: float
    # Creating from `pull_at`, provisioned (the container started, or provisioning failed) at
    # `start_at`; the container exits at `end_at` (None: not decided yet, held or its process
    # runs) with `exit_code`.
    pull_at: float
    start_at: float
    end_at: float | None
    exit_code: int
    run_seconds: float
    provision_error: dict[str, str] | None
    runs_container: bool
    stopped_at: float | None = None
    ended_by_stop: bool = False
    deleted_at: float | None = None
    # Why its process could not start (run_containers): a Failed event carries it.
    start_failure: str = ""
    process: _Process | None = None
    logs: list[_LogLine] = field(default_factory=list)

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{GROUP_TYPE}/{self.name}"
        )

    def phase(self, now: float) -> Phase:
        """Where it is at `now` (a stopped group stays where the stop left it)."""
        at = now if self.stopped_at is None else min(now, self.stopped_at)
        if at < self.pull_at:
            return "pending"
        if at < self.start_at:
            return "creating"
        if self.provision_error is not None:
            return "provision_failed"
        if self.end_at is not None and at >= self.end_at:
            return "exited"
        return "running"

    def provisioned(self, now: float) -> bool:
        return self.phase(now) not in ("pending", "creating")


@dataclass(eq=False)
class _Process:
    group: _Group
    runner: LocalContainerProcess | None = None
    # Its group was forgotten by reset(): its output and exit no longer belong anywhere.
    discarded: bool = False


@dataclass(eq=False)
class _Operation:
    id: str
    subscription: str
    location: str
    group: _Group
    created_at: float


# -- the emulator ----------------------------------------------------------------------------


class AciEmulator(ArmResourcesMixin, EmulatorBase):
    """An emulator of ARM's container group calls serving on `host`:`port` (a free port by
    default) from background threads, over HTTPS with a certificate of its own (`ca_bundle`
    names the CA a client trusts; written to `cert_dir`, by default a temporary directory) or
    plain HTTP with `tls=False`. Use as a context manager or with `start()`/`stop()`. State,
    plans, faults and the request log are safe to use from any thread while calls go through.

    `provision_seconds`, `run_seconds`, `exit_code`, `provision_error` and `hold` are the
    default `GroupPlan`; `resource_groups`, when given, are the only resource groups that
    exist (any case) besides those created through the API; `list_page_size` groups make a
    page of a list; `clock` gives the time states are computed from (`time.time` by default).
    `run_containers` runs each group's first container's command as a local process (in
    `workdir`, `python`/`python3` meaning `python`), stopped with SIGTERM then SIGKILL
    `stop_grace_seconds` later; it needs the real clock."""

    thread_name = "aci-emulator"
    call_field = "operation"
    fault_class = Fault
    request_class = ReceivedRequest
    unquote_control_path = True

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = True,
        cert_dir: str | os.PathLike[str] | None = None,
        provision_seconds: float = 0.05,
        run_seconds: float = 0.2,
        exit_code: int = 0,
        provision_error: str | Mapping[str, str] | None = None,
        hold: bool = False,
        resource_groups: Iterable[str] | None = None,
        list_page_size: int = 100,
        clock: Callable[[], float] = time.time,
        verbose: bool = False,
        run_containers: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        python: str = sys.executable,
        stop_grace_seconds: float = 3.0,
    ) -> None:
        check_process_options(run_containers, clock, workdir, stop_grace_seconds)
        if list_page_size < 1:
            raise ValueError(f"list_page_size must be >= 1, not {list_page_size}")
        self._initial_plan = GroupPlan(
            provision_seconds,
            run_seconds,
            exit_code,
            cast(Any, provision_error),
            hold,
        )
        self.ca_bundle: str | None = None
        self.cert_dir: Path | None = None
        self._cert_tmp: tempfile.TemporaryDirectory[str] | None = None
        context: ssl.SSLContext | None = None
        if tls:
            if cert_dir is None:
                self._cert_tmp = tempfile.TemporaryDirectory(prefix="skylane-aci-tls-")
                cert_dir = self._cert_tmp.name
            self.cert_dir = Path(cert_dir)
            hosts = list(CERTIFICATE_HOSTS)
            if host not in (*hosts, "", "0.0.0.0", "::"):
                hosts.append(host)
            ca, cert, key = write_certificates(self.cert_dir, hosts)
            self.ca_bundle = str(ca)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(cert, key)
        EmulatorBase.__init__(self, host, port, verbose=verbose, ssl_context=context)
        self._init_emulator(clock, run_containers, workdir, python, stop_grace_seconds)
        self.resource_groups = (
            None if resource_groups is None else {rg.lower() for rg in resource_groups}
        )
        self.list_page_size = list_page_size
        self._init_state()

    def _init_state(self) -> None:
        with self._lock:
            self._plan = copy.copy(self._initial_plan)
            self._group_plans: dict[str, dict[str, Any]] = {}
            self._groups: dict[tuple[str, str, str], _Group] = {}
            self._operations: dict[str, _Operation] = {}
            self._faults: list[Fault] = []
            self._requests: list[ReceivedRequest] = []
            self._arm = self._new_resources(TENANT_ID, self._drop_resource_group)

    # -- plans ----------------------------------------------------------------------------

    def configure(
        self,
        *,
        group: str | None = None,
        provision_seconds: float = _UNSET,
        run_seconds: float = _UNSET,
        exit_code: int = _UNSET,
        provision_error: str | Mapping[str, str] | None = _UNSET,
        hold: bool = _UNSET,
    ) -> None:
        """Set how groups unfold: every group by default, or (`group`) the groups of that name
        (a name, or `RG/NAME` or a resource id for one group that exists). Applies to groups
        created afterwards; an existing unfinished group named changes from now on.
        `provision_error=None` clears an error set before."""
        values = {
            name: value
            for name, value in (
                ("provision_seconds", provision_seconds),
                ("run_seconds", run_seconds),
                ("exit_code", exit_code),
                ("provision_error", provision_error),
                ("hold", hold),
            )
            if value is not _UNSET
        }
        _check_plan_values(values)
        if "provision_error" in values:
            values["provision_error"] = _provision_error(values["provision_error"])
        with self._lock:
            if group is None:
                for name, value in values.items():
                    setattr(self._plan, name, value)
            else:
                existing = self._find_groups(group)
                for found in existing:
                    self._replan(found, values)
                key = existing[0].name if existing else group.rsplit("/", 1)[-1].lower()
                self._group_plans.setdefault(key, {}).update(values)
            self._lock.notify_all()

    def plan_group(self, name: str, **values: Any) -> None:
        """`configure(group=name, **values)`."""
        self.configure(group=name, **values)

    def hold_group(self, name: str) -> None:
        """Keep the group named (existing or not yet) running until `finish_group`."""
        self.configure(group=name, hold=True)

    def fail_provisioning(
        self, name: str, message: str = "", code: str = "InaccessibleImage"
    ) -> None:
        """Make the group named (existing or not yet) fail to provision, with `code` and
        `message` (by default ACI's message for an image it cannot pull)."""
        self.configure(group=name, provision_error={"code": code, "message": message})

    def finish_group(self, name: str, exit_code: int = 0) -> dict[str, Any]:
        """End the group's container now with `exit_code` (provisioning it first if it was
        not); its process, if it runs one, is stopped. The group as `get` answers it."""
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            raise ValueError(f"exit_code must be an integer, not {exit_code!r}")
        with self._lock:
            group = self._find_group(name)
            now = self._clock()
            phase = group.phase(now)
            if group.stopped_at is not None or phase in ("exited", "provision_failed"):
                raise ValueError(f"container group {group.name} has already finished")
            if phase in ("pending", "creating"):
                group.start_at = now
                group.pull_at = min(group.pull_at, now)
            group.end_at = now
            group.exit_code = exit_code
            self._terminate(group.process)
            group.runs_container = False  # the exit code given stands, not the process's
            self._lock.notify_all()
            return self._group_view(group, now)

    def _plan_for(self, name: str) -> GroupPlan:
        values = asdict(self._plan)
        values.update(self._group_plans.get(name, {}))
        return GroupPlan(**values)

    def _replan(self, group: _Group, values: Mapping[str, Any]) -> None:
        now = self._clock()
        phase = group.phase(now)
        if group.stopped_at is not None or phase in ("exited", "provision_failed"):
            raise ValueError(f"container group {group.name} has already finished")
        pending = phase in ("pending", "creating")
        if "provision_seconds" in values and pending:
            seconds = float(values["provision_seconds"])
            group.start_at = max(now, group.created_at + seconds)
            group.pull_at = min(group.start_at, max(now, group.created_at + seconds / 2))
        if "provision_error" in values:
            if not pending:
                raise ValueError(f"container group {group.name} has already been provisioned")
            group.provision_error = self._provision_error_for(
                values["provision_error"], group.name, group.spec
            )
        if "run_seconds" in values:
            group.run_seconds = float(values["run_seconds"])
        if "exit_code" in values:
            group.exit_code = values["exit_code"]
        if group.runs_container:
            if group.process is not None and ("hold" in values or "exit_code" in values):
                raise ValueError(
                    f"container group {group.name} runs its container: stop it or use "
                    "finish_group()"
                )
            if values.get("hold") or group.provision_error is not None:
                group.runs_container = False  # held or failing from now on, without a process
            else:
                return  # its process decides when and how it ends
        if values.get("hold", False):
            group.end_at = None
        elif "hold" in values or "run_seconds" in values or group.end_at is not None:
            group.end_at = max(now, group.start_at + group.run_seconds)

    # -- faults (see EmulatorBase: add_fault, faults, remove_fault, clear_faults) ------------

    def fail_next(
        self,
        status: int,
        code: str = "",
        message: str = "",
        *,
        operation: str = "*",
        method: str = "*",
        path: str = "*",
        count: int | None = 1,
        retry_after: float | None = None,
    ) -> Fault:
        """Answer the next `count` matching calls with HTTP `status` and `code`/`message` (by
        default from the status) without doing them."""
        return self.add_fault(
            Fault(
                kind="error",
                operation=operation,
                method=method,
                path=path,
                status=status,
                code=code,
                message=message,
                count=count,
                retry_after=retry_after,
            )
        )

    def throttle(
        self, operation: str = "*", count: int | None = 1, *, retry_after: float | None = 1
    ) -> Fault:
        """429 TooManyRequests (with `Retry-After: retry_after`) to the next `count` calls."""
        return self.fail_next(429, operation=operation, count=count, retry_after=retry_after)

    def quota_reached(self, count: int | None = 1) -> Fault:
        """409 ContainerGroupQuotaReached to the next `count` creates."""
        return self.fail_next(
            409,
            "ContainerGroupQuotaReached",
            operation="containerGroups.createOrUpdate",
            count=count,
        )

    def capacity_unavailable(self, count: int | None = 1) -> Fault:
        """409 ServiceUnavailable (no capacity in the region) to the next `count` creates."""
        return self.fail_next(
            409, "ServiceUnavailable", operation="containerGroups.createOrUpdate", count=count
        )

    def internal_error(self, operation: str = "*", count: int | None = 1) -> Fault:
        """500 InternalServerError to the next `count` matching calls."""
        return self.fail_next(500, operation=operation, count=count)

    def unavailable(
        self, operation: str = "*", count: int | None = 1, *, retry_after: float | None = None
    ) -> Fault:
        """503 ServiceUnavailable to the next `count` matching calls."""
        return self.fail_next(503, operation=operation, count=count, retry_after=retry_after)

    def forbid(
        self,
        operation: str = "*",
        count: int | None = None,
        *,
        resource_group: str | None = None,
    ) -> Fault:
        """403 AuthorizationFailed to matching calls (on `resource_group` only, if given),
        naming the action the operation needs and the scope."""
        path = "*"
        if resource_group is not None:
            path = f"/subscriptions/*/resourceGroups/{resource_group}/*"
        return self.fail_next(403, operation=operation, path=path, count=count)

    def timeout_after(
        self,
        operation: str = "containerGroups.createOrUpdate",
        seconds: float = 5.0,
        *,
        count: int | None = 1,
        drop: bool = True,
    ) -> Fault:
        """Do the next `count` matching calls, then hold each answer `seconds` and drop the
        connection (`drop=False`: answer then). Pick `seconds` above the client's timeout."""
        return self.add_fault(
            Fault(kind="timeout", operation=operation, seconds=seconds, count=count, drop=drop)
        )

    def delay(self, operation: str = "*", seconds: float = 1.0, *, count: int | None = 1) -> Fault:
        """Do the next `count` matching calls and answer each `seconds` later."""
        return self.add_fault(
            Fault(kind="delay", operation=operation, seconds=seconds, count=count)
        )

    # -- request log (see EmulatorBase: clear_requests) -----------------------------------

    def requests(
        self, operation: str | None = None, method: str | None = None
    ) -> list[ReceivedRequest]:
        """The API calls received so far in arrival order, optionally of one operation/method."""
        return self._requests_of(operation, method)

    def wait_for_requests(
        self, count: int, operation: str | None = None, timeout: float = 10.0
    ) -> list[ReceivedRequest]:
        """Block until at least `count` calls (of `operation`) are logged; TimeoutError
        otherwise."""
        return self._wait_for_requests(count, operation, timeout)

    # -- state accessors ------------------------------------------------------------------

    def groups(self) -> list[dict[str, Any]]:
        """Every container group, in creation order, as `get` answers it."""
        with self._lock:
            now = self._clock()
            return [self._group_view(group, now) for group in self._groups.values()]

    def group(self, name: str) -> dict[str, Any]:
        """One group (its name, `RG/NAME` or resource id) as `get` answers it; KeyError if
        there is none, ValueError if a bare name is ambiguous."""
        with self._lock:
            return self._group_view(self._find_group(name), self._clock())

    def write_log(
        self,
        group: str,
        text: str,
        *,
        container: str | None = None,
        stream: Stream = "stdout",
    ) -> None:
        """Add a line to the logs of the group's container (its first by default), as the
        container would have written it now."""
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
        with self._lock:
            found = self._find_group(group)
            names = _container_names(found.spec)
            name = container if container is not None else names[0]
            if name not in names:
                raise KeyError(f"container {name!r} of group {found.name}")
            found.logs.append(_LogLine(self._clock(), name, stream, text))

    def _find_groups(self, name: str) -> list[_Group]:
        parts = name.strip("/").split("/")
        if len(parts) == 1:
            return [g for g in self._groups.values() if g.name == parts[0].lower()]
        if len(parts) == 2:
            rg, short = parts
        elif len(parts) == 8:
            rg, short = parts[3], parts[7]
        else:
            raise ValueError(f"name a group by NAME, RG/NAME or its resource id, not {name!r}")
        return [
            g
            for g in self._groups.values()
            if g.resource_group.lower() == rg.lower() and g.name == short.lower()
        ]

    def _find_group(self, name: str) -> _Group:
        found = self._find_groups(name)
        if not found:
            raise KeyError(name)
        if len(found) > 1:
            raise ValueError(f"container group {name!r} is ambiguous: name it RG/NAME")
        return found[0]

    # -- processes (run_containers) -------------------------------------------------------

    def _run_launcher(self) -> None:
        """Start containers when due, until stop()."""
        with self._lock:
            while not self._closing:
                now = self._clock()
                wakes = []
                for group in self._groups.values():
                    if not group.runs_container or group.process is not None:
                        continue
                    if group.start_at <= now:
                        self._launch(group, now)
                    else:
                        wakes.append(group.start_at)
                wake = min(wakes, default=None)
                # Woken early by every API call (`_record`), configure(), finish_group(),
                # each process's exit and stop().
                self._lock.wait(None if wake is None else max(0.0, wake - now))

    def _launch(self, group: _Group, now: float) -> None:
        """Start the group's first container as a process, or end it now (exit code 127)."""
        container = group.spec["properties"]["containers"][0]
        properties = container["properties"]
        command = [str(part) for part in properties.get("command") or []]
        message = ""
        if not command:
            message = (
                f"Container '{container['name']}' failed to start: the emulator runs the "
                "container's command, and it has none (an image's entrypoint cannot be run)."
            )
        else:
            env = inherited_env()
            for variable in properties.get("environmentVariables") or []:
                value = variable.get("secureValue", variable.get("value"))
                env[variable["name"]] = "" if value is None else str(value)
            process = _Process(group)
            runner = LocalContainerProcess(
                command,
                env=env,
                cwd=self.workdir,
                python=self.python,
                on_output=lambda stream, text: self._on_output(process, stream, text),
                on_exit=lambda code: self._on_exit(process, code),
                name=f"{self.thread_name}-{group.name}",
            )
            try:
                # The callbacks wait for the lock, held here: `process` is complete first.
                process.runner = runner.start()
            except OSError as exc:  # the command, or the workdir, is missing or not executable
                message = (
                    f"Container '{container['name']}' failed to start: "
                    f"{start_failure(exc, command[0])}"
                )
            else:
                group.process = process
                self._processes.append(process)
                return
        group.start_failure = message
        group.logs.append(_LogLine(now, container["name"], "stderr", message))
        group.end_at = now
        group.exit_code = START_FAILURE_EXIT_CODE
        group.runs_container = False

    def _terminate(self, process: _Process | None) -> None:
        if process is not None and process.runner is not None:
            process.runner.terminate(self.stop_grace_seconds)

    def _on_output(self, process: _Process, stream: Stream, text: str) -> None:
        with self._lock:
            group = process.group
            if not process.discarded and group.deleted_at is None:
                name = group.spec["properties"]["containers"][0]["name"]
                group.logs.append(_LogLine(self._clock(), name, stream, text))

    def _on_exit(self, process: _Process, code: int) -> None:
        # Every line is logged before the group shows as finished (the runner sees to it).
        with self._lock:
            self._processes.remove(process)
            group = process.group
            if not process.discarded:
                if group.end_at is None and group.runs_container:
                    group.end_at = self._clock()
                    group.exit_code = code
                elif group.ended_by_stop:
                    group.exit_code = code  # the code its stop made it exit with
            self._lock.notify_all()

    # -- HTTP entry point -----------------------------------------------------------------

    def _serve(self, handler: _Handler, body: bytes) -> None:
        """Answer one API call (control calls are routed before this)."""
        method, path, query = parse_call(handler)
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "authorization"}
        received_at = self._clock()
        body_json = json_or_none(body)
        operation, params = route_call(ROUTES, method, path)
        record = self._request_log(
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=logged_body(body_json, body),
            received_at=received_at,
            operation=operation,
        )

        try:
            _check_auth(handler.headers.get("Authorization"))
            _check_api_version(query)
        except ArmError as exc:
            record(exc.status, exc.to_json(), None)
            handler.reply(exc.status, exc.to_json(), exc.headers)
            return

        fault = self._decide(operation, method, path)
        if fault is not None and fault.kind == "error":
            error = ArmError(
                fault.status,
                fault.code,
                fault.message or _fault_message(fault, operation, path, params, body_json),
            )
            extra = {}
            if fault.retry_after is not None:
                extra["Retry-After"] = f"{fault.retry_after:g}"
            record(fault.status, error.to_json(), fault)
            handler.reply(fault.status, error.to_json(), extra)
            return

        base = f"{'https' if self.ssl_context else 'http'}://{handler.headers.get('Host') or ''}"
        if not handler.headers.get("Host"):
            base = self.url
        extra: dict[str, str] = {}
        try:
            if operation is None:
                raise ArmError(
                    404,
                    "NotFound",
                    f"The emulator serves no {method} {path} (Microsoft.ContainerInstance "
                    "container groups, their logs and operations, and what "
                    "skylane.testing.azure_resources lists, only).",
                )
            if_none_match = handler.headers.get("If-None-Match", "").strip()
            status, answer, extra = self._call(
                operation, params, query, body, body_json, base, if_none_match
            )
        except ArmError as exc:
            status, answer, extra = exc.status, exc.to_json(), exc.headers
        self._answer(
            handler, fault, record, status, answer, lambda: handler.reply(status, answer, extra)
        )

    def _call(
        self,
        operation: str,
        params: dict[str, str],
        query: dict[str, str],
        raw_body: bytes,
        body: Any,
        base: str,
        if_none_match: str = "",
    ) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            now = self._clock()
            if operation in RESOURCE_OPERATIONS:
                return self._arm.call(operation, params, query, raw_body, body, base)
            subscription = params["subscription"]
            if operation == "operations.get":
                op = self._operations.get(params["operation"])
                if op is None or op.subscription.lower() != subscription.lower():
                    raise ArmError(
                        404,
                        "OperationNotFound",
                        f"The operation '{params['operation']}' could not be found.",
                    )
                return 200, self._operation_view(op, now), {}
            if operation == "containerGroups.list":
                found = [
                    g
                    for g in self._groups.values()
                    if g.subscription.lower() == subscription.lower()
                ]
                return 200, self._page(found, query, base, params, now), {}
            resource_group = params["resource_group"]
            if (
                self.resource_groups is not None
                and resource_group.lower() not in self.resource_groups
                and not self._arm.has_resource_group(subscription, resource_group)
            ):
                raise ArmError(
                    404,
                    "ResourceGroupNotFound",
                    f"Resource group '{resource_group}' could not be found.",
                )
            if operation == "containerGroups.listByResourceGroup":
                found = [
                    g
                    for g in self._groups.values()
                    if g.subscription.lower() == subscription.lower()
                    and g.resource_group.lower() == resource_group.lower()
                ]
                return 200, self._page(found, query, base, params, now), {}
            name = params["name"]
            key = (subscription.lower(), resource_group.lower(), name.lower())
            if operation == "containerGroups.createOrUpdate":
                if raw_body.strip() and body is None:
                    raise _invalid_content("The request body is not valid JSON.")
                return self._create_or_update(params, key, body, query, base, now, if_none_match)
            group = self._groups.get(key)
            if operation == "containerGroups.delete":
                if group is None:
                    return 204, None, {}
                return 200, self._delete(group, now), {}
            if group is None:
                raise _group_not_found(resource_group, name)
            if operation == "containerGroups.get":
                return 200, self._group_view(group, now), {}
            if operation == "containerGroups.stop":
                self._stop_group(group, now)
                return 204, None, {}
            if operation == "containers.listLogs":
                return 200, self._logs(group, params["container"], query), {}
        raise ArmError(
            501, "NotImplemented", f"{operation} is not implemented."
        )  # pragma: no cover

    # -- API methods ----------------------------------------------------------------------

    def _create_or_update(
        self,
        params: Mapping[str, str],
        key: tuple[str, str, str],
        body: Any,
        query: Mapping[str, str],
        base: str,
        now: float,
        if_none_match: str,
    ) -> tuple[int, Any, dict[str, str]]:
        name = params["name"]
        if not GROUP_NAME.match(name):
            raise ArmError(
                400,
                "InvalidContainerGroupName",
                f"The container group name '{name}' is invalid. A container group name must "
                "contain no more than 63 characters and must match the regex "
                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?' (e.g. 'my-name').",
            )
        spec = _validate_group(name, body)
        self._arm.check_group_identities(spec.get("identity"))
        existing = self._groups.get(key)
        if existing is not None:
            if if_none_match == "*":
                raise ArmError(
                    412,
                    "PreconditionFailed",
                    f"The container group '{name}' already exists: the condition specified "
                    "using HTTP conditional header(s) is not met.",
                )
            return 200, self._group_view(existing, now), {}
        plan = self._plan_for(name)
        provision = plan.provision_seconds
        group = _Group(
            subscription=params["subscription"],
            resource_group=params["resource_group"],
            name=name,
            location=_normalize_location(spec["location"]),
            spec=spec,
            created_at=now,
            pull_at=now + provision / 2,
            start_at=now + provision,
            end_at=None if plan.hold else now + provision + plan.run_seconds,
            exit_code=plan.exit_code,
            run_seconds=plan.run_seconds,
            provision_error=self._provision_error_for(plan.provision_error, name, spec),
            runs_container=False,
        )
        group.runs_container = (
            self.run_containers and not plan.hold and group.provision_error is None
        )
        if group.runs_container:
            group.end_at = None
        self._groups[key] = group
        op = _Operation(
            id=str(uuid.uuid4()),
            subscription=group.subscription,
            location=group.location,
            group=group,
            created_at=now,
        )
        self._operations[op.id] = op
        version = quote(query.get("api-version", API_VERSION), safe="")
        async_url = (
            f"{base}/subscriptions/{group.subscription}/providers/{PROVIDER}/locations/"
            f"{group.location}/operations/{op.id}?api-version={version}"
        )
        # As ACI answers a create: Pending, whatever the plan says comes next.
        view = self._group_view(group, now, phase="pending")
        return 201, view, {"Azure-AsyncOperation": async_url}

    def _provision_error_for(
        self, error: dict[str, str] | None, name: str, spec: Mapping[str, Any]
    ) -> dict[str, str] | None:
        if error is None:
            return None
        message = error["message"]
        if not message:
            image = spec["properties"]["containers"][0]["properties"]["image"]
            message = (
                f"The image '{image}' in container group '{name}' is not accessible. Please "
                "check the image and registry credential."
            )
        return {"code": error["code"], "message": message}

    def _delete(self, group: _Group, now: float) -> dict[str, Any]:
        view = self._group_view(group, now)
        group.deleted_at = now
        self._groups.pop((group.subscription.lower(), group.resource_group.lower(), group.name))
        self._terminate(group.process)
        group.runs_container = False
        return view

    def _drop_resource_group(self, subscription: str, resource_group: str) -> None:
        """Delete the container groups of a resource group deleted through the API."""
        now = self._clock()
        where = (subscription.lower(), resource_group.lower())
        for group in list(self._groups.values()):
            if (group.subscription.lower(), group.resource_group.lower()) == where:
                self._delete(group, now)

    def _stop_group(self, group: _Group, now: float) -> None:
        phase = group.phase(now)
        if phase in ("pending", "creating"):
            raise ArmError(
                409,
                "ContainerGroupTransitioning",
                f"The container group '{group.name}' is still transitioning, please retry later.",
            )
        if group.stopped_at is not None:
            return
        group.stopped_at = now
        if phase == "running":
            group.end_at = now
            group.ended_by_stop = True
            group.exit_code = STOP_EXIT_CODE
        self._terminate(group.process)
        group.runs_container = False

    def _logs(self, group: _Group, container: str, query: Mapping[str, str]) -> dict[str, Any]:
        if container not in _container_names(group.spec):
            raise ArmError(
                404,
                "ContainerNotFound",
                f"The container '{container}' could not be found in container group "
                f"'{group.name}'.",
            )
        lines = [line for line in group.logs if line.container == container]
        tail = query.get("tail")
        if tail:
            try:
                count = int(tail)
            except ValueError:
                raise ArmError(
                    400, "InvalidParameter", f"The value '{tail}' of 'tail' is not an integer."
                ) from None
            if count < 0:
                raise ArmError(400, "InvalidParameter", "'tail' must not be negative.")
            lines = lines[-count:] if count else []
        stamped = query.get("timestamps", "").lower() == "true"
        content = "".join(
            (f"{_timestamp_ns(line.at)} " if stamped else "") + line.text + "\n" for line in lines
        )
        return {"content": content}

    def _page(
        self,
        groups: list[_Group],
        query: Mapping[str, str],
        base: str,
        params: Mapping[str, str],
        now: float,
    ) -> dict[str, Any]:
        token = query.get("$skiptoken") or query.get("$skipToken") or "0"
        try:
            offset = int(token)
        except ValueError:
            raise ArmError(
                400, "InvalidSkipToken", f"The skip token '{token}' is invalid."
            ) from None
        end = offset + self.list_page_size
        answer: dict[str, Any] = {
            "value": [self._group_view(g, now, instance_view=False) for g in groups[offset:end]]
        }
        if end < len(groups):
            path = "/subscriptions/{}".format(params["subscription"])
            if "resource_group" in params:
                path += f"/resourceGroups/{params['resource_group']}"
            version = quote(query.get("api-version", API_VERSION), safe="")
            answer["nextLink"] = (
                f"{base}{path}/providers/{GROUP_TYPE}?api-version={version}&$skiptoken={end}"
            )
        return answer

    # -- views ----------------------------------------------------------------------------

    def _operation_view(self, op: _Operation, now: float) -> dict[str, Any]:
        group = op.group
        view: dict[str, Any] = {
            "id": f"/subscriptions/{op.subscription}/providers/{PROVIDER}/locations/"
            f"{op.location}/operations/{op.id}",
            "name": op.id,
        }
        if group.deleted_at is not None and group.deleted_at < group.start_at:
            status, ended = "Canceled", group.deleted_at
            error: dict[str, str] | None = {
                "code": "Canceled",
                "message": f"The container group '{group.name}' was deleted before it was created.",
            }
        elif not group.provisioned(now if group.deleted_at is None else group.deleted_at):
            status, ended, error = "Creating", None, None
        elif group.provision_error is not None:
            status, ended, error = "Failed", group.start_at, dict(group.provision_error)
        else:
            status, ended, error = "Succeeded", group.start_at, None
        view["status"] = status
        view["startTime"] = _timestamp(op.created_at)
        if ended is not None:
            view["endTime"] = _timestamp(ended)
        if error is not None:
            view["error"] = error
        return view

    def _group_view(
        self,
        group: _Group,
        now: float,
        *,
        phase: Phase | None = None,
        instance_view: bool = True,
    ) -> dict[str, Any]:
        spec = group.spec
        phase = phase or group.phase(now)
        properties = copy.deepcopy(spec["properties"])
        properties["sku"] = properties.get("sku") or "Standard"
        properties["provisioningState"] = {
            "pending": "Pending",
            "creating": "Creating",
            "provision_failed": "Failed",
        }.get(phase, "Succeeded")
        containers = []
        for container in properties["containers"]:
            details = container["properties"]
            details.setdefault("ports", [])
            details["environmentVariables"] = [
                _public_variable(v) for v in details.get("environmentVariables") or []
            ]
            if instance_view:
                container_view = self._container_view(group, details["image"], phase, now)
                if container_view is not None:
                    details["instanceView"] = container_view
            containers.append(container)
        properties["containers"] = containers
        if "imageRegistryCredentials" in properties:
            properties["imageRegistryCredentials"] = [
                {k: v for k, v in credential.items() if k != "password"}
                for credential in properties["imageRegistryCredentials"]
            ]
        if "volumes" in properties:
            properties["volumes"] = [_public_volume(v) for v in properties["volumes"]]
        properties.setdefault("restartPolicy", "Always")
        properties.setdefault("initContainers", [])
        if instance_view:
            properties["instanceView"] = {"events": [], "state": _group_state(group, phase)}
        view: dict[str, Any] = {
            "id": group.id,
            "name": group.name,
            "type": GROUP_TYPE,
            "location": group.location,
        }
        if spec.get("tags") is not None:
            view["tags"] = dict(spec["tags"])
        if spec.get("zones"):
            view["zones"] = list(spec["zones"])
        if spec.get("identity") is not None:
            view["identity"] = _identity_view(spec["identity"], group.id)
        view["properties"] = properties
        return view

    def _container_view(
        self, group: _Group, image: str, phase: Phase, now: float
    ) -> dict[str, Any] | None:
        if phase == "pending":
            return None  # not scheduled yet
        events = [_event("Pulling", f'pulling image "{image}"', group.pull_at)]
        if phase == "creating":
            state: dict[str, Any] = {"state": "Waiting", "detailStatus": "ContainerCreating"}
            return {"restartCount": 0, "currentState": state, "events": events}
        if phase == "provision_failed":
            error = group.provision_error or {}
            events.append(_event("Failed", error.get("message", ""), group.start_at, "Warning"))
            state = {"state": "Waiting", "detailStatus": error.get("code", "")}
            return {"restartCount": 0, "currentState": state, "events": events}
        events.append(_event("Pulled", f'Successfully pulled image "{image}"', group.start_at))
        if group.start_failure:
            events.append(_event("Failed", group.start_failure, group.start_at, "Warning"))
        else:
            events.append(_event("Started", "Started container", group.start_at))
        state = {"state": "Running", "startTime": _timestamp(group.start_at), "detailStatus": ""}
        if phase == "exited" and group.end_at is not None:
            if group.ended_by_stop:
                detail = "Stopped"
                message = f"Killing container with id {uuid.uuid5(uuid.NAMESPACE_URL, group.id)}."
                events.append(_event("Killing", message, group.end_at))
            else:
                detail = "Completed" if group.exit_code == 0 else "Error"
            state = {
                "state": "Terminated",
                "startTime": _timestamp(group.start_at),
                "exitCode": group.exit_code,
                "finishTime": _timestamp(group.end_at),
                "detailStatus": detail,
            }
        return {"restartCount": 0, "currentState": state, "events": events}

    # -- control API ----------------------------------------------------------------------

    # Common routes (`requests`, `reset`, `faults`, `configure`): EmulatorBase._control.

    def _control_summary(self) -> dict[str, Any]:
        return {
            "groups": len(self._groups),
            "processes": len(self._processes),
            "operations": len(self._operations),
            "faults": len(self._faults),
            "requests": len(self._requests),
        }

    def _control_route(
        self, method: str, route: str, query: Mapping[str, str], payload: Any
    ) -> tuple[int, Any] | None:
        if route == "groups" and method == "GET":
            return 200, self.groups()
        if route.startswith("groups/") and method == "GET":
            return 200, self.group(route.removeprefix("groups/"))
        if route == "finish" and method == "POST":
            if not isinstance(payload, Mapping) or "group" not in payload:
                return 400, {"error": 'the body must be {"group": ..., "exit_code": ...}'}
            return 200, self.finish_group(payload["group"], payload.get("exit_code", 0))
        if route == "logs" and method == "POST":
            if not isinstance(payload, Mapping) or not {"group", "text"} <= set(payload):
                return 400, {"error": 'the body must be {"group": ..., "text": ...}'}
            values = dict(payload)
            self.write_log(values.pop("group"), values.pop("text"), **values)
            return 200, {"written": True}
        return None


# -- helpers ---------------------------------------------------------------------------------


def _check_auth(header: str | None) -> None:
    if not header:
        raise ArmError(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            {
                "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                f'{TENANT_ID}", error="invalid_token", error_description="The authentication '
                "failed because of missing 'Authorization' header.\""
            },
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ArmError(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
        )


def _check_api_version(query: Mapping[str, str]) -> None:
    version = query.get("api-version")
    if not version:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if not API_VERSION_FORMAT.match(version):
        raise ArmError(
            400,
            "InvalidApiVersionParameter",
            f"The api-version '{version}' is invalid. The supported versions are '{API_VERSION}'.",
        )


def _fault_message(
    fault: Fault,
    operation: str | None,
    path: str,
    params: Mapping[str, str],
    body: Any,
) -> str:
    status, code = fault.status, fault.code
    location = "the region"
    if isinstance(body, Mapping) and isinstance(body.get("location"), str):
        location = _normalize_location(body["location"])
    if code == "ContainerGroupQuotaReached":
        return (
            f"Resource type '{GROUP_TYPE}' container group quota 'StandardCores' exceeded in "
            f"region '{location}'. Limit: '10', Usage: '10', Requested: '1'."
        )
    if status == 409 and code == "ServiceUnavailable":
        cpu, memory = _requested_resources(body)
        return (
            f"The requested resource with '{cpu:g}' CPU and '{memory:g}' GB memory is not "
            f"available in the location '{location}' at this moment. Please retry with a "
            "different resource request or at another time."
        )
    if status == 403:
        action = ACTIONS.get(operation or "", f"{GROUP_TYPE}/read")
        scope = path
        if "name" in params:
            scope = (
                f"/subscriptions/{params['subscription']}/resourceGroups/"
                f"{params['resource_group']}/providers/{GROUP_TYPE}/{params['name']}"
            )
        return (
            f"The client '{CLIENT_ID}' with object id '{OBJECT_ID}' does not have authorization "
            f"to perform action '{action}' over scope '{scope}' or the scope is invalid. If "
            "access was recently granted, please refresh your credentials."
        )
    if status == 429:
        reads = ("get", "list", "listByResourceGroup", "listLogs")
        kind = "Read" if (operation or "").endswith(reads) else "Write"
        return (
            "The request is being throttled as the limit has been reached for operation type - "
            f"{kind}_ObservationWindow_00:05:00. For more information, see - "
            "https://aka.ms/AzureResourceManagerRequestThrottling"
        )
    if status == 500:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return (
            f"Encountered internal server error. Diagnostic information: timestamp '{stamp}', "
            f"subscription id '{params.get('subscription', '')}', tracking id "
            f"'{uuid.uuid4()}', request correlation id '{uuid.uuid4()}'."
        )
    if status == 503:
        return "The service is currently unavailable. Please try again later."
    return f"Error injected by the emulator ({status} {code})."


def _requested_resources(body: Any) -> tuple[float, float]:
    cpu = memory = 0.0
    try:
        for container in body["properties"]["containers"]:
            requests = container["properties"]["resources"]["requests"]
            cpu += float(requests["cpu"])
            memory += float(requests["memoryInGB"])
    except (KeyError, TypeError, ValueError):
        pass
    return (cpu or 1.0), (memory or 1.5)


def _normalize_location(location: str) -> str:
    return location.replace(" ", "").lower()


def _enum(value: Any, allowed: Sequence[str]) -> str | None:
    """`value` as the allowed spelling it matches regardless of case, or None."""
    if not isinstance(value, str):
        return None
    return next((a for a in allowed if a.lower() == value.lower()), None)


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _validate_group(name: str, body: Any) -> dict[str, Any]:
    """The container group PUT body, checked as ACI checks it; 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise _invalid_content("The request body must be a JSON object.")
    spec = copy.deepcopy(body)
    location = spec.get("location")
    if not isinstance(location, str) or not location.strip():
        raise ArmError(
            400, "LocationRequired", "The location property is required for this definition."
        )
    properties = spec.get("properties")
    if not isinstance(properties, dict):
        raise _required("properties", "")
    for key in ("provisioningState", "instanceView"):
        properties.pop(key, None)  # read-only: ignored, as ARM ignores them
    containers = properties.get("containers")
    if containers is None:
        raise _required("containers", "properties")
    if not isinstance(containers, list) or not containers:
        raise _invalid_content(
            f"Container group '{name}' must have at least one container in 'properties.containers'."
        )
    os_type = _enum(properties.get("osType"), OS_TYPES)
    if os_type is None:
        raise ArmError(
            400,
            "InvalidOsType",
            f"The 'osType' for container group '{name}' is invalid. The value must be one of "
            "'Windows,Linux'.",
        )
    properties["osType"] = os_type
    if "restartPolicy" in properties:
        policy = _enum(properties["restartPolicy"], RESTART_POLICIES)
        if policy is None:
            raise ArmError(
                400,
                "InvalidRestartPolicy",
                f"The restart policy '{properties['restartPolicy']}' of container group "
                f"'{name}' is invalid. The value must be one of 'Always,OnFailure,Never'.",
            )
        properties["restartPolicy"] = policy
    seen: set[str] = set()
    for index, container in enumerate(containers):
        _validate_container(name, index, container, seen)
    identities = _validate_identity(spec.get("identity"))
    for index, credential in enumerate(properties.get("imageRegistryCredentials") or []):
        _validate_registry_credential(index, credential, identities)
    for index, subnet in enumerate(properties.get("subnetIds") or []):
        path = f"properties.subnetIds[{index}]"
        if not isinstance(subnet, dict) or not subnet.get("id"):
            raise _required("id", path)
        if not SUBNET_ID.match(str(subnet["id"])):
            raise ArmError(
                400,
                "InvalidSubnetId",
                f"The subnet id '{subnet['id']}' in '{path}.id' is invalid: it must be a "
                "subnet's resource id, /subscriptions/.../resourceGroups/.../providers/"
                "Microsoft.Network/virtualNetworks/VNET/subnets/SUBNET.",
            )
    dns = properties.get("dnsConfig")
    if dns is not None:
        servers = dns.get("nameServers") if isinstance(dns, dict) else None
        if not servers:
            raise _required("nameServers", "properties.dnsConfig")
        if not isinstance(servers, list) or not all(isinstance(s, str) and s for s in servers):
            raise _invalid_content(
                "'properties.dnsConfig.nameServers' must be a list of addresses."
            )
    tags = spec.get("tags")
    if tags is not None and (
        not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values())
    ):
        raise _invalid_content("'tags' must be an object of string values.")
    return spec


def _validate_container(group: str, index: int, container: Any, seen: set[str]) -> None:
    path = f"properties.containers[{index}]"
    if not isinstance(container, dict):
        raise _invalid_content(f"'{path}' must be an object.")
    name = container.get("name")
    if not name:
        raise _required("name", path)
    if not isinstance(name, str) or not GROUP_NAME.match(name):
        raise ArmError(
            400,
            "InvalidContainerName",
            f"The container name '{name}' in container group '{group}' is invalid. A container "
            "name must contain no more than 63 characters and must match the regex "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?' (e.g. 'my-name').",
        )
    if name in seen:
        raise ArmError(
            400,
            "DuplicateContainerNames",
            f"The container name '{name}' is used more than once in container group '{group}'.",
        )
    seen.add(name)
    details = container.get("properties")
    if not isinstance(details, dict):
        raise _required("properties", path)
    details.pop("instanceView", None)  # read-only
    if not isinstance(details.get("image"), str) or not details["image"]:
        raise _required("image", f"{path}.properties")
    command = details.get("command")
    if command is not None and (
        not isinstance(command, list) or not all(isinstance(p, str) for p in command)
    ):
        raise _invalid_content(f"'{path}.properties.command' must be a list of strings.")
    resources = details.get("resources")
    requests = resources.get("requests") if isinstance(resources, dict) else None
    if not isinstance(requests, dict) or "cpu" not in requests or "memoryInGB" not in requests:
        raise ArmError(
            400,
            "ResourceRequestsNotSpecified",
            f"The resource requests are not specified in container '{name}' of contain group "
            f"'{group}'. Both memory and CPU requests are required since API version "
            "'2017-07-01-preview'.",
        )
    for key in ("cpu", "memoryInGB"):
        if not _positive(requests[key]):
            raise ArmError(
                400,
                "InvalidResourceRequests",
                f"The '{key}' request '{requests[key]}' in '{path}.properties.resources."
                f"requests' of container group '{group}' is invalid: it must be greater than 0.",
            )
    for kind in ("requests", "limits"):
        gpu = resources.get(kind, {}).get("gpu") if isinstance(resources.get(kind), dict) else None
        if gpu is None:
            continue
        where = f"{path}.properties.resources.{kind}.gpu"
        if not isinstance(gpu, dict):
            raise _invalid_content(f"'{where}' must be an object.")
        count = gpu.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ArmError(
                400,
                "InvalidResourceRequests",
                f"The GPU count '{count}' in '{where}.count' is invalid: it must be at least 1.",
            )
        sku = _enum(gpu.get("sku"), GPU_SKUS)
        if sku is None:
            raise ArmError(
                400,
                "InvalidResourceRequests",
                f"The GPU sku '{gpu.get('sku')}' in '{where}.sku' is invalid. The value must be "
                f"one of '{','.join(GPU_SKUS)}'.",
            )
        gpu["sku"] = sku
    for position, variable in enumerate(details.get("environmentVariables") or []):
        where = f"{path}.properties.environmentVariables[{position}]"
        if not isinstance(variable, dict) or not variable.get("name"):
            raise _required("name", where)
        if "value" in variable and "secureValue" in variable:
            raise ArmError(
                400,
                "InvalidEnvironmentVariable",
                f"The environment variable '{variable['name']}' in '{where}' of container "
                f"'{name}' has both 'value' and 'secureValue': it must have one of them.",
            )
        for key in ("value", "secureValue"):
            if key in variable and not isinstance(variable[key], str):
                raise _invalid_content(f"'{where}.{key}' must be a string.")


def _validate_identity(identity: Any) -> set[str]:
    """The user-assigned identity ids of the group (lowercased); 400 if `identity` is wrong."""
    if identity is None:
        return set()
    if not isinstance(identity, dict):
        raise _invalid_content("'identity' must be an object.")
    kind = _enum(identity.get("type"), IDENTITY_TYPES)
    if kind is None:
        raise ArmError(
            400,
            "InvalidIdentity",
            f"The identity type '{identity.get('type')}' in 'identity.type' is invalid. The "
            f"value must be one of '{', '.join(IDENTITY_TYPES)}'.",
        )
    identity["type"] = kind
    assigned = identity.get("userAssignedIdentities")
    if "UserAssigned" in kind:
        if not isinstance(assigned, dict) or not assigned:
            raise ArmError(
                400,
                "InvalidIdentity",
                "The identity type 'UserAssigned' needs at least one identity in "
                "'identity.userAssignedIdentities'.",
            )
        for resource_id in assigned:
            if not USER_IDENTITY_ID.match(resource_id):
                raise ArmError(
                    400,
                    "InvalidIdentity",
                    f"The user-assigned identity '{resource_id}' in "
                    "'identity.userAssignedIdentities' is not a resource id of the form "
                    "/subscriptions/.../resourceGroups/.../providers/Microsoft.ManagedIdentity/"
                    "userAssignedIdentities/NAME.",
                )
        return {resource_id.lower() for resource_id in assigned}
    if assigned:
        raise ArmError(
            400,
            "InvalidIdentity",
            f"'identity.userAssignedIdentities' is only allowed with a 'UserAssigned' type, not "
            f"'{kind}'.",
        )
    return set()


def _validate_registry_credential(index: int, credential: Any, identities: set[str]) -> None:
    path = f"properties.imageRegistryCredentials[{index}]"
    if not isinstance(credential, dict) or not credential.get("server"):
        raise _required("server", path)
    server = credential["server"]
    if credential.get("identity"):
        if str(credential["identity"]).lower() not in identities:
            raise ArmError(
                400,
                "InvalidImageRegistryCredential",
                f"The identity '{credential['identity']}' in '{path}.identity' for server "
                f"'{server}' is not one of the container group's user-assigned identities.",
            )
        return
    if not credential.get("username") or not credential.get("password"):
        missing = "username" if not credential.get("username") else "password"
        raise ArmError(
            400,
            "InvalidImageRegistryCredential",
            f"The image registry credential for server '{server}' in '{path}' has no "
            f"'{missing}': it needs 'username' and 'password', or 'identity'.",
        )


def _container_names(spec: Mapping[str, Any]) -> list[str]:
    return [c["name"] for c in spec["properties"]["containers"]]


def _public_variable(variable: Mapping[str, Any]) -> dict[str, Any]:
    """An env var as ARM returns it: a secure value never comes back."""
    if "secureValue" in variable:
        return {"name": variable["name"]}
    return dict(variable)


def _public_volume(volume: Any) -> Any:
    """A volume as ARM returns it: without storage keys or secret contents."""
    if not isinstance(volume, dict):
        return volume
    volume = dict(volume)
    if isinstance(volume.get("azureFile"), dict):
        volume["azureFile"] = {
            k: v for k, v in volume["azureFile"].items() if k != "storageAccountKey"
        }
    if "secret" in volume:
        volume["secret"] = {}
    return volume


def _identity_view(identity: Mapping[str, Any], group_id: str) -> dict[str, Any]:
    view: dict[str, Any] = {}
    kind = identity.get("type", "None")
    if "SystemAssigned" in kind:
        view["principalId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"system:{group_id}"))
        view["tenantId"] = TENANT_ID
    view["type"] = kind
    if "UserAssigned" in kind:
        view["userAssignedIdentities"] = {
            resource_id: {
                "principalId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"principal:{resource_id}")),
                "clientId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"client:{resource_id}")),
            }
            for resource_id in identity.get("userAssignedIdentities") or {}
        }
    return view


def _group_state(group: _Group, phase: Phase) -> str:
    if group.stopped_at is not None and phase not in ("pending", "creating"):
        return "Stopped"
    if phase == "running":
        return "Running"
    if phase == "provision_failed":
        return "Failed"
    if phase == "exited":
        return "Succeeded" if group.exit_code == 0 else "Failed"
    return "Pending"


def _event(name: str, message: str, at: float, kind: str = "Normal") -> dict[str, Any]:
    stamp = _timestamp(at)
    return {
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "name": name,
        "message": message,
        "type": kind,
    }


def _timestamp_ns(at: float) -> str:
    """RFC 3339 with nanoseconds, as ACI prefixes log lines."""
    nanoseconds = round(at * 1_000_000_000)
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


# -- TLS -------------------------------------------------------------------------------------


def write_certificates(
    directory: str | os.PathLike[str],
    hosts: Sequence[str] = CERTIFICATE_HOSTS,
    days: float = 1,
) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signs for `hosts` (IP addresses or DNS
    names), valid `days`, written to `directory` as `ca.pem`, `server.pem` and `server-key.pem`
    (EC P-256); their paths. A client trusts `ca.pem` (`connection_verify=`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skylane ACI emulator CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path, cert_path, key_path = (
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server-key.pem",
    )
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    cert_path.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    key_bytes = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key_bytes)
    return ca_path, cert_path, key_path


# -- the HTTP side ---------------------------------------------------------------------------


class _Handler(EmulatorHandler):
    # `resourceGroups.checkExistence`; its answer has no body.
    do_HEAD = EmulatorHandler.do_GET

    def reply(self, status: int, answer: Any, headers: Mapping[str, str] | None = None) -> None:
        if self.command == "HEAD":
            answer = None
        payload = b"" if answer is None else json.dumps(answer).encode()
        sent: list[tuple[str, str]] = []
        if answer is not None:
            sent.append(("Content-Type", "application/json; charset=utf-8"))
        sent.append(("Content-Length", str(len(payload))))
        request_id = str(uuid.uuid4())
        sent.append(("x-ms-request-id", request_id))
        sent.append(("x-ms-correlation-request-id", request_id))
        client_request_id = self.headers.get("x-ms-client-request-id")
        if client_request_id:
            sent.append(("x-ms-client-request-id", client_request_id))
        sent.extend((headers or {}).items())
        self.send(status, payload, sent)


# The handler is defined after the service that names it.
AciEmulator.handler_class = _Handler


# -- standalone ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skylane.testing.azure",
        description="Azure Resource Manager emulator for Azure Container Instances container "
        "groups. Prints its URL (and its CA bundle's path, with TLS), then serves until "
        "interrupted; control it under /emulator/.",
    )
    add_address_arguments(parser)
    parser.add_argument("--no-tls", action="store_true", help="serve plain HTTP")
    parser.add_argument(
        "--cert-dir", default=None, metavar="DIR", help="where to write the CA and certificate"
    )
    parser.add_argument("--provision-seconds", type=float, default=1.0, help="PUT -> running")
    parser.add_argument("--run-seconds", type=float, default=5.0, help="running -> exited")
    add_process_arguments(parser, "each group's first container's command as a local process")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    emulator = AciEmulator(
        host=args.host,
        port=args.port,
        tls=not args.no_tls,
        cert_dir=args.cert_dir,
        provision_seconds=args.provision_seconds,
        run_seconds=args.run_seconds,
        verbose=args.verbose,
        run_containers=args.run_containers,
        workdir=args.workdir,
    )
    return serve_until_signalled(
        emulator, details=lambda: [emulator.ca_bundle] if emulator.ca_bundle else []
    )


if __name__ == "__main__":
    sys.exit(main())

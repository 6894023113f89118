"""The Google Cloud platform APIs that provisioning a `cloud-run:push` pool calls, served by the
same `skylane.testing.gcp.CloudRunEmulator` (one URL for the REST ones, one gRPC target for
IAM), in the shapes the official clients parse:

- Service Usage v1 (`google-cloud-service-usage`, REST): `GET /v1/projects/{p}/services/{svc}`
  (`state` ENABLED or DISABLED), `POST .../services/{svc}:enable` and `:disable` (long-running
  operations, `GET /v1/operations/{id}`);
- Artifact Registry v1 (`google-cloud-artifact-registry`, REST): `POST /v1/projects/{p}/
  locations/{l}/repositories?repositoryId=R` (an operation), `GET` (one, or the list),
  `PATCH ...?updateMask=` and `DELETE` (an operation) of `.../repositories/{r}`, `GET
  .../locations/{l}/operations/{id}`: format, description, labels and `cleanupPolicies`
  (checked as the API checks them), 409 ALREADY_EXISTS for a second create, 404 NOT_FOUND;
- Resource Manager v3 (`google-cloud-resource-manager`, REST): `POST /v3/projects/{p}:
  getIamPolicy` and `:setIamPolicy`. A project's policy starts with one binding, roles/owner
  for user:owner@example.com; each write gets a new etag, and a write carrying another etag is
  409 ABORTED ("There were concurrent policy changes..."), as Google answers;
- IAM Admin v1 (`google-cloud-iam`, gRPC only): a `grpc.server` on the emulator's host, port
  chosen by the OS (`emulator.iam_target`, "127.0.0.1:PORT", for an insecure channel), serving
  `google.iam.admin.v1.IAM` CreateServiceAccount, GetServiceAccount, ListServiceAccounts,
  DeleteServiceAccount, and GetIamPolicy / SetIamPolicy of a service account. Account ids are
  6 to 30 lowercase letters, digits and hyphens, starting with a letter and not ending with a
  hyphen (else INVALID_ARGUMENT); the email is `{id}@{project}.iam.gserviceaccount.com`, with
  a 21-digit uniqueId; a second account of one id is ALREADY_EXISTS. A service account resource
  accepts only IAM roles (`roles/iam.*`, the basic roles, custom roles), as Google's does.

Policies (projects and service accounts alike): members are `user:`, `serviceAccount:`,
`group:`, `domain:`, `principal://`, `principalSet://` or `deleted:...?uid=` forms (allUsers on
a service account only); a binding left without members disappears; a `serviceAccount:` member
of a project whose service accounts the emulator knows (one was ever created there) must exist
("Service account X does not exist.", 400). Deleting a service account turns its members into
`deleted:serviceAccount:EMAIL?uid=ID` wherever they are bound, as IAM shows them.

Only enabled APIs answer, as in Google: a call to Artifact Registry, IAM or Cloud Run on a
project where that API is disabled is 403 PERMISSION_DENIED with a `google.rpc.ErrorInfo` of
reason SERVICE_DISABLED (metadata `service`, `consumer`). By default every API is enabled in
every project, so nothing changes for callers of Cloud Run alone; `platform_apis_enabled=False`
starts every project with no API enabled, and `disabled_apis={"p": ["iam.googleapis.com"]}`
disables some. An API enabled through Service Usage answers at once, or after
`api_propagation_seconds` (Google warns it may take minutes: calls in between are refused as
SERVICE_DISABLED while GetService already says ENABLED). Cloud Run refuses a job whose
`serviceAccount` is `X@P.iam.gserviceaccount.com` when the emulator knows P's service accounts
and X is not one of them ("Service account ... does not exist.", 400).

Operations are done once `operation_seconds` (the emulator's) have passed; their effect is
immediate. Faults (`fail_next`, `throttle`, `timeout_after`, `delay`...) name these calls by
their method (`rpc`): GetService, EnableService, DisableService, GetOperation, CreateRepository,
GetRepository, ListRepositories, UpdateRepository, DeleteRepository, GetIamPolicy, SetIamPolicy,
CreateServiceAccount, GetServiceAccount, ListServiceAccounts, DeleteServiceAccount. gRPC calls
are logged and matched under the method and path their REST form has (`POST
/v1/projects/{p}/serviceAccounts`, `POST /v1/projects/{p}/serviceAccounts/{email}:setIamPolicy`,
...), and an error fault is answered with the gRPC code of its status (429 RESOURCE_EXHAUSTED,
403 PERMISSION_DENIED...) and the same ErrorInfo; a "timeout" fault holds the answer, then
fails the call UNAVAILABLE. A 403 fault names the permission, as Google does.

Test accessors: `enabled_services(p)`, `service_enabled(p, svc)`, `enable_service`,
`disable_service`, `repositories()`, `repository(name)`, `add_repository(...)`,
`service_accounts(project=None)`, `service_account(email)`, `add_service_account(p, id)`,
`project_policy(p)`, `set_project_policy(p, bindings)`, `service_account_policy(email)`; the
control API's `GET /emulator/platform` shows all of it.

grpc and the Google client libraries (for the IAM server's messages) are imported when the
emulator starts; without them the REST APIs are served and `iam_target` says why there is none.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from skylane.testing.emulator_base import (
    EmulatorBase,
    EmulatorHandler,
    FaultBase,
    logged_body,
    parse_call,
    route_call,
    timestamp,
)
from skylane.testing.local_http import json_or_none

RUN_API = "run.googleapis.com"
ARTIFACT_REGISTRY_API = "artifactregistry.googleapis.com"
IAM_API = "iam.googleapis.com"
SERVICE_USAGE_API = "serviceusage.googleapis.com"
RESOURCE_MANAGER_API = "cloudresourcemanager.googleapis.com"
# The titles Google's SERVICE_DISABLED messages use; also the services `enabled_services`
# lists for a project where every API is enabled by default.
API_TITLES: dict[str, str] = {
    RUN_API: "Cloud Run Admin API",
    ARTIFACT_REGISTRY_API: "Artifact Registry API",
    IAM_API: "Identity and Access Management (IAM) API",
    SERVICE_USAGE_API: "Service Usage API",
    RESOURCE_MANAGER_API: "Cloud Resource Manager API",
    "logging.googleapis.com": "Cloud Logging API",
}

# Canonical error statuses by HTTP code (google.rpc.Code over HTTP, as Google APIs map them).
STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
PLATFORM_DEFAULT_MESSAGES: dict[int, str] = {
    403: "The caller does not have permission",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
    504: "The request timed out.",
}
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
SU_OPERATION_METADATA = "type.googleapis.com/google.api.serviceusage.v1.OperationMetadata"
ENABLE_RESPONSE = "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse"
DISABLE_RESPONSE = "type.googleapis.com/google.api.serviceusage.v1.DisableServiceResponse"
AR_OPERATION_METADATA = "type.googleapis.com/google.devtools.artifactregistry.v1.OperationMetadata"
REPOSITORY_TYPE = "type.googleapis.com/google.devtools.artifactregistry.v1.Repository"
EMPTY_TYPE = "type.googleapis.com/google.protobuf.Empty"
IAM_SERVICE = "google.iam.admin.v1.IAM"
OWNER_MEMBER = "user:owner@example.com"
CONCURRENT_CHANGE = (
    "There were concurrent policy changes. Please retry the whole read-modify-write with "
    "exponential backoff."
)

_V1_PROJECT = r"^/v1/projects/(?P<project>[^/:]+)"
_AR_PARENT = _V1_PROJECT + r"/locations/(?P<location>[^/:]+)"
PLATFORM_ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    # Service Usage v1
    (re.compile(_V1_PROJECT + r"/services/(?P<service>[^/:]+)$"), {"GET": "GetService"}),
    (re.compile(_V1_PROJECT + r"/services/(?P<service>[^/:]+):enable$"), {"POST": "EnableService"}),
    (
        re.compile(_V1_PROJECT + r"/services/(?P<service>[^/:]+):disable$"),
        {"POST": "DisableService"},
    ),
    (re.compile(r"^/v1/(?P<su_operation>operations/[^/]+)$"), {"GET": "GetOperation"}),
    # Artifact Registry v1
    (
        re.compile(_AR_PARENT + r"/repositories$"),
        {"POST": "CreateRepository", "GET": "ListRepositories"},
    ),
    (
        re.compile(_AR_PARENT + r"/repositories/(?P<repository>[^/:]+)$"),
        {"GET": "GetRepository", "PATCH": "UpdateRepository", "DELETE": "DeleteRepository"},
    ),
    (re.compile(_AR_PARENT + r"/operations/(?P<operation>[^/:]+)$"), {"GET": "GetOperation"}),
    # Resource Manager v3
    (re.compile(r"^/v3/projects/(?P<project>[^/:]+):getIamPolicy$"), {"POST": "GetIamPolicy"}),
    (re.compile(r"^/v3/projects/(?P<project>[^/:]+):setIamPolicy$"), {"POST": "SetIamPolicy"}),
]
# The calls that change something (reads are all the others).
MUTATING_RPCS: frozenset[str] = frozenset(
    {
        "EnableService",
        "DisableService",
        "CreateRepository",
        "UpdateRepository",
        "DeleteRepository",
        "SetIamPolicy",
        "CreateServiceAccount",
        "DeleteServiceAccount",
        "CreateJob",
        "DeleteJob",
        "RunJob",
        "CancelExecution",
        "DeleteExecution",
    }
)
# The gRPC methods served, and their REST form (method, path template) for logs and faults.
GRPC_METHODS: dict[str, tuple[str, str]] = {
    "CreateServiceAccount": ("POST", "/v1/{name}/serviceAccounts"),
    "GetServiceAccount": ("GET", "/v1/{name}"),
    "ListServiceAccounts": ("GET", "/v1/{name}/serviceAccounts"),
    "DeleteServiceAccount": ("DELETE", "/v1/{name}"),
    "GetIamPolicy": ("POST", "/v1/{resource}:getIamPolicy"),
    "SetIamPolicy": ("POST", "/v1/{resource}:setIamPolicy"),
}

ACCOUNT_ID = re.compile(r"^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$")
REPOSITORY_ID = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
LOCATION = re.compile(r"^[a-z]+(?:-[a-z]+[0-9]+)?$")
SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.googleapis\.com$")
ACCOUNT_EMAIL = re.compile(r"^(?P<id>[^@\s]+)@(?P<project>[a-z0-9-]+)\.iam\.gserviceaccount\.com$")
_EMAIL = r"[^@\s:?]+@[^@\s:?]+"
MEMBER = re.compile(
    rf"^(?:(?:user|serviceAccount|group):{_EMAIL}|domain:[a-z0-9.-]+"
    rf"|deleted:(?:user|serviceAccount|group):{_EMAIL}\?uid=\d+"
    r"|principal(?:Set)?://\S+)$"
)
PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
ROLE = re.compile(
    r"^(?:roles/[A-Za-z0-9_.]+|(?:projects|organizations)/[^/]+/roles/[A-Za-z0-9_.]+)$"
)
# The roles a service account resource accepts (as Google's does: no run.developer on it).
ACCOUNT_ROLE = re.compile(
    r"^(?:roles/iam\.[A-Za-z0-9_.]+|roles/(?:owner|editor|viewer)"
    r"|(?:projects|organizations)/[^/]+/roles/[A-Za-z0-9_.]+)$"
)
# Enums by number: the REST clients send them so (`$alt=json;enum-encoding=int`).
FORMATS = {1: "DOCKER", 2: "MAVEN", 3: "NPM", 5: "APT", 6: "YUM", 8: "PYTHON", 9: "KFP"}
FORMATS.update({10: "GO", 11: "GENERIC", 12: "RUBY"})
REPOSITORY_FORMATS = frozenset(FORMATS.values())
MODES = {1: "STANDARD_REPOSITORY", 2: "VIRTUAL_REPOSITORY", 3: "REMOTE_REPOSITORY"}
ACTIONS = {1: "DELETE", 2: "KEEP"}
TAG_STATE_NAMES = {1: "TAGGED", 2: "UNTAGGED", 3: "ANY"}
TAG_STATES = frozenset(TAG_STATE_NAMES.values())
MAX_CLEANUP_POLICIES = 10
MAX_LABELS = 64
MAX_DISPLAY_NAME = 100
MAX_DESCRIPTION = 256
# The Repository fields a create may set, and those an update may change.
_REPOSITORY_INPUT = (
    "format",
    "description",
    "labels",
    "cleanupPolicies",
    "cleanupPolicyDryRun",
    "mode",
    "dockerConfig",
)
_REPOSITORY_UPDATABLE = ("description", "labels", "cleanupPolicies", "cleanupPolicyDryRun")


class ApiError(Exception):
    """An error answered the way Google APIs answer them over REST (and, mapped to its gRPC
    code, over gRPC)."""

    def __init__(
        self,
        code: int,
        message: str,
        status: str | None = None,
        details: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")
        self.details = [dict(d) for d in details]

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def project_number(project: str) -> str:
    """The project number the emulator gives `project` (a number stands for itself)."""
    if project.isdigit():
        return project
    digest = int(hashlib.sha256(project.encode()).hexdigest(), 16)
    return str(100_000_000_000 + digest % 900_000_000_000)


def _error_info(reason: str, domain: str, metadata: Mapping[str, str]) -> dict[str, Any]:
    return {"@type": ERROR_INFO_TYPE, "reason": reason, "domain": domain, "metadata": metadata}


def service_disabled(project: str, service: str) -> ApiError:
    """What Google answers a call to an API that is not enabled in `project`."""
    number = project_number(project)
    title = API_TITLES.get(service, service)
    url = f"https://console.developers.google.com/apis/api/{service}/overview?project={number}"
    message = (
        f"{title} has not been used in project {number} before or it is disabled. Enable it by "
        f"visiting {url} then retry. If you enabled this API recently, wait a few minutes for "
        "the action to propagate to our systems and retry."
    )
    metadata = {
        "service": service,
        "consumer": f"projects/{number}",
        "activationUrl": url,
        "serviceTitle": title,
        "containerInfo": number,
    }
    return ApiError(
        403,
        message,
        "PERMISSION_DENIED",
        [_error_info("SERVICE_DISABLED", "googleapis.com", metadata)],
    )


def _not_found(name: str) -> ApiError:
    return ApiError(404, f"Resource '{name}' was not found")


def _new_etag() -> str:
    return base64.b64encode(uuid.uuid4().bytes[:8]).decode()


def _etag_bytes(etag: str) -> bytes:
    """An etag's bytes (JSON carries them base64-encoded, padded or not, either alphabet)."""
    padded = etag + "=" * (-len(etag) % 4)
    try:
        if "-" in etag or "_" in etag:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"Invalid etag '{etag}'.") from None


def _label_text(text: Any, *, key: bool) -> bool:
    if not isinstance(text, str) or len(text) > 63 or (key and not text):
        return False
    if key and not (text[0].isalpha() and text[0] == text[0].lower()):
        return False
    return all(c in "_-" or c.isdigit() or (c.isalpha() and c == c.lower()) for c in text)


def _check_labels(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise ApiError(400, f"labels must be a map of at most {MAX_LABELS} entries.")
    for key, value in labels.items():
        if not _label_text(key, key=True) or not _label_text(value, key=False):
            raise ApiError(
                400,
                f"Invalid label {key!r}: {value!r}: keys and values are at most 63 lowercase "
                "letters, digits, underscores and dashes; keys start with a letter.",
            )
    return dict(labels)


def _enum(value: Any, names: Mapping[int, str]) -> Any:
    """An enum field as its name, whether it came as a number or a name."""
    return names.get(value, value) if isinstance(value, int) else value


def _check_cleanup_policies(policies: Any) -> dict[str, Any]:
    if policies is None:
        return {}
    if not isinstance(policies, dict) or len(policies) > MAX_CLEANUP_POLICIES:
        raise ApiError(400, f"cleanupPolicies: at most {MAX_CLEANUP_POLICIES} policies.")
    checked = {}
    for key, policy in policies.items():
        where = f"cleanupPolicies[{key!r}]"
        if not isinstance(policy, dict):
            raise ApiError(400, f"{where} must be a CleanupPolicy.")
        policy = copy.deepcopy(policy)
        if policy.get("id", key) != key:
            raise ApiError(400, f"{where}.id must be {key!r}, the key of the policy.")
        policy["id"] = key
        policy["action"] = _enum(policy.get("action"), ACTIONS)
        if policy["action"] not in ("DELETE", "KEEP"):
            raise ApiError(400, f"{where}.action must be DELETE or KEEP.")
        condition, recent = policy.get("condition"), policy.get("mostRecentVersions")
        if (condition is None) == (recent is None):
            raise ApiError(400, f"{where}: set exactly one of condition and mostRecentVersions.")
        if recent is not None and policy["action"] != "KEEP":
            raise ApiError(400, f"{where}: mostRecentVersions may only be used with KEEP.")
        if condition is not None:
            if not isinstance(condition, dict):
                raise ApiError(400, f"{where}.condition must be a CleanupPolicyCondition.")
            if "tagState" in condition:
                condition["tagState"] = _enum(condition["tagState"], TAG_STATE_NAMES)
            if "tagState" in condition and condition["tagState"] not in TAG_STATES:
                raise ApiError(
                    400, f"{where}.condition.tagState must be one of {sorted(TAG_STATES)}."
                )
            for name in ("olderThan", "newerThan"):
                if name in condition:
                    _duration(condition[name], f"{where}.condition.{name}")
        checked[key] = policy
    return checked


def _duration(value: Any, what: str) -> float:
    text = str(value)
    try:
        seconds = float(text.removesuffix("s")) if text.endswith("s") else -1.0
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise ApiError(400, f"Invalid {what} '{text}': a duration such as '86400s' is required.")
    return seconds


def _resource_of(path: str, query: Mapping[str, str]) -> str:
    """The resource a REST-form call is about, for permission messages."""
    resource = re.sub(r"^/v\d+/", "", path).rsplit(":", 1)[0]
    if query.get("repositoryId"):
        resource = f"{resource}/{query['repositoryId']}"
    return resource


def _permission(rpc: str | None, path: str) -> str | None:
    """The IAM permission a call needs (for the messages of 403 faults)."""
    if path.startswith("/v3/"):
        return {
            "GetIamPolicy": "resourcemanager.projects.getIamPolicy",
            "SetIamPolicy": "resourcemanager.projects.setIamPolicy",
        }.get(rpc or "")
    if "/serviceAccounts" in path:
        return {
            "CreateServiceAccount": "iam.serviceAccounts.create",
            "GetServiceAccount": "iam.serviceAccounts.get",
            "ListServiceAccounts": "iam.serviceAccounts.list",
            "DeleteServiceAccount": "iam.serviceAccounts.delete",
            "GetIamPolicy": "iam.serviceAccounts.getIamPolicy",
            "SetIamPolicy": "iam.serviceAccounts.setIamPolicy",
        }.get(rpc or "")
    if "/repositories" in path or "/locations/" in path:
        return {
            "CreateRepository": "artifactregistry.repositories.create",
            "GetRepository": "artifactregistry.repositories.get",
            "ListRepositories": "artifactregistry.repositories.list",
            "UpdateRepository": "artifactregistry.repositories.update",
            "DeleteRepository": "artifactregistry.repositories.delete",
            "GetOperation": "artifactregistry.repositories.get",
        }.get(rpc or "")
    return {
        "GetService": "serviceusage.services.get",
        "EnableService": "serviceusage.services.enable",
        "DisableService": "serviceusage.services.disable",
        "GetOperation": "serviceusage.operations.get",
    }.get(rpc or "")


def _api_of(path: str) -> str:
    if path.startswith("/v3/"):
        return RESOURCE_MANAGER_API
    if "/serviceAccounts" in path:
        return IAM_API
    if "/locations/" in path:
        return ARTIFACT_REGISTRY_API
    return SERVICE_USAGE_API


def fault_error(fault: FaultBase, rpc: str | None, path: str, query: Mapping[str, str]) -> ApiError:
    """The error an "error" fault answers a platform call with: for a 403 the permission
    missing, for a 429 the quota, each with Google's ErrorInfo."""
    code = int(getattr(fault, "code", 503))
    status = str(getattr(fault, "status", "") or STATUS_NAMES.get(code, "UNKNOWN"))
    message = str(getattr(fault, "message", "") or "")
    details: list[dict[str, Any]] = []
    permission = _permission(rpc, path)
    if code == 403 and permission:
        resource = _resource_of(path, query)
        message = message or (
            f"Permission '{permission}' denied on resource '{resource}' (or it may not exist)."
        )
        details.append(
            _error_info("IAM_PERMISSION_DENIED", "iam.googleapis.com", {"permission": permission})
        )
    elif code == 429:
        api = _api_of(path)
        message = message or (
            f"Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' of "
            f"service '{api}'."
        )
        details.append(_error_info("RATE_LIMIT_EXCEEDED", "googleapis.com", {"service": api}))
    return ApiError(
        code,
        message or PLATFORM_DEFAULT_MESSAGES.get(code, f"Error injected by the emulator ({code})."),
        status,
        details,
    )


# -- state records -------------------------------------------------------------------------


@dataclass
class _ApiState:
    enabled: bool
    # When an enabled API starts answering (Google's propagation delay).
    effective_at: float = 0.0


@dataclass
class _PlatformOperation:
    name: str
    done_at: float
    metadata: dict[str, Any]
    response: dict[str, Any]


@dataclass
class _ServiceAccount:
    project: str
    account_id: str
    email: str
    unique_id: str
    display_name: str
    description: str
    etag: str
    disabled: bool = False

    @property
    def name(self) -> str:
        return f"projects/{self.project}/serviceAccounts/{self.email}"

    def view(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "name": self.name,
            "projectId": self.project,
            "uniqueId": self.unique_id,
            "email": self.email,
            "etag": self.etag,
            "oauth2ClientId": self.unique_id,
        }
        if self.display_name:
            found["displayName"] = self.display_name
        if self.description:
            found["description"] = self.description
        if self.disabled:
            found["disabled"] = True
        return found


# -- the emulator side ---------------------------------------------------------------------


class GooglePlatformEmulator(EmulatorBase):
    """An emulator that serves, besides its own API, the platform APIs of the module docstring
    (`CloudRunEmulator` is one). A subclass calls `_init_platform_options` in its `__init__`
    (before its state), `_init_platform_state` from `_init_state`, `_serve_platform` for the
    calls its own routes do not know, `_require_api` before serving its own calls, and
    `_platform_control` from `_control_route`. It needs `operation_seconds`."""

    operation_seconds: float

    def _init_platform_options(
        self,
        *,
        apis_enabled: bool = True,
        disabled_apis: Mapping[str, Iterable[str]] | None = None,
        api_propagation_seconds: float = 0.0,
    ) -> None:
        if api_propagation_seconds < 0:
            raise ValueError("api_propagation_seconds must be >= 0")
        self.platform_apis_enabled = bool(apis_enabled)
        self.api_propagation_seconds = float(api_propagation_seconds)
        self._initial_disabled_apis = {
            project: (services,) if isinstance(services, str) else tuple(services)
            for project, services in (disabled_apis or {}).items()
        }
        self._iam_server: Any = None
        self._iam_executor: Any = None
        self._iam_port: int | None = None
        self._iam_unavailable = ""

    def _init_platform_state(self) -> None:
        self._apis: dict[str, dict[str, _ApiState]] = {}
        for project, services in self._initial_disabled_apis.items():
            for service in services:
                self._apis.setdefault(project, {})[service] = _ApiState(False)
        self._platform_operations: dict[str, _PlatformOperation] = {}
        self._repositories: dict[str, dict[str, Any]] = {}
        self._project_policies: dict[str, dict[str, Any]] = {}
        self._accounts: dict[str, _ServiceAccount] = {}
        self._account_policies: dict[str, dict[str, Any]] = {}
        # Projects whose service accounts the emulator knows (one was created there).
        self._account_projects: set[str] = set()

    # -- lifecycle: the IAM gRPC server lives as long as the HTTP one ------------------------

    def start(self) -> Self:
        EmulatorBase.start(self)
        self._start_iam_server()
        return self

    def stop(self) -> None:
        EmulatorBase.stop(self)  # wakes held answers first
        self._stop_iam_server()

    @property
    def iam_target(self) -> str:
        """The IAM Admin gRPC server's "host:port", for `grpc.insecure_channel`."""
        if self._iam_port is None:
            why = self._iam_unavailable or "the emulator is not started"
            raise RuntimeError(f"no IAM gRPC server: {why}")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"{host}:{self._iam_port}"

    def _start_iam_server(self) -> None:
        if self._iam_server is not None:
            return
        try:
            from concurrent import futures

            import grpc

            handlers = self._iam_handlers()
        except ImportError as exc:  # pragma: no cover - depends on the install
            self._iam_unavailable = f"grpc or google-cloud-iam is not installed ({exc})"
            return
        executor = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="iam-emulator")
        server = grpc.server(executor)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(IAM_SERVICE, handlers),)
        )
        self._iam_port = server.add_insecure_port(f"{self.host}:0")
        server.start()
        self._iam_server, self._iam_executor = server, executor

    def _stop_iam_server(self) -> None:
        server, self._iam_server = self._iam_server, None
        if server is None:
            return
        server.stop(grace=0).wait(5)
        self._iam_executor.shutdown(wait=False, cancel_futures=True)
        self._iam_executor = None
        self._iam_port = None

    # -- test accessors ------------------------------------------------------------------

    def service_enabled(self, project: str, service: str) -> bool:
        """Whether `service` is enabled in `project` (as GetService says)."""
        with self._lock:
            return self._api_state(project, service).enabled

    def enabled_services(self, project: str) -> list[str]:
        """The services enabled in `project`: those enabled through Service Usage (or by
        `enable_service`), and, when every API is enabled by default, the known ones
        (`API_TITLES`) not disabled."""
        with self._lock:
            known = set(self._apis.get(project, {}))
            if self.platform_apis_enabled:
                known |= set(API_TITLES)
            return sorted(s for s in known if self._api_state(project, s).enabled)

    def enable_service(self, project: str, service: str) -> None:
        """Enable `service` in `project` now (no propagation delay)."""
        with self._lock:
            self._apis.setdefault(project, {})[service] = _ApiState(True, self._clock())

    def disable_service(self, project: str, service: str) -> None:
        with self._lock:
            self._apis.setdefault(project, {})[service] = _ApiState(False)

    def repositories(self) -> list[dict[str, Any]]:
        """Every Artifact Registry repository, as GetRepository answers."""
        with self._lock:
            return [copy.deepcopy(r) for r in self._repositories.values()]

    def repository(self, name: str) -> dict[str, Any]:
        """One repository by full name; KeyError if there is none."""
        with self._lock:
            return copy.deepcopy(self._repositories[name])

    def add_repository(
        self,
        name: str,
        *,
        format: str = "DOCKER",
        description: str = "",
        labels: Mapping[str, str] | None = None,
        cleanup_policies: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Make a repository `projects/P/locations/L/repositories/R` as if someone had."""
        matched = re.fullmatch(r"projects/([^/]+)/locations/([^/]+)/repositories/([^/]+)", name)
        if matched is None:
            raise ValueError(f"not a repository name: {name!r}")
        body: dict[str, Any] = {"format": format, "description": description}
        if labels:
            body["labels"] = dict(labels)
        if cleanup_policies:
            body["cleanupPolicies"] = copy.deepcopy(dict(cleanup_policies))
        with self._lock:
            parent = f"projects/{matched[1]}/locations/{matched[2]}"
            self._store_repository(parent, matched[3], body, self._clock())
            return copy.deepcopy(self._repositories[name])

    def service_accounts(self, project: str | None = None) -> list[dict[str, Any]]:
        """Every service account (of `project`), as GetServiceAccount answers (JSON)."""
        with self._lock:
            return [
                a.view()
                for a in sorted(self._accounts.values(), key=lambda a: a.email)
                if project is None or a.project == project
            ]

    def service_account(self, email: str) -> dict[str, Any]:
        """One service account by email; KeyError if there is none."""
        with self._lock:
            return self._accounts[email].view()

    def add_service_account(
        self, project: str, account_id: str, *, display_name: str = "", description: str = ""
    ) -> dict[str, Any]:
        """Make a service account as if someone had; its view."""
        with self._lock:
            return self._create_account(project, account_id, display_name, description).view()

    def project_policy(self, project: str) -> dict[str, Any]:
        """The project's IAM policy, as getIamPolicy answers."""
        with self._lock:
            return copy.deepcopy(self._project_policy(project))

    def set_project_policy(
        self, project: str, bindings: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Replace the project's bindings (`[{"role", "members"}]`), unchecked; the policy."""
        with self._lock:
            policy = self._project_policy(project)
            policy["bindings"] = [copy.deepcopy(dict(b)) for b in bindings if b.get("members")]
            policy["etag"] = _new_etag()
            return copy.deepcopy(policy)

    def service_account_policy(self, email: str) -> dict[str, Any]:
        """A service account's IAM policy; KeyError if the account does not exist."""
        with self._lock:
            account = self._accounts[email]
            return copy.deepcopy(self._account_policy(account))

    def _platform_summary(self) -> dict[str, Any]:
        projects = set(self._apis) | set(self._project_policies) | self._account_projects
        return {
            "services": {p: self.enabled_services(p) for p in sorted(projects)},
            "repositories": self.repositories(),
            "service_accounts": self.service_accounts(),
            "project_policies": copy.deepcopy(self._project_policies),
            "service_account_policies": copy.deepcopy(self._account_policies),
        }

    def _platform_control(self, method: str, route: str) -> tuple[int, Any] | None:
        if route == "platform" and method == "GET":
            with self._lock:
                return 200, self._platform_summary()
        return None

    # -- APIs enabled or not -------------------------------------------------------------

    def _api_state(self, project: str, service: str) -> _ApiState:
        found = self._apis.get(project, {}).get(service)
        if found is None:
            return _ApiState(self.platform_apis_enabled)
        return found

    def _require_api(self, project: str, service: str) -> None:
        """403 SERVICE_DISABLED unless `service` is enabled (and answering) in `project`."""
        state = self._api_state(project, service)
        if not state.enabled or self._clock() < state.effective_at:
            raise service_disabled(project, service)

    def _check_run_service_account(self, template: Mapping[str, Any]) -> None:
        """Cloud Run's check of a job's service account, where the emulator knows the
        accounts of its project."""
        email = str((template.get("template") or {}).get("serviceAccount") or "")
        matched = ACCOUNT_EMAIL.match(email)
        if matched and matched["project"] in self._account_projects and email not in self._accounts:
            raise ApiError(400, f"Service account {email} does not exist.")

    # -- REST entry point ----------------------------------------------------------------

    def _serve_platform(self, handler: EmulatorHandler, body: bytes) -> bool:
        """Answer a platform REST call; False when the call is not one (nothing was done)."""
        method, path, query = parse_call(handler)
        rpc, params = route_call(PLATFORM_ROUTES, method, path)
        if rpc is None:
            return False
        received_at = self._clock()
        body_json = json_or_none(body)
        fault = self._decide(rpc, method, path)
        record = self._request_log(
            method=method,
            path=path,
            query=query,
            body=logged_body(body_json, body),
            received_at=received_at,
            rpc=rpc,
        )
        if fault is not None and fault.kind == "error":
            answer = fault_error(fault, rpc, path, query).to_json()
            record(fault.code, answer, fault)
            handler.reply(fault.code, answer)
            return True
        try:
            if body.strip() and not isinstance(body_json, dict):
                raise ApiError(400, "Invalid JSON payload received.")
            status, answer = 200, self._platform_call(rpc, params, query, body_json or {})
        except ApiError as exc:
            status, answer = exc.code, exc.to_json()
        self._answer(handler, fault, record, status, answer, lambda: handler.reply(status, answer))
        return True

    def _platform_call(
        self, rpc: str, params: Mapping[str, str], query: Mapping[str, str], body: dict[str, Any]
    ) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            if "su_operation" in params:
                return self._platform_operation_view(params["su_operation"], now)
            if "service" in params:
                return self._service_call(rpc, params["project"], params["service"], now)
            if "location" in params:
                self._require_api(params["project"], ARTIFACT_REGISTRY_API)
                return self._repository_call(rpc, params, query, body, now)
            project = params["project"]
            if rpc == "GetIamPolicy":
                return copy.deepcopy(self._project_policy(project))
            policy = body.get("policy")
            if not isinstance(policy, dict):
                raise ApiError(400, "policy is required.")
            return self._set_policy(
                self._project_policy(project), policy, body.get("updateMask"), resource=None
            )

    # -- Service Usage ---------------------------------------------------------------------

    def _service_view(self, project: str, service: str) -> dict[str, Any]:
        number = project_number(project)
        enabled = self._api_state(project, service).enabled
        return {
            "name": f"projects/{number}/services/{service}",
            "parent": f"projects/{number}",
            "config": {"name": service, "title": API_TITLES.get(service, service)},
            "state": "ENABLED" if enabled else "DISABLED",
        }

    def _service_call(self, rpc: str, project: str, service: str, now: float) -> dict[str, Any]:
        if not SERVICE_NAME.match(service):
            raise ApiError(403, f"Not found or permission denied for service(s): {service}.")
        if rpc == "GetService":
            return self._service_view(project, service)
        enable = rpc == "EnableService"
        current = self._api_state(project, service)
        if current.enabled != enable:
            effective = now + (self.api_propagation_seconds if enable else 0.0)
            self._apis.setdefault(project, {})[service] = _ApiState(enable, effective)
        number = project_number(project)
        op = _PlatformOperation(
            name=f"operations/acf.p2-{number}-{uuid.uuid4()}",
            done_at=now + self.operation_seconds,
            metadata={
                "@type": SU_OPERATION_METADATA,
                "resourceNames": [f"services/{service}/projectSettings/{number}"],
            },
            response={
                "@type": ENABLE_RESPONSE if enable else DISABLE_RESPONSE,
                "service": self._service_view(project, service),
            },
        )
        self._platform_operations[op.name] = op
        return self._platform_operation_view(op.name, now)

    def _platform_operation_view(self, name: str, now: float) -> dict[str, Any]:
        op = self._platform_operations.get(name)
        if op is None:
            raise _not_found(name)
        view: dict[str, Any] = {"name": op.name, "metadata": copy.deepcopy(op.metadata)}
        if now >= op.done_at:
            view["done"] = True
            view["response"] = copy.deepcopy(op.response)
        return view

    # -- Artifact Registry -----------------------------------------------------------------

    def _repository_call(
        self,
        rpc: str,
        params: Mapping[str, str],
        query: Mapping[str, str],
        body: dict[str, Any],
        now: float,
    ) -> dict[str, Any]:
        parent = f"projects/{params['project']}/locations/{params['location']}"
        if rpc == "GetOperation":
            return self._platform_operation_view(f"{parent}/operations/{params['operation']}", now)
        if rpc == "CreateRepository":
            repository_id = query.get("repositoryId", "")
            name = self._store_repository(parent, repository_id, body, now)
            return self._ar_operation(
                parent, now, {"@type": REPOSITORY_TYPE, **self._repositories[name]}
            )
        if rpc == "ListRepositories":
            found = [
                copy.deepcopy(r)
                for n, r in sorted(self._repositories.items())
                if n.startswith(parent + "/repositories/")
            ]
            return {"repositories": found} if found else {}
        name = f"{parent}/repositories/{params['repository']}"
        repository = self._repositories.get(name)
        if repository is None:
            raise _not_found(name)
        if rpc == "GetRepository":
            return copy.deepcopy(repository)
        if rpc == "DeleteRepository":
            del self._repositories[name]
            return self._ar_operation(parent, now, {"@type": EMPTY_TYPE})
        # UpdateRepository
        mask = query.get("updateMask")
        fields = (
            [_camel(f.strip()) for f in mask.split(",") if f.strip()]
            if mask
            else [f for f in _REPOSITORY_UPDATABLE if f in body]
        )
        for name_ in fields:
            if name_ not in _REPOSITORY_UPDATABLE:
                raise ApiError(400, f"Invalid update mask path '{name_}': it cannot be updated.")
        updated = copy.deepcopy(repository)
        for name_ in fields:
            value = body.get(name_)
            if name_ == "labels":
                value = _check_labels(value)
            elif name_ == "cleanupPolicies":
                value = _check_cleanup_policies(value)
            if value in (None, {}, "", False):
                updated.pop(name_, None)
            else:
                updated[name_] = copy.deepcopy(value)
        updated["updateTime"] = timestamp(now)
        self._repositories[name] = updated
        return copy.deepcopy(updated)

    def _store_repository(
        self, parent: str, repository_id: str, body: Mapping[str, Any], now: float
    ) -> str:
        if not repository_id:
            raise ApiError(400, "repository_id is required.")
        if not REPOSITORY_ID.match(repository_id):
            raise ApiError(
                400,
                f"Invalid repository id '{repository_id}': it must start with a lowercase "
                "letter, end with a letter or number, contain only lowercase letters, numbers "
                "and hyphens, and be at most 63 characters long.",
            )
        location = parent.rsplit("/", 1)[-1]
        if not LOCATION.match(location):
            raise ApiError(400, f"Invalid location '{location}'.")
        name = f"{parent}/repositories/{repository_id}"
        fmt = _enum(body.get("format"), FORMATS)
        if fmt not in REPOSITORY_FORMATS:
            raise ApiError(400, f"Repository format must be one of {sorted(REPOSITORY_FORMATS)}.")
        if name in self._repositories:
            raise ApiError(409, "the repository already exists")
        repository: dict[str, Any] = {"name": name, "format": fmt}
        for key in _REPOSITORY_INPUT:
            if key in body and key != "format":
                repository[key] = copy.deepcopy(body[key])
        repository["labels"] = _check_labels(body.get("labels"))
        repository["cleanupPolicies"] = _check_cleanup_policies(body.get("cleanupPolicies"))
        for key in ("labels", "cleanupPolicies", "description"):
            if not repository.get(key):
                repository.pop(key, None)
        repository["mode"] = _enum(repository.get("mode") or 1, MODES)
        docker_project = parent.split("/")[1].replace(":", "/")  # example.com:p -> example.com/p
        repository.update(
            {
                "createTime": timestamp(now),
                "updateTime": timestamp(now),
                "sizeBytes": "0",
                "registryUri": f"{location}-docker.pkg.dev/{docker_project}/{repository_id}",
            }
        )
        self._repositories[name] = repository
        return name

    def _ar_operation(self, parent: str, now: float, response: dict[str, Any]) -> dict[str, Any]:
        op = _PlatformOperation(
            name=f"{parent}/operations/{uuid.uuid4()}",
            done_at=now + self.operation_seconds,
            metadata={"@type": AR_OPERATION_METADATA},
            response=copy.deepcopy(response),
        )
        self._platform_operations[op.name] = op
        return self._platform_operation_view(op.name, now)

    # -- IAM policies (projects and service accounts) -------------------------------------

    def _project_policy(self, project: str) -> dict[str, Any]:
        if project not in self._project_policies:
            self._project_policies[project] = {
                "version": 1,
                "etag": _new_etag(),
                "bindings": [{"role": "roles/owner", "members": [OWNER_MEMBER]}],
            }
        return self._project_policies[project]

    def _account_policy(self, account: _ServiceAccount) -> dict[str, Any]:
        if account.email not in self._account_policies:
            self._account_policies[account.email] = {"version": 1, "etag": _new_etag()}
        return self._account_policies[account.email]

    def _set_policy(
        self,
        current: dict[str, Any],
        policy: Mapping[str, Any],
        update_mask: Any,
        *,
        resource: _ServiceAccount | None,
    ) -> dict[str, Any]:
        """Check `policy` and write it over `current` (in place); the policy as stored."""
        etag = policy.get("etag")
        if etag and _etag_bytes(str(etag)) != _etag_bytes(current["etag"]):
            raise ApiError(409, CONCURRENT_CHANGE, "ABORTED")
        bindings = []
        for binding in policy.get("bindings") or []:
            role = binding.get("role", "")
            if not isinstance(role, str) or not ROLE.match(role):
                raise ApiError(400, f"Role ({role}) does not exist in the resource's hierarchy.")
            if resource is not None and not ACCOUNT_ROLE.match(role):
                raise ApiError(400, f"Role {role} is not supported for this resource.")
            members = list(dict.fromkeys(binding.get("members") or []))
            for member in members:
                self._check_member(member, on_account=resource is not None)
            if binding.get("condition") and int(policy.get("version") or 1) < 3:
                raise ApiError(400, "Conditional role bindings require policy version 3.")
            if members:
                kept = {"role": role, "members": members}
                if binding.get("condition"):
                    kept["condition"] = copy.deepcopy(binding["condition"])
                bindings.append(kept)
        fields = str(update_mask or "bindings,etag").split(",")
        conditional = any("condition" in b for b in bindings)
        if "bindings" in fields:
            if bindings:
                current["bindings"] = bindings
            else:
                current.pop("bindings", None)
        if "auditConfigs" in fields or "audit_configs" in fields:
            if policy.get("auditConfigs"):
                current["auditConfigs"] = copy.deepcopy(policy["auditConfigs"])
            else:
                current.pop("auditConfigs", None)
        current["version"] = 3 if conditional else 1
        current["etag"] = _new_etag()
        return copy.deepcopy(current)

    def _check_member(self, member: Any, *, on_account: bool) -> None:
        if not isinstance(member, str):
            raise ApiError(400, f"Invalid member {member!r}.")
        if member in PUBLIC_MEMBERS:
            if on_account:
                return
            raise ApiError(400, f"Member {member} cannot be bound on a project.")
        if not MEMBER.match(member):
            raise ApiError(
                400,
                f"Invalid member '{member}': use user:, serviceAccount:, group: or domain:, "
                "a principal:// or principalSet:// identifier.",
            )
        if member.startswith("serviceAccount:"):
            email = member.removeprefix("serviceAccount:")
            matched = ACCOUNT_EMAIL.match(email)
            if (
                matched
                and matched["project"] in self._account_projects
                and email not in self._accounts
            ):
                raise ApiError(400, f"Service account {email} does not exist.")

    # -- IAM service accounts --------------------------------------------------------------

    def _create_account(
        self, project: str, account_id: str, display_name: str, description: str
    ) -> _ServiceAccount:
        if not ACCOUNT_ID.match(account_id or ""):
            raise ApiError(
                400,
                f"Invalid form of account ID {account_id}. Should be [Regex: "
                "[a-z]([-a-z0-9]*[a-z0-9]) Length: 6-30].",
            )
        if len(display_name) > MAX_DISPLAY_NAME:
            raise ApiError(400, f"displayName is longer than {MAX_DISPLAY_NAME} characters.")
        if len(description) > MAX_DESCRIPTION:
            raise ApiError(400, f"description is longer than {MAX_DESCRIPTION} characters.")
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        if email in self._accounts:
            raise ApiError(
                409,
                f"Service account {account_id} already exists within project projects/{project}.",
            )
        account = _ServiceAccount(
            project=project,
            account_id=account_id,
            email=email,
            unique_id=str(10**20 + uuid.uuid4().int % (9 * 10**20)),
            display_name=display_name,
            description=description,
            etag=_new_etag(),
        )
        self._accounts[email] = account
        self._account_projects.add(project)
        return account

    def _find_account(self, name: str) -> _ServiceAccount:
        matched = re.fullmatch(r"projects/([^/]+)/serviceAccounts/([^/]+)", name or "")
        if matched is None:
            raise ApiError(400, f"Invalid service account name '{name}'.")
        project, key = matched.groups()
        found = self._accounts.get(key) or next(
            (a for a in self._accounts.values() if a.unique_id == key), None
        )
        if found is None or project not in ("-", found.project):
            raise ApiError(404, f"Service account {name} does not exist.")
        return found

    def _account_project(self, name: str) -> str | None:
        """The project an IAM call is about, for the SERVICE_DISABLED check."""
        parts = (name or "").split("/")
        if len(parts) >= 2 and parts[0] == "projects" and parts[1] != "-":
            return parts[1]
        key = parts[3] if len(parts) >= 4 else ""
        matched = ACCOUNT_EMAIL.match(key)
        if matched:
            return matched["project"]
        found = next((a for a in self._accounts.values() if a.unique_id == key), None)
        return found.project if found else None

    def _delete_account(self, account: _ServiceAccount) -> None:
        del self._accounts[account.email]
        self._account_policies.pop(account.email, None)
        member = f"serviceAccount:{account.email}"
        gone = f"deleted:serviceAccount:{account.email}?uid={account.unique_id}"
        for policy in [*self._project_policies.values(), *self._account_policies.values()]:
            for binding in policy.get("bindings") or []:
                binding["members"] = [gone if m == member else m for m in binding["members"]]

    def _iam_call(self, rpc: str, request: Any) -> tuple[Any, dict[str, Any]]:
        """Serve one IAM Admin method: (the response message, its JSON) or ApiError."""
        from google.cloud import iam_admin_v1
        from google.iam.v1 import policy_pb2
        from google.protobuf import empty_pb2, json_format

        name = str(getattr(request, "resource", "") or getattr(request, "name", ""))
        with self._lock:
            project = self._account_project(name)
            if project is not None:
                self._require_api(project, IAM_API)
            if rpc == "CreateServiceAccount":
                matched = re.fullmatch(r"projects/([^/]+)", name)
                if matched is None or matched[1] == "-":
                    raise ApiError(400, f"Invalid project name '{name}'.")
                given = request.service_account
                account = self._create_account(
                    matched[1], request.account_id, given.display_name, given.description
                )
                view = account.view()
                return iam_admin_v1.ServiceAccount.from_json(_json(view)), view
            if rpc == "ListServiceAccounts":
                matched = re.fullmatch(r"projects/([^/]+)", name)
                if matched is None:
                    raise ApiError(400, f"Invalid project name '{name}'.")
                accounts = [
                    a.view()
                    for a in sorted(self._accounts.values(), key=lambda a: a.email)
                    if a.project == matched[1]
                ]
                size = request.page_size or 20
                offset = int(request.page_token or 0)
                answer: dict[str, Any] = {}
                if accounts[offset : offset + size]:
                    answer["accounts"] = accounts[offset : offset + size]
                if offset + size < len(accounts):
                    answer["nextPageToken"] = str(offset + size)
                response = iam_admin_v1.ListServiceAccountsResponse.from_json(_json(answer))
                return response, answer
            account = self._find_account(name)
            if rpc == "GetServiceAccount":
                view = account.view()
                return iam_admin_v1.ServiceAccount.from_json(_json(view)), view
            if rpc == "DeleteServiceAccount":
                self._delete_account(account)
                return empty_pb2.Empty(), {}
            if rpc == "GetIamPolicy":
                view = copy.deepcopy(self._account_policy(account))
            else:  # SetIamPolicy
                policy = json_format.MessageToDict(request.policy)
                mask = ",".join(_camel(p) for p in request.update_mask.paths) or None
                view = self._set_policy(
                    self._account_policy(account), policy, mask, resource=account
                )
            return json_format.ParseDict(view, policy_pb2.Policy()), view

    def _iam_handlers(self) -> dict[str, Any]:
        import grpc
        from google.cloud import iam_admin_v1
        from google.iam.v1 import iam_policy_pb2, policy_pb2
        from google.protobuf import empty_pb2

        kinds: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] = {
            "CreateServiceAccount": (
                iam_admin_v1.CreateServiceAccountRequest.deserialize,
                iam_admin_v1.ServiceAccount.serialize,
            ),
            "GetServiceAccount": (
                iam_admin_v1.GetServiceAccountRequest.deserialize,
                iam_admin_v1.ServiceAccount.serialize,
            ),
            "ListServiceAccounts": (
                iam_admin_v1.ListServiceAccountsRequest.deserialize,
                iam_admin_v1.ListServiceAccountsResponse.serialize,
            ),
            "DeleteServiceAccount": (
                iam_admin_v1.DeleteServiceAccountRequest.deserialize,
                empty_pb2.Empty.SerializeToString,
            ),
            "GetIamPolicy": (
                iam_policy_pb2.GetIamPolicyRequest.FromString,
                policy_pb2.Policy.SerializeToString,
            ),
            "SetIamPolicy": (
                iam_policy_pb2.SetIamPolicyRequest.FromString,
                policy_pb2.Policy.SerializeToString,
            ),
        }
        return {
            rpc: grpc.unary_unary_rpc_method_handler(
                self._grpc_method(rpc), request_deserializer=load, response_serializer=dump
            )
            for rpc, (load, dump) in kinds.items()
        }

    def _grpc_method(self, rpc: str) -> Callable[[Any, Any], Any]:
        def serve(request: Any, context: Any) -> Any:
            return self._serve_grpc(rpc, request, context)

        return serve

    def _serve_grpc(self, rpc: str, request: Any, context: Any) -> Any:
        """One IAM Admin gRPC call: faults, the request log, then the method."""
        method, template = GRPC_METHODS[rpc]
        name = str(getattr(request, "resource", "") or getattr(request, "name", ""))
        path = template.format(name=name, resource=name)
        fault = self._decide(rpc, method, path)
        record = self._request_log(
            method=method,
            path=path,
            query={},
            body=_message_json(request),
            received_at=self._clock(),
            rpc=rpc,
        )
        if fault is not None and fault.kind == "error":
            error = fault_error(fault, rpc, path, {})
            record(error.code, error.to_json(), fault)
            _abort(context, error)
        response: Any = None
        error_found: ApiError | None = None
        try:
            response, answer = self._iam_call(rpc, request)
            status = 200
        except ApiError as exc:
            error_found, status, answer = exc, exc.code, exc.to_json()
        if fault is not None and fault.kind == "timeout":
            record(status, answer, fault, dropped=fault.drop)
            self._stopping.wait(fault.seconds)
            if fault.drop or self._stopping.is_set():
                _abort(
                    context, ApiError(503, "The emulator dropped the connection.", "UNAVAILABLE")
                )
        else:
            record(status, answer, fault)
            if fault is not None and fault.kind == "delay":
                self._stopping.wait(fault.seconds)
        if error_found is not None:
            _abort(context, error_found)
        return response


# -- helpers -------------------------------------------------------------------------------


def _camel(path: str) -> str:
    head, *rest = path.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _json(view: Mapping[str, Any]) -> str:
    return json.dumps(view)


def _message_json(message: Any) -> Any:
    from google.protobuf import json_format

    pb = type(message).pb(message) if hasattr(type(message), "pb") else message
    return json_format.MessageToDict(pb)


def _grpc_code(error: ApiError) -> Any:
    """The gRPC status code of `error`: its canonical status, else its HTTP code's."""
    import grpc

    for name in (error.status, STATUS_NAMES.get(error.code, "UNKNOWN")):
        if name in grpc.StatusCode.__members__:
            return grpc.StatusCode[name]
    return grpc.StatusCode.UNKNOWN


def _abort(context: Any, error: ApiError) -> None:
    """Fail a gRPC call with `error`'s code, message and ErrorInfo details (raises)."""
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    code = _grpc_code(error)
    details = []
    for detail in error.details:
        if detail.get("@type") == ERROR_INFO_TYPE:
            info = error_details_pb2.ErrorInfo(
                reason=detail.get("reason", ""),
                domain=detail.get("domain", ""),
                metadata=dict(detail.get("metadata") or {}),
            )
            packed = any_pb2.Any()
            packed.Pack(info)
            details.append(packed)
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    context.abort_with_status(rpc_status.to_status(status))

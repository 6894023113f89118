"""What a `cloud-run:push` pool needs in a Google Cloud project, as provisioning steps (issue 8).

`cloud_run_provisioner(pool, options)` (called by `registry.provisioner_for`) finds the project
(`--project`, the `project` setting, else the Application Default Credentials' project) and the
region (`--region` or the `region` setting: required), and lists the steps in dependency order;
`base.plan`, `base.apply` and `base.deprovision` carry them out. `<slug>` is the pool's name
made safe for resource names and `<short>` a shorter form for service account ids (6 to 30
characters), each with a short hash of the name when it had to change (see `slug`,
`account_prefix`):

1. `service-api` run.googleapis.com, artifactregistry.googleapis.com, iam.googleapis.com:
   enabled when they are not. Retained (`retained = True`): disabling an API deletes everything
   of it in the project, the user's own resources included, so skylane never disables one;
2. `artifact-registry-repository` `skylane-<slug>` in the region: DOCKER, labelled
   `skylane-pool=<pool>` (as a label value, `label_value`), with a cleanup policy deleting
   untagged images after 14 days. An owned repository without that policy is drift, fixed by an
   update; another repository of that name is adopted as it is (a non-DOCKER one is refused);
3. `service-account` `<short>-run`: the runtime identity the pool's jobs run as; no role is
   granted to it (the runs' code gets what the user grants it);
4. `service-account` `<short>-dispatch`: the dispatcher, the identity the control plane
   impersonates to run jobs. Service accounts carry no labels: their description starts with
   `skylane-pool=<pool>`, which is what makes them the pool's;
5. `project-iam-binding` roles/run.developer on the project for the dispatcher (create, read
   and delete jobs and executions), and roles/logging.viewer (the adapter reads the runs' logs
   from Cloud Logging, `entries.list`);
6. `service-account-iam-binding` roles/iam.serviceAccountUser on the runtime account only, for
   the dispatcher (Cloud Run demands actAs on the account a job runs as: the dispatcher can
   run jobs as that account and no other);
7. with `options.control_plane` (a member: `serviceAccount:EMAIL`, `user:EMAIL`, `group:EMAIL`
   or a workload identity `principal://` / `principalSet://`): `service-account-iam-binding`
   `roles/iam.serviceAccountTokenCreator control-plane`, that role on the dispatcher account
   for that member, so the control plane can impersonate it. The member is kept in the pool's
   settings (`control_plane`), so a later run or deprovision, given the settings alone, has
   this step too; a new `--control-plane` takes the place of the old member, which loses the
   role.

IAM bindings are read-modify-write with the policy's etag, done again when Google answers that
the policy changed in between (ABORTED); deleting one removes only that member from that role
(and the `deleted:` form IAM gives it once its account is gone). Bindings carry no labels: one
that exists is found as not owned, and `base.merge_records` keeps it marked created when an
earlier apply created it. Cloud Run pulls images from an Artifact Registry repository of the same
project with its own service agent: the runtime account needs no reader role.

`pool_settings`: the settings given (`endpoint_url`, `iam_endpoint`...) with `project`,
`region` and `control_plane`.

Publish: `context.defaults` = `project`, `region`, `service_account_name` (the runtime
account's email), keyed by the `cloud-run:push` template variables; `context.outputs` =
`image_registry` (`{region}-docker.pkg.dev`), `image_repository`
(`{region}-docker.pkg.dev/{project}/skylane-<slug>`), `repository` (its resource name),
`runtime_service_account`, `dispatcher_service_account` and `dispatcher_credentials`
(`{"impersonate_service_account": dispatcher email}`, the pool's credentials reference). Every
id is computed, so a plan of an empty project shows them all.

Clients: the official SDKs (`google-cloud-service-usage`, `-artifact-registry`,
`-resource-manager` over REST; `google-cloud-iam`, gRPC only). With the `endpoint_url` setting
(or `SKYLANE_CLOUD_RUN_ENDPOINT`, as the adapter) the REST clients go there with anonymous
credentials, and then the `iam_endpoint` setting (or `SKYLANE_GCP_IAM_ENDPOINT`) must name the
IAM gRPC target too, an insecure channel when it is a loopback address (e.g.
`skylane.testing.gcp.CloudRunEmulator`'s `url` and `iam_target`). Against Google: Application
Default Credentials, impersonating `options.credentials["impersonate_service_account"]` when
given: the caller's credentials, used for provisioning and never stored. No key file and no
service account key, ever.

Errors are translated by the adapter's `translate_error`, naming the caller's credentials and
the permission to grant them ("grant your Google Cloud credentials
artifactregistry.repositories.create"). Reads, updates, deletes, API enabling and policy
writes (each read again before it is written) are retried with `PROVIDER_CALLS`; creates are
not (a create whose answer was lost may have gone through: the apply fails and rolls back, and
a re-run adopts). A just-enabled API may refuse calls for a while (SERVICE_DISABLED) and a
just-created service account may be unknown to a policy write ("does not exist"): both are
waited out for a bounded time. Long-running operations are awaited at most
`OPERATION_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from skylane.adapters.cloud_run import ENDPOINT_VARIABLE, SCOPES, translate_error
from skylane.adapters.cloud_run_template import check_project, check_region
from skylane.errors import (
    InvalidInput,
    PermanentProviderError,
    ProviderConflict,
    ProviderError,
    TransientProviderError,
)
from skylane.provisioning.base import POOL_TAG, Context, Found, Step
from skylane.retries import PROVIDER_CALLS

if TYPE_CHECKING:
    from skylane.provisioning.registry import Provisioner, ProvisionOptions

IAM_ENDPOINT_VARIABLE = "SKYLANE_GCP_IAM_ENDPOINT"
CALLER = "your Google Cloud credentials"
RUN_API = "run.googleapis.com"
ARTIFACT_REGISTRY_API = "artifactregistry.googleapis.com"
IAM_API = "iam.googleapis.com"
APIS = (RUN_API, ARTIFACT_REGISTRY_API, IAM_API)
SERVICE_NAMES = {
    RUN_API: "Cloud Run",
    ARTIFACT_REGISTRY_API: "Artifact Registry",
    IAM_API: "IAM",
}
DISPATCHER_PROJECT_ROLES = ("roles/run.developer", "roles/logging.viewer")
ACT_AS_ROLE = "roles/iam.serviceAccountUser"
TOKEN_CREATOR_ROLE = "roles/iam.serviceAccountTokenCreator"
DEFAULT_UNTAGGED_IMAGE_DAYS = 14
CLEANUP_POLICY_ID = "delete-untagged-images"

# One call's timeout; how long a long-running operation (enabling an API takes up to minutes)
# may take; how long a just-enabled API or a just-created account may be unknown.
CALL_TIMEOUT_SECONDS = 60.0
OPERATION_TIMEOUT_SECONDS = 600.0
PROPAGATION_SECONDS = 120.0
POLICY_WRITE_ATTEMPTS = 6

_MAX_SLUG = 40
_MAX_SHORT = 21  # "<short>-dispatch" within the 30 characters of an account id
_UNSAFE = re.compile(r"[^a-z0-9]+")
_UNSAFE_LABEL = re.compile(r"[^a-z0-9_-]")
_MEMBER = re.compile(
    r"^(?:(?:serviceAccount|user|group):[^@\s:]+@[^@\s:]+\.[^@\s:]+|principal(?:Set)?://\S+)$"
)
_MARKER = re.compile(rf"(?<![\w.-]){POOL_TAG}=([A-Za-z0-9_.-]+)")
_LOOPBACK_NAMES = ("localhost",)


# --- names (pure) ---------------------------------------------------------------------------


def _digest(pool: str) -> str:
    return hashlib.sha256(pool.encode()).hexdigest()[:6]


def slug(pool: str) -> str:
    """The pool's name as a part of resource names: lowercase letters, digits and single
    dashes, at most 40 characters; a short hash of the name is added when it had to change,
    so two pools never share resources."""
    cleaned = _UNSAFE.sub("-", pool.lower()).strip("-")
    if cleaned == pool and len(cleaned) <= _MAX_SLUG:
        return cleaned
    return f"{cleaned[: _MAX_SLUG - 7].rstrip('-') or 'pool'}-{_digest(pool)}"


def account_prefix(pool: str) -> str:
    """`<short>`: `skl-` and the pool's name, at most 21 characters, so `<short>-dispatch` is
    a valid account id (6 to 30 characters); cut with a short hash when the name is long or
    had to change."""
    cleaned = _UNSAFE.sub("-", pool.lower()).strip("-")
    short = f"skl-{cleaned}"
    if cleaned == pool and len(short) <= _MAX_SHORT:
        return short
    keep = _MAX_SHORT - len("skl-") - 7
    return f"skl-{cleaned[:keep].rstrip('-') or 'pool'}-{_digest(pool)}"


def label_value(pool: str) -> str:
    """The pool's name as a label value (lowercase letters, digits, `_` and `-`, at most 63
    characters), with a short hash when it had to change."""
    cleaned = _UNSAFE_LABEL.sub("_", pool.lower())
    if cleaned == pool and len(cleaned) <= 63:
        return cleaned
    return f"{cleaned[:56]}-{_digest(pool)}"


def account_email(account_id: str, project: str) -> str:
    """The email Google gives account `account_id` of `project` (a domain-scoped project
    `example.com:p` gives `...@p.example.com.iam.gserviceaccount.com`)."""
    if ":" in project:
        domain, name = project.split(":", 1)
        project = f"{name}.{domain}"
    return f"{account_id}@{project}.iam.gserviceaccount.com"


def check_member(member: str, *, field: str = "--control-plane") -> str:
    """An IAM member allowed to impersonate the dispatcher; InvalidInput naming `field`."""
    if not isinstance(member, str) or not _MEMBER.match(member.strip()):
        raise InvalidInput(
            f"{member!r} is not a Google Cloud IAM member: use serviceAccount:EMAIL, user:EMAIL, "
            "group:EMAIL, or a workload identity principal:// or principalSet:// identifier",
            field=field,
        )
    return member.strip()


def cleanup_policy(untagged_days: int) -> dict[str, Any]:
    """The repository's cleanup policy: delete untagged images older than `untagged_days`."""
    return {
        "id": CLEANUP_POLICY_ID,
        "action": "DELETE",
        "condition": {
            "tag_state": "UNTAGGED",
            "older_than": timedelta(days=untagged_days),
        },
    }


# --- clients --------------------------------------------------------------------------------


def _is_loopback(target: str) -> bool:
    host = target.rsplit(":", 1)[0].strip("[]") if ":" in target else target
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _setting(settings: dict[str, Any], name: str, variable: str) -> str | None:
    value = settings.get(name) or os.environ.get(variable)
    return str(value).strip() or None if value else None


class GoogleClients:
    """The SDK clients provisioning uses, made once each, with the caller's credentials (or
    anonymous ones against an `endpoint_url`). See the module docstring."""

    def __init__(self, settings: dict[str, Any], credentials: dict[str, Any] | None) -> None:
        self.endpoint_url = _setting(settings, "endpoint_url", ENDPOINT_VARIABLE)
        self.iam_endpoint = _setting(settings, "iam_endpoint", IAM_ENDPOINT_VARIABLE)
        target = (credentials or {}).get("impersonate_service_account")
        self.impersonate = str(target) if target else None
        if self.endpoint_url and not self.iam_endpoint:
            raise InvalidInput(
                "with an endpoint_url, set iam_endpoint too: the IAM API is only reachable over "
                "gRPC (host:port)",
                field="settings.iam_endpoint",
            )
        self._credentials: Any = None
        self._adc_project: str | None = None
        self._clients: dict[str, Any] = {}

    def _load(self) -> Any:
        if self._credentials is None:
            try:
                if self.endpoint_url:
                    from google.auth.credentials import AnonymousCredentials

                    self._credentials = AnonymousCredentials()
                else:
                    self._credentials, self._adc_project = self._application_default()
            except Exception as exc:  # noqa: BLE001 - translated
                raise translate_error(
                    exc, action="authenticate", resource="Google Cloud", caller=CALLER
                ) from None
        return self._credentials

    def _application_default(self) -> tuple[Any, str | None]:
        import google.auth

        credentials, project = google.auth.default(scopes=list(SCOPES))
        if self.impersonate:
            from google.auth import impersonated_credentials

            credentials = impersonated_credentials.Credentials(
                source_credentials=credentials,
                target_principal=self.impersonate,
                target_scopes=list(SCOPES),
                lifetime=3600,
            )
        return credentials, project

    def default_project(self) -> str | None:
        """The Application Default Credentials' project (none against an endpoint)."""
        if self.endpoint_url:
            return None
        self._load()
        return self._adc_project

    def _rest(self, kind: str, make: Callable[..., Any]) -> Any:
        if kind not in self._clients:
            from google.api_core.client_options import ClientOptions

            options = ClientOptions(api_endpoint=self.endpoint_url) if self.endpoint_url else None
            self._clients[kind] = make(
                transport="rest", credentials=self._load(), client_options=options
            )
        return self._clients[kind]

    def service_usage(self) -> Any:
        from google.cloud import service_usage_v1

        return self._rest("service_usage", service_usage_v1.ServiceUsageClient)

    def artifact_registry(self) -> Any:
        from google.cloud import artifactregistry_v1

        return self._rest("artifact_registry", artifactregistry_v1.ArtifactRegistryClient)

    def projects(self) -> Any:
        from google.cloud import resourcemanager_v3

        return self._rest("projects", resourcemanager_v3.ProjectsClient)

    def iam(self) -> Any:
        """The IAM Admin client (gRPC): an insecure channel to a loopback `iam_endpoint`."""
        if "iam" not in self._clients:
            from google.cloud import iam_admin_v1

            if self.iam_endpoint and _is_loopback(self.iam_endpoint):
                import grpc
                from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport

                channel = grpc.insecure_channel(self.iam_endpoint)
                client = iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel))
            elif self.iam_endpoint:
                from google.api_core.client_options import ClientOptions

                client = iam_admin_v1.IAMClient(
                    credentials=self._load(),
                    client_options=ClientOptions(api_endpoint=self.iam_endpoint),
                )
            else:
                client = iam_admin_v1.IAMClient(credentials=self._load())
            self._clients["iam"] = client
        return self._clients["iam"]

    def close(self) -> None:
        """Close the clients' connections (the IAM gRPC channel above all)."""
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.transport.close()
        self._clients.clear()


# --- plumbing -------------------------------------------------------------------------------


def _service_disabled(exc: BaseException) -> str | None:
    """The API a SERVICE_DISABLED refusal names, or None for any other error."""
    if getattr(exc, "reason", None) != "SERVICE_DISABLED":
        return None
    metadata = getattr(exc, "metadata", None) or {}
    return str(metadata.get("service") or "the API") if isinstance(metadata, dict) else "the API"


def _concurrent(exc: BaseException) -> bool:
    """Whether Google refused a policy write because the policy changed since it was read
    (ABORTED: over REST a 409, the status in the body)."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.Aborted):
        return True
    if not isinstance(exc, gexc.Conflict):
        return False
    try:
        status = exc.response.json()["error"]["status"]  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - no body: a 409 on a policy write is a conflict
        return True
    return status == "ABORTED"


def _unknown_account(exc: BaseException) -> bool:
    """Whether a policy write was refused because a member's account does not exist."""
    from google.api_core import exceptions as gexc

    message = str(getattr(exc, "message", "") or exc)
    return isinstance(exc, gexc.BadRequest | gexc.InvalidArgument) and "does not exist" in message


def _retry_write(exc: BaseException) -> bool:
    """The policy-write errors `_IamBindingStep._write` handles itself."""
    return _concurrent(exc) or _unknown_account(exc)


class _Gcp:
    """What the steps share: the clients, the project and region, and what this run did that
    Google may take a while to see (APIs enabled, accounts created)."""

    def __init__(self, clients: GoogleClients, project: str, region: str) -> None:
        self.clients = clients
        self.project = project
        self.region = region
        self.enabled_here: set[str] = set()
        self.accounts_made_here: set[str] = set()

    def call(
        self,
        method: Callable[..., Any],
        *,
        action: str,
        resource: str,
        service: str,
        api: str | None = None,
        missing: bool = False,
        create: bool = False,
        passthrough: Callable[[BaseException], bool] | None = None,
        **params: Any,
    ) -> Any:
        """`method(**params)`: None when Google answers NOT_FOUND and `missing`; an error that
        `passthrough` accepts raised as it is; any other error translated, naming `action` (the
        permission it needs). A SERVICE_DISABLED answer of an API this run enabled is waited
        out; creates are not retried, everything else is (PROVIDER_CALLS)."""
        from google.api_core import exceptions as gexc

        def once() -> Any:
            started = time.monotonic()
            pause = 0.1
            while True:
                try:
                    return method(**params, retry=None, timeout=CALL_TIMEOUT_SECONDS)
                except Exception as exc:
                    if missing and isinstance(exc, gexc.NotFound):
                        return None
                    if passthrough is not None and passthrough(exc):
                        raise
                    disabled = _service_disabled(exc)
                    if disabled is None:
                        raise translate_error(
                            exc, action=action, resource=resource, caller=CALLER, service=service
                        ) from None
                    if disabled not in self.enabled_here:
                        raise PermanentProviderError(
                            f"{action} on {resource}: {disabled} is not enabled in project "
                            f"{self.project}; provisioning enables it first, or enable it "
                            "with Service Usage",
                            details={"action": action, "service": disabled},
                        ) from None
                    if time.monotonic() - started + pause > PROPAGATION_SECONDS:
                        raise TransientProviderError(
                            f"{action} on {resource}: {disabled} was enabled but still refuses "
                            f"calls after {PROPAGATION_SECONDS:.0f} s; run again in a few minutes",
                            details={"action": action, "service": disabled},
                        ) from None
                    # Google: "If you enabled this API recently, wait a few minutes for the
                    # action to propagate to our systems and retry." The call did nothing.
                    time.sleep(pause)
                    pause = min(pause * 2, 5.0)

        if create:
            # Not retried: a create whose answer was lost may have gone through, and a second
            # one would fail as a duplicate; the apply rolls back and a re-run adopts it.
            return once()
        return PROVIDER_CALLS.call(once, what=action)

    def wait(self, operation: Any, *, action: str, resource: str, service: str) -> Any:
        """The result of a long-running operation, awaited at most OPERATION_TIMEOUT_SECONDS."""
        import concurrent.futures

        from google.api_core.future.polling import DEFAULT_POLLING

        polling = DEFAULT_POLLING.with_delay(initial=0.05, maximum=5.0, multiplier=1.5)
        try:
            return operation.result(
                timeout=OPERATION_TIMEOUT_SECONDS,
                polling=polling.with_timeout(OPERATION_TIMEOUT_SECONDS),
            )
        except concurrent.futures.TimeoutError:
            raise TransientProviderError(
                f"{action} on {resource} did not finish within {OPERATION_TIMEOUT_SECONDS:.0f} "
                "s; it may still finish: run again to see",
                details={"action": action, "ambiguous": True},
            ) from None
        except ProviderError:
            raise
        except Exception as exc:
            raise translate_error(
                exc, action=action, resource=resource, caller=CALLER, service=service
            ) from None


class _GcpStep:
    kind = ""
    api: str | None = None

    def __init__(self, gcp: _Gcp, name: str) -> None:
        self.gcp = gcp
        self.name = name

    @property
    def what(self) -> str:
        return f"{self.kind} {self.name}"

    def api_ready(self, context: Context) -> bool:
        """False when this plan enables the step's API: nothing of it can exist yet, and
        Google would refuse the look-up."""
        return bool((context.outputs.get("enabled_apis") or {}).get(self.api, True))

    def update(self, context: Context, found: Found) -> None:  # pragma: no cover - no drift
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# --- 1. APIs --------------------------------------------------------------------------------


class ServiceApiStep(_GcpStep):
    """An API of the project, enabled when it is not; never disabled (`retained`)."""

    kind = "service-api"
    retained = True

    @property
    def resource(self) -> str:
        return f"projects/{self.gcp.project}/services/{self.name}"

    def find(self, context: Context) -> Found | None:
        from google.cloud import service_usage_v1

        service = self.gcp.call(
            self.gcp.clients.service_usage().get_service,
            action="serviceusage.services.get",
            resource=self.what,
            service="Service Usage",
            request={"name": self.resource},
        )
        if service.state == service_usage_v1.State.ENABLED:
            return Found(self.resource, owned=False)
        return None

    def create(self, context: Context) -> str:
        # Enabling is idempotent: retried like a read.
        operation = self.gcp.call(
            self.gcp.clients.service_usage().enable_service,
            action="serviceusage.services.enable",
            resource=self.what,
            service="Service Usage",
            request={"name": self.resource},
        )
        self.gcp.wait(
            operation,
            action="serviceusage.services.enable",
            resource=self.what,
            service="Service Usage",
        )
        self.gcp.enabled_here.add(self.name)
        return self.resource

    def delete(self, context: Context, resource_id: str) -> None:
        return None  # never disabled: that would delete everything of the API in the project

    def publish(self, context: Context, resource_id: str | None) -> None:
        enabled = dict(context.outputs.get("enabled_apis") or {})
        enabled[self.name] = resource_id is not None
        context.outputs["enabled_apis"] = enabled


# --- 2. Artifact Registry repository --------------------------------------------------------


class ArtifactRegistryRepositoryStep(_GcpStep):
    kind = "artifact-registry-repository"
    api = ARTIFACT_REGISTRY_API
    service = "Artifact Registry"

    def __init__(self, gcp: _Gcp, name: str, *, pool: str, untagged_days: int) -> None:
        super().__init__(gcp, name)
        self.pool = pool
        self.policy = cleanup_policy(untagged_days)

    @property
    def parent(self) -> str:
        return f"projects/{self.gcp.project}/locations/{self.gcp.region}"

    @property
    def resource(self) -> str:
        return f"{self.parent}/repositories/{self.name}"

    def _call(self, method: str, permission: str, **params: Any) -> Any:
        return self.gcp.call(
            getattr(self.gcp.clients.artifact_registry(), method),
            action=f"artifactregistry.repositories.{permission}",
            resource=self.what,
            service=self.service,
            api=self.api,
            **params,
        )

    def _wait(self, operation: Any, permission: str) -> Any:
        return self.gcp.wait(
            operation,
            action=f"artifactregistry.repositories.{permission}",
            resource=self.what,
            service=self.service,
        )

    def find(self, context: Context) -> Found | None:
        from google.cloud import artifactregistry_v1

        if not self.api_ready(context):
            return None
        repository = self._call("get_repository", "get", missing=True, name=self.resource)
        if repository is None:
            return None
        if repository.format_ != artifactregistry_v1.Repository.Format.DOCKER:
            raise PermanentProviderError(
                f"{self.what} exists as a {repository.format_.name} repository; the pool's images "
                "need a DOCKER one: delete or rename it",
                details={"resource": self.resource},
            )
        owned = repository.labels.get(POOL_TAG) == label_value(self.pool)
        drift = self._drift(repository) if owned else []
        return Found(self.resource, owned, tuple(drift))

    def _drift(self, repository: Any) -> list[str]:
        from google.cloud import artifactregistry_v1 as ar

        current = repository.cleanup_policies.get(CLEANUP_POLICY_ID)
        if current is None:
            return ["no cleanup policy for untagged images"]
        wanted = ar.CleanupPolicy(self.policy)
        if ar.CleanupPolicy.to_dict(current) != ar.CleanupPolicy.to_dict(wanted):
            return [f"cleanup policy {CLEANUP_POLICY_ID} differs"]
        return []

    def create(self, context: Context) -> str:
        from google.cloud import artifactregistry_v1 as ar

        repository = ar.Repository(
            format_=ar.Repository.Format.DOCKER,
            description=f"skylane pool {context.pool}: the images of its runs",
            labels={POOL_TAG: label_value(context.pool)},
            cleanup_policies={CLEANUP_POLICY_ID: ar.CleanupPolicy(self.policy)},
        )
        operation = self._call(
            "create_repository",
            "create",
            create=True,
            parent=self.parent,
            repository_id=self.name,
            repository=repository,
        )
        self._wait(operation, "create")
        return self.resource

    def update(self, context: Context, found: Found) -> None:
        from google.cloud import artifactregistry_v1 as ar
        from google.protobuf import field_mask_pb2

        current = self._call("get_repository", "get", name=found.resource_id)
        policies = dict(current.cleanup_policies)  # the user's own policies are kept
        policies[CLEANUP_POLICY_ID] = ar.CleanupPolicy(self.policy)
        self._call(
            "update_repository",
            "update",
            repository=ar.Repository(name=found.resource_id, cleanup_policies=policies),
            update_mask=field_mask_pb2.FieldMask(paths=["cleanup_policies"]),
        )

    def delete(self, context: Context, resource_id: str) -> None:
        # The images pushed to the pool's repository go with it.
        operation = self._call("delete_repository", "delete", missing=True, name=resource_id)
        if operation is not None:
            self._wait(operation, "delete")

    def publish(self, context: Context, resource_id: str | None) -> None:
        registry = f"{self.gcp.region}-docker.pkg.dev"
        project_path = self.gcp.project.replace(":", "/")  # example.com:p -> example.com/p
        context.outputs["repository"] = resource_id or self.resource
        context.outputs["image_registry"] = registry
        context.outputs["image_repository"] = f"{registry}/{project_path}/{self.name}"


# --- 3, 4. service accounts -----------------------------------------------------------------


class ServiceAccountStep(_GcpStep):
    """A service account of the pool; its email published as `context.outputs[output]` (and
    what `publish_more` adds)."""

    kind = "service-account"
    api = IAM_API
    service = "IAM"

    def __init__(
        self,
        gcp: _Gcp,
        name: str,
        *,
        purpose: str,
        output: str,
        publish_more: Callable[[Context, str], None] | None = None,
    ) -> None:
        super().__init__(gcp, name)
        self.purpose = purpose
        self.output = output
        self.publish_more = publish_more
        self.email = account_email(name, gcp.project)

    def _call(self, method: str, permission: str, **params: Any) -> Any:
        return self.gcp.call(
            getattr(self.gcp.clients.iam(), method),
            action=f"iam.serviceAccounts.{permission}",
            resource=self.what,
            service=self.service,
            api=self.api,
            **params,
        )

    def find(self, context: Context) -> Found | None:
        if not self.api_ready(context):
            return None
        account = self._call(
            "get_service_account",
            "get",
            missing=True,
            request={"name": f"projects/{self.gcp.project}/serviceAccounts/{self.email}"},
        )
        if account is None:
            return None
        marker = _MARKER.search(account.description or "")
        return Found(str(account.email), bool(marker and marker.group(1) == context.pool))

    def create(self, context: Context) -> str:
        from google.cloud import iam_admin_v1

        description = f"{POOL_TAG}={context.pool}: {self.purpose}"
        account = self._call(
            "create_service_account",
            "create",
            create=True,
            request={
                "name": f"projects/{self.gcp.project}",
                "account_id": self.name,
                "service_account": iam_admin_v1.ServiceAccount(
                    display_name=f"skylane {context.pool} {self.name.rsplit('-', 1)[-1]}"[:100],
                    description=description[:256],
                ),
            },
        )
        self.gcp.accounts_made_here.add(str(account.email))
        return str(account.email)

    def delete(self, context: Context, resource_id: str) -> None:
        self._call(
            "delete_service_account",
            "delete",
            missing=True,
            request={"name": f"projects/-/serviceAccounts/{resource_id}"},
        )

    def publish(self, context: Context, resource_id: str | None) -> None:
        email = resource_id or self.email
        context.outputs[self.output] = email
        if self.publish_more is not None:
            self.publish_more(context, email)


# --- 5, 6, 7. IAM bindings ------------------------------------------------------------------


def _add_member(policy: Any, role: str, member: str) -> bool:
    """Add `member` to the unconditional binding of `role`; whether the policy changed."""
    for binding in policy.bindings:
        if binding.role == role and not binding.HasField("condition"):
            if member in binding.members:
                return False
            binding.members.append(member)
            return True
    policy.bindings.add(role=role, members=[member])
    return True


def _remove_member(policy: Any, role: str, member: str) -> bool:
    """Take `member` (and the `deleted:` form of it) out of `role`'s unconditional binding,
    and nothing else; whether the policy changed."""
    gone = f"deleted:{member}?uid="
    changed = False
    for binding in policy.bindings:
        if binding.role != role or binding.HasField("condition"):
            continue
        kept = [m for m in binding.members if m != member and not m.startswith(gone)]
        if len(kept) != len(binding.members):
            del binding.members[:]
            binding.members.extend(kept)
            changed = True
    if changed:
        bindings = [b for b in policy.bindings if b.members]
        del policy.bindings[:]
        policy.bindings.extend(bindings)
    return changed


def _has_member(policy: Any, role: str, member: str) -> bool:
    return any(
        b.role == role and not b.HasField("condition") and member in b.members
        for b in policy.bindings
    )


class _IamBindingStep(_GcpStep):
    """`member` in `role` on a resource's IAM policy. The resource id records the resource,
    role and member, so deprovision needs nothing else."""

    permission_prefix = ""
    service = ""

    def __init__(
        self,
        gcp: _Gcp,
        *,
        role: str,
        member: str,
        name: str | None = None,
        replaces: str | None = None,
    ) -> None:
        super().__init__(gcp, name or f"{role} {member}")
        self.role = role
        self.member = member
        # A member this binding takes the place of (the previous control plane): removed.
        self.replaces = replaces if replaces != member else None

    @property
    def resource(self) -> str:
        raise NotImplementedError

    def _get(self, resource: str) -> Any:
        raise NotImplementedError

    def _set(self, resource: str, policy: Any) -> Any:
        raise NotImplementedError

    def _read(self, resource: str) -> Any:
        return self._get(resource)

    @property
    def resource_id(self) -> str:
        return f"{self.resource}#{self.role}#{self.member}"

    def find(self, context: Context) -> Found | None:
        if self.api is not None and not self.api_ready(context):
            return None
        policy = self._read(self.resource)
        if policy is None or not _has_member(policy, self.role, self.member):
            return None
        drift = []
        if self.replaces and _has_member(policy, self.role, self.replaces):
            drift.append(f"{self.replaces} still has {self.role}")
        return Found(self.resource_id, owned=False, drift=tuple(drift))

    def create(self, context: Context) -> str:
        def change(policy: Any) -> bool:
            added = _add_member(policy, self.role, self.member)
            removed = bool(self.replaces) and _remove_member(policy, self.role, self.replaces)
            return added or removed

        self._write(self.resource, change)
        return self.resource_id

    def update(self, context: Context, found: Found) -> None:
        if self.replaces:
            replaced = self.replaces
            self._write(self.resource, lambda policy: _remove_member(policy, self.role, replaced))

    def delete(self, context: Context, resource_id: str) -> None:
        resource, role, member = resource_id.split("#", 2)
        self._write(resource, lambda policy: _remove_member(policy, role, member))

    def _write(self, resource: str, change: Callable[[Any], bool]) -> None:
        """Read the policy, change it, write it with the etag read; again when the policy
        changed in between (ABORTED) or the write's answer was lost (it is read again first).
        Nothing to do when the resource is gone or the change is already there."""
        account = self.member.removeprefix("serviceAccount:")
        member_made_here = account in self.gcp.accounts_made_here
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            policy = self._read(resource)
            if policy is None or not change(policy):
                return
            try:
                self._set(resource, policy)
                return
            except TransientProviderError as exc:
                cause = exc.message
            except ProviderError:
                raise
            except Exception as exc:  # what `_set` lets through untranslated
                if _concurrent(exc):
                    cause = "the policy changed while it was being written"
                elif member_made_here and time.monotonic() - started < PROPAGATION_SECONDS:
                    # A just-created account may take a while to be known to IAM policies.
                    time.sleep(min(0.1 * 2**attempt, 5.0))
                    continue
                else:
                    raise translate_error(
                        exc,
                        action=f"{self.permission_prefix}.setIamPolicy",
                        resource=self.what,
                        caller=CALLER,
                        service=self.service,
                    ) from None
            if attempt >= POLICY_WRITE_ATTEMPTS:
                raise ProviderConflict(
                    f"{self.what}: {cause}, {attempt} times; run again",
                    details={"action": f"{self.permission_prefix}.setIamPolicy"},
                )
            time.sleep(PROVIDER_CALLS.delay(attempt, None))

    def publish(self, context: Context, resource_id: str | None) -> None:
        return None


class ProjectIamBindingStep(_IamBindingStep):
    kind = "project-iam-binding"
    permission_prefix = "resourcemanager.projects"
    service = "Resource Manager"

    @property
    def resource(self) -> str:
        return f"projects/{self.gcp.project}"

    def _get(self, resource: str) -> Any:
        return self.gcp.call(
            self.gcp.clients.projects().get_iam_policy,
            action="resourcemanager.projects.getIamPolicy",
            resource=f"the IAM policy of {resource}",
            service=self.service,
            request={"resource": resource, "options": {"requested_policy_version": 3}},
        )

    def _set(self, resource: str, policy: Any) -> Any:
        return self.gcp.call(
            self.gcp.clients.projects().set_iam_policy,
            action="resourcemanager.projects.setIamPolicy",
            resource=f"the IAM policy of {resource}",
            service=self.service,
            create=True,
            passthrough=_retry_write,
            request={"resource": resource, "policy": policy},
        )


class ServiceAccountIamBindingStep(_IamBindingStep):
    """`member` in `role` on the IAM policy of the service account `account` (an email)."""

    kind = "service-account-iam-binding"
    permission_prefix = "iam.serviceAccounts"
    api = IAM_API
    service = "IAM"

    def __init__(self, gcp: _Gcp, *, account: str, **binding: Any) -> None:
        super().__init__(gcp, **binding)
        self.account = account

    @property
    def resource(self) -> str:
        return f"projects/{self.gcp.project}/serviceAccounts/{self.account}"

    def _read(self, resource: str) -> Any:
        # None when the account does not exist (yet, in a plan; any more, in a delete).
        return self.gcp.call(
            self.gcp.clients.iam().get_iam_policy,
            action="iam.serviceAccounts.getIamPolicy",
            resource=f"the IAM policy of {resource}",
            service=self.service,
            api=self.api,
            missing=True,
            request={"resource": resource, "options": {"requested_policy_version": 3}},
        )

    def _set(self, resource: str, policy: Any) -> Any:
        return self.gcp.call(
            self.gcp.clients.iam().set_iam_policy,
            action="iam.serviceAccounts.setIamPolicy",
            resource=f"the IAM policy of {resource}",
            service=self.service,
            api=self.api,
            create=True,
            passthrough=_retry_write,
            request={"resource": resource, "policy": policy},
        )


# --- the list -------------------------------------------------------------------------------


def cloud_run_steps(
    clients: GoogleClients,
    pool_name: str,
    *,
    project: str,
    region: str,
    control_plane: str | None = None,
    previous_control_plane: str | None = None,
    untagged_image_days: int = DEFAULT_UNTAGGED_IMAGE_DAYS,
) -> list[Step]:
    """The steps that provision a `cloud-run:push` pool named `pool_name` in `project` and
    `region`, in dependency order. `control_plane`: the member allowed to impersonate the
    dispatcher account (none: whoever the project's IAM already allows); its step is named
    after the role alone, so a pool's records name it whoever the member, and
    `previous_control_plane`, the member it replaces, loses the role."""
    gcp = _Gcp(clients, project, region)
    short = account_prefix(pool_name)
    runtime = ServiceAccountStep(
        gcp,
        f"{short}-run",
        purpose="the identity the pool's Cloud Run jobs run as",
        output="runtime_service_account",
    )
    dispatcher = ServiceAccountStep(
        gcp,
        f"{short}-dispatch",
        purpose="impersonated by the skylane control plane to run the pool's jobs",
        output="dispatcher_service_account",
    )

    def publish_runtime(context: Context, email: str) -> None:
        context.outputs["project"] = project
        context.outputs["region"] = region
        context.defaults.update(project=project, region=region, service_account_name=email)

    def publish_dispatcher(context: Context, email: str) -> None:
        context.outputs["dispatcher_credentials"] = {"impersonate_service_account": email}

    runtime.publish_more = publish_runtime
    dispatcher.publish_more = publish_dispatcher
    dispatcher_member = f"serviceAccount:{dispatcher.email}"
    steps: list[Step] = [ServiceApiStep(gcp, api) for api in APIS]
    steps.append(
        ArtifactRegistryRepositoryStep(
            gcp, f"skylane-{slug(pool_name)}", pool=pool_name, untagged_days=untagged_image_days
        )
    )
    steps += [runtime, dispatcher]
    steps += [
        ProjectIamBindingStep(gcp, role=role, member=dispatcher_member)
        for role in DISPATCHER_PROJECT_ROLES
    ]
    steps.append(
        ServiceAccountIamBindingStep(
            gcp, account=runtime.email, role=ACT_AS_ROLE, member=dispatcher_member
        )
    )
    if control_plane:
        steps.append(
            ServiceAccountIamBindingStep(
                gcp,
                account=dispatcher.email,
                role=TOKEN_CREATOR_ROLE,
                member=check_member(control_plane),
                name=f"{TOKEN_CREATOR_ROLE} control-plane",
                replaces=previous_control_plane,
            )
        )
    return steps


def cloud_run_provisioner(pool_name: str, options: ProvisionOptions) -> Provisioner:
    """The provisioner of a `cloud-run:push` pool: its steps, and the settings the pool keeps
    (the ones given, with `project`, `region` and `control_plane`: deprovision, given the
    pool's settings alone, then has the control plane's binding step too; a new
    `--control-plane` replaces the one in the settings, which loses the role). InvalidInput
    naming `--region`, `--project` or `--control-plane` when one is missing or malformed."""
    from skylane.provisioning.registry import Provisioner

    settings = dict(options.settings)
    region = options.region or settings.get("region")
    if not region:
        raise InvalidInput(
            "a cloud-run:push pool needs a region: pass --region (a Cloud Run region such as "
            "europe-west1)",
            field="--region",
        )
    check_region(region, field="--region")
    previous = settings.get("control_plane") or None
    control_plane = options.control_plane or previous
    if control_plane:
        control_plane = settings["control_plane"] = check_member(str(control_plane))
    clients = GoogleClients(settings, options.credentials)
    project = options.project or settings.get("project") or clients.default_project()
    if not project:
        raise InvalidInput(
            "no Google Cloud project: pass --project (Application Default Credentials name none)",
            field="--project",
        )
    check_project(project, field="--project")
    settings.update(project=project, region=region)
    steps = cloud_run_steps(
        clients,
        pool_name,
        project=project,
        region=region,
        control_plane=control_plane,
        previous_control_plane=str(previous) if previous else None,
    )
    return Provisioner(steps=steps, context=Context(pool=pool_name), pool_settings=settings)

"""The Azure Container Instances adapter: runs of an `aci:push` (or pulled `aci`; alias
`azure-container-instance`) pool run as ACI container groups, one group per attempt.

- `render` (pure) turns the rendered job configuration into an `AciGroupRequest` (see
  `skylane.adapters.aci_template`): the container group named from the attempt's idempotency
  key (`group_name_for`), restart policy Never.
- `submit` looks first: a group that exists for the key is adopted, never recreated (a PUT of an
  existing group would update it). Otherwise it PUTs the group with `If-None-Match: *`, so a
  racing second PUT is refused rather than applied, and returns at once: it does not wait for
  the create operation, only for Azure to accept it. Secure values (`secure_env`, a registry
  password) are read from the control plane's environment at this moment.
- A ref is the group's resource id,
  `/subscriptions/S/resourceGroups/RG/providers/Microsoft.ContainerInstance/containerGroups/N`.
- `statuses` reads each group (ACI has no batch read; a list leaves out the instance view) and
  maps its provisioning state and its first container's state to a ProviderState; a failed
  run's message carries the exit code, Azure's events and the container's last log lines. A
  group that has not started its container within its `task_start_timeout_seconds` is stopped.
- `cancel` stops the group, then deletes it unless it is tagged `skylane-keep-group=true`;
  `cleanup` deletes it on the same condition; `logs` reads the container's logs (ACI keeps them
  only while the group exists), for `run logs` when the runtime sent none.
- Errors: 429 honours `Retry-After`; quota errors (`ContainerGroupQuotaReached`...) are
  `QuotaError` and regional capacity errors `CapacityError`, which the dispatcher parks and
  retries later; 5xx and lost answers are retried (looking first); 400, 403 and 404 fail at
  once with a message that says what to fix.

ResourceCache kind `aci-group` (group name -> `SUBSCRIPTION/RESOURCE_GROUP`), written before the
first PUT so `find` knows where to look when the template names another resource group than
the pool's; removed by `cleanup`.

Pool settings: `subscription_id`, `resource_group_name`, `location` (defaults for the job
variables), `endpoint_url` (or `SKYLANE_ACI_ENDPOINT`: the Resource Manager endpoint, e.g. an
Azure Stack Hub's, or `skylane.testing.azure.AciEmulator`), `ca_bundle` (or
`SKYLANE_ACI_CA_BUNDLE`: a PEM file to trust for that endpoint's TLS certificate).
Credentials: `DefaultAzureCredential` (environment, workload identity, managed identity, Azure
CLI login), with `pool.credentials["managed_identity_client_id"]` choosing a user-assigned
managed identity; never a stored secret. Only an endpoint on this machine's loopback interface
(a local emulator) is called with a placeholder token instead.

`azure-mgmt-containerinstance`, `azure-identity` and `azure-core` are imported lazily, in this
module only.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlparse

from skylane.adapters import aci_template as tpl
from skylane.adapters.base import (
    CloudAdapter,
    ProviderLogLine,
    ProviderState,
    ProviderStatus,
    ResourceCache,
    RunContext,
    retry_after_header,
    scrub,
)
from skylane.errors import (
    CapacityError,
    PermanentProviderError,
    ProviderAuthError,
    ProviderConflict,
    ProviderError,
    ProviderNotFound,
    QuotaError,
    ThrottledError,
    TransientProviderError,
)
from skylane.models import Pool
from skylane.rate_limits import ACI_CREATE_CONTAINER_GROUP, RateLimiter, RateScope, limits_for
from skylane.settings import Settings

log = logging.getLogger(__name__)

ENDPOINT_VARIABLE = "SKYLANE_ACI_ENDPOINT"
CA_BUNDLE_VARIABLE = "SKYLANE_ACI_CA_BUNDLE"
DEFAULT_ENDPOINT = "https://management.azure.com"
CACHE_GROUPS = "aci-group"
# A 429 without Retry-After: Resource Manager's throttling windows are minutes long.
DEFAULT_RETRY_AFTER_SECONDS = 15.0
# `logs`: how many lines at most; a failed run's message: how many of the last lines.
MAX_LOG_LINES = 10_000
CRASH_LOG_LINES = 10
CRASH_LOG_CHARS = 2000
# The permission each call needs (for 403 messages and the README's minimal role).
WRITE = "Microsoft.ContainerInstance/containerGroups/write"
READ = "Microsoft.ContainerInstance/containerGroups/read"
DELETE = "Microsoft.ContainerInstance/containerGroups/delete"
STOP = "Microsoft.ContainerInstance/containerGroups/stop/action"
LOGS = "Microsoft.ContainerInstance/containerGroups/containers/logs/read"
# Azure's error codes for an exhausted quota and for a region without capacity right now.
_QUOTA_CODE = re.compile(r"Quota(Reached|Exceeded)$", re.IGNORECASE)
_CAPACITY_CODES = frozenset({"SkuNotAvailable", "InsufficientCapacity", "ResourcesNotAvailable"})
_CAPACITY_TEXT = "not available in the location"

_GROUP_REF = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<resource_group>[^/]+)"
    r"/providers/Microsoft\.ContainerInstance/containerGroups/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


def parse_ref(ref: str) -> re.Match[str]:
    """The parts of a container group ref; ValueError if `ref` is not one."""
    match = _GROUP_REF.match(ref) if isinstance(ref, str) else None
    if match is None:
        raise ValueError(f"not an ACI container group ref: {ref!r}")
    return match


def translate_error(
    exc: BaseException,
    *,
    action: str,
    resource: str,
    secrets: list[str] | tuple[str, ...] = (),
    caller: str | None = None,
) -> ProviderError:
    """An azure-core / azure-identity error as a skylane ProviderError, its message scrubbed of
    `secrets`. `action` is the Azure permission the call needs. `caller` names whose
    credentials made the call when they are not the control plane's (provisioning runs with
    the user's, e.g. "your Azure credentials"): 401, 403 and missing-credential messages then
    speak of them."""
    from azure.core import exceptions as az

    def make(cls: type[ProviderError], text: str, **extra: Any) -> ProviderError:
        details = {"action": action, **extra.pop("details", {})}
        return cls(scrub(text, secrets), details=details, **extra)

    if isinstance(exc, az.ServiceRequestError):
        return make(TransientProviderError, f"cannot reach Azure for {action} on {resource}: {exc}")
    if isinstance(exc, az.ServiceResponseError):
        return make(
            TransientProviderError,
            f"Azure did not answer {action} on {resource} ({type(exc).__name__}); the call may "
            "have gone through",
            details={"ambiguous": True},
        )
    if not isinstance(exc, az.HttpResponseError):
        return make(TransientProviderError, f"{action} on {resource} failed: {exc}")
    status = exc.status_code
    error = getattr(exc, "error", None)
    code = str(getattr(error, "code", "") or "")
    message = str(getattr(error, "message", "") or exc.message or exc)
    details: dict[str, Any] = {"http_status": status} if status else {}
    if code:
        details["code"] = code
    said = f"{code}: {message}" if code else message
    if status is None and caller is not None:
        return make(
            ProviderAuthError,
            f"no Azure credentials for {action}: {caller} could not get a token; log in (az "
            "login), or set up environment credentials, a workload identity or a managed "
            f"identity where this command runs ({exc})",
        )
    if status is None:
        # A credential that could not get a token (azure-identity raises this class too).
        return make(
            ProviderAuthError,
            f"no Azure credentials for {action}: set up a managed identity, workload identity, "
            f"environment credentials or an Azure CLI login where the control plane runs ({exc})",
        )
    if status == 429:
        retry_after = retry_after_header(getattr(exc.response, "headers", None))
        return make(
            ThrottledError,
            f"Azure throttled {action} on {resource}: {said}",
            retry_after=retry_after if retry_after is not None else DEFAULT_RETRY_AFTER_SECONDS,
            details=details,
        )
    if _QUOTA_CODE.search(code):
        return make(
            QuotaError,
            f"the subscription's quota is used up for {resource}: {said}; the run waits for "
            "groups to end (or ask Azure for a higher quota)",
            details=details,
        )
    if code in _CAPACITY_CODES or (status < 500 and _CAPACITY_TEXT in message):
        return make(
            CapacityError,
            f"the region has no capacity for {resource} right now: {said}",
            details=details,
        )
    if status == 401 and caller is not None:
        return make(
            ProviderAuthError,
            f"Azure refused {caller} for {action}: {said}",
            details=details,
        )
    if status == 401:
        return make(
            ProviderAuthError,
            f"Azure refused the control plane's credentials for {action}: {said}",
            details=details,
        )
    if status == 403 and caller is not None:
        return make(
            ProviderAuthError,
            f"{action} on {resource} was denied: grant {caller} {action} (a role with this "
            f"permission on the subscription or resource group): {said}",
            details=details,
        )
    if status == 403:
        return make(
            ProviderAuthError,
            f"the control plane's identity may not {action} on {resource}: {said}. Grant it a "
            "role with this permission on the resource group (see the README's minimal role)",
            details=details,
        )
    if status == 404:
        return make(ProviderNotFound, f"{resource} not found ({action}): {said}", details=details)
    if status in (409, 412):
        return make(ProviderConflict, f"{resource}: {said}", details=details)
    if status >= 500:
        return make(
            TransientProviderError,
            f"Azure failed {action} on {resource}: {said}",
            details={**details, "ambiguous": True},
        )
    return make(
        PermanentProviderError, f"Azure refused {action} on {resource}: {said}", details=details
    )


def _not_found_hint(exc: ProviderNotFound, request: tpl.AciGroupRequest) -> str:
    code = exc.details.get("code")
    if code == "ResourceGroupNotFound":
        return (
            f"resource group {request.resource_group!r} does not exist in subscription "
            f"{request.subscription_id}: create it, or fix the resource_group_name job variable "
            "or pool setting"
        )
    if code in ("SubscriptionNotFound", "InvalidSubscriptionId"):
        return (
            f"subscription {request.subscription_id} is not known to Azure or not visible to "
            "the control plane's identity: fix subscription_id"
        )
    return exc.message


def group_state(group: Any) -> ProviderState:
    """A container group (SDK model) as a ProviderState, from its provisioning state, its
    instance view and its first container's current state."""
    # getattr(None, ...) is None: a view Azure left out reads as empty.
    provisioning = str(getattr(group, "provisioning_state", None) or "")
    view = getattr(group, "instance_view", None)
    group_status = str(getattr(view, "state", None) or "")
    containers = getattr(group, "containers", None) or []
    container_view = getattr(containers[0], "instance_view", None) if containers else None
    current = getattr(container_view, "current_state", None)
    container_status = str(getattr(current, "state", None) or "")
    exit_code = getattr(current, "exit_code", None)
    detail = str(getattr(current, "detail_status", None) or "")
    if group_status == "Stopped":
        return ProviderState(ProviderStatus.STOPPED, exit_code, "the container group was stopped")
    if container_status == "Terminated":
        if exit_code == 0:
            return ProviderState(ProviderStatus.SUCCEEDED, exit_code=0)
        said = f" ({detail})" if detail else ""
        code = "" if exit_code is None else f" with exit code {exit_code}"
        return ProviderState(
            ProviderStatus.FAILED, exit_code, f"the container terminated{code}{said}"
        )
    if provisioning == "Failed" or group_status == "Failed":
        events = _event_messages(container_view) + _event_messages(view)
        text = "; ".join(events[-3:]) or "provisioning failed"
        return ProviderState(ProviderStatus.FAILED, None, f"the container group failed: {text}")
    if container_status == "Running":
        return ProviderState(ProviderStatus.RUNNING)
    waiting = f"{provisioning or 'Pending'}" + (f", {detail}" if detail else "")
    return ProviderState(ProviderStatus.PENDING, message=waiting)


def _event_messages(view: Any) -> list[str]:
    if view is None:
        return []
    messages = []
    for event in getattr(view, "events", None) or []:
        text = str(getattr(event, "message", None) or getattr(event, "name", None) or "")
        if text and text not in messages:
            messages.append(text)
    return messages


class LoopbackCredential:
    """The token a local emulator gets: only ever used for an endpoint on loopback."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("skylane-local-emulator", int(time.time()) + 3600)


def is_loopback(url: str) -> bool:
    """Whether `url`'s host is this machine's loopback interface (a local emulator)."""
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AciAdapter(CloudAdapter):
    """Runs as Azure Container Instances container groups. See the module docstring."""

    provider: ClassVar[str] = "aci"

    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        *,
        cache: ResourceCache | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        super().__init__(pool, settings, cache=cache, limiter=limiter)
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._credential: Any = None
        # ref -> when this process first saw it waiting (the start timeout counts from it),
        # and the final state of refs already settled (read once, logs included).
        self._seen: dict[str, float] = {}
        self._final: dict[str, ProviderState] = {}

    # -- settings and clients ----------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return (self.setting("endpoint_url", ENDPOINT_VARIABLE) or DEFAULT_ENDPOINT).rstrip("/")

    def _load_credential(self) -> Any:
        if is_loopback(self.endpoint_url):
            return LoopbackCredential()
        from azure.identity import DefaultAzureCredential

        client_id = (self.pool.credentials or {}).get("managed_identity_client_id")
        options = {"managed_identity_client_id": str(client_id)} if client_id else {}
        return DefaultAzureCredential(**options)

    def client(self, subscription_id: str) -> Any:
        """The ContainerInstanceManagementClient for a subscription, made once. The SDK's own
        retries are off: `skylane.retries` decides, so a Retry-After is never slept twice."""
        with self._lock:
            if subscription_id not in self._clients:
                try:
                    from azure.mgmt.containerinstance import ContainerInstanceManagementClient
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise PermanentProviderError(
                        "the ACI adapter needs azure-mgmt-containerinstance and azure-identity "
                        f"(pip install 'skylane[azure]'): {exc}"
                    ) from None
                if self._credential is None:
                    try:
                        self._credential = self._load_credential()
                    except Exception as exc:  # noqa: BLE001 - translated
                        raise translate_error(
                            exc, action="authenticate", resource="Azure"
                        ) from None
                self._clients[subscription_id] = ContainerInstanceManagementClient(
                    credential=self._credential,
                    subscription_id=subscription_id,
                    base_url=self.endpoint_url,
                    connection_verify=self.setting("ca_bundle", CA_BUNDLE_VARIABLE) or True,
                    retry_total=0,
                    connection_timeout=self.settings.provider_timeout_seconds,
                    read_timeout=self.settings.provider_timeout_seconds,
                )
            return self._clients[subscription_id]

    # -- template and request ----------------------------------------------------------------

    @classmethod
    def default_template(cls) -> dict[str, Any]:
        return tpl.default_template()

    def render(self, job_configuration: dict[str, Any], context: RunContext) -> tpl.AciGroupRequest:
        return tpl.build_group_request(
            job_configuration,
            run_env=context.runtime_env(),
            group_name=tpl.group_name_for(context.idempotency_key),
            labels=context.labels(),
            subscription_id=self.setting("subscription_id"),
            resource_group=self.setting("resource_group_name"),
            location=self.setting("location"),
            image=context.image,
        )

    def describe(self, request: tpl.AciGroupRequest) -> dict[str, Any]:
        return tpl.describe_request(request)

    # -- calls -------------------------------------------------------------------------------

    def _translate(
        self, exc: BaseException, *, action: str, resource: str, secrets: Iterable[str]
    ) -> ProviderError:
        return translate_error(exc, action=action, resource=resource, secrets=tuple(secrets))

    def _get_group(self, subscription: str, resource_group: str, name: str) -> Any | None:
        client = self.client(subscription)
        try:
            return self._call(
                client.container_groups.get,
                READ,
                f"container group {name}",
                resource_group_name=resource_group,
                container_group_name=name,
            )
        except ProviderNotFound:
            return None  # no such group (or no such resource group: nothing exists there)

    # -- submission --------------------------------------------------------------------------

    def submit(self, request: tpl.AciGroupRequest, key: str) -> str:
        """Create the attempt's container group; its resource id. With the same key, never a
        second group (the group's name is the key's, and an existing one is adopted)."""
        if not isinstance(request, tpl.AciGroupRequest):
            raise TypeError(
                f"AciAdapter.submit takes an AciGroupRequest, not {type(request).__name__}"
            )
        if not key:
            raise ValueError("an idempotency key is required")
        until = time.monotonic() + self.settings.submit_deadline_seconds
        body = request.resolved(os.environ)
        secrets = [*request.secret_values(), *(os.environ[r.source] for r in request.references)]
        subscription, resource_group, name = (
            request.subscription_id,
            request.resource_group,
            request.group_name,
        )
        if self.cache.get(CACHE_GROUPS, name) is None:
            self.cache.put(CACHE_GROUPS, name, f"{subscription}/{resource_group}")
        client = self.client(subscription)
        payload = json.dumps(body).encode()

        def create_once() -> str:
            existing = self._get_group(subscription, resource_group, name)
            if existing is not None:
                log.info("adopted ACI container group %s (it existed)", name)
                return str(existing.id or request.resource_id)
            timeout = max(0.0, until - time.monotonic())
            self.limiter.acquire(
                RateScope(ACI_CREATE_CONTAINER_GROUP, subscription, request.location),
                limits_for(ACI_CREATE_CONTAINER_GROUP, self.pool.settings),
                timeout=timeout,
            )
            try:
                poller = self._call(
                    client.container_groups.begin_create_or_update,
                    WRITE,
                    f"container group {name}",
                    secrets,
                    resource_group_name=resource_group,
                    container_group_name=name,
                    # The body exactly as rendered (a model would drop what it does not know).
                    container_group=payload,
                    content_type="application/json",
                    headers={"If-None-Match": "*"},
                    polling=False,
                )
            except ProviderConflict as exc:
                found = self._get_group(subscription, resource_group, name)
                if found is not None:
                    log.info("adopted ACI container group %s (created meanwhile)", name)
                    return str(found.id or request.resource_id)
                raise PermanentProviderError(exc.message, details=exc.details) from None
            except ProviderNotFound as exc:
                raise PermanentProviderError(
                    _not_found_hint(exc, request), details=exc.details
                ) from None
            group = poller.result()
            return str(getattr(group, "id", None) or request.resource_id)

        ref = self._retry(create_once, until)
        log.info("started ACI container group %s", ref)
        return ref

    # -- find ------------------------------------------------------------------------------

    def find(self, key: str) -> str | None:
        """The group created for `key`, where submit recorded it (else in the pool's
        subscription and resource group); None when there is none."""
        name = tpl.group_name_for(key)
        where = self.cache.get(CACHE_GROUPS, name)
        if where:
            subscription, _, resource_group = where.partition("/")
        else:
            subscription = self.setting("subscription_id") or ""
            resource_group = self.setting("resource_group_name") or ""
            if not subscription or not resource_group:
                return None
        group = self._retry(lambda: self._get_group(subscription, resource_group, name))
        if group is None:
            return None
        return str(group.id or tpl.group_resource_id(subscription, resource_group, name))

    # -- statuses ----------------------------------------------------------------------------

    def statuses(self, refs: list[str]) -> dict[str, ProviderState]:
        """The state of each ref, one GET each. A ref whose call fails is left out of the answer
        (asked again later); when every call fails, the first error is raised."""
        result: dict[str, ProviderState] = {}
        errors: list[ProviderError] = []
        for ref in dict.fromkeys(refs):
            if ref in self._final:
                result[ref] = self._final[ref]
                continue
            try:
                parsed = parse_ref(ref)
            except ValueError as exc:
                result[ref] = ProviderState(ProviderStatus.NOT_FOUND, message=str(exc))
                continue
            try:
                group = self._retry(lambda p=parsed: self._get_group(*p.groups()))
            except ProviderError as exc:
                log.warning("cannot read ACI container group %s: %s", ref, exc)
                errors.append(exc)
                continue
            if group is None:
                result[ref] = ProviderState(
                    ProviderStatus.NOT_FOUND,
                    message=f"ACI has no container group {parsed['name']!r}",
                )
                continue
            result[ref] = self._state(ref, parsed, group)
        if errors and not result:
            raise errors[0]
        return result

    def _state(self, ref: str, parsed: re.Match[str], group: Any) -> ProviderState:
        state = group_state(group)
        if state.status == ProviderStatus.PENDING:
            return self._enforce_start_timeout(ref, group) or state
        if state.status == ProviderStatus.FAILED:
            lines = self._last_lines(parsed, group)
            if lines:
                state = ProviderState(
                    state.status, state.exit_code, f"{state.message}; last lines:\n{lines}"
                )
        if state.status.ended:
            self._final[ref] = state
            self._seen.pop(ref, None)
        return state

    def _enforce_start_timeout(self, ref: str, group: Any) -> ProviderState | None:
        try:
            timeout = int((group.tags or {}).get(tpl.TAG_START_TIMEOUT) or 0)
        except ValueError:
            timeout = 0
        first_seen = self._seen.setdefault(ref, time.time())
        if timeout <= 0 or time.time() - first_seen <= timeout:
            return None
        try:
            self.cancel(ref)
        except ProviderError as exc:
            log.warning("cannot stop ACI container group %s that did not start: %s", ref, exc)
            return None
        state = ProviderState(
            ProviderStatus.STOPPED,
            message=f"the container did not start within {timeout} s; skylane stopped the group",
        )
        self._final[ref] = state
        return state

    def _last_lines(self, parsed: re.Match[str], group: Any) -> str:
        """The container's last log lines for a crash message ("" when there are none)."""
        try:
            lines = self._read_logs(parsed, group, tail=CRASH_LOG_LINES, timestamps=False)
        except ProviderError as exc:
            log.info("no logs for ACI container group %s: %s", parsed["name"], exc)
            return ""
        text = "\n".join(lines)
        return text[-CRASH_LOG_CHARS:]

    # -- cancel, cleanup, teardown, logs -----------------------------------------------------

    def _stop(self, ref: str) -> None:
        parsed = parse_ref(ref)
        subscription, resource_group, name = parsed.groups()
        client = self.client(subscription)
        self._retry(
            lambda: self._call(
                client.container_groups.stop,
                STOP,
                f"container group {name}",
                resource_group_name=resource_group,
                container_group_name=name,
            )
        )

    def cancel(self, ref: str) -> None:
        """Stop the group, then delete it unless it is kept; ProviderNotFound if Azure does not
        know it."""
        try:
            parse_ref(ref)
        except ValueError as exc:
            raise ProviderNotFound(str(exc)) from None
        try:
            self._stop(ref)
        except ProviderConflict as exc:
            # ContainerGroupTransitioning: a group still provisioning cannot be stopped, but it
            # can be deleted, which stops it too. Even a kept one: else it would go on to start
            # the cancelled run (and nothing ran in it yet to inspect).
            log.info("ACI container group %s cannot be stopped yet (%s); deleting it", ref, exc)
            self._delete(ref, keep_if_tagged=False)
            return
        self.cleanup(ref)

    def cleanup(self, ref: str) -> None:
        """Delete the group unless it is tagged `skylane-keep-group=true`; a group that is
        already gone is fine."""
        self._delete(ref, keep_if_tagged=True)

    def _delete(self, ref: str, *, keep_if_tagged: bool) -> None:
        try:
            parsed = parse_ref(ref)
        except ValueError:
            return
        subscription, resource_group, name = parsed.groups()
        group = self._retry(lambda: self._get_group(subscription, resource_group, name))
        if group is not None and not (
            keep_if_tagged and (group.tags or {}).get(tpl.TAG_KEEP_GROUP) == "true"
        ):
            client = self.client(subscription)
            try:
                self._retry(
                    lambda: self._call(
                        client.container_groups.begin_delete,
                        DELETE,
                        f"container group {name}",
                        resource_group_name=resource_group,
                        container_group_name=name,
                        polling=False,
                    )
                )
                log.info("deleted ACI container group %s", name)
            except ProviderNotFound:
                pass
        self.cache.delete(CACHE_GROUPS, name)
        # The run is over: nothing will ask about this ref again.
        self._final.pop(ref, None)
        self._seen.pop(ref, None)

    def teardown(self) -> None:
        """Nothing: every group skylane creates is deleted by `cleanup` (or kept on purpose)."""

    def logs(self, ref: str, since: datetime | None = None) -> list[ProviderLogLine]:
        """The container's lines from the ACI logs API, oldest first, at most `MAX_LOG_LINES`;
        lines at or before `since` (naive: UTC) are left out. ACI keeps them only while the
        group exists, and does not tell stdout from stderr."""
        try:
            parsed = parse_ref(ref)
        except ValueError as exc:
            raise ProviderNotFound(str(exc)) from None
        group = self._retry(lambda: self._get_group(*parsed.groups()))
        if group is None:
            raise ProviderNotFound(
                f"ACI has no container group {parsed['name']!r} (its logs went with it)"
            )
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        lines = []
        for text in self._read_logs(parsed, group, tail=MAX_LOG_LINES, timestamps=True):
            stamp, _, message = text.partition(" ")
            at = _parse_timestamp(stamp)
            if at is None:
                at, message = datetime.now(UTC), text
            if since is not None and at <= since:
                continue
            lines.append(ProviderLogLine(timestamp=at, stream="stdout", message=message))
        return lines

    def _read_logs(
        self, parsed: re.Match[str], group: Any, *, tail: int, timestamps: bool
    ) -> list[str]:
        subscription, resource_group, name = parsed.groups()
        containers = group.containers or []
        if not containers:
            return []
        client = self.client(subscription)
        found = self._retry(
            lambda: self._call(
                client.containers.list_logs,
                LOGS,
                f"the logs of container group {name}",
                resource_group_name=resource_group,
                container_group_name=name,
                container_name=containers[0].name,
                tail=tail,
                timestamps=timestamps,
            )
        )
        content = getattr(found, "content", None) or ""
        return [line for line in content.splitlines() if line.strip()]


def _parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 time with up to nanoseconds (what ACI prefixes log lines with)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        return None
    base, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    try:
        return datetime.fromisoformat(f"{base}.{micro}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:
        return None


__all__ = [
    "AciAdapter",
    "LoopbackCredential",
    "group_state",
    "is_loopback",
    "parse_ref",
    "translate_error",
]

"""The Cloud Run adapter: runs of a `cloud-run:push` (or pulled `cloud-run`; alias
`cloud-run-v2`) pool run as Google Cloud Run jobs, one job per attempt.

- `render` (pure) turns the rendered job configuration into a `CloudRunJobRequest` (see
  `skylane.adapters.cloud_run_template`): the Cloud Run v2 Job with `startExecutionToken`, so
  creating the job starts its single execution. The job id and the token come from the
  attempt's idempotency key (`job_id_for`, `execution_token_for`). A job whose execution must
  be kept (`keep_job`) carries the label `skylane-keep-job=true`, so `cleanup` knows from the
  job alone.
- `submit` is one repeatable call, CreateJob(parent, job_id, job): 409 ALREADY_EXISTS means the
  attempt's job exists, and its execution is adopted; after an answer that may hide a call
  that went through (5xx, timeout, dropped connection) `find` looks before trying again. So
  one attempt never has two executions. It waits for the operation only as long as it takes to
  name the execution (the operation's metadata or the job's `latestCreatedExecution`), never
  until the execution ends.
- A ref is the execution's full resource name,
  `projects/P/locations/R/jobs/J/executions/E`.
- `statuses` reads each execution (Cloud Run has no batch call); `cancel` cancels it;
  `cleanup` deletes its job unless the job is labelled `skylane-keep-job=true`; `logs` reads
  the execution's lines from Cloud Logging (they outlive the job), for `run logs` when the
  runtime sent none.
- A 429 is a per-minute quota: it is raised at once with a retry time at least 30 s away, and
  the dispatcher frees the claim until then (no thread sleeps on it).

ResourceCache kind `cloud-run-job` (job id -> `projects/P/locations/R`), written before the
first CreateJob so `find` knows where to look when the template names another region than the
pool's; removed by `cleanup`.

Pool settings: `project`, `region`, `endpoint_url` (or the environment variable
`SKYLANE_CLOUD_RUN_ENDPOINT`: an `http(s)://host:port` the official client's REST transport is
pointed at with anonymous credentials, e.g. `skylane.testing.gcp.CloudRunEmulator`).
The Cloud Logging client uses the same endpoint (the emulator serves `entries:list` too).
Credentials: Application Default Credentials (`google.auth.default`), impersonating
`pool.credentials["impersonate_service_account"]` when set; never a key file.

`google-cloud-run`, `google-cloud-logging` and `google-auth` are imported lazily, in this
module only.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import unquote

from skylane.adapters import cloud_run_template as tpl
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
    PermanentProviderError,
    ProviderAuthError,
    ProviderConflict,
    ProviderError,
    ProviderNotFound,
    ThrottledError,
    TransientProviderError,
)
from skylane.models import Pool
from skylane.rate_limits import (
    CLOUD_RUN_RUN_JOB,
    RateLimiter,
    RateScope,
    limits_for,
)
from skylane.settings import Settings

log = logging.getLogger(__name__)

ENDPOINT_VARIABLE = "SKYLANE_CLOUD_RUN_ENDPOINT"
CACHE_JOBS = "cloud-run-job"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# A 429 from Cloud Run is a per-minute quota: never come back sooner than this.
THROTTLE_FLOOR_SECONDS = 30.0
# How often `submit` reads the job while its create operation has not named the execution yet.
EXECUTION_NAME_POLL_SECONDS = 0.2
# `logs`: how far back to look without `since` (the _Default bucket keeps 30 days), how many
# entries per entries.list page, and how many lines at most.
LOG_LOOKBACK = timedelta(days=30)
LOG_PAGE_SIZE = 1000
MAX_LOG_LINES = 10_000

_EXECUTION_REF = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/jobs/(?P<job>[^/]+)"
    r"/executions/(?P<execution>[^/]+)$"
)
_EXIT_CODE = re.compile(r"exit code (-?\d+)", re.IGNORECASE)


def parse_ref(ref: str) -> re.Match[str]:
    """The parts of an execution ref; ValueError if `ref` is not one."""
    match = _EXECUTION_REF.match(ref) if isinstance(ref, str) else None
    if match is None:
        raise ValueError(f"not a Cloud Run execution ref: {ref!r}")
    return match


def job_name_of(ref: str) -> str:
    """`projects/P/locations/R/jobs/J` of an execution ref."""
    return ref.split("/executions/", 1)[0] if "/executions/" in ref else parse_ref(ref)[0]


def _status_of(exc: Any) -> str:
    """The canonical status (`ALREADY_EXISTS`, `FAILED_PRECONDITION`...) of an API error."""
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            status = response.json().get("error", {}).get("status")
            if status:
                return str(status)
        except Exception:  # noqa: BLE001 - not JSON: fall back on the gRPC code
            pass
    code = getattr(exc, "grpc_status_code", None)
    return str(getattr(code, "name", "") or "")


POOL_CREDENTIALS = "the pool's credentials"


def translate_error(
    exc: BaseException,
    *,
    action: str,
    resource: str,
    secrets: list[str] | tuple[str, ...] = (),
    caller: str = POOL_CREDENTIALS,
    service: str = "Cloud Run",
) -> ProviderError:
    """A google-api-core / google-auth / requests error as a skylane ProviderError, its message
    scrubbed of `secrets`. `caller` names whose credentials made the call when they are not the
    pool's (provisioning runs with the user's: a refusal then says to grant `caller` the
    permission, `action` when Google names none); `service` the API called."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    own = caller == POOL_CREDENTIALS
    refused = "the pool's Google Cloud credentials" if own else caller

    def make(cls: type[ProviderError], text: str, **extra: Any) -> ProviderError:
        details = {"action": action, **extra.pop("details", {})}
        return cls(scrub(text, secrets), details=details, **extra)

    if isinstance(exc, requests.exceptions.Timeout | requests.exceptions.ConnectionError):
        return make(
            TransientProviderError,
            f"{service} did not answer {action} on {resource} ({type(exc).__name__}); the call "
            "may have gone through",
            details={"ambiguous": True},
        )
    if isinstance(exc, auth_exc.DefaultCredentialsError):
        return make(
            ProviderAuthError,
            f"no Google Cloud credentials for {action}: set up Application Default Credentials "
            f"{'where the control plane runs' if own else 'where you run skylane'} ({exc})",
        )
    if isinstance(exc, auth_exc.TransportError):
        return make(
            TransientProviderError,
            f"cannot reach Google to authenticate {action}: {exc}",
            details={"ambiguous": True},
        )
    if isinstance(exc, auth_exc.GoogleAuthError):
        cls = TransientProviderError if getattr(exc, "retryable", False) else None
        return make(
            cls or ProviderAuthError,
            f"{refused} were refused for {action}: {exc}",
        )
    if not isinstance(exc, gexc.GoogleAPICallError):
        return make(TransientProviderError, f"{action} on {resource} failed: {exc}")

    status = _status_of(exc)
    message = str(getattr(exc, "message", "") or exc)
    details: dict[str, Any] = {"status": status} if status else {}
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        details["http_status"] = code
    if isinstance(exc, gexc.TooManyRequests | gexc.ResourceExhausted):
        retry_after = max(
            THROTTLE_FLOOR_SECONDS,
            retry_after_header(getattr(getattr(exc, "response", None), "headers", None)) or 0.0,
        )
        return make(
            ThrottledError,
            f"{service} throttled {action} on {resource}: {message}",
            retry_after=retry_after,
            details=details,
        )
    if isinstance(exc, gexc.Forbidden | gexc.PermissionDenied | gexc.Unauthorized):
        metadata = getattr(exc, "metadata", None) or {}
        permission = metadata.get("permission") if isinstance(metadata, dict) else None
        if permission:
            details["permission"] = permission
            text = (
                f"{caller} lack the permission {permission!r} for {action} on {resource}: {message}"
            )
        else:
            text = f"{caller} may not {action} on {resource}: {message}"
        if not own:
            text = f"{text}; grant {caller} {permission or action}"
        return make(ProviderAuthError, text, details=details)
    if isinstance(exc, gexc.NotFound):
        text = f"{resource} not found ({action}): {message}"
        return make(ProviderNotFound, text, details=details)
    if isinstance(exc, gexc.Conflict):
        return make(ProviderConflict, f"{resource} already exists: {message}", details=details)
    if isinstance(exc, gexc.ServerError | gexc.DeadlineExceeded | gexc.ServiceUnavailable):
        return make(
            TransientProviderError,
            f"{service} failed {action} on {resource}: {message}",
            details={**details, "ambiguous": True},
        )
    return make(
        PermanentProviderError,
        f"{service} refused {action} on {resource}: {message}",
        details=details,
    )


def _has(message: Any, field: str) -> bool:
    try:
        return field in message
    except TypeError:
        return bool(getattr(message, field, None))


def execution_state(execution: Any) -> ProviderState:
    """A Cloud Run v2 Execution (proto-plus) as a ProviderState."""
    conditions = {c.type_: c for c in execution.conditions}
    completed = conditions.get("Completed")
    finished = _has(execution, "completion_time")
    if not finished:
        if _has(execution, "start_time") or execution.running_count:
            return ProviderState(ProviderStatus.RUNNING)
        return ProviderState(ProviderStatus.PENDING)
    if execution.cancelled_count:
        return ProviderState(ProviderStatus.STOPPED, message="the execution was cancelled")
    if execution.failed_count or not execution.succeeded_count:
        texts = []
        for kind in ("Completed", "Retry"):
            condition = conditions.get(kind)
            if condition is not None and condition.message:
                texts.append(condition.message)
        if not texts and completed is not None:
            texts.append(str(completed.reason or completed.execution_reason or ""))
        message = "; ".join(t for t in texts if t) or "the execution failed"
        if execution.log_uri:
            message += " — logs: " + execution.log_uri
        found = _EXIT_CODE.search(message)
        return ProviderState(
            ProviderStatus.FAILED,
            exit_code=int(found.group(1)) if found else None,
            message=message,
        )
    return ProviderState(ProviderStatus.SUCCEEDED, exit_code=0)


class CloudRunAdapter(CloudAdapter):
    """Runs as Google Cloud Run jobs. See the module docstring."""

    provider: ClassVar[str] = "cloud-run"

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
        self._clients: tuple[Any, Any] | None = None
        self._logging_clients: dict[str, Any] = {}
        self._credentials: Any = None
        self._credentials_project: str | None = None

    # -- settings and clients ----------------------------------------------------------------

    @property
    def endpoint_url(self) -> str | None:
        return self.setting("endpoint_url", ENDPOINT_VARIABLE)

    def _load_credentials(self) -> tuple[Any, str | None]:
        """(credentials, their project): anonymous against an endpoint, else ADC, impersonating
        the pool's service account when it names one."""
        if self.endpoint_url:
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials(), None
        import google.auth

        credentials, project = google.auth.default(scopes=list(SCOPES))
        target = (self.pool.credentials or {}).get("impersonate_service_account")
        if target:
            from google.auth import impersonated_credentials

            credentials = impersonated_credentials.Credentials(
                source_credentials=credentials,
                target_principal=str(target),
                target_scopes=list(SCOPES),
                lifetime=3600,
            )
        return credentials, project

    def _authenticated(self) -> Any:
        """The pool's credentials, loaded once (call with the lock held)."""
        if self._credentials is None:
            try:
                self._credentials, self._credentials_project = self._load_credentials()
            except Exception as exc:  # noqa: BLE001 - translated
                raise translate_error(exc, action="authenticate", resource="Google Cloud") from None
        return self._credentials

    def _client_options(self) -> Any:
        from google.api_core.client_options import ClientOptions

        endpoint = self.endpoint_url
        return ClientOptions(api_endpoint=endpoint) if endpoint else None

    def clients(self) -> tuple[Any, Any]:
        """(JobsClient, ExecutionsClient), REST transport, made once per adapter."""
        with self._lock:
            if self._clients is None:
                try:
                    from google.cloud import run_v2
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise PermanentProviderError(
                        "the Cloud Run adapter needs google-cloud-run (pip install "
                        f"'skylane[gcp]'): {exc}"
                    ) from None
                common = {
                    "transport": "rest",
                    "credentials": self._authenticated(),
                    "client_options": self._client_options(),
                }
                self._clients = (run_v2.JobsClient(**common), run_v2.ExecutionsClient(**common))
            return self._clients

    def logging_client(self, project: str) -> Any:
        """A Cloud Logging client for `project` over HTTP/JSON (the same transport as the Cloud
        Run clients, so the endpoint override reaches both), made once per project."""
        with self._lock:
            if project not in self._logging_clients:
                try:
                    from google.cloud import logging as cloud_logging
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise PermanentProviderError(
                        "reading Cloud Run logs needs google-cloud-logging (pip install "
                        f"'skylane[gcp]'): {exc}"
                    ) from None
                self._logging_clients[project] = cloud_logging.Client(
                    project=project,
                    credentials=self._authenticated(),
                    _use_grpc=False,
                    client_options=self._client_options(),
                )
            return self._logging_clients[project]

    def _project(self, given: str | None = None) -> str:
        project = given or self.setting("project")
        if not project:
            self.clients()
            project = self._credentials_project
        if not project:
            raise PermanentProviderError(
                "no Google Cloud project: set the pool's project setting or the project job "
                "variable"
            )
        return project

    def _parent(self) -> str:
        region = self.setting("region")
        if not region:
            raise PermanentProviderError("no region: set the pool's region setting")
        return f"projects/{self._project()}/locations/{region}"

    # -- template and request ----------------------------------------------------------------

    @classmethod
    def default_template(cls) -> dict[str, Any]:
        return tpl.default_template()

    def render(
        self, job_configuration: dict[str, Any], context: RunContext
    ) -> tpl.CloudRunJobRequest:
        key = context.idempotency_key
        return tpl.build_job_request(
            job_configuration,
            run_env=context.runtime_env(),
            job_id=tpl.job_id_for(key),
            execution_token=tpl.execution_token_for(key),
            labels=context.labels(),
            project=self.setting("project"),
            region=self.setting("region"),
            image=context.image,
        )

    def describe(self, request: tpl.CloudRunJobRequest) -> dict[str, Any]:
        return tpl.describe_request(request)

    # -- calls -------------------------------------------------------------------------------

    def _call_options(self) -> dict[str, Any]:
        return {"timeout": self.settings.provider_timeout_seconds}

    def _translate(
        self, exc: BaseException, *, action: str, resource: str, secrets: Iterable[str]
    ) -> ProviderError:
        return translate_error(exc, action=action, resource=resource, secrets=tuple(secrets))

    def _get_job(self, name: str) -> Any | None:
        jobs, _ = self.clients()
        try:
            return self._call(jobs.get_job, "run.jobs.get", f"job {name}", name=name)
        except ProviderNotFound:
            return None

    # -- submission --------------------------------------------------------------------------

    def submit(self, request: tpl.CloudRunJobRequest, key: str) -> str:
        """Create the attempt's job, which starts its one execution; the execution's name.
        With the same key, never a second execution (the job id is the key's)."""
        if not isinstance(request, tpl.CloudRunJobRequest):
            raise TypeError(
                f"CloudRunAdapter.submit takes a CloudRunJobRequest, not {type(request).__name__}"
            )
        if not key:
            raise ValueError("an idempotency key is required")
        until = time.monotonic() + self.settings.submit_deadline_seconds
        if not request.project:
            request = request.with_project(self._project())
        secrets = request.secret_values()
        parent, job_name = request.parent, request.job_name
        if self.cache.get(CACHE_JOBS, request.job_id) is None:
            self.cache.put(CACHE_JOBS, request.job_id, parent)

        from google.cloud import run_v2

        job = run_v2.Job.from_json(json.dumps(request.job))
        jobs, _ = self.clients()
        ambiguous = [False]

        def create_once() -> str:
            if ambiguous[0]:
                # The previous try may have created the job before its answer was lost.
                found = self._execution_of(job_name)
                if found:
                    return found
            timeout = max(0.0, until - time.monotonic())
            self.limiter.acquire(
                RateScope(CLOUD_RUN_RUN_JOB, request.project or "", request.region),
                limits_for(CLOUD_RUN_RUN_JOB, self.pool.settings),
                timeout=timeout,
            )
            try:
                operation = self._call(
                    jobs.create_job,
                    "run.jobs.create",
                    f"job {job_name}",
                    secrets,
                    parent=parent,
                    job=job,
                    job_id=request.job_id,
                )
            except ProviderConflict:
                found = self._execution_of(job_name)
                if found:
                    log.info("adopted Cloud Run execution %s (job existed)", found)
                    return found
                raise PermanentProviderError(
                    f"job {job_name} exists but has no execution: delete it to run again",
                    details={"action": "run.jobs.create"},
                ) from None
            except TransientProviderError:
                ambiguous[0] = True
                raise
            except ProviderNotFound as exc:
                raise PermanentProviderError(exc.message, details=exc.details) from None
            return self._execution_from_operation(operation, job_name, request, until)

        ref = self._retry(create_once, until)
        log.info("started Cloud Run execution %s", ref)
        return ref

    def _execution_from_operation(
        self, operation: Any, job_name: str, request: tpl.CloudRunJobRequest, until: float
    ) -> str:
        """The execution a create operation started, read from its metadata (a Job) or else
        from the job; never waits for the execution to end."""
        try:
            metadata = operation.metadata
        except Exception:  # noqa: BLE001 - metadata of another type: read the job instead
            metadata = None
        short = getattr(getattr(metadata, "latest_created_execution", None), "name", "")
        if short:
            return self._full_execution_name(job_name, short)
        while True:
            found = self._execution_of(job_name)
            if found:
                return found
            if time.monotonic() + EXECUTION_NAME_POLL_SECONDS >= until:
                break
            time.sleep(EXECUTION_NAME_POLL_SECONDS)
        # Cloud Run names the execution a token starts `{job id}-{token}`.
        return f"{job_name}/executions/{request.job_id}-{request.execution_token}"

    @staticmethod
    def _full_execution_name(job_name: str, name: str) -> str:
        return name if "/" in name else f"{job_name}/executions/{name}"

    def _execution_of(self, job_name: str) -> str | None:
        """The full name of the job's latest execution; None when the job does not exist (or
        has no execution yet)."""
        job = self._get_job(job_name)
        if job is None:
            return None
        short = job.latest_created_execution.name if _has(job, "latest_created_execution") else ""
        if short:
            return self._full_execution_name(job_name, short)
        return None

    # -- find ------------------------------------------------------------------------------

    def find(self, key: str) -> str | None:
        """The execution started for `key`: GetJob of the key's job id, in the parent recorded
        at submit (else the pool's project and region); None when there is no such job."""
        job_id = tpl.job_id_for(key)
        parent = self.cache.get(CACHE_JOBS, job_id) or self._parent()
        return self._execution_of(f"{parent}/jobs/{job_id}")

    # -- statuses ----------------------------------------------------------------------------

    def statuses(self, refs: list[str]) -> dict[str, ProviderState]:
        """The state of each ref, one GetExecution each. A ref whose call fails is left out of
        the answer (asked again later); when every call fails, the first error is raised."""
        _, executions = self.clients()
        result: dict[str, ProviderState] = {}
        errors: list[ProviderError] = []
        for ref in dict.fromkeys(refs):
            try:
                parse_ref(ref)
            except ValueError as exc:
                result[ref] = ProviderState(ProviderStatus.NOT_FOUND, message=str(exc))
                continue
            try:
                execution = self._retry(
                    lambda ref=ref: self._call(
                        executions.get_execution,
                        "run.executions.get",
                        f"execution {ref}",
                        name=ref,
                    )
                )
            except ProviderNotFound as exc:
                result[ref] = ProviderState(ProviderStatus.NOT_FOUND, message=exc.message)
                continue
            except ProviderError as exc:
                log.warning("cannot read Cloud Run execution %s: %s", ref, exc)
                errors.append(exc)
                continue
            result[ref] = execution_state(execution)
        if errors and not result:
            raise errors[0]
        return result

    # -- cancel, cleanup, teardown, logs -----------------------------------------------------

    def cancel(self, ref: str) -> None:
        """CancelExecution; an execution that already finished is left alone; ProviderNotFound
        if Cloud Run does not know it."""
        try:
            parse_ref(ref)
        except ValueError as exc:
            raise ProviderNotFound(str(exc)) from None
        _, executions = self.clients()
        try:
            self._retry(
                lambda: self._call(
                    executions.cancel_execution,
                    "run.executions.cancel",
                    f"execution {ref}",
                    name=ref,
                )
            )
        except PermanentProviderError as exc:
            if exc.details.get("status") == "FAILED_PRECONDITION":
                return  # already finished
            raise

    def cleanup(self, ref: str) -> None:
        """Delete the execution's job unless it is labelled `skylane-keep-job=true`; a job that
        is already gone is fine."""
        try:
            job_name = job_name_of(ref)
        except ValueError:
            return
        job = self._retry(lambda: self._get_job(job_name))
        if job is not None and job.labels.get(tpl.LABEL_KEEP_JOB) != "true":
            jobs, _ = self.clients()
            try:
                self._retry(
                    lambda: self._call(
                        jobs.delete_job, "run.jobs.delete", f"job {job_name}", name=job_name
                    )
                )
                log.info("deleted Cloud Run job %s", job_name)
            except ProviderNotFound:
                pass
        self.cache.delete(CACHE_JOBS, job_name.rsplit("/", 1)[-1])

    def teardown(self) -> None:
        """Nothing: every job skylane creates is deleted by `cleanup` (or kept on purpose)."""

    def logs(self, ref: str, since: datetime | None = None) -> list[ProviderLogLine]:
        """The execution's lines from Cloud Logging (`entries.list` on the project, filtered on
        the job, region and execution; they outlive the job), oldest first, at most
        `MAX_LOG_LINES`; lines at or before `since` (naive: UTC) are left out. Without `since`,
        the last `LOG_LOOKBACK` (Cloud Logging's default retention) is searched."""
        try:
            parsed = parse_ref(ref)
        except ValueError as exc:
            raise ProviderNotFound(str(exc)) from None
        if since is None:
            since, bound = datetime.now(UTC) - LOG_LOOKBACK, ">="
        else:
            since, bound = (since if since.tzinfo else since.replace(tzinfo=UTC)), ">"
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        query = "\n".join(
            [
                'resource.type="cloud_run_job"',
                f'resource.labels.job_name="{parsed["job"]}"',
                f'resource.labels.location="{parsed["region"]}"',
                f'labels."run.googleapis.com/execution_name"="{parsed["execution"]}"',
                f'timestamp{bound}"{stamp}"',
            ]
        )
        client = self.logging_client(parsed["project"])

        def read() -> list[ProviderLogLine]:
            from google.cloud import logging as cloud_logging

            try:
                entries = client.list_entries(
                    resource_names=[f"projects/{parsed['project']}"],
                    filter_=query,
                    order_by=cloud_logging.ASCENDING,
                    page_size=LOG_PAGE_SIZE,
                    max_results=MAX_LOG_LINES,
                )
                return [_log_line(entry) for entry in entries]
            except Exception as exc:  # noqa: BLE001 - every SDK error is translated
                raise translate_error(
                    exc, action="logging.logEntries.list", resource=f"the logs of {ref}"
                ) from None

        return self._retry(read)


def _log_line(entry: Any) -> ProviderLogLine:
    """A Cloud Logging entry as a ProviderLogLine; the stream is the log's last part (`stdout`,
    `stderr`, `system` for Cloud Run's own lines)."""
    log_name = unquote(getattr(entry, "log_name", "") or "")
    stream = log_name.rsplit("/", 1)[-1] or "stdout"
    payload = entry.payload
    message = payload if isinstance(payload, str) else json.dumps(payload, default=str)
    timestamp = entry.timestamp or datetime.now(UTC)
    return ProviderLogLine(timestamp=timestamp, stream=stream, message=message.rstrip("\n"))

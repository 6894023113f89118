"""A local Cloud Run Admin API v2 emulator (jobs, executions, long-running operations) for tests,
with Cloud Logging's `entries:list` for the executions' logs and, optionally, containers run as
local processes.

Why: there is no official Cloud Run emulator, and the behaviour the GCP adapter must get right
(idempotent creation through `start_execution_token`, executions that take time to start and
finish, throttling, calls that went through but were never answered, reading a run's logs back)
cannot be shown with mocks of the client. `CloudRunEmulator` is an HTTP server that answers the
REST calls the official `google-cloud-run` and `google-cloud-logging` clients make, in the JSON
shapes they parse, with executions that move through PENDING -> RUNNING -> SUCCEEDED / FAILED /
CANCELLED as time passes (or as their process runs), injectable faults, and a log of the
requests it received.

Pointing the official client at it (the REST transport honours a scheme in `api_endpoint`, so
no `url_scheme` knob is needed; the gRPC transport cannot be used)::

    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import run_v2
    from skylane.testing.gcp import CloudRunEmulator

    with CloudRunEmulator(start_seconds=0.05, run_seconds=0.2) as emulator:
        jobs = run_v2.JobsClient(
            transport="rest",
            client_options=ClientOptions(api_endpoint=emulator.url),  # "http://127.0.0.1:PORT"
            credentials=AnonymousCredentials(),
        )
        operation = jobs.create_job(parent="projects/p/locations/l", job_id="j", job=job)
        emulator.fail_execution("j-tok", "Task j-tok-task0 failed with exit code 1")
        emulator.throttle(rpc="GetExecution", count=2)      # the next 2 get_execution: 429
        emulator.timeout_after(rpc="CreateJob", seconds=5)  # done, but never answered
        emulator.requests(rpc="CreateJob")                  # what the client sent

`client_options={"api_endpoint": emulator.url}` (a dict) works as well. Anonymous credentials
send no Authorization header; the emulator checks none. The Cloud Logging client, over HTTP::

    from google.cloud import logging as gcl

    logs = gcl.Client(project="p", credentials=AnonymousCredentials(), _use_grpc=False,
                      client_options={"api_endpoint": emulator.url})
    for entry in logs.list_entries(resource_names=["projects/p"], filter_=..., page_size=100):
        entry.payload, entry.timestamp, entry.severity, entry.labels, entry.resource

(`list_entries` adds `AND timestamp>="<a day ago>"` to a filter that names no timestamp.)

What the client raises over REST (true of the real API too): the exception class comes from the
HTTP status alone, so 409 ALREADY_EXISTS is `google.api_core.exceptions.Conflict` (not its
subclass `AlreadyExists`), 429 RESOURCE_EXHAUSTED is `TooManyRequests` (not `ResourceExhausted`),
400 INVALID_ARGUMENT / FAILED_PRECONDITION are `BadRequest`, 403 is `Forbidden`, 404 `NotFound`,
503 `ServiceUnavailable`, 500 `InternalServerError`; the canonical status is in
`exc.response.json()["error"]["status"]`, and quota / permission errors carry a
`google.rpc.ErrorInfo` (`exc.reason`, `exc.metadata`). A read timeout or a dropped connection is
the `requests` exception itself (`requests.exceptions.ReadTimeout` / `ConnectionError`), not
wrapped. An operation that ended in error raises from its google.rpc code on `result()`
(`FailedPrecondition` for a failed execution).

What it serves (`{parent}` is `projects/{project}/locations/{location}`):

- `POST /v2/{parent}/jobs?jobId=ID` (CreateJob), `GET /v2/{parent}/jobs` (ListJobs),
  `GET|DELETE /v2/{parent}/jobs/{job}`, `POST /v2/{parent}/jobs/{job}:run` (RunJob, with
  `overrides`);
- `GET /v2/{parent}/jobs/{job}/executions` (ListExecutions, newest first, `pageSize` and
  `pageToken`), `GET|DELETE .../executions/{execution}`, `POST .../executions/{e}:cancel`;
- `GET|DELETE /v2/{parent}/operations/{id}`, `GET /v2/{parent}/operations`;
- `POST /v2/entries:list` (Cloud Logging v2 ListLogEntries, below).

The same emulator also serves the platform APIs that provisioning a pool calls (see
`skylane.testing.gcp_platform`): Service Usage v1 (get, enable, disable a service, and its
operations), Artifact Registry v1 repositories, Resource Manager v3 project IAM policies (etags
checked: a stale one is 409 ABORTED) on the same URL, and IAM Admin v1 (service accounts and
their IAM policies) over gRPC at `emulator.iam_target`, a loopback port of its own. Every API
is enabled in every project unless `platform_apis_enabled=False` or `disabled_apis` say
otherwise; a call to a disabled API, Cloud Run's included, is 403 PERMISSION_DENIED with reason
SERVICE_DISABLED. Faults and the request log cover these calls by their method names
(CreateRepository, EnableService, SetIamPolicy, CreateServiceAccount...), gRPC ones under
their REST path; `GET /emulator/platform` shows their state.

Rules it enforces, as Cloud Run does: a job id is lowercase letters, digits and hyphens, starts
with a letter, does not end with a hyphen, at most 63 characters (else 400 INVALID_ARGUMENT); a
second job with the same id is 409 ALREADY_EXISTS; a job needs at least one container with an
image; `startExecutionToken` / `runExecutionToken` name the execution the create starts
`{job}-{token}` (job id + token shorter than 63 characters, token of lowercase letters, digits
and hyphens); a missing resource is 404 NOT_FOUND; cancelling a finished execution is 400
FAILED_PRECONDITION. Errors are `{"error": {"code": 404, "message": ..., "status": "NOT_FOUND"}}`,
which `google.api_core.exceptions.from_http_response` turns into `NotFound` etc.

Long-running operations behave the way Cloud Run's do (and the client's `operation.result()`
polls `GET .../operations/{id}`, first after ~1 s unless given `polling=`):

- CreateJob: done at once; with `startExecutionToken` done when the execution has started; with
  `runExecutionToken` when it has finished (with an `error` if it failed);
- RunJob: done when the execution has finished, `error` (code 9 FAILED_PRECONDITION, the failure
  message) if it failed, the cancelled Execution as `response` if it was cancelled; read the
  execution's name from `operation.metadata` right away;
- DeleteJob, CancelExecution, DeleteExecution: done at once.

`metadata` and `response` carry `@type` (`type.googleapis.com/google.cloud.run.v2.Job` or
`...Execution`) and the resource as it is when the operation is read. `operation_seconds` delays
every operation's completion further; `operations_track_executions=False` makes all operations
done at once (after `operation_seconds`).

Executions are computed from timestamps when read (no background threads unless containers
run as processes, below): created -> after
`start_seconds` running (`startTime`, `runningCount`) -> after `run_seconds` more succeeded
(`succeededCount`) or failed (`failedCount`, `retriedCount` = max retries, `Completed` condition
CONDITION_FAILED with reason NON_ZERO_EXIT_CODE and the message). Cancelled executions have
`cancelledCount` = task count, `Completed` CONDITION_FAILED with executionReason CANCELLED.
While unfinished `reconciling` is true and `Completed` is CONDITION_PENDING (before the start)
or CONDITION_RECONCILING (running); read state from `completionTime`, the counts and the
`Completed` condition. Zero counts and false booleans are omitted, as proto3 JSON does.
Timing and outcome are set with `configure()` for every execution, a job's executions or one
named execution (also before it exists); `outcome="manual"` keeps an execution running until
`finish_execution()`; `fail_execution()` makes it fail with a message. Each task "runs" once:
`maxRetries` is reported (`retriedCount`, the Retry condition), never performed.

Containers as processes (`run_containers=True`, opt-in; `--run-containers`): an execution whose
plan outcome is "succeeded" (the default) runs its first container for real. At its start time a
background launcher starts `command + args` (after RunJob overrides; `python`/`python3` as
argv[0] mean the `python` given, by default the emulator's interpreter; a container without a
command fails to start, as there is no image entrypoint) as a local process in its own session,
in `workdir` (default: the emulator's cwd). Its environment is that of a container, not the
host's: only PATH, HOME, LANG, LC_ALL, TMPDIR and PYTHONPATH are inherited, then the container's
`env` values, `valueSource.secretKeyRef` resolved from `secrets` (keyed by the secret's name as
the job gives it, `S` or `projects/P/secrets/S`, `"S:VERSION"` looked up before `"S"`), then
CLOUD_RUN_JOB, CLOUD_RUN_EXECUTION, CLOUD_RUN_TASK_INDEX=0, CLOUD_RUN_TASK_ATTEMPT=0 and
CLOUD_RUN_TASK_COUNT. A secret that cannot be resolved fails the execution at its start without
running anything ("Secret projects/P/secrets/S/versions/V was not found"). The execution runs
while the process lives (one process stands for all its tasks) and ends when it exits: 0
succeeded, else failed "Task {execution}-task0 failed with exit code N" (128 + N when killed by
signal N; anything the main process left behind is killed with it). A process that outlives the
task template's `timeout` is stopped and its execution failed ("... exceeded its timeout of
...") at once. Cancelling or deleting the execution (or its job), or `finish_execution()`, stops
the process, and the execution keeps the state so given. Stopping sends SIGTERM to the process
group, SIGKILL `stop_grace_seconds` later; `reset()` and `stop()` stop every process and join
the threads that watch them, and those of an emulator never stopped are killed at interpreter
exit, so no process outlives the emulator (short of one that leaves its session, or SIGKILL).
Executions whose plan says "failed" or "manual" keep their timed or held behaviour, without a
process: the way to stand for, say, an image that never starts. `configure()` may still make an
execution timed or held before its process starts; once it runs, end it by cancelling or with
`finish_execution()`. With `run_containers` the clock must be the real one.

Logs (Cloud Logging, as Cloud Run writes them): each line a process writes is an entry,
timestamped when read (so the order of stdout against stderr lines is only that of the reads):
stdout lines severity DEFAULT in log `run.googleapis.com%2Fstdout`, stderr lines ERROR in
`run.googleapis.com%2Fstderr`. In every mode, an execution that failed gets one WARNING entry in
`run.googleapis.com%2Fvarlog%2Fsystem`, "Container called exit(N)." (N = 1 for timed failures;
the message itself for a timeout or a failed start), and one cancelled while running an entry
saying so, timestamped when it ended (written when first looked for, like states). An entry is
`{logName: "projects/P/logs/LOG", resource: {type: "cloud_run_job", labels: {project_id,
job_name, location}}, textPayload, timestamp, receiveTimestamp, severity, insertId, labels:
{"run.googleapis.com/execution_name", "run.googleapis.com/task_index": "0",
"run.googleapis.com/task_attempt": "0", instanceId}}`; entries outlive their job and execution,
as in Cloud Logging. `write_log(execution, text, severity=, stream=)` adds one as the
container would have; `log_entries(execution=None)` lists them.

`POST /v2/entries:list` takes `{"resourceNames": ["projects/P", ...], "filter", "orderBy":
"timestamp asc" (default) | "timestamp desc", "pageSize" (default 50, at most 1000, as the API
documents), "pageToken"}` and answers `{"entries": [...], "nextPageToken"}` (each omitted when
empty), entries of the projects named only (other resource names, or none: 400
INVALID_ARGUMENT). The filter is the subset of the Logging query language the adapter sends,
parsed strictly: comparisons `FIELD OP VALUE` joined by `AND` or newlines, OP one of
`= != > >= < <=`, VALUE double-quoted (backslash escapes) or a bare word, FIELD one of
`resource.type`, `resource.labels.NAME`, `labels.KEY` or `labels."KEY"`, `logName` (as the API
writes it, URL-encoded), `severity` (by level, DEFAULT < DEBUG < INFO < NOTICE < WARNING < ERROR
< CRITICAL < ALERT < EMERGENCY), `timestamp` (as times; RFC 3339 values, `+0000` offsets
included) and `textPayload`. Strings compare exactly (case included); a field an entry lacks
matches no comparison, `!=` included. Anything else (OR, NOT, parentheses, `:`, another field)
is 400 INVALID_ARGUMENT naming the part.

Faults (`Fault`), tried in the order added; the first that matches the call's `rpc` (CreateJob,
GetJob, ListJobs, DeleteJob, RunJob, GetExecution, ListExecutions, CancelExecution,
DeleteExecution, GetOperation, ListOperations, DeleteOperation, ListLogEntries), HTTP `method`
and URL `path` (fnmatch, e.g. `"*/jobs"`, `"*:run"`) and has fires left (`count`, None for
ever) applies (`forbid_project` matches Cloud Run paths only; ListLogEntries's path names no
project):

- `error`: answer `{"error": {"code", "message", "status"}}` without doing the call
  (`throttle`: 429 RESOURCE_EXHAUSTED, `unavailable`: 503 UNAVAILABLE, `internal_error`: 500
  INTERNAL, `fail_next`: any code; `forbid_project`: 403 PERMISSION_DENIED naming the
  permission, e.g. "Permission 'run.jobs.create' denied on resource ...");
- `timeout`: do the call, then hold the answer `seconds` and drop the connection (`drop=False`:
  answer late), so a client with a shorter timeout never hears that the call went through;
- `delay`: do the call and answer `seconds` later.

Control API under `/emulator/` (never logged, never faulted):

- `GET /emulator/requests[?rpc=CreateJob&method=POST]`: a JSON list of the requests received,
  `{method, path, query, body, status, received_at, rpc, fault, dropped, response}`, in arrival
  order; `DELETE /emulator/requests` forgets them;
- `POST /emulator/reset`: forget jobs, executions, operations, faults, configuration, log
  entries, request log and the platform APIs' state, and stop processes;
- `GET /emulator/faults`, `POST /emulator/faults` (a fault object, a list or
  `{"faults": [...]}`, e.g. `{"kind": "error", "code": 429, "rpc": "CreateJob", "count": 2}`),
  `DELETE /emulator/faults`, `DELETE /emulator/faults/{id}`;
- `POST /emulator/configure`: `{"job"?: id, "execution"?: id, "start_seconds"?,
  "run_seconds"?, "outcome"?, "message"?}`; `POST /emulator/finish`: `{"execution": id,
  "outcome": "succeeded" | "failed", "message"?}`;
- `GET /emulator/logs[?execution=ID]`: the log entries (of one execution), oldest first;
  `POST /emulator/logs`: `{"execution", "text", "severity"?, "stream"?: "stdout" | "stderr"}`
  writes one;
- `GET /emulator/state`: `{"jobs": [...], "executions": [...]}` as the API would show them;
  `GET /emulator/`: counts.

Standalone: `python -m skylane.testing.gcp --port N [--host H] [--start-seconds S]
[--run-seconds S] [--outcome succeeded|failed|manual] [--forbidden-project P]...
[--run-containers] [--workdir DIR] [--secret NAME=VALUE]... [--platform-apis-disabled]` prints
the URL on the first line of stdout and `iam_endpoint=HOST:PORT` (the IAM gRPC target) on the
second, then serves until SIGINT or SIGTERM (and stops its processes).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import string
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import quote

from skylane.testing.container_processes import LocalContainerProcess, inherited_env
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
from skylane.testing.gcp_platform import (
    RUN_API,
    STATUS_NAMES,
    ApiError,
    GooglePlatformEmulator,
)
from skylane.testing.local_http import json_or_none, serve_until_signalled
from skylane.testing.logging_filter import SEVERITIES, FilterError, parse_filter

Outcome = Literal["succeeded", "failed", "manual"]
Phase = Literal["pending", "running", "succeeded", "failed", "cancelled"]
Stream = Literal["stdout", "stderr"]

OUTCOMES: frozenset[str] = frozenset({"succeeded", "failed", "manual"})
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
JOB_TYPE = "type.googleapis.com/google.cloud.run.v2.Job"
EXECUTION_TYPE = "type.googleapis.com/google.cloud.run.v2.Execution"
CREATOR = "skylane-emulator@example.com"
PROJECT_NUMBER = "123456789012"

DEFAULT_MESSAGES: dict[int, str] = {
    403: "The caller does not have permission",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
    504: "The request timed out.",
}
# google.rpc.Code of a failed execution's operation error.
FAILED_PRECONDITION_CODE = 9

PERMISSIONS: dict[str, str] = {
    "CreateJob": "run.jobs.create",
    "ListJobs": "run.jobs.list",
    "GetJob": "run.jobs.get",
    "DeleteJob": "run.jobs.delete",
    "RunJob": "run.jobs.run",
    "ListExecutions": "run.executions.list",
    "GetExecution": "run.executions.get",
    "DeleteExecution": "run.executions.delete",
    "CancelExecution": "run.executions.cancel",
    "GetOperation": "run.operations.get",
    "ListOperations": "run.operations.list",
    "DeleteOperation": "run.operations.delete",
    "ListLogEntries": "logging.logEntries.list",
}

_PARENT = r"^/v2/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
_JOB = _PARENT + r"/jobs/(?P<job>[^/:]+)"
_EXECUTION = _JOB + r"/executions/(?P<execution>[^/:]+)"
ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(_PARENT + r"/jobs$"), {"POST": "CreateJob", "GET": "ListJobs"}),
    (re.compile(_JOB + r"$"), {"GET": "GetJob", "DELETE": "DeleteJob"}),
    (re.compile(_JOB + r":run$"), {"POST": "RunJob"}),
    (re.compile(_JOB + r"/executions$"), {"GET": "ListExecutions"}),
    (re.compile(_EXECUTION + r"$"), {"GET": "GetExecution", "DELETE": "DeleteExecution"}),
    (re.compile(_EXECUTION + r":cancel$"), {"POST": "CancelExecution"}),
    (re.compile(_PARENT + r"/operations$"), {"GET": "ListOperations"}),
    (
        re.compile(_PARENT + r"/operations/(?P<operation>[^/:]+)$"),
        {"GET": "GetOperation", "DELETE": "DeleteOperation"},
    ),
    # Cloud Logging v2, served on the same port.
    (re.compile(r"^/v2/entries:list$"), {"POST": "ListLogEntries"}),
]

# Containers run as processes (`run_containers`, see `container_processes`), and their logs.
LOG_IDS: dict[Stream, str] = {
    "stdout": "run.googleapis.com%2Fstdout",
    "stderr": "run.googleapis.com%2Fstderr",
}
SYSTEM_LOG_ID = "run.googleapis.com%2Fvarlog%2Fsystem"
EXECUTION_LABEL = "run.googleapis.com/execution_name"
# entries:list as the API documents it: 50 entries a page unless asked, more than 1000 refused.
LOG_PAGE_SIZE = 50
MAX_LOG_PAGE_SIZE = 1000
LOG_ORDERS = ("timestamp asc", "timestamp desc")

JOB_ID = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
EXECUTION_TOKEN = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$")
# The Job fields a caller may set; output-only fields in a create request are ignored.
_JOB_INPUT_FIELDS = (
    "labels",
    "annotations",
    "client",
    "clientVersion",
    "launchStage",
    "binaryAuthorization",
    "template",
    "startExecutionToken",
    "runExecutionToken",
)


@dataclass
class ExecutionPlan:
    """How an execution unfolds: running `start_seconds` after its creation, finished
    `run_seconds` later with `outcome` ("manual": running until `finish_execution`); a failure
    carries `message` (default: "Task {execution}-task0 failed with exit code 1")."""

    start_seconds: float = 0.05
    run_seconds: float = 0.2
    outcome: Outcome = "succeeded"
    message: str = ""

    def __post_init__(self) -> None:
        _check_plan_values(asdict(self))


def _check_plan_values(values: Mapping[str, Any]) -> None:
    check_plan_fields(values, ExecutionPlan)
    for name in ("start_seconds", "run_seconds"):
        if name in values and (
            not isinstance(values[name], int | float) or float(values[name]) < 0
        ):
            raise ValueError(f"{name} must be a number >= 0, not {values[name]!r}")
    if "outcome" in values and values["outcome"] not in OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {values['outcome']!r}")
    if "message" in values and not isinstance(values["message"], str):
        raise ValueError("message must be a string")


@dataclass
class Fault(FaultBase):
    """One fault: which calls it hits (`rpc`, HTTP `method`, fnmatch `path`; "*" for any), how
    often (`count` times, None for ever) and how (`kind`: "error" answers `code`/`status`/
    `message` without doing the call; "timeout" does the call, holds the answer `seconds` and
    drops the connection unless `drop` is False; "delay" does the call and answers `seconds`
    later). `fired` counts how often it applied; `id` names it in the control API."""

    call_field: ClassVar[str] = "rpc"

    kind: FaultKind = "error"
    rpc: str = "*"
    method: str = "*"
    path: str = "*"
    code: int = 503
    status: str = ""
    message: str = ""
    count: int | None = 1
    seconds: float = 0.0
    drop: bool = True
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    fired: int = 0

    def __post_init__(self) -> None:
        self._check_target()
        if not isinstance(self.code, int) or not 400 <= self.code <= 599:
            raise ValueError(f"code must be an HTTP error status, not {self.code!r}")
        self._check_limits()
        self.status = self.status or STATUS_NAMES.get(self.code, "UNKNOWN")


@dataclass(frozen=True)
class ReceivedRequest(CallRecord):
    """One API call the emulator received (control calls excepted). `query` holds the last value
    of each parameter, `body` and `response` the parsed JSON (None if empty or not JSON),
    `status` the HTTP status answered (or that would have been, for a dropped answer), `rpc` the
    API method (None for an unknown route), `fault` the id of the fault that applied."""

    call_field: ClassVar[str] = "rpc"

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    received_at: float
    rpc: str | None = None
    fault: str | None = None
    dropped: bool = False
    response: Any = None


# -- state records -------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    name: str
    project: str
    location: str
    job_id: str
    uid: str
    created_at: float
    spec: dict[str, Any]
    executions: dict[str, _Execution] = field(default_factory=dict)
    execution_count: int = 0
    latest: _Execution | None = None
    create_operation: _Operation | None = None
    deleted_at: float | None = None


@dataclass(eq=False)
class _Execution:
    name: str
    execution_id: str
    job: _Job
    uid: str
    created_at: float
    start_at: float | None
    end_at: float | None
    final: str
    message: str
    run_seconds: float
    task_count: int
    parallelism: int
    max_retries: int
    template: dict[str, Any]
    labels: dict[str, str]
    annotations: dict[str, str]
    deleted_at: float | None = None
    # `run_containers`: its first container runs as `process` and ends it (end_at None till then).
    runs_container: bool = False
    process: _Process | None = None
    # How a failure shows in the system log: "Container called exit(exit_code)." unless
    # `system_text` says otherwise (a timeout, a failed start).
    exit_code: int = 1
    system_text: str = ""
    system_logged: bool = False
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex)

    def phase(self, now: float) -> Phase:
        if self.end_at is not None and now >= self.end_at:
            return self.final  # type: ignore[return-value]
        if self.start_at is not None and now >= self.start_at:
            return "running"
        return "pending"

    def started_at(self, now: float) -> float | None:
        """When it started, if it has (an execution cancelled before its start never did)."""
        if self.start_at is None or now < self.start_at:
            return None
        if self.end_at is not None and self.start_at > self.end_at:
            return None
        return self.start_at


@dataclass(eq=False)
class _Process:
    """The local process an execution's task 0 runs as (`run_containers`)."""

    execution: _Execution
    deadline: float | None
    runner: LocalContainerProcess | None = None
    # Its execution was forgotten by reset(): its output and exit no longer belong anywhere.
    discarded: bool = False


@dataclass(frozen=True)
class _LogEntry:
    """One Cloud Logging entry; it outlives its execution, as in Cloud Logging."""

    execution: str
    at: float
    view: dict[str, Any]


class _StartError(Exception):
    """Why an execution's container could not start (its message is the failure's)."""


@dataclass(eq=False)
class _Operation:
    name: str
    target: _Job | _Execution
    created_at: float
    min_done_at: float
    # What completion waits for: nothing, the execution's start, or its end.
    wait: Literal["none", "start", "end"] = "none"
    execution: _Execution | None = None


# -- the emulator --------------------------------------------------------------------------


class CloudRunEmulator(GooglePlatformEmulator):
    """A Cloud Run Admin API v2 emulator serving on `host`:`port` (a free port by default) from
    background threads. Use as a context manager (`with CloudRunEmulator() as emulator:
    emulator.url`) or with `start()`/`stop()`. State, configuration, faults and the request log
    are safe to use from any thread while calls go through.

    `start_seconds`, `run_seconds`, `outcome` and `message` are the default `ExecutionPlan`;
    `operation_seconds` delays every operation's completion; `operations_track_executions`
    (default True) makes CreateJob-with-token and RunJob operations wait for the execution the
    way Cloud Run's do; `forbidden_projects` answer 403 to every call; `clock` gives the time
    state transitions are computed from (`time.time` by default; tests may pass their own).

    `run_containers` runs the first container of each execution whose plan outcome is
    "succeeded" as a local process (`command` + `args`, in `workdir`, `python`/`python3` meaning
    `python`), its env values and `secrets` (Secret Manager values by the name the job gives,
    `"NAME:VERSION"` looked up before `"NAME"`) in its environment; stopping one sends SIGTERM to
    its process group and SIGKILL `stop_grace_seconds` later. It needs the real clock.

    The platform APIs (`skylane.testing.gcp_platform`): `platform_apis_enabled` (default True:
    every API enabled in every project), `disabled_apis` (project -> APIs disabled there) and
    `api_propagation_seconds` (how long an API enabled through Service Usage still refuses
    calls); the IAM Admin gRPC server is at `iam_target` while the emulator runs."""

    thread_name = "cloud-run-emulator"
    call_field = "rpc"
    fault_class = Fault
    request_class = ReceivedRequest

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        start_seconds: float = 0.05,
        run_seconds: float = 0.2,
        outcome: Outcome = "succeeded",
        message: str = "",
        operation_seconds: float = 0.0,
        operations_track_executions: bool = True,
        forbidden_projects: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        verbose: bool = False,
        run_containers: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        python: str = sys.executable,
        secrets: Mapping[str, str] | None = None,
        stop_grace_seconds: float = 3.0,
        platform_apis_enabled: bool = True,
        disabled_apis: Mapping[str, Iterable[str]] | None = None,
        api_propagation_seconds: float = 0.0,
    ) -> None:
        EmulatorBase.__init__(self, host, port, verbose=verbose)
        check_process_options(run_containers, clock, workdir, stop_grace_seconds)
        self._init_emulator(clock, run_containers, workdir, python, stop_grace_seconds)
        self.secrets = dict(secrets or {})
        self._initial_plan = ExecutionPlan(start_seconds, run_seconds, outcome, message)
        self.operation_seconds = float(operation_seconds)
        self.operations_track_executions = operations_track_executions
        self._initial_forbidden = tuple(forbidden_projects)
        self._rng = random.Random()
        self._init_platform_options(
            apis_enabled=platform_apis_enabled,
            disabled_apis=disabled_apis,
            api_propagation_seconds=api_propagation_seconds,
        )
        self._init_state()

    def _init_state(self) -> None:
        with self._lock:
            self._plan = copy.copy(self._initial_plan)
            self._job_plans: dict[str, dict[str, Any]] = {}
            self._execution_plans: dict[str, dict[str, Any]] = {}
            self._jobs: dict[str, _Job] = {}
            self._executions: dict[str, _Execution] = {}
            self._operations: dict[str, _Operation] = {}
            self._faults: list[Fault] = []
            self._requests: list[ReceivedRequest] = []
            self._log_entries: list[_LogEntry] = []
            self._init_platform_state()
            for project in self._initial_forbidden:
                self.forbid_project(project)

    # -- execution timing and outcomes ---------------------------------------------------

    def configure(
        self,
        *,
        job: str | None = None,
        execution: str | None = None,
        start_seconds: float | None = None,
        run_seconds: float | None = None,
        outcome: Outcome | None = None,
        message: str | None = None,
    ) -> None:
        """Set how executions unfold: by default (neither `job` nor `execution`), for the
        executions of job id `job`, or for the execution `execution` (its id `{job}-{suffix}`
        or full name). Applies to executions created afterwards; an execution named here that
        exists and has not finished changes from now on (a start or end never moves into the
        past). Most specific wins: execution, then job, then default."""
        if job is not None and execution is not None:
            raise ValueError("configure either a job or an execution, not both")
        values = {
            name: value
            for name, value in (
                ("start_seconds", start_seconds),
                ("run_seconds", run_seconds),
                ("outcome", outcome),
                ("message", message),
            )
            if value is not None
        }
        _check_plan_values(values)
        with self._lock:
            if execution is not None:
                found = self._find_execution(execution, required=False)
                if found is not None:
                    self._replan(found, values)
                    key = found.execution_id
                else:
                    key = execution.rsplit("/", 1)[-1]
                self._execution_plans.setdefault(key, {}).update(values)
            elif job is not None:
                self._job_plans.setdefault(job.rsplit("/", 1)[-1], {}).update(values)
            else:
                for name, value in values.items():
                    setattr(self._plan, name, value)
            self._lock.notify_all()

    def fail_execution(self, execution: str, message: str | None = None) -> None:
        """Make the execution named (existing or not yet) fail when its run ends, with
        `message` (default "Task {execution}-task0 failed with exit code 1")."""
        self.configure(execution=execution, outcome="failed", message=message)

    def hold_execution(self, execution: str) -> None:
        """Keep the execution named (existing or not yet) running until `finish_execution`."""
        self.configure(execution=execution, outcome="manual")

    def finish_execution(
        self,
        execution: str,
        outcome: Literal["succeeded", "failed"] = "succeeded",
        message: str | None = None,
    ) -> dict[str, Any]:
        """End an unfinished execution now (starting it first if it was pending); its view."""
        if outcome not in ("succeeded", "failed"):
            raise ValueError("outcome must be 'succeeded' or 'failed'")
        with self._lock:
            found = self._find_execution(execution)
            now = self._clock()
            if found.phase(now) in TERMINAL:
                raise ValueError(f"execution {found.execution_id} has already finished")
            if found.start_at is None or found.start_at > now:
                found.start_at = now
            found.end_at = now
            found.final = outcome
            if message is not None:
                found.message = message
            self._lock.notify_all()  # the launcher stops its process, if it runs one
            return self._execution_view(found, now)

    # -- faults (see EmulatorBase: add_fault, faults, remove_fault, clear_faults) -----------

    def fail_next(
        self,
        code: int,
        *,
        rpc: str = "*",
        method: str = "*",
        path: str = "*",
        count: int | None = 1,
        message: str = "",
        status: str = "",
    ) -> Fault:
        """Answer the next `count` matching calls with HTTP `code` (status name by default from
        the code) without doing them."""
        return self.add_fault(
            Fault(
                kind="error",
                rpc=rpc,
                method=method,
                path=path,
                code=code,
                status=status,
                message=message,
                count=count,
            )
        )

    def throttle(
        self, *, rpc: str = "*", method: str = "*", path: str = "*", count: int | None = 1
    ) -> Fault:
        """429 RESOURCE_EXHAUSTED (a quota message) to the next `count` matching calls."""
        return self.fail_next(429, rpc=rpc, method=method, path=path, count=count)

    def unavailable(
        self, *, rpc: str = "*", method: str = "*", path: str = "*", count: int | None = 1
    ) -> Fault:
        """503 UNAVAILABLE to the next `count` matching calls."""
        return self.fail_next(503, rpc=rpc, method=method, path=path, count=count)

    def internal_error(
        self, *, rpc: str = "*", method: str = "*", path: str = "*", count: int | None = 1
    ) -> Fault:
        """500 INTERNAL to the next `count` matching calls."""
        return self.fail_next(500, rpc=rpc, method=method, path=path, count=count)

    def forbid_project(self, project: str, *, count: int | None = None) -> Fault:
        """403 PERMISSION_DENIED to every call on `project`, naming the permission missing."""
        return self.fail_next(403, path=f"/v2/projects/{project}/*", count=count)

    def timeout_after(
        self,
        *,
        rpc: str = "CreateJob",
        method: str = "*",
        path: str = "*",
        seconds: float = 5.0,
        count: int | None = 1,
        drop: bool = True,
    ) -> Fault:
        """Do the next `count` matching calls, then hold each answer `seconds` and drop the
        connection (`drop=False`: answer then). Pick `seconds` above the client's timeout."""
        return self.add_fault(
            Fault(
                kind="timeout",
                rpc=rpc,
                method=method,
                path=path,
                seconds=seconds,
                count=count,
                drop=drop,
            )
        )

    def delay(
        self,
        *,
        rpc: str = "*",
        method: str = "*",
        path: str = "*",
        seconds: float,
        count: int | None = 1,
    ) -> Fault:
        """Do the next `count` matching calls and answer each `seconds` later."""
        return self.add_fault(
            Fault(kind="delay", rpc=rpc, method=method, path=path, seconds=seconds, count=count)
        )

    # -- request log (see EmulatorBase: clear_requests) ----------------------------------

    def requests(self, rpc: str | None = None, method: str | None = None) -> list[ReceivedRequest]:
        """The API calls received so far in arrival order, optionally of one rpc / method."""
        return self._requests_of(rpc, method)

    def wait_for_requests(
        self, count: int, rpc: str | None = None, timeout: float = 10.0
    ) -> list[ReceivedRequest]:
        """Block until at least `count` calls (of `rpc`) are logged; TimeoutError otherwise."""
        return self._wait_for_requests(count, rpc, timeout)

    # -- state accessors -----------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        """Every job, as GetJob would answer."""
        with self._lock:
            now = self._clock()
            return [self._job_view(job, now) for job in self._jobs.values()]

    def job(self, name: str) -> dict[str, Any]:
        """One job by id or full name, as GetJob would answer; KeyError if there is none."""
        with self._lock:
            found = self._jobs.get(name) or next(
                (j for j in self._jobs.values() if j.job_id == name), None
            )
            if found is None:
                raise KeyError(name)
            return self._job_view(found, self._clock())

    def executions(self, job: str | None = None) -> list[dict[str, Any]]:
        """Every execution (of job id or name `job`), oldest first, as GetExecution answers."""
        with self._lock:
            now = self._clock()
            return [
                self._execution_view(e, now)
                for e in self._executions.values()
                if job is None or job in (e.job.job_id, e.job.name)
            ]

    def execution(self, name: str) -> dict[str, Any]:
        """One execution by id or full name, as GetExecution answers; KeyError if none."""
        with self._lock:
            return self._execution_view(self._find_execution(name), self._clock())

    def _find_execution(self, name: str, *, required: bool = True) -> _Execution:
        if "/" in name:
            found = self._executions.get(name)
        else:
            matches = [e for e in self._executions.values() if e.execution_id == name]
            if len(matches) > 1:
                raise ValueError(f"execution id {name!r} is ambiguous; use its full name")
            found = matches[0] if matches else None
        if found is None and required:
            raise KeyError(name)
        return found  # type: ignore[return-value]

    # -- plans ---------------------------------------------------------------------------

    def _plan_for(self, job_id: str, execution_id: str) -> ExecutionPlan:
        values = asdict(self._plan)
        values.update(self._job_plans.get(job_id, {}))
        values.update(self._execution_plans.get(execution_id, {}))
        return ExecutionPlan(**values)

    def _replan(self, execution: _Execution, values: Mapping[str, Any]) -> None:
        now = self._clock()
        if execution.phase(now) in TERMINAL:
            raise ValueError(f"execution {execution.execution_id} has already finished")
        outcome = values.get("outcome")
        if execution.runs_container and outcome not in (None, "succeeded"):
            if execution.process is not None:
                raise ValueError(
                    f"execution {execution.execution_id} runs its container: cancel it or use "
                    "finish_execution()"
                )
            execution.runs_container = False  # timed or held from now on, as its plan says
        if "start_seconds" in values and (execution.start_at is None or execution.start_at > now):
            execution.start_at = max(now, execution.created_at + values["start_seconds"])
        if "run_seconds" in values:
            execution.run_seconds = float(values["run_seconds"])
        if "message" in values:
            execution.message = values["message"]
        if execution.runs_container:
            return  # its process decides when and how it ends
        if outcome == "manual":
            execution.end_at = None
            return
        if outcome is not None:
            execution.final = outcome
        if outcome is not None or execution.end_at is not None:
            # Not held: it ends `run_seconds` after its (possibly new) start, never in the past.
            start = execution.start_at if execution.start_at is not None else now
            execution.end_at = max(now, start + execution.run_seconds)

    # -- processes (run_containers) ------------------------------------------------------

    def _run_launcher(self) -> None:
        """Start containers when due, time them out, and stop the processes of executions that
        ended otherwise (cancelled, deleted, finished), until stop()."""
        with self._lock:
            while not self._closing:
                now = self._clock()
                wake = self._tend_processes(now)
                # Woken early by every API call (`_record`), configure(), finish_execution(),
                # each process's exit and stop().
                self._lock.wait(None if wake is None else wake - now)

    def _tend_processes(self, now: float) -> float | None:
        """Do what is due at `now`; when something is next due (None: nothing is)."""
        wakes: list[float] = []
        for execution in self._executions.values():
            if not execution.runs_container or execution.process is not None:
                continue
            if execution.end_at is None and execution.start_at is not None:
                if execution.start_at <= now:
                    self._launch(execution, now)
                else:
                    wakes.append(execution.start_at)
        for process in self._processes:
            runner = process.runner
            # reset() stops the discarded ones; a terminated one is killed after its grace.
            if runner is None or runner.exited or runner.terminated or process.discarded:
                continue
            if process.execution.phase(now) in TERMINAL:
                self._terminate(process)
            elif process.deadline is not None and now >= process.deadline:
                self._time_out(process, now)
            elif process.deadline is not None:
                wakes.append(process.deadline)
        return min(wakes, default=None)

    def _launch(self, execution: _Execution, now: float) -> None:
        """Start the execution's first container as a process, or fail the execution now."""
        container = execution.template["containers"][0]
        argv = [str(part) for part in [*container.get("command", []), *container.get("args", [])]]
        try:
            if not container.get("command"):
                raise _StartError(
                    f"Task {execution.execution_id}-task0 failed to start: the emulator runs the "
                    "container's command and args, and it has no command (an image's entrypoint "
                    "cannot be run)."
                )
            timeout = _duration_seconds(execution.template["timeout"], "timeout")
            process = _Process(execution, deadline=now + timeout if timeout else None)
            runner = LocalContainerProcess(
                argv,
                env=self._process_env(execution, container),
                cwd=self.workdir,
                python=self.python,
                on_output=lambda stream, text: self._read_output(process, stream, text),
                on_exit=lambda code: self._await_exit(process, code),
                name=f"{self.thread_name}-{execution.execution_id}",
            )
            # The callbacks wait for the lock, held here: `process` is complete before they run.
            process.runner = runner.start()
        except _StartError as exc:
            message = str(exc)
        except OSError as exc:  # the command, or the workdir, is missing or not executable
            message = (
                f"Task {execution.execution_id}-task0 failed to start: "
                f"{start_failure(exc, argv[0])}"
            )
        else:
            execution.process = process
            self._processes.append(process)
            return
        execution.end_at = now
        execution.final = "failed"
        execution.message = execution.system_text = message

    def _process_env(self, execution: _Execution, container: Mapping[str, Any]) -> dict[str, str]:
        env = inherited_env()
        for variable in container.get("env", []):
            source = variable.get("valueSource")
            if source is not None:
                value = self._secret(execution.job, source.get("secretKeyRef") or {})
            else:
                value = str(variable.get("value", ""))
            env[variable["name"]] = value
        # Cloud Run's own variables, which a job cannot override.
        env.update(
            {
                "CLOUD_RUN_JOB": execution.job.job_id,
                "CLOUD_RUN_EXECUTION": execution.execution_id,
                "CLOUD_RUN_TASK_INDEX": "0",
                "CLOUD_RUN_TASK_ATTEMPT": "0",
                "CLOUD_RUN_TASK_COUNT": str(execution.task_count),
            }
        )
        return env

    def _secret(self, job: _Job, reference: Mapping[str, Any]) -> str:
        name = str(reference.get("secret", ""))
        version = str(reference.get("version") or "latest")
        for key in (f"{name}:{version}", name):
            if key in self.secrets:
                return self.secrets[key]
        full = name if name.startswith("projects/") else f"projects/{job.project}/secrets/{name}"
        raise _StartError(f"Secret {full}/versions/{version} was not found")

    def _read_output(self, process: _Process, stream: Stream, text: str) -> None:
        severity = "DEFAULT" if stream == "stdout" else "ERROR"
        with self._lock:
            if not process.discarded:
                self._log(process.execution, LOG_IDS[stream], text, severity, self._clock())

    def _await_exit(self, process: _Process, code: int) -> None:
        # Every line is logged before the execution shows as finished (the runner sees to it).
        with self._lock:
            self._processes.remove(process)
            if not process.discarded:
                self._record_exit(process.execution, code, self._clock())
            self._lock.notify_all()

    def _record_exit(self, execution: _Execution, code: int, now: float) -> None:
        if execution.end_at is not None:
            return  # cancelled, deleted, timed out or finished first: that stands
        execution.end_at = now
        if code == 0:
            execution.final = "succeeded"
            return
        execution.final = "failed"
        execution.exit_code = code  # 128 + N when killed by signal N, as a container's

    def _terminate(self, process: _Process) -> None:
        if process.runner is not None:
            process.runner.terminate(self.stop_grace_seconds)

    def _time_out(self, process: _Process, now: float) -> None:
        execution = process.execution
        execution.end_at = now
        execution.final = "failed"
        execution.message = execution.system_text = (
            f"Task {execution.execution_id}-task0 exceeded its timeout of "
            f"{execution.template['timeout']} and was stopped."
        )
        self._terminate(process)

    # -- logs ----------------------------------------------------------------------------

    def log_entries(self, execution: str | None = None) -> list[dict[str, Any]]:
        """The log entries (of the execution with this id or full name, deleted or not), oldest
        first, as entries:list answers them."""
        with self._lock:
            self._log_endings(self._executions.values(), self._clock())
            return [
                copy.deepcopy(entry.view)
                for entry in self._sorted_log()
                if execution is None
                or execution in (entry.execution, entry.view["labels"][EXECUTION_LABEL])
            ]

    def write_log(
        self, execution: str, text: str, severity: str = "DEFAULT", stream: Stream = "stdout"
    ) -> dict[str, Any]:
        """Log `text` now as the container of the execution named (id or full name) would
        have; the entry."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {list(SEVERITIES)}, not {severity!r}")
        if stream not in LOG_IDS:
            raise ValueError(f"stream must be one of {sorted(LOG_IDS)}, not {stream!r}")
        with self._lock:
            found = self._find_execution(execution)
            return copy.deepcopy(self._log(found, LOG_IDS[stream], text, severity, self._clock()))

    def _log(
        self, execution: _Execution, log_id: str, text: str, severity: str, at: float
    ) -> dict[str, Any]:
        job = execution.job
        timestamp = _timestamp(at)
        view = {
            "logName": f"projects/{job.project}/logs/{log_id}",
            "resource": {
                "type": "cloud_run_job",
                "labels": {
                    "project_id": job.project,
                    "job_name": job.job_id,
                    "location": job.location,
                },
            },
            "textPayload": text,
            "timestamp": timestamp,
            "receiveTimestamp": timestamp,
            "severity": severity,
            "insertId": uuid.uuid4().hex[:24],
            "labels": {
                EXECUTION_LABEL: execution.execution_id,
                "run.googleapis.com/task_index": "0",
                "run.googleapis.com/task_attempt": "0",
                "instanceId": execution.instance_id,
            },
        }
        self._log_entries.append(_LogEntry(execution.name, at, view))
        return view

    def _log_endings(self, executions: Iterable[_Execution], now: float) -> None:
        """Write the system entry of each execution that failed, or was cancelled while
        running, by `now`: computed when looked at, like the executions' states."""
        for execution in executions:
            if execution.system_logged or execution.end_at is None:
                continue
            phase = execution.phase(now)
            if phase == "failed":
                text = execution.system_text or f"Container called exit({execution.exit_code})."
            elif phase == "cancelled" and execution.started_at(now) is not None:
                text = (
                    f"Execution {execution.execution_id} was cancelled: its running task "
                    f"{execution.execution_id}-task0 was stopped."
                )
            else:
                continue
            execution.system_logged = True
            self._log(execution, SYSTEM_LOG_ID, text, "WARNING", execution.end_at)

    def _sorted_log(self, descending: bool = False) -> list[_LogEntry]:
        # Stable, so entries of one time keep their order (reversed when descending).
        ordered = sorted(self._log_entries, key=lambda entry: entry.at)
        return ordered[::-1] if descending else ordered

    def _list_log_entries(self, body: Mapping[str, Any], now: float) -> dict[str, Any]:
        projects = _log_projects(body.get("resourceNames"))
        try:
            comparisons = parse_filter(str(body.get("filter") or ""))
        except FilterError as exc:
            raise ApiError(400, str(exc)) from None
        order = body.get("orderBy") or LOG_ORDERS[0]
        if order not in LOG_ORDERS:
            raise ApiError(400, f"Invalid orderBy '{order}': use one of {', '.join(LOG_ORDERS)}.")
        try:
            size = int(body.get("pageSize") or LOG_PAGE_SIZE)
        except (TypeError, ValueError):
            raise ApiError(400, f"Invalid pageSize {body.get('pageSize')!r}.") from None
        if not 0 < size <= MAX_LOG_PAGE_SIZE:
            raise ApiError(400, f"pageSize must be between 0 and {MAX_LOG_PAGE_SIZE}, not {size}.")
        self._log_endings(self._executions.values(), now)
        found = [
            copy.deepcopy(entry.view)
            for entry in self._sorted_log(descending=order == LOG_ORDERS[1])
            if entry.view["resource"]["labels"]["project_id"] in projects
            and all(comparison.matches(entry.view) for comparison in comparisons)
        ]
        page = {"pageSize": str(size), "pageToken": str(body.get("pageToken") or "")}
        return _page(found, page, "entries")

    # -- HTTP entry point ----------------------------------------------------------------

    def _serve(self, handler: _Handler, body: bytes) -> None:
        """Answer one API call (control calls are routed before this)."""
        method, path, query = parse_call(handler)
        received_at = self._clock()
        body_json = json_or_none(body)
        rpc, params = route_call(ROUTES, method, path)
        if rpc is None and self._serve_platform(handler, body):
            return  # Service Usage, Artifact Registry, Resource Manager (gcp_platform)
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
            message = fault.message or _fault_message(fault.code, rpc, path, query, body_json)
            details = _error_details(fault.code, rpc)
            answer = ApiError(fault.code, message, fault.status, details).to_json()
            record(fault.code, answer, fault)
            handler.reply(fault.code, answer)
            return

        try:
            if rpc is None:
                raise ApiError(404, f"No Cloud Run Admin API v2 method for {method} {path}.")
            status, answer = 200, self._call(rpc, params, query, body_json, body)
        except ApiError as exc:
            status, answer = exc.code, exc.to_json()
        self._answer(handler, fault, record, status, answer, lambda: handler.reply(status, answer))

    def _call(
        self,
        rpc: str,
        params: dict[str, str],
        query: dict[str, str],
        body: Any,
        raw_body: bytes,
    ) -> dict[str, Any]:
        if raw_body.strip() and body is None:
            raise ApiError(400, "Invalid JSON payload received.")
        if body is not None and not isinstance(body, dict):
            raise ApiError(400, "Invalid JSON payload received: not an object.")
        body = body or {}
        with self._lock:
            now = self._clock()
            if rpc == "ListLogEntries":
                return self._list_log_entries(body, now)
            self._require_api(params["project"], RUN_API)
            parent = f"projects/{params['project']}/locations/{params['location']}"
            validate_only = query.get("validateOnly", "").lower() == "true"
            if rpc == "CreateJob":
                job_id = query.get("jobId", "")
                return self._create_job(parent, params, job_id, body, now, validate_only)
            if rpc == "ListJobs":
                jobs = [j for j in self._jobs.values() if j.name.startswith(parent + "/jobs/")]
                return _page([self._job_view(j, now) for j in jobs], query, "jobs")
            if rpc == "GetOperation":
                return self._operation_view(self._get_operation(parent, params), now)
            if rpc == "DeleteOperation":
                del self._operations[self._get_operation(parent, params).name]
                return {}
            if rpc == "ListOperations":
                found = [
                    self._operation_view(op, now)
                    for op in self._operations.values()
                    if op.name.startswith(parent + "/operations/")
                ]
                return _page(found, query, "operations")
            job = self._get_job(f"{parent}/jobs/{params['job']}")
            if rpc == "GetJob":
                return self._job_view(job, now)
            if rpc == "DeleteJob":
                if validate_only:
                    return self._operation_view(self._operation(parent, job, now), now)
                return self._delete_job(job, now)
            if rpc == "RunJob":
                overrides = body.get("overrides") or {}
                if body.get("validateOnly"):
                    self._apply_overrides(job, overrides)
                    return {"name": f"{parent}/operations/{uuid.uuid4()}", "done": True}
                execution = self._new_execution(job, None, overrides, now)
                wait = "end" if self.operations_track_executions else "none"
                op = self._operation(parent, execution, now, wait=wait, execution=execution)
                return self._operation_view(op, now)
            if rpc == "ListExecutions":
                found = sorted(job.executions.values(), key=lambda e: -e.created_at)
                return _page([self._execution_view(e, now) for e in found], query, "executions")
            execution = job.executions.get(params["execution"])
            if execution is None:
                raise _not_found(f"{job.name}/executions/{params['execution']}")
            if rpc == "GetExecution":
                return self._execution_view(execution, now)
            if rpc == "CancelExecution":
                if execution.phase(now) in TERMINAL:
                    raise ApiError(
                        400,
                        f"Execution {execution.execution_id} has already completed and cannot "
                        "be cancelled.",
                        "FAILED_PRECONDITION",
                    )
                if not (validate_only or body.get("validateOnly")):
                    _cancel(execution, now)
                return self._operation_view(self._operation(parent, execution, now), now)
            if rpc == "DeleteExecution":
                if not (validate_only or body.get("validateOnly")):
                    self._delete_execution(execution, now)
                return self._operation_view(self._operation(parent, execution, now), now)
        raise ApiError(501, f"{rpc} is not implemented by the emulator.")  # pragma: no cover

    # -- API methods ---------------------------------------------------------------------

    def _get_job(self, name: str) -> _Job:
        job = self._jobs.get(name)
        if job is None:
            raise _not_found(name)
        return job

    def _get_operation(self, parent: str, params: Mapping[str, str]) -> _Operation:
        name = f"{parent}/operations/{params['operation']}"
        op = self._operations.get(name)
        if op is None:
            raise _not_found(name)
        return op

    def _create_job(
        self,
        parent: str,
        params: Mapping[str, str],
        job_id: str,
        body: dict[str, Any],
        now: float,
        validate_only: bool,
    ) -> dict[str, Any]:
        if not job_id:
            raise ApiError(400, "The request has errors: job_id is required.")
        if not JOB_ID.match(job_id):
            raise ApiError(
                400,
                f"Invalid job id '{job_id}': it must use only lowercase letters, digits and "
                "hyphens, begin with a letter, not end with a hyphen, and be at most 63 "
                "characters long.",
            )
        name = f"{parent}/jobs/{job_id}"
        spec = {key: copy.deepcopy(body[key]) for key in _JOB_INPUT_FIELDS if key in body}
        spec["template"] = _job_template(spec.get("template"))
        self._check_run_service_account(spec["template"])
        token = spec.get("startExecutionToken") or spec.get("runExecutionToken")
        if token is not None:
            if not EXECUTION_TOKEN.match(token):
                raise ApiError(
                    400,
                    f"Invalid execution token '{token}': it must use only lowercase letters, "
                    "digits and hyphens, and begin and end with a letter or digit.",
                )
            if len(job_id) + len(token) >= 63:
                raise ApiError(
                    400,
                    f"The sum of job name and execution token length must be fewer than 63 "
                    f"characters; '{job_id}' and '{token}' have {len(job_id) + len(token)}.",
                )
        if name in self._jobs:
            raise ApiError(409, f"Resource '{name}' already exists.")
        job = _Job(
            name=name,
            project=params["project"],
            location=params["location"],
            job_id=job_id,
            uid=str(uuid.uuid4()),
            created_at=now,
            spec=spec,
        )
        if validate_only:
            # Nothing is stored and nothing started; the operation is not kept either.
            view = self._job_view(job, now)
            return {
                "name": f"{parent}/operations/{uuid.uuid4()}",
                "metadata": {"@type": JOB_TYPE, **view},
                "done": True,
                "response": {"@type": JOB_TYPE, **view},
            }
        self._jobs[name] = job
        execution: _Execution | None = None
        wait: Literal["none", "start", "end"] = "none"
        if token is not None:
            execution = self._new_execution(job, token, {}, now)
            if self.operations_track_executions:
                wait = "start" if spec.get("startExecutionToken") else "end"
        op = self._operation(parent, job, now, wait=wait, execution=execution)
        job.create_operation = op
        return self._operation_view(op, now)

    def _delete_job(self, job: _Job, now: float) -> dict[str, Any]:
        for execution in list(job.executions.values()):
            self._delete_execution(execution, now)
        job.deleted_at = now
        del self._jobs[job.name]
        parent = f"projects/{job.project}/locations/{job.location}"
        return self._operation_view(self._operation(parent, job, now), now)

    def _delete_execution(self, execution: _Execution, now: float) -> None:
        if execution.phase(now) not in TERMINAL:
            _cancel(execution, now)
        # Its logs outlive it; the system entry of how it ended is due now or never.
        self._log_endings([execution], now)
        execution.deleted_at = now
        execution.job.executions.pop(execution.execution_id, None)
        self._executions.pop(execution.name, None)

    def _apply_overrides(self, job: _Job, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The ExecutionTemplate of `job` with RunJob `overrides` applied."""
        template = copy.deepcopy(job.spec["template"])
        task_template = template["template"]
        containers = task_template.get("containers", [])
        for override in overrides.get("containerOverrides", []) or []:
            wanted = override.get("name", "")
            if wanted:
                targets = [c for c in containers if c.get("name") == wanted]
            else:
                targets = containers[:1] if len(containers) == 1 else []
            if not targets:
                raise ApiError(
                    400, f"Container override for '{wanted}' matches no container of the job."
                )
            container = targets[0]
            if override.get("clearArgs"):
                container.pop("args", None)
            if override.get("args"):
                container["args"] = list(override["args"])
            env = list(container.get("env", []))
            for variable in override.get("env", []) or []:
                env = [v for v in env if v.get("name") != variable.get("name")] + [variable]
            if env:
                container["env"] = env
        if overrides.get("taskCount"):
            if int(overrides["taskCount"]) < 1:
                raise ApiError(400, "overrides.taskCount must be at least 1.")
            template["taskCount"] = int(overrides["taskCount"])
        if overrides.get("timeout"):
            _duration_seconds(overrides["timeout"], "overrides.timeout")
            task_template["timeout"] = overrides["timeout"]
        return template

    def _new_execution(
        self, job: _Job, token: str | None, overrides: Mapping[str, Any], now: float
    ) -> _Execution:
        template = self._apply_overrides(job, overrides)
        if token is None:
            while True:
                alphabet = string.ascii_lowercase + string.digits
                suffix = "".join(self._rng.choice(alphabet) for _ in range(5))
                if suffix and f"{job.job_id}-{suffix}" not in job.executions:
                    break
            execution_id = f"{job.job_id}-{suffix}"
        else:
            execution_id = f"{job.job_id}-{token}"
        plan = self._plan_for(job.job_id, execution_id)
        task_template = template["template"]
        task_count = int(template.get("taskCount") or 1)
        start_at = now + plan.start_seconds
        runs_container = self.run_containers and plan.outcome == "succeeded"
        execution = _Execution(
            name=f"{job.name}/executions/{execution_id}",
            execution_id=execution_id,
            job=job,
            uid=str(uuid.uuid4()),
            created_at=now,
            start_at=start_at,
            end_at=None
            if plan.outcome == "manual" or runs_container
            else start_at + plan.run_seconds,
            final="succeeded" if plan.outcome == "manual" else plan.outcome,
            message=plan.message,
            run_seconds=plan.run_seconds,
            task_count=task_count,
            parallelism=int(template.get("parallelism") or task_count),
            max_retries=int(task_template.get("maxRetries", 3)),
            template=task_template,
            labels=dict(template.get("labels", {})),
            annotations=dict(template.get("annotations", {})),
            runs_container=runs_container,
        )
        job.executions[execution_id] = execution
        job.execution_count += 1
        job.latest = execution
        self._executions[execution.name] = execution
        return execution

    def _operation(
        self,
        parent: str,
        target: _Job | _Execution,
        now: float,
        *,
        wait: Literal["none", "start", "end"] = "none",
        execution: _Execution | None = None,
    ) -> _Operation:
        op = _Operation(
            name=f"{parent}/operations/{uuid.uuid4()}",
            target=target,
            created_at=now,
            min_done_at=now + self.operation_seconds,
            wait=wait,
            execution=execution,
        )
        self._operations[op.name] = op
        return op

    # -- views ---------------------------------------------------------------------------

    def _operation_state(self, op: _Operation, now: float) -> tuple[bool, dict[str, Any] | None]:
        """(done, error) of an operation at `now`."""
        if now < op.min_done_at:
            return False, None
        execution = op.execution
        if op.wait == "none" or execution is None:
            return True, None
        phase = execution.phase(now)
        if op.wait == "start" and phase == "pending":
            return False, None
        if op.wait == "end" and phase not in TERMINAL:
            return False, None
        if phase == "failed" and (op.wait == "end" or execution.started_at(now) is None):
            message = _failure_message(execution)
            return True, {"code": FAILED_PRECONDITION_CODE, "message": message}
        return True, None

    def _operation_view(self, op: _Operation, now: float) -> dict[str, Any]:
        if isinstance(op.target, _Job):
            type_url, resource = JOB_TYPE, self._job_view(op.target, now)
        else:
            type_url, resource = EXECUTION_TYPE, self._execution_view(op.target, now)
        done, error = self._operation_state(op, now)
        view: dict[str, Any] = {"name": op.name, "metadata": {"@type": type_url, **resource}}
        if done:
            view["done"] = True
            if error is not None:
                view["error"] = error
            else:
                view["response"] = {"@type": type_url, **resource}
        return view

    def _job_view(self, job: _Job, now: float) -> dict[str, Any]:
        spec = job.spec
        view: dict[str, Any] = {
            "name": job.name,
            "uid": job.uid,
            "generation": "1",
        }
        for key in ("labels", "annotations"):
            if spec.get(key):
                view[key] = dict(spec[key])
        created = _timestamp(job.created_at)
        view.update(
            {
                "createTime": created,
                "updateTime": created,
                "creator": CREATOR,
                "lastModifier": CREATOR,
            }
        )
        for key in ("client", "clientVersion", "binaryAuthorization"):
            if spec.get(key):
                view[key] = copy.deepcopy(spec[key])
        view["launchStage"] = spec.get("launchStage") or "GA"
        view["template"] = copy.deepcopy(spec["template"])
        view["observedGeneration"] = "1"
        ready_state, ready_message, ready_at = "CONDITION_SUCCEEDED", "", job.created_at
        if job.create_operation is not None:
            done, error = self._operation_state(job.create_operation, now)
            if not done:
                ready_state = "CONDITION_RECONCILING"
            elif error is not None:
                ready_state, ready_message = "CONDITION_FAILED", error["message"]
        condition: dict[str, Any] = {"type": "Ready", "state": ready_state}
        if ready_message:
            condition["message"] = ready_message
        condition["lastTransitionTime"] = _timestamp(ready_at)
        view["terminalCondition"] = condition
        if job.execution_count:
            view["executionCount"] = job.execution_count
        if job.latest is not None:
            view["latestCreatedExecution"] = _execution_reference(job.latest, now)
        if ready_state == "CONDITION_RECONCILING":
            view["reconciling"] = True
        for key in ("startExecutionToken", "runExecutionToken"):
            if spec.get(key):
                view[key] = spec[key]
        if job.deleted_at is not None:
            view["deleteTime"] = _timestamp(job.deleted_at)
            view["expireTime"] = _timestamp(job.deleted_at + 30 * 24 * 3600)
        view["etag"] = f'"{job.uid[:8]}/{job.execution_count}"'
        return view

    def _execution_view(self, execution: _Execution, now: float) -> dict[str, Any]:
        job = execution.job
        phase = execution.phase(now)
        started = execution.started_at(now)
        ended = execution.end_at if phase in TERMINAL else None
        view: dict[str, Any] = {
            "name": execution.name,
            "uid": execution.uid,
            "creator": CREATOR,
            "generation": "1",
        }
        if execution.labels:
            view["labels"] = dict(execution.labels)
        if execution.annotations:
            view["annotations"] = dict(execution.annotations)
        view["createTime"] = _timestamp(execution.created_at)
        if started is not None:
            view["startTime"] = _timestamp(started)
        if ended is not None:
            view["completionTime"] = _timestamp(ended)
        view["updateTime"] = _timestamp(ended or started or execution.created_at)
        if execution.deleted_at is not None:
            view["deleteTime"] = _timestamp(execution.deleted_at)
            view["expireTime"] = _timestamp(execution.deleted_at + 30 * 24 * 3600)
        view.update(
            {
                "launchStage": "GA",
                "job": job.job_id,
                "parallelism": execution.parallelism,
                "taskCount": execution.task_count,
                "template": copy.deepcopy(execution.template),
            }
        )
        if phase not in TERMINAL:
            view["reconciling"] = True
        view["conditions"] = _conditions(execution, phase, now)
        view["observedGeneration"] = "1"
        tasks = execution.task_count
        counts: dict[str, int] = {}
        if phase == "running":
            counts["runningCount"] = tasks
        elif phase == "succeeded":
            counts["succeededCount"] = tasks
        elif phase == "failed":
            counts["succeededCount"] = tasks - 1
            counts["failedCount"] = 1
            counts["retriedCount"] = execution.max_retries
        elif phase == "cancelled":
            counts["cancelledCount"] = tasks
        view.update({key: value for key, value in counts.items() if value})
        view["logUri"] = _log_uri(execution)
        view["etag"] = f'"{execution.uid[:8]}/{phase}"'
        return view

    # -- control API ---------------------------------------------------------------------

    # Common routes (`requests`, `reset`, `faults`, `configure`): EmulatorBase._control.

    def _control_summary(self) -> dict[str, Any]:
        return {
            "jobs": len(self._jobs),
            "executions": len(self._executions),
            "operations": len(self._operations),
            "faults": len(self._faults),
            "requests": len(self._requests),
            "log_entries": len(self._log_entries),
            "processes": len(self._processes),
        }

    def _control_route(
        self, method: str, route: str, query: Mapping[str, str], payload: Any
    ) -> tuple[int, Any] | None:
        if route == "state" and method == "GET":
            return 200, {"jobs": self.jobs(), "executions": self.executions()}
        if route == "finish" and method == "POST":
            if not isinstance(payload, Mapping) or "execution" not in payload:
                return 400, {"error": 'the body must be {"execution": ..., "outcome": ...}'}
            return 200, self.finish_execution(**payload)
        if route == "logs" and method == "GET":
            return 200, self.log_entries(query.get("execution"))
        if route == "logs" and method == "POST":
            if not isinstance(payload, Mapping) or not {"execution", "text"} <= set(payload):
                return 400, {"error": 'the body must be {"execution": ..., "text": ...}'}
            return 200, self.write_log(**payload)
        return self._platform_control(method, route)


# -- helpers -------------------------------------------------------------------------------


def _not_found(name: str) -> ApiError:
    return ApiError(404, f"Resource '{name}' was not found")


def _fault_message(
    code: int, rpc: str | None, path: str, query: Mapping[str, str], body: Any
) -> str:
    if code == 403 and rpc in PERMISSIONS:
        resource = path.removeprefix("/v2/").rsplit(":", 1)[0]
        if rpc == "CreateJob":
            resource = f"{resource}/{query.get('jobId', '')}"
        elif rpc == "ListLogEntries" and isinstance(body, Mapping):
            resource = ", ".join(map(str, body.get("resourceNames") or []))
        return (
            f"Permission '{PERMISSIONS[rpc]}' denied on resource '{resource}' "
            "(or it may not exist)."
        )
    if code == 429:
        if rpc == "ListLogEntries":
            metric, limit = "Read requests", "Read requests per minute"
        else:
            metric, limit = "Job run requests", "Job run requests per minute per region"
        return (
            f"Quota exceeded for quota metric '{metric}' and limit '{limit}' of service "
            f"'{_service(rpc)}' for consumer 'project_number:{PROJECT_NUMBER}'."
        )
    return DEFAULT_MESSAGES.get(code, f"Error injected by the emulator ({code}).")


def _service(rpc: str | None) -> str:
    return "logging.googleapis.com" if rpc == "ListLogEntries" else "run.googleapis.com"


def _error_details(code: int, rpc: str | None) -> list[dict[str, Any]]:
    """The `google.rpc.ErrorInfo` Google attaches to quota and permission errors (the client
    exposes it as `exc.reason`, `exc.domain` and `exc.metadata`)."""
    if code == 429:
        info = {
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {"service": _service(rpc), "consumer": f"projects/{PROJECT_NUMBER}"},
        }
    elif code == 403 and rpc in PERMISSIONS:
        info = {
            "reason": "IAM_PERMISSION_DENIED",
            "domain": "iam.googleapis.com",
            "metadata": {"permission": PERMISSIONS[rpc]},
        }
    else:
        return []
    return [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", **info}]


def _job_template(template: Any) -> dict[str, Any]:
    """The job's ExecutionTemplate with Cloud Run's defaults filled in; 400 when it has no
    container with an image."""
    template = copy.deepcopy(template) if isinstance(template, dict) else {}
    task_template = template.setdefault("template", {})
    containers = task_template.get("containers") or []
    if not containers:
        raise ApiError(400, "Job.template.template.containers: at least one container is required.")
    for index, container in enumerate(containers):
        if not container.get("image"):
            raise ApiError(400, f"Job.template.template.containers[{index}].image: Required.")
        container.setdefault("resources", {"limits": {"cpu": "1000m", "memory": "512Mi"}})
    template.setdefault("taskCount", 1)
    task_template.setdefault("maxRetries", 3)
    task_template.setdefault("timeout", "600s")
    _duration_seconds(task_template["timeout"], "Job.template.template.timeout")
    task_template.setdefault(
        "serviceAccount", f"{PROJECT_NUMBER}-compute@developer.gserviceaccount.com"
    )
    return template


def _cancel(execution: _Execution, now: float) -> None:
    if execution.start_at is not None and execution.start_at > now:
        execution.start_at = None
    execution.end_at = now
    execution.final = "cancelled"


def _failure_message(execution: _Execution) -> str:
    return execution.message or (
        f"Task {execution.execution_id}-task0 failed with exit code {execution.exit_code}"
    )


def _duration_seconds(value: Any, what: str) -> float:
    """Seconds of a google.protobuf.Duration in JSON ("600s", "1.5s"); 400 when it is not one."""
    text = str(value)
    try:
        seconds = float(text.removesuffix("s")) if text.endswith("s") else -1.0
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise ApiError(400, f"Invalid {what} '{text}': a duration such as '600s' is required.")
    return seconds


def _log_projects(resource_names: Any) -> set[str]:
    """The projects of entries:list's `resourceNames` (the emulator serves only projects)."""
    if not isinstance(resource_names, list) or not resource_names:
        raise ApiError(400, 'resourceNames is required: a list such as ["projects/my-project"].')
    projects = set()
    for name in resource_names:
        matched = re.fullmatch(r"projects/([^/]+)", name) if isinstance(name, str) else None
        if matched is None:
            raise ApiError(
                400, f"Invalid resource name {name!r}: the emulator serves projects/PROJECT_ID."
            )
        projects.add(matched.group(1))
    return projects


def _conditions(execution: _Execution, phase: Phase, now: float) -> list[dict[str, Any]]:
    created = _timestamp(execution.created_at)
    started = execution.started_at(now)
    start_time = _timestamp(started) if started is not None else created
    end_time = _timestamp(execution.end_at) if execution.end_at is not None else created

    def condition(kind: str, state: str, at: str, **extra: Any) -> dict[str, Any]:
        return {"type": kind, "state": state, **extra, "lastTransitionTime": at}

    if phase == "pending":
        return [
            condition("Completed", "CONDITION_PENDING", created),
            condition(
                "ResourcesAvailable",
                "CONDITION_RECONCILING",
                created,
                message="Provisioning resources.",
            ),
            condition("Started", "CONDITION_PENDING", created),
        ]
    resources = condition("ResourcesAvailable", "CONDITION_SUCCEEDED", start_time)
    started_condition = condition("Started", "CONDITION_SUCCEEDED", start_time)
    if phase == "running":
        completed = condition("Completed", "CONDITION_RECONCILING", start_time)
        return [completed, resources, started_condition]
    if phase == "succeeded":
        seconds = (execution.end_at or now) - (started or execution.created_at)
        completed = condition(
            "Completed",
            "CONDITION_SUCCEEDED",
            end_time,
            message=f"Execution completed successfully in {seconds:.2f}s.",
        )
        return [completed, resources, started_condition]
    if phase == "failed":
        completed = condition(
            "Completed",
            "CONDITION_FAILED",
            end_time,
            message=_failure_message(execution),
            executionReason="NON_ZERO_EXIT_CODE",
        )
        found = [completed, resources, started_condition]
        if execution.max_retries:
            found.append(
                condition(
                    "Retry",
                    "CONDITION_SUCCEEDED",
                    end_time,
                    message=f"Task was retried {execution.max_retries} time(s).",
                )
            )
        return found
    # Cancelled: before its start, it never got resources.
    completed = condition(
        "Completed",
        "CONDITION_FAILED",
        end_time,
        message="The execution was cancelled.",
        executionReason="CANCELLED",
    )
    if started is None:
        return [
            completed,
            condition("ResourcesAvailable", "CONDITION_FAILED", end_time),
            condition("Started", "CONDITION_FAILED", end_time),
        ]
    return [completed, resources, started_condition]


def _execution_reference(execution: _Execution, now: float) -> dict[str, Any]:
    phase = execution.phase(now)
    reference: dict[str, Any] = {
        "name": execution.execution_id,
        "createTime": _timestamp(execution.created_at),
    }
    if phase in TERMINAL and execution.end_at is not None:
        reference["completionTime"] = _timestamp(execution.end_at)
    if execution.deleted_at is not None:
        reference["deleteTime"] = _timestamp(execution.deleted_at)
    reference["completionStatus"] = {
        "pending": "EXECUTION_PENDING",
        "running": "EXECUTION_RUNNING",
        "succeeded": "EXECUTION_SUCCEEDED",
        "failed": "EXECUTION_FAILED",
        "cancelled": "EXECUTION_CANCELLED",
    }[phase]
    return reference


def _log_uri(execution: _Execution) -> str:
    job = execution.job
    query = (
        'resource.type="cloud_run_job"\n'
        f'resource.labels.job_name="{job.job_id}"\n'
        f'resource.labels.location="{job.location}"\n'
        f'labels."run.googleapis.com/execution_name"="{execution.execution_id}"'
    )
    return (
        f"https://console.cloud.google.com/logs/viewer?project={job.project}"
        f"&advancedFilter={quote(query, safe='')}"
    )


def _page(items: list[dict[str, Any]], query: Mapping[str, str], key: str) -> dict[str, Any]:
    """One page of a list answer (`pageSize`, `pageToken` = the offset of the page)."""
    try:
        size = int(query.get("pageSize") or 0)
        offset = int(query.get("pageToken") or 0)
    except ValueError:
        raise ApiError(400, "Invalid pageSize or pageToken.") from None
    if size < 0 or offset < 0:
        raise ApiError(400, "Invalid pageSize or pageToken.")
    end = offset + size if size else len(items)
    answer: dict[str, Any] = {}
    if items[offset:end]:
        answer[key] = items[offset:end]
    if end < len(items):
        answer["nextPageToken"] = str(end)
    return answer


# -- the HTTP side -------------------------------------------------------------------------


class _Handler(EmulatorHandler):
    def reply(self, status: int, answer: Any) -> None:
        payload = json.dumps(answer).encode()
        headers = [
            ("Content-Type", "application/json; charset=UTF-8"),
            ("Content-Length", str(len(payload))),
        ]
        self.send(status, payload, headers)


# The handler is defined after the service that names it.
CloudRunEmulator.handler_class = _Handler


# -- standalone ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skylane.testing.gcp",
        description="Cloud Run Admin API v2 emulator (jobs, executions, operations) with Cloud "
        "Logging's entries:list. Prints its URL, then serves until interrupted; control it under "
        "/emulator/.",
    )
    add_address_arguments(parser)
    parser.add_argument("--start-seconds", type=float, default=1.0, help="pending -> running")
    parser.add_argument("--run-seconds", type=float, default=5.0, help="running -> finished")
    parser.add_argument("--outcome", choices=sorted(OUTCOMES), default="succeeded")
    parser.add_argument(
        "--operation-seconds", type=float, default=0.0, help="extra delay of every operation"
    )
    parser.add_argument(
        "--forbidden-project",
        action="append",
        default=[],
        metavar="PROJECT",
        help="answer 403 PERMISSION_DENIED to every call on this project (repeatable)",
    )
    add_process_arguments(
        parser, "each execution's first container (command + args) as a local process"
    )
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Secret Manager value for secretKeyRef env (NAME or NAME:VERSION; repeatable)",
    )
    parser.add_argument(
        "--platform-apis-disabled",
        action="store_true",
        help="start every project with no API enabled, as a new Google Cloud project",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    secrets: dict[str, str] = {}
    for item in args.secret:
        name, equals, value = item.partition("=")
        if not name or not equals:
            parser.error(f"--secret takes NAME=VALUE, not {item!r}")
        secrets[name] = value

    emulator = CloudRunEmulator(
        host=args.host,
        port=args.port,
        start_seconds=args.start_seconds,
        run_seconds=args.run_seconds,
        outcome=args.outcome,
        operation_seconds=args.operation_seconds,
        forbidden_projects=args.forbidden_project,
        verbose=args.verbose,
        run_containers=args.run_containers,
        workdir=args.workdir,
        secrets=secrets,
        platform_apis_enabled=not args.platform_apis_disabled,
    )
    # The URL first (what readers of the first line rely on), then the IAM gRPC target.
    return serve_until_signalled(emulator, details=lambda: [f"iam_endpoint={emulator.iam_target}"])


if __name__ == "__main__":
    sys.exit(main())

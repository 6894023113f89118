"""Domain models and the run state machine.

These are the typed shapes that cross every boundary: the store returns them, the API serves
them, the client parses them. Request bodies live in `skylane.api.schemas`.
"""

from __future__ import annotations

import enum
import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from skylane.errors import IllegalTransition
from skylane.schedules import CatchUp


class RunState(enum.StrEnum):
    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {RunState.COMPLETED, RunState.FAILED, RunState.CRASHED, RunState.CANCELLED}
)

# Which state may follow which. Terminal states have no successors. SCHEDULED may go straight to
# CANCELLED because nothing was submitted yet; PENDING may go back to SCHEDULED when a claim is
# handed back. CANCELLING may still end in any terminal state: the run may finish or crash
# before the cancel reaches it.
ALLOWED_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.SCHEDULED: frozenset({RunState.PENDING, RunState.CANCELLING, RunState.CANCELLED}),
    RunState.PENDING: frozenset(
        {
            RunState.SCHEDULED,
            RunState.RUNNING,
            RunState.FAILED,
            RunState.CRASHED,
            RunState.CANCELLING,
            RunState.CANCELLED,
        }
    ),
    RunState.RUNNING: frozenset(
        {RunState.COMPLETED, RunState.FAILED, RunState.CRASHED, RunState.CANCELLING}
    ),
    RunState.CANCELLING: frozenset(
        {RunState.CANCELLED, RunState.COMPLETED, RunState.FAILED, RunState.CRASHED}
    ),
    RunState.COMPLETED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CRASHED: frozenset(),
    RunState.CANCELLED: frozenset(),
}


def check_transition(current: RunState, target: RunState) -> None:
    """Raise `IllegalTransition` unless `current -> target` is allowed."""
    if target not in ALLOWED_TRANSITIONS[current]:
        if current.is_terminal:
            reason = f"the run is already {current.value}, a terminal state"
        else:
            reason = f"{current.value} -> {target.value} is not an allowed transition"
        raise IllegalTransition(
            f"cannot move run to {target.value}: {reason}", current_state=current.value
        )


class PoolFallback(enum.StrEnum):
    WORKER = "worker"


class ApiScope(enum.StrEnum):
    ADMIN = "admin"
    DEPLOY = "deploy"
    WORKER = "worker"
    READ = "read"


class _Model(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Pool(_Model):
    id: uuid.UUID
    name: str
    type: str
    base_job_template: dict[str, Any]
    concurrency_limit: int | None = None
    paused: bool = False
    settings: dict[str, Any] = Field(default_factory=dict)
    credentials: dict[str, Any] | None = None
    provisioned_resources: list[dict[str, Any]] = Field(default_factory=list)
    description: str | None = None
    # "worker": a push pool whose runs the pool's workers take while the control plane cannot
    # push them (no credentials, rejected credentials, provider unreachable).
    fallback: PoolFallback | None = None
    # While set, the control plane is not pushing this pool's runs, for `fallback_reason`.
    fallback_since: datetime | None = None
    fallback_reason: str | None = None
    created_at: datetime
    updated_at: datetime


class Worker(_Model):
    """A pull worker of a pool, as its heartbeats describe it."""

    name: str
    pool_name: str
    hostname: str | None = None
    version: str | None = None
    limit: int | None = None
    started_at: datetime
    last_heartbeat_at: datetime
    stopped_at: datetime | None = None
    # Heartbeat within the last `worker_offline_seconds` and not stopped.
    online: bool = False


class WorkerRegistration(_Model):
    """The answer to a worker's heartbeat: itself as the server sees it, and its pool as it is
    now (its current template is what the worker's next run uses)."""

    worker: Worker
    pool: Pool


class PoolStatus(_Model):
    """Whether a pool's runs can be dispatched now, and by whom."""

    pool_name: str
    status: Literal["ready", "paused", "not_ready"]
    reason: str | None = None
    # "control plane" for push pools, "workers" for pull pools and push pools in fallback.
    dispatched_by: Literal["control plane", "workers"]
    workers: list[Worker] = Field(default_factory=list)


GIT_COMMIT_PATTERN = r"^[0-9a-f]{40}([0-9a-f]{24})?$"
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GIT_URL = re.compile(r"^(?:(?:https?|ssh|git|file)://\S+|[\w.-]+@[\w.-]+:\S+|/\S*)$")
_URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@]*:[^/@]*@")


def _invalid(message: str) -> PydanticCustomError:
    # No context: the message is used as is (no "Value error, " prefix, no formatting).
    return PydanticCustomError("invalid", message)


class SecretReference(_Model):
    """Where a secret is found at run time (an environment variable of the container, filled
    from the provider's secret store); never the secret itself."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")

    env: str = Field(description="Name of the environment variable holding the secret.")

    @field_validator("env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not _ENV_VAR.match(value):
            raise _invalid(
                "must be the name of an environment variable (letters, digits and '_', "
                "not starting with a digit), e.g. GIT_TOKEN"
            )
        return value


class GitSource(_Model):
    """A deployment's code cloned from git at run time instead of baked into the image (the
    API's and the project file's `source`). `commit` is the commit `ref` pointed at when the
    deployment was registered: runs check out exactly that, so a push to the branch changes
    nothing until the next deploy."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")

    git: str = Field(description="Repository URL: https://, ssh://, git@host:path or file://.")
    ref: str | None = Field(default=None, description="Branch, tag or commit; default branch.")
    commit: str | None = Field(default=None, pattern=GIT_COMMIT_PATTERN)
    credentials: SecretReference | None = None

    @field_validator("git")
    @classmethod
    def _git(cls, value: str) -> str:
        if _URL_WITH_PASSWORD.match(value):
            # Never echo it: the part before '@' is a password or token.
            raise _invalid(
                "must not contain a password or token; put the secret in an environment "
                "variable and name it in credentials: {env: GIT_TOKEN}"
            )
        if not _GIT_URL.match(value):
            raise _invalid(
                "must be a git repository URL (https://, ssh://, git@host:path, file:// or an "
                "absolute path)"
            )
        return value

    @field_validator("credentials", mode="before")
    @classmethod
    def _credentials(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (dict, SecretReference)):
            raise _invalid(
                "must be a secret reference such as {env: GIT_TOKEN}, never the secret itself "
                "(the value given is not shown)"
            )
        return value


class Deployment(_Model):
    id: uuid.UUID
    flow_name: str
    name: str
    pool_name: str
    entrypoint: str
    # Pinned by digest (`repo@sha256:...`) when `skylane deploy` pushed it.
    image: str | None = None
    source: GitSource | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_schema: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    concurrency_limit: int | None = None
    paused: bool = False
    created_at: datetime
    updated_at: datetime

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


class Schedule(_Model):
    """When a deployment runs by itself. Exactly one of `cron`, `interval_seconds` and `rrule`
    is set; see `skylane.schedules` for what each means across daylight-saving changes."""

    id: uuid.UUID
    deployment_id: uuid.UUID
    cron: str | None = None
    interval_seconds: int | None = None
    rrule: str | None = None
    timezone: str = "UTC"
    anchor: datetime | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    active: bool = True
    catchup: CatchUp = CatchUp.LATEST
    created_at: datetime
    updated_at: datetime
    # The next times the schedule fires (filled in by the API; empty when paused).
    next_times: list[datetime] = Field(default_factory=list)

    @property
    def kind(self) -> str:
        return "cron" if self.cron else "interval" if self.interval_seconds else "rrule"


class StateChange(_Model):
    """One entry of a run's state history."""

    state: RunState
    message: str | None = None
    transition_id: str | None = None
    timestamp: datetime


class RunAttempt(_Model):
    """One try at submitting a run to its provider."""

    number: int
    idempotency_key: str
    claimed_by: str | None = None
    lease_expires_at: datetime | None = None
    provider_ref: str | None = None
    submitted_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    provider_ended_at: datetime | None = None
    cleaned_up_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    tries: int = 0
    created_at: datetime


class Run(_Model):
    id: uuid.UUID
    deployment_id: uuid.UUID
    deployment_name: str
    pool_name: str
    flow_name: str
    state: RunState
    state_message: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    scheduled_time: datetime
    # A run whose submission is to be tried again (throttled, capacity, a 5xx) is not
    # submitted before this time.
    not_before: datetime | None = None
    schedule_id: uuid.UUID | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    # The git commit the runtime checked out, for deployments whose code comes from git.
    source_commit: str | None = None
    history: list[StateChange] = Field(default_factory=list)
    attempts: list[RunAttempt] = Field(default_factory=list)

    def late_by(self, now: datetime) -> float | None:
        """Seconds past its scheduled time, if the run is still waiting to be submitted; else
        None. Callers decide from how many seconds it counts as late."""
        if self.state not in (RunState.SCHEDULED, RunState.PENDING):
            return None
        if any(a.submitted_at is not None for a in self.attempts):
            return None
        overdue = (now - self.scheduled_time).total_seconds()
        return overdue if overdue > 0 else None


class StateResult(_Model):
    """Answer to a state change: the run as it now is, and whether this call changed it."""

    run: Run
    applied: bool


class LogLine(_Model):
    id: int
    run_id: uuid.UUID
    timestamp: datetime
    level: str
    stream: str
    message: str


class ApiKeyInfo(_Model):
    """What the server shows of an API key: never the key or its hash."""

    id: str
    name: str
    scopes: list[ApiScope]
    created_at: datetime
    expires_at: datetime | None = None
    revoked: bool = False


class RunExecution(_Model):
    """What the runtime inside the container needs to execute a run."""

    run_id: uuid.UUID
    flow_name: str
    entrypoint: str
    parameters: dict[str, Any]
    state: RunState
    source: GitSource | None = None

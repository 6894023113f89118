"""Request bodies of the HTTP API (responses are the domain models of `skylane.models`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from skylane.models import GIT_COMMIT_PATTERN, ApiScope, GitSource, PoolFallback, RunState
from skylane.schedules import CatchUp

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"


class _Body(BaseModel):
    # Unknown fields are an error, so a typo in a request never silently does nothing.
    model_config = ConfigDict(extra="forbid")


class PoolCreate(_Body):
    name: str = Field(pattern=NAME_PATTERN, description="Unique pool name.")
    type: str = Field(description="Pool type, e.g. process:push, ecs:push, cloud-run:push.")
    base_job_template: dict[str, Any] | None = Field(
        default=None, description="Defaults to the pool type's default template."
    )
    concurrency_limit: int | None = Field(default=None, ge=0)
    paused: bool = False
    settings: dict[str, Any] = Field(default_factory=dict)
    credentials: dict[str, Any] | None = None
    description: str | None = None
    fallback: PoolFallback | None = Field(
        default=None,
        description="Push pools only: 'worker' hands runs to the pool's workers while the "
        "control plane cannot push them.",
    )


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("may not be null; leave the field out to keep its value")
    return value


class ProvisionedResource(_Body):
    """A cloud resource `skylane pool provision` made or adopted for the pool: `created` ones
    are removed by `skylane pool deprovision`, adopted ones never."""

    kind: str = Field(min_length=1, description="What it is, e.g. ecr-repository, iam-role.")
    name: str = Field(min_length=1)
    id: str = Field(min_length=1, description="ARN, resource name or resource id.")
    created: bool


class PoolUpdate(_Body):
    """Fields left out are kept. `base_job_template: null` resets to the type's default;
    `concurrency_limit: null` removes the limit."""

    base_job_template: dict[str, Any] | None = None
    concurrency_limit: int | None = Field(default=None, ge=0)
    paused: bool | None = None
    settings: dict[str, Any] | None = None
    credentials: dict[str, Any] | None = None
    provisioned_resources: list[ProvisionedResource] | None = None
    description: str | None = None
    fallback: PoolFallback | None = None

    _no_null = field_validator("paused", "settings", "provisioned_resources")(_not_null)


class ScheduleCreate(_Body):
    """Exactly one of `cron`, `interval_seconds` and `rrule`."""

    cron: str | None = Field(default=None, description="5-field cron expression, e.g. 30 2 * * *")
    interval_seconds: int | None = Field(default=None, description="Every N seconds.")
    rrule: str | None = Field(default=None, description="RFC 5545 rule, e.g. FREQ=WEEKLY;BYDAY=MO")
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Berlin.")
    anchor: AwareDatetime | None = Field(
        default=None, description="Interval start / RRULE DTSTART (default: see the docs)."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the deployment's parameters."
    )
    active: bool = True
    catchup: CatchUp = Field(
        default=CatchUp.LATEST, description="What runs of times missed during downtime."
    )


class ScheduleUpdate(_Body):
    """Fields left out are kept. Giving one of `cron`, `interval_seconds`, `rrule` replaces the
    schedule's expression (the other two are cleared)."""

    cron: str | None = None
    interval_seconds: int | None = None
    rrule: str | None = None
    timezone: str | None = None
    anchor: AwareDatetime | None = None
    parameters: dict[str, Any] | None = None
    active: bool | None = None
    catchup: CatchUp | None = None

    _no_null = field_validator("timezone", "parameters", "active", "catchup")(_not_null)


class SourceCommit(_Body):
    """The commit the runtime checked out (full SHA-1 or SHA-256 hex)."""

    commit: str = Field(pattern=GIT_COMMIT_PATTERN)


class DeploymentCreate(_Body):
    flow_name: str = Field(pattern=NAME_PATTERN)
    name: str = Field(pattern=NAME_PATTERN)
    pool: str = Field(description="Name of the pool the deployment runs on.")
    entrypoint: str = Field(description="path/to/file.py:function")
    image: str | None = None
    source: GitSource | None = Field(
        default=None, description="Code cloned from git at run time instead of the image's."
    )
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_schema: dict[str, Any] = Field(
        default_factory=dict, description="JSON Schema of the entrypoint's parameters."
    )
    job_variables: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    concurrency_limit: int | None = Field(default=None, ge=0)
    paused: bool = False
    schedules: list[ScheduleCreate] = Field(default_factory=list)


class DeploymentUpdate(_Body):
    """Fields left out are kept; `image`, `source`, `description` and `concurrency_limit` may
    be null."""

    pool: str | None = None
    entrypoint: str | None = None
    image: str | None = None
    source: GitSource | None = None
    parameters: dict[str, Any] | None = None
    parameter_schema: dict[str, Any] | None = None
    job_variables: dict[str, Any] | None = None
    tags: list[str] | None = None
    description: str | None = None
    concurrency_limit: int | None = Field(default=None, ge=0)
    paused: bool | None = None

    _no_null = field_validator(
        "pool", "entrypoint", "parameters", "parameter_schema", "job_variables", "tags", "paused"
    )(_not_null)


class RunCreate(_Body):
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    scheduled_time: AwareDatetime | None = None


class StateSet(_Body):
    state: RunState
    message: str | None = Field(default=None, max_length=100_000)
    transition_id: str | None = Field(
        default=None,
        max_length=100,
        description="Client-chosen id; repeating it returns the current state unchanged.",
    )


class CancelRequest(_Body):
    transition_id: str | None = Field(default=None, max_length=100)


class LogIn(_Body):
    timestamp: AwareDatetime
    level: str = Field(default="INFO", max_length=16)
    stream: Literal["stdout", "stderr", "logging", "system"] = "logging"
    message: str = Field(max_length=1_000_000)


class LogBatch(_Body):
    logs: list[LogIn] = Field(max_length=10_000)


class ApiKeyCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[ApiScope] = Field(min_length=1)
    expires_at: AwareDatetime | None = None


class ApiKeyCreated(BaseModel):
    """The only response that ever carries a key's plaintext."""

    id: str
    name: str
    scopes: list[ApiScope]
    expires_at: AwareDatetime | None
    api_key: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    database: str


# --- the worker protocol (skylane.api.routers.workers) ---------------------------------------


class WorkerBeat(_Body):
    hostname: str | None = Field(default=None, max_length=255)
    version: str | None = Field(default=None, max_length=64)
    limit: int | None = Field(default=None, ge=1, description="Most runs the worker takes at once.")


class ClaimRequest(_Body):
    limit: int = Field(default=10, ge=1, le=1000, description="Most runs to claim now.")
    lease_seconds: float = Field(default=120.0, ge=5, le=3600)
    missed_before: AwareDatetime | None = None
    prefetch_seconds: float = Field(
        default=0.0, ge=0, le=3600, description="Claim runs scheduled up to this far ahead."
    )
    worker_limit: int | None = Field(
        default=None, ge=1, description="The worker's cap on its active runs (`--limit`)."
    )


class RecoveryRequest(_Body):
    limit: int = Field(default=10, ge=1, le=1000)
    lease_seconds: float = Field(default=120.0, ge=5, le=3600)


class LeaseRenewal(_Body):
    lease_seconds: float = Field(ge=5, le=3600)


class SubmissionRecord(_Body):
    key: str = Field(max_length=100)
    ref: str = Field(min_length=1, max_length=10_000)
    at: AwareDatetime


class SubmissionFailure(_Body):
    error: str = Field(max_length=100_000)
    retry_at: AwareDatetime | None = None
    same_key: bool = False
    count_try: bool = True
    message: str | None = Field(default=None, max_length=100_000)


class AttemptProgress(_Body):
    """What a worker's reconciler learned about a submitted attempt."""

    cancel_requested_at: AwareDatetime | None = None
    provider_ended_at: AwareDatetime | None = None
    cleaned_up_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    error: str | None = Field(default=None, max_length=100_000)


class ResourceValue(_Body):
    value: str = Field(max_length=100_000)

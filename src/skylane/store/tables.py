"""Table definitions (SQLAlchemy 2 ORM). Schema changes go through an Alembic migration."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class PoolRow(Base):
    __tablename__ = "pools"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    type: Mapped[str] = mapped_column(sa.String(64))
    base_job_template: Mapped[dict[str, Any]] = mapped_column(JSONType)
    concurrency_limit: Mapped[int | None] = mapped_column(sa.Integer)
    paused: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    credentials: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    provisioned_resources: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    description: Mapped[str | None] = mapped_column(sa.Text)
    # "worker": when the control plane cannot push, the pool's workers take its runs.
    fallback: Mapped[str | None] = mapped_column(sa.String(16))
    # Set while the control plane cannot push (and why): workers claim the runs meanwhile.
    fallback_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fallback_reason: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DeploymentRow(Base):
    __tablename__ = "deployments"
    __table_args__ = (sa.UniqueConstraint("flow_name", "name", name="uq_deployments_flow_name"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    flow_name: Mapped[str] = mapped_column(sa.String(200))
    name: Mapped[str] = mapped_column(sa.String(200))
    pool_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("pools.id"), index=True)
    entrypoint: Mapped[str] = mapped_column(sa.Text)
    image: Mapped[str | None] = mapped_column(sa.Text)
    # A `GitSource` as JSON, or NULL when the code is in the image.
    source: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    parameter_schema: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    job_variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    description: Mapped[str | None] = mapped_column(sa.Text)
    concurrency_limit: Mapped[int | None] = mapped_column(sa.Integer)
    paused: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    pool: Mapped[PoolRow] = relationship(lazy="joined")


class ScheduleRow(Base):
    """When a deployment runs by itself: a cron expression, an interval or an RRULE, in a time
    zone. The scheduler creates its runs ahead of time; `materialized_through` is how far it got
    (every occurrence up to then has a run or was skipped by the catch-up policy), and
    `next_fill_at` is when it must look again."""

    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    cron: Mapped[str | None] = mapped_column(sa.String(200))
    interval_seconds: Mapped[int | None] = mapped_column(sa.BigInteger)
    rrule: Mapped[str | None] = mapped_column(sa.Text)
    timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC")
    anchor: Mapped[datetime | None] = mapped_column(UTCDateTime)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    catchup: Mapped[str] = mapped_column(sa.String(16), default="latest")
    # Bumped by every change: a scheduler pass that computed runs from an older version
    # writes nothing.
    version: Mapped[int] = mapped_column(sa.Integer, default=1)
    materialized_through: Mapped[datetime] = mapped_column(UTCDateTime)
    next_fill_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        sa.Index("ix_runs_state_scheduled_time", "state", "scheduled_time"),
        sa.Index("ix_runs_pool_state", "pool_id", "state"),
        sa.Index("ix_runs_deployment_state", "deployment_id", "state"),
        sa.Index("ix_runs_not_before", "not_before"),
        # One run per schedule and time, whichever scheduler replica gets there first; a
        # schedule belongs to one deployment, so this is one run per deployment, schedule and
        # time. Manual runs (schedule_id NULL) never collide: NULLs are distinct.
        sa.UniqueConstraint("schedule_id", "scheduled_time", name="uq_runs_schedule_time"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("deployments.id", ondelete="CASCADE")
    )
    # Null once the pool is deleted; `pool_name` keeps where a finished run ran.
    pool_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("pools.id", ondelete="SET NULL")
    )
    pool_name: Mapped[str] = mapped_column(sa.String(200))
    flow_name: Mapped[str] = mapped_column(sa.String(200))
    deployment_name: Mapped[str] = mapped_column(sa.String(401))
    state: Mapped[str] = mapped_column(sa.String(16))
    state_message: Mapped[str | None] = mapped_column(sa.Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    job_variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    scheduled_time: Mapped[datetime] = mapped_column(UTCDateTime)
    # The schedule that created the run; NULL for runs asked for by hand, and once the
    # schedule is deleted (its past runs stay).
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("schedules.id", ondelete="SET NULL")
    )
    # Earliest time the dispatcher may claim the run again after a retryable submit failure.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source_commit: Mapped[str | None] = mapped_column(sa.String(64))
    run_token_hash: Mapped[str | None] = mapped_column(sa.String(64))

    pool: Mapped[PoolRow | None] = relationship(lazy="joined")
    history: Mapped[list[StateHistoryRow]] = relationship(
        order_by="StateHistoryRow.id", lazy="selectin", cascade="all, delete-orphan"
    )
    attempts: Mapped[list[AttemptRow]] = relationship(
        order_by="AttemptRow.number", lazy="selectin", cascade="all, delete-orphan"
    )


class StateHistoryRow(Base):
    __tablename__ = "run_state_history"
    __table_args__ = (
        # A repeated transition id is recognised by this constraint, not by a racy lookup.
        sa.UniqueConstraint("run_id", "transition_id", name="uq_run_state_history_transition"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("runs.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(sa.String(16))
    message: Mapped[str | None] = mapped_column(sa.Text)
    transition_id: Mapped[str | None] = mapped_column(sa.String(100))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AttemptRow(Base):
    __tablename__ = "run_attempts"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "number", name="uq_run_attempts_number"),
        sa.Index("ix_run_attempts_cleaned_up_at", "cleaned_up_at"),
        sa.Index("ix_run_attempts_lease_expires_at", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("runs.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(sa.Integer)
    idempotency_key: Mapped[str] = mapped_column(sa.String(100), unique=True)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_ref: Mapped[str | None] = mapped_column(sa.Text)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cleaned_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(sa.Text)
    # Submit calls made with this attempt's key: a try that failed ambiguously (a timeout: the
    # provider may have started it) is retried with the same key, never a new one.
    tries: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    # Claimed by a pull worker (`claimed_by` is its name): workers watch it, not the control
    # plane, which may have no credentials for the pool.
    by_worker: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkerRow(Base):
    """A pull worker of a pool, as its heartbeats describe it."""

    __tablename__ = "workers"
    __table_args__ = (sa.UniqueConstraint("pool_id", "name", name="uq_workers_pool_name"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    pool_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("pools.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(200))
    hostname: Mapped[str | None] = mapped_column(sa.String(255))
    version: Mapped[str | None] = mapped_column(sa.String(64))
    limit: Mapped[int | None] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A worker that stopped cleanly is offline at once, without waiting for missed beats.
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LogRow(Base):
    __tablename__ = "run_logs"
    __table_args__ = (sa.Index("ix_run_logs_run_id_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    level: Mapped[str] = mapped_column(sa.String(16))
    stream: Mapped[str] = mapped_column(sa.String(16))
    message: Mapped[str] = mapped_column(sa.Text)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    secret_hash: Mapped[str] = mapped_column(sa.String(64))
    scopes: Mapped[list[str]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ProviderResourceRow(Base):
    """Something an adapter created for a pool and reuses across runs and restarts (e.g. an
    ECS task definition ARN per content hash). Rows go with their pool."""

    __tablename__ = "provider_resources"
    __table_args__ = (
        sa.UniqueConstraint("pool_id", "kind", "key", name="uq_provider_resources_key"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    pool_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("pools.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(64))
    key: Mapped[str] = mapped_column(sa.String(200))
    value: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RateLimitStateRow(Base):
    """The shared state of one rate limit (a token bucket or a sliding window) for one provider
    scope, e.g. `ecs:RunTask|123456789012|eu-west-1|bucket`. Every replica takes from it."""

    __tablename__ = "rate_limit_state"

    key: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ServiceLeaseRow(Base):
    """Which replica runs a singleton service pass (e.g. the reconciler) until when."""

    __tablename__ = "service_leases"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


# The one checkpoint there is so far.
CATCH_UP_CHECKPOINT = "catch-up"


class SchedulerCheckpointRow(Base):
    """How far the scheduler has applied catch-up policies: every run of a schedule whose time
    is before `missed_before` and that was never claimed has been kept or skipped. Dispatchers
    hold back older runs past the grace until this has passed them, so a run the policy skips
    is never submitted first."""

    __tablename__ = "scheduler_checkpoints"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    missed_before: Mapped[datetime] = mapped_column(UTCDateTime)

"""Every query skylane issues lives in this module.

`Store` methods each run in their own transaction and return domain models (`skylane.models`),
never ORM rows, so nothing outside the store holds a session. Validation of user input (job
templates, parameters) happens before the store is called; the store enforces what only it can:
uniqueness, existence, the run state machine, and exactly-one claims.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload, selectinload, sessionmaker

from skylane.errors import AlreadyExists, Conflict, IllegalTransition, InvalidInput, NotFound
from skylane.models import (
    TERMINAL_STATES,
    ApiKeyInfo,
    ApiScope,
    Deployment,
    LogLine,
    Pool,
    Run,
    RunAttempt,
    RunState,
    StateChange,
    StateResult,
    Worker,
    check_transition,
)
from skylane.security import generate_api_key, generate_run_token, secrets_match
from skylane.store.scope import (
    CONTROL_PLANE,
    DEFAULT_WORKER_OFFLINE_SECONDS,
    DispatchScope,
    claimable,
    watched,
)
from skylane.store.tables import (
    CATCH_UP_CHECKPOINT,
    ApiKeyRow,
    AttemptRow,
    DeploymentRow,
    LogRow,
    PoolRow,
    ProviderResourceRow,
    RunRow,
    SchedulerCheckpointRow,
    ServiceLeaseRow,
    StateHistoryRow,
    WorkerRow,
)

log = logging.getLogger(__name__)

# PostgreSQL channel on which the store announces "there may be runs to dispatch": a run was
# created, freed a concurrency slot, or its pool or deployment changed.
DISPATCH_CHANNEL = "skylane_dispatch"

DEFAULT_LEASE_SECONDS = 120
MAX_CLAIM_PASSES = 4
ACTIVE_STATES = (RunState.PENDING, RunState.RUNNING, RunState.CANCELLING)
POOL_FIELDS = frozenset(
    {
        "type",
        "base_job_template",
        "concurrency_limit",
        "paused",
        "settings",
        "credentials",
        "provisioned_resources",
        "description",
        "fallback",
    }
)
DEPLOYMENT_FIELDS = frozenset(
    {
        "entrypoint",
        "image",
        "source",
        "parameters",
        "parameter_schema",
        "job_variables",
        "tags",
        "description",
        "concurrency_limit",
        "paused",
        "pool_name",
    }
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LogEntry:
    timestamp: datetime
    level: str
    stream: str
    message: str


class Claim(BaseModel):
    """A run claimed for submission: everything the dispatcher needs, and the run's token.
    `run.history` holds only the claim's own transition (a claim does not load the rest).
    Workers receive it over the API, so it is a model."""

    model_config = ConfigDict(frozen=True)

    run: Run
    deployment: Deployment
    pool: Pool
    attempt: RunAttempt
    # None for a recovered claim until a token is issued.
    run_token: str | None = Field(default=None, repr=False)


class Submission(BaseModel):
    """A submitted attempt the reconciler still watches (provider ref known, not cleaned up)."""

    model_config = ConfigDict(frozen=True)

    run: Run
    pool: Pool
    attempt: RunAttempt


def _pool(row: PoolRow) -> Pool:
    return Pool.model_validate(row)


def _deployment(row: DeploymentRow) -> Deployment:
    data = {c: getattr(row, c) for c in Deployment.model_fields if c != "pool_name"}
    return Deployment(pool_name=row.pool.name, **data)


def _run(row: RunRow, *, history: bool = True) -> Run:
    return Run(
        id=row.id,
        deployment_id=row.deployment_id,
        deployment_name=row.deployment_name,
        pool_name=row.pool_name,
        flow_name=row.flow_name,
        state=RunState(row.state),
        state_message=row.state_message,
        parameters=row.parameters,
        job_variables=row.job_variables,
        scheduled_time=row.scheduled_time,
        not_before=row.not_before,
        schedule_id=row.schedule_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        last_heartbeat_at=row.last_heartbeat_at,
        source_commit=row.source_commit,
        history=[StateChange.model_validate(h) for h in row.history] if history else [],
        attempts=[RunAttempt.model_validate(a) for a in row.attempts],
    )


def _worker(row: WorkerRow, pool_name: str, now: datetime, offline_seconds: float) -> Worker:
    online = row.stopped_at is None and (now - row.last_heartbeat_at).total_seconds() < (
        offline_seconds
    )
    return Worker(
        name=row.name,
        pool_name=pool_name,
        hostname=row.hostname,
        version=row.version,
        limit=row.limit,
        started_at=row.started_at,
        last_heartbeat_at=row.last_heartbeat_at,
        stopped_at=row.stopped_at,
        online=online,
    )


def _api_key(row: ApiKeyRow) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        scopes=[ApiScope(s) for s in row.scopes],
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked=row.revoked_at is not None,
    )


class Store:
    def __init__(self, engine: sa.Engine) -> None:
        from skylane.store.rate_limits import RateLimitStore
        from skylane.store.schedules import ScheduleStore

        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.rate_limits = RateLimitStore(engine)
        self.schedules = ScheduleStore(self)
        self._dispatch_listeners: list[Callable[[], None]] = []
        self._listeners_lock = threading.Lock()

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session
            if session.info.get("dispatch_changed") and self.is_postgres:
                # Delivered by PostgreSQL at commit, to every replica that LISTENs.
                session.execute(sa.select(sa.func.pg_notify(DISPATCH_CHANNEL, "")))
        if session.info.get("dispatch_changed"):
            self._announce_dispatch_change()

    # --- dispatch wake-ups --------------------------------------------------------------------

    def add_dispatch_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` after any commit of this Store that may make runs dispatchable (a
        run created, a concurrency slot freed, a pool or deployment changed). Other processes
        hear of it through PostgreSQL NOTIFY on DISPATCH_CHANNEL (see skylane.services.wakeups)."""
        with self._listeners_lock:
            self._dispatch_listeners.append(callback)

    def remove_dispatch_listener(self, callback: Callable[[], None]) -> None:
        with self._listeners_lock:
            if callback in self._dispatch_listeners:
                self._dispatch_listeners.remove(callback)

    def _announce_dispatch_change(self) -> None:
        with self._listeners_lock:
            listeners = list(self._dispatch_listeners)
        for callback in listeners:
            try:
                callback()
            except Exception:  # a listener's failure must not fail the write that committed
                log.exception("dispatch listener failed")

    @staticmethod
    def _dispatch_changed(s: Session) -> None:
        s.info["dispatch_changed"] = True

    # --- pools ------------------------------------------------------------------------------

    def create_pool(
        self,
        *,
        name: str,
        type: str,
        base_job_template: dict[str, Any],
        concurrency_limit: int | None = None,
        paused: bool = False,
        settings: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        description: str | None = None,
        fallback: str | None = None,
    ) -> Pool:
        row = PoolRow(
            name=name,
            type=type,
            base_job_template=base_job_template,
            concurrency_limit=concurrency_limit,
            paused=paused,
            settings=settings or {},
            credentials=credentials,
            provisioned_resources=[],
            description=description,
            fallback=fallback,
        )
        try:
            with self._session() as s:
                if s.scalar(sa.select(PoolRow.id).where(PoolRow.name == name)):
                    raise AlreadyExists(f"a pool named {name!r} already exists", field="name")
                s.add(row)
                s.flush()
                return _pool(row)
        except IntegrityError as exc:
            raise AlreadyExists(f"a pool named {name!r} already exists", field="name") from exc

    def _pool_row(self, s: Session, name: str, *, lock: bool = False) -> PoolRow:
        query = sa.select(PoolRow).where(PoolRow.name == name)
        if lock:
            query = query.with_for_update()
        row = s.scalar(query)
        if row is None:
            raise NotFound(f"no pool named {name!r}", field="pool")
        return row

    def get_pool(self, name: str) -> Pool:
        with self._session() as s:
            return _pool(self._pool_row(s, name))

    def list_pools(self) -> list[Pool]:
        with self._session() as s:
            return [_pool(r) for r in s.scalars(sa.select(PoolRow).order_by(PoolRow.name))]

    def update_pool(self, name: str, changes: dict[str, Any]) -> Pool:
        unknown = set(changes) - POOL_FIELDS
        if unknown:
            raise InvalidInput(
                f"pool has no field {sorted(unknown)[0]!r}", field=sorted(unknown)[0]
            )
        with self._session() as s:
            row = self._pool_row(s, name, lock=True)
            for key, value in changes.items():
                setattr(row, key, value)
            if row.fallback is None:
                # Fallback turned off: the control plane takes the runs back.
                row.fallback_since, row.fallback_reason = None, None
            row.updated_at = utcnow()
            self._dispatch_changed(s)
            s.flush()
            return _pool(row)

    def check_pool_deletable(self, name: str) -> None:
        """Raise Conflict when the pool cannot be deleted yet (say why); NotFound if absent."""
        with self._session() as s:
            self._pool_deletion_blockers(s, self._pool_row(s, name))

    def delete_pool(self, name: str) -> None:
        with self._session() as s:
            row = self._pool_row(s, name, lock=True)
            self._pool_deletion_blockers(s, row)
            # Finished runs made here before their deployment moved stay, naming the pool.
            s.execute(sa.update(RunRow).where(RunRow.pool_id == row.id).values(pool_id=None))
            s.delete(row)

    def _pool_deletion_blockers(self, s: Session, row: PoolRow) -> None:
        count = s.scalar(
            sa.select(sa.func.count())
            .select_from(DeploymentRow)
            .where(DeploymentRow.pool_id == row.id)
        )
        if count:
            raise Conflict(
                f"pool {row.name!r} still has {count} deployment(s); delete them or move them "
                "to another pool first",
                field="pool",
            )
        # Runs can outlive their deployment's move to another pool.
        unfinished = self._unfinished_runs(s, RunRow.pool_id == row.id)
        if unfinished:
            raise Conflict(
                f"pool {row.name!r} still has {unfinished} unfinished run(s); cancel them or "
                "wait for them to finish first",
                field="pool",
            )

    @staticmethod
    def _unfinished_runs(s: Session, condition: Any) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(RunRow)
            .where(condition, RunRow.state.notin_([st.value for st in TERMINAL_STATES]))
        )
        return s.scalar(query) or 0

    # --- deployments ------------------------------------------------------------------------

    def create_deployment(
        self,
        *,
        flow_name: str,
        name: str,
        pool_name: str,
        entrypoint: str,
        image: str | None = None,
        source: dict[str, Any] | None = None,
        parameters: dict[str, Any] | None = None,
        parameter_schema: dict[str, Any] | None = None,
        job_variables: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        description: str | None = None,
        concurrency_limit: int | None = None,
        paused: bool = False,
        schedules: list[dict[str, Any]] | None = None,
    ) -> Deployment:
        """A new deployment and its `schedules` (fields of `ScheduleStore.add`), together."""
        full = f"{flow_name}/{name}"
        try:
            with self._session() as s:
                pool = self._pool_row(s, pool_name)
                exists = s.scalar(
                    sa.select(DeploymentRow.id).where(
                        DeploymentRow.flow_name == flow_name, DeploymentRow.name == name
                    )
                )
                if exists:
                    raise AlreadyExists(f"a deployment named {full!r} already exists", field="name")
                row = DeploymentRow(
                    flow_name=flow_name,
                    name=name,
                    pool_id=pool.id,
                    pool=pool,
                    entrypoint=entrypoint,
                    image=image,
                    source=source,
                    parameters=parameters or {},
                    parameter_schema=parameter_schema or {},
                    job_variables=job_variables or {},
                    tags=tags or [],
                    description=description,
                    concurrency_limit=concurrency_limit,
                    paused=paused,
                )
                s.add(row)
                s.flush()
                for fields in schedules or []:
                    self.schedules.add(s, row.id, fields)
                s.flush()
                return _deployment(row)
        except IntegrityError as exc:
            raise AlreadyExists(
                f"a deployment named {full!r} already exists", field="name"
            ) from exc

    def _deployment_row(self, s: Session, deployment_id: uuid.UUID) -> DeploymentRow:
        row = s.get(DeploymentRow, deployment_id)
        if row is None:
            raise NotFound(f"no deployment with id {deployment_id}", field="deployment")
        return row

    def get_deployment(self, deployment_id: uuid.UUID) -> Deployment:
        with self._session() as s:
            return _deployment(self._deployment_row(s, deployment_id))

    def get_deployment_by_name(self, flow_name: str, name: str) -> Deployment:
        with self._session() as s:
            row = s.scalar(
                sa.select(DeploymentRow).where(
                    DeploymentRow.flow_name == flow_name, DeploymentRow.name == name
                )
            )
            if row is None:
                raise NotFound(f"no deployment named {flow_name}/{name}", field="deployment")
            return _deployment(row)

    def list_deployments(self, *, pool_name: str | None = None) -> list[Deployment]:
        with self._session() as s:
            query = sa.select(DeploymentRow).order_by(DeploymentRow.flow_name, DeploymentRow.name)
            if pool_name is not None:
                pool = self._pool_row(s, pool_name)
                query = query.where(DeploymentRow.pool_id == pool.id)
            return [_deployment(r) for r in s.scalars(query)]

    def update_deployment(self, deployment_id: uuid.UUID, changes: dict[str, Any]) -> Deployment:
        unknown = set(changes) - DEPLOYMENT_FIELDS
        if unknown:
            raise InvalidInput(
                f"deployment has no field {sorted(unknown)[0]!r}", field=sorted(unknown)[0]
            )
        with self._session() as s:
            row = self._deployment_row(s, deployment_id)
            for key, value in changes.items():
                if key == "pool_name":
                    row.pool = self._pool_row(s, value)
                    row.pool_id = row.pool.id
                    # Runs not claimed yet follow the deployment to its new pool.
                    s.execute(
                        sa.update(RunRow)
                        .where(
                            RunRow.deployment_id == row.id,
                            RunRow.state == RunState.SCHEDULED.value,
                        )
                        .values(pool_id=row.pool.id, pool_name=row.pool.name)
                    )
                else:
                    setattr(row, key, value)
            if "parameters" in changes:
                # Scheduled runs copy the deployment's parameters: recreate those to come.
                self.schedules.restart_for_deployment(s, row.id)
            row.updated_at = utcnow()
            self._dispatch_changed(s)
            s.flush()
            return _deployment(row)

    def delete_deployment(self, deployment_id: uuid.UUID) -> None:
        with self._session() as s:
            row = self._deployment_row(s, deployment_id)
            # Runs its schedules created that no dispatcher claimed go with it (undone with
            # the rest if the deletion is refused below).
            self.schedules.delete_unclaimed_runs(s, deployment_id=row.id)
            active = self._unfinished_runs(s, RunRow.deployment_id == row.id)
            if active:
                raise Conflict(
                    f"deployment {row.flow_name}/{row.name} has {active} run(s) not finished "
                    "yet; cancel them first",
                    field="deployment",
                )
            s.execute(sa.delete(RunRow).where(RunRow.deployment_id == row.id))
            s.delete(row)

    # --- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        deployment: Deployment,
        *,
        parameters: dict[str, Any],
        job_variables: dict[str, Any],
        scheduled_time: datetime | None = None,
    ) -> Run:
        now = utcnow()
        with self._session() as s:
            dep = self._deployment_row(s, deployment.id)
            row = RunRow(
                deployment_id=dep.id,
                pool_id=dep.pool_id,
                pool=dep.pool,
                pool_name=dep.pool.name,
                flow_name=dep.flow_name,
                deployment_name=f"{dep.flow_name}/{dep.name}",
                state=RunState.SCHEDULED.value,
                parameters=parameters,
                job_variables=job_variables,
                scheduled_time=scheduled_time or now,
                created_at=now,
                updated_at=now,
            )
            row.history.append(StateHistoryRow(state=RunState.SCHEDULED.value, timestamp=now))
            s.add(row)
            self._dispatch_changed(s)
            s.flush()
            return _run(row)

    def _run_row(self, s: Session, run_id: uuid.UUID, *, lock: bool = False) -> RunRow:
        query = sa.select(RunRow).where(RunRow.id == run_id)
        if lock:
            # Lock only the run row; joined pool rows need no lock and PostgreSQL refuses
            # FOR UPDATE on the nullable side of an outer join.
            query = query.with_for_update(of=RunRow)
        row = s.scalar(query)
        if row is None:
            raise NotFound(f"no run with id {run_id}", field="run")
        return row

    def get_run(self, run_id: uuid.UUID) -> Run:
        with self._session() as s:
            return _run(self._run_row(s, run_id))

    def list_runs(
        self,
        *,
        pool_name: str | None = None,
        deployment_id: uuid.UUID | None = None,
        states: list[RunState] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[Run]:
        """Runs by scheduled time, newest first (or oldest first: upcoming runs, soonest
        first)."""
        with self._session() as s:
            order = RunRow.scheduled_time.asc() if oldest_first else RunRow.scheduled_time.desc()
            query = sa.select(RunRow).order_by(order, RunRow.id)
            if pool_name is not None:
                # By name, so finished runs of a deleted pool can still be listed; a name that
                # matches nothing at all is most likely a typo, so say so.
                known = s.scalar(
                    sa.select(PoolRow.id).where(PoolRow.name == pool_name)
                ) or s.scalar(sa.select(RunRow.id).where(RunRow.pool_name == pool_name).limit(1))
                if known is None:
                    raise NotFound(f"no pool named {pool_name!r}", field="pool")
                query = query.where(RunRow.pool_name == pool_name)
            if deployment_id is not None:
                query = query.where(RunRow.deployment_id == deployment_id)
            if states:
                query = query.where(RunRow.state.in_([st.value for st in states]))
            if since is not None:
                query = query.where(RunRow.scheduled_time >= since)
            if until is not None:
                query = query.where(RunRow.scheduled_time < until)
            return [_run(r) for r in s.scalars(query.limit(limit).offset(offset))]

    def set_run_state(
        self,
        run_id: uuid.UUID,
        state: RunState,
        *,
        message: str | None = None,
        transition_id: str | None = None,
    ) -> StateResult:
        """Apply one transition. A transition id seen before changes nothing."""
        try:
            with self._session() as s:
                row = self._run_row(s, run_id, lock=True)
                if transition_id and any(h.transition_id == transition_id for h in row.history):
                    return StateResult(run=_run(row), applied=False)
                self._transition(row, state, message, transition_id)
                s.flush()
                return StateResult(run=_run(row), applied=True)
        except IntegrityError:
            # The same transition id committed concurrently: report the state it produced.
            return StateResult(run=self.get_run(run_id), applied=False)

    @staticmethod
    def _transition(
        row: RunRow, state: RunState, message: str | None, transition_id: str | None
    ) -> None:
        check_transition(RunState(row.state), state)
        now = utcnow()
        session = sa.inspect(row).session
        if session is not None and (state in TERMINAL_STATES or state == RunState.SCHEDULED):
            # A slot freed, or a run back in the queue: dispatchers may have work.
            Store._dispatch_changed(session)
        row.state = state.value
        row.state_message = message
        row.updated_at = now
        if state == RunState.RUNNING and row.started_at is None:
            row.started_at = now
        if state in TERMINAL_STATES:
            row.ended_at = now
            # The token is visible to whoever can describe the container (ECS overrides, say);
            # once the run is over nothing may use it, so it stops working now.
            row.run_token_hash = None
        entry = StateHistoryRow(
            state=state.value, message=message, transition_id=transition_id, timestamp=now
        )
        if session is not None and "history" in sa.inspect(row).unloaded:
            # Not loaded (a claim): add the entry without loading the whole history.
            entry.run_id = row.id
            session.add(entry)
        else:
            row.history.append(entry)

    def cancel_run(self, run_id: uuid.UUID, *, transition_id: str | None = None) -> StateResult:
        """Nothing submitted yet → CANCELLED at once; otherwise CANCELLING, and the dispatcher
        stops what the provider runs."""
        with self._session() as s:
            row = self._run_row(s, run_id, lock=True)
            if transition_id and any(h.transition_id == transition_id for h in row.history):
                return StateResult(run=_run(row), applied=False)
            current = RunState(row.state)
            if current == RunState.CANCELLING:
                return StateResult(run=_run(row), applied=False)  # asking twice is harmless
            target = RunState.CANCELLED if current == RunState.SCHEDULED else RunState.CANCELLING
            self._transition(row, target, "cancelled by user", transition_id)
            s.flush()
            return StateResult(run=_run(row), applied=True)

    def heartbeat(self, run_id: uuid.UUID) -> Run:
        with self._session() as s:
            row = self._run_row(s, run_id, lock=True)
            row.last_heartbeat_at = utcnow()
            s.flush()
            return _run(row)

    def record_source_commit(self, run_id: uuid.UUID, commit: str) -> Run:
        """The git commit the runtime checked out for the run. Set once: a second report of
        the same commit changes nothing, of another commit is refused."""
        with self._session() as s:
            row = self._run_row(s, run_id, lock=True)
            if row.source_commit not in (None, commit):
                raise Conflict(
                    f"run {run_id} already recorded commit {row.source_commit}", field="commit"
                )
            if RunState(row.state).is_terminal:
                raise IllegalTransition(
                    f"run {run_id} is {row.state}; its commit can no longer be recorded",
                    current_state=row.state,
                )
            row.source_commit = commit
            s.flush()
            return _run(row)

    def verify_run_token(self, run_id: uuid.UUID, secret: str) -> bool:
        with self._session() as s:
            token_hash = s.scalar(sa.select(RunRow.run_token_hash).where(RunRow.id == run_id))
            return bool(token_hash) and secrets_match(secret, token_hash)

    # --- dispatching ------------------------------------------------------------------------

    def claim_due_runs(
        self,
        *,
        claimed_by: str,
        lease_seconds: float,
        limit: int = 50,
        now: datetime | None = None,
        missed_before: datetime | None = None,
        scope: DispatchScope = CONTROL_PLANE,
        due_by: datetime | None = None,
    ) -> list[Claim]:
        """Move due SCHEDULED runs of unpaused pools `scope` dispatches (the control plane's:
        push pools) to PENDING with a new attempt. `due_by` (default now) claims runs scheduled
        up to then: a worker's prefetch, so infrastructure is starting when the time comes.

        Concurrency limits of pools and deployments are respected: a run over a limit stays
        SCHEDULED, and a saturated pool never hides other pools' due runs (it is left out of
        the next query). PostgreSQL replicas skip run rows another replica has locked.

        With `missed_before` (now minus the schedule grace), a run a schedule created whose
        time is before it waits until the scheduler has applied its catch-up policy (the
        catch-up checkpoint has passed it): after an outage, the runs the policy skips must
        not be submitted by a dispatcher that happened to start first.
        """
        now = now or utcnow()
        due_by = max(now, due_by or now)
        claims: list[Claim] = []
        with self._session() as s:
            pool_limits, deployment_limits = self._lock_limits(s)
            active_by_pool = self._active_counts(s, RunRow.pool_id, pool_limits)
            active_by_deployment = self._active_counts(s, RunRow.deployment_id, deployment_limits)

            def saturated(limits: dict[uuid.UUID, int], active: dict[uuid.UUID, int]) -> set:
                return {key for key, cap in limits.items() if active.get(key, 0) >= cap}

            full_pools = saturated(pool_limits, active_by_pool)
            full_deployments = saturated(deployment_limits, active_by_deployment)
            # Each pass either claims runs or finds more saturated pools/deployments to leave
            # out, so a few passes suffice.
            for _ in range(MAX_CLAIM_PASSES):
                wanted = limit - len(claims)
                if wanted <= 0:
                    break
                query = self._due_runs_query(now, due_by, scope, full_pools, full_deployments)
                if missed_before is not None:
                    query = query.where(_catch_up_decided(missed_before))
                candidates = list(s.scalars(query.limit(wanted)).unique())
                skipped = False
                for row in candidates:
                    if row.pool_id in full_pools or row.deployment_id in full_deployments:
                        skipped = True
                        continue
                    deployment = s.get(DeploymentRow, row.deployment_id)
                    assert deployment is not None
                    claims.append(
                        self._claim(s, row, deployment, claimed_by, lease_seconds, now, scope)
                    )
                    for key, active, limits, full in (
                        (row.pool_id, active_by_pool, pool_limits, full_pools),
                        (
                            row.deployment_id,
                            active_by_deployment,
                            deployment_limits,
                            full_deployments,
                        ),
                    ):
                        active[key] = active.get(key, 0) + 1
                        if key in limits and active[key] >= limits[key]:
                            full.add(key)
                if not skipped:
                    break
            s.flush()
        return claims

    @classmethod
    def _due_runs_query(
        cls,
        now: datetime,
        due_by: datetime,
        scope: DispatchScope,
        full_pools: set,
        full_deployments: set,
    ) -> sa.Select:
        query = (
            cls._dispatchable(sa.select(RunRow), scope)
            .where(
                RunRow.scheduled_time <= due_by,
                sa.or_(RunRow.not_before.is_(None), RunRow.not_before <= now),
            )
            .order_by(RunRow.scheduled_time, RunRow.id)
            .with_for_update(of=RunRow, skip_locked=True)
            # A claim needs the run's attempts (to number the new one), not its history.
            .options(selectinload(RunRow.attempts), lazyload(RunRow.history))
        )
        if full_pools:
            query = query.where(RunRow.pool_id.notin_(full_pools))
        if full_deployments:
            query = query.where(RunRow.deployment_id.notin_(full_deployments))
        return query

    def _lock_limits(self, s: Session) -> tuple[dict[uuid.UUID, int], dict[uuid.UUID, int]]:
        """Concurrency limits by pool and deployment id. On PostgreSQL the rows are locked (in
        id order, so claimers never deadlock) until the claim commits: two replicas then cannot
        both count the same free slot. SQLite already has one writer at a time."""
        limits = []
        for table in (PoolRow, DeploymentRow):
            query = (
                sa.select(table.id, table.concurrency_limit)
                .where(table.concurrency_limit.is_not(None))
                .order_by(table.id)
            )
            if self.is_postgres:
                query = query.with_for_update()
            limits.append({key: cap for key, cap in s.execute(query)})
        return limits[0], limits[1]

    @staticmethod
    def _active_counts(
        s: Session, column: Any, limits: dict[uuid.UUID, int]
    ) -> dict[uuid.UUID, int]:
        """Active runs per pool or deployment, counted only where a limit applies."""
        if not limits:
            return {}
        rows = s.execute(
            sa.select(column, sa.func.count())
            .where(RunRow.state.in_([st.value for st in ACTIVE_STATES]), column.in_(list(limits)))
            .group_by(column)
        )
        return {key: count for key, count in rows}

    def _claim(
        self,
        s: Session,
        row: RunRow,
        deployment: DeploymentRow,
        claimed_by: str,
        lease_seconds: float,
        now: datetime,
        scope: DispatchScope,
    ) -> Claim:
        number = len(row.attempts) + 1
        attempt = AttemptRow(
            run_id=row.id,
            number=number,
            idempotency_key=f"skl-{row.id.hex}-{number}",
            claimed_by=claimed_by,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            # Failed submit calls so far, earlier attempts included: the retry budget is the
            # run's, not the attempt's.
            tries=row.attempts[-1].tries if row.attempts else 0,
            by_worker=scope.is_worker,
            created_at=now,
        )
        row.attempts.append(attempt)
        token, token_hash = generate_run_token(row.id)
        row.run_token_hash = token_hash
        row.not_before = None
        message = f"claimed by {claimed_by}"
        if scope.is_worker:
            message = f"claimed by worker {claimed_by}"
            if row.pool.fallback_since is not None:
                message += f" (fallback: {row.pool.fallback_reason})"
        self._transition(row, RunState.PENDING, message, None)
        # No flush per run: one at the end of the claim writes them all.
        return Claim(
            run=_run(row, history=False),
            deployment=_deployment(deployment),
            pool=_pool(row.pool),
            attempt=RunAttempt.model_validate(attempt),
            run_token=token,
        )

    def record_submission(self, idempotency_key: str, provider_ref: str) -> None:
        self.record_submissions([(idempotency_key, provider_ref, utcnow())])

    def record_submissions(self, submissions: list[tuple[str, str, datetime]]) -> None:
        """Record provider refs (key, ref, submitted at), in one transaction."""
        if not submissions:
            return
        table = AttemptRow.__table__
        with self._session() as s:
            result = s.execute(
                table.update()
                .where(table.c.idempotency_key == sa.bindparam("key"))
                .values(
                    provider_ref=sa.bindparam("ref"),
                    submitted_at=sa.bindparam("at"),
                    lease_expires_at=None,
                ),
                [{"key": key, "ref": ref, "at": at} for key, ref, at in submissions],
            )
            if len(submissions) == 1 and result.rowcount != 1:
                raise NotFound(f"no attempt with key {submissions[0][0]}", field="attempt")

    def record_submission_failure(
        self,
        idempotency_key: str,
        error: str,
        *,
        retry_at: datetime | None,
        same_key: bool = False,
        count_try: bool = True,
        message: str | None = None,
    ) -> Run:
        """A submit that failed.

        - `retry_at` None: the run FAILED (a cancelled run ends CANCELLED).
        - `same_key`: the call may have reached the provider (a timeout), so the attempt stays
          open, its lease running out at `retry_at`; recovery then looks the key up (`find`)
          before submitting again with the same key. The run stays PENDING.
        - otherwise the run goes back to SCHEDULED, not before `retry_at`, and the next claim
          makes a new attempt.
        `count_try` False leaves the run's retry budget alone (we held the call back ourselves,
        e.g. for a rate limit). `message` is the run's state message (default: from `error`).
        """
        now = utcnow()
        with self._session() as s:
            attempt = self._attempt_row(s, idempotency_key)
            attempt.error = error
            if count_try:
                attempt.tries += 1
            row = self._run_row(s, attempt.run_id, lock=True)
            current = RunState(row.state)
            if (
                same_key
                and retry_at is not None
                and current
                in (
                    RunState.PENDING,
                    RunState.CANCELLING,
                )
            ):
                attempt.lease_expires_at = retry_at
                row.state_message = message or f"submission will be retried: {error}"
                row.updated_at = now
                s.flush()
                return _run(row)
            attempt.ended_at = now
            attempt.lease_expires_at = None
            if current == RunState.CANCELLING:
                self._transition(row, RunState.CANCELLED, "cancelled before submission", None)
            elif current == RunState.PENDING:
                if retry_at is None:
                    self._transition(
                        row, RunState.FAILED, message or f"submission failed: {error}", None
                    )
                else:
                    self._transition(
                        row,
                        RunState.SCHEDULED,
                        message or f"submission will be retried: {error}",
                        None,
                    )
                    row.not_before = retry_at
            s.flush()
            return _run(row)

    def _attempt_row(self, s: Session, idempotency_key: str) -> AttemptRow:
        attempt = s.scalar(
            sa.select(AttemptRow).where(AttemptRow.idempotency_key == idempotency_key)
        )
        if attempt is None:
            raise NotFound(f"no attempt with key {idempotency_key}", field="attempt")
        return attempt

    def update_attempt(self, idempotency_key: str, **fields: Any) -> None:
        allowed = {"cancel_requested_at", "provider_ended_at", "cleaned_up_at", "ended_at", "error"}
        with self._session() as s:
            attempt = self._attempt_row(s, idempotency_key)
            for key, value in fields.items():
                if key not in allowed:
                    raise ValueError(f"attempt field {key} is not updatable")
                setattr(attempt, key, value)

    def next_due_time(
        self, *, after: datetime, scope: DispatchScope = CONTROL_PLANE
    ) -> datetime | None:
        """When the earliest SCHEDULED run of an active push pool becomes due after `after`,
        or None: how long a dispatcher with nothing to do may sleep. A run is due at its
        `not_before` when set (a retry, always after its scheduled time), else at its
        scheduled time; each of the two is read through its index, earliest first."""
        queries = _NEXT_DUE_QUERIES if scope == CONTROL_PLANE else _next_due_queries(scope)
        with self._session() as s:
            candidates = [s.scalar(query, {"after": after}) for query in queries]
        found = [value for value in candidates if value is not None]
        return min(found) if found else None

    @staticmethod
    def _dispatchable(query: sa.Select, scope: DispatchScope = CONTROL_PLANE) -> sa.Select:
        """`query` limited to SCHEDULED runs of unpaused deployments in unpaused pools that
        `scope` dispatches."""
        return (
            query.join(DeploymentRow, DeploymentRow.id == RunRow.deployment_id)
            .join(PoolRow, PoolRow.id == RunRow.pool_id)
            .where(
                RunRow.state == RunState.SCHEDULED.value,
                claimable(scope),
                PoolRow.paused.is_(False),
                DeploymentRow.paused.is_(False),
            )
        )

    def watched_submissions(
        self,
        *,
        stale_before: datetime | None = None,
        scope: DispatchScope = CONTROL_PLANE,
        worker_offline_seconds: float = DEFAULT_WORKER_OFFLINE_SECONDS,
        now: datetime | None = None,
    ) -> list[Submission]:
        """Submitted attempts `scope` watches, not cleaned up yet, with their run and pool,
        oldest first. A worker adopts those of its pool's offline workers (they become its).

        With `stale_before`, RUNNING runs are left out while their runtime shows signs of life
        (a heartbeat, or the start, after `stale_before`): only what needs the provider's word
        is returned, so healthy runs cost no provider call."""
        now = now or utcnow()
        with self._session() as s:
            query = (
                sa.select(AttemptRow, RunRow)
                .join(RunRow, RunRow.id == AttemptRow.run_id)
                # An inner join: a deleted pool has no adapter left to ask.
                .join(PoolRow, PoolRow.id == RunRow.pool_id)
                .where(
                    AttemptRow.provider_ref.is_not(None),
                    AttemptRow.cleaned_up_at.is_(None),
                    watched(scope, now, worker_offline_seconds),
                )
                .order_by(AttemptRow.id)
            )
            if stale_before is not None:
                last_sign = sa.func.coalesce(
                    RunRow.last_heartbeat_at, RunRow.started_at, AttemptRow.submitted_at
                )
                query = query.where(
                    sa.or_(RunRow.state != RunState.RUNNING.value, last_sign < stale_before)
                )
            pools: dict[uuid.UUID, Pool] = {}
            result = []
            for attempt, row in s.execute(query):
                assert row.pool is not None
                if scope.is_worker and attempt.claimed_by != scope.worker:
                    log.info(
                        "run %s: worker %s adopts it from offline worker %s",
                        row.id,
                        scope.worker,
                        attempt.claimed_by,
                    )
                    attempt.claimed_by = scope.worker
                pool = pools.get(row.pool.id) or pools.setdefault(row.pool.id, _pool(row.pool))
                result.append(
                    Submission(run=_run(row), pool=pool, attempt=RunAttempt.model_validate(attempt))
                )
            return result

    def expired_claims(
        self,
        *,
        claimed_by: str = "recovery",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        limit: int = 100,
        now: datetime | None = None,
        scope: DispatchScope = CONTROL_PLANE,
    ) -> list[Claim]:
        """Attempts whose claim lease ran out before a provider ref was recorded (the dispatcher
        died mid-submit, or a submit failed ambiguously and its retry is due). Each is leased
        again to the caller for `lease_seconds`; the run token is not rotated here because what
        the provider may already run still holds it (see `issue_run_token`)."""
        now = now or utcnow()
        claims = []
        with self._session() as s:
            # Whoever dispatches the pool now recovers the claim: a worker's claim of a push pool
            # back from fallback goes to the control plane, and the other way round. The
            # control plane also closes the claims of runs whose pool was deleted.
            owner = claimable(scope)
            if not scope.is_worker:
                owner = sa.or_(RunRow.pool_id.is_(None), owner)
            attempts = s.scalars(
                sa.select(AttemptRow)
                .join(RunRow, RunRow.id == AttemptRow.run_id)
                .outerjoin(PoolRow, PoolRow.id == RunRow.pool_id)
                .where(
                    AttemptRow.provider_ref.is_(None),
                    AttemptRow.ended_at.is_(None),
                    AttemptRow.lease_expires_at.is_not(None),
                    AttemptRow.lease_expires_at < now,
                    owner,
                )
                .order_by(AttemptRow.lease_expires_at)
                .limit(limit)
                .with_for_update(of=AttemptRow, skip_locked=True)
            ).all()
            for attempt in attempts:
                row = self._run_row(s, attempt.run_id)
                if RunState(row.state) not in ACTIVE_STATES or row.pool is None:
                    # Settled meanwhile (e.g. an operator marked it FAILED): never submit it.
                    attempt.lease_expires_at = None
                    attempt.ended_at = now
                    attempt.error = f"claim expired after the run was already {row.state}"
                    continue
                deployment = s.get(DeploymentRow, row.deployment_id)
                assert deployment is not None
                attempt.lease_expires_at = now + timedelta(seconds=lease_seconds)
                attempt.claimed_by = claimed_by
                attempt.by_worker = scope.is_worker
                claims.append(
                    Claim(
                        run=_run(row),
                        deployment=_deployment(deployment),
                        pool=_pool(row.pool),
                        attempt=RunAttempt.model_validate(attempt),
                        run_token=None,
                    )
                )
            s.flush()
        return claims

    def renew_claim(
        self,
        idempotency_key: str,
        claimed_by: str,
        lease_seconds: float,
        now: datetime | None = None,
    ) -> datetime | None:
        """Extend a claim's lease to `lease_seconds` from now, only while it is still
        `claimed_by`'s: unexpired, not submitted, not ended. The new expiry, or None when the
        claim was lost (another replica may be recovering it: do not submit)."""
        now = now or utcnow()
        expires = now + timedelta(seconds=lease_seconds)
        with self._session() as s:
            result = s.execute(
                sa.update(AttemptRow)
                .where(
                    AttemptRow.idempotency_key == idempotency_key,
                    AttemptRow.claimed_by == claimed_by,
                    AttemptRow.lease_expires_at > now,
                    AttemptRow.provider_ref.is_(None),
                    AttemptRow.ended_at.is_(None),
                )
                .values(lease_expires_at=expires)
            )
            return expires if result.rowcount == 1 else None

    # --- workers and fallback -----------------------------------------------------------------

    def worker_heartbeat(
        self,
        pool_name: str,
        name: str,
        *,
        hostname: str | None = None,
        version: str | None = None,
        limit: int | None = None,
        now: datetime | None = None,
    ) -> Worker:
        """Record that worker `name` of the pool is alive (the first beat registers it; a beat
        after a clean stop starts it afresh)."""
        now = now or utcnow()
        for _ in range(2):  # two first beats at once: the loser updates the winner's row
            try:
                with self._session() as s:
                    pool = self._pool_row(s, pool_name)
                    row = s.scalar(
                        sa.select(WorkerRow)
                        .where(WorkerRow.pool_id == pool.id, WorkerRow.name == name)
                        .with_for_update()
                    )
                    if row is None:
                        row = WorkerRow(pool_id=pool.id, name=name, started_at=now)
                        s.add(row)
                    elif row.stopped_at is not None:
                        row.started_at, row.stopped_at = now, None
                    row.hostname, row.version, row.limit = hostname, version, limit
                    row.last_heartbeat_at = now
                    s.flush()
                    return _worker(row, pool_name, now, DEFAULT_WORKER_OFFLINE_SECONDS)
            except IntegrityError:
                continue
        raise Conflict(f"worker {name!r} of pool {pool_name!r} could not register", field="name")

    def worker_stopped(self, pool_name: str, name: str, now: datetime | None = None) -> None:
        """A worker that stops cleanly is offline at once (its runs are adopted by others)."""
        with self._session() as s:
            pool = self._pool_row(s, pool_name)
            s.execute(
                sa.update(WorkerRow)
                .where(WorkerRow.pool_id == pool.id, WorkerRow.name == name)
                .values(stopped_at=now or utcnow())
            )

    def list_workers(
        self,
        pool_name: str,
        *,
        offline_seconds: float = DEFAULT_WORKER_OFFLINE_SECONDS,
        now: datetime | None = None,
    ) -> list[Worker]:
        now = now or utcnow()
        with self._session() as s:
            pool = self._pool_row(s, pool_name)
            rows = s.scalars(
                sa.select(WorkerRow)
                .where(WorkerRow.pool_id == pool.id)
                .order_by(WorkerRow.last_heartbeat_at.desc())
            )
            return [_worker(row, pool_name, now, offline_seconds) for row in rows]

    def worker_active_runs(self, pool_name: str, worker: str) -> int:
        """Runs a worker claimed that are not over yet (what its `--limit` counts)."""
        with self._session() as s:
            pool = self._pool_row(s, pool_name)
            return (
                s.scalar(
                    sa.select(sa.func.count(sa.distinct(RunRow.id)))
                    .join(AttemptRow, AttemptRow.run_id == RunRow.id)
                    .where(
                        RunRow.pool_id == pool.id,
                        RunRow.state.in_([st.value for st in ACTIVE_STATES]),
                        AttemptRow.by_worker.is_(True),
                        AttemptRow.claimed_by == worker,
                        AttemptRow.ended_at.is_(None),
                    )
                )
                or 0
            )

    def attempts_not_claimed_by(
        self, idempotency_keys: list[str], pool_name: str, worker: str
    ) -> list[str]:
        """Those of `idempotency_keys` that are not worker `worker`'s attempts of pool
        `pool_name` (unknown keys included), in one query: what the worker API refuses."""
        with self._session() as s:
            owned = set(
                s.scalars(
                    sa.select(AttemptRow.idempotency_key)
                    .join(RunRow, RunRow.id == AttemptRow.run_id)
                    .where(
                        AttemptRow.idempotency_key.in_(idempotency_keys),
                        AttemptRow.by_worker.is_(True),
                        AttemptRow.claimed_by == worker,
                        RunRow.pool_name == pool_name,
                    )
                )
            )
        return [key for key in idempotency_keys if key not in owned]

    def set_pool_fallback(self, name: str, reason: str | None, now: datetime | None = None) -> bool:
        """Hand a fallback pool's runs to its workers (`reason`: why the control plane cannot
        push) or, with None, back to the control plane. True when this changed anything. The
        pool's `updated_at` stays: its template and settings did not change."""
        now = now or utcnow()
        with self._session() as s:
            condition = (
                PoolRow.fallback_since.is_(None)
                if reason is not None
                else PoolRow.fallback_since.is_not(None)
            )
            result = s.execute(
                sa.update(PoolRow)
                .where(PoolRow.name == name, PoolRow.fallback.is_not(None), condition)
                .values(
                    fallback_since=now if reason is not None else None,
                    fallback_reason=reason,
                    updated_at=PoolRow.updated_at,
                )
            )
            if result.rowcount:
                self._dispatch_changed(s)
            return bool(result.rowcount)

    def pools_in_fallback(self) -> list[Pool]:
        with self._session() as s:
            query = sa.select(PoolRow).where(PoolRow.fallback_since.is_not(None))
            return [_pool(r) for r in s.scalars(query.order_by(PoolRow.name))]

    # --- service leases -----------------------------------------------------------------------

    def acquire_service_lease(
        self, name: str, holder: str, seconds: float, now: datetime | None = None
    ) -> bool:
        """Take or renew the lease on singleton work `name` (e.g. "reconciler") for `seconds`;
        False while another holder's lease runs."""
        now = now or utcnow()
        expires = now + timedelta(seconds=seconds)
        try:
            with self._session() as s:
                row = s.get(ServiceLeaseRow, name, with_for_update=True)
                if row is None:
                    s.add(ServiceLeaseRow(name=name, holder=holder, expires_at=expires))
                    return True
                if row.holder != holder and row.expires_at > now:
                    return False
                row.holder, row.expires_at = holder, expires
                return True
        except IntegrityError:
            return False  # another replica created the lease row at the same moment

    def release_service_lease(self, name: str, holder: str) -> None:
        with self._session() as s:
            s.execute(
                sa.delete(ServiceLeaseRow).where(
                    ServiceLeaseRow.name == name, ServiceLeaseRow.holder == holder
                )
            )

    def issue_run_token(self, run_id: uuid.UUID) -> str:
        """A new token for the run; the previous one stops working."""
        with self._session() as s:
            row = self._run_row(s, run_id, lock=True)
            token, row.run_token_hash = generate_run_token(row.id)
            return token

    # --- logs -------------------------------------------------------------------------------

    def add_logs(self, run_id: uuid.UUID, entries: list[LogEntry]) -> int:
        with self._session() as s:
            if s.scalar(sa.select(RunRow.id).where(RunRow.id == run_id)) is None:
                raise NotFound(f"no run with id {run_id}", field="run")
            if entries:
                s.execute(
                    sa.insert(LogRow),
                    [
                        {
                            "run_id": run_id,
                            "timestamp": e.timestamp,
                            "level": e.level,
                            "stream": e.stream,
                            "message": e.message,
                        }
                        for e in entries
                    ],
                )
            return len(entries)

    def read_logs(self, run_id: uuid.UUID, *, after: int = 0, limit: int = 1000) -> list[LogLine]:
        with self._session() as s:
            if s.scalar(sa.select(RunRow.id).where(RunRow.id == run_id)) is None:
                raise NotFound(f"no run with id {run_id}", field="run")
            rows = s.scalars(
                sa.select(LogRow)
                .where(LogRow.run_id == run_id, LogRow.id > after)
                .order_by(LogRow.id)
                .limit(limit)
            )
            return [LogLine.model_validate(r) for r in rows]

    # --- provider resources (the adapters' per-pool cache) -------------------------------------

    def get_provider_resource(self, pool_id: uuid.UUID, kind: str, key: str) -> str | None:
        with self._session() as s:
            return s.scalar(
                sa.select(ProviderResourceRow.value).where(
                    ProviderResourceRow.pool_id == pool_id,
                    ProviderResourceRow.kind == kind,
                    ProviderResourceRow.key == key,
                )
            )

    def put_provider_resource(self, pool_id: uuid.UUID, kind: str, key: str, value: str) -> str:
        """Record `value` unless one is recorded already; return the recorded value. Two
        dispatchers racing here agree on the first one's value."""
        try:
            with self._session() as s:
                existing = s.scalar(
                    sa.select(ProviderResourceRow.value).where(
                        ProviderResourceRow.pool_id == pool_id,
                        ProviderResourceRow.kind == kind,
                        ProviderResourceRow.key == key,
                    )
                )
                if existing is not None:
                    return existing
                s.add(ProviderResourceRow(pool_id=pool_id, kind=kind, key=key, value=value))
                return value
        except IntegrityError:
            stored = self.get_provider_resource(pool_id, kind, key)
            assert stored is not None
            return stored

    def list_provider_resources(self, pool_id: uuid.UUID, kind: str) -> dict[str, str]:
        with self._session() as s:
            rows = s.execute(
                sa.select(ProviderResourceRow.key, ProviderResourceRow.value)
                .where(ProviderResourceRow.pool_id == pool_id, ProviderResourceRow.kind == kind)
                .order_by(ProviderResourceRow.id)
            )
            return {key: value for key, value in rows}

    def delete_provider_resource(self, pool_id: uuid.UUID, kind: str, key: str) -> None:
        with self._session() as s:
            s.execute(
                sa.delete(ProviderResourceRow).where(
                    ProviderResourceRow.pool_id == pool_id,
                    ProviderResourceRow.kind == kind,
                    ProviderResourceRow.key == key,
                )
            )

    # --- API keys ---------------------------------------------------------------------------

    def create_api_key(
        self, *, name: str, scopes: list[ApiScope], expires_at: datetime | None = None
    ) -> tuple[ApiKeyInfo, str]:
        """A new key; its plaintext is returned once and never stored."""
        new = generate_api_key()
        with self._session() as s:
            row = ApiKeyRow(
                id=new.key_id,
                name=name,
                secret_hash=new.secret_hash,
                scopes=[sc.value for sc in scopes],
                expires_at=expires_at,
                created_at=utcnow(),
            )
            s.add(row)
            s.flush()
            return _api_key(row), new.plaintext

    def verify_api_key(
        self, key_id: str, secret: str, *, now: datetime | None = None
    ) -> ApiKeyInfo | None:
        now = now or utcnow()
        with self._session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or not secrets_match(secret, row.secret_hash):
                return None
            if row.revoked_at is not None or (row.expires_at and row.expires_at <= now):
                return None
            return _api_key(row)

    def list_api_keys(self) -> list[ApiKeyInfo]:
        with self._session() as s:
            return [
                _api_key(r) for r in s.scalars(sa.select(ApiKeyRow).order_by(ApiKeyRow.created_at))
            ]

    def revoke_api_key(self, key_id: str) -> ApiKeyInfo:
        with self._session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"no API key with id {key_id!r}", field="key")
            row.revoked_at = row.revoked_at or utcnow()
            s.flush()
            return _api_key(row)

    def has_admin_key(self, now: datetime | None = None) -> bool:
        """Whether a usable (not revoked, not expired) admin key exists."""
        now = now or utcnow()
        with self._session() as s:
            for row in s.scalars(sa.select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))):
                if ApiScope.ADMIN.value in row.scopes and (
                    row.expires_at is None or row.expires_at > now
                ):
                    return True
            return False


def _catch_up_decided(missed_before: datetime) -> Any:
    """Runs a dispatcher may take as far as catch-up policies go: not created by a schedule,
    not missed, or missed and decided (kept) by the scheduler."""
    checkpoint = (
        sa.select(SchedulerCheckpointRow.missed_before)
        .where(SchedulerCheckpointRow.name == CATCH_UP_CHECKPOINT)
        .scalar_subquery()
    )
    return sa.or_(
        RunRow.schedule_id.is_(None),
        RunRow.scheduled_time >= missed_before,
        RunRow.scheduled_time < checkpoint,
    )


def _next_due_query(column: Any, *extra: Any, scope: DispatchScope = CONTROL_PLANE) -> sa.Select:
    after = sa.bindparam("after", type_=column.type)
    return (
        Store._dispatchable(sa.select(column), scope)
        .where(column > after, *extra)
        .order_by(column)
        .limit(1)
    )


# Built once: an idle dispatcher asks on every pass, and building the statement cost more
# than running it.
def _next_due_queries(scope: DispatchScope) -> tuple[sa.Select, sa.Select]:
    return (
        _next_due_query(RunRow.scheduled_time, RunRow.not_before.is_(None), scope=scope),
        _next_due_query(RunRow.not_before, scope=scope),
    )


_NEXT_DUE_QUERIES = _next_due_queries(CONTROL_PLANE)

"""Schedules in the store, and the runs the scheduler creates from them.

Two guarantees live here rather than in the scheduler, because only the database can give them
across replicas:
- one run per schedule and time: the runs table's unique (schedule_id, scheduled_time), and
  inserts that skip a time that already has its run;
- no stale runs: every change to a schedule bumps its `version` and deletes its runs that have
  not started; a fill computed from an older version (or already done by another replica) is
  refused under the schedule's row lock.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from skylane.errors import NotFound
from skylane.models import RunState, Schedule
from skylane.store.tables import (
    CATCH_UP_CHECKPOINT,
    AttemptRow,
    DeploymentRow,
    PoolRow,
    RunRow,
    SchedulerCheckpointRow,
    ScheduleRow,
    StateHistoryRow,
    utcnow,
)

if TYPE_CHECKING:
    from skylane.store.repository import Store

SCHEDULE_FIELDS = frozenset(
    {"cron", "interval_seconds", "rrule", "timezone", "anchor", "parameters", "active", "catchup"}
)


@dataclass(frozen=True)
class ScheduleWork:
    """An active schedule whose upcoming runs need creating, with what its runs copy."""

    schedule: Schedule
    version: int
    materialized_through: datetime
    next_fill_at: datetime | None
    deployment_parameters: dict[str, Any]
    deployment_name: str
    flow_name: str
    pool_id: uuid.UUID
    pool_name: str


@dataclass(frozen=True)
class Fill:
    """What one scheduler pass writes for one schedule: runs at `times`, and the new cursor.
    `skipped_from`: missed times after this were dropped by the catch-up policy (for the log)."""

    work: ScheduleWork
    times: list[datetime]
    materialized_through: datetime
    next_fill_at: datetime | None
    skipped_from: datetime | None = None


@dataclass
class FillResult:
    runs_created: int = 0
    schedules_filled: int = 0
    # Schedules changed (or filled by another replica) since they were read: left for the
    # next pass.
    schedules_stale: int = 0


def _schedule(row: ScheduleRow) -> Schedule:
    return Schedule.model_validate(row)


class ScheduleStore:
    """Reads and writes schedules through the `Store`'s sessions (and its dispatch wake-ups)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # --- schedules as users see them ----------------------------------------------------------

    def _row(self, s: Session, schedule_id: uuid.UUID, *, lock: bool = False) -> ScheduleRow:
        query = sa.select(ScheduleRow).where(ScheduleRow.id == schedule_id)
        if lock:
            query = query.with_for_update()
        row = s.scalar(query)
        if row is None:
            raise NotFound(f"no schedule with id {schedule_id}", field="schedule")
        return row

    def get(self, schedule_id: uuid.UUID) -> Schedule:
        with self._store._session() as s:
            return _schedule(self._row(s, schedule_id))

    def list(self, *, deployment_id: uuid.UUID | None = None) -> list[Schedule]:
        with self._store._session() as s:
            query = sa.select(ScheduleRow).order_by(ScheduleRow.created_at, ScheduleRow.id)
            if deployment_id is not None:
                query = query.where(ScheduleRow.deployment_id == deployment_id)
            return [_schedule(r) for r in s.scalars(query)]

    def create(self, deployment_id: uuid.UUID, fields: dict[str, Any]) -> Schedule:
        with self._store._session() as s:
            self._store._deployment_row(s, deployment_id)
            row = self.add(s, deployment_id, fields)
            s.flush()
            return _schedule(row)

    @staticmethod
    def add(s: Session, deployment_id: uuid.UUID, fields: dict[str, Any]) -> ScheduleRow:
        """A new schedule in `s`; it fires from now on (nothing before it was created is missed)."""
        unknown = set(fields) - SCHEDULE_FIELDS
        if unknown:
            raise ValueError(f"schedule has no field {sorted(unknown)[0]!r}")
        now = utcnow()
        row = ScheduleRow(
            id=uuid.uuid4(),
            deployment_id=deployment_id,
            version=1,
            materialized_through=now,
            next_fill_at=now,
            created_at=now,
            updated_at=now,
            **fields,
        )
        s.add(row)
        return row

    def update(self, schedule_id: uuid.UUID, changes: dict[str, Any]) -> Schedule:
        """Change a schedule (pausing and resuming included). Its runs that have not started and
        are still in the future go; the new definition takes over from now, so the time it was
        paused or defined differently is never caught up."""
        unknown = set(changes) - SCHEDULE_FIELDS
        if unknown:
            raise ValueError(f"schedule has no field {sorted(unknown)[0]!r}")
        with self._store._session() as s:
            row = self._row(s, schedule_id, lock=True)
            for key, value in changes.items():
                setattr(row, key, value)
            self._restart(s, [row])
            s.flush()
            return _schedule(row)

    def delete(self, schedule_id: uuid.UUID) -> None:
        """Delete a schedule and its future runs that have not started; its past runs stay."""
        with self._store._session() as s:
            row = self._row(s, schedule_id, lock=True)
            self._delete_future_runs(s, [row.id], utcnow())
            s.delete(row)

    def restart_for_deployment(self, s: Session, deployment_id: uuid.UUID) -> None:
        """After a change to a deployment its scheduled runs copy (its parameters): recreate
        them from now on, in the caller's transaction."""
        rows = list(
            s.scalars(
                sa.select(ScheduleRow)
                .where(ScheduleRow.deployment_id == deployment_id)
                .with_for_update()
            )
        )
        self._restart(s, rows)

    def _restart(self, s: Session, rows: list[ScheduleRow]) -> None:
        if not rows:
            return
        now = utcnow()
        self._delete_future_runs(s, [row.id for row in rows], now)
        for row in rows:
            row.version += 1
            row.materialized_through = now
            row.next_fill_at = now
            row.updated_at = now

    @staticmethod
    def _delete_future_runs(s: Session, schedule_ids: list[uuid.UUID], now: datetime) -> None:
        """Delete runs of these schedules that are due after `now` and were never claimed. A
        run a dispatcher claimed meanwhile is PENDING and stays: the row lock decides."""
        never_claimed = ~sa.exists().where(AttemptRow.run_id == RunRow.id)
        s.execute(
            sa.delete(RunRow)
            .where(
                RunRow.schedule_id.in_(schedule_ids),
                RunRow.state == RunState.SCHEDULED.value,
                RunRow.scheduled_time > now,
                never_claimed,
            )
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def delete_unclaimed_runs(s: Session, *, deployment_id: uuid.UUID) -> None:
        """Delete the runs schedules created for a deployment that no dispatcher claimed."""
        s.execute(
            sa.delete(RunRow)
            .where(
                RunRow.deployment_id == deployment_id,
                RunRow.schedule_id.is_not(None),
                RunRow.state == RunState.SCHEDULED.value,
                ~sa.exists().where(AttemptRow.run_id == RunRow.id),
            )
            .execution_options(synchronize_session=False)
        )

    # --- the scheduler's side -----------------------------------------------------------------

    def due(
        self,
        now: datetime,
        *,
        limit: int,
        schedule_ids: list[uuid.UUID] | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[ScheduleWork]:
        """Active schedules whose next fill time has come, of unpaused deployments in unpaused
        pools, in (next_fill_at, id) order, after the key `after` (to page through a pass). A
        paused deployment or pool gets no new runs; when it is resumed, what it missed is up to
        each schedule's catch-up policy."""
        table = ScheduleRow.__table__
        query = (
            sa.select(
                table,
                DeploymentRow.parameters.label("deployment_parameters"),
                DeploymentRow.flow_name.label("flow_name"),
                DeploymentRow.name.label("deployment_name"),
                PoolRow.id.label("pool_id"),
                PoolRow.name.label("pool_name"),
            )
            .join(DeploymentRow, DeploymentRow.id == table.c.deployment_id)
            .join(PoolRow, PoolRow.id == DeploymentRow.pool_id)
            .where(
                table.c.next_fill_at <= now,
                table.c.active.is_(True),
                DeploymentRow.paused.is_(False),
                PoolRow.paused.is_(False),
            )
            .order_by(table.c.next_fill_at, table.c.id)
            .limit(limit)
        )
        if schedule_ids is not None:
            query = query.where(table.c.id.in_(schedule_ids))
        if after is not None:
            query = query.where(sa.tuple_(table.c.next_fill_at, table.c.id) > sa.tuple_(*after))
        # Plain rows, not ORM objects: a pass may read thousands of them.
        with self._store._session() as s:
            return [
                ScheduleWork(
                    schedule=Schedule.model_validate(row),
                    version=row.version,
                    materialized_through=row.materialized_through,
                    next_fill_at=row.next_fill_at,
                    deployment_parameters=row.deployment_parameters,
                    deployment_name=f"{row.flow_name}/{row.deployment_name}",
                    flow_name=row.flow_name,
                    pool_id=row.pool_id,
                    pool_name=row.pool_name,
                )
                for row in s.execute(query)
            ]

    def fill(self, fills: list[Fill]) -> FillResult:
        """Create the runs of `fills` and move each schedule's cursor, in one transaction.

        Each schedule row is locked first (PostgreSQL replicas skip rows another replica is
        filling) and its fill applies only if the schedule is unchanged since it was read: same
        version, same next fill time, still active. Inserts skip times that already have a
        run, so even a fill that slipped through could not create a second one."""
        result = FillResult()
        if not fills:
            return result
        now = utcnow()
        with self._store._session() as s:
            by_id = {f.work.schedule.id: f for f in fills}
            current = {
                row.id: row
                for row in s.execute(
                    sa.select(
                        ScheduleRow.id,
                        ScheduleRow.version,
                        ScheduleRow.next_fill_at,
                        ScheduleRow.active,
                    )
                    .where(ScheduleRow.id.in_(list(by_id)))
                    .order_by(ScheduleRow.id)
                    .with_for_update(skip_locked=True)
                )
            }
            accepted: list[Fill] = []
            for schedule_id, planned in by_id.items():
                row = current.get(schedule_id)
                if (
                    row is None
                    or not row.active
                    or row.version != planned.work.version
                    or row.next_fill_at != planned.work.next_fill_at
                ):
                    result.schedules_stale += 1
                    continue
                accepted.append(planned)
            runs = [
                _run_values(planned, when, now) for planned in accepted for when in planned.times
            ]
            created = self._insert_runs(s, runs, now)
            result.runs_created = len(created)
            result.schedules_filled = len(accepted)
            if accepted:
                s.execute(
                    sa.update(ScheduleRow.__table__)
                    .where(ScheduleRow.__table__.c.id == sa.bindparam("schedule_id"))
                    .values(
                        materialized_through=sa.bindparam("through"),
                        next_fill_at=sa.bindparam("next_fill"),
                    ),
                    [
                        {
                            "schedule_id": planned.work.schedule.id,
                            "through": planned.materialized_through,
                            "next_fill": planned.next_fill_at,
                        }
                        for planned in accepted
                    ],
                    execution_options={"synchronize_session": False},
                )
            if created:
                self._store._dispatch_changed(s)
        return result

    def _insert_runs(
        self, s: Session, runs: list[dict[str, Any]], now: datetime
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """Insert runs, skipping any whose (schedule, time) already has one; the (run id,
        schedule id) of those inserted, each with its first state-history entry."""
        if not runs:
            return []
        if self._store.is_postgres:
            created = [tuple(row) for row in s.execute(_PG_INSERT_RUNS, _columns(runs))]
            if created:
                s.execute(
                    _PG_INSERT_HISTORY, {"ids": [run_id for run_id, _ in created], "now": now}
                )
            return created  # type: ignore[return-value]
        statement = (
            sqlite.insert(RunRow.__table__)
            .on_conflict_do_nothing(index_elements=["schedule_id", "scheduled_time"])
            .returning(RunRow.__table__.c.id, RunRow.__table__.c.schedule_id)
        )
        created = [(row.id, row.schedule_id) for row in s.execute(statement, runs)]
        if created:
            s.execute(
                sa.insert(StateHistoryRow.__table__),
                [
                    {"run_id": run_id, "state": RunState.SCHEDULED.value, "timestamp": now}
                    for run_id, _ in created
                ],
            )
        return created

    def skip_missed_runs(
        self,
        *,
        missed_before: datetime,
        schedule_ids: list[uuid.UUID] | None = None,
        limit: int = 5000,
    ) -> int:
        """Apply the catch-up policy to runs that were created but never claimed and whose time
        is before `missed_before` (the control plane was down, the pool or deployment paused, a
        concurrency limit full): `latest` keeps the most recent one per schedule, `none` keeps
        none, `all` keeps them all. Skipped runs are CANCELLED with a message saying why;
        they were never submitted, so nothing ran. Then the catch-up checkpoint moves to
        `missed_before`, releasing the kept runs to the dispatchers (see `claim_due_runs`)."""
        now = utcnow()
        never_claimed = ~sa.exists().where(AttemptRow.run_id == RunRow.id)
        query = (
            sa.select(RunRow.id, RunRow.schedule_id, RunRow.scheduled_time, ScheduleRow.catchup)
            .join(ScheduleRow, ScheduleRow.id == RunRow.schedule_id)
            .where(
                RunRow.state == RunState.SCHEDULED.value,
                RunRow.scheduled_time < missed_before,
                ScheduleRow.catchup != "all",
                never_claimed,
            )
            .order_by(RunRow.scheduled_time)
            .limit(limit)
            .with_for_update(of=RunRow, skip_locked=True)
        )
        if schedule_ids is not None:
            query = query.where(RunRow.schedule_id.in_(schedule_ids))
        with self._store._session() as s:
            rows = s.execute(query).all()
            missed: dict[uuid.UUID, list[Any]] = defaultdict(list)
            for row in rows:
                missed[row.schedule_id].append(row)
            skipped: list[tuple[uuid.UUID, str]] = []
            for runs in missed.values():
                keep_latest = runs[-1].catchup == "latest"
                # `rows` is ordered by time, so the last is the most recent missed time.
                for row in runs[:-1] if keep_latest else runs:
                    skipped.append((row.id, _skip_message(row.catchup, row.scheduled_time, now)))
            if schedule_ids is None and len(rows) < limit:
                # Every missed run before `missed_before` is decided: dispatchers may take
                # the ones kept.
                self._advance_checkpoint(s, missed_before)
            if rows:
                self._store._dispatch_changed(s)
            if not skipped:
                return 0
            table = RunRow.__table__
            s.execute(
                sa.update(table)
                .where(
                    table.c.id == sa.bindparam("run_id"),
                    table.c.state == RunState.SCHEDULED.value,
                )
                .values(
                    state=RunState.CANCELLED.value,
                    state_message=sa.bindparam("message"),
                    ended_at=now,
                    updated_at=now,
                ),
                [{"run_id": run_id, "message": message} for run_id, message in skipped],
                execution_options={"synchronize_session": False},
            )
            s.execute(
                sa.insert(StateHistoryRow.__table__),
                [
                    {
                        "run_id": run_id,
                        "state": RunState.CANCELLED.value,
                        "message": message,
                        "timestamp": now,
                    }
                    for run_id, message in skipped
                ],
            )
            return len(skipped)

    def _advance_checkpoint(self, s: Session, missed_before: datetime) -> None:
        """Move the checkpoint forward (never back: another replica may be ahead)."""
        table = SchedulerCheckpointRow.__table__
        insert = (postgresql if self._store.is_postgres else sqlite).insert(table)
        insert = insert.values(name=CATCH_UP_CHECKPOINT, missed_before=missed_before)
        s.execute(
            insert.on_conflict_do_update(
                index_elements=["name"],
                set_={
                    "missed_before": sa.case(
                        (
                            table.c.missed_before < insert.excluded.missed_before,
                            insert.excluded.missed_before,
                        ),
                        else_=table.c.missed_before,
                    )
                },
            )
        )


# PostgreSQL: one statement with one array per column, instead of a multi-row VALUES list with
# 13 parameters per run, which the server parses again for every batch (twice the time for
# 30,000 runs). JSON goes in as text.
_RUN_COLUMNS = (
    ("id", "uuid"),
    ("deployment_id", "uuid"),
    ("pool_id", "uuid"),
    ("pool_name", "text"),
    ("flow_name", "text"),
    ("deployment_name", "text"),
    ("state", "text"),
    ("parameters", "jsonb"),
    ("job_variables", "jsonb"),
    ("scheduled_time", "timestamptz"),
    ("schedule_id", "uuid"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)
_JSON_COLUMNS = {"parameters", "job_variables"}
_PG_INSERT_RUNS = sa.text(
    "INSERT INTO runs ({names}) SELECT {values} FROM unnest({arrays}) AS r({names}) "
    "ON CONFLICT (schedule_id, scheduled_time) DO NOTHING RETURNING id, schedule_id".format(
        names=", ".join(name for name, _ in _RUN_COLUMNS),
        values=", ".join(
            f"r.{name}::jsonb" if name in _JSON_COLUMNS else f"r.{name}" for name, _ in _RUN_COLUMNS
        ),
        arrays=", ".join(
            f"CAST(:{name} AS {'text' if name in _JSON_COLUMNS else kind}[])"
            for name, kind in _RUN_COLUMNS
        ),
    )
)
_PG_INSERT_HISTORY = sa.text(
    "INSERT INTO run_state_history (run_id, state, timestamp) "
    f"SELECT id, '{RunState.SCHEDULED.value}', :now FROM unnest(CAST(:ids AS uuid[])) AS id"
)


def _columns(runs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {
        name: [json.dumps(run[name]) if name in _JSON_COLUMNS else run[name] for run in runs]
        for name, _ in _RUN_COLUMNS
    }


def _run_values(planned: Fill, when: datetime, now: datetime) -> dict[str, Any]:
    work = planned.work
    return {
        "id": uuid.uuid4(),
        "deployment_id": work.schedule.deployment_id,
        "pool_id": work.pool_id,
        "pool_name": work.pool_name,
        "flow_name": work.flow_name,
        "deployment_name": work.deployment_name,
        "state": RunState.SCHEDULED.value,
        "parameters": {**work.deployment_parameters, **work.schedule.parameters},
        "job_variables": {},
        "scheduled_time": when,
        "schedule_id": work.schedule.id,
        "created_at": now,
        "updated_at": now,
    }


def _skip_message(policy: str, scheduled_time: datetime, now: datetime) -> str:
    late = _duration(now - scheduled_time)
    kept = "runs only the most recent missed time" if policy == "latest" else "runs no missed time"
    return (
        f"skipped: its scheduled time passed {late} ago without it being submitted (the "
        f"control plane was down, or the pool or deployment paused or at its concurrency "
        f"limit); the schedule's catch-up policy '{policy}' {kept}"
    )


def _duration(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return " ".join(parts)

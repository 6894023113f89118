"""The scheduler: turns active schedules into SCHEDULED runs, ahead of time.

Each pass takes the schedules whose `next_fill_at` has come (one indexed query; with nothing
to do, that is all a pass costs), works out their next times (`skylane.schedules`), and writes
the runs in batches: far enough ahead (`schedule_lookahead_seconds`, at least
`schedule_min_runs` runs, at most `schedule_max_runs`) that the dispatcher, which sleeps until
the next due time, submits each one on time.

Any number of replicas may run it at once. The store makes that safe: one run per schedule and
time (a unique constraint), and a fill applies only to the schedule version it was computed
from (see `skylane.store.schedules`).

Times missed while nothing created or submitted runs (the control plane down, a pool or
deployment paused) are handled by each schedule's catch-up policy: `latest` runs the most
recent missed time once, `all` runs every one, `none` runs none.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from skylane.errors import InvalidInput
from skylane.models import Schedule
from skylane.schedules import CatchUp, ScheduleSpec, Timetable, parse_schedule
from skylane.services.dispatcher import default_replica_name
from skylane.settings import Settings
from skylane.store.repository import Store
from skylane.store.schedules import Fill, FillResult, ScheduleWork

log = logging.getLogger("skylane.scheduler")

# Schedules computed and written per transaction.
FILL_BATCH = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


def timetable_for(schedule: Schedule) -> Timetable:
    """The timetable of a stored schedule."""
    return parse_schedule(
        ScheduleSpec(
            cron=schedule.cron,
            interval_seconds=schedule.interval_seconds,
            rrule=schedule.rrule,
            timezone=schedule.timezone,
            anchor=schedule.anchor,
        )
    )


@dataclass(frozen=True)
class FillPolicy:
    """How far ahead runs are created, and when a time counts as missed."""

    lookahead: timedelta
    min_runs: int
    max_runs: int
    grace: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> FillPolicy:
        return cls(
            lookahead=timedelta(seconds=settings.schedule_lookahead_seconds),
            min_runs=settings.schedule_min_runs,
            max_runs=settings.schedule_max_runs,
            grace=timedelta(seconds=settings.schedule_grace_seconds),
        )


def plan_fill(work: ScheduleWork, timetable: Timetable, now: datetime, policy: FillPolicy) -> Fill:
    """The runs to create for one schedule, where its cursor moves, and when to look again.

    Times after the cursor (`materialized_through`) and before `now - grace` were missed: the
    catch-up policy picks which of them still run. Then every time up to `now + lookahead`, and
    at least `min_runs` future ones, at most `max_runs` in all. The timetable is walked once."""
    cursor = work.materialized_through
    missed_before = now - policy.grace
    times: list[datetime] = []
    skipped_from: datetime | None = None
    if cursor < missed_before:
        catchup = CatchUp(work.schedule.catchup)
        if catchup == CatchUp.ALL:
            missed = timetable.between(cursor, missed_before, limit=policy.max_runs)
            if len(missed) == policy.max_runs:
                # More to catch up than one fill may create: the rest next pass.
                return Fill(work, missed, materialized_through=missed[-1], next_fill_at=now)
            times.extend(missed)
        else:
            latest = timetable.latest_at_or_before(missed_before)
            if latest is not None and latest > cursor:
                skipped_from = cursor
                if catchup == CatchUp.LATEST:
                    times.append(latest)
        cursor = missed_before

    horizon = now + policy.lookahead
    budget = policy.max_runs - len(times)
    ahead: list[datetime] = []  # times after now up to where the runs now reach
    new: list[datetime] = []
    more = False  # the schedule has a time after the last one looked at
    for when in timetable.iter_after(min(cursor, now)):
        if when > cursor:
            if len(new) == budget or (when > horizon and len(ahead) >= policy.min_runs):
                more = True
                break
            new.append(when)
        if when > now:
            ahead.append(when)
        if timetable.endless and when >= horizon and len(ahead) >= policy.min_runs:
            more = True  # enough, and there is always a next time: no need to compute it
            break
    count_limited = bool(new) and len(new) == budget and more
    through = new[-1] if count_limited else max(horizon, cursor, *new[-1:])
    times.extend(new)
    if count_limited:
        # Cut short by max_runs: top up once half of what lies ahead has started.
        next_fill: datetime | None = ahead[len(ahead) // 2] if ahead else now
    elif not more:
        next_fill = None  # a finished schedule (an RRULE with COUNT or UNTIL)
    else:
        # A quarter of the lookahead on, so at least 3/4 of it is always covered and a busy
        # schedule is topped up in batches, not on every pass; or before fewer than min_runs
        # of its runs lie ahead.
        candidates = [through - policy.lookahead * 3 / 4]
        if len(ahead) >= policy.min_runs:
            candidates.append(ahead[len(ahead) - policy.min_runs])
        next_fill = max(min(candidates), now)
    return Fill(
        work,
        times,
        materialized_through=max(through, work.materialized_through),
        next_fill_at=next_fill,
        skipped_from=skipped_from,
    )


def _add(report: SchedulerReport, result: FillResult) -> None:
    report.schedules_filled += result.schedules_filled
    report.runs_created += result.runs_created
    report.schedules_stale += result.schedules_stale


@dataclass
class SchedulerReport:
    """What one pass did (for tests, benchmarks and the debug log)."""

    schedules_filled: int = 0
    runs_created: int = 0
    missed_runs_skipped: int = 0
    schedules_stale: int = 0
    errors: int = 0


class Scheduler:
    def __init__(self, store: Store, settings: Settings, *, name: str | None = None) -> None:
        self.store = store
        self.settings = settings
        self.name = name or f"scheduler@{default_replica_name()}"
        self.policy = FillPolicy.from_settings(settings)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Schedules whose stored definition no longer parses (say a time zone removed from
        # the tz database): logged once per version, not on every pass.
        self._reported: set[tuple[uuid.UUID, int]] = set()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="skylane-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        interval = self.settings.scheduler_interval_seconds
        log.info("scheduler %s started; a pass every %.1f s", self.name, interval)
        while not self._stopping.is_set():
            try:
                report = self.run_pass()
                if report.runs_created or report.missed_runs_skipped:
                    log.info(
                        "scheduler: %d run(s) created for %d schedule(s), %d missed run(s) skipped",
                        report.runs_created,
                        report.schedules_filled,
                        report.missed_runs_skipped,
                    )
            except Exception:
                log.exception("scheduler pass failed; trying again")
            self._stopping.wait(interval)

    # --- one pass ----------------------------------------------------------------------------

    def run_pass(
        self, now: datetime | None = None, *, schedule_ids: list[uuid.UUID] | None = None
    ) -> SchedulerReport:
        """Create the runs due schedules need (only `schedule_ids`, if given: what an API call
        just changed), then apply catch-up policies to runs that missed their time.

        Pages of due schedules are planned here while the previous page is written by one
        writer thread: the database's time (inserts, index and foreign-key checks) overlaps
        with the planning's."""
        now = now or utcnow()
        report = SchedulerReport()
        seen: set[uuid.UUID] = set()
        page_after: tuple[datetime, uuid.UUID] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="skylane-scheduler-writer") as writer:
            writing: Future[FillResult] | None = None
            while True:
                page = self.store.schedules.due(
                    now, limit=FILL_BATCH, schedule_ids=schedule_ids, after=page_after
                )
                if not page:
                    break
                last = page[-1]
                assert last.next_fill_at is not None  # due() only returns schedules with one
                page_after = (last.next_fill_at, last.schedule.id)
                # A schedule seen once per pass: one still catching up continues next pass.
                work = [w for w in page if w.schedule.id not in seen]
                seen.update(w.schedule.id for w in work)
                fills = [fill for w in work if (fill := self._plan(w, now, report)) is not None]
                if writing is not None:
                    _add(report, writing.result())
                writing = writer.submit(self.store.schedules.fill, fills)
                for planned in fills:
                    if planned.skipped_from is not None:
                        log.info(
                            "schedule %s of %s: times missed since %s skipped (catch-up %s)",
                            planned.work.schedule.id,
                            planned.work.deployment_name,
                            planned.skipped_from.isoformat(),
                            planned.work.schedule.catchup,
                        )
                if len(page) < FILL_BATCH:
                    break
            if writing is not None:
                _add(report, writing.result())
        report.missed_runs_skipped = self.store.schedules.skip_missed_runs(
            missed_before=now - self.policy.grace, schedule_ids=schedule_ids
        )
        return report

    def _plan(self, work: ScheduleWork, now: datetime, report: SchedulerReport) -> Fill | None:
        try:
            return plan_fill(work, timetable_for(work.schedule), now, self.policy)
        except InvalidInput as exc:
            report.errors += 1
            key = (work.schedule.id, work.version)
            if key not in self._reported:
                self._reported.add(key)
                log.error(
                    "schedule %s of %s cannot be computed, no runs created: %s",
                    work.schedule.id,
                    work.deployment_name,
                    exc,
                )
            return None

"""The reconciler: keeps what skylane believes about submitted runs true to what providers run.

One replica at a time does the work (a service lease in the store; the others stand by and take
over when its lease runs out). Each pass asks providers, in one batched `statuses` call per pool
(ECS: DescribeTasks for 100 tasks a call), about the submitted runs that need their word:

- PENDING runs (submitted, the runtime has not reported RUNNING yet): an ended task means the
  run never started (CRASHED after `crash_grace_seconds`, with the provider's reason); one not
  running after the start timeout is stopped and marked CRASHED;
- RUNNING runs whose runtime missed `missed_heartbeats` heartbeats: gone or stopped at the
  provider means CRASHED with its reason. RUNNING runs that heartbeat cost no provider call;
- CANCELLING runs: the provider is told to stop (once), and the run is CANCELLED when it has;
- finished runs: their provider resources are cleaned up once the provider has let go of them.

So no run stays PENDING, RUNNING or CANCELLING forever.

Pull workers run the same class over the worker API (`skylane.worker`), each watching what it
submitted (and what its pool's offline workers left), with no lease: the control plane may have
no credentials for those runs, so it leaves them to the workers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from skylane.adapters import Adapter, ProviderState, ProviderStatus
from skylane.errors import IllegalTransition, ProviderError
from skylane.models import RunState
from skylane.services.adapters import PoolAdapters
from skylane.services.dispatch_store import DispatchStore
from skylane.services.dispatcher import default_replica_name, shared_pool_adapters
from skylane.settings import Settings
from skylane.store.repository import Submission
from skylane.store.scope import CONTROL_PLANE, DispatchScope

log = logging.getLogger("skylane.reconciler")

LEASE_NAME = "reconciler"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class PassReport:
    """What one pass did (for tests, benchmarks and the debug log)."""

    checked: int = 0
    pools: int = 0
    crashed: int = 0
    cancelled: int = 0
    cleaned_up: int = 0
    errors: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(
        self,
        store: DispatchStore,
        settings: Settings,
        *,
        name: str | None = None,
        adapters: PoolAdapters | None = None,
        scope: DispatchScope = CONTROL_PLANE,
    ) -> None:
        self.store = store
        self.settings = settings
        self.scope = scope
        self.name = name or f"reconciler@{default_replica_name()}"
        self.adapters = adapters or shared_pool_adapters(store, settings)  # type: ignore[arg-type]
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="skylane-reconciler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self.scope.is_worker:
            with contextlib.suppress(Exception):
                self.store.release_service_lease(LEASE_NAME, self.name)

    def _loop(self) -> None:
        interval = self.settings.reconciler_interval_seconds
        log.info("reconciler %s started; a pass every %.1f s", self.name, interval)
        while not self._stopping.is_set():
            try:
                # The lease outlives a few passes, so a slow pass does not hand the work over.
                # Workers split the work by who submitted it and need none.
                if self.scope.is_worker or self.store.acquire_service_lease(
                    LEASE_NAME, self.name, interval * 4 + 30
                ):
                    self.run_pass()
            except Exception:
                log.exception("reconciler pass failed; trying again")
            self._stopping.wait(interval)

    # --- one pass ----------------------------------------------------------------------------

    def run_pass(self, now: datetime | None = None) -> PassReport:
        now = now or utcnow()
        report = PassReport()
        beats = self.settings.missed_heartbeats * self.settings.heartbeat_seconds
        submissions = self.store.watched_submissions(
            stale_before=now - timedelta(seconds=beats),
            scope=self.scope,
            worker_offline_seconds=self.settings.worker_offline_seconds,
            now=now,
        )
        by_pool: dict[str, list[Submission]] = defaultdict(list)
        for submission in submissions:
            by_pool[submission.pool.name].append(submission)
        for group in by_pool.values():
            report.pools += 1
            adapter = self.adapters.get(group[0].pool)
            refs = [s.attempt.provider_ref for s in group if s.attempt.provider_ref]
            try:
                statuses = adapter.statuses(refs)
            except ProviderError as exc:
                log.warning("pool %s: cannot read statuses: %s", group[0].pool.name, exc)
                report.errors.append(str(exc))
                continue
            for submission in group:
                status = statuses.get(submission.attempt.provider_ref or "")
                if status is None:
                    continue  # its batch failed; asked again next pass
                report.checked += 1
                try:
                    self._reconcile(adapter, submission, status, now, report)
                except ProviderError as exc:
                    log.warning("run %s: %s", submission.run.id, exc)
                    report.errors.append(str(exc))
        return report

    def _reconcile(
        self,
        adapter: Adapter,
        submission: Submission,
        status: ProviderState,
        now: datetime,
        report: PassReport,
    ) -> None:
        run, attempt = submission.run, submission.attempt
        ref = attempt.provider_ref
        assert ref is not None
        key = attempt.idempotency_key
        if not status.status.ended:
            if run.state == RunState.PENDING and self._start_timed_out(submission, now):
                timeout = self._start_timeout(submission)
                adapter.cancel(ref)
                self.store.update_attempt(key, cancel_requested_at=now)
                said = f" ({status.message})" if status.message else ""
                self._settle(
                    run.id,
                    RunState.CRASHED,
                    f"did not start within {timeout:.0f} s; the provider still had it "
                    f"{status.status.value.lower()}{said}, so skylane stopped it",
                    report,
                )
                return
            # Stop what should no longer run: a cancel request, or a run already settled as
            # cancelled or crashed whose process is somehow still alive.
            wants_stop = run.state in (RunState.CANCELLING, RunState.CANCELLED, RunState.CRASHED)
            if wants_stop and attempt.cancel_requested_at is None:
                adapter.cancel(ref)
                self.store.update_attempt(key, cancel_requested_at=now)
            return
        if run.state.is_terminal:
            adapter.cleanup(ref)
            self.store.update_attempt(key, provider_ended_at=now, cleaned_up_at=now, ended_at=now)
            report.cleaned_up += 1
            return
        stale = run.state == RunState.RUNNING  # only stale RUNNING runs are asked about
        ended_at = attempt.provider_ended_at
        if ended_at is None and not stale:
            # Give the runtime a moment: its final state report may still be on the way.
            self.store.update_attempt(key, provider_ended_at=now)
            return
        if ended_at is not None and (now - ended_at).total_seconds() < (
            self.settings.crash_grace_seconds
        ):
            return
        code = "" if status.exit_code is None else f" with exit code {status.exit_code}"
        detail = f": {status.message}" if status.message else ""
        if run.state == RunState.CANCELLING:
            target, message = RunState.CANCELLED, "stopped at the provider"
        elif stale:
            beats = self.settings.missed_heartbeats
            gone = status.status == ProviderStatus.NOT_FOUND
            what = "has no record of it" if gone else "ended it"
            target = RunState.CRASHED
            message = f"the runtime missed {beats} heartbeats and the provider {what}{code}{detail}"
        else:
            target = RunState.CRASHED
            message = f"ended at the provider{code} without reporting a final state{detail}"
        self._settle(run.id, target, message, report)
        adapter.cleanup(ref)
        self.store.update_attempt(
            key, provider_ended_at=ended_at or now, cleaned_up_at=now, ended_at=now
        )
        report.cleaned_up += 1

    def _settle(
        self, run_id: uuid.UUID, target: RunState, message: str, report: PassReport
    ) -> None:
        # IllegalTransition: the runtime's own final report won the race, which is fine.
        with contextlib.suppress(IllegalTransition):
            self.store.set_run_state(run_id, target, message=message)
            if target == RunState.CRASHED:
                report.crashed += 1
            else:
                report.cancelled += 1
            log.info("run %s: %s (%s)", run_id, target.value, message)

    def _start_timeout(self, submission: Submission) -> float:
        value = submission.pool.settings.get("start_timeout_seconds")
        try:
            return float(value) if value else self.settings.start_timeout_seconds
        except (TypeError, ValueError):
            return self.settings.start_timeout_seconds

    def _start_timed_out(self, submission: Submission, now: datetime) -> bool:
        submitted = submission.attempt.submitted_at
        if submitted is None:
            return False
        return (now - submitted).total_seconds() > self._start_timeout(submission)

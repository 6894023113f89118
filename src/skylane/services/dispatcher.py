"""The dispatcher (first version): one loop inside `skylane server start`.

Each pass it
1. recovers claims whose lease expired before a provider ref was recorded: `find(key)` adopts
   what the provider already has, otherwise it submits again with the same key;
2. claims due runs (store: SCHEDULED -> PENDING with an attempt and its idempotency key), renders
   each pool's template, submits through the pool type's adapter and records the ref;
3. watches submitted attempts in one batched `statuses` call per pool: cancels what is being
   cancelled, marks runs whose provider ended without a final report as CRASHED (or CANCELLED
   when a cancel was asked), and cleans up what ended.

It wakes on `wakeup` (set when a run is created) or every `dispatcher_interval_seconds`. The
multi-replica, rate-limited dispatcher is a later step on the same contracts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from skylane import templates
from skylane.adapters import Adapter, ProviderState, RunContext
from skylane.errors import IllegalTransition, ProviderError, SkylaneError, ThrottledError
from skylane.models import Pool, RunState
from skylane.services.adapters import make_adapter, render_run
from skylane.services.urls import api_url_for_runs
from skylane.settings import Settings
from skylane.store.repository import Claim, Store, Submission

log = logging.getLogger("skylane.dispatcher")

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def retry_delay(attempt_number: int, error: ProviderError) -> float:
    """Exponential backoff with jitter; a provider's Retry-After wins when it is longer."""
    delay = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt_number - 1))
    delay *= random.uniform(0.8, 1.2)
    if isinstance(error, ThrottledError) and error.retry_after:
        delay = max(delay, error.retry_after)
    return delay


class Dispatcher:
    def __init__(self, store: Store, settings: Settings, *, name: str | None = None) -> None:
        self.store = store
        self.settings = settings
        self.name = name or f"dispatcher@{socket.gethostname()}:{os.getpid()}"
        self.api_url = api_url_for_runs(settings)
        self.wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._adapters: dict[tuple[str, datetime], Adapter] = {}
        self._checked_templates: set[tuple[str, datetime]] = set()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="skylane-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        log.info("dispatcher %s started; runs reach the API at %s", self.name, self.api_url)
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("dispatcher pass failed; trying again")
            self.wakeup.wait(self.settings.dispatcher_interval_seconds)
            self.wakeup.clear()

    def tick(self) -> None:
        self.recover_expired_claims()
        self.submit_due_runs()
        self.watch_submissions()

    # --- submission ---------------------------------------------------------------------------

    def _adapter(self, pool: Pool) -> Adapter:
        key = (pool.name, pool.updated_at)
        if key not in self._adapters:
            self._adapters[key] = make_adapter(self.store, self.settings, pool)
        return self._adapters[key]

    def _check_template_once(self, pool: Pool) -> None:
        """Check each pool version's template once (it was validated when stored, but the
        database may have been edited); submissions then skip the costly meta-schema check."""
        key = (pool.name, pool.updated_at)
        if key not in self._checked_templates:
            templates.validate_base_job_template(pool.base_job_template)
            self._checked_templates.add(key)

    def submit_due_runs(self) -> int:
        claims = self.store.claim_due_runs(
            claimed_by=self.name, lease_seconds=self.settings.claim_lease_seconds
        )
        for claim in claims:
            self._submit(claim)
        return len(claims)

    def _submit(self, claim: Claim) -> None:
        key = claim.attempt.idempotency_key
        token = claim.run_token or self.store.issue_run_token(claim.run.id)
        try:
            adapter = self._adapter(claim.pool)
            self._check_template_once(claim.pool)
            context = RunContext(
                run_id=claim.run.id,
                flow_name=claim.run.flow_name,
                deployment_name=claim.run.deployment_name,
                pool_name=claim.pool.name,
                entrypoint=claim.deployment.entrypoint,
                api_url=self.api_url,
                run_token=token,
                idempotency_key=key,
                image=claim.deployment.image,
            )
            request = render_run(
                adapter, claim.pool, claim.deployment, claim.run, context, template_checked=True
            )
            ref = adapter.submit(request, key)
        except ProviderError as exc:
            retry_at = None
            if exc.retryable and claim.attempt.number < self.settings.max_submit_attempts:
                retry_at = utcnow() + timedelta(seconds=retry_delay(claim.attempt.number, exc))
            log.warning("run %s: submit failed (%s): %s", claim.run.id, exc.code, exc.message)
            self.store.record_submission_failure(key, str(exc), retry_at=retry_at)
        except SkylaneError as exc:
            # A template or input problem: retrying cannot help, the message says what to fix.
            log.warning("run %s: cannot submit: %s", claim.run.id, exc)
            self.store.record_submission_failure(key, str(exc), retry_at=None)
        except Exception as exc:
            log.exception("run %s: unexpected error while submitting", claim.run.id)
            self.store.record_submission_failure(
                key,
                f"unexpected {type(exc).__name__} in the dispatcher; see the server log",
                retry_at=None,
            )
        else:
            self.store.record_submission(key, ref)
            log.info("run %s submitted to pool %s as %s", claim.run.id, claim.pool.name, ref)

    def recover_expired_claims(self) -> None:
        for claim in self.store.expired_claims():
            key = claim.attempt.idempotency_key
            try:
                ref = self._adapter(claim.pool).find(key)
            except ProviderError as exc:
                log.warning("run %s: cannot look up %s yet: %s", claim.run.id, key, exc)
                continue
            if ref is not None:
                log.info("run %s: adopting %s found for key %s", claim.run.id, ref, key)
                self.store.record_submission(key, ref)
            elif claim.run.state == RunState.PENDING:
                self._submit(claim)  # same key: never a second run at the provider
            else:
                # CANCELLING: nothing to stop, so it ends CANCELLED. RUNNING without a provider
                # resource: leave the state alone, just close the attempt.
                self.store.record_submission_failure(
                    key, f"nothing found at the provider for key {key}", retry_at=None
                )

    # --- watching -----------------------------------------------------------------------------

    def watch_submissions(self) -> None:
        by_pool: dict[str, list[Submission]] = defaultdict(list)
        for submission in self.store.watched_submissions():
            by_pool[submission.pool.name].append(submission)
        for submissions in by_pool.values():
            adapter = self._adapter(submissions[0].pool)
            refs = [s.attempt.provider_ref for s in submissions if s.attempt.provider_ref]
            try:
                statuses = adapter.statuses(refs)
            except ProviderError as exc:
                log.warning("pool %s: cannot read statuses: %s", submissions[0].pool.name, exc)
                continue
            for submission in submissions:
                status = statuses.get(submission.attempt.provider_ref or "")
                if status is not None:
                    try:
                        self._reconcile(adapter, submission, status)
                    except ProviderError as exc:
                        log.warning("run %s: %s", submission.run.id, exc)

    def _reconcile(self, adapter: Adapter, submission: Submission, status: ProviderState) -> None:
        run, attempt = submission.run, submission.attempt
        ref = attempt.provider_ref
        assert ref is not None
        key = attempt.idempotency_key
        now = utcnow()
        if not status.status.ended:
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
            return
        ended_at = attempt.provider_ended_at
        if ended_at is None:
            # Give the runtime a moment: its final state report may still be on the way.
            self.store.update_attempt(key, provider_ended_at=now)
            return
        if (now - ended_at).total_seconds() < self.settings.crash_grace_seconds:
            return
        if run.state == RunState.CANCELLING:
            target, message = RunState.CANCELLED, "stopped at the provider"
        else:
            code = "" if status.exit_code is None else f" with exit code {status.exit_code}"
            detail = f": {status.message}" if status.message else ""
            target = RunState.CRASHED
            message = f"ended at the provider{code} without reporting a final state{detail}"
        # IllegalTransition: the runtime's own final report won the race, which is fine.
        with contextlib.suppress(IllegalTransition):
            self.store.set_run_state(run.id, target, message=message)
        adapter.cleanup(ref)
        self.store.update_attempt(key, cleaned_up_at=now, ended_at=now)

"""The dispatcher: claims due runs and submits each exactly once to its pool's provider.

Any number of replicas may run against one PostgreSQL (one process on SQLite). A pass
1. recovers attempts whose lease ran out without a provider ref (a replica died mid-submit, or
   an ambiguous failure's retry is due): `find(key)` adopts what the provider has, otherwise
   the same key is submitted again, so the provider never gets a second run for one attempt;
2. claims due runs in one transaction (store: SCHEDULED -> PENDING with an attempt, its
   idempotency key and a lease; PostgreSQL `FOR UPDATE SKIP LOCKED`), no more than its submit
   threads can take on, and hands each to a thread that renders and submits it.

Wake-ups are event-driven (`skylane.services.wakeups`): a run created, a concurrency slot freed,
a pool changed, a submission finished; otherwise the dispatcher sleeps until the next due time,
at most `dispatcher_interval_seconds`.

Failures follow one policy (`skylane.retries`): a provider's throttling or an error that surely
reached nobody sends the run back to SCHEDULED with a backoff; capacity and quota errors back off
longer and say so in the run's state message, until `capacity_retry_seconds`; an ambiguous
failure (a timeout: the provider may have started it) keeps the attempt and its key and is
looked up before it is tried again; a permanent error fails the run once, with the adapter's
message. Watching submitted runs is the reconciler's work (`skylane.services.reconciler`).

The same class runs inside pull workers (`skylane.worker`): there its store is the worker API
and its scope the worker's pool. In the control plane, a push pool with `fallback: worker`
whose runs cannot be pushed (credentials missing or refused, or the provider unreachable for
`fallback_after_seconds`) is put in fallback: its runs go to the pool's workers, with the reason
on each run, and the dispatcher probes the provider (a `find`, which starts nothing) every
`fallback_probe_seconds` to take them back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from skylane import templates
from skylane.adapters import Adapter, RunContext
from skylane.errors import (
    CapacityError,
    PermanentProviderError,
    ProviderAuthError,
    ProviderError,
    SkylaneError,
    ThrottledError,
    TransientProviderError,
)
from skylane.models import Pool, PoolFallback, RunState
from skylane.rate_limits import RateLimited
from skylane.retries import RetryPolicy, is_capacity_or_quota
from skylane.services.adapters import PoolAdapters, render_run
from skylane.services.dispatch_store import DispatchStore
from skylane.services.rate_limiter import SharedRateLimiter
from skylane.services.urls import api_url_for_runs
from skylane.services.wakeups import DispatchWakeups
from skylane.settings import Settings
from skylane.store.repository import Claim, Store
from skylane.store.scope import CONTROL_PLANE, DispatchScope

log = logging.getLogger("skylane.dispatcher")

# Between dispatcher passes: when a run whose submission failed may be tried again.
RESUBMIT_POLICY = RetryPolicy(base=2.0, cap=300.0, capacity_base=30.0, capacity_cap=600.0)
# How often expired leases are looked for; they are rare, the query is indexed.
RECOVERY_INTERVAL_SECONDS = 1.0
# Provider refs are written in batches, at most this long after the provider answered. A ref
# lost with a crashed process is found again by `find(key)` when its lease runs out.
RECORD_BATCH_SECONDS = 0.02
# The key a fallback probe looks up: `find` of a key no run has, so it starts nothing.
FALLBACK_PROBE_KEY = "skl-00000000000000000000000000000000-0"


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def shared_pool_adapters(store: Store, settings: Settings) -> PoolAdapters:
    """Adapters whose rate-limited calls take tokens shared by every replica."""
    return PoolAdapters(store, settings, limiter=SharedRateLimiter(store.rate_limits))


class Dispatcher:
    def __init__(
        self,
        store: DispatchStore,
        settings: Settings,
        *,
        name: str | None = None,
        adapters: PoolAdapters | None = None,
        scope: DispatchScope = CONTROL_PLANE,
        api_url: str | None = None,
        hand_back_on_stop: bool = False,
        prefetch_seconds: float = 0.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.scope = scope
        self.name = name or f"dispatcher@{default_replica_name()}"
        self.api_url = api_url or api_url_for_runs(settings)
        self.adapters = adapters or shared_pool_adapters(store, settings)  # type: ignore[arg-type]
        # On stop, claims not submitted yet are handed back (a worker) instead of submitted.
        self.hand_back_on_stop = hand_back_on_stop
        self.prefetch_seconds = prefetch_seconds
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._wakeups = DispatchWakeups(store, self.wake)  # type: ignore[arg-type]
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        # Claimed runs may queue briefly for a free thread; no more, or their leases would run.
        self._max_in_flight = 2 * settings.dispatcher_concurrency
        # Claim in chunks: waking for every finished submission would claim runs one by one,
        # a transaction each.
        self._claim_chunk = max(1, min(settings.dispatcher_batch_size, self._max_in_flight // 2))
        self._next_recovery = 0.0
        self._checked_templates: set[tuple[str, datetime]] = set()
        self._recorder = SubmissionRecorder(store)
        # Per pool: since when (monotonic) its provider has not been reachable.
        self._unreachable_since: dict[str, float] = {}
        self._next_probe = 0.0

    # --- lifecycle ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due runs now (called on store notifications and finished submissions)."""
        self._wakeup.set()

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(
            self.settings.dispatcher_concurrency, thread_name_prefix="skylane-submit"
        )
        self._recorder.start()
        self._wakeups.start()
        self._thread = threading.Thread(target=self._loop, name="skylane-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let submissions in flight finish (they hold leases) within `timeout`.
        With `hand_back_on_stop`, claims still waiting for a thread are handed back instead."""
        self._stopping.set()
        self._wakeup.set()
        self._wakeups.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
        self._recorder.stop()

    def _loop(self) -> None:
        log.info("dispatcher %s started; runs reach the API at %s", self.name, self.api_url)
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                more = self.run_pass()
            except Exception:
                log.exception("dispatcher pass failed; trying again")
                more = False
            if more:
                continue
            self._wakeup.wait(self._idle_seconds())

    def _idle_seconds(self) -> float:
        """Until the next run becomes due (at most the interval). Runs already due but held
        by a concurrency limit wake us when a slot frees, so only future ones count."""
        interval = self.settings.dispatcher_interval_seconds
        if self._free_slots() < self._claim_chunk:
            return interval  # a finished submission wakes us
        try:
            next_due = self.store.next_due_time(after=utcnow(), scope=self.scope)
        except Exception:
            log.exception("cannot read the next due time")
            return interval
        if next_due is None:
            return interval
        wait = (next_due - utcnow()).total_seconds() - self.prefetch_seconds
        return max(0.0, min(interval, wait))

    # --- one pass ----------------------------------------------------------------------------

    def run_pass(self) -> bool:
        """Recover expired claims (at most once a second) and claim due runs for the free
        submit threads. True when there may be more due runs right away."""
        now = time.monotonic()
        if now >= self._next_recovery:
            self._next_recovery = now + RECOVERY_INTERVAL_SECONDS
            self.recover_expired_claims()
        if not self.scope.is_worker and now >= self._next_probe:
            self._next_probe = now + self.settings.fallback_probe_seconds
            self.probe_fallback_pools()
        free = self._free_slots()
        wanted = min(self.settings.dispatcher_batch_size, free)
        if free < self._claim_chunk:
            return False  # a finished submission wakes us when a chunk of slots is free
        grace = timedelta(seconds=self.settings.schedule_grace_seconds)
        at = utcnow()
        claims = self.store.claim_due_runs(
            claimed_by=self.name,
            lease_seconds=self.settings.claim_lease_seconds,
            limit=wanted,
            missed_before=at - grace,
            scope=self.scope,
            due_by=at + timedelta(seconds=self.prefetch_seconds) if self.prefetch_seconds else None,
        )
        for claim in claims:
            self._hand_off(self._submit, claim)
        return len(claims) == wanted

    def recover_expired_claims(self) -> int:
        claims = self.store.expired_claims(
            claimed_by=self.name,
            lease_seconds=self.settings.claim_lease_seconds,
            limit=max(1, self._free_slots()) if self._executor else 100,
            scope=self.scope,
        )
        for claim in claims:
            self._hand_off(self._recover, claim)
        return len(claims)

    def probe_fallback_pools(self) -> list[str]:
        """Ask the provider of each pool in fallback whether the control plane can reach it
        again (a `find`, which starts nothing); those that answer come back to push. The
        names of the pools taken back."""
        try:
            pools = self.store.pools_in_fallback()
        except Exception:
            log.exception("cannot read the pools in fallback")
            return []
        recovered = []
        for pool in pools:
            try:
                self.adapters.get(pool).find(FALLBACK_PROBE_KEY)
            except ProviderError as exc:
                log.info("pool %s stays with its workers: %s", pool.name, exc)
                continue
            except Exception:
                log.exception("pool %s: the fallback probe failed", pool.name)
                continue
            if self.store.set_pool_fallback(pool.name, None):
                self._unreachable_since.pop(pool.name, None)
                log.warning(
                    "pool %s: the control plane reaches its provider again; its runs are "
                    "pushed again (they were with its workers because %s)",
                    pool.name,
                    pool.fallback_reason,
                )
                recovered.append(pool.name)
        return recovered

    def _free_slots(self) -> int:
        with self._in_flight_lock:
            return self._max_in_flight - self._in_flight

    def _hand_off(self, work: Callable[[Claim], None], claim: Claim) -> None:
        """Run `work(claim)` on a submit thread, or here when the dispatcher is not started."""
        if self._executor is None:
            work(claim)
            return
        with self._in_flight_lock:
            self._in_flight += 1

        def done(_: object) -> None:
            with self._in_flight_lock:
                self._in_flight -= 1
                free = self._max_in_flight - self._in_flight
            if free == self._claim_chunk:  # crossing back from "too busy to claim"
                self.wake()

        self._executor.submit(self._guarded, work, claim).add_done_callback(done)

    @staticmethod
    def _guarded(work: Callable[[Claim], None], claim: Claim) -> None:
        try:
            work(claim)
        except Exception:
            # The lease runs out and another pass recovers the claim.
            log.exception("run %s: unexpected error in a submit thread", claim.run.id)

    # --- submission ---------------------------------------------------------------------------

    def _check_template_once(self, pool: Pool) -> None:
        """Check each pool version's template once (it was validated when stored, but the
        database may have been edited); submissions then skip the costly meta-schema check."""
        key = (pool.name, pool.updated_at)
        if key not in self._checked_templates:
            templates.validate_base_job_template(pool.base_job_template)
            self._checked_templates.add(key)

    def _recover(self, claim: Claim) -> None:
        key = claim.attempt.idempotency_key
        try:
            ref = self.adapters.get(claim.pool).find(key)
        except ProviderError as exc:
            log.warning("run %s: cannot look up %s yet: %s", claim.run.id, key, exc)
            self._failed(claim, exc)
            return
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

    def _still_ours(self, claim: Claim) -> bool:
        """Whether the claim's lease outlives a whole submission (no call starts after
        submit_deadline_seconds, and one lasts at most provider_timeout_seconds); renewed if
        not. A claim that waited too long for a thread may have expired and be recovered
        elsewhere: then it must not be submitted here."""
        lease = claim.attempt.lease_expires_at
        margin = self.settings.submit_deadline_seconds + self.settings.provider_timeout_seconds
        if lease is not None and (lease - utcnow()).total_seconds() > margin:
            return True
        renewed = self.store.renew_claim(
            claim.attempt.idempotency_key, self.name, self.settings.claim_lease_seconds
        )
        if renewed is None:
            log.warning("run %s: claim lost before submission; leaving it", claim.run.id)
        return renewed is not None

    def _submit(self, claim: Claim) -> None:
        key = claim.attempt.idempotency_key
        if self.hand_back_on_stop and self._stopping.is_set():
            self._hand_back(claim)
            return
        if not self._still_ours(claim):
            return
        try:
            token = claim.run_token or self.store.issue_run_token(claim.run.id)
            adapter = self.adapters.get(claim.pool)
            self._check_template_once(claim.pool)
            ref = adapter.submit(self._render(adapter, claim, token), key)
        except ProviderError as exc:
            self._failed(claim, exc)
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
            self._unreachable_since.pop(claim.pool.name, None)
            self._recorder.record(key, ref)
            log.info("run %s submitted to pool %s as %s", claim.run.id, claim.pool.name, ref)

    def _hand_back(self, claim: Claim) -> None:
        """Give a claim not submitted yet back to the queue: its run is SCHEDULED again at
        once, for another worker (no try is counted; nothing reached the provider)."""
        key = claim.attempt.idempotency_key
        try:
            self.store.record_submission_failure(
                key,
                f"handed back by {self.name}, which is stopping",
                retry_at=utcnow(),
                count_try=False,
                message=f"handed back unsubmitted: {self.name} stopped",
            )
            log.info("run %s: handed back (stopping before submitting it)", claim.run.id)
        except Exception:
            # Its lease runs out and another worker recovers it.
            log.exception("run %s: cannot hand the claim back", claim.run.id)

    def _render(self, adapter: Adapter, claim: Claim, token: str) -> object:
        context = RunContext(
            run_id=claim.run.id,
            flow_name=claim.run.flow_name,
            deployment_name=claim.run.deployment_name,
            pool_name=claim.pool.name,
            entrypoint=claim.deployment.entrypoint,
            api_url=self.api_url,
            run_token=token,
            idempotency_key=claim.attempt.idempotency_key,
            image=claim.deployment.image,
        )
        return render_run(
            adapter, claim.pool, claim.deployment, claim.run, context, template_checked=True
        )

    def _failed(self, claim: Claim, error: ProviderError) -> None:
        """Record a failed submit (or look-up) as the retry policy says, or hand the pool to
        its workers when it has `fallback: worker` and this error is a reason to."""
        outcome = self._failure_outcome(claim, error, utcnow())
        reason = self._fallback_reason(claim, error, outcome)
        if reason is not None:
            if self.store.set_pool_fallback(claim.pool.name, reason):
                log.warning("pool %s: its runs go to its workers: %s", claim.pool.name, reason)
            # Back to SCHEDULED at once (the workers' scope now), or, for an ambiguous
            # failure, the attempt and its key kept for a worker's recovery to look up first.
            outcome = FailureOutcome(
                utcnow(),
                f"handed to the pool's workers: {reason}",
                same_key=outcome.same_key and outcome.retry_at is not None,
                count_try=False,
            )
        log.warning("run %s: %s", claim.run.id, outcome.message)
        self.store.record_submission_failure(
            claim.attempt.idempotency_key,
            str(error),
            retry_at=outcome.retry_at,
            same_key=outcome.same_key,
            count_try=outcome.count_try,
            message=outcome.message,
        )

    def _fallback_reason(
        self, claim: Claim, error: ProviderError, outcome: FailureOutcome
    ) -> str | None:
        """Why the control plane should hand `claim`'s pool to its workers, or None."""
        if self.scope.is_worker or claim.pool.fallback != PoolFallback.WORKER:
            return None
        if isinstance(error, ProviderAuthError):
            return f"the control plane's credentials were refused: {error.message}"
        unreachable = isinstance(error, TransientProviderError) and not isinstance(
            error, ThrottledError | CapacityError
        )
        if not unreachable:
            self._unreachable_since.pop(claim.pool.name, None)
            return None
        since = self._unreachable_since.setdefault(claim.pool.name, time.monotonic())
        waited = time.monotonic() - since
        if waited >= self.settings.fallback_after_seconds or outcome.retry_at is None:
            return (
                f"the control plane could not reach the provider for {waited:.0f} s: "
                f"{error.message}"
            )
        return None

    def _failure_outcome(self, claim: Claim, error: ProviderError, now: datetime) -> FailureOutcome:
        if isinstance(error, RateLimited):
            # We held the call back ourselves: nothing reached the provider, no try spent.
            retry_at = now + timedelta(seconds=error.retry_after or 1.0)
            return FailureOutcome(retry_at, f"waiting for the rate limit: {error}", count_try=False)
        tries = claim.attempt.tries + 1
        delay = RESUBMIT_POLICY.delay(tries, error)
        retry_at = now + timedelta(seconds=delay)
        at = retry_at.strftime("%H:%M:%S UTC")
        if is_capacity_or_quota(error):
            # Bounded by time, not by tries: capacity comes back on the cloud's schedule.
            first = claim.run.attempts[0].created_at if claim.run.attempts else now
            waited = (now - first).total_seconds()
            if waited + delay > self.settings.capacity_retry_seconds:
                kind = error.code.removeprefix("provider_")
                message = f"no {kind} for {waited:.0f} s (capacity_retry_seconds): {error.message}"
                return FailureOutcome(None, message)
            kind = "capacity" if isinstance(error, TransientProviderError) else "quota"
            message = f"waiting for {kind}: {error.message}; next try at {at}"
            return FailureOutcome(retry_at, message, count_try=False)
        if not error.retryable or isinstance(error, PermanentProviderError):
            return FailureOutcome(None, f"submission failed: {error}")
        limit = self.settings.max_submit_attempts
        if tries >= limit:
            return FailureOutcome(None, f"submission failed after {tries} tries: {error.message}")
        # Throttled: the provider refused the call, so a fresh attempt is safe. Anything else
        # transient may have reached the provider: same key, looked up first.
        message = (
            f"submission will be retried at {at} (try {tries} of {limit} failed): {error.message}"
        )
        return FailureOutcome(retry_at, message, same_key=not isinstance(error, ThrottledError))


@dataclass(frozen=True)
class FailureOutcome:
    """What becomes of a run whose submit failed: retried at `retry_at` (None: it failed)."""

    retry_at: datetime | None
    message: str
    same_key: bool = False
    count_try: bool = True


class SubmissionRecorder:
    """Writes provider refs to the store in batches (one transaction for many submissions).
    Until `start()` (and after `stop()`) each ref is written at once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[str, str, datetime]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="skylane-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._ready.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self.flush()

    def record(self, key: str, ref: str) -> None:
        if self._thread is None:
            self.store.record_submissions([(key, ref, utcnow())])
            return
        with self._lock:
            self._pending.append((key, ref, utcnow()))
        self._ready.set()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self.store.record_submissions(batch)
        except Exception:
            # Put them back; the next flush tries again (and recovery covers a crash).
            log.exception("cannot record %d submissions yet", len(batch))
            with self._lock:
                self._pending[:0] = batch
            time.sleep(0.5)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._ready.wait()
            self._ready.clear()
            time.sleep(RECORD_BATCH_SECONDS)  # let the batch fill
            self.flush()

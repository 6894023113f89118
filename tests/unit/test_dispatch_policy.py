"""What the dispatcher does with each kind of provider answer, what the reconciler does with
stale heartbeats and slow starts, and the machinery that keeps replicas apart (service leases,
claim renewal, wake-ups). Both databases; the provider is the fake one
(`skylane.testing.fake_provider`), told to fail in a given way where a test needs it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from skylane.errors import (
    CapacityError,
    PermanentProviderError,
    ProviderError,
    ThrottledError,
    TransientProviderError,
)
from skylane.models import Deployment, Run, RunState
from skylane.rate_limits import RateLimited, RateScope, TokenBucket
from skylane.retries import RetryPolicy
from skylane.services.dispatcher import Dispatcher
from skylane.services.reconciler import Reconciler
from skylane.services.wakeups import DispatchWakeups
from skylane.settings import Settings
from skylane.store import create_engine_for
from skylane.store.repository import Store
from skylane.testing import fake_provider
from skylane.testing.fake_provider import SCRIPTED_PROVIDER, FakeAdapter, FakeCloud


@pytest.fixture(autouse=True)
def scripted_provider() -> Iterator[None]:
    fake_provider.install()
    yield
    fake_provider.uninstall()


def script(pool: str, *errors: ProviderError | None) -> None:
    """What the pool's next submit calls raise (None: succeed)."""
    fake_provider.SCRIPT[(pool, "submit")] = list(errors)


@pytest.fixture
def cloud_path(tmp_path: Path) -> Path:
    return tmp_path / "fake-cloud.sqlite"


def deployment(
    store: Store, cloud_path: Path, *, pool: str = "fake", **settings: Any
) -> Deployment:
    store.create_pool(
        name=pool,
        type=f"{SCRIPTED_PROVIDER}:push",
        base_job_template=FakeAdapter.default_template(),
        settings={"fake_state_path": str(cloud_path), **settings},
    )
    return store.create_deployment(
        flow_name="flow", name=pool, pool_name=pool, entrypoint="flows/flow.py:main"
    )


def due_run(store: Store, dep: Deployment) -> Run:
    return store.create_run(dep, parameters={}, job_variables={})


def one_pass(store: Store, settings: Settings) -> None:
    dispatcher = Dispatcher(store, settings, name="test-dispatcher")
    dispatcher.run_pass()
    dispatcher._recorder.flush()


# --- submission failures ---------------------------------------------------------------------


def test_capacity_errors_wait_longer_say_so_and_spend_no_try(
    store: Store, settings: Settings, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path)
    script("fake", CapacityError("no Fargate Spot capacity in eu-west-1a"))
    run = due_run(store, dep)
    before = datetime.now(UTC)
    one_pass(store, settings)
    after = store.get_run(run.id)
    assert after.state == RunState.SCHEDULED
    assert after.state_message is not None
    assert after.state_message.startswith("waiting for capacity: no Fargate Spot capacity")
    assert "next try at" in after.state_message
    [attempt] = after.attempts
    assert attempt.tries == 0  # capacity waits are bounded by time, not by tries
    # Not due again for at least the capacity backoff's lower bound (15 s * 0.5).
    assert store.next_due_time(after=before) >= before + timedelta(seconds=7)
    assert FakeCloud(cloud_path).resources() == []


def test_capacity_errors_fail_the_run_after_capacity_retry_seconds(
    store: Store, settings: Settings, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path)
    script("fake", CapacityError("no capacity"))
    run = due_run(store, dep)
    one_pass(store, settings.model_copy(update={"capacity_retry_seconds": 0}))
    after = store.get_run(run.id)
    assert after.state == RunState.FAILED
    assert "capacity_retry_seconds" in (after.state_message or "")
    assert "no capacity" in (after.state_message or "")


def test_our_own_rate_limit_reschedules_without_spending_a_try(
    store: Store, settings: Settings, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path)
    scope = RateScope("fake:Submit", "123", "local")
    script("fake", RateLimited(scope, [TokenBucket(1, 1.0)], retry_after=2.0))
    run = due_run(store, dep)
    one_pass(store, settings)
    after = store.get_run(run.id)
    assert after.state == RunState.SCHEDULED
    assert (after.state_message or "").startswith("waiting for the rate limit: the rate limit")
    assert after.attempts[0].tries == 0


def test_throttling_reschedules_with_a_new_attempt_and_counts_a_try(
    store: Store, settings: Settings, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path)
    script("fake", ThrottledError("slow down", retry_after=0.0))
    run = due_run(store, dep)
    one_pass(store, settings)
    after = store.get_run(run.id)
    assert after.state == RunState.SCHEDULED
    assert "will be retried at" in (after.state_message or "")
    assert after.attempts[0].tries == 1 and after.attempts[0].ended_at is not None
    later = datetime.now(UTC) + timedelta(minutes=10)
    [claim] = store.claim_due_runs(claimed_by="x", lease_seconds=60, now=later)
    assert claim.attempt.number == 2 and claim.attempt.tries == 1  # the budget is the run's


def test_an_ambiguous_failure_keeps_the_key_and_is_looked_up_before_trying_again(
    store: Store, settings: Settings, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path)
    script("fake", TransientProviderError("read timeout"))
    run = due_run(store, dep)
    one_pass(store, settings)
    pending = store.get_run(run.id)
    assert pending.state == RunState.PENDING
    [attempt] = pending.attempts
    key = attempt.idempotency_key
    # Meanwhile the provider did start it (the timeout came after the create).
    cloud = FakeCloud(cloud_path)
    ref = cloud.submit(key, run_id=str(run.id), status="RUNNING")
    later = datetime.now(UTC) + timedelta(minutes=10)
    dispatcher = Dispatcher(store, settings, name="recoverer")
    for claim in store.expired_claims(claimed_by="recoverer", now=later):
        dispatcher._recover(claim)
    after = store.get_run(run.id)
    assert [a.provider_ref for a in after.attempts] == [ref]  # adopted, not submitted again
    assert len(cloud.calls()) == 1


def test_a_permanent_error_fails_once_with_the_adapters_message(
    store: Store, settings: Settings, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path)
    script("fake", PermanentProviderError("ecs:RunTask was denied: grant ecs:RunTask"))
    run = due_run(store, dep)
    one_pass(store, settings)
    one_pass(store, settings)
    after = store.get_run(run.id)
    assert after.state == RunState.FAILED
    assert "ecs:RunTask was denied: grant ecs:RunTask" in (after.state_message or "")
    assert len(after.attempts) == 1


def test_retryable_errors_fail_the_run_when_its_tries_are_spent(
    store: Store, settings: Settings, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path)
    script("fake", ThrottledError("slow down"))
    run = due_run(store, dep)
    one_pass(store, settings.model_copy(update={"max_submit_attempts": 1}))
    after = store.get_run(run.id)
    assert after.state == RunState.FAILED
    assert "after 1 tries: slow down" in (after.state_message or "")


def test_a_claim_lost_while_waiting_is_not_submitted(
    store: Store, settings: Settings, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path)
    run = due_run(store, dep)
    [claim] = store.claim_due_runs(claimed_by="slow", lease_seconds=0.001)
    # Its lease ran out while it waited for a thread; another replica recovered it.
    [recovered] = store.expired_claims(
        claimed_by="other", now=datetime.now(UTC) + timedelta(seconds=1)
    )
    assert recovered.run.id == run.id
    slow = Dispatcher(store, settings, name="slow")
    slow._submit(claim)
    assert FakeCloud(cloud_path).calls() == []
    assert store.get_run(run.id).attempts[0].provider_ref is None


def test_a_lease_must_outlive_a_submission() -> None:
    with pytest.raises(ValueError, match="claim_lease_seconds must be longer"):
        Settings(claim_lease_seconds=30, submit_deadline_seconds=60)
    # A call made at the deadline may last the provider timeout: 4 + 2 > 5.
    with pytest.raises(ValueError, match="plus provider_timeout_seconds"):
        Settings(claim_lease_seconds=5, submit_deadline_seconds=4, provider_timeout_seconds=2)
    assert Settings(claim_lease_seconds=7, submit_deadline_seconds=4, provider_timeout_seconds=2)


# --- reconciler ------------------------------------------------------------------------------


def submitted(store: Store, dep: Deployment, settings: Settings) -> Run:
    run = due_run(store, dep)
    one_pass(store, settings)
    after = store.get_run(run.id)
    assert after.attempts and after.attempts[0].provider_ref, after.state_message
    return after


def test_stale_heartbeats_ask_the_provider_and_a_stopped_task_crashes_the_run(
    store: Store, settings: Settings, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path)
    run = submitted(store, dep, settings)
    store.set_run_state(run.id, RunState.RUNNING)
    store.heartbeat(run.id)
    reconciler = Reconciler(store, settings, name="r")
    # Beating: the provider is not asked at all.
    assert reconciler.run_pass().checked == 0
    # The container died: the provider says the task stopped, and no beat came for 3 intervals.
    FakeCloud(cloud_path).set_status(run.attempts[0].provider_ref, "STOPPED")
    later = datetime.now(UTC) + timedelta(seconds=3 * settings.heartbeat_seconds + 1)
    report = reconciler.run_pass(now=later)
    assert report.checked == 1 and report.crashed == 1
    crashed = store.get_run(run.id)
    assert crashed.state == RunState.CRASHED
    assert "missed 3 heartbeats" in (crashed.state_message or "")
    assert crashed.attempts[0].cleaned_up_at is not None


def test_stale_heartbeats_of_a_task_still_running_change_nothing(
    store: Store, settings: Settings, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path)
    run = submitted(store, dep, settings)
    store.set_run_state(run.id, RunState.RUNNING)
    later = datetime.now(UTC) + timedelta(seconds=3 * settings.heartbeat_seconds + 1)
    report = Reconciler(store, settings, name="r").run_pass(now=later)
    assert report.checked == 1 and report.crashed == 0
    assert store.get_run(run.id).state == RunState.RUNNING


def test_a_run_that_never_starts_is_stopped_after_the_start_timeout(
    store: Store, settings: Settings, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path, start_timeout_seconds=60)
    run = submitted(store, dep, settings)
    ref = run.attempts[0].provider_ref
    FakeCloud(cloud_path).set_status(ref, "PENDING")
    reconciler = Reconciler(store, settings, name="r")
    reconciler.run_pass(now=datetime.now(UTC) + timedelta(seconds=30))
    assert store.get_run(run.id).state == RunState.PENDING
    reconciler.run_pass(now=datetime.now(UTC) + timedelta(seconds=61))
    crashed = store.get_run(run.id)
    assert crashed.state == RunState.CRASHED
    assert "did not start within 60 s" in (crashed.state_message or "")
    assert crashed.attempts[0].cancel_requested_at is not None
    [resource] = [r for r in FakeCloud(cloud_path).resources() if r.ref == ref]
    assert resource.cancelled_at is not None


def test_one_reconciler_at_a_time_and_a_standby_takes_over(store: Store) -> None:
    now = datetime.now(UTC)
    assert store.acquire_service_lease("reconciler", "a", 10, now=now)
    assert not store.acquire_service_lease("reconciler", "b", 10, now=now)
    assert store.acquire_service_lease("reconciler", "a", 10, now=now + timedelta(seconds=5))
    assert store.acquire_service_lease("reconciler", "b", 10, now=now + timedelta(seconds=16))
    store.release_service_lease("reconciler", "b")
    assert store.acquire_service_lease("reconciler", "a", 10)


# --- wake-ups --------------------------------------------------------------------------------


def test_a_new_run_wakes_dispatchers_in_other_processes(
    database_url: str, store: Store, cloud_path: Path
) -> None:
    """On PostgreSQL through NOTIFY (another engine stands for another process); on SQLite
    only listeners on the same Store hear it, which is all one process needs."""
    dep = deployment(store, cloud_path)
    woken = threading.Event()
    listener_store = Store(create_engine_for(database_url))
    wakeups = DispatchWakeups(listener_store, woken.set)
    wakeups.start()
    try:
        if store.is_postgres:
            woken.wait(2)  # the listener's first look after connecting
            woken.clear()
        store.create_run(dep, parameters={}, job_variables={})
        if store.is_postgres:
            assert woken.wait(5), "no NOTIFY reached the other engine's listener"
        else:
            assert not woken.wait(0.3)  # a different Store object: SQLite has no channel
            listener_store.create_run(dep, parameters={}, job_variables={})
            assert woken.wait(1)
    finally:
        wakeups.stop()
        listener_store.engine.dispose()


def test_the_next_due_time_is_what_an_idle_dispatcher_sleeps_until(
    store: Store, cloud_path: Path
) -> None:
    dep = deployment(store, cloud_path)
    now = datetime.now(UTC)
    store.create_run(dep, parameters={}, job_variables={}, scheduled_time=now - timedelta(1))
    soon = now + timedelta(seconds=42)
    store.create_run(dep, parameters={}, job_variables={}, scheduled_time=soon)
    assert store.next_due_time(after=now) == soon
    store.update_pool("fake", {"paused": True})
    assert store.next_due_time(after=now) is None


def test_a_provider_call_hands_a_long_retry_after_back_instead_of_sleeping() -> None:
    calls: list[float] = []

    def throttled() -> None:
        calls.append(time.monotonic())
        raise ThrottledError("slow down", retry_after=30.0)

    policy = RetryPolicy(attempts=4, base=0.0, cap=0.01, longest_sleep=10.0)
    with pytest.raises(ThrottledError):
        policy.call(throttled)
    assert len(calls) == 1  # raised after one try, not after a 30 s sleep

    short: list[int] = []

    def throttled_briefly() -> str:
        short.append(1)
        if len(short) < 3:
            raise ThrottledError("slow down", retry_after=0.01)
        return "done"

    assert policy.call(throttled_briefly) == "done"  # short waits are still taken inside
    assert len(short) == 3

"""The pull worker and the worker protocol, on both databases: real API (in-process, a worker-
scoped key), real store, the fake provider as the cloud (it records every resource and every
submit call, so a double submission shows).

The end-to-end tests (tests/e2e/test_workers.py) run workers as processes against a server, a
process pool and moto_server; these check the protocol's edges where a test can hold time still.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from skylane.api.app import create_app
from skylane.client import SkylaneClient
from skylane.errors import Conflict, Forbidden, NotFound, ProviderAuthError, TransientProviderError
from skylane.models import ApiScope, Deployment, Run, RunState
from skylane.services.dispatcher import Dispatcher
from skylane.settings import Settings
from skylane.store.repository import Store
from skylane.store.scope import DispatchScope
from skylane.testing import fake_provider
from skylane.testing.fake_provider import SCRIPT, FakeAdapter, FakeCloud
from skylane.worker import Worker, WorkerOptions


@pytest.fixture(autouse=True)
def fake_providers() -> Iterator[None]:
    fake_provider.install()
    yield
    fake_provider.uninstall()


@pytest.fixture
def cloud(tmp_path: Path) -> FakeCloud:
    return FakeCloud(tmp_path / "fake-cloud.sqlite")


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"worker_heartbeat_seconds": 0.2, "dispatcher_interval_seconds": 0.1}
    )


@pytest.fixture
def api_client(store: Store, worker_settings: Settings) -> Iterator[TestClient]:
    """The API in-process; workers reach it with a key that has only the worker scope."""
    _, key = store.create_api_key(name="worker", scopes=[ApiScope.WORKER])
    with TestClient(create_app(worker_settings, store)) as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def make_worker(
    api_client: TestClient, settings: Settings, pool: str, name: str, **options: Any
) -> Worker:
    client = SkylaneClient(
        "http://testserver",
        api_client.headers["Authorization"].removeprefix("Bearer "),
        transport=api_client._transport,
    )
    return Worker(client, WorkerOptions(pool=pool, name=name, **options), settings)


def make_pool(
    store: Store, cloud: FakeCloud, name: str, pool_type: str, **settings: Any
) -> Deployment:
    fallback = settings.pop("fallback", None)
    store.create_pool(
        name=name,
        type=pool_type,
        base_job_template=FakeAdapter.default_template(),
        settings={"fake_state_path": str(cloud.path), **settings},
        fallback=fallback,
    )
    return store.create_deployment(
        flow_name="flow", name=name, pool_name=name, entrypoint="flows/flow.py:main"
    )


def runs(store: Store, deployment: Deployment, count: int = 1) -> list[Run]:
    return [store.create_run(deployment, parameters={}, job_variables={}) for _ in range(count)]


def eventually(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(0.05)


# --- claiming ---------------------------------------------------------------------------------


def test_a_worker_submits_its_pull_pools_runs_and_the_control_plane_does_not(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    pulled = make_pool(store, cloud, "pulled", "fake")
    pushed = make_pool(store, cloud, "pushed", "fake:push", fallback="worker")
    [pull_run] = runs(store, pulled)
    [push_run] = runs(store, pushed)

    make_worker(api_client, worker_settings, "pulled", "w1").run_once()

    after = store.get_run(pull_run.id)
    assert after.state == RunState.PENDING
    [attempt] = after.attempts
    assert attempt.claimed_by == "w1" and attempt.provider_ref is not None
    assert after.history[-1].message == "claimed by worker w1"
    assert store.get_run(push_run.id).state == RunState.SCHEDULED  # not the worker's: no fallback
    assert [r.run_id for r in cloud.resources()] == [str(pull_run.id)]

    # The control plane's dispatcher never claims a pull pool's run.
    [second] = runs(store, pulled)
    Dispatcher(store, worker_settings, name="plane").run_pass()
    assert store.get_run(second.id).state == RunState.SCHEDULED
    assert store.get_run(push_run.id).state == RunState.PENDING  # its own push pool's run


def test_a_worker_for_a_push_pool_without_fallback_is_told_why_it_is_not_needed(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    make_pool(store, cloud, "pushed", "fake:push")
    with pytest.raises(Conflict) as refused:
        make_worker(api_client, worker_settings, "pushed", "w1").register()
    message = refused.value.message
    assert "the control plane submits its runs itself" in message
    assert "skylane pool update pushed --fallback worker" in message
    assert store.list_workers("pushed") == []


def test_a_worker_touches_only_attempts_it_claimed(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    pulled = make_pool(store, cloud, "pulled", "fake")
    runs(store, pulled, 2)
    w1 = make_worker(api_client, worker_settings, "pulled", "w1").api
    [mine] = w1.claim_due_runs(claimed_by="w1", lease_seconds=60, limit=1)
    w2 = make_worker(api_client, worker_settings, "pulled", "w2").api
    [theirs] = w2.claim_due_runs(claimed_by="w2", lease_seconds=60, limit=1)
    with pytest.raises(Forbidden) as refused:
        w2.record_submission(mine.attempt.idempotency_key, "arn:stolen")
    assert refused.value.field == "key"
    # A batch with one foreign key is refused whole: its own ref is not recorded either.
    now = datetime.now(UTC)
    batch = [(theirs.attempt.idempotency_key, "arn:ok", now)]
    with pytest.raises(Forbidden):
        w2.record_submissions([*batch, (mine.attempt.idempotency_key, "arn:stolen", now)])
    for claim in (mine, theirs):
        assert store.get_run(claim.run.id).attempts[0].provider_ref is None
    w2.record_submissions(batch)
    assert store.get_run(theirs.run.id).attempts[0].provider_ref == "arn:ok"


def test_a_deleted_pool_is_not_read_as_an_empty_resource_cache(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    # The ECS adapter takes "no record for this key" to mean no task was started: an answer
    # about a pool that is gone must be an error, never "none".
    store.create_pool(name="gone", type="fake", base_job_template=FakeAdapter.default_template())
    api = make_worker(api_client, worker_settings, "gone", "w1").api
    pool_id = store.get_pool("gone").id
    api.put_provider_resource(pool_id, "ecs-run", "skl-1", "recorded")
    assert api.get_provider_resource(pool_id, "ecs-run", "skl-1") == "recorded"
    assert api.get_provider_resource(pool_id, "ecs-run", "skl-2") is None
    store.delete_pool("gone")
    with pytest.raises(NotFound):
        api.get_provider_resource(pool_id, "ecs-run", "skl-1")


def test_the_limit_caps_the_runs_a_worker_has_active(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    pulled = make_pool(store, cloud, "pulled", "fake")
    created = runs(store, pulled, 5)
    make_worker(api_client, worker_settings, "pulled", "w1", limit=2).run_once()
    states = [store.get_run(r.id).state for r in created]
    assert states.count(RunState.PENDING) == 2
    assert states.count(RunState.SCHEDULED) == 3
    # One ends: one more is taken on the next pass.
    ended = next(r for r in created if store.get_run(r.id).state == RunState.PENDING)
    store.set_run_state(ended.id, RunState.RUNNING)
    store.set_run_state(ended.id, RunState.COMPLETED)
    make_worker(api_client, worker_settings, "pulled", "w1", limit=2).run_once()
    states = [store.get_run(r.id).state for r in created]
    assert states.count(RunState.PENDING) == 2 and states.count(RunState.SCHEDULED) == 2


def test_prefetch_claims_runs_due_soon_and_not_later(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    pulled = make_pool(store, cloud, "pulled", "fake")
    now = datetime.now(UTC)
    soon = store.create_run(
        pulled, parameters={}, job_variables={}, scheduled_time=now + timedelta(seconds=5)
    )
    later = store.create_run(
        pulled, parameters={}, job_variables={}, scheduled_time=now + timedelta(seconds=60)
    )
    make_worker(api_client, worker_settings, "pulled", "w1", prefetch_seconds=10).run_once()
    assert store.get_run(soon.id).state == RunState.PENDING
    assert store.get_run(later.id).state == RunState.SCHEDULED


def test_two_workers_submit_each_of_100_runs_exactly_once(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    # Not idempotent: a key submitted twice would make two resources.
    pulled = make_pool(store, cloud, "pulled", "fake", idempotent=False)
    settings = worker_settings.model_copy(update={"dispatcher_batch_size": 7})
    workers = [make_worker(api_client, settings, "pulled", f"w{i}") for i in (1, 2)]
    for worker in workers:
        worker.start()
    try:
        created = runs(store, pulled, 100)
        eventually(lambda: len(cloud.resources()) >= 100, timeout=60)
    finally:
        for worker in workers:
            worker.stop()
    assert cloud.duplicates() == {}
    resources = cloud.resources()
    assert sorted(r.run_id for r in resources) == sorted(str(r.id) for r in created)
    by_worker = {w.options.name: 0 for w in workers}
    for run in created:
        [attempt] = store.get_run(run.id).attempts
        by_worker[attempt.claimed_by or "?"] += 1
    assert sum(by_worker.values()) == 100 and set(by_worker) == {"w1", "w2"}


# --- crash recovery and stopping --------------------------------------------------------------


def test_a_dead_workers_claim_is_recovered_by_another_without_a_duplicate(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    pulled = make_pool(store, cloud, "pulled", "fake", idempotent=False)
    [run_a, run_b] = runs(store, pulled, 2)
    dead = make_worker(api_client, worker_settings, "pulled", "dead").api
    claims = dead.claim_due_runs(claimed_by="dead", lease_seconds=5)
    assert {c.run.id for c in claims} == {run_a.id, run_b.id}
    # It reached the provider with one claim before dying (no ref recorded); the other never.
    reached = next(c for c in claims if c.run.id == run_a.id)
    cloud.submit(reached.attempt.idempotency_key, run_id=str(run_a.id), status="RUNNING")

    # Leases run out (pretend it is later): another worker recovers both.
    later = datetime.now(UTC) + timedelta(seconds=6)
    recovered = store.expired_claims(
        claimed_by="w2", lease_seconds=60, now=later, scope=DispatchScope.for_worker("pulled", "w2")
    )
    assert {c.run.id for c in recovered} == {run_a.id, run_b.id}
    rescuer = make_worker(api_client, worker_settings, "pulled", "w2")
    for claim in recovered:
        rescuer.dispatcher._recover(claim)
    rescuer.dispatcher._recorder.flush()

    assert cloud.duplicates() == {}
    assert sorted(r.run_id for r in cloud.resources()) == sorted([str(run_a.id), str(run_b.id)])
    for run in (run_a, run_b):
        [attempt] = store.get_run(run.id).attempts  # the same key: no second attempt
        assert attempt.claimed_by == "w2" and attempt.provider_ref is not None
    # The adopted one was not submitted again: one submit call for its key in all.
    calls = [c for c in cloud.calls() if c.key == reached.attempt.idempotency_key]
    assert len(calls) == 1


def test_stopping_hands_back_claims_not_yet_submitted(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    # One submit thread, each submit 0.5 s: most claims wait in the queue when it stops.
    pulled = make_pool(store, cloud, "pulled", "fake", latency_seconds=0.5)
    settings = worker_settings.model_copy(
        update={"dispatcher_concurrency": 1, "dispatcher_batch_size": 2}
    )
    created = runs(store, pulled, 2)
    worker = make_worker(api_client, settings, "pulled", "w1")
    worker.start()
    eventually(lambda: all(store.get_run(r.id).state == RunState.PENDING for r in created))
    worker.stop()

    # A submit under way when it stopped finished; the one queued behind it went back.
    submitted = {r.run_id for r in cloud.resources()}
    assert len(submitted) <= 1
    for run in created:
        after = store.get_run(run.id)
        if str(run.id) in submitted:
            assert after.state == RunState.PENDING and after.attempts[0].provider_ref
        else:
            assert after.state == RunState.SCHEDULED
            assert after.state_message == "handed back unsubmitted: w1 stopped"
            assert after.attempts[0].tries == 0  # nothing reached the provider
            assert after.attempts[0].ended_at is not None
    [w1] = store.list_workers("pulled")
    assert not w1.online and w1.stopped_at is not None


# --- status, templates ----------------------------------------------------------------------


def test_a_pull_pool_is_ready_only_while_a_worker_is_online(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    make_pool(store, cloud, "pulled", "fake")

    def status() -> dict[str, Any]:
        return api_client.get("/api/pools/pulled/status").json()

    assert status()["status"] == "not_ready"
    assert "skylane worker start --pool pulled" in status()["reason"]
    worker = make_worker(api_client, worker_settings, "pulled", "w1")
    worker.register()
    now = status()
    assert now["status"] == "ready" and now["dispatched_by"] == "workers"
    assert [(w["name"], w["online"]) for w in now["workers"]] == [("w1", True)]
    # Missed heartbeats: offline after worker_offline_seconds.
    later = datetime.now(UTC) + timedelta(seconds=worker_settings.worker_offline_seconds + 1)
    [w1] = store.list_workers(
        "pulled", offline_seconds=worker_settings.worker_offline_seconds, now=later
    )
    assert not w1.online
    worker.api.stopped()
    assert status()["status"] == "not_ready"


def test_a_template_change_reaches_the_next_run_without_restarting_the_worker(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    pulled = make_pool(store, cloud, "pulled", "fake")
    worker = make_worker(api_client, worker_settings, "pulled", "w1")
    [first] = runs(store, pulled)
    worker.run_once()
    template = FakeAdapter.default_template()
    template["variables"]["properties"]["status"]["default"] = "PENDING"
    store.update_pool("pulled", {"base_job_template": template})
    [second] = runs(store, pulled)
    worker.run_once()  # the same Worker object: its adapters and caches stay
    status = {r.run_id: r.status for r in cloud.resources()}
    assert status == {str(first.id): "RUNNING", str(second.id): "PENDING"}


# --- fallback -------------------------------------------------------------------------------


def test_refused_credentials_hand_a_fallback_pools_runs_to_workers_and_back(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    pushed = make_pool(store, cloud, "pushed", "fake-scripted:push", fallback="worker")
    plane = Dispatcher(store, worker_settings, name="plane")
    worker = make_worker(api_client, worker_settings, "pushed", "w1")
    worker.register()  # a push pool with fallback on accepts workers

    SCRIPT[("pushed", "submit")] = [ProviderAuthError("AccessDenied: ecs:RunTask on the cluster")]
    [first] = runs(store, pushed)
    plane.run_pass()
    handed = store.get_run(first.id)
    assert handed.state == RunState.SCHEDULED
    assert handed.state_message == (
        "handed to the pool's workers: the control plane's credentials were refused: "
        "AccessDenied: ecs:RunTask on the cluster"
    )
    assert handed.attempts[0].tries == 0
    pool = store.get_pool("pushed")
    assert pool.fallback_since is not None and "AccessDenied" in (pool.fallback_reason or "")
    status = api_client.get("/api/pools/pushed/status").json()
    assert status["dispatched_by"] == "workers" and status["status"] == "ready"

    # While in fallback the control plane claims nothing of it; the worker does.
    [second] = runs(store, pushed)
    plane.run_pass()
    assert store.get_run(second.id).state == RunState.SCHEDULED
    worker.run_once()
    for run in (first, second):
        after = store.get_run(run.id)
        assert after.state == RunState.PENDING
        assert after.attempts[-1].claimed_by == "w1"
        assert "(fallback: the control plane's credentials were refused" in (
            after.history[-1].message or ""
        )

    # The probe still fails: stays with the workers. Then it answers: back to push.
    SCRIPT[("pushed", "find")] = [ProviderAuthError("AccessDenied")]
    assert plane.probe_fallback_pools() == []
    assert store.get_pool("pushed").fallback_since is not None
    assert plane.probe_fallback_pools() == ["pushed"]
    assert store.get_pool("pushed").fallback_since is None
    [third] = runs(store, pushed)
    worker.run_once()
    assert store.get_run(third.id).state == RunState.SCHEDULED  # not the worker's any more
    plane.run_pass()
    plane._recorder.flush()
    after = store.get_run(third.id)
    assert after.state == RunState.PENDING and after.attempts[0].claimed_by == "plane"
    assert len(cloud.resources()) == 3 and cloud.duplicates() == {}


def test_an_unreachable_provider_hands_runs_over_once_the_retries_are_spent(
    store: Store, worker_settings: Settings, cloud: FakeCloud
) -> None:
    pushed = make_pool(store, cloud, "pushed", "fake-scripted:push", fallback="worker")
    settings = worker_settings.model_copy(
        update={"max_submit_attempts": 1, "fallback_after_seconds": 3600}
    )
    SCRIPT[("pushed", "submit")] = [
        TransientProviderError("cannot reach the provider (ConnectTimeout)")
    ]
    [run] = runs(store, pushed)
    Dispatcher(store, settings, name="plane").run_pass()
    after = store.get_run(run.id)
    # Without fallback this run would have FAILED (its one try spent); here workers get it.
    assert after.state == RunState.SCHEDULED
    assert "could not reach the provider" in (after.state_message or "")
    assert store.get_pool("pushed").fallback_since is not None


def test_fallback_is_for_push_pools_only(api_client: TestClient, store: Store) -> None:
    _, admin = store.create_api_key(name="admin", scopes=[ApiScope.ADMIN])
    answer = api_client.post(
        "/api/pools",
        json={"name": "p", "type": "process", "fallback": "worker"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "fallback"


def test_heartbeats_keep_a_started_worker_online(
    store: Store, api_client: TestClient, worker_settings: Settings, cloud: FakeCloud
) -> None:
    make_pool(store, cloud, "pulled", "fake")
    worker = make_worker(api_client, worker_settings, "pulled", "w1")
    worker.start()
    try:
        first = store.list_workers("pulled")[0].last_heartbeat_at
        eventually(lambda: store.list_workers("pulled")[0].last_heartbeat_at > first)
    finally:
        worker.stop()
    assert not store.list_workers("pulled")[0].online

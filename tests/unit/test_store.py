"""The store, on SQLite and PostgreSQL (the `store` fixture runs each test on both)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from skylane.adapters.process import ProcessAdapter
from skylane.errors import AlreadyExists, Conflict, IllegalTransition, InvalidInput, NotFound
from skylane.models import TERMINAL_STATES, ApiScope, Deployment, Pool, Run, RunState
from skylane.security import parse_api_key, parse_run_token
from skylane.store.repository import Claim, LogEntry, Store
from skylane.store.tables import RunRow

LEASE = 60.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_pool(store: Store, name: str = "local", type: str = "process:push", **kw) -> Pool:
    return store.create_pool(
        name=name, type=type, base_job_template=ProcessAdapter.default_template(), **kw
    )


def make_deployment(
    store: Store, pool: str = "local", flow: str = "etl", name: str = "nightly", **kw
) -> Deployment:
    return store.create_deployment(
        flow_name=flow, name=name, pool_name=pool, entrypoint="flows/etl.py:etl", **kw
    )


def make_run(store: Store, deployment: Deployment, **kw) -> Run:
    kw.setdefault("parameters", {})
    kw.setdefault("job_variables", {})
    return store.create_run(deployment, **kw)


@pytest.fixture
def deployment(store: Store) -> Deployment:
    make_pool(store)
    return make_deployment(store)


def claim(store: Store, **kw) -> list[Claim]:
    kw.setdefault("claimed_by", "test")
    kw.setdefault("lease_seconds", LEASE)
    return store.claim_due_runs(**kw)


def drive(store: Store, run: Run, *states: RunState) -> Run:
    for state in states:
        run = store.set_run_state(run.id, state).run
    return run


# Shortest legal way from SCHEDULED to each terminal state.
PATH_TO = {
    RunState.COMPLETED: (RunState.PENDING, RunState.RUNNING, RunState.COMPLETED),
    RunState.FAILED: (RunState.PENDING, RunState.RUNNING, RunState.FAILED),
    RunState.CRASHED: (RunState.PENDING, RunState.CRASHED),
    RunState.CANCELLED: (RunState.CANCELLED,),
}


# --- pools ----------------------------------------------------------------------------------


def test_pool_create_get_list_update_delete(store: Store) -> None:
    created = make_pool(
        store, "b-pool", concurrency_limit=3, settings={"region": "eu"}, description="first"
    )
    make_pool(store, "a-pool")
    assert created.name == "b-pool"
    assert created.type == "process:push"
    assert created.base_job_template == ProcessAdapter.default_template()
    assert created.concurrency_limit == 3
    assert created.settings == {"region": "eu"}
    assert created.paused is False
    assert created.created_at.tzinfo is not None

    assert store.get_pool("b-pool") == created
    assert [p.name for p in store.list_pools()] == ["a-pool", "b-pool"]

    updated = store.update_pool(
        "b-pool", {"paused": True, "concurrency_limit": None, "description": "second"}
    )
    assert updated.paused is True
    assert updated.concurrency_limit is None
    assert updated.description == "second"
    assert updated.updated_at >= created.updated_at
    assert store.get_pool("b-pool") == updated

    store.delete_pool("b-pool")
    with pytest.raises(NotFound) as info:
        store.get_pool("b-pool")
    assert info.value.field == "pool"
    assert [p.name for p in store.list_pools()] == ["a-pool"]


def test_update_pool_rejects_unknown_field_and_changes_nothing(store: Store) -> None:
    before = make_pool(store)
    with pytest.raises(InvalidInput) as info:
        store.update_pool("local", {"paused": True, "nmae": "x"})
    assert info.value.field == "nmae"
    assert store.get_pool("local") == before


def test_missing_pool_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_pool("nope")
    with pytest.raises(NotFound):
        store.update_pool("nope", {"paused": True})
    with pytest.raises(NotFound):
        store.delete_pool("nope")


def test_duplicate_pool_name(store: Store) -> None:
    first = make_pool(store)
    with pytest.raises(AlreadyExists) as info:
        make_pool(store, type="process", concurrency_limit=1)
    assert info.value.field == "name"
    assert store.list_pools() == [first]


def test_delete_pool_with_deployments_is_refused(store: Store, deployment: Deployment) -> None:
    with pytest.raises(Conflict) as info:
        store.delete_pool("local")
    assert info.value.field == "pool"
    assert store.get_pool("local").name == "local"
    assert store.get_deployment(deployment.id) == deployment


def test_delete_pool_whose_runs_moved_with_their_deployment(store: Store) -> None:
    make_pool(store, "old")
    make_pool(store, "new")
    dep = make_deployment(store, pool="old")
    run = drive(store, make_run(store, dep), RunState.CANCELLED)
    store.update_deployment(dep.id, {"pool_name": "new"})
    # "old" has no deployment any more; deleting it must be a clean Conflict or a success,
    # never a database error.
    try:
        store.delete_pool("old")
    except Conflict:
        assert store.get_pool("old").name == "old"
    else:
        with pytest.raises(NotFound):
            store.get_pool("old")
    assert store.get_run(run.id).state == RunState.CANCELLED


# --- deployments ----------------------------------------------------------------------------


def test_deployment_on_missing_pool(store: Store) -> None:
    with pytest.raises(NotFound) as info:
        make_deployment(store, pool="nope")
    assert info.value.field == "pool"
    assert store.list_deployments() == []


def test_duplicate_deployment(store: Store, deployment: Deployment) -> None:
    with pytest.raises(AlreadyExists) as info:
        make_deployment(store, image="other")
    assert info.value.field == "name"
    assert store.list_deployments() == [deployment]
    # Same name under another flow is another deployment.
    other = make_deployment(store, flow="report")
    assert other.full_name == "report/nightly"
    assert len(store.list_deployments()) == 2


def test_deployment_lookups_and_update(store: Store) -> None:
    make_pool(store, "a")
    make_pool(store, "b")
    d1 = make_deployment(store, pool="a", parameters={"n": 1}, tags=["x"])
    d2 = make_deployment(store, pool="b", flow="report", name="weekly")
    assert store.get_deployment(d1.id) == d1
    assert store.get_deployment_by_name("report", "weekly") == d2
    with pytest.raises(NotFound):
        store.get_deployment_by_name("report", "nightly")
    with pytest.raises(NotFound):
        store.get_deployment(uuid.uuid4())
    assert store.list_deployments(pool_name="a") == [d1]
    assert [d.full_name for d in store.list_deployments()] == ["etl/nightly", "report/weekly"]

    moved = store.update_deployment(d1.id, {"pool_name": "b", "paused": True})
    assert moved.pool_name == "b"
    assert moved.paused is True
    assert moved.parameters == {"n": 1}
    assert {d.id for d in store.list_deployments(pool_name="b")} == {d1.id, d2.id}
    with pytest.raises(InvalidInput):
        store.update_deployment(d1.id, {"flow_name": "x"})


def test_delete_deployment(store: Store, deployment: Deployment) -> None:
    active = make_run(store, deployment)
    with pytest.raises(Conflict):
        store.delete_deployment(deployment.id)
    assert store.get_run(active.id).state == RunState.SCHEDULED

    drive(store, active, RunState.PENDING, RunState.RUNNING, RunState.COMPLETED)
    store.add_logs(active.id, [LogEntry(utcnow(), "INFO", "stdout", "done")])
    store.delete_deployment(deployment.id)
    with pytest.raises(NotFound):
        store.get_deployment(deployment.id)
    with pytest.raises(NotFound):
        store.get_run(active.id)
    # The pool has no deployment left and can go.
    store.delete_pool("local")


# --- runs and their states ------------------------------------------------------------------


def test_create_run(store: Store, deployment: Deployment) -> None:
    before = utcnow()
    run = make_run(store, deployment, parameters={"n": 2}, job_variables={"env": {"A": "1"}})
    assert run.state == RunState.SCHEDULED
    assert [h.state for h in run.history] == [RunState.SCHEDULED]
    assert run.attempts == []
    assert run.parameters == {"n": 2}
    assert run.job_variables == {"env": {"A": "1"}}
    assert run.deployment_id == deployment.id
    assert run.deployment_name == "etl/nightly"
    assert run.pool_name == "local"
    assert run.scheduled_time >= before - timedelta(seconds=1)
    assert run.scheduled_time.tzinfo is not None
    assert run.started_at is None and run.ended_at is None
    assert store.get_run(run.id) == run


def test_create_run_with_scheduled_time(store: Store, deployment: Deployment) -> None:
    when = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    run = make_run(store, deployment, scheduled_time=when)
    assert store.get_run(run.id).scheduled_time == when


def test_legal_path_sets_times_and_history(store: Store, deployment: Deployment) -> None:
    run = make_run(store, deployment)
    pending = store.set_run_state(run.id, RunState.PENDING, message="claimed")
    assert pending.applied is True
    assert pending.run.state == RunState.PENDING
    assert pending.run.started_at is None

    running = store.set_run_state(run.id, RunState.RUNNING, transition_id="t-run").run
    assert running.started_at is not None
    assert running.ended_at is None

    done = store.set_run_state(run.id, RunState.COMPLETED, message="all good").run
    assert done.state == RunState.COMPLETED
    assert done.state_message == "all good"
    assert done.started_at == running.started_at
    assert done.ended_at is not None and done.ended_at >= done.started_at

    stored = store.get_run(run.id)
    assert [h.state for h in stored.history] == [
        RunState.SCHEDULED,
        RunState.PENDING,
        RunState.RUNNING,
        RunState.COMPLETED,
    ]
    assert [h.message for h in stored.history] == [None, "claimed", None, "all good"]
    assert stored.history[2].transition_id == "t-run"
    stamps = [h.timestamp for h in stored.history]
    assert stamps == sorted(stamps)


def test_illegal_transition_changes_nothing(store: Store, deployment: Deployment) -> None:
    run = make_run(store, deployment)
    with pytest.raises(IllegalTransition) as info:
        store.set_run_state(run.id, RunState.COMPLETED, message="nope", transition_id="t1")
    assert info.value.current_state == "SCHEDULED"
    after = store.get_run(run.id)
    assert after == run
    assert len(after.history) == 1

    drive(store, run, RunState.PENDING, RunState.RUNNING)
    before = store.get_run(run.id)
    with pytest.raises(IllegalTransition) as info:
        store.set_run_state(run.id, RunState.SCHEDULED)
    assert info.value.current_state == "RUNNING"
    assert store.get_run(run.id) == before
    # The refused transition id was not recorded: it may be used for a legal change.
    assert store.set_run_state(run.id, RunState.COMPLETED, transition_id="t1").applied is True


def test_state_of_missing_run(store: Store) -> None:
    with pytest.raises(NotFound):
        store.set_run_state(uuid.uuid4(), RunState.PENDING)
    with pytest.raises(NotFound):
        store.cancel_run(uuid.uuid4())


def test_repeated_transition_id_changes_nothing(store: Store, deployment: Deployment) -> None:
    run = make_run(store, deployment)
    first = store.set_run_state(run.id, RunState.PENDING, transition_id="t-pending")
    assert first.applied is True

    again = store.set_run_state(run.id, RunState.PENDING, transition_id="t-pending")
    assert again.applied is False
    assert again.run.state == RunState.PENDING
    assert len(store.get_run(run.id).history) == 2

    store.set_run_state(run.id, RunState.RUNNING, transition_id="t-running")
    before = store.get_run(run.id)
    # An older transition id, repeated after the run moved on, reports the current state.
    old = store.set_run_state(run.id, RunState.PENDING, transition_id="t-pending")
    assert old.applied is False
    assert old.run.state == RunState.RUNNING
    # Even with another target state: the id decides.
    other = store.set_run_state(run.id, RunState.FAILED, transition_id="t-running")
    assert other.applied is False
    assert store.get_run(run.id) == before
    assert len(before.history) == 3


def test_transition_ids_are_per_run(store: Store, deployment: Deployment) -> None:
    a, b = make_run(store, deployment), make_run(store, deployment)
    assert store.set_run_state(a.id, RunState.PENDING, transition_id="same").applied
    assert store.set_run_state(b.id, RunState.PENDING, transition_id="same").applied
    assert store.get_run(b.id).state == RunState.PENDING


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
def test_terminal_states_never_change(
    store: Store, deployment: Deployment, terminal: RunState
) -> None:
    run = drive(store, make_run(store, deployment), *PATH_TO[terminal])
    assert run.state == terminal
    assert run.ended_at is not None
    before = store.get_run(run.id)
    for target in RunState:
        with pytest.raises(IllegalTransition) as info:
            store.set_run_state(run.id, target, transition_id=f"late-{target.value}")
        assert info.value.current_state == terminal.value
    with pytest.raises(IllegalTransition):
        store.cancel_run(run.id)
    assert store.get_run(run.id) == before


def test_cancel_scheduled_run_is_cancelled_at_once(store: Store, deployment: Deployment) -> None:
    run = make_run(store, deployment)
    result = store.cancel_run(run.id, transition_id="c1")
    assert result.applied is True
    assert result.run.state == RunState.CANCELLED
    assert result.run.ended_at is not None
    assert [h.state for h in result.run.history] == [RunState.SCHEDULED, RunState.CANCELLED]
    assert claim(store) == []

    repeated = store.cancel_run(run.id, transition_id="c1")
    assert repeated.applied is False
    assert len(store.get_run(run.id).history) == 2


@pytest.mark.parametrize(
    "states",
    [(RunState.PENDING,), (RunState.PENDING, RunState.RUNNING)],
    ids=["PENDING", "RUNNING"],
)
def test_cancel_active_run_is_cancelling(
    store: Store, deployment: Deployment, states: tuple[RunState, ...]
) -> None:
    run = drive(store, make_run(store, deployment), *states)
    result = store.cancel_run(run.id)
    assert result.applied is True
    assert result.run.state == RunState.CANCELLING
    assert result.run.ended_at is None
    # The cancel may still end in any terminal state.
    assert store.set_run_state(run.id, RunState.CANCELLED).run.state == RunState.CANCELLED


def test_heartbeat(store: Store, deployment: Deployment) -> None:
    run = drive(store, make_run(store, deployment), RunState.PENDING, RunState.RUNNING)
    assert run.last_heartbeat_at is None
    beat = store.heartbeat(run.id)
    assert beat.last_heartbeat_at is not None
    assert beat.state == RunState.RUNNING
    assert len(beat.history) == 3


def test_list_runs_filters(store: Store) -> None:
    make_pool(store, "a")
    make_pool(store, "b")
    da = make_deployment(store, pool="a")
    db = make_deployment(store, pool="b", flow="report")
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    r1 = make_run(store, da, scheduled_time=t0)
    r2 = make_run(store, da, scheduled_time=t0 + timedelta(hours=1))
    r3 = make_run(store, db, scheduled_time=t0 + timedelta(hours=2))
    store.cancel_run(r2.id)

    assert [r.id for r in store.list_runs()] == [r3.id, r2.id, r1.id]
    assert [r.id for r in store.list_runs(pool_name="a")] == [r2.id, r1.id]
    assert [r.id for r in store.list_runs(deployment_id=db.id)] == [r3.id]
    assert [r.id for r in store.list_runs(states=[RunState.CANCELLED])] == [r2.id]
    assert [r.id for r in store.list_runs(states=[RunState.SCHEDULED])] == [r3.id, r1.id]
    assert [r.id for r in store.list_runs(since=t0 + timedelta(minutes=30))] == [r3.id, r2.id]
    assert [r.id for r in store.list_runs(until=t0 + timedelta(minutes=30))] == [r1.id]
    assert [r.id for r in store.list_runs(limit=1, offset=1)] == [r2.id]


# --- claims ---------------------------------------------------------------------------------


def test_claim_only_due_runs(store: Store, deployment: Deployment) -> None:
    now = utcnow()
    due = make_run(store, deployment, scheduled_time=now - timedelta(seconds=1))
    later = make_run(store, deployment, scheduled_time=now + timedelta(hours=1))
    claims = claim(store, now=now)
    assert [c.run.id for c in claims] == [due.id]
    assert store.get_run(later.id).state == RunState.SCHEDULED
    assert store.get_run(later.id).attempts == []
    # Once its time has come, it is claimed.
    assert [c.run.id for c in claim(store, now=now + timedelta(hours=2))] == [later.id]


def test_claim_orders_by_scheduled_time_and_honours_limit(
    store: Store, deployment: Deployment
) -> None:
    t0 = utcnow() - timedelta(hours=1)
    runs = [
        make_run(store, deployment, scheduled_time=t0 + timedelta(minutes=m)) for m in (3, 1, 2)
    ]
    first = claim(store, limit=2)
    assert [c.run.id for c in first] == [runs[1].id, runs[2].id]
    assert [c.run.id for c in claim(store)] == [runs[0].id]


def test_claim_only_push_pools(store: Store) -> None:
    make_pool(store, "pull", type="process")
    make_pool(store, "push", type="process:push")
    pulled = make_run(store, make_deployment(store, pool="pull"))
    pushed = make_run(store, make_deployment(store, pool="push", flow="other"))
    assert [c.run.id for c in claim(store)] == [pushed.id]
    assert store.get_run(pulled.id).state == RunState.SCHEDULED


def test_paused_pool_is_not_claimed(store: Store, deployment: Deployment) -> None:
    store.update_pool("local", {"paused": True})
    run = make_run(store, deployment)
    assert claim(store) == []
    assert store.get_run(run.id).state == RunState.SCHEDULED
    store.update_pool("local", {"paused": False})
    assert [c.run.id for c in claim(store)] == [run.id]


def test_paused_deployment_is_not_claimed(store: Store, deployment: Deployment) -> None:
    other = make_deployment(store, flow="other")
    store.update_deployment(deployment.id, {"paused": True})
    paused_run = make_run(store, deployment)
    other_run = make_run(store, other)
    assert [c.run.id for c in claim(store)] == [other_run.id]
    assert store.get_run(paused_run.id).state == RunState.SCHEDULED
    store.update_deployment(deployment.id, {"paused": False})
    assert [c.run.id for c in claim(store)] == [paused_run.id]


def test_pool_concurrency_limit(store: Store) -> None:
    make_pool(store, concurrency_limit=1)
    d1 = make_deployment(store)
    d2 = make_deployment(store, flow="other")
    t0 = utcnow() - timedelta(minutes=10)
    runs = [
        make_run(store, d, scheduled_time=t0 + timedelta(minutes=i))
        for i, d in enumerate((d1, d2, d1))
    ]

    assert [c.run.id for c in claim(store)] == [runs[0].id]
    assert [store.get_run(r.id).state for r in runs] == [
        RunState.PENDING,
        RunState.SCHEDULED,
        RunState.SCHEDULED,
    ]
    assert claim(store) == []  # still at the limit
    drive(store, runs[0], RunState.RUNNING)
    assert claim(store) == []  # RUNNING counts as well

    drive(store, runs[0], RunState.COMPLETED)
    assert [c.run.id for c in claim(store)] == [runs[1].id]
    assert store.get_run(runs[2].id).state == RunState.SCHEDULED
    store.cancel_run(runs[1].id)
    assert claim(store) == []  # CANCELLING is still active
    store.set_run_state(runs[1].id, RunState.CANCELLED)
    assert [c.run.id for c in claim(store)] == [runs[2].id]


def test_deployment_concurrency_limit(store: Store) -> None:
    make_pool(store)
    limited = make_deployment(store, concurrency_limit=1)
    free = make_deployment(store, flow="other")
    l1, l2, l3 = (make_run(store, limited) for _ in range(3))
    f1, f2 = make_run(store, free), make_run(store, free)

    claimed = {c.run.id for c in claim(store)}
    assert claimed == {l1.id, f1.id, f2.id}
    assert store.get_run(l2.id).state == RunState.SCHEDULED
    assert store.get_run(l3.id).state == RunState.SCHEDULED

    drive(store, l1, RunState.RUNNING, RunState.COMPLETED)
    assert [c.run.id for c in claim(store)] == [l2.id]
    assert store.get_run(l3.id).state == RunState.SCHEDULED


def test_zero_concurrency_limit_claims_nothing(store: Store) -> None:
    make_pool(store, concurrency_limit=0)
    run = make_run(store, make_deployment(store))
    assert claim(store) == []
    assert store.get_run(run.id).state == RunState.SCHEDULED


def test_saturated_pool_does_not_starve_other_pools(store: Store) -> None:
    make_pool(store, "busy", concurrency_limit=1)
    make_pool(store, "idle")
    busy = make_deployment(store, pool="busy")
    idle = make_deployment(store, pool="idle", flow="other")
    t0 = utcnow() - timedelta(hours=1)
    for i in range(3):
        make_run(store, busy, scheduled_time=t0 + timedelta(minutes=i))
    waiting = make_run(store, idle, scheduled_time=t0 + timedelta(minutes=10))
    # The busy pool's runs are the oldest due ones, but only one fits its limit: the same
    # claim must go on to the idle pool's run instead of stopping at the busy pool's.
    claimed = claim(store, limit=2)
    assert [c.pool.name for c in claimed] == ["busy", "idle"]
    assert claimed[1].run.id == waiting.id
    assert claim(store, limit=2) == []  # the busy pool is full, the idle one empty


def test_claimed_run(store: Store, deployment: Deployment) -> None:
    runs = [make_run(store, deployment) for _ in range(3)]
    now = utcnow()
    claims = claim(store, claimed_by="dispatcher-1", now=now)
    assert {c.run.id for c in claims} == {r.id for r in runs}
    keys = set()
    for c in claims:
        stored = store.get_run(c.run.id)
        assert stored.state == RunState.PENDING
        assert c.run.state == RunState.PENDING
        assert [h.state for h in stored.history] == [RunState.SCHEDULED, RunState.PENDING]
        assert len(stored.attempts) == 1
        attempt = stored.attempts[0]
        assert attempt == c.attempt
        assert attempt.number == 1
        assert attempt.claimed_by == "dispatcher-1"
        assert attempt.provider_ref is None
        assert attempt.lease_expires_at == now + timedelta(seconds=LEASE)
        keys.add(attempt.idempotency_key)
        assert c.deployment == deployment
        assert c.pool.name == "local"

        assert c.run_token is not None
        parsed = parse_run_token(c.run_token)
        assert parsed is not None
        token_run, secret = parsed
        assert token_run == c.run.id
        assert store.verify_run_token(c.run.id, secret) is True
        assert store.verify_run_token(c.run.id, secret[:-1] + "x") is False
        assert store.verify_run_token(c.run.id, "") is False
    assert len(keys) == 3
    # A token is valid only for its own run.
    _, secret0 = parse_run_token(claims[0].run_token)  # type: ignore[arg-type,misc]
    assert store.verify_run_token(claims[1].run.id, secret0) is False
    assert store.verify_run_token(uuid.uuid4(), secret0) is False


def test_unclaimed_run_has_no_valid_token(store: Store, deployment: Deployment) -> None:
    run = make_run(store, deployment)
    assert store.verify_run_token(run.id, "") is False
    assert store.verify_run_token(run.id, "anything") is False


def test_issue_run_token_replaces_the_old_one(store: Store, deployment: Deployment) -> None:
    make_run(store, deployment)
    [c] = claim(store)
    _, old = parse_run_token(c.run_token)  # type: ignore[arg-type,misc]
    _, new = parse_run_token(store.issue_run_token(c.run.id))  # type: ignore[misc]
    assert store.verify_run_token(c.run.id, new) is True
    assert store.verify_run_token(c.run.id, old) is False


def test_concurrent_claimers_never_claim_the_same_run(store: Store, deployment: Deployment) -> None:
    runs = [make_run(store, deployment) for _ in range(24)]
    claimed: list[list[uuid.UUID]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def claimer(index: int) -> None:
        try:
            start.wait(timeout=10)
            while batch := store.claim_due_runs(
                claimed_by=f"c{index}", lease_seconds=LEASE, limit=3
            ):
                claimed[index].extend(c.run.id for c in batch)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    everything = [run_id for ids in claimed for run_id in ids]
    assert len(everything) == len(set(everything))
    assert set(everything) == {r.id for r in runs}
    for r in runs:
        stored = store.get_run(r.id)
        assert stored.state == RunState.PENDING
        assert len(stored.attempts) == 1
        assert len(stored.history) == 2


def test_concurrent_claimers_respect_the_pool_limit(
    store: Store, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_pool(store, concurrency_limit=1)
    dep = make_deployment(store)
    for _ in range(3):
        make_run(store, dep)
    # Two dispatchers claim one run each at the same moment. Make both reach the count of
    # active runs before either commits (PostgreSQL lets them run side by side thanks to SKIP
    # LOCKED); on SQLite the second waits for the first's transaction and the barrier times out.
    barrier = threading.Barrier(2)
    original = Store._active_counts

    def counted_together(s, column, limits):  # type: ignore[no-untyped-def]
        if column is RunRow.pool_id:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=0.5)
        return original(s, column, limits)

    monkeypatch.setattr(Store, "_active_counts", staticmethod(counted_together))
    results: list[int] = []

    def claimer() -> None:
        results.append(len(claim(store, limit=1)))

    threads = [threading.Thread(target=claimer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 2
    active = store.list_runs(states=[RunState.PENDING])
    assert len(active) == 1, f"{len(active)} runs claimed in a pool limited to 1"


def test_record_submission_and_watched(store: Store, deployment: Deployment) -> None:
    make_run(store, deployment)
    [c] = claim(store)
    key = c.attempt.idempotency_key
    assert store.watched_submissions() == []
    store.record_submission(key, "host:1:" + key)
    attempt = store.get_run(c.run.id).attempts[0]
    assert attempt.provider_ref == "host:1:" + key
    assert attempt.submitted_at is not None
    assert attempt.lease_expires_at is None
    [watched] = store.watched_submissions()
    assert watched.run.id == c.run.id
    assert watched.pool.name == "local"
    assert watched.attempt.provider_ref == "host:1:" + key

    store.update_attempt(key, cleaned_up_at=utcnow())
    assert store.watched_submissions() == []
    with pytest.raises(ValueError):
        store.update_attempt(key, provider_ref="other")
    with pytest.raises(NotFound):
        store.update_attempt("no-such-key", error="x")


def test_submission_failure_with_retry(store: Store, deployment: Deployment) -> None:
    run = make_run(store, deployment)
    [first] = claim(store)
    now = utcnow()
    retry_at = now + timedelta(minutes=5)
    after = store.record_submission_failure(
        first.attempt.idempotency_key, "throttled", retry_at=retry_at
    )
    assert after.state == RunState.SCHEDULED
    assert "throttled" in (after.state_message or "")
    attempt = after.attempts[0]
    assert attempt.error == "throttled"
    assert attempt.ended_at is not None
    assert attempt.lease_expires_at is None

    assert claim(store, now=now) == []
    assert claim(store, now=retry_at - timedelta(seconds=1)) == []
    assert store.get_run(run.id).state == RunState.SCHEDULED
    [second] = claim(store, now=retry_at)
    assert second.run.id == run.id
    assert second.attempt.number == 2
    assert second.attempt.idempotency_key != first.attempt.idempotency_key
    assert [a.number for a in store.get_run(run.id).attempts] == [1, 2]


def test_submission_failure_without_retry(store: Store, deployment: Deployment) -> None:
    run = make_run(store, deployment)
    [c] = claim(store)
    after = store.record_submission_failure(
        c.attempt.idempotency_key, "image not found: fix the image", retry_at=None
    )
    assert after.state == RunState.FAILED
    assert "image not found: fix the image" in (after.state_message or "")
    assert after.ended_at is not None
    assert store.get_run(run.id) == after
    assert claim(store, now=utcnow() + timedelta(days=1)) == []


def test_submission_failure_of_a_cancelling_run(store: Store, deployment: Deployment) -> None:
    make_run(store, deployment)
    [c] = claim(store)
    store.cancel_run(c.run.id)
    after = store.record_submission_failure(c.attempt.idempotency_key, "boom", retry_at=utcnow())
    assert after.state == RunState.CANCELLED
    assert claim(store, now=utcnow() + timedelta(days=1)) == []


def test_expired_claims(store: Store, deployment: Deployment) -> None:
    make_run(store, deployment)
    make_run(store, deployment)
    now = utcnow()
    c1, c2 = claim(store, now=now)
    store.record_submission(c2.attempt.idempotency_key, "ref-2")

    assert store.expired_claims(now=now) == []
    assert store.expired_claims(now=now + timedelta(seconds=LEASE - 1)) == []
    later = now + timedelta(seconds=LEASE + 1)
    [expired] = store.expired_claims(now=later)
    assert expired.run.id == c1.run.id
    assert expired.attempt.idempotency_key == c1.attempt.idempotency_key
    assert expired.run_token is None
    assert expired.deployment.id == deployment.id
    # It is leased again to the caller.
    assert store.expired_claims(now=later) == []
    assert store.get_run(c1.run.id).attempts[0].lease_expires_at > later

    # A ref recorded, or an attempt that ended, is not a lost claim.
    store.record_submission(c1.attempt.idempotency_key, "ref-1")
    assert store.expired_claims(now=later + timedelta(days=1)) == []


def test_expired_claim_of_failed_submission_is_not_recovered(
    store: Store, deployment: Deployment
) -> None:
    make_run(store, deployment)
    now = utcnow()
    [c] = claim(store, now=now)
    store.record_submission_failure(c.attempt.idempotency_key, "x", retry_at=None)
    assert store.expired_claims(now=now + timedelta(days=1)) == []


# --- logs -----------------------------------------------------------------------------------


def test_logs_paging(store: Store, deployment: Deployment) -> None:
    run = make_run(store, deployment)
    other = make_run(store, deployment)
    t0 = utcnow()
    entries = [LogEntry(t0 + timedelta(seconds=i), "INFO", "stdout", f"line {i}") for i in range(5)]
    assert store.add_logs(run.id, entries[:3]) == 3
    assert store.add_logs(other.id, [LogEntry(t0, "ERROR", "stderr", "other run")]) == 1
    assert store.add_logs(run.id, entries[3:]) == 2
    assert store.add_logs(run.id, []) == 0

    lines = store.read_logs(run.id)
    assert [line.message for line in lines] == [f"line {i}" for i in range(5)]
    assert [line.timestamp for line in lines] == [e.timestamp for e in entries]
    assert all(line.run_id == run.id and line.stream == "stdout" for line in lines)
    ids = [line.id for line in lines]
    assert ids == sorted(ids)

    page1 = store.read_logs(run.id, limit=2)
    page2 = store.read_logs(run.id, after=page1[-1].id, limit=2)
    page3 = store.read_logs(run.id, after=page2[-1].id, limit=2)
    assert [line.message for line in page1 + page2 + page3] == [e.message for e in entries]
    assert len(page3) == 1
    assert store.read_logs(run.id, after=page3[-1].id) == []
    assert [line.message for line in store.read_logs(other.id)] == ["other run"]


def test_logs_of_missing_run(store: Store) -> None:
    with pytest.raises(NotFound):
        store.add_logs(uuid.uuid4(), [LogEntry(utcnow(), "INFO", "stdout", "x")])
    with pytest.raises(NotFound):
        store.read_logs(uuid.uuid4())


# --- API keys -------------------------------------------------------------------------------


def test_api_key_create_and_verify(store: Store) -> None:
    info, plaintext = store.create_api_key(name="ci", scopes=[ApiScope.DEPLOY, ApiScope.READ])
    assert plaintext.startswith("skl_")
    parsed = parse_api_key(plaintext)
    assert parsed is not None
    key_id, secret = parsed
    assert key_id == info.id
    assert info.name == "ci"
    assert info.scopes == [ApiScope.DEPLOY, ApiScope.READ]
    assert info.revoked is False
    assert secret not in info.model_dump_json()

    verified = store.verify_api_key(key_id, secret)
    assert verified == info
    # The plaintext is not kept: listing shows only what ApiKeyInfo has.
    [listed] = store.list_api_keys()
    assert listed == info
    assert secret not in listed.model_dump_json()

    other_info, other_plaintext = store.create_api_key(name="ci", scopes=[ApiScope.READ])
    assert other_plaintext != plaintext and other_info.id != info.id


def test_api_key_rejections(store: Store) -> None:
    info, plaintext = store.create_api_key(name="k", scopes=[ApiScope.READ])
    key_id, secret = parse_api_key(plaintext)  # type: ignore[misc]
    assert store.verify_api_key(key_id, secret[:-1] + ("0" if secret[-1] != "0" else "1")) is None
    assert store.verify_api_key(key_id, "") is None
    assert store.verify_api_key("unknownid", secret) is None

    revoked = store.revoke_api_key(key_id)
    assert revoked.revoked is True
    assert store.verify_api_key(key_id, secret) is None
    assert store.revoke_api_key(key_id).revoked is True  # revoking again is harmless
    with pytest.raises(NotFound):
        store.revoke_api_key("unknownid")


def test_api_key_expiry(store: Store) -> None:
    expires = utcnow() + timedelta(hours=1)
    info, plaintext = store.create_api_key(name="temp", scopes=[ApiScope.READ], expires_at=expires)
    assert info.expires_at == expires
    key_id, secret = parse_api_key(plaintext)  # type: ignore[misc]
    assert store.verify_api_key(key_id, secret) == info
    assert store.verify_api_key(key_id, secret, now=expires - timedelta(seconds=1)) == info
    assert store.verify_api_key(key_id, secret, now=expires) is None
    assert store.verify_api_key(key_id, secret, now=expires + timedelta(days=1)) is None

    _, past = store.create_api_key(
        name="old", scopes=[ApiScope.READ], expires_at=utcnow() - timedelta(seconds=1)
    )
    assert store.verify_api_key(*parse_api_key(past)) is None  # type: ignore[misc]


def test_has_admin_key(store: Store) -> None:
    assert store.has_admin_key() is False
    store.create_api_key(name="reader", scopes=[ApiScope.READ, ApiScope.DEPLOY])
    assert store.has_admin_key() is False
    admin, _ = store.create_api_key(name="admin", scopes=[ApiScope.ADMIN])
    assert store.has_admin_key() is True
    store.revoke_api_key(admin.id)
    assert store.has_admin_key() is False


def test_scheduled_runs_follow_their_deployment_to_a_new_pool(store: Store) -> None:
    make_pool(store, "old")
    make_pool(store, "new")
    dep = make_deployment(store, pool="old")
    finished = drive(store, make_run(store, dep), RunState.CANCELLED)
    waiting = make_run(store, dep)

    store.update_deployment(dep.id, {"pool_name": "new"})

    assert store.get_run(waiting.id).pool_name == "new"
    assert [c.pool.name for c in claim(store)] == ["new"]
    # History stays where it happened, and survives the old pool's deletion.
    store.delete_pool("old")
    assert store.get_run(finished.id).pool_name == "old"
    assert [r.id for r in store.list_runs(pool_name="old")] == [finished.id]


def test_cancelling_twice_changes_nothing(store: Store, deployment: Deployment) -> None:
    run = drive(store, make_run(store, deployment), RunState.PENDING, RunState.RUNNING)
    first = store.cancel_run(run.id)

    second = store.cancel_run(run.id)

    assert first.applied and first.run.state == RunState.CANCELLING
    assert not second.applied and second.run.state == RunState.CANCELLING
    assert len(second.run.history) == len(first.run.history)

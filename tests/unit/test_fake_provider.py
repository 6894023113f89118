"""The fake provider (`skylane.testing.fake_provider`): the stand-in cloud of the dispatch
benchmark, so its records must be right, also with several processes submitting at once."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from skylane import templates
from skylane.adapters import ADAPTERS
from skylane.adapters.base import ProviderStatus, RunContext
from skylane.errors import InvalidInput, ProviderNotFound
from skylane.models import Pool, RunState
from skylane.pool_types import parse_pool_type
from skylane.services.dispatcher import Dispatcher
from skylane.settings import Settings
from skylane.store.repository import Store
from skylane.testing import fake_provider
from skylane.testing.fake_provider import FakeAdapter, FakeCloud


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    fake_provider.install()
    yield
    fake_provider.uninstall()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "cloud" / "fake.sqlite"


def make_pool(state: Path, **settings: Any) -> Pool:
    now = datetime.now(UTC)
    return Pool(
        id=uuid.uuid4(),
        name="fake",
        type="fake:push",
        base_job_template=FakeAdapter.default_template(),
        settings={"fake_state_path": str(state), **settings},
        created_at=now,
        updated_at=now,
    )


def context(run_id: uuid.UUID | None = None) -> RunContext:
    run_id = run_id or uuid.uuid4()
    return RunContext(
        run_id=run_id,
        flow_name="flow",
        deployment_name="flow/job",
        pool_name="fake",
        entrypoint="flows/flow.py:main",
        api_url="http://127.0.0.1:4200",
        run_token="token",
        idempotency_key=f"skl-{run_id.hex}-1",
    )


def request_for(adapter: FakeAdapter, **job_variables: Any) -> fake_provider.FakeRequest:
    _, configuration = templates.resolve_job_configuration(
        adapter.default_template(), job_variables
    )
    return adapter.render(configuration, context())


# --- registration and rendering --------------------------------------------------------------


def test_install_registers_the_fake_pool_types() -> None:
    assert ADAPTERS["fake"] is FakeAdapter
    assert parse_pool_type("fake:push").push
    fake_provider.uninstall()
    with pytest.raises(InvalidInput):
        parse_pool_type("fake:push")
    fake_provider.install()


def test_constructor_ignores_options_it_does_not_know(state: Path) -> None:
    adapter = FakeAdapter(make_pool(state), Settings(), limiter=object(), cache=None)
    assert adapter.cloud.path == state.resolve()


def test_job_variables_override_pool_settings_which_override_defaults(state: Path) -> None:
    templates.validate_base_job_template(FakeAdapter.default_template())
    plain = FakeAdapter(make_pool(state), Settings())
    assert request_for(plain).latency_seconds == 0
    assert request_for(plain).status == "RUNNING"
    configured = FakeAdapter(make_pool(state, latency_seconds=0.05, status="SUCCEEDED"), Settings())
    assert request_for(configured).latency_seconds == 0.05
    assert request_for(configured).status == "SUCCEEDED"
    per_run = request_for(configured, latency_seconds=0, status="FAILED")
    assert (per_run.latency_seconds, per_run.status) == (0, "FAILED")
    assert configured.describe(per_run)["status"] == "FAILED"


def test_render_rejects_what_the_fake_cannot_do(state: Path) -> None:
    adapter = FakeAdapter(make_pool(state), Settings())
    with pytest.raises(InvalidInput) as info:
        adapter.render({"status": "EXPLODED"}, context())
    assert info.value.field == "job_variables.status"
    with pytest.raises(InvalidInput):
        adapter.render({"latency_seconds": -1}, context())


def test_state_path_falls_back_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fake_provider.STATE_ENV, str(tmp_path / "env.sqlite"))
    pool = make_pool(tmp_path)
    pool.settings.pop("fake_state_path")
    assert FakeAdapter(pool, Settings()).cloud.path == (tmp_path / "env.sqlite").resolve()


# --- submit, find, statuses ------------------------------------------------------------------


def test_submit_is_idempotent_per_key_and_counts_every_call(state: Path) -> None:
    adapter = FakeAdapter(make_pool(state), Settings())
    request = request_for(adapter)
    assert adapter.find("k1") is None
    ref = adapter.submit(request, "k1")
    assert adapter.submit(request, "k1") == ref
    other = adapter.submit(request, "k2")
    assert other != ref
    assert adapter.find("k1") == ref

    cloud = FakeCloud(state)
    [first, second] = cloud.resources()
    assert (first.key, first.ref, first.run_id, first.status) == (
        "k1",
        ref,
        request.run_id,
        "RUNNING",
    )
    assert second.key == "k2"
    assert [(c.key, c.created) for c in cloud.calls()] == [
        ("k1", True),
        ("k1", False),
        ("k2", True),
    ]
    assert cloud.duplicates() == {}
    assert cloud.repeated_calls() == {"k1": 2}


def test_without_idempotency_a_repeated_submit_is_a_visible_duplicate(state: Path) -> None:
    adapter = FakeAdapter(make_pool(state, idempotent=False), Settings())
    request = request_for(adapter)
    first = adapter.submit(request, "k1")
    second = adapter.submit(request, "k1")
    assert first != second
    assert adapter.find("k1") == first  # the first one created
    cloud = FakeCloud(state)
    assert cloud.duplicates() == {"k1": 2}
    assert all(call.created for call in cloud.calls())
    cloud.reset()
    assert cloud.resources() == [] and cloud.calls() == [] and adapter.find("k1") is None


def test_submit_takes_the_configured_latency_before_recording(state: Path) -> None:
    adapter = FakeAdapter(make_pool(state, latency_seconds=0.1), Settings())
    started = time.time()
    ref = adapter.submit(request_for(adapter), "slow")
    [resource] = FakeCloud(state).resources()
    assert resource.ref == ref
    assert resource.submitted_at - started >= 0.1


def test_statuses_are_batched_and_cancel_and_cleanup_are_recorded(state: Path) -> None:
    adapter = FakeAdapter(make_pool(state, status="SUCCEEDED"), Settings())
    request = request_for(adapter)
    refs = [adapter.submit(request, f"key-{i}") for i in range(1200)]  # several SQL batches
    running = adapter.submit(request_for(adapter, status="RUNNING"), "running")
    found = adapter.statuses([*refs, running, "fake-unknown"])
    assert {found[ref].status for ref in refs} == {ProviderStatus.SUCCEEDED}
    assert found[running].status == ProviderStatus.RUNNING
    assert found["fake-unknown"].status == ProviderStatus.NOT_FOUND

    adapter.cancel(running)
    assert adapter.statuses([running])[running].status == ProviderStatus.STOPPED
    adapter.cleanup(running)
    adapter.cleanup("fake-unknown")  # nothing to clean is not an error
    [resource] = [r for r in FakeCloud(state).resources() if r.ref == running]
    assert resource.cancelled_at is not None and resource.cleaned_up_at is not None
    with pytest.raises(ProviderNotFound):
        adapter.cancel("fake-unknown")
    assert "submitted" in adapter.logs(running)[0].message
    with pytest.raises(ProviderNotFound):
        adapter.logs("fake-unknown")


# --- several processes -----------------------------------------------------------------------

KEYS = 150


def _submit_all(state: str, idempotent: bool, barrier: Any) -> None:
    """Child process: submit every key once, starting together with the other child."""
    fake_provider.install()
    adapter = FakeAdapter(make_pool(Path(state), idempotent=idempotent), Settings())
    request = adapter.render({}, context())
    barrier.wait(timeout=30)
    for i in range(KEYS):
        adapter.submit(request, f"key-{i}")


@pytest.mark.parametrize("idempotent", [True, False])
def test_two_processes_submitting_the_same_keys_at_once(state: Path, idempotent: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    children = [
        ctx.Process(target=_submit_all, args=(str(state), idempotent, barrier)) for _ in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    cloud = FakeCloud(state)
    calls = cloud.calls()
    assert len(calls) == 2 * KEYS
    assert len({c.pid for c in calls}) == 2
    assert len(cloud.repeated_calls()) == KEYS
    if idempotent:
        assert len(cloud.resources()) == KEYS
        assert cloud.duplicates() == {}
        assert sum(c.created for c in calls) == KEYS
    else:
        assert len(cloud.resources()) == 2 * KEYS
        assert cloud.duplicates() == {f"key-{i}": 2 for i in range(KEYS)}


# --- with the dispatcher ---------------------------------------------------------------------


def test_the_dispatcher_submits_runs_of_a_fake_pool(
    store: Store, settings: Settings, state: Path
) -> None:
    store.create_pool(
        name="fake",
        type="fake:push",
        base_job_template=FakeAdapter.default_template(),
        settings={"fake_state_path": str(state)},
    )
    deployment = store.create_deployment(
        flow_name="flow", name="job", pool_name="fake", entrypoint="flows/flow.py:main"
    )
    runs = [store.create_run(deployment, parameters={}, job_variables={}) for _ in range(3)]
    dispatcher = Dispatcher(store, settings, name="test-fake")
    dispatcher.start()
    try:
        deadline = time.monotonic() + 20
        while len(FakeCloud(state).resources()) < len(runs) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        dispatcher.stop()
    resources = FakeCloud(state).resources()
    assert sorted(r.run_id for r in resources) == sorted(str(run.id) for run in runs)
    for run in runs:
        current = store.get_run(run.id)
        assert current.state == RunState.PENDING
        [attempt] = current.attempts
        assert attempt.provider_ref == FakeCloud(state).find(attempt.idempotency_key)

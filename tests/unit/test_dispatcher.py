"""The dispatcher and reconciler with a real `process:push` pool: real subprocesses, no mocks,
both databases.

Each test drives one dispatcher pass and one reconciler pass at a time (`plane.tick()`) in a loop
with a deadline instead of starting their threads.
Runs use a tiny Python program as their command (job variable `command`) instead of the skylane
runtime; the test plays the runtime's part by reporting states through the store when needed.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from skylane.adapters.process import ProcessAdapter
from skylane.models import Deployment, Run, RunState
from skylane.security import parse_run_token
from skylane.services.dispatcher import Dispatcher
from skylane.services.reconciler import Reconciler
from skylane.settings import Settings, data_dir
from skylane.store.repository import Store

T = TypeVar("T")
DEADLINE_SECONDS = 20.0
ACTIVE = (RunState.PENDING, RunState.RUNNING, RunState.CANCELLING)


def command(code: str) -> str:
    return shlex.join([sys.executable, "-c", code])


# Waits (at most 30 s) until the file named by $RELEASE exists, then exits 0.
WAIT_FOR_RELEASE = (
    "import os, time\n"
    "deadline = time.time() + 30\n"
    "while not os.path.exists(os.environ['RELEASE']) and time.time() < deadline:\n"
    "    time.sleep(0.02)\n"
)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZXx"


def state_files() -> list[Path]:
    directory = data_dir() / "process-runs"
    if not directory.exists():
        return []
    return [p for p in directory.iterdir() if not p.name.startswith(".")]


@pytest.fixture
def pool(store: Store) -> None:
    store.create_pool(
        name="local", type="process:push", base_job_template=ProcessAdapter.default_template()
    )


def deploy(
    store: Store, code: str, *, name: str = "job", env: dict[str, str] | None = None, **kw: Any
) -> Deployment:
    job_variables: dict[str, Any] = {"command": command(code)}
    if env:
        job_variables["env"] = env
    return store.create_deployment(
        flow_name="flow",
        name=name,
        pool_name="local",
        entrypoint="flows/flow.py:main",
        job_variables=job_variables,
        **kw,
    )


def new_run(store: Store, deployment: Deployment, **kw: Any) -> Run:
    return store.create_run(
        deployment, parameters={}, job_variables=kw.pop("job_variables", {}), **kw
    )


class ControlPlane:
    """A dispatcher and a reconciler, driven one pass at a time in the test's thread."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.dispatcher = Dispatcher(store, settings, name="test-dispatcher")
        self.reconciler = Reconciler(store, settings, name="test-reconciler")

    def tick(self) -> None:
        self.dispatcher.recover_expired_claims()
        self.dispatcher.run_pass()
        self.reconciler.run_pass()


@pytest.fixture
def plane(store: Store, settings: Settings) -> ControlPlane:
    return ControlPlane(store, settings)


def tick_until(
    plane: ControlPlane,
    predicate: Callable[[], T | None],
    what: str,
    *,
    each: Callable[[], None] | None = None,
) -> T:
    """Tick until `predicate()` is truthy; fail after a generous deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        plane.tick()
        if each is not None:
            each()
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.03)


def terminal(store: Store, run_id: uuid.UUID) -> Run | None:
    run = store.get_run(run_id)
    return run if run.state.is_terminal else None


def cleaned_up(store: Store, run_id: uuid.UUID) -> Run | None:
    run = store.get_run(run_id)
    return run if run.attempts and run.attempts[-1].cleaned_up_at is not None else None


# --- crashes --------------------------------------------------------------------------------


@pytest.mark.parametrize("exit_code", [0, 3])
def test_process_that_exits_without_reporting_crashes(
    store: Store, pool: None, plane: ControlPlane, settings: Settings, exit_code: int
) -> None:
    dep = deploy(store, f"import sys; print('hello'); sys.exit({exit_code})")
    run = new_run(store, dep)
    seen_grace = []

    def watch() -> None:
        current = store.get_run(run.id)
        if (
            current.attempts
            and current.attempts[0].provider_ended_at is not None
            and current.state == RunState.PENDING
        ):
            seen_grace.append(current.attempts[0].provider_ended_at)

    ended = tick_until(plane, lambda: terminal(store, run.id), "the run to end", each=watch)
    assert ended.state == RunState.CRASHED
    assert f"exit code {exit_code}" in (ended.state_message or "")
    assert "without reporting a final state" in (ended.state_message or "")
    assert [h.state for h in ended.history] == [
        RunState.SCHEDULED,
        RunState.PENDING,
        RunState.CRASHED,
    ]
    # It was not declared crashed at once: the runtime gets crash_grace_seconds to report.
    assert seen_grace, "the run was marked CRASHED without a grace period"
    crashed_at = ended.history[-1].timestamp
    grace = timedelta(seconds=settings.crash_grace_seconds)
    assert crashed_at - ended.attempts[0].provider_ended_at >= grace

    [attempt] = ended.attempts
    assert attempt.provider_ref is not None
    assert attempt.submitted_at is not None
    assert attempt.cleaned_up_at is not None
    assert state_files() == []
    # Nothing happens to it afterwards.
    plane.tick()
    assert store.get_run(run.id) == ended


# --- submission failures --------------------------------------------------------------------


def test_missing_command_fails_without_retry(store: Store, pool: None, plane: ControlPlane) -> None:
    dep = store.create_deployment(
        flow_name="flow",
        name="job",
        pool_name="local",
        entrypoint="flows/flow.py:main",
        job_variables={"command": "skylane-no-such-command-xyz --flag"},
    )
    run = new_run(store, dep)
    ended = tick_until(plane, lambda: terminal(store, run.id), "the run to fail")
    assert ended.state == RunState.FAILED
    assert "skylane-no-such-command-xyz" in (ended.state_message or "")
    [attempt] = ended.attempts
    assert attempt.provider_ref is None
    assert "skylane-no-such-command-xyz" in (attempt.error or "")
    for _ in range(3):
        plane.tick()
    after = store.get_run(run.id)
    assert after.state == RunState.FAILED
    assert len(after.attempts) == 1


def test_job_variables_the_template_rejects_fail_the_run(
    store: Store, pool: None, plane: ControlPlane
) -> None:
    dep = deploy(store, "pass")
    # Written past the API's validation (as an older template might have allowed).
    run = new_run(store, dep, job_variables={"env": {"COUNT": 3}})
    ended = tick_until(plane, lambda: terminal(store, run.id), "the run to fail")
    assert ended.state == RunState.FAILED
    assert "job_variables.env.COUNT" in (ended.state_message or "")
    assert len(ended.attempts) == 1
    assert ended.attempts[0].provider_ref is None


def _block_state_dir() -> None:
    # A file where the adapter keeps its run files: recording a run fails with an OSError,
    # which the adapter reports as a transient provider error.
    data_dir().mkdir(parents=True, exist_ok=True)
    (data_dir() / "process-runs").write_text("not a directory")


def test_transient_submit_error_is_retried_later_with_the_same_key(
    store: Store, pool: None, plane: ControlPlane
) -> None:
    _block_state_dir()
    run = new_run(store, deploy(store, "pass"))
    plane.tick()
    after = store.get_run(run.id)
    # The failure may have reached the provider, so the attempt and its key are kept: the
    # run stays PENDING and says when it is tried again.
    assert after.state == RunState.PENDING
    assert "will be retried at" in (after.state_message or "")
    [attempt] = after.attempts
    assert attempt.error and "could not record the process run" in attempt.error
    assert attempt.tries == 1
    assert attempt.lease_expires_at is not None
    assert attempt.lease_expires_at > datetime.now(UTC)
    # Not tried again before its backoff has passed.
    plane.tick()
    assert store.get_run(run.id).attempts[0].tries == 1
    later = datetime.now(UTC) + timedelta(minutes=10)
    [claim] = store.expired_claims(now=later)
    assert claim.run.id == run.id
    assert claim.attempt.idempotency_key == attempt.idempotency_key


def test_transient_submit_error_fails_after_the_last_attempt(
    store: Store, pool: None, settings: Settings
) -> None:
    _block_state_dir()
    plane = ControlPlane(store, settings.model_copy(update={"max_submit_attempts": 1}))
    run = new_run(store, deploy(store, "pass"))
    plane.tick()
    after = store.get_run(run.id)
    assert after.state == RunState.FAILED
    assert "could not record the process run" in (after.state_message or "")


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_stops_the_process(
    store: Store, pool: None, plane: ControlPlane, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    code = (
        "import os, pathlib, time\n"
        "pathlib.Path(os.environ['PID_FILE']).write_text(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    run = new_run(store, deploy(store, code, env={"PID_FILE": str(pid_file)}))
    tick_until(
        plane, lambda: pid_file.exists() and pid_file.read_text(), "the run's process to start"
    )
    pid = int(pid_file.read_text())
    assert alive(pid)

    assert store.cancel_run(run.id).run.state == RunState.CANCELLING
    ended = tick_until(plane, lambda: terminal(store, run.id), "the run to be cancelled")
    assert ended.state == RunState.CANCELLED
    assert ended.state_message == "stopped at the provider"
    assert [h.state for h in ended.history][-2:] == [RunState.CANCELLING, RunState.CANCELLED]
    assert not alive(pid)
    [attempt] = ended.attempts
    assert attempt.cancel_requested_at is not None
    assert attempt.cleaned_up_at is not None
    assert state_files() == []


def test_cancel_before_submission(store: Store, pool: None, plane: ControlPlane) -> None:
    run = new_run(store, deploy(store, "pass"))
    store.cancel_run(run.id)
    plane.tick()
    after = store.get_run(run.id)
    assert after.state == RunState.CANCELLED
    assert after.attempts == []
    assert state_files() == []


# --- concurrency ----------------------------------------------------------------------------


def test_pool_concurrency_limit_one(store: Store, plane: ControlPlane) -> None:
    store.create_pool(
        name="local",
        type="process:push",
        concurrency_limit=1,
        base_job_template=ProcessAdapter.default_template(),
    )
    dep = deploy(store, "import time; time.sleep(0.2)")
    t0 = datetime.now(UTC) - timedelta(seconds=5)
    first = new_run(store, dep, scheduled_time=t0)
    second = new_run(store, dep, scheduled_time=t0 + timedelta(seconds=1))

    def at_most_one_active() -> None:
        runs = [store.get_run(first.id), store.get_run(second.id)]
        assert sum(r.state in ACTIVE for r in runs) <= 1, [r.state for r in runs]
        assert sum(bool(r.attempts) and r.attempts[-1].ended_at is None for r in runs) <= 1

    tick_until(
        plane,
        lambda: store.get_run(first.id).attempts,
        "the first run's claim",
        each=at_most_one_active,
    )
    assert store.get_run(second.id).state == RunState.SCHEDULED
    assert store.get_run(second.id).attempts == []
    tick_until(
        plane, lambda: terminal(store, second.id), "both runs to end", each=at_most_one_active
    )

    a, b = store.get_run(first.id), store.get_run(second.id)
    assert a.state == RunState.CRASHED and b.state == RunState.CRASHED
    assert a.ended_at is not None
    assert b.attempts[0].created_at >= a.ended_at
    assert b.attempts[0].submitted_at is not None
    assert b.attempts[0].submitted_at >= a.ended_at


# --- a run that reports its own end ---------------------------------------------------------


def test_cleanup_after_the_run_reported_its_end(
    store: Store, pool: None, plane: ControlPlane, tmp_path: Path
) -> None:
    env_file, release = tmp_path / "env.json", tmp_path / "release"
    code = (
        "import json, os, pathlib\n"
        "pathlib.Path(os.environ['ENV_FILE']).write_text(json.dumps(dict(os.environ)))\n"
        + WAIT_FOR_RELEASE
    )
    run = new_run(
        store, deploy(store, code, env={"ENV_FILE": str(env_file), "RELEASE": str(release)})
    )
    tick_until(plane, env_file.exists, "the run's process to start")

    # The process got its run's id, the API URL and a token the server accepts for this run,
    # and none of the control plane's own SKYLANE_* settings.
    env = json.loads(env_file.read_text())
    assert env["SKYLANE_RUN_ID"] == str(run.id)
    assert env["SKYLANE_API_URL"] == "http://127.0.0.1:4200"
    parsed = parse_run_token(env["SKYLANE_RUN_TOKEN"])
    assert parsed is not None and parsed[0] == run.id
    assert store.verify_run_token(run.id, parsed[1]) is True
    assert not {k for k in env if k.startswith("SKYLANE_")} - {
        "SKYLANE_RUN_ID",
        "SKYLANE_API_URL",
        "SKYLANE_RUN_TOKEN",
    }

    # The runtime reports its states while the process still runs.
    store.set_run_state(run.id, RunState.RUNNING)
    store.set_run_state(run.id, RunState.COMPLETED, message="done")
    plane.tick()
    current = store.get_run(run.id)
    assert current.attempts[0].cleaned_up_at is None  # its process has not ended yet
    assert state_files() != []

    release.touch()
    ended = tick_until(plane, lambda: cleaned_up(store, run.id), "the cleanup")
    assert ended.state == RunState.COMPLETED
    assert ended.state_message == "done"
    assert [h.state for h in ended.history] == [
        RunState.SCHEDULED,
        RunState.PENDING,
        RunState.RUNNING,
        RunState.COMPLETED,
    ]
    assert ended.attempts[0].provider_ended_at is not None
    assert state_files() == []
    assert store.watched_submissions() == []


# --- recovery of lost claims ----------------------------------------------------------------


def test_lost_claim_of_a_finished_run_is_not_submitted(
    store: Store, pool: None, plane: ControlPlane, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    run = new_run(
        store,
        deploy(
            store,
            "import os, pathlib; pathlib.Path(os.environ['MARKER']).touch()",
            env={"MARKER": str(marker)},
        ),
    )
    # A dispatcher claimed the run and died before submitting it (a lease of 0 s has already
    # run out); meanwhile an operator marked the stuck run FAILED.
    [claim] = store.claim_due_runs(claimed_by="dead-dispatcher", lease_seconds=0)
    assert claim.run.id == run.id
    store.set_run_state(run.id, RunState.FAILED, message="given up by the operator")
    for _ in range(3):
        plane.tick()
    after = store.get_run(run.id)
    assert after.state == RunState.FAILED
    assert after.attempts[0].provider_ref is None, "the finished run was submitted again"
    assert store.expired_claims() == []
    assert not marker.exists()

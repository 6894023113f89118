"""`skylane run execute` in a real subprocess, against the real API served over loopback:
what the runtime reports, ships and hides."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from skylane.adapters.process import ProcessAdapter
from skylane.api.app import create_app
from skylane.models import Run, RunState
from skylane.settings import Settings
from skylane.store.repository import Store
from skylane.testing.git_repos import GitRemote
from tests.e2e.conftest import free_port

FLOWS = """
import asyncio, logging, os, subprocess, sys, time
log = logging.getLogger("flows.sample")

def greet(name: str, times: int = 1) -> None:
    for i in range(times):
        log.info("hello %s %d", name, i)
    print("stdout line from print")
    print("stderr line from print", file=sys.stderr)
    subprocess.run([sys.executable, "-c", "print('line from a child process')"], check=True)
    print("token visible:", "SKYLANE_RUN_TOKEN" in os.environ)

def boom() -> None:
    raise RuntimeError("the flow broke on purpose")

def sleepy() -> None:
    log.info("sleeping")
    time.sleep(60)

def stubborn() -> None:
    try:
        time.sleep(60)
    except Exception:
        log.info("a flow's own except Exception must not swallow the termination")
        time.sleep(60)

async def coro(n: int) -> None:
    await asyncio.sleep(0.01)
    log.info("async flow got %d", n)

def quits() -> None:
    sys.exit(3)
"""


@pytest.fixture
def live_api(store: Store) -> Iterator[str]:
    """The API app served by uvicorn on a loopback port, in a thread."""
    port = free_port()
    app = create_app(Settings(), store)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    (directory / "flows").mkdir(parents=True)
    (directory / "flows" / "sample.py").write_text(FLOWS)
    return directory


def claimed_run(store: Store, function: str, parameters: dict | None = None) -> tuple[Run, str]:
    """A run of `flows/sample.py:<function>` claimed as the dispatcher would: PENDING, with
    its own token."""
    store.create_pool(
        name="local", type="process:push", base_job_template=ProcessAdapter.default_template()
    )
    deployment = store.create_deployment(
        flow_name=function,
        name="test",
        pool_name="local",
        entrypoint=f"flows/sample.py:{function}",
    )
    store.create_run(deployment, parameters=parameters or {}, job_variables={})
    (claim,) = store.claim_due_runs(claimed_by="test", lease_seconds=60)
    assert claim.run_token
    return claim.run, claim.run_token


def start_runtime(api_url: str, run: Run, token: str, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLANE_")}
    env.update(
        {
            "SKYLANE_RUN_ID": str(run.id),
            "SKYLANE_API_URL": api_url,
            "SKYLANE_RUN_TOKEN": token,
            "SKYLANE_LOG_BATCH_SECONDS": "0.1",
            "SKYLANE_HEARTBEAT_SECONDS": "0.2",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "skylane", "run", "execute"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(store: Store, run: Run, state: RunState, timeout: float = 20) -> Run:
    deadline = time.monotonic() + timeout
    while (current := store.get_run(run.id)).state != state:
        assert time.monotonic() < deadline, f"run stayed {current.state}, wanted {state}"
        time.sleep(0.05)
    return current


def messages(store: Store, run: Run) -> list[str]:
    return [line.message for line in store.read_logs(run.id)]


def test_completed_run_ships_every_kind_of_output(
    store: Store, live_api: str, flows_dir: Path
) -> None:
    run, token = claimed_run(store, "greet", {"name": "ada", "times": 2})

    process = start_runtime(live_api, run, token, flows_dir)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 0, err
    final = store.get_run(run.id)
    assert final.state == RunState.COMPLETED
    assert [h.state for h in final.history][-2:] == [RunState.RUNNING, RunState.COMPLETED]
    logs = messages(store, run)
    assert any("hello ada 1" in m for m in logs)
    for line in ("stdout line from print", "stderr line from print", "line from a child process"):
        assert line in logs
    # The flow cannot read its run token from the environment.
    assert "token visible: False" in logs
    # Output still reaches the original streams, so the provider's log view works too.
    assert "stdout line from print" in out and "stderr line from print" in err
    streams = {line.message: line.stream for line in store.read_logs(run.id)}
    assert streams["stderr line from print"] == "stderr"
    assert streams["line from a child process"] == "stdout"


def test_exception_fails_the_run_with_its_traceback(
    store: Store, live_api: str, flows_dir: Path
) -> None:
    run, token = claimed_run(store, "boom")

    process = start_runtime(live_api, run, token, flows_dir)
    process.communicate(timeout=60)

    assert process.returncode == 1
    final = store.get_run(run.id)
    assert final.state == RunState.FAILED
    assert "Traceback" in final.state_message
    assert "RuntimeError: the flow broke on purpose" in final.state_message
    assert any("the flow broke on purpose" in m for m in messages(store, run))


def test_sigterm_without_a_cancel_is_a_crash(store: Store, live_api: str, flows_dir: Path) -> None:
    run, token = claimed_run(store, "stubborn")
    process = start_runtime(live_api, run, token, flows_dir)
    wait_for(store, run, RunState.RUNNING)
    # While the flow sleeps, the runtime keeps heartbeating (every 0.2 s here).
    deadline = time.monotonic() + 10
    while store.get_run(run.id).last_heartbeat_at is None:
        assert time.monotonic() < deadline, "no heartbeat while the flow ran"
        time.sleep(0.05)

    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)

    final = store.get_run(run.id)
    assert final.state == RunState.CRASHED
    assert "SIGTERM" in final.state_message
    assert process.returncode == 128 + signal.SIGTERM


def test_sigterm_during_a_cancel_is_cancelled(store: Store, live_api: str, flows_dir: Path) -> None:
    run, token = claimed_run(store, "sleepy")
    process = start_runtime(live_api, run, token, flows_dir)
    deadline = time.monotonic() + 20
    while not any("sleeping" in m for m in messages(store, run)):  # the flow is in its sleep
        assert time.monotonic() < deadline, "the flow never started sleeping"
        time.sleep(0.05)
    store.cancel_run(run.id)

    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)

    assert store.get_run(run.id).state == RunState.CANCELLED, err


def test_sigterm_the_moment_the_run_is_running_is_still_reported(
    store: Store, live_api: str, flows_dir: Path
) -> None:
    # The signal may land before the flow even started: it must be reported all the same.
    run, token = claimed_run(store, "sleepy")
    process = start_runtime(live_api, run, token, flows_dir)
    wait_for(store, run, RunState.RUNNING, timeout=20)
    store.cancel_run(run.id)

    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)

    assert store.get_run(run.id).state == RunState.CANCELLED, err


def test_async_flow_and_parameter_conversion(store: Store, live_api: str, flows_dir: Path) -> None:
    run, token = claimed_run(store, "coro", {"n": 7})

    process = start_runtime(live_api, run, token, flows_dir)
    process.communicate(timeout=60)

    assert store.get_run(run.id).state == RunState.COMPLETED
    assert any("async flow got 7" in m for m in messages(store, run))


def test_parameters_the_function_rejects_fail_naming_the_parameter(
    store: Store, live_api: str, flows_dir: Path
) -> None:
    run, token = claimed_run(store, "coro", {"n": "not a number"})

    process = start_runtime(live_api, run, token, flows_dir)
    process.communicate(timeout=60)

    final = store.get_run(run.id)
    assert final.state == RunState.FAILED
    assert "parameters.n" in final.state_message


def test_missing_entrypoint_file_fails_with_the_path(
    store: Store, live_api: str, tmp_path: Path
) -> None:
    run, token = claimed_run(store, "greet", {"name": "x"})

    process = start_runtime(live_api, run, token, tmp_path)  # no flows/ here
    process.communicate(timeout=60)

    final = store.get_run(run.id)
    assert final.state == RunState.FAILED
    assert "flows/sample.py" in final.state_message


def test_sys_exit_with_a_code_fails_the_run(store: Store, live_api: str, flows_dir: Path) -> None:
    run, token = claimed_run(store, "quits")

    process = start_runtime(live_api, run, token, flows_dir)
    process.communicate(timeout=60)

    assert store.get_run(run.id).state == RunState.FAILED


def test_a_run_that_is_already_over_is_not_executed(
    store: Store, live_api: str, flows_dir: Path
) -> None:
    run, token = claimed_run(store, "greet", {"name": "x"})
    store.set_run_state(run.id, RunState.CANCELLED)

    process = start_runtime(live_api, run, token, flows_dir)
    _, err = process.communicate(timeout=60)

    assert store.get_run(run.id).state == RunState.CANCELLED
    # The run is over, so its token no longer opens anything: the runtime stops at once.
    assert process.returncode != 0
    assert "cannot start run" in err and "token" in err
    assert messages(store, run) == []


def test_without_its_environment_it_explains_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLANE_")}
    result = subprocess.run(
        [sys.executable, "-m", "skylane", "run", "execute"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "SKYLANE_RUN_ID" in result.stderr


def test_git_sourced_run_checks_out_the_pinned_commit_and_records_it(
    store: Store, live_api: str, tmp_path: Path
) -> None:
    # The remote: a bare repository whose main moves on after the deployment pinned a commit.
    remote = GitRemote.create(
        tmp_path, {"flows/sample.py": "def greet():\n    print('from commit one')\n"}
    )
    pinned = remote.head
    remote.push({"flows/sample.py": "def greet():\n    print('from commit two')\n"}, "two")

    run, token = claimed_run(store, "greet")
    store.update_deployment(
        run.deployment_id,
        {"source": {"git": remote.url, "ref": "main", "commit": pinned}},
    )
    empty = tmp_path / "image-workdir"
    empty.mkdir()
    process = start_runtime(live_api, run, token, empty)
    _, err = process.communicate(timeout=60)

    assert process.returncode == 0, err
    final = store.get_run(run.id)
    assert final.state == RunState.COMPLETED
    assert final.source_commit == pinned
    logs = messages(store, run)
    assert "from commit one" in logs and "from commit two" not in logs


def test_git_source_that_cannot_be_fetched_fails_the_run_with_the_reason(
    store: Store, live_api: str, tmp_path: Path
) -> None:
    run, token = claimed_run(store, "greet")
    store.update_deployment(
        run.deployment_id,
        {"source": {"git": str(tmp_path / "missing.git"), "credentials": {"env": "GIT_TOKEN"}}},
    )
    process = start_runtime(live_api, run, token, tmp_path)
    process.communicate(timeout=60)
    final = store.get_run(run.id)
    assert final.state == RunState.FAILED
    assert "GIT_TOKEN" in (final.state_message or "")
    assert final.source_commit is None

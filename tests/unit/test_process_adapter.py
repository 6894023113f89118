"""The process adapter, with real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from skylane.adapters import process as process_module
from skylane.adapters.base import ProviderState, ProviderStatus, RunContext
from skylane.adapters.process import ProcessAdapter, ProcessRequest, _parse_ref
from skylane.errors import InvalidInput, PermanentProviderError, ProviderNotFound
from skylane.models import Pool
from skylane.settings import Settings

PY = sys.executable
TOKEN = "run-token-s3cr3t-value"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKYLANE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def make_pool() -> Pool:
    now = datetime.now(UTC)
    return Pool(
        id=uuid.uuid4(),
        name="local",
        type="process:push",
        base_job_template=ProcessAdapter.default_template(),
        concurrency_limit=4,
        created_at=now,
        updated_at=now,
    )


def make_adapter(grace: float = 5.0) -> ProcessAdapter:
    return ProcessAdapter(make_pool(), Settings(cancel_grace_seconds=grace))


def make_context() -> RunContext:
    return RunContext(
        run_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        flow_name="etl",
        deployment_name="nightly",
        pool_name="local",
        entrypoint="flows/etl.py:etl",
        api_url="http://127.0.0.1:4200",
        run_token=TOKEN,
        idempotency_key="run-1-attempt-1",
    )


def py_request(adapter: ProcessAdapter, code: str, **config: object) -> ProcessRequest:
    return adapter.render({"command": [PY, "-c", code], **config}, make_context())


def wait_for(adapter: ProcessAdapter, ref: str, done, timeout: float = 5.0) -> ProviderState:
    deadline = time.monotonic() + timeout
    while True:
        state = adapter.statuses([ref])[ref]
        if done(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def wait_ended(adapter: ProcessAdapter, ref: str, timeout: float = 5.0) -> ProviderState:
    return wait_for(adapter, ref, lambda s: s.status.ended, timeout)


# --- template and render ---------------------------------------------------------------------


def test_default_template_is_prefect_process_shape() -> None:
    template = ProcessAdapter.default_template()
    config, variables = template["job_configuration"], template["variables"]
    jsonschema.Draft202012Validator.check_schema(variables)
    assert variables["type"] == "object"
    names = {"command", "env", "labels", "name", "working_dir", "stream_output"}
    assert set(config) == names == set(variables["properties"])
    for name in names:
        assert config[name] == "{{ " + name + " }}"
        prop = variables["properties"][name]
        assert prop["title"] and prop["description"] and prop["type"]
    assert variables["properties"]["stream_output"]["default"] is True
    assert variables["properties"]["env"]["default"] == {}
    jsonschema.validate({"env": {"A": "1"}, "stream_output": False}, variables)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"env": {"A": 1}}, variables)


def test_render_defaults_to_runtime_command() -> None:
    request = make_adapter().render({"command": None, "env": None}, make_context())
    assert request.argv == [PY, "-m", "skylane.runtime"]
    assert request.working_dir is None
    assert request.stream_output is True
    assert request.env == make_context().runtime_env()
    assert request.labels["skylane-deployment"] == "nightly"


def test_render_splits_command_string_and_merges_env_and_labels() -> None:
    request = make_adapter().render(
        {
            "command": "python -m 'my flows' --flag \"a b\"",
            "env": {"A": "1", "DROPPED": None, "SKYLANE_RUN_TOKEN": "user-value"},
            "labels": {"team": "data"},
            "name": "etl-run",
            "working_dir": "/does/not/exist/yet",  # render does no I/O: no check here
            "stream_output": False,
        },
        make_context(),
    )
    assert request.argv == ["python", "-m", "my flows", "--flag", "a b"]
    assert request.env["A"] == "1"
    assert "DROPPED" not in request.env
    assert request.env["SKYLANE_RUN_TOKEN"] == TOKEN  # the runtime env always wins
    assert request.env["SKYLANE_RUN_ID"] == "12345678-1234-5678-1234-567812345678"
    assert request.labels["team"] == "data"
    assert request.labels["skylane-pool"] == "local"
    assert request.working_dir == "/does/not/exist/yet"
    assert request.name == "etl-run"
    assert request.stream_output is False


def test_render_rejects_unbalanced_quotes() -> None:
    with pytest.raises(InvalidInput) as info:
        make_adapter().render({"command": "python -c 'oops"}, make_context())
    assert info.value.field == "job_variables.command"


def test_request_masks_the_run_token() -> None:
    request = make_adapter().render({"env": {"VISIBLE": "yes"}}, make_context())
    assert TOKEN not in repr(request)
    assert TOKEN not in str(request)
    assert "VISIBLE" in repr(request)
    redacted = request.redacted()
    assert redacted["env"]["SKYLANE_RUN_TOKEN"] == "****"
    assert redacted["env"]["VISIBLE"] == "yes"
    assert TOKEN not in json.dumps(redacted)
    assert request.env["SKYLANE_RUN_TOKEN"] == TOKEN  # the real value is still there


# --- submit, statuses ------------------------------------------------------------------------


def test_submit_runs_to_success(home: Path) -> None:
    adapter = make_adapter()
    ref = adapter.submit(py_request(adapter, "import time; time.sleep(0.5)"), "ok-1")
    host, pid, key = _parse_ref(ref)
    assert key == "ok-1" and pid > 0 and host
    state_file = home / "process-runs" / "ok-1.json"
    state = json.loads(state_file.read_text())
    assert state["pid"] == pid and state["start_time"] and state["created_at"]
    assert state["argv"][-1] == "import time; time.sleep(0.5)"
    assert adapter.statuses([ref])[ref].status == ProviderStatus.RUNNING
    final = wait_ended(adapter, ref)
    assert final == ProviderState(ProviderStatus.SUCCEEDED, exit_code=0)


def test_failing_command_reports_its_exit_code() -> None:
    adapter = make_adapter()
    ref = adapter.submit(py_request(adapter, "raise SystemExit(3)"), "fail-1")
    final = wait_ended(adapter, ref)
    assert final.status == ProviderStatus.FAILED
    assert final.exit_code == 3


def test_same_key_starts_exactly_one_process(tmp_path: Path) -> None:
    adapter = make_adapter()
    marker = tmp_path / "marker.txt"
    code = f"open({str(marker)!r}, 'a').write('ran\\n')"
    ref1 = adapter.submit(py_request(adapter, code), "once-1")
    ref2 = adapter.submit(py_request(adapter, code), "once-1")
    ref3 = make_adapter().submit(py_request(adapter, code), "once-1")
    assert ref1 == ref2 == ref3
    assert wait_ended(adapter, ref1).status == ProviderStatus.SUCCEEDED
    time.sleep(0.2)
    assert marker.read_text().splitlines() == ["ran"]


def test_restart_recovers_ref_and_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = make_adapter()
    ref = adapter.submit(py_request(adapter, "raise SystemExit(7)"), "restart-1")
    wait_ended(adapter, ref)
    # A control-plane restart: no adapter instance and no Popen handles survive.
    monkeypatch.setattr(process_module, "_PROCESSES", {})
    fresh = make_adapter()
    assert fresh.find("restart-1") == ref
    assert fresh.find("never-submitted") is None
    state = fresh.statuses([ref])[ref]
    assert (state.status, state.exit_code) == (ProviderStatus.FAILED, 7)


def test_find_adopts_a_run_started_just_before_a_crash(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = make_adapter()
    ref = adapter.submit(py_request(adapter, "import time; time.sleep(2)"), "crash-1")
    # Simulate a crash after the process started but before its pid was recorded.
    state_file = home / "process-runs" / "crash-1.json"
    state = json.loads(state_file.read_text())
    state.update(pid=None, start_time=None, ref=None)
    state_file.write_text(json.dumps(state))
    monkeypatch.setattr(process_module, "_PROCESSES", {})
    fresh = make_adapter()
    assert fresh.find("crash-1") == ref
    assert fresh.submit(py_request(adapter, "raise SystemExit(1)"), "crash-1") == ref
    assert fresh.statuses([ref])[ref].status == ProviderStatus.RUNNING
    fresh.cancel(ref)
    assert wait_ended(fresh, ref).status == ProviderStatus.STOPPED


def test_statuses_batch_with_unknown_and_bad_refs() -> None:
    adapter = make_adapter()
    ref = adapter.submit(py_request(adapter, "pass"), "batch-1")
    unknown = f"{_parse_ref(ref)[0]}:999999:nobody"
    result = adapter.statuses([ref, unknown, "garbage"])
    assert set(result) == {ref, unknown, "garbage"}
    assert result[unknown].status == ProviderStatus.NOT_FOUND
    assert result["garbage"].status == ProviderStatus.NOT_FOUND
    assert wait_ended(adapter, ref).status == ProviderStatus.SUCCEEDED


def test_supervisor_killed_is_stopped_without_exit_code() -> None:
    adapter = make_adapter()
    ref = adapter.submit(py_request(adapter, "import time; time.sleep(30)"), "sigkill-1")
    _, pid, _ = _parse_ref(ref)
    assert wait_for(adapter, ref, lambda s: True).status == ProviderStatus.RUNNING
    os.killpg(pid, signal.SIGKILL)
    final = wait_ended(adapter, ref)
    assert final.status == ProviderStatus.STOPPED
    assert final.exit_code is None
    assert final.message


# --- cancel ----------------------------------------------------------------------------------


def test_cancel_stops_a_sleeping_process() -> None:
    adapter = make_adapter()
    ref = adapter.submit(py_request(adapter, "import time; time.sleep(30)"), "cancel-1")
    time.sleep(0.3)
    assert adapter.statuses([ref])[ref].status == ProviderStatus.RUNNING
    adapter.cancel(ref)
    final = wait_ended(adapter, ref)
    assert final.status == ProviderStatus.STOPPED
    assert final.exit_code == -signal.SIGTERM
    adapter.cancel(ref)  # idempotent: already ended is a no-op


def test_cancel_right_after_submit_stops_the_run() -> None:
    adapter = make_adapter(grace=10.0)
    ref = adapter.submit(py_request(adapter, "import time; time.sleep(30)"), "cancel-early")
    adapter.cancel(ref)
    final = wait_ended(adapter, ref, timeout=4.0)
    assert final.status == ProviderStatus.STOPPED
    assert final.exit_code in (None, -signal.SIGTERM)


def test_cancel_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    adapter = make_adapter(grace=0.5)
    ready = tmp_path / "ready"
    code = (
        "import signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(30)"
    )
    ref = adapter.submit(py_request(adapter, code), "stubborn-1")
    deadline = time.monotonic() + 5
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    adapter.cancel(ref)  # does not block for the grace
    assert time.monotonic() - started < 0.3
    time.sleep(0.3)
    assert adapter.statuses([ref])[ref].status == ProviderStatus.RUNNING  # SIGTERM ignored
    final = wait_ended(adapter, ref)
    assert final.status == ProviderStatus.STOPPED
    assert final.exit_code == -signal.SIGKILL


def test_cancel_unknown_ref_raises() -> None:
    adapter = make_adapter()
    with pytest.raises(ProviderNotFound):
        adapter.cancel("host:12345:nothing-here")


# --- errors ----------------------------------------------------------------------------------


def test_missing_executable_is_permanent(home: Path) -> None:
    adapter = make_adapter()
    request = adapter.render({"command": "no-such-program-skylane --x"}, make_context())
    with pytest.raises(PermanentProviderError) as info:
        adapter.submit(request, "missing-exe")
    assert info.value.field == "command"
    assert "no-such-program-skylane" in str(info.value)
    assert adapter.find("missing-exe") is None


def test_missing_working_dir_is_permanent(tmp_path: Path) -> None:
    adapter = make_adapter()
    missing = tmp_path / "nowhere"
    with pytest.raises(PermanentProviderError) as info:
        adapter.submit(py_request(adapter, "pass", working_dir=str(missing)), "missing-dir")
    assert info.value.field == "working_dir"
    assert str(missing) in str(info.value)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(PermanentProviderError, match="not a directory"):
        adapter.submit(py_request(adapter, "pass", working_dir=str(a_file)), "file-dir")


def test_invalid_key_raises() -> None:
    adapter = make_adapter()
    request = py_request(adapter, "pass")
    for key in ("../escape", "a/b", "", "has space", ".."):
        with pytest.raises(ValueError):
            adapter.submit(request, key)
    with pytest.raises(ValueError):
        adapter.find("a/b")


# --- environment, working dir, logs, cleanup -------------------------------------------------


def test_env_reaches_the_run_but_control_plane_secrets_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYLANE_API_KEY", "sk_admin_secret")
    monkeypatch.setenv("SKYLANE_DATABASE_URL", "postgresql://user:pw@db/skylane")
    monkeypatch.setenv("UNRELATED_PARENT_VAR", "kept")
    adapter = make_adapter()
    out = tmp_path / "env.json"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    ref = adapter.submit(py_request(adapter, code, env={"MY_VAR": "hello"}), "env-1")
    assert wait_ended(adapter, ref).status == ProviderStatus.SUCCEEDED
    env = json.loads(out.read_text())
    assert env["MY_VAR"] == "hello"
    assert env["UNRELATED_PARENT_VAR"] == "kept"
    assert env["SKYLANE_RUN_TOKEN"] == TOKEN
    assert env["SKYLANE_RUN_ID"] == "12345678-1234-5678-1234-567812345678"
    assert "SKYLANE_API_KEY" not in env
    assert "SKYLANE_DATABASE_URL" not in env
    assert "SKYLANE_HOME" not in env


def test_relative_working_dir_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path)
    adapter = make_adapter()
    code = "import os; open('where.txt', 'w').write(os.getcwd())"
    ref = adapter.submit(py_request(adapter, code, working_dir="proj"), "cwd-1")
    assert wait_ended(adapter, ref).status == ProviderStatus.SUCCEEDED
    assert (tmp_path / "proj" / "where.txt").read_text() == str(tmp_path / "proj")


def test_logs_return_stdout_and_stderr_lines() -> None:
    adapter = make_adapter()
    code = "import sys; print('hello'); print('world'); print('oops', file=sys.stderr)"
    before = datetime.now(UTC) - timedelta(seconds=5)
    ref = adapter.submit(py_request(adapter, code), "logs-1")
    assert wait_ended(adapter, ref).status == ProviderStatus.SUCCEEDED
    lines = adapter.logs(ref)
    assert [(line.stream, line.message) for line in lines] == [
        ("stdout", "hello"),
        ("stdout", "world"),
        ("stderr", "oops"),
    ]
    assert all(line.timestamp > before for line in lines)
    assert adapter.logs(ref, since=datetime.now(UTC) + timedelta(seconds=60)) == []
    assert len(adapter.logs(ref, since=before)) == 3


def test_cleanup_removes_files_then_not_found(home: Path) -> None:
    adapter = make_adapter()
    ref = adapter.submit(py_request(adapter, "print('x')"), "clean-1")
    assert wait_ended(adapter, ref).status == ProviderStatus.SUCCEEDED
    state_dir = home / "process-runs"
    assert {p.name for p in state_dir.glob("clean-1.*")} == {
        "clean-1.json",
        "clean-1.exit",
        "clean-1.out",
        "clean-1.err",
    }
    adapter.cleanup(ref)
    assert list(state_dir.glob("clean-1.*")) == []
    assert adapter.statuses([ref])[ref].status == ProviderStatus.NOT_FOUND
    assert adapter.find("clean-1") is None
    adapter.cleanup(ref)  # again: nothing left, still fine


def test_state_dir_override(tmp_path: Path) -> None:
    adapter = ProcessAdapter(make_pool(), Settings(), state_dir=tmp_path / "custom")
    ref = adapter.submit(py_request(adapter, "pass"), "custom-1")
    assert (tmp_path / "custom" / "custom-1.json").exists()
    assert wait_ended(adapter, ref).status == ProviderStatus.SUCCEEDED


def test_supervisor_records_signal_exit(tmp_path: Path) -> None:
    """The supervisor on its own: a child killed by signal S is -S in the file, 128+S as
    exit status."""
    import subprocess

    exit_file = tmp_path / "run.exit"
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    result = subprocess.run(
        [PY, "-I", str(process_module.SUPERVISOR), "--exit-file", str(exit_file), "--"]
        + [PY, "-c", code],
        timeout=10,
    )
    assert result.returncode == 128 + signal.SIGTERM
    data = json.loads(exit_file.read_text())
    assert data["exit_code"] == -signal.SIGTERM
    assert datetime.fromisoformat(data["ended_at"]).tzinfo is not None

"""The whole path of a run, driven through the CLI against a real server (SQLite and
PostgreSQL): server, pool, deployment, run."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import UUID_RE, Server

# For tests whose point is checked before the store is involved, or that take the same path as
# the completing run (tested on both databases, as are the API and the store): CI time.
SQLITE_ONLY = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


def test_run_completes_with_the_flows_own_log_lines(project: Server) -> None:
    project.cli(
        "deployment",
        "create",
        "e2e",
        "--entrypoint",
        "flows/hello.py:hello",
        "--pool",
        "local",
        "--param",
        "name=e2e",
        check=True,
    )

    watched = project.cli("deployment", "run", "hello/e2e", "--param", "count=3", "--watch")

    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "hello e2e number 3" in watched.stdout
    assert "printed by the flow for e2e" in watched.stdout
    assert "COMPLETED" in watched.stdout
    run_id = UUID_RE.search(watched.stdout).group(0)
    run = project.cli_json("run", "inspect", run_id)
    assert run["state"] == "COMPLETED"
    assert [h["state"] for h in run["history"]] == ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"]
    assert run["parameters"] == {"name": "e2e", "count": 3}
    logs = project.cli("run", "logs", run_id, check=True).stdout
    assert "hello e2e number 1" in logs and "printed by the flow for e2e" in logs


@SQLITE_ONLY
def test_failing_flow_is_failed_with_its_traceback(project: Server) -> None:
    project.cli(
        "deployment",
        "create",
        "e2e",
        "--entrypoint",
        "flows/broken.py:broken",
        "--pool",
        "local",
        check=True,
    )

    watched = project.cli("deployment", "run", "broken/e2e", "--watch")

    assert watched.returncode == 1
    run_id = UUID_RE.search(watched.stdout).group(0)
    run = project.cli_json("run", "inspect", run_id)
    assert run["state"] == "FAILED"
    assert "ZeroDivisionError" in run["state_message"]
    assert "Traceback" in run["state_message"]
    assert "ZeroDivisionError" in watched.stdout + watched.stderr


def test_cancelling_a_sleeping_flow_ends_cancelled(project: Server) -> None:
    project.cli(
        "deployment",
        "create",
        "e2e",
        "--entrypoint",
        "flows/sleepy.py:sleepy",
        "--pool",
        "local",
        check=True,
    )
    run_id = project.cli_json("deployment", "run", "sleepy/e2e")["id"]  # type: ignore[index]
    project.wait_for_state(run_id, {"RUNNING"})

    project.cli("run", "cancel", run_id, check=True)

    run = project.wait_for_state(run_id, {"CANCELLED", "CRASHED", "FAILED", "COMPLETED"})
    assert run["state"] == "CANCELLED"
    assert "CANCELLING" in [h["state"] for h in run["history"]]
    assert "woke up" not in project.cli("run", "logs", run_id, check=True).stdout


@SQLITE_ONLY
def test_wrong_parameter_type_is_rejected_naming_the_parameter(project: Server) -> None:
    project.cli(
        "deployment",
        "create",
        "e2e",
        "--entrypoint",
        "flows/hello.py:hello",
        "--pool",
        "local",
        check=True,
    )

    result = project.cli("deployment", "run", "hello/e2e", "--param", "count=many")

    assert result.returncode == 1
    assert "count" in result.stderr
    assert project.cli_json("run", "ls") == []


@SQLITE_ONLY
def test_no_key_gets_401(project: Server) -> None:
    assert httpx.get(f"{project.url}/api/pools").status_code == 401
    assert httpx.get(f"{project.url}/health").status_code == 200

    result = project.cli("pool", "ls", key=False)

    assert result.returncode == 1
    assert "API key" in result.stderr


@SQLITE_ONLY
def test_process_deployment_runs_where_it_was_registered(project: Server) -> None:
    # The server runs in the project dir; this project lives somewhere else entirely.
    elsewhere = project.workdir.parent / "elsewhere"
    (elsewhere / "pipelines").mkdir(parents=True)
    (elsewhere / "pipelines" / "report.py").write_text(
        "def report() -> None:\n    print('report written from elsewhere')\n"
    )
    project.cli(
        "deployment",
        "create",
        "e2e",
        "--entrypoint",
        "pipelines/report.py:report",
        "--pool",
        "local",
        check=True,
        cwd=elsewhere,
    )

    watched = project.cli("deployment", "run", "report/e2e", "--watch")

    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "report written from elsewhere" in watched.stdout
    deployment = project.cli_json("deployment", "inspect", "report/e2e")
    assert deployment["job_variables"]["working_dir"] == str(elsewhere.resolve())

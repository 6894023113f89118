"""`skylane deployment schedule ...`, `deployment create --cron`, `deployment inspect` and
`run ls` with schedules, through the CLI against the in-process API (both databases), and the
schedule routes' HTTP errors."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from skylane.models import RunState
from skylane.store.repository import Store
from tests.unit.test_cli import FLOW, cli_api, invoke  # noqa: F401  (cli_api is a fixture)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def pool_and_flow(cli_api: TestClient, runner: CliRunner, tmp_path: Path) -> Path:  # noqa: F811
    (tmp_path / "etl.py").write_text(FLOW)
    assert invoke(runner, "pool", "create", "local", "--type", "process:push").exit_code == 0
    return tmp_path


def create(runner: CliRunner, base: Path, *extra: str) -> Any:
    return invoke(
        runner,
        "deployment",
        "create",
        "nightly",
        "--entrypoint",
        "etl.py:etl",
        "--pool",
        "local",
        "--base-dir",
        str(base),
        *extra,
    )


def schedules(runner: CliRunner) -> list[dict[str, Any]]:
    result = invoke(runner, "deployment", "schedule", "ls", "etl/nightly", "-o", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_schedule_commands(runner: CliRunner, pool_and_flow: Path, store: Store) -> None:
    created = create(runner, pool_and_flow, "--cron", "30 2 * * *", "--timezone", "Europe/Berlin")
    assert created.exit_code == 0, created.output
    assert "cron 30 2 * * *" in created.stdout and "Europe/Berlin" in created.stdout
    [daily] = schedules(runner)
    assert daily["cron"] == "30 2 * * *" and daily["timezone"] == "Europe/Berlin"
    # 02:30 in Berlin is 01:30 UTC in winter (the next times are in late November).
    assert len(daily["next_times"]) == 5
    assert all(t.endswith("01:30:00Z") for t in daily["next_times"][:3])

    added = invoke(
        runner,
        "deployment",
        "schedule",
        "add",
        "etl/nightly",
        "--interval",
        "600",
        "--param",
        "name=hourly",
        "--catchup",
        "none",
    )
    assert added.exit_code == 0, added.output
    assert "every 600s" in added.stdout
    interval = next(s for s in schedules(runner) if s["interval_seconds"])
    assert interval["parameters"] == {"name": "hourly"} and interval["catchup"] == "none"

    deployment = store.get_deployment_by_name("etl", "nightly")
    runs = store.list_runs(deployment_id=deployment.id, limit=1000)
    assert {
        r.parameters.get("name") for r in runs if r.schedule_id == uuid.UUID(interval["id"])
    } == {"hourly"}

    inspected = invoke(runner, "deployment", "inspect", "etl/nightly")
    assert inspected.exit_code == 0, inspected.output
    assert "next runs" in inspected.stdout and "every 600s" in inspected.stdout

    # Two schedules: pause needs to be told which one.
    ambiguous = invoke(runner, "deployment", "schedule", "pause", "etl/nightly")
    assert ambiguous.exit_code == 1 and "has 2 schedules" in ambiguous.stderr
    paused = invoke(runner, "deployment", "schedule", "pause", "etl/nightly", interval["id"][:8])
    assert paused.exit_code == 0, paused.output
    assert not next(s for s in schedules(runner) if s["id"] == interval["id"])["active"]
    waiting = store.list_runs(deployment_id=deployment.id, states=[RunState.SCHEDULED], limit=1000)
    assert all(r.schedule_id != uuid.UUID(interval["id"]) for r in waiting)
    resumed = invoke(runner, "deployment", "schedule", "resume", "etl/nightly", interval["id"])
    assert resumed.exit_code == 0, resumed.output
    assert next(s for s in schedules(runner) if s["id"] == interval["id"])["active"]

    deleted = invoke(runner, "deployment", "schedule", "delete", "etl/nightly", "--all", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert schedules(runner) == []
    assert store.list_runs(deployment_id=deployment.id, limit=1000) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "61 * * * *"], "error: schedules[0].cron"),
        (["--cron", "0 9 * * *", "--timezone", "Mars/Olympus"], "error: schedules[0].timezone"),
        (["--cron", "0 9 * * *", "--interval", "60"], "error: --interval"),
        (["--timezone", "UTC"], "error: --timezone"),
        (["--rrule", "FREQ=MINUTELY"], "error: schedules[0].rrule"),
    ],
)
def test_bad_schedules_are_refused_and_nothing_is_created(
    runner: CliRunner, pool_and_flow: Path, store: Store, args: list[str], message: str
) -> None:
    result = create(runner, pool_and_flow, *args)
    assert result.exit_code == 1
    assert message in result.stderr, result.stderr
    assert store.list_deployments() == []


def test_late_runs_are_shown(runner: CliRunner, pool_and_flow: Path, store: Store) -> None:
    assert create(runner, pool_and_flow).exit_code == 0
    deployment = store.get_deployment_by_name("etl", "nightly")
    # The pool is paused, so the overdue run stays unsubmitted: late.
    invoke(runner, "pool", "pause", "local")
    store.create_run(
        deployment,
        parameters={},
        job_variables={},
        scheduled_time=datetime.now(UTC) - timedelta(minutes=3),
    )
    listed = invoke(runner, "run", "ls")
    assert listed.exit_code == 0
    assert "late 3m0" in listed.stdout
    inspected = invoke(runner, "deployment", "inspect", "etl/nightly")
    assert "late run" in inspected.stdout and "3m0" in inspected.stdout


def test_schedule_routes_check_their_input(
    api: TestClient, store: Store, pool_and_flow: Path, runner: CliRunner
) -> None:
    assert create(runner, pool_and_flow).exit_code == 0
    deployment = store.get_deployment_by_name("etl", "nightly")
    url = f"/api/deployments/{deployment.id}/schedules"
    bad = api.post(url, json={"interval_seconds": "often"})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "interval_seconds"
    unknown = api.post(url, json={"cron": "0 9 * * *", "timezone": "Europe/Nowhere"})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "timezone"
    typo = api.post(url, json={"cron": "0 9 * * *", "catchup": "some"})
    assert typo.status_code == 422 and typo.json()["error"]["field"] == "catchup"

    created = api.post(url, json={"rrule": "FREQ=WEEKLY;BYDAY=MO,WE", "timezone": "UTC"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert [datetime.fromisoformat(t).weekday() for t in body["next_times"]][:4] in (
        [0, 2, 0, 2],
        [2, 0, 2, 0],
    )
    missing = api.get(f"/api/schedules/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "schedule"
    changed = api.patch(f"/api/schedules/{body['id']}", json={"cron": "0 6 * * *"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["cron"] == "0 6 * * *" and changed.json()["rrule"] is None


def test_anchor_is_local_time_in_the_schedule_zone(runner: CliRunner, pool_and_flow: Path) -> None:
    assert create(runner, pool_and_flow).exit_code == 0
    args = ["deployment", "schedule", "add", "etl/nightly", "--interval", "86400"]
    added = invoke(
        runner, *args, "--anchor", "2026-01-05T09:00", "--timezone", "Europe/Berlin", "-o", "json"
    )
    assert added.exit_code == 0, added.output
    body = json.loads(added.stdout)
    assert body["anchor"] == "2026-01-05T08:00:00Z"
    # Daily at 09:00 Berlin: 08:00 UTC in winter (these next times fall in November-December).
    assert all(t.endswith("T08:00:00Z") for t in body["next_times"])
    bad = invoke(runner, *args, "--anchor", "next monday")
    assert bad.exit_code == 1 and "error: --anchor: not an ISO 8601 time" in bad.stderr

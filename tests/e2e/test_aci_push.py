"""`aci:push` end to end: the CLI against a real server that pushes runs through the official
`azure-mgmt-containerinstance` client, over TLS, to the local ARM emulator. The emulator runs
each group's container command as a local process in the project directory (there is no image
to pull), so the skylane runtime inside really reports back, and its output is the container's
log."""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("azure.mgmt.containerinstance")

from skylane.testing.azure import AciEmulator  # noqa: E402
from skylane.testing.server import ServerProcess, running_server  # noqa: E402
from skylane.testing.waiting import wait_until  # noqa: E402
from tests.e2e.conftest import (  # noqa: E402
    DATABASES,
    FAST_SETTINGS,
    TERMINAL,
    UUID_RE,
    database_url,
    start_run,
)
from tests.unit.test_aci_template import prefect_aci_template  # noqa: E402

SUBSCRIPTION = "5e0c0000-0000-4000-8000-00000000e2e0"
RESOURCE_GROUP = "flows"
LOCATION = "westeurope"
IMAGE = "flows.azurecr.io/etl:1.0"
CREATE = "containerGroups.createOrUpdate"
# A secret the control plane holds in its environment and sends as a secure value.
SECRET = "hunter2-e2e-db-password"
FLOW = """
import hashlib
import os
import time

def etl(day: str = "today", seconds: float = 0) -> None:
    print("etl for", day)
    password = os.environ.get("DB_PASSWORD", "")
    # Proof that the secure value arrived, without printing it.
    print("db password sha256", hashlib.sha256(password.encode()).hexdigest()[:12])
    time.sleep(seconds)
    print("etl done for", day)
"""
# A short provider timeout, so a create whose answer is lost is looked up within seconds.
SETTINGS = {
    **FAST_SETTINGS,
    "SKYLANE_PROVIDER_TIMEOUT_SECONDS": "3",
    "FLOWS_DB_PASSWORD": SECRET,
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    (path / "flows").mkdir(parents=True)
    (path / "flows" / "etl.py").write_text(FLOW)
    return path


@pytest.fixture
def emulator(workdir: Path) -> Iterator[AciEmulator]:
    with AciEmulator(
        run_containers=True, workdir=workdir, provision_seconds=0.2, resource_groups=["flows"]
    ) as started:
        yield started


@contextlib.contextmanager
def control_plane(
    database: str, tmp_path: Path, workdir: Path, emulator: AciEmulator
) -> Iterator[ServerProcess]:
    """A server with an `aci:push` pool `azure` on the emulator and a deployment
    `etl/nightly` whose DB_PASSWORD is a secure value from the control plane's environment."""
    with running_server(
        database, workdir=workdir, home=tmp_path / "home", settings=SETTINGS
    ) as server:
        create_pool(server, emulator)
        create_deployment(server)
        yield server


@pytest.fixture
def azure(tmp_path: Path, workdir: Path, emulator: AciEmulator) -> Iterator[ServerProcess]:
    """The control plane on SQLite: what these tests check is the adapter's, not the store's."""
    with control_plane(
        f"sqlite:///{tmp_path / 'skylane.db'}", tmp_path, workdir, emulator
    ) as server:
        yield server


@pytest.fixture(params=DATABASES)
def azure_each_db(
    request: pytest.FixtureRequest, tmp_path: Path, workdir: Path, emulator: AciEmulator
) -> Iterator[ServerProcess]:
    """The control plane on each database."""
    url = database_url(request, tmp_path)
    with control_plane(url, tmp_path, workdir, emulator) as server:
        yield server


def create_pool(server: ServerProcess, emulator: AciEmulator, *extra: str) -> None:
    server.cli(
        "pool",
        "create",
        "azure",
        "--type",
        "azure-container-instance:push",
        "--setting",
        f"subscription_id={SUBSCRIPTION}",
        "--setting",
        f"resource_group_name={RESOURCE_GROUP}",
        "--setting",
        f"location={LOCATION}",
        "--setting",
        f"endpoint_url={emulator.url}",
        "--setting",
        f"ca_bundle={emulator.ca_bundle}",
        *extra,
        check=True,
    )


def create_deployment(server: ServerProcess, *extra: str) -> None:
    server.cli(
        "deployment",
        "create",
        "nightly",
        "--entrypoint",
        "flows/etl.py:etl",
        "--pool",
        "azure",
        "--image",
        IMAGE,
        "--job-variable",
        "env.STAGE=prod",
        "--job-variable",
        "labels.team=data",
        "--job-variable",
        "secure_env.DB_PASSWORD.env=FLOWS_DB_PASSWORD",
        *extra,
        check=True,
    )


def creates(emulator: AciEmulator) -> list[Any]:
    return emulator.requests(CREATE)


def groups_by_run(emulator: AciEmulator) -> Counter[str]:
    """How many container groups ACI created for each run id (tag skylane-run-id)."""
    counts: Counter[str] = Counter()
    for request in creates(emulator):
        if request.status == 201:
            counts[request.body["tags"]["skylane-run-id"]] += 1
    return counts


def trusting(emulator: AciEmulator) -> ssl.SSLContext:
    """A TLS context that trusts the emulator's CA (httpx takes no CA file path any more)."""
    return ssl.create_default_context(cafile=emulator.ca_bundle)


def live_processes(emulator: AciEmulator) -> int:
    return int(
        httpx.get(f"{emulator.url}/emulator/", verify=trusting(emulator)).json()["processes"]
    )


def container_env(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    container = body["properties"]["containers"][0]
    return {e["name"]: e for e in container["properties"]["environmentVariables"]}


def test_a_run_becomes_one_container_group_runs_to_completed_and_the_group_is_deleted(
    azure_each_db: ServerProcess, emulator: AciEmulator
) -> None:
    azure = azure_each_db
    watched = azure.cli("deployment", "run", "etl/nightly", "--param", "day=monday", "--watch")

    assert watched.returncode == 0, watched.stdout + watched.stderr + azure.log_tail()
    assert "etl for monday" in watched.stdout and "COMPLETED" in watched.stdout
    run_id = UUID_RE.search(watched.stdout).group(0)
    run = azure.cli_json("run", "inspect", run_id)
    assert [h["state"] for h in run["history"]] == ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"]
    [attempt] = run["attempts"]

    [create] = creates(emulator)
    name = create.path.rsplit("/", 1)[-1]
    assert name == attempt["idempotency_key"]  # skylane's keys are valid group names
    assert attempt["provider_ref"] == (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
        f"Microsoft.ContainerInstance/containerGroups/{name}"
    )
    assert create.headers["If-None-Match"] == "*"
    body = create.body
    assert body["properties"]["restartPolicy"] == "Never"
    assert body["tags"]["skylane-run-id"] == run_id and body["tags"]["team"] == "data"
    assert body["properties"]["containers"][0]["properties"]["image"] == IMAGE
    env = container_env(body)
    assert env["SKYLANE_RUN_ID"]["value"] == run_id and env["STAGE"]["value"] == "prod"
    assert env["SKYLANE_RUN_TOKEN"]["secureValue"].startswith("sklr_")
    assert env["DB_PASSWORD"] == {"name": "DB_PASSWORD", "secureValue": SECRET}
    # The look before the create: one GET that found nothing, then the one PUT.
    gets = emulator.requests("containerGroups.get")
    assert gets[0].received_at < create.received_at and gets[0].status == 404

    # Once the run is over its group is deleted.
    wait_until(lambda: emulator.groups() == [], "the group to be deleted")
    [delete] = emulator.requests("containerGroups.delete")
    assert delete.path.endswith(name)
    assert len(creates(emulator)) == 1


def test_the_secure_value_reaches_the_container_and_nothing_else(
    azure: ServerProcess, emulator: AciEmulator
) -> None:
    run_id = start_run(azure)
    run = azure.wait_for_state(run_id, TERMINAL)
    assert run["state"] == "COMPLETED", run["state_message"]

    import hashlib

    digest = hashlib.sha256(SECRET.encode()).hexdigest()[:12]
    logs = azure.cli("run", "logs", run_id, check=True).stdout
    assert f"db password sha256 {digest}" in logs  # the container had the value

    shown = [
        logs,
        json.dumps(run),
        azure.cli("deployment", "inspect", "etl/nightly", "--output", "json", check=True).stdout,
        azure.cli("deployment", "render", "etl/nightly", check=True).stdout,
        azure.cli("pool", "inspect", "azure", "--output", "json", check=True).stdout,
        azure.cli("run", "ls", "--output", "json", check=True).stdout,
        httpx.get(
            f"{azure.url}/api/runs/{run_id}", headers={"Authorization": f"Bearer {azure.api_key}"}
        ).text,
        azure.log_tail(100_000),
    ]
    for text in shown:
        assert SECRET not in text


def test_a_container_that_fails_before_reporting_crashes_the_run_with_its_last_lines(
    azure: ServerProcess, emulator: AciEmulator
) -> None:
    command = "python -c \"import sys; print('no runtime here, giving up'); sys.exit(3)\""
    run_id = start_run(azure, "--job-variable", f"command={command}")

    run = azure.wait_for_state(run_id, TERMINAL)

    assert run["state"] == "CRASHED", run["state_message"]
    message = run["state_message"]
    assert "exit code 3" in message
    assert "no runtime here, giving up" in message  # the container's last lines
    assert "sklr_" not in message and SECRET not in message
    wait_until(lambda: emulator.groups() == [], "the group to be deleted")


def test_run_logs_falls_back_to_the_container_logs_api(
    azure: ServerProcess, emulator: AciEmulator
) -> None:
    command = "python -c \"print('only in the container log')\""
    run_id = start_run(
        azure, "--job-variable", f"command={command}", "--job-variable", "keep_container_group=true"
    )
    run = azure.wait_for_state(run_id, TERMINAL)
    assert run["state"] == "CRASHED", run["state_message"]  # exit 0, but the runtime never ran

    logs = azure.cli("run", "logs", run_id, check=True)
    assert "only in the container log" in logs.stdout
    assert "provider's log follows" in logs.stderr
    assert emulator.requests("containers.listLogs")


def test_cancel_stops_then_deletes_the_group_and_its_process(
    azure: ServerProcess, emulator: AciEmulator
) -> None:
    # SQLite only: cancelling on PostgreSQL is covered by tests/e2e/test_run_path.py.
    run_id = start_run(azure, "--param", "seconds=120")
    azure.wait_for_state(run_id, {"RUNNING"})
    assert live_processes(emulator) == 1  # the flow is sleeping inside its "container"

    azure.cli("run", "cancel", run_id, check=True)

    run = azure.wait_for_state(run_id, TERMINAL)
    assert run["state"] == "CANCELLED", run["state_message"]
    [stop] = emulator.requests("containerGroups.stop")
    delete = emulator.requests("containerGroups.delete")[0]
    assert stop.received_at < delete.received_at  # stop, then delete
    assert stop.path.removesuffix("/stop") == run["attempts"][0]["provider_ref"]
    wait_until(lambda: emulator.groups() == [], "the group to be deleted")
    wait_until(lambda: live_processes(emulator) == 0, "the container process to be stopped")


def test_keep_container_group_keeps_the_group_after_the_run(
    azure: ServerProcess, emulator: AciEmulator
) -> None:
    run_id = start_run(azure, "--job-variable", "keep_container_group=true")

    run = azure.wait_for_state(run_id, TERMINAL)
    assert run["state"] == "COMPLETED", run["state_message"]

    def cleaned_up() -> bool:
        [attempt] = azure.run_json(run_id)["attempts"]
        return attempt["cleaned_up_at"] is not None

    wait_until(cleaned_up, "the reconciler to clean the run up")
    [group] = emulator.groups()
    assert group["tags"]["skylane-keep-group"] == "true"
    assert emulator.requests("containerGroups.delete") == []


def test_a_forbidden_create_and_a_missing_resource_group_fail_once_saying_what_to_fix(
    azure: ServerProcess, emulator: AciEmulator
) -> None:
    emulator.forbid(CREATE, count=1)
    forbidden = start_run(azure)
    run = azure.wait_for_state(forbidden, TERMINAL)
    assert run["state"] == "FAILED"
    assert "Microsoft.ContainerInstance/containerGroups/write" in run["state_message"]
    assert "sklr_" not in run["state_message"] and SECRET not in run["state_message"]

    missing = start_run(azure, "--job-variable", "resource_group_name=no-such-group")
    run = azure.wait_for_state(missing, TERMINAL)
    assert run["state"] == "FAILED"
    assert "resource group 'no-such-group' does not exist" in run["state_message"]
    assert len(creates(emulator)) == 2  # each failed once, not retried
    assert emulator.groups() == []


def test_a_throttled_create_is_not_tried_again_before_retry_after(
    azure: ServerProcess, emulator: AciEmulator
) -> None:
    emulator.throttle(CREATE, count=1, retry_after=12)
    run_id = start_run(azure)

    run = azure.wait_for_state(run_id, TERMINAL, timeout=60)

    assert run["state"] == "COMPLETED", run["state_message"]
    first, second = creates(emulator)
    assert first.status == 429 and second.status == 201
    assert second.received_at - first.received_at >= 12.0
    assert len(run["attempts"]) == 2  # refused, so a fresh attempt was safe


def test_a_quota_error_parks_the_run_until_the_capacity_backoff_is_over(
    azure: ServerProcess, emulator: AciEmulator
) -> None:
    emulator.quota_reached(count=1)
    run_id = start_run(azure)

    def parked() -> dict[str, Any] | None:
        run = azure.run_json(run_id)
        return run if "waiting for quota" in (run["state_message"] or "") else None

    run = wait_until(parked, "the run to wait for quota")
    assert run["state"] == "SCHEDULED"
    assert "ContainerGroupQuotaReached" in run["state_message"]
    retry_at = datetime.fromisoformat(run["not_before"]).timestamp()
    assert retry_at - creates(emulator)[0].received_at >= 14.0  # capacity backoff: 15-30 s
    # Not tried again before then (that the retry then succeeds is the throttling test's: both
    # wait on the same `not_before`, and waiting 15-30 s here again cost CI time).
    time.sleep(1.0)
    assert len(creates(emulator)) == 1
    assert azure.cli_json("run", "inspect", run_id)["state"] == "SCHEDULED"


def test_unanswered_and_failed_creates_are_retried_without_a_second_group(
    azure: ServerProcess, emulator: AciEmulator
) -> None:
    # The first two creates go through but their answers are lost; the next two get 503 and 500.
    emulator.timeout_after(CREATE, seconds=6, count=2)
    emulator.unavailable(CREATE, count=1)
    emulator.internal_error(CREATE, count=1)
    run_ids = [start_run(azure, "--param", f"day=d{i}") for i in range(6)]

    runs = [azure.wait_for_state(run_id, TERMINAL, timeout=90) for run_id in run_ids]

    assert [r["state"] for r in runs] == ["COMPLETED"] * 6, [r["state_message"] for r in runs]
    assert groups_by_run(emulator) == Counter({run_id: 1 for run_id in run_ids})
    assert len([r for r in creates(emulator) if r.fault]) == 4
    wait_until(lambda: emulator.groups() == [], "every group to be deleted")


def test_a_prefect_aci_template_renders_exactly_what_is_sent(
    tmp_path: Path, workdir: Path, emulator: AciEmulator
) -> None:
    template_file = tmp_path / "prefect-aci.json"
    template_file.write_text(json.dumps(prefect_aci_template()))
    with running_server(
        f"sqlite:///{tmp_path / 'skylane.db'}",
        workdir=workdir,
        home=tmp_path / "home",
        settings=SETTINGS,
    ) as server:
        create_pool(server, emulator, "--base-job-template", str(template_file))
        server.cli(
            "deployment",
            "create",
            "nightly",
            "--entrypoint",
            "flows/etl.py:etl",
            "--pool",
            "azure",
            "--image",
            IMAGE,
            # Prefect's template requires these two as variables (the pool's settings do not
            # count for its schema).
            "--job-variable",
            f"subscription_id={SUBSCRIPTION}",
            "--job-variable",
            f"resource_group_name={RESOURCE_GROUP}",
            "--job-variable",
            "memory=2",
            "--job-variable",
            "command=python -m skylane.runtime",
            check=True,
        )

        rendered = json.loads(server.cli("deployment", "render", "etl/nightly", check=True).stdout)
        assert emulator.requests() == []  # rendering calls nothing
        run_id = start_run(server)
        run = server.wait_for_state(run_id, TERMINAL)

    assert run["state"] == "COMPLETED", run["state_message"]
    [create] = creates(emulator)
    preview, sent = rendered["request"]["create_container_group"]["body"], create.body
    # The same request but for the run's own id and token.
    for body in (preview, sent):
        body["tags"].pop("skylane-run-id")
        container = body["properties"]["containers"][0]["properties"]
        container["environmentVariables"] = [
            e
            for e in container["environmentVariables"]
            if e["name"] not in ("SKYLANE_RUN_ID", "SKYLANE_RUN_TOKEN")
        ]
    assert preview == sent
    assert sent["properties"]["containers"][0]["properties"]["resources"]["requests"] == {
        "cpu": 1,
        "memoryInGB": 2,
    }
    assert "sklr_" not in json.dumps(rendered).replace("sklr_preview_****", "")


def test_the_start_timeout_removes_a_group_that_never_starts(
    azure: ServerProcess, emulator: AciEmulator
) -> None:
    emulator.configure(provision_seconds=600)  # the image "pulls" for ten minutes
    run_id = start_run(azure, "--job-variable", "task_start_timeout_seconds=2")

    run = azure.wait_for_state(run_id, TERMINAL, timeout=60)

    assert run["state"] == "CRASHED", run["state_message"]
    assert "did not start within 2 s" in run["state_message"]
    wait_until(lambda: emulator.groups() == [], "the group to be deleted")

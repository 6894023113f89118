"""`cloud-run:push` end to end: the CLI against a real server that pushes runs through the
official `google-cloud-run` client to the local Cloud Run emulator. The emulator runs each
job's container command as a local process in the project directory (there is no image to
pull), so the skylane runtime inside really reports back, and its output lands in the
emulator's Cloud Logging."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("google.cloud.run_v2")

from google.api.launch_stage_pb2 import LaunchStage  # noqa: E402

from skylane.models import Run  # noqa: E402
from skylane.testing.databases import reset_postgres_schema  # noqa: E402
from skylane.testing.gcp import CloudRunEmulator  # noqa: E402
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
from tests.e2e.test_dispatch_faults import (  # noqa: E402
    FAULT_SETTINGS,
    ControlPlane,
    all_runs,
    create_runs,
    submitted_refs,
)
from tests.unit.test_cloud_run_template import prefect_cloud_run_v2_template  # noqa: E402

PROJECT = "skylane-e2e"
REGION = "europe-west1"
IMAGE = "europe-west1-docker.pkg.dev/skylane-e2e/flows/etl:1.0"
FLOW = """
import time

def etl(day: str = "today", seconds: float = 0) -> None:
    print("etl for", day)
    time.sleep(seconds)
    print("etl done for", day)
"""
# A short provider timeout, so a create whose answer is lost is looked up within seconds.
SETTINGS = {**FAST_SETTINGS, "SKYLANE_PROVIDER_TIMEOUT_SECONDS": "3"}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    (path / "flows").mkdir(parents=True)
    (path / "flows" / "etl.py").write_text(FLOW)
    return path


@pytest.fixture
def emulator(workdir: Path) -> Iterator[CloudRunEmulator]:
    with CloudRunEmulator(run_containers=True, workdir=workdir, start_seconds=0.1) as started:
        yield started


@contextlib.contextmanager
def control_plane(
    url: str, tmp_path: Path, workdir: Path, emulator: CloudRunEmulator
) -> Iterator[ServerProcess]:
    """A server with a `cloud-run:push` pool `gcp` on the emulator and a deployment
    `etl/nightly`."""
    with running_server(url, workdir=workdir, home=tmp_path / "home", settings=SETTINGS) as server:
        create_pool(server, emulator)
        create_deployment(server)
        yield server


@pytest.fixture
def gcp_project(
    tmp_path: Path, workdir: Path, emulator: CloudRunEmulator
) -> Iterator[ServerProcess]:
    """The control plane on SQLite: what these tests check is the adapter's, not the store's."""
    url = f"sqlite:///{tmp_path / 'skylane.db'}"
    with control_plane(url, tmp_path, workdir, emulator) as server:
        yield server


@pytest.fixture(params=DATABASES)
def gcp_project_each_db(
    request: pytest.FixtureRequest, tmp_path: Path, workdir: Path, emulator: CloudRunEmulator
) -> Iterator[ServerProcess]:
    """The control plane on each database."""
    with control_plane(database_url(request, tmp_path), tmp_path, workdir, emulator) as server:
        yield server


def create_pool(server: ServerProcess, emulator: CloudRunEmulator, *extra: str) -> None:
    server.cli(
        "pool",
        "create",
        "gcp",
        "--type",
        "cloud-run:push",
        "--setting",
        f"project={PROJECT}",
        "--setting",
        f"region={REGION}",
        "--setting",
        f"endpoint_url={emulator.url}",
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
        "gcp",
        "--image",
        IMAGE,
        "--job-variable",
        "env.STAGE=prod",
        "--job-variable",
        "labels.team=data",
        *extra,
        check=True,
    )


def executions_by_run(emulator: CloudRunEmulator) -> Counter[str]:
    """How many executions Cloud Run started for each run id (label skylane-run-id), whether
    their jobs still exist or not: every CreateJob that started one is in the request log."""
    counts: Counter[str] = Counter()
    for request in emulator.requests(rpc="CreateJob"):
        if request.status == 200:
            counts[request.body["labels"]["skylane-run-id"]] += 1
    return counts


def live_processes(emulator: CloudRunEmulator) -> int:
    """Container processes the emulator is running (from its control API)."""
    return int(httpx.get(f"{emulator.url}/emulator/").json()["processes"])


def job_env(body: dict[str, Any]) -> dict[str, str]:
    [container] = body["template"]["template"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_a_run_becomes_one_cloud_run_job_runs_to_completed_and_the_job_is_deleted(
    gcp_project_each_db: ServerProcess, emulator: CloudRunEmulator
) -> None:
    watched = gcp_project_each_db.cli(
        "deployment", "run", "etl/nightly", "--param", "day=monday", "--watch"
    )

    assert watched.returncode == 0, watched.stdout + watched.stderr + gcp_project_each_db.log_tail()
    assert "etl for monday" in watched.stdout and "COMPLETED" in watched.stdout
    run_id = UUID_RE.search(watched.stdout).group(0)
    run = gcp_project_each_db.cli_json("run", "inspect", run_id)
    assert [h["state"] for h in run["history"]] == ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"]
    [attempt] = run["attempts"]

    [create] = emulator.requests(rpc="CreateJob")
    job_id = create.query["jobId"]
    assert job_id == attempt["idempotency_key"]  # skylane's keys are valid Cloud Run ids
    assert create.body["startExecutionToken"]  # creating the job started the execution
    assert attempt["provider_ref"] == (
        f"projects/{PROJECT}/locations/{REGION}/jobs/{job_id}/executions/"
        f"{job_id}-{create.body['startExecutionToken']}"
    )
    assert create.body["labels"]["skylane-run-id"] == run_id
    assert create.body["labels"]["skylane-pool"] == "gcp"
    assert create.body["labels"]["team"] == "data"
    [container] = create.body["template"]["template"]["containers"]
    assert container["image"] == IMAGE
    env = job_env(create.body)
    assert env["SKYLANE_RUN_ID"] == run_id and env["STAGE"] == "prod"
    assert env["SKYLANE_RUN_TOKEN"].startswith("sklr_")
    assert create.body["template"]["template"]["maxRetries"] == 0

    # Once the run is over its job is deleted (a region holds at most 1,000 jobs).
    wait_until(lambda: emulator.jobs() == [], "the job to be deleted")
    assert [r.path.rsplit("/", 1)[-1] for r in emulator.requests(rpc="DeleteJob")] == [job_id]
    assert len(emulator.requests(rpc="CreateJob")) == 1


def test_an_execution_that_fails_before_reporting_crashes_the_run_and_logs_come_from_cloud_logging(
    gcp_project: ServerProcess, emulator: CloudRunEmulator
) -> None:
    command = "python -c \"import sys; print('no runtime here, giving up'); sys.exit(3)\""
    run_id = start_run(gcp_project, "--job-variable", f"command={command}")

    run = gcp_project.wait_for_state(run_id, TERMINAL)

    assert run["state"] == "CRASHED", run["state_message"]
    message = run["state_message"]
    assert "exit code 3" in message
    assert "https://console.cloud.google.com/logs/viewer" in message  # where to look
    assert "sklr_" not in message
    # The runtime never sent a line: `run logs` reads the execution's log from Cloud Logging.
    logs = gcp_project.cli("run", "logs", run_id, check=True)
    assert "no runtime here, giving up" in logs.stdout
    assert "provider's log follows" in logs.stderr
    wait_until(lambda: emulator.jobs() == [], "the job to be deleted")


def test_cancel_cancels_the_execution_stops_the_process_and_deletes_the_job(
    gcp_project: ServerProcess, emulator: CloudRunEmulator
) -> None:
    # SQLite only: cancelling on PostgreSQL is covered by tests/e2e/test_run_path.py.
    run_id = start_run(gcp_project, "--param", "seconds=120")
    gcp_project.wait_for_state(run_id, {"RUNNING"})
    assert live_processes(emulator) == 1  # the flow is sleeping inside its "container"

    gcp_project.cli("run", "cancel", run_id, check=True)

    run = gcp_project.wait_for_state(run_id, TERMINAL)
    assert run["state"] == "CANCELLED", run["state_message"]
    [cancel] = emulator.requests(rpc="CancelExecution")
    assert cancel.path.endswith(run["attempts"][0]["provider_ref"] + ":cancel")
    wait_until(lambda: emulator.jobs() == [], "the job to be deleted")
    wait_until(lambda: live_processes(emulator) == 0, "the container process to be stopped")
    assert "etl for today" in gcp_project.cli("run", "logs", run_id, check=True).stdout


def test_keep_job_keeps_the_job_after_the_run(
    gcp_project: ServerProcess, emulator: CloudRunEmulator
) -> None:
    run_id = start_run(gcp_project, "--job-variable", "keep_job=true")

    run = gcp_project.wait_for_state(run_id, TERMINAL)
    assert run["state"] == "COMPLETED", run["state_message"]

    # The reconciler has done its cleanup of the attempt: without keep_job the job is gone now.
    def cleaned_up() -> bool:
        [attempt] = gcp_project.run_json(run_id)["attempts"]
        return attempt["cleaned_up_at"] is not None

    wait_until(cleaned_up, "the reconciler to clean the run up")
    [job] = emulator.jobs()
    assert job["labels"]["skylane-keep-job"] == "true"
    assert emulator.requests(rpc="DeleteJob") == []


def test_a_forbidden_project_fails_the_run_once_naming_the_permission(
    gcp_project: ServerProcess, emulator: CloudRunEmulator
) -> None:
    emulator.forbid_project("locked-project")
    run_id = start_run(gcp_project, "--job-variable", "project=locked-project")

    run = gcp_project.wait_for_state(run_id, TERMINAL)

    assert run["state"] == "FAILED"
    assert "run.jobs.create" in run["state_message"]
    assert "sklr_" not in run["state_message"]
    assert len(emulator.requests(rpc="CreateJob")) == 1  # failed once, not retried
    assert emulator.jobs() == []


def test_a_throttled_create_is_tried_again_no_sooner_than_30_seconds(
    gcp_project: ServerProcess, emulator: CloudRunEmulator
) -> None:
    emulator.throttle(rpc="CreateJob", count=1)
    run_id = start_run(gcp_project)

    def throttled() -> dict[str, Any] | None:
        run = gcp_project.run_json(run_id)
        return run if "throttled" in (run["state_message"] or "") else None

    run = wait_until(throttled, "the throttled submission to be recorded")
    assert run["state"] == "SCHEDULED"
    retry_at = datetime.fromisoformat(run["not_before"]).timestamp()
    assert retry_at - emulator.requests(rpc="CreateJob")[0].received_at >= 29.5
    assert emulator.executions() == []


def test_unanswered_and_failed_creates_are_retried_without_a_second_execution(
    gcp_project: ServerProcess, emulator: CloudRunEmulator
) -> None:
    # The first two creates go through but their answers are lost; the next two get 503 and 500.
    emulator.timeout_after(rpc="CreateJob", seconds=6, count=2)
    emulator.unavailable(rpc="CreateJob", count=1)
    emulator.internal_error(rpc="CreateJob", count=1)
    run_ids = [start_run(gcp_project, "--param", f"day=d{i}") for i in range(6)]

    runs = [gcp_project.wait_for_state(run_id, TERMINAL, timeout=90) for run_id in run_ids]

    assert [r["state"] for r in runs] == ["COMPLETED"] * 6, [r["state_message"] for r in runs]
    assert executions_by_run(emulator) == Counter({run_id: 1 for run_id in run_ids})
    faulted = [r for r in emulator.requests(rpc="CreateJob") if r.fault]
    assert len(faulted) == 4
    wait_until(lambda: emulator.jobs() == [], "every job to be deleted")


def test_a_prefect_cloud_run_v2_template_renders_exactly_what_is_sent(
    tmp_path: Path, workdir: Path, emulator: CloudRunEmulator
) -> None:
    template_file = tmp_path / "prefect-cloud-run-v2.json"
    template_file.write_text(json.dumps(prefect_cloud_run_v2_template()))
    with running_server(
        f"sqlite:///{tmp_path / 'skylane.db'}",
        workdir=workdir,
        home=tmp_path / "home",
        settings=SETTINGS,
    ) as server:
        create_pool(server, emulator, "--base-job-template", str(template_file))
        create_deployment(server, "--job-variable", "memory=1Gi")

        rendered = json.loads(server.cli("deployment", "render", "etl/nightly", check=True).stdout)
        assert emulator.requests() == []  # rendering calls nothing
        run_id = start_run(server)
        run = server.wait_for_state(run_id, TERMINAL)

    assert run["state"] == "COMPLETED", run["state_message"]
    [create] = emulator.requests(rpc="CreateJob")
    preview_job, sent_job = rendered["request"]["create_job"]["job"], create.body
    # The official client sends enums as numbers (`$alt=json;enum-encoding=int`).
    assert LaunchStage.Name(sent_job["launchStage"]) == preview_job["launchStage"] == "BETA"
    sent_job["launchStage"] = preview_job["launchStage"]
    # The same request but for the run's own id, token and key.
    run_specific = ("SKYLANE_RUN_ID", "SKYLANE_RUN_TOKEN")
    for job in (preview_job, sent_job):
        job.pop("startExecutionToken")
        for labels in (job["labels"], job["template"]["labels"]):
            labels.pop("skylane-run-id")
        for container in job["template"]["template"]["containers"]:
            container["env"] = [e for e in container["env"] if e["name"] not in run_specific]
    assert preview_job == sent_job
    [container] = sent_job["template"]["template"]["containers"]
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert "sklr_" not in json.dumps(rendered).replace("sklr_preview_****", "")


@pytest.mark.postgres
def test_dispatcher_replicas_killed_while_creates_fail_start_one_execution_per_run(
    tmp_path: Path, postgres_server_url: str
) -> None:
    """Three dispatcher replicas on PostgreSQL, two of them killed and restarted while 40 runs
    are pushed and Cloud Run loses, refuses or fails a dozen creates: every run gets exactly one
    execution, recorded on its one attempt."""
    reset_postgres_schema(postgres_server_url)
    logs = tmp_path / "logs"
    logs.mkdir()
    # Executions stay running (no runtime reports here): what is checked is what was started.
    with (
        CloudRunEmulator(outcome="manual") as emulator,
        running_server(
            postgres_server_url,
            workdir=tmp_path / "project",
            home=tmp_path / "home",
            services="api,reconciler",
            settings=FAULT_SETTINGS,
        ) as server,
    ):
        plane = ControlPlane(server=server, database_url=postgres_server_url, replica_logs=logs)
        try:
            plane.client.create_pool(
                name="gcp",
                type="cloud-run:push",
                settings={"project": PROJECT, "region": REGION, "endpoint_url": emulator.url},
            )
            deployment = plane.client.create_deployment(
                flow_name="etl",
                name="nightly",
                pool="gcp",
                entrypoint="flows/etl.py:etl",
                image=IMAGE,
            )
            # Creates that went through but whose answers were lost, then 503s and 500s.
            emulator.timeout_after(rpc="CreateJob", seconds=4, count=5)
            emulator.unavailable(rpc="CreateJob", count=4)
            emulator.internal_error(rpc="CreateJob", count=3)
            run_ids = create_runs(plane, deployment.id, 40, due_in=1.0)
            plane.replicas = [plane.start_replica(i) for i in range(3)]
            time.sleep(2.5)
            plane.kill_and_restart(0)
            time.sleep(1.0)
            plane.kill_and_restart(1)

            def all_submitted() -> list[Run] | None:
                runs = all_runs(plane)
                return runs if all(submitted_refs(r) for r in runs) else None

            runs = wait_until(
                all_submitted, "every run to be submitted", timeout=120, context=plane.logs
            )
        finally:
            plane.stop_replicas()

    assert {r.id for r in runs} == set(run_ids)
    assert executions_by_run(emulator) == Counter({str(run_id): 1 for run_id in run_ids})
    assert len(emulator.executions()) == 40
    assert sum(1 for r in emulator.requests(rpc="CreateJob") if r.fault) == 12
    for run in runs:
        [ref] = submitted_refs(run)
        assert ref in {e["name"] for e in emulator.executions()}

"""`ecs:push` end to end: the CLI against a real server that pushes runs to moto_server (a
local AWS on loopback). The flow cannot really run inside moto; what is checked is what
skylane sends and how it follows the task."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from skylane.testing.moto import FAKE_AWS_ENV
from skylane.testing.server import ServerProcess, running_server
from tests.e2e.conftest import FAST_SETTINGS, start_run

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flows:1.0"
FLOW = "def etl(day: str = 'today') -> None:\n    print('etl for', day)\n"


@pytest.fixture
def ecs_project(aws: boto3.Session, moto_endpoint: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(
        f"sqlite:///{tmp_path / 'skylane.db'}",
        workdir=tmp_path / "project",
        home=tmp_path / "home",
        settings={**FAST_SETTINGS, **FAKE_AWS_ENV},
    ) as server:
        (server.workdir / "flows").mkdir()
        (server.workdir / "flows" / "etl.py").write_text(FLOW)
        server.cli(
            "pool",
            "create",
            "aws",
            "--type",
            "ecs:push",
            "--setting",
            "region=us-east-1",
            "--setting",
            f"endpoint_url={moto_endpoint}",
            check=True,
        )
        server.cli(
            "deployment",
            "create",
            "nightly",
            "--entrypoint",
            "flows/etl.py:etl",
            "--pool",
            "aws",
            "--image",
            IMAGE,
            "--job-variable",
            "cluster=flows",
            "--job-variable",
            "env.STAGE=prod",
            "--job-variable",
            "labels.team=data",
            check=True,
        )
        yield server


def ecs(aws: boto3.Session, endpoint: str):  # noqa: ANN201 - a boto3 client
    return aws.client("ecs", endpoint_url=endpoint)


def submitted_task(server: ServerProcess, run_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = server.run_json(run_id)
        refs = [a["provider_ref"] for a in run["attempts"] if a["provider_ref"]]
        if refs:
            return refs[-1]
        assert run["state"] not in ("FAILED", "CRASHED"), run["state_message"]
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} was never submitted:\n{server.log_tail()}")


def test_a_run_becomes_exactly_one_task_with_its_overrides_tags_and_network(
    ecs_project: ServerProcess, aws: boto3.Session, moto_endpoint: str
) -> None:
    run_id = start_run(ecs_project, "--param", "day=monday")
    task_arn = submitted_task(ecs_project, run_id)

    client = ecs(aws, moto_endpoint)
    assert client.list_tasks(cluster="flows")["taskArns"] == [task_arn]
    task = client.describe_tasks(cluster="flows", tasks=[task_arn], include=["TAGS"])["tasks"][0]
    tags = {t["key"]: t["value"] for t in task.get("tags", [])}
    assert tags["skylane-run-id"] == run_id
    assert tags["skylane-deployment"] == "etl/nightly"
    assert tags["skylane-pool"] == "aws"
    assert tags["team"] == "data"
    [override] = task["overrides"]["containerOverrides"]
    environment = {e["name"]: e["value"] for e in override["environment"]}
    assert environment["SKYLANE_RUN_ID"] == run_id
    assert environment["SKYLANE_RUN_TOKEN"].startswith("sklr_")
    assert environment["STAGE"] == "prod"  # per-run environment goes in the overrides
    definition = client.describe_task_definition(taskDefinition=task["taskDefinitionArn"])
    container = definition["taskDefinition"]["containerDefinitions"][0]
    assert container["image"] == IMAGE
    # The task definition holds nothing run-specific, so runs can share it.
    assert run_id not in json.dumps(definition["taskDefinition"], default=str)
    # No subnets given: they come from the default VPC.
    attachment_details = {
        d["name"]: d["value"] for a in task.get("attachments", []) for d in a["details"]
    }
    assert attachment_details.get("subnetId", "").startswith("subnet-")


def test_two_runs_share_one_task_definition(
    ecs_project: ServerProcess, aws: boto3.Session, moto_endpoint: str
) -> None:
    first = submitted_task(ecs_project, start_run(ecs_project))
    second = submitted_task(ecs_project, start_run(ecs_project))

    client = ecs(aws, moto_endpoint)
    tasks = client.describe_tasks(cluster="flows", tasks=[first, second])["tasks"]
    assert first != second
    assert len({t["taskDefinitionArn"] for t in tasks}) == 1
    assert len(client.list_task_definitions()["taskDefinitionArns"]) == 1


def test_a_task_that_stops_without_a_report_crashes_the_run_with_the_reason(
    ecs_project: ServerProcess, aws: boto3.Session, moto_endpoint: str
) -> None:
    run_id = start_run(ecs_project)
    task_arn = submitted_task(ecs_project, run_id)

    ecs(aws, moto_endpoint).stop_task(
        cluster="flows", task=task_arn, reason="Essential container in task exited"
    )

    run = ecs_project.wait_for_state(run_id, {"CRASHED", "FAILED", "CANCELLED", "COMPLETED"})
    assert run["state"] == "CRASHED"
    assert "Essential container in task exited" in run["state_message"]


def test_cancel_stops_the_task_and_ends_cancelled(
    ecs_project: ServerProcess, aws: boto3.Session, moto_endpoint: str
) -> None:
    run_id = start_run(ecs_project)
    task_arn = submitted_task(ecs_project, run_id)

    ecs_project.cli("run", "cancel", run_id, check=True)

    run = ecs_project.wait_for_state(run_id, {"CANCELLED", "CRASHED", "FAILED", "COMPLETED"})
    assert run["state"] == "CANCELLED"
    task = ecs(aws, moto_endpoint).describe_tasks(cluster="flows", tasks=[task_arn])["tasks"][0]
    assert task["lastStatus"] == "STOPPED" or task["desiredStatus"] == "STOPPED"


def test_render_prints_both_requests_without_calling_aws(
    ecs_project: ServerProcess, aws: boto3.Session, moto_endpoint: str
) -> None:
    result = ecs_project.cli("deployment", "render", "etl/nightly", check=True)

    rendered = json.loads(result.stdout)
    text = json.dumps(rendered)
    assert IMAGE in text and "flows" in text
    assert "sklr_" not in text.replace("sklr_preview_****", "")  # no real token, ever
    assert ecs(aws, moto_endpoint).list_task_definitions()["taskDefinitionArns"] == []


def test_an_invalid_fargate_size_is_refused_before_any_aws_call(
    ecs_project: ServerProcess, aws: boto3.Session, moto_endpoint: str
) -> None:
    result = ecs_project.cli(
        "deployment",
        "run",
        "etl/nightly",
        "--job-variable",
        "cpu=256",
        "--job-variable",
        "memory=4096",
    )

    assert result.returncode == 1
    assert "job_variables.memory" in result.stderr  # 256 CPU units take at most 2048 MiB
    assert ecs_project.cli_json("run", "ls") == []
    assert ecs(aws, moto_endpoint).list_task_definitions()["taskDefinitionArns"] == []

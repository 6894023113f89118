"""`skylane init` → `skylane pool provision` → `skylane deploy`, end to end: the CLI in
subprocesses against a real server, a real OCI registry on loopback, moto_server for ECS, and a
local bare git repository for a git-sourced deployment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from skylane.images.registry import Registries
from skylane.testing.git_repos import GitRemote
from skylane.testing.moto import FAKE_AWS_ENV
from skylane.testing.oci_registry import (
    LocalRegistry,
    oci_registry,
    push_test_image,
    registry_unavailable_reason,
)
from skylane.testing.server import ServerProcess, running_server
from tests.e2e.conftest import ETL_FLOW, FAST_SETTINGS, UUID_RE, write_etl_flow
from tests.e2e.test_ecs_push import submitted_task


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(
        f"sqlite:///{tmp_path / 'skylane.db'}",
        workdir=tmp_path / "project",
        home=tmp_path / "home",
        settings={**FAST_SETTINGS, **FAKE_AWS_ENV},
    ) as started:
        yield started


@pytest.fixture
def registry() -> Iterator[LocalRegistry]:
    if registry_unavailable_reason():
        pytest.skip(registry_unavailable_reason() or "")
    with oci_registry() as running:
        yield running


def test_a_flow_folder_becomes_a_scheduled_pinned_deployment_on_a_provisioned_ecs_pool(
    server: ServerProcess,
    aws: boto3.Session,
    moto_endpoint: str,
    registry: LocalRegistry,
) -> None:
    with Registries() as registries:
        push_test_image(
            registries.client(registry.host),
            "runtime",
            "3.12",
            labels={"io.skylane.version": "0.1.0"},
        )
    base = f"{registry.host}/runtime:3.12"
    write_etl_flow(server.workdir)

    # 1. skylane init: the recipe's project file, as generated.
    server.cli(
        "init", "--recipe", "ecr-ecs", "--name", "etl", "--pool", "prod", "--base-image", base,
        check=True,
    )  # fmt: skip
    # 2. skylane pool provision. moto's ECR has no registry API behind it, so the pool's
    # registry is then pointed at the loopback one, as a provisioned registry would be.
    server.cli(
        "pool", "provision", "prod", "--type", "ecs:push", "--region", "us-east-1",
        "--setting", f"endpoint_url={moto_endpoint}", "--yes", check=True,
    )  # fmt: skip
    repository = f"{registry.host}/skylane-prod"
    server.cli("pool", "update", "prod", "--setting", f"image_repository={repository}", check=True)

    # 3. skylane deploy: built, pushed, registered, the table says so.
    deployed = server.cli("deploy", check=True, timeout=120)
    assert "etl/etl" in deployed.stdout and "created" in deployed.stdout
    deployment = server.cli_json("deployment", "inspect", "etl/etl")
    image = deployment["image"]
    assert image.startswith(f"{repository}/etl@sha256:")
    assert [s["cron"] for s in deployment["schedules"]] == ["0 2 * * *"]
    shown = server.cli("deployment", "inspect", "etl/etl", check=True).stdout
    assert image.split("@")[1] in shown  # the digest, in the human view too

    # Deploying again builds the same image and changes nothing.
    again = server.cli("deploy", "--output", "json", check=True, timeout=120)
    assert '"action": "unchanged"' in again.stdout and '"bytes_uploaded": 0' in again.stdout

    # A run on the pool carries the pinned digest into its ECS task definition.
    started = server.cli("deployment", "run", "etl/etl", check=True)
    run_id = UUID_RE.search(started.stdout).group(0)  # type: ignore[union-attr]
    task_arn = submitted_task(server, run_id)
    ecs = aws.client("ecs", endpoint_url=moto_endpoint)
    (task,) = ecs.describe_tasks(cluster="skylane-prod", tasks=[task_arn])["tasks"]
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])
    assert definition["taskDefinition"]["containerDefinitions"][0]["image"] == image
    server.cli("run", "cancel", run_id, check=True)


def test_a_git_sourced_deployment_runs_the_pinned_commit_and_records_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    remote = GitRemote.create(tmp_path, {"flows/etl.py": ETL_FLOW})
    pinned = remote.head

    server.cli("pool", "create", "local", "--type", "process:push", check=True)
    server.cli(
        "init", "--recipe", "git", "--name", "etl", "--pool", "local",
        "--git-url", remote.url, check=True,
    )  # fmt: skip
    server.cli("deploy", check=True, timeout=120)
    # A later push changes nothing for the deployment until it is deployed again.
    remote.push({"flows/etl.py": "def etl(day: str = 'x') -> None:\n    print('two')\n"}, "2")

    deployment = server.cli_json("deployment", "inspect", "etl/etl")
    assert deployment["source"]["commit"] == pinned
    started = server.cli("deployment", "run", "etl/etl", "--param", "day=friday", check=True)
    run_id = UUID_RE.search(started.stdout).group(0)  # type: ignore[union-attr]
    run = server.wait_for_state(run_id, {"COMPLETED", "FAILED", "CRASHED"})
    assert run["state"] == "COMPLETED", run["state_message"]
    assert run["source_commit"] == pinned
    logs = server.cli("run", "logs", run_id, check=True).stdout
    assert "etl for friday" in logs and "two" not in logs
    assert pinned in server.cli("run", "inspect", run_id, check=True).stdout

"""`skylane pool provision` / `pool deprovision` for `ecs:push`, end to end: the CLI against a
real server, provisioning in moto_server with the caller's (fake) credentials, and a run on the
provisioned pool reaching ECS with the provisioned values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from skylane.provisioning import base
from skylane.testing.moto import FAKE_AWS_ENV
from skylane.testing.server import ServerProcess, running_server
from tests.e2e.conftest import FAST_SETTINGS, start_run
from tests.e2e.test_ecs_push import submitted_task
from tests.unit.terraform_static import check_emitted_root

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flows:1.0"
FLOW = "def etl(day: str = 'today') -> None:\n    print('etl for', day)\n"


@pytest.fixture
def server(aws: boto3.Session, tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(
        f"sqlite:///{tmp_path / 'skylane.db'}",
        workdir=tmp_path / "project",
        home=tmp_path / "home",
        settings={**FAST_SETTINGS, **FAKE_AWS_ENV},
    ) as started:
        (started.workdir / "flows").mkdir()
        (started.workdir / "flows" / "etl.py").write_text(FLOW)
        yield started


def provision(server: ServerProcess, endpoint: str, *extra: str) -> str:
    result = server.cli(
        "pool",
        "provision",
        "aws",
        "--type",
        "ecs:push",
        "--region",
        "us-east-1",
        "--setting",
        f"endpoint_url={endpoint}",
        *extra,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def skylane_named_roles(aws: boto3.Session, endpoint: str) -> list[str]:
    iam = aws.client("iam", endpoint_url=endpoint)
    return sorted(
        r["RoleName"] for r in iam.list_roles()["Roles"] if "skylane-aws" in r["RoleName"]
    )


def test_provision_plans_applies_records_and_deprovisions(
    server: ServerProcess, aws: boto3.Session, moto_endpoint: str, tmp_path: Path
) -> None:
    ecr = aws.client("ecr", endpoint_url=moto_endpoint)

    # --dry-run prints the plan and changes nothing: no pool, no resources.
    planned = provision(server, moto_endpoint, "--dry-run")
    assert "create" in planned and "skylane-aws-dispatcher" in planned
    assert "dry run: nothing was changed" in planned
    assert ecr.describe_repositories()["repositories"] == []
    assert server.cli("pool", "inspect", "aws").returncode != 0

    # Without a terminal and without --yes it refuses, and still changes nothing.
    refused = server.cli(
        "pool", "provision", "aws", "--type", "ecs:push", "--region", "us-east-1",
        "--setting", f"endpoint_url={moto_endpoint}",
    )  # fmt: skip
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert ecr.describe_repositories()["repositories"] == []

    applied = provision(server, moto_endpoint, "--yes")
    assert "pool aws created" in applied
    # The dispatcher role is offered, not imposed; the caller's credentials are not stored.
    assert "--credential role_arn=arn:aws:iam::123456789012:role/skylane-aws-dispatcher" in applied
    pool = server.cli_json("pool", "inspect", "aws", "--output", "json")
    assert pool["credentials"] is None
    # Where `skylane deploy` will push the pool's images.
    assert pool["settings"]["image_repository"] == (
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/skylane-aws"
    )
    records = pool["provisioned_resources"]
    kinds = {(r["kind"], r["name"]) for r in records}
    assert ("ecr-repository", "skylane-aws") in kinds and ("ecs-cluster", "skylane-aws") in kinds
    assert all(r["created"] for r in records if r["kind"] != "vpc")  # the default VPC is adopted
    defaults = {
        name: spec.get("default")
        for name, spec in pool["base_job_template"]["variables"]["properties"].items()
    }
    assert defaults["cluster"].endswith(":cluster/skylane-aws")
    assert defaults["execution_role_arn"].endswith(":role/skylane-aws-execution")
    assert defaults["network_configuration"]["subnets"]
    assert skylane_named_roles(aws, moto_endpoint) == [
        "skylane-aws-dispatcher",
        "skylane-aws-execution",
        "skylane-aws-task",
    ]

    # A second run plans everything as there already and changes nothing; it can write the
    # Terraform root module that adopts what the first created.
    again = provision(server, moto_endpoint, "--yes", "--emit-terraform", str(tmp_path / "tf"))
    assert "nothing to do" in again
    assert "import blocks" in again and "terraform init && terraform plan" in again
    imports = check_emitted_root(
        tmp_path / "tf", "ecs", [base.Provisioned.from_json(r) for r in records]
    )
    assert imports["module.pool.aws_iam_role.dispatcher"] == "skylane-aws-dispatcher"
    assert (
        server.cli_json("pool", "inspect", "aws", "--output", "json")["provisioned_resources"]
        == records
    )

    # A deployment on the provisioned pool needs nothing but its image.
    server.cli(
        "deployment", "create", "nightly", "--entrypoint", "flows/etl.py:etl", "--pool", "aws",
        "--image", IMAGE, check=True,
    )  # fmt: skip
    rendered = json.loads(server.cli("deployment", "render", "etl/nightly", check=True).stdout)
    assert defaults["cluster"] in json.dumps(rendered)
    run_id = start_run(server)
    task_arn = submitted_task(server, run_id)
    assert ":task/skylane-aws/" in task_arn  # pushed to the provisioned cluster
    server.cli("run", "cancel", run_id, check=True)
    server.wait_for_state(run_id, {"CANCELLED"})
    server.cli("deployment", "delete", "etl/nightly", "--yes", check=True)

    removed = server.cli("pool", "deprovision", "aws", "--yes")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert ecr.describe_repositories()["repositories"] == []
    assert skylane_named_roles(aws, moto_endpoint) == []
    assert aws.client("ec2", endpoint_url=moto_endpoint).describe_vpcs(
        Filters=[{"Name": "isDefault", "Values": ["true"]}]
    )["Vpcs"]  # adopted, left alone
    left = server.cli_json("pool", "inspect", "aws", "--output", "json")["provisioned_resources"]
    assert [r["kind"] for r in left] == ["vpc"]


def test_provisioning_a_type_without_a_provisioner_says_which_can(server: ServerProcess) -> None:
    result = server.cli("pool", "provision", "local", "--type", "process:push", "--dry-run")
    assert result.returncode != 0
    assert "cannot provision process:push pools" in result.stderr
    assert "ecs:push, cloud-run:push, aci:push" in result.stderr
    # Where to provision only means something with --provision-infra.
    plain = server.cli("pool", "create", "gcp", "--type", "cloud-run:push", "--project", "p")
    assert plain.returncode != 0 and "--project is for --provision-infra" in plain.stderr
    assert server.cli("pool", "inspect", "gcp").returncode != 0


def test_pool_create_with_provision_infra_does_both_in_one_go(
    server: ServerProcess, aws: boto3.Session, moto_endpoint: str
) -> None:
    created = server.cli(
        "pool", "create", "aws", "--type", "ecs:push", "--provision-infra", "--yes",
        "--region", "us-east-1", "--setting", f"endpoint_url={moto_endpoint}",
        "--description", "nightly flows", "--concurrency-limit", "3",
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    pool = server.cli_json("pool", "inspect", "aws", "--output", "json")
    assert (pool["description"], pool["concurrency_limit"]) == ("nightly flows", 3)
    assert pool["settings"]["region"] == "us-east-1"
    assert any(r["kind"] == "ecs-cluster" and r["created"] for r in pool["provisioned_resources"])
    assert skylane_named_roles(aws, moto_endpoint)

    again = server.cli(
        "pool", "create", "aws", "--type", "ecs:push", "--provision-infra", "--yes",
        "--setting", f"endpoint_url={moto_endpoint}",
    )  # fmt: skip
    assert again.returncode != 0 and "use `pool provision`" in again.stderr

    assert server.cli("pool", "deprovision", "aws", "--yes").returncode == 0
    assert skylane_named_roles(aws, moto_endpoint) == []


def test_a_pool_with_its_own_vpc_is_deprovisioned_down_to_nothing(
    server: ServerProcess, aws: boto3.Session, moto_endpoint: str
) -> None:
    ec2 = aws.client("ec2", endpoint_url=moto_endpoint)
    vpcs_before = {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]}
    provision(server, moto_endpoint, "--create-vpc", "--yes")
    records = server.cli_json("pool", "inspect", "aws", "--output", "json")["provisioned_resources"]
    [vpc] = [r["id"] for r in records if r["kind"] == "vpc"]
    assert vpc not in vpcs_before and any(r["kind"] == "security-group" for r in records)

    removed = server.cli("pool", "deprovision", "aws", "--yes")

    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]} == vpcs_before
    assert (
        server.cli_json("pool", "inspect", "aws", "--output", "json")["provisioned_resources"] == []
    )
    assert skylane_named_roles(aws, moto_endpoint) == []

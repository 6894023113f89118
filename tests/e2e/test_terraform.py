"""Our Terraform through a real `terraform` binary, wherever one is installed (these skip,
saying why, elsewhere; tests/unit/test_terraform_modules.py checks the same files statically
everywhere):

- every module and example passes `terraform validate` and `terraform fmt -check`, where its
  providers can be installed;
- against moto_server, what `skylane pool provision --emit-terraform` writes imports every
  provisioned resource, and after `terraform apply` a second plan has nothing to change;
- the AWS example root creates a pool's infrastructure, `skylane pool create
  --from-terraform-output` registers it, a run lands on the cluster Terraform made, and the
  provisioner sees every resource as the pool's own, nothing to change.

Providers are found offline in the filesystem mirror `SKYLANE_TEST_TERRAFORM_PLUGINS` names (a
`registry.terraform.io/hashicorp/<name>/<version>/...` tree; `.ci/run` sets it where the machine
has one), or else downloaded from the registry. Google and Azure have no emulator Terraform's
providers could talk to here, so their modules are validated, not applied."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from skylane.pool_types import parse_pool_type
from skylane.provisioning import base, terraform
from skylane.provisioning.registry import ProvisionOptions, provisioner_for
from skylane.testing.moto import FAKE_AWS_ENV
from skylane.testing.server import ServerProcess, running_server
from tests.e2e.conftest import FAST_SETTINGS, start_run, write_etl_flow
from tests.e2e.test_ecs_push import submitted_task

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flows:1.0"
# The services our AWS modules call, each sent to moto_server.
SERVICES = ("ec2", "ecr", "ecs", "iam", "logs", "sts")
# Commands that would otherwise ask for missing values on a terminal.
INPUT = {command: ("-input=false",) for command in ("init", "plan", "apply")}
NO_REGISTRY = ("Failed to query available provider packages", "could not connect to registry")


class Terraform:
    """`terraform` in one root directory, with the provider pointed at moto_server."""

    def __init__(self, root: Path, endpoint: str | None, cli_config: Path | None) -> None:
        self.root = root
        self.env = {**os.environ, **FAKE_AWS_ENV, "TF_IN_AUTOMATION": "1", "NO_COLOR": "1"}
        if cli_config is not None:
            self.env["TF_CLI_CONFIG_FILE"] = str(cli_config)
        if endpoint is None:
            return
        endpoints = "\n".join(f'    {service} = "{endpoint}"' for service in SERVICES)
        # An override file merges into the root's provider block: moto, fake credentials.
        (root / "moto_override.tf").write_text(
            'provider "aws" {\n'
            '  access_key                  = "testing"\n'
            '  secret_key                  = "testing"\n'
            "  skip_credentials_validation = true\n"
            "  skip_metadata_api_check     = true\n"
            f"  endpoints {{\n{endpoints}\n  }}\n"
            "}\n"
        )

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["terraform", *args, "-no-color", *INPUT.get(args[0], ())],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"terraform {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
        return result

    def init(self, *, backend: bool = True) -> None:
        result = self("init", *(() if backend else ("-backend=false",)), check=False)
        if result.returncode != 0 and any(s in result.stderr for s in NO_REGISTRY):
            missing = sorted(set(re.findall(r"hashicorp/[a-z0-9-]+", result.stderr)))
            pytest.skip(
                f"provider {', '.join(missing) or '?'} cannot be installed here (no registry; "
                "SKYLANE_TEST_TERRAFORM_PLUGINS names a provider mirror)"
            )
        assert result.returncode == 0, result.stdout + result.stderr

    def plan_summary(self) -> tuple[int, str]:
        """`terraform plan -detailed-exitcode`: its exit code and its "Plan: ..." line."""
        result = self("plan", "-detailed-exitcode", check=False)
        assert result.returncode in (0, 2), result.stdout + result.stderr
        summary = re.search(r"^(Plan: .*|No changes\..*)$", result.stdout, re.M)
        assert summary, result.stdout
        return result.returncode, summary.group(1)


@pytest.fixture(scope="module")
def cli_config(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed (make terraform-validate says so too)")
    mirror = os.environ.get("SKYLANE_TEST_TERRAFORM_PLUGINS")
    if not mirror:
        return None
    # Providers in the mirror come only from there (Terraform would ask the registry too).
    held = sorted(
        "/".join(path.relative_to(mirror).parts)
        for path in Path(mirror).glob("*/*/*")
        if path.is_dir()
    )
    listed = ", ".join(f'"{name}"' for name in held)
    config = tmp_path_factory.mktemp("terraform") / "terraform.rc"
    config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror}"\n    include = [{listed}]\n  }}\n'
        f"  direct {{\n    exclude = [{listed}]\n  }}\n"
        "}\n"
    )
    return config


@pytest.fixture
def moto(aws: boto3.Session, moto_endpoint: str) -> str:
    return moto_endpoint


TERRAFORM_DIRS = sorted((REPO / "terraform").glob("*/*/main.tf"))


@pytest.mark.parametrize(
    "main", TERRAFORM_DIRS, ids=lambda p: "/".join(p.parent.relative_to(REPO).parts[1:])
)
def test_terraform_validate(main: Path, cli_config: Path | None, tmp_path: Path) -> None:
    # A copy, so that .terraform/ and the lock file never land in the source tree; examples
    # call ../../modules, so the tree is copied whole.
    shutil.copytree(REPO / "terraform", tmp_path / "terraform")
    root = tmp_path / "terraform" / main.parent.relative_to(REPO / "terraform")
    tf = Terraform(root, None, cli_config)
    tf.init(backend=False)
    result = tf("validate", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success! The configuration is valid." in result.stdout


def test_terraform_fmt_check(cli_config: Path | None) -> None:
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", "-no-color", "terraform"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{result.stdout}"


def test_emitted_root_adopts_what_provision_created_and_then_plans_no_change(
    moto: str, cli_config: Path | None, tmp_path: Path
) -> None:
    # A VPC of the pool's own: every resource kind the module has (the default VPC's data
    # sources are planned in the example's test below).
    kind = parse_pool_type("ecs:push")
    options = ProvisionOptions(region=REGION, create_vpc=True, settings={"endpoint_url": moto})
    provisioner = provisioner_for(kind, "prod", options)
    records = base.apply(base.plan(provisioner.steps, provisioner.context), provisioner.context)
    root = terraform.emit_root_module(
        tmp_path / "tf", kind, "prod", provisioner.pool_settings, records
    )
    tf = Terraform(root.directory, moto, cli_config)
    tf.init()

    code, summary = tf.plan_summary()
    assert summary == f"Plan: {len(root.imports)} to import, 0 to add, 0 to change, 0 to destroy."
    assert code == 2  # imports are changes to the state
    tf("apply", "-auto-approve")
    code, summary = tf.plan_summary()
    assert (code, summary.split(".")[0]) == (0, "No changes")
    state = tf("state", "list").stdout.split()
    managed = {address for address in state if ".data." not in address}
    assert managed == {
        f"module.pool.{address}" for address in terraform.module_addresses("ecs", records)
    }
    # The outputs hold what the provisioner set as the pool's template defaults.
    outputs = json.loads(tf("output", "-json").stdout)
    defaults = outputs[terraform.DEFAULTS_OUTPUT]["value"]
    assert defaults == json.loads(json.dumps(provisioner.context.defaults))


@pytest.fixture
def server(moto: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(
        f"sqlite:///{tmp_path / 'skylane.db'}",
        workdir=write_etl_flow(tmp_path / "project"),
        home=tmp_path / "home",
        settings={**FAST_SETTINGS, **FAKE_AWS_ENV},
    ) as started:
        yield started


def test_example_root_creates_a_pool_skylane_registers_and_runs_on(
    server: ServerProcess, moto: str, cli_config: Path | None, tmp_path: Path
) -> None:
    # The example calls the module by relative path: copy the tree as it is.
    shutil.copytree(REPO / "terraform", tmp_path / "terraform")
    root = tmp_path / "terraform" / "examples" / "aws-ecs-push-pool"
    tf = Terraform(root, moto, cli_config)
    tf.init()
    tf("apply", "-auto-approve", "-var", "pool_name=tf", "-var", f"region={REGION}")
    (tmp_path / "pool.json").write_text(tf("output", "-json").stdout)

    created = server.cli(
        "pool", "create", "tf", "--type", "ecs:push",
        "--from-terraform-output", str(tmp_path / "pool.json"),
        "--setting", f"endpoint_url={moto}",
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    assert "--credential role_arn=arn:aws:iam::123456789012:role/skylane-tf-dispatcher" in (
        created.stdout
    )
    pool = server.cli_json("pool", "inspect", "tf", "--output", "json")
    assert pool["settings"]["image_repository"] == (
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/skylane-tf"
    )
    # The provisioner finds everything Terraform made as the pool's own, with no drift.
    planned = server.cli(
        "pool", "provision", "tf", "--type", "ecs:push", "--region", REGION,
        "--setting", f"endpoint_url={moto}", "--dry-run",
    )  # fmt: skip
    assert planned.returncode == 0, planned.stdout + planned.stderr
    rows = [line.split() for line in planned.stdout.splitlines() if "tf" in line]
    assert [(row[1], row[2:]) for row in rows] == [
        ("skylane-tf", ["exists"]),
        ("skylane-tf-execution", ["exists"]),
        ("skylane-tf-task", ["exists"]),
        ("skylane-tf", ["exists"]),
        ("/skylane/tf", ["exists"]),
        ("skylane-tf-dispatcher", ["exists"]),
    ], planned.stdout  # owned (tagged for the pool), none adopted, none drifted

    # A deployment needs nothing but its image; its run lands on Terraform's cluster.
    server.cli(
        "deployment", "create", "nightly", "--entrypoint", "flows/etl.py:etl", "--pool", "tf",
        "--image", IMAGE, check=True,
    )  # fmt: skip
    run_id = start_run(server)
    task_arn = submitted_task(server, run_id)
    assert ":task/skylane-tf/" in task_arn
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=moto)
    task = ecs.describe_tasks(cluster="skylane-tf", tasks=[task_arn])["tasks"][0]
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])
    assert definition["taskDefinition"]["executionRoleArn"].endswith(":role/skylane-tf-execution")
    server.cli("run", "cancel", run_id, check=True)
    server.wait_for_state(run_id, {"CANCELLED"})

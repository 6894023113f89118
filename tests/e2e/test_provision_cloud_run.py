"""`skylane pool provision` / `pool deprovision` for `cloud-run:push`, end to end: the CLI
against a real server, provisioning through the official Google clients (Service Usage,
Artifact Registry, Resource Manager over REST, IAM over gRPC) into the local emulator, then a
run on the provisioned pool that needs no job variable but its image, running as the
provisioned service account."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.artifactregistry_v1")

from skylane.testing.gcp import CloudRunEmulator  # noqa: E402
from skylane.testing.gcp_platform import MUTATING_RPCS  # noqa: E402
from skylane.testing.server import ServerProcess  # noqa: E402
from tests.e2e.conftest import TERMINAL, start_run, write_etl_flow  # noqa: E402

PROJECT = "skylane-e2e"
REGION = "europe-west1"
APIS = ["artifactregistry.googleapis.com", "iam.googleapis.com", "run.googleapis.com"]
RUNTIME = f"skl-gcp-run@{PROJECT}.iam.gserviceaccount.com"
DISPATCHER = f"skl-gcp-dispatch@{PROJECT}.iam.gserviceaccount.com"
REPOSITORY = f"projects/{PROJECT}/locations/{REGION}/repositories/skylane-gcp"
THEIRS = f"projects/{PROJECT}/locations/{REGION}/repositories/team-images"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[CloudRunEmulator]:
    workdir = write_etl_flow(tmp_path / "project")
    # A project as Google hands it out: the APIs the pool needs are off until enabled.
    with CloudRunEmulator(
        run_containers=True, workdir=workdir, start_seconds=0.1, platform_apis_enabled=False
    ) as started:
        yield started


@pytest.fixture
def server(emulator: object, sqlite_server: ServerProcess) -> ServerProcess:
    """The control plane, started after the emulator (and so stopped before it)."""
    return sqlite_server


def provision(server: ServerProcess, emulator: CloudRunEmulator, *extra: str) -> str:
    result = server.cli(
        "pool", "provision", "gcp", "--type", "cloud-run:push",
        "--project", PROJECT, "--region", REGION,
        "--setting", f"endpoint_url={emulator.url}",
        "--setting", f"iam_endpoint={emulator.iam_target}",
        *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def members(emulator: CloudRunEmulator, role: str) -> list[str]:
    bindings = emulator.project_policy(PROJECT).get("bindings", [])
    return sorted(m for b in bindings if b["role"] == role for m in b["members"])


def test_provision_runs_a_flow_as_the_provisioned_account_and_deprovisions(
    server: ServerProcess, emulator: CloudRunEmulator
) -> None:
    emulator.enable_service(PROJECT, "artifactregistry.googleapis.com")
    emulator.add_repository(THEIRS)  # the team's own: never skylane's to remove
    emulator.set_project_policy(PROJECT, [{"role": "roles/owner", "members": ["user:a@x.io"]}])

    planned = provision(server, emulator, "--dry-run")
    assert "dry run: nothing was changed" in planned
    assert "skylane-gcp" in planned and "skl-gcp-dispatch" in planned
    assert emulator.enabled_services(PROJECT) == ["artifactregistry.googleapis.com"]
    assert [r["name"] for r in emulator.repositories()] == [THEIRS]
    assert emulator.service_accounts(PROJECT) == []
    assert server.cli("pool", "inspect", "gcp").returncode != 0

    applied = provision(
        server,
        emulator,
        "--yes",
        "--control-plane",
        "serviceAccount:cp@ops.iam.gserviceaccount.com",
    )
    assert "pool gcp created" in applied
    assert f"--credential impersonate_service_account={DISPATCHER}" in applied
    assert emulator.enabled_services(PROJECT) == APIS
    repository = emulator.repository(REPOSITORY)
    assert repository["labels"] == {"skylane-pool": "gcp"}
    assert sorted(a["email"] for a in emulator.service_accounts(PROJECT)) == [DISPATCHER, RUNTIME]
    assert members(emulator, "roles/run.developer") == [f"serviceAccount:{DISPATCHER}"]
    assert members(emulator, "roles/owner") == ["user:a@x.io"]  # untouched
    [act_as] = emulator.service_account_policy(RUNTIME)["bindings"]
    assert act_as["role"] == "roles/iam.serviceAccountUser"
    assert act_as["members"] == [f"serviceAccount:{DISPATCHER}"]

    pool = server.cli_json("pool", "inspect", "gcp", "--output", "json")
    assert pool["credentials"] is None  # the dispatcher is offered, not imposed
    assert pool["settings"]["image_repository"] == f"{REGION}-docker.pkg.dev/{PROJECT}/skylane-gcp"
    defaults = {
        name: spec.get("default")
        for name, spec in pool["base_job_template"]["variables"]["properties"].items()
    }
    assert (defaults["project"], defaults["region"]) == (PROJECT, REGION)
    assert defaults["service_account_name"] == RUNTIME
    records = pool["provisioned_resources"]
    # Only the API that was on before is not skylane's doing.
    assert [r["name"] for r in records if not r["created"]] == ["artifactregistry.googleapis.com"]
    assert {r["kind"] for r in records} >= {
        "service-api",
        "artifact-registry-repository",
        "service-account",
        "project-iam-binding",
        "service-account-iam-binding",
    }

    # Again: everything exists, nothing is sent that changes the project, the records stay.
    seen = len(emulator.requests())
    again = provision(
        server,
        emulator,
        "--yes",
        "--control-plane",
        "serviceAccount:cp@ops.iam.gserviceaccount.com",
    )
    assert "nothing to do" in again
    assert [r.rpc for r in emulator.requests()[seen:] if r.rpc in MUTATING_RPCS] == []
    assert (
        server.cli_json("pool", "inspect", "gcp", "--output", "json")["provisioned_resources"]
        == records
    )

    # A deployment on the provisioned pool needs nothing but its image, and runs as the
    # runtime account in the provisioned project and region.
    server.cli(
        "deployment", "create", "nightly", "--entrypoint", "flows/etl.py:etl", "--pool", "gcp",
        "--image", f"{pool['settings']['image_repository']}/etl:1", check=True,
    )  # fmt: skip
    run_id = start_run(server)
    assert server.wait_for_state(run_id, TERMINAL)["state"] == "COMPLETED"
    [create] = emulator.requests(rpc="CreateJob")
    assert create.path.startswith(f"/v2/projects/{PROJECT}/locations/{REGION}/jobs")
    assert create.body["template"]["template"]["serviceAccount"] == RUNTIME
    server.cli("deployment", "delete", "etl/nightly", "--yes", check=True)

    removed = server.cli("pool", "deprovision", "gcp", "--yes")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "left in place on purpose: service-api" in removed.stdout
    assert [r["name"] for r in emulator.repositories()] == [THEIRS]
    assert emulator.service_accounts(PROJECT) == []
    assert members(emulator, "roles/run.developer") == []
    assert members(emulator, "roles/owner") == ["user:a@x.io"]
    assert emulator.enabled_services(PROJECT) == APIS  # never turned off
    left = server.cli_json("pool", "inspect", "gcp", "--output", "json")["provisioned_resources"]
    assert {r["kind"] for r in left} == {"service-api"}


def test_a_refused_step_rolls_back_and_names_the_permission(
    server: ServerProcess, emulator: CloudRunEmulator
) -> None:
    emulator.fail_next(
        403,
        rpc="CreateServiceAccount",
        message="Permission 'iam.serviceAccounts.create' denied on resource (or it may not exist).",
    )
    result = server.cli(
        "pool", "provision", "gcp", "--type", "cloud-run:push", "--yes",
        "--project", PROJECT, "--region", REGION,
        "--setting", f"endpoint_url={emulator.url}",
        "--setting", f"iam_endpoint={emulator.iam_target}",
    )  # fmt: skip
    assert result.returncode != 0
    assert "service-account skl-gcp-run" in result.stderr
    assert "iam.serviceAccounts.create" in result.stderr
    assert "grant your Google Cloud credentials" in result.stderr
    assert "rolled back: artifact-registry-repository skylane-gcp" in result.stderr
    assert emulator.repositories() == [] and emulator.service_accounts(PROJECT) == []
    # The pool exists (so a re-run picks up), with nothing recorded as provisioned.
    pool = server.cli_json("pool", "inspect", "gcp", "--output", "json")
    assert pool["provisioned_resources"] == []

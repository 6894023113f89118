"""`skylane pool provision` / `pool deprovision` for `aci:push`, end to end: the CLI against a
real server, provisioning through the official Azure management clients (resources, container
registry, managed identities, authorization) into the local ARM emulator over TLS, then a run
on the provisioned pool that needs no job variable but its image, pulling it with the
provisioned identity."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("azure.mgmt.containerregistry")

from skylane.provisioning.azure import registry_name  # noqa: E402
from skylane.testing.azure import AciEmulator  # noqa: E402
from skylane.testing.azure_resources import MUTATING  # noqa: E402
from skylane.testing.server import ServerProcess  # noqa: E402
from tests.e2e.conftest import TERMINAL, start_run, write_etl_flow  # noqa: E402

SUBSCRIPTION = "5e0c0000-0000-4000-8000-0000000e2e08"
LOCATION = "westeurope"
GROUP = "flows"
CONTROL_PLANE = "0b5e0000-0000-4000-8000-00000000c0de"
REGISTRY = registry_name(SUBSCRIPTION, "azure")


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[AciEmulator]:
    workdir = write_etl_flow(tmp_path / "project")
    # Only resource groups that exist (made by hand or by provisioning) can hold anything.
    with AciEmulator(
        run_containers=True, workdir=workdir, provision_seconds=0.2, resource_groups=[]
    ) as started:
        started.configure_resources(operation_seconds=0.2)
        yield started


@pytest.fixture
def server(emulator: object, sqlite_server: ServerProcess) -> ServerProcess:
    """The control plane, started after the emulator (and so stopped before it)."""
    return sqlite_server


def provision(server: ServerProcess, emulator: AciEmulator, *extra: str) -> str:
    result = server.cli(
        "pool", "provision", "azure", "--type", "aci:push",
        "--subscription", SUBSCRIPTION, "--region", LOCATION, "--resource-group", GROUP,
        "--setting", f"endpoint_url={emulator.url}",
        "--setting", f"ca_bundle={emulator.ca_bundle}",
        "--setting", "lro_poll_seconds=0.1",
        *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def names(items: list[dict]) -> list[str]:
    return sorted(item["name"] for item in items)


def test_provision_runs_a_flow_with_the_provisioned_identity_and_deprovisions(
    server: ServerProcess, emulator: AciEmulator
) -> None:
    # The team's resource group, with a registry of its own: used, never removed.
    emulator.add_resource_group(GROUP, subscription=SUBSCRIPTION, location=LOCATION)
    emulator.add_registry("teamimages", subscription=SUBSCRIPTION, resource_group=GROUP)

    planned = provision(server, emulator, "--dry-run")
    assert "dry run: nothing was changed" in planned
    assert REGISTRY in planned and "skylane-azure-dispatcher" in planned
    assert names(emulator.registries()) == ["teamimages"]
    assert emulator.identities() == [] and emulator.role_definitions() == []
    assert server.cli("pool", "inspect", "azure").returncode != 0

    applied = provision(server, emulator, "--yes", "--control-plane", CONTROL_PLANE)
    assert "pool azure created" in applied
    assert "--credential managed_identity_client_id=" in applied
    [registry] = [r for r in emulator.registries() if r["name"] == REGISTRY]
    assert registry["tags"] == {"skylane-pool": "azure"}
    assert registry["properties"]["adminUserEnabled"] is False  # keyless
    assert names(emulator.identities()) == [
        "skylane-azure-dispatcher",
        "skylane-azure-runtime",
    ]
    [role] = emulator.role_definitions()
    assert role["properties"]["assignableScopes"] == [
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
    ]
    assert not any(
        a.endswith("/*") for p in role["properties"]["permissions"] for a in p["actions"]
    )
    grants = {
        (a["properties"]["principalId"], a["properties"]["scope"].rsplit("/", 2)[-2])
        for a in emulator.role_assignments()
    }
    assert (CONTROL_PLANE, "resourceGroups") in grants
    assert len(grants) == 3  # AcrPull for the runtime, the dispatch role twice

    pool = server.cli_json("pool", "inspect", "azure", "--output", "json")
    assert pool["credentials"] is None
    assert pool["settings"]["image_repository"] == f"{REGISTRY}.azurecr.io"
    defaults = {
        name: spec.get("default")
        for name, spec in pool["base_job_template"]["variables"]["properties"].items()
    }
    runtime_id = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/skylane-azure-runtime"
    )
    assert defaults["subscription_id"] == SUBSCRIPTION
    assert (defaults["resource_group_name"], defaults["location"]) == (GROUP, LOCATION)
    assert defaults["image_registry"] == {
        "registry_url": f"{REGISTRY}.azurecr.io",
        "identity": runtime_id,
    }
    records = pool["provisioned_resources"]
    assert [r["kind"] for r in records if not r["created"]] == ["resource-group"]  # the team's

    # Again: all exists, nothing that changes anything is sent, the records stay.
    seen = len(emulator.requests())
    again = provision(server, emulator, "--yes")
    assert "nothing to do" in again
    assert [r.operation for r in emulator.requests()[seen:] if r.operation in MUTATING] == []
    assert (
        server.cli_json("pool", "inspect", "azure", "--output", "json")["provisioned_resources"]
        == records
    )

    # A deployment on the pool needs only its image; the group pulls it with the identity.
    server.cli(
        "deployment", "create", "nightly", "--entrypoint", "flows/etl.py:etl", "--pool", "azure",
        "--image", f"{REGISTRY}.azurecr.io/etl:1", check=True,
    )  # fmt: skip
    run_id = start_run(server)
    assert server.wait_for_state(run_id, TERMINAL)["state"] == "COMPLETED"
    [put] = [
        r
        for r in emulator.requests("containerGroups.createOrUpdate")
        if r.method == "PUT" and r.status == 201
    ]
    assert f"/resourceGroups/{GROUP}/" in put.path
    assert put.body["properties"]["imageRegistryCredentials"] == [
        {"server": f"{REGISTRY}.azurecr.io", "identity": runtime_id}
    ]
    assert list(put.body["identity"]["userAssignedIdentities"]) == [runtime_id]
    server.cli("deployment", "delete", "etl/nightly", "--yes", check=True)

    removed = server.cli("pool", "deprovision", "azure", "--yes")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert names(emulator.registries()) == ["teamimages"]
    assert emulator.identities() == []
    assert emulator.role_assignments() == [] and emulator.role_definitions() == []
    assert emulator.resource_group(GROUP, SUBSCRIPTION)  # the team's group stays
    left = server.cli_json("pool", "inspect", "azure", "--output", "json")["provisioned_resources"]
    assert [r["kind"] for r in left] == ["resource-group"]


def test_a_refused_step_rolls_back_to_nothing_and_names_the_permission(
    server: ServerProcess, emulator: AciEmulator
) -> None:
    emulator.fail_next(
        403, operation="userAssignedIdentities.createOrUpdate", code="AuthorizationFailed"
    )
    result = server.cli(
        "pool", "provision", "azure", "--type", "aci:push", "--yes",
        "--subscription", SUBSCRIPTION, "--region", LOCATION,
        "--setting", f"endpoint_url={emulator.url}",
        "--setting", f"ca_bundle={emulator.ca_bundle}",
        "--setting", "lro_poll_seconds=0.1",
    )  # fmt: skip
    assert result.returncode != 0
    assert "managed-identity skylane-azure-runtime" in result.stderr
    assert "grant your Azure credentials" in result.stderr
    assert "Microsoft.ManagedIdentity/userAssignedIdentities/write" in result.stderr
    assert "rolled back" in result.stderr
    # The group skylane made (and the registry in it) are gone again.
    assert emulator.arm_resource_groups() == [] and emulator.registries() == []
    pool = server.cli_json("pool", "inspect", "azure", "--output", "json")
    assert pool["provisioned_resources"] == []

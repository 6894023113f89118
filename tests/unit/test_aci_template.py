"""The ACI base job template and the pure path from a rendered job configuration to a container
group PUT (no Azure call). Bodies are checked against the official SDK's ContainerGroup model."""

from __future__ import annotations

import copy
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.mgmt.containerinstance.models import ContainerGroup

from skylane import templates
from skylane.adapters.aci import AciAdapter
from skylane.adapters.aci_template import (
    DEFAULT_COMMAND,
    IGNORED_KEYS,
    TAG_KEEP_GROUP,
    TAG_START_TIMEOUT,
    AciGroupRequest,
    default_template,
    describe_request,
    group_name_for,
)
from skylane.adapters.base import RunContext
from skylane.errors import InvalidInput
from skylane.models import Pool
from skylane.security import MASK
from skylane.settings import Settings

SUBSCRIPTION = "8f1c2d3e-0000-4000-8000-00000000a1c1"
IMAGE = "flows.azurecr.io/etl@sha256:" + "ab" * 32
TOKEN = "sklr_12345678123456781234567812345678_s3cr3t-run-token-value"
RUN_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
KEY = f"skl-{RUN_ID.hex}-1"
IDENTITY = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/flows/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/runner"
)
SUBNET = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/net/providers/Microsoft.Network/"
    "virtualNetworks/vnet/subnets/aci"
)
BLOCK_DOCUMENT = {"$ref": {"block_document_id": "6c2f1f0e-0000-4000-8000-000000000001"}}
# ACI container group names: lowercase letters, digits, single hyphens, not at either end.
NAME_RULE = re.compile(r"^[a-z0-9](?:-?[a-z0-9])*$")
BASE = {
    "image": IMAGE,
    "subscription_id": SUBSCRIPTION,
    "resource_group_name": "flows",
    "location": "westeurope",
}


def make_context(key: str = KEY) -> RunContext:
    return RunContext(
        run_id=RUN_ID,
        flow_name="etl",
        deployment_name="etl/Nightly",
        pool_name="azure",
        entrypoint="flows/etl.py:etl",
        api_url="https://skylane.example.com",
        run_token=TOKEN,
        idempotency_key=key,
        image=IMAGE,
    )


def make_pool(template: dict[str, Any], settings: dict[str, Any] | None = None) -> Pool:
    now = datetime.now(UTC)
    return Pool(
        id=uuid.uuid4(),
        name="azure",
        type="aci:push",
        base_job_template=template,
        settings=settings or {},
        created_at=now,
        updated_at=now,
    )


def build(
    job_variables: dict[str, Any] | None = None,
    *,
    template: dict[str, Any] | None = None,
    pool_settings: dict[str, Any] | None = None,
) -> AciGroupRequest:
    """Render through the adapter exactly as the dispatcher does."""
    template = template or default_template()
    _, configuration = templates.resolve_job_configuration(
        template, {**BASE, **(job_variables or {})}
    )
    adapter = AciAdapter(make_pool(template, pool_settings), Settings())
    return adapter.render(configuration, make_context())


def env_of(request: AciGroupRequest) -> dict[str, dict[str, Any]]:
    return {
        item["name"]: item for item in request.container()["properties"]["environmentVariables"]
    }


def unchecked_template() -> dict[str, Any]:
    """The default template with a schema that accepts anything: to show render checks each
    value itself."""
    template = copy.deepcopy(default_template())
    names = template["variables"]["properties"]
    template["variables"] = {"type": "object", "properties": {name: {} for name in names}}
    return template


def as_sdk_model(body: dict[str, Any]) -> ContainerGroup:
    return ContainerGroup.deserialize(json.loads(json.dumps(body)))


# --- the template ------------------------------------------------------------------------------


def test_default_template_is_valid_and_prefect_aci_shaped() -> None:
    template = default_template()
    templates.validate_base_job_template(template)
    configuration = template["job_configuration"]
    for key in ("image", "resource_group_name", "subscription_id", "identities", "cpu"):
        assert configuration[key] == "{{ " + key + " }}"
    resource = configuration["arm_template"]["resources"][0]
    assert resource["type"] == "Microsoft.ContainerInstance/containerGroups"
    assert resource["name"] == "[parameters('container_group_name')]"
    assert resource["properties"]["restartPolicy"] == "Never"
    variables = template["variables"]["properties"]
    for name in (
        "image",
        "subscription_id",
        "resource_group_name",
        "location",
        "cpu",
        "memory",
        "gpu_count",
        "gpu_sku",
        "identities",
        "image_registry",
        "subnet_ids",
        "dns_servers",
        "env",
        "secure_env",
        "labels",
        "os_type",
        "task_start_timeout_seconds",
        "keep_container_group",
    ):
        assert variables[name]["description"], name


def test_typical_variables_give_the_expected_group() -> None:
    request = build(
        {
            "cpu": 2,
            "memory": 3.5,
            "env": {"MODE": "nightly"},
            "labels": {"team": "data"},
            "identities": [IDENTITY],
            "subnet_ids": [SUBNET],
            "dns_servers": ["10.0.0.4"],
        }
    )
    assert request.group_name == KEY
    assert request.resource_id == (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/flows/providers/"
        f"Microsoft.ContainerInstance/containerGroups/{KEY}"
    )
    body = request.group
    assert body["location"] == "westeurope"
    container = request.container()
    assert container["name"] == "skylane"
    assert container["properties"]["image"] == IMAGE
    assert container["properties"]["command"] == DEFAULT_COMMAND
    assert container["properties"]["resources"]["requests"] == {"cpu": 2, "memoryInGB": 3.5}
    env = env_of(request)
    assert env["MODE"] == {"name": "MODE", "value": "nightly"}
    assert env["SKYLANE_RUN_ID"]["value"] == str(RUN_ID)
    assert env["SKYLANE_RUN_TOKEN"] == {"name": "SKYLANE_RUN_TOKEN", "secureValue": TOKEN}
    assert body["tags"]["team"] == "data"
    assert body["tags"]["skylane-run-id"] == str(RUN_ID)
    assert body["tags"][TAG_START_TIMEOUT] == "600"
    assert TAG_KEEP_GROUP not in body["tags"]
    assert body["identity"] == {
        "type": "UserAssigned",
        "userAssignedIdentities": {IDENTITY: {}},
    }
    assert body["properties"]["subnetIds"] == [{"id": SUBNET}]
    assert body["properties"]["dnsConfig"] == {"nameServers": ["10.0.0.4"]}
    assert body["properties"]["restartPolicy"] == "Never"
    assert body["properties"]["osType"] == "Linux"

    model = as_sdk_model(body)
    assert model.containers[0].resources.requests.memory_in_gb == 3.5
    assert model.identity.user_assigned_identities[IDENTITY] is not None
    assert model.subnet_ids[0].id == SUBNET


def test_pool_settings_fill_in_and_variables_win() -> None:
    template = default_template()
    settings = {
        "subscription_id": SUBSCRIPTION,
        "resource_group_name": "pool-rg",
        "location": "North Europe",
    }
    _, configuration = templates.resolve_job_configuration(template, {"image": IMAGE})
    adapter = AciAdapter(make_pool(template, settings), Settings())
    request = adapter.render(configuration, make_context())
    assert (request.resource_group, request.location) == ("pool-rg", "northeurope")
    _, configuration = templates.resolve_job_configuration(
        template, {"image": IMAGE, "resource_group_name": "mine", "location": "eastus2"}
    )
    request = adapter.render(configuration, make_context())
    assert (request.resource_group, request.location) == ("mine", "eastus2")


def test_gpu_registry_keep_and_start_timeout() -> None:
    request = build(
        {
            "gpu_count": 1,
            "gpu_sku": "V100",
            "image_registry": {"registry_url": "flows.azurecr.io", "identity": IDENTITY},
            "keep_container_group": True,
            "task_start_timeout_seconds": 120,
            "os_type": "Linux",
        }
    )
    requests = request.container()["properties"]["resources"]["requests"]
    assert requests["gpu"] == {"count": 1, "sku": "V100"}
    assert request.group["properties"]["imageRegistryCredentials"] == [
        {"server": "flows.azurecr.io", "identity": IDENTITY}
    ]
    # ACI pulls with an identity only when the group has it.
    assert IDENTITY in request.group["identity"]["userAssignedIdentities"]
    assert request.group["tags"][TAG_KEEP_GROUP] == "true"
    assert request.group["tags"][TAG_START_TIMEOUT] == "120"
    assert request.keep_group and request.start_timeout_seconds == 120
    assert as_sdk_model(request.group).containers[0].resources.requests.gpu.sku == "V100"


# --- secrets ------------------------------------------------------------------------------------


def test_secure_env_and_registry_password_are_references_resolved_at_submit() -> None:
    request = build(
        {
            "secure_env": {"DB_PASSWORD": {"env": "FLOWS_DB_PASSWORD"}},
            "image_registry": {
                "registry_url": "registry.example.com",
                "username": "puller",
                "password": {"env": "REGISTRY_PASSWORD"},
            },
            "env": {"API_TOKEN": "plain-but-secret-looking"},
        }
    )
    # Nothing secret is in the rendered request but the run token and secret-looking values.
    assert env_of(request)["DB_PASSWORD"] == {"name": "DB_PASSWORD", "secureValue": None}
    assert request.group["properties"]["imageRegistryCredentials"][0]["password"] is None
    body = request.resolved(
        {"FLOWS_DB_PASSWORD": "hunter2-db", "REGISTRY_PASSWORD": "hunter2-registry"}
    )
    env = {
        i["name"]: i
        for i in body["properties"]["containers"][0]["properties"]["environmentVariables"]
    }
    assert env["DB_PASSWORD"] == {"name": "DB_PASSWORD", "secureValue": "hunter2-db"}
    assert env["API_TOKEN"] == {"name": "API_TOKEN", "secureValue": "plain-but-secret-looking"}
    assert body["properties"]["imageRegistryCredentials"] == [
        {"server": "registry.example.com", "username": "puller", "password": "hunter2-registry"}
    ]
    # The request itself is unchanged: resolving never writes into it.
    assert env_of(request)["DB_PASSWORD"]["secureValue"] is None

    shown = json.dumps(describe_request(request))
    for secret in (TOKEN, "plain-but-secret-looking"):
        assert secret not in shown
        assert secret not in repr(request)
    assert shown.count(MASK) >= 3
    assert describe_request(request)["secure_values_from_environment"] == {
        "env:DB_PASSWORD": "FLOWS_DB_PASSWORD",
        "registry:registry.example.com": "REGISTRY_PASSWORD",
    }


def test_a_missing_environment_variable_names_the_job_variable_not_a_value() -> None:
    request = build({"secure_env": {"DB_PASSWORD": {"env": "FLOWS_DB_PASSWORD"}}})
    with pytest.raises(InvalidInput) as caught:
        request.resolved({})
    assert caught.value.field == "job_variables.secure_env.DB_PASSWORD"
    assert "FLOWS_DB_PASSWORD is not set" in caught.value.message


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"secure_env": {"DB_PASSWORD": "hunter2"}}, "job_variables.secure_env.DB_PASSWORD"),
        (
            {"image_registry": {"registry_url": "r.io", "username": "u", "password": "hunter2"}},
            "job_variables.image_registry.password",
        ),
    ],
)
def test_secret_values_are_refused_where_a_reference_belongs(
    variables: dict[str, Any], field: str
) -> None:
    # The schema refuses them (a 422 at deploy time, value not echoed)...
    with pytest.raises(InvalidInput) as caught:
        build(variables)
    assert caught.value.field.startswith(field) and "hunter2" not in str(caught.value)
    # ...and so does render, for a template whose schema does not.
    with pytest.raises(InvalidInput) as caught:
        build(variables, template=unchecked_template())
    assert caught.value.field == field
    assert "hunter2" not in str(caught.value)


def test_secret_values_written_into_the_arm_template_are_refused() -> None:
    template = default_template()
    container = template["job_configuration"]["arm_template"]["resources"][0]["properties"][
        "containers"
    ][0]
    container["properties"]["environmentVariables"] = [{"name": "X", "secureValue": "hunter2"}]
    with pytest.raises(InvalidInput) as caught:
        build(template=template)
    assert "environmentVariables[0]" in caught.value.field
    assert "hunter2" not in str(caught.value)


# --- names ---------------------------------------------------------------------------------------


def test_group_names_are_valid_deterministic_and_distinct() -> None:
    keys = [KEY, f"skl-{uuid.uuid4().hex}-2", "Not A Valid Name!", "x" * 80, "a--b", "-a"]
    names = [group_name_for(key) for key in keys]
    assert names[0] == KEY  # skylane's own keys name their run
    for key, name in zip(keys, names, strict=True):
        assert NAME_RULE.match(name) and len(name) <= 63, name
        assert group_name_for(key) == name
    assert len(set(names)) == len(names)


# --- Prefect -------------------------------------------------------------------------------------


def prefect_aci_template() -> dict[str, Any]:
    """A base job template as Prefect's `azure-container-instance` worker type documents it
    (prefect-azure's AzureContainerJobConfiguration and AzureContainerVariables), written here
    from that shape: credential blocks referenced by `$ref`, the ARM template with
    `[parameters(...)]` expressions and `{{ placeholders }}`."""
    arm_template = {
        "$schema": "https://schema.management.azure.com/schemas/2019-08-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "location": {
                "type": "string",
                "defaultValue": "[resourceGroup().location]",
                "metadata": {"description": "Location for all resources."},
            },
            "container_group_name": {
                "type": "string",
                "defaultValue": "[uniqueString(resourceGroup().id)]",
            },
            "container_name": {
                "type": "string",
                "defaultValue": "[uniqueString(resourceGroup().id)]",
            },
        },
        "resources": [
            {
                "type": "Microsoft.ContainerInstance/containerGroups",
                "apiVersion": "2022-09-01",
                "name": "[parameters('container_group_name')]",
                "location": "[parameters('location')]",
                "properties": {
                    "containers": [
                        {
                            "name": "[parameters('container_name')]",
                            "properties": {
                                "image": "{{ image }}",
                                "command": "{{ command }}",
                                "resources": {
                                    "requests": {"cpu": "{{ cpu }}", "memoryInGB": "{{ memory }}"}
                                },
                                "environmentVariables": [],
                            },
                        }
                    ],
                    "osType": "Linux",
                    "restartPolicy": "Never",
                },
            }
        ],
    }
    keys = [
        "command", "env", "labels", "name", "image", "resource_group_name", "subscription_id",
        "identities", "entrypoint", "image_registry", "cpu", "gpu_count", "gpu_sku", "memory",
        "subnet_ids", "dns_servers", "stream_output", "aci_credentials",
        "task_start_timeout_seconds", "task_watch_poll_interval", "keep_container_group",
    ]  # fmt: skip
    configuration: dict[str, Any] = {key: "{{ " + key + " }}" for key in keys}
    configuration["arm_template"] = arm_template
    text = {"type": "string"}
    return {
        "job_configuration": configuration,
        "variables": {
            "type": "object",
            "required": ["resource_group_name", "subscription_id"],
            "properties": {
                "name": text,
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "command": text,
                "image": {**text, "default": "prefecthq/prefect:3-python3.12"},
                "resource_group_name": text,
                "subscription_id": {**text, "format": "password", "writeOnly": True},
                "identities": {"type": "array", "items": text},
                "entrypoint": {**text, "default": "/opt/prefect/entrypoint.sh"},
                "image_registry": {"anyOf": [{"$ref": "#/definitions/ACRManagedIdentity"}, {}]},
                "cpu": {"type": "number", "default": 1.0},
                "gpu_count": {"type": "integer"},
                "gpu_sku": text,
                "memory": {"type": "number", "default": 1.0},
                "subnet_ids": {"type": "array", "items": text},
                "dns_servers": {"type": "array", "items": text},
                "aci_credentials": {
                    "allOf": [{"$ref": "#/definitions/AzureContainerInstanceCredentials"}],
                    "default": BLOCK_DOCUMENT,
                },
                "stream_output": {"type": "boolean", "default": False},
                "task_start_timeout_seconds": {"type": "integer", "default": 240},
                "task_watch_poll_interval": {"type": "number", "default": 5.0},
                "keep_container_group": {"type": "boolean", "default": False},
            },
            "definitions": {
                "ACRManagedIdentity": {
                    "type": "object",
                    "properties": {"registry_url": text, "identity": text},
                    "required": ["registry_url", "identity"],
                },
                "AzureContainerInstanceCredentials": {
                    "type": "object",
                    "properties": {"client_id": text, "tenant_id": text},
                },
            },
        },
    }


def test_prefect_aci_template_renders_into_an_accepted_request() -> None:
    template = prefect_aci_template()
    templates.validate_base_job_template(template)
    assert set(IGNORED_KEYS) <= set(template["job_configuration"])
    request = build(
        {
            "command": "python -m skylane.runtime --verbose",
            "image": IMAGE,
            "image_registry": {"registry_url": "flows.azurecr.io", "identity": IDENTITY},
            "env": {"MODE": "prefect"},
        },
        template=template,
        # Prefect's template has no location variable: ours comes from the pool's setting.
        pool_settings={"location": "westeurope"},
    )
    assert request.group_name == KEY
    container = request.container()
    assert container["name"] == "skylane"
    assert container["properties"]["command"] == [
        "python",
        "-m",
        "skylane.runtime",
        "--verbose",
    ]
    assert container["properties"]["resources"]["requests"] == {"cpu": 1, "memoryInGB": 1}
    assert env_of(request)["MODE"]["value"] == "prefect"
    assert request.start_timeout_seconds == 240
    assert request.location == "westeurope"  # [resourceGroup().location]
    model = as_sdk_model(request.group)
    assert model.restart_policy == "Never"
    assert model.image_registry_credentials[0].server == "flows.azurecr.io"


def test_unsupported_arm_expressions_and_shapes_name_their_path() -> None:
    template = default_template()
    resource = template["job_configuration"]["arm_template"]["resources"][0]
    resource["properties"]["osType"] = "[concat('Li', 'nux')]"
    with pytest.raises(InvalidInput) as caught:
        build(template=template)
    assert caught.value.field.endswith("resources[0].properties.osType")
    assert "concat" in caught.value.message

    template = default_template()
    template["job_configuration"]["arm_template"]["resources"].append(
        {"type": "Microsoft.Storage/storageAccounts", "name": "x"}
    )
    with pytest.raises(InvalidInput) as caught:
        build(template=template)
    assert caught.value.field == "job_configuration.arm_template.resources"

    template = default_template()
    template["job_configuration"]["arm_template"]["resources"][0]["properties"]["restartPolicy"] = (
        "OnFailure"
    )
    with pytest.raises(InvalidInput) as caught:
        build(template=template)
    assert "same run again" in caught.value.message


def test_location_is_required_when_the_template_asks_for_the_resource_groups() -> None:
    with pytest.raises(InvalidInput) as caught:
        build({"location": None})
    assert caught.value.field == "job_variables.location"


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"subscription_id": "not-a-guid"}, "job_variables.subscription_id"),
        ({"resource_group_name": "ends-with-a-period."}, "job_variables.resource_group_name"),
        ({"location": "West Europe!"}, "job_variables.location"),
        ({"memory": 1.55}, "job_variables.memory"),
        ({"gpu_count": 1}, "job_variables.gpu_sku"),
        ({"identities": ["runner"]}, "job_variables.identities[0]"),
        ({"subnet_ids": ["subnet-1"]}, "job_variables.subnet_ids[0]"),
        ({"dns_servers": ["dns.example.com"]}, "job_variables.dns_servers[0]"),
        ({"env": {"1BAD": "x"}}, "job_variables.env.1BAD"),
        ({"labels": {"a/b": "x"}}, "job_variables.labels.a/b"),
        ({"task_start_timeout_seconds": 0}, "job_variables.task_start_timeout_seconds"),
        ({"keep_container_group": "maybe"}, "job_variables.keep_container_group"),
        ({"image_registry": {"registry_url": "r.io"}}, "job_variables.image_registry"),
    ],
)
def test_bad_variables_are_refused_naming_the_variable(
    variables: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        build(variables, template=unchecked_template())
    assert caught.value.field == field, caught.value.message


def test_unknown_top_level_key_is_refused() -> None:
    template = default_template()
    template["job_configuration"]["cluster"] = "x"
    with pytest.raises(InvalidInput) as caught:
        build(template=template)
    assert caught.value.field == "job_configuration.cluster"

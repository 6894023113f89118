"""The Azure Container Instances base job template and the pure checks that turn a rendered job
configuration into one container group `PUT` (Azure Resource Manager), before any Azure call.

The template has the shape of Prefect's `azure-container-instance` work pool type: top-level
keys (`image`, `subscription_id`, `resource_group_name`, `identities`, `image_registry`, `cpu`,
`memory`, `gpu_count`, `gpu_sku`, `subnet_ids`, `dns_servers`, `task_start_timeout_seconds`,
`keep_container_group`, `command`, `env`, `labels`, `name`) plus an `arm_template` whose one
resource is a `Microsoft.ContainerInstance/containerGroups`. Ours adds `location`, `os_type` and
`secure_env`. So a template exported from Prefect for `azure-container-instance` (or its push
type) renders here unchanged. Keys Prefect's worker uses that mean nothing here
(`aci_credentials`, `stream_output`, `task_watch_poll_interval`, `entrypoint`, `name`) are
accepted and ignored: credentials come from the pool (DefaultAzureCredential), the container
runs skylane's command, and the group's name comes from the attempt's idempotency key
(`group_name_for`). Prefect block references (`{"$ref": ...}`) are dropped.

skylane PUTs the container group itself (`azure-mgmt-containerinstance`, API 2023-05-01) rather
than deploying the ARM template, so the template's expressions are evaluated here, and only the
ones Prefect's template uses are understood: `[parameters('NAME')]` (`location`,
`container_group_name` and `container_name` are supplied; other parameters take their
`defaultValue`), `[variables('NAME')]` and `[resourceGroup().location]` (the `location` job
variable or the pool's `location` setting: a direct PUT cannot read the resource group's
location). Any other expression is refused, naming where it is. The resource's `apiVersion` is
not used.

Rules enforced (learn.microsoft.com/azure/container-instances, /azure-resource-manager/
management/resource-name-rules, /tag-resources):
- the group name: 1-63 lowercase letters, digits and single hyphens, not at either end; the
  container name the same;
- restartPolicy Never (a restarted container would execute the same run again), osType Linux or
  Windows, cpu and memoryInGB positive (memory in steps of 0.1 GB; the upper limits depend on
  the region and are left to Azure), a GPU needs both a count and a SKU;
- identities and subnet ids are ARM resource ids of user-assigned identities and subnets, DNS
  servers are IP addresses;
- tags (our `labels`): at most 50, names up to 512 characters without `< > % & \\ ? /`, values up
  to 256;
- secrets: `secure_env` values and an image registry password are references to variables of
  the control plane's environment (`{"env": "NAME"}`), never values: skylane stores no secret.
  They, the run token and any `env` variable whose name looks secret are sent as `secureValue`,
  which Azure never returns; `describe` masks them.

Nothing here does I/O or imports an Azure SDK.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skylane.adapters.base import split_command
from skylane.adapters.template_values import (
    as_bool,
    as_object,
    drop_absent,
    is_present,
    optional_text,
    short_repr,
    whole_number,
)
from skylane.errors import InvalidInput
from skylane.security import MASK, is_secret_name

__all__ = [
    "AciGroupRequest",
    "IGNORED_KEYS",
    "SecureReference",
    "TAG_KEEP_GROUP",
    "TAG_START_TIMEOUT",
    "build_group_request",
    "default_template",
    "describe_request",
    "group_name_for",
]

PROVIDER = "aci"
GROUP_TYPE = "Microsoft.ContainerInstance/containerGroups"
# Tags skylane reads back from the group: cleanup keeps a group tagged keep, and the status
# check stops a group that has not started within its start timeout.
TAG_KEEP_GROUP = "skylane-keep-group"
TAG_START_TIMEOUT = "skylane-start-timeout"
TOKEN_VARIABLE = "SKYLANE_RUN_TOKEN"
DEFAULT_COMMAND = ["python", "-m", "skylane.runtime"]
DEFAULT_CONTAINER_NAME = "skylane"
# What `az container create` uses when none is given.
DEFAULT_CPU = 1.0
DEFAULT_MEMORY_GB = 1.5
DEFAULT_OS_TYPE = "Linux"
DEFAULT_START_TIMEOUT_SECONDS = 600
OS_TYPES = ("Linux", "Windows")
GPU_SKUS = ("K80", "P100", "V100")
MAX_TAGS = 50
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256
_TAG_NAME_FORBIDDEN = set("<>%&\\?/")

NAME = re.compile(r"^[a-z0-9](?:-?[a-z0-9])*$")
MAX_NAME_LENGTH = 63
_HASHED_NAME_PREFIX = "skl-"
_HASHED_NAME_HEX = 40
SUBSCRIPTION_ID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
RESOURCE_GROUP = re.compile(r"^[-\w._()]{0,89}[-\w_()]$")
LOCATION = re.compile(r"^[a-z][a-z0-9]*$")
IDENTITY_ID = re.compile(
    r"^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.managedidentity"
    r"/userassignedidentities/[^/]+$",
    re.IGNORECASE,
)
SUBNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.network"
    r"/virtualnetworks/[^/]+/subnets/[^/]+$",
    re.IGNORECASE,
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXPRESSION = re.compile(r"^\[(?!\[)(.*)\]$", re.DOTALL)
_CALL = re.compile(r"^(parameters|variables)\(\s*'([^']+)'\s*\)$")

# Prefect keys accepted and ignored (see the module docstring).
IGNORED_KEYS = frozenset(
    {"aci_credentials", "stream_output", "task_watch_poll_interval", "entrypoint", "name"}
)
KNOWN_KEYS = frozenset(
    {
        "arm_template",
        "command",
        "cpu",
        "dns_servers",
        "env",
        "gpu_count",
        "gpu_sku",
        "identities",
        "image",
        "image_registry",
        "keep_container_group",
        "labels",
        "location",
        "memory",
        "os_type",
        "resource_group_name",
        "secure_env",
        "subnet_ids",
        "subscription_id",
        "task_start_timeout_seconds",
    }
)
_ARM = "job_configuration.arm_template"
_GROUP = f"{_ARM}.resources[0]"
_PROPS = f"{_GROUP}.properties"
_CONTAINER = f"{_PROPS}.containers[0]"


# --- names -------------------------------------------------------------------------------------


def is_valid_name(name: Any) -> bool:
    """Whether `name` is a valid container group (or container) name."""
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH and bool(NAME.match(name))


def group_name_for(idempotency_key: str) -> str:
    """The container group name of the attempt `idempotency_key`: the same key always gives the
    same name and different keys different names. A key that is a valid name already (skylane's
    keys, `skl-<32 hex>-<n>`, are) is used as it is, so the group names its run; any other key
    becomes `skl-` + the first 40 hex digits of its SHA-256."""
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise ValueError("an idempotency key is required")
    if is_valid_name(idempotency_key):
        return idempotency_key
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
    return _HASHED_NAME_PREFIX + digest[:_HASHED_NAME_HEX]


def group_resource_id(subscription_id: str, resource_group: str, name: str) -> str:
    """The ARM resource id of a container group (what the adapter uses as a run's ref)."""
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/{GROUP_TYPE}/{name}"
    )


# --- request -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecureReference:
    """A secret the control plane reads from its own environment at submit time: the variable
    `source` fills `target` ("env:NAME" for a container variable, "registry:SERVER" for a
    registry password). `field` names the job variable, for errors."""

    target: str
    source: str
    field: str


@dataclass(frozen=True, eq=True)
class AciGroupRequest:
    """What the adapter sends for one attempt: `PUT` of the container group `group_name` in
    `resource_group` of `subscription_id`. `group` is the ARM body in the REST API's camelCase
    JSON; the values of `references` are not in it yet (`resolved`)."""

    subscription_id: str
    resource_group: str
    group_name: str
    container_name: str
    location: str
    group: dict[str, Any] = field(repr=False)
    references: tuple[SecureReference, ...] = ()
    keep_group: bool = False
    start_timeout_seconds: int = DEFAULT_START_TIMEOUT_SECONDS

    @property
    def resource_id(self) -> str:
        return group_resource_id(self.subscription_id, self.resource_group, self.group_name)

    def container(self) -> dict[str, Any]:
        """The container the run executes in (the first one)."""
        return self.group["properties"]["containers"][0]

    def resolved(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """The body to send, with each reference's value read from `environ`. InvalidInput
        naming the job variable and the environment variable when one is not set."""
        body = copy.deepcopy(self.group)
        properties = body["properties"]
        for ref in self.references:
            value = environ.get(ref.source)
            if not value:
                raise InvalidInput(
                    f"the environment variable {ref.source} is not set where the control plane "
                    f"runs; {ref.field} refers to it",
                    field=ref.field,
                )
            kind, _, target = ref.target.partition(":")
            if kind == "env":
                for item in properties["containers"][0]["properties"]["environmentVariables"]:
                    if item["name"] == target:
                        item["secureValue"] = value
            else:
                for credential in properties.get("imageRegistryCredentials", []):
                    if credential.get("server") == target:
                        credential["password"] = value
        return body

    def secret_values(self) -> list[str]:
        """Values in `group` that must never appear in a message (the run token, and plain
        values of secret-looking variables)."""
        values = []
        for container in self.group["properties"]["containers"]:
            for item in container["properties"].get("environmentVariables", []):
                value = item.get("secureValue")
                if value:
                    values.append(str(value))
        return values

    def redacted(self) -> dict[str, Any]:
        """The request as plain JSON with secure values masked."""
        body = copy.deepcopy(self.group)
        for container in body["properties"]["containers"]:
            for item in container["properties"].get("environmentVariables", []):
                if "secureValue" in item:
                    item["secureValue"] = MASK
        for credential in body["properties"].get("imageRegistryCredentials", []):
            if "password" in credential:
                credential["password"] = MASK
        return {
            "provider": PROVIDER,
            "subscription_id": self.subscription_id,
            "resource_group": self.resource_group,
            "create_container_group": {
                "resource_id": self.resource_id,
                "api_version": "2023-05-01",
                "if_none_match": "*",
                "body": body,
            },
            "secure_values_from_environment": {ref.target: ref.source for ref in self.references},
            "keep_container_group": self.keep_group,
            "task_start_timeout_seconds": self.start_timeout_seconds,
        }

    def __repr__(self) -> str:
        return f"AciGroupRequest({json.dumps(self.redacted(), sort_keys=True)})"

    __str__ = __repr__


def describe_request(request: AciGroupRequest) -> dict[str, Any]:
    """The request for people (`skylane deployment render`): plain JSON, secrets masked."""
    return request.redacted()


# --- template ----------------------------------------------------------------------------------


def default_arm_template() -> dict[str, Any]:
    """The ARM template of the default job configuration (Prefect's, with our placeholders)."""
    return {
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
                "metadata": {"description": "The name of the container group to create."},
            },
            "container_name": {
                "type": "string",
                "defaultValue": "[uniqueString(resourceGroup().id)]",
                "metadata": {"description": "The name of the container to create."},
            },
        },
        "resources": [
            {
                "type": GROUP_TYPE,
                "apiVersion": "2023-05-01",
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
                    "osType": "{{ os_type }}",
                    "restartPolicy": "Never",
                },
            }
        ],
    }


def default_template() -> dict[str, Any]:
    """The `aci:push` / `aci` base job template (Prefect's azure-container-instance shape)."""
    keys = sorted(KNOWN_KEYS - {"arm_template"})
    configuration: dict[str, Any] = {key: "{{ " + key + " }}" for key in keys}
    configuration["arm_template"] = default_arm_template()
    return {
        "job_configuration": configuration,
        "variables": {
            "type": "object",
            "description": "Variables of an Azure Container Instances job template.",
            # The deployment's image fills `image`; a deployment without one leaves it to runs.
            "required": ["image"],
            "properties": _variables(),
        },
    }


def _variables() -> dict[str, Any]:
    env_reference = {
        "type": "object",
        "properties": {"env": {"type": "string", "pattern": ENV_NAME.pattern}},
        "required": ["env"],
        "additionalProperties": False,
        # Validation errors never echo what was given here (a value pasted by mistake).
        "writeOnly": True,
    }
    string_list = {"type": "array", "items": {"type": "string"}}
    return {
        "image": {
            "title": "Image",
            "description": (
                "The container image the run executes in, e.g. myregistry.azurecr.io/flows/"
                "etl:1.0. Defaults to the deployment's image (pinned by digest once pushed)."
            ),
            "type": "string",
        },
        "subscription_id": {
            "title": "Azure Subscription ID",
            "description": (
                "The subscription the container group is created in (a GUID). Unset: the "
                "pool's `subscription_id` setting."
            ),
            "type": "string",
        },
        "resource_group_name": {
            "title": "Azure Resource Group Name",
            "description": (
                "The resource group the container group is created in. Unset: the pool's "
                "`resource_group_name` setting."
            ),
            "type": "string",
        },
        "location": {
            "title": "Location",
            "description": (
                "Azure region of the container group, e.g. westeurope. Unset: the pool's "
                "`location` setting."
            ),
            "type": "string",
        },
        "cpu": {
            "title": "CPU",
            "description": (
                "vCPUs of the container, e.g. 1 or 0.5. The most a region allows (often 4) is "
                "checked by Azure."
            ),
            "type": "number",
            "exclusiveMinimum": 0,
            "default": DEFAULT_CPU,
        },
        "memory": {
            "title": "Memory (GB)",
            "description": (
                "Memory of the container in GB, in steps of 0.1, e.g. 1.5. The most a region "
                "allows (often 16) is checked by Azure."
            ),
            "type": "number",
            "exclusiveMinimum": 0,
            "default": DEFAULT_MEMORY_GB,
        },
        "gpu_count": {
            "title": "GPU Count",
            "description": "GPUs of the container (with gpu_sku). Unset: no GPU.",
            "type": "integer",
            "minimum": 1,
        },
        "gpu_sku": {
            "title": "GPU SKU",
            "description": (
                "The GPU model: K80, P100 or V100 (with gpu_count); which ones a region "
                "offers is listed in the ACI documentation."
            ),
            "type": "string",
            "enum": list(GPU_SKUS),
        },
        "identities": {
            "title": "Identities",
            "description": (
                "User-assigned managed identities of the container group, as resource ids: "
                "/subscriptions/S/resourceGroups/RG/providers/Microsoft.ManagedIdentity/"
                "userAssignedIdentities/NAME. The run's code can use them (DefaultAzureCredential)."
            ),
            **string_list,
        },
        "image_registry": {
            "title": "Image Registry",
            "description": (
                "A private registry to pull the image from: "
                '{"registry_url": "myregistry.azurecr.io", "identity": <identity resource id>} '
                "(an identity with AcrPull on the registry; it is added to identities), or "
                '{"registry_url": ..., "username": ..., "password": {"env": "VARIABLE"}}, the '
                "password read from the control plane's environment when the run starts."
            ),
            "type": "object",
            "properties": {
                "registry_url": {"type": "string"},
                "identity": {"type": "string"},
                "username": {"type": "string"},
                "password": env_reference,
            },
            "required": ["registry_url"],
        },
        "subnet_ids": {
            "title": "Subnet IDs",
            "description": (
                "Subnets to join the container group to (resource ids of subnets delegated to "
                "Microsoft.ContainerInstance/containerGroups)."
            ),
            **string_list,
        },
        "dns_servers": {
            "title": "DNS Servers",
            "description": "DNS servers of the container group (IP addresses).",
            **string_list,
        },
        "env": {
            "title": "Environment Variables",
            "description": (
                "Environment variables of the run's container. Those whose names look secret "
                "(TOKEN, PASSWORD...) are sent as secure values."
            ),
            "type": "object",
            "additionalProperties": {"type": ["string", "null"]},
            "default": {},
        },
        "secure_env": {
            "title": "Secure Environment Variables",
            "description": (
                "Environment variables sent as ACI secure values (Azure never shows them back): "
                'name -> {"env": "VARIABLE"}, the value read from the control plane\'s own '
                "environment when the run starts. skylane never stores the value."
            ),
            "type": "object",
            "additionalProperties": env_reference,
            "default": {},
        },
        "labels": {
            "title": "Labels",
            "description": "Tags of the container group (besides skylane's own).",
            "type": "object",
            "additionalProperties": {"type": "string"},
        },
        "os_type": {
            "title": "OS Type",
            "description": "The container group's operating system.",
            "type": "string",
            "enum": list(OS_TYPES),
            "default": DEFAULT_OS_TYPE,
        },
        "task_start_timeout_seconds": {
            "title": "Task Start Timeout",
            "description": (
                "Seconds the container may take to start (image pull included) before skylane "
                "stops the group and the run crashes."
            ),
            "type": "integer",
            "minimum": 1,
            "default": DEFAULT_START_TIMEOUT_SECONDS,
        },
        "keep_container_group": {
            "title": "Keep Container Group",
            "description": (
                "Keep the container group (one per run attempt) after the run ends. By default "
                "it is deleted once the run is over."
            ),
            "type": "boolean",
            "default": False,
        },
        "command": {
            "title": "Command",
            "description": (
                "The container command, as a string (split like a shell would) or a list. "
                "Unset: `python -m skylane.runtime`."
            ),
            "type": ["string", "array"],
            "items": {"type": "string"},
        },
    }


# --- building the request ----------------------------------------------------------------------


def build_group_request(
    config: dict[str, Any],
    *,
    run_env: Mapping[str, str],
    group_name: str,
    labels: Mapping[str, str] | None = None,
    subscription_id: str | None = None,
    resource_group: str | None = None,
    location: str | None = None,
    image: str | None = None,
) -> AciGroupRequest:
    """The container group PUT for one attempt, from a rendered job configuration. Pure.

    - `run_env`: the variables the runtime needs (`RunContext.runtime_env()`), added to the
      run's container and winning over the template's; the run token is a secure value.
    - `group_name`: `group_name_for` the attempt's key.
    - `labels`: skylane's own tags (run id, deployment, pool), winning over the template's.
    - `subscription_id`, `resource_group`, `location`, `image`: used when the configuration has
      none (the pool's settings, the deployment's image).

    Raises:
        InvalidInput: `field` names the job variable (`job_variables.cpu`) or, for the shape of
            the template itself, the path in the configuration.
    """
    if not isinstance(config, dict):
        raise InvalidInput("the job configuration must be an object", field="job_configuration")
    if not is_valid_name(group_name):
        raise ValueError(f"not a container group name: {group_name!r} (use group_name_for)")
    config = drop_absent(config)
    unknown = sorted(set(config) - KNOWN_KEYS - IGNORED_KEYS)
    if unknown:
        raise InvalidInput(
            f"unknown key {unknown[0]!r} in the job configuration; known keys: "
            f"{', '.join(sorted(KNOWN_KEYS))} (Prefect's {', '.join(sorted(IGNORED_KEYS))} are "
            "accepted and ignored)",
            field=f"job_configuration.{unknown[0]}",
        )

    the_subscription = optional_text(config.get("subscription_id")) or optional_text(
        subscription_id
    )
    if the_subscription is None or not SUBSCRIPTION_ID.match(the_subscription):
        raise InvalidInput(
            "a subscription id (a GUID) is required: set the subscription_id job variable or "
            "the pool's subscription_id setting"
            + ("" if the_subscription is None else f", not {short_repr(the_subscription)}"),
            field="job_variables.subscription_id",
        )
    the_group = optional_text(config.get("resource_group_name")) or optional_text(resource_group)
    if the_group is None or not RESOURCE_GROUP.match(the_group):
        raise InvalidInput(
            "a resource group name is required (1-90 letters, digits, _ - . ( ), not ending "
            "in a period): set the resource_group_name job variable or the pool's "
            "resource_group_name setting"
            + ("" if the_group is None else f", not {short_repr(the_group)}"),
            field="job_variables.resource_group_name",
        )
    the_location = _location(config.get("location"), "job_variables.location") or _location(
        location, "settings.location"
    )

    arm = as_object(config.get("arm_template"), _ARM)
    resource = _group_resource(arm)
    values = _ArmValues(arm, the_location, group_name)
    resource = values.evaluate(resource, _GROUP)
    the_location = the_location or _location(resource.get("location"), f"{_GROUP}.location")
    if the_location is None:
        raise InvalidInput(
            "a location is required: set the location job variable or the pool's location setting",
            field="job_variables.location",
        )

    properties = as_object(resource.get("properties"), _PROPS)
    containers = properties.get("containers")
    if not isinstance(containers, list) or not containers:
        raise InvalidInput(
            "the container group needs a container to run the run in",
            field=f"{_PROPS}.containers",
        )
    properties = copy.deepcopy(properties)
    properties["containers"] = [
        _container(item, f"{_PROPS}.containers[{i}]", values) for i, item in enumerate(containers)
    ]
    references = _run_container(properties["containers"][0], config, run_env, image)
    _restart_policy(properties)
    properties["osType"] = _os_type(config.get("os_type") or properties.get("osType"))
    _check_no_secret_literals(properties)
    references += _registry(properties, config)
    identity = _identity(resource.get("identity"), config, properties)
    _network(properties, config)

    keep = as_bool(config.get("keep_container_group", False), "job_variables.keep_container_group")
    start_timeout = DEFAULT_START_TIMEOUT_SECONDS
    if config.get("task_start_timeout_seconds") is not None:
        start_timeout = whole_number(
            config["task_start_timeout_seconds"],
            "job_variables.task_start_timeout_seconds",
            minimum=1,
        )
    system_tags = {**(labels or {}), TAG_START_TIMEOUT: str(start_timeout)}
    if keep:
        system_tags[TAG_KEEP_GROUP] = "true"
    tags = _tags(resource.get("tags"), config.get("labels"), system_tags)

    group: dict[str, Any] = {"location": the_location}
    if tags:
        group["tags"] = tags
    if identity:
        group["identity"] = identity
    group["properties"] = properties
    return AciGroupRequest(
        subscription_id=the_subscription,
        resource_group=the_group,
        group_name=group_name,
        container_name=properties["containers"][0]["name"],
        location=the_location,
        group=group,
        references=tuple(references),
        keep_group=keep,
        start_timeout_seconds=start_timeout,
    )


def _group_resource(arm: dict[str, Any]) -> dict[str, Any]:
    resources = arm.get("resources")
    if not isinstance(resources, list) or len(resources) != 1:
        raise InvalidInput(
            "arm_template.resources must hold exactly one resource, the container group: "
            "skylane creates the group itself, without an ARM deployment",
            field=f"{_ARM}.resources",
        )
    resource = as_object(resources[0], _GROUP)
    kind = str(resource.get("type", ""))
    if kind.lower() != GROUP_TYPE.lower():
        raise InvalidInput(
            f"the resource must be of type {GROUP_TYPE}, not {short_repr(kind)}",
            field=f"{_GROUP}.type",
        )
    return resource


class _ArmValues:
    """Evaluates the ARM template expressions Prefect's template uses; see the module
    docstring."""

    def __init__(self, arm: dict[str, Any], location: str | None, group_name: str) -> None:
        self.parameters = as_object(arm.get("parameters"), f"{_ARM}.parameters")
        self.variables = as_object(arm.get("variables"), f"{_ARM}.variables")
        self.location = location
        self.supplied = {
            "container_group_name": group_name,
            "container_name": DEFAULT_CONTAINER_NAME,
        }
        if location:
            self.supplied["location"] = location

    def evaluate(self, node: Any, where: str) -> Any:
        if isinstance(node, dict):
            return {key: self.evaluate(value, f"{where}.{key}") for key, value in node.items()}
        if isinstance(node, list):
            return [self.evaluate(value, f"{where}[{i}]") for i, value in enumerate(node)]
        if isinstance(node, str):
            found = _EXPRESSION.match(node.strip())
            if found:
                return self._expression(found.group(1).strip(), where, depth=0)
            if node.startswith("[["):
                return node[1:]  # ARM's escape for a literal "["
        return node

    def _expression(self, text: str, where: str, depth: int) -> Any:
        if text == "resourceGroup().location":
            if self.location is None:
                raise InvalidInput(
                    "a location is required: the template uses the resource group's location, "
                    "which skylane cannot read when it creates the group directly; set the "
                    "location job variable or the pool's location setting",
                    field="job_variables.location",
                )
            return self.location
        call = _CALL.match(text)
        if call is None or depth > 8:
            raise InvalidInput(
                f"the ARM expression [{text}] is not supported; skylane evaluates "
                "parameters('NAME'), variables('NAME') and resourceGroup().location",
                field=where,
            )
        kind, name = call.groups()
        if kind == "parameters":
            if name in self.supplied:
                return self.supplied[name]
            spec = self.parameters.get(name)
            if not isinstance(spec, dict) or "defaultValue" not in spec:
                raise InvalidInput(
                    f"the ARM parameter {name!r} has no defaultValue (skylane supplies only "
                    "location, container_group_name and container_name)",
                    field=f"{_ARM}.parameters.{name}",
                )
            value, origin = spec["defaultValue"], f"{_ARM}.parameters.{name}.defaultValue"
        else:
            if name not in self.variables:
                raise InvalidInput(
                    f"the ARM variable {name!r} is not defined", field=f"{_ARM}.variables"
                )
            value, origin = self.variables[name], f"{_ARM}.variables.{name}"
        if isinstance(value, str):
            found = _EXPRESSION.match(value.strip())
            if found:
                return self._expression(found.group(1).strip(), origin, depth + 1)
        return copy.deepcopy(value)


def _container(item: Any, where: str, values: _ArmValues) -> dict[str, Any]:
    container = as_object(item, where)
    name = container.get("name")
    if where.endswith("[0]") and not optional_text(name):
        name = DEFAULT_CONTAINER_NAME
    if not is_valid_name(name):
        raise InvalidInput(
            f"container name {short_repr(name)} is not valid: 1-63 lowercase letters, digits "
            "and single hyphens, not at either end",
            field=f"{where}.name",
        )
    properties = copy.deepcopy(as_object(container.get("properties"), f"{where}.properties"))
    return {**container, "name": name, "properties": properties}


def _run_container(
    container: dict[str, Any],
    config: dict[str, Any],
    run_env: Mapping[str, str],
    image: str | None,
) -> list[SecureReference]:
    """Fill the run's container (image, command, resources, environment) in place; the
    references its secure values need."""
    props = container["properties"]
    where = f"{_CONTAINER}.properties"
    the_image = (
        optional_text(config.get("image"))
        or optional_text(props.get("image"))
        or optional_text(image)
    )
    if the_image is None:
        raise InvalidInput(
            "an image is required: set the image job variable or the deployment's image",
            field="job_variables.image",
        )
    props["image"] = the_image
    command = split_command(config.get("command"))
    if command is None:
        command = split_command(props.get("command"), field=f"{where}.command")
    props["command"] = command or list(DEFAULT_COMMAND)

    resources = as_object(props.get("resources"), f"{where}.resources")
    requests = as_object(resources.get("requests"), f"{where}.resources.requests")
    cpu = config.get("cpu", requests.get("cpu", DEFAULT_CPU))
    memory = config.get("memory", requests.get("memoryInGB", DEFAULT_MEMORY_GB))
    requests = {
        **requests,
        "cpu": _positive(cpu, "job_variables.cpu", "vCPUs"),
        "memoryInGB": _memory(memory),
    }
    gpu = _gpu(config, requests.get("gpu"))
    if gpu:
        requests["gpu"] = gpu
    else:
        requests.pop("gpu", None)
    props["resources"] = {**resources, "requests": requests}

    env: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(props.get("environmentVariables") or []):
        entry = as_object(item, f"{where}.environmentVariables[{i}]")
        if entry.get("secureValue") is not None:
            raise InvalidInput(
                "a secure value cannot be written in the template: use secure_env with a reference",
                field=f"{where}.environmentVariables[{i}]",
            )
        env[_env_name(entry.get("name"), f"{where}.environmentVariables[{i}].name")] = entry
    for name, value in as_object(config.get("env"), "job_variables.env").items():
        _env_name(name, f"job_variables.env.{name}")
        if value is None:
            env.pop(name, None)
            continue
        if isinstance(value, dict | list):
            raise InvalidInput(
                f"env.{name} must be a string, not {type(value).__name__}",
                field=f"job_variables.env.{name}",
            )
        env[name] = _env_item(name, _plain(value))
    references = []
    for name, ref in as_object(config.get("secure_env"), "job_variables.secure_env").items():
        field = f"job_variables.secure_env.{name}"
        _env_name(name, field)
        references.append(SecureReference(f"env:{name}", _env_reference(ref, field), field))
        # The value is filled in when the run starts (AciGroupRequest.resolved).
        env[name] = {"name": name, "secureValue": None}
    for name, value in run_env.items():
        env[name] = _env_item(name, str(value))
    props["environmentVariables"] = list(env.values())
    return references


def _env_item(name: str, value: str) -> dict[str, Any]:
    if is_secret_name(name) or name == TOKEN_VARIABLE:
        return {"name": name, "secureValue": value}
    return {"name": name, "value": value}


def _env_reference(value: Any, field: str) -> str:
    if isinstance(value, dict) and set(value) == {"env"}:
        return _env_name(value["env"], f"{field}.env")
    raise InvalidInput(
        'must be a reference to a variable of the control plane\'s environment, {"env": '
        '"VARIABLE"}: skylane never stores secret values (set VARIABLE where the control plane '
        "runs)",
        field=field,
    )


def _check_no_secret_literals(properties: dict[str, Any]) -> None:
    # The run's container (the first) was checked as it was built.
    for i, container in enumerate(properties["containers"][1:], start=1):
        for j, item in enumerate(container["properties"].get("environmentVariables") or []):
            if isinstance(item, dict) and item.get("secureValue") is not None:
                raise InvalidInput(
                    "a secure value cannot be written in the template: use secure_env with a "
                    "reference",
                    field=f"{_PROPS}.containers[{i}].properties.environmentVariables[{j}]",
                )
    for i, credential in enumerate(properties.get("imageRegistryCredentials") or []):
        if isinstance(credential, dict) and credential.get("password") is not None:
            raise InvalidInput(
                "a registry password cannot be written in the template: use the image_registry "
                'job variable with "password": {"env": "VARIABLE"}',
                field=f"{_PROPS}.imageRegistryCredentials[{i}].password",
            )


def _registry(properties: dict[str, Any], config: dict[str, Any]) -> list[SecureReference]:
    registry = config.get("image_registry")
    if not is_present(registry):
        return []
    field = "job_variables.image_registry"
    registry = as_object(registry, field)
    server = optional_text(
        registry.get("registry_url") or registry.get("server") or registry.get("login_server")
    )
    if server is None:
        raise InvalidInput(
            "image_registry needs registry_url, the registry's login server (e.g. "
            "myregistry.azurecr.io)",
            field=f"{field}.registry_url",
        )
    server = server.removeprefix("https://").rstrip("/")
    identity = optional_text(registry.get("identity"))
    username = optional_text(registry.get("username"))
    references = []
    if identity is not None:
        _identity_id(identity, f"{field}.identity")
        credential: dict[str, Any] = {"server": server, "identity": identity}
    elif username is not None and registry.get("password") is not None:
        references.append(
            SecureReference(
                f"registry:{server}",
                _env_reference(registry["password"], f"{field}.password"),
                f"{field}.password",
            )
        )
        credential = {"server": server, "username": username, "password": None}
    else:
        raise InvalidInput(
            "image_registry needs either identity (a user-assigned identity with AcrPull) or "
            'username and password ({"env": "VARIABLE"})',
            field=field,
        )
    others = [
        c
        for c in properties.get("imageRegistryCredentials") or []
        if not (isinstance(c, dict) and c.get("server") == server)
    ]
    properties["imageRegistryCredentials"] = [*others, credential]
    return references


def _identity(
    template_identity: Any, config: dict[str, Any], properties: dict[str, Any]
) -> dict[str, Any] | None:
    ids: list[str] = []
    identity = as_object(template_identity, f"{_GROUP}.identity")
    for name in as_object(identity.get("userAssignedIdentities"), f"{_GROUP}.identity"):
        ids.append(_identity_id(name, f"{_GROUP}.identity.userAssignedIdentities"))
    for i, value in enumerate(_list(config.get("identities"), "job_variables.identities")):
        ids.append(_identity_id(value, f"job_variables.identities[{i}]"))
    for credential in properties.get("imageRegistryCredentials") or []:
        if isinstance(credential, dict) and optional_text(credential.get("identity")):
            # ACI pulls with an identity only if the group has it.
            ids.append(credential["identity"])
    system = "SystemAssigned" in str(identity.get("type", ""))
    if not ids and not system:
        return None
    unique = list(dict.fromkeys(ids))
    kind = ", ".join(k for k, on in (("SystemAssigned", system), ("UserAssigned", unique)) if on)
    result: dict[str, Any] = {"type": kind}
    if unique:
        result["userAssignedIdentities"] = {value: {} for value in unique}
    return result


def _network(properties: dict[str, Any], config: dict[str, Any]) -> None:
    subnets = _list(config.get("subnet_ids"), "job_variables.subnet_ids")
    if subnets:
        properties["subnetIds"] = [
            {"id": _subnet_id(value, f"job_variables.subnet_ids[{i}]")}
            for i, value in enumerate(subnets)
        ]
    servers = _list(config.get("dns_servers"), "job_variables.dns_servers")
    if servers:
        for i, value in enumerate(servers):
            try:
                ipaddress.ip_address(str(value))
            except ValueError:
                raise InvalidInput(
                    f"dns_servers[{i}] must be an IP address, not {short_repr(value)}",
                    field=f"job_variables.dns_servers[{i}]",
                ) from None
        dns = as_object(properties.get("dnsConfig"), f"{_PROPS}.dnsConfig")
        properties["dnsConfig"] = {**dns, "nameServers": [str(v) for v in servers]}


def _restart_policy(properties: dict[str, Any]) -> None:
    policy = properties.get("restartPolicy", "Never")
    if str(policy) != "Never":
        raise InvalidInput(
            f"restartPolicy must be Never, not {short_repr(policy)}: a restarted container "
            "would execute the same run again",
            field=f"{_PROPS}.restartPolicy",
        )
    properties["restartPolicy"] = "Never"


def _os_type(value: Any) -> str:
    if not is_present(value):
        return DEFAULT_OS_TYPE
    for os_type in OS_TYPES:
        if str(value).strip().lower() == os_type.lower():
            return os_type
    raise InvalidInput(
        f"os_type must be Linux or Windows, not {short_repr(value)}",
        field="job_variables.os_type",
    )


def _gpu(config: dict[str, Any], template_gpu: Any) -> dict[str, Any] | None:
    gpu = as_object(template_gpu, f"{_CONTAINER}.properties.resources.requests.gpu")
    count = config.get("gpu_count", gpu.get("count"))
    sku = config.get("gpu_sku", gpu.get("sku"))
    if not is_present(count) and not is_present(sku):
        return None
    if not is_present(count) or not is_present(sku):
        missing = "gpu_sku" if is_present(count) else "gpu_count"
        raise InvalidInput(
            "a GPU needs both gpu_count and gpu_sku", field=f"job_variables.{missing}"
        )
    the_count = whole_number(count, "job_variables.gpu_count", minimum=1)
    if str(sku) not in GPU_SKUS:
        raise InvalidInput(
            f"gpu_sku must be one of {', '.join(GPU_SKUS)}, not {short_repr(sku)}",
            field="job_variables.gpu_sku",
        )
    return {"count": the_count, "sku": str(sku)}


def _tags(template_tags: Any, labels: Any, system: Mapping[str, str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for value, where in ((template_tags, f"{_GROUP}.tags"), (labels, "job_variables.labels")):
        for key, item in as_object(value, where).items():
            merged[str(key)] = _plain(item)
    merged.update(system)
    if len(merged) > MAX_TAGS:
        raise InvalidInput(
            f"a container group takes at most {MAX_TAGS} tags; these labels make "
            f"{len(merged)} with skylane's own {len(system)}",
            field="job_variables.labels",
        )
    for key, value in merged.items():
        if not key or len(key) > MAX_TAG_NAME or set(key) & _TAG_NAME_FORBIDDEN:
            raise InvalidInput(
                f"tag name {short_repr(key)} is not valid: 1-{MAX_TAG_NAME} characters, none of "
                "< > % & \\ ? /",
                field=f"job_variables.labels.{key}",
            )
        if len(value) > MAX_TAG_VALUE:
            raise InvalidInput(
                f"the value of tag {key!r} is longer than {MAX_TAG_VALUE} characters",
                field=f"job_variables.labels.{key}",
            )
    return merged


# --- field checks ------------------------------------------------------------------------------


def _positive(value: Any, field: str, what: str) -> float | int:
    number = _number(value, field)
    if not number > 0:
        raise InvalidInput(f"{field.rsplit('.', 1)[-1]} must be more than 0 {what}", field=field)
    return int(number) if float(number).is_integer() else number


def _memory(value: Any) -> float | int:
    field = "job_variables.memory"
    number = _positive(value, field, "GB")
    if abs(round(number * 10) - number * 10) > 1e-9:
        raise InvalidInput(
            f"memory is given in GB in steps of 0.1 (e.g. 1.5), not {short_repr(value)}",
            field=field,
        )
    return number


def _number(value: Any, field: str) -> float | int:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidInput(
            f"{field.rsplit('.', 1)[-1]} must be a number, not {short_repr(value)}", field=field
        )
    return value


def _location(value: Any, field: str) -> str | None:
    text = optional_text(value)
    if text is None:
        return None
    normalized = text.replace(" ", "").lower()
    if not LOCATION.match(normalized):
        raise InvalidInput(
            f"location must be an Azure region name such as westeurope, not {short_repr(text)}",
            field=field,
        )
    return normalized


def _identity_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not IDENTITY_ID.match(value):
        raise InvalidInput(
            "must be the resource id of a user-assigned identity, /subscriptions/S/"
            "resourceGroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME, "
            f"not {short_repr(value)}",
            field=field,
        )
    return value


def _subnet_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not SUBNET_ID.match(value):
        raise InvalidInput(
            "must be the resource id of a subnet, /subscriptions/S/resourceGroups/RG/providers/"
            f"Microsoft.Network/virtualNetworks/VNET/subnets/SUBNET, not {short_repr(value)}",
            field=field,
        )
    return value


def _env_name(name: Any, field: str) -> str:
    if not isinstance(name, str) or not ENV_NAME.match(name):
        raise InvalidInput(
            f"{short_repr(name)} is not an environment variable name (letters, digits and _, "
            "not starting with a digit)",
            field=field,
        )
    return name


# --- small helpers -----------------------------------------------------------------------------


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _list(value: Any, field: str) -> list[Any]:
    if not is_present(value):
        return []
    if isinstance(value, str):
        return [value]  # one id or address given on its own
    if not isinstance(value, list):
        raise InvalidInput(
            f"must be a list, not {type(value).__name__} {short_repr(value)}", field=field
        )
    return value

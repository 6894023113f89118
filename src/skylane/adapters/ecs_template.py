"""The ECS base job template and the pure checks `EcsAdapter.render` runs before any AWS call.

The template has the shape of Prefect's ECS work pool type (`task_definition` and
`task_run_request` with `{{ placeholders }}`, plus top-level keys such as `env`, `labels`,
`cluster`, `vpc_id`, `network_configuration`, `configure_cloudwatch_logs`...), so a template
exported from Prefect for `ecs` or `ecs:push` renders here unchanged. Keys Prefect's worker uses
that mean nothing to a push adapter (`aws_credentials`, `task_watch_poll_interval`,
`auto_deregister_task_definition`, `match_latest_revision_in_family`, `stream_output`,
`prefect_api_key_secret_arn`, `prefect_api_auth_string_secret_arn`) are accepted and ignored:
credentials come from the pool, and deregistration is a pool setting.

Nothing here does I/O or imports an AWS SDK.
"""

from __future__ import annotations

import re
from typing import Any

from skylane.errors import InvalidInput

# The container the run executes in. Prefect's default is "prefect"; ours is "skylane". When a
# template does not name it, the container called "skylane" is used, else the first container
# of the task definition (so Prefect templates, whose container is often "prefect", work).
DEFAULT_CONTAINER_NAME = "skylane"
DEFAULT_COMMAND = ["python", "-m", "skylane.runtime"]
DEFAULT_CPU = 1024
DEFAULT_MEMORY = 2048
DEFAULT_LAUNCH_TYPE = "FARGATE"
DEFAULT_START_TIMEOUT_SECONDS = 300
DEFAULT_LOG_GROUP = "skylane"
DEFAULT_LOG_STREAM_PREFIX = "skylane"

LAUNCH_TYPES = ("FARGATE", "FARGATE_SPOT", "EC2")
# Accepted by render as well (ECS Anywhere; Prefect's enum has it), not offered by our template.
EXTRA_LAUNCH_TYPES = ("EXTERNAL",)
FARGATE_LAUNCH_TYPES = ("FARGATE", "FARGATE_SPOT")

EPHEMERAL_STORAGE_MIN_GIB = 21
EPHEMERAL_STORAGE_MAX_GIB = 200

# The task sizes Fargate accepts: CPU units -> (lowest MiB, highest MiB, step MiB), except the
# smallest size, which takes a short list.
_FARGATE_MEMORY_RANGES: dict[int, tuple[int, int, int]] = {
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}
_FARGATE_256_MEMORY = (512, 1024, 2048)

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
SECRET_ARN = re.compile(
    r"^arn:aws[a-z-]*:(?:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+"
    r"|ssm:[a-z0-9-]+:\d{12}:parameter/.+)$"
)
REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Prefect worker keys with no meaning here (see the module docstring).
IGNORED_KEYS = frozenset(
    {
        "aws_credentials",
        "task_watch_poll_interval",
        "auto_deregister_task_definition",
        "match_latest_revision_in_family",
        "stream_output",
        "prefect_api_key_secret_arn",
        "prefect_api_auth_string_secret_arn",
    }
)


def fargate_memory_choices(cpu: int) -> list[int] | None:
    """The task memory sizes (MiB) Fargate accepts with `cpu` units; None for an unknown cpu."""
    if cpu == 256:
        return list(_FARGATE_256_MEMORY)
    if cpu not in _FARGATE_MEMORY_RANGES:
        return None
    low, high, step = _FARGATE_MEMORY_RANGES[cpu]
    return list(range(low, high + 1, step))


def check_fargate_size(cpu: int, memory: int) -> None:
    """InvalidInput naming `job_variables.cpu` or `job_variables.memory` unless Fargate runs a
    task of `cpu` units and `memory` MiB."""
    choices = fargate_memory_choices(cpu)
    if choices is None:
        allowed = ", ".join(str(c) for c in (256, *_FARGATE_MEMORY_RANGES))
        raise InvalidInput(
            f"Fargate does not offer {cpu} CPU units; use one of {allowed}",
            field="job_variables.cpu",
        )
    if memory not in choices:
        if cpu == 256:
            allowed = ", ".join(str(m) for m in choices)
        else:
            low, high, step = _FARGATE_MEMORY_RANGES[cpu]
            allowed = f"{low} to {high} in steps of {step}"
        raise InvalidInput(
            f"Fargate does not accept {memory} MiB of memory with {cpu} CPU units; with {cpu} "
            f"CPU units use {allowed} MiB",
            field="job_variables.memory",
        )


def parse_cpu(value: Any) -> int:
    """CPU units from an int or a string ("1024", "1 vCPU", "0.5 vcpu")."""
    number = _parse_size(value, "vcpu", 1024, "job_variables.cpu", "CPU units")
    if number <= 0:
        raise InvalidInput("cpu must be a positive number of CPU units", field="job_variables.cpu")
    return number


def parse_memory(value: Any) -> int:
    """MiB from an int or a string ("2048", "2 GB", "2GB")."""
    number = _parse_size(value, "gb", 1024, "job_variables.memory", "MiB")
    if number <= 0:
        raise InvalidInput("memory must be a positive number of MiB", field="job_variables.memory")
    return number


def _parse_size(value: Any, unit: str, factor: int, field: str, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{field.split('.')[-1]} must be a number of {what}", field=field)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text.isdigit():
            return int(text)
        if text.endswith(unit):
            try:
                number = float(text[: -len(unit)])
            except ValueError:
                pass
            else:
                scaled = number * factor
                if scaled.is_integer():
                    return int(scaled)
    raise InvalidInput(
        f"{field.split('.')[-1]} must be a number of {what}, not {str(value)[:40]!r}",
        field=field,
    )


def check_role_arn(value: Any, variable: str) -> str:
    field = f"job_variables.{variable}"
    if not isinstance(value, str) or not ROLE_ARN.match(value):
        raise InvalidInput(
            f"{variable} must be an IAM role ARN such as "
            f"arn:aws:iam::123456789012:role/name, not {str(value)[:120]!r}",
            field=field,
        )
    return value


def check_secret_arn(name: str, value: Any) -> str:
    # The message names the secret, never echoes more than the (non-secret) reference.
    if not isinstance(value, str) or not SECRET_ARN.match(value):
        raise InvalidInput(
            f"secret {name!r} must reference a Secrets Manager secret ARN "
            "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME) or a Parameter Store parameter "
            "ARN (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME)",
            field=f"job_variables.secrets.{name}",
        )
    return value


def check_ephemeral_storage(value: Any) -> int:
    field = "job_variables.ephemeral_storage"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput("ephemeral_storage must be a whole number of GiB", field=field)
    if not EPHEMERAL_STORAGE_MIN_GIB <= value <= EPHEMERAL_STORAGE_MAX_GIB:
        raise InvalidInput(
            f"ephemeral_storage must be between {EPHEMERAL_STORAGE_MIN_GIB} and "
            f"{EPHEMERAL_STORAGE_MAX_GIB} GiB, not {value}",
            field=field,
        )
    return value


def default_template() -> dict[str, Any]:
    """The `ecs:push` / `ecs` base job template (Prefect's ECS work pool shape)."""
    return {
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "region": "{{ region }}",
            "secrets": "{{ secrets }}",
            "task_definition_arn": "{{ task_definition_arn }}",
            "task_definition": {
                "containerDefinitions": [{"image": "{{ image }}", "name": "{{ container_name }}"}],
                "cpu": "{{ cpu }}",
                "family": "{{ family }}",
                "memory": "{{ memory }}",
                "executionRoleArn": "{{ execution_role_arn }}",
                "ephemeralStorage": {"sizeInGiB": "{{ ephemeral_storage }}"},
            },
            "task_run_request": {
                "launchType": "{{ launch_type }}",
                "cluster": "{{ cluster }}",
                "overrides": {
                    "containerOverrides": [
                        {
                            "name": "{{ container_name }}",
                            "command": "{{ command }}",
                            "environment": "{{ env }}",
                        }
                    ],
                    "taskRoleArn": "{{ task_role_arn }}",
                },
                "tags": "{{ labels }}",
                "taskDefinition": "{{ task_definition_arn }}",
                "capacityProviderStrategy": "{{ capacity_provider_strategy }}",
                "platformVersion": "{{ platform_version }}",
            },
            "cluster": "{{ cluster }}",
            "launch_type": "{{ launch_type }}",
            "vpc_id": "{{ vpc_id }}",
            "network_configuration": "{{ network_configuration }}",
            "container_name": "{{ container_name }}",
            "execution_role_arn": "{{ execution_role_arn }}",
            "configure_cloudwatch_logs": "{{ configure_cloudwatch_logs }}",
            "cloudwatch_logs_options": "{{ cloudwatch_logs_options }}",
            "cloudwatch_logs_prefix": "{{ cloudwatch_logs_prefix }}",
            "task_start_timeout_seconds": "{{ task_start_timeout_seconds }}",
        },
        "variables": {
            "type": "object",
            "description": "Variables of an ECS (Fargate) job template.",
            # The deployment's image fills `image`; a deployment without one leaves it to runs.
            "required": ["image"],
            "properties": _variables(),
        },
    }


def _variables() -> dict[str, Any]:
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "image": {
            "title": "Image",
            "description": (
                "The container image the run executes in. Defaults to the deployment's image "
                "(pinned by digest once pushed)."
            ),
            "type": "string",
        },
        "cpu": {
            "title": "CPU",
            "description": (
                "CPU units of the task (1024 = 1 vCPU). Fargate accepts 256, 512, 1024, 2048, "
                "4096, 8192 and 16384, each with its own memory sizes."
            ),
            "type": "integer",
            "default": DEFAULT_CPU,
        },
        "memory": {
            "title": "Memory",
            "description": (
                "Memory of the task in MiB; must suit the cpu on Fargate (e.g. 1024 CPU units: "
                "2048 to 8192 MiB in steps of 1024)."
            ),
            "type": "integer",
            "default": DEFAULT_MEMORY,
        },
        "cluster": {
            "title": "Cluster",
            "description": (
                "Name or ARN of the ECS cluster the task runs in. Unset: the account's "
                "'default' cluster."
            ),
            "type": "string",
        },
        "launch_type": {
            "title": "Launch Type",
            "description": (
                "FARGATE, FARGATE_SPOT (run through the FARGATE_SPOT capacity provider) or EC2. "
                "Ignored when capacity_provider_strategy is set."
            ),
            "type": "string",
            "enum": list(LAUNCH_TYPES),
            "default": DEFAULT_LAUNCH_TYPE,
        },
        "capacity_provider_strategy": {
            "title": "Capacity Provider Strategy",
            "description": (
                "Capacity providers to run the task with, e.g. "
                '[{"capacityProvider": "FARGATE_SPOT", "weight": 1}]. Replaces launch_type.'
            ),
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "capacityProvider": {"type": "string"},
                    "weight": {"type": "integer", "minimum": 0, "maximum": 1000},
                    "base": {"type": "integer", "minimum": 0, "maximum": 100000},
                },
                "required": ["capacityProvider"],
            },
        },
        "execution_role_arn": {
            "title": "Execution Role ARN",
            "description": (
                "Role ECS uses to start the task: pull the image, read `secrets`, write "
                "CloudWatch logs. Required for private ECR images, secrets and logs."
            ),
            "type": "string",
        },
        "task_role_arn": {
            "title": "Task Role ARN",
            "description": "Role the run's code assumes while it runs (its AWS permissions).",
            "type": "string",
        },
        "vpc_id": {
            "title": "VPC ID",
            "description": (
                "VPC whose subnets the task uses when network_configuration names no subnets. "
                "Unset: the region's default VPC."
            ),
            "type": "string",
        },
        "network_configuration": {
            "title": "Network Configuration",
            "description": (
                "The task's awsvpc configuration: subnets, securityGroups, assignPublicIp "
                "(ENABLED or DISABLED). Without subnets, those of vpc_id (or the default VPC) "
                "are used, with a public IP."
            ),
            "type": "object",
            "properties": {
                "subnets": {"type": "array", "items": {"type": "string"}},
                "securityGroups": {"type": "array", "items": {"type": "string"}},
                "assignPublicIp": {"type": "string", "enum": ["ENABLED", "DISABLED"]},
            },
        },
        "region": {
            "title": "Region",
            "description": (
                "AWS region of the cluster. Unset: the pool's `region` setting, else the "
                "region of the control plane's AWS configuration."
            ),
            "type": "string",
        },
        "env": {
            "title": "Environment Variables",
            "description": (
                "Environment variables of the run's container, set per run in the RunTask "
                "overrides (not in the task definition)."
            ),
            "type": "object",
            "additionalProperties": {"type": ["string", "null"]},
            "default": {},
        },
        "secrets": {
            "title": "Secrets",
            "description": (
                "Environment variables read from AWS when the task starts: name -> ARN of a "
                "Secrets Manager secret or an SSM Parameter Store parameter. Passed to ECS as "
                "`valueFrom` only; the execution role must be allowed to read them."
            ),
            **string_map,
            "default": {},
        },
        "container_name": {
            "title": "Container Name",
            "description": (
                "Name of the container the run executes in. Unset: 'skylane', or the first "
                "container of a task definition that has no container of that name."
            ),
            "type": "string",
            "default": DEFAULT_CONTAINER_NAME,
        },
        "family": {
            "title": "Family",
            "description": (
                "Task definition family. Unset: skylane-<pool>-<flow>-<deployment>. One task "
                "definition revision is registered per distinct content and reused by every run."
            ),
            "type": "string",
        },
        "labels": {
            "title": "Labels",
            "description": (
                "Tags put on each task (besides skylane-run-id, skylane-deployment, "
                "skylane-pool and skylane-attempt)."
            ),
            **string_map,
        },
        "name": {
            "title": "Name",
            "description": "Accepted for compatibility with Prefect templates; not used.",
            "type": "string",
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
        "task_definition_arn": {
            "title": "Task Definition ARN",
            "description": (
                "Run an existing task definition instead of registering one from this template "
                "(the task definition settings above are then ignored; skylane never "
                "deregisters it)."
            ),
            "type": "string",
        },
        "configure_cloudwatch_logs": {
            "title": "Configure CloudWatch Logs",
            "description": (
                "Send the container's output to CloudWatch Logs (awslogs driver; needs "
                "execution_role_arn with logs:CreateLogGroup, logs:CreateLogStream and "
                "logs:PutLogEvents). `skylane run logs` reads it back when the run sent none."
            ),
            "type": "boolean",
            "default": False,
        },
        "cloudwatch_logs_options": {
            "title": "CloudWatch Logs Options",
            "description": (
                'Extra or overriding awslogs options, e.g. {"awslogs-group": "my-group"}. '
                "Defaults: group 'skylane', the task's region, stream prefix "
                "cloudwatch_logs_prefix, awslogs-create-group true."
            ),
            **string_map,
            "default": {},
        },
        "cloudwatch_logs_prefix": {
            "title": "CloudWatch Logs Prefix",
            "description": (
                "awslogs stream prefix: streams are named <prefix>/<container>/<task id>. "
                "Default: 'skylane'. awslogs-stream-prefix in cloudwatch_logs_options wins."
            ),
            "type": "string",
        },
        "task_start_timeout_seconds": {
            "title": "Task Start Timeout Seconds",
            "description": (
                "A task still provisioning or pending this long after it was created is "
                "stopped and its run crashes. 0 disables the limit."
            ),
            "type": "integer",
            "minimum": 0,
            "default": DEFAULT_START_TIMEOUT_SECONDS,
        },
        "platform_version": {
            "title": "Platform Version",
            "description": "Fargate platform version, e.g. LATEST or 1.4.0.",
            "type": "string",
        },
        "ephemeral_storage": {
            "title": "Ephemeral Storage",
            "description": (
                f"Fargate ephemeral storage of the task in GiB ({EPHEMERAL_STORAGE_MIN_GIB} to "
                f"{EPHEMERAL_STORAGE_MAX_GIB}). Unset: Fargate's default of 20 GiB."
            ),
            "type": "integer",
            "minimum": EPHEMERAL_STORAGE_MIN_GIB,
            "maximum": EPHEMERAL_STORAGE_MAX_GIB,
        },
    }

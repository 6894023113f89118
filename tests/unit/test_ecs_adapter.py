"""The ECS adapter against moto (in-process), plus botocore stubs for injected errors."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

boto3 = pytest.importorskip("boto3", reason="the ECS adapter tests need boto3 (skylane[aws])")
moto = pytest.importorskip("moto", reason="the ECS adapter tests need moto")

from botocore.exceptions import ClientError, EndpointConnectionError  # noqa: E402
from botocore.stub import Stubber  # noqa: E402
from moto import mock_aws  # noqa: E402
from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.ecs.models import ecs_backends  # noqa: E402
from moto.moto_api import state_manager  # noqa: E402

from skylane import templates  # noqa: E402
from skylane.adapters import ADAPTERS  # noqa: E402
from skylane.adapters.aws import translate_error  # noqa: E402
from skylane.adapters.base import MemoryResourceCache, ProviderStatus, RunContext  # noqa: E402
from skylane.adapters.ecs import (  # noqa: E402
    CACHE_TASK_DEFINITIONS,
    EcsAdapter,
    EcsRequest,
    make_ref,
    parse_ref,
    started_by_for,
)
from skylane.adapters.ecs_template import check_fargate_size, fargate_memory_choices  # noqa: E402
from skylane.errors import (  # noqa: E402
    CapacityError,
    InvalidInput,
    PermanentProviderError,
    ProviderAuthError,
    ProviderNotFound,
    QuotaError,
    ThrottledError,
    TransientProviderError,
)
from skylane.models import Pool  # noqa: E402
from skylane.retries import RetryPolicy  # noqa: E402
from skylane.settings import Settings  # noqa: E402

REGION = "us-east-1"
ACCOUNT = DEFAULT_ACCOUNT_ID
TOKEN = "sklr_run-token-s3cr3t-value"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flows@sha256:" + "ab" * 32
BAD_EXEC = "job_variables.execution_role_arn"
EXEC_ROLE = f"arn:aws:iam::{ACCOUNT}:role/skylane-execution"
TASK_ROLE = f"arn:aws:iam::{ACCOUNT}:role/skylane-task"
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod/db-AbCdEf"
PARAM_ARN = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/prod/api-key"


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _quiet_tasks() -> Iterator[None]:
    """moto advances a task one state per DescribeTasks by default; keep tasks where tests put
    them."""
    state_manager.set_transition(
        model_name="ecs::task", transition={"progression": "manual", "times": 10**9}
    )
    yield
    state_manager.unset_transition("ecs::task")


class Cloud:
    def __init__(self) -> None:
        self.ecs = boto3.client("ecs", region_name=REGION)
        self.ec2 = boto3.client("ec2", region_name=REGION)
        self.logs = boto3.client("logs", region_name=REGION)
        iam = boto3.client("iam", region_name=REGION)
        trust = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        )
        for name in ("skylane-execution", "skylane-task"):
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
        self.ecs.create_cluster(clusterName="c1")
        vpc = self.ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        # moto's awsvpc tasks need DNS hostnames on the VPC (the default VPC has them).
        self.ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        self.vpc_id = vpc
        self.subnets = sorted(
            self.ec2.create_subnet(VpcId=vpc, CidrBlock=cidr)["Subnet"]["SubnetId"]
            for cidr in ("10.20.1.0/24", "10.20.2.0/24")
        )

    def tasks(self, cluster: str = "c1") -> list[dict[str, Any]]:
        arns = []
        for desired in ("RUNNING", "STOPPED"):
            arns += self.ecs.list_tasks(cluster=cluster, desiredStatus=desired)["taskArns"]
        if not arns:
            return []
        return self.ecs.describe_tasks(cluster=cluster, tasks=arns, include=["TAGS"])["tasks"]

    def revisions(self, family: str, status: str = "ACTIVE") -> list[str]:
        return self.ecs.list_task_definitions(familyPrefix=family, status=status)[
            "taskDefinitionArns"
        ]


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    with mock_aws():
        yield Cloud()


def moto_task(arn: str) -> Any:
    backend = ecs_backends[ACCOUNT][REGION]
    for tasks in backend.tasks.values():
        if arn in tasks:
            return tasks[arn]
    raise KeyError(arn)


def make_pool(
    settings: dict[str, Any] | None = None,
    credentials: dict[str, Any] | None = None,
    template: dict[str, Any] | None = None,
) -> Pool:
    now = datetime.now(UTC)
    return Pool(
        id=uuid.uuid4(),
        name="prod",
        type="ecs:push",
        base_job_template=template or EcsAdapter.default_template(),
        settings={"region": REGION} if settings is None else settings,
        credentials=credentials,
        created_at=now,
        updated_at=now,
    )


def make_adapter(**pool_kwargs: Any) -> EcsAdapter:
    adapter = EcsAdapter(make_pool(**pool_kwargs), Settings())
    adapter.retry_policy = RetryPolicy(base=0.0, cap=0.05)
    return adapter


def make_context(key: str = "skl-run-1", image: str | None = IMAGE) -> RunContext:
    return RunContext(
        run_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        flow_name="etl",
        deployment_name="etl/nightly",
        pool_name="prod",
        entrypoint="flows/etl.py:etl",
        api_url="https://skylane.example.com",
        run_token=TOKEN,
        idempotency_key=key,
        image=image,
    )


def render(
    adapter: EcsAdapter,
    job_variables: dict[str, Any] | None = None,
    *,
    key: str = "skl-run-1",
    template: dict[str, Any] | None = None,
    validate: bool = True,
    image: str | None = IMAGE,
) -> EcsRequest:
    """Resolve the template like the dispatcher does (validate=False skips the schema, to
    reach the adapter's own checks), then render."""
    template = template or adapter.pool.base_job_template
    layers = [{"image": image} if image else None, job_variables]  # like the catalog does
    if validate:
        _, config = templates.resolve_job_configuration(template, *layers)
    else:
        values = templates.merge_job_variables(template["variables"], *layers)
        config = templates.render(template["job_configuration"], values)
    return adapter.render(config, make_context(key, image=image))


def env_of(run_task: dict[str, Any]) -> dict[str, str]:
    override = run_task["overrides"]["containerOverrides"][0]
    return {e["name"]: e["value"] for e in override["environment"]}


def tags_of(items: list[dict[str, str]]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in items}


def capture(client: Any, operation: str) -> list[dict[str, Any]]:
    """Record the params of every `operation` call made through `client`."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(copy.deepcopy(params))

    client.meta.events.register(
        f"provide-client-params.{client.meta.service_model.service_name}.{operation}", record
    )
    return seen


# --- template --------------------------------------------------------------------------------


def test_import_does_not_import_boto3() -> None:
    code = (
        "import skylane.adapters, sys; "
        "assert 'ecs' in skylane.adapters.ADAPTERS; "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'SDK imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_registered_and_default_template_is_prefect_ecs_shape() -> None:
    assert ADAPTERS["ecs"] is EcsAdapter
    template = EcsAdapter.default_template()
    templates.validate_base_job_template(template)
    config, variables = template["job_configuration"], template["variables"]
    jsonschema.Draft202012Validator.check_schema(variables)
    assert config["task_definition"]["containerDefinitions"] == [
        {"image": "{{ image }}", "name": "{{ container_name }}"}
    ]
    for key in ("cpu", "memory", "family", "executionRoleArn", "ephemeralStorage"):
        assert key in config["task_definition"]
    run_request = config["task_run_request"]
    for key in ("launchType", "cluster", "overrides", "tags", "capacityProviderStrategy"):
        assert key in run_request
    assert run_request["overrides"]["containerOverrides"][0]["environment"] == "{{ env }}"
    for key in ("env", "labels", "name", "command", "cluster", "vpc_id", "network_configuration"):
        assert key in config
    properties = variables["properties"]
    required = {
        "image", "cpu", "memory", "cluster", "launch_type", "capacity_provider_strategy",
        "execution_role_arn", "task_role_arn", "vpc_id", "network_configuration", "region",
        "env", "secrets", "container_name", "family", "labels", "configure_cloudwatch_logs",
        "cloudwatch_logs_options", "cloudwatch_logs_prefix", "task_start_timeout_seconds",
        "platform_version", "ephemeral_storage", "command",
    }  # fmt: skip
    assert required <= set(properties)
    for name, prop in properties.items():
        assert prop.get("title") and prop.get("description") and prop.get("type"), name
    assert variables["required"] == ["image"]
    assert properties["launch_type"]["enum"] == ["FARGATE", "FARGATE_SPOT", "EC2"]
    assert properties["task_start_timeout_seconds"]["default"] == 300
    assert properties["container_name"]["default"] == "skylane"
    assert properties["ephemeral_storage"]["minimum"] == 21
    assert properties["ephemeral_storage"]["maximum"] == 200


def test_fargate_size_table() -> None:
    assert fargate_memory_choices(256) == [512, 1024, 2048]
    assert fargate_memory_choices(512) == [1024, 2048, 3072, 4096]
    assert fargate_memory_choices(8192)[:3] == [16384, 20480, 24576]
    assert fargate_memory_choices(16384)[-1] == 122880
    for cpu, memory in ((256, 512), (1024, 8192), (4096, 30720), (8192, 61440), (16384, 32768)):
        check_fargate_size(cpu, memory)
    for cpu, memory, field in (
        (256, 4096, "memory"),
        (1024, 1024, "memory"),
        (8192, 17408, "memory"),
        (16384, 36864, "memory"),
        (300, 1024, "cpu"),
    ):
        with pytest.raises(InvalidInput) as info:
            check_fargate_size(cpu, memory)
        assert info.value.field == f"job_variables.{field}"


# --- render ----------------------------------------------------------------------------------


def test_render_builds_the_exact_requests() -> None:
    adapter = make_adapter()
    request = render(
        adapter,
        {
            "cluster": "c1",
            "cpu": 512,
            "memory": 2048,
            "env": {"LOG_LEVEL": "debug", "DB_PASSWORD": "plain-would-be-bad"},
            "labels": {"team": "data", "cost center": "42"},
            "secrets": {"DB_PASSWORD": SECRET_ARN, "API_KEY": PARAM_ARN},
            "execution_role_arn": EXEC_ROLE,
            "task_role_arn": TASK_ROLE,
            "network_configuration": {"subnets": ["subnet-1", "subnet-2"]},
            "ephemeral_storage": 30,
            "platform_version": "1.4.0",
        },
    )
    assert request.region == REGION
    assert request.start_timeout_seconds == 300
    assert request.network_lookup is None
    assert request.task_definition == {
        "containerDefinitions": [
            {
                "image": IMAGE,
                "name": "skylane",
                "memory": 2048,
                "secrets": [
                    {"name": "DB_PASSWORD", "valueFrom": SECRET_ARN},
                    {"name": "API_KEY", "valueFrom": PARAM_ARN},
                ],
            }
        ],
        "cpu": "512",
        "family": "skylane-prod-etl-nightly",
        "memory": "2048",
        "executionRoleArn": EXEC_ROLE,
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "ephemeralStorage": {"sizeInGiB": 30},
        "tags": [
            {"key": "skylane-managed", "value": "true"},
            {"key": "skylane-pool", "value": "prod"},
        ],
    }
    run_task = request.run_task
    assert set(run_task) == {
        "launchType", "cluster", "overrides", "tags", "platformVersion", "networkConfiguration",
    }  # fmt: skip
    assert run_task["launchType"] == "FARGATE"
    assert run_task["cluster"] == "c1"
    assert run_task["platformVersion"] == "1.4.0"
    assert run_task["networkConfiguration"] == {
        "awsvpcConfiguration": {"subnets": ["subnet-1", "subnet-2"], "securityGroups": []}
    }
    assert run_task["overrides"]["taskRoleArn"] == TASK_ROLE
    override = run_task["overrides"]["containerOverrides"][0]
    assert override["name"] == "skylane"
    assert override["command"] == ["python", "-m", "skylane.runtime"]
    assert env_of(run_task) == {
        "LOG_LEVEL": "debug",
        "SKYLANE_RUN_ID": "12345678-1234-5678-1234-567812345678",
        "SKYLANE_API_URL": "https://skylane.example.com",
        "SKYLANE_RUN_TOKEN": TOKEN,
    }
    assert tags_of(run_task["tags"]) == {
        "team": "data",
        "cost center": "42",
        "skylane-run-id": "12345678-1234-5678-1234-567812345678",
        "skylane-deployment": "etl/nightly",
        "skylane-pool": "prod",
        "skylane-attempt": "skl-run-1",
        "skylane-start-timeout": "300",
    }
    # The run's variables are per run: the task definition never holds them.
    assert "SKYLANE" not in json.dumps(request.task_definition)
    # Secrets only as valueFrom: never a plain environment value anywhere.
    assert "environment" not in request.task_definition["containerDefinitions"][0]
    assert SECRET_ARN not in json.dumps(request.run_task)
    assert "plain-would-be-bad" not in json.dumps(request.run_task)


def test_two_runs_of_a_deployment_render_one_task_definition() -> None:
    adapter = make_adapter()
    first = render(adapter, {"env": {"A": "1"}}, key="skl-a-1")
    second = render(adapter, {"env": {"A": "2"}}, key="skl-b-1")
    assert first.task_definition == second.task_definition
    assert env_of(first.run_task)["A"] == "1" and env_of(second.run_task)["A"] == "2"


def test_render_command_string_list_and_ec2() -> None:
    adapter = make_adapter()
    request = render(adapter, {"command": "python -m flows.etl --date '2024-01-01 00:00'"})
    assert request.run_task["overrides"]["containerOverrides"][0]["command"] == [
        "python", "-m", "flows.etl", "--date", "2024-01-01 00:00",
    ]  # fmt: skip
    request = render(adapter, {"command": ["run", "it"], "launch_type": "EC2"})
    assert request.run_task["overrides"]["containerOverrides"][0]["command"] == ["run", "it"]
    assert request.run_task["launchType"] == "EC2"
    assert "requiresCompatibilities" not in request.task_definition
    assert "networkMode" not in request.task_definition
    container = request.task_definition["containerDefinitions"][0]
    assert container["cpu"] == 1024 and container["memory"] == 2048
    assert "networkConfiguration" not in request.run_task and request.network_lookup is None


def test_render_fargate_spot_and_capacity_strategy() -> None:
    adapter = make_adapter()
    spot = render(adapter, {"launch_type": "FARGATE_SPOT"})
    assert "launchType" not in spot.run_task
    assert spot.run_task["capacityProviderStrategy"] == [
        {"capacityProvider": "FARGATE_SPOT", "weight": 1}
    ]
    assert spot.task_definition["requiresCompatibilities"] == ["FARGATE"]
    strategy = [
        {"capacityProvider": "FARGATE", "weight": 1, "base": 1},
        {"capacityProvider": "FARGATE_SPOT", "weight": 3},
    ]
    mixed = render(adapter, {"capacity_provider_strategy": strategy})
    assert "launchType" not in mixed.run_task
    assert mixed.run_task["capacityProviderStrategy"] == strategy


def test_render_network_lookup_when_no_subnets() -> None:
    adapter = make_adapter()
    default_vpc = render(adapter, {})
    assert default_vpc.network_lookup is not None
    assert default_vpc.network_lookup.vpc_id is None
    assert "networkConfiguration" not in default_vpc.run_task
    given = render(
        adapter,
        {
            "vpc_id": "vpc-123",
            "network_configuration": {"securityGroups": ["sg-1"], "assignPublicIp": "DISABLED"},
        },
    )
    assert given.network_lookup.vpc_id == "vpc-123"
    assert given.network_lookup.security_groups == ("sg-1",)
    assert given.network_lookup.assign_public_ip == "DISABLED"


def test_render_cloudwatch_logs() -> None:
    adapter = make_adapter()
    request = render(
        adapter,
        {
            "configure_cloudwatch_logs": True,
            "execution_role_arn": EXEC_ROLE,
            "cloudwatch_logs_prefix": "nightly",
            "cloudwatch_logs_options": {"awslogs-group": "/skylane/prod", "mode": "non-blocking"},
        },
    )
    assert request.task_definition["containerDefinitions"][0]["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-create-group": "true",
            "awslogs-group": "/skylane/prod",
            "awslogs-stream-prefix": "nightly",
            "awslogs-region": REGION,
            "mode": "non-blocking",
        },
    }
    with pytest.raises(InvalidInput) as info:
        render(adapter, {"configure_cloudwatch_logs": True})
    assert info.value.field == "job_variables.execution_role_arn"


@pytest.mark.parametrize(
    ("job_variables", "field", "text"),
    [
        ({"cpu": 1024, "memory": 1024}, "job_variables.memory", "2048 to 8192"),
        ({"cpu": 300, "memory": 1024}, "job_variables.cpu", "256"),
        ({"launch_type": "FARGATE_SPOT", "cpu": 256, "memory": 4096}, "job_variables.memory", ""),
        ({"execution_role_arn": "arn:aws:iam::12345:role/x"}, BAD_EXEC, ""),
        ({"task_role_arn": "my-role"}, "job_variables.task_role_arn", "IAM role ARN"),
        ({"execution_role_arn": f"arn:aws:iam::{ACCOUNT}:user/bob"}, BAD_EXEC, ""),
        ({"launch_type": "LAMBDA"}, "job_variables.launch_type", "FARGATE"),
        ({"ephemeral_storage": 20}, "job_variables.ephemeral_storage", "21"),
        ({"ephemeral_storage": 201}, "job_variables.ephemeral_storage", "200"),
        ({"secrets": {"DB": "plain-password"}}, "job_variables.secrets.DB", "Secrets Manager"),
        ({"secrets": {"DB": f"arn:aws:s3:::bucket/{ACCOUNT}"}}, "job_variables.secrets.DB", ""),
        ({"region": "Moon-1"}, "job_variables.region", ""),
        ({"labels": {"aws:owner": "x"}}, "job_variables.labels", "reserved"),
    ],
)
def test_render_rejects_bad_input_naming_the_variable(
    job_variables: dict[str, Any], field: str, text: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        render(make_adapter(), job_variables, validate=False)
    assert info.value.field == field
    assert text in info.value.message
    assert "plain-password" not in str(info.value)


def test_render_requires_an_image() -> None:
    with pytest.raises(InvalidInput) as info:  # the template's schema says so
        render(make_adapter(), {}, image=None)
    assert info.value.field == "job_variables.image"
    with pytest.raises(InvalidInput) as info:  # and so does render, for any template
        render(make_adapter(), {}, image=None, validate=False)
    assert info.value.field == "job_variables.image"
    # The image job variable (or the deployment's image) is enough.
    request = render(make_adapter(), {"image": "python:3.12"}, image=None)
    assert request.task_definition["containerDefinitions"][0]["image"] == "python:3.12"


def test_render_is_pure_and_masks_the_token() -> None:
    adapter = make_adapter(settings={"region": REGION, "endpoint_url": "http://127.0.0.1:1"})
    request = render(adapter, {"env": {"MY_SECRET_TOKEN": "abc"}})
    assert adapter.aws._session is None  # no session, no client, no call
    described = adapter.describe(request)
    text = json.dumps(described)
    assert TOKEN not in text and TOKEN not in repr(request) and TOKEN not in str(request)
    assert env_of(described["run_task"])["SKYLANE_RUN_TOKEN"] == "****"
    assert env_of(described["run_task"])["MY_SECRET_TOKEN"] == "****"
    assert described["task_definition"] == request.task_definition
    assert env_of(request.run_task)["SKYLANE_RUN_TOKEN"] == TOKEN  # the request itself is intact


def prefect_template() -> dict[str, Any]:
    """An ECS base job template as Prefect exports it for `ecs` / `ecs:push` pools (written
    from Prefect's documented ECSJobConfiguration / ECSVariables shape)."""

    def nullable(kind: str, title: str, description: str, **extra: Any) -> dict[str, Any]:
        return {
            "anyOf": [{"type": kind}, {"type": "null"}],
            "title": title,
            "description": description,
            **extra,
        }

    return {
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "aws_credentials": "{{ aws_credentials }}",
            "task_definition": {
                "containerDefinitions": [{"image": "{{ image }}", "name": "{{ container_name }}"}],
                "cpu": "{{ cpu }}",
                "family": "{{ family }}",
                "memory": "{{ memory }}",
                "executionRoleArn": "{{ execution_role_arn }}",
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
                            "cpu": "{{ cpu }}",
                            "memory": "{{ memory }}",
                        }
                    ],
                    "cpu": "{{ cpu }}",
                    "memory": "{{ memory }}",
                    "taskRoleArn": "{{ task_role_arn }}",
                },
                "tags": "{{ labels }}",
                "taskDefinition": "{{ task_definition_arn }}",
                "capacityProviderStrategy": "{{ capacity_provider_strategy }}",
            },
            "configure_cloudwatch_logs": "{{ configure_cloudwatch_logs }}",
            "cloudwatch_logs_options": "{{ cloudwatch_logs_options }}",
            "cloudwatch_logs_prefix": "{{ cloudwatch_logs_prefix }}",
            "network_configuration": "{{ network_configuration }}",
            "stream_output": "{{ stream_output }}",
            "task_start_timeout_seconds": "{{ task_start_timeout_seconds }}",
            "task_watch_poll_interval": "{{ task_watch_poll_interval }}",
            "auto_deregister_task_definition": "{{ auto_deregister_task_definition }}",
            "vpc_id": "{{ vpc_id }}",
            "container_name": "{{ container_name }}",
            "cluster": "{{ cluster }}",
            "match_latest_revision_in_family": "{{ match_latest_revision_in_family }}",
            "execution_role_arn": "{{ execution_role_arn }}",
        },
        "variables": {
            "description": "Variables for templating an ECS job.",
            "type": "object",
            "properties": {
                "name": nullable("string", "Name", "Name given to infrastructure."),
                "env": {
                    "title": "Environment Variables",
                    "description": "Environment variables to provide to the task run.",
                    "type": "object",
                    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
                "labels": {
                    "title": "Labels",
                    "description": "Labels applied to infrastructure.",
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                },
                "command": nullable("string", "Command", "The command to start a flow run."),
                "task_definition_arn": nullable(
                    "string", "Task Definition Arn", "An existing task definition to use."
                ),
                "aws_credentials": {
                    "title": "AWS Credentials",
                    "description": "The AWS credentials to use to connect to ECS.",
                    "allOf": [{"$ref": "#/definitions/AwsCredentials"}],
                    "default": {
                        "$ref": {"block_document_id": "5c7b4a1e-7c1a-4ad4-9b55-0c4cbb2a6b2e"}
                    },
                },
                "cluster": nullable("string", "Cluster", "The ECS cluster to run the task in."),
                "family": nullable("string", "Family", "A family for the task definition."),
                "launch_type": {
                    "title": "Launch Type",
                    "description": "The type of ECS task run infrastructure.",
                    "default": "FARGATE",
                    "enum": ["FARGATE", "EC2", "EXTERNAL", "FARGATE_SPOT"],
                    "type": "string",
                },
                "capacity_provider_strategy": {
                    "title": "Capacity Provider Strategy",
                    "description": "The capacity provider strategy to use.",
                    "type": "array",
                    "items": {"$ref": "#/definitions/CapacityProvider"},
                },
                "image": nullable("string", "Image", "The image to use for the container."),
                "cpu": nullable("integer", "CPU", "The amount of CPU to provide."),
                "memory": nullable("integer", "Memory", "The amount of memory to provide."),
                "container_name": nullable("string", "Container Name", "The container name."),
                "prefect_api_key_secret_arn": nullable(
                    "string", "Prefect API Key Secret ARN", "A secret holding an API key."
                ),
                "task_role_arn": nullable("string", "Task Role ARN", "A role for the task."),
                "execution_role_arn": nullable(
                    "string", "Execution Role ARN", "An execution role for the task."
                ),
                "vpc_id": nullable("string", "VPC ID", "The AWS VPC to link the task run to."),
                "configure_cloudwatch_logs": nullable(
                    "boolean", "Configure Cloudwatch Logs", "Send output to CloudWatch."
                ),
                "cloudwatch_logs_options": {
                    "title": "Cloudwatch Logs Options",
                    "description": "Extra awslogs options.",
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                },
                "cloudwatch_logs_prefix": nullable(
                    "string", "Cloudwatch Logs Prefix", "A prefix for the log streams."
                ),
                "network_configuration": {
                    "title": "Network Configuration",
                    "description": "Overrides the awsvpcConfiguration.",
                    "type": "object",
                },
                "stream_output": nullable("boolean", "Stream Output", "Stream logs locally."),
                "task_start_timeout_seconds": {
                    "title": "Task Start Timeout Seconds",
                    "description": "Time to wait for the task to start.",
                    "default": 300,
                    "type": "integer",
                },
                "task_watch_poll_interval": {
                    "title": "Task Watch Poll Interval",
                    "description": "Seconds between task state polls.",
                    "default": 5.0,
                    "type": "number",
                },
                "auto_deregister_task_definition": {
                    "title": "Auto Deregister Task Definition",
                    "description": "Deregister created task definitions.",
                    "default": False,
                    "type": "boolean",
                },
                "match_latest_revision_in_family": {
                    "title": "Match Latest Revision In Family",
                    "description": "Reuse the latest revision when equal.",
                    "default": False,
                    "type": "boolean",
                },
            },
            "definitions": {
                "AwsClientParameters": {
                    "title": "AwsClientParameters",
                    "type": "object",
                    "properties": {
                        "endpoint_url": {"title": "Endpoint URL", "type": "string"},
                        "verify": {"title": "Verify", "default": True, "type": "boolean"},
                    },
                },
                "AwsCredentials": {
                    "title": "AwsCredentials",
                    "description": "Block used to manage authentication with AWS.",
                    "type": "object",
                    "properties": {
                        "aws_access_key_id": {"title": "AWS Access Key ID", "type": "string"},
                        "aws_secret_access_key": {
                            "title": "AWS Access Key Secret",
                            "type": "string",
                            "writeOnly": True,
                            "format": "password",
                        },
                        "region_name": {"title": "Region Name", "type": "string"},
                        "aws_client_parameters": {
                            "title": "AWS Client Parameters",
                            "allOf": [{"$ref": "#/definitions/AwsClientParameters"}],
                        },
                    },
                    "block_type_slug": "aws-credentials",
                    "secret_fields": ["aws_secret_access_key"],
                    "block_schema_references": {},
                },
                "CapacityProvider": {
                    "title": "CapacityProvider",
                    "description": "The capacity provider strategy to use when running the task.",
                    "type": "object",
                    "properties": {
                        "capacityProvider": {"title": "Capacityprovider", "type": "string"},
                        "weight": {"title": "Weight", "type": "integer"},
                        "base": {"title": "Base", "type": "integer"},
                    },
                    "required": ["capacityProvider", "weight", "base"],
                },
            },
        },
    }


def test_prefect_template_imports_renders_and_runs(cloud: Cloud) -> None:
    template = prefect_template()
    templates.validate_base_job_template(template)  # accepted unchanged
    adapter = make_adapter(template=template)
    job_variables = {
        "image": IMAGE,
        "cluster": "c1",
        "cpu": 512,
        "memory": 1024,
        "env": {"A": "1", "UNSET": None},
        "labels": {"team": "data"},
        "execution_role_arn": EXEC_ROLE,
        "task_role_arn": TASK_ROLE,
        "vpc_id": cloud.vpc_id,
        "command": "python -m skylane.runtime --verbose",
    }
    request = render(adapter, job_variables, template=template)
    container = request.task_definition["containerDefinitions"][0]
    assert container == {"image": IMAGE, "name": "skylane", "memory": 1024}
    assert request.task_definition["cpu"] == "512" and request.task_definition["memory"] == "1024"
    assert request.task_definition["executionRoleArn"] == EXEC_ROLE
    assert request.network_lookup.vpc_id == cloud.vpc_id
    run_task = request.run_task
    assert run_task["launchType"] == "FARGATE" and run_task["cluster"] == "c1"
    overrides = run_task["overrides"]
    assert overrides["cpu"] == "512" and overrides["memory"] == "1024"
    assert overrides["taskRoleArn"] == TASK_ROLE
    override = overrides["containerOverrides"][0]
    assert override["name"] == "skylane" and override["cpu"] == 512
    assert override["command"] == ["python", "-m", "skylane.runtime", "--verbose"]
    env = env_of(run_task)
    assert env["A"] == "1" and "UNSET" not in env and env["SKYLANE_RUN_TOKEN"] == TOKEN
    assert tags_of(run_task["tags"])["team"] == "data"
    assert "aws_credentials" not in json.dumps(adapter.describe(request))

    ref = adapter.submit(request, "skl-prefect-1")
    (task,) = cloud.tasks()
    assert task["taskArn"] == ref
    assert task["overrides"]["taskRoleArn"] == TASK_ROLE


# --- submit and find -------------------------------------------------------------------------


def test_submit_starts_exactly_one_task(cloud: Cloud) -> None:
    adapter = make_adapter()
    runs = capture(adapter.client("ecs"), "RunTask")
    request = render(
        adapter,
        {"cluster": "c1", "vpc_id": cloud.vpc_id, "labels": {"team": "data"}, "env": {"A": "1"}},
    )
    ref = adapter.submit(request, "skl-run-1")
    (task,) = cloud.tasks()
    assert task["taskArn"] == ref and parse_ref(ref).cluster == "c1"
    assert task["startedBy"] == started_by_for("skl-run-1")
    assert len(task["startedBy"]) <= 36
    assert task["launchType"] == "FARGATE"
    override = task["overrides"]["containerOverrides"][0]
    assert {e["name"]: e["value"] for e in override["environment"]} == {
        "A": "1",
        "SKYLANE_RUN_ID": "12345678-1234-5678-1234-567812345678",
        "SKYLANE_API_URL": "https://skylane.example.com",
        "SKYLANE_RUN_TOKEN": TOKEN,
    }
    tags = tags_of(task["tags"])
    assert tags["team"] == "data" and tags["skylane-pool"] == "prod"
    assert tags["skylane-deployment"] == "etl/nightly" and tags["skylane-attempt"] == "skl-run-1"
    assert tags["skylane-run-id"] == "12345678-1234-5678-1234-567812345678"
    # Network configuration derived from the VPC's subnets.
    (params,) = runs
    assert params["clientToken"] == "skl-run-1"
    assert params["networkConfiguration"] == {
        "awsvpcConfiguration": {
            "subnets": cloud.subnets,
            "securityGroups": [],
            "assignPublicIp": "ENABLED",
        }
    }
    subnet = {d["name"]: d["value"] for d in task["attachments"][0]["details"]}["subnetId"]
    assert subnet in cloud.subnets
    # The task definition has container memory and no per-run value.
    definition = cloud.ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])
    container = definition["taskDefinition"]["containerDefinitions"][0]
    assert container["memory"] == 2048 and container["image"] == IMAGE
    assert container["environment"] == []


def test_submit_uses_the_default_vpc_and_caches_subnets(cloud: Cloud) -> None:
    adapter = make_adapter()
    runs = capture(adapter.client("ecs"), "RunTask")
    adapter.submit(render(adapter, {"cluster": "c1"}, key="k-1"), "k-1")
    adapter.submit(render(adapter, {"cluster": "c1"}, key="k-2"), "k-2")
    default_vpc = cloud.ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])
    vpc_id = default_vpc["Vpcs"][0]["VpcId"]
    subnets = cloud.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
    expected = sorted(s["SubnetId"] for s in subnets["Subnets"])
    assert [r["networkConfiguration"]["awsvpcConfiguration"]["subnets"] for r in runs] == [
        expected,
        expected,
    ]
    assert json.loads(adapter.cache.get("ecs-subnets", f"{REGION}:default")) == expected


def test_submit_twice_with_one_key_starts_one_task_and_find_recovers_it(cloud: Cloud) -> None:
    adapter = make_adapter()
    request = render(adapter, {"cluster": "c1", "vpc_id": cloud.vpc_id}, key="skl-k-1")
    lookups = capture(adapter.client("ecs"), "ListTasks")
    ref = adapter.submit(request, "skl-k-1")
    assert lookups == []  # a key never submitted before costs no ListTasks call
    assert adapter.submit(request, "skl-k-1") == ref  # moto ignores clientToken: find did it
    assert lookups != []
    assert len(cloud.tasks()) == 1
    assert adapter.find("skl-k-1") == ref
    assert adapter.find("skl-other") is None
    # After a restart with the cache lost, find looks in the pool's cluster.
    fresh = make_adapter(settings={"region": REGION, "cluster": "c1"})
    assert fresh.find("skl-k-1") == ref
    # A stopped task is still found (so a finished run is never started again).
    cloud.ecs.stop_task(cluster="c1", task=ref, reason="done")
    assert adapter.find("skl-k-1") == ref
    assert adapter.submit(request, "skl-k-1") == ref
    assert len(cloud.tasks()) == 1


def test_two_runs_share_one_task_definition(cloud: Cloud) -> None:
    adapter = make_adapter()
    registrations = capture(adapter.client("ecs"), "RegisterTaskDefinition")
    variables = {"cluster": "c1", "vpc_id": cloud.vpc_id}
    first = adapter.submit(render(adapter, variables, key="run-a-1"), "run-a-1")
    second = adapter.submit(
        render(adapter, {**variables, "env": {"X": "y"}}, key="run-b-1"), "run-b-1"
    )
    assert first != second
    assert len(registrations) == 1
    assert len(cloud.revisions("skylane-prod-etl-nightly")) == 1
    tasks = cloud.tasks()
    assert len(tasks) == 2 and len({t["taskDefinitionArn"] for t in tasks}) == 1
    # A restarted control plane with the same (store-backed) cache registers nothing.
    again = EcsAdapter(adapter.pool, Settings(), cache=adapter.cache)
    again_registrations = capture(again.client("ecs"), "RegisterTaskDefinition")
    again.submit(render(again, variables, key="run-c-1"), "run-c-1")
    assert again_registrations == []
    # Different content: a new revision.
    adapter.submit(render(adapter, {**variables, "memory": 4096}, key="run-d-1"), "run-d-1")
    assert len(cloud.revisions("skylane-prod-etl-nightly")) == 2
    assert len(adapter.cache.items(CACHE_TASK_DEFINITIONS)) == 2


def test_a_lost_registration_race_uses_the_winner(cloud: Cloud) -> None:
    class RacingCache(MemoryResourceCache):
        def put(self, kind: str, key: str, value: str) -> str:
            if kind == CACHE_TASK_DEFINITIONS:
                super().put(kind, key, "arn:aws:ecs:us-east-1:123456789012:task-definition/won:1")
            return super().put(kind, key, value)

    winner = cloud.ecs.register_task_definition(
        family="won", containerDefinitions=[{"name": "skylane", "image": IMAGE, "memory": 512}]
    )["taskDefinition"]["taskDefinitionArn"]
    assert winner.endswith("task-definition/won:1")
    adapter = EcsAdapter(make_pool(), Settings(), cache=RacingCache())
    ref = adapter.submit(render(adapter, {"cluster": "c1", "vpc_id": cloud.vpc_id}), "k")
    (task,) = cloud.tasks()
    assert task["taskArn"] == ref and task["taskDefinitionArn"] == winner
    assert cloud.revisions("skylane-prod-etl-nightly") == []  # ours was deregistered


# --- statuses --------------------------------------------------------------------------------


def submit_one(cloud: Cloud, adapter: EcsAdapter, key: str = "k-1", **variables: Any) -> str:
    request = render(adapter, {"cluster": "c1", "vpc_id": cloud.vpc_id, **variables}, key=key)
    return adapter.submit(request, key)


def test_statuses_running_then_stopped_with_the_reason(cloud: Cloud) -> None:
    adapter = make_adapter()
    ok, failed, killed = (submit_one(cloud, adapter, key=f"k-{i}") for i in range(3))
    assert {s.status for s in adapter.statuses([ok, failed, killed]).values()} == {
        ProviderStatus.RUNNING
    }
    moto_task(failed).containers[0].exitCode = 2
    moto_task(killed).containers[0].exitCode = None
    for ref in (ok, failed, killed):
        cloud.ecs.stop_task(cluster="c1", task=ref, reason="Essential container in task exited")
    states = adapter.statuses([ok, failed, killed])
    assert states[ok].status == ProviderStatus.SUCCEEDED and states[ok].exit_code == 0
    assert states[failed].status == ProviderStatus.FAILED and states[failed].exit_code == 2
    assert "exit code 2" in states[failed].message
    assert states[killed].status == ProviderStatus.STOPPED and states[killed].exit_code is None
    for state in states.values():
        assert state.status.ended
        assert "Essential container in task exited" in state.message


def test_statuses_follow_moto_state_progression(cloud: Cloud) -> None:
    adapter = make_adapter()
    ref = submit_one(cloud, adapter)
    moto_task(ref).stopped_reason = "Task failed ELB health checks"
    state_manager.set_transition(
        model_name="ecs::task", transition={"progression": "manual", "times": 1}
    )
    seen = []
    for _ in range(8):
        state = adapter.statuses([ref])[ref]
        seen.append(state.status)
        if state.status.ended:
            break
    assert seen[0] == ProviderStatus.RUNNING  # DEACTIVATING, STOPPING... are still running
    assert seen[-1].ended
    assert "Task failed ELB health checks" in state.message


def test_statuses_stop_a_task_that_does_not_start(cloud: Cloud) -> None:
    adapter = make_adapter()
    ref = submit_one(cloud, adapter, task_start_timeout_seconds=1)
    moto_task(ref).status = "PROVISIONING"
    assert adapter.statuses([ref])[ref].status == ProviderStatus.PENDING
    time.sleep(1.1)
    state = adapter.statuses([ref])[ref]
    assert state.status == ProviderStatus.STOPPED
    assert "did not start within 1 s" in state.message
    task = moto_task(ref)
    assert task.desired_status == "STOPPED" and "did not start within 1 s" in task.stopped_reason
    assert adapter.statuses([ref])[ref] == state  # final, not asked again


def test_statuses_batches_of_100_and_missing_tasks(cloud: Cloud) -> None:
    adapter = make_adapter()
    calls = capture(adapter.client("ecs"), "DescribeTasks")
    real = [submit_one(cloud, adapter, key=f"k-{i}") for i in range(3)]
    fake = [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/c1/{uuid.uuid4().hex}" for _ in range(147)]
    states = adapter.statuses(real + fake)
    assert sorted(len(c["tasks"]) for c in calls) == [50, 100]
    assert all(c["include"] == ["TAGS"] and c["cluster"] == "c1" for c in calls)
    assert all(states[r].status == ProviderStatus.RUNNING for r in real)
    assert all(states[f].status == ProviderStatus.NOT_FOUND for f in fake)
    assert adapter.statuses(["not-an-arn"])["not-an-arn"].status == ProviderStatus.NOT_FOUND


# --- cancel, cleanup, teardown ---------------------------------------------------------------


def test_cancel_stops_the_task(cloud: Cloud) -> None:
    adapter = make_adapter()
    stops = capture(adapter.client("ecs"), "StopTask")
    ref = submit_one(cloud, adapter)
    adapter.cancel(ref)
    assert stops == [{"cluster": "c1", "task": ref, "reason": "cancelled by skylane"}]
    state = adapter.statuses([ref])[ref]
    assert state.status.ended and "cancelled by skylane" in state.message
    adapter.cancel(ref)  # already stopped: nothing to do
    assert len(stops) == 1
    with pytest.raises(ProviderNotFound):
        adapter.cancel(f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/c1/{uuid.uuid4().hex}")
    adapter.cleanup(ref)  # nothing to delete at ECS
    assert [t["taskArn"] for t in cloud.tasks()] == [ref]
    assert adapter.cache.items("ecs-run") == {}


def test_teardown_deregisters_only_what_skylane_registered(cloud: Cloud) -> None:
    adapter = make_adapter()
    submit_one(cloud, adapter, key="k-1")
    submit_one(cloud, adapter, key="k-2", memory=4096)
    outside = cloud.ecs.register_task_definition(
        family="skylane-prod-etl-nightly",
        containerDefinitions=[{"name": "skylane", "image": IMAGE, "memory": 512}],
    )["taskDefinition"]["taskDefinitionArn"]
    ours = set(adapter.cache.items(CACHE_TASK_DEFINITIONS).values())
    assert len(ours) == 2 and outside not in ours

    adapter.teardown()  # the setting is off: nothing happens
    assert len(cloud.revisions("skylane-prod-etl-nightly")) == 3

    settings = {"region": REGION, "deregister_task_definitions": True}
    deleting = EcsAdapter(make_pool(settings=settings), Settings(), cache=adapter.cache)
    deleting.teardown()
    assert cloud.revisions("skylane-prod-etl-nightly") == [outside]
    assert set(cloud.revisions("skylane-prod-etl-nightly", status="INACTIVE")) == ours
    assert adapter.cache.items(CACHE_TASK_DEFINITIONS) == {}
    deleting.teardown()  # nothing left: fine


# --- logs ------------------------------------------------------------------------------------


def test_logs_are_read_from_cloudwatch_paged(cloud: Cloud) -> None:
    adapter = make_adapter()
    adapter.log_page_size = 10
    ref = submit_one(
        cloud,
        adapter,
        configure_cloudwatch_logs=True,
        execution_role_arn=EXEC_ROLE,
        cloudwatch_logs_prefix="nightly",
    )
    assert adapter.logs(ref) == []  # no stream yet
    task_id = parse_ref(ref).task_id
    stream = f"nightly/skylane/{task_id}"
    cloud.logs.create_log_group(logGroupName="skylane")
    cloud.logs.create_log_stream(logGroupName="skylane", logStreamName=stream)
    start = int(time.time() * 1000) - 60_000
    cloud.logs.put_log_events(
        logGroupName="skylane",
        logStreamName=stream,
        logEvents=[{"timestamp": start + i, "message": f"line {i}"} for i in range(25)],
    )
    gets = capture(adapter.client("logs"), "GetLogEvents")
    lines = adapter.logs(ref)
    assert [line.message for line in lines] == [f"line {i}" for i in range(25)]
    assert len(gets) >= 3 and all(g["limit"] == 10 for g in gets)
    assert lines[0].timestamp == datetime.fromtimestamp(start / 1000, UTC)
    since = datetime.fromtimestamp((start + 19) / 1000, UTC)
    assert [line.message for line in adapter.logs(ref, since)] == [
        f"line {i}" for i in range(20, 25)
    ]

    moto_task(ref).containers[0].exitCode = 1
    cloud.ecs.stop_task(cluster="c1", task=ref, reason="Essential container in task exited")
    state = adapter.statuses([ref])[ref]
    assert state.status == ProviderStatus.FAILED
    assert "last 20 log lines" in state.message
    assert "line 24" in state.message and "line 4\n" not in state.message


def test_logs_without_cloudwatch_are_empty(cloud: Cloud) -> None:
    adapter = make_adapter()
    ref = submit_one(cloud, adapter)
    assert adapter.logs(ref) == []
    with pytest.raises(ProviderNotFound):
        adapter.logs(f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/c1/{uuid.uuid4().hex}")


# --- errors ----------------------------------------------------------------------------------


def run_task_response(ref: str) -> dict[str, Any]:
    return {
        "tasks": [{"taskArn": ref, "clusterArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/c1"}],
        "failures": [],
    }


@pytest.fixture
def warmed(cloud: Cloud) -> tuple[EcsAdapter, EcsRequest]:
    """An adapter whose task definition is registered already, and the next run's request
    (explicit subnets), so a fresh key's submit is one RunTask call; a retry first looks
    (ListTasks x2) whether the failed try started the task after all."""
    adapter = make_adapter()
    variables = {"cluster": "c1", "network_configuration": {"subnets": cloud.subnets}}
    adapter.submit(render(adapter, variables, key="warm-1"), "warm-1")
    return adapter, render(adapter, variables, key="k-2")


def stub_find(stubber: Stubber) -> None:
    for _ in range(2):
        stubber.add_response("list_tasks", {"taskArns": []})


def test_throttling_is_retried_with_the_same_key(warmed: tuple[EcsAdapter, EcsRequest]) -> None:
    adapter, request = warmed
    ref = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/c1/{uuid.uuid4().hex}"
    client = adapter.client("ecs")
    runs = capture(client, "RunTask")
    with Stubber(client) as stubber:
        stubber.add_client_error("run_task", "ThrottlingException", "Rate exceeded", 400)
        stub_find(stubber)  # before trying again: did the first try start it after all?
        stubber.add_response("run_task", run_task_response(ref))
        assert adapter.submit(request, "k-2") == ref
        stubber.assert_no_pending_responses()
    assert [r["clientToken"] for r in runs] == ["k-2", "k-2"]
    assert runs[0]["startedBy"] == runs[1]["startedBy"] == started_by_for("k-2")


def test_persistent_throttling_raises_throttled(warmed: tuple[EcsAdapter, EcsRequest]) -> None:
    adapter, request = warmed
    adapter.retry_policy = RetryPolicy(attempts=3, base=0.0, cap=0.05)
    client = adapter.client("ecs")
    with Stubber(client) as stubber:
        for attempt in range(3):
            if attempt:
                stub_find(stubber)
            stubber.add_client_error(
                "run_task",
                "ThrottlingException",
                "Rate exceeded",
                400,
                response_meta={"HTTPHeaders": {"retry-after": "0.01"}},
            )
        with pytest.raises(ThrottledError) as info:
            adapter.submit(request, "k-2")
        stubber.assert_no_pending_responses()
    assert info.value.retryable and info.value.retry_after == 0.01
    assert TOKEN not in str(info.value)


def test_access_denied_fails_once_naming_the_permission(
    warmed: tuple[EcsAdapter, EcsRequest],
) -> None:
    adapter, request = warmed
    client = adapter.client("ecs")
    message = (
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/ctl/s is not authorized to perform: "
        "ecs:RunTask on resource: *"
    )
    with Stubber(client) as stubber:
        stubber.add_client_error("run_task", "AccessDeniedException", message, 400)
        with pytest.raises(PermanentProviderError) as info:
            adapter.submit(request, "k-2")
        stubber.assert_no_pending_responses()  # not retried
    text = str(info.value)
    assert "ecs:RunTask" in text and "grant the control plane's role" in text and "'c1'" in text
    assert not info.value.retryable and TOKEN not in text
    assert isinstance(info.value, ProviderAuthError) and info.value.code == "provider_auth"


def test_runtask_failures_capacity_and_permanent(warmed: tuple[EcsAdapter, EcsRequest]) -> None:
    adapter, request = warmed
    client = adapter.client("ecs")
    capacity = "Capacity is unavailable at this time. Please try again later."
    with Stubber(client) as stubber:
        stubber.add_response("run_task", {"tasks": [], "failures": [{"reason": capacity}]})
        stub_find(stubber)
        stubber.add_response("run_task", {"tasks": [], "failures": [{"reason": "RESOURCE:MEMORY"}]})
        stub_find(stubber)
        stubber.add_response(
            "run_task", {"tasks": [], "failures": [{"reason": "ATTRIBUTE", "detail": "arm64"}]}
        )
        with pytest.raises(CapacityError) as info:
            adapter.submit(request, "k-2")
        assert info.value.retryable and "Capacity is unavailable" in str(info.value)
        with pytest.raises(CapacityError):
            adapter.submit(request, "k-2")
        with pytest.raises(PermanentProviderError) as permanent:
            adapter.submit(request, "k-2")
        assert "ATTRIBUTE" in str(permanent.value) and "arm64" in str(permanent.value)
        stubber.assert_no_pending_responses()


def test_missing_cluster_names_the_cluster(cloud: Cloud) -> None:
    adapter = make_adapter()
    request = render(adapter, {"cluster": "nope", "vpc_id": cloud.vpc_id})
    with pytest.raises(PermanentProviderError) as info:
        adapter.submit(request, "k-1")
    assert "'nope'" in str(info.value) and "`cluster`" in str(info.value)
    assert info.value.field == "job_variables.cluster"
    assert cloud.tasks() == []


def client_error(code: str, message: str = "m", status: int = 400, **headers: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
        },
        "RunTask",
    )


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (client_error("ThrottlingException", "Rate exceeded"), ThrottledError),
        (client_error("TooManyRequestsException"), ThrottledError),
        (client_error("RequestLimitExceeded"), ThrottledError),
        (client_error("ServerException", status=500), TransientProviderError),
        (client_error("InternalFailure", status=500), TransientProviderError),
        (client_error("Whatever", status=503), TransientProviderError),
        (client_error("ServiceUnavailable", status=503), TransientProviderError),
        (client_error("ClientException", "Capacity is unavailable at this time."), CapacityError),
        (client_error("LimitExceededException"), QuotaError),
        (client_error("InvalidParameterException", "Bad cpu"), PermanentProviderError),
        (client_error("ClientException", "Bad image"), PermanentProviderError),
        (client_error("UnauthorizedOperation"), ProviderAuthError),
        (
            EndpointConnectionError(endpoint_url="https://ecs.us-east-1.amazonaws.com"),
            TransientProviderError,
        ),
    ],
)
def test_error_translation(error: Exception, kind: type) -> None:
    translated = translate_error(error, action="ecs:RunTask", resource="cluster 'c1'")
    assert type(translated) is kind


def test_error_translation_details() -> None:
    throttled = translate_error(
        client_error("ThrottlingException", **{"retry-after": "7"}), action="ecs:RunTask"
    )
    assert isinstance(throttled, ThrottledError) and throttled.retry_after == 7.0
    permanent = translate_error(
        client_error("InvalidParameterException", f"Container override has {TOKEN}"),
        action="ecs:RunTask",
        secrets=[TOKEN],
    )
    assert "Container override has ****" in permanent.message and TOKEN not in permanent.message
    denied = translate_error(
        client_error("AccessDeniedException"), action="ecs:RegisterTaskDefinition"
    )
    assert "grant the control plane's role" in denied.message
    assert isinstance(denied, ProviderAuthError)
    assert "ecs:RegisterTaskDefinition" in denied.message
    missing = translate_error(
        client_error("ClusterNotFoundException", "Cluster not found."),
        action="ecs:RunTask",
        cluster="prod",
        region=REGION,
    )
    assert "'prod'" in missing.message and "us-east-1" in missing.message


# --- refs, credentials, endpoints ------------------------------------------------------------


def test_refs() -> None:
    long_arn = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task/prod-cluster/0123abcd"
    assert make_ref(long_arn) == long_arn
    parsed = parse_ref(long_arn)
    assert (parsed.region, parsed.cluster, parsed.task_id) == (
        "eu-west-1",
        "prod-cluster",
        "0123abcd",
    )
    short_arn = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task/0123abcd"
    ref = make_ref(short_arn, f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/legacy")
    assert ref == f"legacy::{short_arn}"
    assert parse_ref(ref).cluster == "legacy" and parse_ref(ref).task_arn == short_arn
    with pytest.raises(ValueError):
        parse_ref("host:123:key")


def test_credentials_profile_region_and_endpoint(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").write_text("[profile ops]\nregion = eu-west-1\n")
    (tmp_path / "credentials").write_text(
        "[ops]\naws_access_key_id = AKIAOPSPROFILE000000\naws_secret_access_key = x\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.delenv("AWS_DEFAULT_REGION")  # it would win over the profile's region
    adapter = make_adapter(settings={}, credentials={"profile": "ops"})
    assert adapter.aws.default_region() == "eu-west-1"
    assert adapter.aws.session().get_credentials().access_key == "AKIAOPSPROFILE000000"
    assert adapter.client("ecs").meta.region_name == "eu-west-1"
    local = make_adapter(settings={"region": REGION, "endpoint_url": "http://127.0.0.1:5999"})
    client = local.client("ecs")
    assert client.meta.endpoint_url == "http://127.0.0.1:5999"
    assert client.meta.config.retries["mode"] == "standard"


def test_credentials_assume_role(cloud: Cloud) -> None:
    adapter = make_adapter(
        credentials={
            "role_arn": f"arn:aws:iam::{ACCOUNT}:role/skylane-execution",
            "external_id": "ext-123",
            "session_name": "skylane-test",
        }
    )
    credentials = adapter.aws.session().get_credentials()
    assert credentials.access_key != "testing"  # temporary credentials from STS
    ref = submit_one(cloud, adapter)
    assert adapter.statuses([ref])[ref].status == ProviderStatus.RUNNING

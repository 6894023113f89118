"""Provisioning an `ecs:push` pool (skylane.provisioning.aws) against moto, in-process, through
the engine (plan, apply, deprovision) and boto3. Faults are the cloud refusing a call: a
conflicting resource appearing between plan and apply, a missing managed policy, or a botocore
`before-parameter-build` hook answering an operation with an AWS error."""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3", reason="the AWS provisioning tests need boto3")
pytest.importorskip("moto", reason="the AWS provisioning tests need moto")

from botocore.exceptions import ClientError  # noqa: E402
from botocore.loaders import JSONFileLoader  # noqa: E402
from moto import mock_aws  # noqa: E402
from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.iam import models as moto_iam_models  # noqa: E402

from skylane import templates  # noqa: E402
from skylane.adapters.aws import AwsClients  # noqa: E402
from skylane.adapters.base import RunContext  # noqa: E402
from skylane.adapters.ecs import EcsAdapter  # noqa: E402
from skylane.errors import PermanentProviderError, ProviderAuthError  # noqa: E402
from skylane.models import Pool  # noqa: E402
from skylane.provisioning import base  # noqa: E402
from skylane.provisioning.aws import (  # noqa: E402
    ECS_TASKS,
    dispatcher_policy,
    ecs_steps,
    slug,
)
from skylane.settings import Settings  # noqa: E402

REGION = "us-east-1"
ACCOUNT = DEFAULT_ACCOUNT_ID
POOL = "prod"
EXEC_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/skylane-prod@sha256:" + "ab" * 32

DEFAULT_VPC_PLAN = [
    ("ecr-repository", "skylane-prod"),
    ("iam-role", "skylane-prod-execution"),
    ("iam-role", "skylane-prod-task"),
    ("ecs-cluster", "skylane-prod"),
    ("log-group", "/skylane/prod"),
    ("vpc", "default"),
    ("iam-role", "skylane-prod-dispatcher"),
]
NEW_VPC_PLAN = [
    *DEFAULT_VPC_PLAN[:5],
    ("vpc", "skylane-prod"),
    ("subnet", "skylane-prod-1"),
    ("subnet", "skylane-prod-2"),
    ("internet-gateway", "skylane-prod"),
    ("route-table", "skylane-prod"),
    ("security-group", "skylane-prod"),
    DEFAULT_VPC_PLAN[-1],
]


@pytest.fixture(autouse=True, scope="module")
def _parse_botocore_models_once() -> Iterator[None]:
    """Each provisioning run makes its own boto3 session (AwsClients), which parses botocore's
    service models again (EC2's alone takes ~0.5 s): parse each file once for this module."""
    original = JSONFileLoader.load_file
    parsed: dict[str, Any] = {}

    def load_file(self: JSONFileLoader, file_path: str) -> Any:
        if file_path not in parsed:
            parsed[file_path] = original(self, file_path)
        return parsed[file_path]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(JSONFileLoader, "load_file", load_file)
        yield


@functools.cache
def _ecs_managed_policies() -> str:
    every = json.loads(moto_iam_models.aws_managed_policies_data)
    return json.dumps({k: v for k, v in every.items() if k.startswith("AmazonECS")})


@pytest.fixture(autouse=True)
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    # Before the mock starts: IAM then knows AmazonECSTaskExecutionRolePolicy. moto parses
    # its ~1,300 AWS-managed policies for each IAM backend it makes (a dozen per test, ~1.5 s):
    # it is given the ECS ones only, which keeps this file fast.
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    monkeypatch.setattr(moto_iam_models, "aws_managed_policies_data", _ecs_managed_policies())
    with mock_aws():
        yield


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)


class Provisioner:
    """One provisioning run's clients, steps and context, as the CLI would build them."""

    def __init__(self, *, create_vpc: bool = False, pool: str = POOL) -> None:
        self.clients = AwsClients(None, {"region": REGION})
        self.steps = ecs_steps(self.clients, pool, region=REGION, create_vpc=create_vpc)
        self.context = base.Context(pool=pool)

    def plan(self) -> list[base.PlanItem]:
        return base.plan(self.steps, self.context)

    def apply(self) -> list[base.Provisioned]:
        return base.apply(self.plan(), self.context)

    def step(self, kind: str, name: str) -> Any:
        return next(s for s in self.steps if (s.kind, s.name) == (kind, name))

    def refuse(
        self,
        service: str,
        operation: str,
        when: Callable[[dict], Any],
        code: str = "InvalidParameterValue",
    ) -> None:
        """Make AWS answer `operation` (when `when(params)`) with an error, as it would."""

        def handler(params: dict[str, Any], **_: Any) -> None:
            if when(params):
                raise ClientError(
                    {
                        "Error": {"Code": code, "Message": "refused in test"},
                        "ResponseMetadata": {"HTTPStatusCode": 400},
                    },
                    operation,
                )

        events = self.clients.client(service, REGION).meta.events
        events.register(f"before-parameter-build.{service}.{operation}", handler)


def actions(items: list[base.PlanItem]) -> list[tuple[str, str, str]]:
    return [(i.step.kind, i.step.name, i.action.value) for i in items]


def snapshot() -> dict[str, list[str]]:
    """Every resource of the kinds provisioning touches, by name or id."""
    ecr, iam, ecs, logs, ec2 = (client(s) for s in ("ecr", "iam", "ecs", "logs", "ec2"))
    role_policies = []
    for role in iam.list_roles()["Roles"]:
        name = role["RoleName"]
        role_policies += [
            f"{name}:{p['PolicyArn']}"
            for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
        ]
        role_policies += [
            f"{name}:{p}" for p in iam.list_role_policies(RoleName=name)["PolicyNames"]
        ]
    clusters = ecs.list_clusters()["clusterArns"]
    active = ecs.describe_clusters(clusters=clusters)["clusters"] if clusters else []
    return {
        "ecr": sorted(r["repositoryName"] for r in ecr.describe_repositories()["repositories"]),
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "role_policies": sorted(role_policies),
        "users": sorted(u["UserName"] for u in iam.list_users()["Users"]),
        "clusters": sorted(c["clusterArn"] for c in active if c["status"] == "ACTIVE"),
        "log_groups": sorted(g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]),
        "vpcs": sorted(v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]),
        "subnets": sorted(s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]),
        "igws": sorted(
            g["InternetGatewayId"] for g in ec2.describe_internet_gateways()["InternetGateways"]
        ),
        "route_tables": sorted(
            t["RouteTableId"] for t in ec2.describe_route_tables()["RouteTables"]
        ),
        "security_groups": sorted(
            g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]
        ),
    }


def default_vpc() -> tuple[str, list[str]]:
    ec2 = client("ec2")
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        ec2.create_default_vpc()
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    vpc = vpcs[0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    return vpc, sorted(s["SubnetId"] for s in subnets)


def role_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


CLUSTER_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/skylane-prod"
LOG_GROUP_ARN = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/skylane/prod"
ROLES = [role_arn("skylane-prod-execution"), role_arn("skylane-prod-task")]


def expected_defaults(vpc: str, subnets: list[str], groups: list[str] | None = None) -> dict:
    network: dict[str, Any] = {"subnets": subnets, "assignPublicIp": "ENABLED"}
    if groups is not None:
        network["securityGroups"] = groups
    return {
        "region": REGION,
        "cluster": CLUSTER_ARN,
        "execution_role_arn": ROLES[0],
        "task_role_arn": ROLES[1],
        "vpc_id": vpc,
        "network_configuration": network,
        "configure_cloudwatch_logs": True,
        "cloudwatch_logs_options": {
            "awslogs-group": "/skylane/prod",
            "awslogs-region": REGION,
            "awslogs-create-group": "false",
        },
    }


def tags_of_everything(vpc_mode: bool = False) -> dict[str, dict[str, str]]:
    """The tags of each resource provisioning creates for POOL."""
    ecr, iam, ecs, logs, ec2 = (client(s) for s in ("ecr", "iam", "ecs", "logs", "ec2"))
    out: dict[str, dict[str, str]] = {}
    repo = ecr.describe_repositories(repositoryNames=["skylane-prod"])["repositories"][0]
    tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
    out["ecr"] = {t["Key"]: t["Value"] for t in tags}
    for suffix in ("execution", "task", "dispatcher"):
        tags = iam.list_role_tags(RoleName=f"skylane-prod-{suffix}")["Tags"]
        out[f"role-{suffix}"] = {t["Key"]: t["Value"] for t in tags}
    cluster = ecs.describe_clusters(clusters=["skylane-prod"], include=["TAGS"])["clusters"][0]
    out["cluster"] = {t["key"]: t["value"] for t in cluster["tags"]}
    out["log-group"] = logs.list_tags_for_resource(resourceArn=LOG_GROUP_ARN)["tags"]
    if vpc_mode:
        tagged = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["skylane-pool"]}])["Tags"]
        for tag in tagged:
            out[f"{tag['ResourceType']}:{tag['ResourceId']}"] = {tag["Key"]: tag["Value"]}
    return out


# --- plan -----------------------------------------------------------------------------------


def test_plan_on_an_empty_account_creates_everything_and_changes_nothing() -> None:
    vpc, subnets = default_vpc()
    before = snapshot()
    provisioner = Provisioner()

    items = provisioner.plan()

    assert actions(items) == [
        (kind, name, "exists" if kind == "vpc" else "create") for kind, name in DEFAULT_VPC_PLAN
    ]
    network = items[5]
    assert network.found == base.Found(vpc, owned=False) and network.detail == "adopted"
    assert [r["action"] for r in (i.row for i in items)][:5] == ["create"] * 5
    assert snapshot() == before
    # The plan already shows what the template defaults will be.
    assert provisioner.context.defaults == expected_defaults(vpc, subnets)
    assert provisioner.context.outputs["repository_uri"] == (
        f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/skylane-prod"
    )


def test_plan_without_a_default_vpc_says_how_to_go_on() -> None:
    ec2 = client("ec2")
    vpc, subnets = default_vpc()
    for subnet in subnets:
        ec2.delete_subnet(SubnetId=subnet)
    ec2.delete_vpc(VpcId=vpc)

    with pytest.raises(PermanentProviderError, match="no default VPC.*create_vpc"):
        Provisioner().plan()


# --- apply ----------------------------------------------------------------------------------


def test_apply_creates_what_the_plan_said_tagged_with_the_template_defaults() -> None:
    vpc, subnets = default_vpc()
    before = snapshot()
    provisioner = Provisioner()
    items = provisioner.plan()

    records = base.apply(items, provisioner.context)

    assert [(r.kind, r.name, r.created) for r in records] == [
        (i.step.kind, i.step.name, i.action == base.Action.CREATE) for i in items
    ]
    assert [r.resource_id for r in records] == [
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/skylane-prod",
        ROLES[0],
        ROLES[1],
        CLUSTER_ARN,
        LOG_GROUP_ARN,
        vpc,
        role_arn("skylane-prod-dispatcher"),
    ]
    after = snapshot()
    assert after["ecr"] == [*before["ecr"], "skylane-prod"]
    assert after["roles"] == sorted(
        [*before["roles"], *(f"skylane-prod-{s}" for s in ("dispatcher", "execution", "task"))]
    )
    assert after["clusters"] == [CLUSTER_ARN]
    assert after["log_groups"] == ["/skylane/prod"]
    for key in ("vpcs", "subnets", "igws", "route_tables", "security_groups"):
        assert after[key] == before[key]
    # Keyless: no IAM user, hence no access key.
    assert after["users"] == []

    tags = tags_of_everything()
    assert tags and all(t.get("skylane-pool") == POOL for t in tags.values()), tags

    ecr, iam, logs = client("ecr"), client("iam"), client("logs")
    repo = ecr.describe_repositories(repositoryNames=["skylane-prod"])["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    lifecycle = json.loads(
        ecr.get_lifecycle_policy(repositoryName="skylane-prod")["lifecyclePolicyText"]
    )
    assert lifecycle["rules"][0]["selection"]["tagStatus"] == "untagged"
    assert lifecycle["rules"][0]["action"] == {"type": "expire"}

    for suffix in ("execution", "task"):
        trust = iam.get_role(RoleName=f"skylane-prod-{suffix}")["Role"]["AssumeRolePolicyDocument"]
        assert trust["Statement"][0]["Principal"] == {"Service": ECS_TASKS}
    attached = iam.list_attached_role_policies(RoleName="skylane-prod-execution")
    assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [EXEC_POLICY]
    for suffix in ("task", "dispatcher"):
        none = iam.list_attached_role_policies(RoleName=f"skylane-prod-{suffix}")
        assert none["AttachedPolicies"] == []
    assert iam.list_role_policies(RoleName="skylane-prod-task")["PolicyNames"] == []
    dispatcher = iam.get_role(RoleName="skylane-prod-dispatcher")["Role"]
    assert dispatcher["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "AWS": f"arn:aws:iam::{ACCOUNT}:root"
    }
    inline = iam.get_role_policy(RoleName="skylane-prod-dispatcher", PolicyName="skylane-dispatch")
    assert inline["PolicyDocument"] == dispatcher_policy(CLUSTER_ARN, ROLES, LOG_GROUP_ARN)

    group = logs.describe_log_groups(logGroupNamePrefix="/skylane/prod")["logGroups"][0]
    assert group["retentionInDays"] == 30

    assert provisioner.context.defaults == expected_defaults(vpc, subnets)
    assert provisioner.context.outputs["image_registry"] == (
        f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    )


def test_a_deployment_on_the_provisioned_pool_needs_only_its_image() -> None:
    vpc, subnets = default_vpc()
    provisioner = Provisioner()
    provisioner.apply()

    # The pool's base job template with the provisioned values as variable defaults.
    template = EcsAdapter.default_template()
    for name, value in provisioner.context.defaults.items():
        template["variables"]["properties"][name]["default"] = value
    now = datetime.now(UTC)
    pool = Pool(
        id=uuid.uuid4(),
        name=POOL,
        type="ecs:push",
        base_job_template=template,
        settings={"region": REGION},
        created_at=now,
        updated_at=now,
    )
    _, config = templates.resolve_job_configuration(template, {"image": IMAGE})
    context = RunContext(
        run_id=uuid.uuid4(),
        flow_name="etl",
        deployment_name="etl/nightly",
        pool_name=POOL,
        entrypoint="flows/etl.py:etl",
        api_url="https://skylane.example.com",
        run_token="sklr_secret",
        idempotency_key="k1",
        image=IMAGE,
    )
    request = EcsAdapter(pool, Settings()).render(config, context)

    assert request.region == REGION
    assert request.run_task["cluster"] == CLUSTER_ARN
    assert request.run_task["overrides"]["taskRoleArn"] == ROLES[1]
    assert request.task_definition is not None
    assert request.task_definition["executionRoleArn"] == ROLES[0]
    container = request.task_definition["containerDefinitions"][0]
    assert container["logConfiguration"]["options"]["awslogs-group"] == "/skylane/prod"
    awsvpc = request.run_task["networkConfiguration"]["awsvpcConfiguration"]
    assert awsvpc["subnets"] == subnets and awsvpc["assignPublicIp"] == "ENABLED"


def test_a_second_run_is_all_exists_and_changes_nothing() -> None:
    default_vpc()
    first = Provisioner()
    records = first.apply()
    after_first = snapshot()

    again = Provisioner()
    items = again.plan()
    assert [a for *_, a in actions(items)] == ["exists"] * len(DEFAULT_VPC_PLAN)
    assert [i.detail for i in items] == ["", "", "", "", "", "adopted", ""]

    second = base.apply(items, again.context)

    assert snapshot() == after_first
    assert second == records
    assert again.context.defaults == first.context.defaults


# --- drift ----------------------------------------------------------------------------------


def test_drift_is_planned_as_update_and_fixed_by_apply() -> None:
    default_vpc()
    Provisioner().apply()
    ecr, logs, iam = client("ecr"), client("logs"), client("iam")
    logs.put_retention_policy(logGroupName="/skylane/prod", retentionInDays=7)
    ecr.delete_lifecycle_policy(repositoryName="skylane-prod")
    iam.detach_role_policy(RoleName="skylane-prod-execution", PolicyArn=EXEC_POLICY)
    iam.put_role_policy(
        RoleName="skylane-prod-dispatcher",
        PolicyName="skylane-dispatch",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}],
            }
        ),
    )

    provisioner = Provisioner()
    items = provisioner.plan()
    updates = {(i.step.kind, i.step.name): i.detail for i in items if i.action == "update"}
    assert updates == {
        ("ecr-repository", "skylane-prod"): "no lifecycle policy",
        ("iam-role", "skylane-prod-execution"): "AmazonECSTaskExecutionRolePolicy is not attached",
        ("log-group", "/skylane/prod"): "retention is 7, not 30 days",
        ("iam-role", "skylane-prod-dispatcher"): "inline policy skylane-dispatch differs",
    }
    before = snapshot()

    base.apply(items, provisioner.context)

    group = logs.describe_log_groups(logGroupNamePrefix="/skylane/prod")["logGroups"][0]
    assert group["retentionInDays"] == 30
    assert (
        json.loads(ecr.get_lifecycle_policy(repositoryName="skylane-prod")["lifecyclePolicyText"])[
            "rules"
        ][0]["selection"]["tagStatus"]
        == "untagged"
    )
    inline = iam.get_role_policy(RoleName="skylane-prod-dispatcher", PolicyName="skylane-dispatch")
    assert inline["PolicyDocument"] == dispatcher_policy(CLUSTER_ARN, ROLES, LOG_GROUP_ARN)
    after = snapshot()
    assert after["role_policies"] == sorted(
        [*before["role_policies"], f"skylane-prod-execution:{EXEC_POLICY}"]
    )
    assert {k: v for k, v in after.items() if k != "role_policies"} == {
        k: v for k, v in before.items() if k != "role_policies"
    }
    assert [a for *_, a in actions(Provisioner().plan())] == ["exists"] * len(DEFAULT_VPC_PLAN)


def test_a_different_lifecycle_policy_is_drift_too() -> None:
    default_vpc()
    Provisioner().apply()
    client("ecr").put_lifecycle_policy(
        repositoryName="skylane-prod",
        lifecyclePolicyText=json.dumps(
            {
                "rules": [
                    {
                        "rulePriority": 1,
                        "selection": {
                            "tagStatus": "any",
                            "countType": "imageCountMoreThan",
                            "countNumber": 1,
                        },
                        "action": {"type": "expire"},
                    }
                ]
            }
        ),
    )
    items = Provisioner().plan()
    assert [(i.action.value, i.detail) for i in items][0] == ("update", "lifecycle policy differs")


# --- failures roll back ---------------------------------------------------------------------


def _role(suffix: str) -> Callable[[dict], bool]:
    return lambda params: params.get("RoleName") == f"skylane-prod-{suffix}"


def _always(params: dict) -> bool:
    return True


# (failing step, service, operation refused, which calls). Refusals after a resource's first
# call (PutLifecyclePolicy, AttachRolePolicy...) check a step cleans up its half-made resource.
FAULTS = [
    (("ecr-repository", "skylane-prod"), "ecr", "CreateRepository", _always),
    (("ecr-repository", "skylane-prod"), "ecr", "PutLifecyclePolicy", _always),
    (("iam-role", "skylane-prod-execution"), "iam", "AttachRolePolicy", _role("execution")),
    (("iam-role", "skylane-prod-task"), "iam", "CreateRole", _role("task")),
    (("ecs-cluster", "skylane-prod"), "ecs", "CreateCluster", _always),
    (("log-group", "/skylane/prod"), "logs", "PutRetentionPolicy", _always),
    (("iam-role", "skylane-prod-dispatcher"), "iam", "PutRolePolicy", _role("dispatcher")),
]
VPC_FAULTS = [
    (("vpc", "skylane-prod"), "ec2", "ModifyVpcAttribute", _always),
    (("subnet", "skylane-prod-1"), "ec2", "ModifySubnetAttribute", _always),
    (("subnet", "skylane-prod-2"), "ec2", "CreateSubnet", lambda p: p["CidrBlock"].count(".16.")),
    (("internet-gateway", "skylane-prod"), "ec2", "AttachInternetGateway", _always),
    (("route-table", "skylane-prod"), "ec2", "AssociateRouteTable", _always),
    (("security-group", "skylane-prod"), "ec2", "CreateSecurityGroup", _always),
]


def _check_rolled_back(
    failure: pytest.ExceptionInfo[base.ProvisioningFailed],
    step: tuple[str, str],
    plan: list,
    said: str,
) -> None:
    exc = failure.value
    assert (exc.step.kind, exc.step.name) == step
    assert said in exc.message.lower()
    index = [(kind, name) for kind, name, _ in plan].index(step)
    created_before = [(k, n) for k, n, a in plan[:index] if a == "create"]
    assert [(r.kind, r.name) for r in exc.rolled_back] == created_before[::-1]
    assert exc.left_behind == []


@pytest.mark.parametrize(
    ("step", "service", "operation", "when"), FAULTS, ids=[f"{f[2]}" for f in FAULTS]
)
def test_a_failure_at_each_step_rolls_back_to_nothing(
    step: tuple[str, str], service: str, operation: str, when: Callable[[dict], bool]
) -> None:
    default_vpc()
    before = snapshot()
    provisioner = Provisioner()
    items = provisioner.plan()
    provisioner.refuse(service, operation, when)

    with pytest.raises(base.ProvisioningFailed) as failure:
        base.apply(items, provisioner.context)

    _check_rolled_back(failure, step, actions(items), "refused in test")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("step", "service", "operation", "when"), VPC_FAULTS, ids=[f"{f[2]}" for f in VPC_FAULTS]
)
def test_a_failure_at_each_network_step_rolls_back_to_nothing(
    step: tuple[str, str], service: str, operation: str, when: Callable[[dict], bool]
) -> None:
    before = snapshot()
    provisioner = Provisioner(create_vpc=True)
    items = provisioner.plan()
    provisioner.refuse(service, operation, when)

    with pytest.raises(base.ProvisioningFailed) as failure:
        base.apply(items, provisioner.context)

    _check_rolled_back(failure, step, actions(items), "refused in test")
    assert snapshot() == before


def _conflicting_repository() -> None:
    client("ecr").create_repository(repositoryName="skylane-prod")


def _conflicting_role(suffix: str) -> Callable[[], None]:
    trust = {"Version": "2012-10-17", "Statement": []}
    return lambda: client("iam").create_role(
        RoleName=f"skylane-prod-{suffix}", AssumeRolePolicyDocument=json.dumps(trust)
    )


def _conflicting_log_group() -> None:
    client("logs").create_log_group(logGroupName="/skylane/prod")


RACES = [
    (("ecr-repository", "skylane-prod"), _conflicting_repository),
    (("iam-role", "skylane-prod-execution"), _conflicting_role("execution")),
    (("iam-role", "skylane-prod-task"), _conflicting_role("task")),
    (("log-group", "/skylane/prod"), _conflicting_log_group),
    (("iam-role", "skylane-prod-dispatcher"), _conflicting_role("dispatcher")),
]


@pytest.mark.parametrize(("step", "conflict"), RACES, ids=[r[0][1] for r in RACES])
def test_a_resource_made_between_plan_and_apply_fails_its_step_and_rolls_back(
    step: tuple[str, str], conflict: Callable[[], None]
) -> None:
    default_vpc()
    provisioner = Provisioner()
    items = provisioner.plan()
    conflict()  # someone else's resource of the same name: AWS refuses the create
    before = snapshot()

    with pytest.raises(base.ProvisioningFailed) as failure:
        base.apply(items, provisioner.context)

    _check_rolled_back(failure, step, actions(items), "exists")
    assert snapshot() == before  # the conflicting resource is still there, untouched


def test_a_missing_managed_policy_fails_the_execution_role(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # IAM's backend is made on first use: without the variable it has no AWS-managed policy,
    # so AttachRolePolicy really fails.
    monkeypatch.delenv("MOTO_IAM_LOAD_MANAGED_POLICIES")
    default_vpc()
    before = snapshot()
    provisioner = Provisioner()
    items = provisioner.plan()

    with pytest.raises(base.ProvisioningFailed) as failure:
        base.apply(items, provisioner.context)

    assert failure.value.step.name == "skylane-prod-execution"
    assert "AmazonECSTaskExecutionRolePolicy" in failure.value.message
    assert [r.name for r in failure.value.rolled_back] == ["skylane-prod"]
    assert snapshot() == before


# --- deprovision ----------------------------------------------------------------------------


def test_deprovision_removes_what_was_created_and_leaves_an_adopted_repository() -> None:
    default_vpc()
    ecr = client("ecr")
    ecr.create_repository(repositoryName="skylane-prod")  # the user's, before provisioning
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {},
            "layers": [],
        }
    )
    ecr.put_image(repositoryName="skylane-prod", imageManifest=manifest, imageTag="v1")
    before = snapshot()

    provisioner = Provisioner()
    items = provisioner.plan()
    assert (items[0].action, items[0].detail) == (base.Action.EXISTS, "adopted")
    records = base.apply(items, provisioner.context)
    assert [r.created for r in records] == [False, True, True, True, True, False, True]
    # An adopted repository is used as it is: no lifecycle policy put on it.
    with pytest.raises(ClientError, match="LifecyclePolicyNotFound"):
        ecr.get_lifecycle_policy(repositoryName="skylane-prod")

    # Later, from the records kept on the pool and freshly built steps.
    stored = [base.Provisioned.from_json(r.to_json()) for r in records]
    later = Provisioner()
    removed = base.deprovision(stored, later.steps, later.context)

    assert [(r.kind, r.name) for r in removed] == [
        (r.kind, r.name) for r in reversed(records) if r.created
    ]
    assert snapshot() == before
    images = ecr.list_images(repositoryName="skylane-prod")["imageIds"]
    assert [i.get("imageTag") for i in images] == ["v1"]
    # Again: what is already gone is fine.
    base.deprovision(stored, later.steps, later.context)
    assert snapshot() == before


# --- the dispatcher's policy ----------------------------------------------------------------


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return list(policy["Statement"])


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def test_the_dispatcher_never_passes_any_role_but_the_two_created_here() -> None:
    policy = dispatcher_policy(CLUSTER_ARN, ROLES, LOG_GROUP_ARN + ":*")
    passing = [s for s in _statements(policy) if "iam:PassRole" in _listed(s["Action"])]
    assert len(passing) == 1
    (statement,) = passing
    assert sorted(_listed(statement["Resource"])) == sorted(ROLES)
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": ECS_TASKS}}
    for s in _statements(policy):
        actions_ = _listed(s["Action"])
        assert s["Effect"] == "Allow"
        assert not any("*" in a for a in actions_), s
        assert not any(a.startswith("iam:") for a in actions_ if a != "iam:PassRole"), s
        if "*" in _listed(s["Resource"]):
            # Only actions without resource-level permissions, each pinned where IAM can.
            assert set(actions_) <= {
                "ecs:RegisterTaskDefinition",
                "ecs:DescribeTaskDefinition",
                "ecs:DeregisterTaskDefinition",
                "ecs:ListTasks",
            }, s
    run = next(s for s in _statements(policy) if "ecs:RunTask" in s["Action"])
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": CLUSTER_ARN}}
    stop = next(s for s in _statements(policy) if "ecs:StopTask" in s["Action"])
    assert stop["Resource"] == [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/skylane-prod/*"]
    logs = next(s for s in _statements(policy) if "logs:GetLogEvents" in s["Action"])
    assert logs["Resource"] == [LOG_GROUP_ARN, f"{LOG_GROUP_ARN}:log-stream:*"]


@pytest.mark.parametrize(
    "roles",
    [
        ["*"],
        [ROLES[0], "*"],
        [f"arn:aws:iam::{ACCOUNT}:role/*"],
        [f"arn:aws:iam::{ACCOUNT}:role/skylane-*"],
        [f"arn:aws:iam::{ACCOUNT}:user/someone"],
        [],
    ],
)
def test_the_dispatcher_policy_refuses_wildcard_or_missing_roles(roles: list[str]) -> None:
    with pytest.raises(ValueError):
        dispatcher_policy(CLUSTER_ARN, roles, LOG_GROUP_ARN)


def test_the_dispatcher_can_be_trusted_to_a_given_principal() -> None:
    default_vpc()
    principal = f"arn:aws:iam::{ACCOUNT}:role/skylane-control-plane"
    clients = AwsClients(None, {"region": REGION})
    steps = ecs_steps(clients, POOL, region=REGION, dispatcher_principal=principal)
    context = base.Context(POOL)
    base.apply(base.plan(steps, context), context)
    role = client("iam").get_role(RoleName="skylane-prod-dispatcher")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"AWS": principal}


# --- a new VPC ------------------------------------------------------------------------------


def test_create_vpc_makes_two_public_subnets_in_two_zones_and_a_closed_security_group() -> None:
    before = snapshot()
    provisioner = Provisioner(create_vpc=True)
    items = provisioner.plan()
    assert actions(items) == [(kind, name, "create") for kind, name in NEW_VPC_PLAN]
    assert snapshot() == before

    records = base.apply(items, provisioner.context)

    assert all(r.created for r in records)
    ids = {(r.kind, r.name): r.resource_id for r in records}
    vpc = ids[("vpc", "skylane-prod")]
    subnets = sorted(ids[("subnet", f"skylane-prod-{i}")] for i in (1, 2))
    group = ids[("security-group", "skylane-prod")]
    igw = ids[("internet-gateway", "skylane-prod")]
    ec2 = client("ec2")
    described = ec2.describe_subnets(SubnetIds=subnets)["Subnets"]
    assert {s["VpcId"] for s in described} == {vpc}
    assert len({s["AvailabilityZone"] for s in described}) == 2
    assert all(s["MapPublicIpOnLaunch"] for s in described)
    sg = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]
    assert sg["VpcId"] == vpc and sg["IpPermissions"] == []
    gateway = ec2.describe_internet_gateways(InternetGatewayIds=[igw])["InternetGateways"][0]
    assert [a["VpcId"] for a in gateway["Attachments"]] == [vpc]
    table = ec2.describe_route_tables(RouteTableIds=[ids[("route-table", "skylane-prod")]])
    table = table["RouteTables"][0]
    assert {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": igw} in [
        {k: r.get(k) for k in ("DestinationCidrBlock", "GatewayId")} for r in table["Routes"]
    ]
    assert sorted(a["SubnetId"] for a in table["Associations"] if not a.get("Main")) == subnets
    tags = tags_of_everything(vpc_mode=True)
    tagged_ec2 = {k.split(":", 1)[1] for k in tags if ":" in k}
    assert {vpc, *subnets, group, igw, ids[("route-table", "skylane-prod")]} <= tagged_ec2
    assert all(t.get("skylane-pool") == POOL for t in tags.values())
    assert provisioner.context.defaults == expected_defaults(vpc, subnets, [group])

    again = Provisioner(create_vpc=True)
    assert [a for *_, a in actions(again.plan())] == ["exists"] * len(NEW_VPC_PLAN)
    assert again.context.defaults == provisioner.context.defaults

    base.deprovision(records, again.steps, again.context)
    assert snapshot() == before


def test_an_ingress_rule_on_the_pools_security_group_is_drift() -> None:
    provisioner = Provisioner(create_vpc=True)
    records = provisioner.apply()
    group = next(r.resource_id for r in records if r.kind == "security-group")
    ec2 = client("ec2")
    ec2.authorize_security_group_ingress(
        GroupId=group, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="0.0.0.0/0"
    )
    again = Provisioner(create_vpc=True)
    items = again.plan()
    assert [(i.step.kind, i.detail) for i in items if i.action == "update"] == [
        ("security-group", "has ingress rules")
    ]
    base.apply(items, again.context)
    assert (
        ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"] == []
    )


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["prod", "Data Team/ETL", "x" * 80, "ünïcode", "a--b", "-edge-"])
def test_names_derived_from_any_pool_name_fit_aws(pool: str) -> None:
    name = slug(pool)
    assert name == name.lower() and name.strip("-") == name
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in name)
    assert len(f"skylane-{name}-dispatcher") <= 64
    if pool == "prod":
        assert name == "prod"
    else:
        assert slug(pool + "!") != name  # distinct pools, distinct names


def test_a_denied_call_names_the_callers_credentials_not_the_control_planes() -> None:
    default_vpc()
    provisioner = Provisioner()
    items = provisioner.plan()
    provisioner.refuse("iam", "CreateRole", lambda params: True, code="AccessDenied")

    with pytest.raises(base.ProvisioningFailed) as failure:
        base.apply(items, provisioner.context)

    assert "iam:CreateRole" in failure.value.message
    assert "grant your AWS credentials" in failure.value.message
    assert isinstance(failure.value.__cause__, ProviderAuthError)
    assert "control plane" not in failure.value.message


# --- Terraform: the root module --emit-terraform writes -----------------------------------------


def test_emitted_terraform_imports_each_resource_created_by_the_id_aws_knows(
    tmp_path: Path,
) -> None:
    from skylane.pool_types import parse_pool_type
    from skylane.provisioning import terraform
    from tests.unit.terraform_static import check_emitted_root

    provisioner = Provisioner(create_vpc=True)
    records = provisioner.apply()
    root = terraform.emit_root_module(
        tmp_path / "tf",
        parse_pool_type("ecs:push"),
        POOL,
        {"region": REGION},
        records,
    )
    imports = check_emitted_root(root.directory, "ecs", records)
    assert len(imports) == 18  # 12 steps, 6 of them two or three Terraform resources
    assert 'region = "us-east-1"' in (tmp_path / "tf" / "skylane.tf").read_text()
    # Each id is one AWS answers to, in the form Terraform's import takes.
    iam, ecr, ecs, logs, ec2 = (client(s) for s in ("iam", "ecr", "ecs", "logs", "ec2"))
    for role in ("execution", "task", "dispatcher"):
        assert iam.get_role(RoleName=imports[f"module.pool.aws_iam_role.{role}"])
    role, policy = imports["module.pool.aws_iam_role_policy.dispatch"].split(":")
    assert iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
    role, arn = imports["module.pool.aws_iam_role_policy_attachment.execution"].split("/", 1)
    attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    assert arn in [p["PolicyArn"] for p in attached]
    repository = imports["module.pool.aws_ecr_repository.this"]
    assert ecr.describe_repositories(repositoryNames=[repository])["repositories"]
    assert imports["module.pool.aws_ecr_lifecycle_policy.this"] == repository
    cluster = imports["module.pool.aws_ecs_cluster.this"]
    assert ecs.describe_clusters(clusters=[cluster])["clusters"][0]["status"] == "ACTIVE"
    group = imports["module.pool.aws_cloudwatch_log_group.this"]
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    table = imports["module.pool.aws_route_table.this[0]"]
    associations = ec2.describe_route_tables(RouteTableIds=[table])["RouteTables"][0][
        "Associations"
    ]
    for index in (0, 1):
        subnet, table_id = imports[f"module.pool.aws_route_table_association.this[{index}]"].split(
            "/"
        )
        assert table_id == table
        assert subnet == imports[f"module.pool.aws_subnet.this[{index}]"]
        assert subnet in [a.get("SubnetId") for a in associations]
    assert ec2.describe_security_groups(
        GroupIds=[imports["module.pool.aws_security_group.this[0]"]]
    )["SecurityGroups"]
    # The module's template defaults output has the keys the provisioner set.
    module = (tmp_path / "tf" / "modules" / "aws-ecs-push-pool" / "outputs.tf").read_text()
    defaults_output = module.split('output "pool_template_defaults"', 1)[1].split("\noutput")[0]
    for key in provisioner.context.defaults:
        assert re.search(rf'\b"?{key}"?\s*=', defaults_output), key


def test_emitting_terraform_into_a_directory_with_other_files_is_refused(tmp_path: Path) -> None:
    from skylane.errors import InvalidInput
    from skylane.pool_types import parse_pool_type
    from skylane.provisioning import terraform

    (tmp_path / "main.tf").write_text("# someone's own\n")
    records = Provisioner().apply()
    with pytest.raises(InvalidInput, match="not empty") as raised:
        terraform.emit_root_module(
            tmp_path, parse_pool_type("ecs:push"), POOL, {"region": REGION}, records
        )
    assert raised.value.field == "--emit-terraform"
    assert (tmp_path / "main.tf").read_text() == "# someone's own\n"

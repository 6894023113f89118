"""What an `ecs:push` pool needs in an AWS account, as provisioning steps (issue 8).

`ecs_steps(clients, pool, region=...)` lists the steps in dependency order; `base.plan`,
`base.apply` and `base.deprovision` carry them out. Every resource created is tagged
`skylane-pool=POOL` and named after the pool (`<slug>` is the pool name made safe for AWS
names, see `slug`):

1. `ecr-repository` `skylane-<slug>`: scan on push, a lifecycle policy expiring untagged images;
2. `iam-role` `skylane-<slug>-execution`: trusted by ecs-tasks.amazonaws.com, with the
   AWS-managed AmazonECSTaskExecutionRolePolicy (pull from ECR, write CloudWatch logs);
3. `iam-role` `skylane-<slug>-task`: trusted by ecs-tasks.amazonaws.com, no permissions (the
   run's code gets what the user grants it);
4. `ecs-cluster` `skylane-<slug>` (FARGATE and FARGATE_SPOT capacity providers);
5. `log-group` `/skylane/<slug>` with a retention;
6. networking: the region's default VPC and its subnets (adopted, never created nor changed),
   or with `create_vpc=True` a `vpc`, two public `subnet`s in two availability zones, an
   `internet-gateway`, a `route-table` and a `security-group` without ingress, one step each
   (so a rollback removes exactly what was made);
7. `iam-role` `skylane-<slug>-dispatcher`: the role the control plane assumes (trusted by the
   account root or a given principal), whose inline policy (`dispatcher_policy`) allows running
   tasks on this cluster, reading this log group and passing only the two roles above to ECS.

Each step's `publish` sets `context.outputs` (ARNs, the registry host as `image_registry`, the
repository URI as `repository_uri` and `image_repository`, the dispatcher role as
`dispatcher_credentials`...) and `context.defaults`, keyed by the `ecs:push` template variables:
`region`, `cluster`, `execution_role_arn`, `task_role_arn`, `vpc_id`, `network_configuration`
(`subnets`, `securityGroups`, `assignPublicIp`), `configure_cloudwatch_logs` and
`cloudwatch_logs_options`. A deployment on the pool then needs no job variable but `image`.

Drift (a missing or different lifecycle policy, scan on push off, another log retention, a
changed trust or inline policy, a detached managed policy, an ingress rule on the security
group, a missing route) is only reported, and so fixed, on resources skylane created for this
pool: an adopted resource (same name, not tagged for the pool) is used as it is.

Keyless: no IAM user or access key is ever created. boto3 is only reached through the given
`AwsClients`; botocore errors become skylane errors (`adapters.aws.translate_error`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from skylane.adapters.aws import AwsClients, error_code, translate_error
from skylane.errors import PermanentProviderError
from skylane.provisioning.base import POOL_TAG, Context, Found, Step
from skylane.retries import PROVIDER_CALLS

EXECUTION_POLICY = "policy/service-role/AmazonECSTaskExecutionRolePolicy"
ECS_TASKS = "ecs-tasks.amazonaws.com"
DISPATCH_POLICY_NAME = "skylane-dispatch"
DEFAULT_UNTAGGED_IMAGE_DAYS = 14
DEFAULT_LOG_RETENTION_DAYS = 30
DEFAULT_VPC_CIDR = "10.60.0.0/16"
SUBNET_COUNT = 2

_MAX_SLUG = 40  # "skylane-" + slug + "-execution" stays within IAM's 64 characters
_UNSAFE = re.compile(r"[^a-z0-9-]+")


def slug(pool: str) -> str:
    """The pool's name as a part of AWS resource names: lowercase letters, digits and dashes
    (ECR, IAM, ECS and EC2 all accept it), at most 40 characters. A name that had to change
    gets a short hash of the original, so two pools never share resources."""
    cleaned = _UNSAFE.sub("-", pool.lower()).strip("-")
    if cleaned == pool and len(cleaned) <= _MAX_SLUG:
        return cleaned
    digest = hashlib.sha256(pool.encode()).hexdigest()[:6]
    return f"{cleaned[: _MAX_SLUG - 7].rstrip('-') or 'pool'}-{digest}"


# --- policies (pure) ------------------------------------------------------------------------


def trust_policy(principal: dict[str, str]) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}],
    }


def lifecycle_policy(untagged_days: int) -> dict[str, Any]:
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"expire untagged images after {untagged_days} days",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": untagged_days,
                },
                "action": {"type": "expire"},
            }
        ]
    }


_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_CLUSTER_ARN = re.compile(r"^(arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}):cluster/([\w-]+)$")
_LOG_GROUP_ARN = re.compile(r"^arn:aws[a-z-]*:logs:[a-z0-9-]+:\d{12}:log-group:[\w./#-]+$")


def dispatcher_policy(
    cluster_arn: str, role_arns: Iterable[str], log_group_arn: str
) -> dict[str, Any]:
    """The dispatcher role's inline policy: run, stop, list and describe tasks on this cluster
    only, register the task definitions they use, read this log group, and pass exactly
    `role_arns` (the execution and task roles), to ECS tasks only. Never PassRole on "*": a
    wildcard or non-role ARN among `role_arns` is a ValueError."""
    match = _CLUSTER_ARN.match(cluster_arn)
    if not match:
        raise ValueError(f"not an ECS cluster ARN: {cluster_arn!r}")
    prefix, cluster_name = match.groups()
    roles = sorted(set(role_arns))
    if not roles:
        raise ValueError("the dispatcher must be allowed to pass at least one role")
    for arn in roles:
        if "*" in arn or "?" in arn or not _ROLE_ARN.match(arn):
            raise ValueError(f"PassRole needs exact role ARNs, not {arn!r}")
    log_group_arn = log_group_arn.removesuffix(":*")
    if not _LOG_GROUP_ARN.match(log_group_arn):
        raise ValueError(f"not a CloudWatch log group ARN: {log_group_arn!r}")
    on_cluster = {"ArnEquals": {"ecs:cluster": cluster_arn}}
    tasks = f"{prefix}:task/{cluster_name}/*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # RunTask's resource is the task definition; the condition pins the cluster.
                "Sid": "RunTasksOnThisCluster",
                "Effect": "Allow",
                "Action": ["ecs:RunTask"],
                "Resource": [f"{prefix}:task-definition/*"],
                "Condition": on_cluster,
            },
            {
                "Sid": "ManageTasksOnThisCluster",
                "Effect": "Allow",
                "Action": ["ecs:DescribeTasks", "ecs:StopTask"],
                "Resource": [tasks],
                "Condition": on_cluster,
            },
            {
                # RunTask with tags (skylane tags every task) needs TagResource on the new task.
                "Sid": "TagTasksAtLaunch",
                "Effect": "Allow",
                "Action": ["ecs:TagResource"],
                "Resource": [tasks],
                "Condition": {"StringEquals": {"ecs:CreateAction": "RunTask"}},
            },
            {
                # ListTasks has no resource-level permission; the condition pins the cluster.
                "Sid": "ListTasksOnThisCluster",
                "Effect": "Allow",
                "Action": ["ecs:ListTasks"],
                "Resource": ["*"],
                "Condition": on_cluster,
            },
            {
                # Register/Describe/DeregisterTaskDefinition support no resource-level
                # permissions in IAM: "*" is the only resource AWS accepts for them.
                "Sid": "TaskDefinitions",
                "Effect": "Allow",
                "Action": [
                    "ecs:DeregisterTaskDefinition",
                    "ecs:DescribeTaskDefinition",
                    "ecs:RegisterTaskDefinition",
                ],
                "Resource": ["*"],
            },
            {
                "Sid": "ReadRunLogs",
                "Effect": "Allow",
                "Action": ["logs:DescribeLogStreams", "logs:FilterLogEvents", "logs:GetLogEvents"],
                "Resource": [log_group_arn, f"{log_group_arn}:log-stream:*"],
            },
            {
                "Sid": "PassOnlyThisPoolsRolesToEcsTasks",
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": roles,
                "Condition": {"StringEquals": {"iam:PassedToService": ECS_TASKS}},
            },
        ],
    }


def _canonical(document: Any) -> Any:
    """A policy document in a comparable form: parsed (IAM may hand back URL-encoded JSON),
    single actions, resources and principals as lists, lists sorted, so what AWS hands back
    compares equal to what was sent."""
    if isinstance(document, str):
        text = document if document.lstrip().startswith("{") else unquote(document)
        document = json.loads(text)
    return _normalized(document)


def _normalized(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _LISTED_KEYS and isinstance(value, str):
                value = [value]
            out[key] = _normalized(value)
        return out
    if isinstance(node, list):
        items = [_normalized(v) for v in node]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    return node


_LISTED_KEYS = frozenset(
    {"Action", "NotAction", "Resource", "NotResource", "AWS", "Service", "Federated"}
)


# --- plumbing -------------------------------------------------------------------------------


class _Aws:
    """What the steps share: the clients of one region and the account they act in."""

    def __init__(self, clients: AwsClients, region: str) -> None:
        self.clients = clients
        self.region = region
        self._identity: tuple[str, str] | None = None

    def client(self, service: str) -> Any:
        return self.clients.client(service, self.region)

    def call(
        self,
        service: str,
        operation: str,
        *,
        resource: str,
        missing: Iterable[str] = (),
        **params: Any,
    ) -> Any:
        """`service.operation(**params)`; None when AWS answers with one of the `missing`
        error codes; any other error translated into a skylane error naming the action."""
        client = self.client(service)
        action = f"{service}:{''.join(p.capitalize() for p in operation.split('_'))}"

        def once() -> Any:
            try:
                return getattr(client, operation)(**params)
            except Exception as exc:
                if error_code(exc) in set(missing):
                    return None
                raise translate_error(
                    exc, action=action, resource=resource, caller="your AWS credentials"
                ) from None

        if operation.startswith("create_"):
            # Not retried: a create whose answer was lost may have gone through, and a second
            # one would fail as a duplicate; the apply rolls back and a re-run adopts it.
            return once()
        # Reads, puts, tags and deletes are safe to repeat: throttling and 5xx are retried.
        return PROVIDER_CALLS.call(once, what=action)

    def _who(self) -> tuple[str, str]:
        if self._identity is None:
            identity = self.call("sts", "get_caller_identity", resource="the caller")
            partition = str(identity["Arn"]).split(":")[1]
            self._identity = (str(identity["Account"]), partition)
        return self._identity

    @property
    def account(self) -> str:
        return self._who()[0]

    @property
    def partition(self) -> str:
        return self._who()[1]

    def arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        region = self.region if regional else ""
        return f"arn:{self.partition}:{service}:{region}:{self.account}:{resource}"

    @property
    def registry(self) -> str:
        suffix = "amazonaws.com.cn" if self.partition == "aws-cn" else "amazonaws.com"
        return f"{self.account}.dkr.ecr.{self.region}.{suffix}"


def _tag_list(context: Context, key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    return [{key: k, value: v} for k, v in context.tags.items()]


def _ec2_tags(context: Context, kind: str, name: str) -> list[dict[str, Any]]:
    tags = [*_tag_list(context), {"Key": "Name", "Value": name}]
    return [{"ResourceType": kind, "Tags": tags}]


def _owned(context: Context, tags: dict[str, str]) -> bool:
    return tags.get(POOL_TAG) == context.pool


def _pairs(tags: Iterable[dict[str, str]] | None) -> dict[str, str]:
    out = {}
    for tag in tags or ():
        key = tag.get("Key", tag.get("key"))
        if key is not None:
            out[str(key)] = str(tag.get("Value", tag.get("value", "")))
    return out


def _undo(cleanup: Callable[[], None]) -> None:
    """Remove a half-made resource after a failed create; the create's error is what counts."""
    with contextlib.suppress(Exception):
        cleanup()


class _AwsStep:
    kind = ""

    def __init__(self, aws: _Aws, name: str) -> None:
        self.aws = aws
        self.name = name

    @property
    def what(self) -> str:
        return f"{self.kind} {self.name}"

    def update(self, context: Context, found: Found) -> None:  # pragma: no cover - no drift
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# --- 1. ECR repository ----------------------------------------------------------------------


class EcrRepositoryStep(_AwsStep):
    kind = "ecr-repository"

    def __init__(self, aws: _Aws, name: str, *, untagged_days: int) -> None:
        super().__init__(aws, name)
        self.lifecycle = lifecycle_policy(untagged_days)

    def find(self, context: Context) -> Found | None:
        found = self.aws.call(
            "ecr",
            "describe_repositories",
            resource=self.what,
            missing=("RepositoryNotFoundException",),
            repositoryNames=[self.name],
        )
        if not found or not found.get("repositories"):
            return None
        repo = found["repositories"][0]
        arn = repo["repositoryArn"]
        tags = self.aws.call("ecr", "list_tags_for_resource", resource=self.what, resourceArn=arn)
        owned = _owned(context, _pairs(tags.get("tags")))
        drift = []
        if owned:
            if not (repo.get("imageScanningConfiguration") or {}).get("scanOnPush"):
                drift.append("image scan on push is off")
            policy = self.aws.call(
                "ecr",
                "get_lifecycle_policy",
                resource=self.what,
                missing=("LifecyclePolicyNotFoundException",),
                repositoryName=self.name,
            )
            if policy is None:
                drift.append("no lifecycle policy")
            elif _canonical(policy.get("lifecyclePolicyText") or "{}") != _canonical(
                self.lifecycle
            ):
                drift.append("lifecycle policy differs")
        return Found(arn, owned, tuple(drift))

    def create(self, context: Context) -> str:
        repo = self.aws.call(
            "ecr",
            "create_repository",
            resource=self.what,
            repositoryName=self.name,
            imageScanningConfiguration={"scanOnPush": True},
            imageTagMutability="MUTABLE",
            tags=_tag_list(context),
        )["repository"]
        try:
            self._put_lifecycle()
        except Exception:
            _undo(lambda: self.delete(context, repo["repositoryArn"]))
            raise
        return str(repo["repositoryArn"])

    def update(self, context: Context, found: Found) -> None:
        self.aws.call(
            "ecr",
            "put_image_scanning_configuration",
            resource=self.what,
            repositoryName=self.name,
            imageScanningConfiguration={"scanOnPush": True},
        )
        self._put_lifecycle()

    def _put_lifecycle(self) -> None:
        self.aws.call(
            "ecr",
            "put_lifecycle_policy",
            resource=self.what,
            repositoryName=self.name,
            lifecyclePolicyText=json.dumps(self.lifecycle),
        )

    def delete(self, context: Context, resource_id: str) -> None:
        # force: the images pushed to the pool's repository go with it.
        self.aws.call(
            "ecr",
            "delete_repository",
            resource=self.what,
            missing=("RepositoryNotFoundException",),
            repositoryName=resource_id.rsplit("repository/", 1)[-1],
            force=True,
        )

    def publish(self, context: Context, resource_id: str | None) -> None:
        context.outputs["repository_arn"] = resource_id or self.aws.arn(
            "ecr", f"repository/{self.name}"
        )
        context.outputs["image_registry"] = self.aws.registry
        context.outputs["repository_uri"] = f"{self.aws.registry}/{self.name}"
        context.outputs["image_repository"] = context.outputs["repository_uri"]


# --- 2, 3, 7. IAM roles ---------------------------------------------------------------------


class IamRoleStep(_AwsStep):
    """An IAM role: its trust policy, AWS-managed policies attached, inline policies; the ARN
    published as `context.outputs[output]` and, when `default` is set, as that template
    default. Trust and inline policies are functions of the context, so the dispatcher's can
    name what earlier steps published."""

    kind = "iam-role"

    def __init__(
        self,
        aws: _Aws,
        name: str,
        *,
        description: str,
        trust: Callable[[Context], dict[str, Any]],
        managed: Callable[[], list[str]] = list,
        inline: Callable[[Context], dict[str, dict[str, Any]]] = lambda context: {},
        output: str,
        default: str | None = None,
    ) -> None:
        super().__init__(aws, name)
        self.description = description
        self.trust = trust
        self.managed = managed
        self.inline = inline
        self.output = output
        self.default = default

    def find(self, context: Context) -> Found | None:
        found = self.aws.call(
            "iam", "get_role", resource=self.what, missing=("NoSuchEntity",), RoleName=self.name
        )
        if not found:
            return None
        role = found["Role"]
        tags = role.get("Tags")
        if tags is None:
            tags = self.aws.call("iam", "list_role_tags", resource=self.what, RoleName=self.name)
            tags = tags.get("Tags")
        owned = _owned(context, _pairs(tags))
        drift = self._drift(context, role) if owned else []
        return Found(str(role["Arn"]), owned, tuple(drift))

    def _drift(self, context: Context, role: dict[str, Any]) -> list[str]:
        drift = []
        if _canonical(role.get("AssumeRolePolicyDocument") or "{}") != _canonical(
            self.trust(context)
        ):
            drift.append("trust policy differs")
        attached = {p["PolicyArn"] for p in self._attached()}
        for arn in self.managed():
            if arn not in attached:
                drift.append(f"{arn.rsplit('/', 1)[-1]} is not attached")
        for policy_name, document in self.inline(context).items():
            current = self.aws.call(
                "iam",
                "get_role_policy",
                resource=self.what,
                missing=("NoSuchEntity",),
                RoleName=self.name,
                PolicyName=policy_name,
            )
            if current is None:
                drift.append(f"inline policy {policy_name} is missing")
            elif _canonical(current["PolicyDocument"]) != _canonical(document):
                drift.append(f"inline policy {policy_name} differs")
        return drift

    def _attached(self, name: str | None = None) -> list[dict[str, str]]:
        found = self.aws.call(
            "iam",
            "list_attached_role_policies",
            resource=self.what,
            missing=("NoSuchEntity",),
            RoleName=name or self.name,
        )
        return list((found or {}).get("AttachedPolicies") or [])

    def create(self, context: Context) -> str:
        role = self.aws.call(
            "iam",
            "create_role",
            resource=self.what,
            RoleName=self.name,
            AssumeRolePolicyDocument=json.dumps(self.trust(context)),
            Description=self.description,
            Tags=_tag_list(context),
        )["Role"]
        try:
            self._attach_and_put(context, self.managed())
        except Exception:
            _undo(lambda: self.delete(context, role["Arn"]))
            raise
        return str(role["Arn"])

    def update(self, context: Context, found: Found) -> None:
        self.aws.call(
            "iam",
            "update_assume_role_policy",
            resource=self.what,
            RoleName=self.name,
            PolicyDocument=json.dumps(self.trust(context)),
        )
        attached = {p["PolicyArn"] for p in self._attached()}
        self._attach_and_put(context, [a for a in self.managed() if a not in attached])

    def _attach_and_put(self, context: Context, managed: list[str]) -> None:
        for arn in managed:
            self.aws.call(
                "iam", "attach_role_policy", resource=self.what, RoleName=self.name, PolicyArn=arn
            )
        for policy_name, document in self.inline(context).items():
            self.aws.call(
                "iam",
                "put_role_policy",
                resource=self.what,
                RoleName=self.name,
                PolicyName=policy_name,
                PolicyDocument=json.dumps(document),
            )

    def delete(self, context: Context, resource_id: str) -> None:
        name = resource_id.rsplit("/", 1)[-1]
        missing = ("NoSuchEntity",)
        for policy in self._attached(name):
            self.aws.call(
                "iam",
                "detach_role_policy",
                resource=self.what,
                missing=missing,
                RoleName=name,
                PolicyArn=policy["PolicyArn"],
            )
        inline = self.aws.call(
            "iam", "list_role_policies", resource=self.what, missing=missing, RoleName=name
        )
        for policy_name in (inline or {}).get("PolicyNames") or []:
            self.aws.call(
                "iam",
                "delete_role_policy",
                resource=self.what,
                missing=missing,
                RoleName=name,
                PolicyName=policy_name,
            )
        self.aws.call("iam", "delete_role", resource=self.what, missing=missing, RoleName=name)

    def publish(self, context: Context, resource_id: str | None) -> None:
        arn = resource_id or self.aws.arn("iam", f"role/{self.name}", regional=False)
        context.outputs[self.output] = arn
        if self.default:
            context.defaults[self.default] = arn
        if self.output == "dispatcher_role_arn":
            context.outputs["dispatcher_credentials"] = {"role_arn": arn}


# --- 4. ECS cluster -------------------------------------------------------------------------


class EcsClusterStep(_AwsStep):
    kind = "ecs-cluster"

    def find(self, context: Context) -> Found | None:
        found = self.aws.call(
            "ecs", "describe_clusters", resource=self.what, clusters=[self.name], include=["TAGS"]
        )
        active = [c for c in found.get("clusters") or [] if c.get("status") == "ACTIVE"]
        if not active:
            return None
        cluster = active[0]
        return Found(str(cluster["clusterArn"]), _owned(context, _pairs(cluster.get("tags"))))

    def create(self, context: Context) -> str:
        cluster = self.aws.call(
            "ecs",
            "create_cluster",
            resource=self.what,
            clusterName=self.name,
            capacityProviders=["FARGATE", "FARGATE_SPOT"],
            tags=_tag_list(context, "key", "value"),
        )["cluster"]
        return str(cluster["clusterArn"])

    def delete(self, context: Context, resource_id: str) -> None:
        self.aws.call(
            "ecs",
            "delete_cluster",
            resource=self.what,
            missing=("ClusterNotFoundException",),
            cluster=resource_id,
        )

    def publish(self, context: Context, resource_id: str | None) -> None:
        arn = resource_id or self.aws.arn("ecs", f"cluster/{self.name}")
        context.outputs["cluster_arn"] = arn
        context.defaults["cluster"] = arn
        context.defaults["region"] = self.aws.region


# --- 5. CloudWatch log group ----------------------------------------------------------------


class LogGroupStep(_AwsStep):
    kind = "log-group"

    def __init__(self, aws: _Aws, name: str, *, retention_days: int) -> None:
        super().__init__(aws, name)
        self.retention_days = retention_days

    def _arn(self) -> str:
        return self.aws.arn("logs", f"log-group:{self.name}")

    def find(self, context: Context) -> Found | None:
        found = self.aws.call(
            "logs", "describe_log_groups", resource=self.what, logGroupNamePrefix=self.name
        )
        groups = [g for g in found.get("logGroups") or [] if g.get("logGroupName") == self.name]
        if not groups:
            return None
        group = groups[0]
        arn = str(group.get("logGroupArn") or group.get("arn") or self._arn()).removesuffix(":*")
        tags = self.aws.call("logs", "list_tags_for_resource", resource=self.what, resourceArn=arn)
        owned = _owned(context, dict(tags.get("tags") or {}))
        drift = []
        if owned and group.get("retentionInDays") != self.retention_days:
            current = group.get("retentionInDays") or "never expire"
            drift.append(f"retention is {current}, not {self.retention_days} days")
        return Found(arn, owned, tuple(drift))

    def create(self, context: Context) -> str:
        self.aws.call(
            "logs",
            "create_log_group",
            resource=self.what,
            logGroupName=self.name,
            tags=dict(context.tags),
        )
        try:
            self.update(context, Found(self._arn()))
        except Exception:
            _undo(lambda: self.delete(context, self._arn()))
            raise
        return self._arn()

    def update(self, context: Context, found: Found) -> None:
        self.aws.call(
            "logs",
            "put_retention_policy",
            resource=self.what,
            logGroupName=self.name,
            retentionInDays=self.retention_days,
        )

    def delete(self, context: Context, resource_id: str) -> None:
        name = resource_id.removesuffix(":*").split(":log-group:", 1)[-1]
        self.aws.call(
            "logs",
            "delete_log_group",
            resource=self.what,
            missing=("ResourceNotFoundException",),
            logGroupName=name,
        )

    def publish(self, context: Context, resource_id: str | None) -> None:
        context.outputs["log_group_arn"] = resource_id or self._arn()
        context.defaults["configure_cloudwatch_logs"] = True
        context.defaults["cloudwatch_logs_options"] = {
            "awslogs-group": self.name,
            "awslogs-region": self.aws.region,
            # The group exists; the managed execution policy may not create groups.
            "awslogs-create-group": "false",
        }


# --- 6. networking --------------------------------------------------------------------------


def _publish_network(context: Context) -> None:
    subnets = context.outputs.get("subnets") or {}
    network: dict[str, Any] = {"subnets": sorted(subnets.values()), "assignPublicIp": "ENABLED"}
    if context.outputs.get("security_group_id"):
        network["securityGroups"] = [context.outputs["security_group_id"]]
    context.defaults["network_configuration"] = network


class DefaultVpcStep(_AwsStep):
    """The region's default VPC and its subnets: found and adopted, never created, changed or
    deleted."""

    kind = "vpc"

    def find(self, context: Context) -> Found | None:
        found = self.aws.call(
            "ec2",
            "describe_vpcs",
            resource="the default VPC",
            Filters=[{"Name": "isDefault", "Values": ["true"]}],
        )
        vpcs = found.get("Vpcs") or []
        if not vpcs:
            raise PermanentProviderError(
                f"region {self.aws.region} has no default VPC: provision with a new VPC "
                "(create_vpc) or create the default VPC first"
            )
        return Found(str(vpcs[0]["VpcId"]))

    def create(self, context: Context) -> str:  # pragma: no cover - find never says None
        raise PermanentProviderError(f"region {self.aws.region} has no default VPC")

    def delete(self, context: Context, resource_id: str) -> None:
        return None  # never created, never deleted

    def publish(self, context: Context, resource_id: str | None) -> None:
        if resource_id is None:
            return
        found = self.aws.call(
            "ec2",
            "describe_subnets",
            resource=f"VPC {resource_id}",
            Filters=[{"Name": "vpc-id", "Values": [resource_id]}],
        )
        subnets = [s["SubnetId"] for s in found.get("Subnets") or []]
        if not subnets:
            raise PermanentProviderError(
                f"the default VPC {resource_id} in {self.aws.region} has no subnets: add some, "
                "or provision with a new VPC (--create-vpc)"
            )
        context.outputs["vpc_id"] = resource_id
        context.outputs["subnets"] = {subnet: subnet for subnet in subnets}
        context.defaults["vpc_id"] = resource_id
        _publish_network(context)


class _Ec2Step(_AwsStep):
    """A VPC resource of the pool, found by its Name tag (and VPC)."""

    describe = ""
    listed = ""
    id_key = ""
    missing_code = ""
    vpc_filter = "vpc-id"

    def _describe(self, context: Context, *, in_vpc: bool = True) -> dict[str, Any] | None:
        filters = [{"Name": "tag:Name", "Values": [self.name]}]
        if in_vpc:
            vpc = context.outputs.get("vpc_id")
            if not vpc:
                return None
            filters.append({"Name": self.vpc_filter, "Values": [vpc]})
        found = self.aws.call("ec2", self.describe, resource=self.what, Filters=filters)
        items = found.get(self.listed) or []
        return items[0] if items else None

    def _found(self, context: Context, item: dict[str, Any], drift: list[str]) -> Found:
        owned = _owned(context, _pairs(item.get("Tags")))
        return Found(str(item[self.id_key]), owned, tuple(drift) if owned else ())

    def _delete(self, operation: str, **params: Any) -> None:
        self.aws.call("ec2", operation, resource=self.what, missing=(self.missing_code,), **params)


class VpcStep(_Ec2Step):
    kind = "vpc"
    describe, listed, id_key = "describe_vpcs", "Vpcs", "VpcId"
    missing_code = "InvalidVpcID.NotFound"

    def __init__(self, aws: _Aws, name: str, *, cidr: str) -> None:
        super().__init__(aws, name)
        self.cidr = cidr

    def find(self, context: Context) -> Found | None:
        item = self._describe(context, in_vpc=False)
        return self._found(context, item, []) if item else None

    def create(self, context: Context) -> str:
        vpc = self.aws.call(
            "ec2",
            "create_vpc",
            resource=self.what,
            CidrBlock=self.cidr,
            TagSpecifications=_ec2_tags(context, "vpc", self.name),
        )["Vpc"]["VpcId"]
        try:
            for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):
                self.aws.call(
                    "ec2",
                    "modify_vpc_attribute",
                    resource=self.what,
                    VpcId=vpc,
                    **{attribute: {"Value": True}},
                )
        except Exception:
            _undo(lambda: self.delete(context, vpc))
            raise
        return str(vpc)

    def delete(self, context: Context, resource_id: str) -> None:
        self._delete("delete_vpc", VpcId=resource_id)

    def publish(self, context: Context, resource_id: str | None) -> None:
        context.outputs["vpc_id"] = resource_id
        context.outputs.setdefault("subnets", {})
        if resource_id:
            context.defaults["vpc_id"] = resource_id


class SubnetStep(_Ec2Step):
    """A public subnet in the `index`-th availability zone of the region."""

    kind = "subnet"
    describe, listed, id_key = "describe_subnets", "Subnets", "SubnetId"
    missing_code = "InvalidSubnetID.NotFound"

    def __init__(self, aws: _Aws, name: str, *, index: int, cidr: str) -> None:
        super().__init__(aws, name)
        self.index = index
        self.cidr = cidr

    def find(self, context: Context) -> Found | None:
        item = self._describe(context)
        if not item:
            return None
        drift = [] if item.get("MapPublicIpOnLaunch") else ["no public IP on launch"]
        return self._found(context, item, drift)

    def _zone(self) -> str:
        found = self.aws.call(
            "ec2",
            "describe_availability_zones",
            resource=f"region {self.aws.region}",
            Filters=[
                {"Name": "state", "Values": ["available"]},
                {"Name": "zone-type", "Values": ["availability-zone"]},
            ],
        )
        zones = sorted(z["ZoneName"] for z in found.get("AvailabilityZones") or [])
        if len(zones) < SUBNET_COUNT:
            raise PermanentProviderError(
                f"region {self.aws.region} has fewer than {SUBNET_COUNT} availability zones"
            )
        return zones[self.index]

    def create(self, context: Context) -> str:
        subnet = self.aws.call(
            "ec2",
            "create_subnet",
            resource=self.what,
            VpcId=context.outputs["vpc_id"],
            CidrBlock=self.cidr,
            AvailabilityZone=self._zone(),
            TagSpecifications=_ec2_tags(context, "subnet", self.name),
        )["Subnet"]["SubnetId"]
        try:
            self.update(context, Found(subnet))
        except Exception:
            _undo(lambda: self.delete(context, subnet))
            raise
        return str(subnet)

    def update(self, context: Context, found: Found) -> None:
        self.aws.call(
            "ec2",
            "modify_subnet_attribute",
            resource=self.what,
            SubnetId=found.resource_id,
            MapPublicIpOnLaunch={"Value": True},
        )

    def delete(self, context: Context, resource_id: str) -> None:
        self._delete("delete_subnet", SubnetId=resource_id)

    def publish(self, context: Context, resource_id: str | None) -> None:
        subnets = dict(context.outputs.get("subnets") or {})
        if resource_id:
            subnets[self.name] = resource_id
        else:
            subnets.pop(self.name, None)
        context.outputs["subnets"] = subnets
        _publish_network(context)


class InternetGatewayStep(_Ec2Step):
    kind = "internet-gateway"
    describe, listed, id_key = "describe_internet_gateways", "InternetGateways", "InternetGatewayId"
    missing_code = "InvalidInternetGatewayID.NotFound"

    def find(self, context: Context) -> Found | None:
        # Found by name alone: a detached gateway of the pool is drift, not a new gateway.
        item = self._describe(context, in_vpc=False)
        if not item:
            return None
        vpc = context.outputs.get("vpc_id")
        attached = {a.get("VpcId") for a in item.get("Attachments") or []}
        drift = [] if vpc in attached else [f"not attached to {vpc}"]
        return self._found(context, item, drift)

    def create(self, context: Context) -> str:
        igw = self.aws.call(
            "ec2",
            "create_internet_gateway",
            resource=self.what,
            TagSpecifications=_ec2_tags(context, "internet-gateway", self.name),
        )["InternetGateway"]["InternetGatewayId"]
        try:
            self.update(context, Found(igw))
        except Exception:
            _undo(lambda: self.delete(context, igw))
            raise
        return str(igw)

    def update(self, context: Context, found: Found) -> None:
        self.aws.call(
            "ec2",
            "attach_internet_gateway",
            resource=self.what,
            InternetGatewayId=found.resource_id,
            VpcId=context.outputs["vpc_id"],
        )

    def delete(self, context: Context, resource_id: str) -> None:
        found = self.aws.call(
            "ec2",
            "describe_internet_gateways",
            resource=self.what,
            missing=(self.missing_code,),
            InternetGatewayIds=[resource_id],
        )
        for igw in (found or {}).get("InternetGateways") or []:
            for attachment in igw.get("Attachments") or []:
                self.aws.call(
                    "ec2",
                    "detach_internet_gateway",
                    resource=self.what,
                    missing=(self.missing_code, "Gateway.NotAttached"),
                    InternetGatewayId=resource_id,
                    VpcId=attachment["VpcId"],
                )
        self._delete("delete_internet_gateway", InternetGatewayId=resource_id)

    def publish(self, context: Context, resource_id: str | None) -> None:
        context.outputs["internet_gateway_id"] = resource_id


class RouteTableStep(_Ec2Step):
    """A route table sending 0.0.0.0/0 to the internet gateway, associated with the subnets."""

    kind = "route-table"
    describe, listed, id_key = "describe_route_tables", "RouteTables", "RouteTableId"
    missing_code = "InvalidRouteTableID.NotFound"

    def find(self, context: Context) -> Found | None:
        item = self._describe(context)
        if not item:
            return None
        return self._found(context, item, self._drift(context, item))

    def _drift(self, context: Context, table: dict[str, Any]) -> list[str]:
        drift = []
        igw = context.outputs.get("internet_gateway_id")
        routes = {
            r.get("DestinationCidrBlock"): r.get("GatewayId") for r in table.get("Routes") or []
        }
        if routes.get("0.0.0.0/0") != igw:
            drift.append("no default route to the internet gateway")
        associated = {a.get("SubnetId") for a in table.get("Associations") or []}
        for subnet in sorted((context.outputs.get("subnets") or {}).values()):
            if subnet not in associated:
                drift.append(f"{subnet} is not associated")
        return drift

    def create(self, context: Context) -> str:
        table = self.aws.call(
            "ec2",
            "create_route_table",
            resource=self.what,
            VpcId=context.outputs["vpc_id"],
            TagSpecifications=_ec2_tags(context, "route-table", self.name),
        )["RouteTable"]
        try:
            self._wire(context, table)
        except Exception:
            _undo(lambda: self.delete(context, table["RouteTableId"]))
            raise
        return str(table["RouteTableId"])

    def update(self, context: Context, found: Found) -> None:
        table = self.aws.call(
            "ec2", "describe_route_tables", resource=self.what, RouteTableIds=[found.resource_id]
        )["RouteTables"][0]
        self._wire(context, table)

    def _wire(self, context: Context, table: dict[str, Any]) -> None:
        table_id = table["RouteTableId"]
        igw = context.outputs["internet_gateway_id"]
        routes = {
            r.get("DestinationCidrBlock"): r.get("GatewayId") for r in table.get("Routes") or []
        }
        if "0.0.0.0/0" not in routes:
            operation = "create_route"
        elif routes["0.0.0.0/0"] != igw:
            operation = "replace_route"
        else:
            operation = ""
        if operation:
            self.aws.call(
                "ec2",
                operation,
                resource=self.what,
                RouteTableId=table_id,
                DestinationCidrBlock="0.0.0.0/0",
                GatewayId=igw,
            )
        associated = {a.get("SubnetId") for a in table.get("Associations") or []}
        for subnet in sorted((context.outputs.get("subnets") or {}).values()):
            if subnet not in associated:
                self.aws.call(
                    "ec2",
                    "associate_route_table",
                    resource=self.what,
                    RouteTableId=table_id,
                    SubnetId=subnet,
                )

    def delete(self, context: Context, resource_id: str) -> None:
        found = self.aws.call(
            "ec2",
            "describe_route_tables",
            resource=self.what,
            missing=(self.missing_code,),
            RouteTableIds=[resource_id],
        )
        for table in (found or {}).get("RouteTables") or []:
            for association in table.get("Associations") or []:
                if not association.get("Main"):
                    self.aws.call(
                        "ec2",
                        "disassociate_route_table",
                        resource=self.what,
                        missing=("InvalidAssociationID.NotFound",),
                        AssociationId=association["RouteTableAssociationId"],
                    )
        self._delete("delete_route_table", RouteTableId=resource_id)

    def publish(self, context: Context, resource_id: str | None) -> None:
        context.outputs["route_table_id"] = resource_id


class SecurityGroupStep(_Ec2Step):
    """The tasks' security group: no ingress at all, the default egress (images, AWS APIs)."""

    kind = "security-group"
    describe, listed, id_key = "describe_security_groups", "SecurityGroups", "GroupId"
    missing_code = "InvalidGroup.NotFound"

    def find(self, context: Context) -> Found | None:
        item = self._describe(context)
        if not item:
            return None
        drift = ["has ingress rules"] if item.get("IpPermissions") else []
        return self._found(context, item, drift)

    def create(self, context: Context) -> str:
        group = self.aws.call(
            "ec2",
            "create_security_group",
            resource=self.what,
            GroupName=self.name,
            Description=f"skylane pool {context.pool}: run tasks, no ingress",
            VpcId=context.outputs["vpc_id"],
            TagSpecifications=_ec2_tags(context, "security-group", self.name),
        )
        return str(group["GroupId"])

    def update(self, context: Context, found: Found) -> None:
        group = self.aws.call(
            "ec2", "describe_security_groups", resource=self.what, GroupIds=[found.resource_id]
        )["SecurityGroups"][0]
        if group.get("IpPermissions"):
            self.aws.call(
                "ec2",
                "revoke_security_group_ingress",
                resource=self.what,
                GroupId=found.resource_id,
                IpPermissions=group["IpPermissions"],
            )

    def delete(self, context: Context, resource_id: str) -> None:
        self._delete("delete_security_group", GroupId=resource_id)

    def publish(self, context: Context, resource_id: str | None) -> None:
        context.outputs["security_group_id"] = resource_id
        _publish_network(context)


# --- the list -------------------------------------------------------------------------------


def ecs_steps(
    clients: AwsClients,
    pool_name: str,
    *,
    region: str,
    create_vpc: bool = False,
    dispatcher_principal: str | None = None,
    untagged_image_days: int = DEFAULT_UNTAGGED_IMAGE_DAYS,
    log_retention_days: int = DEFAULT_LOG_RETENTION_DAYS,
    vpc_cidr: str = DEFAULT_VPC_CIDR,
) -> list[Step]:
    """The steps that provision an `ecs:push` pool named `pool_name` in `region`, in
    dependency order. `dispatcher_principal`: the ARN allowed to assume the dispatcher role
    (default: the account's root, i.e. whatever IAM policies of the account allow)."""
    aws = _Aws(clients, region)
    base = f"skylane-{slug(pool_name)}"
    ecs_tasks = {"Service": ECS_TASKS}

    def dispatcher_trust(context: Context) -> dict[str, Any]:
        principal = dispatcher_principal or f"arn:{aws.partition}:iam::{aws.account}:root"
        return trust_policy({"AWS": principal})

    def dispatch_inline(context: Context) -> dict[str, dict[str, Any]]:
        out = context.outputs
        roles = [out["execution_role_arn"], out["task_role_arn"]]
        policy = dispatcher_policy(out["cluster_arn"], roles, out["log_group_arn"])
        return {DISPATCH_POLICY_NAME: policy}

    steps: list[Step] = [
        EcrRepositoryStep(aws, base, untagged_days=untagged_image_days),
        IamRoleStep(
            aws,
            f"{base}-execution",
            description=f"skylane pool {pool_name}: ECS task execution role",
            trust=lambda context: trust_policy(ecs_tasks),
            managed=lambda: [f"arn:{aws.partition}:iam::aws:{EXECUTION_POLICY}"],
            output="execution_role_arn",
            default="execution_role_arn",
        ),
        IamRoleStep(
            aws,
            f"{base}-task",
            description=f"skylane pool {pool_name}: role of the runs' code",
            trust=lambda context: trust_policy(ecs_tasks),
            output="task_role_arn",
            default="task_role_arn",
        ),
        EcsClusterStep(aws, base),
        LogGroupStep(aws, f"/skylane/{slug(pool_name)}", retention_days=log_retention_days),
    ]
    if create_vpc:
        prefix = vpc_cidr.split("/")[0].rsplit(".", 2)[0]  # "10.60"
        steps.append(VpcStep(aws, base, cidr=vpc_cidr))
        steps.extend(
            SubnetStep(aws, f"{base}-{i + 1}", index=i, cidr=f"{prefix}.{i * 16}.0/20")
            for i in range(SUBNET_COUNT)
        )
        steps.append(InternetGatewayStep(aws, base))
        steps.append(RouteTableStep(aws, base))
        steps.append(SecurityGroupStep(aws, base))
    else:
        steps.append(DefaultVpcStep(aws, "default"))
    steps.append(
        IamRoleStep(
            aws,
            f"{base}-dispatcher",
            description=f"skylane pool {pool_name}: assumed by the skylane control plane",
            trust=dispatcher_trust,
            inline=dispatch_inline,
            output="dispatcher_role_arn",
        )
    )
    return steps

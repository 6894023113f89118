"""The ECS adapter: runs of an `ecs:push` (or pulled `ecs`) pool run as AWS ECS tasks, Fargate
by default.

- `render` (pure) turns the rendered job configuration (Prefect's ECS template shape, see
  `skylane.adapters.ecs_template`) into an `EcsRequest`: the exact RegisterTaskDefinition
  kwargs and the RunTask kwargs. The run's id, API URL and token go in the RunTask container
  overrides, never in the task definition, so one task definition serves every run of a
  deployment.
- `submit` registers the task definition only when the pool's ResourceCache has no ARN for its
  content (kind `ecs-task-definition`, key = sha256 of the canonical JSON of the kwargs and the
  region), then RunTask with `clientToken` = the key (64 characters at most) and `startedBy` =
  `started_by_for(key)`. `find(key)` lists the cluster's tasks by that `startedBy` (moto, like
  any client, ignores nothing there; it does ignore `clientToken`).
- A ref is the task ARN (`arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID`, which names the region
  and the cluster). For an account still on the old ARN format (`task/ID`) the ref is
  `CLUSTER::ARN`.
- Tags on every task: `skylane-run-id`, `skylane-deployment`, `skylane-pool`,
  `skylane-attempt` (the idempotency key) and `skylane-start-timeout` (seconds; `statuses`
  stops a task still pending after it), plus the `labels`.

ResourceCache kinds: `ecs-task-definition` (content hash -> ARN registered by skylane; only
these are ever deregistered, by `teardown` when the pool's `deregister_task_definitions` setting
is true), `ecs-subnets` (`REGION:VPC` -> JSON list of subnet ids, for tasks without subnets),
`ecs-run` (startedBy id -> `{"region", "cluster"}`, written before RunTask so `find` knows where
to look; removed by `cleanup`).

Pool settings: `region`, `endpoint_url`, `cluster` (where `find` looks for a key it has no
record of), `deregister_task_definitions`. Credentials: see `skylane.adapters.aws`.

boto3 is imported lazily (through `skylane.adapters.aws`), never at import time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from skylane.adapters import ecs_template as tpl
from skylane.adapters.aws import AwsClients, translate_error
from skylane.adapters.base import (
    CloudAdapter,
    ProviderLogLine,
    ProviderState,
    ProviderStatus,
    ResourceCache,
    RunContext,
    split_command,
)
from skylane.adapters.template_values import text, whole_number
from skylane.errors import (
    CapacityError,
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderNotFound,
    TransientProviderError,
)
from skylane.models import Pool
from skylane.rate_limits import (
    ECS_RUN_TASK,
    RateLimiter,
    RateScope,
    limits_for,
)
from skylane.security import MASK, is_secret_name
from skylane.settings import Settings

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "SKYLANE_RUN_TOKEN"

TAG_ATTEMPT = "skylane-attempt"
TAG_START_TIMEOUT = "skylane-start-timeout"
TAG_MANAGED = "skylane-managed"
CACHE_TASK_DEFINITIONS = "ecs-task-definition"
CACHE_SUBNETS = "ecs-subnets"
CACHE_RUNS = "ecs-run"

PENDING_STATUSES = frozenset({"PROVISIONING", "PENDING", "ACTIVATING"})
RUNNING_STATUSES = frozenset({"RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING"})
STOPPED_STATUSES = frozenset({"STOPPED", "DELETED"})
DESCRIBE_BATCH = 100
MAX_TAGS = 50
LOG_TAIL_LINES = 20
MAX_LOG_PAGES = 1000
# DescribeTasks may not know a task for a moment after RunTask: a task this process started
# that long ago or less is reported PENDING rather than NOT_FOUND.
MISSING_GRACE_SECONDS = 60.0
_MEMO_SIZE = 10_000

_TASK_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):ecs:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"task/(?:(?P<cluster>[A-Za-z0-9_-]+)/)?(?P<id>[A-Za-z0-9-]+)$"
)
_TAG_CHARS = re.compile(r"[^\w .:/=+\-@]", re.UNICODE)
_FAMILY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def started_by_for(key: str) -> str:
    """The RunTask `startedBy` (36 characters at most) that identifies the attempt `key`."""
    return "skl-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _masked_env(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    masked = []
    for item in env:
        name = str(item.get("name", ""))
        if is_secret_name(name):  # the run token included
            item = {**item, "value": MASK}
        masked.append(item)
    return masked


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


# --- request ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkLookup:
    """RunTask needs subnets that the template did not give: `submit` looks up those of
    `vpc_id` (None: the region's default VPC) and uses them with these settings."""

    vpc_id: str | None
    security_groups: tuple[str, ...] = ()
    assign_public_ip: str = "ENABLED"


@dataclass(frozen=True, eq=True)
class EcsRequest:
    """What `submit` sends for one run.

    - `task_definition`: the exact RegisterTaskDefinition kwargs, or None when the template
      names an existing task definition (then `run_task["taskDefinition"]` is set).
    - `run_task`: the exact RunTask kwargs, except `clientToken` and `startedBy` (added by
      `submit` from the key), `taskDefinition` when `task_definition` is registered (its ARN),
      and `networkConfiguration` when `network_lookup` is set.
    - `region`: None means the pool's or the session's region, resolved by `submit`.

    `run_task` holds the run token: `repr`, `str` and `redacted()` mask it.
    """

    task_definition: dict[str, Any] | None
    run_task: dict[str, Any] = field(repr=False)
    region: str | None
    start_timeout_seconds: int
    container_name: str
    network_lookup: NetworkLookup | None = None

    __hash__ = None  # type: ignore[assignment]  # holds dicts

    @property
    def cluster(self) -> str | None:
        return self.run_task.get("cluster")

    def secret_values(self) -> list[str]:
        """Values that must never appear in a message (the run token)."""
        values = []
        for override in self.run_task.get("overrides", {}).get("containerOverrides", []):
            for item in override.get("environment", []):
                if item.get("name") == TOKEN_VARIABLE and item.get("value"):
                    values.append(str(item["value"]))
        return values

    def redacted(self) -> dict[str, Any]:
        """Both requests as plain JSON, the run token (and secret-looking variables) masked."""
        run_task = copy.deepcopy(self.run_task)
        for override in run_task.get("overrides", {}).get("containerOverrides", []):
            if "environment" in override:
                override["environment"] = _masked_env(override["environment"])
        if self.task_definition is not None:
            run_task.setdefault("taskDefinition", "<ARN of the registered task_definition>")
        if self.network_lookup is not None:
            where = self.network_lookup.vpc_id or "the default VPC"
            run_task["networkConfiguration"] = {
                "awsvpcConfiguration": {
                    "subnets": f"<subnets of {where}>",
                    "securityGroups": list(self.network_lookup.security_groups),
                    "assignPublicIp": self.network_lookup.assign_public_ip,
                }
            }
        run_task["clientToken"] = "<the attempt's idempotency key>"
        run_task["startedBy"] = "<skl- + hash of the idempotency key>"
        return {
            "provider": "ecs",
            "region": self.region,
            "task_definition": copy.deepcopy(self.task_definition),
            "run_task": run_task,
            "container_name": self.container_name,
            "start_timeout_seconds": self.start_timeout_seconds,
            "network_lookup": None
            if self.network_lookup is None
            else {
                "vpc_id": self.network_lookup.vpc_id,
                "security_groups": list(self.network_lookup.security_groups),
                "assign_public_ip": self.network_lookup.assign_public_ip,
            },
        }

    def __repr__(self) -> str:
        return f"EcsRequest({_canonical(self.redacted())})"

    __str__ = __repr__


def task_definition_key(task_definition: dict[str, Any], region: str) -> str:
    """The ResourceCache key of a task definition's content in a region."""
    return hashlib.sha256(
        _canonical({"region": region, "task_definition": task_definition}).encode()
    ).hexdigest()


# --- refs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRef:
    region: str
    cluster: str
    task_arn: str
    task_id: str


def make_ref(task_arn: str, cluster_arn: str | None = None) -> str:
    match = _TASK_ARN.match(task_arn)
    if match and match.group("cluster"):
        return task_arn
    cluster = (cluster_arn or "default").rsplit("/", 1)[-1]
    return f"{cluster}::{task_arn}"


def parse_ref(ref: str) -> TaskRef:
    """Split a ref into region, cluster and task; ValueError if it is not an ECS task ref."""
    cluster = None
    arn = ref
    if isinstance(ref, str) and "::" in ref:
        cluster, arn = ref.split("::", 1)
    match = _TASK_ARN.match(arn) if isinstance(arn, str) else None
    if match is None:
        raise ValueError(f"not an ECS task ref: {ref!r}")
    cluster = match.group("cluster") or cluster
    if not cluster:
        raise ValueError(f"ECS task ref without a cluster: {ref!r}")
    return TaskRef(match.group("region"), cluster, arn, match.group("id"))


class _Memo(OrderedDict):  # type: ignore[type-arg]
    """A dict that forgets its oldest entries beyond a size."""

    def __init__(self, size: int = _MEMO_SIZE) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


# --- pure render helpers ---------------------------------------------------------------------


def _is_absent(value: Any) -> bool:
    if value is None or value == "":
        return True
    # A Prefect block document reference (e.g. aws_credentials) is not a value here.
    return isinstance(value, dict) and set(value) == {"$ref"}


def _clean(node: Any) -> Any:
    """A deep copy without absent values (None, "", block references) in objects."""
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if not _is_absent(v)}
    if isinstance(node, list):
        return [_clean(v) for v in node if v is not None]
    return copy.deepcopy(node)


def _drop_empty(node: Any) -> Any:
    """Remove None, "", [] and {} values from objects (False and 0 stay), recursively; drop
    None and empty objects from lists."""
    if isinstance(node, dict):
        cleaned = {}
        for key, value in node.items():
            value = _drop_empty(value)
            if value is None or (isinstance(value, str | list | dict) and not value):
                continue
            cleaned[key] = value
        return cleaned
    if isinstance(node, list):
        items = [_drop_empty(v) for v in node]
        return [v for v in items if v is not None and not (isinstance(v, dict) and not v)]
    return node


def _opt_str(value: Any) -> str | None:
    if _is_absent(value):
        return None
    return str(value).strip() or None


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _dict(value: Any, variable: str) -> dict[str, Any]:
    if _is_absent(value):
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{variable} must be an object, not {type(value).__name__}",
            field=f"job_variables.{variable}",
        )
    return value


def _str_map(value: Any, variable: str) -> dict[str, str]:
    return {str(k): text(v) for k, v in _dict(value, variable).items() if v is not None}


def _pairs(value: Any, variable: str, key_field: str, what: str) -> list[tuple[str, str]]:
    """(name, value) pairs from an object, or from an ECS list of `{<key_field>, value}`
    (`name` for environment, `key` for tags); entries whose value is null are left out."""
    if _is_absent(value):
        return []
    if isinstance(value, dict):
        return [(str(k), text(v)) for k, v in value.items() if v is not None]
    if isinstance(value, list):
        pairs = []
        for item in value:
            if not isinstance(item, dict) or key_field not in item:
                raise InvalidInput(
                    f"{variable} entries must be objects with a {key_field} and a value",
                    field=f"job_variables.{variable}",
                )
            if item.get("value") is not None:
                pairs.append((str(item[key_field]), text(item["value"])))
        return pairs
    raise InvalidInput(
        f"{variable} must be an object of {what} to values", field=f"job_variables.{variable}"
    )


def _env_pairs(value: Any, variable: str) -> list[tuple[str, str]]:
    return _pairs(value, variable, "name", "names")


def _tag_pairs(value: Any, variable: str) -> list[tuple[str, str]]:
    return _pairs(value, variable, "key", "tag names")


def _merge_env(
    *layers: list[tuple[str, str]], drop: set[str] | frozenset[str] = frozenset()
) -> list[dict[str, str]]:
    merged: dict[str, str] = {}
    for layer in layers:
        for name, value in layer:
            merged.pop(name, None)  # a later layer moves the name to its position
            merged[name] = value
    return [{"name": n, "value": v} for n, v in merged.items() if n not in drop]


def _tag_text(text: str, limit: int) -> str:
    return _TAG_CHARS.sub("_", text)[:limit]


def _tags(*layers: list[tuple[str, str]], variable: str = "labels") -> list[dict[str, str]]:
    merged: dict[str, str] = {}
    for layer in layers:
        for key, value in layer:
            key = _tag_text(key, 128)
            if not key:
                continue
            if key.lower().startswith("aws:"):
                raise InvalidInput(
                    f"tag {key!r}: tags starting with 'aws:' are reserved by AWS",
                    field=f"job_variables.{variable}",
                )
            merged[key] = _tag_text(value, 256)
    if len(merged) > MAX_TAGS:
        raise InvalidInput(
            f"an ECS task takes at most {MAX_TAGS} tags; {len(merged)} were given (skylane "
            "adds 5): remove some labels",
            field=f"job_variables.{variable}",
        )
    return [{"key": k, "value": v} for k, v in merged.items()]


def _int(value: Any, variable: str, minimum: int = 0) -> int:
    return whole_number(value, f"job_variables.{variable}", minimum=minimum)


def _capacity_strategy(value: Any) -> list[dict[str, Any]]:
    field_name = "job_variables.capacity_provider_strategy"
    if _is_absent(value):
        return []
    if not isinstance(value, list):
        raise InvalidInput("capacity_provider_strategy must be a list", field=field_name)
    strategy = []
    for item in value:
        if not isinstance(item, dict) or not _opt_str(item.get("capacityProvider")):
            raise InvalidInput(
                "each capacity provider strategy item needs a capacityProvider", field=field_name
            )
        entry: dict[str, Any] = {"capacityProvider": str(item["capacityProvider"])}
        for number in ("weight", "base"):
            if item.get(number) is not None:
                entry[number] = _int(item[number], "capacity_provider_strategy")
        strategy.append(entry)
    return strategy


def _awsvpc(value: Any, variable: str) -> dict[str, Any]:
    """The awsvpcConfiguration of a network configuration given either as
    `{"awsvpcConfiguration": {...}}` or as its content."""
    config = _dict(value, variable)
    if "awsvpcConfiguration" in config:
        config = _dict(config["awsvpcConfiguration"], variable)
    result: dict[str, Any] = {}
    for name in ("subnets", "securityGroups"):
        items = config.get(name)
        if _is_absent(items):
            continue
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise InvalidInput(
                f"{variable}.{name} must be a list of ids", field=f"job_variables.{variable}"
            )
        result[name] = list(items)
    public_ip = _opt_str(config.get("assignPublicIp"))
    if public_ip is not None:
        public_ip = public_ip.upper()
        if public_ip not in ("ENABLED", "DISABLED"):
            raise InvalidInput(
                f"{variable}.assignPublicIp must be ENABLED or DISABLED",
                field=f"job_variables.{variable}",
            )
        result["assignPublicIp"] = public_ip
    return result


def _secret_names(task_definition: dict[str, Any] | None, container_name: str) -> set[str]:
    for container in (task_definition or {}).get("containerDefinitions", []):
        if container.get("name") == container_name:
            return {str(s["name"]) for s in container.get("secrets", [])}
    return set()


def _default_family(context: RunContext) -> str:
    deployment = context.deployment_name
    if "/" not in deployment and context.flow_name:
        deployment = f"{context.flow_name}-{deployment}"
    family = _FAMILY_CHARS.sub("-", f"skylane-{context.pool_name}-{deployment}").strip("-")
    return family[:255]


# --- the adapter -----------------------------------------------------------------------------


class EcsAdapter(CloudAdapter):
    """Runs as AWS ECS tasks. See the module docstring. Each step of `submit` is retried on
    transient and throttling errors (`_retry`), all within settings.submit_deadline_seconds;
    the dispatcher retries later attempts itself, by the same policy."""

    provider: ClassVar[str] = "ecs"

    # GetLogEvents page size for `logs` (None: CloudWatch's default, up to 10,000 events).
    log_page_size: int | None = None

    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        *,
        cache: ResourceCache | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        super().__init__(pool, settings, cache=cache, limiter=limiter)
        self.aws = AwsClients(
            pool.credentials, pool.settings, timeout=settings.provider_timeout_seconds
        )
        self._account: str | None = None
        self._lock = threading.Lock()
        # ref -> when this process first knew the task (start timeout without createdAt)
        self._seen: _Memo = _Memo()
        # ref -> the final state of a stopped task (its log tail is read once)
        self._final: _Memo = _Memo()
        # ref -> (group, stream, region) or None; task definition ARN -> description
        self._log_locations: _Memo = _Memo()
        self._task_definitions: _Memo = _Memo(1000)
        # ref -> startedBy id (to drop its `ecs-run` record on cleanup)
        self._started_by: _Memo = _Memo()

    # -- template and request ----------------------------------------------------------------

    @classmethod
    def default_template(cls) -> dict[str, Any]:
        return tpl.default_template()

    def client(self, service: str, region: str | None = None) -> Any:
        """The boto3 client this adapter uses for `service` in `region` (default: the pool's)."""
        return self.aws.client(service, region)

    def render(self, job_configuration: dict[str, Any], context: RunContext) -> EcsRequest:
        """The ECS requests for this run. Pure: no AWS call, no I/O. Raises InvalidInput naming
        the job variable for anything ECS would reject."""
        if not isinstance(job_configuration, dict):
            raise InvalidInput("the job configuration must be an object", field="job_variables")
        config = _clean(job_configuration)
        run_request = _dict(config.get("task_run_request"), "task_run_request")

        region = _opt_str(config.get("region")) or _opt_str(self.pool.settings.get("region"))
        if region is not None and not tpl.REGION.match(region):
            raise InvalidInput(
                f"region {region[:40]!r} is not an AWS region name such as us-east-1",
                field="job_variables.region",
            )
        launch_type = (
            _opt_str(run_request.get("launchType"))
            or _opt_str(config.get("launch_type"))
            or tpl.DEFAULT_LAUNCH_TYPE
        ).upper()
        if launch_type not in tpl.LAUNCH_TYPES + tpl.EXTRA_LAUNCH_TYPES:
            raise InvalidInput(
                f"unknown launch type {launch_type[:40]!r}; use one of "
                f"{', '.join(tpl.LAUNCH_TYPES)}",
                field="job_variables.launch_type",
            )
        fargate = launch_type in tpl.FARGATE_LAUNCH_TYPES
        strategy = _capacity_strategy(
            run_request.get("capacityProviderStrategy") or config.get("capacity_provider_strategy")
        )
        secrets = _str_map(config.get("secrets"), "secrets")
        for name, arn in secrets.items():
            tpl.check_secret_arn(name, arn)

        existing = _opt_str(run_request.get("taskDefinition")) or _opt_str(
            config.get("task_definition_arn")
        )
        if existing:
            if secrets:
                raise InvalidInput(
                    "secrets are set in the task definition skylane registers; with "
                    "task_definition_arn, put them in that task definition instead",
                    field="job_variables.secrets",
                )
            task_definition = None
            container_name = _opt_str(config.get("container_name")) or tpl.DEFAULT_CONTAINER_NAME
            awsvpc = fargate
        else:
            task_definition, container_name = self._render_task_definition(
                config, context, region, fargate, secrets
            )
            awsvpc = task_definition.get("networkMode") == "awsvpc"

        run_task, network_lookup = self._render_run_task(
            config,
            run_request,
            context,
            launch_type=launch_type,
            strategy=strategy,
            existing=existing,
            container_name=container_name,
            secret_names=set(secrets) | _secret_names(task_definition, container_name),
            awsvpc=awsvpc,
            fargate=fargate,
        )
        timeout = tpl.DEFAULT_START_TIMEOUT_SECONDS
        if not _is_absent(config.get("task_start_timeout_seconds")):
            timeout = _int(config["task_start_timeout_seconds"], "task_start_timeout_seconds")
        run_task["tags"] = _tags(
            [(t["key"], t["value"]) for t in run_task.get("tags", [])],
            [(TAG_START_TIMEOUT, str(timeout))],
        )
        return EcsRequest(
            task_definition=task_definition,
            run_task=run_task,
            region=region,
            start_timeout_seconds=timeout,
            container_name=container_name,
            network_lookup=network_lookup,
        )

    def _render_task_definition(
        self,
        config: dict[str, Any],
        context: RunContext,
        region: str | None,
        fargate: bool,
        secrets: dict[str, str],
    ) -> tuple[dict[str, Any], str]:
        definition = _dict(config.get("task_definition"), "task_definition")
        containers = definition.get("containerDefinitions") or []
        if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
            raise InvalidInput(
                "task_definition.containerDefinitions must be a list of objects",
                field="job_variables.task_definition",
            )
        containers = [c for c in containers if c]
        names = [c["name"] for c in containers if _opt_str(c.get("name"))]

        configured = _opt_str(config.get("container_name"))
        if configured:
            name = configured
        elif tpl.DEFAULT_CONTAINER_NAME in names:
            name = tpl.DEFAULT_CONTAINER_NAME
        else:
            name = names[0] if names else tpl.DEFAULT_CONTAINER_NAME
        container = next((c for c in containers if c.get("name") == name), None)
        if container is None:
            container = next((c for c in containers if not _opt_str(c.get("name"))), None)
            if container is None and names:
                raise InvalidInput(
                    f"the task definition has no container named {name!r} (it has "
                    f"{', '.join(repr(n) for n in names)}); fix container_name",
                    field="job_variables.container_name",
                )
            if container is None:
                container = {}
                containers.append(container)
            container["name"] = name
        if containers and all(c.get("essential") is False for c in containers):
            raise InvalidInput(
                "at least one container of the task definition must be essential",
                field="job_variables.task_definition",
            )

        image = _opt_str(container.get("image")) or _opt_str(context.image)
        if not image:
            raise InvalidInput(
                "an image is required: set the image job variable or deploy with an image",
                field="job_variables.image",
            )
        container["image"] = image

        family = _opt_str(definition.get("family")) or _opt_str(config.get("family"))
        family = _FAMILY_CHARS.sub("-", family)[:255] if family else _default_family(context)
        definition["family"] = family

        cpu = tpl.parse_cpu(
            definition.get("cpu") or config.get("cpu") or tpl.DEFAULT_CPU,
        )
        memory = tpl.parse_memory(
            definition.get("memory") or config.get("memory") or tpl.DEFAULT_MEMORY,
        )
        if fargate:
            tpl.check_fargate_size(cpu, memory)
            compatibilities = list(definition.get("requiresCompatibilities") or [])
            if "FARGATE" not in compatibilities:
                compatibilities.append("FARGATE")
            definition["requiresCompatibilities"] = compatibilities
            mode = definition.setdefault("networkMode", "awsvpc")
            if mode != "awsvpc":
                raise InvalidInput(
                    f"Fargate tasks need networkMode 'awsvpc', not {mode!r}; use launch_type "
                    "EC2 or remove networkMode",
                    field="job_variables.launch_type",
                )
        else:
            container.setdefault("cpu", cpu)
        definition["cpu"] = str(cpu)
        definition["memory"] = str(memory)
        # moto refuses a container without memory; ECS accepts it (a hard limit <= the task's).
        container["memory"] = _int(container.get("memory", memory), "memory", 6)
        if "cpu" in container:
            container["cpu"] = _int(container["cpu"], "cpu")

        execution_role = _opt_str(definition.get("executionRoleArn")) or _opt_str(
            config.get("execution_role_arn")
        )
        if execution_role:
            definition["executionRoleArn"] = tpl.check_role_arn(
                execution_role, "execution_role_arn"
            )
        if _opt_str(definition.get("taskRoleArn")):
            tpl.check_role_arn(definition["taskRoleArn"], "task_role_arn")

        storage = definition.pop("ephemeralStorage", None)
        size = storage.get("sizeInGiB") if isinstance(storage, dict) else storage
        if _is_absent(size):
            size = config.get("ephemeral_storage")
        if not _is_absent(size):
            if not fargate:
                raise InvalidInput(
                    "ephemeral_storage is only supported on Fargate",
                    field="job_variables.ephemeral_storage",
                )
            definition["ephemeralStorage"] = {"sizeInGiB": tpl.check_ephemeral_storage(size)}

        # Secrets: the template's own list, then the `secrets` variable; valueFrom only.
        secret_refs: dict[str, str] = {}
        for item in container.get("secrets") or []:
            if not isinstance(item, dict) or not _opt_str(item.get("name")):
                raise InvalidInput(
                    "container secrets must be objects with a name and a valueFrom",
                    field="job_variables.secrets",
                )
            secret_refs[str(item["name"])] = tpl.check_secret_arn(
                str(item["name"]), item.get("valueFrom")
            )
        secret_refs.update(secrets)
        if secret_refs:
            container["secrets"] = [{"name": n, "valueFrom": v} for n, v in secret_refs.items()]
        environment = _env_pairs(container.get("environment"), "env")
        container["environment"] = _merge_env(environment, drop=set(secret_refs))

        if _as_bool(config.get("configure_cloudwatch_logs")):
            if not execution_role:
                raise InvalidInput(
                    "configure_cloudwatch_logs needs an execution role allowed to write "
                    "CloudWatch logs (logs:CreateLogGroup, logs:CreateLogStream, "
                    "logs:PutLogEvents): set execution_role_arn",
                    field="job_variables.execution_role_arn",
                )
            options = {
                "awslogs-create-group": "true",
                "awslogs-group": tpl.DEFAULT_LOG_GROUP,
                "awslogs-stream-prefix": _opt_str(config.get("cloudwatch_logs_prefix"))
                or tpl.DEFAULT_LOG_STREAM_PREFIX,
            }
            if region:
                options["awslogs-region"] = region
            options.update(
                _str_map(config.get("cloudwatch_logs_options"), "cloudwatch_logs_options")
            )
            container["logConfiguration"] = {"logDriver": "awslogs", "options": options}

        tags = _tags(
            _tag_pairs(definition.get("tags"), "task_definition"),
            [(TAG_MANAGED, "true"), ("skylane-pool", context.pool_name)],
        )
        definition["tags"] = tags
        definition["containerDefinitions"] = containers
        return _drop_empty(definition), name

    def _render_run_task(
        self,
        config: dict[str, Any],
        run_request: dict[str, Any],
        context: RunContext,
        *,
        launch_type: str,
        strategy: list[dict[str, Any]],
        existing: str | None,
        container_name: str,
        secret_names: set[str],
        awsvpc: bool,
        fargate: bool,
    ) -> tuple[dict[str, Any], NetworkLookup | None]:
        run_task = copy.deepcopy(run_request)
        # One task per run; the key-derived clientToken and startedBy are added by submit.
        for key in (
            "taskDefinition",
            "launchType",
            "capacityProviderStrategy",
            "clientToken",
            "startedBy",
            "count",
        ):
            run_task.pop(key, None)
        if existing:
            run_task["taskDefinition"] = existing
        if strategy:
            run_task["capacityProviderStrategy"] = strategy
        elif launch_type == "FARGATE_SPOT":
            run_task["capacityProviderStrategy"] = [
                {"capacityProvider": "FARGATE_SPOT", "weight": 1}
            ]
        else:
            run_task["launchType"] = launch_type
        cluster = _opt_str(run_request.get("cluster")) or _opt_str(config.get("cluster"))
        if cluster:
            run_task["cluster"] = cluster
        platform = _opt_str(run_request.get("platformVersion")) or _opt_str(
            config.get("platform_version")
        )
        if platform:
            run_task["platformVersion"] = platform

        overrides = _dict(run_task.get("overrides"), "task_run_request.overrides")
        container_overrides = overrides.get("containerOverrides") or []
        if not isinstance(container_overrides, list) or not all(
            isinstance(o, dict) for o in container_overrides
        ):
            raise InvalidInput(
                "task_run_request.overrides.containerOverrides must be a list of objects",
                field="job_variables.task_run_request",
            )
        container_overrides = [o for o in container_overrides if o]
        main = next((o for o in container_overrides if o.get("name") == container_name), None)
        if main is None:
            main = next((o for o in container_overrides if not _opt_str(o.get("name"))), None)
            if main is None:
                main = {}
                container_overrides.insert(0, main)
            main["name"] = container_name

        command = split_command(config.get("command")) or split_command(main.get("command"))
        main["command"] = command or list(tpl.DEFAULT_COMMAND)
        main["environment"] = _merge_env(
            _env_pairs(main.get("environment"), "env"),
            _env_pairs(config.get("env"), "env"),
            drop=secret_names,
        )
        main["environment"] = _merge_env(
            [(e["name"], e["value"]) for e in main["environment"]],
            list(context.runtime_env().items()),  # the run's id, API URL and token always win
        )
        for override in container_overrides:
            for number in ("cpu", "memory", "memoryReservation"):
                if not _is_absent(override.get(number)):
                    override[number] = _int(
                        tpl.parse_memory(override[number])
                        if number != "cpu"
                        else tpl.parse_cpu(override[number]),
                        number if number != "memoryReservation" else "memory",
                    )
        overrides["containerOverrides"] = container_overrides
        if not _is_absent(overrides.get("cpu")):
            overrides["cpu"] = str(tpl.parse_cpu(overrides["cpu"]))
        if not _is_absent(overrides.get("memory")):
            overrides["memory"] = str(tpl.parse_memory(overrides["memory"]))
        if fargate and "cpu" in overrides and "memory" in overrides:
            tpl.check_fargate_size(int(overrides["cpu"]), int(overrides["memory"]))
        task_role = _opt_str(overrides.get("taskRoleArn")) or _opt_str(config.get("task_role_arn"))
        if task_role:
            overrides["taskRoleArn"] = tpl.check_role_arn(task_role, "task_role_arn")
        if _opt_str(overrides.get("executionRoleArn")):
            tpl.check_role_arn(overrides["executionRoleArn"], "execution_role_arn")
        run_task["overrides"] = overrides

        run_task["tags"] = _tags(
            _tag_pairs(run_request.get("tags"), "labels"),
            _tag_pairs(config.get("labels"), "labels"),
            list(context.labels().items()),
            [(TAG_ATTEMPT, context.idempotency_key)],
        )
        run_task = _drop_empty(run_task)

        network_lookup = None
        given = run_request.get("networkConfiguration")
        if awsvpc:
            vpc = _awsvpc(given, "task_run_request.networkConfiguration") if given else {}
            if not vpc.get("subnets"):
                vpc = {
                    **_awsvpc(config.get("network_configuration"), "network_configuration"),
                    **vpc,
                }
            if vpc.get("subnets"):
                vpc.setdefault("securityGroups", [])  # moto needs the key; ECS takes []
                run_task["networkConfiguration"] = {"awsvpcConfiguration": vpc}
            else:
                run_task.pop("networkConfiguration", None)
                network_lookup = NetworkLookup(
                    vpc_id=_opt_str(config.get("vpc_id")),
                    security_groups=tuple(vpc.get("securityGroups") or ()),
                    assign_public_ip=vpc.get("assignPublicIp") or "ENABLED",
                )
        elif given:
            run_task["networkConfiguration"] = given
        return run_task, network_lookup

    def describe(self, request: EcsRequest) -> dict[str, Any]:
        return request.redacted()

    # -- submission --------------------------------------------------------------------------

    def _call(
        self,
        region: str,
        service: str,
        operation: str,
        action: str,
        params: dict[str, Any],
        *,
        resource: str | None = None,
        cluster: str | None = None,
        secrets: list[str] | tuple[str, ...] = (),
    ) -> Any:
        """One AWS call (`params` are its kwargs), its errors translated."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.aws.client(service, region)
        try:
            return getattr(client, operation)(**params)
        except (BotoCoreError, ClientError) as exc:
            raise translate_error(
                exc,
                action=action,
                resource=resource,
                cluster=cluster,
                region=region,
                secrets=secrets,
            ) from None

    def submit(self, request: EcsRequest, key: str) -> str:
        """Start the run's task; with the same key, never a second one (clientToken for ECS,
        startedBy for `find`). Transient and throttling errors are retried a few times here."""
        if not isinstance(request, EcsRequest):
            raise TypeError(f"EcsAdapter.submit takes an EcsRequest, not {type(request).__name__}")
        if not key:
            raise ValueError("an idempotency key is required")
        until = time.monotonic() + self.settings.submit_deadline_seconds
        region = self.aws.region(request.region)
        cluster = request.cluster or "default"
        started_by = started_by_for(key)
        secrets = request.secret_values()
        # Where a key's task goes is recorded (in the store, shared by every dispatcher) before
        # its first RunTask. No record: no task can exist for the key, so the ListTasks look-up
        # (two calls) is only spent on a key seen before, i.e. on recovery.
        if self.cache.get(CACHE_RUNS, started_by) is None:
            self.cache.put(
                CACHE_RUNS, started_by, _canonical({"region": region, "cluster": cluster})
            )
        else:
            found = self._retry(lambda: self._find_in(region, cluster, started_by), until)
            if found:
                self._remember(found, started_by)
                return found

        kwargs = copy.deepcopy(request.run_task)
        if request.task_definition is not None:
            kwargs["taskDefinition"] = self._task_definition_arn(request, region, until)
        if request.network_lookup is not None:
            kwargs["networkConfiguration"] = self._network_configuration(
                region, request.network_lookup, until
            )
        kwargs["clientToken"] = key[:64]
        kwargs["startedBy"] = started_by
        kwargs["tags"] = [t for t in kwargs.get("tags", []) if t["key"] != TAG_ATTEMPT] + [
            {"key": TAG_ATTEMPT, "value": _tag_text(key, 256)}
        ]

        first = [True]

        def run_once() -> str:
            if not first[0]:
                # The previous try may have started the task before failing (a timeout).
                again = self._find_in(region, cluster, started_by)
                if again:
                    return again
            first[0] = False
            return self._run_task(region, cluster, kwargs, secrets, until)

        try:
            ref = self._retry(run_once, until)
        except PermanentProviderError as exc:
            if request.task_definition is None or not _inactive_task_definition(exc):
                raise
            # The cached task definition was deregistered outside skylane: register again.
            self.cache.delete(
                CACHE_TASK_DEFINITIONS,
                task_definition_key(self._finalized(request, region), region),
            )
            kwargs["taskDefinition"] = self._task_definition_arn(request, region, until)
            ref = self._retry(run_once, until)
        self._remember(ref, started_by)
        log.info("started ECS task %s (startedBy %s)", ref, started_by)
        return ref

    def _remember(self, ref: str, started_by: str) -> None:
        with self._lock:
            self._seen.setdefault(ref, time.time())
            self._started_by[ref] = started_by

    def _run_task(
        self,
        region: str,
        cluster: str,
        kwargs: dict[str, Any],
        secrets: list[str],
        until: float | None = None,
    ) -> str:
        timeout = 0.0 if until is None else max(0.0, until - time.monotonic())
        self.limiter.acquire(
            RateScope(ECS_RUN_TASK, self._account_id(), region),
            limits_for(ECS_RUN_TASK, self.pool.settings),
            timeout=timeout,
        )
        response = self._call(
            region,
            "ecs",
            "run_task",
            "ecs:RunTask",
            kwargs,
            resource=f"cluster {cluster!r}",
            cluster=cluster,
            secrets=secrets,
        )
        failures = response.get("failures") or []
        tasks = response.get("tasks") or []
        if tasks:
            task = tasks[0]
            return make_ref(task["taskArn"], task.get("clusterArn"))
        if failures:
            failure = failures[0]
            reason = str(failure.get("reason") or "unknown reason")
            detail = f" ({failure['detail']})" if failure.get("detail") else ""
            text = f"ECS could not start the task in cluster {cluster!r}: {reason}{detail}"
            if reason.startswith("RESOURCE:") or "capacity is unavailable" in text.lower():
                raise CapacityError(text + "; retrying later", details={"reason": reason})
            raise PermanentProviderError(text, details={"reason": reason})
        raise TransientProviderError("ECS RunTask returned neither a task nor a failure")

    def _finalized(self, request: EcsRequest, region: str) -> dict[str, Any]:
        """The RegisterTaskDefinition kwargs with what depends on the resolved region."""
        definition = copy.deepcopy(request.task_definition or {})
        for container in definition.get("containerDefinitions", []):
            options = (container.get("logConfiguration") or {}).get("options")
            if isinstance(options, dict) and container["logConfiguration"].get("logDriver") == (
                "awslogs"
            ):
                options.setdefault("awslogs-region", region)
        return definition

    def _account_id(self) -> str:
        """The AWS account runs go to (rate limits are per account and region): from the role
        to assume when there is one, else asked once of STS (GetCallerIdentity needs no
        permission). "" when it cannot be told; the limit is then per region."""
        if self._account is None:
            role = str(self.pool.credentials.get("role_arn") or "") if self.pool.credentials else ""
            match = re.match(r"^arn:aws[a-z-]*:iam::(\d{12}):", role)
            if match:
                self._account = match.group(1)
            else:
                try:
                    identity = self._call(
                        self.aws.region(None),
                        "sts",
                        "get_caller_identity",
                        "sts:GetCallerIdentity",
                        {},
                    )
                    self._account = str(identity.get("Account") or "")
                except ProviderError as exc:
                    log.warning("cannot tell the AWS account (%s); rate limits per region", exc)
                    self._account = ""
        return self._account

    def _task_definition_arn(
        self, request: EcsRequest, region: str, until: float | None = None
    ) -> str:
        """The ARN of a task definition with the request's content: the one skylane registered
        before (the cache), else a new registration (first writer wins)."""
        definition = self._finalized(request, region)
        key = task_definition_key(definition, region)
        arn = self.cache.get(CACHE_TASK_DEFINITIONS, key)
        if arn:
            return arn
        response = self._retry(
            lambda: self._call(
                region,
                "ecs",
                "register_task_definition",
                "ecs:RegisterTaskDefinition",
                definition,
                resource=f"family {definition.get('family')!r}",
            ),
            until,
        )
        arn = response["taskDefinition"]["taskDefinitionArn"]
        stored = self.cache.put(CACHE_TASK_DEFINITIONS, key, arn)
        if stored != arn:
            # Another dispatcher registered the same content first: use theirs, drop ours.
            log.info("task definition %s lost the race to %s; deregistering it", arn, stored)
            try:
                self._call(
                    region,
                    "ecs",
                    "deregister_task_definition",
                    "ecs:DeregisterTaskDefinition",
                    {"taskDefinition": arn},
                )
            except ProviderError as exc:
                log.warning("could not deregister unused task definition %s: %s", arn, exc)
        else:
            log.info("registered ECS task definition %s", arn)
        return stored

    def _network_configuration(
        self, region: str, lookup: NetworkLookup, until: float | None = None
    ) -> dict[str, Any]:
        cache_key = f"{region}:{lookup.vpc_id or 'default'}"
        cached = self.cache.get(CACHE_SUBNETS, cache_key)
        subnets = json.loads(cached) if cached else None
        if not subnets:
            subnets = self._retry(lambda: self._lookup_subnets(region, lookup.vpc_id), until)
            self.cache.put(CACHE_SUBNETS, cache_key, json.dumps(subnets))
        return {
            "awsvpcConfiguration": {
                "subnets": subnets,
                "securityGroups": list(lookup.security_groups),
                "assignPublicIp": lookup.assign_public_ip,
            }
        }

    def _lookup_subnets(self, region: str, vpc_id: str | None) -> list[str]:
        if vpc_id is None:
            vpcs = self._call(
                region,
                "ec2",
                "describe_vpcs",
                "ec2:DescribeVpcs",
                {"Filters": [{"Name": "isDefault", "Values": ["true"]}]},
            ).get("Vpcs", [])
            if not vpcs:
                raise PermanentProviderError(
                    f"region {region} has no default VPC: set the vpc_id job variable or "
                    "network_configuration.subnets",
                    field="job_variables.vpc_id",
                )
            vpc_id = vpcs[0]["VpcId"]
        subnets = self._call(
            region,
            "ec2",
            "describe_subnets",
            "ec2:DescribeSubnets",
            {"Filters": [{"Name": "vpc-id", "Values": [vpc_id]}]},
            resource=f"VPC {vpc_id}",
        ).get("Subnets", [])
        if not subnets:
            raise PermanentProviderError(
                f"VPC {vpc_id} has no subnets in region {region} (or does not exist): fix "
                "vpc_id or set network_configuration.subnets",
                field="job_variables.vpc_id",
            )
        return sorted(s["SubnetId"] for s in subnets)

    # -- find ------------------------------------------------------------------------------

    def find(self, key: str) -> str | None:
        """The task started for `key` (running or recently stopped), else None."""
        started_by = started_by_for(key)
        record = self.cache.get(CACHE_RUNS, started_by)
        if record:
            where = json.loads(record)
            region, cluster = where["region"], where["cluster"]
        else:
            # Nothing recorded: submit never got as far as RunTask, unless the record was lost
            # (a memory cache and a restart). Look in the pool's default cluster.
            region = self.aws.region(None)
            cluster = _opt_str(self.pool.settings.get("cluster")) or self._template_cluster()
            try:
                ref = self._find_in(region, cluster, started_by)
            except PermanentProviderError as exc:
                if exc.details.get("aws_error_code") == "ClusterNotFoundException":
                    return None  # no such cluster: nothing was started there
                raise
            if ref:
                self._remember(ref, started_by)
            return ref
        ref = self._find_in(region, cluster, started_by)
        if ref:
            self._remember(ref, started_by)
        return ref

    def _template_cluster(self) -> str:
        variables = (self.pool.base_job_template or {}).get("variables") or {}
        default = ((variables.get("properties") or {}).get("cluster") or {}).get("default")
        return _opt_str(default) or "default"

    def _find_in(self, region: str, cluster: str, started_by: str) -> str | None:
        for desired in ("RUNNING", "STOPPED"):
            arns = self._list_tasks(region, cluster, started_by, desired)
            if arns:
                return make_ref(arns[0], cluster)
        return None

    def _list_tasks(self, region: str, cluster: str, started_by: str, desired: str) -> list[str]:
        arns: list[str] = []
        token: str | None = None
        filters: dict[str, Any] = {"startedBy": started_by, "desiredStatus": desired}
        while True:
            extra = {"nextToken": token} if token else {}
            try:
                response = self._call(
                    region,
                    "ecs",
                    "list_tasks",
                    "ecs:ListTasks",
                    {"cluster": cluster, **filters, **extra},
                    resource=f"cluster {cluster!r}",
                    cluster=cluster,
                )
            except PermanentProviderError as exc:
                # ECS documents startedBy as a filter to use alone: if it refuses the
                # combination, list by startedBy only (RUNNING tasks).
                if exc.details.get("aws_error_code") != "InvalidParameterException" or (
                    "desiredStatus" not in filters
                ):
                    raise
                if desired != "RUNNING":
                    return arns
                filters = {"startedBy": started_by}
                continue
            arns.extend(response.get("taskArns") or [])
            token = response.get("nextToken")
            if not token:
                return arns

    # -- statuses ----------------------------------------------------------------------------

    def statuses(self, refs: list[str]) -> dict[str, ProviderState]:
        """The state of each ref, with DescribeTasks in batches of 100 per region and cluster.
        A group whose call fails is left out of the answer (asked again later); when every
        group fails, the first error is raised."""
        result: dict[str, ProviderState] = {}
        groups: dict[tuple[str, str], list[tuple[str, TaskRef]]] = defaultdict(list)
        for ref in dict.fromkeys(refs):
            final = self._final.get(ref)
            if final is not None:
                result[ref] = final
                continue
            try:
                parsed = parse_ref(ref)
            except ValueError as exc:
                result[ref] = ProviderState(ProviderStatus.NOT_FOUND, message=str(exc))
                continue
            groups[(parsed.region, parsed.cluster)].append((ref, parsed))

        errors: list[ProviderError] = []
        asked = 0
        for (region, cluster), items in groups.items():
            for start in range(0, len(items), DESCRIBE_BATCH):
                batch = items[start : start + DESCRIBE_BATCH]
                asked += 1
                try:
                    tasks, failures = self._describe(region, cluster, [p for _, p in batch])
                except ProviderError as exc:
                    if exc.details.get("aws_error_code") == "ClusterNotFoundException":
                        for ref, _ in batch:
                            result[ref] = ProviderState(
                                ProviderStatus.NOT_FOUND,
                                message=f"ECS cluster {cluster!r} no longer exists",
                            )
                        continue
                    log.warning("cannot describe ECS tasks in %s/%s: %s", region, cluster, exc)
                    errors.append(exc)
                    continue
                for ref, parsed in batch:
                    task = tasks.get(parsed.task_id)
                    if task is not None:
                        result[ref] = self._task_state(ref, parsed, task)
                    else:
                        result[ref] = self._missing_state(ref, parsed, failures.get(parsed.task_id))
        if errors and len(errors) == asked and not result:
            raise errors[0]
        return result

    def _describe(
        self, region: str, cluster: str, parsed: list[TaskRef]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """({task id: task}, {task id: failure reason}) for tasks of one cluster."""
        response = self._call(
            region,
            "ecs",
            "describe_tasks",
            "ecs:DescribeTasks",
            {"cluster": cluster, "tasks": [p.task_arn for p in parsed], "include": ["TAGS"]},
            resource=f"cluster {cluster!r}",
            cluster=cluster,
        )
        tasks = {}
        for task in response.get("tasks") or []:
            task_id = str(task.get("taskArn", "")).rsplit("/", 1)[-1]
            tasks[task_id] = task
        failures = {}
        for failure in response.get("failures") or []:
            task_id = str(failure.get("arn", "")).rsplit("/", 1)[-1]
            failures[task_id] = str(failure.get("reason") or "")
        return tasks, failures

    def _missing_state(self, ref: str, parsed: TaskRef, reason: str | None) -> ProviderState:
        seen = self._seen.get(ref)
        if seen is not None and time.time() - seen < MISSING_GRACE_SECONDS:
            # DescribeTasks can lag RunTask for a moment.
            return ProviderState(ProviderStatus.PENDING, message="ECS does not describe it yet")
        why = f" ({reason})" if reason else ""
        return ProviderState(
            ProviderStatus.NOT_FOUND,
            message=f"ECS has no task {parsed.task_id} in cluster {parsed.cluster!r}{why}; "
            "stopped tasks are kept about an hour",
        )

    def _task_state(self, ref: str, parsed: TaskRef, task: dict[str, Any]) -> ProviderState:
        last = str(task.get("lastStatus") or "").upper()
        with self._lock:
            self._seen.setdefault(ref, time.time())
            if task.get("startedBy"):
                self._started_by.setdefault(ref, str(task["startedBy"]))
        if last in PENDING_STATUSES:
            stopped = self._enforce_start_timeout(ref, parsed, task, last)
            return stopped or ProviderState(ProviderStatus.PENDING)
        if last in RUNNING_STATUSES:
            return ProviderState(ProviderStatus.RUNNING)
        if last in STOPPED_STATUSES:
            state = self._stopped_state(parsed, task)
            self._final[ref] = state
            return state
        return ProviderState(ProviderStatus.PENDING, message=f"ECS task status {last or '?'}")

    def _enforce_start_timeout(
        self, ref: str, parsed: TaskRef, task: dict[str, Any], last: str
    ) -> ProviderState | None:
        tags = {t.get("key"): t.get("value") for t in task.get("tags") or []}
        try:
            timeout = int(tags.get(TAG_START_TIMEOUT) or 0)
        except ValueError:
            timeout = 0
        if timeout <= 0:
            return None
        created = task.get("createdAt")
        if isinstance(created, datetime):
            started = created.timestamp()
        else:  # moto does not return createdAt: when this process first knew the task
            started = self._seen.get(ref, time.time())
        if time.time() - started <= timeout:
            return None
        reason = f"did not start within {timeout} s"
        try:
            self._call(
                parsed.region,
                "ecs",
                "stop_task",
                "ecs:StopTask",
                {"cluster": parsed.cluster, "task": parsed.task_arn, "reason": reason},
                resource=f"task {parsed.task_id}",
                cluster=parsed.cluster,
            )
        except ProviderError as exc:
            log.warning("cannot stop ECS task %s that %s: %s", ref, reason, exc)
            return None
        state = ProviderState(
            ProviderStatus.STOPPED,
            message=f"the task {reason} (it was still {last}); skylane stopped it",
        )
        self._final[ref] = state
        return state

    def _main_container(self, task: dict[str, Any]) -> dict[str, Any] | None:
        containers = task.get("containers") or []
        overrides = (task.get("overrides") or {}).get("containerOverrides") or []
        name = overrides[0].get("name") if overrides else None
        for container in containers:
            if name and container.get("name") == name:
                return container
        return containers[0] if containers else None

    def _stopped_state(self, parsed: TaskRef, task: dict[str, Any]) -> ProviderState:
        container = self._main_container(task)
        exit_code = container.get("exitCode") if container else None
        parts = []
        if task.get("stopCode"):
            parts.append(f"stop code {task['stopCode']}")
        if task.get("stoppedReason"):
            parts.append(f"stopped reason: {task['stoppedReason']}")
        if container is not None:
            if exit_code is not None:
                parts.append(f"container {container.get('name')!r} exit code {exit_code}")
            if container.get("reason"):
                parts.append(f"container reason: {container['reason']}")
        message = "; ".join(parts) or "the task stopped"
        tail = self._log_tail(parsed, task)
        if tail:
            message += f"\nlast {len(tail)} log lines:\n" + "\n".join(tail)
        if exit_code == 0:
            status = ProviderStatus.SUCCEEDED
        elif exit_code is not None:
            status = ProviderStatus.FAILED
        else:
            status = ProviderStatus.STOPPED
        return ProviderState(status, exit_code=exit_code, message=message)

    # -- logs --------------------------------------------------------------------------------

    def _describe_task_definition(self, region: str, arn: str) -> dict[str, Any]:
        cached = self._task_definitions.get(arn)
        if cached is None:
            cached = self._call(
                region,
                "ecs",
                "describe_task_definition",
                "ecs:DescribeTaskDefinition",
                {"taskDefinition": arn},
                resource=arn,
            )["taskDefinition"]
            self._task_definitions[arn] = cached
        return cached

    def _log_location(self, parsed: TaskRef, task: dict[str, Any]) -> tuple[str, str, str] | None:
        """(log group, log stream, region) of the task's main container, or None when it does
        not log to CloudWatch (awslogs with a stream prefix)."""
        ref = make_ref(parsed.task_arn, parsed.cluster)
        if ref in self._log_locations:
            return self._log_locations[ref]
        location = None
        container = self._main_container(task)
        arn = task.get("taskDefinitionArn")
        if container is not None and arn:
            definition = self._describe_task_definition(parsed.region, arn)
            for spec in definition.get("containerDefinitions") or []:
                if spec.get("name") != container.get("name"):
                    continue
                logging_ = spec.get("logConfiguration") or {}
                options = logging_.get("options") or {}
                group = options.get("awslogs-group")
                prefix = options.get("awslogs-stream-prefix")
                if logging_.get("logDriver") == "awslogs" and group and prefix:
                    stream = f"{prefix}/{spec['name']}/{parsed.task_id}"
                    location = (group, stream, options.get("awslogs-region") or parsed.region)
        self._log_locations[ref] = location
        return location

    def _log_tail(self, parsed: TaskRef, task: dict[str, Any]) -> list[str]:
        """The last lines of the task's CloudWatch log, best effort ([] on any problem)."""
        try:
            location = self._log_location(parsed, task)
            if location is None:
                return []
            group, stream, region = location
            response = self._call(
                region,
                "logs",
                "get_log_events",
                "logs:GetLogEvents",
                {
                    "logGroupName": group,
                    "logStreamName": stream,
                    "startFromHead": False,
                    "limit": LOG_TAIL_LINES,
                },
                resource=f"log stream {stream}",
            )
        except (ProviderError, KeyError, TypeError) as exc:
            log.info("no log tail for ECS task %s: %s", parsed.task_id, exc)
            return []
        return [str(e.get("message", "")).rstrip("\n") for e in response.get("events") or []]

    def logs(self, ref: str, since: datetime | None = None) -> list[ProviderLogLine]:
        """The task's CloudWatch log (GetLogEvents, paged), oldest first; lines at or before
        `since` (naive: UTC) are left out. [] when the task does not log to CloudWatch or its
        stream does not exist yet. The awslogs driver merges stdout and stderr: every line is
        reported as "stdout"."""
        try:
            parsed = parse_ref(ref)
        except ValueError as exc:
            raise ProviderNotFound(str(exc)) from None
        if ref in self._log_locations:
            location = self._log_locations[ref]
        else:
            tasks, _ = self._describe(parsed.region, parsed.cluster, [parsed])
            task = tasks.get(parsed.task_id)
            if task is None:
                raise ProviderNotFound(
                    f"ECS no longer describes task {parsed.task_id} (stopped tasks are kept "
                    "about an hour), so its log stream cannot be located"
                )
            location = self._log_location(parsed, task)
        if location is None:
            return []
        group, stream, region = location
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        params: dict[str, Any] = {
            "logGroupName": group,
            "logStreamName": stream,
            "startFromHead": True,
        }
        if since is not None:
            params["startTime"] = int(since.timestamp() * 1000)
        if self.log_page_size:
            params["limit"] = self.log_page_size
        lines: list[ProviderLogLine] = []
        token = None
        for _ in range(MAX_LOG_PAGES):
            page = dict(params, nextToken=token) if token else params
            try:
                response = self._call(
                    region,
                    "logs",
                    "get_log_events",
                    "logs:GetLogEvents",
                    page,
                    resource=f"log stream {group}:{stream}",
                )
            except ProviderNotFound:
                return lines  # no stream (yet): the task never wrote a line
            events = response.get("events") or []
            for event in events:
                stamp = datetime.fromtimestamp(int(event.get("timestamp", 0)) / 1000, UTC)
                if since is not None and stamp <= since:
                    continue
                lines.append(
                    ProviderLogLine(
                        timestamp=stamp,
                        stream="stdout",
                        message=str(event.get("message", "")).rstrip("\n"),
                    )
                )
            next_token = response.get("nextForwardToken")
            if not events or not next_token or next_token == token:
                break
            token = next_token
        return lines

    # -- cancel, cleanup, teardown -----------------------------------------------------------

    def cancel(self, ref: str) -> None:
        """StopTask; a task already stopped is left alone; ProviderNotFound if ECS does not
        know it."""
        try:
            parsed = parse_ref(ref)
        except ValueError as exc:
            raise ProviderNotFound(str(exc)) from None
        try:
            tasks, _ = self._describe(parsed.region, parsed.cluster, [parsed])
        except ProviderError as exc:
            if exc.details.get("aws_error_code") == "ClusterNotFoundException":
                raise ProviderNotFound(f"ECS cluster {parsed.cluster!r} no longer exists") from None
            raise
        task = tasks.get(parsed.task_id)
        if task is None:
            raise ProviderNotFound(f"ECS has no task {parsed.task_id} in {parsed.cluster!r}")
        if str(task.get("lastStatus")).upper() in STOPPED_STATUSES or (
            str(task.get("desiredStatus")).upper() == "STOPPED"
        ):
            return
        try:
            self._call(
                parsed.region,
                "ecs",
                "stop_task",
                "ecs:StopTask",
                {
                    "cluster": parsed.cluster,
                    "task": parsed.task_arn,
                    "reason": "cancelled by skylane",
                },
                resource=f"task {parsed.task_id} in cluster {parsed.cluster!r}",
                cluster=parsed.cluster,
            )
        except PermanentProviderError as exc:
            if "not found" in exc.message.lower():
                raise ProviderNotFound(exc.message) from None
            raise

    def cleanup(self, ref: str) -> None:
        """Nothing to delete per task (ECS forgets stopped tasks by itself); forgets what this
        adapter remembered about the run (its `ecs-run` record included)."""
        with self._lock:
            started_by = self._started_by.pop(ref, None)
            self._seen.pop(ref, None)
            self._final.pop(ref, None)
            self._log_locations.pop(ref, None)
        if started_by:
            self.cache.delete(CACHE_RUNS, started_by)

    def teardown(self) -> None:
        """When the pool's `deregister_task_definitions` setting is true, deregister every task
        definition skylane registered for the pool (those in the ResourceCache) and only those.
        A definition that is already gone is fine; other errors are raised after trying all."""
        if not _as_bool(self.pool.settings.get("deregister_task_definitions")):
            return
        first_error: ProviderError | None = None
        for key, arn in self.cache.items(CACHE_TASK_DEFINITIONS).items():
            match = re.match(r"^arn:aws[a-z-]*:ecs:([a-z0-9-]+):", arn)
            region = match.group(1) if match else self.aws.region(None)
            try:
                self._retry(
                    lambda arn=arn, region=region: self._call(
                        region,
                        "ecs",
                        "deregister_task_definition",
                        "ecs:DeregisterTaskDefinition",
                        {"taskDefinition": arn},
                        resource=arn,
                    )
                )
            except ProviderError as exc:
                gone = isinstance(exc, ProviderNotFound) or (
                    exc.details.get("aws_error_code")
                    in ("ClientException", "InvalidParameterException")
                    and ("not" in exc.message.lower() or "inactive" in exc.message.lower())
                )
                if not gone:
                    log.warning("cannot deregister task definition %s: %s", arn, exc)
                    first_error = first_error or exc
                    continue
            self.cache.delete(CACHE_TASK_DEFINITIONS, key)
            log.info("deregistered ECS task definition %s", arn)
        if first_error is not None:
            raise first_error


def _inactive_task_definition(exc: ProviderError) -> bool:
    text = exc.message.lower()
    return exc.details.get("aws_error_code") in (
        "ClientException",
        "InvalidParameterException",
    ) and (
        "inactive" in text
        or ("task definition" in text and "not" in text and "found" in text)
        or "unable to describe task definition" in text
    )

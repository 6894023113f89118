"""The Cloud Run base job template and the pure checks that turn a rendered job configuration
into a Cloud Run Admin API v2 `CreateJob` request, before any Google Cloud call.

The template has the shape of Prefect's `cloud-run-v2` work pool type: a `job_body` that is a
Cloud Run v2 Job in the REST API's camelCase JSON (`launchStage`, `template.template` with
`serviceAccount`, `maxRetries`, `timeout`, `vpcAccess`, `containers`...), plus top-level keys
(`region`, `timeout`, `keep_job`, `env`, `env_from_secrets`, `labels`, `command`, `name`,
`cloudsql_instances`) and our `project`. So a template exported from Prefect for `cloud-run-v2`
renders here unchanged. A `job_body` in the Cloud Run v1 (Knative) shape that Prefect's older
`cloud-run` / `cloud-run:push` types use (`apiVersion`, `metadata`, `spec`) is translated to
v2 (see `_from_v1`).

Keys Prefect's worker uses that mean nothing here (`credentials`, `prefect_api_key_secret`,
`prefect_api_auth_string_secret`, `job_name_uuid_length`) are accepted and ignored: credentials
come from the pool, no Prefect API key is needed, and the job id is derived from the attempt's
idempotency key (`job_id_for`). Any other unknown top-level key is refused.

One Cloud Run job is created per attempt, with `startExecutionToken` so that creating it also
starts its single execution (Job.start_execution_token: "The sum of job name and token length
must be fewer than 63 characters"). Creating a job whose id exists fails with 409, which is
what makes a repeated submit with the same key start nothing new.

Rules enforced, with their sources (docs.cloud.google.com/run/docs/...):
- cpu (configuring/jobs/cpu): 0.08 to 1 vCPU in steps of 0.001 (80m..1000m), or a whole 1, 2,
  4, 6 or 8; memory (configuring/jobs/memory-limits): 128Mi to 32Gi, within the cpu's range:
  under 0.5 vCPU at most 512 MiB, under 1 vCPU at most 1 GiB, 1 vCPU 4 GiB, 2 vCPU 8 GiB,
  4 vCPU 2-16 GiB, 6 vCPU 4-24 GiB, 8 vCPU 4-32 GiB.
- timeout (configuring/task-timeout): 1 s to 168 h (604800 s), per task attempt. The page
  once marked timeouts over 24 h as Preview; it no longer does, so any launch stage may use
  them here. Cloud Run's own default is 600 s; this template's is 3600 s.
- max_retries (configuring/max-retries): 0 to 10. Unset means 3 on Cloud Run, so skylane always
  sends it: its default is 0, because a retried task would execute the same run again.
- launch_stage (Job.launch_stage): Cloud Run supports ALPHA, BETA and GA.
- labels (resource-manager/docs/labels-overview): at most 64; keys 1-63 characters of
  lowercase letters, digits, `_` and `-`, starting with a lowercase letter; values at most 63
  characters of the same set. International lowercase letters are allowed in both.
- env_from_secrets: Secret Manager references (`secretKeyRef {secret, version}`); the version
  must be pinned, i.e. a version number: `latest` and aliases would let a secret change under
  a deployment without anyone deploying.
- One container runs the run, one task per execution (`taskCount` 1), at most one direct VPC
  network interface, and not both a connector and direct VPC egress.

Nothing here does I/O or imports a Google Cloud SDK.
"""

from __future__ import annotations

import copy
import hashlib
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
    text,
    whole_number,
)
from skylane.errors import InvalidInput
from skylane.security import MASK, is_secret_name

__all__ = [
    "CloudRunJobRequest",
    "IGNORED_KEYS",
    "LABEL_KEEP_JOB",
    "build_job_request",
    "check_labels",
    "check_project",
    "check_region",
    "check_secret_ref",
    "check_size",
    "default_template",
    "describe_request",
    "execution_token_for",
    "job_id_for",
    "label_value",
    "parse_cpu",
    "parse_memory",
]

PROVIDER = "cloud-run"
# A job whose run asked to keep it (`keep_job`) carries this label, so cleanup knows from the
# job alone.
LABEL_KEEP_JOB = "skylane-keep-job"
TOKEN_VARIABLE = "SKYLANE_RUN_TOKEN"
DEFAULT_COMMAND = ["python", "-m", "skylane.runtime"]
DEFAULT_CPU = "1"
DEFAULT_MEMORY = "2Gi"
DEFAULT_TIMEOUT_SECONDS = 3600
# What Cloud Run uses when a template sends no timeout and no cpu or memory limits.
CLOUD_RUN_DEFAULT_TIMEOUT_SECONDS = 600
CLOUD_RUN_DEFAULT_CPU = "1"
CLOUD_RUN_DEFAULT_MEMORY = "512Mi"
MAX_TIMEOUT_SECONDS = 168 * 3600
MAX_RETRIES = 10
DEFAULT_MAX_RETRIES = 0
LAUNCH_STAGES = ("GA", "BETA", "ALPHA")
DEFAULT_LAUNCH_STAGE = "GA"
VPC_EGRESS = ("ALL_TRAFFIC", "PRIVATE_RANGES_ONLY")
EXECUTION_ENVIRONMENTS = ("EXECUTION_ENVIRONMENT_GEN1", "EXECUTION_ENVIRONMENT_GEN2")
MAX_LABELS = 64
MAX_LABEL_CHARS = 63
CLOUDSQL_VOLUME = "cloudsql"
CLOUDSQL_MOUNT_PATH = "/cloudsql"

# Job ids: lowercase letters, digits and hyphens, starting with a letter and not ending with a
# hyphen. The execution token is appended to the job id to name the execution, and "the sum
# of job name and token length must be fewer than 63 characters": 54 + 8 = 62.
EXECUTION_TOKEN_LENGTH = 8
MAX_JOB_ID_LENGTH = 62 - EXECUTION_TOKEN_LENGTH
JOB_ID = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")
_HASHED_JOB_ID_PREFIX = "skl-"
_HASHED_JOB_ID_HEX = 40

REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
PROJECT_ID = re.compile(
    r"^(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[0-9]{1,20}$"
)
SERVICE_ACCOUNT = re.compile(r"^[a-z0-9][a-z0-9._+-]*@[a-z0-9][a-z0-9.-]*\.gserviceaccount\.com$")
CONNECTOR_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,23}[a-z0-9])?$")
CONNECTOR_PATH = re.compile(
    r"^projects/[^/\s]+/locations/[a-z0-9-]+/connectors/[a-z](?:[-a-z0-9]{0,23}[a-z0-9])?$"
)
NETWORK_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
NETWORK_PATH = re.compile(r"^projects/[^/\s]+/global/networks/[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
SUBNETWORK_PATH = re.compile(
    r"^projects/[^/\s]+/regions/[a-z0-9-]+/subnetworks/[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$"
)
SECRET = re.compile(r"^(?:projects/[^/\s]+/secrets/)?[A-Za-z0-9_-]{1,255}$")
CLOUDSQL_INSTANCE = re.compile(r"^[a-z0-9.:-]+:[a-z0-9-]+:[a-z0-9-]+$")
_MEMORY = re.compile(r"^([0-9]+)(Mi|Gi|M|G)$")
_CPU_DECIMAL = re.compile(r"^[0-9]+(?:\.[0-9]+)?$")
_CPU_MILLI = re.compile(r"^([0-9]+)m$")
# Annotation namespaces Cloud Run v2 refuses on new resources (Job.annotations).
_RESERVED_NAMESPACES = (
    "run.googleapis.com",
    "cloud.googleapis.com",
    "serving.knative.dev",
    "autoscaling.knative.dev",
)

# Prefect worker keys with no meaning here (see the module docstring).
IGNORED_KEYS = frozenset(
    {
        "credentials",
        "prefect_api_key_secret",
        "prefect_api_auth_string_secret",
        "job_name_uuid_length",
    }
)
# Top-level job_configuration keys that are read. `name` is accepted for Prefect templates and
# not used: the job id comes from the attempt key.
KNOWN_KEYS = frozenset(
    {
        "job_body",
        "project",
        "region",
        "timeout",
        "keep_job",
        "env",
        "env_from_secrets",
        "labels",
        "command",
        "name",
        "cloudsql_instances",
    }
)

# Input fields of the v2 resources (google/cloud/run_v2/types: job.py Job, execution_template.py
# ExecutionTemplate, task_template.py TaskTemplate, k8s_min.py Container), in REST JSON names.
# Output-only fields are refused. `name` and the execution tokens are replaced by skylane.
_JOB_KEYS = (
    "client",
    "clientVersion",
    "launchStage",
    "labels",
    "annotations",
    "binaryAuthorization",
    "template",
)
_JOB_REPLACED_KEYS = ("name", "startExecutionToken", "runExecutionToken")
_EXECUTION_KEYS = ("labels", "annotations", "parallelism", "taskCount", "template")
_TASK_KEYS = (
    "containers",
    "volumes",
    "maxRetries",
    "timeout",
    "serviceAccount",
    "executionEnvironment",
    "encryptionKey",
    "vpcAccess",
    "nodeSelector",
    "gpuZonalRedundancyDisabled",
)
_CONTAINER_KEYS = (
    "name",
    "image",
    "command",
    "args",
    "env",
    "resources",
    "ports",
    "volumeMounts",
    "workingDir",
    "livenessProbe",
    "startupProbe",
    "readinessProbe",
    "dependsOn",
    "sourceCode",
    "baseImageUri",
)
_CONTAINER_HANDLED = ("name", "image", "command", "args", "env", "resources")
_RESOURCE_KEYS = ("limits", "cpuIdle", "startupCpuBoost")
_LIMIT_KEYS = ("cpu", "memory", "nvidia.com/gpu")
_VPC_KEYS = ("connector", "egress", "networkInterfaces")
_INTERFACE_KEYS = ("network", "subnetwork", "tags")

_BODY = "job_configuration.job_body"
_EXECUTION = f"{_BODY}.template"
_TASK = f"{_EXECUTION}.template"


# --- ids -------------------------------------------------------------------------------------


def job_id_for(idempotency_key: str) -> str:
    """The Cloud Run job id of the attempt `idempotency_key`: the same key always gives the same
    id and different keys give different ids.

    The id has at most `MAX_JOB_ID_LENGTH` (54) characters of `[a-z0-9-]`, starts with a letter
    and does not end with a hyphen, so that it and the `execution_token_for` the same key stay
    under Cloud Run's 63 characters together. A key that already is such an id (skylane's keys,
    `skl-<32 hex>-<n>`, are) is used as it is, so the job names its run; any other key becomes
    `skl-` + the first 40 hex digits of its SHA-256.
    """
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise ValueError("an idempotency key is required")
    if len(idempotency_key) <= MAX_JOB_ID_LENGTH and JOB_ID.match(idempotency_key):
        return idempotency_key
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
    return _HASHED_JOB_ID_PREFIX + digest[:_HASHED_JOB_ID_HEX]


def execution_token_for(idempotency_key: str) -> str:
    """The `startExecutionToken` of the attempt: 8 lowercase hex digits derived from the key."""
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise ValueError("an idempotency key is required")
    digest = hashlib.sha256(b"execution:" + idempotency_key.encode("utf-8")).hexdigest()
    return digest[:EXECUTION_TOKEN_LENGTH]


# --- request ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=True)
class CloudRunJobRequest:
    """What the adapter sends for one attempt: `CreateJob(parent, job_id, job)`.

    - `job`: the Cloud Run v2 Job in REST JSON (camelCase), with `startExecutionToken`, so the
      job's single execution starts when it is created. Holds the run token in its container
      env: `repr`, `str` and `redacted()` mask it.
    - `project`: None means the project of the pool's credentials, resolved by the adapter
      (`with_project`).
    - `timeout_seconds`: the task timeout sent to Cloud Run.
    - `keep_job`: keep the job after its execution ends (else the adapter deletes it).
    """

    project: str | None
    region: str
    job_id: str
    execution_token: str
    job: dict[str, Any] = field(repr=False)
    keep_job: bool = False
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS

    __hash__ = None  # type: ignore[assignment]  # holds dicts

    @property
    def parent(self) -> str:
        """`projects/{project}/locations/{region}`; ValueError while the project is unknown."""
        if not self.project:
            raise ValueError("the project is not known yet: call with_project first")
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def job_name(self) -> str:
        """The job's full resource name, `projects/{p}/locations/{r}/jobs/{job_id}`."""
        return f"{self.parent}/jobs/{self.job_id}"

    def with_project(self, project: str) -> CloudRunJobRequest:
        """This request in `project` (checked), with a short VPC connector name expanded to
        `projects/{project}/locations/{region}/connectors/{name}`."""
        check_project(project)
        job = copy.deepcopy(self.job)
        vpc = job.get("template", {}).get("template", {}).get("vpcAccess")
        if isinstance(vpc, dict) and CONNECTOR_NAME.match(str(vpc.get("connector", ""))):
            vpc["connector"] = _connector_path(project, self.region, vpc["connector"])
        return CloudRunJobRequest(
            project=project,
            region=self.region,
            job_id=self.job_id,
            execution_token=self.execution_token,
            job=job,
            keep_job=self.keep_job,
            timeout_seconds=self.timeout_seconds,
        )

    def container(self) -> dict[str, Any]:
        """The container the run executes in (the first one)."""
        return self.job["template"]["template"]["containers"][0]

    def secret_values(self) -> list[str]:
        """Values that must never appear in a message: the run token and every other plain
        value of a secret-looking variable."""
        values = []
        for container in self.job.get("template", {}).get("template", {}).get("containers", []):
            for item in container.get("env", []):
                name = str(item.get("name", ""))
                if "value" in item and item["value"] and is_secret_name(name):
                    values.append(str(item["value"]))
        return values

    def redacted(self) -> dict[str, Any]:
        """The request as plain JSON with secret-looking env values (the run token) masked."""
        secrets = set(self.secret_values())
        job = copy.deepcopy(self.job)
        for container in job.get("template", {}).get("template", {}).get("containers", []):
            if "env" in container:
                container["env"] = [_masked(item, secrets) for item in container["env"]]
        project = self.project or "<project of the pool's credentials>"
        return {
            "provider": PROVIDER,
            "project": self.project,
            "region": self.region,
            "create_job": {
                "parent": f"projects/{project}/locations/{self.region}",
                "job_id": self.job_id,
                "job": job,
            },
            "execution_token": self.execution_token,
            "keep_job": self.keep_job,
            "timeout_seconds": self.timeout_seconds,
        }

    def __repr__(self) -> str:
        return f"CloudRunJobRequest({json.dumps(self.redacted(), sort_keys=True)})"

    __str__ = __repr__


def describe_request(request: CloudRunJobRequest) -> dict[str, Any]:
    """The request for people (`skylane deployment render`): plain JSON, secrets masked."""
    return request.redacted()


def _masked(item: dict[str, Any], secrets: set[str]) -> dict[str, Any]:
    if "value" in item and (is_secret_name(str(item.get("name", ""))) or item["value"] in secrets):
        return {**item, "value": MASK}
    return item


# --- template --------------------------------------------------------------------------------


def default_template() -> dict[str, Any]:
    """The `cloud-run:push` / `cloud-run` base job template (Prefect's cloud-run-v2 shape)."""
    return {
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "env_from_secrets": "{{ env_from_secrets }}",
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "project": "{{ project }}",
            "region": "{{ region }}",
            "timeout": "{{ timeout }}",
            "keep_job": "{{ keep_job }}",
            "cloudsql_instances": "{{ cloudsql_instances }}",
            "job_body": {
                "client": "skylane",
                "launchStage": "{{ launch_stage }}",
                "template": {
                    "template": {
                        "serviceAccount": "{{ service_account_name }}",
                        "maxRetries": "{{ max_retries }}",
                        "timeout": "{{ timeout }}",
                        "vpcAccess": {
                            "connector": "{{ vpc_connector_name }}",
                            "egress": "{{ vpc_egress }}",
                            "networkInterfaces": [
                                {
                                    "network": "{{ vpc_network }}",
                                    "subnetwork": "{{ vpc_subnetwork }}",
                                    "tags": "{{ vpc_network_tags }}",
                                }
                            ],
                        },
                        "containers": [
                            {
                                "image": "{{ image }}",
                                "command": "{{ command }}",
                                "args": "{{ args }}",
                                "resources": {
                                    "limits": {"cpu": "{{ cpu }}", "memory": "{{ memory }}"}
                                },
                            }
                        ],
                    }
                },
            },
        },
        "variables": {
            "type": "object",
            "description": "Variables of a Cloud Run job template.",
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
                "The container image the run executes in, e.g. "
                "europe-west1-docker.pkg.dev/PROJECT/flows/etl:1.0. Defaults to the "
                "deployment's image (pinned by digest once pushed)."
            ),
            "type": "string",
        },
        "project": {
            "title": "Project",
            "description": (
                "Google Cloud project the job runs in (its id, e.g. my-project). Unset: the "
                "pool's `project` setting, else the project of the pool's credentials."
            ),
            "type": "string",
        },
        "region": {
            "title": "Region",
            "description": (
                "Cloud Run region of the job, e.g. europe-west1. Unset: the pool's `region` "
                "setting."
            ),
            "type": "string",
        },
        "cpu": {
            "title": "CPU",
            "description": (
                "vCPUs of the job's task: 1, 2, 4, 6 or 8, or a fraction of one from 0.08 "
                "(also written in millicpu, e.g. 500m). 4 vCPUs need at least 2Gi of memory, "
                "6 and 8 at least 4Gi."
            ),
            "type": ["string", "number"],
            "default": DEFAULT_CPU,
        },
        "memory": {
            "title": "Memory",
            "description": (
                "Memory of the job's task, with a unit: Mi or Gi (or M, G), e.g. 512Mi or "
                "2Gi; 128Mi to 32Gi. At most 4Gi with 1 vCPU, 8Gi with 2, 16Gi with 4, 24Gi "
                "with 6 and 32Gi with 8."
            ),
            "type": "string",
            "default": DEFAULT_MEMORY,
        },
        "timeout": {
            "title": "Task Timeout",
            "description": (
                "Seconds the task may run before Cloud Run stops it and the run crashes, from "
                f"1 to {MAX_TIMEOUT_SECONDS} (168 hours). Applies to each attempt."
            ),
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_TIMEOUT_SECONDS,
            "default": DEFAULT_TIMEOUT_SECONDS,
        },
        "max_retries": {
            "title": "Max Retries",
            "description": (
                "Times Cloud Run restarts a failed task (0 to 10). A restart executes the "
                "same run again; 0 leaves retries to skylane."
            ),
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_RETRIES,
            "default": DEFAULT_MAX_RETRIES,
        },
        "service_account_name": {
            "title": "Service Account",
            "description": (
                "Email of the service account the run's code runs as, e.g. "
                "flows@my-project.iam.gserviceaccount.com. Unset: the project's default "
                "compute service account. The pool's credentials need "
                "iam.serviceAccounts.actAs on it."
            ),
            "type": "string",
        },
        "vpc_connector_name": {
            "title": "VPC Connector",
            "description": (
                "Serverless VPC Access connector for the job's outbound traffic: a name in the "
                "job's project and region, or projects/P/locations/R/connectors/NAME. Not "
                "together with vpc_network or vpc_subnetwork."
            ),
            "type": "string",
        },
        "vpc_egress": {
            "title": "VPC Egress",
            "description": (
                "Which outbound traffic goes through the VPC connector or network: "
                "PRIVATE_RANGES_ONLY (Cloud Run's default) or ALL_TRAFFIC."
            ),
            "type": "string",
            "enum": list(VPC_EGRESS),
        },
        "vpc_network": {
            "title": "VPC Network",
            "description": (
                "Direct VPC egress: the VPC network the job sends traffic to (a name or "
                "projects/P/global/networks/NAME). Unset with vpc_subnetwork set: the "
                "subnetwork's network."
            ),
            "type": "string",
        },
        "vpc_subnetwork": {
            "title": "VPC Subnetwork",
            "description": (
                "Direct VPC egress: the subnetwork the job gets its IP from (a name or "
                "projects/P/regions/R/subnetworks/NAME). Unset with vpc_network set: the "
                "subnetwork named like the network."
            ),
            "type": "string",
        },
        "vpc_network_tags": {
            "title": "VPC Network Tags",
            "description": "Direct VPC egress: network tags for firewall rules.",
            "type": "array",
            "items": {"type": "string"},
        },
        "env": {
            "title": "Environment Variables",
            "description": "Environment variables of the run's container.",
            "type": "object",
            "additionalProperties": {"type": ["string", "null"]},
            "default": {},
        },
        "env_from_secrets": {
            "title": "Environment Variables from Secrets",
            "description": (
                "Environment variables read from Secret Manager when the task starts: name -> "
                '{"secret": NAME or projects/P/secrets/NAME, "version": a version number}. '
                "The version must be pinned (not 'latest'); the job's service account needs "
                "roles/secretmanager.secretAccessor on the secret. The value never passes "
                "through skylane."
            ),
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "secret": {"type": "string"},
                    "version": {"type": ["string", "integer"]},
                },
                "required": ["secret", "version"],
                "additionalProperties": False,
            },
            "default": {},
        },
        "labels": {
            "title": "Labels",
            "description": (
                "Labels of the job and its executions (besides skylane's own). Keys: up to 63 "
                "lowercase letters, digits, _ and -, starting with a letter; values: up to 63 "
                "of the same."
            ),
            **string_map,
        },
        "launch_stage": {
            "title": "Launch Stage",
            "description": (
                "The job's launch stage: GA, or BETA or ALPHA to use Cloud Run features in preview."
            ),
            "type": "string",
            "enum": list(LAUNCH_STAGES),
            "default": DEFAULT_LAUNCH_STAGE,
        },
        "keep_job": {
            "title": "Keep Job",
            "description": (
                "Keep the Cloud Run job (one per run attempt) after its execution ends. By "
                "default it is deleted once the run is over."
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
        "args": {
            "title": "Args",
            "description": "Arguments passed to the command.",
            "type": ["string", "array"],
            "items": {"type": "string"},
        },
        "cloudsql_instances": {
            "title": "Cloud SQL Instances",
            "description": (
                "Cloud SQL instances to connect to, as PROJECT:REGION:INSTANCE; their sockets "
                "are mounted under /cloudsql."
            ),
            "type": "array",
            "items": {"type": "string"},
            "default": [],
        },
        "name": {
            "title": "Name",
            "description": (
                "Accepted for compatibility with Prefect templates; not used (the job id "
                "comes from the run attempt)."
            ),
            "type": "string",
        },
    }


# --- field checks ----------------------------------------------------------------------------


def parse_cpu(value: Any, *, field: str = "job_variables.cpu") -> str:
    """The Cloud Run cpu limit for `value` (2, "2", "0.5", "500m", "1000m"): whole vCPUs as
    "N", fractions in millicpu ("500m"). InvalidInput naming `field` unless Cloud Run jobs
    accept it."""
    millicpu = _millicpu(value, field)
    if millicpu < 80 or millicpu > 8000:
        raise InvalidInput(
            f"cpu must be from 0.08 (80m) to 8 vCPUs, not {short_repr(value)}", field=field
        )
    if millicpu > 1000 and (millicpu % 1000 or millicpu // 1000 not in (2, 4, 6, 8)):
        raise InvalidInput(
            f"above 1 vCPU, Cloud Run jobs take 2, 4, 6 or 8 vCPUs, not {short_repr(value)}",
            field=field,
        )
    if millicpu % 1000 == 0:
        return str(millicpu // 1000)
    return f"{millicpu}m"


def _millicpu(value: Any, field: str) -> int:
    problem = InvalidInput(
        f"cpu must be a number of vCPUs (1, 2, 4, 6, 8 or a fraction such as 0.5) or of "
        f"millicpu such as 500m, not {short_repr(value)}",
        field=field,
    )
    if isinstance(value, bool):
        raise problem
    if isinstance(value, int | float):
        text = repr(float(value)) if isinstance(value, float) else str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise problem
    milli = _CPU_MILLI.match(text)
    if milli:
        return int(milli.group(1))
    if not _CPU_DECIMAL.match(text):
        raise problem
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    if len(fraction) > 3:
        raise InvalidInput(
            f"cpu is set in steps of 0.001 vCPU, not {short_repr(value)}", field=field
        )
    return int(whole) * 1000 + int((fraction or "0").ljust(3, "0"))


def parse_memory(value: Any, *, field: str = "job_variables.memory") -> int:
    """Bytes of a Cloud Run memory limit such as "512Mi", "2Gi", "512M" or "2G"; InvalidInput
    naming `field` unless it is one from 128Mi to 32Gi."""
    text = value.strip() if isinstance(value, str) else None
    match = _MEMORY.match(text) if text is not None else None
    if match is None:
        raise InvalidInput(
            f"memory must be a size with a unit, such as 512Mi or 2Gi (Mi, Gi, M or G), "
            f"not {short_repr(value)}",
            field=field,
        )
    factor = {"Mi": 2**20, "Gi": 2**30, "M": 10**6, "G": 10**9}[match.group(2)]
    size = int(match.group(1)) * factor
    if not 128 * 2**20 <= size <= 32 * 2**30:
        raise InvalidInput(
            f"memory must be from 128Mi to 32Gi, not {short_repr(value)}", field=field
        )
    return size


def check_size(cpu: str, memory_bytes: int, *, field: str = "job_variables.memory") -> None:
    """InvalidInput naming `field` unless Cloud Run jobs run a task of `cpu` (as returned by
    `parse_cpu`) with `memory_bytes` of memory."""
    millicpu = int(cpu[:-1]) if cpu.endswith("m") else int(cpu) * 1000
    gib = 2**30
    if millicpu < 500:
        low, high, text = 0, gib // 2, "at most 512Mi with less than 0.5 vCPU"
    elif millicpu < 1000:
        low, high, text = 0, gib, "at most 1Gi with less than 1 vCPU"
    else:
        low, high = {1: (0, 4), 2: (0, 8), 4: (2, 16), 6: (4, 24), 8: (4, 32)}[millicpu // 1000]
        low, high = low * gib, high * gib
        text = (
            f"from {low // gib}Gi to {high // gib}Gi with {cpu} vCPU"
            if low
            else f"at most {high // gib}Gi with {cpu} vCPU"
        )
    if not low <= memory_bytes <= high:
        raise InvalidInput(f"Cloud Run jobs take memory {text}", field=field)


def check_project(value: Any, *, field: str = "job_variables.project") -> str:
    if not isinstance(value, str) or not PROJECT_ID.match(value):
        raise InvalidInput(
            "project must be a Google Cloud project id (6 to 30 lowercase letters, digits "
            f"and hyphens, starting with a letter) or number, not {short_repr(value)}",
            field=field,
        )
    return value


def check_region(value: Any, *, field: str = "job_variables.region") -> str:
    if not isinstance(value, str) or not REGION.match(value):
        raise InvalidInput(
            f"region must be a Cloud Run region such as us-central1, not {short_repr(value)}",
            field=field,
        )
    return value


def check_labels(labels: Mapping[str, Any], *, field: str = "job_variables.labels") -> None:
    """InvalidInput naming `field` unless every key and value follows Google Cloud's label
    rules (see the module docstring)."""
    for key, value in labels.items():
        if not _label_text(key, key=True):
            raise InvalidInput(
                f"label key {short_repr(key)} is not a Google Cloud label key: use 1 to 63 "
                "lowercase letters, digits, _ and -, starting with a lowercase letter",
                field=field,
            )
        if not isinstance(value, str) or not _label_text(value, key=False):
            raise InvalidInput(
                f"label {key!r}: the value {short_repr(value)} is not a Google Cloud label value: "
                "use at most 63 lowercase letters, digits, _ and -",
                field=field,
            )
    if len(labels) > MAX_LABELS:
        raise InvalidInput(
            f"a Cloud Run job takes at most {MAX_LABELS} labels; {len(labels)} were given "
            "(skylane adds its own): remove some",
            field=field,
        )


def label_value(text: str) -> str:
    """`text` made a valid label value: lowercased, other characters replaced by `_`, cut to
    63 characters. For skylane's own labels (deployment names contain `/`)."""
    cleaned = "".join(c if _label_char(c) else "_" for c in str(text).lower())
    return cleaned[:MAX_LABEL_CHARS]


def _label_char(char: str) -> bool:
    return char in "_-" or char.isdigit() or (char.isalpha() and char == char.lower())


def _label_text(text: Any, *, key: bool) -> bool:
    if not isinstance(text, str) or len(text) > MAX_LABEL_CHARS:
        return False
    if key and (not text or not (text[0].isalpha() and text[0] == text[0].lower())):
        return False
    return all(_label_char(c) for c in text)


def check_secret_ref(name: str, ref: Any, *, field: str) -> dict[str, str]:
    """A `secretKeyRef` `{"secret", "version"}` with a pinned version, from `ref`."""
    if not isinstance(ref, dict):
        raise InvalidInput(
            f"secret variable {name!r} must be an object with a secret and a version", field=field
        )
    unknown = sorted(set(ref) - {"secret", "version"})
    if unknown:
        raise InvalidInput(
            f"secret variable {name!r} has unknown keys {unknown}; give secret and version",
            field=f"{field}.{unknown[0]}",
        )
    secret = ref.get("secret")
    if not isinstance(secret, str) or not SECRET.match(secret):
        raise InvalidInput(
            f"secret variable {name!r}: secret must be a Secret Manager secret name or "
            "projects/PROJECT/secrets/NAME",
            field=f"{field}.secret",
        )
    version = ref.get("version")
    if isinstance(version, str) and version.strip().lower() == "latest":
        raise InvalidInput(
            f"{field}.version: 'latest' is not allowed; pin a version number (e.g. \"3\") so "
            "that the secret cannot change under the deployment",
            field=f"{field}.version",
        )
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version.strip().isdigit() or int(version) < 1:
        raise InvalidInput(
            f'{field}.version must be a pinned Secret Manager version number such as "3", '
            f"not {short_repr(version)}",
            field=f"{field}.version",
        )
    return {"secret": secret, "version": str(int(version))}


# --- build -----------------------------------------------------------------------------------


def build_job_request(
    config: dict[str, Any],
    *,
    run_env: Mapping[str, str],
    job_id: str,
    execution_token: str,
    labels: Mapping[str, str] | None = None,
    project: str | None = None,
    region: str | None = None,
    image: str | None = None,
) -> CloudRunJobRequest:
    """The CreateJob request for one attempt, from a rendered job configuration. Pure.

    - `run_env`: the variables the runtime needs (`RunContext.runtime_env()`); they are added
      to the run's container and win over the template's.
    - `job_id` / `execution_token`: from `job_id_for` / `execution_token_for` of the key.
    - `labels`: skylane's own labels (run id, deployment, pool...), made valid with
      `label_value` and winning over the template's.
    - `project`, `region`, `image`: used when the configuration has none (pool settings, the
      deployment's image).

    Raises:
        InvalidInput: `field` names the job variable (`job_variables.cpu`) or, for the shape of
            the template itself, the path in the configuration
            (`job_configuration.job_body.template.template.containers`).
    """
    if not isinstance(config, dict):
        raise InvalidInput("the job configuration must be an object", field="job_configuration")
    if not isinstance(job_id, str) or len(job_id) > MAX_JOB_ID_LENGTH or not JOB_ID.match(job_id):
        raise ValueError(f"not a Cloud Run job id: {job_id!r} (use job_id_for)")
    if not isinstance(execution_token, str) or not re.fullmatch(
        r"[a-z0-9-]{1,16}", execution_token
    ):
        raise ValueError("not an execution token (use execution_token_for)")
    config = drop_absent(config)
    unknown = sorted(set(config) - KNOWN_KEYS - IGNORED_KEYS)
    if unknown:
        raise InvalidInput(
            f"unknown key {unknown[0]!r} in the job configuration; known keys: "
            f"{', '.join(sorted(KNOWN_KEYS))} (Prefect's {', '.join(sorted(IGNORED_KEYS))} are "
            "accepted and ignored)",
            field=f"job_configuration.{unknown[0]}",
        )

    body = as_object(config.get("job_body"), _BODY)
    if _is_v1(body):
        body = _from_v1(body)
    _check_keys(body, _JOB_KEYS + _JOB_REPLACED_KEYS, _BODY)
    execution = as_object(body.get("template"), _EXECUTION)
    _check_keys(execution, _EXECUTION_KEYS, _EXECUTION)
    task = as_object(execution.get("template"), _TASK)
    _check_keys(task, _TASK_KEYS, _TASK)

    the_project = optional_text(config.get("project")) or optional_text(project)
    if the_project is not None:
        check_project(the_project)
    the_region = optional_text(config.get("region")) or optional_text(region)
    if the_region is None:
        raise InvalidInput(
            "a region is required: set the region job variable or the pool's region setting",
            field="job_variables.region",
        )
    check_region(the_region)

    job: dict[str, Any] = {}
    for key in ("client", "clientVersion"):
        if optional_text(body.get(key)):
            job[key] = str(body[key])
    stage = optional_text(body.get("launchStage"))
    if stage is not None:
        if stage.upper() not in LAUNCH_STAGES:
            raise InvalidInput(
                f"launch_stage must be one of {', '.join(LAUNCH_STAGES)}, not {short_repr(stage)}",
                field="job_variables.launch_stage",
            )
        job["launchStage"] = stage.upper()

    keep_job = as_bool(config.get("keep_job", False), "job_variables.keep_job")
    system_labels = {**(labels or {}), **({LABEL_KEEP_JOB: "true"} if keep_job else {})}
    all_labels = _merge_labels(body, execution, config, system_labels)
    if all_labels:
        job["labels"] = dict(all_labels)
    annotations = _annotations(body.get("annotations"), f"{_BODY}.annotations")
    if annotations:
        job["annotations"] = annotations
    if body.get("binaryAuthorization") is not None:
        job["binaryAuthorization"] = as_object(
            body["binaryAuthorization"], f"{_BODY}.binaryAuthorization"
        )

    template: dict[str, Any] = {}
    if all_labels:
        template["labels"] = dict(all_labels)
    annotations = _annotations(execution.get("annotations"), f"{_EXECUTION}.annotations")
    if annotations:
        template["annotations"] = annotations
    task_count = execution.get("taskCount", 1)
    if whole_number(task_count, f"{_EXECUTION}.taskCount") != 1:
        raise InvalidInput(
            "a run executes as one task: taskCount must be 1", field=f"{_EXECUTION}.taskCount"
        )
    template["taskCount"] = 1
    if execution.get("parallelism") is not None:
        template["parallelism"] = whole_number(
            execution["parallelism"], f"{_EXECUTION}.parallelism"
        )
    timeout = _timeout(config, task)
    template["template"] = _task_template(
        config,
        task,
        run_env=run_env,
        image=image,
        project=the_project,
        region=the_region,
        timeout=timeout,
    )
    job["template"] = template
    job["startExecutionToken"] = execution_token

    return CloudRunJobRequest(
        project=the_project,
        region=the_region,
        job_id=job_id,
        execution_token=execution_token,
        job=job,
        keep_job=keep_job,
        timeout_seconds=timeout,
    )


def _task_template(
    config: dict[str, Any],
    task: dict[str, Any],
    *,
    run_env: Mapping[str, str],
    image: str | None,
    project: str | None,
    region: str,
    timeout: int,
) -> dict[str, Any]:
    containers = task.get("containers", [])
    where = f"{_TASK}.containers"
    if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
        raise InvalidInput("containers must be a list of objects", field=where)
    containers = [copy.deepcopy(c) for c in containers if c] or [{}]
    for index, other in enumerate(containers):
        _check_keys(other, _CONTAINER_KEYS, f"{where}[{index}]")
    main = _container(config, containers[0], run_env=run_env, image=image)

    result: dict[str, Any] = {"containers": [main, *containers[1:]]}
    volumes = task.get("volumes", [])
    if not isinstance(volumes, list) or not all(
        isinstance(v, dict) and optional_text(v.get("name")) for v in volumes
    ):
        raise InvalidInput(
            "volumes must be a list of objects with a name", field=f"{_TASK}.volumes"
        )
    volumes = copy.deepcopy(volumes)
    instances = _cloudsql_instances(config.get("cloudsql_instances"))
    if instances:
        if any(v["name"] == CLOUDSQL_VOLUME for v in volumes):
            raise InvalidInput(
                f"cloudsql_instances adds a volume named {CLOUDSQL_VOLUME!r}; the template "
                "already has one",
                field="job_variables.cloudsql_instances",
            )
        volumes.append({"name": CLOUDSQL_VOLUME, "cloudSqlInstance": {"instances": instances}})
        main.setdefault("volumeMounts", []).append(
            {"name": CLOUDSQL_VOLUME, "mountPath": CLOUDSQL_MOUNT_PATH}
        )
    if volumes:
        result["volumes"] = volumes

    retries = task.get("maxRetries", DEFAULT_MAX_RETRIES)
    retries = whole_number(retries, "job_variables.max_retries")
    if retries > MAX_RETRIES:
        raise InvalidInput(
            f"max_retries must be from 0 to {MAX_RETRIES}, not {retries}",
            field="job_variables.max_retries",
        )
    result["maxRetries"] = retries
    result["timeout"] = f"{timeout}s"

    account = optional_text(task.get("serviceAccount"))
    if account is not None:
        if not SERVICE_ACCOUNT.match(account):
            raise InvalidInput(
                "service_account_name must be a service account email such as "
                f"flows@my-project.iam.gserviceaccount.com, not {short_repr(account)}",
                field="job_variables.service_account_name",
            )
        result["serviceAccount"] = account
    environment = optional_text(task.get("executionEnvironment"))
    if environment is not None:
        if environment not in EXECUTION_ENVIRONMENTS:
            raise InvalidInput(
                f"executionEnvironment must be one of {', '.join(EXECUTION_ENVIRONMENTS)}",
                field=f"{_TASK}.executionEnvironment",
            )
        result["executionEnvironment"] = environment
    if optional_text(task.get("encryptionKey")):
        result["encryptionKey"] = str(task["encryptionKey"])
    vpc = _vpc_access(task.get("vpcAccess"), project, region)
    if vpc:
        result["vpcAccess"] = vpc
    if task.get("nodeSelector") is not None:
        result["nodeSelector"] = as_object(task["nodeSelector"], f"{_TASK}.nodeSelector")
    if task.get("gpuZonalRedundancyDisabled") is not None:
        result["gpuZonalRedundancyDisabled"] = as_bool(
            task["gpuZonalRedundancyDisabled"], f"{_TASK}.gpuZonalRedundancyDisabled"
        )
    return result


def _container(
    config: dict[str, Any],
    container: dict[str, Any],
    *,
    run_env: Mapping[str, str],
    image: str | None,
) -> dict[str, Any]:
    where = f"{_TASK}.containers[0]"
    result: dict[str, Any] = {}
    if optional_text(container.get("name")):
        result["name"] = str(container["name"])
    the_image = optional_text(container.get("image")) or optional_text(image)
    if the_image is None:
        raise InvalidInput(
            "an image is required: set the image job variable or deploy with an image",
            field="job_variables.image",
        )
    result["image"] = the_image
    command = split_command(config.get("command")) or split_command(container.get("command"))
    result["command"] = command or list(DEFAULT_COMMAND)
    args = split_command(container.get("args"), field="job_variables.args")
    if args:
        result["args"] = args
    result["env"] = _env(config, container.get("env"), run_env)

    resources = as_object(container.get("resources"), f"{where}.resources")
    _check_keys(resources, _RESOURCE_KEYS, f"{where}.resources")
    limits = as_object(resources.get("limits"), f"{where}.resources.limits")
    _check_keys(limits, _LIMIT_KEYS, f"{where}.resources.limits")
    out_limits: dict[str, str] = {}
    cpu = parse_cpu(limits["cpu"]) if is_present(limits.get("cpu")) else None
    memory_text = limits.get("memory") if is_present(limits.get("memory")) else None
    memory = parse_memory(memory_text) if memory_text is not None else None
    check_size(
        cpu or CLOUD_RUN_DEFAULT_CPU,
        memory if memory is not None else parse_memory(CLOUD_RUN_DEFAULT_MEMORY),
    )
    if cpu is not None:
        out_limits["cpu"] = cpu
    if memory_text is not None:
        out_limits["memory"] = str(memory_text).strip()
    if is_present(limits.get("nvidia.com/gpu")):
        out_limits["nvidia.com/gpu"] = str(limits["nvidia.com/gpu"])
    out_resources: dict[str, Any] = {}
    if out_limits:
        out_resources["limits"] = out_limits
    for flag in ("cpuIdle", "startupCpuBoost"):
        if resources.get(flag) is not None:
            out_resources[flag] = as_bool(resources[flag], f"{where}.resources.{flag}")
    if out_resources:
        result["resources"] = out_resources

    # The rest (ports, volumeMounts, workingDir, probes...) goes to Cloud Run as it is.
    for key in _CONTAINER_KEYS:
        if key not in _CONTAINER_HANDLED and is_present(container.get(key)):
            result[key] = copy.deepcopy(container[key])
    return result


def _env(
    config: dict[str, Any], template_env: Any, run_env: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The run container's env: the template's list, then `env`, then `env_from_secrets`, then
    the run's variables, later sources winning. A name given a secret is never also given a
    plain value, and the run's variables (id, API URL, token) win over everything."""
    where = f"{_TASK}.containers[0].env"
    plain: dict[str, str] = {}
    secret: dict[str, dict[str, str]] = {}
    if template_env is not None and not isinstance(template_env, list):
        raise InvalidInput("env must be a list of {name, value} objects", field=where)
    for index, item in enumerate(template_env or []):
        item_where = f"{where}[{index}]"
        if not isinstance(item, dict) or not optional_text(item.get("name")):
            raise InvalidInput("env entries must be objects with a name", field=item_where)
        name = _env_name(item["name"], item_where)
        if item.get("valueSource") is not None:
            source = as_object(item["valueSource"], f"{item_where}.valueSource")
            ref_where = f"{item_where}.valueSource.secretKeyRef"
            secret[name] = check_secret_ref(name, source.get("secretKeyRef"), field=ref_where)
        else:
            plain[name] = text(item.get("value", ""))
    for name, value in as_object(config.get("env"), "job_variables.env").items():
        plain[_env_name(name, f"job_variables.env.{name}")] = text(value)
    refs = as_object(config.get("env_from_secrets"), "job_variables.env_from_secrets")
    for name, ref in refs.items():
        where_ref = f"job_variables.env_from_secrets.{name}"
        secret[_env_name(name, where_ref)] = check_secret_ref(name, ref, field=where_ref)
    env: list[dict[str, Any]] = [
        {"name": n, "value": v} for n, v in plain.items() if n not in secret and n not in run_env
    ]
    env.extend(
        {"name": n, "valueSource": {"secretKeyRef": ref}}
        for n, ref in secret.items()
        if n not in run_env
    )
    env.extend({"name": str(n), "value": str(v)} for n, v in run_env.items())
    return env


def _env_name(name: Any, field: str) -> str:
    if not isinstance(name, str) or not name or "=" in name or len(name) > 32768:
        raise InvalidInput(
            f"environment variable name {short_repr(name)} is not valid (non-empty, without '=')",
            field=field,
        )
    return name


def _timeout(config: dict[str, Any], task: dict[str, Any]) -> int:
    """The task timeout in seconds: the top-level `timeout` (as Prefect's worker does), else
    the task template's ("600s" or 600), else Cloud Run's default."""
    value = config.get("timeout")
    if not is_present(value):
        value = task.get("timeout")
    if not is_present(value):
        return CLOUD_RUN_DEFAULT_TIMEOUT_SECONDS
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+s?\s*", value):
        value = int(value.strip().rstrip("s"))
    seconds = whole_number(value, "job_variables.timeout")
    if not 1 <= seconds <= MAX_TIMEOUT_SECONDS:
        raise InvalidInput(
            f"timeout must be from 1 to {MAX_TIMEOUT_SECONDS} seconds (168 hours), not {seconds}",
            field="job_variables.timeout",
        )
    return seconds


def _vpc_access(value: Any, project: str | None, region: str) -> dict[str, Any]:
    where = f"{_TASK}.vpcAccess"
    vpc = as_object(value, where)
    _check_keys(vpc, _VPC_KEYS, where)
    result: dict[str, Any] = {}
    connector = optional_text(vpc.get("connector"))
    if connector is not None:
        if CONNECTOR_PATH.match(connector):
            result["connector"] = connector
        elif CONNECTOR_NAME.match(connector):
            # Expanded now when the project is known, else by CloudRunJobRequest.with_project.
            result["connector"] = (
                _connector_path(project, region, connector) if project else connector
            )
        else:
            raise InvalidInput(
                "vpc_connector_name must be a connector name or "
                f"projects/PROJECT/locations/REGION/connectors/NAME, not {short_repr(connector)}",
                field="job_variables.vpc_connector_name",
            )
    interfaces = vpc.get("networkInterfaces") or []
    if not isinstance(interfaces, list) or not all(isinstance(i, dict) for i in interfaces):
        raise InvalidInput(
            "networkInterfaces must be a list of objects", field=f"{where}.networkInterfaces"
        )
    cleaned = [_interface(i, f"{where}.networkInterfaces[{n}]") for n, i in enumerate(interfaces)]
    cleaned = [i for i in cleaned if i]
    if len(cleaned) > 1:
        raise InvalidInput(
            "Cloud Run supports a single direct VPC network interface",
            field=f"{where}.networkInterfaces",
        )
    if cleaned:
        if connector is not None:
            raise InvalidInput(
                "use either a VPC connector (vpc_connector_name) or direct VPC egress "
                "(vpc_network, vpc_subnetwork), not both",
                field="job_variables.vpc_connector_name",
            )
        result["networkInterfaces"] = cleaned
    egress = optional_text(vpc.get("egress"))
    if egress is not None:
        if egress not in VPC_EGRESS:
            raise InvalidInput(
                f"vpc_egress must be one of {', '.join(VPC_EGRESS)}, not {short_repr(egress)}",
                field="job_variables.vpc_egress",
            )
        if not result:
            raise InvalidInput(
                "vpc_egress needs a VPC connector (vpc_connector_name) or a network "
                "(vpc_network or vpc_subnetwork)",
                field="job_variables.vpc_egress",
            )
        result["egress"] = egress
    return result


def _interface(value: dict[str, Any], where: str) -> dict[str, Any]:
    _check_keys(value, _INTERFACE_KEYS, where)
    result: dict[str, Any] = {}
    network = optional_text(value.get("network"))
    if network is not None:
        if not (NETWORK_NAME.match(network) or NETWORK_PATH.match(network)):
            raise InvalidInput(
                "vpc_network must be a VPC network name or projects/PROJECT/global/networks/"
                f"NAME, not {short_repr(network)}",
                field="job_variables.vpc_network",
            )
        result["network"] = network
    subnetwork = optional_text(value.get("subnetwork"))
    if subnetwork is not None:
        if not (NETWORK_NAME.match(subnetwork) or SUBNETWORK_PATH.match(subnetwork)):
            raise InvalidInput(
                "vpc_subnetwork must be a subnetwork name or projects/PROJECT/regions/REGION/"
                f"subnetworks/NAME, not {short_repr(subnetwork)}",
                field="job_variables.vpc_subnetwork",
            )
        result["subnetwork"] = subnetwork
    tags = value.get("tags") or []
    if not isinstance(tags, list) or not all(
        isinstance(t, str) and NETWORK_NAME.match(t) for t in tags
    ):
        raise InvalidInput(
            "vpc_network_tags must be a list of network tags (1 to 63 lowercase letters, "
            "digits and hyphens, starting with a letter)",
            field="job_variables.vpc_network_tags",
        )
    if tags:
        if not result:
            raise InvalidInput(
                "vpc_network_tags need vpc_network or vpc_subnetwork",
                field="job_variables.vpc_network_tags",
            )
        result["tags"] = list(tags)
    return result


def _connector_path(project: str, region: str, name: str) -> str:
    return f"projects/{project}/locations/{region}/connectors/{name}"


def _cloudsql_instances(value: Any) -> list[str]:
    if not is_present(value):
        return []
    if not isinstance(value, list) or not all(
        isinstance(i, str) and CLOUDSQL_INSTANCE.match(i) for i in value
    ):
        raise InvalidInput(
            "cloudsql_instances must be a list of instance connection names, "
            "PROJECT:REGION:INSTANCE",
            field="job_variables.cloudsql_instances",
        )
    return list(value)


def _merge_labels(
    body: dict[str, Any],
    execution: dict[str, Any],
    config: dict[str, Any],
    system: Mapping[str, str] | None,
) -> dict[str, str]:
    merged: dict[str, str] = {}
    for value, field_name in (
        (body.get("labels"), f"{_BODY}.labels"),
        (execution.get("labels"), f"{_EXECUTION}.labels"),
        (config.get("labels"), "job_variables.labels"),
    ):
        layer = as_object(value, field_name)
        check_labels(layer, field=field_name)
        merged.update(layer)
    for key, value in (system or {}).items():
        merged[label_value(key)] = label_value(value)
    check_labels(merged)
    return merged


def _annotations(value: Any, where: str) -> dict[str, str]:
    annotations = as_object(value, where)
    for key, item in annotations.items():
        if any(key.startswith(ns) for ns in _RESERVED_NAMESPACES):
            raise InvalidInput(
                f"annotation {key!r} is in a namespace Cloud Run v2 refuses; use the matching "
                "job field instead",
                field=where,
            )
        if not isinstance(item, str):
            raise InvalidInput(f"annotation {key!r} must be a string", field=where)
    return dict(annotations)


# --- Cloud Run v1 job bodies (Prefect's `cloud-run` / `cloud-run:push` types) ----------------

_V1_LAUNCH_STAGE = "run.googleapis.com/launch-stage"
_V1_CONNECTOR = "run.googleapis.com/vpc-access-connector"
_V1_EGRESS = "run.googleapis.com/vpc-access-egress"
_V1_ENVIRONMENT = "run.googleapis.com/execution-environment"
_V1_EGRESS_VALUES = {"all-traffic": "ALL_TRAFFIC", "private-ranges-only": "PRIVATE_RANGES_ONLY"}
_V1_ENVIRONMENT_VALUES = {
    "gen1": "EXECUTION_ENVIRONMENT_GEN1",
    "gen2": "EXECUTION_ENVIRONMENT_GEN2",
}


def _is_v1(body: dict[str, Any]) -> bool:
    return "spec" in body or "apiVersion" in body or "metadata" in body or "kind" in body


def _from_v1(body: dict[str, Any]) -> dict[str, Any]:
    """The v2 job body for a v1 (Knative-shaped) one: launch stage, VPC connector and egress,
    execution environment from annotations; containers, timeoutSeconds, serviceAccountName,
    maxRetries, taskCount and parallelism from the specs; secretKeyRef `{name, key}` becomes
    `{secret, version}`. What has no v2 equivalent here is refused, naming it."""
    where = _BODY
    _check_keys(body, ("apiVersion", "kind", "metadata", "spec"), where)
    kind = optional_text(body.get("kind"))
    if kind is not None and kind != "Job":
        raise InvalidInput(
            f"job_body.kind must be 'Job', not {short_repr(kind)}", field=f"{where}.kind"
        )
    metadata = as_object(body.get("metadata"), f"{where}.metadata")
    _check_keys(metadata, ("name", "namespace", "annotations", "labels"), f"{where}.metadata")
    spec = as_object(body.get("spec"), f"{where}.spec")
    _check_keys(spec, ("template",), f"{where}.spec")
    execution = as_object(spec.get("template"), f"{where}.spec.template")
    _check_keys(execution, ("metadata", "spec"), f"{where}.spec.template")
    execution_meta = as_object(execution.get("metadata"), f"{where}.spec.template.metadata")
    _check_keys(execution_meta, ("annotations", "labels"), f"{where}.spec.template.metadata")
    execution_spec = as_object(execution.get("spec"), f"{where}.spec.template.spec")
    _check_keys(
        execution_spec, ("parallelism", "taskCount", "template"), f"{where}.spec.template.spec"
    )
    task_where = f"{where}.spec.template.spec.template"
    task = as_object(execution_spec.get("template"), task_where)
    _check_keys(task, ("spec",), task_where)
    task_spec = as_object(task.get("spec"), f"{task_where}.spec")
    _check_keys(
        task_spec,
        ("containers", "timeoutSeconds", "serviceAccountName", "maxRetries"),
        f"{task_where}.spec",
    )

    v2_task: dict[str, Any] = {}
    vpc: dict[str, Any] = {}
    v2: dict[str, Any] = {}
    annotations: dict[str, Any] = {}
    for meta, meta_where in (
        (metadata, f"{where}.metadata.annotations"),
        (execution_meta, f"{where}.spec.template.metadata.annotations"),
    ):
        for key, value in as_object(meta.get("annotations"), meta_where).items():
            if key == _V1_LAUNCH_STAGE:
                v2["launchStage"] = value
            elif key == _V1_CONNECTOR:
                vpc["connector"] = value
            elif key == _V1_EGRESS:
                vpc["egress"] = _V1_EGRESS_VALUES.get(str(value), value)
            elif key == _V1_ENVIRONMENT:
                v2_task["executionEnvironment"] = _V1_ENVIRONMENT_VALUES.get(str(value), value)
            elif key.startswith("run.googleapis.com/"):
                raise InvalidInput(
                    f"the v1 annotation {key!r} has no translation here; use the Cloud Run v2 "
                    "job_body shape (skylane pool default-template --type cloud-run:push)",
                    field=meta_where,
                )
            else:
                annotations[key] = value
    if annotations:
        v2["annotations"] = annotations
    if metadata.get("labels") is not None:
        v2["labels"] = metadata["labels"]

    v2_execution: dict[str, Any] = {}
    if execution_meta.get("labels") is not None:
        v2_execution["labels"] = execution_meta["labels"]
    for key in ("parallelism", "taskCount"):
        if execution_spec.get(key) is not None:
            v2_execution[key] = execution_spec[key]

    containers = task_spec.get("containers", [])
    if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
        raise InvalidInput(
            "containers must be a list of objects", field=f"{task_where}.spec.containers"
        )
    v2_task["containers"] = [
        _v1_container(c, f"{task_where}.spec.containers[{n}]") for n, c in enumerate(containers)
    ]
    if task_spec.get("timeoutSeconds") is not None:
        v2_task["timeout"] = task_spec["timeoutSeconds"]
    if task_spec.get("serviceAccountName") is not None:
        v2_task["serviceAccount"] = task_spec["serviceAccountName"]
    if task_spec.get("maxRetries") is not None:
        v2_task["maxRetries"] = task_spec["maxRetries"]
    if vpc:
        v2_task["vpcAccess"] = vpc
    v2_execution["template"] = v2_task
    v2["template"] = v2_execution
    return v2


def _v1_container(container: dict[str, Any], where: str) -> dict[str, Any]:
    _check_keys(
        container,
        ("name", "image", "command", "args", "env", "resources", "workingDir", "ports"),
        where,
    )
    result = {k: v for k, v in container.items() if k not in ("env", "resources")}
    env = container.get("env")
    if env is not None:
        if not isinstance(env, list):
            raise InvalidInput("env must be a list", field=f"{where}.env")
        result["env"] = [_v1_env(item, f"{where}.env[{n}]") for n, item in enumerate(env)]
    resources = as_object(container.get("resources"), f"{where}.resources")
    _check_keys(resources, ("limits", "requests"), f"{where}.resources")
    if resources.get("limits") is not None:
        # v2 has limits only; v1's requests (Prefect sets them equal to the limits) are dropped.
        result["resources"] = {"limits": resources["limits"]}
    return result


def _v1_env(item: Any, where: str) -> Any:
    if not isinstance(item, dict) or "valueFrom" not in item:
        return item
    ref = as_object(item["valueFrom"], f"{where}.valueFrom").get("secretKeyRef")
    ref = as_object(ref, f"{where}.valueFrom.secretKeyRef")
    return {
        "name": item.get("name"),
        "valueSource": {"secretKeyRef": {"secret": ref.get("name"), "version": ref.get("key")}},
    }


# --- small helpers ---------------------------------------------------------------------------


def _check_keys(value: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = [key for key in value if key not in allowed]
    if unknown:
        raise InvalidInput(
            f"unknown key {unknown[0]!r} at {where}; Cloud Run takes {', '.join(allowed)} here "
            "(camelCase, as in the REST API)",
            field=f"{where}.{unknown[0]}",
        )

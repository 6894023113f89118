"""The Cloud Run base job template and the pure path from a rendered job configuration to a
Cloud Run Admin API v2 CreateJob request (no Google Cloud call, no SDK needed)."""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

import jsonschema
import pytest

from skylane import templates
from skylane.adapters.base import RunContext
from skylane.adapters.cloud_run_template import (
    IGNORED_KEYS,
    LABEL_KEEP_JOB,
    MAX_JOB_ID_LENGTH,
    CloudRunJobRequest,
    build_job_request,
    default_template,
    describe_request,
    execution_token_for,
    job_id_for,
    label_value,
    parse_cpu,
    parse_memory,
)
from skylane.errors import InvalidInput
from skylane.security import MASK

IMAGE = "europe-west1-docker.pkg.dev/my-project/flows/etl@sha256:" + "ab" * 32
TOKEN = "sklr_12345678123456781234567812345678_s3cr3t-run-token-value"
RUN_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
KEY = f"skl-{RUN_ID.hex}-1"
SERVICE_ACCOUNT = "flows@my-project.iam.gserviceaccount.com"
BLOCK_DOCUMENT = {"$ref": {"block_document_id": "6c2f1f0e-0000-4000-8000-000000000001"}}
# Job ids: lowercase letters, digits, hyphens; a letter first; no hyphen last.
JOB_ID_RULE = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")


def make_context(key: str = KEY) -> RunContext:
    return RunContext(
        run_id=RUN_ID,
        flow_name="etl",
        deployment_name="etl/Nightly",
        pool_name="gcp",
        entrypoint="flows/etl.py:etl",
        api_url="https://skylane.example.com",
        run_token=TOKEN,
        idempotency_key=key,
        image=IMAGE,
    )


def build(
    job_variables: dict[str, Any] | None = None,
    *,
    template: dict[str, Any] | None = None,
    key: str = KEY,
    validate: bool = True,
    image: str | None = IMAGE,
    region: str | None = "europe-west1",
    project: str | None = None,
) -> CloudRunJobRequest:
    """Resolve the template like the dispatcher does (the deployment's image, then job
    variables; validate=False skips the schema, to reach the builder's own checks), then build
    the request with the run context's env and labels, as the adapter will."""
    template = template or default_template()
    layers = [{"image": image} if image else None, job_variables]
    if validate:
        _, config = templates.resolve_job_configuration(template, *layers)
    else:
        values = templates.merge_job_variables(template["variables"], *layers)
        config = templates.render(template["job_configuration"], values)
    context = make_context(key)
    return build_job_request(
        config,
        run_env=context.runtime_env(),
        job_id=job_id_for(key),
        execution_token=execution_token_for(key),
        labels={**context.labels(), "skylane-attempt": key},
        region=region,
        project=project,
    )


def task_of(request: CloudRunJobRequest) -> dict[str, Any]:
    return request.job["template"]["template"]


def env_of(request: CloudRunJobRequest) -> dict[str, Any]:
    return {
        item["name"]: item.get("value", item.get("valueSource"))
        for item in request.container()["env"]
    }


def error(job_variables: dict[str, Any], **kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        build(job_variables, **kwargs)
    return info.value


# --- the default template --------------------------------------------------------------------


def test_default_template_is_valid_and_prefect_cloud_run_v2_shaped() -> None:
    template = default_template()
    assert templates.validate_base_job_template(template) is template
    jsonschema.Draft202012Validator.check_schema(template["variables"])
    config = template["job_configuration"]
    for key in ("job_body", "region", "timeout", "keep_job", "env", "labels", "name", "project"):
        assert key in config, key
    body = config["job_body"]
    assert body["launchStage"] == "{{ launch_stage }}"
    task = body["template"]["template"]
    assert task["serviceAccount"] == "{{ service_account_name }}"
    assert task["maxRetries"] == "{{ max_retries }}"
    assert task["timeout"] == "{{ timeout }}"
    assert task["vpcAccess"]["connector"] == "{{ vpc_connector_name }}"
    assert task["vpcAccess"]["networkInterfaces"][0]["subnetwork"] == "{{ vpc_subnetwork }}"
    container = task["containers"][0]
    assert container["image"] == "{{ image }}"
    assert container["resources"]["limits"] == {"cpu": "{{ cpu }}", "memory": "{{ memory }}"}

    variables = template["variables"]
    properties = variables["properties"]
    expected = {
        "image", "project", "region", "cpu", "memory", "timeout", "max_retries",
        "service_account_name", "vpc_connector_name", "vpc_egress", "vpc_network",
        "vpc_subnetwork", "vpc_network_tags", "env", "env_from_secrets", "labels",
        "launch_stage", "keep_job", "command", "args", "cloudsql_instances", "name",
    }  # fmt: skip
    assert expected <= set(properties)
    for name, prop in properties.items():
        assert prop.get("title") and prop.get("description") and prop.get("type"), name
    assert variables["required"] == ["image"]
    assert properties["timeout"]["minimum"] == 1
    assert properties["timeout"]["maximum"] == 168 * 3600
    assert properties["timeout"]["default"] == 3600
    assert (properties["max_retries"]["minimum"], properties["max_retries"]["maximum"]) == (0, 10)
    assert properties["max_retries"]["default"] == 0
    assert properties["launch_stage"]["enum"] == ["GA", "BETA", "ALPHA"]
    assert properties["keep_job"] == {**properties["keep_job"], "type": "boolean", "default": False}
    assert properties["cpu"]["default"] == "1" and properties["memory"]["default"] == "2Gi"
    secret_schema = properties["env_from_secrets"]["additionalProperties"]
    assert secret_schema["required"] == ["secret", "version"]
    # No region default: the pool's region setting must be able to fill it.
    assert "default" not in properties["region"] and "default" not in properties["project"]


# --- rendering the default template ----------------------------------------------------------


def typical_variables() -> dict[str, Any]:
    return {
        "project": "my-project",
        "region": "europe-west1",
        "cpu": 2,  # what `--job-variable cpu=2` gives
        "memory": "4Gi",
        "timeout": 3600,
        "service_account_name": SERVICE_ACCOUNT,
        "vpc_connector_name": "flows-connector",
        "vpc_egress": "ALL_TRAFFIC",
        "env": {"LOG_LEVEL": "debug"},
        "env_from_secrets": {"DB_PASSWORD": {"secret": "prod-db", "version": "3"}},
        "labels": {"team": "data", "cost-center": "c42"},
        "launch_stage": "BETA",
    }


def test_typical_variables_give_the_expected_job() -> None:
    request = build(typical_variables())
    assert (request.project, request.region) == ("my-project", "europe-west1")
    assert request.job_id == KEY == job_id_for(KEY)
    assert request.parent == "projects/my-project/locations/europe-west1"
    assert request.job_name == f"projects/my-project/locations/europe-west1/jobs/{KEY}"
    assert request.keep_job is False
    assert request.timeout_seconds == 3600

    job = request.job
    assert job["launchStage"] == "BETA"
    assert job["startExecutionToken"] == execution_token_for(KEY) == request.execution_token
    labels = {
        "team": "data",
        "cost-center": "c42",
        "skylane-run-id": str(RUN_ID),
        "skylane-deployment": "etl_nightly",  # made a valid label value
        "skylane-pool": "gcp",
        "skylane-attempt": KEY,
    }
    assert job["labels"] == labels
    assert job["template"]["labels"] == labels  # executions outlive deleted jobs
    assert job["template"]["taskCount"] == 1

    task = task_of(request)
    assert task["timeout"] == "3600s"
    assert task["maxRetries"] == 0
    assert task["serviceAccount"] == SERVICE_ACCOUNT
    assert task["vpcAccess"] == {
        "connector": "projects/my-project/locations/europe-west1/connectors/flows-connector",
        "egress": "ALL_TRAFFIC",
    }
    container = request.container()
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "skylane.runtime"]
    assert container["resources"] == {"limits": {"cpu": "2", "memory": "4Gi"}}
    assert container["env"] == [
        {"name": "LOG_LEVEL", "value": "debug"},
        {
            "name": "DB_PASSWORD",
            "valueSource": {"secretKeyRef": {"secret": "prod-db", "version": "3"}},
        },
        {"name": "SKYLANE_RUN_ID", "value": str(RUN_ID)},
        {"name": "SKYLANE_API_URL", "value": "https://skylane.example.com"},
        {"name": "SKYLANE_RUN_TOKEN", "value": TOKEN},
    ]


def test_defaults_alone_give_a_minimal_job() -> None:
    request = build(region=None, job_variables={"region": "us-central1"})
    assert request.project is None  # the adapter fills it from the pool's credentials
    assert request.region == "us-central1"
    job = request.job
    assert job["launchStage"] == "GA" and job["client"] == "skylane"
    task = task_of(request)
    assert task == {
        "containers": [task["containers"][0]],
        "maxRetries": 0,  # sent explicitly: Cloud Run's default would be 3
        "timeout": "3600s",
    }
    assert request.container()["resources"] == {"limits": {"cpu": "1", "memory": "2Gi"}}
    assert set(env_of(request)) == {"SKYLANE_RUN_ID", "SKYLANE_API_URL", "SKYLANE_RUN_TOKEN"}
    with pytest.raises(ValueError, match="project"):
        _ = request.parent
    in_project = request.with_project("my-project")
    assert in_project.parent == "projects/my-project/locations/us-central1"
    assert request.project is None  # frozen: with_project returns a new request


def test_the_pool_region_and_project_fill_in_and_variables_win() -> None:
    assert build({}, region="asia-east1").region == "asia-east1"
    assert build({"region": "us-east1"}, region="asia-east1").region == "us-east1"
    assert build({}, project="pool-project").project == "pool-project"
    assert build({"project": "other-project"}, project="pool-project").project == "other-project"


def test_job_body_parses_as_a_cloud_run_v2_job() -> None:
    """The body is the REST JSON of google.cloud.run_v2.Job: the official types accept every
    field (unknown fields would raise)."""
    run_v2 = pytest.importorskip("google.cloud.run_v2", reason="needs google-cloud-run")
    variables = typical_variables()
    del variables["vpc_connector_name"]
    request = build(
        {
            **variables,
            "vpc_egress": "PRIVATE_RANGES_ONLY",
            "vpc_network": "default",
            "vpc_subnetwork": "flows",
            "vpc_network_tags": ["skylane", "egress-nat"],
            "cloudsql_instances": ["my-project:europe-west1:db"],
            "args": "--date '2024-01-01 00:00'",
        }
    )
    job = run_v2.Job.from_json(json.dumps(request.job))
    launch_stages = pytest.importorskip("google.api.launch_stage_pb2").LaunchStage
    assert launch_stages.Name(job.launch_stage) == "BETA"
    assert job.start_execution_token == request.execution_token
    task = job.template.template
    assert task.timeout.seconds == 3600
    assert task.max_retries == 0
    assert task.service_account == SERVICE_ACCOUNT
    assert task.vpc_access.egress.name == "PRIVATE_RANGES_ONLY"
    interface = task.vpc_access.network_interfaces[0]
    assert (interface.network, interface.subnetwork) == ("default", "flows")
    assert list(interface.tags) == ["skylane", "egress-nat"]
    container = task.containers[0]
    assert list(container.args) == ["--date", "2024-01-01 00:00"]
    assert dict(container.resources.limits) == {"cpu": "2", "memory": "4Gi"}
    secret = next(e for e in container.env if e.name == "DB_PASSWORD")
    assert secret.value_source.secret_key_ref.secret == "prod-db"
    assert secret.value_source.secret_key_ref.version == "3"
    assert task.volumes[0].cloud_sql_instance.instances == ["my-project:europe-west1:db"]
    assert container.volume_mounts[0].mount_path == "/cloudsql"
    request_type = run_v2.CreateJobRequest(parent=request.parent, job_id=request.job_id, job=job)
    assert request_type.job_id == KEY


def test_run_env_wins_and_secrets_win_over_plain_values() -> None:
    request = build(
        {
            "env": {"SKYLANE_RUN_TOKEN": "forged", "API_TOKEN": "plain", "KEEP": "1"},
            "env_from_secrets": {"API_TOKEN": {"secret": "api", "version": 2}},
        }
    )
    env = env_of(request)
    assert env["SKYLANE_RUN_TOKEN"] == TOKEN
    assert env["API_TOKEN"] == {"secretKeyRef": {"secret": "api", "version": "2"}}
    assert env["KEEP"] == "1"
    names = [item["name"] for item in request.container()["env"]]
    assert len(names) == len(set(names))


def test_direct_vpc_egress_and_its_conflicts() -> None:
    request = build({"vpc_network": "default", "vpc_egress": "ALL_TRAFFIC"})
    assert task_of(request)["vpcAccess"] == {
        "networkInterfaces": [{"network": "default"}],
        "egress": "ALL_TRAFFIC",
    }
    path = "projects/host-project/regions/europe-west1/subnetworks/flows"
    request = build({"vpc_subnetwork": path})
    assert task_of(request)["vpcAccess"] == {"networkInterfaces": [{"subnetwork": path}]}
    both = error({"vpc_network": "default", "vpc_connector_name": "conn"})
    assert both.field == "job_variables.vpc_connector_name"
    assert error({"vpc_egress": "ALL_TRAFFIC"}).field == "job_variables.vpc_egress"
    assert error({"vpc_network_tags": ["a"]}).field == "job_variables.vpc_network_tags"
    assert error({"vpc_network": "Bad Net"}).field == "job_variables.vpc_network"


def test_keep_job_and_max_retries() -> None:
    request = build({"keep_job": True, "max_retries": 3})
    assert request.keep_job is True
    # The label tells cleanup to keep the job, from the job alone.
    assert request.job["labels"][LABEL_KEEP_JOB] == "true"
    assert task_of(request)["maxRetries"] == 3
    assert LABEL_KEEP_JOB not in build({}).job.get("labels", {})


def test_the_keep_job_label_counts_towards_cloud_runs_label_limit() -> None:
    ours = len(build({}).job["labels"])  # skylane's own labels
    filling = {f"k{i}": "v" for i in range(64 - ours)}
    assert len(build({"labels": filling}).job["labels"]) == 64  # the limit, reached
    with pytest.raises(InvalidInput) as raised:
        build({"labels": filling, "keep_job": True})
    assert raised.value.field == "job_variables.labels"


# --- Prefect templates -----------------------------------------------------------------------


def gcp_credentials_definition() -> dict[str, Any]:
    return {
        "title": "GcpCredentials",
        "description": "Block used to manage authentication with GCP.",
        "type": "object",
        "properties": {
            "service_account_file": {"title": "Service Account File", "type": "string"},
            "service_account_info": {"title": "Service Account Info", "type": "object"},
            "project": {"title": "Project", "type": "string"},
        },
        "block_type_slug": "gcp-credentials",
        "secret_fields": ["service_account_info.*"],
        "block_schema_references": {},
    }


def prefect_cloud_run_v2_template() -> dict[str, Any]:
    """A `cloud-run-v2` template in the shape Prefect exports (prefect-gcp's
    CloudRunWorkerJobV2Configuration: every configuration field as a top-level placeholder,
    the v2 job body, a credentials block reference as the credentials default)."""
    secret_selector = {
        "anyOf": [{"$ref": "#/definitions/SecretKeySelector"}, {"type": "null"}],
        "default": None,
    }
    return {
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "credentials": "{{ credentials }}",
            "env_from_secrets": "{{ env_from_secrets }}",
            "prefect_api_key_secret": "{{ prefect_api_key_secret }}",
            "prefect_api_auth_string_secret": "{{ prefect_api_auth_string_secret }}",
            "cloudsql_instances": "{{ cloudsql_instances }}",
            "job_body": {
                "client": "prefect",
                "launchStage": "{{ launch_stage }}",
                "template": {
                    "template": {
                        "serviceAccount": "{{ service_account_name }}",
                        "maxRetries": "{{ max_retries }}",
                        "timeout": "{{ timeout }}",
                        "vpcAccess": {"connector": "{{ vpc_connector_name }}"},
                        "containers": [
                            {
                                "env": [],
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
            "keep_job": "{{ keep_job }}",
            "region": "{{ region }}",
            "timeout": "{{ timeout }}",
        },
        "variables": {
            "description": "Default variables for the Cloud Run worker V2.",
            "type": "object",
            "required": ["credentials"],
            "properties": {
                "name": {"title": "Name", "type": "string"},
                "env": {
                    "title": "Environment Variables",
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                },
                "labels": {
                    "title": "Labels",
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                },
                "command": {"title": "Command", "type": "string"},
                "credentials": {
                    "title": "GCP Credentials",
                    "allOf": [{"$ref": "#/definitions/GcpCredentials"}],
                    "default": BLOCK_DOCUMENT,
                },
                "region": {"title": "Region", "default": "us-central1", "type": "string"},
                "image": {
                    "title": "Image Name",
                    "default": "prefecthq/prefect:3-latest",
                    "type": "string",
                },
                "args": {"title": "Args", "type": "array", "items": {"type": "string"}},
                "env_from_secrets": {
                    "title": "Environment Variables from Secrets",
                    "type": "object",
                    "additionalProperties": {"$ref": "#/definitions/SecretKeySelector"},
                },
                "prefect_api_key_secret": secret_selector,
                "prefect_api_auth_string_secret": copy.deepcopy(secret_selector),
                "cloudsql_instances": {
                    "title": "Cloud SQL Instances",
                    "type": "array",
                    "items": {"type": "string"},
                },
                "keep_job": {
                    "title": "Keep Job After Completion",
                    "default": False,
                    "type": "boolean",
                },
                "launch_stage": {
                    "title": "Launch Stage",
                    "default": "BETA",
                    "enum": [
                        "ALPHA",
                        "BETA",
                        "GA",
                        "DEPRECATED",
                        "EARLY_ACCESS",
                        "PRELAUNCH",
                        "UNIMPLEMENTED",
                        "LAUNCH_TAG_UNSPECIFIED",
                    ],  # fmt: skip
                    "type": "string",
                },
                "max_retries": {"title": "Max Retries", "default": 0, "type": "integer"},
                "cpu": {"title": "CPU", "default": "1000m", "type": "string"},
                "memory": {
                    "title": "Memory",
                    "default": "512Mi",
                    "pattern": "^\\d+(?:G|Gi|M|Mi)$",
                    "type": "string",
                },
                "timeout": {
                    "title": "Job Timeout",
                    "default": 600,
                    "exclusiveMinimum": 0,
                    "maximum": 86400,
                    "type": "integer",
                },
                "vpc_connector_name": {"title": "VPC Connector Name", "type": "string"},
                "service_account_name": {"title": "Service Account Name", "type": "string"},
            },
            "definitions": {
                "GcpCredentials": gcp_credentials_definition(),
                "SecretKeySelector": {
                    "title": "SecretKeySelector",
                    "type": "object",
                    "properties": {
                        "secret": {"title": "Secret", "type": "string"},
                        "version": {"title": "Version", "type": "string"},
                    },
                    "required": ["secret", "version"],
                },
            },
        },
    }


def test_prefect_cloud_run_v2_template_renders_into_an_accepted_request() -> None:
    template = prefect_cloud_run_v2_template()
    templates.validate_base_job_template(template)
    request = build(
        {
            "service_account_name": SERVICE_ACCOUNT,
            "env": {"LOG_LEVEL": "info"},
            "env_from_secrets": {"DB_PASSWORD": {"secret": "prod-db", "version": "7"}},
            # A Prefect-only setting: ignored, so its unpinned version is no concern here.
            "prefect_api_key_secret": {"secret": "prefect-api-key", "version": "latest"},
            "cloudsql_instances": ["my-project:us-central1:db"],
            "vpc_connector_name": "projects/my-project/locations/us-central1/connectors/c1",
        },
        template=template,
        region=None,
        project="my-project",
    )
    assert request.region == "us-central1"  # the Prefect template's default
    assert request.project == "my-project"
    assert request.timeout_seconds == 600
    job = request.job
    assert job["client"] == "prefect" and job["launchStage"] == "BETA"
    task = task_of(request)
    assert task["timeout"] == "600s"  # Prefect renders the integer; Cloud Run wants "600s"
    assert task["maxRetries"] == 0
    assert task["serviceAccount"] == SERVICE_ACCOUNT
    assert task["vpcAccess"] == {
        "connector": "projects/my-project/locations/us-central1/connectors/c1"
    }
    assert task["volumes"] == [
        {"name": "cloudsql", "cloudSqlInstance": {"instances": ["my-project:us-central1:db"]}}
    ]
    container = request.container()
    assert container["image"] == IMAGE  # the deployment's image over Prefect's default
    assert container["command"] == ["python", "-m", "skylane.runtime"]
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "512Mi"}}
    assert container["volumeMounts"] == [{"name": "cloudsql", "mountPath": "/cloudsql"}]
    env = env_of(request)
    assert env["LOG_LEVEL"] == "info"
    assert env["DB_PASSWORD"] == {"secretKeyRef": {"secret": "prod-db", "version": "7"}}
    assert "PREFECT_API_KEY" not in env
    assert env["SKYLANE_RUN_TOKEN"] == TOKEN
    # Nothing of the credentials block reference reaches the request.
    assert "block_document_id" not in json.dumps(request.job)
    assert {"credentials", "prefect_api_key_secret"} <= IGNORED_KEYS


def prefect_cloud_run_v1_template() -> dict[str, Any]:
    """Prefect's `cloud-run` (and early `cloud-run:push`) shape: a Cloud Run v1 Knative Job."""
    template = prefect_cloud_run_v2_template()
    config = template["job_configuration"]
    for key in ("env_from_secrets", "prefect_api_key_secret", "prefect_api_auth_string_secret"):
        config.pop(key)
    config.pop("cloudsql_instances")
    config["job_body"] = {
        "apiVersion": "run.googleapis.com/v1",
        "kind": "Job",
        "metadata": {
            "name": "{{ name }}",
            "annotations": {"run.googleapis.com/launch-stage": "BETA"},
        },
        "spec": {
            "template": {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "image": "{{ image }}",
                                    "command": "{{ command }}",
                                    "env": [
                                        {
                                            "name": "DB_PASSWORD",
                                            "valueFrom": {
                                                "secretKeyRef": {"name": "prod-db", "key": "4"}
                                            },
                                        }
                                    ],
                                    "resources": {
                                        "limits": {"cpu": "{{ cpu }}", "memory": "{{ memory }}"},
                                        "requests": {"cpu": "{{ cpu }}", "memory": "{{ memory }}"},
                                    },
                                }
                            ],
                            "timeoutSeconds": "{{ timeout }}",
                            "serviceAccountName": "{{ service_account_name }}",
                        }
                    }
                },
                "metadata": {
                    "annotations": {
                        "run.googleapis.com/vpc-access-connector": "{{ vpc_connector_name }}"
                    }
                },
            }
        },
    }
    return template


def test_prefect_cloud_run_v1_job_body_is_translated_to_v2() -> None:
    template = prefect_cloud_run_v1_template()
    templates.validate_base_job_template(template)
    request = build(
        {"service_account_name": SERVICE_ACCOUNT, "vpc_connector_name": "c1", "cpu": "2000m"},
        template=template,
        project="my-project",
    )
    assert request.job["launchStage"] == "BETA"
    task = task_of(request)
    assert task["timeout"] == "600s"
    assert task["serviceAccount"] == SERVICE_ACCOUNT
    assert task["vpcAccess"] == {
        "connector": "projects/my-project/locations/us-central1/connectors/c1"
    }
    container = request.container()
    assert container["resources"] == {"limits": {"cpu": "2", "memory": "512Mi"}}
    assert env_of(request)["DB_PASSWORD"] == {"secretKeyRef": {"secret": "prod-db", "version": "4"}}
    unknown = copy.deepcopy(template)
    annotations = unknown["job_configuration"]["job_body"]["metadata"]["annotations"]
    annotations["run.googleapis.com/binary-authorization"] = "default"
    with pytest.raises(InvalidInput) as info:
        build({}, template=unknown)
    assert info.value.field == "job_configuration.job_body.metadata.annotations"


# --- refused inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_variables", "field", "words"),
    [
        ({"memory": "lots"}, "job_variables.memory", "512Mi or 2Gi"),
        ({"memory": 2048}, "job_variables.memory", "with a unit"),
        ({"memory": "64Gi"}, "job_variables.memory", "32Gi"),
        ({"cpu": "3"}, "job_variables.cpu", "2, 4, 6 or 8"),
        ({"cpu": "12"}, "job_variables.cpu", "8 vCPUs"),
        ({"cpu": "lots"}, "job_variables.cpu", "millicpu"),
        ({"cpu": "4", "memory": "1Gi"}, "job_variables.memory", "from 2Gi to 16Gi"),
        ({"cpu": "1", "memory": "8Gi"}, "job_variables.memory", "at most 4Gi"),
        ({"cpu": "250m", "memory": "1Gi"}, "job_variables.memory", "512Mi"),
        ({"timeout": 0}, "job_variables.timeout", "from 1"),
        ({"timeout": 168 * 3600 + 1}, "job_variables.timeout", "168 hours"),
        (
            {"env_from_secrets": {"DB": {"secret": "db", "version": "latest"}}},
            "job_variables.env_from_secrets.DB.version",
            "env_from_secrets.DB.version: 'latest' is not allowed",
        ),
        (
            {"env_from_secrets": {"DB": {"secret": "db", "version": "prod"}}},
            "job_variables.env_from_secrets.DB.version",
            "pinned",
        ),
        (
            {"env_from_secrets": {"DB": {"secret": "no/such/form", "version": "1"}}},
            "job_variables.env_from_secrets.DB.secret",
            "Secret Manager",
        ),
        ({"labels": {"Team": "data"}}, "job_variables.labels", "label key 'Team'"),
        ({"labels": {"9lives": "x"}}, "job_variables.labels", "starting with a lowercase"),
        ({"labels": {"team": "x" * 64}}, "job_variables.labels", "at most 63"),
        ({"labels": {"team": "Data Eng"}}, "job_variables.labels", "label value"),
        ({"launch_stage": "GAMMA"}, "job_variables.launch_stage", "GAMMA"),
        ({"max_retries": 11}, "job_variables.max_retries", "11"),
        ({"service_account_name": "flows"}, "job_variables.service_account_name", "email"),
        ({"region": "Europe West"}, "job_variables.region", "us-central1"),
        ({"project": "X"}, "job_variables.project", "project id"),
        ({"vpc_connector_name": "bad/connector"}, "job_variables.vpc_connector_name", "name"),
        ({"cloudsql_instances": ["db"]}, "job_variables.cloudsql_instances", "PROJECT:REGION"),
        ({"command": "python -c 'unclosed"}, "job_variables.command", "quoting"),
    ],
)
@pytest.mark.parametrize("validate", [True, False], ids=["schema+build", "build"])
def test_bad_variables_are_refused_naming_the_variable(
    job_variables: dict[str, Any], field: str, words: str, validate: bool
) -> None:
    """Refused before any Google Cloud call, whether the schema or the builder catches it."""
    exc = error(job_variables, validate=validate)
    assert exc.field == field, (exc.field, exc.message)
    if not validate:  # the builder's own message (the schema words its own)
        assert words.lower() in exc.message.lower(), exc.message


def test_latest_secret_version_message_is_clear() -> None:
    exc = error({"env_from_secrets": {"API_KEY": {"secret": "k", "version": "latest"}}})
    assert exc.field == "job_variables.env_from_secrets.API_KEY.version"
    assert "env_from_secrets.API_KEY.version" in exc.message
    assert "pin a version number" in exc.message


def test_missing_region_and_image_are_refused() -> None:
    assert error({}, region=None).field == "job_variables.region"
    with pytest.raises(InvalidInput) as info:
        build({}, image=None, validate=False)
    assert info.value.field == "job_variables.image"


def with_config(change: dict[str, Any]) -> dict[str, Any]:
    template = default_template()
    template["job_configuration"].update(change)
    return template


def test_unknown_top_level_key_is_refused_and_prefect_keys_are_ignored() -> None:
    with pytest.raises(InvalidInput) as info:
        build({}, template=with_config({"stream_output": True}))
    assert info.value.field == "job_configuration.stream_output"
    assert "unknown key 'stream_output'" in info.value.message
    assert "credentials" in info.value.message  # it says what is ignored
    ignored = {
        "credentials": {"project": "x"},
        "prefect_api_key_secret": {"secret": "s", "version": "latest"},
        "prefect_api_auth_string_secret": {"secret": "t", "version": "1"},
    }
    request = build({}, template=with_config(ignored))
    assert "prefect" not in json.dumps(request.job)


def test_template_shape_errors_name_the_configuration_path() -> None:
    template = default_template()
    task = template["job_configuration"]["job_body"]["template"]["template"]
    task["workingDir"] = "/app"  # a container field at the task level
    with pytest.raises(InvalidInput) as info:
        build({}, template=template)
    assert info.value.field == "job_configuration.job_body.template.template.workingDir"

    template = default_template()
    template["job_configuration"]["job_body"]["template"]["taskCount"] = 3
    with pytest.raises(InvalidInput) as info:
        build({}, template=template)
    assert info.value.field == "job_configuration.job_body.template.taskCount"

    template = default_template()
    template["job_configuration"]["job_body"]["uid"] = "output-only"
    with pytest.raises(InvalidInput) as info:
        build({}, template=template)
    assert info.value.field == "job_configuration.job_body.uid"


def test_template_env_secrets_must_be_pinned_too() -> None:
    template = default_template()
    container = template["job_configuration"]["job_body"]["template"]["template"]["containers"][0]
    container["env"] = [
        {"name": "TOKEN", "valueSource": {"secretKeyRef": {"secret": "t", "version": "latest"}}}
    ]
    with pytest.raises(InvalidInput) as info:
        build({}, template=template)
    field = "job_configuration.job_body.template.template.containers[0].env[0]"
    assert info.value.field == f"{field}.valueSource.secretKeyRef.version"


# --- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        (1, "1"),
        ("1", "1"),
        (2, "2"),
        ("1000m", "1"),
        ("4000m", "4"),
        ("500m", "500m"),
        (0.5, "500m"),
        ("0.25", "250m"),
        ("0.08", "80m"),
        (8, "8"),
        ("6", "6"),
    ],
)
def test_cpu_values(value: Any, canonical: str) -> None:
    assert parse_cpu(value) == canonical


@pytest.mark.parametrize("value", ["0.05", "79m", "3", "1.5", "9", "0.0001", True, None, "1 cpu"])
def test_cpu_values_refused(value: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_cpu(value)
    assert info.value.field == "job_variables.cpu"


def test_memory_values() -> None:
    assert parse_memory("512Mi") == 512 * 2**20
    assert parse_memory("2Gi") == 2 * 2**30
    assert parse_memory("1G") == 10**9
    for bad in ("127Mi", "33Gi", "2GB", "1.5Gi", "", None, 1024):
        with pytest.raises(InvalidInput):
            parse_memory(bad)


# --- ids -------------------------------------------------------------------------------------


def test_job_ids_are_valid_deterministic_and_distinct() -> None:
    keys = [f"skl-{uuid.UUID(int=n * 7919).hex}-{n % 5 + 1}" for n in range(500)]
    keys += [f"Attempt/{n}:{'x' * (n % 90)}" for n in range(500)]  # any other key is hashed
    keys += ["skl-" + "a" * 60, "-leading", "trailing-", "UPPER", "ü", "a"]
    ids = [job_id_for(key) for key in keys]
    assert len(set(ids)) == len(keys)
    for key, job_id in zip(keys, ids, strict=True):
        assert job_id == job_id_for(key)
        assert JOB_ID_RULE.match(job_id), job_id
        assert len(job_id) <= MAX_JOB_ID_LENGTH
        token = execution_token_for(key)
        assert token == execution_token_for(key)
        assert re.fullmatch(r"[0-9a-f]{8}", token)
        # Cloud Run: "the sum of job name and token length must be fewer than 63 characters".
        assert len(job_id) + len(token) < 63
    assert job_id_for(KEY) == KEY  # skylane's keys name their run
    assert job_id_for("UPPER").startswith("skl-")
    assert len({execution_token_for(key) for key in keys}) > len(keys) - 3
    with pytest.raises(ValueError):
        job_id_for("")


def test_build_refuses_ids_that_are_not_cloud_run_ids() -> None:
    _, config = templates.resolve_job_configuration(
        default_template(), {"image": IMAGE, "region": "us-central1"}
    )
    for job_id in ("Not-Valid", "x" * (MAX_JOB_ID_LENGTH + 1), "ends-"):
        with pytest.raises(ValueError):
            build_job_request(config, run_env={}, job_id=job_id, execution_token="abcd1234")


def test_label_value_makes_any_text_a_valid_label_value() -> None:
    assert label_value("etl/Nightly") == "etl_nightly"
    assert label_value("x" * 100) == "x" * 63
    assert label_value(str(RUN_ID)) == str(RUN_ID)


# --- secrets ---------------------------------------------------------------------------------


def test_describe_masks_the_run_token_and_secret_looking_values() -> None:
    request = build(
        {
            **typical_variables(),
            "env": {"MY_API_KEY": "abc123-plain-secret", "LOG_LEVEL": "debug"},
        }
    )
    described = describe_request(request)
    text = json.dumps(described)
    assert TOKEN not in text and "abc123-plain-secret" not in text
    assert TOKEN not in repr(request) and TOKEN not in str(request)
    env = {
        item["name"]: item
        for item in described["create_job"]["job"]["template"]["template"]["containers"][0]["env"]
    }
    assert env["SKYLANE_RUN_TOKEN"]["value"] == MASK
    assert env["MY_API_KEY"]["value"] == MASK
    assert env["LOG_LEVEL"]["value"] == "debug"
    assert env["SKYLANE_RUN_ID"]["value"] == str(RUN_ID)
    # A Secret Manager reference is not a secret: it is shown.
    assert env["DB_PASSWORD"]["valueSource"]["secretKeyRef"] == {
        "secret": "prod-db",
        "version": "3",
    }
    assert described["create_job"]["parent"] == "projects/my-project/locations/europe-west1"
    assert described["create_job"]["job_id"] == KEY
    assert described["provider"] == "cloud-run"
    assert TOKEN in request.secret_values()
    # The request itself still carries the token: it is what Cloud Run must receive.
    assert env_of(request)["SKYLANE_RUN_TOKEN"] == TOKEN


def test_describe_of_a_request_without_project_says_where_it_comes_from() -> None:
    described = describe_request(build({}))
    assert described["project"] is None
    assert described["create_job"]["parent"].startswith("projects/<project of the pool's")

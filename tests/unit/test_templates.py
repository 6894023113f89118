"""Base job templates: validation, job variable merging and rendering."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from skylane.errors import InvalidInput
from skylane.templates import (
    merge_job_variables,
    placeholders,
    render,
    resolve_job_configuration,
    validate_base_job_template,
    validate_job_variables,
)

BLOCK_DOCUMENT = {"$ref": {"block_document_id": "6c2f1f0e-0000-4000-8000-000000000001"}}


def ecs_template() -> dict[str, Any]:
    """An ECS template in the shape Prefect exports: definitions, allOf + $ref, block refs."""
    return {
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "aws_credentials": "{{ aws_credentials }}",
            "registry_credentials": "{{ prefect.blocks.aws-credentials.prod-registry }}",
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
            },
            "configure_cloudwatch_logs": "{{ configure_cloudwatch_logs }}",
            "network_configuration": "{{ network_configuration }}",
            "task_start_timeout_seconds": "{{ task_start_timeout_seconds }}",
        },
        "variables": {
            "description": "Variables for templating an ECS job.",
            "type": "object",
            "properties": {
                "name": {"title": "Name", "type": "string"},
                "env": {
                    "title": "Environment Variables",
                    "type": "object",
                    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
                "labels": {
                    "title": "Labels",
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                },
                "command": {"title": "Command", "type": "string"},
                "aws_credentials": {
                    "title": "AWS Credentials",
                    "description": "The AWS credentials to use to connect to ECS.",
                    "allOf": [{"$ref": "#/definitions/AwsCredentials"}],
                    "default": copy.deepcopy(BLOCK_DOCUMENT),
                },
                "task_definition_arn": {"title": "Task Definition Arn", "type": "string"},
                "family": {"title": "Family", "type": "string"},
                "image": {"title": "Image", "type": "string"},
                "launch_type": {
                    "title": "Launch Type",
                    "default": "FARGATE",
                    "enum": ["FARGATE", "EC2", "EXTERNAL", "FARGATE_SPOT"],
                    "type": "string",
                },
                "cpu": {"title": "CPU", "type": "integer", "default": 1024},
                "memory": {"title": "Memory", "type": "integer", "default": 2048},
                "container_name": {"title": "Container Name", "type": "string"},
                "cluster": {"title": "Cluster", "type": "string"},
                "execution_role_arn": {"title": "Execution Role ARN", "type": "string"},
                "task_role_arn": {"title": "Task Role ARN", "type": "string"},
                "configure_cloudwatch_logs": {
                    "title": "Configure Cloudwatch Logs",
                    "type": "boolean",
                },
                "network_configuration": {"title": "Network Configuration", "type": "object"},
                "task_start_timeout_seconds": {
                    "title": "Task Start Timeout Seconds",
                    "type": "integer",
                    "default": 300,
                },
            },
            "definitions": {
                "AwsClientParameters": {
                    "title": "AwsClientParameters",
                    "type": "object",
                    "properties": {
                        "api_version": {"title": "API Version", "type": "string"},
                        "use_ssl": {"title": "Use SSL", "default": True, "type": "boolean"},
                        "verify": {
                            "title": "Verify",
                            "default": True,
                            "anyOf": [
                                {"type": "boolean"},
                                {"type": "string", "format": "file-path"},
                            ],
                        },
                        "endpoint_url": {"title": "Endpoint URL", "type": "string"},
                    },
                },
                "AwsCredentials": {
                    "title": "AwsCredentials",
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
            },
        },
    }


def cloud_run_v2_template() -> dict[str, Any]:
    """A Cloud Run v2 template as Prefect exports it, with a text-interpolated timeout."""
    return {
        "job_configuration": {
            "credentials": "{{ credentials }}",
            "region": "{{ region }}",
            "job_body": {
                "client": "prefect",
                "launchStage": "{{ launch_stage }}",
                "template": {
                    "template": {
                        "maxRetries": "{{ max_retries }}",
                        "timeout": "{{ timeout }}s",
                        "serviceAccount": "{{ service_account_name }}",
                        "containers": [
                            {
                                "env": [],
                                "image": "{{ image }}",
                                "args": "{{ args }}",
                                "resources": {
                                    "limits": {"cpu": "{{ cpu }}", "memory": "{{ memory }}"}
                                },
                            }
                        ],
                    }
                },
            },
            "timeout": "{{ timeout }}",
        },
        "variables": {
            "type": "object",
            "required": ["credentials"],
            "properties": {
                "region": {"type": "string", "default": "us-central1"},
                "credentials": {
                    "allOf": [{"$ref": "#/definitions/GcpCredentials"}],
                    "default": copy.deepcopy(BLOCK_DOCUMENT),
                },
                "image": {"type": "string"},
                "args": {"type": "array", "items": {"type": "string"}},
                "cpu": {"type": "string"},
                "memory": {"type": "string", "pattern": "^\\d+(?:G|Gi|M|Mi)$"},
                "timeout": {"type": "integer", "default": 600, "minimum": 0, "maximum": 86400},
                "max_retries": {"type": "integer", "default": 0},
                "launch_stage": {"type": "string", "default": "BETA"},
                "service_account_name": {"type": "string"},
            },
            "definitions": {
                "GcpCredentials": {
                    "type": "object",
                    "properties": {
                        "project": {"type": "string"},
                        "service_account_info": {"type": "object", "writeOnly": True},
                    },
                    "block_type_slug": "gcp-credentials",
                }
            },
        },
    }


def template(job_configuration: dict, properties: dict, **variables: Any) -> dict[str, Any]:
    return {
        "job_configuration": job_configuration,
        "variables": {"type": "object", "properties": properties, **variables},
    }


def raises_invalid(fn: Any, *args: Any, **kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as excinfo:
        fn(*args, **kwargs)
    return excinfo.value


# --- render -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [2048, 0.5, {"subnets": ["subnet-1"], "assignPublicIp": "ENABLED"}, ["a", "b"], True, False],
)
def test_whole_string_placeholder_takes_the_value_with_its_type(value: Any) -> None:
    rendered = render({"x": "{{ v }}", "nested": [{"y": "{{v}}"}]}, {"v": value})

    assert rendered == {"x": value, "nested": [{"y": value}]}
    assert type(rendered["x"]) is type(value)


def test_whole_string_placeholder_with_none_value_keeps_the_key_as_null() -> None:
    assert render({"x": "{{ v }}"}, {"v": None}) == {"x": None}


def test_placeholder_inside_a_longer_string_is_interpolated_as_text() -> None:
    job_configuration = {
        "timeout": "{{ timeout }}s",
        "family": "prefect-{{ flow }}-{{flow}}",
        "spot": "spot={{ spot }}",
        "network": "net: {{ network }}",
        "tags": "tags={{ tags }}",
        "empty": "[{{ nothing }}]",
    }
    values = {
        "timeout": 600,
        "flow": "etl",
        "spot": True,
        "network": {"subnets": ["s-1"]},
        "tags": ["a", "b"],
        "nothing": None,
    }

    assert render(job_configuration, values) == {
        "timeout": "600s",
        "family": "prefect-etl-etl",
        "spot": "spot=True",
        "network": 'net: {"subnets": ["s-1"]}',
        "tags": 'tags=["a", "b"]',
        "empty": "[]",
    }


def test_values_are_substituted_once_and_never_expanded_again() -> None:
    values = {"command": "echo {{ secret }}", "secret": "hunter2"}

    rendered = render({"whole": "{{ command }}", "inline": "run: {{ command }}"}, values)

    assert rendered == {"whole": "echo {{ secret }}", "inline": "run: echo {{ secret }}"}


def test_no_attribute_access_or_filter_is_evaluated() -> None:
    values = {"a": {"b": "attribute"}, "name": "x"}

    rendered = render({"dotted": "{{ a.b }}", "filter": "{{ name | upper }}"}, values)

    # "a.b" is a name of its own (absent here), and a filter is not a placeholder at all.
    assert rendered == {"filter": "{{ name | upper }}"}
    assert render({"dotted": "{{ a.b }}"}, {"a.b": "literal"}) == {"dotted": "literal"}


def test_absent_variable_removes_its_key_and_list_item() -> None:
    job_configuration = {
        "image": "{{ image }}",
        "taskRoleArn": "{{ task_role_arn }}",
        "args": ["run", "{{ extra_arg }}", "{{ flow }}"],
        "family": "prefect-{{ family }}",
    }

    rendered = render(job_configuration, {"image": "repo/img:1", "flow": "etl"})

    assert rendered == {"image": "repo/img:1", "args": ["run", "etl"], "family": "prefect-"}
    assert "taskRoleArn" not in rendered


def test_prefect_block_references_render_as_absent() -> None:
    job_configuration = {
        "credentials": "{{ prefect.blocks.aws-credentials.prod }}",
        "aws_credentials": "{{ aws_credentials }}",
        "label": "creds={{ prefect.blocks.aws-credentials.prod }}",
    }
    values = {"aws_credentials": copy.deepcopy(BLOCK_DOCUMENT), "prefect.blocks": "nope"}

    assert render(job_configuration, values) == {"label": "creds="}


def test_keys_are_never_rendered() -> None:
    assert render({"{{ k }}": "{{ v }}"}, {"k": "key", "v": 1}) == {"{{ k }}": 1}


def test_render_does_not_mutate_or_share_its_inputs() -> None:
    job_configuration = {"net": "{{ net }}", "list": ["{{ absent }}", {"a": "{{ n }}"}]}
    values = {"net": {"subnets": ["s-1"]}, "n": 1}
    before = copy.deepcopy((job_configuration, values))

    rendered = render(job_configuration, values)
    rendered["net"]["subnets"].append("s-2")

    assert (job_configuration, values) == before


# --- placeholders -----------------------------------------------------------------------------


def test_placeholders_lists_every_variable_referenced_in_values() -> None:
    job_configuration = {
        "{{ not_a_key_placeholder }}": "{{image}}",
        "spec": {"containers": [{"cpu": "{{ cpu }}", "name": "c-{{ name }}-{{ cpu }}"}]},
        "creds": "{{ prefect.blocks.aws-credentials.x }}",
        "count": 3,
    }

    assert placeholders(job_configuration) == {"image", "cpu", "name"}


# --- merge_job_variables ----------------------------------------------------------------------


SCHEMA = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {"type": "string"},
        "cpu": {"type": "integer", "default": 256},
        "memory": {"type": "integer", "default": 512},
        "region": {"type": "string", "default": "eu-west-1"},
        "env": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "default": {"LOG_LEVEL": "INFO", "TZ": "UTC"},
        },
    },
}


def test_merge_precedence_is_run_over_deployment_over_default() -> None:
    merged = merge_job_variables(SCHEMA, {"cpu": 512, "memory": 1024}, {"cpu": 2048})

    assert merged["cpu"] == 2048
    assert merged["memory"] == 1024
    assert merged["region"] == "eu-west-1"
    assert "image" not in merged


def test_env_is_merged_key_by_key_and_none_removes_a_key() -> None:
    deployment = {"env": {"LOG_LEVEL": "DEBUG", "DB": "postgres://db", "TZ": None}}
    run = {"env": {"RUN_ONLY": "1", "DB": None}}

    merged = merge_job_variables(SCHEMA, deployment, run)

    assert merged["env"] == {"LOG_LEVEL": "DEBUG", "RUN_ONLY": "1"}


def test_env_none_layer_and_none_layers_change_nothing() -> None:
    merged = merge_job_variables(SCHEMA, None, {"env": None}, {"env": {"A": "1"}})

    assert merged["env"] == {"LOG_LEVEL": "INFO", "TZ": "UTC", "A": "1"}


def test_merge_does_not_mutate_or_share_its_inputs() -> None:
    schema = copy.deepcopy(SCHEMA)
    deployment = {"env": {"A": "1"}, "labels": {"team": "data"}}
    run = {"env": {"A": None}}
    before = copy.deepcopy((schema, deployment, run))

    merged = merge_job_variables(schema, deployment, run)
    merged["env"]["NEW"] = "x"
    merged["labels"]["team"] = "changed"

    assert (schema, deployment, run) == before


def test_merge_rejects_a_layer_that_is_not_an_object() -> None:
    error = raises_invalid(merge_job_variables, SCHEMA, ["cpu", 1])

    assert error.field == "job_variables"


# --- validate_job_variables -------------------------------------------------------------------


def test_wrong_type_names_the_variable_path() -> None:
    error = raises_invalid(validate_job_variables, SCHEMA, {"image": "img", "cpu": "lots"})

    assert error.field == "job_variables.cpu"
    assert "job_variables.cpu: 'lots' is not of type 'integer'" in error.message
    assert error.details["errors"] == [
        {
            "field": "job_variables.cpu",
            "message": "job_variables.cpu: 'lots' is not of type 'integer'",
        }
    ]


def test_missing_required_variable_names_the_variable_not_its_parent() -> None:
    error = raises_invalid(validate_job_variables, SCHEMA, {"cpu": 1})

    assert error.field == "job_variables.image"


def test_nested_env_error_names_the_env_key_and_all_errors_are_listed() -> None:
    values = {"image": "img", "cpu": 1.5, "env": {"FOO": 1}}

    error = raises_invalid(validate_job_variables, SCHEMA, values, field="run.job_variables")

    fields = {e["field"] for e in error.details["errors"]}
    assert fields == {"run.job_variables.cpu", "run.job_variables.env.FOO"}
    assert error.field in fields
    assert all(e["message"].startswith(e["field"] + ": ") for e in error.details["errors"])


def test_valid_variables_pass() -> None:
    assert validate_job_variables(SCHEMA, merge_job_variables(SCHEMA, {"image": "img"})) is None


def test_format_is_checked() -> None:
    schema = {"type": "object", "properties": {"owner": {"type": "string", "format": "email"}}}

    error = raises_invalid(validate_job_variables, schema, {"owner": "not-an-email"})

    assert error.field == "job_variables.owner"


def test_long_values_are_truncated_in_messages() -> None:
    secret = "s3cr3t" * 50

    error = raises_invalid(validate_job_variables, SCHEMA, {"image": "i", "cpu": secret})

    assert error.field == "job_variables.cpu"
    assert secret[:81] not in error.message
    assert "…" in error.message
    assert secret[:81] not in str(error.details)
    assert len(error.message) < 250


def test_write_only_values_are_not_echoed() -> None:
    values = {"aws_credentials": {"aws_secret_access_key": ["AKIA-very-secret"]}}

    error = raises_invalid(validate_job_variables, ecs_template()["variables"], values)

    assert error.field == "job_variables.aws_credentials.aws_secret_access_key"
    assert "very-secret" not in str(error.to_dict())


# --- validate_base_job_template ---------------------------------------------------------------


@pytest.mark.parametrize("not_an_object", [None, "text", ["job_configuration"], 3])
def test_template_must_be_an_object(not_an_object: object) -> None:
    error = raises_invalid(validate_base_job_template, not_an_object)

    assert error.field == "base_job_template"


@pytest.mark.parametrize("missing", ["job_configuration", "variables"])
def test_template_needs_job_configuration_and_variables(missing: str) -> None:
    tpl = template({}, {})
    del tpl[missing]

    error = raises_invalid(validate_base_job_template, tpl, field="pool.base_job_template")

    assert error.field == f"pool.base_job_template.{missing}"


def test_job_configuration_must_be_an_object() -> None:
    error = raises_invalid(validate_base_job_template, {"job_configuration": [], "variables": {}})

    assert error.field == "base_job_template.job_configuration"


def test_variables_must_be_a_valid_json_schema() -> None:
    tpl = template({"cpu": "{{ cpu }}"}, {"cpu": {"type": "integr"}})

    error = raises_invalid(validate_base_job_template, tpl)

    assert error.field == "base_job_template.variables.properties.cpu.type"
    assert error.message.startswith("base_job_template.variables.properties.cpu.type: ")


def test_variables_must_describe_an_object() -> None:
    tpl = {"job_configuration": {}, "variables": {"type": "string"}}

    error = raises_invalid(validate_base_job_template, tpl)

    assert error.field == "base_job_template.variables.type"


def test_variables_properties_must_be_an_object() -> None:
    tpl = {"job_configuration": {}, "variables": {"type": "object", "properties": ["cpu"]}}

    error = raises_invalid(validate_base_job_template, tpl)

    assert error.field == "base_job_template.variables.properties"


def test_unknown_placeholder_names_where_it_appears_and_the_known_variables() -> None:
    tpl = ecs_template()
    tpl["job_configuration"]["task_definition"]["containerDefinitions"][0]["image"] = "{{ imagee }}"

    error = raises_invalid(validate_base_job_template, tpl)

    where = "base_job_template.job_configuration.task_definition.containerDefinitions[0].image"
    assert error.field == where
    assert "imagee" in error.message
    assert "image, labels, launch_type" in error.message
    assert error.details["placeholder"] == "imagee"
    assert "image" in error.details["known_variables"]


def test_dotted_placeholder_is_a_name_not_an_attribute_access() -> None:
    properties = {"a": {"type": "object"}}

    error = raises_invalid(validate_base_job_template, template({"x": "{{ a.b }}"}, properties))
    assert error.field == "base_job_template.job_configuration.x"

    literal = template({"x": "{{ a.b }}"}, {"a.b": {"type": "string"}})
    assert validate_base_job_template(literal) is literal


def test_unresolvable_ref_is_rejected_where_it_appears() -> None:
    properties = {"creds": {"allOf": [{"$ref": "#/definitions/Missing"}]}}

    error = raises_invalid(validate_base_job_template, template({}, properties))

    assert error.field == "base_job_template.variables.properties.creds.allOf[0].$ref"


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that serves a schema and records every request it receives."""
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            body = json.dumps({"type": "string"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/schema.json", requests
    finally:
        server.shutdown()
        server.server_close()


def test_remote_ref_is_rejected_and_never_fetched(
    schema_server: tuple[str, list[str]],
) -> None:
    url, requests = schema_server
    properties = {"x": {"$ref": url}}

    error = raises_invalid(validate_base_job_template, template({}, properties))
    assert error.field == "base_job_template.variables.properties.x.$ref"

    # Even for a template that skipped validation, validating variables fetches nothing.
    schema = {"type": "object", "properties": properties}
    error = raises_invalid(validate_job_variables, schema, {"x": "value"})
    assert error.field == "base_job_template.variables"
    assert requests == []


def test_valid_template_is_returned_unchanged() -> None:
    tpl = ecs_template()
    before = copy.deepcopy(tpl)

    assert validate_base_job_template(tpl) is tpl
    assert tpl == before


# --- Prefect templates end to end -------------------------------------------------------------


def test_prefect_ecs_template_validates_and_renders() -> None:
    tpl = ecs_template()
    before = copy.deepcopy(tpl)
    deployment = {
        "image": "123.dkr.ecr.eu-west-1.amazonaws.com/flows@sha256:abc",
        "cpu": 512,
        "env": {"LOG_LEVEL": "INFO", "DB_HOST": "db.internal"},
        "family": "etl",
    }
    run = {"cpu": 2048, "env": {"LOG_LEVEL": "DEBUG", "DB_HOST": None}, "labels": {"run": "r1"}}
    before_layers = copy.deepcopy((deployment, run))

    validate_base_job_template(tpl)
    values, rendered = resolve_job_configuration(tpl, deployment, run)

    assert values["cpu"] == 2048 and values["memory"] == 2048
    task_definition = rendered["task_definition"]
    assert task_definition["containerDefinitions"] == [{"image": deployment["image"]}]
    assert task_definition["cpu"] == 2048 and task_definition["memory"] == 2048
    assert task_definition["family"] == "etl"
    assert "executionRoleArn" not in task_definition
    request = rendered["task_run_request"]
    assert request["launchType"] == "FARGATE"
    assert request["tags"] == {"run": "r1"}
    assert request["overrides"]["containerOverrides"][0]["environment"] == {"LOG_LEVEL": "DEBUG"}
    assert "taskDefinition" not in request and "cluster" not in request
    # Block references are ignored in favour of the pool's credentials.
    assert "aws_credentials" not in rendered
    assert "registry_credentials" not in rendered
    assert rendered["task_start_timeout_seconds"] == 300
    assert (tpl, deployment, run) == (before, *before_layers)


def test_prefect_ecs_template_follows_refs_into_definitions_when_validating() -> None:
    run = {"aws_credentials": {"aws_client_parameters": {"use_ssl": "yes"}}}

    error = raises_invalid(resolve_job_configuration, ecs_template(), run)

    assert error.field == "job_variables.aws_credentials.aws_client_parameters.use_ssl"


def test_prefect_cloud_run_v2_template_validates_and_renders() -> None:
    tpl = cloud_run_v2_template()

    validate_base_job_template(tpl)
    _, rendered = resolve_job_configuration(
        tpl, {"image": "europe-docker.pkg.dev/p/r/flows:1", "args": ["run"]}, {"memory": "2Gi"}
    )

    inner = rendered["job_body"]["template"]["template"]
    assert inner["timeout"] == "600s"
    assert rendered["timeout"] == 600
    assert inner["maxRetries"] == 0
    assert inner["containers"][0]["args"] == ["run"]
    assert inner["containers"][0]["resources"] == {"limits": {"memory": "2Gi"}}
    assert "serviceAccount" not in inner
    assert "credentials" not in rendered


def test_resolve_reports_invalid_job_variables_with_their_path() -> None:
    error = raises_invalid(resolve_job_configuration, cloud_run_v2_template(), {"memory": "lots"})

    assert error.field == "job_variables.memory"


def test_resolve_reports_an_invalid_template() -> None:
    error = raises_invalid(resolve_job_configuration, {"job_configuration": {}})

    assert error.field == "base_job_template.variables"

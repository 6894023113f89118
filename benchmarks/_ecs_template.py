"""A realistic Prefect-ECS-shaped base job template (the `ecs:push` shape users bring over).

It follows the layout of Prefect's ECS worker template: a `task_definition` with
`containerDefinitions`, a `task_run_request` with `overrides.containerOverrides`, network and
CloudWatch options, a block document default for the credentials and a `$ref` into
`definitions`, with 28 variables in all. It is only data for the template benchmark.
"""

from __future__ import annotations

from typing import Any

ECS_TEMPLATE: dict[str, Any] = {
    "job_configuration": {
        "name": "{{ name }}",
        "env": "{{ env }}",
        "labels": "{{ labels }}",
        "command": "{{ command }}",
        "aws_credentials": "{{ aws_credentials }}",
        "task_definition": {
            "containerDefinitions": [
                {
                    "image": "{{ image }}",
                    "name": "{{ container_name }}",
                    "essential": True,
                    "memory": "{{ memory }}",
                    "cpu": "{{ cpu }}",
                    "environment": [{"name": "SKYLANE_POOL", "value": "ecs-{{ cluster }}"}],
                    "logConfiguration": {
                        "logDriver": "awslogs",
                        "options": {
                            "awslogs-group": "{{ cloudwatch_logs_prefix }}/{{ family }}",
                            "awslogs-region": "{{ region }}",
                            "awslogs-stream-prefix": "{{ name }}",
                        },
                    },
                }
            ],
            "cpu": "{{ cpu }}",
            "family": "{{ family }}",
            "memory": "{{ memory }}",
            "executionRoleArn": "{{ execution_role_arn }}",
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
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
            "networkConfiguration": "{{ network_configuration }}",
        },
        "configure_cloudwatch_logs": "{{ configure_cloudwatch_logs }}",
        "cloudwatch_logs_options": "{{ cloudwatch_logs_options }}",
        "cloudwatch_logs_prefix": "{{ cloudwatch_logs_prefix }}",
        "stream_output": "{{ stream_output }}",
        "task_start_timeout_seconds": "{{ task_start_timeout_seconds }}",
        "task_watch_poll_interval": "{{ task_watch_poll_interval }}",
        "auto_deregister_task_definition": "{{ auto_deregister_task_definition }}",
        "vpc_id": "{{ vpc_id }}",
        "container_name": "{{ container_name }}",
        "cluster": "{{ cluster }}",
        "match_latest_revision_in_family": "{{ match_latest_revision_in_family }}",
        "api_key_secret_arn": "{{ api_key_secret_arn }}",
    },
    "variables": {
        "type": "object",
        "properties": {
            "name": {"title": "Name", "description": "Name given to the task.", "type": "string"},
            "env": {
                "title": "Environment Variables",
                "description": "Environment variables for the flow run container.",
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
            "labels": {
                "title": "Labels",
                "description": "Labels applied to the task as tags.",
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
            "command": {
                "title": "Command",
                "description": "The command to start the run; defaults to the skylane runtime.",
                "type": "string",
            },
            "aws_credentials": {
                "title": "AWS Credentials",
                "description": "Credentials reference; Prefect stores a block document here.",
                "allOf": [{"$ref": "#/definitions/AwsCredentials"}],
                "default": {"$ref": {"block_document_id": "5c4c7c52-3b59-4a2d-9b8f-f4b2b1f7a0c1"}},
            },
            "task_definition_arn": {
                "title": "Task Definition Arn",
                "description": "An existing task definition to use instead of registering one.",
                "type": "string",
            },
            "family": {
                "title": "Family",
                "description": "Task definition family.",
                "type": "string",
                "default": "skylane",
            },
            "image": {
                "title": "Image",
                "description": "The image of the flow run container.",
                "type": "string",
            },
            "launch_type": {
                "title": "Launch Type",
                "description": "The type of ECS task run infrastructure.",
                "enum": ["FARGATE", "EC2", "EXTERNAL", "FARGATE_SPOT"],
                "type": "string",
                "default": "FARGATE",
            },
            "capacity_provider_strategy": {
                "title": "Capacity Provider Strategy",
                "description": "The capacity provider strategy to use when running the task.",
                "type": "array",
                "items": {"$ref": "#/definitions/CapacityProvider"},
            },
            "cpu": {
                "title": "CPU",
                "description": "CPU units for the task (1024 = one vCPU).",
                "type": "integer",
                "default": 1024,
                "minimum": 256,
            },
            "memory": {
                "title": "Memory",
                "description": "Memory in MiB for the task.",
                "type": "integer",
                "default": 2048,
                "minimum": 512,
            },
            "container_name": {
                "title": "Container Name",
                "description": "Name of the flow run container.",
                "type": "string",
                "default": "skylane",
            },
            "api_key_secret_arn": {
                "title": "API Key Secret ARN",
                "description": "Secrets Manager ARN injected as a secret environment variable.",
                "type": "string",
            },
            "task_role_arn": {
                "title": "Task Role ARN",
                "description": "The role the flow run assumes.",
                "type": "string",
            },
            "execution_role_arn": {
                "title": "Execution Role ARN",
                "description": "The role ECS uses to pull the image and write logs.",
                "type": "string",
            },
            "cluster": {
                "title": "Cluster",
                "description": "ECS cluster name or ARN.",
                "type": "string",
                "default": "default",
            },
            "region": {
                "title": "Region",
                "description": "AWS region of the cluster.",
                "type": "string",
                "default": "eu-west-1",
                "pattern": "^[a-z]{2}(-[a-z]+)+-\\d$",
            },
            "vpc_id": {
                "title": "VPC ID",
                "description": "The AWS VPC to link the task run to.",
                "type": "string",
            },
            "configure_cloudwatch_logs": {
                "title": "Configure Cloudwatch Logs",
                "description": "Send the container's output to CloudWatch Logs.",
                "type": "boolean",
                "default": True,
            },
            "cloudwatch_logs_options": {
                "title": "Cloudwatch Logs Options",
                "description": "Extra awslogs options.",
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
            "cloudwatch_logs_prefix": {
                "title": "Cloudwatch Logs Prefix",
                "description": "Log group prefix.",
                "type": "string",
                "default": "/skylane",
            },
            "network_configuration": {
                "title": "Network Configuration",
                "description": "awsvpcConfiguration of the task run request.",
                "type": "object",
                "properties": {
                    "awsvpcConfiguration": {
                        "type": "object",
                        "properties": {
                            "subnets": {"type": "array", "items": {"type": "string"}},
                            "securityGroups": {"type": "array", "items": {"type": "string"}},
                            "assignPublicIp": {"enum": ["ENABLED", "DISABLED"]},
                        },
                        "required": ["subnets"],
                    }
                },
            },
            "stream_output": {
                "title": "Stream Output",
                "description": "Stream the container's output to the control plane.",
                "type": "boolean",
                "default": True,
            },
            "task_start_timeout_seconds": {
                "title": "Task Start Timeout Seconds",
                "description": "How long to wait for the task to start.",
                "type": "integer",
                "default": 300,
            },
            "task_watch_poll_interval": {
                "title": "Task Watch Poll Interval",
                "description": "Seconds between task status polls.",
                "type": "number",
                "default": 5.0,
            },
            "auto_deregister_task_definition": {
                "title": "Auto Deregister Task Definition",
                "description": "Deregister the task definition once the run ends.",
                "type": "boolean",
                "default": False,
            },
            "match_latest_revision_in_family": {
                "title": "Match Latest Revision In Family",
                "description": "Reuse the latest matching task definition revision.",
                "type": "boolean",
                "default": False,
            },
        },
        "definitions": {
            "AwsClientParameters": {
                "title": "AwsClientParameters",
                "type": "object",
                "properties": {
                    "api_version": {"title": "API Version", "type": "string"},
                    "use_ssl": {"title": "Use SSL", "default": True, "type": "boolean"},
                    "verify": {"title": "Verify", "default": True, "type": "boolean"},
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
                    "profile_name": {"title": "Profile Name", "type": "string"},
                    "aws_client_parameters": {"$ref": "#/definitions/AwsClientParameters"},
                },
            },
            "CapacityProvider": {
                "title": "CapacityProvider",
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

# What a deployment and a run typically add on top of the defaults.
ECS_DEPLOYMENT_VARIABLES: dict[str, Any] = {
    "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/flows@sha256:" + "ab" * 32,
    "cluster": "prod",
    "execution_role_arn": "arn:aws:iam::123456789012:role/skylane-execution",
    "task_role_arn": "arn:aws:iam::123456789012:role/skylane-task",
    "vpc_id": "vpc-0a1b2c3d4e5f67890",
    "network_configuration": {
        "awsvpcConfiguration": {
            "subnets": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
            "securityGroups": ["sg-0123456789abcdef0"],
            "assignPublicIp": "DISABLED",
        }
    },
    "labels": {"team": "data", "cost-center": "analytics"},
    "env": {"LOG_LEVEL": "info", "WAREHOUSE": "snowflake://prod"},
    "cloudwatch_logs_options": {"awslogs-create-group": "true"},
}
ECS_RUN_VARIABLES: dict[str, Any] = {
    "cpu": 2048,
    "memory": 4096,
    "env": {"RUN_DATE": "2025-01-31", "LOG_LEVEL": "debug"},
}

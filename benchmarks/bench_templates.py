"""`template_render`: `skylane.templates.resolve_job_configuration` in-process, for the default
templates of `process:push` and `ecs:push` (the Prefect-ECS shape), plus its three steps:

- `validate_base_job_template` (is the template itself well formed: JSON Schema meta-check,
  $refs, placeholders), which `resolve_job_configuration` redoes on every call;
- `merge_job_variables` + `validate_job_variables` (the per-run work);
- `render` (filling the placeholders).

Each measurement times `iterations` back-to-back calls with time.perf_counter and is repeated
`repeats` times; the median repeat is reported. Cheap steps get 2000 iterations per repeat. The
full call and the template check cost milliseconds each, so they get as many iterations as fit
in about `seconds_per_repeat` (capped at 2000): 2000 iterations x 5 repeats of the ECS-shaped
template alone would take minutes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from skylane import templates
from skylane.adapters.ecs import EcsAdapter
from skylane.adapters.process import ProcessAdapter

# What a deployment and a run typically set on an ECS pool.
ECS_DEPLOYMENT_VARIABLES: dict[str, Any] = {
    "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/flows@sha256:" + "ab" * 32,
    "cluster": "prod",
    "execution_role_arn": "arn:aws:iam::123456789012:role/skylane-execution",
    "task_role_arn": "arn:aws:iam::123456789012:role/skylane-task",
    "network_configuration": {
        "subnets": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
        "securityGroups": ["sg-0123456789abcdef0"],
        "assignPublicIp": "DISABLED",
    },
    "labels": {"team": "data", "cost-center": "analytics"},
    "env": {"LOG_LEVEL": "info", "DB_HOST": "db.internal"},
    "secrets": {"DB_PASSWORD": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"},
}
ECS_RUN_VARIABLES: dict[str, Any] = {
    "cpu": 2048,
    "memory": 4096,
    "env": {"RUN_DATE": "2025-01-31", "LOG_LEVEL": "debug"},
}

MAX_ITERATIONS = 2000


def _per_call_us(call: Callable[[], object], iterations: int, repeats: int) -> dict[str, Any]:
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            call()
        per_call.append((time.perf_counter() - start) / iterations * 1e6)
    median = statistics.median(per_call)
    return {
        "iterations": iterations,
        "repeats": repeats,
        "median_us_per_call": round(median, 1),
        "min_us_per_call": round(min(per_call), 1),
        "max_us_per_call": round(max(per_call), 1),
        "calls_per_s": round(1e6 / median, 1),
    }


def _iterations_for(call: Callable[[], object], seconds: float) -> int:
    start = time.perf_counter()
    for _ in range(5):
        call()
    estimate = (time.perf_counter() - start) / 5
    return max(20, min(MAX_ITERATIONS, int(seconds / max(estimate, 1e-9))))


def _measure(
    template: dict[str, Any], layers: tuple[dict[str, Any], ...], repeats: int, seconds: float
) -> dict[str, Any]:
    variables, job_configuration = template["variables"], template["job_configuration"]
    values = templates.merge_job_variables(variables, *layers)

    def resolve() -> object:
        return templates.resolve_job_configuration(template, *layers)

    def check_template() -> object:
        return templates.validate_base_job_template(template)

    def merge_and_validate() -> None:
        templates.validate_job_variables(
            variables, templates.merge_job_variables(variables, *layers)
        )

    def render() -> object:
        return templates.render(job_configuration, values)

    resolve()  # fail early, and warm any caches the libraries keep
    return {
        "variables": len(variables.get("properties", {})),
        "placeholders": len(templates.placeholders(job_configuration)),
        "resolve_job_configuration": _per_call_us(
            resolve, _iterations_for(resolve, seconds), repeats
        ),
        "validate_base_job_template": _per_call_us(
            check_template, _iterations_for(check_template, seconds), repeats
        ),
        "merge_and_validate_job_variables": _per_call_us(
            merge_and_validate, MAX_ITERATIONS, repeats
        ),
        "render": _per_call_us(render, MAX_ITERATIONS, repeats),
    }


def template_render(*, repeats: int, seconds_per_repeat: float) -> dict[str, Any]:
    process_layers: tuple[dict[str, Any], ...] = (
        {"working_dir": "/srv/flows", "env": {"LOG_LEVEL": "info"}},
        {"env": {"RUN_DATE": "2025-01-31"}},
    )
    return {
        "method": (
            "in-process; time.perf_counter around `iterations` back-to-back calls, "
            "`repeats` times, median repeat reported"
        ),
        "process_default": _measure(
            ProcessAdapter.default_template(), process_layers, repeats, seconds_per_repeat
        ),
        "ecs_default": _measure(
            EcsAdapter.default_template(),
            (ECS_DEPLOYMENT_VARIABLES, ECS_RUN_VARIABLES),
            repeats,
            seconds_per_repeat,
        ),
    }

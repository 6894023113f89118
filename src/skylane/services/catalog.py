"""The rules for creating and changing pools, deployments and runs.

Everything here validates first and writes second, so a rejected request leaves the store as
it was. The API routers call these functions; so can tests and embedded users.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from skylane import templates
from skylane.adapters import Adapter, adapter_class
from skylane.api.schemas import (
    DeploymentCreate,
    DeploymentUpdate,
    PoolCreate,
    PoolUpdate,
    RunCreate,
)
from skylane.entrypoints import parse_entrypoint, validate_parameters
from skylane.errors import InvalidInput, NotFound
from skylane.models import Deployment, Pool, Run, RunState
from skylane.pool_types import parse_pool_type
from skylane.rate_limits import parse_rate_limits
from skylane.security import is_secret_name
from skylane.services import schedule_rules
from skylane.services.adapters import (
    PREVIEW_RUN_ID,
    job_variable_layers,
    make_adapter,
    preview_context,
    render_run,
)
from skylane.services.urls import api_url_for_runs
from skylane.settings import Settings
from skylane.store.repository import Store


def _variables_schema(pool: Pool) -> dict[str, Any]:
    return pool.base_job_template.get("variables", {})


def _optional_required(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without top-level `required`: deployment-level values may be partial, the
    rest can come with each run."""
    relaxed = copy.deepcopy(schema)
    relaxed.pop("required", None)
    return relaxed


# --- pools ------------------------------------------------------------------------------------


def _check_credentials_reference(
    credentials: dict[str, Any] | None, path: str = "credentials"
) -> None:
    """A pool's credentials say *where* credentials come from (a profile, a role to assume, a
    managed identity); they are stored as they are and returned by the API, so a secret must
    never be one of them."""
    for key, value in (credentials or {}).items():
        field = f"{path}.{key}"
        if is_secret_name(str(key)):
            raise InvalidInput(
                f"{field} looks like a secret; pool credentials are references only (for AWS: "
                "profile, or role_arn with external_id). Give the control plane its secrets "
                "through its environment or your cloud's secret store instead",
                field=field,
            )
        if isinstance(value, dict):
            _check_credentials_reference(value, field)


def _check_dispatch_settings(pool_settings: dict[str, Any] | None) -> None:
    """The pool settings the dispatcher and reconciler read: `rate_limits` (overrides the
    provider's default limits; [] for none) and `start_timeout_seconds`."""
    pool_settings = pool_settings or {}
    if pool_settings.get("rate_limits") is not None:
        parse_rate_limits(pool_settings["rate_limits"], field="settings.rate_limits")
    timeout = pool_settings.get("start_timeout_seconds")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise InvalidInput(
            "start_timeout_seconds must be a positive number of seconds",
            field="settings.start_timeout_seconds",
        )


def _check_fallback(pool_type: str, fallback: str | None) -> None:
    if fallback is not None and not parse_pool_type(pool_type).push:
        raise InvalidInput(
            f"fallback applies to push pools only; a {pool_type} pool is pulled by its workers "
            "already",
            field="fallback",
        )


def create_pool(store: Store, body: PoolCreate) -> Pool:
    pool_type = parse_pool_type(body.type)
    _check_fallback(pool_type.name, body.fallback)
    _check_credentials_reference(body.credentials)
    _check_dispatch_settings(body.settings)
    if body.base_job_template is None:
        template = adapter_class(pool_type.provider).default_template()
    else:
        template = templates.validate_base_job_template(body.base_job_template)
    return store.create_pool(
        name=body.name,
        type=pool_type.name,
        base_job_template=template,
        concurrency_limit=body.concurrency_limit,
        paused=body.paused,
        settings=body.settings,
        credentials=body.credentials,
        description=body.description,
        fallback=body.fallback,
    )


def update_pool(store: Store, settings: Settings, name: str, body: PoolUpdate) -> Pool:
    changes = body.model_dump(exclude_unset=True)
    _check_credentials_reference(changes.get("credentials"))
    _check_dispatch_settings(changes.get("settings"))
    pool = store.get_pool(name)
    _check_fallback(pool.type, changes.get("fallback"))
    if "base_job_template" in changes:
        if changes["base_job_template"] is None:
            changes["base_job_template"] = adapter_class(
                parse_pool_type(pool.type).provider
            ).default_template()
        template = templates.validate_base_job_template(changes["base_job_template"])
        # A template change must not strand existing deployments with job variables or
        # provider requests the new template rejects: refuse it, naming the deployment,
        # rather than fail their runs later.
        candidate = pool.model_copy(update={"base_job_template": template})
        for deployment in store.list_deployments(pool_name=name):
            try:
                _check_deployment(store, settings, candidate, deployment)
            except InvalidInput as exc:
                raise InvalidInput(
                    f"the new template rejects deployment {deployment.full_name}: {exc.message}",
                    field=f"base_job_template (deployment {deployment.full_name}: {exc.field})",
                ) from exc
    return store.update_pool(name, changes)


def delete_pool(store: Store, settings: Settings, name: str) -> None:
    """Refuse first if the pool is still in use; then let its adapter remove what it created
    for the pool (a provider error stops here, with the pool kept); then delete it."""
    store.check_pool_deletable(name)
    make_adapter(store, settings, store.get_pool(name)).teardown()
    store.delete_pool(name)


# --- deployments ------------------------------------------------------------------------------


def _pool_for(store: Store, pool_name: str) -> Pool:
    try:
        return store.get_pool(pool_name)
    except NotFound as exc:
        raise InvalidInput(
            f"no pool named {pool_name!r}; create it first with "
            f"'skylane pool create {pool_name} --type TYPE'",
            field="pool",
        ) from exc


def _check_parameter_schema(schema: dict[str, Any]) -> None:
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise InvalidInput(
            f"not a valid JSON Schema: {exc.message}",
            field="parameter_schema" + (f".{path}" if path else ""),
        ) from exc


def _check_deployment(store: Store, settings: Settings, pool: Pool, deployment: Deployment) -> None:
    _check_parameter_schema(deployment.parameter_schema)
    # Defaults may leave required parameters to each run.
    validate_parameters(_optional_required(deployment.parameter_schema), deployment.parameters)
    variables = _variables_schema(pool)
    values = templates.merge_job_variables(variables, *job_variable_layers(deployment))
    templates.validate_job_variables(_optional_required(variables), values)
    # A request the provider would refuse (a Fargate cpu/memory pair, a malformed ARN...) is
    # refused now, before any cloud call; unless required variables are still left to runs.
    if all(name in values for name in variables.get("required", [])):
        render_request(store, settings, pool, deployment, None)


def render_request(
    store: Store, settings: Settings, pool: Pool, deployment: Deployment, run: Run | None
) -> tuple[Adapter, Any]:
    """The adapter and the exact provider request a run of `deployment` (or `run`) would
    send now; nothing is sent."""
    adapter = make_adapter(store, settings, pool)
    context = preview_context(pool, deployment, api_url_for_runs(settings))
    # Stored templates were checked when written (create_pool/update_pool); re-checking one
    # against the JSON Schema meta-schema costs 3-16 ms, far more than the rest of a request.
    return adapter, render_run(adapter, pool, deployment, run, context, template_checked=True)


def _unsaved_deployment(pool: Pool, fields: dict[str, Any]) -> Deployment:
    now = datetime.now(UTC)
    return Deployment(
        id=PREVIEW_RUN_ID, pool_name=pool.name, created_at=now, updated_at=now, **fields
    )


def create_deployment(store: Store, settings: Settings, body: DeploymentCreate) -> Deployment:
    parse_entrypoint(body.entrypoint)
    pool = _pool_for(store, body.pool)
    fields = body.model_dump(exclude={"pool", "schedules"})
    unsaved = _unsaved_deployment(pool, fields)
    _check_deployment(store, settings, pool, unsaved)
    schedules = [
        schedule_rules.checked_fields(unsaved, schedule, field_prefix=f"schedules[{i}]")
        for i, schedule in enumerate(body.schedules)
    ]
    deployment = store.create_deployment(pool_name=pool.name, schedules=schedules, **fields)
    if schedules:
        created = store.schedules.list(deployment_id=deployment.id)
        schedule_rules.materialize(store, settings, [s.id for s in created])
    return deployment


def update_deployment(
    store: Store, settings: Settings, deployment_id: uuid.UUID, body: DeploymentUpdate
) -> Deployment:
    changes = body.model_dump(exclude_unset=True)
    current = store.get_deployment(deployment_id)
    if "entrypoint" in changes:
        parse_entrypoint(changes["entrypoint"])
    pool = _pool_for(store, changes.get("pool") or current.pool_name)
    updated = {k: v for k, v in changes.items() if k != "pool"}
    _check_deployment(
        store, settings, pool, current.model_copy(update={**updated, "pool_name": pool.name})
    )
    if changes.keys() & {"parameters", "parameter_schema"}:
        schedule_rules.check_deployment_schedules(store, current.model_copy(update=updated))
    if "pool" in changes:
        changes["pool_name"] = changes.pop("pool")
    deployment = store.update_deployment(deployment_id, changes)
    if "parameters" in changes:
        # The store recreated the schedules' runs to come (they copy the parameters).
        restarted = store.schedules.list(deployment_id=deployment.id)
        schedule_rules.materialize(store, settings, [s.id for s in restarted if s.active])
    return deployment


# --- runs ---------------------------------------------------------------------------------------


def _checked_run(
    store: Store, deployment_id: uuid.UUID, body: RunCreate
) -> tuple[Deployment, Pool, Run]:
    """The run `body` asks for, its parameters validated; its job variables are validated by
    rendering it (`render_request`), which every caller does next. Nothing is stored."""
    deployment = store.get_deployment(deployment_id)
    pool = store.get_pool(deployment.pool_name)
    now = datetime.now(UTC)
    run = Run(
        id=PREVIEW_RUN_ID,
        deployment_id=deployment.id,
        deployment_name=deployment.full_name,
        pool_name=pool.name,
        flow_name=deployment.flow_name,
        state=RunState.SCHEDULED,
        parameters={**deployment.parameters, **body.parameters},
        job_variables=body.job_variables,
        scheduled_time=body.scheduled_time or now,
        created_at=now,
        updated_at=now,
    )
    validate_parameters(deployment.parameter_schema, run.parameters)
    return deployment, pool, run


def create_run(store: Store, settings: Settings, deployment_id: uuid.UUID, body: RunCreate) -> Run:
    deployment, pool, run = _checked_run(store, deployment_id, body)
    render_request(store, settings, pool, deployment, run)  # the provider would accept it
    return store.create_run(
        deployment,
        parameters=run.parameters,
        job_variables=body.job_variables,
        scheduled_time=body.scheduled_time,
    )


def preview_run(
    store: Store, settings: Settings, deployment_id: uuid.UUID, body: RunCreate
) -> dict[str, Any]:
    """What `skylane deployment render` shows: the provider requests a run would send."""
    deployment, pool, run = _checked_run(store, deployment_id, body)
    adapter, request = render_request(store, settings, pool, deployment, run)
    return {
        "deployment": deployment.full_name,
        "pool": pool.name,
        "pool_type": pool.type,
        "parameters": run.parameters,
        "request": adapter.describe(request),
    }

"""The rules for creating and changing pools, deployments and runs.

Everything here validates first and writes second, so a rejected request leaves the store as
it was. The API routers call these functions; so can tests and embedded users.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from skylane import templates
from skylane.adapters import adapter_class
from skylane.api.schemas import (
    DeploymentCreate,
    DeploymentUpdate,
    PoolCreate,
    PoolUpdate,
    RunCreate,
)
from skylane.entrypoints import parse_entrypoint, validate_parameters
from skylane.errors import InvalidInput, NotFound
from skylane.models import Deployment, Pool, Run
from skylane.pool_types import parse_pool_type
from skylane.store.repository import Store


def _variables_schema(pool: Pool) -> dict[str, Any]:
    return pool.base_job_template.get("variables", {})


def _optional_required(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without top-level `required`: deployment-level values may be partial, the
    rest can come with each run."""
    relaxed = copy.deepcopy(schema)
    relaxed.pop("required", None)
    return relaxed


def image_layer(deployment: Deployment) -> dict[str, Any] | None:
    """A deployment's image fills the template's `image` variable unless job_variables set it."""
    return {"image": deployment.image} if deployment.image else None


def job_variable_layers(deployment: Deployment, run: Run | None = None) -> list[Any]:
    layers: list[Any] = [image_layer(deployment), deployment.job_variables]
    if run is not None:
        layers.append(run.job_variables)
    return layers


# --- pools ------------------------------------------------------------------------------------


def create_pool(store: Store, body: PoolCreate) -> Pool:
    pool_type = parse_pool_type(body.type)
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
    )


def update_pool(store: Store, name: str, body: PoolUpdate) -> Pool:
    changes = body.model_dump(exclude_unset=True)
    pool = store.get_pool(name)
    if "base_job_template" in changes:
        if changes["base_job_template"] is None:
            changes["base_job_template"] = adapter_class(
                parse_pool_type(pool.type).provider
            ).default_template()
        template = templates.validate_base_job_template(changes["base_job_template"])
        # A template change must not strand existing deployments with job variables the new
        # schema rejects: refuse it, naming the deployment, rather than fail their runs later.
        schema = _optional_required(template.get("variables", {}))
        for deployment in store.list_deployments(pool_name=name):
            values = templates.merge_job_variables(schema, *job_variable_layers(deployment))
            try:
                templates.validate_job_variables(schema, values)
            except InvalidInput as exc:
                raise InvalidInput(
                    f"the new template rejects deployment {deployment.full_name}'s job "
                    f"variables: {exc.message}",
                    field=f"base_job_template (deployment {deployment.full_name}: {exc.field})",
                ) from exc
    return store.update_pool(name, changes)


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


def _check_deployment(
    pool: Pool, *, parameters: dict[str, Any], schema: dict[str, Any], deployment_layers: list[Any]
) -> None:
    _check_parameter_schema(schema)
    # Defaults may leave required parameters to each run.
    validate_parameters(_optional_required(schema), parameters)
    variables = _optional_required(_variables_schema(pool))
    values = templates.merge_job_variables(variables, *deployment_layers)
    templates.validate_job_variables(variables, values)


def create_deployment(store: Store, body: DeploymentCreate) -> Deployment:
    parse_entrypoint(body.entrypoint)
    pool = _pool_for(store, body.pool)
    layers = [{"image": body.image} if body.image else None, body.job_variables]
    _check_deployment(
        pool, parameters=body.parameters, schema=body.parameter_schema, deployment_layers=layers
    )
    return store.create_deployment(
        flow_name=body.flow_name,
        name=body.name,
        pool_name=pool.name,
        entrypoint=body.entrypoint,
        image=body.image,
        parameters=body.parameters,
        parameter_schema=body.parameter_schema,
        job_variables=body.job_variables,
        tags=body.tags,
        description=body.description,
        concurrency_limit=body.concurrency_limit,
        paused=body.paused,
    )


def update_deployment(store: Store, deployment_id: uuid.UUID, body: DeploymentUpdate) -> Deployment:
    changes = body.model_dump(exclude_unset=True)
    current = store.get_deployment(deployment_id)
    if "entrypoint" in changes:
        parse_entrypoint(changes["entrypoint"])
    merged = current.model_copy(update={k: v for k, v in changes.items() if k != "pool"})
    pool = _pool_for(store, changes.get("pool") or current.pool_name)
    _check_deployment(
        pool,
        parameters=merged.parameters,
        schema=merged.parameter_schema,
        deployment_layers=job_variable_layers(merged),
    )
    if "pool" in changes:
        changes["pool_name"] = changes.pop("pool")
    return store.update_deployment(deployment_id, changes)


# --- runs ---------------------------------------------------------------------------------------


def create_run(store: Store, deployment_id: uuid.UUID, body: RunCreate) -> Run:
    deployment = store.get_deployment(deployment_id)
    pool = store.get_pool(deployment.pool_name)
    parameters = {**deployment.parameters, **body.parameters}
    validate_parameters(deployment.parameter_schema, parameters)
    variables = _variables_schema(pool)
    values = templates.merge_job_variables(
        variables, image_layer(deployment), deployment.job_variables, body.job_variables
    )
    templates.validate_job_variables(variables, values)
    return store.create_run(
        deployment,
        parameters=parameters,
        job_variables=body.job_variables,
        scheduled_time=body.scheduled_time,
    )

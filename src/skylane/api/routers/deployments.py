from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Response

from skylane.api.auth import require
from skylane.api.deps import get_settings, get_store
from skylane.api.schemas import DeploymentCreate, DeploymentUpdate, RunCreate
from skylane.models import ApiScope, Deployment, Run
from skylane.services import catalog
from skylane.settings import Settings
from skylane.store.repository import Store

router = APIRouter(prefix="/api", tags=["deployments"])


@router.post(
    "/deployments",
    response_model=Deployment,
    status_code=201,
    dependencies=[Depends(require(ApiScope.DEPLOY))],
)
def create_deployment(
    body: DeploymentCreate,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Deployment:
    return catalog.create_deployment(store, settings, body)


@router.get(
    "/deployments",
    response_model=list[Deployment],
    dependencies=[Depends(require(ApiScope.READ))],
)
def list_deployments(
    pool: str | None = None, store: Store = Depends(get_store)
) -> list[Deployment]:
    return store.list_deployments(pool_name=pool)


@router.get(
    "/deployments/by-name/{flow_name}/{name}",
    response_model=Deployment,
    dependencies=[Depends(require(ApiScope.READ))],
)
def read_deployment_by_name(
    flow_name: str, name: str, store: Store = Depends(get_store)
) -> Deployment:
    return store.get_deployment_by_name(flow_name, name)


@router.get(
    "/deployments/{deployment_id}",
    response_model=Deployment,
    dependencies=[Depends(require(ApiScope.READ))],
)
def read_deployment(deployment_id: uuid.UUID, store: Store = Depends(get_store)) -> Deployment:
    return store.get_deployment(deployment_id)


@router.patch(
    "/deployments/{deployment_id}",
    response_model=Deployment,
    dependencies=[Depends(require(ApiScope.DEPLOY))],
)
def update_deployment(
    deployment_id: uuid.UUID,
    body: DeploymentUpdate,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Deployment:
    return catalog.update_deployment(store, settings, deployment_id, body)


@router.delete(
    "/deployments/{deployment_id}",
    status_code=204,
    dependencies=[Depends(require(ApiScope.DEPLOY))],
)
def delete_deployment(deployment_id: uuid.UUID, store: Store = Depends(get_store)) -> Response:
    store.delete_deployment(deployment_id)
    return Response(status_code=204)


@router.post(
    "/deployments/{deployment_id}/runs",
    response_model=Run,
    status_code=201,
    dependencies=[Depends(require(ApiScope.DEPLOY))],
)
def create_run(
    deployment_id: uuid.UUID,
    body: RunCreate,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Run:
    # The store wakes the dispatchers (in this process and, on PostgreSQL, in others).
    return catalog.create_run(store, settings, deployment_id, body)


@router.post(
    "/deployments/{deployment_id}/render",
    dependencies=[Depends(require(ApiScope.READ))],
)
def render_run(
    deployment_id: uuid.UUID,
    body: RunCreate,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    """The exact provider requests a run with these parameters and job variables would send
    (secrets masked). Nothing is stored and no cloud is called."""
    return catalog.preview_run(store, settings, deployment_id, body)

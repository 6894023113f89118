from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from skylane.adapters import adapter_class
from skylane.api.auth import require
from skylane.api.deps import get_settings, get_store
from skylane.api.schemas import PoolCreate, PoolUpdate
from skylane.models import ApiScope, Pool, PoolStatus, Worker
from skylane.pool_types import parse_pool_type
from skylane.services import catalog
from skylane.services.workers import pool_status
from skylane.settings import Settings
from skylane.store.repository import Store

router = APIRouter(prefix="/api", tags=["pools"])


@router.post(
    "/pools", response_model=Pool, status_code=201, dependencies=[Depends(require(ApiScope.ADMIN))]
)
def create_pool(body: PoolCreate, store: Store = Depends(get_store)) -> Pool:
    return catalog.create_pool(store, body)


@router.get("/pools", response_model=list[Pool], dependencies=[Depends(require(ApiScope.READ))])
def list_pools(store: Store = Depends(get_store)) -> list[Pool]:
    return store.list_pools()


@router.get("/pools/{name}", response_model=Pool, dependencies=[Depends(require(ApiScope.READ))])
def read_pool(name: str, store: Store = Depends(get_store)) -> Pool:
    return store.get_pool(name)


@router.get(
    "/pools/{name}/status",
    response_model=PoolStatus,
    dependencies=[Depends(require(ApiScope.READ))],
)
def read_pool_status(
    name: str, store: Store = Depends(get_store), settings: Settings = Depends(get_settings)
) -> PoolStatus:
    """Ready, paused or not ready (and why), who dispatches its runs, and its workers."""
    return pool_status(store, settings, name)


@router.get(
    "/pools/{name}/workers",
    response_model=list[Worker],
    dependencies=[Depends(require(ApiScope.READ))],
)
def list_workers(
    name: str, store: Store = Depends(get_store), settings: Settings = Depends(get_settings)
) -> list[Worker]:
    return store.list_workers(name, offline_seconds=settings.worker_offline_seconds)


@router.patch("/pools/{name}", response_model=Pool, dependencies=[Depends(require(ApiScope.ADMIN))])
def update_pool(
    name: str,
    body: PoolUpdate,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Pool:
    return catalog.update_pool(store, settings, name, body)


@router.delete("/pools/{name}", status_code=204, dependencies=[Depends(require(ApiScope.ADMIN))])
def delete_pool(
    name: str, store: Store = Depends(get_store), settings: Settings = Depends(get_settings)
) -> Response:
    catalog.delete_pool(store, settings, name)
    return Response(status_code=204)


@router.get(
    "/pool-types/{pool_type}/default-template", dependencies=[Depends(require(ApiScope.READ))]
)
def default_template(pool_type: str) -> dict:
    return adapter_class(parse_pool_type(pool_type, field="pool_type").provider).default_template()

"""Schedules: when a deployment runs by itself. Each answer carries the next times it fires."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Response

from skylane.api.auth import require
from skylane.api.deps import get_settings, get_store
from skylane.api.schemas import ScheduleCreate, ScheduleUpdate
from skylane.models import ApiScope, Schedule
from skylane.services import schedule_rules
from skylane.settings import Settings
from skylane.store.repository import Store

router = APIRouter(prefix="/api", tags=["schedules"])


@router.get(
    "/deployments/{deployment_id}/schedules",
    response_model=list[Schedule],
    dependencies=[Depends(require(ApiScope.READ))],
)
def list_schedules(deployment_id: uuid.UUID, store: Store = Depends(get_store)) -> list[Schedule]:
    return schedule_rules.list_schedules(store, deployment_id)


@router.post(
    "/deployments/{deployment_id}/schedules",
    response_model=Schedule,
    status_code=201,
    dependencies=[Depends(require(ApiScope.DEPLOY))],
)
def create_schedule(
    deployment_id: uuid.UUID,
    body: ScheduleCreate,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Schedule:
    return schedule_rules.create_schedule(store, settings, deployment_id, body)


@router.get(
    "/schedules/{schedule_id}",
    response_model=Schedule,
    dependencies=[Depends(require(ApiScope.READ))],
)
def read_schedule(schedule_id: uuid.UUID, store: Store = Depends(get_store)) -> Schedule:
    return schedule_rules.get_schedule(store, schedule_id)


@router.patch(
    "/schedules/{schedule_id}",
    response_model=Schedule,
    dependencies=[Depends(require(ApiScope.DEPLOY))],
)
def update_schedule(
    schedule_id: uuid.UUID,
    body: ScheduleUpdate,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> Schedule:
    """Change, pause (`active: false`) or resume a schedule. Its runs that have not started
    and are still to come are replaced."""
    return schedule_rules.update_schedule(store, settings, schedule_id, body)


@router.delete(
    "/schedules/{schedule_id}",
    status_code=204,
    dependencies=[Depends(require(ApiScope.DEPLOY))],
)
def delete_schedule(schedule_id: uuid.UUID, store: Store = Depends(get_store)) -> Response:
    schedule_rules.delete_schedule(store, schedule_id)
    return Response(status_code=204)

"""The worker protocol: what a pull worker asks of the control plane.

A worker runs the control plane's own dispatcher and reconciler (`skylane.worker`) with this
API as their store, so each route here is one `Store` call of the exactly-once protocol, limited
to the worker's pool: claim due runs (and recover expired claims) with a lease and an
idempotency key, renew the lease, record the provider's ref or the failure, hand a claim back,
watch the submitted runs, and share the adapters' resource cache. Every route needs a key with
the `worker` scope, and a worker may act only on attempts it claimed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Response
from pydantic import AwareDatetime, BaseModel

from skylane.api.auth import require
from skylane.api.deps import get_settings, get_store
from skylane.api.schemas import (
    AttemptProgress,
    ClaimRequest,
    LeaseRenewal,
    RecoveryRequest,
    ResourceValue,
    SubmissionFailure,
    SubmissionRecord,
    WorkerBeat,
)
from skylane.errors import Forbidden, InvalidInput
from skylane.models import ApiScope, Pool, Run, WorkerRegistration
from skylane.services.workers import check_attempts_are_workers, check_worker_pool
from skylane.settings import Settings
from skylane.store.repository import Claim, Store, Submission
from skylane.store.scope import DispatchScope

router = APIRouter(
    prefix="/api/pools/{pool}/workers/{worker}",
    tags=["workers"],
    dependencies=[Depends(require(ApiScope.WORKER))],
)


class ClaimBatch(BaseModel):
    claims: list[Claim]
    # When the next of the pool's runs becomes due, if one is scheduled (the worker sleeps
    # until then, or its poll interval).
    next_due_at: datetime | None = None


class LeaseAnswer(BaseModel):
    expires_at: datetime | None


class RunToken(BaseModel):
    token: str


def _working_pool(store: Store, pool: str) -> Pool:
    found = store.get_pool(pool)
    check_worker_pool(found)
    return found


@router.post("/heartbeat", response_model=WorkerRegistration)
def heartbeat(
    pool: str, worker: str, body: WorkerBeat, store: Store = Depends(get_store)
) -> WorkerRegistration:
    """Register or keep alive; answers with the pool as it is now."""
    found = _working_pool(store, pool)
    if not worker or len(worker) > 200:
        raise InvalidInput("a worker name has 1 to 200 characters", field="worker")
    beat = store.worker_heartbeat(
        pool, worker, hostname=body.hostname, version=body.version, limit=body.limit
    )
    return WorkerRegistration(worker=beat, pool=found)


@router.post("/stopped", status_code=204)
def stopped(pool: str, worker: str, store: Store = Depends(get_store)) -> Response:
    store.worker_stopped(pool, worker)
    return Response(status_code=204)


@router.post("/claims", response_model=ClaimBatch)
def claim(
    pool: str, worker: str, body: ClaimRequest, store: Store = Depends(get_store)
) -> ClaimBatch:
    found = _working_pool(store, pool)
    scope = DispatchScope.for_worker(found.name, worker)
    limit = body.limit
    if body.worker_limit is not None:
        limit = min(limit, body.worker_limit - store.worker_active_runs(pool, worker))
    now = datetime.now(UTC)
    claims = []
    if limit > 0:
        claims = store.claim_due_runs(
            claimed_by=worker,
            lease_seconds=body.lease_seconds,
            limit=limit,
            missed_before=body.missed_before,
            scope=scope,
            due_by=now + timedelta(seconds=body.prefetch_seconds),
        )
    return ClaimBatch(claims=claims, next_due_at=store.next_due_time(after=now, scope=scope))


@router.post("/recoveries", response_model=list[Claim])
def recover(
    pool: str, worker: str, body: RecoveryRequest, store: Store = Depends(get_store)
) -> list[Claim]:
    """Claims of the pool whose lease ran out before a provider ref was recorded (a worker
    died mid-submit): look the key up (`find`) before submitting again with the same key."""
    found = _working_pool(store, pool)
    return store.expired_claims(
        claimed_by=worker,
        lease_seconds=body.lease_seconds,
        limit=body.limit,
        scope=DispatchScope.for_worker(found.name, worker),
    )


@router.post("/attempts/{key}/renew", response_model=LeaseAnswer)
def renew(
    pool: str, worker: str, key: str, body: LeaseRenewal, store: Store = Depends(get_store)
) -> LeaseAnswer:
    check_attempts_are_workers(store, pool, worker, key)
    return LeaseAnswer(expires_at=store.renew_claim(key, worker, body.lease_seconds))


@router.post("/submissions", status_code=204)
def record_submissions(
    pool: str, worker: str, body: list[SubmissionRecord], store: Store = Depends(get_store)
) -> Response:
    check_attempts_are_workers(store, pool, worker, *(item.key for item in body))
    store.record_submissions([(item.key, item.ref, item.at) for item in body])
    return Response(status_code=204)


@router.post("/attempts/{key}/failure", response_model=Run)
def record_failure(
    pool: str, worker: str, key: str, body: SubmissionFailure, store: Store = Depends(get_store)
) -> Run:
    """A failed submit, as the worker's retry policy decided; also how a stopping worker
    hands a claim back (`retry_at` now, `count_try` false)."""
    check_attempts_are_workers(store, pool, worker, key)
    return store.record_submission_failure(
        key,
        body.error,
        retry_at=body.retry_at,
        same_key=body.same_key,
        count_try=body.count_try,
        message=body.message,
    )


@router.patch("/attempts/{key}", status_code=204)
def update_attempt(
    pool: str, worker: str, key: str, body: AttemptProgress, store: Store = Depends(get_store)
) -> Response:
    check_attempts_are_workers(store, pool, worker, key)
    store.update_attempt(key, **body.model_dump(exclude_unset=True))
    return Response(status_code=204)


@router.get("/watch", response_model=list[Submission])
def watch(
    pool: str,
    worker: str,
    stale_before: AwareDatetime | None = None,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> list[Submission]:
    """What the worker's reconciler checks with the provider: its submitted runs, and those of
    the pool's offline workers, which it adopts."""
    found = _working_pool(store, pool)
    return store.watched_submissions(
        stale_before=stale_before,
        scope=DispatchScope.for_worker(found.name, worker),
        worker_offline_seconds=settings.worker_offline_seconds,
    )


@router.post("/runs/{run_id}/token", response_model=RunToken)
def issue_run_token(
    pool: str, worker: str, run_id: uuid.UUID, store: Store = Depends(get_store)
) -> RunToken:
    """A fresh run token for a recovered claim the worker is about to submit."""
    run = store.get_run(run_id)
    open_attempts = [a for a in run.attempts if a.ended_at is None and a.provider_ref is None]
    if run.pool_name != pool or not any(a.claimed_by == worker for a in open_attempts):
        raise Forbidden(f"run {run_id} has no open claim of worker {worker!r}", field="run_id")
    return RunToken(token=store.issue_run_token(run_id))


# --- the adapters' resource cache, shared with the control plane and every worker -----------


@router.get("/resources/{kind}", response_model=dict[str, str])
def list_resources(
    pool: str, worker: str, kind: str, store: Store = Depends(get_store)
) -> dict[str, str]:
    return store.list_provider_resources(_working_pool(store, pool).id, kind)


@router.get("/resources/{kind}/{key:path}", response_model=ResourceValue | None)
def get_resource(
    pool: str, worker: str, kind: str, key: str, store: Store = Depends(get_store)
) -> ResourceValue | None:
    value = store.get_provider_resource(_working_pool(store, pool).id, kind, key)
    return None if value is None else ResourceValue(value=value)


@router.put("/resources/{kind}/{key:path}", response_model=ResourceValue)
def put_resource(
    pool: str,
    worker: str,
    kind: str,
    key: str,
    body: ResourceValue,
    store: Store = Depends(get_store),
) -> ResourceValue:
    """Store unless a value exists; answers with the value stored (first writer wins)."""
    pool_id = _working_pool(store, pool).id
    return ResourceValue(value=store.put_provider_resource(pool_id, kind, key, body.value))


@router.delete("/resources/{kind}/{key:path}", status_code=204)
def delete_resource(
    pool: str,
    worker: str,
    kind: str,
    key: str,
    store: Store = Depends(get_store),
) -> Response:
    store.delete_provider_resource(_working_pool(store, pool).id, kind, key)
    return Response(status_code=204)

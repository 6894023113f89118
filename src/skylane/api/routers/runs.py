from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from skylane.api.auth import Principal, require, require_run_access
from skylane.api.deps import get_settings, get_store
from skylane.api.schemas import CancelRequest, LogBatch, SourceCommit, StateSet
from skylane.errors import Forbidden, ProviderNotFound
from skylane.models import (
    TERMINAL_STATES,
    ApiScope,
    LogLine,
    Run,
    RunExecution,
    RunState,
    StateResult,
)
from skylane.services.adapters import make_adapter
from skylane.settings import Settings
from skylane.store.repository import LogEntry, Store

router = APIRouter(prefix="/api", tags=["runs"])

# The states a run token may report about its own run: what the runtime in the container knows.
RUN_TOKEN_STATES = frozenset({RunState.RUNNING}) | TERMINAL_STATES
FOLLOW_POLL_SECONDS = 0.3


@router.get("/runs", response_model=list[Run], dependencies=[Depends(require(ApiScope.READ))])
def list_runs(
    pool: str | None = None,
    deployment: uuid.UUID | None = None,
    state: list[RunState] | None = Query(default=None),
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
    order: Literal["newest", "oldest"] = "newest",
    store: Store = Depends(get_store),
) -> list[Run]:
    """Runs by scheduled time (`since` inclusive, `until` exclusive), newest first; `order=
    oldest` lists upcoming runs soonest first."""
    return store.list_runs(
        pool_name=pool,
        deployment_id=deployment,
        states=state,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
        oldest_first=order == "oldest",
    )


@router.get("/runs/{run_id}", response_model=Run)
def read_run(
    run_id: uuid.UUID,
    store: Store = Depends(get_store),
    _: Principal = Depends(require_run_access(ApiScope.READ)),
) -> Run:
    return store.get_run(run_id)


@router.get("/runs/{run_id}/execution", response_model=RunExecution)
def read_execution(
    run_id: uuid.UUID,
    store: Store = Depends(get_store),
    _: Principal = Depends(require_run_access(ApiScope.WORKER)),
) -> RunExecution:
    """What `skylane run execute` needs to run the flow."""
    run = store.get_run(run_id)
    deployment = store.get_deployment(run.deployment_id)
    return RunExecution(
        run_id=run.id,
        flow_name=run.flow_name,
        entrypoint=deployment.entrypoint,
        parameters=run.parameters,
        state=run.state,
        source=deployment.source,
    )


@router.post("/runs/{run_id}/source", response_model=Run)
def record_source_commit(
    run_id: uuid.UUID,
    body: SourceCommit,
    store: Store = Depends(get_store),
    _: Principal = Depends(require_run_access(ApiScope.WORKER)),
) -> Run:
    """The runtime reports the git commit it checked out for a git-sourced deployment."""
    return store.record_source_commit(run_id, body.commit)


@router.post("/runs/{run_id}/state", response_model=StateResult)
def set_state(
    run_id: uuid.UUID,
    body: StateSet,
    store: Store = Depends(get_store),
    principal: Principal = Depends(require_run_access(ApiScope.WORKER)),
) -> StateResult:
    if principal.is_run_token and body.state not in RUN_TOKEN_STATES:
        raise Forbidden(f"a run token cannot set {body.state.value}")
    return store.set_run_state(
        run_id, body.state, message=body.message, transition_id=body.transition_id
    )


@router.post(
    "/runs/{run_id}/cancel",
    response_model=StateResult,
    dependencies=[Depends(require(ApiScope.DEPLOY))],
)
def cancel_run(
    run_id: uuid.UUID, body: CancelRequest | None = None, store: Store = Depends(get_store)
) -> StateResult:
    return store.cancel_run(run_id, transition_id=body.transition_id if body else None)


@router.post("/runs/{run_id}/heartbeat", response_model=Run)
def heartbeat(
    run_id: uuid.UUID,
    store: Store = Depends(get_store),
    _: Principal = Depends(require_run_access(ApiScope.WORKER)),
) -> Run:
    return store.heartbeat(run_id)


@router.post("/runs/{run_id}/logs")
def add_logs(
    run_id: uuid.UUID,
    body: LogBatch,
    store: Store = Depends(get_store),
    _: Principal = Depends(require_run_access(ApiScope.WORKER)),
) -> dict[str, int]:
    entries = [
        LogEntry(
            timestamp=line.timestamp,
            level=line.level.upper(),
            stream=line.stream,
            message=line.message,
        )
        for line in body.logs
    ]
    return {"accepted": store.add_logs(run_id, entries)}


@router.get("/runs/{run_id}/logs", response_model=list[LogLine])
def read_logs(
    run_id: uuid.UUID,
    after: int = Query(default=0, ge=0),
    limit: int = Query(default=1000, ge=1, le=10_000),
    store: Store = Depends(get_store),
    _: Principal = Depends(require_run_access(ApiScope.READ)),
) -> list[LogLine]:
    """One page of logs; pass the last `id` seen as `after` for the next page."""
    return store.read_logs(run_id, after=after, limit=limit)


@router.get("/runs/{run_id}/logs/follow", dependencies=[Depends(require(ApiScope.READ))])
def follow_logs(
    run_id: uuid.UUID, after: int = Query(default=0, ge=0), store: Store = Depends(get_store)
) -> StreamingResponse:
    """Newline-delimited JSON: `{"type": "log", ...}` lines while the run goes on, then one
    `{"type": "end", "state": ...}` once it is in a terminal state and all logs were sent."""
    store.get_run(run_id)  # 404 before the stream starts

    def stream() -> Iterator[bytes]:
        cursor = after
        while True:
            # Read the state first: logs written before it turned terminal are then all seen.
            state = store.get_run(run_id).state
            while lines := store.read_logs(run_id, after=cursor, limit=1000):
                for line in lines:
                    yield (
                        json.dumps({"type": "log", **line.model_dump(mode="json")}) + "\n"
                    ).encode()
                cursor = lines[-1].id
            if state in TERMINAL_STATES:
                yield (json.dumps({"type": "end", "state": state.value}) + "\n").encode()
                return
            time.sleep(FOLLOW_POLL_SECONDS)

    return StreamingResponse(stream(), media_type="application/x-ndjson")


@router.get("/runs/{run_id}/provider-logs", dependencies=[Depends(require(ApiScope.READ))])
def read_provider_logs(
    run_id: uuid.UUID,
    since: AwareDatetime | None = None,
    store: Store = Depends(get_store),
    settings: Settings = Depends(get_settings),
) -> list[dict[str, Any]]:
    """The provider's own log of the run's latest submitted attempt (e.g. CloudWatch for ECS):
    what to read when the runtime never got to send any, such as a container that failed to
    start. Empty when nothing was submitted or the provider keeps no log."""
    run = store.get_run(run_id)
    attempt = next((a for a in reversed(run.attempts) if a.provider_ref), None)
    if attempt is None or attempt.provider_ref is None:
        return []
    pool = store.get_pool(run.pool_name)
    try:
        lines = make_adapter(store, settings, pool).logs(attempt.provider_ref, since)
    except ProviderNotFound:
        return []  # the provider no longer knows the run (ECS forgets tasks after ~1 h)
    return [
        {"timestamp": line.timestamp.isoformat(), "stream": line.stream, "message": line.message}
        for line in lines
    ]

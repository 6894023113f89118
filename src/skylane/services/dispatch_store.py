"""What the dispatcher and the reconciler need from a store: the exactly-once claim protocol,
the submissions to watch, and the adapters' resource cache.

The control plane passes its `skylane.store.repository.Store`. A pull worker has no database: it
passes `skylane.worker_api.WorkerApiStore`, which makes the same calls over the API (the server
runs them on its Store, limited to the worker's pool). So workers and the control plane run one
implementation of the protocol, not two.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from skylane.models import Pool, Run, RunState, StateResult
from skylane.store.repository import Claim, Submission
from skylane.store.scope import DispatchScope


class DispatchStore(Protocol):
    @property
    def is_postgres(self) -> bool: ...

    # --- claims (skylane.services.dispatcher) ---------------------------------------------

    def claim_due_runs(
        self,
        *,
        claimed_by: str,
        lease_seconds: float,
        limit: int = 50,
        now: datetime | None = None,
        missed_before: datetime | None = None,
        scope: DispatchScope = ...,
        due_by: datetime | None = None,
    ) -> list[Claim]: ...

    def expired_claims(
        self,
        *,
        claimed_by: str = ...,
        lease_seconds: float = ...,
        limit: int = 100,
        now: datetime | None = None,
        scope: DispatchScope = ...,
    ) -> list[Claim]: ...

    def renew_claim(
        self,
        idempotency_key: str,
        claimed_by: str,
        lease_seconds: float,
        now: datetime | None = None,
    ) -> datetime | None: ...

    def issue_run_token(self, run_id: uuid.UUID) -> str: ...

    def record_submissions(self, submissions: list[tuple[str, str, datetime]]) -> None: ...

    def record_submission(self, idempotency_key: str, provider_ref: str) -> None: ...

    def record_submission_failure(
        self,
        idempotency_key: str,
        error: str,
        *,
        retry_at: datetime | None,
        same_key: bool = False,
        count_try: bool = True,
        message: str | None = None,
    ) -> Run: ...

    def next_due_time(self, *, after: datetime, scope: DispatchScope = ...) -> datetime | None: ...

    def add_dispatch_listener(self, callback: Callable[[], None]) -> None: ...

    # Fallback is the control plane's business; a worker's store has none to report or set.
    def pools_in_fallback(self) -> list[Pool]: ...

    def set_pool_fallback(
        self, name: str, reason: str | None, now: datetime | None = None
    ) -> bool: ...

    def remove_dispatch_listener(self, callback: Callable[[], None]) -> None: ...

    # --- watching (skylane.services.reconciler) -------------------------------------------

    def watched_submissions(
        self,
        *,
        stale_before: datetime | None = None,
        scope: DispatchScope = ...,
        worker_offline_seconds: float = ...,
        now: datetime | None = None,
    ) -> list[Submission]: ...

    def update_attempt(self, idempotency_key: str, **fields: Any) -> None: ...

    def set_run_state(
        self,
        run_id: uuid.UUID,
        state: RunState,
        *,
        message: str | None = None,
        transition_id: str | None = None,
    ) -> StateResult: ...

    def acquire_service_lease(
        self, name: str, holder: str, seconds: float, now: datetime | None = None
    ) -> bool: ...

    def release_service_lease(self, name: str, holder: str) -> None: ...

    # --- the adapters' resource cache (skylane.services.resource_cache) -------------------

    def get_provider_resource(self, pool_id: uuid.UUID, kind: str, key: str) -> str | None: ...

    def put_provider_resource(self, pool_id: uuid.UUID, kind: str, key: str, value: str) -> str: ...

    def list_provider_resources(self, pool_id: uuid.UUID, kind: str) -> dict[str, str]: ...

    def delete_provider_resource(self, pool_id: uuid.UUID, kind: str, key: str) -> None: ...

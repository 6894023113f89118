"""The worker's side of the worker protocol: a `DispatchStore` (the interface the dispatcher and
reconciler use) whose every call goes over the API to the control plane, which runs it on its
store, limited to the worker's pool (`skylane.api.routers.workers`).

So a pull worker runs the control plane's own dispatcher and reconciler, and with them the one
exactly-once protocol: a claim with a lease and an idempotency key, `find(key)` before any second
submit, the provider's ref recorded against the key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from skylane.client import SkylaneClient
from skylane.models import Pool, Run, RunState, StateResult, WorkerRegistration
from skylane.store.repository import Claim, Submission
from skylane.store.scope import DispatchScope


def _json_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


class WorkerApiStore:
    """The control plane's store as one worker of one pool may use it."""

    # No database here: the dispatcher's PostgreSQL LISTEN wake-ups do not apply; the worker
    # polls (and sleeps until the next due time the server reports).
    is_postgres = False

    def __init__(
        self, client: SkylaneClient, pool_name: str, worker: str, *, limit: int | None = None
    ) -> None:
        self.client = client
        self.pool_name = pool_name
        self.worker = worker
        # The worker's cap on its active runs; the server counts them at each claim.
        self.limit = limit
        self.scope = DispatchScope.for_worker(pool_name, worker)
        self._base = f"/api/pools/{quote(pool_name, safe='')}/workers/{quote(worker, safe='')}"
        self._next_due: datetime | None = None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.client.request(method, self._base + path, **kwargs)

    # --- registration -----------------------------------------------------------------------

    def heartbeat(
        self, *, hostname: str | None, version: str | None, limit: int | None
    ) -> WorkerRegistration:
        body = {"hostname": hostname, "version": version, "limit": limit}
        return WorkerRegistration.model_validate(self._call("POST", "/heartbeat", json=body))

    def stopped(self) -> None:
        self._call("POST", "/stopped")

    # --- claims ---------------------------------------------------------------------------

    def claim_due_runs(
        self,
        *,
        claimed_by: str,
        lease_seconds: float,
        limit: int = 50,
        now: datetime | None = None,
        missed_before: datetime | None = None,
        scope: DispatchScope | None = None,
        due_by: datetime | None = None,
    ) -> list[Claim]:
        self._check(claimed_by, scope)
        now = now or datetime.now(UTC)
        body = {
            "limit": max(1, min(limit, 1000)),
            "lease_seconds": lease_seconds,
            "missed_before": _json_time(missed_before),
            "prefetch_seconds": max(0.0, (due_by - now).total_seconds()) if due_by else 0.0,
            "worker_limit": self.limit,
        }
        answer = self._call("POST", "/claims", json=body)
        due = answer.get("next_due_at")
        self._next_due = datetime.fromisoformat(due) if due else None
        return [Claim.model_validate(claim) for claim in answer["claims"]]

    def expired_claims(
        self,
        *,
        claimed_by: str = "",
        lease_seconds: float = 120.0,
        limit: int = 100,
        now: datetime | None = None,
        scope: DispatchScope | None = None,
    ) -> list[Claim]:
        self._check(claimed_by, scope)
        body = {"limit": max(1, min(limit, 1000)), "lease_seconds": lease_seconds}
        return [Claim.model_validate(c) for c in self._call("POST", "/recoveries", json=body)]

    def renew_claim(
        self,
        idempotency_key: str,
        claimed_by: str,
        lease_seconds: float,
        now: datetime | None = None,
    ) -> datetime | None:
        self._check(claimed_by, None)
        answer = self._call(
            "POST", f"/attempts/{idempotency_key}/renew", json={"lease_seconds": lease_seconds}
        )
        expires = answer.get("expires_at")
        return datetime.fromisoformat(expires) if expires else None

    def issue_run_token(self, run_id: uuid.UUID) -> str:
        return self._call("POST", f"/runs/{run_id}/token")["token"]

    def record_submissions(self, submissions: list[tuple[str, str, datetime]]) -> None:
        body = [{"key": k, "ref": r, "at": _json_time(at)} for k, r, at in submissions]
        self._call("POST", "/submissions", json=body)

    def record_submission(self, idempotency_key: str, provider_ref: str) -> None:
        self.record_submissions([(idempotency_key, provider_ref, datetime.now(UTC))])

    def record_submission_failure(
        self,
        idempotency_key: str,
        error: str,
        *,
        retry_at: datetime | None,
        same_key: bool = False,
        count_try: bool = True,
        message: str | None = None,
    ) -> Run:
        body = {
            "error": error,
            "retry_at": _json_time(retry_at),
            "same_key": same_key,
            "count_try": count_try,
            "message": message,
        }
        return Run.model_validate(
            self._call("POST", f"/attempts/{idempotency_key}/failure", json=body)
        )

    def next_due_time(
        self, *, after: datetime, scope: DispatchScope | None = None
    ) -> datetime | None:
        """The next due time the server gave with the last claim (no extra call)."""
        return self._next_due if self._next_due and self._next_due > after else None

    def add_dispatch_listener(self, callback: Callable[[], None]) -> None:
        """Nothing to listen to over HTTP: the worker polls."""

    def remove_dispatch_listener(self, callback: Callable[[], None]) -> None:
        """See add_dispatch_listener."""

    def pools_in_fallback(self) -> list[Pool]:
        """Fallback is the control plane's to set; a worker only follows it."""
        return []

    def set_pool_fallback(self, name: str, reason: str | None, now: datetime | None = None) -> bool:
        return False

    # --- watching -------------------------------------------------------------------------

    def watched_submissions(
        self,
        *,
        stale_before: datetime | None = None,
        scope: DispatchScope | None = None,
        worker_offline_seconds: float = 0.0,
        now: datetime | None = None,
    ) -> list[Submission]:
        self._check(None, scope)
        params = {"stale_before": _json_time(stale_before)} if stale_before else {}
        return [Submission.model_validate(s) for s in self._call("GET", "/watch", params=params)]

    def update_attempt(self, idempotency_key: str, **fields: Any) -> None:
        body = {k: _json_time(v) if isinstance(v, datetime) else v for k, v in fields.items()}
        self._call("PATCH", f"/attempts/{idempotency_key}", json=body)

    def set_run_state(
        self,
        run_id: uuid.UUID,
        state: RunState,
        *,
        message: str | None = None,
        transition_id: str | None = None,
    ) -> StateResult:
        return self.client.set_state(run_id, state, message=message, transition_id=transition_id)

    def acquire_service_lease(
        self, name: str, holder: str, seconds: float, now: datetime | None = None
    ) -> bool:
        """Workers split the watching by who submitted what; there is no lease to take."""
        return True

    def release_service_lease(self, name: str, holder: str) -> None:
        """See acquire_service_lease."""

    # --- the adapters' resource cache (the pool's, shared with the control plane) ------------

    def get_provider_resource(self, pool_id: uuid.UUID, kind: str, key: str) -> str | None:
        # A missing record is a null answer. NotFound (the pool is gone) must not read as "no
        # record": the ECS adapter takes that to mean no task was started for a key.
        answer = self._call("GET", f"/resources/{quote(kind, safe='')}/{quote(key)}")
        return None if answer is None else answer["value"]

    def put_provider_resource(self, pool_id: uuid.UUID, kind: str, key: str, value: str) -> str:
        path = f"/resources/{quote(kind, safe='')}/{quote(key)}"
        return self._call("PUT", path, json={"value": value})["value"]

    def list_provider_resources(self, pool_id: uuid.UUID, kind: str) -> dict[str, str]:
        return self._call("GET", f"/resources/{quote(kind, safe='')}")

    def delete_provider_resource(self, pool_id: uuid.UUID, kind: str, key: str) -> None:
        self._call("DELETE", f"/resources/{quote(kind, safe='')}/{quote(key)}")

    def _check(self, claimed_by: str | None, scope: DispatchScope | None) -> None:
        # The server acts for the worker named in the URL; a different name here is a bug.
        if (claimed_by and claimed_by != self.worker) or (scope and scope != self.scope):
            raise ValueError(f"this store acts for {self.scope.describe()} only")

"""HTTP client for the skylane API, used by the CLI, the runtime in containers and workers.

Errors from the server come back as the same `skylane.errors` classes the server raised, with
the server's message and field; transport failures become `ApiUnreachable`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx

from skylane.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    IllegalTransition,
    InvalidInput,
    NotFound,
    SkylaneError,
    Unauthorized,
)
from skylane.models import (
    ApiKeyInfo,
    Deployment,
    LogLine,
    Pool,
    PoolStatus,
    Run,
    RunExecution,
    RunState,
    Schedule,
    StateResult,
)

_ERRORS_BY_CODE: dict[str, type[SkylaneError]] = {
    "invalid": InvalidInput,
    "not_found": NotFound,
    "already_exists": AlreadyExists,
    "conflict": Conflict,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
}


class ApiUnreachable(SkylaneError):
    code = "unreachable"


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json().get("error", {})
    except (ValueError, AttributeError):
        body = {}
    code = body.get("code", "")
    message = body.get("message") or f"HTTP {response.status_code} from {response.url.path}"
    if code == "illegal_transition":
        raise IllegalTransition(
            message, current_state=body.get("details", {}).get("current_state", "UNKNOWN")
        )
    cls = _ERRORS_BY_CODE.get(code, SkylaneError)
    error = cls(message, field=body.get("field"), details=body.get("details"))
    error.status_code = response.status_code
    raise error


class SkylaneClient:
    def __init__(
        self,
        api_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.api_url = api_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.api_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SkylaneClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(
                f"cannot reach the skylane API at {self.api_url} ({type(exc).__name__}); is "
                "the server running? (skylane server start; SKYLANE_API_URL)"
            ) from exc
        _raise_for(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call: the decoded JSON answer (None for 204), or the server's error as its
        skylane.errors class. For protocols with their own wrapper (`skylane.worker_api`)."""
        return self._request(method, path, **kwargs)

    # --- server ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    # --- pools --------------------------------------------------------------------------------

    def create_pool(self, **body: Any) -> Pool:
        return Pool.model_validate(self._request("POST", "/api/pools", json=body))

    def list_pools(self) -> list[Pool]:
        return [Pool.model_validate(p) for p in self._request("GET", "/api/pools")]

    def get_pool(self, name: str) -> Pool:
        return Pool.model_validate(self._request("GET", f"/api/pools/{name}"))

    def get_pool_status(self, name: str) -> PoolStatus:
        return PoolStatus.model_validate(self._request("GET", f"/api/pools/{name}/status"))

    def update_pool(self, name: str, **changes: Any) -> Pool:
        return Pool.model_validate(self._request("PATCH", f"/api/pools/{name}", json=changes))

    def delete_pool(self, name: str) -> None:
        self._request("DELETE", f"/api/pools/{name}")

    # --- deployments --------------------------------------------------------------------------

    def create_deployment(self, **body: Any) -> Deployment:
        return Deployment.model_validate(self._request("POST", "/api/deployments", json=body))

    def list_deployments(self, pool: str | None = None) -> list[Deployment]:
        params = {"pool": pool} if pool else None
        return [
            Deployment.model_validate(d)
            for d in self._request("GET", "/api/deployments", params=params)
        ]

    def get_deployment_by_name(self, full_name: str) -> Deployment:
        flow_name, sep, name = full_name.partition("/")
        if not sep or not flow_name or not name:
            raise InvalidInput(
                f"deployment names look like FLOW/NAME, got {full_name!r}", field="deployment"
            )
        return Deployment.model_validate(
            self._request("GET", f"/api/deployments/by-name/{flow_name}/{name}")
        )

    def update_deployment(self, deployment_id: uuid.UUID, **changes: Any) -> Deployment:
        return Deployment.model_validate(
            self._request("PATCH", f"/api/deployments/{deployment_id}", json=changes)
        )

    def delete_deployment(self, deployment_id: uuid.UUID) -> None:
        self._request("DELETE", f"/api/deployments/{deployment_id}")

    def create_run(
        self,
        deployment_id: uuid.UUID,
        *,
        parameters: dict[str, Any] | None = None,
        job_variables: dict[str, Any] | None = None,
        scheduled_time: datetime | None = None,
    ) -> Run:
        body: dict[str, Any] = {
            "parameters": parameters or {},
            "job_variables": job_variables or {},
        }
        if scheduled_time is not None:
            body["scheduled_time"] = scheduled_time.isoformat()
        return Run.model_validate(
            self._request("POST", f"/api/deployments/{deployment_id}/runs", json=body)
        )

    # --- schedules ----------------------------------------------------------------------------

    def list_schedules(self, deployment_id: uuid.UUID) -> list[Schedule]:
        return [
            Schedule.model_validate(s)
            for s in self._request("GET", f"/api/deployments/{deployment_id}/schedules")
        ]

    def create_schedule(self, deployment_id: uuid.UUID, **body: Any) -> Schedule:
        return Schedule.model_validate(
            self._request("POST", f"/api/deployments/{deployment_id}/schedules", json=body)
        )

    def get_schedule(self, schedule_id: uuid.UUID | str) -> Schedule:
        return Schedule.model_validate(self._request("GET", f"/api/schedules/{schedule_id}"))

    def update_schedule(self, schedule_id: uuid.UUID | str, **changes: Any) -> Schedule:
        return Schedule.model_validate(
            self._request("PATCH", f"/api/schedules/{schedule_id}", json=changes)
        )

    def delete_schedule(self, schedule_id: uuid.UUID | str) -> None:
        self._request("DELETE", f"/api/schedules/{schedule_id}")

    # --- runs ---------------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        pool: str | None = None,
        deployment: uuid.UUID | None = None,
        states: list[RunState] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[Run]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if since is not None:
            params["since"] = since.isoformat()
        if until is not None:
            params["until"] = until.isoformat()
        if oldest_first:
            params["order"] = "oldest"
        if pool:
            params["pool"] = pool
        if deployment:
            params["deployment"] = str(deployment)
        if states:
            params["state"] = [s.value for s in states]
        return [Run.model_validate(r) for r in self._request("GET", "/api/runs", params=params)]

    def get_run(self, run_id: uuid.UUID | str) -> Run:
        return Run.model_validate(self._request("GET", f"/api/runs/{run_id}"))

    def get_execution(self, run_id: uuid.UUID | str) -> RunExecution:
        return RunExecution.model_validate(self._request("GET", f"/api/runs/{run_id}/execution"))

    def set_state(
        self,
        run_id: uuid.UUID | str,
        state: RunState,
        *,
        message: str | None = None,
        transition_id: str | None = None,
    ) -> StateResult:
        body = {
            "state": state.value,
            "message": message,
            "transition_id": transition_id or uuid.uuid4().hex,
        }
        return StateResult.model_validate(
            self._request("POST", f"/api/runs/{run_id}/state", json=body)
        )

    def cancel_run(self, run_id: uuid.UUID | str) -> StateResult:
        return StateResult.model_validate(
            self._request(
                "POST", f"/api/runs/{run_id}/cancel", json={"transition_id": uuid.uuid4().hex}
            )
        )

    def record_source_commit(self, run_id: uuid.UUID | str, commit: str) -> Run:
        return Run.model_validate(
            self._request("POST", f"/api/runs/{run_id}/source", json={"commit": commit})
        )

    def heartbeat(self, run_id: uuid.UUID | str) -> Run:
        return Run.model_validate(self._request("POST", f"/api/runs/{run_id}/heartbeat"))

    def send_logs(self, run_id: uuid.UUID | str, logs: list[dict[str, Any]]) -> int:
        if not logs:
            return 0
        return self._request("POST", f"/api/runs/{run_id}/logs", json={"logs": logs})["accepted"]

    def read_logs(
        self, run_id: uuid.UUID | str, *, after: int = 0, limit: int = 1000
    ) -> list[LogLine]:
        return [
            LogLine.model_validate(line)
            for line in self._request(
                "GET", f"/api/runs/{run_id}/logs", params={"after": after, "limit": limit}
            )
        ]

    def read_provider_logs(self, run_id: uuid.UUID | str) -> list[dict[str, Any]]:
        """The provider's own log of the run (e.g. CloudWatch), for when the runtime sent none."""
        return self._request("GET", f"/api/runs/{run_id}/provider-logs")

    def render_run(
        self,
        deployment_id: uuid.UUID,
        *,
        parameters: dict[str, Any] | None = None,
        job_variables: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The provider requests a run would send (nothing is stored, no cloud is called)."""
        body = {"parameters": parameters or {}, "job_variables": job_variables or {}}
        return self._request("POST", f"/api/deployments/{deployment_id}/render", json=body)

    def follow_logs(self, run_id: uuid.UUID | str, *, after: int = 0) -> Iterator[dict[str, Any]]:
        """Yield log events, then one `{"type": "end", "state": ...}` when the run is over."""
        try:
            with self._http.stream(
                "GET", f"/api/runs/{run_id}/logs/follow", params={"after": after}, timeout=None
            ) as response:
                if not response.is_success:
                    response.read()
                    _raise_for(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"lost the log stream from {self.api_url}: {exc}") from exc

    # --- API keys -----------------------------------------------------------------------------

    def create_api_key(
        self, name: str, scopes: list[str], expires_at: datetime | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "scopes": scopes}
        if expires_at:
            body["expires_at"] = expires_at.isoformat()
        return self._request("POST", "/api/keys", json=body)

    def list_api_keys(self) -> list[ApiKeyInfo]:
        return [ApiKeyInfo.model_validate(k) for k in self._request("GET", "/api/keys")]

    def revoke_api_key(self, key_id: str) -> ApiKeyInfo:
        return ApiKeyInfo.model_validate(self._request("DELETE", f"/api/keys/{key_id}"))

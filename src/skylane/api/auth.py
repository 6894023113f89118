"""Who is calling: an API key with scopes, or a run's own token.

Keys come as `Authorization: Bearer <key>` (or `X-API-Key`). A run token is accepted only on
the calls a running flow makes about itself (state, logs, heartbeat, its execution details).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Depends, Request

from skylane.errors import Forbidden, Unauthorized
from skylane.models import ApiScope
from skylane.security import parse_api_key, parse_run_token
from skylane.store.repository import Store

# What each scope lets a key do: admin everything, deploy and worker also read.
SCOPE_GRANTS: dict[ApiScope, frozenset[ApiScope]] = {
    ApiScope.ADMIN: frozenset(ApiScope),
    ApiScope.DEPLOY: frozenset({ApiScope.DEPLOY, ApiScope.READ}),
    ApiScope.WORKER: frozenset({ApiScope.WORKER, ApiScope.READ}),
    ApiScope.READ: frozenset({ApiScope.READ}),
}


@dataclass(frozen=True)
class Principal:
    key_id: str | None = None
    key_name: str | None = None
    granted: frozenset[ApiScope] = field(default_factory=frozenset)
    run_id: uuid.UUID | None = None  # set for a run token

    @property
    def is_run_token(self) -> bool:
        return self.run_id is not None

    def has(self, scope: ApiScope) -> bool:
        return scope in self.granted


def _credential(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


def authenticate(request: Request) -> Principal:
    store: Store = request.app.state.store
    credential = _credential(request)
    if credential is None:
        raise Unauthorized(
            "no API key given: send 'Authorization: Bearer <key>' (skylane config set api-key, "
            "or SKYLANE_API_KEY)"
        )
    if (parsed := parse_api_key(credential)) is not None:
        info = store.verify_api_key(*parsed)
        if info is None:
            raise Unauthorized("API key is not valid (unknown, revoked or expired)")
        granted = frozenset().union(*(SCOPE_GRANTS[s] for s in info.scopes))
        return Principal(key_id=info.id, key_name=info.name, granted=granted)
    if (token := parse_run_token(credential)) is not None:
        run_id, secret = token
        if not store.verify_run_token(run_id, secret):
            raise Unauthorized("run token is not valid")
        return Principal(run_id=run_id)
    raise Unauthorized("credential is neither an API key (skl_...) nor a run token (sklr_...)")


def require(scope: ApiScope) -> Callable[[Principal], Principal]:
    """Dependency: an API key granting `scope`."""

    def check(principal: Principal = Depends(authenticate)) -> Principal:
        if principal.is_run_token:
            raise Forbidden("a run token may only report on its own run")
        if not principal.has(scope):
            raise Forbidden(f"this API key lacks the {scope.value!r} scope")
        return principal

    return check


def require_run_access(scope: ApiScope) -> Callable[[uuid.UUID, Principal], Principal]:
    """Dependency for per-run calls: a key granting `scope`, or the run's own token."""

    def check(run_id: uuid.UUID, principal: Principal = Depends(authenticate)) -> Principal:
        if principal.is_run_token:
            if principal.run_id != run_id:
                raise Forbidden("this run token belongs to another run")
            return principal
        if not principal.has(scope):
            raise Forbidden(f"this API key lacks the {scope.value!r} scope")
        return principal

    return check

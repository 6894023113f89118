"""The one error hierarchy of skylane.

Every error a user can cause or meet has a class here. The API turns them into HTTP responses
(`status_code`, and a body `{"error": {"code", "message", "field", "details"}}`), the CLI into a
message and a non-zero exit. Provider adapters translate their SDK's errors into the
`ProviderError` branch so the dispatcher can decide what to retry without knowing the SDK.

Messages must never contain secrets: build them from names and field paths, never from values
that came from a credential or a secret variable.
"""

from __future__ import annotations

from typing import Any


class SkylaneError(Exception):
    """Base of every skylane error."""

    status_code: int = 500
    code: str = "internal"

    def __init__(
        self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body

    def __str__(self) -> str:
        if self.field and self.field not in self.message:
            return f"{self.field}: {self.message}"
        return self.message


# --- input and resource errors (control plane) -------------------------------------------


class InvalidInput(SkylaneError):
    """Something the caller sent is wrong; `field` names where (a JSON path or a field name)."""

    status_code = 422
    code = "invalid"


class NotFound(SkylaneError):
    status_code = 404
    code = "not_found"


class AlreadyExists(SkylaneError):
    status_code = 409
    code = "already_exists"


class Conflict(SkylaneError):
    """The request clashes with what is stored (e.g. deleting a pool that has deployments)."""

    status_code = 409
    code = "conflict"


class IllegalTransition(SkylaneError):
    """A run state change the state machine does not allow; carries the run's current state."""

    status_code = 409
    code = "illegal_transition"

    def __init__(self, message: str, *, current_state: str) -> None:
        super().__init__(message, details={"current_state": current_state})
        self.current_state = current_state


class Unauthorized(SkylaneError):
    status_code = 401
    code = "unauthorized"


class Forbidden(SkylaneError):
    status_code = 403
    code = "forbidden"


class ConfigurationError(SkylaneError):
    """Local configuration (settings, config file, database URL) is wrong."""

    status_code = 500
    code = "configuration"


# --- provider errors (adapters translate SDK errors into these) ----------------------------


class ProviderError(SkylaneError):
    """An error from a cloud provider (or the local process provider)."""

    status_code = 502
    code = "provider"
    retryable: bool = False


class TransientProviderError(ProviderError):
    """Try again later: a network error, a 5xx, a timeout."""

    code = "provider_transient"
    retryable = True


class ThrottledError(TransientProviderError):
    """The provider asked us to slow down; `retry_after` is in seconds when it said."""

    code = "provider_throttled"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        if retry_after is not None:
            self.details["retry_after"] = retry_after


class CapacityError(TransientProviderError):
    """The provider has no capacity right now (e.g. no Fargate Spot capacity)."""

    code = "provider_capacity"


class QuotaError(ProviderError):
    """An account quota is exhausted; retrying will not help until the user raises it."""

    code = "provider_quota"


class PermanentProviderError(ProviderError):
    """The request can never succeed as it is; the message tells the user what to fix."""

    code = "provider_permanent"


class ProviderAuthError(PermanentProviderError):
    """The provider refused who we are or what we may do: credentials missing, rejected or
    expired, or a permission denied. A push pool with `fallback: worker` hands its runs to
    workers on this error."""

    code = "provider_auth"


class ProviderNotFound(ProviderError):
    code = "provider_not_found"


class ProviderConflict(ProviderError):
    code = "provider_conflict"

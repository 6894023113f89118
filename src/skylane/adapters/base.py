"""The adapter contract every provider implements (see DESIGN.md, "Adapter").

An adapter turns a rendered job configuration into the provider's exact request (`render`, pure)
and talks to the provider: `submit` (idempotent per key), `find`, `statuses` (batched),
`cancel`, `cleanup`, `logs`. Errors leave an adapter only as `skylane.errors.ProviderError`
subclasses. Cloud SDKs are imported inside the adapter module that needs them, lazily.
"""

from __future__ import annotations

import enum
import os
import shlex
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar

from skylane.errors import InvalidInput, ProviderError
from skylane.models import Pool
from skylane.rate_limits import RateLimiter, UnlimitedRateLimiter
from skylane.retries import PROVIDER_CALLS, RetryPolicy
from skylane.security import MASK
from skylane.settings import Settings

T = TypeVar("T")


def split_command(value: Any, *, field: str = "job_variables.command") -> list[str] | None:
    """A template's `command` as an argument list: a string is split as a shell would, a list
    is taken as it is; None, "" and [] mean "not set"."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value) or None
        except ValueError as exc:
            raise InvalidInput(
                f"command cannot be split into arguments ({exc}); fix its quoting", field=field
            ) from None
    if isinstance(value, list | tuple) and all(not isinstance(p, dict | list) for p in value):
        return [str(part) for part in value]
    raise InvalidInput("command must be a string or a list of strings", field=field)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every one of `secrets` masked: for provider error messages, which may quote
    the request that carried them. Values under 4 characters are left (masking every "a" would
    garble the message and hide nothing)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def retry_after_header(headers: Any) -> float | None:
    """Seconds a `Retry-After` header asks for (a number of seconds); None when absent or not a
    number."""
    try:
        value = (headers or {}).get("Retry-After")
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class RunContext:
    """Everything about a run that a template or adapter may use. `run_token` is a secret."""

    run_id: uuid.UUID
    flow_name: str
    deployment_name: str
    pool_name: str
    entrypoint: str
    api_url: str
    run_token: str = field(repr=False)
    idempotency_key: str
    image: str | None = None

    def runtime_env(self) -> dict[str, str]:
        """The environment `skylane run execute` reads inside the container."""
        return {
            "SKYLANE_RUN_ID": str(self.run_id),
            "SKYLANE_API_URL": self.api_url,
            "SKYLANE_RUN_TOKEN": self.run_token,
        }

    def labels(self) -> dict[str, str]:
        return {
            "skylane-run-id": str(self.run_id),
            "skylane-deployment": self.deployment_name,
            "skylane-pool": self.pool_name,
        }


class ProviderStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    NOT_FOUND = "NOT_FOUND"

    @property
    def ended(self) -> bool:
        return self in (self.SUCCEEDED, self.FAILED, self.STOPPED, self.NOT_FOUND)


@dataclass(frozen=True)
class ProviderState:
    status: ProviderStatus
    exit_code: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class ProviderLogLine:
    timestamp: datetime
    stream: str
    message: str


class ResourceCache(Protocol):
    """What an adapter remembers per pool across runs and restarts (e.g. the task definition
    ARN registered for a content hash). Backed by the store in the control plane; first
    writer wins, so concurrent dispatchers agree on one value."""

    def get(self, kind: str, key: str) -> str | None: ...

    def put(self, kind: str, key: str, value: str) -> str:
        """Store `value` unless a value exists already; return the value that is stored."""
        ...

    def items(self, kind: str) -> dict[str, str]: ...

    def delete(self, kind: str, key: str) -> None: ...


class MemoryResourceCache:
    """A ResourceCache in a dict: for previews and tests."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], str] = {}

    def get(self, kind: str, key: str) -> str | None:
        return self._data.get((kind, key))

    def put(self, kind: str, key: str, value: str) -> str:
        return self._data.setdefault((kind, key), value)

    def items(self, kind: str) -> dict[str, str]:
        return {k: v for (knd, k), v in self._data.items() if knd == kind}

    def delete(self, kind: str, key: str) -> None:
        self._data.pop((kind, key), None)


class CloudAdapter:
    """What the cloud adapters share: the pool, settings, resource cache and rate limiter they
    are built with (the `Adapter` constructor), and `_retry`, one provider operation under
    `retry_policy` (tests shrink it)."""

    provider: ClassVar[str]
    retry_policy: RetryPolicy = PROVIDER_CALLS

    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        *,
        cache: ResourceCache | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.cache = cache or MemoryResourceCache()
        # Rate-limited calls take a token shared by every replica (per account and region).
        self.limiter = limiter or UnlimitedRateLimiter()

    def _retry(self, fn: Callable[[], T], until: float | None = None) -> T:
        """`fn()` under the retry policy; `until` (time.monotonic()) bounds it as a whole."""
        deadline = None if until is None else max(0.0, until - time.monotonic())
        return self.retry_policy.call(fn, what=f"{self.provider} call", deadline=deadline)

    def setting(self, name: str, variable: str | None = None) -> str | None:
        """The pool's setting `name` (else the environment variable `variable`), stripped; None
        when unset or blank."""
        value = self.pool.settings.get(name) or (os.environ.get(variable) if variable else None)
        return str(value).strip() or None if value else None

    def _call(
        self,
        fn: Callable[..., T],
        action: str,
        resource: str,
        secrets: Iterable[str] = (),
        **kwargs: Any,
    ) -> T:
        """One SDK call (with `_call_options`), every SDK error translated by `_translate`."""
        try:
            return fn(**self._call_options(), **kwargs)
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001 - every SDK error is translated
            raise self._translate(exc, action=action, resource=resource, secrets=secrets) from None

    def _call_options(self) -> dict[str, Any]:
        """Keyword arguments every SDK call of this adapter gets (a timeout, say)."""
        return {}

    def _translate(
        self, exc: BaseException, *, action: str, resource: str, secrets: Iterable[str]
    ) -> ProviderError:
        """An SDK error as a skylane ProviderError (each SDK adapter says how)."""
        raise NotImplementedError


class Adapter(Protocol):
    """One provider. Constructed per pool: `Adapter(pool, settings, cache=..., limiter=...)`;
    `cache` defaults to a MemoryResourceCache, `limiter` (skylane.rate_limits.RateLimiter) to
    none. An adapter takes a limiter token before each rate-limited provider call, retries
    with `skylane.retries`, and finishes `submit` within `settings.submit_deadline_seconds`."""

    provider: ClassVar[str]

    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        *,
        cache: ResourceCache | None = None,
        limiter: RateLimiter | None = None,
    ) -> None: ...

    @classmethod
    def default_template(cls) -> dict[str, Any]:
        """The pool type's base job template: `{"job_configuration": ..., "variables": ...}`."""
        ...

    def render(self, job_configuration: dict[str, Any], context: RunContext) -> Any:
        """The exact provider request for this run. Pure: no I/O. Anything the provider would
        refuse raises InvalidInput naming the job variable (`job_variables.cpu`): the API
        calls `render` at deploy and run time, so such errors are 422s, never provider errors."""
        ...

    def describe(self, request: Any) -> dict[str, Any]:
        """The request as JSON for people (`skylane deployment render`), secrets masked."""
        ...

    def submit(self, request: Any, key: str) -> str:
        """Start the run; calling again with the same key never starts a second one."""
        ...

    def find(self, key: str) -> str | None:
        """The provider's reference for what was started with `key`, if anything was."""
        ...

    def statuses(self, refs: list[str]) -> dict[str, ProviderState]: ...

    def cancel(self, ref: str) -> None: ...

    def cleanup(self, ref: str) -> None: ...

    def teardown(self) -> None:
        """The pool is being deleted: remove what this adapter created for it and only that
        (e.g. task definitions skylane registered), where the pool's settings ask for it."""
        ...

    def logs(self, ref: str, since: datetime | None = None) -> list[ProviderLogLine]: ...

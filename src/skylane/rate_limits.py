"""Rate limits per provider account and region: the limits, their defaults, and the algorithm.

A provider operation (e.g. ECS RunTask) is limited per *scope* — the operation, the account
(AWS account id, GCP project, Azure subscription) and the region. Each scope has one or more
limits that must all hold:

- `TokenBucket(burst, per_second)`: at most `burst` calls at once, refilled at `per_second`; in
  any interval of length T at most `burst + per_second * T` calls.
- `Window(limit, seconds)`: at most `limit` calls in any interval of length `seconds` (a sliding
  window, both ends included).

Operation names and their defaults (the providers' documented limits), in `DEFAULT_LIMITS`:

| operation                  | default                                |
| -------------------------- | -------------------------------------- |
| `ecs:RunTask`              | token bucket, burst 100, 20 per second |
| `aci:CreateContainerGroup` | 100 per 5 minutes and 300 per hour     |
| `cloud-run:RunJob`         | token bucket, burst 3, 3 per second    |
| `process:Start`            | no limit                               |

Each adapter names the operation it limits (the ECS adapter: `ECS_RUN_TASK`). A pool overrides
the limits of its launch operation with `settings["rate_limits"]`, a list such as
`[{"burst": 50, "per_second": 10}]` or `[{"limit": 100, "seconds": 300}]`; `[]` means no limit.

`take(state, limits, count, now)` is the whole algorithm, pure: it reads a JSON state, grants what
the limits allow at `now` and returns the new JSON state. `MemoryRateLimiter` keeps states in
this process; `skylane.services.rate_limiter.SharedRateLimiter` keeps them in the database, so
every replica takes from the same state (`skylane.store.rate_limits.RateLimitStore`).

State layout (one dict per scope, covering all of its limits):
`{"v": 1, "t": <latest time seen, epoch seconds>, "buckets": {"<burst>/<per_second>": <tokens>},
"grants": [[<time>, <count>], ...]}`. `grants` is kept only when there are windows, holds only
what falls inside the longest window and never more than `MAX_GRANT_ENTRIES` entries (older
entries are merged into a later one, which only ever makes the windows stricter). Times never
go backwards: a call is accounted at `max(now, t)`, so a replica whose clock lags cannot refill
a bucket or age a window early.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from skylane.errors import InvalidInput, ThrottledError

logger = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_GRANT_ENTRIES = 1000
# Window boundaries are treated as this much wider, so float rounding (epoch floats have a
# resolution of ~0.24 µs) can never let a call through at the exact edge of a window.
WINDOW_MARGIN_SECONDS = 1e-5
MAX_KEY_LENGTH = 300


# --- limits --------------------------------------------------------------------------------


def _format_number(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def _format_seconds(value: float) -> str:
    if value < 1:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"


def _format_period(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{_format_number(seconds)} s"


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number")


def _check_positive(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number")


@dataclass(frozen=True)
class TokenBucket:
    """At most `burst` calls at once; tokens come back at `per_second`."""

    burst: int
    per_second: float

    def __post_init__(self) -> None:
        _check_count("burst", self.burst)
        _check_positive("per_second", self.per_second)

    @property
    def fingerprint(self) -> str:
        return f"{self.burst}/{float(self.per_second)!r}"

    def describe(self) -> str:
        return f"burst {self.burst}, {_format_number(self.per_second)}/s"


@dataclass(frozen=True)
class Window:
    """At most `limit` calls in any interval of `seconds` (sliding window)."""

    limit: int
    seconds: float

    def __post_init__(self) -> None:
        _check_count("limit", self.limit)
        _check_positive("seconds", self.seconds)

    def describe(self) -> str:
        return f"{self.limit} per {_format_period(self.seconds)}"


RateLimit = TokenBucket | Window

ECS_RUN_TASK = "ecs:RunTask"
ACI_CREATE_CONTAINER_GROUP = "aci:CreateContainerGroup"
CLOUD_RUN_RUN_JOB = "cloud-run:RunJob"
PROCESS_START = "process:Start"

DEFAULT_LIMITS: dict[str, tuple[RateLimit, ...]] = {
    # Fargate task launches: RunTask token bucket, burst 100, sustained 20 per second.
    ECS_RUN_TASK: (TokenBucket(burst=100, per_second=20),),
    # Container group creates per subscription and region: 100 per 5 minutes, 300 per hour.
    ACI_CREATE_CONTAINER_GROUP: (Window(limit=100, seconds=300), Window(limit=300, seconds=3600)),
    # Cloud Run job runs: 3 per second.
    CLOUD_RUN_RUN_JOB: (TokenBucket(burst=3, per_second=3),),
    # Local processes: no limit.
    PROCESS_START: (),
}


def describe_limits(limits: Sequence[RateLimit]) -> str:
    return " and ".join(limit.describe() for limit in limits) if limits else "no limit"


_EXPECTED = (
    'a rate limit is either a token bucket {"burst": <whole number>, "per_second": <number>} '
    'or a window {"limit": <whole number>, "seconds": <number>}'
)


def _parse_whole(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput("must be a positive whole number", field=field)
    if not math.isfinite(value) or value != int(value) or value < 1:
        raise InvalidInput("must be a positive whole number", field=field)
    return int(value)


def _parse_positive(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput("must be a positive number", field=field)
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput("must be a positive finite number", field=field)
    return float(value)


def parse_rate_limits(value: Any, *, field: str = "settings.rate_limits") -> tuple[RateLimit, ...]:
    """The limits a pool sets in `settings["rate_limits"]`; `[]` means no limit.

    Raises InvalidInput whose `field` names the exact element and key that is wrong."""
    if not isinstance(value, list | tuple):
        raise InvalidInput(
            f"must be a list of rate limits ({_EXPECTED}), or [] for no limit", field=field
        )
    limits: list[RateLimit] = []
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"must be an object; {_EXPECTED}", field=where)
        for key in item:
            if key not in ("burst", "per_second", "limit", "seconds"):
                name = key if isinstance(key, str) else "?"
                raise InvalidInput(f"unknown key; {_EXPECTED}", field=f"{where}.{name}")
        bucket_keys = [k for k in ("burst", "per_second") if k in item]
        window_keys = [k for k in ("limit", "seconds") if k in item]
        if bucket_keys and window_keys:
            raise InvalidInput(
                f"mixes token bucket keys ({', '.join(bucket_keys)}) with window keys "
                f"({', '.join(window_keys)}); {_EXPECTED}",
                field=where,
            )
        if bucket_keys:
            for key in ("burst", "per_second"):
                if key not in item:
                    raise InvalidInput(
                        "is missing; a token bucket needs both burst and per_second",
                        field=f"{where}.{key}",
                    )
            limits.append(
                TokenBucket(
                    burst=_parse_whole(item["burst"], f"{where}.burst"),
                    per_second=_parse_positive(item["per_second"], f"{where}.per_second"),
                )
            )
        elif window_keys:
            for key in ("limit", "seconds"):
                if key not in item:
                    raise InvalidInput(
                        "is missing; a window needs both limit and seconds",
                        field=f"{where}.{key}",
                    )
            limits.append(
                Window(
                    limit=_parse_whole(item["limit"], f"{where}.limit"),
                    seconds=_parse_positive(item["seconds"], f"{where}.seconds"),
                )
            )
        else:
            raise InvalidInput(f"is empty; {_EXPECTED}", field=where)
    return tuple(limits)


def limits_for(operation: str, pool_settings: Mapping[str, Any] | None) -> tuple[RateLimit, ...]:
    """The pool's `rate_limits` override if it sets one (not None), else the operation's
    default (no limit for an operation without a default)."""
    override = (pool_settings or {}).get("rate_limits")
    if override is not None:
        return parse_rate_limits(override)
    return DEFAULT_LIMITS.get(operation, ())


# --- the algorithm -------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What `take` granted: `granted` calls (0..count) accounted at time `at`; `state` is the
    new state to store; when `granted < count`, `wait_seconds` (> 0) is how long from `at`
    until at least one more call is allowed."""

    granted: int
    state: dict[str, Any]
    wait_seconds: float
    at: float


def _bucket_from_fingerprint(fingerprint: str) -> TokenBucket | None:
    burst, _, per_second = fingerprint.partition("/")
    try:
        return TokenBucket(burst=int(burst), per_second=float(per_second))
    except ValueError:
        return None


def _validate_limits(limits: Sequence[RateLimit]) -> None:
    for limit in limits:
        if not isinstance(limit, TokenBucket | Window):
            raise TypeError(f"not a rate limit: {type(limit).__name__}")


def take(
    state: Mapping[str, Any] | None, limits: Sequence[RateLimit], count: int, now: float
) -> Grant:
    """Grant up to `count` calls at `now` (epoch seconds) under every limit in `limits`.

    Pure: `state` is not modified; the returned state replaces it. A missing or unreadable
    state starts fresh (buckets full, no window history). When the limits change, buckets that
    remain keep their tokens, a new bucket starts with no more tokens than the fullest bucket it
    replaces (or full when there was none), and the window history is kept."""
    _check_count("count", count)
    if not math.isfinite(now):
        raise ValueError("now must be a finite number")
    _validate_limits(limits)
    if not limits:
        return Grant(granted=count, state=dict(state or {}), wait_seconds=0.0, at=now)

    old = state if isinstance(state, Mapping) and state.get("v") == STATE_VERSION else {}
    old_t = old.get("t")
    last = float(old_t) if isinstance(old_t, int | float) and math.isfinite(old_t) else None
    at = now if last is None else max(now, last)
    elapsed = 0.0 if last is None else at - last

    # Buckets, refilled to `at`.
    buckets = [limit for limit in limits if isinstance(limit, TokenBucket)]
    old_buckets = old.get("buckets")
    stored: dict[str, float] = {}
    if isinstance(old_buckets, Mapping):
        for fp, tokens in old_buckets.items():
            if isinstance(tokens, int | float) and math.isfinite(tokens):
                stored[fp] = float(tokens)
    current = {bucket.fingerprint for bucket in buckets}
    # Buckets of a previous configuration, refilled at their own rate.
    replaced = [
        min(float(old_bucket.burst), tokens + elapsed * old_bucket.per_second)
        for fp, tokens in stored.items()
        if fp not in current and (old_bucket := _bucket_from_fingerprint(fp)) is not None
    ]
    tokens_by_fp: dict[str, float] = {}
    for bucket in buckets:
        if bucket.fingerprint in stored:
            tokens = min(
                float(bucket.burst), stored[bucket.fingerprint] + elapsed * bucket.per_second
            )
        elif replaced:
            tokens = min(float(bucket.burst), max(replaced))
        else:
            tokens = float(bucket.burst)
        tokens_by_fp[bucket.fingerprint] = max(tokens, 0.0)

    # Window history, pruned to the longest window.
    windows = [limit for limit in limits if isinstance(limit, Window)]
    grants: list[list[float]] = []
    if windows:
        horizon = at - max(w.seconds for w in windows) - WINDOW_MARGIN_SECONDS
        for entry in old.get("grants") or ():
            if (
                isinstance(entry, list | tuple)
                and len(entry) == 2
                and isinstance(entry[0], int | float)
                and isinstance(entry[1], int)
                and entry[1] > 0
                and entry[0] >= horizon
            ):
                grants.append([float(entry[0]), int(entry[1])])
        grants.sort(key=lambda e: e[0])

    def used(window: Window) -> int:
        start = at - window.seconds - WINDOW_MARGIN_SECONDS
        return sum(int(n) for t, n in grants if t >= start)

    allowed = count
    for tokens in tokens_by_fp.values():
        allowed = min(allowed, math.floor(tokens))
    for window in windows:
        allowed = min(allowed, window.limit - used(window))
    granted = max(allowed, 0)

    for fp in tokens_by_fp:
        tokens_by_fp[fp] -= granted
    if granted and windows:
        if grants and grants[-1][0] == at:
            grants[-1][1] += granted
        else:
            grants.append([at, granted])
        if len(grants) > MAX_GRANT_ENTRIES:
            # Merge the oldest entries into the next one: they then count as made later,
            # which keeps every window at least as strict.
            cut = len(grants) - MAX_GRANT_ENTRIES
            merged = sum(int(n) for _, n in grants[: cut + 1])
            grants = [[grants[cut][0], merged], *grants[cut + 1 :]]

    wait = 0.0
    if granted < count:
        for bucket in buckets:
            tokens = tokens_by_fp[bucket.fingerprint]
            if tokens < 1:
                # A little extra: epoch floats round to ~0.24 µs, which could otherwise leave
                # the bucket a hair short of a token after exactly this wait.
                wait = max(wait, (1 - tokens) / bucket.per_second + 1e-6)
        for window in windows:
            excess = used(window) - (window.limit - 1)
            if excess > 0:
                start = at - window.seconds - WINDOW_MARGIN_SECONDS
                aged = 0
                for t, n in grants:
                    if t < start:
                        continue
                    aged += int(n)
                    if aged >= excess:
                        wait = max(wait, t + window.seconds + 2 * WINDOW_MARGIN_SECONDS - at)
                        break
        wait = max(wait, 1e-6)

    new_state: dict[str, Any] = {"v": STATE_VERSION, "t": at}
    if tokens_by_fp:
        new_state["buckets"] = tokens_by_fp
    if windows:
        new_state["grants"] = grants
    return Grant(granted=granted, state=new_state, wait_seconds=wait, at=at)


# --- limiters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateScope:
    """What a rate limit applies to: one provider operation in one account and region."""

    operation: str
    account: str = ""
    region: str = ""

    @property
    def key(self) -> str:
        """The state's key, e.g. `ecs:RunTask|123456789012|eu-west-1` (at most 300 characters;
        longer ones end in a hash)."""
        key = f"{self.operation}|{self.account}|{self.region}"
        if len(key) <= MAX_KEY_LENGTH:
            return key
        digest = hashlib.sha256(key.encode()).hexdigest()
        return f"{key[: MAX_KEY_LENGTH - len(digest) - 1]}#{digest}"

    def describe(self) -> str:
        where = [
            part
            for part in (
                f"account {self.account}" if self.account else "",
                f"region {self.region}" if self.region else "",
            )
            if part
        ]
        return f"{self.operation} in {', '.join(where)}" if where else self.operation


class RateLimited(ThrottledError):
    """We held a call back: its rate limit had no token within the caller's timeout.

    `local = True` tells it apart from a throttling error the provider returned."""

    code = "rate_limited"
    local = True

    def __init__(
        self, scope: RateScope, limits: Sequence[RateLimit], *, retry_after: float
    ) -> None:
        retry_after = max(float(retry_after), 0.0)
        super().__init__(
            f"the rate limit for {scope.describe()} ({describe_limits(limits)}) is used up; "
            f"next token in {_format_seconds(retry_after)}",
            retry_after=retry_after,
            details={
                "operation": scope.operation,
                "account": scope.account,
                "region": scope.region,
            },
        )
        self.scope = scope
        self.limits = tuple(limits)

    def __reduce__(self) -> Any:
        return (_rebuild_rate_limited, (self.scope, self.limits, self.retry_after))


def _rebuild_rate_limited(
    scope: RateScope, limits: tuple[RateLimit, ...], retry_after: float
) -> RateLimited:
    return RateLimited(scope, limits, retry_after=retry_after)


@runtime_checkable
class RateLimiter(Protocol):
    def acquire(self, scope: RateScope, limits: Sequence[RateLimit], *, timeout: float) -> None:
        """Block until one call is allowed under every limit (and count it), or raise
        RateLimited if that would take longer than `timeout` seconds."""
        ...


class UnlimitedRateLimiter:
    """Never holds anything back."""

    def acquire(self, scope: RateScope, limits: Sequence[RateLimit], *, timeout: float) -> None:
        return None


@dataclass
class _KeyLocks:
    guard: threading.Lock = field(default_factory=threading.Lock)
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)

    def lock_for(self, key: str) -> threading.Lock:
        with self.guard:
            lock = self.locks.get(key)
            if lock is None:
                lock = self.locks[key] = threading.Lock()
            return lock


class PollingRateLimiter:
    """`acquire` on top of a `_take(key, limits) -> Grant`: take one token; if none, sleep until
    the next one is due (plus a little jitter) and take again. Threads of this process that
    want the same scope queue on a per-key lock, so only one of them polls at a time."""

    # How much longer than its timeout a caller may wait for another thread of this process
    # that is taking a token for the same scope (a take is one short transaction).
    LOCK_GRACE_SECONDS = 0.05

    def __init__(
        self,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        self._sleep = sleep
        self._monotonic = monotonic
        self._jitter = jitter if jitter is not None else _default_jitter
        self._keys = _KeyLocks()

    def _take(self, key: str, limits: Sequence[RateLimit]) -> Grant:
        raise NotImplementedError

    def acquire(self, scope: RateScope, limits: Sequence[RateLimit], *, timeout: float) -> None:
        if not limits:
            return
        key = scope.key
        deadline = self._monotonic() + max(timeout, 0.0)
        lock = self._keys.lock_for(key)
        if not lock.acquire(timeout=max(timeout, 0.0) + self.LOCK_GRACE_SECONDS):
            due = self._keys.due.get(key)
            retry_after = max(due - self._monotonic(), 0.0) if due is not None else timeout
            raise RateLimited(scope, limits, retry_after=retry_after)
        try:
            while True:
                grant = self._take(key, limits)
                if grant.granted:
                    self._keys.due.pop(key, None)
                    return
                wait = grant.wait_seconds
                now = self._monotonic()
                self._keys.due[key] = now + wait
                if now + wait > deadline:
                    raise RateLimited(scope, limits, retry_after=wait)
                pause = min(wait + self._jitter(wait), max(deadline - now, wait))
                logger.debug(
                    "rate limit for %s (%s): waiting %.3f s",
                    scope.describe(),
                    describe_limits(limits),
                    pause,
                )
                self._sleep(pause)
        finally:
            lock.release()


def _default_jitter(wait: float) -> float:
    return random.uniform(0.0, min(0.02, 0.05 * wait + 0.002))


class MemoryRateLimiter(PollingRateLimiter):
    """The same limits, kept in this process only (previews, tests, adapters used outside the
    control plane). Thread-safe. `clock` gives the epoch time the algorithm sees."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] | None = None,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        super().__init__(
            sleep=sleep,
            monotonic=monotonic if monotonic is not None else time.monotonic,
            jitter=jitter,
        )
        self._clock = clock
        self._states: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, limits: Sequence[RateLimit], count: int = 1) -> Grant:
        with self._lock:
            grant = take(self._states.get(key), limits, count, self._clock())
            if grant.granted or key not in self._states:
                self._states[key] = grant.state
            return grant

    def _take(self, key: str, limits: Sequence[RateLimit]) -> Grant:
        return self.take(key, limits, 1)

    def reset(self, key: str | None = None) -> None:
        with self._lock:
            if key is None:
                self._states.clear()
            else:
                self._states.pop(key, None)

"""One retry policy for every provider call and every resubmission (tenacity underneath).

Two levels use the same rules:
- inside an adapter, `RetryPolicy.call(fn)` retries one provider operation a few times, quickly;
- across dispatcher passes, `RetryPolicy.delay(n, error)` says when a run whose submission failed
  may be tried again.

The rules: exponential backoff with full jitter in [0.5, 1.0] of the step; a provider's
`Retry-After` is a floor, never shortened by jitter; capacity and quota errors back off on a
longer scale (the cloud will not find Fargate capacity in half a second); each call is bounded by
a deadline, so a claim never outlives its lease while its dispatcher is alive.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from skylane.errors import (
    CapacityError,
    QuotaError,
    ThrottledError,
    TransientProviderError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_capacity_or_quota(error: BaseException) -> bool:
    return isinstance(error, CapacityError | QuotaError)


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for retryable provider errors (`ProviderError.retryable`, plus quota errors when
    `retry_quota`). Delays: `base * 2**(n-1)` capped at `cap`, times a jitter in [0.5, 1]; for
    capacity and quota errors `capacity_base`/`capacity_cap` instead; never below the error's
    `retry_after`."""

    attempts: int = 4
    base: float = 0.5
    cap: float = 20.0
    capacity_base: float = 15.0
    capacity_cap: float = 600.0
    # Whole-call deadline for `call`: no new try starts after it, and no sleep crosses it.
    deadline: float | None = 60.0
    # Longest sleep `call` takes between tries. A longer wait (a 30 s Retry-After) is handed
    # back to the caller, so a dispatcher frees its claim and comes back at the retry time
    # instead of holding a thread and a lease while it waits.
    longest_sleep: float | None = 10.0
    retry_capacity: bool = False
    retry_quota: bool = False

    def retryable(self, error: BaseException) -> bool:
        if getattr(error, "local", False):
            return False  # a rate limit we hold ourselves: its wait was already spent
        if isinstance(error, CapacityError):
            return self.retry_capacity
        if isinstance(error, QuotaError):
            return self.retry_quota
        return isinstance(error, TransientProviderError)

    def delay(self, attempt_number: int, error: BaseException | None) -> float:
        """Seconds to wait after try number `attempt_number` (1-based) failed with `error`."""
        slow = error is not None and is_capacity_or_quota(error)
        base, cap = (self.capacity_base, self.capacity_cap) if slow else (self.base, self.cap)
        step = min(cap, base * 2 ** max(0, attempt_number - 1))
        delay = step * random.uniform(0.5, 1.0)
        if isinstance(error, ThrottledError) and error.retry_after:
            delay = max(delay, error.retry_after)
        return delay

    def call(
        self, fn: Callable[[], T], *, what: str = "provider call", deadline: float | None = None
    ) -> T:
        """`fn()`, retried on retryable ProviderErrors up to `attempts` tries and within
        `deadline` seconds (default: the policy's); the last error is re-raised as it is."""
        from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

        started = time.monotonic()
        limit = self.deadline if deadline is None else deadline

        def remaining() -> float:
            if limit is None:
                return float("inf")
            return limit - (time.monotonic() - started)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return self.delay(state.attempt_number, error)

        def stop(state: RetryCallState) -> bool:
            if stop_after_attempt(max(1, self.attempts))(state):
                return True
            # Stop rather than sleep past the deadline, or longer than a caller should block
            # (the sleep is wait(state)).
            upcoming = state.upcoming_sleep or 0.0
            if self.longest_sleep is not None and upcoming > self.longest_sleep:
                return True
            return upcoming >= remaining()

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.info(
                "%s failed (%s); try %d of %d in %.1f s",
                what,
                error,
                state.attempt_number + 1,
                self.attempts,
                state.upcoming_sleep,
            )

        retrying: Retrying = Retrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(self.retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)


# Inside adapters: a few quick tries per operation.
PROVIDER_CALLS = RetryPolicy()

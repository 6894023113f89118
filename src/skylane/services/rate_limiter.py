"""The rate limiter of the control plane: limits shared by every replica through the database.

`SharedRateLimiter.acquire(scope, limits, timeout=...)` takes one token from the scope's state in
the database (`RateLimitStore.take`, one short transaction) at the moment of the call — no
tokens are reserved ahead, so the calls made by all replicas together never exceed a limit.
When no token is left it sleeps until the next one is due (plus a little jitter, so replicas do
not poll in step) and tries again, or raises `RateLimited` if that would cross `timeout`.
Threads of one process that want the same scope queue on a per-key lock: only one of them polls
the database for that key at a time. An empty list of limits costs nothing (no database access).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from skylane.rate_limits import Grant, PollingRateLimiter, RateLimit
from skylane.store.rate_limits import RateLimitStore

__all__ = ["SharedRateLimiter"]


class SharedRateLimiter(PollingRateLimiter):
    def __init__(
        self,
        rate_limit_store: RateLimitStore,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        super().__init__(sleep=sleep, monotonic=monotonic, jitter=jitter)
        self.rate_limit_store = rate_limit_store

    def _take(self, key: str, limits: Sequence[RateLimit]) -> Grant:
        return self.rate_limit_store.take(key, limits, 1)

"""Waiting for something a background process or thread does, in tests and demos."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None],
    what: str = "the condition",
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    context: str | Callable[[], str] = "",
) -> T:
    """The first truthy result of `check()`, called every `interval` seconds; AssertionError
    naming `what` after `timeout` seconds, followed by `context` (a callable is called only
    then, so a server log is read only when it is needed)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            details = context() if callable(context) else context
            raise AssertionError(f"gave up waiting for {what} after {timeout:g} s\n{details}")
        time.sleep(interval)

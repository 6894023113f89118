"""Stopping long-running commands cleanly: SIGINT and SIGTERM set an event the command waits
on, instead of raising in whatever the main thread was doing."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """While inside, SIGINT and SIGTERM set `stop`; the previous handlers come back after.
    Only the main thread may install handlers: elsewhere this does nothing (the caller stops
    the work by setting `stop` itself)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

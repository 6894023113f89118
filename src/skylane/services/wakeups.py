"""Event-driven wake-ups for the dispatcher: "runs may have become dispatchable".

Within one process the store calls its dispatch listeners after such a commit (a run created, a
concurrency slot freed, a pool or deployment changed). Between processes — replicas on one
PostgreSQL — the store also sends `NOTIFY skylane_dispatch` in the same transaction, and this
module keeps a connection that LISTENs for it. SQLite has no such channel; there one process
serves everything, so the in-process listener is the whole story.

The dispatcher still computes the next due time itself and sleeps no longer than that, so a
lost notification delays a run by at most `dispatcher_interval_seconds`, never forever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from skylane.store.repository import DISPATCH_CHANNEL, Store

log = logging.getLogger(__name__)

RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0)


class DispatchWakeups:
    """Calls `callback` whenever the store announces a dispatch-relevant change, from this
    process or (PostgreSQL) from any other."""

    def __init__(self, store: Store, callback: Callable[[], None]) -> None:
        self.store = store
        self.callback = callback
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.store.add_dispatch_listener(self.callback)
        if self.store.is_postgres:
            self._thread = threading.Thread(
                target=self._listen_forever, name="skylane-dispatch-listen", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.store.remove_dispatch_listener(self.callback)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _conninfo(self) -> str:
        url = self.store.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def _listen_forever(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._listen()
                failures = 0
            except Exception as exc:
                delay = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                log.warning(
                    "lost the PostgreSQL LISTEN connection (%s); reconnecting in %.1f s",
                    type(exc).__name__,
                    delay,
                )
                self._stopping.wait(delay)
            # Notifications may have been missed while disconnected: look once.
            self.callback()

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(self._conninfo(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"LISTEN {DISPATCH_CHANNEL}")
            while not self._stopping.is_set():
                # A burst of notifications becomes one wake-up: the dispatcher's event
                # coalesces them anyway.
                for _ in conn.notifies(timeout=1.0):
                    self.callback()

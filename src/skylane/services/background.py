"""The control plane's background services, started by `skylane server start --services`.

`api` is the HTTP server itself; the others are threads in the same process: `scheduler`
(creates the runs of schedules ahead of time), `dispatcher` (claims and submits due runs) and
`reconciler` (watches submitted runs). Each may run in any number of processes against one
PostgreSQL: schedulers and dispatchers share the work through row locks and unique keys, and one
reconciler at a time holds the work through a lease while the others stand by.
"""

from __future__ import annotations

from typing import Protocol

from skylane.errors import InvalidInput
from skylane.settings import Settings
from skylane.store.repository import Store

SERVICES = ("api", "scheduler", "dispatcher", "reconciler")
DEFAULT_SERVICES = "api,scheduler,dispatcher,reconciler"


class Service(Protocol):
    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...


def parse_services(value: str) -> list[str]:
    """The services named in `value` ("api,dispatcher"), in order, without repeats."""
    services = [part.strip().lower() for part in value.split(",") if part.strip()]
    unknown = [name for name in services if name not in SERVICES]
    if unknown or not services:
        what = f"unknown service {', '.join(unknown)}" if unknown else "no service given"
        raise InvalidInput(f"{what}; choose from {', '.join(SERVICES)}", field="--services")
    return list(dict.fromkeys(services))


def start_services(names: list[str], store: Store, settings: Settings) -> list[Service]:
    """Start the background services among `names` (`api` is not one); stop them with
    `stop_services`."""
    from skylane.services.dispatcher import Dispatcher, shared_pool_adapters
    from skylane.services.reconciler import Reconciler
    from skylane.services.scheduler import Scheduler

    # One adapter per pool for both services: one AWS session, one account look-up.
    adapters = shared_pool_adapters(store, settings)
    started: list[Service] = []
    try:
        if "reconciler" in names:
            started.append(Reconciler(store, settings, adapters=adapters))
            started[-1].start()
        if "dispatcher" in names:
            started.append(Dispatcher(store, settings, adapters=adapters))
            started[-1].start()
        if "scheduler" in names:
            started.append(Scheduler(store, settings))
            started[-1].start()
    except BaseException:
        stop_services(started)
        raise
    return started


def stop_services(services: list[Service]) -> None:
    # Dispatchers first: they may still be finishing submissions that the reconciler watches.
    for service in reversed(services):
        service.stop()

"""One dispatcher replica for `benchmarks/dispatch.py`: a process that only dispatches.

    python benchmarks/_dispatch_replica.py --db URL --name replica-0 [--log-file FILE]

It registers the fake provider, builds `Settings` (SKYLANE_* environment variables apply, e.g.
SKYLANE_DISPATCHER_INTERVAL_SECONDS), a `Store` on `--db`, and runs
`skylane.services.dispatcher.Dispatcher(store, settings, name=...)` until SIGTERM or SIGINT.

Its stdout is one JSON object per line, for the parent:
- `{"event": "ready", "pid", "settings", "cpu_s"}` once the dispatcher is started;
- `{"event": "exit", "pid", "cpu_s", "cpu_user_s", "cpu_sys_s", "max_rss_mib", "stop_s"}` after
  `stop()`, with its own CPU time from `resource.getrusage(RUSAGE_SELF)`.
Logs go to `--log-file` (or stderr), at `--log-level`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import sys
import threading
import time
from typing import Any


def _cpu() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 4),
        "cpu_user_s": round(usage.ru_utime, 4),
        "cpu_sys_s": round(usage.ru_stime, 4),
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "pid": os.getpid(), **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="skylane database URL")
    parser.add_argument("--name", required=True, help="the dispatcher's name (claimed_by)")
    parser.add_argument("--log-file", help="write logs here instead of stderr")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
        filename=args.log_file,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    from skylane.services.dispatcher import Dispatcher
    from skylane.settings import Settings
    from skylane.store import create_engine_for
    from skylane.store.repository import Store
    from skylane.testing.fake_provider import install

    install()
    settings = Settings(database_url=args.db)
    engine = create_engine_for(settings.resolved_database_url)
    store = Store(engine)
    dispatcher = Dispatcher(store, settings, name=args.name)
    dispatcher.start()
    # The settings that shape dispatching, including any the dispatcher's rewrite adds.
    shown = {
        k: v
        for k, v in settings.model_dump().items()
        if k.startswith(("dispatcher_", "claim_", "submit_", "max_submit", "capacity_"))
    }
    _emit("ready", settings=shown, **_cpu())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        started = time.perf_counter()
        dispatcher.stop()
        stop_s = round(time.perf_counter() - started, 3)
        engine.dispose()
        _emit("exit", stop_s=stop_s, **_cpu())
    return 0


if __name__ == "__main__":
    sys.exit(main())

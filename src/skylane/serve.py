"""`skylane serve path/file.py:func` and `my_flow.serve()`: run a flow on a schedule on the
machine that has its code, with nothing to build or push.

It registers (or updates) a deployment on this machine's own pull pool (`serve-<host>`, type
`process`, created on first use) and runs a worker for that pool in the same process, so the
runs start here, as subprocesses, in the flow's directory. The control plane still schedules,
records states and logs, and shows the runs like any others. Stop it with Ctrl-C or SIGTERM:
claims not started yet go back; runs already started finish.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from skylane.client import SkylaneClient
from skylane.errors import NotFound
from skylane.models import Deployment
from skylane.settings import Settings
from skylane.signals import stop_on_signals

SERVE_POOL_PREFIX = "serve-"


def serve_pool_name(hostname: str | None = None) -> str:
    """This machine's serve pool: `serve-<hostname>` in the characters pool names allow."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", hostname or socket.gethostname()).strip("-.")
    return f"{SERVE_POOL_PREFIX}{host or 'localhost'}"[:200]


def ensure_serve_pool(client: SkylaneClient, name: str) -> str:
    try:
        client.get_pool(name)
    except NotFound:
        client.create_pool(
            name=name,
            type="process",
            description=f"runs of `skylane serve` on {socket.gethostname()}",
        )
    return name


def serve(
    entrypoint: str,
    *,
    client: SkylaneClient,
    settings: Settings,
    name: str | None = None,
    cron: str | None = None,
    interval: int | str | None = None,
    timezone: str = "UTC",
    parameters: Mapping[str, Any] | None = None,
    project_dir: str | Path | None = None,
    limit: int | None = None,
    stop: threading.Event | None = None,
    announce: Callable[[str], object] = print,
) -> Deployment:
    """Register `entrypoint` (relative to `project_dir`, default the current directory) on
    this machine's serve pool with the schedule given, then work its runs until `stop` is set
    (default: SIGINT or SIGTERM). The deployment, as registered."""
    from skylane.entrypoints import describe_flow
    from skylane.flows import deploy_one, schedule_spec
    from skylane.worker import Worker, WorkerOptions

    base = Path(project_dir or Path.cwd()).resolve()
    flow_name, _ = describe_flow(entrypoint, base)
    pool = ensure_serve_pool(client, serve_pool_name())
    deployment = deploy_one(
        project_name=flow_name,
        project_dir=base,
        name=name or flow_name,
        pool=pool,
        entrypoint=entrypoint,
        source=None,
        image=None,
        schedule=schedule_spec(cron, interval, None, timezone),
        parameters=parameters,
        job_variables=None,
        tags=("serve",),
        description=f"served from {socket.gethostname()}:{base}",
        concurrency_limit=None,
        base_image=None,
        build=False,
        client=client,
        registries=None,
    )
    worker = Worker(
        client,
        WorkerOptions(pool=pool, name=f"{pool}-{os.getpid()}", limit=limit, prefetch_seconds=0),
        settings,
    )
    worker.register()
    stop = stop or threading.Event()
    with stop_on_signals(stop):
        worker.start()
        when = f" ({_schedule_text(cron, interval)})" if cron or interval else ""
        announce(
            f"serving {deployment.full_name}{when} on pool {pool}; runs start here, in {base}. "
            "Ctrl-C stops."
        )
        try:
            stop.wait()
        finally:
            worker.stop()
    return deployment


def _schedule_text(cron: str | None, interval: int | str | None) -> str:
    return f"cron {cron}" if cron else f"every {interval} s"

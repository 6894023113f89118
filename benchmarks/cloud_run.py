"""Cloud Run push: how fast a burst of due runs becomes Cloud Run executions, how long until
their jobs are gone again, and what each run costs in Cloud Run calls.

    .venv/bin/python benchmarks/cloud_run.py                          # 300 runs, SQLite
    .venv/bin/python benchmarks/cloud_run.py --no-rate-limit --database postgres
    .venv/bin/python benchmarks/cloud_run.py --no-rate-limit          # skylane's own pace
    .venv/bin/python benchmarks/cloud_run.py --runs 20 --run-containers

Procedure:
1. A real control plane (`skylane server start`, default settings: dispatcher and reconciler in
   one process) on a fresh database, and the Cloud Run emulator (`skylane.testing.gcp`) in this
   process; a `cloud-run:push` pool on it and a deployment of the `noop` flow.
2. The burst and its end as `_push_burst` measures them. The pool's default rate limit (3 job
   runs a second) paces the burst unless `--no-rate-limit`. Without `--run-containers` the
   executions stay running until the benchmark ends them all at once (the emulator's
   `finish_execution`); with it each execution runs the skylane runtime as a local process
   (`noop` returns at once) and the runs end COMPLETED by their own report.

Prints one JSON object (`emit`).
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from _common import emit, machine
from _push_burst import PushTarget, measure, parse_args
from _server import database, running_server

from skylane.testing.gcp import CloudRunEmulator

PROJECT = "bench-project"
REGION = "europe-west1"
IMAGE = "europe-west1-docker.pkg.dev/bench-project/flows/noop:1"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        argv, description=__doc__.splitlines()[0], runs=300, limit="3 job runs a second"
    )
    result: dict[str, Any] = {
        "benchmark": "cloud_run_push",
        "machine": machine(),
        "database": args.database,
        "runs": args.runs,
        "run_containers": args.run_containers,
        "rate_limit": "none" if args.no_rate_limit else "pool default (3 job runs/s)",
    }
    with (
        tempfile.TemporaryDirectory(prefix="skylane-bench-db-") as tmp,
        database(args.database, Path(tmp)) as db_url,
        running_server(db_url, services="api,dispatcher,reconciler") as server,
        CloudRunEmulator(
            outcome="succeeded" if args.run_containers else "manual",
            start_seconds=0.5,
            run_containers=args.run_containers,
            workdir=server.workdir,
        ) as emulator,
    ):

        def finish_all() -> None:
            for execution in emulator.executions():
                emulator.finish_execution(execution["name"], "succeeded")

        target = PushTarget(
            pool_type="cloud-run:push",
            pool_settings={
                "project": PROJECT,
                "region": REGION,
                "endpoint_url": emulator.url,
                **({"rate_limits": []} if args.no_rate_limit else {}),
            },
            image=IMAGE,
            calls=lambda since, until: Counter(
                r.rpc or "?" for r in emulator.requests() if since <= r.received_at < until
            ),
            started=lambda: len(emulator.executions()),
            remaining=lambda: len(emulator.jobs()),
            finish_all=None if args.run_containers else finish_all,
        )
        result.update(measure(server, target, args.runs, args.timeout))
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

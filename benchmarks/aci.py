"""ACI push: how fast a burst of due runs becomes container groups, how long until they are
deleted again, and what each run costs in Azure Resource Manager calls.

    .venv/bin/python benchmarks/aci.py                           # 100 runs, SQLite
    .venv/bin/python benchmarks/aci.py --no-rate-limit --runs 300
    .venv/bin/python benchmarks/aci.py --no-rate-limit --runs 300 --database postgres
    .venv/bin/python benchmarks/aci.py --runs 20 --run-containers

Procedure:
1. A real control plane (`skylane server start`, default settings: dispatcher and reconciler in
   one process) on a fresh database, and the ARM emulator (`skylane.testing.azure`, over TLS,
   groups provisioning for 0.5 s) in this process; an `aci:push` pool on it and a deployment of
   the `noop` flow.
2. The burst and its end as `_push_burst` measures them. The pool's default rate limit (100
   container group creates per 5 minutes, 300 per hour) holds a burst of more than 100 runs
   back, so figures of skylane's own pace take `--no-rate-limit`. Without `--run-containers`
   the groups stay running until the benchmark ends them all at once (the emulator's
   `finish_group`); with it each group runs the skylane runtime as a local process (`noop`
   returns at once) and the runs end COMPLETED by their own report.

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

from skylane.testing.azure import AciEmulator

SUBSCRIPTION = "00000000-0000-4000-8000-0000000be7c4"
IMAGE = "benchflows.azurecr.io/noop:1"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        argv, description=__doc__.splitlines()[0], runs=100, limit="100 creates per 5 minutes"
    )
    result: dict[str, Any] = {
        "benchmark": "aci_push",
        "machine": machine(),
        "database": args.database,
        "runs": args.runs,
        "run_containers": args.run_containers,
        "rate_limit": "none" if args.no_rate_limit else "pool default (100 creates / 5 min)",
    }
    with (
        tempfile.TemporaryDirectory(prefix="skylane-bench-db-") as tmp,
        database(args.database, Path(tmp)) as db_url,
        running_server(db_url, services="api,dispatcher,reconciler") as server,
        AciEmulator(
            provision_seconds=0.5,
            hold=not args.run_containers,
            run_containers=args.run_containers,
            workdir=server.workdir,
        ) as emulator,
    ):

        def finish_all() -> None:
            for group in emulator.groups():
                emulator.finish_group(group["name"], 0)

        def calls(since: float, until: float) -> Counter[str]:
            return Counter(
                r.operation or "?" for r in emulator.requests() if since <= r.received_at < until
            )

        target = PushTarget(
            pool_type="aci:push",
            pool_settings={
                "subscription_id": SUBSCRIPTION,
                "resource_group_name": "bench",
                "location": "westeurope",
                "endpoint_url": emulator.url,
                "ca_bundle": emulator.ca_bundle,
                **({"rate_limits": []} if args.no_rate_limit else {}),
            },
            image=IMAGE,
            calls=calls,
            started=lambda: sum(
                1 for r in emulator.requests("containerGroups.createOrUpdate") if r.status == 201
            ),
            remaining=lambda: len(emulator.groups()),
            finish_all=None if args.run_containers else finish_all,
        )
        result.update(measure(server, target, args.runs, args.timeout))
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

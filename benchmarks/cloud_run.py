"""Cloud Run push: how fast a burst of due runs becomes Cloud Run executions, how long until
their jobs are gone again, and what each run costs in Cloud Run calls.

    .venv/bin/python benchmarks/cloud_run.py                          # 300 runs, SQLite
    .venv/bin/python benchmarks/cloud_run.py --database postgres
    .venv/bin/python benchmarks/cloud_run.py --no-rate-limit          # skylane's own pace
    .venv/bin/python benchmarks/cloud_run.py --runs 20 --run-containers

Procedure:
1. A real control plane (`skylane server start`, default settings: dispatcher and reconciler in
   one process) on a fresh database, and the Cloud Run emulator (`skylane.testing.gcp`) in this
   process; a `cloud-run:push` pool on it and a deployment of the `noop` flow.
2. Burst: `--runs` runs created through the API, all due 2 s ahead. Measured: from the due time
   to the last run's `submitted_at` (and runs/s), each run's lateness (`submitted_at` minus its
   scheduled time), and the Cloud Run calls made meanwhile (the reconciler's reads of runs
   still PENDING included), per run and by method. The pool's default rate limit (3 job runs a
   second) paces the burst unless `--no-rate-limit`.
3. End: without `--run-containers` the executions stay running until the benchmark ends them
   all at once (the emulator's `finish_execution`); no runtime reports, so the reconciler
   settles each run (CRASHED, "ended at the provider without reporting") and deletes its job:
   its whole path. With `--run-containers` each execution runs the skylane runtime as a local
   process (`noop` returns at once) and the runs end COMPLETED by their own report. Measured:
   from the end to the last job deleted, and the Cloud Run calls per run of this phase.

Prints one JSON object (`emit`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import emit, log, machine, summarize
from _server import database, running_server

from skylane.testing.gcp import CloudRunEmulator
from skylane.testing.waiting import wait_until

PROJECT = "bench-project"
REGION = "europe-west1"
IMAGE = "europe-west1-docker.pkg.dev/bench-project/flows/noop:1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--run-containers",
        action="store_true",
        help="run the runtime for each execution (keep --runs small: one process each)",
    )
    parser.add_argument(
        "--no-rate-limit",
        action="store_true",
        help="lift the pool's default limit (3 job runs a second) to measure "
        "skylane's own throughput",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this long")
    parser.add_argument("--output", help="also write the JSON here")
    return parser.parse_args(argv)


def calls_by_rpc(emulator: CloudRunEmulator, since: float, until: float) -> Counter[str]:
    return Counter(r.rpc or "?" for r in emulator.requests() if since <= r.received_at < until)


def per_run(counts: Counter[str], runs: int) -> dict[str, float]:
    found = {rpc: round(n / runs, 2) for rpc, n in sorted(counts.items())}
    found["total"] = round(sum(counts.values()) / runs, 2)
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    ):
        outcome = "succeeded" if args.run_containers else "manual"
        with CloudRunEmulator(
            outcome=outcome,
            start_seconds=0.5,
            run_containers=args.run_containers,
            workdir=server.workdir,
        ) as emulator:
            client = server.client()
            client.create_pool(
                name="gcp",
                type="cloud-run:push",
                settings={
                    "project": PROJECT,
                    "region": REGION,
                    "endpoint_url": emulator.url,
                    **({"rate_limits": []} if args.no_rate_limit else {}),
                },
            )
            deployment = client.create_deployment(
                flow_name="noop",
                name="bench",
                pool="gcp",
                entrypoint="flows/noop.py:noop",
                image=IMAGE,
            )
            due = datetime.now(UTC) + timedelta(seconds=2)
            run_ids = [
                client.create_run(deployment.id, scheduled_time=due).id for _ in range(args.runs)
            ]
            log(f"{len(run_ids)} runs due at {due:%H:%M:%S}")

            def all_submitted() -> list[Any] | None:
                runs = client.list_runs(limit=args.runs + 10)
                done = [r for r in runs if any(a.submitted_at for a in r.attempts)]
                return runs if len(done) == len(run_ids) else None

            runs = wait_until(
                all_submitted, "every run to be submitted", timeout=args.timeout, interval=0.2
            )
            submitted = [max(a.submitted_at for a in r.attempts if a.submitted_at) for r in runs]
            last = max(submitted)
            burst_seconds = (last - due).total_seconds()
            burst_end = time.time()
            burst_calls = calls_by_rpc(emulator, 0, burst_end)
            result["burst"] = {
                "due_to_last_submitted_s": round(burst_seconds, 2),
                "runs_per_s": round(len(runs) / max(burst_seconds, 1e-9), 1),
                "lateness": summarize(
                    [
                        (s - r.scheduled_time).total_seconds()
                        for s, r in zip(submitted, runs, strict=True)
                    ],
                    "s",
                ),
                "calls_per_run": per_run(burst_calls, len(runs)),
                "executions": len(emulator.executions()),
            }
            log(f"burst: {result['burst']}")

            if not args.run_containers:
                for execution in emulator.executions():
                    emulator.finish_execution(execution["name"], "succeeded")
            end_start = time.time()
            wait_until(lambda: not emulator.jobs(), "every job to be deleted", timeout=args.timeout)
            end_seconds = time.time() - end_start
            states = Counter(r.state.value for r in client.list_runs(limit=args.runs + 10))
            result["end"] = {
                "to_last_job_deleted_s": round(end_seconds, 2),
                "final_states": dict(states),
                "calls_per_run": per_run(calls_by_rpc(emulator, burst_end, time.time()), len(runs)),
            }
            log(f"end: {result['end']}")
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

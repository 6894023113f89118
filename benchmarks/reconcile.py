"""Reconciler cost: provider calls and time per pass over many running ECS tasks.

    .venv/bin/python benchmarks/reconcile.py                 # 10,000 tasks, SQLite
    .venv/bin/python benchmarks/reconcile.py --tasks 2000 --database postgres

Procedure:
1. moto (in process) with one ECS cluster and one task definition; `--tasks` tasks started with
   RunTask (10 a call), left where moto puts them (state transitions set to manual, so they
   stay RUNNING as real long runs do).
2. A fresh skylane database with an `ecs:push` pool and a deployment; one run per task, claimed
   through the store and recorded with that task's ref, then marked RUNNING.
3. Reconciler passes, counting DescribeTasks calls with a botocore event hook on the adapter's
   own client:
   - `stale`: every run's last heartbeat is older than `missed_heartbeats` intervals, so every
     task must be asked about (the worst case);
   - `healthy`: every run heartbeat just now, so none needs the provider's word.

Prints one JSON object: tasks, and per pass kind the DescribeTasks calls, the seconds spent
inside them (moto, here), and the pass's seconds and CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import emit, log, machine

REGION = "us-east-1"
CLUSTER = "bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--output", help="also write the JSON here")
    return parser.parse_args(argv)


def start_tasks(count: int) -> list[tuple[str, str]]:
    import boto3
    from moto.moto_api import state_manager

    state_manager.set_transition(
        model_name="ecs::task", transition={"progression": "manual", "times": 10**9}
    )
    ecs = boto3.client("ecs", region_name=REGION)
    cluster_arn = ecs.create_cluster(clusterName=CLUSTER)["cluster"]["clusterArn"]
    ecs.register_task_definition(
        family="bench",
        containerDefinitions=[{"name": "flow", "image": "python:3.12", "memory": 512}],
    )
    tasks: list[tuple[str, str]] = []
    while len(tasks) < count:
        batch = min(10, count - len(tasks))
        response = ecs.run_task(
            cluster=CLUSTER, taskDefinition="bench", count=batch, launchType="FARGATE"
        )
        tasks.extend((t["taskArn"], cluster_arn) for t in response["tasks"])
    return tasks


def prepare_store(url: str, tasks: list[tuple[str, str]]) -> Any:
    from skylane.adapters.ecs import EcsAdapter, make_ref
    from skylane.models import RunState
    from skylane.store import create_engine_for, migrate
    from skylane.store.repository import Store
    from skylane.store.tables import RunRow

    engine = create_engine_for(url)
    migrate(engine)
    store = Store(engine)
    store.create_pool(
        name="aws",
        type="ecs:push",
        base_job_template=EcsAdapter.default_template(),
        settings={"region": REGION},
    )
    deployment = store.create_deployment(
        flow_name="etl",
        name="nightly",
        pool_name="aws",
        entrypoint="flows/etl.py:etl",
        image="python:3.12",
        job_variables={"cluster": CLUSTER},
    )
    past = datetime.now(UTC) - timedelta(minutes=1)
    for _ in tasks:
        store.create_run(deployment, parameters={}, job_variables={}, scheduled_time=past)
    claims = []
    while True:
        batch = store.claim_due_runs(claimed_by="bench", lease_seconds=600, limit=1000)
        if not batch:
            break
        claims.extend(batch)
    now = datetime.now(UTC)
    store.record_submissions(
        [
            (claim.attempt.idempotency_key, make_ref(arn, cluster), now)
            for claim, (arn, cluster) in zip(claims, tasks, strict=True)
        ]
    )
    with engine.begin() as connection:
        connection.execute(
            sa.update(RunRow).values(
                state=RunState.RUNNING.value, started_at=now, last_heartbeat_at=now
            )
        )
    return store


def set_heartbeats(store: Any, when: datetime) -> None:
    from skylane.store.tables import RunRow

    with store.engine.begin() as connection:
        connection.execute(sa.update(RunRow).values(last_heartbeat_at=when))


def run_benchmark(args: argparse.Namespace, url: str) -> dict[str, Any]:
    from moto import mock_aws

    from skylane.services.reconciler import Reconciler
    from skylane.settings import Settings

    with mock_aws():
        started = time.monotonic()
        tasks = start_tasks(args.tasks)
        store = prepare_store(url, tasks)
        log(f"{len(tasks)} tasks and runs ready in {time.monotonic() - started:.1f} s")
        settings = Settings()
        reconciler = Reconciler(store, settings, name="bench")
        pool = store.get_pool("aws")
        calls = {"DescribeTasks": 0, "seconds": 0.0, "started": 0.0}

        def before(**_: Any) -> None:
            calls["DescribeTasks"] += 1
            calls["started"] = time.monotonic()

        def after(**_: Any) -> None:
            calls["seconds"] += time.monotonic() - calls["started"]

        events = reconciler.adapters.get(pool).client("ecs", REGION).meta.events
        events.register("before-call.ecs.DescribeTasks", before)
        events.register("after-call.ecs.DescribeTasks", after)
        stale = datetime.now(UTC) - timedelta(
            seconds=settings.heartbeat_seconds * (settings.missed_heartbeats + 1)
        )
        result: dict[str, Any] = {"tasks": len(tasks)}
        for kind, heartbeat in (("stale", stale), ("healthy", None)):
            set_heartbeats(store, heartbeat or datetime.now(UTC))
            calls["DescribeTasks"], calls["seconds"] = 0, 0.0
            cpu, wall = time.process_time(), time.monotonic()
            report = reconciler.run_pass()
            result[kind] = {
                "describe_tasks_calls": calls["DescribeTasks"],
                "runs_checked": report.checked,
                "pass_s": round(time.monotonic() - wall, 3),
                # Inside the DescribeTasks calls: moto's work in process, a network wait on AWS.
                "describe_tasks_s": round(calls["seconds"], 3),
                "pass_cpu_s": round(time.process_time() - cpu, 3),
                "errors": len(report.errors),
            }
            log(f"{kind}: {result[kind]}")
        return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }
    )
    host = machine()
    with tempfile.TemporaryDirectory(prefix="skylane-reconcile-") as workdir:
        os.environ["SKYLANE_HOME"] = workdir
        if args.database == "sqlite":
            result = run_benchmark(args, f"sqlite:///{Path(workdir) / 'skylane.db'}")
        else:
            from skylane.testing.databases import temporary_postgres_database

            admin = os.environ.get(
                "SKYLANE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
            )
            with temporary_postgres_database(admin, prefix="skylane_bench") as url:
                result = run_benchmark(args, url)
    output = {
        "benchmark": "reconcile",
        "database": args.database,
        **result,
        "machine": host,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    emit(output, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

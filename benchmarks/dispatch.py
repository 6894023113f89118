"""Dispatch throughput and lateness: how fast the dispatcher gets due runs to a provider.

    .venv/bin/python benchmarks/dispatch.py                          # 5,000 runs due at once
    .venv/bin/python benchmarks/dispatch.py --database postgres --replicas 2
    .venv/bin/python benchmarks/dispatch.py --mode steady --rate 100 --duration 30
    .venv/bin/python benchmarks/dispatch.py --runs 200 --latency 0.01 --output /tmp/d.json

The provider is the fake one (`skylane.testing.fake_provider`): `submit` sleeps `--latency`
seconds, as a cloud API call would take, then records the resource with `time.time()` in its
own SQLite file. So the figures are the dispatcher's and the database's, not a cloud's.

Procedure:
1. A fresh skylane database (a SQLite file in a temporary directory, or a PostgreSQL database
   `skylane_bench_<random>` that is dropped afterwards), migrated; a `fake:push` pool with the
   latency in its settings; one deployment; `--runs` runs created through `Store.create_run`
   with a scheduled time a day ahead, so that nothing is due yet.
2. `--replicas` processes `benchmarks/_dispatch_replica.py`, each one `Dispatcher`, started
   and left idle until they report ready.
3. The runs are made due by one UPDATE of their scheduled time: all at T0 = now + `--lead`
   (burst), or T0 + i / `--rate` (steady). The dispatchers are warm when the first run is due,
   and creating runs is not measured. The UPDATE bypasses the store, so on SQLite nothing
   wakes the replicas: the lead (by default the replicas' `dispatcher_interval_seconds` + 1)
   lets each wake once and go to sleep until T0, as it does for runs a scheduler made ahead.
   On PostgreSQL the benchmark also sends the store's NOTIFY.
4. The database is polled (a count query, every 0.1 s) until every run has a provider ref,
   or `--timeout`; then the replicas get SIGTERM.

Figures (one JSON object on stdout, also written to `--output`):
- `lateness_*_s`: the provider's `submitted_at` minus the run's scheduled time, per run (its
  first resource).
- `runs_per_s`: runs that reached the provider / (last submission - first due time).
- `duplicates`: runs with more than one resource at the provider or more than one attempt
  holding a provider ref. The fake is not idempotent unless `--idempotent`, so a key submitted
  twice shows as two resources; `repeated_submit_calls` counts repeated submit calls anyway.
- `lost`: runs that never reached the provider; `unrecorded`: runs that did, but whose ref is
  not in skylane's database.
- `cpu_ms_per_run`: user + system CPU of the replica processes from 50 ms before T0 until the
  last ref is recorded (from /proc/PID/stat, 10 ms ticks), divided by `runs`. Each
  replica's own getrusage totals (start-up included) are in `replicas`.

Replicas read SKYLANE_* environment variables as the server does (for example
SKYLANE_DISPATCHER_INTERVAL_SECONDS); their settings are recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import cpu_seconds, log, machine, percentile
from _server import POSTGRES_ADMIN_URL, Unavailable, database

from skylane.settings import normalize_database_url
from skylane.store import create_engine_for, migrate
from skylane.store import repository as store_repository
from skylane.store.repository import Store
from skylane.store.tables import AttemptRow, RunRow
from skylane.testing.fake_provider import FakeAdapter, FakeCloud, install

REPLICA = Path(__file__).with_name("_dispatch_replica.py")
POOL = "bench-fake"
# Runs wait this far ahead until the measurement makes them due.
PARKED = timedelta(days=1)
POLL_SECONDS = 0.1
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
MIN_LEAD_SECONDS = 2.0
CPU_START_BEFORE_T0_SECONDS = 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Dispatch throughput and lateness against a fake provider."
    )
    parser.add_argument("--runs", type=int, default=5000, help="runs in burst mode (5000)")
    parser.add_argument(
        "--latency", type=float, default=0.05, help="seconds each submit takes (0.05)"
    )
    parser.add_argument("--replicas", type=int, default=1, help="dispatcher processes (1)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--mode", choices=["burst", "steady"], default="burst")
    parser.add_argument("--rate", type=float, default=100.0, help="steady: runs due per second")
    parser.add_argument("--duration", type=float, default=30.0, help="steady: seconds of runs")
    parser.add_argument(
        "--lead",
        type=float,
        help="seconds from making runs due to T0 (default: the dispatcher interval + 1, at "
        "least 2)",
    )
    parser.add_argument(
        "--idempotent",
        action="store_true",
        help="the fake provider returns the existing resource for a repeated key",
    )
    parser.add_argument("--timeout", type=float, help="seconds to wait for all submissions")
    parser.add_argument("--log-level", default="info", help="replicas' log level (info)")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (replica logs)"
    )
    args = parser.parse_args(argv)
    if args.mode == "steady":
        args.runs = max(1, round(args.rate * args.duration))
    if args.runs < 1 or args.replicas < 1 or args.latency < 0 or args.rate <= 0:
        parser.error("--runs, --replicas and --rate must be positive, --latency not negative")
    if args.timeout is None:
        # Generous for one sequential submitter: a slow dispatcher shows as slow, not as lost.
        spread = args.duration if args.mode == "steady" else 0.0
        args.timeout = 120.0 + spread + 3 * args.runs * args.latency
    return args


# --- setup ------------------------------------------------------------------------------------


def create_runs(url: str, args: argparse.Namespace, state_path: Path) -> tuple[Any, list[Any]]:
    """Migrate, create the pool, the deployment and the parked runs; (deployment id, run ids in
    creation order)."""
    engine = create_engine_for(url)
    try:
        migrate(engine)
        store = Store(engine)
        store.create_pool(
            name=POOL,
            type="fake:push",
            base_job_template=FakeAdapter.default_template(),
            settings={
                "fake_state_path": str(state_path),
                "latency_seconds": args.latency,
                "status": "RUNNING",
                "idempotent": args.idempotent,
            },
        )
        deployment = store.create_deployment(
            flow_name="bench", name="dispatch", pool_name=POOL, entrypoint="flows/noop.py:noop"
        )
        parked = datetime.now(UTC) + PARKED
        run_ids = []
        for i in range(args.runs):
            run = store.create_run(
                deployment, parameters={}, job_variables={}, scheduled_time=parked
            )
            run_ids.append(run.id)
            if (i + 1) % 1000 == 0:
                log(f"  created {i + 1}/{args.runs} runs")
        return deployment.id, run_ids
    finally:
        engine.dispose()


def make_due(url: str, args: argparse.Namespace, deployment_id: Any, run_ids: list[Any]) -> float:
    """Give the parked runs their real scheduled times; returns T0 (epoch seconds)."""
    engine = create_engine_for(url)
    runs = RunRow.__table__
    t0 = datetime.now(UTC) + timedelta(seconds=args.lead)
    try:
        with engine.begin() as connection:
            if args.mode == "burst":
                connection.execute(
                    runs.update()
                    .where(runs.c.deployment_id == deployment_id)
                    .values(scheduled_time=t0)
                )
            else:
                connection.execute(
                    runs.update()
                    .where(runs.c.id == sa.bindparam("b_id", type_=runs.c.id.type))
                    .values(
                        scheduled_time=sa.bindparam("b_time", type_=runs.c.scheduled_time.type)
                    ),
                    [
                        {"b_id": run_id, "b_time": t0 + timedelta(seconds=i / args.rate)}
                        for i, run_id in enumerate(run_ids)
                    ],
                )
            channel = getattr(store_repository, "DISPATCH_CHANNEL", None)
            if channel and engine.dialect.name == "postgresql":
                # What the store does after a dispatch-relevant change: wake the replicas.
                connection.execute(sa.select(sa.func.pg_notify(channel, "")))
    finally:
        engine.dispose()
    return t0.timestamp()


def reader_engine(url: str) -> sa.Engine:
    """Plain reads for polling and results: no BEGIN IMMEDIATE, so on SQLite (WAL) they never
    take the write lock the dispatchers need."""
    return sa.create_engine(normalize_database_url(url))


# --- replicas ---------------------------------------------------------------------------------


class Replica:
    def __init__(self, index: int, url: str, workdir: Path, log_level: str) -> None:
        self.name = f"replica-{index}"
        self.log_file = workdir / f"{self.name}.log"
        env = dict(os.environ)
        env["SKYLANE_HOME"] = str(workdir / "home")  # no user config file, no user data dir
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(REPLICA),
                *("--db", url, "--name", self.name),
                *("--log-file", str(self.log_file), "--log-level", log_level),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ready: dict[str, Any] | None = None
        self.exit: dict[str, Any] | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                log(f"{self.name}: {line.rstrip()}")

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.events.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.events.empty():
                    raise RuntimeError(
                        f"{self.name} exited ({self.process.returncode}) before {event!r}; "
                        f"log tail:\n{self.log_tail()}"
                    ) from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: no {event!r} after {timeout} s") from None
                continue
            if item.get("event") == event:
                return item

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        running = self.process.poll() is None
        if running:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.exit = self.wait_for("exit", STOP_TIMEOUT_SECONDS)
        except RuntimeError as exc:
            if running:  # one that died earlier has been reported already
                log(str(exc))
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"


def submitted_runs(engine: sa.Engine, deployment_id: Any) -> int:
    query = (
        sa.select(sa.func.count(sa.distinct(AttemptRow.run_id)))
        .join(RunRow, RunRow.id == AttemptRow.run_id)
        .where(RunRow.deployment_id == deployment_id, AttemptRow.provider_ref.is_not(None))
    )
    with engine.connect() as connection:
        return connection.scalar(query) or 0


# --- figures ----------------------------------------------------------------------------------


def figures(engine: sa.Engine, deployment_id: Any, cloud: FakeCloud, runs: int) -> dict[str, Any]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(RunRow.id, RunRow.scheduled_time, RunRow.state).where(
                RunRow.deployment_id == deployment_id
            )
        ).all()
        attempts = connection.execute(
            sa.select(AttemptRow.run_id, AttemptRow.provider_ref)
            .join(RunRow, RunRow.id == AttemptRow.run_id)
            .where(RunRow.deployment_id == deployment_id)
        ).all()
    scheduled = {str(run_id): when.timestamp() for run_id, when, _ in rows}
    states = Counter(state for _, _, state in rows)
    refs_by_run: dict[str, int] = Counter(str(r) for r, ref in attempts if ref is not None)

    resources = cloud.resources()
    by_run: dict[str, list[float]] = defaultdict(list)
    by_pid: Counter[int] = Counter()
    for resource in resources:
        if resource.run_id in scheduled:
            by_run[resource.run_id].append(resource.submitted_at)
            by_pid[resource.pid] += 1
    first = {run_id: min(times) for run_id, times in by_run.items()}
    lateness = [first[run_id] - scheduled[run_id] for run_id in first]

    multi_resources = {run_id for run_id, times in by_run.items() if len(times) > 1}
    multi_attempts = {run_id for run_id, count in refs_by_run.items() if count > 1}
    calls_per_key = Counter(call.key for call in cloud.calls())
    submitted = len(first)
    span = max(first.values()) - min(scheduled.values()) if first else 0.0
    result: dict[str, Any] = {
        "runs": runs,
        "submitted": submitted,
        "runs_per_s": round(submitted / span, 2) if span > 0 else None,
        "first_due_to_last_submission_s": round(span, 3),
        "lost": runs - submitted,
        "unrecorded": sum(1 for run_id in first if run_id not in refs_by_run),
        "duplicates": len(multi_resources | multi_attempts),
        "runs_with_several_resources": len(multi_resources),
        "keys_with_several_resources": len(cloud.duplicates()),
        "runs_with_several_refs": len(multi_attempts),
        "repeated_submit_calls": sum(n - 1 for n in calls_per_key.values()),
        "submit_calls": sum(calls_per_key.values()),
        "attempts": len(attempts),
        "states": dict(sorted(states.items())),
        "submissions_by_pid": {str(pid): n for pid, n in sorted(by_pid.items())},
    }
    if lateness:
        result.update(
            {
                "lateness_p50_s": round(percentile(lateness, 0.50), 4),
                "lateness_p90_s": round(percentile(lateness, 0.90), 4),
                "lateness_p99_s": round(percentile(lateness, 0.99), 4),
                "lateness_max_s": round(max(lateness), 4),
                "lateness_min_s": round(min(lateness), 4),
                "lateness_mean_s": round(sum(lateness) / len(lateness), 4),
            }
        )
    return result


# --- the benchmark ----------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, url: str, workdir: Path) -> dict[str, Any]:
    install()
    state_path = workdir / "fake-cloud.sqlite"
    cloud = FakeCloud(state_path)

    log(f"setup: {args.runs} runs on {args.database}")
    started = time.perf_counter()
    deployment_id, run_ids = create_runs(url, args, state_path)
    setup_s = time.perf_counter() - started

    log(f"starting {args.replicas} replica(s)")
    replicas = [Replica(i, url, workdir, args.log_level) for i in range(args.replicas)]
    reader = reader_engine(url)
    timed_out = False
    try:
        for replica in replicas:
            replica.ready = replica.wait_for("ready", READY_TIMEOUT_SECONDS)
        interval = replicas[0].ready["settings"].get("dispatcher_interval_seconds")
        if args.lead is None:
            # A dispatcher asleep when the runs are made due wakes within its interval and then
            # sleeps until the first due time: the runs are due while it is already waiting.
            args.lead = max(MIN_LEAD_SECONDS, float(interval or 0) + 1.0)
        elif isinstance(interval, int | float) and interval >= args.lead:
            log(
                f"warning: --lead {args.lead} s <= dispatcher interval {interval} s: a replica "
                "may sleep past T0 and the lateness then includes that sleep"
            )
        time.sleep(0.5)  # let the first (empty) passes finish

        t0 = make_due(url, args, deployment_id, run_ids)
        log(f"runs due from T0 = now + {args.lead} s; waiting (timeout {args.timeout:.0f} s)")
        # CPU from just before the first run is due: the idle lead is not dispatching.
        time.sleep(max(0.0, t0 - time.time() - CPU_START_BEFORE_T0_SECONDS))
        cpu_before = {r.name: r.cpu() for r in replicas}
        deadline = time.monotonic() + args.timeout
        last_report = time.monotonic()
        while True:
            done = submitted_runs(reader, deployment_id)
            if done >= args.runs:
                break
            for replica in replicas:
                if replica.process.poll() is not None:
                    raise RuntimeError(
                        f"{replica.name} exited ({replica.process.returncode}); log tail:\n"
                        + replica.log_tail()
                    )
            if time.monotonic() > deadline:
                timed_out = True
                log(f"timed out with {done}/{args.runs} runs submitted")
                break
            if time.monotonic() - last_report > 10:
                log(f"  {done}/{args.runs} runs submitted")
                last_report = time.monotonic()
            time.sleep(POLL_SECONDS)
        finished = time.time()
        cpu_used = {r.name: r.cpu() - cpu_before[r.name] for r in replicas}
    finally:
        for replica in replicas:
            replica.stop()

    result = {
        "benchmark": "dispatch",
        "mode": args.mode,
        "database": args.database,
        "replicas": args.replicas,
        "latency_s": args.latency,
        **({"rate_per_s": args.rate, "duration_s": args.duration} if args.mode == "steady" else {}),
        "lead_s": args.lead,
        "idempotent_provider": args.idempotent,
        "timed_out": timed_out,
        "timeout_s": round(args.timeout, 1),
        "dispatch_wall_s": round(finished - t0, 3),
        "setup_s": round(setup_s, 2),
    }
    result.update(figures(reader, deployment_id, cloud, args.runs))
    reader.dispose()
    cpu_total = sum(cpu_used.values())
    result.update(
        {
            "cpu_s": round(cpu_total, 3),
            "cpu_ms_per_run": round(1000 * cpu_total / args.runs, 3),
            "replica_details": [
                {
                    "name": r.name,
                    "pid": r.process.pid,
                    "dispatch_cpu_s": round(cpu_used[r.name], 3),
                    "cpu_s_at_ready": (r.ready or {}).get("cpu_s"),
                    "cpu_s_at_exit": (r.exit or {}).get("cpu_s"),
                    "max_rss_mib": (r.exit or {}).get("max_rss_mib"),
                    "stop_s": (r.exit or {}).get("stop_s"),
                    "exit_code": r.process.returncode,
                }
                for r in replicas
            ],
            "settings": (replicas[0].ready or {}).get("settings"),
        }
    )
    names = {str(r.process.pid): r.name for r in replicas}
    result["submissions_by_replica"] = {
        names.get(pid, pid): n for pid, n in result.pop("submissions_by_pid").items()
    }
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    host = machine()  # before the run: its load average is the one at start
    with tempfile.TemporaryDirectory(prefix="skylane-dispatch-") as tmp:
        workdir = Path(tmp)
        try:
            with database(args.database, workdir) as url:
                result = run_benchmark(args, url, workdir)
        except Unavailable as exc:
            log(f"skipped: {exc}")
            return 2
        if args.keep:
            kept = Path(tempfile.mkdtemp(prefix="skylane-dispatch-logs-"))
            for path in workdir.glob("replica-*.log"):
                path.rename(kept / path.name)
            log(f"replica logs kept in {kept}")
    result.update(
        {
            "python_version": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "machine": host,
            "postgres_admin_url": POSTGRES_ADMIN_URL if args.database == "postgres" else None,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 1 if result["timed_out"] or result["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())

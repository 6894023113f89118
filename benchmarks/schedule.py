"""Scheduler cost: materializing the next hour of runs for many cron schedules, and the passes
after it.

    .venv/bin/python benchmarks/schedule.py                      # 10,000 deployments, SQLite
    .venv/bin/python benchmarks/schedule.py --database postgres --output /tmp/schedule.json
    .venv/bin/python benchmarks/schedule.py --deployments 1000 --steady-repeats 10

Procedure:
1. A fresh database (a SQLite file in a temporary directory, or a PostgreSQL database
   `skylane_bench_<random>` dropped afterwards), migrated; one `process:push` pool; then
   `--deployments` deployments with one cron schedule each. The schedules' fields are what the
   API stores (`skylane.services.schedule_rules.checked_fields`); the rows are written with two
   Core executemany INSERTs (deployments, schedules), since setup is not what is measured.
   Cron expressions and time zones are drawn with a seeded `random.Random(--seed)`:
   40 % `M * * * *` (hourly at a random minute), 20 % `*/15 * * * *`, 25 % `M H * * *` (daily),
   15 % `M H * * 1-5` (weekdays), in UTC (40 %), Europe/Berlin, America/New_York, Asia/Tokyo
   or Australia/Sydney (15 % each). Catch-up `latest`, default settings (lookahead 1 h, at
   least 3 and at most 100 runs per fill, grace 5 min).
   Every schedule is stored as a new one: `materialized_through` = `next_fill_at` = T0, where
   T0 is the start of the current minute plus 1 s (so no cron time is due in the next 59 s and
   the steady passes below have nothing to do).
2. `first`: one `Scheduler(store, settings).run_pass(T0)`: every schedule is due, so this is
   the whole of "materializing the next hour" (at least 3 runs per schedule: a daily schedule
   gets its next 3 days). Wall and process CPU seconds (`time.process_time`, all threads of
   this process; PostgreSQL's own backend CPU is not included).
3. `steady`: `--steady-repeats` passes at T0 + 2 s, T0 + 4 s, ...: no schedule is due, so a
   pass is the `due` query and the missed-runs query. Median and max wall seconds.
4. `topup`: every run up to T0 + 16 min is marked COMPLETED (as if the dispatcher had
   submitted it: otherwise the pass would cancel them as missed), then one pass at T0 + 16 min:
   the schedules whose `next_fill_at` has come get their next runs, the steady trickle a
   running scheduler does every `scheduler_interval_seconds`.
5. Memory of the timed run (steps 1-4): `peak_rss_mib`, the peak RSS of the process
   (`getrusage` ru_maxrss, KiB -> MiB, setup included) and, per pass, `peak_rss_during_mib`,
   the peak RSS during that pass alone (VmHWM after resetting it through /proc/self/clear_refs,
   where the kernel allows it; the reset also resets ru_maxrss, so the peak before each reset
   is kept and counted). Then, because tracemalloc slows Python code down several times, a
   separate repeat of steps 1-2 on a second fresh database with tracemalloc on during the first
   pass only: `tracemalloc_peak_mib` is the peak of the Python allocations made during that
   pass; its (distorted) time is `tracemalloc_run.first_pass_wall_s`. `--no-tracemalloc` skips
   the repeat.

Prints one JSON object (also written to `--output`): deployments, database, runs_created,
first_pass, steady_pass, topup_pass, peak memory and the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import MIB, emit, log, machine, proc_status

POOL = "bench-process"
FLOWS = 100  # deployments are spread over this many flow names
TOPUP_AFTER = timedelta(minutes=16)
STEADY_STEP = timedelta(seconds=2)
ZONES = [
    ("UTC", 40),
    ("Europe/Berlin", 15),
    ("America/New_York", 15),
    ("Asia/Tokyo", 15),
    ("Australia/Sydney", 15),
]
KINDS = [("hourly", 40), ("quarter-hourly", 20), ("daily", 25), ("weekdays", 15)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--steady-repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the tracemalloc repeat")
    parser.add_argument("--output", help="also write the JSON here")
    return parser.parse_args(argv)


def code_fingerprint() -> dict[str, str]:
    """Short hashes of the measured modules, to tell which version of the code a result is of."""
    import skylane

    root = Path(skylane.__file__).parent
    return {
        name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:12]
        for name in ("services/scheduler.py", "store/schedules.py", "schedules.py")
    }


# --- memory ---------------------------------------------------------------------------------


# The highest peak RSS seen before any reset: resetting VmHWM resets ru_maxrss too.
_peak_seen_mib = 0.0


def max_rss_mib() -> float:
    """Peak RSS of this process so far (ru_maxrss is in KiB on Linux), resets included."""
    current = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return round(max(current, current_peak_rss_mib() or 0.0, _peak_seen_mib), 1)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), remembering the peak so far; False where
    the kernel does not allow it."""
    global _peak_seen_mib
    _peak_seen_mib = max_rss_mib()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def current_peak_rss_mib() -> float | None:
    """VmHWM: peak RSS since start, or since the last `reset_peak_rss`."""
    value = (proc_status("self") or {}).get("VmHWM")
    return round(int(value.split()[0]) / 1024, 1) if value else None


def current_rss_mib() -> float | None:
    value = (proc_status("self") or {}).get("VmRSS")
    return round(int(value.split()[0]) / 1024, 1) if value else None


# --- setup ----------------------------------------------------------------------------------


def cron_mix(count: int, seed: int) -> list[tuple[str, str]]:
    """`count` (cron expression, time zone) pairs, the same ones for the same seed."""
    rng = random.Random(seed)
    kinds, kind_weights = zip(*KINDS, strict=True)
    zones, zone_weights = zip(*ZONES, strict=True)
    mix = []
    for _ in range(count):
        kind = rng.choices(kinds, kind_weights)[0]
        minute, hour = rng.randrange(60), rng.randrange(24)
        cron = {
            "hourly": f"{minute} * * * *",
            "quarter-hourly": "*/15 * * * *",
            "daily": f"{minute} {hour} * * *",
            "weekdays": f"{minute} {hour} * * 1-5",
        }[kind]
        mix.append((cron, rng.choices(zones, zone_weights)[0]))
    return mix


def prepare_store(url: str, count: int, seed: int, t0: datetime) -> tuple[Any, dict[str, int]]:
    """A migrated store with the pool and `count` deployments with one cron schedule each,
    every schedule due at `t0` with nothing materialized yet. Also the kinds of the mix."""
    from skylane.adapters.process import ProcessAdapter
    from skylane.api.schemas import ScheduleCreate
    from skylane.services.schedule_rules import checked_fields
    from skylane.store import create_engine_for, migrate
    from skylane.store.repository import Store
    from skylane.store.tables import DeploymentRow, ScheduleRow

    engine = create_engine_for(url)
    migrate(engine)
    store = Store(engine)
    pool = store.create_pool(
        name=POOL, type="process:push", base_job_template=ProcessAdapter.default_template()
    )
    # One deployment made the ordinary way: the model `checked_fields` validates against (all
    # deployments here have the same empty parameter schema).
    model = store.create_deployment(
        flow_name="flow-000",
        name="deployment-00000",
        pool_name=POOL,
        entrypoint="flows/etl.py:etl",
        parameters={"source": "s3://bench/input", "shard": 0},
    )
    mix = cron_mix(count, seed)
    deployments: list[dict[str, Any]] = []
    schedules: list[dict[str, Any]] = []
    for index, (cron, zone) in enumerate(mix):
        deployment_id = model.id if index == 0 else uuid.uuid4()
        if index:
            deployments.append(
                {
                    "id": deployment_id,
                    "flow_name": f"flow-{index % FLOWS:03d}",
                    "name": f"deployment-{index:05d}",
                    "pool_id": pool.id,
                    "entrypoint": "flows/etl.py:etl",
                    "parameters": {"source": "s3://bench/input", "shard": index % 16},
                    "created_at": t0,
                    "updated_at": t0,
                }
            )
        fields = checked_fields(model, ScheduleCreate(cron=cron, timezone=zone))
        schedules.append(
            {
                **fields,
                "id": uuid.uuid4(),
                "deployment_id": deployment_id,
                "version": 1,
                "materialized_through": t0,
                "next_fill_at": t0,
                "created_at": t0,
                "updated_at": t0,
            }
        )
    with engine.begin() as connection:
        if deployments:
            connection.execute(sa.insert(DeploymentRow.__table__), deployments)
        connection.execute(sa.insert(ScheduleRow.__table__), schedules)
    kinds = Counter(_kind(cron) for cron, _ in mix)
    return store, dict(sorted(kinds.items()))


def _kind(cron: str) -> str:
    if cron.startswith("*/15"):
        return "quarter-hourly"
    if cron.endswith("1-5"):
        return "weekdays"
    return "hourly" if cron.split()[1] == "*" else "daily"


def count_runs(store: Any) -> int:
    from skylane.store.tables import RunRow

    with store.engine.connect() as connection:
        return connection.scalar(sa.select(sa.func.count()).select_from(RunRow))


def complete_runs_through(store: Any, until: datetime) -> int:
    """Mark runs due up to `until` COMPLETED, as if the dispatcher had done its work."""
    from skylane.models import RunState
    from skylane.store.tables import RunRow

    with store.engine.begin() as connection:
        return connection.execute(
            sa.update(RunRow)
            .where(RunRow.scheduled_time <= until)
            .values(state=RunState.COMPLETED.value, ended_at=until)
        ).rowcount


# --- measurement ----------------------------------------------------------------------------


def timed_pass(scheduler: Any, now: datetime) -> dict[str, Any]:
    """One scheduler pass at `now`: its report, wall and CPU seconds, peak RSS during it."""
    gc.collect()
    tracked = reset_peak_rss()
    rss_before = current_rss_mib()
    cpu, wall = time.process_time(), time.perf_counter()
    report = scheduler.run_pass(now)
    wall_s = time.perf_counter() - wall
    cpu_s = time.process_time() - cpu
    return {
        "wall_s": round(wall_s, 4),
        "cpu_s": round(cpu_s, 4),
        "schedules_filled": report.schedules_filled,
        "runs_created": report.runs_created,
        "missed_runs_skipped": report.missed_runs_skipped,
        "schedules_stale": report.schedules_stale,
        "errors": report.errors,
        "rss_before_mib": rss_before,
        "peak_rss_during_mib": current_peak_rss_mib() if tracked else None,
    }


def run_timed(url: str, args: argparse.Namespace, t0: datetime) -> dict[str, Any]:
    from skylane.services.scheduler import Scheduler
    from skylane.settings import Settings

    started = time.monotonic()
    store, kinds = prepare_store(url, args.deployments, args.seed, t0)
    setup_s = time.monotonic() - started
    log(f"{args.deployments} deployments and schedules ready in {setup_s:.1f} s ({kinds})")
    settings = Settings()
    scheduler = Scheduler(store, settings, name="bench")

    first = timed_pass(scheduler, t0)
    log(f"first: {first}")
    runs_after_first = count_runs(store)

    steady = []
    for repeat in range(1, args.steady_repeats + 1):
        steady.append(timed_pass(scheduler, t0 + STEADY_STEP * repeat))
        log(f"steady {repeat}: {steady[-1]}")
    walls = [s["wall_s"] for s in steady]
    cpus = [s["cpu_s"] for s in steady]

    topup_at = t0 + TOPUP_AFTER
    completed = complete_runs_through(store, topup_at)
    topup = timed_pass(scheduler, topup_at)
    topup["now_offset_s"] = TOPUP_AFTER.total_seconds()
    topup["runs_marked_completed_before"] = completed
    log(f"topup: {topup}")
    peak = max_rss_mib()
    total_runs = count_runs(store)
    store.engine.dispose()
    return {
        "schedule_mix": kinds,
        "setup_s": round(setup_s, 1),
        "runs_created": first["runs_created"],
        "runs_in_database_after_first_pass": runs_after_first,
        "first_pass": first,
        "steady_pass": {
            "n": len(steady),
            "median_s": round(statistics.median(walls), 4),
            "max_s": round(max(walls), 4),
            "median_cpu_s": round(statistics.median(cpus), 4),
            "max_cpu_s": round(max(cpus), 4),
            "runs_created": sum(s["runs_created"] for s in steady),
            "schedules_filled": sum(s["schedules_filled"] for s in steady),
            "samples_s": walls,
            "peak_rss_during_mib": max(
                (s["peak_rss_during_mib"] for s in steady if s["peak_rss_during_mib"]),
                default=None,
            ),
        },
        "topup_pass": topup,
        "runs_in_database_after_topup": total_runs,
        "peak_rss_mib": peak,
    }


def run_tracemalloc(url: str, args: argparse.Namespace, t0: datetime) -> dict[str, Any]:
    """Steps 1-2 again on a fresh database, tracemalloc on during the first pass only."""
    from skylane.services.scheduler import Scheduler
    from skylane.settings import Settings

    store, _ = prepare_store(url, args.deployments, args.seed, t0)
    scheduler = Scheduler(store, Settings(), name="bench")
    gc.collect()
    tracemalloc.start()
    baseline, _ = tracemalloc.get_traced_memory()
    wall = time.perf_counter()
    report = scheduler.run_pass(t0)
    wall_s = time.perf_counter() - wall
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    store.engine.dispose()
    return {
        "tracemalloc_peak_mib": round((peak - baseline) / MIB, 1),
        "first_pass_wall_s": round(wall_s, 3),
        "runs_created": report.runs_created,
    }


@contextlib.contextmanager
def fresh_database(kind: str, workdir: Path, label: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'{label}.db'}"
        return
    from skylane.testing.databases import temporary_postgres_database

    admin = os.environ.get(
        "SKYLANE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    with temporary_postgres_database(admin, prefix="skylane_bench") as url:
        yield url


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    host = machine()  # before the run: its load average is the one at start
    t0 = datetime.now(UTC).replace(second=1, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="skylane-schedule-") as workdir:
        os.environ["SKYLANE_HOME"] = workdir
        with fresh_database(args.database, Path(workdir), "timed") as url:
            result = run_timed(url, args, t0)
        traced = None
        if not args.no_tracemalloc:
            with fresh_database(args.database, Path(workdir), "tracemalloc") as url:
                traced = run_tracemalloc(url, args, t0)
            log(f"tracemalloc: {traced}")
    output = {
        "benchmark": "schedule",
        "deployments": args.deployments,
        "database": args.database,
        "t0": t0.isoformat(),
        **result,
        "tracemalloc_peak_mib": traced["tracemalloc_peak_mib"] if traced else None,
        "tracemalloc_run": traced,
        "machine": host,
        "code_sha256": code_fingerprint(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    emit(output, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The procedure the push benchmarks share (`cloud_run.py`, `aci.py`): a burst of due runs
pushed to a provider emulator, then every run's whole path to its cleanup.

1. A `--runs` burst created through the API, all due 2 s ahead. Measured: from the due time to
   the last run's `submitted_at` (and runs/s), each run's lateness (`submitted_at` minus its
   scheduled time), and the provider calls made meanwhile (the reconciler's reads of runs still
   pending included), per run and by operation.
2. End: the provider's resources all end at once (`PushTarget.finish_all`, or on their own when
   their containers really run); with no runtime report the reconciler settles each run
   (CRASHED, "ended at the provider without reporting") and deletes what it created. Measured:
   from the end to the last resource deleted, and the calls per run of this phase.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from _common import log, summarize
from _server import Server

from skylane.testing.waiting import wait_until


@dataclass
class PushTarget:
    """One provider emulator, as the burst procedure sees it."""

    pool_type: str
    pool_settings: dict[str, Any]
    image: str
    # Provider calls by operation received in [since, until) (epoch seconds).
    calls: Callable[[float, float], Counter[str]]
    # How many provider resources (executions, container groups) were started.
    started: Callable[[], int]
    # How many are not deleted yet.
    remaining: Callable[[], int]
    # End every resource still running (None: they end by themselves).
    finish_all: Callable[[], None] | None = None


def parse_args(
    argv: list[str] | None, *, description: str, runs: int, limit: str
) -> argparse.Namespace:
    """The options every push benchmark takes; `limit` says what the pool's default rate limit
    is, for --no-rate-limit's help."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--run-containers",
        action="store_true",
        help="run the runtime for each run (keep --runs small: one process each)",
    )
    parser.add_argument(
        "--no-rate-limit",
        action="store_true",
        help=f"lift the pool's default limit ({limit}) to measure skylane's own throughput",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this long")
    parser.add_argument("--output", help="also write the JSON here")
    return parser.parse_args(argv)


def per_run(counts: Counter[str], runs: int) -> dict[str, float]:
    found = {name: round(n / runs, 2) for name, n in sorted(counts.items())}
    found["total"] = round(sum(counts.values()) / runs, 2)
    return found


def measure(server: Server, target: PushTarget, runs: int, timeout: float) -> dict[str, Any]:
    """Run the procedure; `{"burst": ..., "end": ...}`."""
    client = server.client()
    client.create_pool(name="bench", type=target.pool_type, settings=target.pool_settings)
    deployment = client.create_deployment(
        flow_name="noop",
        name="bench",
        pool="bench",
        entrypoint="flows/noop.py:noop",
        image=target.image,
    )
    due = datetime.now(UTC) + timedelta(seconds=2)
    run_ids = [client.create_run(deployment.id, scheduled_time=due).id for _ in range(runs)]
    log(f"{len(run_ids)} runs due at {due:%H:%M:%S}")

    def all_submitted() -> list[Any] | None:
        found = client.list_runs(limit=runs + 10)
        done = [r for r in found if any(a.submitted_at for a in r.attempts)]
        return found if len(done) == len(run_ids) else None

    listed = wait_until(all_submitted, "every run to be submitted", timeout=timeout, interval=0.2)
    submitted = [max(a.submitted_at for a in r.attempts if a.submitted_at) for r in listed]
    burst_seconds = (max(submitted) - due).total_seconds()
    burst_end = time.time()
    lateness = [
        (at - run.scheduled_time).total_seconds() for at, run in zip(submitted, listed, strict=True)
    ]
    burst = {
        "due_to_last_submitted_s": round(burst_seconds, 2),
        "runs_per_s": round(len(listed) / max(burst_seconds, 1e-9), 1),
        "lateness": summarize(lateness, "s"),
        "calls_per_run": per_run(target.calls(0, burst_end), len(listed)),
        "started": target.started(),
    }
    log(f"burst: {burst}")

    if target.finish_all is not None:
        target.finish_all()
    end_start = time.time()
    wait_until(lambda: target.remaining() == 0, "everything to be deleted", timeout=timeout)
    states = Counter(r.state.value for r in client.list_runs(limit=runs + 10))
    end = {
        "to_last_deleted_s": round(time.time() - end_start, 2),
        "final_states": dict(states),
        "calls_per_run": per_run(target.calls(burst_end, time.time()), len(listed)),
    }
    log(f"end: {end}")
    return {"burst": burst, "end": end}

"""`dispatch_latency` and `memory`: runs of a trivial flow through a real server and its
dispatcher on a `process:push` pool.

Each run is created through the HTTP API (SkylaneClient), one at a time, and polled with GET
every `POLL_SECONDS` until it is COMPLETED. Two views of the same runs are reported:

- `observed_*`: from just before the POST to the first poll that shows the state (or a later
  one), so they include the polling resolution and the POST itself;
- `recorded_*`: from the server's own timestamps (the run's `created_at`, its state history and
  the attempt's `submitted_at`), which split the path into its steps without polling error.

`memory` reads VmRSS/VmHWM of the server process from /proc, and the peak RSS of one runtime
process (`skylane run execute`) twice: as the flow itself reports it in its log, and by sampling
the supervised child of the process-adapter supervisor from outside while the flow sleeps.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import children_of, is_alive, log, memory_mib, summarize
from _server import Server

from skylane.client import SkylaneClient
from skylane.models import Deployment, Run, RunState

POLL_SECONDS = 0.02
# A second, smaller series polled this slowly shows what the 20 ms polling itself costs: each
# GET takes server CPU that the starting runtime process would otherwise have.
SLOW_POLL_SECONDS = 0.5
RUN_TIMEOUT_SECONDS = 60.0
# Order in which a successful run passes the states we time.
PROGRESS = [RunState.SCHEDULED, RunState.PENDING, RunState.RUNNING, RunState.COMPLETED]
FAILED_STATES = {RunState.FAILED, RunState.CRASHED, RunState.CANCELLED, RunState.CANCELLING}


def _setup(client: SkylaneClient, server: Server, flow: str) -> Deployment:
    if not any(p.name == "bench" for p in client.list_pools()):
        client.create_pool(name="bench", type="process:push")
    return client.create_deployment(
        flow_name=flow,
        name="bench",
        pool="bench",
        entrypoint=f"{server.workdir / 'flows' / (flow + '.py')}:{flow}",
        job_variables={"working_dir": str(server.workdir)},
    )


def _wait_gone(run: Run, timeout: float = 5.0) -> None:
    """Wait for the run's supervisor to exit, so the next run does not share the CPU with
    the previous one's interpreter shutdown."""
    pid = _supervisor_pid(run)
    deadline = time.monotonic() + timeout
    while pid is not None and is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _supervisor_pid(run: Run) -> int | None:
    ref = run.attempts[-1].provider_ref if run.attempts else None
    if not ref:
        return None
    return int(ref.rsplit(":", 2)[1])


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds() * 1000


def _state_time(run: Run, state: RunState) -> datetime | None:
    for change in run.history:
        if change.state == state:
            return change.timestamp
    return None


def _timed_run(
    client: SkylaneClient, server: Server, deployment: Deployment, poll: float = POLL_SECONDS
) -> tuple[Run, dict[str, float | None]]:
    """Create one run, poll it to COMPLETED; the observed and recorded durations in ms."""
    t0 = time.perf_counter()
    created = client.create_run(deployment.id)
    post_done = time.perf_counter()
    observed: dict[RunState, float] = {}
    deadline = post_done + RUN_TIMEOUT_SECONDS
    tick = post_done
    run = created
    while True:
        run = client.get_run(created.id)
        now = time.perf_counter()
        if run.state in FAILED_STATES:
            raise RuntimeError(
                f"run {run.id} ended {run.state}: {run.state_message}\n"
                f"server log:\n{server.log_tail()}"
            )
        reached = PROGRESS.index(run.state)
        for state in PROGRESS[1 : reached + 1]:
            observed.setdefault(state, (now - t0) * 1000)
        if run.state == RunState.COMPLETED:
            break
        if now > deadline:
            raise RuntimeError(
                f"run {run.id} still {run.state} after {RUN_TIMEOUT_SECONDS}s\n"
                f"server log:\n{server.log_tail()}"
            )
        tick += poll
        time.sleep(max(0.0, tick - time.perf_counter()))
    pending, running = _state_time(run, RunState.PENDING), _state_time(run, RunState.RUNNING)
    completed = _state_time(run, RunState.COMPLETED)
    submitted = run.attempts[-1].submitted_at if run.attempts else None
    sample = {
        "post_ms": (post_done - t0) * 1000,
        "observed_pending_ms": observed[RunState.PENDING],
        "observed_running_ms": observed[RunState.RUNNING],
        "observed_completed_ms": observed[RunState.COMPLETED],
        "recorded_created_to_pending_ms": _ms(run.created_at, pending),
        "recorded_pending_to_submitted_ms": _ms(pending, submitted),
        "recorded_submitted_to_running_ms": _ms(submitted, running),
        "recorded_running_to_completed_ms": _ms(running, completed),
        "recorded_created_to_running_ms": _ms(run.created_at, running),
        "recorded_created_to_completed_ms": _ms(run.created_at, completed),
    }
    return run, sample


_NAMES = {
    "post_ms": "create_post",
    "observed_pending_ms": "created_to_pending_observed",
    "observed_running_ms": "created_to_running_observed",
    "observed_completed_ms": "created_to_completed_observed",
    "recorded_created_to_pending_ms": "created_to_pending_recorded",
    "recorded_pending_to_submitted_ms": "pending_to_submitted_recorded",
    "recorded_submitted_to_running_ms": "submitted_to_running_recorded",
    "recorded_running_to_completed_ms": "running_to_completed_recorded",
    "recorded_created_to_running_ms": "created_to_running_recorded",
    "recorded_created_to_completed_ms": "created_to_completed_recorded",
}


def _summaries(samples: list[dict[str, float | None]], recorded_only: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, name in _NAMES.items():
        if recorded_only and not key.startswith("recorded_"):
            continue
        values = [float(v) for s in samples if (v := s[key]) is not None]
        result[name] = summarize(values, "ms", 1)
    return result


def dispatch_latency(server: Server, n: int, n_slow: int) -> dict[str, Any]:
    with SkylaneClient(server.url, server.api_key) as client:
        deployment = _setup(client, server, "noop")
        # One unmeasured run first: the dispatcher's first claim builds its adapter, and the
        # first runtime start finds a cold page cache.
        first_run, first = _timed_run(client, server, deployment)
        _wait_gone(first_run)
        samples: list[dict[str, float | None]] = []
        for i in range(n):
            run, sample = _timed_run(client, server, deployment)
            samples.append(sample)
            log(
                f"    run {i + 1}/{n}: PENDING {sample['observed_pending_ms']:.0f} ms, RUNNING "
                f"{sample['observed_running_ms']:.0f} ms, COMPLETED "
                f"{sample['observed_completed_ms']:.0f} ms"
            )
            _wait_gone(run)
        slow: list[dict[str, float | None]] = []
        for _ in range(n_slow):
            run, sample = _timed_run(client, server, deployment, SLOW_POLL_SECONDS)
            slow.append(sample)
            _wait_gone(run)
    result: dict[str, Any] = {
        "runs": n,
        "poll_interval_ms": POLL_SECONDS * 1000,
        "method": (
            "runs created one at a time with SkylaneClient.create_run; each polled with "
            "GET /api/runs/{id} every 20 ms until COMPLETED; the next run starts once the "
            "previous run's supervisor process has exited; one warm-up run not counted"
        ),
        "first_run_observed_completed_ms": round(first["observed_completed_ms"] or 0.0, 1),
    }
    result.update(_summaries(samples, recorded_only=False))
    result["slow_polling"] = {
        "runs": n_slow,
        "poll_interval_ms": SLOW_POLL_SECONDS * 1000,
        **_summaries(slow, recorded_only=True),
    }
    return result


def memory_probe_run(server: Server) -> dict[str, Any]:
    """Peak RSS of one runtime process: the flow logs its own VmHWM; meanwhile we sample the
    supervisor's child (the runtime) and the supervisor from /proc."""
    with SkylaneClient(server.url, server.api_key) as client:
        deployment = _setup(client, server, "memory_probe")
        run = client.create_run(deployment.id, parameters={"seconds": 1.0})
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        runtime_peak = supervisor_peak = 0.0
        runtime_pid: int | None = None
        while True:
            run = client.get_run(run.id)
            if run.state in FAILED_STATES:
                raise RuntimeError(f"memory probe run ended {run.state}: {run.state_message}")
            if run.state == RunState.COMPLETED:
                break
            supervisor = _supervisor_pid(run)
            if supervisor is not None:
                supervisor_peak = max(
                    supervisor_peak, memory_mib(supervisor)["peak_rss_mib"] or 0.0
                )
                children = children_of(supervisor)
                if children:
                    runtime_pid = children[0]
                    runtime_peak = max(runtime_peak, memory_mib(runtime_pid)["peak_rss_mib"] or 0)
            if time.monotonic() > deadline:
                raise RuntimeError(f"memory probe run still {run.state}\n{server.log_tail()}")
            time.sleep(0.05)
        reported: dict[str, float | None] = {"peak_rss_mib": None, "rss_mib": None}
        for line in client.read_logs(run.id):
            if "SKYLANE_BENCH_MEMORY" in line.message:
                fields = dict(re.findall(r"(VmHWM|VmRSS)=(\d+) kB", line.message))
                reported = {
                    "peak_rss_mib": round(int(fields["VmHWM"]) / 1024, 1),
                    "rss_mib": round(int(fields["VmRSS"]) / 1024, 1),
                }
        _wait_gone(run)
    return {
        "runtime_peak_rss_mib_reported_by_flow": reported["peak_rss_mib"],
        "runtime_rss_mib_reported_by_flow": reported["rss_mib"],
        "runtime_peak_rss_mib_sampled": round(runtime_peak, 1) if runtime_pid else None,
        "supervisor_peak_rss_mib_sampled": round(supervisor_peak, 1) or None,
        "runtime_method": (
            "the flow sleeps 1 s, then prints VmHWM/VmRSS from /proc/self/status into its log, "
            "read back with GET /api/runs/{id}/logs; sampled = max VmHWM read every 50 ms from "
            "/proc of the supervisor's child while the run is not COMPLETED"
        ),
    }


def process_startup(repeats: int) -> dict[str, Any]:
    """What a process run pays before its first HTTP call, outside any server: a bare
    interpreter, the supervisor starting a bare child, and `skylane run execute` exiting at
    once for lack of its environment (so: interpreter plus every import of the CLI)."""
    import skylane.adapters.process as process_adapter

    supervisor = str(process_adapter.SUPERVISOR)
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="skylane-bench-") as tmp:
        exit_file = str(Path(tmp) / "x.exit")
        commands = {
            "python_bare": [python, "-c", "pass"],
            "supervisor_with_bare_child": [
                python,
                "-I",
                supervisor,
                "--exit-file",
                exit_file,
                "--",
                python,
                "-c",
                "pass",
            ],
            "runtime_imports_until_env_check": [python, "-m", "skylane", "run", "execute"],
            "import_skylane_runtime_only": [python, "-c", "import skylane.runtime"],
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLANE_")}
        result: dict[str, Any] = {"repeats": repeats}
        for name, argv in commands.items():
            subprocess.run(argv, env=env, capture_output=True, cwd=tmp)  # warm the page cache
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                subprocess.run(argv, env=env, capture_output=True, cwd=tmp)
                samples.append((time.perf_counter() - start) * 1000)
            result[name] = summarize(samples, "ms", 1)
    return result

"""Run skylane's benchmarks and write the figures as JSON.

    .venv/bin/python benchmarks/run_benchmarks.py [--quick] [--db sqlite|postgres|both]
                                                  [--out FILE]

Benchmarks (see BENCHMARKS.md for what each measures and the figures of the last full run):

- dispatch_latency  runs of a trivial flow through a real server + dispatcher (process:push)
- api_throughput    sequential HTTP requests against a real server running only the API
- template_render   resolve_job_configuration in-process (no database)
- memory            RSS of the server process and of one runtime process

Everything runs on loopback in temporary directories; the PostgreSQL variant creates its own
database `skylane_bench_<random>` on 127.0.0.1:5432 (SKYLANE_BENCH_POSTGRES_URL overrides the
admin URL) and drops it afterwards, and is skipped with a message when PostgreSQL is not
reachable. A human summary goes to stderr; the JSON path is printed on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import idle_cpu_percent, log, machine, memory_mib
from _server import Unavailable, database, running_server
from bench_api import api_throughput
from bench_dispatch import dispatch_latency, memory_probe_run, process_startup
from bench_templates import template_render

import skylane

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"
IDLE_SETTLE_SECONDS = 1.0
IDLE_CPU_SECONDS = 3.0  # window over which the idle server's CPU use (dispatcher ticks) is read
NO_DB = "none"  # the database key of benchmarks that use none


def _server_side(kind: str, quick: bool, results: dict[str, dict[str, Any]]) -> None:
    """dispatch_latency + memory on one server, api_throughput on another (fresh database)."""
    runs = 3 if quick else 10
    with (
        tempfile.TemporaryDirectory(prefix="skylane-bench-") as tmp,
        database(kind, Path(tmp)) as url,
    ):
        log(f"[{kind}] dispatch_latency: {runs} runs through api + dispatcher")
        with running_server(url) as server:
            time.sleep(IDLE_SETTLE_SECONDS)
            idle = memory_mib(server.pid)
            idle_cpu = idle_cpu_percent(server.pid, IDLE_CPU_SECONDS)
            results["dispatch_latency"][kind] = dispatch_latency(
                server, runs, n_slow=2 if quick else 5
            )
            time.sleep(IDLE_SETTLE_SECONDS + 1.0)  # let the dispatcher clean up the last run
            after = memory_mib(server.pid)
            log(f"[{kind}] memory: one runtime process sampled")
            probe = memory_probe_run(server)
            results["memory"][kind] = {
                "server_idle_after_start_rss_mib": idle["rss_mib"],
                "server_idle_after_start_peak_rss_mib": idle["peak_rss_mib"],
                "server_after_dispatch_latency_rss_mib": after["rss_mib"],
                "server_after_dispatch_latency_peak_rss_mib": after["peak_rss_mib"],
                "server_services": server.services,
                "server_idle_cpu_percent_of_one_core": idle_cpu,
                "server_idle_cpu_window_s": IDLE_CPU_SECONDS,
                **probe,
            }
    with (
        tempfile.TemporaryDirectory(prefix="skylane-bench-") as tmp,
        database(kind, Path(tmp)) as url,
    ):
        n = 50 if quick else 200
        log(f"[{kind}] api_throughput: {n} run creations, lists, gets, log batches")
        with running_server(url, services="api") as server:
            time.sleep(IDLE_SETTLE_SECONDS)
            idle = memory_mib(server.pid)
            result = api_throughput(
                server,
                runs=n,
                lists=20 if quick else 50,
                gets=n,
                log_batches=20 if quick else 100,
            )
            result["server_idle_after_start"] = idle
            results["api_throughput"][kind] = result


def _summary(report: dict[str, Any]) -> list[str]:
    lines = [
        f"machine: {report['machine']['nproc']} cpu ({report['machine']['cpu_model']}), "
        f"Python {report['machine']['python_version']}"
    ]
    results = report["results"]
    for kind, r in results.get("dispatch_latency", {}).items():
        if "skipped" in r:
            lines.append(f"dispatch_latency[{kind}]: skipped: {r['skipped']}")
            continue
        lines.append(
            f"dispatch_latency[{kind}] median/p95 ms: PENDING "
            f"{r['created_to_pending_observed']['median_ms']}/"
            f"{r['created_to_pending_observed']['p95_ms']}, RUNNING "
            f"{r['created_to_running_observed']['median_ms']}/"
            f"{r['created_to_running_observed']['p95_ms']}, COMPLETED "
            f"{r['created_to_completed_observed']['median_ms']}/"
            f"{r['created_to_completed_observed']['p95_ms']}"
        )
    for kind, r in results.get("api_throughput", {}).items():
        if "skipped" in r:
            continue
        lines.append(
            f"api_throughput[{kind}]: create_run {r['create_run']['requests_per_s']}/s "
            f"(p95 {r['create_run']['p95_ms']} ms), list 100 "
            f"{r['list_runs_limit_100']['requests_per_s']}/s, get_run "
            f"{r['get_run']['requests_per_s']}/s, logs "
            f"{r['post_logs_batch_100']['lines_per_s']:.0f} lines/s"
        )
    tr = results.get("template_render", {}).get(NO_DB, {})
    for name in ("process_default", "ecs_default"):
        if name in tr:
            resolve = tr[name]["resolve_job_configuration"]["median_us_per_call"]
            check = tr[name]["validate_base_job_template"]["median_us_per_call"]
            lines.append(
                f"template_render[{name}]: resolve {resolve} us/call, of which the template "
                f"check {check} us"
            )
    for kind, m in results.get("memory", {}).items():
        if "skipped" in m:
            continue
        lines.append(
            f"memory[{kind}]: server idle {m['server_idle_after_start_rss_mib']} MiB, after runs "
            f"{m['server_after_dispatch_latency_rss_mib']} MiB; runtime peak "
            f"{m['runtime_peak_rss_mib_reported_by_flow']} MiB"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    results: dict[str, dict[str, Any]] = {
        "dispatch_latency": {},
        "api_throughput": {},
        "template_render": {},
        "process_startup": {},
        "memory": {},
    }
    report: dict[str, Any] = {
        "machine": machine(),
        "skylane_version": skylane.__version__,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/run_benchmarks.py " + " ".join(sys.argv[1:]),
        "quick": args.quick,
        "server_settings": {
            "dispatcher_interval_seconds": 1.0,
            "crash_grace_seconds": 5.0,
            "log_level": "info (uvicorn access log on)",
            "note": "defaults: the benchmark sets no SKYLANE_* tuning variable",
        },
        "results": results,
    }

    log("template_render: in-process")
    results["template_render"][NO_DB] = template_render(
        repeats=3 if args.quick else 5, seconds_per_repeat=0.2 if args.quick else 1.0
    )
    log("process_startup: interpreter and runtime start-up outside a server")
    results["process_startup"][NO_DB] = process_startup(3 if args.quick else 5)
    for kind in kinds:
        try:
            _server_side(kind, args.quick, results)
        except Unavailable as exc:
            log(f"[{kind}] skipped: {exc}")
            for bench in ("dispatch_latency", "api_throughput", "memory"):
                results[bench][kind] = {"skipped": str(exc)}
    report["duration_s"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for line in _summary(report):
        log(line)
    log(f"total {report['duration_s']} s")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

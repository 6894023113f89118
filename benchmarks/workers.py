"""Pull workers end to end over real HTTP: throughput, pick-up latency, heartbeat cost.

    .venv/bin/python benchmarks/workers.py                           # SQLite and PostgreSQL
    .venv/bin/python benchmarks/workers.py --database sqlite --runs 100 --rounds 3
    .venv/bin/python benchmarks/workers.py --output /tmp/workers.json

What runs, all in this one process: the API (`skylane.api.app.create_app`, no background
services) served by uvicorn in a thread on a free loopback port, on a fresh database (a SQLite
file in a temporary directory, or a PostgreSQL database `skylane_bench_<random>` on
`postgresql://postgres@127.0.0.1:5432/test`, dropped afterwards; skipped with a message when
PostgreSQL cannot be reached); and pull workers (`skylane.worker.Worker`: the control plane's
Dispatcher and Reconciler on `WorkerApiStore`), each with its own `SkylaneClient` and a key with
only the `worker` scope. The provider is the fake one (`skylane.testing.fake_provider`), not
idempotent (a key submitted twice would make two resources), `submit` taking `--latency`
seconds (0 by default: the figures are skylane's, not a cloud's). Settings are the defaults
(`Settings()` with an empty SKYLANE_HOME; SKYLANE_* environment variables still apply and the
values used are in the JSON): the dispatcher polls every `dispatcher_interval_seconds` (5 s),
as a worker has no database to LISTEN on. uvicorn logs warnings only (no access log).

Scenarios, per database, each on a pool of type `fake` of its own:
- throughput: `--runs` runs created due now (through the store, not measured); then K workers
  (`--workers`, 1 and 2) are started and the wall time from the first `start()` until every
  run has a provider ref in the store (polled every 50 ms) gives runs/s. Then the workers stop.
  Checked, failing loudly: one resource per run at the provider (`FakeCloud.duplicates() ==
  {}`), one attempt with a ref per run. HTTP requests are counted by a transport wrapped
  around each worker's `httpx.HTTPTransport`, by route, until the last ref is seen; CPU is the
  process's (server, workers and poller together).
- latency: one idle worker; per round, after a random pause in [0, interval) (so the creation
  falls anywhere in the worker's poll cycle), one run is created and the store polled every
  10 ms for its ref. Split with the store's timestamps: created -> claimed (waiting for the next
  poll), claimed -> provider answered (the submission), and created -> ref visible.
- heartbeat: `--heartbeats` sequential `WorkerApiStore.heartbeat(...)` calls (after 5 warm-up
  calls), each timed.
- Peak RSS: `getrusage` of this process (server, workers, stores) at the end.

Prints one JSON document on stdout (also written to `--output`) and a short table on stderr.
Exit code 1 when a check fails or a scenario times out.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import re
import resource
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from _common import MIB, emit, log, machine, summarize

POSTGRES_ADMIN_URL = os.environ.get(
    "SKYLANE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
THROUGHPUT_POLL_SECONDS = 0.05
LATENCY_POLL_SECONDS = 0.01
SERVER_START_TIMEOUT_SECONDS = 30.0
WARM_UP_HEARTBEATS = 5
# Path segments that name one thing (run ids, idempotency keys): counted as one route.
_ID = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|skl-.*)$")


class Unavailable(Exception):
    """A database the benchmark cannot use; its variant is skipped with this message."""


class Failed(Exception):
    """A check failed: the figures must not be used."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="runs per throughput scenario")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="worker counts of the throughput scenarios, comma-separated (1,2)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds (5)")
    parser.add_argument("--heartbeats", type=int, default=200, help="timed heartbeats (200)")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds each fake submit takes (0)"
    )
    parser.add_argument(
        "--database", choices=["sqlite", "postgres", "both"], default="both", help="(both)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds a throughput scenario may take"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the latency rounds' pauses")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    try:
        args.worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]
    except ValueError:
        parser.error("--workers takes numbers separated by commas, e.g. 1,2")
    if args.runs < 1 or args.rounds < 1 or args.heartbeats < 1 or args.latency < 0:
        parser.error("--runs, --rounds and --heartbeats must be positive, --latency not negative")
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers needs at least one positive count")
    return args


# --- the server -------------------------------------------------------------------------------


class ApiServer:
    """`create_app(settings, store)` served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, settings: Any, store: Any) -> None:
        import uvicorn

        from skylane.api.app import create_app

        # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose `proto` says
        # TCP, and accepted sockets inherit it; with proto 0, Nagle and delayed ACKs add ~40 ms
        # to each response on loopback.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(settings, store), log_level="warning", access_log=False, lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="bench-uvicorn",
            daemon=True,
        )

    def __enter__(self) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()


# --- counting requests ------------------------------------------------------------------------


def route(path: str) -> str:
    """`/api/pools/p/workers/w/attempts/skl-.../renew` -> `attempts/{id}/renew`."""
    parts = path.strip("/").split("/")
    if len(parts) > 4 and parts[:2] == ["api", "pools"] and parts[3] == "workers":
        parts = parts[5:]  # after the worker's own prefix
    elif parts[:1] == ["api"]:
        parts = parts[1:]
    return "/".join("{id}" if _ID.match(p) else p for p in parts) or "/"


class CountingTransport(httpx.BaseTransport):
    """httpx's own transport, counting requests by method and route."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.counts[f"{request.method} {route(request.url.path)}"] += 1
        return self._inner.handle_request(request)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def close(self) -> None:
        self._inner.close()


# --- setup ------------------------------------------------------------------------------------


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    from skylane.testing.databases import (
        postgres_unreachable_reason,
        temporary_postgres_database,
    )

    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'skylane-{kind}.db'}"
        return
    from skylane.settings import normalize_database_url

    admin = normalize_database_url(POSTGRES_ADMIN_URL)
    reason = postgres_unreachable_reason(admin)
    if reason:
        raise Unavailable(reason)
    with temporary_postgres_database(admin, prefix="skylane_bench") as url:
        yield url


class Bench:
    """One database: its store, the API server, a worker key; pools made on demand."""

    def __init__(self, args: argparse.Namespace, store: Any, settings: Any, url: str) -> None:
        from skylane.models import ApiScope

        self.args = args
        self.store = store
        self.settings = settings
        self.url = url
        self.workdir = Path(tempfile.mkdtemp(prefix="clouds-", dir=args.workdir))
        _, self.key = store.create_api_key(name="bench-workers", scopes=[ApiScope.WORKER])
        self.reader = sa.create_engine(store.engine.url)  # plain reads, no BEGIN IMMEDIATE

    def pool(self, name: str) -> tuple[Any, Any]:
        """A `fake` pull pool with its own fake cloud; (deployment, cloud)."""
        from skylane.testing.fake_provider import FakeAdapter, FakeCloud

        cloud = FakeCloud(self.workdir / f"{name}.sqlite")
        self.store.create_pool(
            name=name,
            type="fake",
            base_job_template=FakeAdapter.default_template(),
            settings={
                "fake_state_path": str(cloud.path),
                "idempotent": False,
                "latency_seconds": self.args.latency,
                "status": "RUNNING",
            },
        )
        deployment = self.store.create_deployment(
            flow_name="bench", name=name, pool_name=name, entrypoint="flows/noop.py:noop"
        )
        return deployment, cloud

    def worker(self, pool: str, name: str) -> tuple[Any, CountingTransport]:
        from skylane.client import SkylaneClient
        from skylane.worker import Worker, WorkerOptions

        transport = CountingTransport()
        client = SkylaneClient(self.url, self.key, transport=transport)
        return Worker(client, WorkerOptions(pool=pool, name=name), self.settings), transport

    def refs_recorded(self, deployment_id: Any) -> int:
        from skylane.store.tables import AttemptRow, RunRow

        query = (
            sa.select(sa.func.count(sa.distinct(AttemptRow.run_id)))
            .join(RunRow, RunRow.id == AttemptRow.run_id)
            .where(RunRow.deployment_id == deployment_id, AttemptRow.provider_ref.is_not(None))
        )
        with self.reader.connect() as connection:
            return connection.scalar(query) or 0

    def run_has_ref(self, run_id: Any) -> bool:
        from skylane.store.tables import AttemptRow

        query = sa.select(AttemptRow.id).where(
            AttemptRow.run_id == run_id, AttemptRow.provider_ref.is_not(None)
        )
        with self.reader.connect() as connection:
            return connection.execute(query).first() is not None

    def attempts_with_refs(self, deployment_id: Any) -> Counter[str]:
        """Per attempt holder (worker), the attempts that hold a provider ref."""
        from skylane.store.tables import AttemptRow, RunRow

        query = (
            sa.select(AttemptRow.run_id, AttemptRow.claimed_by)
            .join(RunRow, RunRow.id == AttemptRow.run_id)
            .where(RunRow.deployment_id == deployment_id, AttemptRow.provider_ref.is_not(None))
        )
        with self.reader.connect() as connection:
            rows = connection.execute(query).all()
        runs = Counter(run_id for run_id, _ in rows)
        several = [str(run_id) for run_id, n in runs.items() if n > 1]
        if several:
            raise Failed(f"{len(several)} runs hold more than one provider ref: {several[:3]}")
        return Counter(claimed_by or "?" for _, claimed_by in rows)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB, 1)


# --- scenarios --------------------------------------------------------------------------------


def throughput(bench: Bench, workers: int) -> dict[str, Any]:
    runs = bench.args.runs
    pool = f"bench-throughput-{workers}w"
    deployment, cloud = bench.pool(pool)
    for _ in range(runs):
        bench.store.create_run(deployment, parameters={}, job_variables={})
    started_workers = [bench.worker(pool, f"w{i + 1}") for i in range(workers)]
    gc.collect()

    cpu_before = cpu_seconds()
    started = time.perf_counter()
    done = 0
    timed_out = False
    try:
        for worker, _ in started_workers:
            worker.start()
        deadline = time.monotonic() + bench.args.timeout
        while True:
            done = bench.refs_recorded(deployment.id)
            if done >= runs:
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(THROUGHPUT_POLL_SECONDS)
        wall = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_before
        requests: Counter[str] = Counter()
        for _, transport in started_workers:
            requests.update(transport.snapshot())
    finally:
        for worker, transport in started_workers:
            worker.stop()
            worker.client.close()
            transport.close()
    if timed_out:
        raise Failed(f"{workers} worker(s): {done}/{runs} runs submitted in {bench.args.timeout} s")

    resources = cloud.resources()
    duplicates = cloud.duplicates()
    if duplicates:
        raise Failed(f"{workers} worker(s): keys submitted more than once: {duplicates}")
    if len(resources) != runs:
        raise Failed(f"{workers} worker(s): {len(resources)} resources for {runs} runs")
    by_worker = bench.attempts_with_refs(deployment.id)
    if sum(by_worker.values()) != runs:
        raise Failed(f"{workers} worker(s): {sum(by_worker.values())} refs for {runs} runs")
    submitted = [r.submitted_at for r in resources]
    provider_span = max(submitted) - min(submitted)
    total_requests = sum(requests.values())
    return {
        "workers": workers,
        "runs": runs,
        "wall_s": round(wall, 3),
        "runs_per_s": round(runs / wall, 1),
        "first_to_last_submit_s": round(provider_span, 3),
        "resources": len(resources),
        "duplicates": len(duplicates),
        "repeated_submit_calls": sum(n - 1 for n in cloud.repeated_calls().values()),
        "runs_by_worker": dict(sorted(by_worker.items())),
        "http_requests": total_requests,
        "http_requests_per_run": round(total_requests / runs, 2),
        "http_requests_by_route": dict(requests.most_common()),
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_run": round(1000 * cpu / runs, 2),
    }


def latency(bench: Bench) -> dict[str, Any]:
    interval = bench.settings.dispatcher_interval_seconds
    deployment, cloud = bench.pool("bench-latency")
    worker, transport = bench.worker("bench-latency", "idle")
    pauses = random.Random(bench.args.seed)
    to_ref, to_claim, claim_to_submit = [], [], []
    worker.start()
    try:
        time.sleep(0.5)  # its first, empty passes
        for round_number in range(bench.args.rounds):
            time.sleep(pauses.uniform(0.0, interval))
            run = bench.store.create_run(deployment, parameters={}, job_variables={})
            deadline = time.monotonic() + 3 * interval + 10
            while not bench.run_has_ref(run.id):
                if time.monotonic() > deadline:
                    raise Failed(f"latency round {round_number + 1}: no provider ref in time")
                time.sleep(LATENCY_POLL_SECONDS)
            seen = datetime.now(UTC)
            [attempt] = bench.store.get_run(run.id).attempts
            assert attempt.submitted_at is not None
            to_ref.append(1000 * (seen - run.created_at).total_seconds())
            to_claim.append(1000 * (attempt.created_at - run.created_at).total_seconds())
            claim_to_submit.append(
                1000 * (attempt.submitted_at - attempt.created_at).total_seconds()
            )
    finally:
        worker.stop()
        worker.client.close()
        transport.close()
    if cloud.duplicates() or len(cloud.resources()) != bench.args.rounds:
        raise Failed(f"latency: {len(cloud.resources())} resources for {bench.args.rounds} runs")
    return {
        "rounds": bench.args.rounds,
        "dispatcher_interval_s": interval,
        "created_to_ref_ms": summarize(to_ref, "ms", 1),
        "created_to_claimed_ms": summarize(to_claim, "ms", 1),
        "claimed_to_submitted_ms": summarize(claim_to_submit, "ms", 1),
        "samples_created_to_ref_ms": [round(x, 1) for x in to_ref],
    }


def heartbeat(bench: Bench) -> dict[str, Any]:
    from skylane import __version__
    from skylane.client import SkylaneClient
    from skylane.worker_api import WorkerApiStore

    bench.pool("bench-heartbeat")
    with SkylaneClient(bench.url, bench.key) as client:
        api = WorkerApiStore(client, "bench-heartbeat", "beating")
        times = []
        for i in range(WARM_UP_HEARTBEATS + bench.args.heartbeats):
            started = time.perf_counter()
            api.heartbeat(hostname=socket.gethostname(), version=__version__, limit=None)
            if i >= WARM_UP_HEARTBEATS:
                times.append(1000 * (time.perf_counter() - started))
        api.stopped()
    return summarize(times, "ms", 2)


def run_database(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    from skylane.settings import Settings
    from skylane.store import create_engine_for, migrate
    from skylane.store.repository import Store

    with database(kind, args.workdir) as url:
        engine = create_engine_for(url)
        try:
            migrate(engine)
            store = Store(engine)
            settings = Settings(database_url=url)
            with ApiServer(settings, store) as server:
                bench = Bench(args, store, settings, server.url)
                log(f"{kind}: API on {server.url}")
                result: dict[str, Any] = {"throughput": []}
                for workers in args.worker_counts:
                    log(f"{kind}: throughput, {args.runs} runs, {workers} worker(s)")
                    result["throughput"].append(throughput(bench, workers))
                interval = settings.dispatcher_interval_seconds
                log(f"{kind}: latency, {args.rounds} rounds (poll interval {interval} s)")
                result["latency"] = latency(bench)
                log(f"{kind}: heartbeat, {args.heartbeats} calls")
                result["heartbeat_ms"] = heartbeat(bench)
                bench.reader.dispose()
            result["peak_rss_mib_so_far"] = peak_rss_mib()
            return result
        finally:
            engine.dispose()


# --- output -----------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    lines = [f"{'database':<9} {'scenario':<24} figures"]
    for kind, result in results.items():
        if "skipped" in result:
            lines.append(f"{kind:<9} {'(skipped)':<24} {result['skipped']}")
            continue
        for t in result["throughput"]:
            label = f"throughput, {t['workers']} worker(s)"
            lines.append(
                f"{kind:<9} {label:<24} "
                f"{t['runs']} runs in {t['wall_s']} s = {t['runs_per_s']} runs/s; "
                f"{t['http_requests_per_run']} requests/run; {t['cpu_ms_per_run']} ms CPU/run"
            )
        lat = result["latency"]
        ref, claim = lat["created_to_ref_ms"], lat["claimed_to_submitted_ms"]
        lines.append(
            f"{kind:<9} {'latency, created -> ref':<24} median {ref['median_ms']} ms "
            f"(min {ref['min_ms']}, max {ref['max_ms']}; poll interval "
            f"{lat['dispatcher_interval_s']} s); claimed -> submitted median "
            f"{claim['median_ms']} ms"
        )
        beat = result["heartbeat_ms"]
        lines.append(
            f"{kind:<9} {'heartbeat':<24} median {beat['median_ms']} ms, "
            f"p95 {beat['p95_ms']} ms ({beat['n']} calls)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    host = machine()  # before the run: its load average is the one at start
    from skylane.settings import Settings
    from skylane.testing import fake_provider

    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    results: dict[str, Any] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="skylane-workers-") as tmp:
        args.workdir = Path(tmp)
        os.environ["SKYLANE_HOME"] = str(args.workdir / "home")  # no user config file
        fake_provider.install()
        defaults = Settings()
        for kind in kinds:
            try:
                results[kind] = run_database(args, kind)
            except Unavailable as exc:
                log(f"{kind}: skipped: {exc}")
                results[kind] = {"skipped": str(exc)}
            except Failed as exc:
                log(f"{kind}: FAILED: {exc}")
                results[kind] = {"failed": str(exc)}
                failed = True
    result = {
        "benchmark": "workers",
        "runs": args.runs,
        "workers": args.worker_counts,
        "rounds": args.rounds,
        "heartbeats": args.heartbeats,
        "provider_latency_s": args.latency,
        "settings": {
            name: getattr(defaults, name)
            for name in (
                "dispatcher_interval_seconds",
                "dispatcher_concurrency",
                "dispatcher_batch_size",
                "claim_lease_seconds",
                "reconciler_interval_seconds",
                "worker_heartbeat_seconds",
            )
        },
        "results": results,
        "peak_rss_mib": peak_rss_mib(),
        "python_version": platform.python_version(),
        "machine": host,
        "postgres_admin_url": POSTGRES_ADMIN_URL if "postgres" in kinds else None,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    emit(result, args.output)
    shown = {k: v for k, v in results.items() if "failed" not in v}
    log(table(shown))
    log(f"peak RSS of the process: {result['peak_rss_mib']} MiB")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

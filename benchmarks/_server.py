"""A real control plane for the benchmarks: its database and a `skylane server start` subprocess.

The server is started exactly as a user does it, by `skylane.testing.server.running_server`
(the helper the end-to-end tests use too): `skylane server init --output json`, then
`skylane server start`, on a free loopback port, with default settings.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from skylane.testing.databases import postgres_unreachable_reason, temporary_postgres_database
from skylane.testing.server import ServerProcess
from skylane.testing.server import running_server as _running_server

POSTGRES_ADMIN_URL = os.environ.get(
    "SKYLANE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

# Flow files the benchmarks deploy, written to a temporary directory.
FLOWS = {
    "noop.py": '''
def noop() -> None:
    """Returns at once: what is left of a run is skylane's own cost."""
    return None
''',
    "memory_probe.py": '''
import time


def memory_probe(seconds: float = 1.0) -> None:
    """Sleeps (so the benchmark can sample the process), then prints its own memory."""
    time.sleep(seconds)
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\\n").split(":\\t", 1) for line in f if ":\\t" in line)
    print(
        "SKYLANE_BENCH_MEMORY"
        f" VmHWM={status['VmHWM'].strip()} VmRSS={status['VmRSS'].strip()}"
    )
''',
}


class Unavailable(Exception):
    """A database the benchmark cannot use; the variant is skipped with this message."""


# The benchmarks' name for a running server; its flow files are in `workdir / "flows"`.
Server = ServerProcess


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file in `workdir`, or a PostgreSQL database
    `skylane_bench_<random>` created for this run and dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'skylane.db'}"
        return
    if kind != "postgres":
        raise ValueError(f"unknown database kind {kind!r}")
    reason = postgres_unreachable_reason(POSTGRES_ADMIN_URL)
    if reason:
        raise Unavailable(reason)
    with temporary_postgres_database(POSTGRES_ADMIN_URL, prefix="skylane_bench") as url:
        yield url


@contextlib.contextmanager
def running_server(db_url: str, *, services: str = "api,dispatcher") -> Iterator[Server]:
    """A server with the benchmark flows in `workdir / "flows"`; everything it writes is in a
    temporary directory removed at the end. Default settings (dispatcher interval 1 s, crash
    grace 5 s, log level info): the figures are what a user gets."""
    with tempfile.TemporaryDirectory(prefix="skylane-bench-") as tmp:
        root = Path(tmp)
        flows_dir = root / "project" / "flows"
        flows_dir.mkdir(parents=True)
        for name, source in FLOWS.items():
            (flows_dir / name).write_text(source.lstrip())
        with _running_server(
            db_url, workdir=root / "project", home=root / "home", services=services
        ) as server:
            yield server

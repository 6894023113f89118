"""A real control plane for the benchmarks: its database and a `skylane server start` subprocess.

The server is started exactly as a user (and tests/e2e/conftest.py) does it:
`python -m skylane server init --output json`, then `python -m skylane server start`, with
SKYLANE_* variables for its home directory and database, on a free loopback port.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SKYLANE = [sys.executable, "-m", "skylane"]
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file in `workdir`, or a PostgreSQL database
    `skylane_bench_<random>` created for this run and dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'skylane.db'}"
        return
    if kind != "postgres":
        raise ValueError(f"unknown database kind {kind!r}")
    import psycopg
    from psycopg import sql

    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:  # any failure: skip the variant and say why
        raise Unavailable(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}") from exc
    name = f"skylane_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
        yield f"{base}/{name}"
    finally:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.close()


@dataclass
class Server:
    """A running `skylane server start`."""

    url: str
    api_key: str
    env: dict[str, str]
    workdir: Path
    flows_dir: Path
    log_path: Path
    services: str
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no server log>"

    def http(self) -> httpx.Client:
        """One keep-alive client with the admin key."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )


def _server_env(home: Path, db_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLANE_")}
    env.update(
        {
            "SKYLANE_HOME": str(home),
            "SKYLANE_DATABASE_URL": db_url,
            "SKYLANE_API_URL": f"http://127.0.0.1:{port}",
        }
    )
    return env


@contextlib.contextmanager
def running_server(db_url: str, *, services: str = "api,dispatcher") -> Iterator[Server]:
    """Init the database, start the server, wait for /health; stop it (SIGTERM) afterwards.

    Everything it writes (home directory, process-run state, flow files, server log) is in a
    temporary directory removed at the end. The server keeps its default settings (dispatcher
    interval 1 s, crash grace 5 s, log level info): the figures are what a user gets."""
    with tempfile.TemporaryDirectory(prefix="skylane-bench-") as tmp:
        root = Path(tmp)
        workdir, flows_dir = root / "project", root / "project" / "flows"
        flows_dir.mkdir(parents=True)
        for name, source in FLOWS.items():
            (flows_dir / name).write_text(source.lstrip())
        port = free_port()
        env = _server_env(root / "home", db_url, port)
        init = subprocess.run(
            [*SKYLANE, "server", "init", "--output", "json"],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if init.returncode != 0:
            raise RuntimeError(f"skylane server init failed:\n{init.stdout}\n{init.stderr}")
        env["SKYLANE_API_KEY"] = json.loads(init.stdout)["api_key"]
        log_path = root / "server.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [*SKYLANE, "server", "start", "--port", str(port), "--services", services],
                env=env,
                cwd=workdir,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = Server(
            url=env["SKYLANE_API_URL"],
            api_key=env["SKYLANE_API_KEY"],
            env=env,
            workdir=workdir,
            flows_dir=flows_dir,
            log_path=log_path,
            services=services,
            process=process,
        )
        try:
            _wait_healthy(server)
            yield server
        finally:
            _stop(process)


def _wait_healthy(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{server.url}/health", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{server.log_tail()}") from None
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

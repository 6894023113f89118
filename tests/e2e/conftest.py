"""End-to-end fixtures: a real `skylane server start` in a subprocess (on SQLite and on
PostgreSQL) and a `cli(...)` helper that runs the `skylane` command in subprocesses, as a user
would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

SKYLANE = [sys.executable, "-m", "skylane"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    api_key: str
    env: dict[str, str]
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def cli(
        self,
        *args: str,
        key: bool = True,
        timeout: float = 60,
        check: bool = False,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if not key:
            env.pop("SKYLANE_API_KEY", None)
        result = subprocess.run(
            [*SKYLANE, *args],
            env=env,
            cwd=cwd or self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"skylane {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def json(self, *args: str) -> object:
        return json.loads(self.cli(*args, "--output", "json", check=True).stdout)

    def wait_for_state(self, run_id: str, states: set[str], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        run: dict = {}
        while time.monotonic() < deadline:
            run = self.json("run", "inspect", run_id)  # type: ignore[assignment]
            if run["state"] in states:
                return run
            time.sleep(0.2)
        raise AssertionError(
            f"run {run_id} still {run.get('state')} after {timeout}s; "
            f"server log:\n{self.log_path.read_text()[-4000:]}"
        )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp_path / 'skylane.db'}"
    else:
        db_url = request.getfixturevalue("postgres_server_url")
        from tests.conftest import _reset_postgres

        _reset_postgres(db_url)
    port = free_port()
    workdir = tmp_path / "project"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLANE_")}
    env.update(
        {
            "SKYLANE_HOME": str(tmp_path / "home"),
            "SKYLANE_DATABASE_URL": db_url,
            "SKYLANE_API_URL": f"http://127.0.0.1:{port}",
            "SKYLANE_DISPATCHER_INTERVAL_SECONDS": "0.2",
            "SKYLANE_CRASH_GRACE_SECONDS": "1",
            "SKYLANE_CANCEL_GRACE_SECONDS": "5",
            "SKYLANE_HEARTBEAT_SECONDS": "1",
            "SKYLANE_LOG_BATCH_SECONDS": "0.2",
        }
    )
    init = subprocess.run(
        [*SKYLANE, "server", "init", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    env["SKYLANE_API_KEY"] = json.loads(init.stdout)["api_key"]
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*SKYLANE, "server", "start", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(
        url=env["SKYLANE_API_URL"],
        api_key=env["SKYLANE_API_KEY"],
        env=env,
        workdir=workdir,
        log_path=log_path,
        process=process,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{server.url}/health", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log_path.read_text()}") from None
            time.sleep(0.1)
    yield server
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


FLOWS = {
    "hello.py": """
import logging
log = logging.getLogger("flows.hello")

def hello(name: str = "world", count: int = 2) -> None:
    for i in range(count):
        log.info("hello %s number %d", name, i + 1)
    print(f"printed by the flow for {name}")
""",
    "broken.py": """
def broken(divisor: int = 0) -> float:
    return 1 / divisor
""",
    "sleepy.py": """
import logging, time
log = logging.getLogger("flows.sleepy")

def sleepy(seconds: float = 120) -> None:
    log.info("going to sleep")
    time.sleep(seconds)
    log.info("woke up")
""",
}


@pytest.fixture
def project(server: Server) -> Server:
    """The server, a `process:push` pool named `local`, and flow files in its project dir."""
    flows = server.workdir / "flows"
    flows.mkdir()
    for name, source in FLOWS.items():
        (flows / name).write_text(source)
    server.cli("pool", "create", "local", "--type", "process:push", check=True)
    return server

"""A real skylane control plane in a subprocess, started the way a user starts it:
`python -m skylane server init --output json`, then `python -m skylane server start` on a free
loopback port. Drive it with the CLI (`cli`, `cli_json`) or the HTTP client (`client`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from skylane.client import SkylaneClient

SKYLANE = [sys.executable, "-m", "skylane"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    api_key: str
    env: dict[str, str]
    workdir: Path
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

    def client(self) -> SkylaneClient:
        return SkylaneClient(self.url, self.api_key)

    def http(self) -> httpx.Client:
        """One keep-alive HTTP client carrying the admin key."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=30
        )

    def cli(
        self,
        *args: str,
        key: bool = True,
        timeout: float = 60,
        check: bool = False,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `skylane ARGS...` against this server (without the API key if `key=False`)."""
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

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--output", "json", check=True).stdout)

    def run_json(self, run_id: str) -> dict:
        """The run as the API serves it (`skylane run inspect --output json` prints the same).
        For polling: a request costs milliseconds, a CLI process about a second of CPU."""
        with self.http() as http:
            response = http.get(f"/api/runs/{run_id}")
            response.raise_for_status()
            return response.json()

    def wait_for_state(self, run_id: str, states: set[str], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        run: dict = {}
        while time.monotonic() < deadline:
            run = self.run_json(run_id)
            if run["state"] in states:
                return run
            time.sleep(0.2)
        raise AssertionError(
            f"run {run_id} still {run.get('state')} after {timeout}s; "
            f"server log:\n{self.log_tail()}"
        )


@contextlib.contextmanager
def running_server(
    database_url: str,
    *,
    workdir: Path,
    home: Path,
    services: str = "api,scheduler,dispatcher,reconciler",
    settings: Mapping[str, str] | None = None,
    startup_timeout: float = 60,
) -> Iterator[ServerProcess]:
    """Initialise the database, start the server in `workdir`, wait for /health; stop it
    (SIGTERM, then SIGKILL after 20 s) on exit. `settings` are extra SKYLANE_* variables;
    every SKYLANE_* variable of the calling environment is left out."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLANE_")}
    env.update(
        {
            "SKYLANE_HOME": str(home),
            "SKYLANE_DATABASE_URL": database_url,
            "SKYLANE_API_URL": f"http://127.0.0.1:{port}",
            **(settings or {}),
        }
    )
    env["SKYLANE_API_KEY"] = admin_key_for(database_url)
    with _serving(env, workdir, home / "server.log", services, startup_timeout) as server:
        yield server


def admin_key_for(database_url: str) -> str:
    """Migrate the database and make an admin key, as `skylane server init` does, in this
    process: a `server init` subprocess costs a second of CPU per server the tests start."""
    from skylane.models import ApiScope
    from skylane.store import create_engine_for, migrate
    from skylane.store.repository import Store

    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        _, key = Store(engine).create_api_key(name="admin", scopes=[ApiScope.ADMIN])
        return key
    finally:
        engine.dispose()


@contextlib.contextmanager
def restarted_server(
    server: ServerProcess, *, log_name: str, startup_timeout: float = 60
) -> Iterator[ServerProcess]:
    """`server`'s control plane started again (after it was stopped) on the same database,
    home, project, key and services, on a new port; its log goes to `log_name` beside the
    first one. Stopped on exit like `running_server`."""
    port = free_port()
    env = {**server.env, "SKYLANE_API_URL": f"http://127.0.0.1:{port}"}
    log_path = server.log_path.with_name(log_name)
    with _serving(env, server.workdir, log_path, server.services, startup_timeout) as again:
        yield again


@contextlib.contextmanager
def _serving(
    env: dict[str, str], workdir: Path, log_path: Path, services: str, startup_timeout: float
) -> Iterator[ServerProcess]:
    port = env["SKYLANE_API_URL"].rsplit(":", 1)[1]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*SKYLANE, "server", "start", "--port", port, "--services", services],
            env=env,
            cwd=workdir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(
        url=env["SKYLANE_API_URL"],
        api_key=env["SKYLANE_API_KEY"],
        env=env,
        workdir=workdir,
        log_path=log_path,
        services=services,
        process=process,
    )
    try:
        _wait_healthy(server, startup_timeout)
        yield server
    finally:
        stop_process(process)


def _wait_healthy(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{server.url}/health", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{server.log_tail()}") from None
            time.sleep(0.05)


def stop_process(process: subprocess.Popen[Any], grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

"""End-to-end fixtures: a real `skylane server start` in a subprocess (on SQLite and on
PostgreSQL) and a `cli(...)` helper that runs the `skylane` command in subprocesses, as a user
would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from skylane.models import TERMINAL_STATES
from skylane.testing.databases import reset_postgres_schema
from skylane.testing.moto import FAKE_AWS_ENV, moto_server, reset, set_ecs_task_transition
from skylane.testing.server import ServerProcess, free_port, running_server

__all__ = ["Server", "free_port"]

# The e2e tests' name for a running server.
Server = ServerProcess

# Short intervals so the tests wait as little as possible.
FAST_SETTINGS = {
    "SKYLANE_DISPATCHER_INTERVAL_SECONDS": "0.2",
    "SKYLANE_CRASH_GRACE_SECONDS": "1",
    "SKYLANE_CANCEL_GRACE_SECONDS": "5",
    "SKYLANE_HEARTBEAT_SECONDS": "1",
    "SKYLANE_LOG_BATCH_SECONDS": "0.2",
}


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Run states that never change again, as the CLI and API name them.
TERMINAL = {state.value for state in TERMINAL_STATES}


# A flow for the provisioning tests, at flows/etl.py of a project directory (`write_etl_flow`).
ETL_FLOW = "def etl(day: str = 'today') -> None:\n    print('etl for', day)\n"


def write_etl_flow(workdir: Path) -> Path:
    """`workdir`/flows/etl.py holding `ETL_FLOW`; `workdir`."""
    (workdir / "flows").mkdir(parents=True, exist_ok=True)
    (workdir / "flows" / "etl.py").write_text(ETL_FLOW)
    return workdir


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A control plane on SQLite with the fast settings, its project in `tmp_path`/project."""
    with running_server(
        f"sqlite:///{tmp_path / 'skylane.db'}",
        workdir=tmp_path / "project",
        home=tmp_path / "home",
        settings=FAST_SETTINGS,
    ) as started:
        yield started


def start_run(server: ServerProcess, *args: str, deployment: str = "etl/nightly") -> str:
    """`skylane deployment run DEPLOYMENT ARGS...`; the new run's id."""
    result = server.cli("deployment", "run", deployment, *args, check=True)
    found = UUID_RE.search(result.stdout)
    assert found, result.stdout
    return found.group(0)


# Parameters of a fixture that runs its test on each database.
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of the kind `request.param` names (see DATABASES)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'skylane.db'}"
    url = request.getfixturevalue("postgres_server_url")
    reset_postgres_schema(url)
    return str(url)


@pytest.fixture(params=DATABASES)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    db_url = database_url(request, tmp_path)
    with running_server(
        db_url, workdir=tmp_path / "project", home=tmp_path / "home", settings=FAST_SETTINGS
    ) as started:
        yield started


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


ECS_CLUSTER = "flows"


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One moto_server on loopback for the e2e session (each test starts from `aws`)."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> boto3.Session:
    """A clean moto with the ECS cluster the tests' pools use, and fake credentials."""
    reset(moto_endpoint)
    # Tasks stay where they are until a test moves them (moto otherwise advances a task one
    # state per DescribeTasks call, and the reconciler calls it often).
    set_ecs_task_transition(moto_endpoint, times=1_000_000)
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    session = boto3.Session(region_name="us-east-1")
    session.client("ecs", endpoint_url=moto_endpoint).create_cluster(clusterName=ECS_CLUSTER)
    return session

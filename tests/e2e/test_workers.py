"""Pull workers, fallback and serve, end to end: a real server, `skylane worker start` and
`skylane serve` as processes, a `process` pool running real flows, `ecs` pools on moto_server
(through the fault proxy where a test needs AWS to misbehave).

On SQLite only: the protocol's database side (claims, leases, recovery, two workers racing) is
tested on both databases in tests/unit/test_worker.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest

from skylane.adapters.ecs import started_by_for
from skylane.testing.aws_faults import FaultProxy
from skylane.testing.moto import FAKE_AWS_ENV
from skylane.testing.server import SKYLANE, ServerProcess, running_server, stop_process
from skylane.testing.waiting import wait_until
from tests.e2e.conftest import ECS_CLUSTER, FAST_SETTINGS, TERMINAL, start_run, write_etl_flow

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flows:1.0"
# Workers beat and poll fast here; a real one beats every 10 s.
WORKER_SETTINGS = {
    "SKYLANE_WORKER_HEARTBEAT_SECONDS": "0.5",
    "SKYLANE_DISPATCHER_INTERVAL_SECONDS": "0.2",
    "SKYLANE_RECONCILER_INTERVAL_SECONDS": "0.5",
}
FLOW = """
import logging, os
log = logging.getLogger("flows.greet")

def greet(name: str = "world") -> None:
    log.info("hello %s, greeting=%s", name, os.environ.get("GREETING", "unset"))
"""


@contextmanager
def worker(
    server: ServerProcess, pool: str, name: str, *args: str, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`skylane worker start --pool POOL --name NAME ARGS...` with the server's settings (and
    `env`), stopped with SIGTERM on exit; its output in the server's log directory."""
    log_path = server.log_path.with_name(f"worker-{name}.log")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*SKYLANE, "worker", "start", "--pool", pool, "--name", name, *args],
            env={**server.env, **WORKER_SETTINGS, **env},
            cwd=server.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    process.log_path = log_path  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        stop_process(process)


def worker_log(process: subprocess.Popen[bytes]) -> str:
    return Path(process.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def api(server: ServerProcess, method: str, path: str, **kwargs: Any) -> Any:
    with server.http() as http:
        response = http.request(method, path, **kwargs)
        assert response.is_success, response.text
        return response.json() if response.content else None


def pool_status(server: ServerProcess, pool: str) -> dict[str, Any]:
    return api(server, "GET", f"/api/pools/{pool}/status")


def new_run(server: ServerProcess, deployment_id: str, **body: Any) -> str:
    return api(server, "POST", f"/api/deployments/{deployment_id}/runs", json=body)["id"]


def provider_ref(server: ServerProcess, run_id: str) -> str | None:
    """The provider ref of the run's latest attempt, once there is one."""
    attempts = server.run_json(run_id)["attempts"]
    return attempts[-1]["provider_ref"] if attempts else None


def deployment_id(server: ServerProcess, full_name: str) -> str:
    flow, name = full_name.split("/")
    return api(server, "GET", f"/api/deployments/by-name/{flow}/{name}")["id"]


@pytest.fixture
def process_server(sqlite_server: ServerProcess) -> ServerProcess:
    (sqlite_server.workdir / "flows").mkdir(exist_ok=True)
    (sqlite_server.workdir / "flows" / "greet.py").write_text(FLOW)
    return sqlite_server


# --- a process pool ---------------------------------------------------------------------------


def test_a_worker_runs_a_process_pools_flow_and_follows_template_changes(
    process_server: ServerProcess,
) -> None:
    server = process_server
    server.cli("pool", "create", "box", "--type", "process", check=True)
    server.cli(
        "deployment", "create", "daily", "--entrypoint", "flows/greet.py:greet", "--pool", "box",
        check=True,
    )  # fmt: skip
    inspect = server.cli_json("pool", "inspect", "box")
    assert inspect["status"]["status"] == "not_ready"
    assert "no worker is online" in inspect["status"]["reason"]

    with worker(server, "box", "w1") as process:
        wait_until(lambda: pool_status(server, "box")["status"] == "ready", "ready", timeout=30)
        shown = server.cli("pool", "inspect", "box", check=True).stdout
        assert "ready" in shown and "w1" in shown and "online" in shown

        run_id = start_run(server, "--param", "name=ada", deployment="greet/daily")
        run = server.wait_for_state(run_id, TERMINAL, timeout=60)
        assert run["state"] == "COMPLETED", (run, worker_log(process))
        assert run["attempts"][0]["claimed_by"] == "w1"
        logs = server.cli("run", "logs", run_id, check=True).stdout
        assert "hello ada, greeting=unset" in logs

        # The pool's template changes while the worker runs: its next run uses it.
        template = api(server, "GET", "/api/pools/box")["base_job_template"]
        template["variables"]["properties"]["env"]["default"] = {"GREETING": "from-v2"}
        path = server.workdir / "template-v2.json"
        path.write_text(json.dumps(template))
        server.cli("pool", "update", "box", "--base-job-template", str(path), check=True)
        second = new_run(server, deployment_id(server, "greet/daily"))
        assert server.wait_for_state(second, TERMINAL, timeout=60)["state"] == "COMPLETED"
        logs = server.cli("run", "logs", second, check=True).stdout
        assert "greeting=from-v2" in logs

    # Stopped cleanly (SIGTERM): offline at once, and the pull pool is not ready.
    assert process.returncode == 0, worker_log(process)
    status = pool_status(server, "box")
    assert status["status"] == "not_ready"
    assert [(w["name"], w["online"]) for w in status["workers"]] == [("w1", False)]


# --- ECS pull pools on moto -----------------------------------------------------------------


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, seed=11) as started:
        yield started


def ecs_tasks(aws: boto3.Session, moto_endpoint: str, key: str) -> list[str]:
    """The tasks in the account started for idempotency key `key`."""
    ecs = aws.client("ecs", endpoint_url=moto_endpoint)
    return ecs.list_tasks(cluster=ECS_CLUSTER, startedBy=started_by_for(key))["taskArns"]


@contextmanager
def ecs_server(tmp_path: Path, pool_type: str, *pool_options: str, **env: str) -> Iterator[Any]:
    """A control plane on SQLite with an ECS pool `aws` of `pool_type` and a deployment
    etl/nightly on it; (server, deployment id)."""
    with running_server(
        f"sqlite:///{tmp_path / 'skylane.db'}",
        workdir=write_etl_flow(tmp_path / "project"),
        home=tmp_path / "home",
        settings={**FAST_SETTINGS, **FAKE_AWS_ENV, **env},
    ) as server:
        server.cli(
            "pool", "create", "aws", "--type", pool_type, "--setting", "region=us-east-1",
            *pool_options, check=True,
        )  # fmt: skip
        server.cli(
            "deployment", "create", "nightly", "--entrypoint", "flows/etl.py:etl",
            "--pool", "aws", "--image", IMAGE, "--job-variable", f"cluster={ECS_CLUSTER}",
            check=True,
        )  # fmt: skip
        yield server, deployment_id(server, "etl/nightly")


def test_two_ecs_workers_submit_each_of_100_runs_exactly_once(
    aws: boto3.Session, moto_endpoint: str, tmp_path: Path
) -> None:
    with ecs_server(tmp_path, "ecs", "--setting", f"endpoint_url={moto_endpoint}") as (
        server,
        dep,
    ):
        runs = [new_run(server, dep) for _ in range(100)]
        # The runs stay PENDING in moto: the workers' reconcilers need not look often.
        slow_watch = {"SKYLANE_RECONCILER_INTERVAL_SECONDS": "5"}
        with worker(server, "aws", "w1", **slow_watch), worker(server, "aws", "w2", **slow_watch):

            def submitted() -> list[dict[str, Any]]:
                found = api(server, "GET", "/api/runs", params={"limit": 1000})
                return [r for r in found if r["attempts"] and r["attempts"][-1]["provider_ref"]]

            wait_until(lambda: len(submitted()) >= 100, "100 submissions", timeout=120, interval=1)
        tasks = aws.client("ecs", endpoint_url=moto_endpoint).list_tasks(cluster=ECS_CLUSTER)
        by_run = {r["id"]: r for r in submitted()}
    # What a user checks in their account: 100 tasks, one per run, each the run's recorded one.
    assert set(by_run) == set(runs)
    assert len(tasks["taskArns"]) == 100
    claimed_by = Counter()
    for run in by_run.values():
        [attempt] = run["attempts"]
        assert ecs_tasks(aws, moto_endpoint, attempt["idempotency_key"]) == [
            attempt["provider_ref"]
        ]
        claimed_by[attempt["claimed_by"]] += 1
    assert set(claimed_by) <= {"w1", "w2"} and sum(claimed_by.values()) == 100


def test_an_ecs_worker_killed_mid_submit_is_recovered_without_a_second_task(
    aws: boto3.Session, moto_endpoint: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    with ecs_server(tmp_path, "ecs", "--setting", f"endpoint_url={proxy.url}") as (server, dep):
        short_lease = {
            "SKYLANE_CLAIM_LEASE_SECONDS": "10",
            "SKYLANE_SUBMIT_DEADLINE_SECONDS": "4",
            "SKYLANE_PROVIDER_TIMEOUT_SECONDS": "5",
        }
        # RunTask reaches moto (the task starts) but its answer is held: the worker dies
        # waiting for it, with no ref recorded.
        proxy.delay("RunTask", seconds=30, count=1)
        run_id = new_run(server, dep)
        with worker(server, "aws", "doomed", **short_lease) as doomed:

            def started_task() -> list[str]:
                attempts = server.run_json(run_id)["attempts"]
                return attempts and ecs_tasks(aws, moto_endpoint, attempts[0]["idempotency_key"])

            wait_until(started_task, "RunTask to reach moto", timeout=60)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(10)
        run = server.run_json(run_id)
        [attempt] = run["attempts"]
        key = attempt["idempotency_key"]
        assert run["state"] == "PENDING" and attempt["provider_ref"] is None
        assert len(ecs_tasks(aws, moto_endpoint, key)) == 1  # the task it did start

        with worker(server, "aws", "rescuer", **short_lease) as rescuer:
            # Its lease runs out; the other worker looks the key up and adopts the task.
            wait_until(
                lambda: provider_ref(server, run_id),
                "adopted",
                timeout=60,
            )
            # And it submits new runs itself.
            second = new_run(server, dep)
            wait_until(
                lambda: provider_ref(server, second),
                "submitted",
                timeout=60,
            )
            log = worker_log(rescuer)
        [attempt] = server.run_json(run_id)["attempts"]
        tasks = ecs_tasks(aws, moto_endpoint, key)
        assert tasks == [attempt["provider_ref"]], log
        assert attempt["claimed_by"] == "rescuer"
        [other] = server.run_json(second)["attempts"]
        assert ecs_tasks(aws, moto_endpoint, other["idempotency_key"]) == [other["provider_ref"]]
        described = aws.client("ecs", endpoint_url=moto_endpoint).describe_tasks(
            cluster=ECS_CLUSTER, tasks=[other["provider_ref"]]
        )["tasks"][0]
        definition = aws.client("ecs", endpoint_url=moto_endpoint).describe_task_definition(
            taskDefinition=described["taskDefinitionArn"]
        )["taskDefinition"]
        assert definition["containerDefinitions"][0]["image"] == IMAGE


def test_a_push_pool_falls_back_to_a_worker_while_its_credentials_are_refused(
    aws: boto3.Session, moto_endpoint: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    # The control plane reaches AWS through the proxy, the worker directly: refusing every call
    # at the proxy is the control plane's credentials being withdrawn.
    with ecs_server(
        tmp_path,
        "ecs:push",
        "--fallback",
        "worker",
        AWS_ENDPOINT_URL=proxy.url,
        SKYLANE_FALLBACK_PROBE_SECONDS="1",
    ) as (server, dep):
        proxy.error("*", code="UnrecognizedClientException", status=400,
                    message="The security token included in the request is invalid.")  # fmt: skip
        with worker(server, "aws", "fallback-1", AWS_ENDPOINT_URL=moto_endpoint):
            first = new_run(server, dep)
            wait_until(
                lambda: provider_ref(server, first),
                "the worker's submit",
                timeout=60,
                context=server.log_tail,
            )
            run = server.run_json(first)
            assert run["attempts"][-1]["claimed_by"] == "fallback-1"
            messages = [h["message"] or "" for h in run["history"]]
            assert any(
                m.startswith("handed to the pool's workers: the control plane's credentials")
                and "UnrecognizedClientException" in m
                for m in messages
            ), messages
            assert any("(fallback: " in m for m in messages), messages
            status = pool_status(server, "aws")
            assert status["dispatched_by"] == "workers" and status["status"] == "ready"
            key = run["attempts"][-1]["idempotency_key"]
            assert ecs_tasks(aws, moto_endpoint, key) == [run["attempts"][-1]["provider_ref"]]

            # Credentials back: the control plane's probe succeeds and it pushes again.
            proxy.clear_rules()
            wait_until(
                lambda: pool_status(server, "aws")["dispatched_by"] == "control plane",
                "push again",
                timeout=30,
            )
            second = new_run(server, dep)
            wait_until(
                lambda: provider_ref(server, second),
                "the control plane's submit",
                timeout=60,
            )
            [attempt] = server.run_json(second)["attempts"]
            assert attempt["claimed_by"].startswith("dispatcher@")
        every_task = aws.client("ecs", endpoint_url=moto_endpoint).list_tasks(cluster=ECS_CLUSTER)[
            "taskArns"
        ]
        assert len(every_task) == 2  # one per run: none lost, none twice


# --- serve ------------------------------------------------------------------------------------


def test_serve_runs_a_flow_on_its_interval_on_this_machine(process_server: ServerProcess) -> None:
    server = process_server
    log_path = server.log_path.with_name("serve.log")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*SKYLANE, "serve", "flows/greet.py:greet", "--name", "often", "--interval", "2",
             "--param", "name=served"],
            env={**server.env, **WORKER_SETTINGS},
            cwd=server.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def completed() -> list[dict[str, Any]]:
            try:
                dep = deployment_id(server, "greet/often")
            except AssertionError:
                return []
            found = api(server, "GET", "/api/runs", params={"deployment": dep})
            return [r for r in found if r["state"] == "COMPLETED"]

        done = wait_until(
            lambda: len(completed()) >= 2 and completed(),
            "two completed runs",
            timeout=90,
            context=lambda: log_path.read_text(errors="replace"),
        )
    finally:
        stop_process(process)
    output = log_path.read_text(errors="replace")
    assert process.returncode == 0, output
    assert "serving greet/often (every 2 s) on pool serve-" in output
    deployment = api(server, "GET", f"/api/deployments/{deployment_id(server, 'greet/often')}")
    assert deployment["pool_name"].startswith("serve-")
    pool = api(server, "GET", f"/api/pools/{deployment['pool_name']}")
    assert pool["type"] == "process"
    times = sorted(r["scheduled_time"] for r in done)
    assert len(set(times)) == len(times)  # distinct scheduled times: the schedule's runs
    assert all(r["schedule_id"] for r in done)
    logs = server.cli("run", "logs", done[0]["id"], check=True).stdout
    assert "hello served" in logs

"""The fault-injecting proxy between boto3 and moto_server (`skylane.testing.aws_faults`): real
boto3 clients talk to one moto_server (per module) through the proxy."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from skylane.testing.aws_faults import (
    FaultProxy,
    FaultRule,
    ProxiedCall,
    RemoteFaultProxy,
    max_calls_in_window,
    operation_name,
    token_bucket_violations,
)
from skylane.testing.moto import FAKE_AWS_ENV, moto_server, reset

# `max_attempts` in botocore's client Config counts *retries* (it becomes total_max_attempts =
# max_attempts + 1), so `{"max_attempts": 1}` still retries once; one attempt in all is this:
NO_RETRIES_KW: dict[str, Any] = {"retries": {"total_max_attempts": 1, "mode": "standard"}}
NO_RETRIES = Config(**NO_RETRIES_KW)
CLUSTER = "faults"
FAMILY = "job"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def proxy(moto: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto, seed=1) as started:
        yield started


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def fresh(proxy: FaultProxy, moto: str) -> FaultProxy:
    """The proxy without rules or logged calls, in front of a moto holding only a cluster and a
    task definition (created on moto directly, so the proxy log starts empty)."""
    proxy.clear_rules()
    proxy.reset_calls()
    proxy.seed(1)
    reset(moto)
    direct = ecs(moto)
    direct.create_cluster(clusterName=CLUSTER)
    direct.register_task_definition(
        family=FAMILY,
        containerDefinitions=[{"name": "main", "image": "busybox", "memory": 512}],
    )
    return proxy


def ecs(endpoint: str, config: Config | None = None) -> Any:
    return boto3.session.Session(region_name="us-east-1").client(
        "ecs", endpoint_url=endpoint, config=config
    )


def run_task(client: Any, started_by: str = "test") -> dict[str, Any]:
    return client.run_task(
        cluster=CLUSTER, taskDefinition=FAMILY, launchType="FARGATE", startedBy=started_by
    )


def task_arns(moto: str) -> list[str]:
    return ecs(moto).list_tasks(cluster=CLUSTER)["taskArns"]


# -- forwarding ----------------------------------------------------------------------------


def test_calls_are_forwarded_unchanged_and_logged(fresh: FaultProxy, moto: str) -> None:
    before = time.time()
    answer = run_task(ecs(fresh.url, NO_RETRIES), started_by="run-1")

    arn = answer["tasks"][0]["taskArn"]
    assert task_arns(moto) == [arn]
    [call] = fresh.calls()
    assert call.operation == "RunTask"
    assert call.outcome == "forwarded"
    assert call.status == 200
    assert call.method == "POST"
    assert before <= call.received_at <= time.time()
    assert call.request_json["startedBy"] == "run-1"
    assert call.response_json["tasks"][0]["taskArn"] == arn
    assert fresh.calls("ListTasks") == []


def test_keep_alive_clients_from_many_threads_all_get_through(fresh: FaultProxy) -> None:
    client = ecs(fresh.url, NO_RETRIES)  # botocore clients are thread-safe and pool connections
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                assert client.list_clusters()["clusterArns"]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    calls = fresh.calls("ListClusters")
    assert len(calls) == 40
    assert {c.outcome for c in calls} == {"forwarded"}
    assert max_calls_in_window([c.received_at for c in calls], 60) == 40


# -- faults --------------------------------------------------------------------------------


def test_throttled_twice_then_forwarded(fresh: FaultProxy, moto: str) -> None:
    fresh.throttle("RunTask", probability=1, count=2, retry_after=1)
    client = ecs(fresh.url, NO_RETRIES)

    for _ in range(2):
        with pytest.raises(ClientError) as raised:
            run_task(client)
        error = raised.value.response
        assert error["Error"]["Code"] == "ThrottlingException"
        assert error["Error"]["Message"] == "Rate exceeded"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert error["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "1"
    run_task(client)

    assert [c.outcome for c in fresh.calls("RunTask")] == ["throttled", "throttled", "forwarded"]
    assert [c.status for c in fresh.calls("RunTask")] == [400, 400, 200]
    assert len(task_arns(moto)) == 1  # throttled calls never reached moto
    [rule] = fresh.rules()
    assert rule.fired == 2 and rule.exhausted


def test_max_attempts_1_in_client_config_still_retries_once(fresh: FaultProxy) -> None:
    # What the outcome above would be with Config(retries={"max_attempts": 1}).
    fresh.throttle("RunTask", probability=1, count=1)
    run_task(ecs(fresh.url, Config(retries={"max_attempts": 1, "mode": "standard"})))
    assert [c.outcome for c in fresh.calls("RunTask")] == ["throttled", "forwarded"]


def test_rules_hit_only_their_operation(fresh: FaultProxy) -> None:
    fresh.throttle("RunTask", probability=1)
    client = ecs(fresh.url, NO_RETRIES)
    assert client.list_clusters()["clusterArns"]
    with pytest.raises(ClientError):
        run_task(client)
    assert [(c.operation, c.outcome) for c in fresh.calls()] == [
        ("ListClusters", "forwarded"),
        ("RunTask", "throttled"),
    ]


def test_error_rule_answers_a_permanent_aws_error(fresh: FaultProxy, moto: str) -> None:
    fresh.error("RunTask", message="not allowed to run tasks")
    client = ecs(fresh.url, NO_RETRIES)

    for _ in range(2):  # no count: every call
        with pytest.raises(ClientError) as raised:
            run_task(client)
        assert raised.value.response["Error"] == {
            "Code": "AccessDeniedException",
            "Message": "not allowed to run tasks",
        }
    assert task_arns(moto) == []
    [first, _] = fresh.calls("RunTask")
    assert first.outcome == "error"
    assert first.response_json == {
        "__type": "AccessDeniedException",
        "message": "not allowed to run tasks",
    }


def test_error_with_another_code_and_status(fresh: FaultProxy) -> None:
    fresh.error("ListClusters", code="ServerException", message="boom", status=500, count=1)
    client = ecs(fresh.url, NO_RETRIES)
    with pytest.raises(ClientError) as raised:
        client.list_clusters()
    assert raised.value.response["Error"]["Code"] == "ServerException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert client.list_clusters()["clusterArns"]  # count=1: the next call goes through


def test_timeout_after_forward_creates_the_task_but_answers_nothing(
    fresh: FaultProxy, moto: str
) -> None:
    fresh.timeout_after_forward("RunTask", delay=3)
    client = ecs(fresh.url, Config(read_timeout=1, connect_timeout=1, **NO_RETRIES_KW))

    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        run_task(client, started_by="lost")
    assert time.monotonic() - started < 2.5

    [arn] = task_arns(moto)  # moto did start it
    [call] = fresh.calls("RunTask")
    assert call.outcome == "timeout"
    assert call.status == 200
    assert call.response_json["tasks"][0]["taskArn"] == arn
    # count=1: the retry of the caller goes through (and, not being idempotent, starts another).
    run_task(client, started_by="lost")
    assert len(task_arns(moto)) == 2
    started_by = [c.request_json["startedBy"] for c in fresh.calls("RunTask")]
    assert started_by == ["lost", "lost"]


def test_timeout_after_forward_can_answer_late_instead(fresh: FaultProxy) -> None:
    fresh.timeout_after_forward("ListClusters", delay=0.3, drop=False)
    started = time.monotonic()
    assert ecs(fresh.url, NO_RETRIES).list_clusters()["clusterArns"]
    assert time.monotonic() - started >= 0.3
    assert fresh.calls()[0].outcome == "timeout"


def test_delay_adds_latency(fresh: FaultProxy) -> None:
    fresh.delay("ListClusters", 0.3, count=1)
    client = ecs(fresh.url, NO_RETRIES)
    started = time.monotonic()
    client.list_clusters()
    assert time.monotonic() - started >= 0.3
    assert [c.outcome for c in fresh.calls()] == ["forwarded"]


def test_probabilistic_rules_are_repeatable_with_a_seed(fresh: FaultProxy) -> None:
    client = ecs(fresh.url, NO_RETRIES)

    def outcomes() -> list[str]:
        fresh.reset_calls()
        fresh.seed(7)
        for _ in range(20):
            with contextlib.suppress(ClientError):
                client.list_clusters()
        return [c.outcome for c in fresh.calls()]

    fresh.throttle("ListClusters", probability=0.5)
    first = outcomes()
    assert first == outcomes()
    assert {"throttled", "forwarded"} == set(first)


def test_query_protocol_calls_get_xml_errors(fresh: FaultProxy) -> None:
    fresh.throttle("GetCallerIdentity", probability=1, count=1)
    sts = boto3.session.Session(region_name="us-east-1").client(
        "sts", endpoint_url=fresh.url, config=NO_RETRIES
    )
    with pytest.raises(ClientError) as raised:
        sts.get_caller_identity()
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    assert sts.get_caller_identity()["Account"]
    assert [c.outcome for c in fresh.calls("GetCallerIdentity")] == ["throttled", "forwarded"]


def test_stop_abandons_held_answers_promptly(moto: str) -> None:
    proxy = FaultProxy(moto).start()
    proxy.timeout_after_forward("*", delay=60)
    failures: list[BaseException] = []

    def call() -> None:
        try:
            httpx.get(f"{proxy.url}/moto-api/", timeout=30)
        except httpx.HTTPError as exc:
            failures.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    proxy.wait_for_calls(1, timeout=10)
    started = time.monotonic()
    proxy.stop()
    caller.join(timeout=10)
    assert time.monotonic() - started < 5
    assert not caller.is_alive()
    assert len(failures) == 1  # dropped, not answered


# -- control API ---------------------------------------------------------------------------


def test_control_api_over_http(fresh: FaultProxy) -> None:
    control = httpx.Client(base_url=f"{fresh.url}/__faults__", timeout=10)
    added = control.post(
        "/rules",
        json={
            "kind": "error",
            "operation": "RunTask",
            "code": "InvalidParameterException",
            "message": "bad request",
            "count": 1,
        },
    )
    assert added.status_code == 200
    rule_id = added.json()["rules"][0]["id"]
    client = ecs(fresh.url, NO_RETRIES)

    with pytest.raises(ClientError) as raised:
        run_task(client, started_by="remote")
    assert raised.value.response["Error"]["Code"] == "InvalidParameterException"
    client.list_clusters()

    calls = control.get("/calls", params={"operation": "RunTask"}).json()["calls"]
    assert [(c["outcome"], c["status"], c["rule_id"]) for c in calls] == [("error", 400, rule_id)]
    assert calls[0]["request_json"]["startedBy"] == "remote"
    assert len(control.get("/calls").json()["calls"]) == 2
    assert control.get("/rules").json()["rules"][0]["fired"] == 1
    assert control.get("/").json() == {"upstream": fresh.upstream, "rules": 1, "calls": 2}

    assert control.delete("/rules").json() == {"cleared": 1}
    assert control.delete("/calls").status_code == 200
    run_task(client)
    assert [c.outcome for c in fresh.calls()] == ["forwarded"]

    # Several rules at once; bad ones are refused whole.
    two = control.post("/rules", json={"rules": [{"kind": "delay", "operation": "X"}] * 2})
    assert len(two.json()["rules"]) == 2
    refused = control.post("/rules", json={"kind": "throttle", "operation": "X", "propability": 1})
    assert refused.status_code == 400 and "propability" in refused.json()["error"]
    assert control.post("/rules", json={"kind": "explode", "operation": "X"}).status_code == 400
    assert control.post("/rules", content=b"{not json").status_code == 400
    assert control.get("/nothing").status_code == 404
    assert len(fresh.rules()) == 2
    assert fresh.calls("ListClusters") == []  # control calls are not logged


def test_remote_fault_proxy_mirrors_the_local_api(fresh: FaultProxy) -> None:
    with RemoteFaultProxy(fresh.url) as remote:
        rule = remote.throttle("RunTask", probability=1, count=1)
        client = ecs(fresh.url, NO_RETRIES)
        with pytest.raises(ClientError):
            run_task(client)
        run_task(client)

        assert [r.id for r in remote.rules()] == [rule.id]
        assert remote.rules()[0].fired == 1
        calls = remote.calls("RunTask")
        assert all(isinstance(c, ProxiedCall) for c in calls)
        assert calls == fresh.calls("RunTask")
        assert remote.remove_rule(rule.id) and not remote.remove_rule(rule.id)
        remote.reset_calls()
        assert fresh.calls() == []
        remote.seed(3)
        assert remote.clear_rules() == 0


def test_standalone_cli_prints_its_url_and_serves(moto: str, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skylane.testing.aws_faults",
            "--upstream",
            moto,
            "--rule",
            '{"kind": "throttle", "operation": "RunTask", "probability": 1}',
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with RemoteFaultProxy(url) as remote:
            assert [r.kind for r in remote.rules()] == ["throttle"]
        assert ecs(url, NO_RETRIES).list_clusters()["clusterArns"] is not None
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


# -- pieces --------------------------------------------------------------------------------


def test_operation_names() -> None:
    target = {"X-Amz-Target": "AmazonEC2ContainerServiceV20141113.RunTask"}
    assert operation_name(target, "/", b"{}") == "RunTask"
    assert operation_name({}, "/?Action=DescribeInstances&Version=1", b"") == "DescribeInstances"
    form = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    assert operation_name(form, "/", b"Action=GetCallerIdentity&Version=2011-06-15") == (
        "GetCallerIdentity"
    )
    assert operation_name({}, "/2015-03-31/functions", b"") is None


def test_rule_validation_and_json_round_trip() -> None:
    rule = FaultRule(kind="throttle", operation="RunTask", count=2)
    assert (rule.code, rule.message) == ("ThrottlingException", "Rate exceeded")
    assert FaultRule.from_json(rule.to_json()) == rule
    timed = FaultRule.from_json({"kind": "timeout_after_forward", "operation": "*", "delay": 2})
    assert timed.seconds == 2 and timed.matches("Anything") and timed.matches(None)
    for bad in (
        {"kind": "throttle", "operation": "X", "probability": 2},
        {"kind": "throttle", "operation": "X", "count": -1},
        {"kind": "delay", "operation": "X", "seconds": -1},
        {"kind": "error", "operation": "X", "status": 42},
        {"kind": "throttle"},
        {"operation": "X"},
    ):
        with pytest.raises(ValueError):
            FaultRule.from_json(bad)


def test_max_calls_in_window() -> None:
    assert max_calls_in_window([], 1) == 0
    assert max_calls_in_window([5.0], 1) == 1
    # Half-open windows: calls exactly one window apart are in different windows.
    assert max_calls_in_window([0.0, 1.0, 2.0, 3.0], 1) == 1
    assert max_calls_in_window([0.0, 0.5, 0.99, 1.0, 1.2, 5.0], 1) == 4
    assert max_calls_in_window([2.95, 0.0, 2.5, 0.1, 2.9], 0.5) == 3  # unordered input
    with pytest.raises(ValueError):
        max_calls_in_window([1.0], 0)


def test_token_bucket_violations() -> None:
    # 10 per second with bursts of 5: a burst of 5, then one call every 0.1 s, holds exactly.
    paced = [0.0] * 5 + [0.1 * k for k in range(1, 30)]
    assert token_bucket_violations(paced, burst=5, per_second=10) == []
    # One call more in the first burst breaks it, from the start to the end of the burst.
    violations = token_bucket_violations([0.0] * 6 + [0.1 * k for k in range(1, 30)], 5, 10)
    assert violations
    worst = violations[0]
    assert (worst.start, worst.calls) == (0.0, 6) and worst.allowed == 5 and worst.excess == 1
    # A sustained rate above the refill breaks it later even without an initial burst.
    fast = [0.05 * k for k in range(100)]  # 20 per second
    late = token_bucket_violations(fast, burst=5, per_second=10)
    assert late and late[0].end - late[0].start > 0.3
    # Slack forgives what it says.
    assert token_bucket_violations([0.0] * 6, burst=5, per_second=10, slack=1) == []
    assert token_bucket_violations([0.0] * 7, burst=5, per_second=10, slack=1)[0].calls == 7
    with pytest.raises(ValueError):
        token_bucket_violations([0.0], burst=0, per_second=1)

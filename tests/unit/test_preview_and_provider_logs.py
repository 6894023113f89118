"""`deployment render` previews, the provider-log fallback, and the adapters' store-backed
resource cache."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from skylane.adapters.process import ProcessAdapter
from skylane.services.dispatcher import Dispatcher
from skylane.services.reconciler import Reconciler
from skylane.services.resource_cache import StoreResourceCache
from skylane.settings import Settings
from skylane.store.repository import Store
from tests.unit.test_dispatcher import WAIT_FOR_RELEASE, command


@pytest.fixture
def deployment(api: TestClient, tmp_path: Any) -> dict:
    assert api.post("/api/pools", json={"name": "local", "type": "process:push"}).status_code == 201
    body = {
        "flow_name": "etl",
        "name": "nightly",
        "pool": "local",
        "entrypoint": "flows/etl.py:etl",
        "parameter_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "job_variables": {"working_dir": str(tmp_path), "env": {"LEVEL": "debug"}},
    }
    response = api.post("/api/deployments", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_render_shows_the_exact_request_without_storing_anything(
    api: TestClient, deployment: dict, tmp_path: Any
) -> None:
    response = api.post(
        f"/api/deployments/{deployment['id']}/render",
        json={"parameters": {"n": 2}, "job_variables": {"env": {"EXTRA": "1"}}},
    )

    assert response.status_code == 200, response.text
    rendered = response.json()
    assert rendered["pool_type"] == "process:push"
    assert rendered["parameters"] == {"n": 2}
    request = rendered["request"]
    assert request["argv"] == [sys.executable, "-m", "skylane.runtime"]
    assert request["working_dir"] == str(tmp_path)
    assert request["env"]["LEVEL"] == "debug" and request["env"]["EXTRA"] == "1"
    assert request["env"]["SKYLANE_RUN_TOKEN"] == "****"
    assert api.get("/api/runs").json() == []


def test_render_rejects_what_a_run_would_be_refused_for(api: TestClient, deployment: dict) -> None:
    bad_param = api.post(
        f"/api/deployments/{deployment['id']}/render", json={"parameters": {"n": "two"}}
    )
    bad_variable = api.post(
        f"/api/deployments/{deployment['id']}/render",
        json={"job_variables": {"env": {"X": 1}}},
    )

    assert bad_param.status_code == 422 and bad_param.json()["error"]["field"] == "parameters.n"
    assert bad_variable.status_code == 422
    assert bad_variable.json()["error"]["field"] == "job_variables.env.X"


def test_provider_logs_show_what_the_process_printed_before_any_runtime_report(
    api: TestClient, store: Store, settings: Settings, tmp_path: Any
) -> None:
    store.create_pool(
        name="local", type="process:push", base_job_template=ProcessAdapter.default_template()
    )
    release = tmp_path / "release"
    code = "print('container said this', flush=True)\n" + WAIT_FOR_RELEASE
    deployment = store.create_deployment(
        flow_name="flow",
        name="job",
        pool_name="local",
        entrypoint="flows/flow.py:main",
        job_variables={"command": command(code), "env": {"RELEASE": str(release)}},
    )
    run = store.create_run(deployment, parameters={}, job_variables={})
    assert api.get(f"/api/runs/{run.id}/provider-logs").json() == []  # nothing submitted yet
    Dispatcher(store, settings).run_pass()

    deadline = time.monotonic() + 20
    lines: list[dict] = []
    while not any(line["message"] == "container said this" for line in lines):
        assert time.monotonic() < deadline, f"provider log never showed the line: {lines}"
        time.sleep(0.05)
        lines = api.get(f"/api/runs/{run.id}/provider-logs").json()

    assert api.get(f"/api/runs/{run.id}/logs").json() == []  # the runtime sent nothing
    assert {line["stream"] for line in lines} == {"stdout"}
    release.touch()
    reconciler = Reconciler(store, settings)
    deadline = time.monotonic() + 20
    while not store.get_run(run.id).state.is_terminal:
        assert time.monotonic() < deadline
        reconciler.run_pass()
        time.sleep(0.05)


def test_resource_cache_keeps_the_first_value_and_survives_a_new_instance(store: Store) -> None:
    pool = store.create_pool(
        name="local", type="process:push", base_job_template=ProcessAdapter.default_template()
    )
    other = store.create_pool(
        name="other", type="process:push", base_job_template=ProcessAdapter.default_template()
    )
    cache = StoreResourceCache(store, pool.id)

    assert cache.put("ecs-task-definition", "hash-1", "arn:1") == "arn:1"
    assert cache.put("ecs-task-definition", "hash-1", "arn:2") == "arn:1"  # first writer wins

    again = StoreResourceCache(store, pool.id)
    assert again.get("ecs-task-definition", "hash-1") == "arn:1"
    assert again.items("ecs-task-definition") == {"hash-1": "arn:1"}
    assert StoreResourceCache(store, other.id).get("ecs-task-definition", "hash-1") is None
    again.delete("ecs-task-definition", "hash-1")
    assert cache.get("ecs-task-definition", "hash-1") is None


def test_concurrent_writers_agree_on_one_value(store: Store) -> None:
    pool = store.create_pool(
        name="local", type="process:push", base_job_template=ProcessAdapter.default_template()
    )
    results: list[str] = []
    barrier = threading.Barrier(4)

    def writer(index: int) -> None:
        barrier.wait()
        results.append(StoreResourceCache(store, pool.id).put("kind", "key", f"value-{index}"))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(results)) == 1
    assert store.get_provider_resource(pool.id, "kind", "key") == results[0]

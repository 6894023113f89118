"""The HTTP API, through FastAPI's TestClient, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from skylane.adapters.process import ProcessAdapter
from skylane.api.app import create_app
from skylane.models import ApiScope
from skylane.security import hash_secret, parse_api_key, parse_run_token
from skylane.settings import Settings
from skylane.store import create_engine_for, migrate
from skylane.store.repository import LogEntry, Store

U = "00000000-0000-4000-8000-000000000000"
PATH_VALUES = {
    "name": "some-pool",
    "pool_type": "process:push",
    "flow_name": "etl",
    "deployment_id": U,
    "run_id": U,
    "schedule_id": U,
    "key_id": "abc",
    "pool": "some-pool",
    "worker": "w1",
    "key": "skl-abc-1",
    "kind": "task-definition",
}
# Every route under /api, as FastAPI declares it (test_route_list_is_complete keeps it so).
API_ROUTES = [
    ("GET", "/api/pools"),
    ("POST", "/api/pools"),
    ("GET", "/api/pools/{name}"),
    ("PATCH", "/api/pools/{name}"),
    ("DELETE", "/api/pools/{name}"),
    ("GET", "/api/pool-types/{pool_type}/default-template"),
    ("GET", "/api/pools/{name}/status"),
    ("GET", "/api/pools/{name}/workers"),
    ("POST", "/api/pools/{pool}/workers/{worker}/heartbeat"),
    ("POST", "/api/pools/{pool}/workers/{worker}/stopped"),
    ("POST", "/api/pools/{pool}/workers/{worker}/claims"),
    ("POST", "/api/pools/{pool}/workers/{worker}/recoveries"),
    ("POST", "/api/pools/{pool}/workers/{worker}/attempts/{key}/renew"),
    ("POST", "/api/pools/{pool}/workers/{worker}/submissions"),
    ("POST", "/api/pools/{pool}/workers/{worker}/attempts/{key}/failure"),
    ("PATCH", "/api/pools/{pool}/workers/{worker}/attempts/{key}"),
    ("GET", "/api/pools/{pool}/workers/{worker}/watch"),
    ("POST", "/api/pools/{pool}/workers/{worker}/runs/{run_id}/token"),
    ("GET", "/api/pools/{pool}/workers/{worker}/resources/{kind}"),
    ("GET", "/api/pools/{pool}/workers/{worker}/resources/{kind}/{key}"),
    ("PUT", "/api/pools/{pool}/workers/{worker}/resources/{kind}/{key}"),
    ("DELETE", "/api/pools/{pool}/workers/{worker}/resources/{kind}/{key}"),
    ("POST", "/api/deployments"),
    ("GET", "/api/deployments"),
    ("GET", "/api/deployments/by-name/{flow_name}/{name}"),
    ("GET", "/api/deployments/{deployment_id}"),
    ("PATCH", "/api/deployments/{deployment_id}"),
    ("DELETE", "/api/deployments/{deployment_id}"),
    ("POST", "/api/deployments/{deployment_id}/runs"),
    ("POST", "/api/deployments/{deployment_id}/render"),
    ("GET", "/api/deployments/{deployment_id}/schedules"),
    ("POST", "/api/deployments/{deployment_id}/schedules"),
    ("GET", "/api/schedules/{schedule_id}"),
    ("PATCH", "/api/schedules/{schedule_id}"),
    ("DELETE", "/api/schedules/{schedule_id}"),
    ("GET", "/api/runs"),
    ("GET", "/api/runs/{run_id}"),
    ("GET", "/api/runs/{run_id}/execution"),
    ("POST", "/api/runs/{run_id}/state"),
    ("POST", "/api/runs/{run_id}/cancel"),
    ("POST", "/api/runs/{run_id}/heartbeat"),
    ("POST", "/api/runs/{run_id}/source"),
    ("POST", "/api/runs/{run_id}/logs"),
    ("GET", "/api/runs/{run_id}/logs"),
    ("GET", "/api/runs/{run_id}/logs/follow"),
    ("GET", "/api/runs/{run_id}/provider-logs"),
    ("POST", "/api/keys"),
    ("GET", "/api/keys"),
    ("DELETE", "/api/keys/{key_id}"),
]

# For the many input-validation cases: validation runs before the store is touched, so one
# backend is enough (the request/response paths that touch each backend are covered by the
# tests that run on both).
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

PARAM_SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "label": {"type": "string", "default": "x"}},
    "required": ["n"],
    "additionalProperties": False,
}


def call(client: TestClient, method: str, path: str, body: Any = None) -> Any:
    if method in ("POST", "PATCH"):
        return client.request(method, path, json=body if body is not None else {})
    return client.request(method, path)


def client_for(api: TestClient, credential: str | None, *, raise_errors: bool = True) -> TestClient:
    headers = {"Authorization": f"Bearer {credential}"} if credential is not None else {}
    return TestClient(api.app, headers=headers, raise_server_exceptions=raise_errors)


@pytest.fixture
def anon(api: TestClient) -> TestClient:
    return client_for(api, None)


@pytest.fixture
def lenient(api: TestClient, admin_key: str) -> TestClient:
    """The admin client, but a server error comes back as a 500 instead of raising."""
    return client_for(api, admin_key, raise_errors=False)


def new_key(api: TestClient, *scopes: str, **extra: Any) -> str:
    r = api.post(
        "/api/keys", json={"name": f"key-{'-'.join(scopes)}", "scopes": list(scopes), **extra}
    )
    assert r.status_code == 201, r.text
    return r.json()["api_key"]


def create_pool(api: TestClient, name: str = "local", **body: Any) -> dict:
    r = api.post("/api/pools", json={"name": name, "type": "process:push", **body})
    assert r.status_code == 201, r.text
    return r.json()


def create_deployment(
    api: TestClient, *, pool: str = "local", flow: str = "etl", name: str = "nightly", **body: Any
) -> dict:
    r = api.post(
        "/api/deployments",
        json={
            "flow_name": flow,
            "name": name,
            "pool": pool,
            "entrypoint": "flows/etl.py:etl",
            **body,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def create_run(api: TestClient, deployment: dict, **body: Any) -> dict:
    r = api.post(f"/api/deployments/{deployment['id']}/runs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def deployment(api: TestClient) -> dict:
    create_pool(api)
    return create_deployment(api, parameter_schema=PARAM_SCHEMA, parameters={"n": 1})


def error(response: Any) -> dict:
    assert "error" in response.json(), response.text
    return response.json()["error"]


def snapshot(api: TestClient) -> dict[str, Any]:
    """Everything a user can list: compared before and after a refused request."""
    return {
        path: api.get(path).json()
        for path in ("/api/pools", "/api/deployments", "/api/runs", "/api/keys")
    }


def claim_tokens(store: Store) -> dict[str, str]:
    """Claim every due run as a dispatcher would; run id -> run token."""
    claims = store.claim_due_runs(claimed_by="test", lease_seconds=60)
    return {str(c.run.id): c.run_token for c in claims if c.run_token}


# --- health and authentication --------------------------------------------------------------


def test_health_needs_no_key(anon: TestClient, store: Store) -> None:
    r = anon.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["database"] == store.engine.dialect.name
    assert body["version"]


def test_route_list_is_complete(api: TestClient) -> None:
    # The OpenAPI document lists every route the app serves.
    declared = {
        (method.upper(), path)
        for path, operations in api.app.openapi()["paths"].items()
        if path.startswith("/api")
        for method in operations
    }
    assert declared == set(API_ROUTES)


@pytest.fixture(scope="module")
def anon_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A client without a key on an app over one SQLite database shared by the module: a
    request without a key never reaches the database, so one backend is enough for the
    route-by-route check."""
    tmp = tmp_path_factory.mktemp("anon")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKYLANE_HOME", str(tmp / "home"))
        engine = create_engine_for(f"sqlite:///{tmp / 'skylane.db'}")
        migrate(engine)
        app = create_app(Settings(), Store(engine))
    yield TestClient(app)
    engine.dispose()


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
def test_api_route_without_key_is_401(anon_sqlite: TestClient, method: str, path: str) -> None:
    r = call(anon_sqlite, method, path.format(**PATH_VALUES))
    assert r.status_code == 401, r.text
    assert error(r)["code"] == "unauthorized"


def test_invalid_credentials_are_401(api: TestClient, store: Store) -> None:
    info, plaintext = store.create_api_key(name="revoked", scopes=[ApiScope.ADMIN])
    store.revoke_api_key(info.id)
    _, expired = store.create_api_key(
        name="expired", scopes=[ApiScope.ADMIN], expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    _, good = store.create_api_key(name="good", scopes=[ApiScope.ADMIN])
    key_id, secret = parse_api_key(good)  # type: ignore[misc]
    credentials = [
        plaintext,
        expired,
        f"skl_{key_id}_{'0' * len(secret)}",
        f"skl_nosuchkey_{secret}",
        "garbage",
        f"sklr_{uuid.uuid4().hex}_{'a' * 64}",
    ]
    for credential in credentials:
        client = client_for(api, credential)
        for method, path in (
            ("GET", "/api/pools"),
            ("POST", "/api/keys"),
            ("GET", f"/api/runs/{U}"),
        ):
            r = call(client, method, path)
            assert r.status_code == 401, (credential[:8], method, path, r.text)
    # The X-API-Key header works like Bearer.
    assert TestClient(api.app, headers={"X-API-Key": good}).get("/api/pools").status_code == 200
    assert (
        TestClient(api.app, headers={"X-API-Key": plaintext}).get("/api/pools").status_code == 401
    )


def test_read_key(api: TestClient, deployment: dict) -> None:
    reader = client_for(api, new_key(api, "read"))
    assert reader.get("/api/pools").status_code == 200
    assert reader.get("/api/deployments").status_code == 200
    assert reader.get("/api/runs").status_code == 200
    before = snapshot(api)
    for method, path, body in [
        ("POST", "/api/pools", {"name": "p2", "type": "process:push"}),
        ("PATCH", "/api/pools/local", {"paused": True}),
        ("DELETE", "/api/pools/local", None),
        (
            "POST",
            "/api/deployments",
            {"flow_name": "f", "name": "n", "pool": "local", "entrypoint": "a.py:b"},
        ),
        ("POST", f"/api/deployments/{deployment['id']}/runs", {"parameters": {"n": 1}}),
        ("POST", "/api/keys", {"name": "x", "scopes": ["admin"]}),
        ("GET", "/api/keys", None),
    ]:
        r = call(reader, method, path, body)
        assert r.status_code == 403, (method, path, r.text)
        assert error(r)["code"] == "forbidden"
    assert snapshot(api) == before


def test_deploy_key(api: TestClient) -> None:
    create_pool(api)
    deployer = client_for(api, new_key(api, "deploy"))
    r = deployer.post("/api/pools", json={"name": "mine", "type": "process:push"})
    assert r.status_code == 403
    assert [p["name"] for p in api.get("/api/pools").json()] == ["local"]
    assert deployer.patch("/api/pools/local", json={"paused": True}).status_code == 403
    assert deployer.delete("/api/pools/local").status_code == 403
    assert api.get("/api/pools/local").json()["paused"] is False
    assert deployer.get("/api/keys").status_code == 403

    dep = create_deployment(deployer)
    run = create_run(deployer, dep)
    assert deployer.get(f"/api/runs/{run['id']}").json()["state"] == "SCHEDULED"
    r = deployer.post(f"/api/runs/{run['id']}/cancel")
    assert r.status_code == 200
    assert r.json()["run"]["state"] == "CANCELLED"
    # Reporting states is for workers and runs, not deployers.
    assert (
        deployer.post(f"/api/runs/{run['id']}/state", json={"state": "RUNNING"}).status_code == 403
    )


def test_worker_key(api: TestClient, deployment: dict) -> None:
    run = create_run(api, deployment)
    worker = client_for(api, new_key(api, "worker"))
    assert worker.get(f"/api/runs/{run['id']}/execution").status_code == 200
    r = worker.post(f"/api/runs/{run['id']}/state", json={"state": "PENDING"})
    assert r.status_code == 200 and r.json()["run"]["state"] == "PENDING"
    assert (
        worker.post(
            "/api/deployments",
            json={"flow_name": "f", "name": "n", "pool": "local", "entrypoint": "a.py:b"},
        ).status_code
        == 403
    )
    assert worker.post(f"/api/runs/{run['id']}/cancel").status_code == 403


def test_keys_created_through_the_api(api: TestClient) -> None:
    r = api.post("/api/keys", json={"name": "ci", "scopes": ["deploy"]})
    assert r.status_code == 201
    created = r.json()
    assert created["name"] == "ci"
    assert created["scopes"] == ["deploy"]
    plaintext = created["api_key"]
    assert plaintext.startswith("skl_")
    key_id, secret = parse_api_key(plaintext)  # type: ignore[misc]
    assert created["id"] == key_id

    listed = api.get("/api/keys")
    assert listed.status_code == 200
    [entry] = [k for k in listed.json() if k["id"] == key_id]
    assert entry["revoked"] is False
    assert "api_key" not in entry
    assert secret not in listed.text
    assert hash_secret(secret) not in listed.text

    client = client_for(api, plaintext)
    assert client.get("/api/pools").status_code == 200
    r = api.delete(f"/api/keys/{key_id}")
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert client.get("/api/pools").status_code == 401
    assert api.delete("/api/keys/nosuchkey").status_code == 404


def test_key_body_is_validated(api: TestClient) -> None:
    before = snapshot(api)
    for body, field in [
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["root"]}, "scopes.0"),
        ({"name": "", "scopes": ["read"]}, "name"),
    ]:
        r = api.post("/api/keys", json=body)
        assert r.status_code == 422, body
        assert error(r)["field"] == field
    assert snapshot(api) == before


# --- run tokens -----------------------------------------------------------------------------


@pytest.fixture
def two_claimed_runs(api: TestClient, store: Store, deployment: dict) -> tuple[dict, dict, str]:
    """Two runs claimed by a dispatcher; returns (run, other run, token of the first)."""
    run = create_run(api, deployment, parameters={"n": 5})
    other = create_run(api, deployment)
    tokens = claim_tokens(store)
    assert set(tokens) == {run["id"], other["id"]}
    return run, other, tokens[run["id"]]


def test_run_token_reports_on_its_own_run(api: TestClient, two_claimed_runs: tuple) -> None:
    run, _, token = two_claimed_runs
    runtime = client_for(api, token)

    r = runtime.get(f"/api/runs/{run['id']}/execution")
    assert r.status_code == 200
    assert r.json() == {
        "run_id": run["id"],
        "flow_name": "etl",
        "entrypoint": "flows/etl.py:etl",
        "parameters": {"n": 5},
        "state": "PENDING",
        "source": None,
    }
    assert runtime.get(f"/api/runs/{run['id']}").status_code == 200

    r = runtime.post(
        f"/api/runs/{run['id']}/state", json={"state": "RUNNING", "transition_id": "rt-1"}
    )
    assert r.status_code == 200
    assert r.json()["applied"] is True and r.json()["run"]["state"] == "RUNNING"

    now = datetime.now(UTC).isoformat()
    r = runtime.post(
        f"/api/runs/{run['id']}/logs",
        json={
            "logs": [
                {"timestamp": now, "message": "hello", "stream": "stdout", "level": "info"},
                {"timestamp": now, "message": "world"},
            ]
        },
    )
    assert r.status_code == 200 and r.json() == {"accepted": 2}
    lines = api.get(f"/api/runs/{run['id']}/logs").json()
    assert [(x["message"], x["level"], x["stream"]) for x in lines] == [
        ("hello", "INFO", "stdout"),
        ("world", "INFO", "logging"),
    ]

    r = runtime.post(f"/api/runs/{run['id']}/heartbeat")
    assert r.status_code == 200 and r.json()["last_heartbeat_at"] is not None

    r = runtime.post(f"/api/runs/{run['id']}/state", json={"state": "COMPLETED"})
    assert r.status_code == 200 and r.json()["run"]["state"] == "COMPLETED"


def test_run_token_is_confined_to_its_run(
    api: TestClient, store: Store, two_claimed_runs: tuple
) -> None:
    run, other, token = two_claimed_runs
    runtime = client_for(api, token)
    other_before = api.get(f"/api/runs/{other['id']}").json()
    now = datetime.now(UTC).isoformat()
    for method, path, body in [
        ("POST", f"/api/runs/{other['id']}/state", {"state": "RUNNING"}),
        ("GET", f"/api/runs/{other['id']}/execution", None),
        ("GET", f"/api/runs/{other['id']}", None),
        ("POST", f"/api/runs/{other['id']}/logs", {"logs": [{"timestamp": now, "message": "x"}]}),
        ("POST", f"/api/runs/{other['id']}/heartbeat", None),
        ("POST", f"/api/runs/{other['id']}/source", {"commit": "a" * 40}),
        ("GET", f"/api/runs/{other['id']}/logs", None),
        ("GET", "/api/pools", None),
        ("GET", "/api/runs", None),
        ("GET", "/api/deployments", None),
        ("POST", f"/api/deployments/{run['deployment_id']}/runs", {"parameters": {"n": 1}}),
        ("POST", f"/api/runs/{run['id']}/cancel", None),
        ("GET", f"/api/runs/{run['id']}/logs/follow", None),
        ("GET", "/api/keys", None),
    ]:
        r = call(runtime, method, path, body)
        assert r.status_code == 403, (method, path, r.text)
    assert api.get(f"/api/runs/{other['id']}").json() == other_before
    assert store.read_logs(uuid.UUID(other["id"])) == []
    assert len(api.get("/api/runs").json()) == 2


GIT_SOURCE = {
    "git": "https://git.example.com/acme/etl.git",
    "ref": "main",
    "commit": "0123456789abcdef0123456789abcdef01234567",
    "credentials": {"env": "GIT_TOKEN"},
}


def test_git_sourced_deployment_reaches_the_runtime_and_the_commit_is_recorded(
    api: TestClient, store: Store, deployment: dict
) -> None:
    r = api.patch(f"/api/deployments/{deployment['id']}", json={"source": GIT_SOURCE})
    assert r.status_code == 200, r.text
    assert r.json()["source"] == GIT_SOURCE
    run = create_run(api, deployment)
    token = claim_tokens(store)[run["id"]]
    runtime = client_for(api, token)
    assert runtime.get(f"/api/runs/{run['id']}/execution").json()["source"] == GIT_SOURCE

    commit = GIT_SOURCE["commit"]
    r = runtime.post(f"/api/runs/{run['id']}/source", json={"commit": commit})
    assert r.status_code == 200 and r.json()["source_commit"] == commit
    # Reporting it again is harmless; another commit is refused and changes nothing.
    assert runtime.post(f"/api/runs/{run['id']}/source", json={"commit": commit}).status_code == 200
    r = runtime.post(f"/api/runs/{run['id']}/source", json={"commit": "f" * 40})
    assert r.status_code == 409 and error(r)["field"] == "commit"
    assert api.get(f"/api/runs/{run['id']}").json()["source_commit"] == commit
    r = runtime.post(f"/api/runs/{run['id']}/source", json={"commit": "main"})
    assert r.status_code == 422 and error(r)["field"] == "commit"

    # Back to code from the image.
    r = api.patch(f"/api/deployments/{deployment['id']}", json={"source": None})
    assert r.status_code == 200 and r.json()["source"] is None


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"ref": "main"}, "source.git"),
        ({**GIT_SOURCE, "commit": "main"}, "source.commit"),
        ({**GIT_SOURCE, "credentials": {"env": "1X"}}, "source.credentials.env"),
        ({**GIT_SOURCE, "token": "s3cret"}, "source.token"),
        ({**GIT_SOURCE, "git": "https://bob:s3cret@git.example.com/x.git"}, "source.git"),
    ],
)
@SQLITE_ONLY
def test_bad_git_source_is_refused_with_its_field(
    api: TestClient, deployment: dict, source: dict, field: str
) -> None:
    before = snapshot(api)
    r = api.patch(f"/api/deployments/{deployment['id']}", json={"source": source})
    assert r.status_code == 422
    assert error(r)["field"] == field
    assert "s3cret" not in r.text
    assert snapshot(api) == before


@pytest.mark.parametrize("state", ["SCHEDULED", "PENDING", "CANCELLING"])
@SQLITE_ONLY
def test_run_token_cannot_set_control_plane_states(
    api: TestClient, two_claimed_runs: tuple, state: str
) -> None:
    run, _, token = two_claimed_runs
    runtime = client_for(api, token)
    if state == "PENDING":
        api.post(f"/api/runs/{run['id']}/state", json={"state": "SCHEDULED"})
    before = api.get(f"/api/runs/{run['id']}").json()
    r = runtime.post(f"/api/runs/{run['id']}/state", json={"state": state})
    assert r.status_code == 403
    assert api.get(f"/api/runs/{run['id']}").json() == before


def test_run_token_with_wrong_secret_is_401(api: TestClient, two_claimed_runs: tuple) -> None:
    run, _, token = two_claimed_runs
    run_id, secret = parse_run_token(token)  # type: ignore[misc]
    forged = f"sklr_{run_id.hex}_{'0' * len(secret)}"
    r = client_for(api, forged).post(f"/api/runs/{run['id']}/state", json={"state": "RUNNING"})
    assert r.status_code == 401
    assert api.get(f"/api/runs/{run['id']}").json()["state"] == "PENDING"


# --- bad input ------------------------------------------------------------------------------


def _template(**overrides: Any) -> dict:
    template = ProcessAdapter.default_template()
    template.update(overrides)
    return template


BAD_POOLS = [
    pytest.param({"type": "kubernetes:push"}, 422, "type", id="unknown-type"),
    pytest.param(
        {"base_job_template": ["not", "an", "object"]},
        422,
        "base_job_template",
        id="template-not-object",
    ),
    pytest.param(
        {"base_job_template": {"variables": {"type": "object"}}},
        422,
        "base_job_template.job_configuration",
        id="no-job-configuration",
    ),
    pytest.param(
        {
            "base_job_template": {
                "job_configuration": {"cpu": "{{ cpu }}"},
                "variables": {"type": "object", "properties": {"cpu": {"type": "integr"}}},
            }
        },
        422,
        "base_job_template.variables.properties.cpu.type",
        id="invalid-schema",
    ),
    pytest.param(
        {
            "base_job_template": {
                "job_configuration": {"cpu": "{{ cpus }}"},
                "variables": {"type": "object", "properties": {"cpu": {"type": "integer"}}},
            }
        },
        422,
        "base_job_template.job_configuration.cpu",
        id="unknown-placeholder",
    ),
    pytest.param({"name": "bad name!"}, 422, "name", id="bad-name"),
    pytest.param({"concurrency_limit": -1}, 422, "concurrency_limit", id="negative-limit"),
    pytest.param({"colour": "blue"}, 422, "colour", id="unknown-field"),
]


@pytest.mark.parametrize(("override", "status", "field"), BAD_POOLS)
@SQLITE_ONLY
def test_bad_pool_is_refused_and_nothing_stored(
    api: TestClient, override: dict, status: int, field: str
) -> None:
    before = snapshot(api)
    r = api.post("/api/pools", json={"name": "p", "type": "process:push", **override})
    assert r.status_code == status, r.text
    assert error(r)["field"] == field
    assert error(r)["message"]
    assert snapshot(api) == before


def test_duplicate_pool(api: TestClient) -> None:
    create_pool(api, description="first")
    before = snapshot(api)
    r = api.post("/api/pools", json={"name": "local", "type": "process", "description": "2nd"})
    assert r.status_code == 409
    assert error(r)["field"] == "name"
    assert snapshot(api) == before


def test_pool_update_and_delete(api: TestClient) -> None:
    create_pool(api)
    r = api.patch("/api/pools/local", json={"concurrency_limit": 2, "paused": True})
    assert r.status_code == 200
    assert api.get("/api/pools/local").json()["concurrency_limit"] == 2
    assert api.get("/api/pools/local").json()["paused"] is True
    assert api.patch("/api/pools/nope", json={"paused": True}).status_code == 404
    r = api.patch("/api/pools/local", json={"type": "process"})
    assert r.status_code == 422 and error(r)["field"] == "type"
    # What `pool provision` records: kept as given, and checked field by field.
    resource = {"kind": "ecr-repository", "name": "flows", "id": "arn:aws:ecr:x", "created": True}
    r = api.patch("/api/pools/local", json={"provisioned_resources": [resource]})
    assert r.status_code == 200
    assert api.get("/api/pools/local").json()["provisioned_resources"] == [resource]
    r = api.patch("/api/pools/local", json={"provisioned_resources": [{"kind": "x"}]})
    assert r.status_code == 422 and "provisioned_resources" in error(r)["field"]
    assert api.delete("/api/pools/local").status_code == 204
    assert api.get("/api/pools/local").status_code == 404


def test_pool_with_deployment_cannot_be_deleted(api: TestClient, deployment: dict) -> None:
    r = api.delete("/api/pools/local")
    assert r.status_code == 409
    assert error(r)["field"] == "pool"
    assert api.get("/api/pools/local").status_code == 200


def test_pool_update_that_breaks_a_deployment_is_refused(api: TestClient) -> None:
    create_pool(api)
    create_deployment(api, job_variables={"command": "echo hi"})
    old = api.get("/api/pools/local").json()["base_job_template"]
    template = ProcessAdapter.default_template()
    template["variables"]["properties"]["command"]["type"] = "integer"
    r = api.patch("/api/pools/local", json={"base_job_template": template})
    assert r.status_code == 422
    assert error(r)["field"].startswith("base_job_template")
    assert "etl/nightly" in error(r)["message"]
    assert api.get("/api/pools/local").json()["base_job_template"] == old

    # A template the deployment still fits is accepted.
    template = ProcessAdapter.default_template()
    template["variables"]["properties"]["command"]["default"] = "true"
    r = api.patch("/api/pools/local", json={"base_job_template": template})
    assert r.status_code == 200
    assert api.get("/api/pools/local").json()["base_job_template"] == template


def test_default_template_of_a_pool_type(api: TestClient) -> None:
    r = api.get("/api/pool-types/process:push/default-template")
    assert r.status_code == 200 and r.json() == ProcessAdapter.default_template()
    r = api.get("/api/pool-types/nope/default-template")
    assert r.status_code == 422 and error(r)["field"] == "pool_type"


BAD_DEPLOYMENTS = [
    pytest.param({"pool": "nope"}, 422, "pool", id="missing-pool"),
    pytest.param({"entrypoint": "flows/etl.py"}, 422, "entrypoint", id="no-function"),
    pytest.param({"entrypoint": "flows/etl.py:not-a-name"}, 422, "entrypoint", id="bad-function"),
    pytest.param(
        {"parameter_schema": PARAM_SCHEMA, "parameters": {"n": "three"}},
        422,
        "parameters.n",
        id="default-parameter-type",
    ),
    pytest.param(
        {"parameter_schema": PARAM_SCHEMA, "parameters": {"m": 1}},
        422,
        "parameters.m",
        id="unknown-default-parameter",
    ),
    pytest.param(
        {"parameter_schema": {"type": "nope"}},
        422,
        "parameter_schema.type",
        id="invalid-parameter-schema",
    ),
    pytest.param(
        {"job_variables": {"env": {"X": 1}}}, 422, "job_variables.env.X", id="env-not-string"
    ),
    pytest.param(
        {"job_variables": {"stream_output": "yes"}},
        422,
        "job_variables.stream_output",
        id="job-variable-type",
    ),
    pytest.param({"flow_name": "has space"}, 422, "flow_name", id="bad-flow-name"),
    pytest.param({"schedule": "@daily"}, 422, "schedule", id="unknown-field"),
]


@pytest.mark.parametrize(("override", "status", "field"), BAD_DEPLOYMENTS)
@SQLITE_ONLY
def test_bad_deployment_is_refused_and_nothing_stored(
    api: TestClient, override: dict, status: int, field: str
) -> None:
    create_pool(api)
    before = snapshot(api)
    body = {
        "flow_name": "etl",
        "name": "nightly",
        "pool": "local",
        "entrypoint": "flows/etl.py:etl",
        **override,
    }
    r = api.post("/api/deployments", json=body)
    assert r.status_code == status, r.text
    assert error(r)["field"] == field
    assert snapshot(api) == before


def test_duplicate_deployment(api: TestClient, deployment: dict) -> None:
    before = snapshot(api)
    r = api.post(
        "/api/deployments",
        json={
            "flow_name": "etl",
            "name": "nightly",
            "pool": "local",
            "entrypoint": "other.py:main",
        },
    )
    assert r.status_code == 409
    assert error(r)["field"] == "name"
    assert snapshot(api) == before


def test_deployment_lookups(api: TestClient, deployment: dict) -> None:
    create_pool(api, "other")
    second = create_deployment(api, pool="other", flow="report", name="weekly")
    r = api.get("/api/deployments/by-name/etl/nightly")
    assert r.status_code == 200 and r.json() == deployment
    assert api.get(f"/api/deployments/{deployment['id']}").json() == deployment
    assert api.get("/api/deployments/by-name/etl/weekly").status_code == 404
    assert api.get(f"/api/deployments/{uuid.uuid4()}").status_code == 404
    assert [d["id"] for d in api.get("/api/deployments", params={"pool": "other"}).json()] == [
        second["id"]
    ]
    assert len(api.get("/api/deployments").json()) == 2


def test_deployment_update_and_delete(api: TestClient, deployment: dict) -> None:
    r = api.patch(f"/api/deployments/{deployment['id']}", json={"parameters": {"n": "x"}})
    assert r.status_code == 422 and error(r)["field"] == "parameters.n"
    assert api.get(f"/api/deployments/{deployment['id']}").json() == deployment

    r = api.patch(
        f"/api/deployments/{deployment['id']}", json={"parameters": {"n": 7}, "tags": ["a"]}
    )
    assert r.status_code == 200
    assert r.json()["parameters"] == {"n": 7} and r.json()["tags"] == ["a"]

    run = create_run(api, deployment)
    r = api.delete(f"/api/deployments/{deployment['id']}")
    assert r.status_code == 409
    api.post(f"/api/runs/{run['id']}/cancel")
    assert api.delete(f"/api/deployments/{deployment['id']}").status_code == 204
    assert api.get(f"/api/deployments/{deployment['id']}").status_code == 404
    assert api.get("/api/runs").json() == []


BAD_RUNS = [
    pytest.param({"parameters": {"n": "three"}}, "parameters.n", id="parameter-type"),
    pytest.param({"parameters": {"n": 1, "m": 2}}, "parameters.m", id="unknown-parameter"),
    pytest.param({"parameters": {"n": None}}, "parameters.n", id="null-parameter"),
    pytest.param(
        {"job_variables": {"env": {"TOKEN": 5}}}, "job_variables.env.TOKEN", id="env-not-string"
    ),
    pytest.param(
        {"job_variables": {"command": ["a"]}}, "job_variables.command", id="job-variable-type"
    ),
    pytest.param({"job_variables": ["a"]}, "job_variables", id="job-variables-not-object"),
    pytest.param({"parameters": {"n": 1}, "priority": 3}, "priority", id="unknown-field"),
]


@pytest.mark.parametrize(("body", "field"), BAD_RUNS)
@SQLITE_ONLY
def test_bad_run_is_refused_and_nothing_stored(
    api: TestClient, deployment: dict, body: dict, field: str
) -> None:
    before = snapshot(api)
    r = api.post(f"/api/deployments/{deployment['id']}/runs", json=body)
    assert r.status_code == 422, r.text
    assert error(r)["field"] == field
    assert snapshot(api) == before


def test_run_of_missing_deployment(api: TestClient) -> None:
    r = api.post(f"/api/deployments/{uuid.uuid4()}/runs", json={})
    assert r.status_code == 404
    assert api.get("/api/runs").json() == []


def test_run_parameters_merge_with_deployment_defaults(api: TestClient, deployment: dict) -> None:
    run = create_run(api, deployment, parameters={"label": "y"}, job_variables={"env": {"A": "1"}})
    assert run["parameters"] == {"n": 1, "label": "y"}
    assert run["job_variables"] == {"env": {"A": "1"}}
    assert run["state"] == "SCHEDULED"
    assert [h["state"] for h in run["history"]] == ["SCHEDULED"]


@pytest.mark.parametrize(
    "path", ["/api/runs/not-a-uuid", "/api/runs/123/logs", "/api/deployments/not-a-uuid"]
)
def test_invalid_uuid_in_path(api: TestClient, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 422
    assert error(r)["field"] in ("run_id", "deployment_id")


def test_missing_run_is_404(api: TestClient) -> None:
    for method, path in [
        ("GET", f"/api/runs/{U}"),
        ("POST", f"/api/runs/{U}/cancel"),
        ("GET", f"/api/runs/{U}/logs"),
        ("GET", f"/api/runs/{U}/logs/follow"),
        ("GET", f"/api/runs/{U}/provider-logs"),
    ]:
        r = call(api, method, path)
        assert r.status_code == 404, (method, path)
    r = api.post(f"/api/runs/{U}/state", json={"state": "RUNNING"})
    assert r.status_code == 404


def test_state_changes_through_the_api(api: TestClient, deployment: dict) -> None:
    run = create_run(api, deployment)
    url = f"/api/runs/{run['id']}/state"
    r = api.post(url, json={"state": "COMPLETED"})
    assert r.status_code == 409
    assert error(r)["code"] == "illegal_transition"
    assert error(r)["details"]["current_state"] == "SCHEDULED"
    assert len(api.get(f"/api/runs/{run['id']}").json()["history"]) == 1

    r = api.post(url, json={"state": "PENDING", "transition_id": "t1"})
    assert r.status_code == 200 and r.json()["applied"] is True
    r = api.post(url, json={"state": "PENDING", "transition_id": "t1"})
    assert r.status_code == 200
    assert r.json()["applied"] is False and r.json()["run"]["state"] == "PENDING"
    assert len(r.json()["run"]["history"]) == 2

    r = api.post(url, json={"state": "DONE"})
    assert r.status_code == 422 and error(r)["field"] == "state"
    r = api.post(url, json={"state": "RUNNING", "when": "now"})
    assert r.status_code == 422 and error(r)["field"] == "when"
    assert api.get(f"/api/runs/{run['id']}").json()["state"] == "PENDING"

    r = api.post(f"/api/runs/{run['id']}/cancel", json={"transition_id": "c1"})
    assert r.status_code == 200 and r.json()["run"]["state"] == "CANCELLING"
    r = api.post(f"/api/runs/{run['id']}/cancel", json={"transition_id": "c1"})
    assert r.status_code == 200 and r.json()["applied"] is False


def test_list_runs_filters(api: TestClient, deployment: dict) -> None:
    create_pool(api, "other")
    other_dep = create_deployment(api, pool="other", flow="report")
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    r1 = create_run(api, deployment, scheduled_time=t0.isoformat())
    r2 = create_run(api, deployment, scheduled_time=(t0 + timedelta(hours=1)).isoformat())
    r3 = create_run(api, other_dep, scheduled_time=(t0 + timedelta(hours=2)).isoformat())
    api.post(f"/api/runs/{r2['id']}/cancel")

    def ids(**params: Any) -> list[str]:
        r = api.get("/api/runs", params=params)
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()]

    assert ids() == [r3["id"], r2["id"], r1["id"]]
    assert ids(pool="local") == [r2["id"], r1["id"]]
    assert ids(deployment=other_dep["id"]) == [r3["id"]]
    assert ids(state="CANCELLED") == [r2["id"]]
    assert ids(state=["SCHEDULED", "CANCELLED"]) == [r3["id"], r2["id"], r1["id"]]
    assert ids(pool="local", state="SCHEDULED") == [r1["id"]]
    assert ids(since=(t0 + timedelta(minutes=30)).isoformat()) == [r3["id"], r2["id"]]
    assert ids(limit=1, offset=2) == [r1["id"]]
    r = api.get("/api/runs", params={"state": "DONE"})
    assert r.status_code == 422 and error(r)["field"] == "state.0"
    assert api.get("/api/runs", params={"pool": "nope"}).status_code == 404


# --- logs -----------------------------------------------------------------------------------


@pytest.fixture
def run_with_logs(api: TestClient, store: Store, deployment: dict) -> Iterator[dict]:
    run = create_run(api, deployment)
    t0 = datetime.now(UTC)
    store.add_logs(
        uuid.UUID(run["id"]),
        [LogEntry(t0 + timedelta(milliseconds=i), "INFO", "stdout", f"line {i}") for i in range(5)],
    )
    yield run


def test_logs_paging(api: TestClient, run_with_logs: dict) -> None:
    url = f"/api/runs/{run_with_logs['id']}/logs"
    everything = api.get(url).json()
    assert [x["message"] for x in everything] == [f"line {i}" for i in range(5)]
    first = api.get(url, params={"limit": 2}).json()
    assert [x["message"] for x in first] == ["line 0", "line 1"]
    rest = api.get(url, params={"after": first[-1]["id"], "limit": 10}).json()
    assert [x["message"] for x in rest] == ["line 2", "line 3", "line 4"]
    assert api.get(url, params={"after": rest[-1]["id"]}).json() == []
    for params, field in [({"limit": 0}, "limit"), ({"after": -1}, "after")]:
        r = api.get(url, params=params)
        assert r.status_code == 422 and error(r)["field"] == field


def test_log_body_is_validated(api: TestClient, run_with_logs: dict) -> None:
    url = f"/api/runs/{run_with_logs['id']}/logs"
    now = datetime.now(UTC).isoformat()
    for body, field in [
        ({"logs": [{"timestamp": now, "message": "x", "stream": "tty"}]}, "logs.0.stream"),
        ({"logs": [{"message": "x"}]}, "logs.0.timestamp"),
        ({"lines": []}, "logs"),
    ]:
        r = api.post(url, json=body)
        assert r.status_code == 422, body
        assert error(r)["field"] == field
    assert len(api.get(url).json()) == 5


def _ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_follow_logs_of_a_finished_run(api: TestClient, run_with_logs: dict) -> None:
    run_id = run_with_logs["id"]
    api.post(f"/api/runs/{run_id}/cancel")
    r = api.get(f"/api/runs/{run_id}/logs/follow")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    events = _ndjson(r.text)
    assert [e["type"] for e in events] == ["log"] * 5 + ["end"]
    assert [e["message"] for e in events[:-1]] == [f"line {i}" for i in range(5)]
    assert events[-1] == {"type": "end", "state": "CANCELLED"}

    r = api.get(f"/api/runs/{run_id}/logs/follow", params={"after": events[2]["id"]})
    assert [e.get("message") for e in _ndjson(r.text)] == ["line 3", "line 4", None]


# --- secrets --------------------------------------------------------------------------------


def test_responses_never_carry_run_tokens_or_key_hashes(
    api: TestClient, store: Store, admin_key: str, two_claimed_runs: tuple
) -> None:
    run, other, token = two_claimed_runs
    _, token_secret = parse_run_token(token)  # type: ignore[misc]
    _, admin_secret = parse_api_key(admin_key)  # type: ignore[misc]
    created = api.post("/api/keys", json={"name": "k", "scopes": ["read"]}).json()
    _, key_secret = parse_api_key(created["api_key"])  # type: ignore[misc]
    forbidden = [
        token_secret,
        hash_secret(token_secret),
        admin_secret,
        hash_secret(admin_secret),
        key_secret,
        hash_secret(key_secret),
        "run_token",
        "secret_hash",
    ]
    client = client_for(api, token)
    responses = [
        api.get("/api/runs"),
        api.get(f"/api/runs/{run['id']}"),
        api.get(f"/api/runs/{other['id']}"),
        api.get(f"/api/runs/{run['id']}/execution"),
        api.get("/api/keys"),
        api.get("/api/pools"),
        api.get("/api/deployments"),
        client.get(f"/api/runs/{run['id']}/execution"),
        client.post(f"/api/runs/{run['id']}/state", json={"state": "RUNNING"}),
        client.post(f"/api/runs/{run['id']}/heartbeat"),
        api.post(f"/api/runs/{run['id']}/cancel"),
    ]
    for r in responses:
        assert r.status_code == 200, r.text
        for value in forbidden:
            assert value not in r.text, (r.url, value[:10])


def test_validation_errors_do_not_echo_values(api: TestClient) -> None:
    before = snapshot(api)
    for path, body, field in [
        (
            "/api/pools",
            {"name": "p", "type": "process:push", "concurrency_limit": "sekrit-value-123"},
            "concurrency_limit",
        ),
        (
            "/api/pools",
            {"name": "p", "type": "process:push", "settings": "sekrit-value-123"},
            "settings",
        ),
        ("/api/pools", {"name": "sekrit-value-123 !", "type": "process:push"}, "name"),
        ("/api/keys", {"name": "k", "scopes": ["sekrit-value-123"]}, "scopes.0"),
        (
            "/api/keys",
            {"name": "k", "scopes": ["read"], "expires_at": "sekrit-value-123"},
            "expires_at",
        ),
        (
            "/api/deployments",
            {
                "flow_name": "f",
                "name": "n",
                "pool": "p",
                "entrypoint": "a:b",
                "tags": "sekrit-value-123",
            },
            "tags",
        ),
    ]:
        r = api.post(path, json=body)
        assert r.status_code == 422, (path, body)
        assert error(r)["field"] == field
        assert "sekrit-value-123" not in r.text, (path, field)
    assert snapshot(api) == before


def test_secret_named_parameter_value_is_not_echoed(api: TestClient) -> None:
    create_pool(api)
    schema = {"type": "object", "properties": {"api_key": {"type": "integer"}}}
    dep = create_deployment(api, parameter_schema=schema)
    r = api.post(
        f"/api/deployments/{dep['id']}/runs", json={"parameters": {"api_key": "sekrit-value-123"}}
    )
    assert r.status_code == 422
    assert error(r)["field"] == "parameters.api_key"
    assert "sekrit-value-123" not in r.text


# --- known bugs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["run-scheduled_time", "runs-since", "key-expires_at", "log-timestamp"]
)
@SQLITE_ONLY
def test_naive_datetimes_are_not_a_server_error(
    lenient: TestClient, deployment: dict, case: str
) -> None:
    naive = "2030-01-01T00:00:00"
    if case == "run-scheduled_time":
        r = lenient.post(
            f"/api/deployments/{deployment['id']}/runs", json={"scheduled_time": naive}
        )
    elif case == "runs-since":
        r = lenient.get("/api/runs", params={"since": naive})
    elif case == "key-expires_at":
        r = lenient.post("/api/keys", json={"name": "k", "scopes": ["read"], "expires_at": naive})
    else:
        run = create_run(lenient, deployment)
        r = lenient.post(
            f"/api/runs/{run['id']}/logs", json={"logs": [{"timestamp": naive, "message": "x"}]}
        )
    # Either taken as UTC or refused naming the field; never an internal error.
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert error(r)["field"]


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        ("pool", "paused"),
        ("pool", "settings"),
        ("deployment", "paused"),
        ("deployment", "parameter_schema"),
        ("deployment", "job_variables"),
        ("deployment", "tags"),
        ("deployment", "pool"),
    ],
)
@SQLITE_ONLY
def test_patch_with_null_is_not_a_server_error(
    lenient: TestClient, deployment: dict, resource: str, field: str
) -> None:
    url = "/api/pools/local" if resource == "pool" else f"/api/deployments/{deployment['id']}"
    before = lenient.get(url).json()
    r = lenient.patch(url, json={field: None})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert error(r)["field"] == field
        assert lenient.get(url).json() == before


def test_delete_pool_that_still_has_runs(lenient: TestClient, deployment: dict) -> None:
    run = create_run(lenient, deployment)
    lenient.post(f"/api/runs/{run['id']}/cancel")
    create_pool(lenient, "other")
    assert (
        lenient.patch(f"/api/deployments/{deployment['id']}", json={"pool": "other"}).status_code
        == 200
    )
    r = lenient.delete("/api/pools/local")
    assert r.status_code in (204, 409), r.text
    assert lenient.get(f"/api/runs/{run['id']}").status_code == 200


def test_a_run_token_stops_working_when_the_run_is_over(
    api: TestClient, store: Store, deployment: dict
) -> None:
    run = create_run(api, deployment)
    (claim,) = store.claim_due_runs(claimed_by="test", lease_seconds=60)
    token = {"Authorization": f"Bearer {claim.run_token}"}
    base = f"/api/runs/{run['id']}"
    assert api.post(f"{base}/state", json={"state": "RUNNING"}, headers=token).status_code == 200
    assert api.post(f"{base}/state", json={"state": "COMPLETED"}, headers=token).status_code == 200

    late = api.post(
        f"{base}/logs",
        json={"logs": [{"timestamp": "2026-01-01T00:00:00Z", "message": "late"}]},
        headers=token,
    )

    assert late.status_code == 401
    assert api.get(f"{base}/logs").json() == []


@pytest.mark.parametrize(
    "credentials, field",
    [
        ({"aws_secret_access_key": "sekrit-value-123"}, "credentials.aws_secret_access_key"),
        (
            {"role_arn": "arn:aws:iam::1:role/x", "session_token": "sekrit-value-123"},
            "credentials.session_token",
        ),
        ({"source": {"client_secret": "sekrit-value-123"}}, "credentials.source.client_secret"),
    ],
)
def test_pool_credentials_refuse_secrets_and_never_echo_them(
    api: TestClient, credentials: dict, field: str
) -> None:
    created = api.post(
        "/api/pools", json={"name": "aws", "type": "process:push", "credentials": credentials}
    )
    assert created.status_code == 422
    assert created.json()["error"]["field"] == field
    assert "sekrit-value-123" not in created.text
    assert api.get("/api/pools").json() == []

    api.post("/api/pools", json={"name": "aws", "type": "process:push"})
    updated = api.patch("/api/pools/aws", json={"credentials": credentials})
    assert updated.status_code == 422 and "sekrit-value-123" not in updated.text
    assert api.get("/api/pools/aws").json()["credentials"] is None


def test_pool_credentials_references_are_kept(api: TestClient) -> None:
    reference = {"role_arn": "arn:aws:iam::123456789012:role/skylane", "external_id": "ext-1"}

    response = api.post(
        "/api/pools", json={"name": "aws", "type": "process:push", "credentials": reference}
    )

    assert response.status_code == 201
    assert api.get("/api/pools/aws").json()["credentials"] == reference


def test_a_job_variable_the_adapter_refuses_is_a_422_naming_it(api: TestClient) -> None:
    api.post("/api/pools", json={"name": "local", "type": "process:push"})
    body = {
        "flow_name": "etl",
        "name": "nightly",
        "pool": "local",
        "entrypoint": "flows/etl.py:etl",
        "job_variables": {"command": "python -c 'unbalanced"},
    }

    response = api.post("/api/deployments", json=body)

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "job_variables.command"
    assert api.get("/api/deployments").json() == []


def test_a_template_change_whose_requests_the_adapter_refuses_keeps_the_old_template(
    api: TestClient, deployment: dict
) -> None:
    before = api.get("/api/pools/local").json()["base_job_template"]
    broken = {
        "job_configuration": {"command": "{{ command }}"},
        "variables": {
            "type": "object",
            "properties": {"command": {"type": "string", "default": "python -c 'unbalanced"}},
        },
    }

    response = api.patch("/api/pools/local", json={"base_job_template": broken})

    assert response.status_code == 422
    error = response.json()["error"]
    assert "job_variables.command" in error["field"] and "etl/nightly" in error["field"]
    assert api.get("/api/pools/local").json()["base_job_template"] == before

"""The command line, driven through typer's CliRunner.

Most tests need no server. The ones marked "in-process API" route the CLI's HTTP client into the
FastAPI app of the `api` fixture (no network, no uvicorn); end-to-end runs live in tests/e2e.
"""

from __future__ import annotations

import json
import re
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from skylane.cli import common
from skylane.cli.common import parse_assignments
from skylane.cli.main import app
from skylane.client import SkylaneClient
from skylane.errors import InvalidInput
from skylane.models import RunState
from skylane.settings import config_file
from skylane.store.repository import LogEntry, Store

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Nothing listens on the discard port: the client fails fast with "cannot reach".
UNREACHABLE = "http://127.0.0.1:9"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str, **kwargs: Any):
    return runner.invoke(app, list(args), **kwargs)


# --- no server --------------------------------------------------------------------------------


def test_help_lists_the_command_groups(runner: CliRunner) -> None:
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for group in ("server", "config", "pool", "deployment", "run"):
        assert group in result.stdout


def test_default_template_is_json_and_needs_no_server(runner: CliRunner) -> None:
    result = invoke(runner, "pool", "default-template", "--type", "process:push")
    assert result.exit_code == 0, result.output
    template = json.loads(result.stdout)
    assert "job_configuration" in template
    assert template["variables"]["type"] == "object"


def test_default_template_unknown_type_names_the_field(runner: CliRunner) -> None:
    result = invoke(runner, "pool", "default-template", "--type", "nope:push")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error: --type: unknown pool type 'nope:push'" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["pool", "ls", "--output", "xml"],
        ["run", "ls", "--state", "NOPE"],
        ["run", "inspect", "not-a-uuid"],
    ],
)
def test_invalid_choices_are_usage_errors(runner: CliRunner, args: list[str]) -> None:
    result = invoke(runner, *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_output_choice_error_lists_the_choices(runner: CliRunner) -> None:
    result = invoke(runner, "pool", "ls", "--output", "xml")
    assert "json" in result.stderr and "table" in result.stderr


def test_assignments_parse_json_values_and_nest_dotted_keys() -> None:
    values = parse_assignments(
        [
            "n=3",
            "x=[1,2]",
            "flag=true",
            "name=world",
            "empty=",
            "eq=a=b",
            "nan=NaN",
            "env.FOO=bar",
            "env.BAZ=1",
        ],
        "--param",
    )
    assert values == {
        "n": 3,
        "x": [1, 2],
        "flag": True,
        "name": "world",
        "empty": "",
        "eq": "a=b",
        "nan": "NaN",
        "env": {"FOO": "bar", "BAZ": 1},
    }


@pytest.mark.parametrize(
    "items", [["foo"], ["=3"], ["a..b=1"], ["env=x", "env.FOO=y"], ["env.FOO=y", "env=x"]]
)
def test_malformed_assignments_name_the_option(items: list[str]) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_assignments(items, "--job-variable")
    assert info.value.field == "--job-variable"


def test_bad_param_fails_before_contacting_the_server(runner: CliRunner) -> None:
    result = invoke(runner, "deployment", "run", "etl/nightly", "--param", "foo")
    assert result.exit_code == 1
    assert "error: --param: expected KEY=VALUE, got 'foo'" in result.stderr


def test_config_set_writes_a_private_file_and_show_masks_the_key(runner: CliRunner) -> None:
    secret = "skl_0123456789ab_" + "f" * 64
    result = invoke(runner, "config", "set", "api-key", secret)
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    assert str(config_file()) in result.stdout
    assert stat.S_IMODE(config_file().stat().st_mode) == 0o600
    assert secret in config_file().read_text()

    assert invoke(runner, "config", "set", "api-url", "http://cp.example:4200").exit_code == 0
    shown = invoke(runner, "config", "show")
    assert shown.exit_code == 0
    assert secret not in shown.output
    assert "skl_****" in shown.stdout
    assert "http://cp.example:4200" in shown.stdout

    data = json.loads(invoke(runner, "config", "show", "--output", "json").stdout)
    assert data["api_key"] == "skl_****"
    assert data["api_key_set"] is True
    assert data["api_url"] == "http://cp.example:4200"
    assert data["config_file"] == str(config_file())


def test_config_set_reads_the_key_from_stdin(runner: CliRunner) -> None:
    secret = "skl_0123456789ab_" + "e" * 64
    result = invoke(runner, "config", "set", "api-key", input=secret + "\n")
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    assert f'api_key = "{secret}"' in config_file().read_text()


def test_config_set_rejects_unknown_keys_and_bad_urls(runner: CliRunner) -> None:
    assert invoke(runner, "config", "set", "colour", "red").exit_code == 2
    result = invoke(runner, "config", "set", "api-url", "cp.example:4200")
    assert result.exit_code == 1
    assert "error: api-url:" in result.stderr


def test_delete_without_yes_and_without_a_terminal_fails(runner: CliRunner) -> None:
    result = invoke(runner, "pool", "delete", "local")
    assert result.exit_code == 1
    assert "--yes" in result.stderr
    assert "cannot reach" not in result.stderr  # refused before any request


def test_deployment_create_with_a_missing_entrypoint_file(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = invoke(
        runner,
        "deployment",
        "create",
        "nightly",
        "--entrypoint",
        "flows/missing.py:etl",
        "--pool",
        "local",
        "--base-dir",
        str(tmp_path),
    )
    assert result.exit_code == 1
    assert "error: entrypoint:" in result.stderr
    assert "flows/missing.py" in result.stderr
    assert "Traceback" not in result.output


def test_deployment_create_keeps_stdout_for_json(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "chatty.py").write_text("print('loading')\ndef etl():\n    pass\n")
    monkeypatch.setenv("SKYLANE_API_URL", UNREACHABLE)
    result = invoke(
        runner,
        "deployment",
        "create",
        "nightly",
        "--entrypoint",
        "chatty.py:etl",
        "--pool",
        "local",
        "--base-dir",
        str(tmp_path),
        "--output",
        "json",
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "loading" in result.stderr
    assert "cannot reach the skylane API" in result.stderr


def test_server_init_prints_the_key_once(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    first = invoke(runner, "server", "init", "--output", "json", "--db", url)
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert set(data) == {"api_key", "database"}
    assert data["api_key"].startswith("skl_")
    assert data["database"] == url

    second = invoke(runner, "server", "init", "--output", "json", "--db", url)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout) == {"api_key": None, "database": url}

    text = invoke(runner, "server", "init", "--db", url)
    assert "no new key" in text.stdout

    forced = invoke(runner, "server", "init", "--db", url, "--new-admin-key")
    assert forced.exit_code == 0
    keys = re.findall(r"skl_\w+", forced.stdout)
    assert len(keys) == 1 and keys[0] != data["api_key"]
    assert "only" in forced.stdout and "SKYLANE_API_KEY" in forced.stdout


def test_server_init_hides_the_database_password(runner: CliRunner) -> None:
    result = invoke(runner, "server", "init", "--db", "mysql://user:hunter2@db/x")
    assert result.exit_code == 1
    assert "hunter2" not in result.output
    assert "unsupported database backend" in result.stderr


def test_server_start_rejects_unknown_services(runner: CliRunner) -> None:
    result = invoke(runner, "server", "start", "--services", "api,webhooks")
    assert result.exit_code == 1
    assert "error: --services: unknown service webhooks" in result.stderr


def test_unexpected_errors_are_short_unless_debugging(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(_: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("skylane.adapters.adapter_class", boom)
    result = invoke(runner, "pool", "default-template", "--type", "process")
    assert result.exit_code == 1
    assert "error: unexpected RuntimeError: boom" in result.stderr
    assert "Traceback" not in result.stderr

    monkeypatch.setenv("SKYLANE_DEBUG", "1")
    result = invoke(runner, "pool", "default-template", "--type", "process")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr


def test_every_problem_of_an_error_is_listed(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems = [
        {"field": "variables.cpu", "message": "must be an integer"},
        {"field": "variables.memory", "message": "must be an integer"},
    ]

    def invalid(_: str) -> None:
        raise InvalidInput(
            "cpu must be an integer (and 1 more problem)",
            field="variables.cpu",
            details={"errors": problems},
        )

    monkeypatch.setattr("skylane.adapters.adapter_class", invalid)
    result = invoke(runner, "pool", "default-template", "--type", "process")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: variables.cpu: cpu must be an integer (and 1 more problem)"
    assert lines[1:] == [
        "  - variables.cpu: must be an integer",
        "  - variables.memory: must be an integer",
    ]


def test_bad_settings_become_a_configuration_error(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYLANE_PORT", "not-a-port")
    result = invoke(runner, "server", "start")
    assert result.exit_code == 1
    assert "error: port:" in result.stderr
    assert "not-a-port" not in result.stderr


# --- in-process API ---------------------------------------------------------------------------


@pytest.fixture
def cli_api(api: TestClient, admin_key: str, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """The CLI's client talks to the `api` fixture's app in-process."""
    transport = api._transport

    def client(url: str, key: str | None = None) -> SkylaneClient:
        return SkylaneClient(url, key, transport=transport)

    monkeypatch.setattr(common, "SkylaneClient", client)
    monkeypatch.setenv("SKYLANE_API_URL", "http://testserver")
    monkeypatch.setenv("SKYLANE_API_KEY", admin_key)
    return api


FLOW = """
def etl(n: int = 2, name: str = "world"):
    \"\"\"Say hello.\"\"\"
    return n
"""


@pytest.fixture
def deployed(cli_api: TestClient, runner: CliRunner, tmp_path: Path) -> str:
    (tmp_path / "etl.py").write_text(FLOW)
    assert (
        invoke(runner, "pool", "create", "local", "--type", "process:push", "--paused").exit_code
        == 0
    )
    result = invoke(
        runner,
        "deployment",
        "create",
        "nightly",
        "--entrypoint",
        "etl.py:etl",
        "--pool",
        "local",
        "--base-dir",
        str(tmp_path),
        "--param",
        "n=3",
        "--job-variable",
        "env.FOO=bar",
        "--tag",
        "a",
        "--output",
        "json",
    )
    assert result.exit_code == 0, result.output
    return "etl/nightly"


def test_pool_commands(cli_api: TestClient, runner: CliRunner, tmp_path: Path) -> None:
    created = invoke(
        runner,
        "pool",
        "create",
        "local",
        "--type",
        "process:push",
        "--concurrency-limit",
        "2",
        "--description",
        "laptop",
    )
    assert created.exit_code == 0, created.output
    pools = json.loads(invoke(runner, "pool", "ls", "-o", "json").stdout)
    assert [p["name"] for p in pools] == ["local"]

    inspected = invoke(runner, "pool", "inspect", "local")
    assert "working_dir" in inspected.stdout and "laptop" in inspected.stdout

    bad = tmp_path / "bad.json"
    bad.write_text('{"job_configuration": {},\n  "variables": }')
    result = invoke(runner, "pool", "update", "local", "--base-job-template", str(bad))
    assert result.exit_code == 1
    assert "error: --base-job-template:" in result.stderr
    assert "line 2 column" in result.stderr
    missing = invoke(
        runner, "pool", "update", "local", "--base-job-template", str(tmp_path / "nope.json")
    )
    assert "does not exist" in missing.stderr and missing.exit_code == 1

    assert invoke(runner, "pool", "pause", "local").exit_code == 0
    pool = json.loads(invoke(runner, "pool", "inspect", "local", "-o", "json").stdout)
    assert pool["paused"] is True and pool["concurrency_limit"] == 2
    assert invoke(runner, "pool", "resume", "local").exit_code == 0
    updated = invoke(runner, "pool", "update", "local", "--concurrency-limit", "5", "-o", "json")
    assert json.loads(updated.stdout)["concurrency_limit"] == 5

    assert invoke(runner, "pool", "delete", "local", "--yes").exit_code == 0
    gone = invoke(runner, "pool", "inspect", "local")
    assert gone.exit_code == 1 and "error:" in gone.stderr


def terraform_output(**outputs: Any) -> str:
    """The JSON `terraform output -json` prints for these outputs."""
    return json.dumps(
        {
            name: {"sensitive": False, "type": "dynamic", "value": value}
            for name, value in outputs.items()
        }
    )


ECS_POOL_OUTPUTS = {
    "pool_template_defaults": {
        "region": "eu-west-1",
        "cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/skylane-tf",
        "execution_role_arn": "arn:aws:iam::123456789012:role/skylane-tf-execution",
        "task_role_arn": "arn:aws:iam::123456789012:role/skylane-tf-task",
        "vpc_id": "vpc-0abc",
        "network_configuration": {
            "subnets": ["subnet-1", "subnet-2"],
            "securityGroups": ["sg-1"],
            "assignPublicIp": "ENABLED",
        },
        "configure_cloudwatch_logs": True,
        "cloudwatch_logs_options": {
            "awslogs-group": "/skylane/tf",
            "awslogs-region": "eu-west-1",
            "awslogs-create-group": "false",
        },
    },
    "pool_settings": {"region": "eu-west-1"},
    "pool_credentials": {"role_arn": "arn:aws:iam::123456789012:role/skylane-tf-dispatcher"},
    "image_repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/skylane-tf",
}


def test_pool_create_from_terraform_output_sets_defaults_and_settings(
    cli_api: TestClient, runner: CliRunner, tmp_path: Path
) -> None:
    outputs = tmp_path / "pool.json"
    outputs.write_text(terraform_output(**ECS_POOL_OUTPUTS))
    created = invoke(
        runner,
        "pool",
        "create",
        "tf",
        "--type",
        "ecs:push",
        "--from-terraform-output",
        str(outputs),
    )
    assert created.exit_code == 0, created.output
    # The dispatcher identity is offered, as `pool provision` offers it, not imposed.
    assert "--credential role_arn=arn:aws:iam::123456789012:role/skylane-tf-dispatcher" in (
        created.stdout
    )
    pool = json.loads(invoke(runner, "pool", "inspect", "tf", "-o", "json").stdout)
    properties = pool["base_job_template"]["variables"]["properties"]
    for name, value in ECS_POOL_OUTPUTS["pool_template_defaults"].items():
        assert properties[name]["default"] == value, name
    assert pool["settings"] == {
        "region": "eu-west-1",
        "image_repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/skylane-tf",
    }
    assert pool["credentials"] is None
    # A root that outputs the whole module as one object works too; --setting wins.
    nested = tmp_path / "nested.json"
    nested.write_text(terraform_output(pool=ECS_POOL_OUTPUTS, other="x"))
    again = invoke(
        runner, "pool", "create", "tf2", "--type", "ecs:push",
        "--from-terraform-output", str(nested), "--setting", "region=eu-west-3", "-o", "json",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["settings"]["region"] == "eu-west-3"


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("{not json", "is not JSON (line 1"),
        (terraform_output(cluster="x"), "has no output pool_template_defaults (outputs: cluster)"),
        (
            terraform_output(pool_template_defaults=["x"]),
            "output pool_template_defaults must be an object",
        ),
        (
            '{"pool_template_defaults": {"region": "x"}}',
            "has no value; is this `terraform output -json`?",
        ),
        (
            terraform_output(pool_template_defaults={"project": "p", "service_account_name": "s"}),
            "has project, service_account_name, which the ecs:push template has no variable for",
        ),
    ],
)
def test_pool_create_from_bad_terraform_output_names_the_option_and_creates_nothing(
    cli_api: TestClient, runner: CliRunner, tmp_path: Path, content: str, said: str
) -> None:
    outputs = tmp_path / "pool.json"
    outputs.write_text(content)
    result = invoke(
        runner,
        "pool",
        "create",
        "tf",
        "--type",
        "ecs:push",
        "--from-terraform-output",
        str(outputs),
    )
    assert result.exit_code == 1
    assert "error: --from-terraform-output:" in result.stderr
    assert said in result.stderr
    assert json.loads(invoke(runner, "pool", "ls", "-o", "json").stdout) == []


def test_from_terraform_output_and_provision_infra_are_one_or_the_other(
    runner: CliRunner, tmp_path: Path
) -> None:
    outputs = tmp_path / "pool.json"
    outputs.write_text(terraform_output(**ECS_POOL_OUTPUTS))
    result = invoke(
        runner, "pool", "create", "tf", "--type", "ecs:push",
        "--from-terraform-output", str(outputs), "--provision-infra",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "error: --from-terraform-output: " in result.stderr and "give one" in result.stderr


def test_deployment_and_run_commands(
    deployed: str, runner: CliRunner, store: Store, tmp_path: Path
) -> None:
    deployment = json.loads(invoke(runner, "deployment", "inspect", deployed, "-o", "json").stdout)
    assert deployment["flow_name"] == "etl"
    assert deployment["parameters"] == {"n": 3}
    # A process pool's deployment runs in the directory its entrypoint was loaded from.
    assert deployment["job_variables"] == {"env": {"FOO": "bar"}, "working_dir": str(tmp_path)}
    assert deployment["parameter_schema"]["properties"]["name"]["default"] == "world"
    assert "etl/nightly" in invoke(runner, "deployment", "ls").stdout

    started = invoke(runner, "deployment", "run", deployed, "--param", "name=x")
    assert started.exit_code == 0, started.output
    run_id = UUID_RE.search(started.stdout).group(0)
    assert f"run {run_id} created (SCHEDULED)" in started.stdout

    rejected = invoke(runner, "deployment", "run", deployed, "--param", "n=three")
    assert rejected.exit_code == 1 and "error: parameters.n" in rejected.stderr

    runs = json.loads(
        invoke(
            runner, "run", "ls", "--deployment", deployed, "--state", "scheduled", "-o", "json"
        ).stdout
    )
    assert [r["id"] for r in runs] == [run_id]
    assert run_id in invoke(runner, "run", "ls").stdout

    rid = uuid.UUID(run_id)
    for state in (RunState.PENDING, RunState.RUNNING):
        store.set_run_state(rid, state)
    now = datetime.now(UTC)
    store.add_logs(
        rid, [LogEntry(now, "INFO", "stdout", f"line [bold]{i}[/bold]") for i in range(3)]
    )
    store.set_run_state(rid, RunState.FAILED, message="Traceback: RuntimeError: boom")

    logs = invoke(runner, "run", "logs", run_id)
    assert logs.exit_code == 0
    assert logs.stdout.splitlines() == [f"line [bold]{i}[/bold]" for i in range(3)]
    followed = invoke(runner, "run", "logs", run_id, "--follow")
    assert followed.exit_code == 1
    assert followed.stdout.splitlines() == [f"line [bold]{i}[/bold]" for i in range(3)]
    assert "FAILED" in followed.stderr

    inspected = invoke(runner, "run", "inspect", run_id)
    assert "state history" in inspected.stdout and "RUNNING" in inspected.stdout
    assert (
        json.loads(invoke(runner, "run", "inspect", run_id, "-o", "json").stdout)["state"]
        == "FAILED"
    )

    cancelled = invoke(runner, "run", "cancel", run_id)
    assert cancelled.exit_code == 1 and "already FAILED" in cancelled.stderr

    assert invoke(runner, "deployment", "delete", deployed, "--yes").exit_code == 0


def test_deployment_create_names_the_flow_as_flow_does(
    cli_api: TestClient, runner: CliRunner, tmp_path: Path
) -> None:
    # The same flow name as `skylane deploy` gives it: @flow(name=...) over the function's.
    (tmp_path / "named.py").write_text(
        "from skylane import flow\n\n@flow(name='etl')\ndef run_etl(n: int = 1):\n    return n\n"
    )
    assert invoke(runner, "pool", "create", "local", "--type", "process:push").exit_code == 0
    result = invoke(
        runner, "deployment", "create", "nightly", "--entrypoint", "named.py:run_etl",
        "--pool", "local", "--base-dir", str(tmp_path), "--output", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert (created["flow_name"], created["name"]) == ("etl", "nightly")
    assert created["job_variables"] == {"working_dir": str(tmp_path.resolve())}


def test_key_create_ls_and_revoke(cli_api: TestClient, runner: CliRunner) -> None:
    created = invoke(runner, "key", "create", "worker-prod", "--scope", "worker")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("skl_")
    assert "shown once" in created.stderr
    # The key works, for what its scope allows: a worker key may read its pool, not list keys.
    as_worker = {"Authorization": f"Bearer {key}"}
    assert cli_api.get("/api/pools", headers=as_worker).status_code == 200
    assert cli_api.get("/api/keys", headers=as_worker).status_code == 403
    listed = json.loads(invoke(runner, "key", "ls", "-o", "json").stdout)
    mine = next(k for k in listed if k["name"] == "worker-prod")
    assert mine["scopes"] == ["worker"] and mine["revoked"] is False
    assert key not in invoke(runner, "key", "ls").stdout
    assert key not in json.dumps(listed)

    expiring = json.loads(
        invoke(
            runner, "key", "create", "ci", "--scope", "deploy", "--scope", "read",
            "--expires-in-days", "7", "-o", "json",
        ).stdout
    )  # fmt: skip
    assert expiring["scopes"] == ["deploy", "read"] and expiring["expires_at"]

    revoked = invoke(runner, "key", "revoke", mine["id"], "--yes")
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in revoked.stdout
    refused = cli_api.get("/api/pools", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401


def test_key_create_needs_a_known_scope(cli_api: TestClient, runner: CliRunner) -> None:
    assert invoke(runner, "key", "create", "x").exit_code == 2
    wrong = invoke(runner, "key", "create", "x", "--scope", "root")
    assert wrong.exit_code == 2 and "root" in wrong.output

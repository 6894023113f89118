"""Static checks of terraform/: every file parses, every reference resolves, every variable is
typed and described, the READMEs' tables say what the modules declare, and each push-pool
module creates what the provisioner creates, with the same names, tags and permissions (the
table in skylane.provisioning.terraform ties the two together)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from skylane.pool_types import parse_pool_type
from skylane.provisioning import aws, azure, base, gcp, terraform
from skylane.provisioning.registry import ProvisionOptions, provisioner_for
from tests.unit.terraform_static import (
    TERRAFORM,
    Directory,
    example_dirs,
    literal,
    load,
    module_dirs,
    planned_addresses,
    references,
    render_name,
)

SUBSCRIPTION = "00000000-0000-4000-8000-000000000001"
CONTROL_PLANE = {
    "ecs": "arn:aws:iam::123456789012:role/skylane-control-plane",
    "cloud-run": "serviceAccount:control@ops-project.iam.gserviceaccount.com",
    "aci": "3f2b1c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
}
POOL_TYPES = {"ecs": "ecs:push", "cloud-run": "cloud-run:push", "aci": "aci:push"}
REQUIRED_OUTPUTS = {
    terraform.DEFAULTS_OUTPUT,
    terraform.SETTINGS_OUTPUT,
    terraform.CREDENTIALS_OUTPUT,
    "image_registry",
    "image_repository",
}

ALL_DIRS = module_dirs() + example_dirs()
TF_FILES = sorted(TERRAFORM.rglob("*.tf"))


def test_there_is_a_module_for_each_push_pool_and_worker_and_an_example_of_each() -> None:
    names = {p.name for p in module_dirs()}
    assert names >= set(terraform.MODULES.values()) | set(terraform.WORKER_MODULES.values())
    assert {p.name for p in example_dirs()} >= set(terraform.MODULES.values())


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_tf_file_parses(path: Path) -> None:
    assert load(path.parent).files[path.name] is not None


@pytest.fixture(scope="module")
def directories() -> dict[Path, Directory]:
    return {path: load(path) for path in ALL_DIRS}


def _id(path: Path) -> str:
    return str(path.relative_to(TERRAFORM))


@pytest.mark.parametrize("path", ALL_DIRS, ids=_id)
def test_every_reference_resolves(path: Path, directories: dict[Path, Directory]) -> None:
    directory = directories[path]
    used = references(directory.files)
    assert used.variables <= set(directory.variables), "undeclared var.*"
    assert used.locals <= set(directory.locals), "undeclared local.*"
    assert used.resources <= set(directory.resources), "reference to a resource not declared"
    assert used.data <= set(directory.data), "reference to a data source not declared"
    assert used.modules <= set(directory.modules), "reference to a module not called"
    for module_name, output_name in used.module_outputs:
        source = literal(directory.modules[module_name]["source"])
        called = load((path / source).resolve())
        assert output_name in called.outputs, f"module.{module_name} has no output {output_name}"


@pytest.mark.parametrize("path", ALL_DIRS, ids=_id)
def test_module_calls_pass_only_declared_variables_and_all_required_ones(
    path: Path, directories: dict[Path, Directory]
) -> None:
    for name, call in directories[path].modules.items():
        source = (path / literal(call["source"])).resolve()
        assert source.is_dir(), f"module {name}: {source} does not exist"
        called = load(source)
        arguments = {k for k in call if k not in ("source", "count", "for_each", "__is_block__")}
        arguments -= {"providers", "depends_on", "version"}
        assert arguments <= set(called.variables), f"module {name}: unknown inputs"
        required = {v for v, body in called.variables.items() if "default" not in body}
        assert required <= arguments, f"module {name}: required inputs missing"


@pytest.mark.parametrize("path", ALL_DIRS, ids=_id)
def test_every_variable_is_typed_and_described_and_every_output_described(
    path: Path, directories: dict[Path, Directory]
) -> None:
    directory = directories[path]
    for name, body in directory.variables.items():
        assert body.get("type"), f"variable {name} has no type"
        assert literal(body.get("description", "")).strip(), f"variable {name}: no description"
        for check in body.get("validation", []):
            assert literal(check.get("error_message", "")).strip(), f"variable {name}"
    for name, body in directory.outputs.items():
        assert literal(body.get("description", "")).strip(), f"output {name}: no description"


@pytest.mark.parametrize("path", ALL_DIRS, ids=_id)
def test_versions_pin_terraform_1_5_and_a_floor_for_each_provider(
    path: Path, directories: dict[Path, Directory]
) -> None:
    directory = directories[path]
    blocks = directory.terraform
    assert blocks, "no terraform block"
    required = [literal(b["required_version"]) for b in blocks if "required_version" in b]
    assert required and re.fullmatch(r">= ?1\.(5|[6-9]|\d\d)(\.\d+)?", required[0])
    providers = {}
    for block in blocks:
        for entry in block.get("required_providers", []):
            providers.update({k: literal(v) for k, v in entry.items() if k != "__is_block__"})
    used = {address.split("_")[0] for address in directory.resources}
    used |= {address.split(".")[1].split("_")[0] for address in directory.data}
    used.discard("terraform")
    for provider in used:
        local = "google" if provider == "google" else provider
        assert local in providers, f"provider {local} used, not in required_providers"
        assert re.match(r"^>= ?\d", providers[local]["version"]), f"{local}: no version floor"


def _table(text: str, heading: str) -> set[str]:
    section = re.split(rf"^##+ {heading}\s*$", text, flags=re.M)
    assert len(section) == 2, f"no '## {heading}' section"
    body = re.split(r"^##", section[1], flags=re.M)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")][2:]
    return {row.split("|")[1].strip().strip("`") for row in rows}


@pytest.mark.parametrize("path", module_dirs(), ids=_id)
def test_readme_tables_list_exactly_the_inputs_and_outputs(
    path: Path, directories: dict[Path, Directory]
) -> None:
    text = (path / "README.md").read_text()
    directory = directories[path]
    assert _table(text, "Inputs") == set(directory.variables)
    assert _table(text, "Outputs") == set(directory.outputs)


# --- push-pool modules against the provisioner -----------------------------------------------


def provisioner(provider: str, pool: str, *, control_plane: bool, **more: Any) -> Any:
    options: dict[str, Any] = {"control_plane": CONTROL_PLANE[provider] if control_plane else None}
    if provider == "ecs":
        options.update(region="eu-west-1", create_vpc=more.get("create_vpc", False))
    elif provider == "cloud-run":
        options.update(
            region="europe-west1",
            project="acme-data",
            settings={"endpoint_url": "http://127.0.0.1:9", "iam_endpoint": "127.0.0.1:9"},
        )
    else:
        options.update(
            region="westeurope",
            subscription=SUBSCRIPTION,
            resource_group=more.get("resource_group"),
            settings={"endpoint_url": "http://127.0.0.1:9"},
        )
    return provisioner_for(parse_pool_type(POOL_TYPES[provider]), pool, ProvisionOptions(**options))


CASES = [
    ("ecs", "prod", {}, False),
    ("ecs", "prod", {"create_vpc": True}, True),
    ("ecs", "Data Team/Nightly", {"create_vpc": True}, False),
    ("cloud-run", "prod", {}, False),
    ("cloud-run", "nightly-etl", {}, True),
    ("cloud-run", "A very long pool name for the data team", {}, True),
    ("aci", "prod", {}, False),
    ("aci", "prod", {}, True),
    ("aci", "Data_Team", {"resource_group": "platform-shared"}, True),
]


def _case_id(case: tuple) -> str:
    provider, pool, more, control = case
    return f"{provider}-{pool}-{'-'.join(more) or 'default'}-{'cp' if control else 'nocp'}"


def _records(steps: list[Any], adopted_group: bool) -> list[base.Provisioned]:
    return [
        base.Provisioned(
            s.kind,
            s.name,
            f"id-of-{s.name}",
            created=not (adopted_group and s.kind == "resource-group"),
        )
        for s in steps
    ]


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_push_pool_module_plans_exactly_the_provisioners_resources(case: tuple) -> None:
    provider, pool, more, control = case
    made = provisioner(provider, pool, control_plane=control, **more)
    module = load(TERRAFORM / "modules" / terraform.MODULES[provider])
    adopted_group = "resource_group" in more
    inputs = terraform.module_inputs(
        parse_pool_type(POOL_TYPES[provider]),
        pool,
        made.pool_settings,
        _records(made.steps, adopted_group),
        control_plane=CONTROL_PLANE[provider] if control else None,
    )
    expected = terraform.module_addresses(provider, made.steps)
    assert len(expected) == len(set(expected)), "two steps map to one resource"
    if adopted_group:
        # The module reads a group skylane adopted instead of managing it.
        expected.remove("azurerm_resource_group.this[0]")
    assert planned_addresses(module, inputs) == set(expected)


NAME_ATTRIBUTES = {
    "aws_ecr_repository": "name",
    "aws_iam_role": "name",
    "aws_ecs_cluster": "name",
    "aws_cloudwatch_log_group": "name",
    "aws_security_group": "name",
    "aws_vpc": "tags.Name",
    "aws_subnet": "tags.Name",
    "aws_internet_gateway": "tags.Name",
    "aws_route_table": "tags.Name",
    "google_artifact_registry_repository": "repository_id",
    "google_service_account": "account_id",
    "azurerm_resource_group": "name",
    "azurerm_container_registry": "name",
    "azurerm_user_assigned_identity": "name",
    "azurerm_role_definition": "name",
}


def _names(provider: str, pool: str, settings: dict[str, Any]) -> dict[str, str]:
    module = {"ecs": aws, "cloud-run": gcp, "aci": azure}[provider]
    names = {"local.slug": module.slug(pool), "var.pool_name": pool}
    if provider == "cloud-run":
        names["local.account_prefix"] = gcp.account_prefix(pool)
        names["local.label_value"] = gcp.label_value(pool)
    if provider == "aci":
        names["local.registry_name"] = azure.registry_name(SUBSCRIPTION, pool)
        names["local.resource_group_name"] = settings["resource_group_name"]
        names["var.resource_group_name"] = settings["resource_group_name"]
    return names


def _name_of(module: Directory, address: str, attribute: str) -> Any:
    """The name attribute of the resource at `address` (`type.name` or `type.name[i]`); a
    `Name` tag may take its value from a local list by `count.index`."""
    index = re.search(r"\[(\d+)\]$", address)
    body = module.resources[re.sub(r"\[.*\]$", "", address)]
    if attribute != "tags.Name":
        return body[attribute]
    tags = body["tags"]
    match = re.search(r'\bName"?\s*=\s*("(?:[^"\\]|\\.)*"|local\.\w+\[count\.index\])', tags)
    assert match, f"tags without a Name: {tags}"
    value = match.group(1)
    if value.startswith("local."):
        assert index, f"{address}: a Name by count.index on a resource without one"
        return literal(module.locals[value.split(".")[1].split("[")[0]])[int(index.group(1))]
    return value.replace('\\"', '"')


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_push_pool_module_names_resources_as_the_provisioner_does(case: tuple) -> None:
    provider, pool, more, control = case
    made = provisioner(provider, pool, control_plane=control, **more)
    module = load(TERRAFORM / "modules" / terraform.MODULES[provider])
    names = _names(provider, pool, made.pool_settings)
    checked = 0
    for step in made.steps:
        row, match = terraform.row_for(provider, step.kind, step.name)
        for resource in row.resources:
            address = resource.address_for(match)
            attribute = NAME_ATTRIBUTES.get(address.split(".")[0])
            if attribute is None:
                continue
            value = _name_of(module, address, attribute)
            assert render_name(value, names) == step.name, address
            checked += 1
    assert checked >= 3


TAGGED = {
    "aws_ecr_repository",
    "aws_iam_role",
    "aws_ecs_cluster",
    "aws_cloudwatch_log_group",
    "aws_vpc",
    "aws_subnet",
    "aws_internet_gateway",
    "aws_route_table",
    "aws_security_group",
    "azurerm_resource_group",
    "azurerm_container_registry",
    "azurerm_user_assigned_identity",
}


@pytest.mark.parametrize("provider", sorted(terraform.MODULES))
def test_push_pool_module_tags_what_the_provisioner_tags(provider: str) -> None:
    module = load(TERRAFORM / "modules" / terraform.MODULES[provider])
    key = "labels" if provider == "cloud-run" else "tags"
    pool_tag = literal(module.locals[key])
    assert base.POOL_TAG in pool_tag
    assert re.search(r"(var\.pool_name|local\.label_value)", pool_tag)
    for address, body in module.resources.items():
        if address.split(".")[0] in TAGGED:
            assert f"local.{key}" in str(body.get(key, "")), f"{address} is not tagged"
    if provider == "cloud-run":
        repository = module.resources["google_artifact_registry_repository.this"]
        assert "local.labels" in str(repository.get("labels"))


def _statements(document: dict[str, Any]) -> dict[str, set[str]]:
    return {literal(s["sid"]): {literal(a) for a in s["actions"]} for s in document["statement"]}


def test_aws_dispatcher_policy_has_the_provisioners_statements() -> None:
    module = load(TERRAFORM / "modules" / "aws-ecs-push-pool")
    document = module.data["data.aws_iam_policy_document.dispatch"]
    expected = aws.dispatcher_policy(
        "arn:aws:ecs:eu-west-1:123456789012:cluster/skylane-prod",
        ["arn:aws:iam::123456789012:role/skylane-prod-task"],
        "arn:aws:logs:eu-west-1:123456789012:log-group:/skylane/prod",
    )
    assert _statements(document) == {s["Sid"]: set(s["Action"]) for s in expected["Statement"]}
    by_sid = {literal(s["sid"]): s for s in document["statement"]}
    for statement in expected["Statement"]:
        written = by_sid[statement["Sid"]]
        conditions = {
            (literal(c["test"]), literal(c["variable"])) for c in written.get("condition", [])
        }
        assert conditions == {
            (test, variable)
            for test, pairs in statement.get("Condition", {}).items()
            for variable in pairs
        }, statement["Sid"]
        if statement["Resource"] == ["*"]:
            assert [literal(r) for r in written["resources"]] == ["*"]
    passed = str(by_sid["PassOnlyThisPoolsRolesToEcsTasks"]["resources"])
    assert "aws_iam_role.execution.arn" in passed and "aws_iam_role.task.arn" in passed
    assert "*" not in passed
    attachment = module.resources["aws_iam_role_policy_attachment.execution"]["policy_arn"]
    if attachment.startswith("${local."):
        attachment = literal(module.locals[attachment[len("${local.") : -1]])
    assert attachment.endswith(f":iam::aws:{aws.EXECUTION_POLICY}")


def test_gcp_module_enables_the_apis_and_grants_the_provisioners_roles() -> None:
    module = load(TERRAFORM / "modules" / "gcp-cloud-run-push-pool")
    assert sorted(literal(module.locals["apis"])) == sorted(gcp.APIS)
    assert sorted(literal(module.locals["dispatcher_project_roles"])) == sorted(
        gcp.DISPATCHER_PROJECT_ROLES
    )
    api = module.resources["google_project_service.this"]
    assert literal(api["disable_on_destroy"]) is False
    act_as = module.resources["google_service_account_iam_member.dispatcher_act_as_runtime"]
    assert literal(act_as["role"]) == gcp.ACT_AS_ROLE
    token = module.resources["google_service_account_iam_member.control_plane"]
    assert literal(token["role"]) == gcp.TOKEN_CREATOR_ROLE


def test_azure_dispatch_role_has_exactly_the_provisioners_actions() -> None:
    module = load(TERRAFORM / "modules" / "azure-aci-push-pool")
    definition = module.resources["azurerm_role_definition.dispatch"]
    actions = literal(definition["permissions"][0]["actions"])
    if isinstance(actions, str):  # a local holding the list
        actions = literal(module.locals[actions.strip("${}").removeprefix("local.")])
    assert sorted(actions) == sorted(azure.DISPATCH_ACTIONS)
    assert "containerGroups/*" not in json.dumps(actions)


@pytest.mark.parametrize("provider", sorted(terraform.MODULES))
def test_push_pool_module_has_the_outputs_skylane_reads(provider: str) -> None:
    module = load(TERRAFORM / "modules" / terraform.MODULES[provider])
    assert set(module.outputs) >= REQUIRED_OUTPUTS
    example = load(TERRAFORM / "examples" / terraform.MODULES[provider])
    assert set(example.outputs) >= {
        terraform.DEFAULTS_OUTPUT,
        terraform.SETTINGS_OUTPUT,
        terraform.CREDENTIALS_OUTPUT,
    }


def test_every_step_of_every_provisioner_matches_exactly_one_row() -> None:
    for case in CASES:
        provider, pool, more, control = case
        made = provisioner(provider, pool, control_plane=control, **more)
        for step in made.steps:
            terraform.row_for(provider, step.kind, step.name)  # raises unless exactly one


def test_a_step_the_table_does_not_know_is_an_error_naming_it() -> None:
    with pytest.raises(Exception, match="0 rows .* ecs iam-role 'someone-else'"):
        terraform.row_for("ecs", "iam-role", "someone-else")


def test_worker_modules_run_the_worker_command() -> None:
    for name in terraform.WORKER_MODULES.values():
        module = load(TERRAFORM / "modules" / name)
        text = json.dumps(module.files)
        assert '\\"worker\\"' in text and '\\"start\\"' in text and '\\"--pool\\"' in text, name
        assert "SKYLANE_API_URL" in text and "SKYLANE_API_KEY" in text, name
        assert "image" in module.variables and "pool_name" in module.variables, name
        assert "default" not in module.variables["image"], name


def test_worker_modules_pass_only_options_skylane_worker_start_has() -> None:
    import typer

    from skylane.cli.main import app

    command = typer.main.get_command(app).commands["worker"].commands["start"]  # type: ignore[attr-defined]
    options = {name for param in command.params for name in param.opts}
    for name in terraform.WORKER_MODULES.values():
        text = json.dumps(load(TERRAFORM / "modules" / name).files)
        passed = set(re.findall(r'\\"(--[a-z-]+)\\"', text))
        assert "--pool" in passed, name
        assert passed <= options, f"{name}: {sorted(passed - options)} are not worker options"

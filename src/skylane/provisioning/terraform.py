"""Terraform for push pools: which resource of our modules stands for each provisioning step,
and a root module that adopts what `skylane pool provision` created (`--emit-terraform DIR`).

`STEP_RESOURCES` is the one table both sides share. A row says: the provisioner's step of
this `kind` whose name matches `name` is these Terraform resources of the pool type's module in
`terraform/modules/`, each with the id `terraform import` takes. The tests check the table
against both sides. Every step of a provisioner's plan matches exactly one row. The module
declares exactly the rows' resources for the same inputs, with the same names. So a team that
imports what the provisioner made sees no changes at `terraform plan`.

`emit_root_module(directory, ...)` writes that root module. It has a copy of our module under
`modules/`, a `module "pool"` block with the inputs the provisioner used, and an `import`
block for every resource the pool's records name. Terraform >= 1.5 reads import blocks and
adopts the resources at the next apply; no state is touched before.

Nothing here imports a cloud SDK or calls a cloud.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from skylane.errors import InvalidInput, SkylaneError
from skylane.pool_types import PoolType
from skylane.provisioning import base

# The module each push pool type's provisioner has a Terraform twin in.
MODULES = {
    "ecs": "aws-ecs-push-pool",
    "cloud-run": "gcp-cloud-run-push-pool",
    "aci": "azure-aci-push-pool",
}
WORKER_MODULES = {
    "ecs": "aws-ecs-worker",
    "cloud-run": "gcp-cloud-run-worker",
    "aci": "azure-aci-worker",
}
# The outputs `--from-terraform-output` reads, under these names in every push-pool module and
# in the roots this module writes.
DEFAULTS_OUTPUT = "pool_template_defaults"
SETTINGS_OUTPUT = "pool_settings"
CREDENTIALS_OUTPUT = "pool_credentials"

TERRAFORM_VERSION = ">= 1.5"
PROVIDERS = {
    "ecs": ("aws", "hashicorp/aws"),
    "cloud-run": ("google", "hashicorp/google"),
    "aci": ("azurerm", "hashicorp/azurerm"),
}


@dataclass(frozen=True)
class ImportContext:
    """What an import id is made of: the record of the step, the pool's other records (a
    route table's associations need the subnets'), and the pool's settings."""

    record: base.Provisioned
    records: Sequence[base.Provisioned]
    settings: dict[str, Any]
    match: re.Match[str]

    def named(self, kind: str, pattern: str) -> base.Provisioned:
        for record in self.records:
            if record.kind == kind and re.fullmatch(pattern, record.name):
                return record
        raise SkylaneError(f"the pool has no {kind} record matching {pattern!r}")


@dataclass(frozen=True)
class TerraformResource:
    """A resource of the module: its address there (`type.name`, with `[index]` or
    `["key"]` for counted ones; `{1}` is the step name's first group) and its import id."""

    address: str
    import_id: Callable[[ImportContext], str]

    def address_for(self, match: re.Match[str]) -> str:
        return self.address.format(*(match.groups()))


@dataclass(frozen=True)
class StepResources:
    """One row of the table: the step of `kind` whose name fully matches `name`, and what it
    is in the module. A step read but never created (the default VPC) has `data` sources
    instead of resources, and nothing to import."""

    provider: str
    kind: str
    name: str
    resources: tuple[TerraformResource, ...] = ()
    data: tuple[str, ...] = ()


def _by_id(ctx: ImportContext) -> str:
    return ctx.record.resource_id


def _by_name(ctx: ImportContext) -> str:
    return ctx.record.name


def _partition(ctx: ImportContext) -> str:
    arn = ctx.record.resource_id
    return arn.split(":")[1] if arn.startswith("arn:") else "aws"


def _execution_attachment(ctx: ImportContext) -> str:
    policy = "policy/service-role/AmazonECSTaskExecutionRolePolicy"
    return f"{ctx.record.name}/arn:{_partition(ctx)}:iam::aws:{policy}"


def _association(index: int) -> Callable[[ImportContext], str]:
    def import_id(ctx: ImportContext) -> str:
        subnet = ctx.named("subnet", rf".+-{index + 1}")
        return f"{subnet.resource_id}/{ctx.record.resource_id}"

    return import_id


def _project(ctx: ImportContext) -> str:
    return str(ctx.settings["project"])


def _service_api(ctx: ImportContext) -> str:
    return f"{_project(ctx)}/{ctx.record.name}"


def _service_account(ctx: ImportContext) -> str:
    return f"projects/{_project(ctx)}/serviceAccounts/{ctx.record.resource_id}"


def _project_binding(ctx: ImportContext) -> str:
    # Recorded as "projects/P#ROLE#MEMBER"; Terraform takes "P ROLE MEMBER".
    resource, role, member = ctx.record.resource_id.split("#")
    return f"{resource.removeprefix('projects/')} {role} {member}"


def _account_binding(ctx: ImportContext) -> str:
    # Recorded as "projects/P/serviceAccounts/E#ROLE#MEMBER"; Terraform takes spaces.
    return ctx.record.resource_id.replace("#", " ")


def _role_definition(ctx: ImportContext) -> str:
    scope = (
        f"/subscriptions/{ctx.settings['subscription_id']}/resourceGroups/"
        f"{ctx.settings['resource_group_name']}"
    )
    return f"{ctx.record.resource_id}|{scope}"


_R = TerraformResource
STEP_RESOURCES: tuple[StepResources, ...] = (
    # aws: skylane.provisioning.aws.ecs_steps
    StepResources(
        "ecs",
        "ecr-repository",
        r"skylane-[a-z0-9-]+",
        (_R("aws_ecr_repository.this", _by_name), _R("aws_ecr_lifecycle_policy.this", _by_name)),
    ),
    StepResources(
        "ecs",
        "iam-role",
        r"skylane-[a-z0-9-]+-execution",
        (
            _R("aws_iam_role.execution", _by_name),
            _R("aws_iam_role_policy_attachment.execution", _execution_attachment),
        ),
    ),
    StepResources(
        "ecs", "iam-role", r"skylane-[a-z0-9-]+-task", (_R("aws_iam_role.task", _by_name),)
    ),
    StepResources(
        "ecs",
        "iam-role",
        r"skylane-[a-z0-9-]+-dispatcher",
        (
            _R("aws_iam_role.dispatcher", _by_name),
            _R("aws_iam_role_policy.dispatch", lambda ctx: f"{ctx.record.name}:skylane-dispatch"),
        ),
    ),
    StepResources(
        "ecs",
        "ecs-cluster",
        r"skylane-[a-z0-9-]+",
        (
            _R("aws_ecs_cluster.this", _by_name),
            _R("aws_ecs_cluster_capacity_providers.this", _by_name),
        ),
    ),
    StepResources(
        "ecs", "log-group", r"/skylane/[a-z0-9-]+", (_R("aws_cloudwatch_log_group.this", _by_name),)
    ),
    StepResources(
        "ecs", "vpc", r"default", data=("data.aws_vpc.default[0]", "data.aws_subnets.default[0]")
    ),
    StepResources("ecs", "vpc", r"skylane-[a-z0-9-]+", (_R("aws_vpc.this[0]", _by_id),)),
    StepResources("ecs", "subnet", r"skylane-[a-z0-9-]+-1", (_R("aws_subnet.this[0]", _by_id),)),
    StepResources("ecs", "subnet", r"skylane-[a-z0-9-]+-2", (_R("aws_subnet.this[1]", _by_id),)),
    StepResources(
        "ecs",
        "internet-gateway",
        r"skylane-[a-z0-9-]+",
        (_R("aws_internet_gateway.this[0]", _by_id),),
    ),
    StepResources(
        "ecs",
        "route-table",
        r"skylane-[a-z0-9-]+",
        (
            _R("aws_route_table.this[0]", _by_id),
            _R("aws_route_table_association.this[0]", _association(0)),
            _R("aws_route_table_association.this[1]", _association(1)),
        ),
    ),
    StepResources(
        "ecs", "security-group", r"skylane-[a-z0-9-]+", (_R("aws_security_group.this[0]", _by_id),)
    ),
    # gcp: skylane.provisioning.gcp.cloud_run_steps
    StepResources(
        "cloud-run",
        "service-api",
        r"([a-z]+\.googleapis\.com)",
        (_R('google_project_service.this["{0}"]', _service_api),),
    ),
    StepResources(
        "cloud-run",
        "artifact-registry-repository",
        r"skylane-[a-z0-9-]+",
        (_R("google_artifact_registry_repository.this", _by_id),),
    ),
    StepResources(
        "cloud-run",
        "service-account",
        r"skl-[a-z0-9-]+-run",
        (_R("google_service_account.runtime", _service_account),),
    ),
    StepResources(
        "cloud-run",
        "service-account",
        r"skl-[a-z0-9-]+-dispatch",
        (_R("google_service_account.dispatcher", _service_account),),
    ),
    StepResources(
        "cloud-run",
        "project-iam-binding",
        r"(roles/[\w.]+) serviceAccount:\S+",
        (_R('google_project_iam_member.dispatcher["{0}"]', _project_binding),),
    ),
    StepResources(
        "cloud-run",
        "service-account-iam-binding",
        r"roles/iam\.serviceAccountUser serviceAccount:\S+",
        (_R("google_service_account_iam_member.dispatcher_act_as_runtime", _account_binding),),
    ),
    StepResources(
        "cloud-run",
        "service-account-iam-binding",
        r"roles/iam\.serviceAccountTokenCreator control-plane",
        (_R("google_service_account_iam_member.control_plane[0]", _account_binding),),
    ),
    # azure: skylane.provisioning.azure.aci_steps
    StepResources(
        "aci", "resource-group", r"[\w.()-]+", (_R("azurerm_resource_group.this[0]", _by_id),)
    ),
    StepResources(
        "aci",
        "container-registry",
        r"skylane[a-z0-9]+",
        (_R("azurerm_container_registry.this", _by_id),),
    ),
    StepResources(
        "aci",
        "managed-identity",
        r"skylane-[a-z0-9-]+-runtime",
        (_R("azurerm_user_assigned_identity.runtime", _by_id),),
    ),
    StepResources(
        "aci",
        "role-assignment",
        r"AcrPull@skylane-[a-z0-9-]+-runtime",
        (_R("azurerm_role_assignment.runtime_acr_pull", _by_id),),
    ),
    StepResources(
        "aci",
        "role-definition",
        r"skylane-[a-z0-9-]+-dispatch",
        (_R("azurerm_role_definition.dispatch", _role_definition),),
    ),
    StepResources(
        "aci",
        "managed-identity",
        r"skylane-[a-z0-9-]+-dispatcher",
        (_R("azurerm_user_assigned_identity.dispatcher", _by_id),),
    ),
    StepResources(
        "aci",
        "role-assignment",
        r"skylane-[a-z0-9-]+-dispatch@skylane-[a-z0-9-]+-dispatcher",
        (_R("azurerm_role_assignment.dispatcher", _by_id),),
    ),
    StepResources(
        "aci",
        "role-assignment",
        r"skylane-[a-z0-9-]+-dispatch@control-plane",
        (_R("azurerm_role_assignment.control_plane[0]", _by_id),),
    ),
)


def row_for(provider: str, kind: str, name: str) -> tuple[StepResources, re.Match[str]]:
    """The table's row for a step (or record) of `provider`; exactly one must match."""
    found = [
        (row, match)
        for row in STEP_RESOURCES
        if row.provider == provider
        and row.kind == kind
        and (match := re.fullmatch(row.name, name)) is not None
    ]
    if len(found) != 1:
        raise SkylaneError(
            f"{len(found)} rows of the Terraform table match {provider} {kind} {name!r}; "
            "exactly one must"
        )
    return found[0]


def module_addresses(provider: str, steps: Sequence[Any]) -> list[str]:
    """The module's resource addresses that stand for `steps` (anything with `kind` and
    `name`: provisioning steps or records), in step order."""
    addresses = []
    for step in steps:
        row, match = row_for(provider, step.kind, step.name)
        addresses += [resource.address_for(match) for resource in row.resources]
    return addresses


@dataclass(frozen=True)
class ImportBlock:
    to: str
    id: str
    comment: str = ""


def import_blocks(
    provider: str, records: Sequence[base.Provisioned], settings: dict[str, Any]
) -> list[ImportBlock]:
    """An import block for each Terraform resource standing for a record. Adopted records
    (found, not created by skylane) are imported too, so Terraform does not try to create
    them again, and each says so: from then on Terraform manages it. A resource group skylane
    adopted is the exception: the module reads it instead, so Terraform never deletes it."""
    blocks = []
    for record in records:
        row, match = row_for(provider, record.kind, record.name)
        if record.kind == "resource-group" and not record.created:
            continue
        ctx = ImportContext(record, records, settings, match)
        comment = "" if record.created else "adopted by skylane: it existed before"
        for resource in row.resources:
            blocks.append(
                ImportBlock(
                    to=f"module.pool.{resource.address_for(match)}",
                    id=resource.import_id(ctx),
                    comment=comment,
                )
            )
    return blocks


# --- module inputs: what the provisioner used, as the module's variables ---------------------


def module_inputs(
    pool_type: PoolType,
    pool_name: str,
    settings: dict[str, Any],
    records: Sequence[base.Provisioned],
    *,
    control_plane: str | None = None,
) -> dict[str, Any]:
    """The `module "pool"` arguments that make the module plan what the provisioner made."""
    inputs: dict[str, Any] = {"pool_name": pool_name}
    if pool_type.provider == "ecs":
        from skylane.provisioning import aws

        if aws.slug(pool_name) != pool_name:
            inputs["resource_slug"] = aws.slug(pool_name)
        if any(r.kind == "vpc" and r.name != "default" for r in records):
            inputs["create_vpc"] = True
        if control_plane:
            inputs["dispatcher_principal_arn"] = control_plane
        return inputs
    if pool_type.provider == "cloud-run":
        from skylane.provisioning import gcp

        inputs = {"project": settings["project"], "region": settings["region"], **inputs}
        if gcp.slug(pool_name) != pool_name:
            inputs["resource_slug"] = gcp.slug(pool_name)
        if gcp.account_prefix(pool_name) != f"skl-{pool_name}":
            inputs["account_prefix"] = gcp.account_prefix(pool_name)
        if gcp.label_value(pool_name) != pool_name:
            inputs["label_value"] = gcp.label_value(pool_name)
        if settings.get("control_plane"):
            inputs["control_plane_member"] = settings["control_plane"]
        return inputs
    if pool_type.provider == "aci":
        from skylane.provisioning import azure

        subscription = settings["subscription_id"]
        inputs = {"subscription_id": subscription, "location": settings["location"], **inputs}
        if azure.slug(pool_name) != pool_name:
            inputs["resource_slug"] = azure.slug(pool_name)
        group = settings["resource_group_name"]
        if group != f"skylane-{azure.slug(pool_name)}":
            inputs["resource_group_name"] = group
        group_records = [r for r in records if r.kind == "resource-group"]
        if group_records and not group_records[0].created:
            inputs["create_resource_group"] = False
        inputs["registry_name"] = azure.registry_name(subscription, pool_name)
        if settings.get("control_plane"):
            inputs["control_plane_object_id"] = settings["control_plane"]
        return inputs
    raise InvalidInput(f"no Terraform module for {pool_type.name} pools", field="--type")


def _provider_block(pool_type: PoolType, settings: dict[str, Any]) -> str:
    if pool_type.provider == "ecs":
        return f'provider "aws" {{\n  region = {hcl(settings["region"])}\n}}\n'
    if pool_type.provider == "cloud-run":
        return (
            f'provider "google" {{\n  project = {hcl(settings["project"])}\n'
            f"  region  = {hcl(settings['region'])}\n}}\n"
        )
    return (
        'provider "azurerm" {\n  features {}\n'
        f"  subscription_id = {hcl(settings['subscription_id'])}\n}}\n"
    )


# --- writing HCL -----------------------------------------------------------------------------


def hcl(value: Any, indent: int = 0) -> str:
    """`value` as an HCL expression. Strings are JSON strings with Terraform's template
    sequences escaped (`$${`, `%%{`), so nothing in a name is ever interpolated."""
    pad = "  " * indent
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value).replace("${", "$${").replace("%{", "%%{")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hcl(v, indent) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = [f"{pad}  {hcl(str(k))} = {hcl(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + "\n".join(lines) + f"\n{pad}}}"
    raise TypeError(f"no HCL form for {type(value).__name__}")


def modules_root() -> Path:
    """Where the Terraform modules are: `terraform/modules` of the source tree, shipped in the
    package as `skylane/terraform_modules`."""
    return Path(str(resources.files("skylane") / "terraform_modules"))


@dataclass
class EmittedRoot:
    directory: Path
    module: str
    imports: list[ImportBlock] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)


def emit_root_module(
    directory: Path,
    pool_type: PoolType,
    pool_name: str,
    settings: dict[str, Any],
    records: Sequence[base.Provisioned],
    *,
    control_plane: str | None = None,
) -> EmittedRoot:
    """Write a root module into `directory` that manages pool `pool_name`'s resources with our
    module and imports the ones `records` name. An existing non-empty directory is refused,
    unless it is one this function wrote (it has our `skylane.tf`), which is rewritten."""
    module = MODULES.get(pool_type.provider)
    if module is None or not pool_type.push:
        raise InvalidInput(f"no Terraform module for {pool_type.name} pools", field="--type")
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not (directory / "skylane.tf").exists():
        raise InvalidInput(
            f"{directory} exists and is not empty: give a new directory (or one "
            "--emit-terraform wrote before)",
            field="--emit-terraform",
        )
    source = modules_root() / module
    if not (source / "main.tf").is_file():
        raise SkylaneError(f"the Terraform module {module} is missing from this installation")
    target = directory / "modules" / module
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))

    inputs = module_inputs(pool_type, pool_name, settings, records, control_plane=control_plane)
    blocks = import_blocks(pool_type.provider, records, settings)
    local, registry = PROVIDERS[pool_type.provider]
    lines = [
        f"# Written by `skylane pool provision {pool_name} --emit-terraform`: pool {pool_name}'s",
        "# resources, managed by the skylane module. `terraform init && terraform plan` shows",
        "# the imports below and no changes; `terraform apply` adopts them into the state.",
        "",
        "terraform {",
        f"  required_version = {hcl(TERRAFORM_VERSION)}",
        "  required_providers {",
        f"    {local} = {{",
        f"      source = {hcl(registry)}",
        "    }",
        "  }",
        "}",
        "",
        _provider_block(pool_type, settings),
        'module "pool" {',
        f"  source = {hcl('./modules/' + module)}",
        "",
    ]
    width = max(len(k) for k in inputs)
    lines += [f"  {key.ljust(width)} = {hcl(value, 1)}" for key, value in inputs.items()]
    lines += ["}", ""]
    for block in blocks:
        if block.comment:
            lines.append(f"# {block.comment}")
        lines += ["import {", f"  to = {block.to}", f"  id = {hcl(block.id)}", "}", ""]
    for name in (DEFAULTS_OUTPUT, SETTINGS_OUTPUT, CREDENTIALS_OUTPUT, "image_repository"):
        lines += [
            f'output "{name}" {{',
            f"  description = {hcl(f'The module output {name}.')}",
            f"  value       = module.pool.{name}",
            "}",
            "",
        ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "skylane.tf").write_text("\n".join(lines).rstrip() + "\n")
    return EmittedRoot(directory, module, blocks, inputs)

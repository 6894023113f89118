"""`skylane pool`: work pools and their base job templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from skylane.errors import AlreadyExists, InvalidInput
from skylane.models import Pool, PoolStatus
from skylane.pool_types import parse_pool_type

from . import output
from .common import (
    CredentialOption,
    Output,
    OutputOption,
    SettingOption,
    YesOption,
    confirm,
    make_client,
    parse_assignments,
    read_json_file,
)

app = typer.Typer(help="Work pools: where and how runs are executed.", no_args_is_help=True)

TEMPLATE_OPTION = "--base-job-template"
NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="Pool name.")]
TypeOption = Annotated[
    str,
    typer.Option(
        "--type", "-t", help="Pool type: process:push, ecs:push, cloud-run:push, aci:push, ..."
    ),
]
CallerCredentialOption = Annotated[
    list[str] | None,
    typer.Option(
        "--credential",
        metavar="KEY=VALUE",
        help="Your credentials for these cloud calls, as a reference (profile=NAME, or "
        "role_arn=ARN); never stored on the pool. Without any, your default chain.",
    ),
]
TemplateOption = Annotated[
    Path | None,
    typer.Option(
        TEMPLATE_OPTION,
        metavar="FILE",
        help='A JSON file {"job_configuration": ..., "variables": ...} ("-" reads stdin).',
    ),
]
LimitOption = Annotated[
    int | None,
    typer.Option("--concurrency-limit", min=0, help="Most runs of this pool active at once."),
]
DescriptionOption = Annotated[str | None, typer.Option(help="What the pool is for.")]
# Where `pool provision` (and `pool create --provision-infra`) creates a pool's resources.
RegionOption = Annotated[
    str | None,
    typer.Option(help="AWS region (ecs:push), Google Cloud region, Azure location (aci:push)."),
]
ProjectOption = Annotated[
    str | None, typer.Option(help="cloud-run:push: Google Cloud project (default: your ADC's).")
]
SubscriptionOption = Annotated[str | None, typer.Option(help="aci:push: Azure subscription id.")]
ResourceGroupOption = Annotated[
    str | None,
    typer.Option(help="aci:push: resource group (used if it exists; default skylane-<pool>)."),
]
ControlPlaneOption = Annotated[
    str | None,
    typer.Option(
        "--control-plane",
        metavar="PRINCIPAL",
        help="Who the control plane runs as, allowed to use the dispatcher identity created: "
        "an AWS principal ARN (default: the account), a Google member "
        "(serviceAccount:EMAIL), an Entra object id.",
    ),
]
CreateVpcOption = Annotated[
    bool,
    typer.Option("--create-vpc", help="ecs:push: a new VPC instead of the default one."),
]


def _template(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    template = read_json_file(path, TEMPLATE_OPTION)
    if not isinstance(template, dict):
        raise InvalidInput(
            f"{path} must hold a JSON object with job_configuration and variables",
            field=TEMPLATE_OPTION,
        )
    return template


FallbackOption = Annotated[
    str | None,
    typer.Option(
        "--fallback",
        metavar="worker|off",
        help="Push pools: 'worker' hands runs to the pool's workers while the control plane "
        "cannot push them (credentials refused, provider unreachable); 'off' stops that.",
    ),
]


def _fallback(value: str | None) -> str | None:
    if value is None or value.strip().lower() in ("off", "none", ""):
        return None
    if value.strip().lower() == "worker":
        return "worker"
    raise InvalidInput(f"unknown fallback {value!r}; choose worker or off", field="--fallback")


def _print_pool(
    pool: Pool,
    output_format: Output,
    action: str | None = None,
    status: PoolStatus | None = None,
) -> None:
    if output_format is Output.JSON:
        data = pool.model_dump(mode="json")
        if status is not None:
            data["status"] = status.model_dump(mode="json")
        output.print_json(data)
    elif action:
        typer.echo(f"pool {pool.name} {action}")
    else:
        variables = pool.base_job_template.get("variables") or {}
        rows: list[tuple[str, Any]] = [
            ("name", pool.name),
            ("id", pool.id),
            ("type", pool.type),
        ]
        if status is not None:
            said = f" ({status.reason})" if status.reason else ""
            rows += [
                ("status", f"{status.status.replace('_', ' ')}{said}"),
                ("dispatched by", status.dispatched_by),
            ]
        rows += [
            ("fallback", pool.fallback),
            ("paused", pool.paused),
            ("concurrency limit", pool.concurrency_limit),
            ("description", pool.description),
            ("settings", pool.settings or None),
            ("created", pool.created_at),
            ("updated", pool.updated_at),
        ]
        parts: list[Any] = [output.fields(rows)]
        if status is not None and status.workers:
            workers = [
                (
                    w.name,
                    "online" if w.online else "offline",
                    w.last_heartbeat_at,
                    w.hostname,
                    w.limit,
                    w.version,
                )
                for w in status.workers
            ]
            columns = ["worker", "status", "last heartbeat", "host", "limit", "version"]
            parts += ["", output.table(columns, workers)]
        parts += ["", output.schema_table(variables, title="job variables")]
        output.show(*parts)


@app.command()
def create(
    name: NameArgument,
    pool_type: TypeOption,
    base_job_template: TemplateOption = None,
    concurrency_limit: LimitOption = None,
    paused: Annotated[bool, typer.Option(help="Create it paused: runs wait.")] = False,
    description: DescriptionOption = None,
    fallback: FallbackOption = None,
    setting: SettingOption = None,
    credential: CredentialOption = None,
    provision_infra: Annotated[
        bool,
        typer.Option(
            "--provision-infra",
            help="Also create what the pool needs in your cloud, as `pool provision` does "
            "(with the options below).",
        ),
    ] = False,
    region: RegionOption = None,
    project: ProjectOption = None,
    subscription: SubscriptionOption = None,
    resource_group: ResourceGroupOption = None,
    control_plane: ControlPlaneOption = None,
    create_vpc: CreateVpcOption = False,
    from_terraform_output: Annotated[
        Path | None,
        typer.Option(
            "--from-terraform-output",
            metavar="FILE",
            help="`terraform output -json` of a root using a skylane push-pool module: its "
            "pool_template_defaults become the template's defaults, pool_settings the pool's "
            "settings.",
        ),
    ] = None,
    yes: YesOption = False,
    output_format: OutputOption = Output.TABLE,
) -> None:
    """Create a pool; without --base-job-template it gets its type's default template."""
    kind = parse_pool_type(pool_type, field="--type")
    if from_terraform_output is not None and provision_infra:
        raise InvalidInput(
            "--from-terraform-output registers what Terraform created; --provision-infra "
            "creates it: give one",
            field="--from-terraform-output",
        )
    where = {
        "--region": region,
        "--project": project,
        "--subscription": subscription,
        "--resource-group": resource_group,
        "--control-plane": control_plane,
        "--create-vpc": create_vpc or None,
    }
    if provision_infra:
        # --credential is the pool's (stored, for the control plane); provisioning runs with
        # the caller's default credentials.
        from skylane.provisioning.registry import ProvisionOptions

        from . import pool_provision

        options = ProvisionOptions(
            region=region,
            project=project,
            subscription=subscription,
            resource_group=resource_group,
            control_plane=control_plane,
            create_vpc=create_vpc,
            settings=parse_assignments(setting, "--setting"),
        )
        new_pool = {
            "fallback": _fallback(fallback),
            "credentials": parse_assignments(credential, "--credential") or None,
            "paused": paused,
            "concurrency_limit": concurrency_limit,
            "description": description,
            "base_job_template": _template(base_job_template),
        }
        with make_client() as client:
            if pool_provision.existing(client, name) is not None:
                raise AlreadyExists(f"pool {name} exists; use `pool provision`", field="name")
            pool_provision.provision(
                client, name, pool_type, options, dry_run=False, yes=yes, new_pool=new_pool
            )
        return
    for option, value in where.items():
        if value is not None:
            raise InvalidInput(f"{option} is for --provision-infra", field=option)
    body: dict[str, Any] = {
        "name": name,
        "type": pool_type,
        "paused": paused,
        "concurrency_limit": concurrency_limit,
        "description": description,
        "base_job_template": _template(base_job_template),
        "settings": parse_assignments(setting, "--setting"),
        "credentials": parse_assignments(credential, "--credential") or None,
        "fallback": _fallback(fallback),
    }
    hint = None
    if from_terraform_output is not None:
        from .pool_terraform import from_terraform_output as terraform_body

        body, hint = terraform_body(body, kind, from_terraform_output)
    with make_client() as client:
        pool = client.create_pool(**body)
    _print_pool(pool, output_format, f"created (type {pool.type})")
    if hint and output_format != Output.JSON:
        typer.echo(hint)


@app.command("ls")
def list_pools(output_format: OutputOption = Output.TABLE) -> None:
    """List pools."""
    with make_client() as client:
        pools = client.list_pools()
    if output_format is Output.JSON:
        output.print_json(pools)
        return
    rows = [(p.name, p.type, p.paused, p.concurrency_limit, p.description) for p in pools]
    output.show(output.table(["name", "type", "paused", "limit", "description"], rows))


@app.command()
def inspect(name: NameArgument, output_format: OutputOption = Output.TABLE) -> None:
    """Show a pool: whether it is ready (a pull pool: while a worker is online), who dispatches
    its runs, its workers and its template's job variables."""
    with make_client() as client:
        pool = client.get_pool(name)
        status = client.get_pool_status(name)
    _print_pool(pool, output_format, status=status)


@app.command()
def update(
    name: NameArgument,
    base_job_template: TemplateOption = None,
    concurrency_limit: LimitOption = None,
    description: DescriptionOption = None,
    setting: SettingOption = None,
    credential: CredentialOption = None,
    no_concurrency_limit: Annotated[
        bool, typer.Option("--no-concurrency-limit", help="Remove the concurrency limit.")
    ] = False,
    fallback: FallbackOption = None,
    output_format: OutputOption = Output.TABLE,
) -> None:
    """Change a pool's template, concurrency limit, description, settings or credentials.
    Settings given are merged into the pool's; credentials given replace the pool's."""
    changes: dict[str, Any] = {}
    if setting:
        with make_client() as client:
            current = client.get_pool(name).settings
        changes["settings"] = {**current, **parse_assignments(setting, "--setting")}
    if credential:
        changes["credentials"] = parse_assignments(credential, "--credential")
    if no_concurrency_limit:
        if concurrency_limit is not None:
            raise InvalidInput(
                "pass either --concurrency-limit or --no-concurrency-limit",
                field="--no-concurrency-limit",
            )
        changes["concurrency_limit"] = None
    if base_job_template is not None:
        changes["base_job_template"] = _template(base_job_template)
    if concurrency_limit is not None:
        changes["concurrency_limit"] = concurrency_limit
    if description is not None:
        changes["description"] = description
    if fallback is not None:
        changes["fallback"] = _fallback(fallback)
    if not changes:
        raise InvalidInput(
            "nothing to change; pass --base-job-template, --concurrency-limit, --description, "
            "--setting, --credential or --fallback",
            field="options",
        )
    with make_client() as client:
        pool = client.update_pool(name, **changes)
    _print_pool(pool, output_format, "updated")


@app.command()
def pause(name: NameArgument) -> None:
    """Pause a pool: its runs wait until it is resumed."""
    with make_client() as client:
        client.update_pool(name, paused=True)
    typer.echo(f"pool {name} paused")


@app.command()
def resume(name: NameArgument) -> None:
    """Resume a paused pool."""
    with make_client() as client:
        client.update_pool(name, paused=False)
    typer.echo(f"pool {name} resumed")


@app.command()
def delete(name: NameArgument, yes: YesOption = False) -> None:
    """Delete a pool."""
    confirm(f"Delete pool {name}?", yes)
    with make_client() as client:
        client.delete_pool(name)
    typer.echo(f"pool {name} deleted")


@app.command()
def provision(
    name: NameArgument,
    pool_type: TypeOption,
    region: RegionOption = None,
    project: ProjectOption = None,
    subscription: SubscriptionOption = None,
    resource_group: ResourceGroupOption = None,
    control_plane: ControlPlaneOption = None,
    create_vpc: CreateVpcOption = False,
    setting: SettingOption = None,
    credential: CallerCredentialOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and change nothing.")
    ] = False,
    emit_terraform: Annotated[
        Path | None,
        typer.Option(
            "--emit-terraform",
            metavar="DIR",
            help="Also write a Terraform root module to DIR that uses skylane's module for "
            "this pool type, with import blocks adopting every resource provisioned.",
        ),
    ] = None,
    yes: YesOption = False,
) -> None:
    """Create what a push pool needs in your cloud (registry, roles or identities, cluster,
    network), with your credentials, and point the pool's template at it; creates the pool if
    needed. Running it again changes nothing."""
    from skylane.provisioning.registry import ProvisionOptions

    from . import pool_provision

    options = ProvisionOptions(
        region=region,
        project=project,
        subscription=subscription,
        resource_group=resource_group,
        control_plane=control_plane,
        create_vpc=create_vpc,
        settings=parse_assignments(setting, "--setting"),
        credentials=parse_assignments(credential, "--credential") or None,
    )
    with make_client() as client:
        pool_provision.provision(
            client,
            name,
            pool_type,
            options,
            dry_run=dry_run,
            yes=yes,
            emit_terraform=emit_terraform,
        )


@app.command()
def deprovision(
    name: NameArgument, credential: CallerCredentialOption = None, yes: YesOption = False
) -> None:
    """Delete what `pool provision` created for the pool; resources it found and adopted are
    left alone."""
    credentials = parse_assignments(credential, "--credential") or None
    with make_client() as client:
        from . import pool_provision

        pool_provision.deprovision(client, name, yes=yes, credentials=credentials)


@app.command("default-template")
def default_template(pool_type: TypeOption) -> None:
    """Print a pool type's default base job template (JSON); needs no server."""
    provider = parse_pool_type(pool_type, field="--type").provider
    from skylane.adapters import adapter_class

    output.print_json(adapter_class(provider).default_template())

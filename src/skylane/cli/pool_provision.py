"""`skylane pool provision` and `pool deprovision`: plan, confirm, apply, record on the pool.

The cloud calls run here, with the credentials of whoever runs the command; the control plane
only stores the pool, what was provisioned for it (`provisioned_resources`) and the template
defaults that point at it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from skylane.client import SkylaneClient
from skylane.errors import InvalidInput, NotFound
from skylane.models import Pool
from skylane.pool_types import parse_pool_type
from skylane.provisioning import base
from skylane.provisioning.registry import ProvisionOptions, provisioner_for

from . import output, pool_terraform
from .common import confirm


def existing(client: SkylaneClient, name: str) -> Pool | None:
    try:
        return client.get_pool(name)
    except NotFound:
        return None


def _plan_table(items: list[base.PlanItem]) -> Any:
    return output.table(
        ["resource", "name", "action", "detail"],
        [tuple(item.row.values()) for item in items],
        title="plan",
    )


def provision(
    client: SkylaneClient,
    name: str,
    pool_type: str,
    options: ProvisionOptions,
    *,
    dry_run: bool,
    yes: bool,
    new_pool: dict[str, Any] | None = None,
    emit_terraform: Path | None = None,
) -> None:
    """Plan; stop there with `dry_run`; else confirm, create the pool if it does not exist
    (with `new_pool`'s other fields: template, limit, description...), apply, and record the
    resources and the template defaults on the pool; with `emit_terraform`, write a Terraform
    root module adopting them into that directory."""
    kind = parse_pool_type(pool_type, field="--type")
    if emit_terraform is not None and dry_run:
        raise InvalidInput(
            "--emit-terraform imports what provisioning created; a --dry-run creates nothing",
            field="--emit-terraform",
        )
    pool = existing(client, name)
    if pool is not None and parse_pool_type(pool.type) != kind:
        raise InvalidInput(
            f"pool {name} exists with type {pool.type}, not {kind.name}", field="--type"
        )
    # `options.credentials` are the caller's, for these calls only: never the pool's, which are
    # the control plane's, and never stored on it.
    settings = {**(pool.settings if pool else {}), **options.settings}
    options = dataclasses.replace(options, settings=settings)
    provisioner = provisioner_for(kind, name, options)
    items = base.plan(provisioner.steps, provisioner.context)
    output.show(_plan_table(items))
    if dry_run:
        typer.echo("dry run: nothing was changed")
        return
    if all(i.action == base.Action.EXISTS for i in items) and pool is not None:
        typer.echo("everything exists already; nothing to do")
    else:
        confirm(f"Apply this plan for pool {name}?", yes)
    if pool is None:
        pool = client.create_pool(
            **(new_pool or {}),
            name=name,
            type=kind.name,
            settings=provisioner.pool_settings,
        )
        typer.echo(f"pool {name} created (type {pool.type})")

    def progress(item: base.PlanItem, resource_id: str) -> None:
        typer.echo(f"  {item.action.value:7} {item.step.kind} {item.step.name}: {resource_id}")

    records = base.apply(items, provisioner.context, progress=progress)
    outputs = provisioner.context.outputs
    template, missing = base.with_defaults(pool.base_job_template, provisioner.context.defaults)
    previous = [base.Provisioned.from_json(r) for r in pool.provisioned_resources]
    settings = {**pool.settings, **provisioner.pool_settings}
    if outputs.get("image_repository"):
        # Where `skylane deploy` pushes this pool's images unless told otherwise.
        settings["image_repository"] = outputs["image_repository"]
    merged = base.merge_records(previous, records)
    client.update_pool(
        name,
        settings=settings,
        base_job_template=template,
        provisioned_resources=[r.to_json() for r in merged],
    )
    created = sum(1 for item in items if item.action == base.Action.CREATE)
    typer.echo(f"pool {name}: {created} created, {len(records) - created} already there")
    output.show(
        output.fields(
            [(key, value) for key, value in provisioner.context.defaults.items() if value],
            title="template defaults set",
        )
    )
    if outputs.get("image_repository"):
        typer.echo(f"images go to {outputs['image_repository']}")
    dispatcher = outputs.get("dispatcher_credentials")
    if dispatcher:
        typer.echo(pool_terraform.credentials_hint(name, dispatcher))
    if missing:
        output.print_warning(
            "the pool's template has no variable for: " + ", ".join(missing) + " (left out)"
        )
    if emit_terraform is not None:
        pool_terraform.emit(
            emit_terraform, kind, name, settings, merged, control_plane=options.control_plane
        )


def deprovision(
    client: SkylaneClient, name: str, *, yes: bool, credentials: dict[str, Any] | None = None
) -> None:
    """Delete what provisioning created for the pool (never what it adopted), newest first."""
    pool = client.get_pool(name)
    records = [base.Provisioned.from_json(r) for r in pool.provisioned_resources]
    if not any(r.created for r in records):
        typer.echo(f"pool {name}: skylane created nothing for it; nothing to remove")
        return
    # The pool's settings hold where it was provisioned (its region, an endpoint); its records
    # say whether it got a VPC of its own, whose steps must be there to delete it.
    options = ProvisionOptions(
        settings=pool.settings,
        credentials=credentials,
        create_vpc=any(r.kind == "vpc" and r.created for r in records),
    )
    provisioner = provisioner_for(parse_pool_type(pool.type), name, options)
    retained = {(s.kind, s.name) for s in provisioner.steps if base.is_retained(s)}
    doomed = [r for r in records if r.created and (r.kind, r.name) not in retained]
    kept = [r for r in records if r.created and (r.kind, r.name) in retained]
    if kept:
        typer.echo(
            "left in place on purpose: "
            + ", ".join(f"{r.kind} {r.name}" for r in kept)
            + " (skylane never turns a cloud API off: that deletes everything of it)"
        )
    if not doomed:
        typer.echo(f"pool {name}: nothing to remove")
        return
    output.show(
        output.table(
            ["resource", "name", "id"],
            [(r.kind, r.name, r.resource_id) for r in reversed(doomed)],
            title="to delete",
        )
    )
    confirm(f"Delete these {len(doomed)} resources of pool {name}?", yes)
    removed = base.deprovision(records, provisioner.steps, provisioner.context)
    gone = {(r.kind, r.name) for r in removed}
    client.update_pool(
        name,
        provisioned_resources=[r.to_json() for r in records if (r.kind, r.name) not in gone],
    )
    typer.echo(f"pool {name}: {len(removed)} resources deleted; adopted ones left as they were")

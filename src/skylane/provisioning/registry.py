"""Which provisioner builds the steps for a pool type, from the options of `skylane pool
provision`. Provisioning runs where the command runs, with the credentials of the person
running it (never the control plane's), and records what it did on the pool."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skylane.errors import InvalidInput
from skylane.pool_types import PoolType
from skylane.provisioning.base import Context, Step

# Pool types a provisioner exists for, and what the others are waiting on.
SUPPORTED = ("ecs:push", "cloud-run:push", "aci:push")


@dataclass(frozen=True)
class ProvisionOptions:
    """What the command line says about where to provision: the cloud location (`region`;
    Google's `project`; Azure's `subscription` and `resource_group`), who the control plane is
    (`control_plane`: an AWS principal ARN allowed to assume the dispatcher role, a Google
    member allowed to impersonate the dispatcher service account, an Entra object id given the
    dispatcher role), and the pool's settings and the caller's credentials reference (an
    `endpoint_url` points the SDK elsewhere)."""

    region: str | None = None
    project: str | None = None
    subscription: str | None = None
    resource_group: str | None = None
    control_plane: str | None = None
    create_vpc: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    credentials: dict[str, Any] | None = None


@dataclass
class Provisioner:
    """The steps for one pool, the context they share, and the settings the pool should carry
    once provisioned (its region, say)."""

    steps: list[Step]
    context: Context
    pool_settings: dict[str, Any]


def provisioner_for(pool_type: PoolType, pool_name: str, options: ProvisionOptions) -> Provisioner:
    """The provisioner of `pool_type`; InvalidInput naming `--type` when there is none."""
    if pool_type.push and pool_type.provider == "ecs":
        return _ecs(pool_name, options)
    if pool_type.push and pool_type.provider == "cloud-run":
        from skylane.provisioning import gcp

        return gcp.cloud_run_provisioner(pool_name, options)
    if pool_type.push and pool_type.provider == "aci":
        from skylane.provisioning import azure

        return azure.aci_provisioner(pool_name, options)
    raise InvalidInput(
        f"skylane cannot provision {pool_type.name} pools; it can provision {', '.join(SUPPORTED)}",
        field="--type",
    )


def _ecs(pool_name: str, options: ProvisionOptions) -> Provisioner:
    from skylane.adapters.aws import AwsClients
    from skylane.provisioning import aws

    settings = dict(options.settings)
    if options.region:
        settings["region"] = options.region
    clients = AwsClients(options.credentials, settings)
    region = clients.region()
    settings["region"] = region
    steps = aws.ecs_steps(
        clients,
        pool_name,
        region=region,
        create_vpc=options.create_vpc,
        dispatcher_principal=options.control_plane,
    )
    return Provisioner(
        steps=steps,
        context=Context(pool=pool_name),
        pool_settings=settings,
    )

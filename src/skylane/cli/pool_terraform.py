"""The Terraform side of `skylane pool`: `create --from-terraform-output FILE` and
`provision --emit-terraform DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from skylane.errors import InvalidInput
from skylane.pool_types import PoolType
from skylane.provisioning import base
from skylane.provisioning.terraform import emit_root_module
from skylane.provisioning.terraform_output import OPTION, read_terraform_output


def credentials_hint(name: str, credentials: dict[str, Any]) -> str:
    assignments = " ".join(f"--credential {key}={value}" for key, value in credentials.items())
    return (
        "for least privilege, let the control plane use the dispatcher identity created: "
        f"skylane pool update {name} {assignments}"
    )


def from_terraform_output(
    body: dict[str, Any], kind: PoolType, path: Path
) -> tuple[dict[str, Any], str | None]:
    """The pool create body with the template defaults and settings of Terraform's outputs
    (given --setting values win); and a hint naming the dispatcher credentials, if any."""
    from skylane.adapters import adapter_class

    outputs = read_terraform_output(path)
    template = body.get("base_job_template") or adapter_class(kind.provider).default_template()
    template, missing = base.with_defaults(template, outputs.template_defaults)
    if missing:
        raise InvalidInput(
            f"{path}: pool_template_defaults has {', '.join(sorted(missing))}, which the "
            f"{kind.name} template has no variable for: is this the output of the module for "
            f"{kind.name} pools?",
            field=OPTION,
        )
    settings = dict(outputs.settings)
    if outputs.image_repository:
        # Where `skylane deploy` pushes this pool's images unless told otherwise.
        settings["image_repository"] = outputs.image_repository
    settings.update(body.get("settings") or {})
    hint = None
    if outputs.credentials and not body.get("credentials"):
        hint = credentials_hint(body["name"], outputs.credentials)
    return {**body, "base_job_template": template, "settings": settings}, hint


def emit(
    directory: Path,
    kind: PoolType,
    name: str,
    settings: dict[str, Any],
    records: list[base.Provisioned],
    control_plane: str | None,
) -> None:
    root = emit_root_module(directory, kind, name, settings, records, control_plane=control_plane)
    typer.echo(
        f"Terraform: wrote {root.directory / 'skylane.tf'} (module {root.module}, "
        f"{len(root.imports)} import blocks); run `terraform init && terraform plan` there"
    )

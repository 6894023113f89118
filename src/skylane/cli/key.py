"""`skylane key`: API keys for people and machines (a worker's key has the `worker` scope).
The key itself is printed once, at creation; the server keeps only its hash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from skylane.errors import InvalidInput
from skylane.models import ApiScope

from . import output
from .common import Output, OutputOption, YesOption, confirm, make_client

app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. worker-prod.")],
    scope: Annotated[
        list[ApiScope],
        typer.Option(
            "--scope",
            help="admin, deploy, worker or read; repeat for several. A worker key may only "
            "register workers and work their pools' runs.",
        ),
    ],
    expires_in_days: Annotated[
        int | None,
        typer.Option("--expires-in-days", min=1, help="The key stops working after this."),
    ] = None,
    output_format: OutputOption = Output.TABLE,
) -> None:
    """Create a key and print it once: store it now (a secret manager, a 0600 file)."""
    if not scope:
        raise InvalidInput("give at least one --scope", field="--scope")
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    with make_client() as client:
        created = client.create_api_key(name, [s.value for s in scope], expires_at)
    if output_format is Output.JSON:
        output.print_json(created)
        return
    output.show(
        output.fields(
            [
                ("id", created["id"]),
                ("name", created["name"]),
                ("scopes", ", ".join(created["scopes"])),
                ("expires", created["expires_at"] or "never"),
            ],
            title="key created",
        )
    )
    # The key alone on stdout's last line, so `| tail -1` takes it; shown only this once.
    output.print_text("the key (shown once; skylane keeps only its hash):", err=True)
    typer.echo(created["api_key"])


@app.command("ls")
def list_keys(output_format: OutputOption = Output.TABLE) -> None:
    """The keys: id, name, scopes, expiry, revoked. Never the keys themselves."""
    with make_client() as client:
        keys = client.list_api_keys()
    if output_format is Output.JSON:
        output.print_json([k.model_dump(mode="json") for k in keys])
        return
    output.show(
        output.table(
            ["id", "name", "scopes", "created", "expires", "revoked"],
            [
                (
                    k.id,
                    k.name,
                    ", ".join(k.scopes),
                    k.created_at.isoformat(timespec="seconds"),
                    k.expires_at.isoformat(timespec="seconds") if k.expires_at else "never",
                    "yes" if k.revoked else "",
                )
                for k in keys
            ],
            title="API keys",
        )
    )


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (from key ls).")],
    yes: YesOption = False,
) -> None:
    """Revoke a key: every request with it is refused from now on."""
    confirm(f"Revoke key {key_id}?", yes)
    with make_client() as client:
        revoked = client.revoke_api_key(key_id)
    typer.echo(f"key {revoked.id} ({revoked.name}) revoked")

"""`skylane config`: where the API is and which key to use (the user's config file)."""

from __future__ import annotations

import enum
import os
import sys
from typing import Annotated

import typer

from skylane.errors import InvalidInput
from skylane.security import mask
from skylane.settings import CONFIG_KEYS, config_file, read_config, write_config_value

from . import output
from .common import Output, OutputOption, load_settings

app = typer.Typer(help="Client configuration: API URL and API key.", no_args_is_help=True)

ConfigKey = enum.StrEnum("ConfigKey", {key.replace("-", "_"): key for key in CONFIG_KEYS})


def _read_value(key: str) -> str:
    """A value not given on the command line: asked for (hidden) on a terminal, else stdin."""
    if sys.stdin.isatty():
        return typer.prompt(key, hide_input=key == "api-key", err=True)
    return sys.stdin.readline().strip()


@app.command("set")
def set_value(
    key: Annotated[ConfigKey, typer.Argument(help="Which setting.")],
    value: Annotated[
        str | None,
        typer.Argument(
            help="The value; leave it out to type it hidden (or pipe it on stdin), which keeps "
            "a key out of your shell history."
        ),
    ] = None,
) -> None:
    """Save a setting in the config file (private to you: mode 0600)."""
    name = key.value
    value = (value if value is not None else _read_value(name)).strip()
    if not value:
        raise InvalidInput("the value is empty", field=name)
    if name == "api-url" and not value.startswith(("http://", "https://")):
        raise InvalidInput(f"expected an http:// or https:// URL, got {value!r}", field=name)
    path = write_config_value(name, value)
    if name == "api-key":
        typer.echo(f"api-key saved to {path}")
    else:
        typer.echo(f"{name} set to {value} in {path}")


def _source(field: str) -> str:
    if f"SKYLANE_{field.upper()}" in os.environ:
        return f"env SKYLANE_{field.upper()}"
    if field in read_config():
        return "config file"
    return "default"


@app.command()
def show(output_format: OutputOption = Output.TABLE) -> None:
    """The API URL and key in use (the key masked) and where they come from."""
    settings = load_settings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    data = {
        "api_url": settings.api_url,
        "api_url_source": _source("api_url"),
        "api_key": mask(key) if key else None,
        "api_key_set": key is not None,
        "api_key_source": _source("api_key") if key else None,
        "config_file": str(config_file()),
    }
    if output_format is Output.JSON:
        output.print_json(data)
        return
    key_text = f"{data['api_key']} ({data['api_key_source']})" if key else "not set"
    output.show(
        output.fields(
            [
                ("api-url", f"{data['api_url']} ({data['api_url_source']})"),
                ("api-key", key_text),
                ("config file", data["config_file"]),
            ]
        )
    )

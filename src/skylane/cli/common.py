"""Helpers every command group uses: settings and the client, `--output`, `k=v` options, JSON
files, confirmation, following a run."""

from __future__ import annotations

import contextlib
import enum
import json
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Annotated, Any

import pydantic
import typer

from skylane.client import SkylaneClient
from skylane.errors import ConfigurationError, InvalidInput, SkylaneError
from skylane.models import Run, RunState
from skylane.settings import Settings, config_file, get_settings

from . import output


class Output(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[
    Output,
    typer.Option(
        "--output",
        "-o",
        case_sensitive=False,
        help="table for people; json prints only machine-readable JSON on stdout.",
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="A parameter; VALUE is JSON when it parses (3, true, [1,2]), else a "
        "string. Repeat for more.",
    ),
]
JobVariableOption = Annotated[
    list[str] | None,
    typer.Option(
        "--job-variable",
        "-j",
        metavar="KEY=VALUE",
        help="A job variable, like --param; dotted keys nest (env.FOO=bar).",
    ),
]


# --- settings and client ------------------------------------------------------------------


def load_settings(**overrides: Any) -> Settings:
    """Settings (flags > SKYLANE_* env > config file > defaults), with readable errors."""
    try:
        return get_settings(**overrides)
    except pydantic.ValidationError as exc:
        # Only where and what: the rejected value may be a secret.
        first = exc.errors(include_url=False, include_input=False)[0]
        name = ".".join(str(part) for part in first["loc"])
        if not name:  # a rule across settings (e.g. the claim lease and the submit deadline)
            raise ConfigurationError(
                first["msg"].removeprefix("Value error, "), field="settings"
            ) from exc
        raise ConfigurationError(
            f"{first['msg']} (from a flag, SKYLANE_{name.upper()} or {config_file()})",
            field=name,
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(
            f"{config_file()} is not valid TOML: {exc}", field="config"
        ) from exc


def make_client(settings: Settings | None = None) -> SkylaneClient:
    settings = settings or load_settings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return SkylaneClient(settings.api_url, key)


# --- option values ------------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON: keep them as strings


def parse_value(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constants)
    except ValueError:
        return text


SettingOption = Annotated[
    list[str] | None,
    typer.Option(
        "--setting",
        metavar="KEY=VALUE",
        help="A provider setting of the pool, e.g. region=eu-west-1, endpoint_url=http://...",
    ),
]
CredentialOption = Annotated[
    list[str] | None,
    typer.Option(
        "--credential",
        metavar="KEY=VALUE",
        help="A credentials reference, never a secret: profile=NAME, or role_arn=ARN "
        "(with external_id=ID); without any, the cloud's default credential chain is used.",
    ),
]


def parse_assignments(values: list[str] | None, option: str) -> dict[str, Any]:
    """`["n=3", "env.FOO=bar"]` -> `{"n": 3, "env": {"FOO": "bar"}}`."""
    result: dict[str, Any] = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(part.strip() for part in parts):
            raise InvalidInput(f"expected KEY=VALUE, got {item!r}", field=option)
        target = result
        for depth, part in enumerate(parts[:-1]):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                where = ".".join(parts[: depth + 1])
                raise InvalidInput(
                    f"{key!r} conflicts with the value given for {where!r}", field=option
                )
        if isinstance(target.get(parts[-1]), dict):
            raise InvalidInput(
                f"{key!r} conflicts with the nested keys given under it", field=option
            )
        target[parts[-1]] = parse_value(raw)
    return result


def read_json_file(path: Path, option: str) -> Any:
    """The JSON in `path` (`-` is stdin); errors name the option and the position."""
    shown = "stdin" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InvalidInput(f"{shown} does not exist", field=option) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {shown}: {exc}", field=option) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{shown} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            field=option,
        ) from exc


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; without one, only --yes lets the command go on."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise InvalidInput(
            "no terminal to ask for confirmation; pass --yes to go ahead", field="--yes"
        )
    typer.confirm(question, abort=True, err=True)


# --- runs ---------------------------------------------------------------------------------


def follow_run(client: SkylaneClient, run_id: uuid.UUID | str, *, print_logs: bool) -> Run:
    """Stream a run's logs until it ends (printing each message when asked); the final run."""
    ended = False
    try:
        with contextlib.closing(client.follow_logs(run_id)) as events:
            for event in events:
                if event.get("type") == "end":
                    ended = True
                    break
                if print_logs and event.get("type") == "log":
                    output.print_text(str(event.get("message", "")))
    except KeyboardInterrupt:
        output.print_text(
            f"stopped following; run {run_id} goes on (skylane run cancel {run_id} stops it)",
            err=True,
        )
        raise typer.Exit(130) from None
    run = client.get_run(run_id)
    if not ended and not run.state.is_terminal:
        raise SkylaneError(
            f"the log stream ended before run {run_id} did; follow it again "
            f"with: skylane run logs {run_id} --follow"
        )
    return run


def exit_for(run: Run) -> None:
    """Exit 0 if the run completed, 1 otherwise."""
    raise typer.Exit(0 if run.state is RunState.COMPLETED else 1)

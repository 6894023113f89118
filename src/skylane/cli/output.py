"""Printing: JSON for machines (stdout, nothing else), rich tables for people.

User data (names, messages, log lines) is never read as rich markup, so a `[red]` inside a log
line is printed as it is.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "SCHEDULED": "cyan",
    "PENDING": "blue",
    "RUNNING": "yellow",
    "COMPLETED": "green",
    "FAILED": "red",
    "CRASHED": "red",
    "CANCELLING": "magenta",
    "CANCELLED": "magenta",
}


# Width when stdout is not a terminal (a pipe, a file): wide enough that rows are not wrapped.
PIPE_WIDTH = 250


def console() -> Console:
    # Built on use, so it writes to whatever sys.stdout is now (tests swap it).
    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_WIDTH
    return out


def dump(data: Any) -> Any:
    """JSON-ready data: models through model_dump(mode="json"), lists item by item."""
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list | tuple):
        return [dump(item) for item in data]
    return data


def print_json(data: Any) -> None:
    typer.echo(json.dumps(dump(data), indent=2))


def print_text(text: str, *, err: bool = False) -> None:
    """A line as it is: no markup, no wrapping."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text if text.endswith("\n") else text + "\n")
    stream.flush()


def print_error(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)


def print_warning(message: str) -> None:
    typer.secho(f"warning: {message}", fg="yellow", err=True)


def cell(value: Any, style: str = "") -> Text:
    if value is None:
        return Text("")
    if isinstance(value, Text):
        return value
    if isinstance(value, datetime):
        return Text(format_time(value), style=style)
    if isinstance(value, bool):
        return Text("yes" if value else "no", style=style)
    if isinstance(value, dict | list):
        return Text(json.dumps(value), style=style)
    return Text(str(value), style=style)


def table(
    columns: Iterable[str],
    rows: Iterable[Iterable[Any]],
    *,
    title: str | None = None,
    wide: Iterable[str] = (),
) -> Table:
    """A table of `rows`; columns named in `wide` (ids) are never wrapped or cut."""
    result = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD)
    keep = set(wide)
    for name in columns:
        if name in keep:
            result.add_column(name, no_wrap=True, min_width=36)
        else:
            result.add_column(name, overflow="fold")
    for row in rows:
        result.add_row(*(cell(value) for value in row))
    return result


def fields(pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> Table:
    """Field / value pairs of one object."""
    result = Table(
        title=title, title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0)
    )
    result.add_column(style="bold", no_wrap=True)
    result.add_column(overflow="fold")
    for name, value in pairs:
        result.add_row(name, cell(value))
    return result


def show(*renderables: Any) -> None:
    out = console()
    for renderable in renderables:
        out.print(renderable)


def print_state(run_id: Any, state: str, *, err: bool = False) -> None:
    """`run <id> <STATE>`, the state in its colour."""
    typer.echo(f"run {run_id} ", nl=False, err=err)
    typer.secho(str(state), fg=STATE_STYLES.get(str(state)), err=err)


def state_text(state: str) -> Text:
    return Text(str(state), style=STATE_STYLES.get(str(state), ""))


def format_time(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = max((end - start).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def late_text(seconds: float) -> Text:
    now = datetime.now(UTC)
    return Text(format_duration(now - timedelta(seconds=seconds), now), style="yellow")


def run_state_text(run: Any, late_after: float) -> Text:
    """The run's state, with "late 2m05s" when it is overdue and still not submitted."""
    text = state_text(run.state)
    late = run.late_by(datetime.now(UTC))
    if late is not None and late >= late_after:
        text.append(" late ", style="yellow")
        text.append_text(late_text(late))
    return text


def schema_type(schema: Any) -> str:
    """A short name for the type a JSON Schema describes: `integer`, `array[string] | null`..."""
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(schema_type(option) for option in schema[key])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return schema_type(schema["allOf"][0])
    if "enum" in schema:
        return "enum(" + ", ".join(json.dumps(v) for v in schema["enum"]) + ")"
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(kind)
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array[{schema_type(schema['items'])}]"
    return kind or "any"


def schema_table(schema: dict[str, Any], *, title: str) -> Table:
    """The properties of an object schema (a pool's variables, a deployment's parameters)."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    rows = []
    for name, prop in properties.items():
        prop = prop if isinstance(prop, dict) else {}
        default = json.dumps(prop["default"]) if "default" in prop else ""
        label = f"{name} *" if name in required else name
        rows.append((label, schema_type(prop), default, prop.get("description", "")))
    caption = "* required" if required else None
    result = table(["name", "type", "default", "description"], rows, title=title)
    result.caption = caption
    result.caption_justify = "left"
    return result

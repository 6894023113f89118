"""The subset of the Cloud Logging query language the Cloud Run emulator
(`skylane.testing.gcp`) answers `entries:list` with: `FIELD OP VALUE` comparisons joined by
`AND` or newlines, parsed strictly so an adapter that sends more than this finds out in its
tests rather than against Google.

FIELD is `resource.type`, `resource.labels.NAME`, `labels."KEY"` (or `labels.KEY`), `logName`,
`severity` (compared by level: DEFAULT < DEBUG < INFO < ... < EMERGENCY), `timestamp` (compared
as times; RFC 3339) or `textPayload`; OP is one of `= != > >= < <=`; VALUE is double-quoted
(with backslash escapes) or a bare word. Strings compare case-sensitively, and a field an entry
lacks matches no comparison, `!=` included. Anything else (OR, NOT, parentheses, `:`) raises
`FilterError`, whose message names the part.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["SEVERITIES", "Comparison", "FilterError", "parse_filter"]


class FilterError(ValueError):
    """A filter outside the subset understood (the emulator answers 400 INVALID_ARGUMENT)."""


# LogSeverity by name, in level order.
SEVERITIES: dict[str, int] = {
    "DEFAULT": 0,
    "DEBUG": 100,
    "INFO": 200,
    "NOTICE": 300,
    "WARNING": 400,
    "ERROR": 500,
    "CRITICAL": 600,
    "ALERT": 700,
    "EMERGENCY": 800,
}

# The filter subset understood: FIELD OP VALUE comparisons joined by AND or newlines.
_FILTER_NAME = r'(?:[A-Za-z_][\w-]*|"(?:[^"\\]|\\.)*")'
_FILTER_COMPARISON = re.compile(
    rf"(?P<field>{_FILTER_NAME}(?:\.{_FILTER_NAME})*)\s*(?P<op>!=|>=|<=|=|>|<)\s*"
    r'(?P<value>"(?:[^"\\]|\\.)*"|[^\s"()]+)'
)
_FILTER_JOIN = re.compile(r"\s+AND\s+|[^\S\n]*\n\s*|\s*\Z")
_FILTER_WORD = re.compile(r"[()]|[^\s()]+")
FILTER_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
FILTER_SCALARS = frozenset(
    {("resource", "type"), ("logName",), ("severity",), ("timestamp",), ("textPayload",)}
)
FILTER_FIELDS = (
    'resource.type, resource.labels.NAME, labels.KEY (or labels."KEY"), logName, severity, '
    "timestamp and textPayload"
)


@dataclass(frozen=True)
class Comparison:
    """One `FIELD OP VALUE` of a Logging filter, its value already in comparable form."""

    path: tuple[str, ...]
    op: str
    operand: Any

    def matches(self, entry: Mapping[str, Any]) -> bool:
        found: Any = entry
        for part in self.path:
            found = found.get(part) if isinstance(found, Mapping) else None
        # A field the entry lacks matches no comparison, `!=` included.
        if found is None:
            return False
        return FILTER_OPERATORS[self.op](_filter_operand(self.path, found), self.operand)


def parse_filter(text: str) -> list[Comparison]:
    """The comparisons of a Logging filter, all of which an entry must match; 400 naming the
    first part outside the subset understood."""
    comparisons = []
    position = len(text) - len(text.lstrip())
    while position < len(text):
        matched = _FILTER_COMPARISON.match(text, position)
        if matched is None:
            raise _filter_error(text, position)
        path = _filter_path(matched["field"])
        operand = _filter_operand(path, _unquote(matched["value"]))
        comparisons.append(Comparison(path, matched["op"], operand))
        joined = _FILTER_JOIN.match(text, matched.end())
        if joined is None:
            raise _filter_error(text, len(text) - len(text[matched.end() :].lstrip()))
        position = joined.end()
    return comparisons


def _filter_path(field: str) -> tuple[str, ...]:
    path = tuple(_unquote(part) for part in re.findall(_FILTER_NAME, field))
    if path in FILTER_SCALARS or path[:-1] in (("labels",), ("resource", "labels")):
        return path
    raise FilterError(
        f"Unsupported field '{field}' in the filter: the emulator filters on {FILTER_FIELDS}."
    )


def _filter_operand(path: tuple[str, ...], value: str) -> Any:
    """A filter's value, or an entry's, in the form `path` compares by: severities by level,
    timestamps as times, the rest as strings."""
    if path == ("severity",):
        level = SEVERITIES.get(value.upper())
        if level is None and value.isdigit():
            level = int(value)
        if level is None:
            raise FilterError(f"Invalid severity '{value}' in the filter.")
        return level
    if path == ("timestamp",):
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            raise FilterError(
                f"Invalid timestamp '{value}' in the filter: RFC 3339 is required."
            ) from None
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return value


def _filter_error(text: str, position: int) -> FilterError:
    word = _FILTER_WORD.match(text, position)
    part = word.group() if word else text[position:]
    return FilterError(
        f"Unsupported filter syntax at '{part}' (character {position + 1}): the emulator "
        "understands only comparisons FIELD OP VALUE (OP one of = != > >= < <=) joined by AND "
        "or newlines; no OR, NOT, parentheses or ':'.",
    )


def _unquote(text: str) -> str:
    if text.startswith('"'):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text

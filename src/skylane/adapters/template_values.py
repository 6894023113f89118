"""Coercions every adapter applies to rendered job-configuration values: a placeholder may
render to a string ("3"), a number or a boolean, and errors must name the field."""

from __future__ import annotations

import json
from typing import Any

from skylane.errors import InvalidInput


def text(value: Any) -> str:
    """A value as the provider's string fields want it: booleans lowercase, JSON for objects."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def short_repr(value: Any) -> str:
    """A value for an error message, cut to 60 characters."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:59] + "…"


def whole_number(value: Any, field: str, *, minimum: int = 0) -> int:
    """`value` as an int ("3", 3.0 and 3 are 3), at least `minimum`; InvalidInput naming
    `field` otherwise (booleans are not numbers)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(
            f"{field.rsplit('.', 1)[-1]} must be a whole number of at least {minimum}, "
            f"not {short_repr(value)}",
            field=field,
        )
    return value

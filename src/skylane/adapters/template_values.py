"""Coercions every adapter applies to rendered job-configuration values: a placeholder may
render to a string ("3"), a number or a boolean, and errors must name the field."""

from __future__ import annotations

import copy
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


def is_present(value: Any) -> bool:
    """Whether a rendered value is set: None, "", [] and {} are what an unset variable leaves."""
    return value is not None and value != "" and value != [] and value != {}


def is_block_reference(value: Any) -> bool:
    """A Prefect block document reference (`{"$ref": ...}`), which skylane ignores."""
    return isinstance(value, dict) and set(value) == {"$ref"}


def drop_absent(node: Any) -> Any:
    """A deep copy without None values and Prefect block references in objects and lists."""
    if isinstance(node, dict):
        return {
            k: drop_absent(v)
            for k, v in node.items()
            if v is not None and not is_block_reference(v)
        }
    if isinstance(node, list):
        return [drop_absent(v) for v in node if v is not None]
    return copy.deepcopy(node)


def optional_text(value: Any) -> str | None:
    """A scalar as stripped text; None when unset, blank or an object or list."""
    if not is_present(value) or isinstance(value, dict | list):
        return None
    return str(value).strip() or None


def as_object(value: Any, field: str) -> dict[str, Any]:
    """`value` as a dict ({} when unset); InvalidInput naming `field` for anything else."""
    if not is_present(value):
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{field.rsplit('.', 1)[-1]} must be an object, not {type(value).__name__}",
            field=field,
        )
    return value


def as_bool(value: Any, field: str) -> bool:
    """A boolean, or "true"/"false" in any case; InvalidInput naming `field` otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidInput(
        f"{field.rsplit('.', 1)[-1]} must be true or false, not {short_repr(value)}", field=field
    )

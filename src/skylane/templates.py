"""Base job templates: validate, merge job variables, render.

A base job template is ``{"job_configuration": {...}, "variables": <JSON Schema of an object>}``,
the shape Prefect's ECS, Cloud Run v2 and ACI work pools use, so templates exported from Prefect
are accepted unchanged. ``{{ name }}`` placeholders in job_configuration *values* are filled from
the variables:

    defaults of the variables schema <- deployment job_variables <- run job_variables
    (``env`` merged key by key) -> validated against the schema -> rendered

A string that is exactly one placeholder takes the value with its type; inside a longer string
the value is interpolated as text. Substitution is a single pass: values are never expanded
again and nothing is ever evaluated (``{{ a.b }}`` names the variable "a.b", not an attribute).

Prefect block references (``{{ prefect.blocks.aws-credentials.prod }}``, anything starting with
``prefect.``, and block document defaults ``{"$ref": {"block_document_id": ...}}``) are
tolerated and rendered as absent: skylane uses the pool's credentials reference instead.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import referencing.jsonschema
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.validators import Draft202012Validator, validator_for
from referencing import Registry
from referencing.exceptions import Unresolvable

from skylane.errors import InvalidInput
from skylane.security import is_secret_name

__all__ = [
    "merge_job_variables",
    "placeholders",
    "render",
    "resolve_job_configuration",
    "validate_base_job_template",
    "validate_job_variables",
]

# The placeholder grammar of Prefect's templating, so that exactly what Prefect treats as a
# placeholder is one here; anything else between braces (filters, expressions) is plain text.
_PLACEHOLDER = re.compile(r"\{\{\s*([\w.\-\[\]$]+)\s*\}\}")
_PREFECT_PREFIX = "prefect."
_MAX_VALUE_CHARS = 80
_MAX_MESSAGE_CHARS = 300
_PLAIN_KEY = re.compile(r"^[A-Za-z_$][\w\-$]*$")

# Keywords whose value is one schema, a list of schemas, or a name -> schema mapping. Only these
# are walked when checking $refs, because jsonschema never follows a $ref anywhere else (e.g. in
# `default`, where Prefect stores block document references as {"$ref": {...}}).
_SCHEMA_KEYWORDS = frozenset(
    {
        "additionalItems",
        "additionalProperties",
        "contains",
        "contentSchema",
        "else",
        "if",
        "items",
        "not",
        "propertyNames",
        "then",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
_SCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
_SCHEMA_MAP_KEYWORDS = frozenset(
    {"$defs", "definitions", "dependentSchemas", "dependencies", "patternProperties", "properties"}
)


class _Absent:
    """Marks a rendered node whose variable has no value: its parent drops it."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


# --- public API ------------------------------------------------------------------------------


def validate_base_job_template(template: object, *, field: str = "base_job_template") -> dict:
    """Check that ``template`` is a usable base job template and return it unchanged.

    Checks that the template is an object with an object ``job_configuration`` and an object
    ``variables``; that ``variables`` is a valid JSON Schema (of an object, if it states a type)
    whose ``$ref``s resolve inside itself; and that every placeholder in job_configuration names a
    property of ``variables.properties`` (Prefect block references excepted).

    Raises:
        InvalidInput: ``field`` is the dotted path of the problem, e.g.
            ``base_job_template.variables.properties.cpu.type``.
    """
    if not isinstance(template, dict):
        raise InvalidInput(
            f"{field} must be an object with 'job_configuration' and 'variables', "
            f"not {_json_type(template)}",
            field=field,
        )
    for key in ("job_configuration", "variables"):
        path = f"{field}.{key}"
        if key not in template:
            raise InvalidInput(f"{path} is required", field=path)
        if not isinstance(template[key], dict):
            raise InvalidInput(
                f"{path} must be an object, not {_json_type(template[key])}", field=path
            )
    variables = template["variables"]
    _check_variables_schema(variables, f"{field}.variables")
    _check_placeholders(template["job_configuration"], variables, f"{field}.job_configuration")
    return template


def placeholders(job_configuration: object) -> set[str]:
    """Return the name of every variable referenced by a ``{{ name }}`` placeholder.

    Only values are searched, never keys. Prefect references (names starting with ``prefect.``)
    are not variables and are left out.
    """
    return {
        name
        for _, text in _iter_strings(job_configuration, "")
        for name in _PLACEHOLDER.findall(text)
        if not _is_prefect_reference(name)
    }


def merge_job_variables(variables_schema: dict, *layers: dict | None) -> dict:
    """Merge job variables: schema defaults, then each layer in order (later layers win).

    Pass the deployment's job_variables, then the run's. A key in a later layer replaces the
    earlier value, except ``env``, which is merged key by key across all layers (defaults
    included); a ``None`` env entry removes that key, and ``env: None`` changes nothing. ``None``
    layers are skipped. The inputs are never mutated; the result shares no objects with them.
    """
    merged: dict[str, Any] = {}
    properties = variables_schema.get("properties")
    if isinstance(properties, dict):
        for name, schema in properties.items():
            if isinstance(schema, dict) and "default" in schema:
                merged[name] = copy.deepcopy(schema["default"])
    for layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, dict):
            raise InvalidInput(
                f"job_variables must be an object, not {_json_type(layer)}", field="job_variables"
            )
        for key, value in layer.items():
            if key == "env" and value is None:
                continue
            if key == "env" and isinstance(value, dict) and isinstance(merged.get("env"), dict):
                env = merged["env"]
                for env_key, env_value in value.items():
                    if env_value is None:
                        env.pop(env_key, None)
                    else:
                        env[env_key] = copy.deepcopy(env_value)
            elif key == "env" and isinstance(value, dict):
                merged["env"] = {k: copy.deepcopy(v) for k, v in value.items() if v is not None}
            else:
                merged[key] = copy.deepcopy(value)
    return merged


def validate_job_variables(
    variables_schema: dict, values: dict, *, field: str = "job_variables"
) -> None:
    """Validate merged job variables against the template's variables schema.

    The validator class follows the schema's ``$schema`` (Draft 2020-12 when absent) and checks
    formats. ``$ref``s are resolved only inside the schema: nothing is ever fetched.

    Raises:
        InvalidInput: ``field`` is the JSON path of the most relevant error (for a missing
            required property, the path of that property, e.g. ``job_variables.image``);
            ``details["errors"]`` lists every error as ``{"field", "message"}``. Messages never
            echo more than ~80 characters of a value, and none of a write-only or password one.
    """
    validator_cls = validator_for(variables_schema, default=Draft202012Validator)
    # An empty registry: the default one would fetch remote $refs (SSRF from a user template).
    validator = validator_cls(
        variables_schema, format_checker=validator_cls.FORMAT_CHECKER, registry=Registry()
    )
    try:
        errors = list(validator.iter_errors(values))
        best = best_match(errors)
    except Unresolvable:
        # Not str(exc): it may quote the whole schema, defaults included.
        raise InvalidInput(
            "the variables schema has a $ref that cannot be resolved inside it",
            field="base_job_template.variables",
        ) from None
    if best is None:
        return
    described = [_describe_validation_error(error, field) for error in errors]
    best_field, best_message = _describe_validation_error(best, field)
    message = f"{best_field}: {best_message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more; see details.errors)"
    raise InvalidInput(
        message,
        field=best_field,
        details={"errors": [{"field": f, "message": f"{f}: {m}"} for f, m in described]},
    )


def render(job_configuration: dict, values: dict) -> dict:
    """Fill the placeholders of ``job_configuration`` from ``values``; pure, no I/O.

    - A string that is exactly one placeholder becomes the value itself, with its type.
    - A placeholder inside a longer string is replaced by text: ``str`` for scalars,
      ``json.dumps`` for objects and arrays, ``""`` for ``None`` or an absent variable.
    - A whole-string placeholder whose variable is absent from ``values`` is removed from its
      parent object or array, so providers receive no key for an unset variable. Prefect
      references (``{{ prefect.… }}``) and block document values (``{"$ref": {...}}``) count as
      absent.

    Substitution is one pass: a value containing ``{{ other }}`` is inserted as it is. Neither
    input is mutated and the result shares no objects with them.
    """
    rendered = _render_node(job_configuration, values)
    return {} if rendered is _ABSENT else rendered


def resolve_job_configuration(
    template: dict, *layers: dict | None, template_checked: bool = False
) -> tuple[dict, dict]:
    """Merge, validate and render: return ``(values, rendered_job_configuration)``.

    ``layers`` are the deployment's job_variables, then the run's (see `merge_job_variables`).
    ``template_checked=True`` skips re-checking the template itself (by far the costliest step:
    the meta-schema check); pass it only for a template already validated in this form.

    Raises:
        InvalidInput: the template is invalid (``field`` starts with ``base_job_template``) or
            the merged variables do not satisfy its schema (``field`` starts with
            ``job_variables``).
    """
    if not template_checked:
        validate_base_job_template(template)
    values = merge_job_variables(template["variables"], *layers)
    validate_job_variables(template["variables"], values)
    return values, render(template["job_configuration"], values)


# --- template checks -------------------------------------------------------------------------


def _check_variables_schema(variables: dict, path: str) -> None:
    dialect = variables.get("$schema")
    if dialect is not None and not isinstance(dialect, str):
        # validator_for would fail with a TypeError on an unhashable $schema.
        raise InvalidInput(f"{path}.$schema must be a string", field=f"{path}.$schema")
    validator_cls = validator_for(variables, default=Draft202012Validator)
    try:
        validator_cls.check_schema(variables)
    except SchemaError as exc:
        where = _join(path, exc.absolute_path)
        raise InvalidInput(
            f"{where}: {_bounded(_shorten_reprs(exc.message, exc.instance, exc.validator_value))}"
            " (not a valid JSON Schema)",
            field=where,
        ) from None
    stated = variables.get("type")
    if (
        stated is not None
        and stated != "object"
        and not (isinstance(stated, list) and "object" in stated)
    ):
        raise InvalidInput(
            f"{path}.type must be 'object': variables describe an object of job variables",
            field=f"{path}.type",
        )
    if "properties" in variables and not isinstance(variables["properties"], dict):
        raise InvalidInput(f"{path}.properties must be an object", field=f"{path}.properties")
    _check_refs(variables, validator_cls, path)


def _check_refs(variables: dict, validator_cls: type, path: str) -> None:
    """Reject $refs that do not resolve inside the schema, where the failure would otherwise
    surface only when a run is dispatched (and remote ones are never fetched)."""
    specification = referencing.jsonschema.specification_with(
        validator_cls.ID_OF(validator_cls.META_SCHEMA) or "urn:unknown-dialect",
        default=referencing.jsonschema.DRAFT202012,
    )
    resolver = Registry().resolver_with_root(specification.create_resource(variables))

    def walk(schema: object, where: str, resolver: Any) -> None:
        if not isinstance(schema, dict):
            return
        if isinstance(schema.get("$id"), str):
            resolver = resolver.in_subresource(specification.create_resource(schema))
        ref = schema.get("$ref")
        if isinstance(ref, str):
            try:
                resolver.lookup(ref)
            except Unresolvable:
                raise InvalidInput(
                    f"{where}.$ref: {_short(ref)} cannot be resolved; only references inside the "
                    "variables schema (such as '#/definitions/Name') are supported",
                    field=f"{where}.$ref",
                ) from None
        for keyword, sub in schema.items():
            if keyword in _SCHEMA_MAP_KEYWORDS and isinstance(sub, dict):
                for name, child in sub.items():
                    walk(child, _join(f"{where}.{keyword}", [name]), resolver)
            elif keyword in _SCHEMA_LIST_KEYWORDS and isinstance(sub, list):
                for index, child in enumerate(sub):
                    walk(child, f"{where}.{keyword}[{index}]", resolver)
            elif keyword in _SCHEMA_KEYWORDS:
                walk(sub, f"{where}.{keyword}", resolver)

    walk(variables, path, resolver)


def _check_placeholders(job_configuration: dict, variables: dict, path: str) -> None:
    known = variables.get("properties") or {}
    problems = [
        (where, name)
        for where, text in _iter_strings(job_configuration, path)
        for name in _PLACEHOLDER.findall(text)
        if name not in known and not _is_prefect_reference(name)
    ]
    if not problems:
        return
    known_text = ", ".join(sorted(known)) if known else "none (variables has no properties)"

    def describe(where: str, name: str) -> str:
        return (
            f"{where}: placeholder '{{{{ {name} }}}}' names no variable; "
            f"known variables: {known_text}"
        )

    where, name = problems[0]
    raise InvalidInput(
        describe(where, name),
        field=where,
        details={
            "placeholder": name,
            "known_variables": sorted(known),
            "errors": [{"field": w, "message": describe(w, n)} for w, n in problems],
        },
    )


# --- rendering -------------------------------------------------------------------------------


def _render_node(node: Any, values: dict) -> Any:
    if isinstance(node, dict):
        rendered_dict = {}
        for key, child in node.items():
            rendered = _render_node(child, values)
            if rendered is not _ABSENT:
                rendered_dict[key] = rendered
        return rendered_dict
    if isinstance(node, list):
        rendered_list = [_render_node(child, values) for child in node]
        return [item for item in rendered_list if item is not _ABSENT]
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole is not None:
            value = _lookup(whole.group(1), values)
            return _ABSENT if value is _ABSENT else copy.deepcopy(value)
        # re.sub never rescans its replacements: this is what makes substitution one pass.
        return _PLACEHOLDER.sub(lambda match: _as_text(_lookup(match.group(1), values)), node)
    return copy.deepcopy(node)


def _lookup(name: str, values: dict) -> Any:
    if _is_prefect_reference(name) or name not in values:
        return _ABSENT
    value = values[name]
    return _ABSENT if _is_block_document_reference(value) else value


def _as_text(value: Any) -> str:
    if value is _ABSENT or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _is_prefect_reference(name: str) -> bool:
    return name.startswith(_PREFECT_PREFIX)


def _is_block_document_reference(value: Any) -> bool:
    # What Prefect stores as a variable default when a pool points at a block document.
    return (
        isinstance(value, dict)
        and len(value) == 1
        and isinstance(value.get("$ref"), dict)
        and "block_document_id" in value["$ref"]
    )


# --- paths and messages ----------------------------------------------------------------------


def _iter_strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Yield ``(path, string)`` for every string value (not key) under ``node``."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from _iter_strings(child, _join(path, [key]))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _iter_strings(child, f"{path}[{index}]")


def _join(base: str, parts: Iterable[str | int]) -> str:
    """Extend a dotted path: ``a.b[0].c``; keys that are not plain names become ``["x.y"]``."""
    path = base
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            path = f"{path}.{part}" if path else part
        else:
            path += f"[{json.dumps(part)}]"
    return path


def _describe_validation_error(error: ValidationError, field: str) -> tuple[str, str]:
    parts: list[str | int] = list(error.absolute_path)
    if error.validator == "required":
        missing = _missing_required(error)
        if missing is not None:
            parts.append(missing)
    instance_text = None
    if (
        isinstance(error.schema, dict)
        and (error.schema.get("writeOnly") is True or error.schema.get("format") == "password")
    ) or any(is_secret_name(str(part)) for part in parts):
        instance_text = "<redacted value>"
    message = _shorten_reprs(error.message, error.instance, error.validator_value, instance_text)
    return _join(field, parts), _bounded(message)


def _missing_required(error: ValidationError) -> str | None:
    if not isinstance(error.instance, dict) or not isinstance(error.validator_value, list):
        return None
    missing = [name for name in error.validator_value if name not in error.instance]
    # jsonschema yields one error per missing property, worded "'name' is a required property".
    for name in missing:
        if error.message == f"{name!r} is a required property":
            return name
    return missing[0] if missing else None


def _shorten_reprs(
    message: str, instance: Any, schema_value: Any, instance_text: str | None = None
) -> str:
    """Replace the reprs jsonschema puts in its messages by bounded ones."""
    instance_repr = repr(instance)
    if instance_text is not None:
        # Only the first occurrence: a short repr such as `1` also occurs inside other numbers.
        message = message.replace(instance_repr, instance_text, 1)
    elif len(instance_repr) > _MAX_VALUE_CHARS:
        message = message.replace(instance_repr, _short(instance))
    schema_repr = repr(schema_value)
    if len(schema_repr) > _MAX_VALUE_CHARS:
        message = message.replace(schema_repr, _short(schema_value))
    return message


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 1] + "…"


def _bounded(message: str) -> str:
    # Backstop for messages that quote a value in some other form than its repr.
    if len(message) <= _MAX_MESSAGE_CHARS:
        return message
    return message[: _MAX_MESSAGE_CHARS - 1] + "…"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__

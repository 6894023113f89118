"""Deployment entrypoints: parse, load, describe and call `path/to/file.py:function`.

The same entrypoint is handled in three places that do not share memory:

- the CLI, at deployment time, loads the file (`load_entrypoint`) to check the function exists and
  records a JSON Schema of its parameters (`parameter_schema`);
- the server, which never has the code, validates run parameters against that stored schema
  (`validate_parameters`, with jsonschema);
- the runtime inside the container loads the file again and converts the JSON parameters into the
  Python values the signature asks for (`coerce_parameters`, with pydantic in lax mode) before it
  calls the function.

So the schema is the contract between the CLI and the server, and the signature is the contract
inside the container. The server's check is the stricter one on purpose: JSON Schema types are
checked exactly, while the runtime's lax conversion also turns e.g. "2024-01-01" into a datetime.
String formats (`date-time`, ...) are not checked by the server, because pydantic accepts more
spellings than RFC 3339 and the runtime is the one that knows the real type.

Every user-facing failure is an `InvalidInput` whose `field` says where: `entrypoint` for the
entrypoint itself, `parameters.<name>` (or a deeper path) for a parameter.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import json
import keyword
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.validators import Draft202012Validator, validator_for
from pydantic_core import PydanticSerializationError, PydanticUndefined, to_jsonable_python

from skylane.errors import InvalidInput

__all__ = [
    "Entrypoint",
    "call_arguments",
    "coerce_parameters",
    "load_entrypoint",
    "parameter_schema",
    "parse_entrypoint",
    "validate_parameters",
]

_FIELD = "entrypoint"
# Echoed values are cut to this many characters so one huge parameter cannot flood a message.
_MAX_ECHO = 80
# Parameter names that probably hold a secret: their values are never echoed in messages
# (errors.py: messages must not contain secrets).
_SECRET_NAME = re.compile(r"pass(word|wd)?|secret|token|api_?key|credential|private_?key", re.I)
# The JSON Schema key used, inside the pydantic model only, for the value type of `**kwargs`.
# It cannot collide with a parameter name because it is not an identifier.
_KWARGS_KEY = "**kwargs"


# --- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entrypoint:
    """A parsed entrypoint: `path` is a file path (or a dotted module path when `is_module`)."""

    path: str
    function: str
    is_module: bool = False

    def __str__(self) -> str:
        return f"{self.path}:{self.function}"


def parse_entrypoint(value: str) -> Entrypoint:
    """Parse `path/to/file.py:function` or `package.module:function`.

    The last colon separates the path from the function, so a path that contains colons
    (`C:\\flows\\etl.py:etl`) still works. A path without a directory separator that does not end
    in `.py` and is a dotted run of identifiers is a module path (`is_module=True`); anything else
    is a file path, checked when it is loaded.
    """
    if not isinstance(value, str):
        raise InvalidInput(
            f"entrypoint must be a string like 'flows/etl.py:etl', got {type(value).__name__}",
            field=_FIELD,
        )
    text = value.strip()
    if not text:
        raise InvalidInput("entrypoint is empty; expected 'path/to/file.py:function'", field=_FIELD)
    if ":" not in text:
        raise InvalidInput(
            f"entrypoint {text!r} has no ':function' part; "
            f"expected 'path/to/file.py:function', e.g. '{text}:main'",
            field=_FIELD,
        )
    path, _, function = text.rpartition(":")
    path, function = path.strip(), function.strip()
    if not path:
        raise InvalidInput(
            f"entrypoint {text!r} has no path before ':'; expected 'path/to/file.py:function'",
            field=_FIELD,
        )
    if not function:
        raise InvalidInput(
            f"entrypoint {text!r} names no function after ':'; expected 'path/to/file.py:function'",
            field=_FIELD,
        )
    if not _is_identifier(function):
        raise InvalidInput(
            f"entrypoint function {function!r} is not a valid Python function name "
            "(a plain identifier such as 'etl'; methods like 'Class.method' are not supported)",
            field=_FIELD,
        )
    return Entrypoint(path=path, function=function, is_module=_looks_like_module(path))


def _is_identifier(name: str) -> bool:
    # Keywords pass str.isidentifier() but can never be the name of a function.
    return name.isidentifier() and not keyword.iskeyword(name)


def _looks_like_module(path: str) -> bool:
    if "/" in path or "\\" in path or path.endswith(".py"):
        return False
    return all(_is_identifier(part) for part in path.split("."))


# --- loading -----------------------------------------------------------------------------------


def load_entrypoint(
    value: str, base_dir: str | os.PathLike[str] | None = None
) -> Callable[..., Any]:
    """Load the function an entrypoint names and return it (it may be a coroutine function).

    A file path is resolved against `base_dir` (default: the current directory) unless it is
    absolute, and executed as a fresh module under a unique name, so loading two files called
    `flow.py` never mixes them up. The file's directory is put at the front of `sys.path` while it
    executes, so `from helpers import x` finds a sibling `helpers.py`; it is removed again
    afterwards, so imports done later inside the function body must not rely on it. Relative
    imports (`from .helpers import x`) do not work, because the file is not loaded as part of a
    package; use a module path (`package.module:function`) for that.

    A module path is imported with importlib, with `base_dir` (default: the current directory)
    at the front of `sys.path` during the import.

    Raises `InvalidInput(field="entrypoint")` with a message that says what to fix.
    """
    entrypoint = parse_entrypoint(value)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if entrypoint.is_module:
        module = _import_module(entrypoint, base)
        where = f"module {entrypoint.path}"
    else:
        module = _load_file(entrypoint, base)
        where = entrypoint.path
    return _get_function(module, entrypoint, where)


def describe_flow(
    value: str, base_dir: str | os.PathLike[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """(flow name, parameter schema) of an entrypoint, loading it as `load_entrypoint` does.
    The flow name is `@flow(name=...)`'s when given, else the function's. Whatever the module
    prints while it loads goes to stderr: stdout belongs to the caller (a CLI's output)."""
    with contextlib.redirect_stdout(sys.stderr):
        fn = load_entrypoint(value, base_dir)
    name = getattr(fn, "flow_name", None) or getattr(fn, "__name__", None)
    return str(name or parse_entrypoint(value).function), parameter_schema(fn)


def _module_name_for(resolved: Path) -> str:
    """The file's own stem when that names nothing importable, so the flow's
    `logging.getLogger(__name__)` reads as the user wrote it; otherwise a unique name, so
    loading never reuses an earlier module or shadows a real one (a flow file `json.py` must
    not replace the standard library's json)."""
    stem = re.sub(r"\W", "_", resolved.stem)
    if stem.isidentifier() and not keyword.iskeyword(stem) and stem not in sys.modules:
        try:
            importable = importlib.util.find_spec(stem) is not None
        except (ImportError, ValueError):
            importable = True
        if not importable:
            return stem
    return f"skylane_entrypoint_{stem}_{uuid.uuid4().hex[:12]}"


def _load_file(entrypoint: Entrypoint, base: Path) -> Any:
    path = Path(entrypoint.path).expanduser()
    resolved = (path if path.is_absolute() else base / path).resolve()
    if not resolved.exists():
        raise InvalidInput(
            f"entrypoint file {entrypoint.path} does not exist (looked at {resolved})",
            field=_FIELD,
        )
    if resolved.is_dir():
        raise InvalidInput(
            f"entrypoint {entrypoint.path} is a directory ({resolved}), not a .py file",
            field=_FIELD,
        )
    if resolved.suffix != ".py":
        raise InvalidInput(
            f"entrypoint {entrypoint.path} is not a .py file ({resolved}); "
            "expected 'path/to/file.py:function'",
            field=_FIELD,
        )

    module_name = _module_name_for(resolved)
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:  # pragma: no cover - only for non-.py suffixes
        raise InvalidInput(f"cannot load {entrypoint.path} as Python code", field=_FIELD)
    module = importlib.util.module_from_spec(spec)
    # Registered before executing: dataclasses, pydantic forward references and pickling look the
    # module up in sys.modules by name while (and after) the file runs.
    sys.modules[module_name] = module
    directory = str(resolved.parent)
    sys.path.insert(0, directory)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        # SystemExit too: a stray sys.exit() at import time must become a clear error, not
        # silently end the CLI or the runtime. KeyboardInterrupt is left alone.
        sys.modules.pop(module_name, None)
        raise _import_error(entrypoint.path, exc) from exc
    finally:
        # suppress: the module itself may have removed it already; nothing to undo then.
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)
    return module


def _import_module(entrypoint: Entrypoint, base: Path) -> Any:
    # The base directory (default: the current one) is searched first: a CLI's sys.path starts
    # with the directory of its own script, not with the directory the user runs it in.
    directory = str(base.resolve())
    sys.path.insert(0, directory)
    try:
        return importlib.import_module(entrypoint.path)
    except ModuleNotFoundError as exc:
        # Only "the module itself is missing" gets the short message; a missing dependency of the
        # module is an import error of that module like any other.
        if exc.name is not None and (
            entrypoint.path == exc.name or entrypoint.path.startswith(exc.name + ".")
        ):
            raise InvalidInput(
                f"entrypoint module {entrypoint.path} cannot be found "
                f"(searched {directory} and sys.path)",
                field=_FIELD,
            ) from exc
        raise _import_error(f"module {entrypoint.path}", exc) from exc
    except (Exception, SystemExit) as exc:
        raise _import_error(f"module {entrypoint.path}", exc) from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)


def _import_error(where: str, exc: BaseException) -> InvalidInput:
    if isinstance(exc, SyntaxError):
        # The syntax error may be in a sibling module the file imports, so name the file too.
        location = f"line {exc.lineno}" if exc.lineno else "unknown line"
        if exc.filename:
            location = f"{exc.filename}, {location}"
        message = f"{where} has a syntax error: SyntaxError: {exc.msg} ({location})"
        details: dict[str, Any] = {"exception": "SyntaxError", "line": exc.lineno}
    else:
        text = str(exc)
        message = f"importing {where} raised {type(exc).__name__}" + (f": {text}" if text else "")
        details = {"exception": type(exc).__name__}
    return InvalidInput(message, field=_FIELD, details=details)


def _get_function(module: Any, entrypoint: Entrypoint, where: str) -> Callable[..., Any]:
    name = entrypoint.function
    if not hasattr(module, name):
        defined = _defined_callables(module)
        hint = ""
        close = difflib.get_close_matches(name, defined, n=1)
        if close:
            hint = f"; did you mean '{close[0]}'?"
        if defined:
            shown = ", ".join(defined[:10]) + (", ..." if len(defined) > 10 else "")
            listing = f" (it defines: {shown})"
        else:
            listing = " (it defines no functions or classes)"
        raise InvalidInput(
            f"{where} defines no '{name}'{listing}{hint}",
            field=_FIELD,
            details={"defined": defined[:50]},
        )
    obj = getattr(module, name)
    if not callable(obj):
        kind = type(obj).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise InvalidInput(f"'{name}' in {where} is {article} {kind}, not a function", field=_FIELD)
    return obj


def _defined_callables(module: Any) -> list[str]:
    """Public callables defined in the module itself (not the ones it imported), sorted."""
    module_name = module.__name__
    names = []
    for attr, obj in vars(module).items():
        if attr.startswith("_") or not callable(obj):
            continue
        if getattr(obj, "__module__", None) == module_name:
            names.append(attr)
    return sorted(names)


# --- parameter schema --------------------------------------------------------------------------


@dataclass
class _Param:
    name: str
    kind: inspect._ParameterKind
    annotation: Any
    default: Any  # inspect.Parameter.empty when there is none
    note: str | None = None  # why the annotation was replaced by Any, shown as a description

    @property
    def has_default(self) -> bool:
        return self.default is not inspect.Parameter.empty


def parameter_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12, made by pydantic) of the parameters of `fn`.

    The result is `{"type": "object", "title": <function name>, "properties": {...},
    "required": [...], "additionalProperties": ...}` plus `$defs` for nested models, dataclasses
    and enums, and `description` from the docstring's first paragraph.

    - Unannotated parameters accept anything (`{}`), as do parameters whose type pydantic cannot
      describe (arbitrary classes, callables) or whose annotation cannot be evaluated; their
      property says so in `description`.
    - `*args` is ignored: a run passes parameters by name.
    - `**kwargs` makes `additionalProperties` true, or the schema of its annotation
      (`**kwargs: int`); without it, unknown parameters are rejected.
    - A default is recorded as `default` only when it is JSON-serialisable; either way a parameter
      with a default is not required.
    - Positional-only parameters (`def f(a, /)`) are listed like any other: a run still names
      them, and `call_arguments` passes them by position.
    """
    params, var_kw = _parameters(fn)
    model = _model(fn, params, var_kw, for_schema=True)
    generated = model.model_json_schema()
    properties: dict[str, Any] = dict(generated.get("properties", {}))

    additional: bool | dict[str, Any] = False
    if var_kw is not None:
        additional = True
        kwargs_schema = properties.pop(_KWARGS_KEY, None)
        if kwargs_schema is not None and var_kw.annotation is not Any:
            kwargs_schema.pop("title", None)
            additional = kwargs_schema or True

    required: list[str] = []
    for param in params:
        prop = properties[param.name]
        if param.note:
            prop["description"] = param.note
        if param.has_default:
            ok, value = _json_default(param.default)
            if ok:
                prop["default"] = value
        else:
            required.append(param.name)

    schema: dict[str, Any] = {"title": _function_name(fn), "type": "object"}
    description = _summary(fn)
    if description:
        schema["description"] = description
    schema.update(
        {"properties": properties, "required": required, "additionalProperties": additional}
    )
    if generated.get("$defs"):
        schema["$defs"] = generated["$defs"]
    return schema


def _function_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _summary(fn: Callable[..., Any]) -> str | None:
    doc = inspect.getdoc(fn)
    if not doc:
        return None
    return doc.split("\n\n", 1)[0].strip() or None


def _json_default(value: Any) -> tuple[bool, Any]:
    """`(True, json_value)` when a default can be written into the schema, else `(False, None)`."""
    try:
        converted = to_jsonable_python(value)
        json.dumps(converted, allow_nan=False)
    except (PydanticSerializationError, TypeError, ValueError):
        return False, None
    return True, converted


def _parameters(fn: Callable[..., Any]) -> tuple[list[_Param], _Param | None]:
    """The named parameters of `fn` (in order) and its `**kwargs`, annotations evaluated."""
    name = _function_name(fn)
    try:
        signature = inspect.signature(fn, eval_str=True)
        unresolved = False
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot read the parameters of {name!r}: {exc}", field=_FIELD) from exc
    except Exception:
        # One string annotation (`from __future__ import annotations`, or a quoted name) refers to
        # something that does not exist; resolve the others one by one below.
        signature = inspect.signature(fn)
        unresolved = True

    globalns = _globals_of(fn)
    params: list[_Param] = []
    var_kw: _Param | None = None
    for p in signature.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue  # *args: a run passes parameters by name only
        annotation: Any = p.annotation
        note = None
        if annotation is inspect.Parameter.empty:
            annotation = Any
        elif unresolved and isinstance(annotation, str):
            annotation, note = _evaluate(annotation, globalns)
        param = _Param(p.name, p.kind, annotation, p.default, note)
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = param
        else:
            params.append(param)
    return params, var_kw


def _globals_of(fn: Callable[..., Any]) -> dict[str, Any]:
    target = inspect.unwrap(fn) if callable(fn) else fn
    namespace = getattr(target, "__globals__", None)
    if namespace is None:
        module = sys.modules.get(getattr(target, "__module__", "") or "")
        namespace = vars(module) if module is not None else {}
    return namespace


def _evaluate(annotation: str, globalns: dict[str, Any]) -> tuple[Any, str | None]:
    try:
        # The annotation is code from the user's own file, which has already been executed.
        return eval(annotation, dict(globalns)), None  # noqa: S307
    except Exception as exc:
        return Any, (
            f"annotation {annotation!r} could not be evaluated "
            f"({type(exc).__name__}: {exc}); any value is accepted"
        )


def _model(
    fn: Callable[..., Any], params: list[_Param], var_kw: _Param | None, *, for_schema: bool
) -> type[pydantic.BaseModel]:
    """A pydantic model with one field per parameter.

    Fields are named `p0`, `p1`, ... and aliased to the parameter names, so parameters called
    `model_config`, `json` or `_private` cannot clash with BaseModel's own attributes. For the
    schema every field is required (defaults and `required` are filled in afterwards, so a
    default that is not JSON-serialisable never reaches pydantic's schema generator); for
    coercion a parameter with a default gets a placeholder default, and only the fields that
    were actually given (`model_fields_set`) are passed on, so the function's own default
    applies to the others.
    """
    module = _module_of(fn)
    fields: dict[str, Any] = {}
    for index, param in enumerate(params):
        annotation = _usable(param, module, for_schema=for_schema)
        default = None if (param.has_default and not for_schema) else PydanticUndefined
        fields[f"p{index}"] = (annotation, pydantic.Field(default, alias=param.name))
    if for_schema and var_kw is not None:
        annotation = _usable(var_kw, module, for_schema=True)
        fields["kwargs"] = (annotation, pydantic.Field(alias=_KWARGS_KEY))
    config = pydantic.ConfigDict(extra="allow" if var_kw is not None else "forbid")
    return pydantic.create_model(
        _model_name(fn), __config__=config, __module__=module or __name__, **fields
    )


def _module_of(fn: Callable[..., Any]) -> str | None:
    """The name of the module `fn` was defined in, if it is importable by name (for pydantic)."""
    module = getattr(fn, "__module__", None)
    return module if module in sys.modules else None


def _model_name(fn: Callable[..., Any]) -> str:
    name = re.sub(r"\W", "_", _function_name(fn))
    return name if name.isidentifier() else "Parameters"


def _usable(param: _Param, module: str | None, *, for_schema: bool) -> Any:
    """The parameter's annotation, or Any (with a note on `param`) when pydantic can't use it."""
    if param.annotation is Any:
        return Any
    shown = getattr(param.annotation, "__name__", None) or repr(param.annotation)
    try:
        probe = pydantic.create_model(
            "Probe", __module__=module or __name__, value=(param.annotation, ...)
        )
        # pydantic defers names it cannot resolve ('Nope', list["Nope"]) instead of raising, and
        # the model would then fail on first use: treat that like any other unusable type.
        if not probe.__pydantic_complete__:
            param.note = param.note or (
                f"annotation {shown} refers to a name that is not defined; "
                "any value is accepted and passed to the function unchanged"
            )
            return Any
        if for_schema:
            probe.model_json_schema()
    except Exception as exc:
        # Anything pydantic cannot handle (arbitrary classes, callables, broken annotations) must
        # not stop a deployment: the parameter accepts any value and is passed through unchanged.
        reason = _truncate(str(exc).strip().split("\n", 1)[0], 160)
        param.note = param.note or (
            f"type {shown} has no JSON Schema ({type(exc).__name__}: {reason}); "
            "any value is accepted and passed to the function unchanged"
        )
        return Any
    return param.annotation


# --- validation against the stored schema (server side) ----------------------------------------


def validate_parameters(
    schema: Mapping[str, Any] | None, parameters: Any, *, field: str = "parameters"
) -> None:
    """Check run parameters against a stored parameter schema; raise `InvalidInput` if they fail.

    The error's `field` is the path of the most relevant problem under `field`
    (`parameters.count`, `parameters.config.size`, `parameters.items[2]`), its message names the
    parameter and what was expected, and `details["errors"]` lists every problem as
    `{"field", "message"}`. An empty schema accepts anything. Formats (`date-time`, ...) are not
    checked; the runtime converts and checks those values.
    """
    if not schema:
        return
    cls = validator_for(schema, default=Draft202012Validator)
    validator = cls(schema)
    try:
        errors = list(validator.iter_errors(parameters))
    except SchemaError as exc:
        raise InvalidInput(
            f"the stored parameter schema is not a valid JSON Schema: {exc.message}",
            field=field,
        ) from exc
    if not errors:
        return

    problems: list[dict[str, str]] = []
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        problems.extend(_describe(best_match([error]), field))
    best = _describe(best_match(errors), field)[0]
    message = best["message"]
    if len(problems) > 1:
        more = len(problems) - 1
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    raise InvalidInput(message, field=best["field"], details={"errors": problems})


def _describe(error: ValidationError, field: str) -> list[dict[str, str]]:
    """Turn one jsonschema error into one or more `{field, message}` a user can act on."""
    path = list(error.absolute_path)
    instance = error.instance
    keyword = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}

    if keyword == "required" and isinstance(instance, dict):
        missing = [name for name in error.validator_value if name not in instance]
        # jsonschema reports one error per missing name; find the one this error is about.
        name = next((n for n in missing if error.message == f"{n!r} is a required property"), None)
        names = [name] if name is not None else missing
        return [_missing(path + [n], field) for n in names]

    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        extras = [
            key
            for key in instance
            if key not in allowed and not any(re.search(p, key) for p in patterns)
        ]
        return [_unknown(path, key, allowed, field) for key in extras] or [
            {"field": _join(field, path), "message": error.message}
        ]

    label = _label(path)
    secret = _is_secret(path, schema)
    got = "" if secret else f", got {_show(instance)}"
    if keyword == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else str(expected)
        title = schema.get("title") if expected == "object" else None
        if title and path and str(title).lower() != str(path[-1]).lower():
            expected += f" ({title})"
        message = f"{label} must be of type {expected}{got}"
    elif keyword == "enum":
        choices = ", ".join(_show(v, with_type=False) for v in error.validator_value)
        message = f"{label} must be one of {choices}{got}"
    elif keyword == "const":
        message = f"{label} must be {_show(error.validator_value, with_type=False)}{got}"
    elif keyword in ("anyOf", "oneOf"):
        options = [_summarise(s) for s in error.validator_value]
        message = f"{label} must be {' or '.join(o for o in options if o)}{got}"
        if keyword == "oneOf" and not secret:
            message = f"{label} must match exactly one of: {', '.join(options)}{got}"
    elif secret:
        message = f"{label} does not satisfy '{keyword}'"
    else:
        message = f"{label} is invalid: {_truncate(error.message, 200)}"
    return [{"field": _join(field, path), "message": message}]


def _missing(path: list[Any], field: str) -> dict[str, str]:
    name = path[-1]
    if len(path) == 1:
        message = f"missing required parameter '{name}'"
    else:
        message = f"{_label(path[:-1])} is missing required field '{name}'"
    return {"field": _join(field, path), "message": message}


def _unknown(path: list[Any], key: str, allowed: list[str], field: str) -> dict[str, str]:
    if not path:
        takes = ("takes: " + ", ".join(allowed)) if allowed else "takes no parameters"
        message = f"unknown parameter '{key}'; the function {takes}"
    else:
        fields = ", ".join(allowed) if allowed else "none"
        message = f"{_label(path)} has no field '{key}'; its fields are: {fields}"
    return {"field": _join(field, path + [key]), "message": message}


def _summarise(schema: Any) -> str:
    """A short human name for a sub-schema of anyOf/oneOf: `integer`, `null`, `Config`, ..."""
    if not isinstance(schema, dict):
        return "any value" if schema is True else "nothing"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "const" in schema:
        return _show(schema["const"], with_type=False)
    if "enum" in schema:
        return "one of " + ", ".join(_show(v, with_type=False) for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind:
        return f"{kind}" + (f" ({schema['title']})" if "title" in schema else "")
    return "a valid value"


def _label(path: list[Any]) -> str:
    return f"parameter '{_path_text(path)}'" if path else "parameters"


def _path_text(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _join(field: str, path: list[Any]) -> str:
    text = _path_text(path)
    if not text:
        return field
    return field + (text if text.startswith("[") else f".{text}")


def _is_secret(path: list[Any], schema: Mapping[str, Any]) -> bool:
    # pydantic's SecretStr/SecretBytes produce writeOnly + format password.
    if schema.get("writeOnly") or schema.get("format") == "password":
        return True
    return any(isinstance(part, str) and _SECRET_NAME.search(part) for part in path)


def _truncate(text: str, limit: int = _MAX_ECHO) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any, *, with_type: bool = True) -> str:
    shown = _truncate(repr(value))
    return f"{shown} ({type(value).__name__})" if with_type else shown


# --- conversion before the call (runtime side) -------------------------------------------------


def coerce_parameters(fn: Callable[..., Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and convert JSON parameters into the values `fn`'s signature asks for.

    Uses pydantic in lax mode: "2024-01-01" becomes a datetime for a `datetime` parameter, a dict
    becomes the pydantic model or dataclass, "3" becomes 3 for an `int`. Parameters that are
    missing but have a default are left out, so the function's own default applies. Parameters of
    types pydantic cannot handle are passed through unchanged. Extra names are accepted only when
    the function takes `**kwargs` (and converted to its annotation, if any).

    Returns keyword arguments for `fn(**kwargs)`; if `fn` has positional-only parameters, use
    `call_arguments(fn, kwargs)` to split them into `(args, kwargs)`.

    Raises `InvalidInput(field="parameters.<name>")` naming the parameter on failure.
    """
    if not isinstance(parameters, Mapping):
        raise InvalidInput(
            "parameters must be an object mapping parameter names to values, "
            f"got {type(parameters).__name__}",
            field="parameters",
        )
    params, var_kw = _parameters(fn)
    model = _model(fn, params, var_kw, for_schema=False)
    try:
        validated = model.model_validate(dict(parameters), strict=False)
    except pydantic.ValidationError as exc:
        raise _pydantic_error(exc, parameters, [p.name for p in params], prefix=[]) from exc

    result: dict[str, Any] = {}
    for index, param in enumerate(params):
        key = f"p{index}"
        if key in validated.model_fields_set:
            result[param.name] = getattr(validated, key)
    extras = dict(validated.model_extra or {})
    if extras and var_kw is not None:
        annotation = _usable(var_kw, _module_of(fn), for_schema=False)
        if annotation is not Any:
            adapter = pydantic.TypeAdapter(dict[str, annotation])  # type: ignore[valid-type]
            try:
                extras = adapter.validate_python(extras, strict=False)
            except pydantic.ValidationError as exc:
                raise _pydantic_error(exc, extras, [], prefix=[]) from exc
        result.update(extras)
    return result


def call_arguments(
    fn: Callable[..., Any], kwargs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Split coerced parameters into `(args, kwargs)` so `fn(*args, **kwargs)` works.

    Only needed for positional-only parameters (`def f(a, /)`), which Python refuses by name. A
    positional-only parameter that was not given but is followed by one that was gets its own
    default, so the later one can still be passed by position.
    """
    remaining = dict(kwargs)
    positional = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.POSITIONAL_ONLY
    ]
    given = [i for i, p in enumerate(positional) if p.name in remaining]
    args: list[Any] = []
    if given:
        for param in positional[: given[-1] + 1]:
            if param.name in remaining:
                args.append(remaining.pop(param.name))
            elif param.default is not inspect.Parameter.empty:
                args.append(param.default)
            else:
                raise InvalidInput(
                    f"missing required parameter '{param.name}'",
                    field=f"parameters.{param.name}",
                )
    return args, remaining


def _pydantic_error(
    exc: pydantic.ValidationError, data: Any, names: list[str], prefix: list[Any]
) -> InvalidInput:
    problems: dict[str, dict[str, str]] = {}
    reasons: dict[str, list[str]] = {}
    for item in exc.errors(include_url=False):
        kind = item["type"]
        path = prefix + _real_path(item["loc"], data, kind)
        where = _join("parameters", path)
        if kind == "missing":
            problems.setdefault(where, _missing(path, "parameters"))
        elif kind == "extra_forbidden" and len(path) == 1:
            problems.setdefault(where, _unknown([], str(path[0]), names, "parameters"))
        elif kind == "extra_forbidden":
            message = f"{_label(path[:-1])} has no field '{path[-1]}'"
            problems.setdefault(where, {"field": where, "message": message})
        else:
            # A union reports one error per member at the same place: they become one message.
            reasons.setdefault(where, []).append(item["msg"])
            got = "" if _is_secret(path, {}) else f", got {_show(item.get('input'))}"
            message = f"{_label(path)} is invalid: {'; or '.join(reasons[where])}{got}"
            problems[where] = {"field": where, "message": message}
    ordered = list(problems.values())
    first = ordered[0]
    message = first["message"]
    if len(ordered) > 1:
        more = len(ordered) - 1
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return InvalidInput(message, field=first["field"], details={"errors": ordered})


def _real_path(loc: tuple[Any, ...], data: Any, kind: str) -> list[Any]:
    """The part of a pydantic `loc` that is a real path into the input.

    pydantic also puts union members and validator names in `loc` (`('u', 'int')`,
    `function-after[...]`); walking the input tells the real keys from those tags.
    """
    path: list[Any] = []
    current = data
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(current, Mapping) and part in current:
            path.append(part)
            current = current[part]
        elif isinstance(current, (list, tuple)) and isinstance(part, int):
            path.append(part)
            current = current[part] if -len(current) <= part < len(current) else None
        elif last and kind in ("missing", "extra_forbidden"):
            path.append(part)
    return path

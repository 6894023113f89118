"""Tests for skylane.entrypoints: parse, load, schema, server-side validation, runtime coercion.

Flow files are written into tmp_path and loaded the way the CLI and the runtime load them.
"""

from __future__ import annotations

import datetime
import enum
import inspect
import json
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import pydantic
import pytest

from skylane.entrypoints import (
    Entrypoint,
    call_arguments,
    coerce_parameters,
    load_entrypoint,
    parameter_schema,
    parse_entrypoint,
    validate_parameters,
)
from skylane.errors import InvalidInput


@pytest.fixture(autouse=True)
def _isolate_imports():
    """Forget modules a test's flow files imported, so sibling names can be reused."""
    modules = set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    sys.path[:] = path


def write(base: Path, relative: str, source: str) -> Path:
    target = base / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(textwrap.dedent(source))
    return target


# --- parse_entrypoint ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("flows/etl.py:etl", Entrypoint("flows/etl.py", "etl", is_module=False)),
        ("etl.py:main", Entrypoint("etl.py", "main", is_module=False)),
        ("/abs/dir/etl.py:run_it", Entrypoint("/abs/dir/etl.py", "run_it", is_module=False)),
        ("  flows/etl.py : etl  ", Entrypoint("flows/etl.py", "etl", is_module=False)),
        # The last colon separates, so a Windows drive letter stays in the path.
        (r"C:\flows\etl.py:etl", Entrypoint(r"C:\flows\etl.py", "etl", is_module=False)),
        ("odd:dir/etl.py:_private", Entrypoint("odd:dir/etl.py", "_private", is_module=False)),
        ("pkg.module:func", Entrypoint("pkg.module", "func", is_module=True)),
        ("etl:main", Entrypoint("etl", "main", is_module=True)),
    ],
)
def test_parse_accepts_file_and_module_paths(value: str, expected: Entrypoint) -> None:
    assert parse_entrypoint(value) == expected


def test_entrypoint_str_is_the_original_form() -> None:
    assert str(parse_entrypoint("flows/etl.py:etl")) == "flows/etl.py:etl"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("flows/etl.py", "no ':function' part"),
        ("flows/etl.py:", "names no function"),
        (":etl", "no path"),
        ("flows/etl.py:1etl", "not a valid Python function name"),
        ("flows/etl.py:my-flow", "not a valid Python function name"),
        ("flows/etl.py:Class.method", "not a valid Python function name"),
        ("flows/etl.py:class", "not a valid Python function name"),
        (None, "must be a string"),
    ],
)
def test_parse_rejects_bad_forms(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_entrypoint(value)
    assert info.value.field == "entrypoint"
    assert fragment in info.value.message


def test_parse_suggests_the_expected_form_when_the_colon_is_missing() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_entrypoint("flows/etl.py")
    assert "'flows/etl.py:main'" in info.value.message


# --- load_entrypoint -----------------------------------------------------------------------------

SIMPLE = """
    def etl(n: int = 1):
        return n * 2
"""


def test_load_relative_to_base_dir(tmp_path: Path) -> None:
    write(tmp_path, "flows/etl.py", SIMPLE)
    fn = load_entrypoint("flows/etl.py:etl", base_dir=tmp_path)
    assert fn(n=4) == 8


def test_load_relative_to_current_directory_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "flows/etl.py", SIMPLE)
    monkeypatch.chdir(tmp_path)
    assert load_entrypoint("flows/etl.py:etl")(n=5) == 10


def test_load_absolute_path_ignores_base_dir(tmp_path: Path) -> None:
    target = write(tmp_path, "elsewhere/etl.py", SIMPLE)
    other = tmp_path / "unrelated"
    other.mkdir()
    fn = load_entrypoint(f"{target}:etl", base_dir=other)
    assert fn() == 2


def test_sibling_import_works_and_sys_path_is_restored(tmp_path: Path) -> None:
    write(tmp_path, "flows/siblinghelpers.py", "FACTOR = 7\n")
    write(
        tmp_path,
        "flows/etl.py",
        """
        from siblinghelpers import FACTOR

        def etl(n: int):
            return n * FACTOR
        """,
    )
    before = list(sys.path)
    fn = load_entrypoint("flows/etl.py:etl", base_dir=tmp_path)
    assert fn(3) == 21
    assert sys.path == before


def test_two_files_with_the_same_name_do_not_mix(tmp_path: Path) -> None:
    write(tmp_path, "a/flow.py", "def run():\n    return 'a'\n")
    write(tmp_path, "b/flow.py", "def run():\n    return 'b'\n")
    first = load_entrypoint("a/flow.py:run", base_dir=tmp_path)
    second = load_entrypoint("b/flow.py:run", base_dir=tmp_path)
    assert (first(), second()) == ("a", "b")
    assert first.__module__ != second.__module__


def test_load_module_path_from_base_dir(tmp_path: Path) -> None:
    write(tmp_path, "mypkg_ep/__init__.py", "")
    write(
        tmp_path,
        "mypkg_ep/flows.py",
        "from .util import twice\n\ndef etl(n):\n    return twice(n)\n",
    )
    write(tmp_path, "mypkg_ep/util.py", "def twice(n):\n    return 2 * n\n")
    fn = load_entrypoint("mypkg_ep.flows:etl", base_dir=tmp_path)
    assert fn(21) == 42


def test_async_function_loads_and_stays_a_coroutine_function(tmp_path: Path) -> None:
    write(tmp_path, "flows/aetl.py", "async def aetl(n: int) -> int:\n    return n\n")
    fn = load_entrypoint("flows/aetl.py:aetl", base_dir=tmp_path)
    assert callable(fn)
    # The runtime must see this to run it with asyncio instead of calling it directly.
    assert inspect.iscoroutinefunction(fn)
    assert parameter_schema(fn)["required"] == ["n"]


def test_missing_file_names_the_absolute_path_looked_at(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        load_entrypoint("flows/nope.py:etl", base_dir=tmp_path)
    error = info.value
    assert error.field == "entrypoint"
    assert "flows/nope.py does not exist" in error.message
    assert str((tmp_path / "flows" / "nope.py").resolve()) in error.message


def test_not_a_python_file(tmp_path: Path) -> None:
    write(tmp_path, "flows/etl.txt", SIMPLE)
    with pytest.raises(InvalidInput, match=r"not a \.py file") as info:
        load_entrypoint("flows/etl.txt:etl", base_dir=tmp_path)
    assert info.value.field == "entrypoint"


def test_directory_is_not_a_python_file(tmp_path: Path) -> None:
    (tmp_path / "flows.py").mkdir()
    with pytest.raises(InvalidInput, match=r"is a directory .*not a \.py file"):
        load_entrypoint("flows.py:etl", base_dir=tmp_path)


def test_module_raising_on_import_reports_type_and_message(tmp_path: Path) -> None:
    write(tmp_path, "flows/etl.py", "raise ValueError('DATABASE_URL is not set')\n")
    with pytest.raises(InvalidInput) as info:
        load_entrypoint("flows/etl.py:etl", base_dir=tmp_path)
    error = info.value
    assert error.field == "entrypoint"
    assert "importing flows/etl.py raised ValueError: DATABASE_URL is not set" in error.message
    assert isinstance(error.__cause__, ValueError)


def test_failed_import_does_not_leave_the_module_or_path_behind(tmp_path: Path) -> None:
    write(tmp_path, "flows/etl.py", "raise RuntimeError('boom')\n")
    modules, path = set(sys.modules), list(sys.path)
    with pytest.raises(InvalidInput):
        load_entrypoint("flows/etl.py:etl", base_dir=tmp_path)
    assert set(sys.modules) == modules
    assert sys.path == path


def test_missing_dependency_is_an_import_error(tmp_path: Path) -> None:
    write(tmp_path, "flows/etl.py", "import skylane_no_such_dependency\n")
    with pytest.raises(InvalidInput) as info:
        load_entrypoint("flows/etl.py:etl", base_dir=tmp_path)
    assert "ModuleNotFoundError" in info.value.message
    assert "skylane_no_such_dependency" in info.value.message


def test_syntax_error_reports_the_line(tmp_path: Path) -> None:
    write(tmp_path, "flows/etl.py", "x = 1\n\ndef etl(:\n    pass\n")
    with pytest.raises(InvalidInput) as info:
        load_entrypoint("flows/etl.py:etl", base_dir=tmp_path)
    error = info.value
    assert "SyntaxError" in error.message
    assert "line 3" in error.message
    assert error.details["line"] == 3
    assert isinstance(error.__cause__, SyntaxError)


def test_sys_exit_at_import_is_reported_not_obeyed(tmp_path: Path) -> None:
    write(tmp_path, "flows/etl.py", "import sys\nsys.exit(3)\n")
    with pytest.raises(InvalidInput, match="raised SystemExit: 3"):
        load_entrypoint("flows/etl.py:etl", base_dir=tmp_path)


def test_missing_function_lists_what_the_file_defines(tmp_path: Path) -> None:
    write(
        tmp_path,
        "flows/etl.py",
        """
        import os
        from json import dumps

        def extract():
            pass

        def transform():
            pass

        class Loader:
            pass

        def _hidden():
            pass
        """,
    )
    with pytest.raises(InvalidInput) as info:
        load_entrypoint("flows/etl.py:etl", base_dir=tmp_path)
    message = info.value.message
    assert info.value.field == "entrypoint"
    assert message.startswith("flows/etl.py defines no 'etl'")
    assert "extract, transform" in message
    assert "Loader" in message
    # Imported names and private helpers are not what the user is looking for.
    assert "dumps" not in message
    assert "_hidden" not in message


def test_missing_function_suggests_a_close_name(tmp_path: Path) -> None:
    write(tmp_path, "flows/etl.py", "def etl_flow():\n    pass\n")
    with pytest.raises(InvalidInput, match="did you mean 'etl_flow'"):
        load_entrypoint("flows/etl.py:etl_flw", base_dir=tmp_path)


def test_attribute_that_is_not_callable(tmp_path: Path) -> None:
    write(tmp_path, "flows/etl.py", "x = 5\nname = 'etl'\n")
    with pytest.raises(InvalidInput) as info:
        load_entrypoint("flows/etl.py:x", base_dir=tmp_path)
    assert info.value.message == "'x' in flows/etl.py is an int, not a function"
    with pytest.raises(InvalidInput, match="'name' in flows/etl.py is a str, not a function"):
        load_entrypoint("flows/etl.py:name", base_dir=tmp_path)


def test_missing_module_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        load_entrypoint("skylane_missing_pkg.flows:etl", base_dir=tmp_path)
    assert info.value.field == "entrypoint"
    assert "module skylane_missing_pkg.flows cannot be found" in info.value.message


# --- parameter_schema ----------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Config(pydantic.BaseModel):
    size: int
    label: str = "x"


@dataclass
class Window:
    start: int
    end: int


class Opaque:
    """An arbitrary class pydantic has no schema for."""


def everything(
    count: int,
    name: str,
    ratio: float = 0.5,
    flag: bool = False,
    maybe: Optional[int] = None,  # noqa: UP045 - the old spelling must work too
    items: list[int] | None = None,
    weights: dict[str, float] | None = None,
    when: datetime.datetime | None = None,
    colour: Colour = Colour.RED,
    mode: Literal["fast", "slow"] = "fast",
    config: Config | None = None,
    window: Window | None = None,
) -> None:
    """Do everything.

    More text that is not part of the summary.
    """


def test_schema_shape_title_required_and_defaults() -> None:
    schema = parameter_schema(everything)
    assert schema["type"] == "object"
    assert schema["title"] == "everything"
    assert schema["description"] == "Do everything."
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["count", "name"]
    assert list(schema["properties"]) == [
        "count", "name", "ratio", "flag", "maybe", "items", "weights", "when", "colour",
        "mode", "config", "window",
    ]  # fmt: skip
    props = schema["properties"]
    assert props["ratio"]["default"] == 0.5
    assert props["flag"]["default"] is False
    assert props["maybe"]["default"] is None
    assert props["colour"]["default"] == "red"  # the enum's JSON value
    assert "default" not in props["count"]


def test_schema_types() -> None:
    props = parameter_schema(everything)["properties"]
    assert props["count"]["type"] == "integer"
    assert props["name"]["type"] == "string"
    assert props["ratio"]["type"] == "number"
    assert props["flag"]["type"] == "boolean"
    assert {"type": "integer"} in props["maybe"]["anyOf"]
    assert {"type": "null"} in props["maybe"]["anyOf"]
    assert {"type": "array", "items": {"type": "integer"}} in props["items"]["anyOf"]
    assert {"type": "object", "additionalProperties": {"type": "number"}} in props["weights"][
        "anyOf"
    ]
    assert {"type": "string", "format": "date-time"} in props["when"]["anyOf"]
    assert props["mode"]["enum"] == ["fast", "slow"]


def test_schema_defs_for_enum_model_and_dataclass() -> None:
    schema = parameter_schema(everything)
    defs = schema["$defs"]
    assert schema["properties"]["colour"]["$ref"] == "#/$defs/Colour"
    assert defs["Colour"]["enum"] == ["red", "green"]
    assert {"$ref": "#/$defs/Config"} in schema["properties"]["config"]["anyOf"]
    assert defs["Config"]["required"] == ["size"]
    assert defs["Config"]["properties"]["size"]["type"] == "integer"
    assert {"$ref": "#/$defs/Window"} in schema["properties"]["window"]["anyOf"]
    assert defs["Window"]["required"] == ["start", "end"]


def test_schema_round_trips_through_json() -> None:
    schema = parameter_schema(everything)
    assert json.loads(json.dumps(schema)) == schema


def test_kwargs_allow_additional_properties_and_args_are_ignored() -> None:
    def loose(a: int, *args: int, **kwargs):
        pass

    def typed(a: int, **kwargs: float):
        pass

    schema = parameter_schema(loose)
    assert list(schema["properties"]) == ["a"]
    assert schema["additionalProperties"] is True
    assert parameter_schema(typed)["additionalProperties"] == {"type": "number"}


def test_unannotated_parameters_accept_anything() -> None:
    def f(a, b=3):
        pass

    schema = parameter_schema(f)
    assert schema["required"] == ["a"]
    assert "type" not in schema["properties"]["a"]
    assert schema["properties"]["b"]["default"] == 3
    validate_parameters(schema, {"a": [1, {"x": None}], "b": "anything"})


def test_non_json_default_is_left_out_but_not_required() -> None:
    sentinel = object()

    def f(a: Any = sentinel, b: datetime.date = datetime.date(2024, 1, 2)):
        pass

    schema = parameter_schema(f)
    assert "default" not in schema["properties"]["a"]
    assert schema["properties"]["b"]["default"] == "2024-01-02"
    assert schema["required"] == []
    json.dumps(schema)


def test_arbitrary_class_becomes_any_with_a_note() -> None:
    def f(thing: Opaque, n: int = 1):
        pass

    schema = parameter_schema(f)
    thing = schema["properties"]["thing"]
    assert "type" not in thing and "$ref" not in thing
    assert "Opaque has no JSON Schema" in thing["description"]
    assert schema["properties"]["n"]["type"] == "integer"
    json.dumps(schema)


def test_parameter_names_that_clash_with_pydantic_attributes() -> None:
    def f(model_config: int, json: str, _private: bool = True):
        pass

    schema = parameter_schema(f)
    assert list(schema["properties"]) == ["model_config", "json", "_private"]
    assert schema["properties"]["model_config"]["type"] == "integer"
    assert coerce_parameters(f, {"model_config": "2", "json": "j"}) == {
        "model_config": 2,
        "json": "j",
    }


def test_positional_only_parameters_are_properties_and_can_be_called() -> None:
    def f(a: int, b: int = 2, /, c: int = 3):
        return (a, b, c)

    schema = parameter_schema(f)
    assert list(schema["properties"]) == ["a", "b", "c"]
    assert schema["required"] == ["a"]
    kwargs = coerce_parameters(f, {"a": "1", "c": 9})
    args, rest = call_arguments(f, kwargs)
    assert (args, rest) == ([1], {"c": 9})
    assert f(*args, **rest) == (1, 2, 9)


def test_schema_of_a_loaded_file_with_postponed_annotations(tmp_path: Path) -> None:
    write(
        tmp_path,
        "flows/etl.py",
        """
        from __future__ import annotations

        import datetime
        import pydantic

        class Target(pydantic.BaseModel):
            table: str
            rows: int = 0

        def etl(target: Target, since: datetime.date, missing: Nope = None, limit: int = 10):
            return target, since, limit
        """,
    )
    fn = load_entrypoint("flows/etl.py:etl", base_dir=tmp_path)
    schema = parameter_schema(fn)
    assert schema["properties"]["target"]["$ref"] == "#/$defs/Target"
    assert schema["properties"]["since"] == {"format": "date", "title": "Since", "type": "string"}
    assert "not defined" in schema["properties"]["missing"]["description"]
    assert schema["required"] == ["target", "since"]

    kwargs = coerce_parameters(fn, {"target": {"table": "t"}, "since": "2024-05-01"})
    target, since, limit = fn(**kwargs)
    assert target.table == "t" and type(target).__name__ == "Target"
    assert since == datetime.date(2024, 5, 1)
    assert limit == 10


def test_callable_without_a_readable_signature_is_reported() -> None:
    class NoSignature:
        __signature__ = "not a signature"

        def __call__(self) -> None:
            pass

    with pytest.raises(InvalidInput, match="cannot read the parameters") as info:
        parameter_schema(NoSignature())
    assert info.value.field == "entrypoint"


# --- validate_parameters -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    # As the server has it: stored as JSON, read back.
    return json.loads(json.dumps(parameter_schema(everything)))


def test_valid_parameters_pass(schema: dict[str, Any]) -> None:
    validate_parameters(
        schema,
        {
            "count": 3,
            "name": "n",
            "maybe": None,
            "items": [1, 2],
            "weights": {"a": 1.5},
            "when": "2024-01-01T00:00:00Z",
            "colour": "green",
            "mode": "slow",
            "config": {"size": 2},
            "window": {"start": 1, "end": 2},
        },
    )


def test_wrong_type_names_the_parameter_and_the_type(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, {"count": "abc", "name": "n"})
    error = info.value
    assert error.field == "parameters.count"
    assert error.message == "parameter 'count' must be of type integer, got 'abc' (str)"
    assert error.details["errors"] == [{"field": "parameters.count", "message": error.message}]
    assert error.to_dict()["field"] == "parameters.count"


def test_unknown_parameter_lists_the_known_ones() -> None:
    def f(a: int, b: str = "x"):
        pass

    with pytest.raises(InvalidInput) as info:
        validate_parameters(parameter_schema(f), {"a": 1, "colour": "red"})
    assert info.value.field == "parameters.colour"
    assert info.value.message == "unknown parameter 'colour'; the function takes: a, b"


def test_missing_required_parameter(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, {"name": "n"})
    assert info.value.field == "parameters.count"
    assert info.value.message == "missing required parameter 'count'"


def test_nested_model_error_has_the_full_path(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, {"count": 1, "name": "n", "config": {"size": "big"}})
    assert info.value.field == "parameters.config.size"
    assert "'config.size' must be of type integer, got 'big' (str)" in info.value.message

    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, {"count": 1, "name": "n", "window": {"start": 1}})
    assert info.value.field == "parameters.window.end"
    assert "missing required field 'end'" in info.value.message


def test_list_item_error_uses_an_index(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, {"count": 1, "name": "n", "items": [1, "two"]})
    assert info.value.field == "parameters.items[1]"


def test_optional_and_enum_messages_say_what_is_allowed(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, {"count": 1, "name": "n", "maybe": "x"})
    assert info.value.message == "parameter 'maybe' must be integer or null, got 'x' (str)"
    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, {"count": 1, "name": "n", "colour": "blue"})
    assert info.value.field == "parameters.colour"
    assert "must be one of 'red', 'green', got 'blue'" in info.value.message


def test_all_errors_are_listed(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, {"count": "x", "flag": "yes", "extra": 1})
    fields = {e["field"] for e in info.value.details["errors"]}
    assert fields == {"parameters.count", "parameters.flag", "parameters.extra", "parameters.name"}
    assert "(and 3 more problems)" in info.value.message


def test_long_values_are_truncated(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, {"count": "9" * 500, "name": "n"})
    assert len(info.value.message) < 200
    assert "..." in info.value.message


def test_secret_values_are_not_echoed() -> None:
    def f(api_token: int, password: pydantic.SecretStr):
        pass

    with pytest.raises(InvalidInput) as info:
        validate_parameters(parameter_schema(f), {"api_token": "hunter2", "password": 12345})
    text = json.dumps(info.value.to_dict())
    assert "hunter2" not in text and "12345" not in text
    fields = {e["field"] for e in info.value.details["errors"]}
    assert fields == {"parameters.api_token", "parameters.password"}
    with pytest.raises(InvalidInput) as info:
        coerce_parameters(f, {"api_token": "hunter2", "password": "s"})
    assert info.value.field == "parameters.api_token"
    assert "hunter2" not in json.dumps(info.value.to_dict())


def test_field_prefix_and_non_object_parameters(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, {"count": "x", "name": "n"}, field="schedules[0].parameters")
    assert info.value.field == "schedules[0].parameters.count"
    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, [1, 2])
    assert info.value.field == "parameters"
    assert "must be of type object" in info.value.message


def test_empty_schema_accepts_anything() -> None:
    validate_parameters({}, {"whatever": object()})
    validate_parameters({}, {})


def test_kwargs_schema_accepts_extra_names() -> None:
    def f(a: int, **kwargs: int):
        pass

    schema = parameter_schema(f)
    validate_parameters(schema, {"a": 1, "b": 2})
    with pytest.raises(InvalidInput) as info:
        validate_parameters(schema, {"a": 1, "b": "two"})
    assert info.value.field == "parameters.b"


# --- coerce_parameters ---------------------------------------------------------------------------


def test_coerce_converts_to_the_annotated_types() -> None:
    kwargs = coerce_parameters(
        everything,
        {
            "count": "3",
            "name": "n",
            "when": "2024-01-01",
            "colour": "green",
            "config": {"size": "2"},
            "window": {"start": 1, "end": 2},
            "items": [1, "2"],
        },
    )
    assert kwargs["count"] == 3
    assert kwargs["when"] == datetime.datetime(2024, 1, 1)
    assert kwargs["colour"] is Colour.GREEN
    assert kwargs["config"] == Config(size=2)
    assert kwargs["window"] == Window(1, 2)
    assert kwargs["items"] == [1, 2]


def test_coerce_leaves_out_missing_defaults_so_the_function_default_applies() -> None:
    def f(a: int, b: list[int] | None = None, c: str = "c"):
        return a, b, c

    kwargs = coerce_parameters(f, {"a": 1})
    assert kwargs == {"a": 1}
    assert f(**kwargs) == (1, None, "c")


def test_coerce_bad_value_names_the_parameter() -> None:
    with pytest.raises(InvalidInput) as info:
        coerce_parameters(everything, {"count": "abc", "name": "n"})
    error = info.value
    assert error.field == "parameters.count"
    assert "parameter 'count' is invalid" in error.message
    assert "valid integer" in error.message
    assert "got 'abc' (str)" in error.message


def test_coerce_nested_error_path_and_union_tags() -> None:
    def f(config: Config, u: int | bool = 0):
        pass

    with pytest.raises(InvalidInput) as info:
        coerce_parameters(f, {"config": {"size": "big"}, "u": []})
    fields = [e["field"] for e in info.value.details["errors"]]
    assert info.value.field == "parameters.config.size"
    # pydantic reports a union as ('u', 'int') and ('u', 'bool'); the user sees one parameter.
    assert fields == ["parameters.config.size", "parameters.u"]


def test_coerce_missing_and_unknown_parameters() -> None:
    def f(n: int):
        pass

    with pytest.raises(InvalidInput) as info:
        coerce_parameters(f, {})
    assert info.value.field == "parameters.n"
    assert info.value.message == "missing required parameter 'n'"
    with pytest.raises(InvalidInput) as info:
        coerce_parameters(f, {"n": 1, "m": 2})
    assert info.value.field == "parameters.m"
    assert "unknown parameter 'm'; the function takes: n" in info.value.message


def test_coerce_kwargs_and_passthrough_of_unknown_types() -> None:
    def f(thing: Opaque, **kwargs: int):
        pass

    marker = {"raw": True}
    kwargs = coerce_parameters(f, {"thing": marker, "extra": "5"})
    assert kwargs["thing"] is marker
    assert kwargs["extra"] == 5
    with pytest.raises(InvalidInput) as info:
        coerce_parameters(f, {"thing": 1, "extra": "five"})
    assert info.value.field == "parameters.extra"


def test_coerce_rejects_non_mapping_parameters() -> None:
    with pytest.raises(InvalidInput) as info:
        coerce_parameters(everything, ["count"])  # type: ignore[arg-type]
    assert info.value.field == "parameters"


def test_what_the_server_accepts_the_runtime_can_call() -> None:
    calls: list[tuple[Any, ...]] = []

    def flow(when: datetime.datetime, config: Config, tags: list[str] | None = None):
        calls.append((when, config, tags))

    stored = json.loads(json.dumps(parameter_schema(flow)))
    parameters = {"when": "2024-03-04T05:06:07+00:00", "config": {"size": 1}}
    validate_parameters(stored, parameters)
    flow(**coerce_parameters(flow, parameters))
    assert calls == [
        (datetime.datetime(2024, 3, 4, 5, 6, 7, tzinfo=datetime.UTC), Config(size=1), None)
    ]


def test_models_with_forward_references_in_a_loaded_file(tmp_path: Path) -> None:
    # pydantic resolves `Later` when the model is first used, through sys.modules[__module__]:
    # the loaded file must stay registered under its module name for that to work.
    write(
        tmp_path,
        "flows/refs.py",
        """
        from __future__ import annotations

        import pydantic

        class Outer(pydantic.BaseModel):
            inner: Later

        class Later(pydantic.BaseModel):
            n: int

        def flow(outer: Outer):
            return outer.inner.n
        """,
    )
    fn = load_entrypoint("flows/refs.py:flow", base_dir=tmp_path)
    schema = parameter_schema(fn)
    assert schema["$defs"]["Outer"]["properties"]["inner"] == {"$ref": "#/$defs/Later"}
    assert fn(**coerce_parameters(fn, {"outer": {"inner": {"n": "4"}}})) == 4


def test_objects_of_a_loaded_file_can_be_pickled(tmp_path: Path) -> None:
    # multiprocessing pickles by module name: the loaded file must be findable in sys.modules.
    write(
        tmp_path,
        "flows/pick.py",
        """
        import pickle
        from dataclasses import dataclass

        @dataclass
        class Point:
            x: int

        def flow():
            return pickle.loads(pickle.dumps(Point(3))).x
        """,
    )
    assert load_entrypoint("flows/pick.py:flow", base_dir=tmp_path)() == 3


def test_flow_module_is_named_after_its_file_so_loggers_read_naturally(tmp_path: Path) -> None:
    name = f"nightly_etl_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def flow():\n    return __name__\n")

    fn = load_entrypoint(f"{name}.py:flow", base_dir=tmp_path)

    assert fn() == name


def test_flow_file_named_like_a_real_module_never_shadows_it(tmp_path: Path) -> None:
    import json as real_json

    (tmp_path / "json.py").write_text("def flow():\n    return __name__\n")

    fn = load_entrypoint("json.py:flow", base_dir=tmp_path)

    assert fn() != "json"
    assert sys.modules["json"] is real_json

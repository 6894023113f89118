"""The project file `skylane.yaml`: what `skylane deploy` builds and registers.

    name: etl                      # project name (also the default image repository name)
    build: {...}                   # BuildSettings: image, base image, Dockerfile, platform, ...
    deployments: [...]             # DeploymentSpec: name, entrypoint, pool, schedules, ...

`load_project_file(path)` reads and validates it. Every problem is reported at once, each with the
field path (`deployments[1].schedules[0].cron`) and the line of the file where that field is: an
`InvalidInput` whose `field` is the first problem's path and whose `details["errors"]` lists them
all as `{"field", "line", "message"}`. Values under secret-looking keys are never echoed.

Relative paths (`build.dockerfile`, `build.requirements`, the entrypoint's file) are resolved
against the directory of the project file. `starter_file(name)` is the commented file that
`skylane init` writes.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from skylane.api.schemas import NAME_PATTERN, ScheduleCreate
from skylane.entrypoints import parse_entrypoint
from skylane.errors import InvalidInput
from skylane.images.reference import parse_reference
from skylane.models import GitSource, SecretReference
from skylane.schedules import CatchUp, ScheduleSpec, check_timezone, parse_schedule

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "DEFAULT_PLATFORM",
    "DEFAULT_REQUIREMENTS",
    "PROJECT_FILE_NAME",
    "BuildSettings",
    "DeploymentSpec",
    "GitSource",
    "ProjectFile",
    "ScheduleEntry",
    "SecretRef",
    "load_project_file",
    "parse_project_file",
    "starter_file",
    "validate_project",
]

PROJECT_FILE_NAME = "skylane.yaml"
DEFAULT_BASE_IMAGE = "python:3.12-slim"
DEFAULT_PLATFORM = "linux/amd64"
DEFAULT_REQUIREMENTS = "requirements.txt"

_NAME = re.compile(NAME_PATTERN)
_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$")
# PnW / PnD / PTnHnMnS; years and months are left out on purpose: their length varies.
_DURATION = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api_?key|credential|private_?key", re.I)


def _invalid(message: str) -> PydanticCustomError:
    # No context: the message is used as is (no "Value error, " prefix, no formatting).
    return PydanticCustomError("invalid", message)


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise _invalid(
            "must start with a letter or digit and contain only letters, digits, '_', '.' "
            "and '-' (at most 200 characters)"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]


class _Spec(BaseModel):
    # A typo is an error naming the unknown key, never a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


# --- build ---------------------------------------------------------------------------------


class BuildSettings(_Spec):
    """How the image is built. `image` None means "the pool's provisioned registry + the
    project name", resolved at deploy time."""

    image: str | None = Field(default=None, description="Image name without tag.")
    base_image: str = DEFAULT_BASE_IMAGE
    dockerfile: str | None = Field(default=None, description="Relative to the project dir.")
    requirements: str | None = Field(
        default=None,
        description="Relative to the project dir; requirements.txt when left out and present.",
    )
    platform: str = DEFAULT_PLATFORM
    ignore: list[str] = Field(default_factory=list, description="Extra glob patterns to leave out.")
    builder: Literal["auto", "docker", "daemonless"] = Field(
        default="auto",
        description="docker: `docker build` (needs an engine); daemonless: no engine, "
        "reproducible; auto: docker when an engine answers, else daemonless.",
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is None:
            return None
        ref = _reference(value)
        if ref.tag or ref.digest:
            raise _invalid(
                "must be an image name without tag or digest (the tag is chosen at build time), "
                "e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/etl"
            )
        return value

    @field_validator("base_image")
    @classmethod
    def _base_image(cls, value: str) -> str:
        _reference(value)
        return value

    @field_validator("platform")
    @classmethod
    def _platform(cls, value: str) -> str:
        if not _PLATFORM.match(value):
            raise _invalid(
                f"platform {value!r} is not of the form os/arch[/variant], e.g. linux/amd64 "
                "or linux/arm64"
            )
        return value

    @field_validator("dockerfile", "requirements")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise _invalid("must be a path relative to the project directory, not empty")
        return value


def _reference(value: str) -> Any:
    try:
        return parse_reference(value)
    except InvalidInput as exc:
        raise _invalid(exc.message) from None


# --- schedules -----------------------------------------------------------------------------


def _parsed(spec: ScheduleSpec) -> None:
    try:
        parse_schedule(spec)
    except InvalidInput as exc:
        raise _invalid(exc.message) from None


class ScheduleEntry(_Spec):
    """Exactly one of `cron`, `interval` (seconds, or an ISO 8601 duration such as PT15M) and
    `rrule`; the same fields as the API's `ScheduleCreate` otherwise."""

    cron: str | None = None
    interval: int | None = None
    rrule: str | None = None
    timezone: str = "UTC"
    active: bool = True
    parameters: dict[str, Any] = Field(default_factory=dict)
    catchup: CatchUp = CatchUp.LATEST

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            _parsed(ScheduleSpec(cron=value))
        return value

    @field_validator("rrule")
    @classmethod
    def _rrule(cls, value: str | None) -> str | None:
        if value is not None:
            _parsed(ScheduleSpec(rrule=value))
        return value

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise _invalid("must be a number of seconds or an ISO 8601 duration such as PT15M")
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, str):
            match = _DURATION.match(value.strip())
            if not match or value.strip() in ("P", "PT") or value.strip().endswith("T"):
                raise _invalid(
                    f"{value!r} is not a number of seconds or an ISO 8601 duration such as "
                    "PT15M, PT1H30M or P1D (years and months are not supported)"
                )
            parts = {k: int(v or 0) for k, v in match.groupdict().items()}
            value = (
                parts["w"] * 604800 + parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60
            ) + parts["s"]
        _parsed(ScheduleSpec(interval_seconds=value))
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            check_timezone(value, field="timezone")
        except InvalidInput as exc:
            raise _invalid(exc.message) from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ScheduleEntry:
        given = [k for k in ("cron", "interval", "rrule") if getattr(self, k) is not None]
        if len(given) != 1:
            got = "none" if not given else " and ".join(given)
            raise _invalid(f"give exactly one of cron, interval or rrule (got {got})")
        return self

    def to_schedule_create(self) -> ScheduleCreate:
        """The API request body for this schedule."""
        return ScheduleCreate(
            cron=self.cron,
            interval_seconds=self.interval,
            rrule=self.rrule,
            timezone=self.timezone,
            parameters=self.parameters,
            active=self.active,
            catchup=self.catchup,
        )


# --- code source ---------------------------------------------------------------------------


# The same models as the API's: one set of rules for a `source` wherever it is written.
SecretRef = SecretReference

# --- deployments and project ---------------------------------------------------------------


class DeploymentSpec(_Spec):
    name: Name
    entrypoint: str = Field(description="path/to/file.py:function")
    pool: Name
    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    schedules: list[ScheduleEntry] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    concurrency_limit: int | None = Field(default=None, ge=0)
    source: GitSource | None = None
    image: str | None = Field(default=None, description="Overrides the built image.")

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, value: str) -> str:
        try:
            parse_entrypoint(value)
        except InvalidInput as exc:
            raise _invalid(exc.message) from None
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None:
            _reference(value)
        return value


class ProjectFile(_Spec):
    name: Name
    build: BuildSettings = Field(default_factory=BuildSettings)
    deployments: list[DeploymentSpec] = Field(min_length=1)

    def deployment(self, name: str) -> DeploymentSpec:
        for spec in self.deployments:
            if spec.name == name:
                return spec
        raise InvalidInput(f"no deployment named {name!r} in the project file", field="name")


# --- loading -------------------------------------------------------------------------------

_Where = tuple[str | int, ...]


def load_project_file(path: str | Path, *, check_files: bool = True) -> ProjectFile:
    """Read and validate a project file; InvalidInput listing every problem with its line.

    With `check_files` (the default) the Dockerfile, requirements file and entrypoint files must
    exist relative to the file's directory; `build.requirements` left out becomes
    `requirements.txt` when that file exists.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"project file {file} does not exist", field=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read project file {file}: {exc}", field=str(file)) from None
    return parse_project_file(
        text, base_dir=file.parent if check_files else None, filename=str(file)
    )


def parse_project_file(
    text: str, *, base_dir: str | Path | None = None, filename: str = PROJECT_FILE_NAME
) -> ProjectFile:
    """Validate project file `text`. Files are checked against `base_dir` when given."""
    data, lines = _compose(text, filename)
    return _validate(data, lines, base_dir=base_dir, filename=filename)


def validate_project(
    data: Any, *, base_dir: str | Path | None = None, what: str = "the deployment"
) -> ProjectFile:
    """Validate a project given as data (the SDK's `Flow.deploy`), with the same checks and
    messages as a file, without line numbers."""
    return _validate(data, _Lines(), base_dir=base_dir, filename=what, numbered=False)


def _validate(
    data: Any,
    lines: _Lines,
    *,
    base_dir: str | Path | None,
    filename: str,
    numbered: bool = True,
) -> ProjectFile:
    errors: dict[str, tuple[int, str]] = {}

    def add(where: _Where, message: str, line: int | None = None) -> None:
        errors.setdefault(_join(where), (line or _line_of(where, lines), message))

    for where, line, message in lines.duplicates:
        add(where, message, line)
    if data is None:
        raise _report(filename, {"": (1, "the project file is empty; see `skylane init`")})

    model: ProjectFile | None = None
    try:
        model = ProjectFile.model_validate(data)
    except pydantic.ValidationError as exc:
        for item in exc.errors(include_url=False):
            where = _real_path(item["loc"], data, item["type"])
            add(where, _message(item, where))
    _check_duplicate_names(data, add)
    if base_dir is not None:
        _check_files(data, Path(base_dir), add)
    if errors:
        raise _report(filename, errors, numbered=numbered)
    assert model is not None
    if (
        base_dir is not None
        and "requirements" not in model.build.model_fields_set
        and (Path(base_dir) / DEFAULT_REQUIREMENTS).is_file()
    ):
        model.build.requirements = DEFAULT_REQUIREMENTS
    return model


class _Lines:
    """Where each field path is in the YAML text (1-based lines)."""

    def __init__(self) -> None:
        self.at: dict[_Where, int] = {}
        self.duplicates: list[tuple[_Where, int, str]] = []


def _compose(text: str, filename: str) -> tuple[Any, _Lines]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        # Only the problem, never the snippet of the line: it could hold a secret.
        problem = exc.problem or exc.context or "not valid YAML"
        raise InvalidInput(
            f"{filename}{where}: YAML syntax error: {problem}",
            field=filename,
            details={"file": filename, "line": mark.line + 1 if mark else None},
        ) from None
    except yaml.YAMLError:
        raise InvalidInput(f"{filename}: not valid YAML", field=filename) from None
    finally:
        loader.dispose()
    lines = _Lines()
    if node is not None:
        lines.at[()] = node.start_mark.line + 1
        _walk(node, (), lines)
    return data, lines


def _walk(node: yaml.Node, where: _Where, lines: _Lines) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            child = (*where, key)
            if key in seen:
                line = key_node.start_mark.line + 1
                lines.duplicates.append((child, line, f"key {key!r} is given more than once"))
            else:
                # The key's line: a block value starts on the next line.
                lines.at[child] = key_node.start_mark.line + 1
            seen.add(key)
            _walk(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.at[(*where, index)] = item.start_mark.line + 1
            _walk(item, (*where, index), lines)


def _line_of(where: _Where, lines: _Lines) -> int:
    # A missing field is reported at its nearest ancestor that is in the file.
    for cut in range(len(where), -1, -1):
        line = lines.at.get(where[:cut])
        if line is not None:
            return line
    return 1


def _join(where: _Where) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _real_path(loc: tuple[Any, ...], data: Any, kind: str) -> _Where:
    """The part of a pydantic `loc` that is a path into the data (drops union and validator
    tags such as `function-after[...]`)."""
    where: list[str | int] = []
    current = data
    for position, part in enumerate(loc):
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            where.append(part)
            current = current[part]
        elif position == len(loc) - 1 and kind in ("missing", "extra_forbidden"):
            where.append(part)
    return tuple(where)


_TYPE_NAMES = {
    "dict": "a mapping",
    "list": "a list",
    "str": "text",
    "int": "a whole number",
    "bool": "true or false",
    "NoneType": "nothing (null)",
    "float": "a number",
}


def _message(item: Any, where: _Where) -> str:
    kind = item["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        known = _fields_at(where[:-1])
        message = f"unknown key {where[-1]!r}" if where else "unknown key"
        close = difflib.get_close_matches(str(where[-1]), known, n=1) if where else []
        if close:
            message += f" (did you mean {close[0]!r}?)"
        elif known:
            message += f"; allowed: {', '.join(known)}"
        return message
    message = item["msg"]
    if kind.endswith(("_type", "_parsing")):
        # Name the type given, never the value: it may be a secret.
        given = _TYPE_NAMES.get(type(item.get("input")).__name__, type(item.get("input")).__name__)
        expected = "a mapping" if kind in ("model_type", "model_attributes_type") else None
        message = f"must be {expected}" if expected else message
        message += f", got {given}"
    if kind == "too_short" and where and where[-1] == "deployments":
        message = "at least one deployment is required"
    return message


def _fields_at(where: _Where) -> list[str]:
    """The keys allowed at `where` (for 'did you mean'); [] when not a model."""
    model: Any = ProjectFile
    for part in where:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return []
        model = _model_in(field.annotation)
        if model is None:
            return []
    return list(model.model_fields) if isinstance(model, type) else []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _check_duplicate_names(data: Any, add: Any) -> None:
    deployments = data.get("deployments") if isinstance(data, dict) else None
    if not isinstance(deployments, list):
        return
    first: dict[str, int] = {}
    for index, spec in enumerate(deployments):
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            add(
                ("deployments", index, "name"),
                f"deployment name {name!r} is already used by deployments[{first[name]}]",
            )
        else:
            first[name] = index


def _check_files(data: Any, base: Path, add: Any) -> None:
    if not isinstance(data, dict):
        return
    build = data.get("build")
    if isinstance(build, dict):
        for key, what in (("dockerfile", "Dockerfile"), ("requirements", "requirements file")):
            value = build.get(key)
            if isinstance(value, str) and value.strip():
                _must_be_file(base, value, ("build", key), what, add)
    deployments = data.get("deployments")
    for index, spec in enumerate(deployments if isinstance(deployments, list) else []):
        if not isinstance(spec, dict) or spec.get("source") is not None:
            continue  # a git-sourced deployment's code is not in the project directory
        try:
            entrypoint = parse_entrypoint(spec.get("entrypoint"))  # type: ignore[arg-type]
        except InvalidInput:
            continue  # reported by validation
        if not entrypoint.is_module:
            _must_be_file(
                base, entrypoint.path, ("deployments", index, "entrypoint"), "entrypoint file", add
            )


def _must_be_file(base: Path, value: str, where: _Where, what: str, add: Any) -> None:
    path = Path(value).expanduser()
    resolved = path if path.is_absolute() else base / path
    if not resolved.exists():
        add(where, f"{what} {value} does not exist (looked at {resolved})")
    elif not resolved.is_file():
        add(where, f"{what} {value} is not a file ({resolved})")


def _report(
    filename: str, errors: dict[str, tuple[int, str]], *, numbered: bool = True
) -> InvalidInput:
    ordered = sorted(errors.items(), key=lambda kv: kv[1][0])
    listed = [
        {"field": field, "line": line, "message": _redact(field, message)}
        for field, (line, message) in ordered
    ]
    rows = [
        (f"{filename}, line {e['line']}: " if numbered else f"{filename}: ")
        + (f"{e['field']}: " if e["field"] else "")
        + str(e["message"])
        for e in listed
    ]
    if len(rows) == 1:
        message = rows[0]
    else:
        message = f"{filename} has {len(rows)} problems:\n" + "\n".join("  " + r for r in rows)
    return InvalidInput(
        message, field=listed[0]["field"] or filename, details={"file": filename, "errors": listed}
    )


def _redact(field: str, message: str) -> str:
    # Belt and braces: a message about a secret-looking key never quotes anything.
    if _SECRET_KEY.search(field) and "'" in message:
        return re.sub(r"'[^']*'", "'…'", message)
    return message


# --- starter -------------------------------------------------------------------------------

_STARTER = """\
# skylane.yaml: what `skylane deploy` builds and registers.
# Paths are relative to this file's directory. Docs: `skylane deploy --help`.

# Project name: names the image repository when build.image is left out.
name: "{name}"

# How the image holding the code and its requirements is built.
build:
  # Image name without tag; left out: the pool's provisioned registry + the project name.
  # image: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/{name}
  # Image the code and requirements are installed onto (ignored with a dockerfile).
  base_image: {base_image}
  # Your own Dockerfile instead of the automatic one.
  # dockerfile: Dockerfile
  # Requirements installed into the image; requirements.txt is used when it exists.
  # requirements: requirements.txt
  # Target platform, os/arch[/variant]: linux/amd64 or linux/arm64.
  platform: {platform}
  # Extra glob patterns (as in .dockerignore) of files left out of the image.
  ignore: []
  # auto: `docker build` when a Docker engine answers, else a daemonless build (no engine,
  # same inputs give the same digest); or force one with docker / daemonless.
  builder: auto

# What is registered: one entry per deployment (at least one).
deployments:
  # Deployment name, unique in this file.
  - name: "{name}"
    # The function to run: path/to/file.py:function.
    entrypoint: {entrypoint}
    # The pool (see `skylane pool ls`) the runs go to.
    pool: default
    # Default parameters of the function; runs and schedules can override them.
    parameters: {{}}
    # Overrides of the pool's job template, e.g. cpu, memory, env.
    job_variables: {{}}
    # When it runs by itself: cron, interval (seconds or PT15M) or rrule; timezone optional.
    schedules: []
    # - cron: "0 2 * * *"
    #   timezone: Europe/Berlin
    # Labels for filtering runs and deployments.
    tags: []
    # Shown in `skylane deployment ls`.
    description: null
    # Most runs of this deployment at once; null: no limit.
    concurrency_limit: null
    # Code from git at run time instead of from the image:
    # source: {{git: https://github.com/acme/etl.git, ref: main, credentials: {{env: GIT_TOKEN}}}}
"""


def starter_file(name: str, *, entrypoint: str = "flows/etl.py:etl") -> str:
    """The commented `skylane.yaml` that `skylane init` writes (it validates as is)."""
    _check_name_or_raise(name)
    parse_entrypoint(entrypoint)
    return _STARTER.format(
        name=name,
        entrypoint=entrypoint,
        base_image=DEFAULT_BASE_IMAGE,
        platform=DEFAULT_PLATFORM,
    )


def _check_name_or_raise(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            "project name must start with a letter or digit and contain only letters, digits, "
            "'_', '.' and '-'",
            field="name",
        )

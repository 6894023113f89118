"""Static checks of infra/: the images, Docker Compose, Kubernetes and systemd files.

Nothing here builds or starts anything (no Docker engine, no cluster). What the files say is
checked against the code instead: setting names against `Settings`, ports against the server's
default, health paths against the FastAPI app, command lines against the typer CLI (parsed for
real, with the command's work stubbed out), paths against the image build code.
"""

from __future__ import annotations

import ast
import configparser
import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import typer
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import skylane.cli.server
import skylane.cli.worker
import skylane.runtime
import skylane.services.background
from skylane.api.app import create_app
from skylane.cli.main import app as cli_app
from skylane.deploy import RUNTIME_COMMAND
from skylane.images.build import DEFAULT_PACKAGES_PATH, DEFAULT_PROJECT_PATH
from skylane.services.background import SERVICES
from skylane.settings import DEFAULT_PORT, Settings, normalize_database_url
from skylane.store import create_engine_for, migrate
from skylane.store.repository import Store

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
CONTROL_PLANE_DOCKERFILE = INFRA / "images" / "control-plane.Dockerfile"
RUNTIME_DOCKERFILE = INFRA / "images" / "runtime.Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = INFRA / "compose" / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = INFRA / "compose" / ".env.example"
K8S_DIR = INFRA / "kubernetes"
SYSTEMD_DIR = INFRA / "systemd"
SERVER_UNIT = SYSTEMD_DIR / "skylane.service"
WORKER_UNIT = SYSTEMD_DIR / "skylane-worker@.service"
SYSTEMD_ENV_EXAMPLE = SYSTEMD_DIR / "skylane.env.example"
INFRA_README = INFRA / "README.md"

SKYLANE_NAME = re.compile(r"\bSKYLANE_[A-Z0-9_]*[A-Z0-9]\b")
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|cc|build-essential|make|cmake|rustc|cargo)\b")


# --- what the code knows -------------------------------------------------------------------


def settings_env_names() -> set[str]:
    """SKYLANE_* variables of the Settings model: its env_prefix plus each field's name."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else None
        names.add((alias or f"{prefix}{name}").upper())
    return names


def env_names_read_by_code() -> set[str]:
    """SKYLANE_* names the code itself spells out (os.environ look-ups, the runtime's three
    variables, SKYLANE_HOME, ...), from every module but the test helpers."""
    names = set()
    package = REPO / "src" / "skylane"
    for path in package.rglob("*.py"):
        if "testing" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and re.fullmatch(r"SKYLANE_[A-Z0-9_]+", value):
                names.add(value)
    return names


KNOWN_NAMES = settings_env_names() | env_names_read_by_code()


def infra_files() -> list[Path]:
    files = [p for p in INFRA.rglob("*") if p.is_file()]
    return sorted([*files, DOCKERIGNORE])


# --- the CLI, parsed for real --------------------------------------------------------------


@dataclass
class Invocation:
    command: str
    values: dict[str, Any] = field(default_factory=dict)


def invoke_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Invocation:
    """Run `skylane ARGV` through the real typer app, with the work of `server start`,
    `worker start` and `run execute` replaced by a recorder: options and values are parsed
    and validated by the CLI itself; nothing is started."""
    seen: list[Invocation] = []
    real_parse_services = skylane.services.background.parse_services

    def parse_services(value: str) -> list[str]:
        services = real_parse_services(value)
        seen.append(Invocation("server start", {"services": services}))
        return services

    def load_settings(**overrides: Any) -> Settings:
        seen[-1].values.update(overrides)
        raise typer.Exit(0)

    def run_worker(pool: str, **options: Any) -> None:
        seen.append(Invocation("worker start", {"pool": pool, **options}))

    def execute() -> int:
        seen.append(Invocation("run execute"))
        return 0

    with monkeypatch.context() as patch:
        patch.setattr(skylane.services.background, "parse_services", parse_services)
        patch.setattr(skylane.cli.server, "load_settings", load_settings)
        patch.setattr(skylane.cli.worker, "run_worker", run_worker)
        patch.setattr(skylane.runtime, "execute", execute)
        result = CliRunner().invoke(cli_app, argv)
    assert result.exit_code == 0, f"skylane {shlex.join(argv)}: {result.output}"
    assert len(seen) == 1, f"skylane {shlex.join(argv)} ran none of the commands infra uses"
    return seen[0]


def skylane_argv(command: list[str]) -> list[str]:
    """The arguments after the `skylane` executable of a full command line."""
    assert command, "empty command"
    assert PurePosixPath(command[0]).name == "skylane", f"{command} does not run skylane"
    return command[1:]


# --- Dockerfiles ---------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]

    def last(self, keyword: str) -> str | None:
        values = self.all(keyword)
        return values[-1] if values else None


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined; comment lines dropped (as Docker
    drops them, also inside a continuation)."""
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            yield current.strip()
        current = ""
    if current.strip():
        yield current.strip()


def resolve_args(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def parse_dockerfile(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            words = value.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(resolve_args(words[0], args), name))
        elif not stages:
            if keyword == "ARG":
                key, _, default = value.partition("=")
                args[key.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append((keyword, value))
    return Dockerfile(args, stages)


def exec_form(value: str | None) -> list[str]:
    assert value is not None and value.startswith("["), f"not in exec (JSON) form: {value}"
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(v, str) for v in parsed)
    return parsed


def healthcheck_command(stage: Stage) -> list[str]:
    value = stage.last("HEALTHCHECK")
    assert value is not None, "no HEALTHCHECK"
    match = re.fullmatch(r"(?:--\S+\s+)*CMD\s+(.+)", value)
    assert match, f"HEALTHCHECK without CMD: {value}"
    return exec_form(match.group(1))


def stage_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in stage.all("ENV"):
        for token in shlex.split(value):
            key, sep, val = token.partition("=")
            if sep:
                env[key] = val
    return env


def numeric_user(stage: Stage) -> int:
    user = stage.last("USER")
    assert user is not None, "the final stage sets no USER: the image runs as root"
    uid = user.split(":")[0]
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    assert uid.isdigit(), f"USER {user} is not numeric; runAsNonRoot cannot check a name"
    return int(uid)


@pytest.fixture(scope="module")
def control_plane_image() -> Dockerfile:
    return parse_dockerfile(CONTROL_PLANE_DOCKERFILE)


@pytest.fixture(scope="module")
def runtime_image() -> Dockerfile:
    return parse_dockerfile(RUNTIME_DOCKERFILE)


# --- compose -------------------------------------------------------------------------------

INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
)


def interpolate(text: str, required: str = "required-value") -> str:
    """Compose's `${VAR}` forms with nothing set: defaults taken, required ones given
    `required`."""

    def replace(match: re.Match[str]) -> str:
        op = match.group("op") or ""
        if op.endswith("-"):
            return match.group("arg")
        if op.endswith("?"):
            return required
        return ""

    return INTERPOLATION.sub(replace, text)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def container_port(mapping: str) -> int:
    return int(interpolate(str(mapping)).split("/")[0].rsplit(":", 1)[-1])


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


# --- kubernetes ----------------------------------------------------------------------------


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path, doc))
    return docs


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc.get("kind") == kind]


def pod_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(deployment, pod spec, container) for every container of every Deployment."""
    for deployment in k8s_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            yield deployment, pod, container


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    """Name -> literal value, or the `valueFrom` mapping; ConfigMaps of envFrom included."""
    config_maps = {cm["metadata"]["name"]: cm.get("data") or {} for cm in k8s_kind("ConfigMap")}
    env: dict[str, Any] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            assert ref["name"] in config_maps, f"envFrom names a missing ConfigMap {ref}"
            env.update(config_maps[ref["name"]])
    for item in container.get("env") or []:
        env[item["name"]] = item["valueFrom"] if "valueFrom" in item else item.get("value")
    return env


def container_command(container: dict[str, Any], image: Dockerfile) -> list[str]:
    """What the container runs: its command (else the image's ENTRYPOINT) plus its args."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    entrypoint = exec_form(image.final.last("ENTRYPOINT"))
    return [*entrypoint, *container.get("args", exec_form(image.final.last("CMD")))]


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"port {port!r} is not a named port of container {container['name']}"
    return named[port]


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- systemd -------------------------------------------------------------------------------


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Section -> (key, value) pairs in order; systemd allows a key more than once."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in logical_lines(path.read_text(encoding="utf-8")):
        if line.startswith(";"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
        sections[current].append((key.strip(), value.strip()))
    return sections


def unit_values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in unit_entries(path).get(section, []) if k == key]


def unit_environment(path: Path, instance: str = "local") -> dict[str, str]:
    env = {}
    for value in unit_values(path, "Service", "Environment"):
        for token in shlex.split(value.replace("%i", instance)):
            key, _, val = token.partition("=")
            env[key] = val
    return env


def env_file_assignments(path: Path, *, commented: bool) -> list[tuple[str, str]]:
    """VAR=value lines; with `commented`, also `# VAR=value` lines (documented options)."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("#"):
            if not commented:
                continue
            text = text.lstrip("#").strip()
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(\S*)", text)
        if match:
            pairs.append((match.group(1), match.group(2)))
    return pairs


# --- settings names and values -------------------------------------------------------------


def test_every_skylane_name_in_infra_is_one_skylane_reads() -> None:
    assert {"SKYLANE_DATABASE_URL", "SKYLANE_PORT", "SKYLANE_HOME"} <= KNOWN_NAMES
    unknown = {}
    for path in infra_files():
        for name in SKYLANE_NAME.findall(path.read_text(encoding="utf-8")):
            if name not in KNOWN_NAMES:
                unknown.setdefault(str(path.relative_to(REPO)), set()).add(name)
    assert not unknown, f"SKYLANE_* names skylane never reads: {unknown}"


def settings_sources(
    compose: dict[str, Any], images: list[Dockerfile]
) -> dict[str, list[dict[str, str]]]:
    """Every place that sets SKYLANE_* values: each a list of variable sets applied together."""
    sources: dict[str, list[dict[str, str]]] = {}
    for name, service in compose["services"].items():
        literal = {k: v for k, v in compose_env(service).items() if "$" not in v}
        sources[f"compose {name}"] = [literal]
    for deployment, _, container in pod_containers():
        env = {k: v for k, v in container_env(container).items() if isinstance(v, str)}
        sources[f"kubernetes {deployment['metadata']['name']}"] = [env]
    for image in images:
        sources[f"image {image.final.base}"] = [stage_env(image.final)]
    for unit in (SERVER_UNIT, WORKER_UNIT):
        sources[unit.name] = [unit_environment(unit)]
    # Each documented alternative on its own (two database URLs cannot apply together).
    example = env_file_assignments(SYSTEMD_ENV_EXAMPLE, commented=True)
    sources[SYSTEMD_ENV_EXAMPLE.name] = [{k: v} for k, v in example]
    return sources


def test_setting_values_in_infra_are_valid(
    compose: dict[str, Any],
    control_plane_image: Dockerfile,
    runtime_image: Dockerfile,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sources = settings_sources(compose, [control_plane_image, runtime_image])
    checked = 0
    for where, variants in sources.items():
        for values in variants:
            settings_values = {k: v for k, v in values.items() if k in settings_env_names()}
            with monkeypatch.context() as patch:
                for key, value in settings_values.items():
                    patch.setenv(key, value)
                try:
                    Settings()
                except ValueError as exc:
                    pytest.fail(f"{where}: {settings_values} is refused by Settings: {exc}")
            checked += len(settings_values)
            url = values.get("SKYLANE_DATABASE_URL")
            if url:
                parsed = sa.engine.make_url(normalize_database_url(url))
                assert parsed.get_backend_name() in ("sqlite", "postgresql"), (where, url)
    assert checked, "no SKYLANE_* value found in infra/"


def test_every_port_is_the_servers_default(
    compose: dict[str, Any], control_plane_image: Dockerfile
) -> None:
    final = control_plane_image.final
    assert [int(p.split("/")[0]) for p in " ".join(final.all("EXPOSE")).split()] == [DEFAULT_PORT]
    health = " ".join(healthcheck_command(final))
    assert re.findall(r"\b\d{4,5}\b", health) == [str(DEFAULT_PORT)], health

    control_plane = compose["services"]["control-plane"]
    assert [container_port(p) for p in control_plane["ports"]] == [DEFAULT_PORT]

    for deployment, _, container in pod_containers():
        for port in container.get("ports", []):
            assert port["containerPort"] == DEFAULT_PORT, deployment["metadata"]["name"]

    # A SKYLANE_PORT anywhere would move the server off the port the rest assumes.
    for path in infra_files():
        for value in re.findall(r"SKYLANE_PORT\s*[=:]\s*\"?(\d+)", path.read_text("utf-8")):
            assert int(value) == DEFAULT_PORT, f"{path.name}: SKYLANE_PORT={value}"


def test_health_paths_are_served_by_the_api(
    control_plane_image: Dockerfile, settings: Settings, tmp_path: Path
) -> None:
    paths = set()
    for word in healthcheck_command(control_plane_image.final):
        paths.update(re.findall(r"'(/[^']*)'", word))
    for _, _, container in pod_containers():
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = (container.get(probe) or {}).get("httpGet")
            if http:
                paths.add(http["path"])
    assert paths, "no health check or probe path found"

    engine = create_engine_for(f"sqlite:///{tmp_path / 'skylane.db'}")
    migrate(engine)
    try:
        api = create_app(settings, Store(engine))
        routes = {path for path, ops in api.openapi()["paths"].items() if "get" in ops}
        with TestClient(api) as client:
            assert client.get("/no-such-path").status_code == 404
            for path in sorted(paths):
                assert path in routes, f"{path} is not a GET route of the API"
                # Probes send no key: the path must answer without one.
                response = client.get(path)
                assert response.status_code == 200, (path, response.text)
    finally:
        engine.dispose()


# --- images --------------------------------------------------------------------------------


def stage_references(stage: Stage) -> list[str]:
    refs = []
    for key, value in stage.instructions:
        if key in ("COPY", "RUN"):
            refs += re.findall(r"--from=([\w.-]+)", value)
            refs += re.findall(r"--mount=\S*\bfrom=([\w.-]+)", value)
    return refs


def test_control_plane_image_is_multi_stage_without_compilers(
    control_plane_image: Dockerfile,
) -> None:
    stages = control_plane_image.stages
    assert len(stages) >= 2, "the control-plane image is not multi-stage"
    for image in (control_plane_image, parse_dockerfile(RUNTIME_DOCKERFILE)):
        for i, stage in enumerate(image.stages):
            earlier = {s.name for s in image.stages[:i] if s.name}
            for ref in stage_references(stage):
                assert ref in earlier, f"--from={ref} names no earlier stage"
        for run in image.final.all("RUN"):
            assert not COMPILERS.search(run), f"a compiler in the final stage: {run}"
    assert stage_references(control_plane_image.final), "the final stage takes nothing built"


def test_images_base_on_a_slim_python_skylane_supports(
    control_plane_image: Dockerfile, runtime_image: Dockerfile
) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    minimum = tuple(int(p) for p in re.findall(r"\d+", project["requires-python"])[:2])
    for image in (control_plane_image, runtime_image):
        for stage in image.stages:
            match = re.fullmatch(r"python:(\d+)\.(\d+)(?:\.\d+)?-slim(?:-\w+)?", stage.base)
            assert match, f"FROM {stage.base} is not a slim python image"
            assert (int(match.group(1)), int(match.group(2))) >= minimum, stage.base
        # The builder's venv is copied as is: its interpreter must be the final stage's.
        assert len({stage.base for stage in image.stages}) == 1


def test_images_run_as_the_same_numeric_non_root_user(
    control_plane_image: Dockerfile, runtime_image: Dockerfile
) -> None:
    uids = set()
    for image in (control_plane_image, runtime_image):
        uid = numeric_user(image.final)
        assert uid != 0
        runs = " ".join(image.final.all("RUN"))
        assert re.search(rf"--uid {uid}\b", runs), f"no user with UID {uid} is created"
        uids.add(uid)
    assert len(uids) == 1, f"the images run as different users: {uids}"


def test_control_plane_image_runs_the_server(
    control_plane_image: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = control_plane_image.final
    assert exec_form(final.last("ENTRYPOINT")) == ["skylane"]
    command = [*exec_form(final.last("ENTRYPOINT")), *exec_form(final.last("CMD"))]
    invocation = invoke_cli(skylane_argv(command), monkeypatch)
    assert invocation.command == "server start"
    assert invocation.values["host"] == "0.0.0.0"
    assert "api" in invocation.values["services"], "the image's HEALTHCHECK needs the API"

    health = healthcheck_command(final)
    assert health[0] in ("python", "python3") and "urllib" in " ".join(health)
    assert not {"curl", "wget"} & set(health), "slim images have no curl or wget"


def test_control_plane_image_installs_every_cloud_extra(control_plane_image: Dockerfile) -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"][
        "optional-dependencies"
    ]
    builder = control_plane_image.stages[0]
    declared = [v for v in builder.all("ARG") if v.startswith("EXTRAS=")]
    assert declared, "the builder has no EXTRAS argument"
    chosen = set(declared[-1].partition("=")[2].strip('"').split(","))
    assert chosen == {"postgres", "aws", "gcp", "azure"}
    assert chosen <= set(extras), f"extras pyproject.toml does not define: {chosen - set(extras)}"
    assert any("[${EXTRAS}]" in run for run in builder.all("RUN")), "EXTRAS is never installed"


def test_runtime_image_runs_skylane_run_execute(
    runtime_image: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = runtime_image.final
    command = exec_form(final.last("CMD"))
    # `skylane deploy` sets this very command on the images it builds from this base.
    assert command == list(RUNTIME_COMMAND)
    assert invoke_cli(skylane_argv(command), monkeypatch).command == "run execute"
    # Templates set the command (`python -m skylane.runtime`); an ENTRYPOINT would prefix it.
    assert all(stage.last("ENTRYPOINT") is None for stage in runtime_image.stages)


def test_runtime_image_fits_what_skylane_deploy_builds(runtime_image: Dockerfile) -> None:
    final = runtime_image.final
    assert final.last("WORKDIR") == DEFAULT_PROJECT_PATH
    runs = " ".join(final.all("RUN"))
    # Docker builds FROM this image pip install into the packages path as the image's user.
    for path in (DEFAULT_PROJECT_PATH, DEFAULT_PACKAGES_PATH):
        assert re.search(rf"install -d [^;&]*-o {numeric_user(final)}\b[^;&]*{path}", runs), (
            f"{path} is not created for the image's user"
        )
    # `python -m skylane.runtime` must find skylane with the image's own interpreter.
    assert re.search(r"python -m pip install [^&]*skylane", runs)
    assert "venv" not in " ".join(v for _, v in final.instructions)


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        patterns.append((negate, line.lstrip("!").strip("/")))
    return patterns


def dockerignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern decides; a matched directory takes its
    contents with it."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, pattern in patterns:
        forms = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(c, f) for c in candidates for f in forms):
            ignored = not negate
    return ignored


def test_build_context_holds_what_the_images_copy() -> None:
    patterns = dockerignore_patterns()
    for must_go in (".venv", ".git", ".venv/bin/python", "tests/unit/test_infra.py"):
        assert dockerignored(must_go, patterns), f".dockerignore lets {must_go} in"
    readme = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["readme"]
    for dockerfile in (CONTROL_PLANE_DOCKERFILE, RUNTIME_DOCKERFILE):
        copied = set()
        for stage in parse_dockerfile(dockerfile).stages:
            for value in stage.all("COPY"):
                if "--from=" in value:
                    continue
                words = [w for w in value.split() if not w.startswith("--")]
                copied.update(words[:-1])
        assert {"pyproject.toml", readme} <= copied, f"{dockerfile.name} cannot build the wheel"
        for source in sorted(copied):
            path = REPO / source
            assert path.exists(), f"{dockerfile.name} copies {source}, which does not exist"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                relative = file.relative_to(REPO).as_posix()
                if "__pycache__" in relative or ".egg-info" in relative:
                    continue
                assert not dockerignored(relative, patterns), f".dockerignore drops {relative}"


# --- compose -------------------------------------------------------------------------------


def test_compose_builds_and_shares_the_control_plane_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "control-plane", "worker"} <= set(services)
    control_plane = services["control-plane"]
    context = (COMPOSE_FILE.parent / control_plane["build"]["context"]).resolve()
    assert context == REPO
    assert (context / control_plane["build"]["dockerfile"]).resolve() == CONTROL_PLANE_DOCKERFILE
    image = interpolate(control_plane["image"])
    assert image.rpartition(":")[0] == "skylane/control-plane"
    assert services["worker"]["image"] == control_plane["image"]
    for mount in (m for service in services.values() for m in service.get("volumes", [])):
        source = str(mount).split(":")[0]
        if not source.startswith((".", "/")):
            assert source in (compose.get("volumes") or {}), f"undeclared volume {source}"


def test_compose_control_plane_waits_for_postgres_and_uses_its_database(
    compose: dict[str, Any], control_plane_image: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    postgres, control_plane = services["postgres"], services["control-plane"]
    assert postgres["image"].startswith("postgres:16")
    assert "test" in postgres["healthcheck"]
    assert control_plane["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])

    pg_env = compose_env(postgres)
    url_text = compose_env(control_plane)["SKYLANE_DATABASE_URL"]
    url = sa.engine.make_url(normalize_database_url(interpolate(url_text, required="pw")))
    assert url.drivername == "postgresql+psycopg", "the psycopg 3 driver is the one shipped"
    assert url.host == "postgres" and url.port in (None, 5432)
    assert url.username == pg_env["POSTGRES_USER"] and url.database == pg_env["POSTGRES_DB"]
    password_vars = {m.group("name") for m in INTERPOLATION.finditer(url_text)}
    assert password_vars == {
        m.group("name") for m in INTERPOLATION.finditer(pg_env["POSTGRES_PASSWORD"])
    }, "the URL's password is not the postgres service's"

    command = [
        *exec_form(control_plane_image.final.last("ENTRYPOINT")),
        *control_plane.get("command", exec_form(control_plane_image.final.last("CMD"))),
    ]
    invocation = invoke_cli(skylane_argv(command), monkeypatch)
    assert invocation.command == "server start" and invocation.values["host"] == "0.0.0.0"
    assert "api" in invocation.values["services"]
    # A read-only container still needs SKYLANE_HOME (process runs' state) writable.
    if control_plane.get("read_only"):
        home = stage_env(control_plane_image.final)["SKYLANE_HOME"]
        mounts = [str(v).split(":")[1] for v in control_plane.get("volumes", [])]
        assert home in mounts and "/tmp" in control_plane.get("tmpfs", [])


def test_compose_worker_reaches_the_control_plane(
    compose: dict[str, Any], control_plane_image: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    worker = services["worker"]
    command = [*exec_form(control_plane_image.final.last("ENTRYPOINT")), *worker["command"]]
    invocation = invoke_cli(skylane_argv([interpolate(w) for w in command]), monkeypatch)
    assert invocation.command == "worker start" and invocation.values["pool"]
    assert "${" in " ".join(worker["command"]), "the pool is not taken from the environment"

    api = urlsplit(compose_env(worker)["SKYLANE_API_URL"])
    assert api.hostname in services, f"{api.hostname} is not a compose service"
    assert api.port in [container_port(p) for p in services[api.hostname]["ports"]]
    assert worker["depends_on"][api.hostname]["condition"] == "service_healthy"
    # The image's HEALTHCHECK asks the API, which a worker does not serve.
    assert worker["healthcheck"] == {"disable": True}


def test_compose_secrets_are_required_and_never_inline(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for match in INTERPOLATION.finditer(text):
        if re.search(r"PASSWORD|SECRET|TOKEN|KEY", match.group("name")):
            assert match.group("op") == ":?", f"${{{match.group('name')}}} is not required"
    for name, service in compose["services"].items():
        for key, value in compose_env(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", key):
                assert INTERPOLATION.fullmatch(value), f"{name}: {key} is written inline"
    worker = compose["services"]["worker"]
    assert "SKYLANE_API_KEY" not in compose_env(worker) or INTERPOLATION.fullmatch(
        compose_env(worker)["SKYLANE_API_KEY"]
    )
    assert worker.get("env_file") or "SKYLANE_API_KEY" in compose_env(worker), (
        "the worker gets no API key"
    )


def test_compose_variables_are_documented() -> None:
    used = {m.group("name") for m in INTERPOLATION.finditer(COMPOSE_FILE.read_text("utf-8"))}
    documented = {k for k, _ in env_file_assignments(COMPOSE_ENV_EXAMPLE, commented=True)}
    assert used - documented == set(), f"not in .env.example: {used - documented}"
    required = {k for k, _ in env_file_assignments(COMPOSE_ENV_EXAMPLE, commented=False)}
    assert required <= used, f".env.example sets what compose never uses: {required - used}"


# --- kubernetes ----------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text("utf-8"))
    listed = kustomization["resources"]
    files = sorted(p.name for p in K8S_DIR.glob("*.y*ml") if p.name != "kustomization.yaml")
    assert sorted(listed) == files
    namespaces = [ns["metadata"]["name"] for ns in k8s_kind("Namespace")]
    assert namespaces == [kustomization["namespace"]]
    for path, doc in k8s_documents():
        if path.name != "kustomization.yaml":
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path.name


def test_deployments_run_the_compose_image(compose: dict[str, Any]) -> None:
    repository = interpolate(compose["services"]["control-plane"]["image"]).rpartition(":")[0]
    images = {container["image"] for _, _, container in pod_containers()}
    assert len(images) == 1, f"the Deployments run different images: {images}"
    assert images.pop().rpartition(":")[0] == repository
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text("utf-8"))
    # An images: entry whose name matches nothing is silently ignored by kustomize.
    assert {entry["name"] for entry in kustomization.get("images", [])} <= {repository}


def test_pods_run_as_the_images_user_on_a_read_only_root(control_plane_image: Dockerfile) -> None:
    uid = numeric_user(control_plane_image.final)
    home = stage_env(control_plane_image.final)["SKYLANE_HOME"]
    deployments = set()
    for deployment, pod, container in pod_containers():
        name = deployment["metadata"]["name"]
        deployments.add(name)
        assert labels_match(
            deployment["spec"]["selector"]["matchLabels"],
            deployment["spec"]["template"]["metadata"]["labels"],
        ), f"{name}: the selector does not match the pod's labels"
        security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert security.get("runAsNonRoot") is True, name
        assert security.get("runAsUser") in (None, uid), f"{name}: not the image's user {uid}"
        assert security.get("allowPrivilegeEscalation") is False, name
        assert security.get("readOnlyRootFilesystem") is True, name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        home_here = container_env(container).get("SKYLANE_HOME", home)
        for path in ("/tmp", home_here):
            assert path in mounts, f"{name}: nothing writable at {path}"
            assert "emptyDir" in volumes[mounts[path]], f"{name}: {path} is not an emptyDir"
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name}: {kind}"
    assert deployments >= {"skylane-api", "skylane-worker"}


def server_containers(
    image: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any], Invocation]]:
    for deployment, pod, container in pod_containers():
        invocation = invoke_cli(skylane_argv(container_command(container, image)), monkeypatch)
        yield deployment, pod, container, invocation


def test_deployments_run_every_control_plane_service(
    control_plane_image: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    running: set[str] = set()
    for deployment, _, _, invocation in server_containers(control_plane_image, monkeypatch):
        if invocation.command == "server start":
            running.update(invocation.values["services"])
            if "api" in invocation.values["services"]:
                assert deployment["spec"]["replicas"] >= 2, "the API is not replicated"
                assert invocation.values["host"] == "0.0.0.0", "probes cannot reach 127.0.0.1"
        else:
            assert invocation.command == "worker start" and invocation.values["pool"]
    assert running == set(SERVICES), f"no Deployment runs {set(SERVICES) - running}"


def test_api_pods_are_probed_and_served(
    control_plane_image: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = k8s_kind("Service")
    assert services, "no Service"
    for deployment, _, container, invocation in server_containers(control_plane_image, monkeypatch):
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        serves_api = invocation.command == "server start" and "api" in invocation.values["services"]
        for service in services:
            if labels_match(service["spec"]["selector"], labels):
                # A Service sending traffic to pods without the API would fail requests.
                assert serves_api, f"Service {service['metadata']['name']} selects {name}"
                for port in service["spec"]["ports"]:
                    target = port.get("targetPort", port["port"])
                    assert resolve_port(container, target) == DEFAULT_PORT
        if serves_api:
            for probe in ("readinessProbe", "livenessProbe"):
                http = container.get(probe, {}).get("httpGet")
                assert http, f"{name}: no HTTP {probe}"
                assert resolve_port(container, http["port"]) == DEFAULT_PORT
    assert any(
        labels_match(s["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        for s in services
        for d in k8s_kind("Deployment")
    ), "the Service selects no Deployment"


def secret_refs_documented() -> set[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", INFRA_README.read_text(encoding="utf-8"))
    found = set()
    for line in text.splitlines():
        match = re.search(r"create secret generic ([\w.-]+)", line)
        if match:
            for key in re.findall(r"--from-(?:literal|file)=([\w.-]+)=", line):
                found.add((match.group(1), key))
    return found


def test_secrets_come_from_secret_references_documented_in_the_readme(
    control_plane_image: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not k8s_kind("Secret"), "a Secret with values is committed"
    documented = secret_refs_documented()
    refs = set()
    for deployment, _, container, invocation in server_containers(control_plane_image, monkeypatch):
        env = container_env(container)
        name = deployment["metadata"]["name"]
        if invocation.command == "server start":
            url = env.get("SKYLANE_DATABASE_URL")
            assert isinstance(url, dict) and "secretKeyRef" in url, (
                f"{name}: the database URL is not taken from a Secret"
            )
        if invocation.command == "worker start":
            key = env.get("SKYLANE_API_KEY")
            assert isinstance(key, dict) and "secretKeyRef" in key, f"{name}: no API key"
        for value in env.values():
            if isinstance(value, dict) and "secretKeyRef" in value:
                refs.add((value["secretKeyRef"]["name"], value["secretKeyRef"]["key"]))
    assert refs and refs <= documented, f"undocumented secrets: {refs - documented}"


def test_configmaps_hold_strings() -> None:
    for config_map in k8s_kind("ConfigMap"):
        for key, value in (config_map.get("data") or {}).items():
            assert isinstance(value, str), f"{key}: a ConfigMap value must be a string"
    for _, _, container in pod_containers():
        for item in container.get("env") or []:
            assert "valueFrom" in item or isinstance(item.get("value"), str), item["name"]


def service_address(url: str, namespace: str) -> tuple[str, int] | None:
    """(Service name, port) when `url` names a Service of the manifests' namespace."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    labels = host.split(".")
    in_namespace = len(labels) == 1 or (
        len(labels) >= 3 and labels[1] == namespace and labels[2] == "svc"
    )
    if not in_namespace:
        return None
    return labels[0], parts.port or 80


def test_runs_and_workers_reach_the_api_service(
    control_plane_image: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text("utf-8"))["namespace"]
    services = {s["metadata"]["name"]: s for s in k8s_kind("Service")}
    for deployment, _, container, invocation in server_containers(control_plane_image, monkeypatch):
        env = container_env(container)
        name = deployment["metadata"]["name"]
        if invocation.command == "server start":
            if "api" in invocation.values["services"]:
                continue
            # Without the API in the process, the default callback address (its own) is dead.
            assert env.get("SKYLANE_PUBLIC_API_URL"), f"{name}: runs cannot call back"
            url = env["SKYLANE_PUBLIC_API_URL"]
        else:
            url = env["SKYLANE_API_URL"]
        address = service_address(url, namespace)
        if address is not None:
            service_name, port = address
            assert service_name in services, f"{name}: {url} names no Service"
            assert port in [p["port"] for p in services[service_name]["spec"]["ports"]], url


def test_service_links_cannot_shadow_settings() -> None:
    link_names = set()
    for service in k8s_kind("Service"):
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        link_names |= {f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"}
        for port in service["spec"]["ports"]:
            link_names.add(f"{prefix}_PORT_{port['port']}_TCP")
            link_names |= {f"{prefix}_PORT_{port['port']}_TCP_{s}" for s in ("ADDR", "PORT")}
    clashes = link_names & KNOWN_NAMES
    for deployment, pod, _ in pod_containers():
        if pod.get("enableServiceLinks") is not False:
            assert not clashes, f"{deployment['metadata']['name']}: service links set {clashes}"


# --- systemd -------------------------------------------------------------------------------


def test_systemd_units_parse() -> None:
    for unit in (SERVER_UNIT, WORKER_UNIT):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(unit.read_text(encoding="utf-8"))
        assert {"Unit", "Service", "Install"} <= set(parser.sections()), unit.name
        for key in ("ExecStart", "User"):
            assert len(unit_values(unit, "Service", key)) == 1, f"{unit.name}: {key}"


def test_server_unit_runs_skylane_server_start_hardened(monkeypatch: pytest.MonkeyPatch) -> None:
    exec_start = shlex.split(unit_values(SERVER_UNIT, "Service", "ExecStart")[0])
    assert exec_start[0].startswith("/"), "systemd needs an absolute ExecStart"
    assert invoke_cli(skylane_argv(exec_start), monkeypatch).command == "server start"
    assert "/etc/skylane/skylane.env" in [
        v.lstrip("-") for v in unit_values(SERVER_UNIT, "Service", "EnvironmentFile")
    ]
    for unit in (SERVER_UNIT, WORKER_UNIT):
        service = dict(unit_entries(unit)["Service"])
        assert service.get("User") not in (None, "", "root", "0"), unit.name
        assert service.get("Restart") == "on-failure", unit.name
        assert service.get("NoNewPrivileges") == "yes", unit.name
        assert service.get("ProtectSystem") == "strict", unit.name
        assert service.get("PrivateTmp") == "yes", unit.name


def writable_paths(unit: Path, instance: str = "local") -> list[str]:
    service = unit_entries(unit)["Service"]
    paths = []
    for key, value in service:
        value = value.replace("%i", instance)
        if key == "ReadWritePaths":
            paths += [p.lstrip("-") for p in value.split()]
        if key == "StateDirectory":
            paths += [f"/var/lib/{p}" for p in value.split()]
    return paths


def under(path: str, roots: list[str]) -> bool:
    return any(PurePosixPath(path).is_relative_to(root) for root in roots)


def test_units_can_write_their_state() -> None:
    for unit in (SERVER_UNIT, WORKER_UNIT):
        home = unit_environment(unit).get("SKYLANE_HOME")
        assert home, f"{unit.name}: no SKYLANE_HOME; the data directory is unknown"
        # ProtectSystem=strict makes everything else read-only.
        assert under(home, writable_paths(unit)), f"{unit.name}: {home} is read-only"
        states = [f"/var/lib/{d}" for d in unit_values(unit, "Service", "StateDirectory")]
        assert under(home, [s.replace("%i", "local") for s in states]), (
            f"{unit.name}: systemd does not create {home}"
        )
    for _, value in env_file_assignments(SYSTEMD_ENV_EXAMPLE, commented=True):
        url = sa.engine.make_url(normalize_database_url(value)) if "://" in value else None
        if url is not None and url.get_backend_name() == "sqlite":
            assert under(url.database, writable_paths(SERVER_UNIT)), url.database


def test_worker_unit_works_the_instance_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    exec_start = unit_values(WORKER_UNIT, "Service", "ExecStart")[0]
    assert re.search(r"--pool\s+%[iI]\b", exec_start), "the pool is not the instance name"
    argv = skylane_argv(shlex.split(exec_start.replace("%i", "nightly")))
    invocation = invoke_cli(argv, monkeypatch)
    assert invocation.command == "worker start" and invocation.values["pool"] == "nightly"
    server = shlex.split(unit_values(SERVER_UNIT, "Service", "ExecStart")[0])
    assert shlex.split(exec_start)[0] == server[0], "the units run different installations"


# --- secrets -------------------------------------------------------------------------------

URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:(?P<password>[^\s/@'\"]+)@")
PLACEHOLDER = re.compile(r"\$\{\w+\}|<[^>]*>|change-?me|\.\.\.", re.IGNORECASE)
SECRET_LITERALS = (
    re.compile(r"\bsklr?_[A-Za-z0-9]+_[A-Za-z0-9_-]{8,}"),  # skylane API keys, run tokens
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)


def test_no_secret_values_in_infra() -> None:
    for path in infra_files():
        text = path.read_text(encoding="utf-8")
        # ${VAR:?message} -> ${VAR}: an interpolation is never a literal.
        text = re.sub(r"\$\{(\w+)[^}]*\}", r"${\1}", text)
        placeholders_allowed = path.suffix == ".example" or path == INFRA_README
        for match in URL_PASSWORD.finditer(text):
            password = match.group("password")
            if password.startswith("${"):
                continue
            assert placeholders_allowed and PLACEHOLDER.fullmatch(password), (
                f"{path.relative_to(REPO)}: a password in {match.group(0)}"
            )
        for pattern in SECRET_LITERALS:
            assert not pattern.search(text), f"{path.relative_to(REPO)}: {pattern.pattern}"

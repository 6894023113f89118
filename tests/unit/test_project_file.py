"""The project file skylane.yaml: models, line-numbered errors, the starter file."""

from __future__ import annotations

from pathlib import Path

import pytest

from skylane.errors import InvalidInput
from skylane.project_file import (
    BuildSettings,
    DeploymentSpec,
    GitSource,
    ProjectFile,
    ScheduleEntry,
    SecretRef,
    load_project_file,
    parse_project_file,
    starter_file,
)
from skylane.schedules import CatchUp

FULL = """\
name: etl
build:
  image: registry.example.com/team/etl
  base_image: python:3.12-slim
  dockerfile: docker/Dockerfile
  platform: linux/arm64/v8
  ignore: ["*.csv", data/]
deployments:
  - name: nightly
    entrypoint: flows/etl.py:etl
    pool: ecs-prod
    parameters: {day: yesterday, limit: 10}
    job_variables: {cpu: 1024, env: {MODE: prod}}
    schedules:
      - cron: "0 2 * * *"
        timezone: Europe/Berlin
      - interval: PT15M
        active: false
        parameters: {limit: 1}
      - rrule: FREQ=WEEKLY;BYDAY=MO
        catchup: all
    tags: [etl, prod]
    description: Nightly load
    concurrency_limit: 1
  - name: from-git
    entrypoint: flows/other.py:main
    pool: ecs-prod
    image: registry.example.com/team/etl:pinned
    source:
      git: https://github.com/acme/etl.git
      ref: v1.2.0
      credentials: {env: GIT_TOKEN}
"""


def _project(tmp_path: Path, text: str, *, files: tuple[str, ...] = ("flows/etl.py",)) -> Path:
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("def etl():\n    pass\n")
    path = tmp_path / "skylane.yaml"
    path.write_text(text)
    return path


def _errors(tmp_path: Path, text: str, **kwargs) -> tuple[InvalidInput, dict[str, dict]]:
    path = _project(tmp_path, text, **kwargs)
    with pytest.raises(InvalidInput) as info:
        load_project_file(path)
    return info.value, {e["field"]: e for e in info.value.details["errors"]}


def _minimal(extra: str = "", deployment: str = "") -> str:
    return (
        "name: etl\n"
        + extra
        + "deployments:\n  - name: a\n    entrypoint: flows/etl.py:etl\n    pool: p\n"
        + deployment
    )


def test_starter_file_loads_and_validates(tmp_path: Path) -> None:
    path = _project(tmp_path, starter_file("etl"))
    project = load_project_file(path)
    assert project.name == "etl"
    assert project.build == BuildSettings()
    assert project.deployments[0].entrypoint == "flows/etl.py:etl"
    text = starter_file("etl")
    # Every key the starter sets is explained by a comment line just above it.
    lines = text.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip().removeprefix("- ")
        if stripped and not stripped.startswith("#") and ":" in stripped:
            assert lines[index - 1].strip().startswith("#"), line


def test_starter_file_quotes_names_yaml_would_retype(tmp_path: Path) -> None:
    path = _project(tmp_path, starter_file("1e3"))
    assert load_project_file(path).name == "1e3"
    with pytest.raises(InvalidInput):
        starter_file("bad name")


def test_full_example_loads_to_the_models(tmp_path: Path) -> None:
    path = _project(tmp_path, FULL, files=("flows/etl.py", "docker/Dockerfile", "requirements.txt"))
    project = load_project_file(path)
    assert project.build == BuildSettings(
        image="registry.example.com/team/etl",
        dockerfile="docker/Dockerfile",
        requirements="requirements.txt",  # left out, but the file exists
        platform="linux/arm64/v8",
        ignore=["*.csv", "data/"],
    )
    nightly = project.deployment("nightly")
    assert nightly == DeploymentSpec(
        name="nightly",
        entrypoint="flows/etl.py:etl",
        pool="ecs-prod",
        parameters={"day": "yesterday", "limit": 10},
        job_variables={"cpu": 1024, "env": {"MODE": "prod"}},
        schedules=[
            ScheduleEntry(cron="0 2 * * *", timezone="Europe/Berlin"),
            ScheduleEntry(interval=900, active=False, parameters={"limit": 1}),
            ScheduleEntry(rrule="FREQ=WEEKLY;BYDAY=MO", catchup=CatchUp.ALL),
        ],
        tags=["etl", "prod"],
        description="Nightly load",
        concurrency_limit=1,
    )
    # The git-sourced deployment's entrypoint is in the repository, not in the project dir.
    assert project.deployment("from-git").source == GitSource(
        git="https://github.com/acme/etl.git", ref="v1.2.0", credentials=SecretRef(env="GIT_TOKEN")
    )
    body = nightly.schedules[1].to_schedule_create()
    assert (body.interval_seconds, body.active, body.parameters) == (900, False, {"limit": 1})
    assert isinstance(project, ProjectFile)


def test_requirements_default_is_none_without_the_file(tmp_path: Path) -> None:
    assert load_project_file(_project(tmp_path, _minimal())).build.requirements is None


@pytest.mark.parametrize(
    ("value", "seconds"), [("60", 60), ("PT1H30M", 5400), ("P1D", 86400), ("P1W", 604800)]
)
def test_interval_in_seconds_or_iso_duration(value: str, seconds: int) -> None:
    assert ScheduleEntry(interval=value).interval == seconds


@pytest.mark.parametrize(
    ("text", "field", "line", "words"),
    [
        (_minimal("colour: red\n"), "colour", 2, "unknown key 'colour'"),
        (_minimal("build:\n  imgae: x\n"), "build.imgae", 3, "did you mean 'image'"),
        (_minimal(deployment="    tags: etl\n"), "deployments[0].tags", 6, "valid list"),
        (
            _minimal(deployment="    concurrency_limit: -1\n"),
            "deployments[0].concurrency_limit",
            6,
            "greater than or equal to 0",
        ),
        (
            _minimal(deployment="    schedules:\n      - cron: '61 * * * *'\n"),
            "deployments[0].schedules[0].cron",
            7,
            "invalid cron expression",
        ),
        (
            _minimal(deployment="    schedules:\n      - {cron: '@daily', interval: 60}\n"),
            "deployments[0].schedules[0]",
            7,
            "exactly one of cron, interval or rrule",
        ),
        (
            _minimal(deployment="    schedules:\n      - {interval: P1M}\n"),
            "deployments[0].schedules[0].interval",
            7,
            "ISO 8601",
        ),
        (
            _minimal(deployment="    schedules:\n      - {cron: '@daily', timezone: Mars/Base}\n"),
            "deployments[0].schedules[0].timezone",
            7,
            "unknown time zone",
        ),
        (_minimal("build:\n  platform: amd64\n"), "build.platform", 3, "os/arch[/variant]"),
        (_minimal("build:\n  image: Team/ETL\n"), "build.image", 3, "lowercase"),
        (_minimal("build:\n  image: etl:1.0\n"), "build.image", 3, "without tag"),
        (_minimal("build:\n  base_image: 'py thon'\n"), "build.base_image", 3, "whitespace"),
        (
            _minimal(deployment="    image: 'a@b'\n"),
            "deployments[0].image",
            6,
            "digest",
        ),
        (
            _minimal("build:\n  dockerfile: Dockerfile\n"),
            "build.dockerfile",
            3,
            "Dockerfile Dockerfile does not exist",
        ),
        (
            _minimal("build:\n  requirements: reqs.txt\n"),
            "build.requirements",
            3,
            "does not exist",
        ),
        ("name: 'no spaces'\ndeployments: []\n", "name", 1, "letters, digits"),
        ("name: etl\ndeployments: []\n", "deployments", 2, "at least one deployment"),
        ("name: etl\n", "deployments", 1, "is required"),
        ("name: etl\nname: etl2\ndeployments: []\n", "name", 2, "more than once"),
    ],
)
def test_bad_input_names_the_field_and_line(
    tmp_path: Path, text: str, field: str, line: int, words: str
) -> None:
    error, errors = _errors(tmp_path, text)
    assert field in errors, error.details
    assert errors[field]["line"] == line
    assert words in errors[field]["message"]
    assert f"line {line}: {field}: " in error.message


def test_bad_entrypoint(tmp_path: Path) -> None:
    text = (
        "name: etl\ndeployments:\n"
        "  - name: a\n    pool: p\n    entrypoint: flows/etl.py\n"
        "  - name: b\n    pool: p\n    entrypoint: flows/missing.py:main\n"
        "  - name: c\n    pool: p\n    entrypoint: flows/etl.py:not-a-name\n"
    )
    error, errors = _errors(tmp_path, text)
    assert errors["deployments[0].entrypoint"]["line"] == 5
    assert "no ':function' part" in errors["deployments[0].entrypoint"]["message"]
    assert errors["deployments[1].entrypoint"]["line"] == 8
    assert "flows/missing.py does not exist" in errors["deployments[1].entrypoint"]["message"]
    assert errors["deployments[2].entrypoint"]["line"] == 11
    assert "not a valid Python function name" in errors["deployments[2].entrypoint"]["message"]


def test_missing_entrypoint_is_reported_at_the_deployment(tmp_path: Path) -> None:
    error, errors = _errors(tmp_path, "name: etl\ndeployments:\n  - name: a\n    pool: p\n")
    assert errors["deployments[0].entrypoint"]["line"] == 3
    assert errors["deployments[0].entrypoint"]["message"] == "is required"


def test_duplicate_deployment_names(tmp_path: Path) -> None:
    text = _minimal(deployment="  - name: a\n    entrypoint: flows/etl.py:etl\n    pool: q\n")
    error, errors = _errors(tmp_path, text)
    assert list(errors) == ["deployments[1].name"]
    assert errors["deployments[1].name"]["line"] == 6
    assert "already used by deployments[0]" in error.message
    assert error.field == "deployments[1].name"


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ("{git: 'https://x.example/r.git', credentials: ghp_s3cr3tT0ken}", "source.credentials"),
        (
            "{git: 'https://x.example/r.git', credentials: {token: ghp_s3cr3tT0ken}}",
            "source.credentials.token",
        ),
        ("{git: 'https://me:ghp_s3cr3tT0ken@x.example/r.git'}", "source.git"),
    ],
)
def test_literal_token_in_source_is_refused_without_echo(
    tmp_path: Path, source: str, field: str
) -> None:
    error, errors = _errors(tmp_path, _minimal(deployment=f"    source: {source}\n"))
    assert errors[f"deployments[0].{field}"]["line"] == 6
    assert "ghp_s3cr3tT0ken" not in str(error)
    assert "ghp_s3cr3tT0ken" not in repr(error.details)


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = _project(tmp_path, "name: etl\ndeployments:\n  - name: a\n   pool: [p\n")
    with pytest.raises(InvalidInput) as info:
        load_project_file(path)
    assert str(path) in info.value.message
    assert "YAML syntax error" in info.value.message
    assert ", line 4, column 4:" in info.value.message
    assert info.value.details["line"] == 4


def test_yaml_syntax_error_does_not_show_the_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_project_file("name: etl\npassword: hunter2: x\n")
    assert "hunter2" not in str(info.value)
    assert "line 2" in str(info.value)


def test_several_errors_are_all_reported_in_line_order(tmp_path: Path) -> None:
    text = (
        "name: etl\n"
        "build:\n"
        "  platform: linux\n"
        "deployments:\n"
        "  - name: a\n"
        "    entrypoint: flows/etl.py:etl\n"
        "    pool: p\n"
        "    schedules:\n"
        "      - cron: '* * *'\n"
        "    colour: red\n"
    )
    error, errors = _errors(tmp_path, text)
    assert [(e["field"], e["line"]) for e in error.details["errors"]] == [
        ("build.platform", 3),
        ("deployments[0].schedules[0].cron", 9),
        ("deployments[0].colour", 10),
    ]
    assert error.message.startswith(f"{tmp_path / 'skylane.yaml'} has 3 problems:")
    assert error.field == "build.platform"
    for row in ("line 3: build.platform", "line 9: deployments[0].schedules", "line 10: depl"):
        assert row in error.message


def test_empty_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        parse_project_file("# nothing\n")
    with pytest.raises(InvalidInput, match="must be a mapping, got a list"):
        parse_project_file("- a\n")


def test_missing_project_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        load_project_file(tmp_path / "skylane.yaml")


def test_files_are_not_checked_without_a_base_dir() -> None:
    project = parse_project_file(_minimal("build:\n  dockerfile: Dockerfile\n"))
    assert project.build.dockerfile == "Dockerfile"
    assert project.build.requirements is None

"""The Docker engine path with a stand-in `docker` CLI: there is no Docker engine here, so a
small script first on PATH records each command line (and the Dockerfile it was given) and
prints what docker prints. These tests check our command lines, output parsing and errors; not
what a real engine does with them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from skylane.deploy import RUNTIME_COMMAND
from skylane.errors import ConfigurationError, InvalidInput, PermanentProviderError
from skylane.images.build import BuildSpec
from skylane.images.docker_build import (
    automatic_dockerfile,
    automatic_dockerignore,
    docker_build_and_push,
    docker_engine_reason,
)

DIGEST = "sha256:" + "5d" * 32
OTHER_DIGEST = "sha256:" + "e7" * 32

# The stand-in: FAKE_DOCKER_MODE says how it behaves (ok, build-fails, build-hangs,
# engine-down, push-no-digest, push-fails); each call appends {"argv", "cwd", "dockerfile",
# "dockerignore"} as a JSON line to FAKE_DOCKER_LOG.
FAKE_DOCKER = r"""
import json, os, sys
from pathlib import Path

argv = sys.argv[1:]
mode = os.environ.get("FAKE_DOCKER_MODE", "ok")
record = {"argv": argv, "cwd": os.getcwd()}
if argv[:1] == ["build"] and "-f" in argv:
    dockerfile = Path(argv[argv.index("-f") + 1])
    record["dockerfile"] = dockerfile.read_text()
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    record["dockerignore"] = ignore.read_text() if ignore.is_file() else None
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(record) + "\n")

down = ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
        "Is the docker daemon running?")
if mode == "engine-down":
    print(down, file=sys.stderr)
    sys.exit(1)
command = argv[0]
if command == "version":
    print("28.2.2")
elif command == "build":
    if mode == "build-hangs":
        print("#1 [internal] load build definition from Dockerfile", flush=True)
        import time
        time.sleep(30)
    for step in range(1, 31):
        print(f"#{step} [internal] step {step} of the build", file=sys.stderr)
    if mode == "build-fails":
        print("ERROR: failed to solve: process \"pip install -r requirements.txt\" did not "
              "complete successfully: exit code: 1 (index https://user:hunter2@pypi.example/)",
              file=sys.stderr)
        sys.exit(1)
elif command == "push":
    tag = argv[1].rpartition(":")[2]
    print(f"The push refers to repository [{argv[1].rpartition(':')[0]}]")
    print("5f70bf18a086: Pushed")
    print("a3ed95caeb02: Layer already exists")
    if mode == "push-fails":
        print("unauthorized: authentication required", file=sys.stderr)
        sys.exit(1)
    if mode != "push-no-digest":
        print(f"{tag}: digest: sha256:" + "5d" * 32 + " size: 1234")
elif command == "image":
    name = argv[-1].rpartition(":")[0]
    print(json.dumps(["other.example/team/app@sha256:" + "e7" * 32, f"{name}@sha256:" + "5d" * 32]))
else:
    print(f"unknown command {command}", file=sys.stderr)
    sys.exit(2)
"""


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in `docker` first on PATH; returns its log file."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "fake_docker.py").write_text(FAKE_DOCKER)
    script = bin_dir / "docker"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{bin_dir / "fake_docker.py"}" "$@"\n')
    script.chmod(0o755)
    log = tmp_path / "docker-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return log


def calls(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def make_project(root: Path, *, requirements: bool = True) -> Path:
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "etl.py").write_text("def main():\n    return 'etl ran'\n")
    if requirements:
        (root / "requirements.txt").write_text("httpx==0.27.0\n")
    (root / ".skylaneignore").write_text("notes/\n/dist\n*.log\n!keep.log\n")
    return root


def spec_for(project: Path, **kwargs: object) -> BuildSpec:
    options: dict[str, object] = {
        "target": "127.0.0.1:5000/team/app:v1",
        "platform": "linux/arm64",
        "requirements": project / "requirements.txt",
        "env": {"SKYLANE_API_URL": "http://control-plane:4200", "TOKEN_FILE": '/run/$HOME"x'},
        "entrypoint": RUNTIME_COMMAND,
        "labels": {"org.skylane.project": "demo", "org.opencontainers.image.title": "etl app"},
    }
    options.update(kwargs)
    return BuildSpec("python:3.12-slim", project, **options)  # type: ignore[arg-type]


# --- (a) is there an engine ------------------------------------------------------------------


def test_engine_reason_without_a_docker_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert docker_engine_reason() == "no docker CLI on PATH"
    with pytest.raises(ConfigurationError, match="no docker CLI on PATH"):
        docker_build_and_push(spec_for(make_project(tmp_path / "p")))


def test_engine_reason_with_a_cli_whose_engine_is_down_or_up(
    fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_MODE", "engine-down")
    reason = docker_engine_reason()
    assert reason == (
        "the Docker engine does not answer: Cannot connect to the Docker daemon at "
        "unix:///var/run/docker.sock. Is the docker daemon running?"
    )
    monkeypatch.setenv("FAKE_DOCKER_MODE", "ok")
    assert docker_engine_reason() is None
    assert calls(fake_docker)[-1]["argv"] == ["version", "--format", "{{.Server.Version}}"]


# --- (b) command lines, digest, errors ----------------------------------------------------------


def test_build_and_push_command_lines_and_digest(fake_docker: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    reference = docker_build_and_push(spec_for(project, epoch=1700000000))
    assert reference == f"127.0.0.1:5000/team/app@{DIGEST}"

    build, push = calls(fake_docker)
    argv = build["argv"]
    assert isinstance(argv, list)
    dockerfile = argv[argv.index("-f") + 1]
    assert argv == [
        "build",
        "--platform",
        "linux/arm64",
        "--progress=plain",
        "-f",
        dockerfile,
        "-t",
        "127.0.0.1:5000/team/app:v1",
        "--label",
        "org.opencontainers.image.title=etl app",
        "--label",
        "org.skylane.project=demo",
        "--build-arg",
        "SOURCE_DATE_EPOCH=1700000000",
        ".",
    ]
    assert Path(build["cwd"]) == project  # type: ignore[arg-type]
    # The automatic Dockerfile lives outside the project, and is gone afterwards.
    assert not Path(dockerfile).is_relative_to(project) and not Path(dockerfile).exists()
    assert build["dockerfile"] == automatic_dockerfile(spec_for(project))
    assert build["dockerignore"] == automatic_dockerignore(spec_for(project))
    assert push["argv"] == ["push", "127.0.0.1:5000/team/app:v1"]
    # No secret or env value reaches a command line: env goes into the Dockerfile only.
    every_argument = " ".join(a for c in calls(fake_docker) for a in c["argv"])  # type: ignore[attr-defined]
    assert "control-plane" not in every_argument and "password" not in every_argument


def test_own_dockerfile_untagged_target_and_digest_from_inspect(
    fake_docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "project", requirements=False)
    (project / "docker").mkdir()
    (project / "docker" / "Dockerfile").write_text("FROM python:3.12-slim\nCOPY . /app\n")
    monkeypatch.setenv("FAKE_DOCKER_MODE", "push-no-digest")
    spec = spec_for(project, target="127.0.0.1:5000/team/app", requirements=None, labels=None)
    reference = docker_build_and_push(spec, dockerfile="docker/Dockerfile", context_dir=project)
    assert reference == f"127.0.0.1:5000/team/app@{DIGEST}"  # not the other repository's
    build, push, inspect = calls(fake_docker)
    assert build["argv"] == [
        "build",
        "--platform",
        "linux/arm64",
        "--progress=plain",
        "-f",
        str(project / "docker" / "Dockerfile"),
        "-t",
        "127.0.0.1:5000/team/app:latest",
        ".",
    ]
    assert build["dockerignore"] is None  # the project's own Dockerfile, its own ignore rules
    assert push["argv"] == ["push", "127.0.0.1:5000/team/app:latest"]
    assert inspect["argv"] == [
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        "127.0.0.1:5000/team/app:latest",
    ]
    with pytest.raises(InvalidInput) as caught:
        docker_build_and_push(spec, dockerfile="missing/Dockerfile")
    assert caught.value.field == "build.dockerfile"


def test_a_failed_build_quotes_the_tail_of_dockers_output(
    fake_docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "project")
    monkeypatch.setenv("FAKE_DOCKER_MODE", "build-fails")
    with pytest.raises(InvalidInput) as caught:
        docker_build_and_push(spec_for(project))
    error = caught.value
    assert error.field == "build.dockerfile" and error.details == {"exit_code": 1}
    message = str(error)
    assert "docker build failed (exit 1)" in message
    assert "did not complete successfully" in message
    # Only the last 20 lines: 19 steps and the error.
    assert "#30 [internal] step 30" in message and "#12 [internal]" in message
    assert "#11 [internal]" not in message
    assert "hunter2" not in message and "https://****@pypi.example/" in message
    assert [c["argv"][0] for c in calls(fake_docker)] == ["build"]  # type: ignore[index]


def test_engine_down_and_failed_push(
    fake_docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "project")
    monkeypatch.setenv("FAKE_DOCKER_MODE", "engine-down")
    with pytest.raises(PermanentProviderError, match="the Docker engine does not answer") as down:
        docker_build_and_push(spec_for(project))
    assert down.value.field is None  # not the Dockerfile's fault
    monkeypatch.setenv("FAKE_DOCKER_MODE", "push-fails")
    with pytest.raises(PermanentProviderError) as caught:
        docker_build_and_push(spec_for(project))
    assert caught.value.field == "target"
    assert "docker push failed (exit 1)" in str(caught.value)
    assert "unauthorized: authentication required" in str(caught.value)


# --- (c) the automatic Dockerfile ---------------------------------------------------------------


def test_automatic_dockerfile_with_requirements(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    text = automatic_dockerfile(spec_for(project), base_digest=OTHER_DIGEST)
    assert text.splitlines()[1:] == [
        f"FROM python@{OTHER_DIGEST}",
        "WORKDIR /opt/skylane/project",
        "# The requirements first, in a layer of their own: Docker reuses it while the",
        "# requirements file is unchanged.",
        'COPY ["requirements.txt", "/tmp/skylane-requirements/requirements.txt"]',
        'RUN ["python3", "-m", "pip", "install", "--no-cache-dir", "--no-compile", '
        '"--disable-pip-version-check", "--no-warn-script-location", "--target", '
        '"/opt/skylane/packages", "-r", "/tmp/skylane-requirements/requirements.txt"]',
        'COPY [".", "/opt/skylane/project/"]',
        "ENV PATH=/opt/skylane/packages/bin:"
        "${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}",
        "ENV PYTHONPATH=/opt/skylane/project:/opt/skylane/packages${PYTHONPATH:+:$PYTHONPATH}",
        'ENV SKYLANE_API_URL="http://control-plane:4200"',
        'ENV TOKEN_FILE="/run/\\$HOME\\"x"',  # no substitution, quote kept
        'ENTRYPOINT ["skylane", "run", "execute"]',
    ]
    ignore = automatic_dockerignore(spec_for(project)).splitlines()[1:]
    assert ignore == [
        "**/.git",
        "**/__pycache__",
        "**/*.pyc",
        "**/.venv",
        "**/notes",
        "dist",
        "**/*.log",
        "!**/keep.log",
    ]


def test_automatic_dockerfile_without_requirements(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", requirements=False)
    spec = BuildSpec(
        f"registry.example:5000/base/python:3.12@{OTHER_DIGEST}",
        project,
        target="registry.example:5000/team/app",
        workdir="/srv/app",
        cmd=["python", "-m", "flows.etl"],
    )
    assert automatic_dockerfile(spec).splitlines()[1:] == [
        f"FROM registry.example:5000/base/python:3.12@{OTHER_DIGEST}",
        "WORKDIR /srv/app",
        'COPY [".", "/opt/skylane/project/"]',
        "ENV PYTHONPATH=/opt/skylane/project${PYTHONPATH:+:$PYTHONPATH}",
        'CMD ["python", "-m", "flows.etl"]',
    ]


def test_automatic_dockerfile_refuses_what_docker_cannot_do(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    outside = tmp_path / "requirements-elsewhere.txt"
    outside.write_text("httpx\n")
    with pytest.raises(InvalidInput) as caught:
        automatic_dockerfile(spec_for(project, requirements=outside))
    assert caught.value.field == "requirements" and "outside the build context" in str(caught.value)
    with pytest.raises(InvalidInput) as caught:
        automatic_dockerfile(spec_for(project, env={"MOTD": "line one\nline two"}))
    assert caught.value.field == "env.MOTD"
    # A project in a subdirectory of a wider context is copied from there.
    text = automatic_dockerfile(spec_for(project), context_dir=tmp_path)
    assert 'COPY ["project/requirements.txt", ' in text
    assert 'COPY ["project/", "/opt/skylane/project/"]' in text


def test_a_build_that_hangs_is_stopped_at_its_timeout(
    fake_docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "project")
    monkeypatch.setenv("FAKE_DOCKER_MODE", "build-hangs")
    with pytest.raises(PermanentProviderError) as caught:
        docker_build_and_push(spec_for(project), build_timeout=1.0)
    assert caught.value.field == "build.dockerfile"
    assert caught.value.details == {"timeout_s": 1.0}
    assert "docker build did not finish within 1 s" in str(caught.value)

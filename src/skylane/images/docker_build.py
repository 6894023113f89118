"""The Docker engine path: the image a `BuildSpec` describes, built and pushed by a Docker engine
(`docker build`, then `docker push`) instead of skylane's daemonless build.

Use it when a project needs what only a Dockerfile does (system packages, compiled
dependencies, its own Dockerfile) and a Docker engine is at hand; `docker_engine_reason()` says
whether one is, and why not.

- `automatic_dockerfile(spec)` writes the Dockerfile equivalent of the daemonless build: the
  base (pinned by digest when known), the requirements installed with pip at `packages_path`
  in a layer of their own (cached by Docker while the requirements file is unchanged), the
  project at `project_path`, the same PYTHONPATH/PATH/env, working directory and
  entrypoint/cmd (`skylane deploy` sets cmd to `skylane run execute`).
  Labels go on `docker build`'s command line. Beside it goes `Dockerfile.dockerignore` (which
  BuildKit reads in preference to the context's `.dockerignore`), with the daemonless build's
  exclusions (`.git`, `__pycache__`, `*.pyc`, `.venv`, then the patterns of the project's
  `.skylaneignore` and `.dockerignore`).
- `docker_build_and_push(spec, dockerfile=..., context_dir=...)` runs `docker build
  --platform P -f F -t TARGET --label k=v ... .` in the context directory, then
  `docker push TARGET`, and returns the pushed `registry/repository@sha256:...`.

Differences from the daemonless build: the digest is Docker's, not reproducible across
machines (BuildKit timestamps layers unless `SOURCE_DATE_EPOCH` is given, which we pass when
the spec or the environment sets it); the requirements are installed by the base image's own
pip (`pip_args` and `pip_platforms` are not used: they may name this machine's paths; put index
options in the requirements file); PATH gets `packages_path/bin` whenever there are
requirements; and a directory left out by an ignore pattern can be taken back by a later `!`
line, as Docker allows.

Credentials are never put on a command line: `docker push` authenticates with Docker's own
configuration (`docker login`, credential helpers). docker's output is quoted in errors with
any `user:password@` in URLs masked. Every docker call has a timeout.

Tested here only with a stand-in `docker` CLI (a script that records its arguments and prints
what docker prints): there is no Docker engine on the development machines or in CI, so the
command lines, output parsing and errors are covered, and a real engine's behaviour is not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from skylane.errors import ConfigurationError, InvalidInput, PermanentProviderError
from skylane.images.build import BuildSpec, mask_url_credentials
from skylane.images.layers import DEFAULT_EXCLUDES
from skylane.images.reference import parse_reference

ENGINE_TIMEOUT = 5.0
BUILD_TIMEOUT = 1800.0
PUSH_TIMEOUT = 900.0
INSPECT_TIMEOUT = 30.0
OUTPUT_TAIL_LINES = 20
# Where the automatic Dockerfile puts the requirements file for pip (its own layer).
REQUIREMENTS_IN_IMAGE = "/tmp/skylane-requirements"

_PUSH_DIGEST = re.compile(r"digest:\s*(sha256:[0-9a-f]{64})\s+size:")
_ENV_NAME = re.compile(r"^[^\s=\"'$\\]+$")
# What docker says when it cannot reach the engine, whichever command it was running.
_ENGINE_DOWN = (
    "cannot connect to the docker daemon",
    "error during connect",
    "is the docker daemon running",
)


# --- is there an engine --------------------------------------------------------------------


def docker_engine_reason(*, docker: str = "docker", timeout: float = ENGINE_TIMEOUT) -> str | None:
    """None when a `docker` CLI is on PATH and its engine answers `docker version` within
    `timeout` seconds; else why not, in a sentence."""
    binary = shutil.which(docker)
    if binary is None:
        return f"no {docker} CLI on PATH"
    try:
        done = subprocess.run(
            [binary, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"the Docker engine does not answer within {timeout:g} s"
    except OSError as exc:
        return f"cannot run {binary}: {exc.strerror}"
    if done.returncode != 0:
        first = _first_line(done.stderr) or _first_line(done.stdout) or f"exit {done.returncode}"
        return f"the Docker engine does not answer: {first}"
    if not done.stdout.strip():
        return "the Docker engine does not answer: docker version gave no server version"
    return None


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return mask_url_credentials(line.strip())
    return ""


# --- the automatic Dockerfile ----------------------------------------------------------------


def _quote_env(name: str, value: str, field: str) -> str:
    """`NAME="value"` for an ENV line: inside double quotes Docker unescapes only `\\`, `"` and
    `$` (the last would otherwise be substituted)."""
    if not _ENV_NAME.match(name):
        raise InvalidInput(
            f"environment variable name {name!r} cannot be written in a Dockerfile", field=field
        )
    if "\n" in value or "\r" in value:
        raise InvalidInput(
            f"environment variable {name} has a line break, which a Dockerfile cannot hold",
            field=field,
        )
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'{name}="{escaped}"'


def _inside(path: Path, context: Path, field: str) -> str:
    """`path` relative to the build context, as COPY wants it."""
    try:
        relative = path.resolve().relative_to(context.resolve())
    except ValueError:
        raise InvalidInput(
            f"{str(path)!r} is outside the build context {str(context)!r}: docker build can "
            "copy only files inside it",
            field=field,
        ) from None
    return PurePosixPath(*relative.parts).as_posix() if relative.parts else "."


def automatic_dockerfile(
    spec: BuildSpec,
    *,
    base_digest: str | None = None,
    context_dir: str | os.PathLike[str] | None = None,
) -> str:
    """The Dockerfile equivalent of the daemonless build of `spec` (see the module docstring).
    The base is pinned to `base_digest` (e.g. resolved from its registry) or to the digest in
    `spec.base`, else named as given. Paths are relative to `context_dir` (default: the
    project directory), which must hold the project and the requirements file."""
    context = Path(context_dir) if context_dir is not None else Path(spec.project_dir)
    base = spec.base_reference
    if base_digest is not None:
        base = base.with_digest(base_digest)
    lines = [
        "# Written by skylane: the daemonless build's image, built by a Docker engine.",
        f"FROM {base.familiar}",
        f"WORKDIR {_escape_dollar(spec.image_workdir)}",
    ]
    requirements = Path(spec.requirements) if spec.requirements is not None else None
    if requirements is not None:
        source = _inside(requirements, context, "requirements")
        in_image = f"{REQUIREMENTS_IN_IMAGE}/{requirements.name}"
        pip = [
            "python3",
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--no-compile",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--target",
            spec.packages_path,
            "-r",
            in_image,
        ]
        lines += [
            "# The requirements first, in a layer of their own: Docker reuses it while the",
            "# requirements file is unchanged.",
            f"COPY {json.dumps([source, in_image])}",
            f"RUN {json.dumps(pip)}",
        ]
    project = _inside(Path(spec.project_dir), context, "project_dir")
    source = project if project == "." else project + "/"
    lines.append(f"COPY {json.dumps([source, spec.project_path + '/'])}")

    paths = [spec.project_path]
    if requirements is not None:
        paths.append(spec.packages_path)
        lines.append(
            f"ENV PATH={_escape_dollar(spec.packages_path)}/bin:${{PATH:-/usr/local/sbin:"
            "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"
        )
    # The base's PYTHONPATH, if any, stays after ours (as in the daemonless build).
    lines.append(f"ENV PYTHONPATH={_escape_dollar(':'.join(paths))}${{PYTHONPATH:+:$PYTHONPATH}}")
    for name, value in sorted((spec.env or {}).items()):
        lines.append(f"ENV {_quote_env(name, value, f'env.{name}')}")
    if spec.entrypoint is not None:
        lines.append(f"ENTRYPOINT {json.dumps(list(spec.entrypoint))}")  # clears the base's CMD
    if spec.cmd is not None:
        lines.append(f"CMD {json.dumps(list(spec.cmd))}")
    return "\n".join(lines) + "\n"


def _escape_dollar(text: str) -> str:
    return text.replace("$", "\\$")


def _docker_pattern(line: str) -> str | None:
    """A skylane ignore line (gitignore-like: a name without `/` matches at any depth) as a
    `.dockerignore` pattern (matched from the context's top: `**/` makes any depth)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    negated = text.startswith("!")
    if negated:
        text = text[1:].strip()
    text = text.rstrip("/")
    if text.startswith("./"):
        text = text[2:]
    if not text:
        return None
    anchored = "/" in text
    text = text.lstrip("/")
    return ("!" if negated else "") + (text if anchored else "**/" + text)


def automatic_dockerignore(spec: BuildSpec) -> str:
    """The daemonless build's exclusions as a `.dockerignore`: the default ones, then the lines
    of the spec's ignore files found at the project's top."""
    lines = ["# Written by skylane: what the daemonless build leaves out of the project."]
    patterns = list(DEFAULT_EXCLUDES)
    for name in spec.ignore_files:
        path = Path(spec.project_dir) / name
        if path.is_file():
            patterns += path.read_text(encoding="utf-8", errors="replace").splitlines()
    for pattern in patterns:
        converted = _docker_pattern(pattern)
        if converted is not None:
            lines.append(converted)
    return "\n".join(lines) + "\n"


# --- build and push -------------------------------------------------------------------------


def _tail(output: str | bytes | None, lines: int = OUTPUT_TAIL_LINES) -> str:
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    kept = [line.rstrip() for line in (output or "").splitlines() if line.strip()][-lines:]
    return mask_url_credentials("\n".join(kept))


def _engine_down(output: str) -> bool:
    lowered = output.lower()
    return any(marker in lowered for marker in _ENGINE_DOWN)


def _run(command: Sequence[str], *, cwd: Path | None, timeout: float, what: str, field: str) -> str:
    """Run a docker command, output (stdout and stderr together) returned; a time-out or an
    engine that does not answer raises PermanentProviderError."""
    try:
        done = subprocess.run(
            list(command),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PermanentProviderError(
            f"{what} did not finish within {timeout:g} s; its last output:\n{_tail(exc.output)}",
            field=field,
            details={"timeout_s": timeout},
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot run {command[0]}: {exc.strerror}") from None
    output = done.stdout or ""
    if done.returncode != 0:
        if _engine_down(output):
            raise PermanentProviderError(
                f"the Docker engine does not answer ({what}): {_first_line(output)}",
                details={"exit_code": done.returncode},
            )
        error = InvalidInput if field == "build.dockerfile" else PermanentProviderError
        raise error(
            f"{what} failed (exit {done.returncode}); docker's last output:\n{_tail(output)}",
            field=field,
            details={"exit_code": done.returncode},
        )
    return output


def docker_build_and_push(
    spec: BuildSpec,
    *,
    dockerfile: str | os.PathLike[str] | None = None,
    context_dir: str | os.PathLike[str] | None = None,
    base_digest: str | None = None,
    docker: str = "docker",
    build_timeout: float = BUILD_TIMEOUT,
    push_timeout: float = PUSH_TIMEOUT,
) -> str:
    """Build `spec`'s image with the Docker engine and push it; returns the pushed
    `registry/repository@sha256:...`.

    `dockerfile`: the project's own Dockerfile (relative to the context), or None for
    `automatic_dockerfile(spec)` (written to a temporary directory, not into the project).
    `context_dir`: the build context, by default the project directory. The image is tagged
    and pushed as the spec's target (`:latest` when it has no tag). A failed build raises
    InvalidInput on `build.dockerfile` with the tail of docker's output; a failed push
    PermanentProviderError on `target`."""
    binary = shutil.which(docker)
    if binary is None:
        raise ConfigurationError(f"no {docker} CLI on PATH: the Docker engine path needs one")
    if context_dir is not None:
        context = Path(context_dir)
        context_field = "build.context"
    else:
        context, context_field = Path(spec.project_dir), "project_dir"
    if not context.is_dir():
        raise InvalidInput(f"{str(context)!r} is not a directory", field=context_field)
    target = spec.target_reference
    tagged = (target if target.tag else target.with_tag("latest")).familiar

    with tempfile.TemporaryDirectory(prefix="skylane-docker-") as tmp:
        if dockerfile is None:
            path = Path(tmp) / "Dockerfile"
            path.write_text(
                automatic_dockerfile(spec, base_digest=base_digest, context_dir=context)
            )
            # BuildKit reads <Dockerfile>.dockerignore before the context's .dockerignore.
            Path(tmp, "Dockerfile.dockerignore").write_text(automatic_dockerignore(spec))
        else:
            path = Path(dockerfile)
            if not path.is_absolute():
                path = context / path
            if not path.is_file():
                raise InvalidInput(f"no Dockerfile at {str(path)!r}", field="build.dockerfile")
        command = [
            binary,
            "build",
            "--platform",
            spec.platform,
            "--progress=plain",
            "-f",
            str(path),
            "-t",
            tagged,
        ]
        for name, value in sorted((spec.labels or {}).items()):
            command += ["--label", f"{name}={value}"]
        epoch = spec.epoch if spec.epoch is not None else os.environ.get("SOURCE_DATE_EPOCH")
        if epoch is not None and str(epoch).strip():
            command += ["--build-arg", f"SOURCE_DATE_EPOCH={str(epoch).strip()}"]
        command.append(".")
        _run(
            command,
            cwd=context,
            timeout=build_timeout,
            what="docker build",
            field="build.dockerfile",
        )

    pushed = _run(
        [binary, "push", tagged], cwd=None, timeout=push_timeout, what="docker push", field="target"
    )
    found = _PUSH_DIGEST.findall(pushed)
    digest = found[-1] if found else _repo_digest(binary, tagged)
    return str(target.with_digest(digest))


def _repo_digest(binary: str, tagged: str) -> str:
    """The digest the registry gave `tagged`, from `docker image inspect` (for a push whose
    output did not say it)."""
    output = _run(
        [binary, "image", "inspect", "--format", "{{json .RepoDigests}}", tagged],
        cwd=None,
        timeout=INSPECT_TIMEOUT,
        what="docker image inspect",
        field="target",
    )
    wanted = parse_reference(tagged, field="target").name
    try:
        entries = json.loads(output.strip().splitlines()[-1]) if output.strip() else []
    except json.JSONDecodeError:
        entries = []
    for entry in entries or []:
        try:
            reference = parse_reference(str(entry), field="target")
        except InvalidInput:
            continue
        if reference.name == wanted and reference.digest:
            return reference.digest
    raise PermanentProviderError(
        f"docker pushed {tagged} but neither its output nor `docker image inspect` gave the digest",
        field="target",
        details={"repo_digests": entries if isinstance(entries, list) else []},
    )


__all__ = [
    "automatic_dockerfile",
    "automatic_dockerignore",
    "docker_build_and_push",
    "docker_engine_reason",
]

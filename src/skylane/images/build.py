"""Daemonless, reproducible image builds: a project directory (and its requirements) on top of
a base image, pushed with the OCI distribution API. No Docker engine is involved.

`build_image(BuildSpec(base, project_dir, target=...))` does, in order:

1. resolves the base image's manifest for the platform (an index is followed to its entry) and
   reads its config;
2. with a requirements file, installs it for the image's platform and Python, not this
   machine's: `python -m pip install --target DIR --platform <manylinux tags> --only-binary=:all:
   --python-version <the base's PYTHON_VERSION, else python_version=> --implementation cp
   --no-compile -r requirements.txt [pip_args]`, and makes DIR a layer at `packages_path`
   (on PYTHONPATH in the image). The layer is cached by the requirements file's content and
   everything else that goes into it, so an unchanged requirements file gives the same bytes
   without running pip again;
3. makes the project directory a layer at `project_path` (see `skylane.images.layers`);
4. writes a config (the base's, with our layers' diff_ids appended to `rootfs`, a history entry
   each, our env merged, WorkingDir, Entrypoint/Cmd, labels) and an OCI image manifest (the
   base's layers by digest, then ours), both as canonical JSON (sorted keys, no spaces);
5. pushes: each blob the target repository lacks (HEAD first) is uploaded, or for base layers
   mounted from the base repository when it is on the same registry, or copied from the base
   registry; the manifest is put under the target's tag (`latest` when it has none) unless the
   tag already points at the same digest.

The same inputs give the same digest: nothing depends on the time (every timestamp is
`SOURCE_DATE_EPOCH`, else 0) or on the machine's paths. Pushing an unchanged project uploads
nothing and leaves the manifest as it was.

`plan_image` does steps 1-4 without pushing; `push_image` does step 5.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skylane.errors import InvalidInput, PermanentProviderError
from skylane.images.layers import (
    IGNORE_FILES,
    Layer,
    layer_from_directory,
    normalize_image_path,
    source_date_epoch,
)
from skylane.images.reference import ImageReference, parse_reference
from skylane.images.registry import (
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER_GZIP,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    Platform,
    Registries,
    RegistryClient,
    canonical_json,
    sha256_digest,
)

log = logging.getLogger(__name__)

DEFAULT_PROJECT_PATH = "/opt/skylane/project"
DEFAULT_PACKAGES_PATH = "/opt/skylane/packages"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The newest glibc the default pip platform tags assume (Debian 10+, Ubuntu 20.04+, UBI 8+).
DEFAULT_GLIBC = (2, 28)
# Bump when the requirements layer's contents would change for the same inputs.
REQUIREMENTS_LAYER_FORMAT = 1
ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"

_PIP_ARCH = {
    ("amd64", None): "x86_64",
    ("arm64", None): "aarch64",
    ("386", None): "i686",
    ("arm", "v7"): "armv7l",
    ("ppc64le", None): "ppc64le",
    ("s390x", None): "s390x",
}
_PYTHON_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)?(?:[a-z]+\d*)?$")
_SHEBANG_PYTHON = re.compile(rb"^#!\S*python[0-9.]*(?:\s|$)")
_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")


def mask_url_credentials(text: str) -> str:
    """`text` with the `user:password@` of any URL in it masked, for quoting a tool's output
    (pip's, docker's) in an error."""
    return _URL_CREDENTIALS.sub(r"\1****@", text)


def pip_platform_tags(
    platform: str | Platform, glibc: tuple[int, int] = DEFAULT_GLIBC
) -> list[str]:
    """The `--platform` values for pip: manylinux tags from glibc `glibc` down to 2.17, then
    `manylinux2014` (which pip widens to manylinux2010 and manylinux1)."""
    wanted = Platform.parse(platform)
    if wanted.os != "linux":
        raise InvalidInput(
            f"requirements can be installed only for linux images, not {wanted}", field="platform"
        )
    arch = _PIP_ARCH.get((wanted.architecture, wanted.variant))
    if arch is None:
        raise InvalidInput(
            f"no manylinux wheels exist for platform {wanted}; give pip_platforms= yourself",
            field="platform",
        )
    major, minor = glibc
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def python_version_of(config: Mapping[str, Any], default: str | None = None) -> str | None:
    """`major.minor` from the image config's `PYTHON_VERSION` env (as the official python
    images set it), else `default`."""
    for item in (config.get("config") or {}).get("Env") or []:
        name, _, value = str(item).partition("=")
        if name == "PYTHON_VERSION" and value:
            match = _PYTHON_VERSION.match(value.strip())
            if match:
                return f"{match.group(1)}.{match.group(2)}"
    if default is None:
        return None
    match = _PYTHON_VERSION.match(default.strip())
    if not match:
        raise InvalidInput(
            f"python_version {default!r} is not a version like 3.12", field="python_version"
        )
    return f"{match.group(1)}.{match.group(2)}"


def iso_time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("skylane")) / "images"


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushedBlob:
    """One blob of a push: what it is (`base layer`, `requirements layer`, `project layer`,
    `config`) and what the push did: `exists` (HEAD found it), `mounted` (linked from the base
    repository), `copied` (from another registry) or `uploaded`."""

    digest: str
    size: int
    kind: str
    action: str


@dataclass
class ImageBuild:
    """An image ready to push: the base it is built on, our new layers, the config and manifest
    bytes, and its digest (the digest of the manifest bytes)."""

    base: ImageReference
    base_manifest: Manifest = field(repr=False)
    target: ImageReference
    platform: Platform
    layers: dict[str, Layer] = field(repr=False)
    config: dict[str, Any] = field(repr=False)
    config_bytes: bytes = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)
    manifest_bytes: bytes = field(repr=False)
    requirements_cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config_bytes)

    @property
    def reference(self) -> str:
        """`registry/repository@sha256:...`: what a deployment pins."""
        return str(self.target.with_digest(self.digest))

    def close(self) -> None:
        for layer in self.layers.values():
            layer.close()


@dataclass
class BuildResult:
    """A pushed image: `reference` (`repo@sha256:...`), its `digest`, the tag it was put under,
    every blob and what the push did with it, and whether the manifest was put (`pushed`) or
    already there (`unchanged`)."""

    reference: str
    digest: str
    tag: str | None
    base: str
    platform: str
    manifest: dict[str, Any] = field(repr=False)
    manifest_bytes: bytes = field(repr=False)
    config: dict[str, Any] = field(repr=False)
    config_digest: str
    layers: dict[str, Layer] = field(repr=False)
    blobs: list[PushedBlob]
    manifest_action: str
    requirements_cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def uploaded(self) -> list[PushedBlob]:
        """The blobs whose bytes were sent (uploaded or copied)."""
        return [b for b in self.blobs if b.action in ("uploaded", "copied")]

    @property
    def bytes_uploaded(self) -> int:
        return sum(b.size for b in self.uploaded)


# --- what to build -------------------------------------------------------------------------


def _string_list(value: Any, name: str, *, optional: bool) -> tuple[str, ...] | None:
    """`value` as a tuple of strings; a bare string is refused (it would be split into
    characters), and so is None unless `optional`."""
    if value is None and optional:
        return None
    items = (
        tuple(value) if isinstance(value, Iterable) and not isinstance(value, str | bytes) else None
    )
    if items is None or not all(isinstance(v, str) for v in items):
        raise InvalidInput(f"{name} must be a list of strings", field=name)
    return items


@dataclass(frozen=True)
class BuildSpec:
    """What to build: the project directory (and its requirements) on `base`, pushed to
    `target` (`registry/repository[:tag]`, no digest), for `platform`. The same spec serves the
    daemonless build (`build_image`) and the Docker engine path
    (`skylane.images.docker_build`).

    A spec is checked when it is made, without I/O: a wrong value raises InvalidInput naming
    its field (`base`, `target`, `platform`, `workdir`, `env.NAME`, ...). Values are stored
    normalised: paths in the image made absolute and clean, lists as tuples, `project_dir` and
    `requirements` as Paths, `platform` as `os/arch[/variant]`. Whether `project_dir` is a
    directory and what the base image holds are checked when building.

    - `requirements`: a pip requirements file installed at `packages_path` (on PYTHONPATH),
      for the base's Python (its `PYTHON_VERSION` env, else `python_version`);
    - `env`, `labels`: merged over the base's; `workdir` defaults to `project_path`;
    - `entrypoint`, `cmd`: None keeps the base's; a new entrypoint clears the base's cmd;
    - `pip_args`: appended to pip's command line; `pip_platforms`: pip `--platform` tags
      instead of the manylinux ones for `platform`;
    - `ignore_files`: files at the project's top whose patterns leave paths out;
    - `epoch`: every timestamp in the image; None reads `SOURCE_DATE_EPOCH` (else 0) when
      building."""

    base: str
    project_dir: Path | str | os.PathLike[str]
    target: str
    platform: str = "linux/amd64"
    requirements: Path | str | os.PathLike[str] | None = None
    python_version: str | None = None
    env: Mapping[str, str] | None = None
    workdir: str | None = None
    entrypoint: Sequence[str] | None = None
    cmd: Sequence[str] | None = None
    labels: Mapping[str, str] | None = None
    pip_args: Sequence[str] = ()
    pip_platforms: Sequence[str] | None = None
    project_path: str = DEFAULT_PROJECT_PATH
    packages_path: str = DEFAULT_PACKAGES_PATH
    ignore_files: Sequence[str] = IGNORE_FILES
    epoch: int | None = None

    def __post_init__(self) -> None:
        # No I/O here (a spec can be made before its project exists); each check names its
        # field, with the same messages the build used to give for its keyword arguments.
        parse_reference(self.base, field="base")
        target_ref = parse_reference(self.target, field="target")
        if target_ref.digest:
            raise InvalidInput(
                f"target {self.target!r} must not carry a digest: the digest is what the build "
                "makes",
                field="target",
            )
        values: dict[str, Any] = {"platform": str(Platform.parse(self.platform))}
        if not isinstance(self.project_dir, str | os.PathLike):
            raise InvalidInput("project_dir must be a path", field="project_dir")
        values["project_dir"] = Path(self.project_dir)
        project_path = normalize_image_path(self.project_path, field="project_path")
        values["project_path"] = project_path
        values["packages_path"] = normalize_image_path(self.packages_path, field="packages_path")
        if self.workdir is not None:
            values["workdir"] = normalize_image_path(self.workdir, field="workdir")
        if self.requirements is not None:
            if not isinstance(self.requirements, str | os.PathLike):
                raise InvalidInput("requirements must be a path", field="requirements")
            values["requirements"] = Path(self.requirements)
        if self.python_version is not None:
            python_version_of({}, self.python_version)  # raises naming python_version
        if self.epoch is not None and (
            isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 0
        ):
            raise InvalidInput(
                f"epoch {self.epoch!r} must be seconds since 1970 (an int >= 0)", field="epoch"
            )
        _check_strings(self.env, "env")
        _check_strings(self.labels, "labels")
        values["env"] = dict(self.env) if self.env is not None else None
        values["labels"] = dict(self.labels) if self.labels is not None else None
        values["entrypoint"] = _string_list(self.entrypoint, "entrypoint", optional=True)
        values["cmd"] = _string_list(self.cmd, "cmd", optional=True)
        values["pip_args"] = _string_list(self.pip_args, "pip_args", optional=False)
        values["pip_platforms"] = _string_list(self.pip_platforms, "pip_platforms", optional=True)
        values["ignore_files"] = _string_list(self.ignore_files, "ignore_files", optional=False)
        for name, value in values.items():
            object.__setattr__(self, name, value)  # frozen: normalise once, here

    @property
    def base_reference(self) -> ImageReference:
        return parse_reference(self.base, field="base")

    @property
    def target_reference(self) -> ImageReference:
        return parse_reference(self.target, field="target")

    @property
    def image_workdir(self) -> str:
        """The image's working directory: `workdir`, else `project_path`."""
        return self.workdir or self.project_path

    def resolved_epoch(self) -> int:
        """`epoch`, else `SOURCE_DATE_EPOCH` now (else 0)."""
        return source_date_epoch() if self.epoch is None else self.epoch


# --- the build ----------------------------------------------------------------------------


def build_image(
    spec: BuildSpec,
    *,
    registries: Registries | None = None,
    cache_dir: str | os.PathLike[str] | bool | None = None,
) -> BuildResult:
    """Build the image `spec` describes and push it to its target; see the module docstring.
    `registries` supplies the clients (auth, insecure hosts); by default one reading the
    Docker config. `cache_dir` holds requirements layers (None: the user cache directory;
    False: no cache)."""
    own = registries is None
    registries = registries or Registries()
    try:
        plan = plan_image(spec, registries=registries, cache_dir=cache_dir)
        try:
            return push_image(plan, registries)
        finally:
            plan.close()
    finally:
        if own:
            registries.close()


def plan_image(
    spec: BuildSpec,
    *,
    registries: Registries,
    cache_dir: str | os.PathLike[str] | bool | None = None,
) -> ImageBuild:
    """Steps 1-4 of a build: everything but the push. Reads the base from its registry."""
    if not isinstance(spec, BuildSpec):
        raise TypeError(f"plan_image takes a BuildSpec, not {type(spec).__name__}")
    timings: dict[str, float] = {}
    started = time.monotonic()
    base_ref = spec.base_reference
    target_ref = spec.target_reference
    wanted = Platform.parse(spec.platform)
    project = Path(spec.project_dir)
    if not project.is_dir():
        raise InvalidInput(f"{str(project)!r} is not a directory", field="project_dir")
    epoch = spec.resolved_epoch()

    base_client = registries.client(base_ref.registry)
    base_manifest = base_client.resolve_manifest(base_ref.repository, base_ref.reference, wanted)
    base_config = json.loads(base_client.get_blob(base_ref.repository, base_manifest.config.digest))
    if base_config.get("os") and not wanted.matches(base_config):
        raise PermanentProviderError(
            f"base image {base_ref} is for {base_config.get('os')}/"
            f"{base_config.get('architecture')}, not {wanted}",
            details={"registry": base_ref.registry, "repository": base_ref.repository},
        )
    timings["resolve_base"] = time.monotonic() - started

    layers: dict[str, Layer] = {}
    requirements_cached = False
    requirements = Path(spec.requirements) if spec.requirements is not None else None
    try:
        if requirements is not None:
            step = time.monotonic()
            version = python_version_of(base_config, spec.python_version)
            if version is None:
                raise InvalidInput(
                    f"the base image {base_ref} does not say its Python version "
                    "(no PYTHON_VERSION in its env): give python_version=",
                    field="python_version",
                )
            layers["requirements"], requirements_cached = requirements_layer(
                requirements,
                python_version=version,
                platform=wanted,
                pip_args=spec.pip_args,
                pip_platforms=spec.pip_platforms,
                packages_path=spec.packages_path,
                epoch=epoch,
                cache_dir=cache_dir,
                cwd=project,
            )
            timings["requirements_layer"] = time.monotonic() - step
        step = time.monotonic()
        layers["project"] = layer_from_directory(
            project, spec.project_path, ignore_files=spec.ignore_files, mtime=epoch
        )
        timings["project_layer"] = time.monotonic() - step

        config = image_config(
            base_config,
            layers,
            epoch=epoch,
            env=spec.env,
            workdir=spec.image_workdir,
            entrypoint=spec.entrypoint,
            cmd=spec.cmd,
            labels=spec.labels,
            project_path=spec.project_path,
            packages_path=spec.packages_path,
            requirements_name=requirements.name if requirements is not None else None,
        )
        config_bytes = canonical_json(config)
        manifest = image_manifest(base_ref, base_manifest, config_bytes, layers.values())
        manifest_bytes = canonical_json(manifest)
    except BaseException:
        for layer in layers.values():
            layer.close()
        raise
    timings["plan"] = time.monotonic() - started
    return ImageBuild(
        base=base_ref,
        base_manifest=base_manifest,
        target=target_ref,
        platform=wanted,
        layers=layers,
        config=config,
        config_bytes=config_bytes,
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        requirements_cached=requirements_cached,
        timings=timings,
    )


def _check_strings(values: Mapping[str, str] | None, name: str) -> None:
    if values is not None and not isinstance(values, Mapping):
        raise InvalidInput(f"{name} must map names to strings", field=name)
    for key, value in (values or {}).items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InvalidInput(f"{name} must map names to strings", field=f"{name}.{key}")
        if name == "env" and "=" in key:
            raise InvalidInput(f"environment variable name {key!r} contains '='", field=name)


def requirements_layer(
    requirements: Path,
    *,
    python_version: str,
    platform: Platform,
    pip_args: Sequence[str] = (),
    pip_platforms: Sequence[str] | None = None,
    packages_path: str = DEFAULT_PACKAGES_PATH,
    epoch: int = 0,
    cache_dir: str | os.PathLike[str] | bool | None = None,
    cwd: Path | None = None,
) -> tuple[Layer, bool]:
    """The layer of `requirements` installed for `platform` and `python_version` at
    `packages_path`, and whether it came from the cache. The cache key is the requirements
    file's content plus every other input (platform tags, Python version, pip arguments and
    version, path, epoch)."""
    try:
        content = requirements.read_bytes()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read requirements file {str(requirements)!r}: {exc.strerror}",
            field="requirements",
        ) from None
    platforms = list(pip_platforms) if pip_platforms else pip_platform_tags(platform)
    try:
        pip_version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        raise InvalidInput(
            f"pip is not installed in {sys.executable}; it installs the requirements",
            field="requirements",
        ) from None
    key_material = {
        "format": REQUIREMENTS_LAYER_FORMAT,
        "requirements": hashlib.sha256(content).hexdigest(),
        "python_version": python_version,
        "platforms": platforms,
        "pip_args": list(pip_args),
        "pip": pip_version,
        "path": packages_path,
        "epoch": epoch,
    }
    key = hashlib.sha256(canonical_json(key_material)).hexdigest()
    cache: Path | None = None
    if cache_dir is not False:
        root = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)  # type: ignore[arg-type]
        cache = root / "layers" / f"requirements-{key}.tar.gz"
        cached = Layer.load(cache)
        if cached is not None:
            log.info("requirements layer %s from the cache", cached.digest)
            return cached, True

    with tempfile.TemporaryDirectory(prefix="skylane-requirements-") as tmp:
        target = Path(tmp) / "packages"
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--target",
            str(target),
            "--only-binary=:all:",
            *[arg for tag in platforms for arg in ("--platform", tag)],
            "--python-version",
            python_version,
            "--implementation",
            "cp",
            "--no-compile",
            "--no-warn-script-location",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "-r",
            str(requirements.resolve()),
            *pip_args,
        ]
        environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        environment.pop("PIP_USER", None)
        environment.pop("PIP_REQUIRE_VIRTUALENV", None)
        done = subprocess.run(
            command, cwd=cwd, env=environment, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            output = mask_url_credentials((done.stderr or done.stdout).strip())
            tail = "\n".join(output.splitlines()[-15:])
            raise InvalidInput(
                f"pip could not install {requirements.name} for {platform}, Python "
                f"{python_version} (exit {done.returncode}):\n{tail}",
                field="requirements",
            )
        target.mkdir(exist_ok=True)
        _rewrite_script_shebangs(target / "bin")
        layer = layer_from_directory(
            target,
            packages_path,
            ignore_files=(),
            excludes=("__pycache__", "*.pyc"),
            mtime=epoch,
            field_name="requirements",
        )
    if cache is not None:
        try:
            layer.save(cache)
        except OSError as exc:
            log.warning("could not cache the requirements layer in %s: %s", cache, exc)
    return layer, False


def _rewrite_script_shebangs(bin_dir: Path) -> None:
    """pip writes console scripts with this machine's interpreter in their `#!` line; in the
    image, `/usr/bin/env python3` finds the image's."""
    if not bin_dir.is_dir():
        return
    for script in sorted(bin_dir.iterdir()):
        if not script.is_file() or script.is_symlink():
            continue
        data = script.read_bytes()
        if _SHEBANG_PYTHON.match(data):
            first, sep, rest = data.partition(b"\n")
            script.write_bytes(b"#!/usr/bin/env python3" + sep + rest)


def _env_list_to_dict(items: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, _, value = str(item).partition("=")
        out[name] = value
    return out


def image_config(
    base_config: Mapping[str, Any],
    layers: Mapping[str, Layer],
    *,
    epoch: int,
    env: Mapping[str, str] | None,
    workdir: str,
    entrypoint: Sequence[str] | None,
    cmd: Sequence[str] | None,
    labels: Mapping[str, str] | None,
    project_path: str,
    packages_path: str,
    requirements_name: str | None,
) -> dict[str, Any]:
    """The new image config: the base's, with our layers, env, working directory, command and
    labels. Env order: the base's variables in their order (changed in place), then new ones
    sorted by name."""
    config = copy.deepcopy(dict(base_config))
    created = iso_time(epoch)
    config["created"] = created
    runtime = config.get("config") or {}
    config["config"] = runtime

    variables = _env_list_to_dict(runtime.get("Env"))
    ours: dict[str, str] = {}
    paths = [project_path]
    if "requirements" in layers:
        paths.append(packages_path)
        if any(
            e.startswith(packages_path.strip("/") + "/bin/") for e in layers["requirements"].entries
        ):
            ours["PATH"] = f"{packages_path}/bin:" + (variables.get("PATH") or DEFAULT_PATH)
    existing = variables.get("PYTHONPATH")
    ours["PYTHONPATH"] = ":".join(paths + ([existing] if existing else []))
    ours.update(env or {})
    for name in sorted(ours):
        variables[name] = ours[name]  # existing keys keep their place, new ones are appended
    runtime["Env"] = [f"{name}={value}" for name, value in variables.items()]
    runtime["WorkingDir"] = workdir
    if entrypoint is not None:
        runtime["Entrypoint"] = list(entrypoint)
        runtime.pop("Cmd", None)  # as Docker does: a new ENTRYPOINT clears the base's CMD
    if cmd is not None:
        runtime["Cmd"] = list(cmd)
    if labels:
        runtime["Labels"] = {**(runtime.get("Labels") or {}), **labels}

    rootfs = config.get("rootfs") or {"type": "layers", "diff_ids": []}
    rootfs["type"] = "layers"
    rootfs["diff_ids"] = [
        *(rootfs.get("diff_ids") or []),
        *(layer.diff_id for layer in layers.values()),
    ]
    config["rootfs"] = rootfs
    history = list(config.get("history") or [])
    for kind in layers:
        if kind == "requirements":
            created_by = f"skylane: pip install -r {requirements_name} --target {packages_path}"
        else:
            created_by = f"skylane: project files -> {project_path}"
        history.append({"created": created, "created_by": created_by, "comment": "skylane"})
    config["history"] = history
    return config


def _oci_layer(descriptor: Descriptor, base: ImageReference) -> dict[str, Any]:
    if descriptor.media_type == DOCKER_FOREIGN_LAYER:
        raise PermanentProviderError(
            f"base image {base} has a foreign (non-distributable) layer; use a Linux base image",
            details={"registry": base.registry, "repository": base.repository},
        )
    media_type = (
        OCI_LAYER_GZIP if descriptor.media_type == DOCKER_LAYER_GZIP else descriptor.media_type
    )
    body = {"mediaType": media_type, "digest": descriptor.digest, "size": descriptor.size}
    if descriptor.annotations:
        body["annotations"] = dict(descriptor.annotations)
    return body


def image_manifest(
    base: ImageReference,
    base_manifest: Manifest,
    config_bytes: bytes,
    layers: Sequence[Layer] | Any,
) -> dict[str, Any]:
    """The OCI image manifest: the config, the base's layers (Docker layer media types spelled
    the OCI way: the bytes are the same), then ours; annotated with the base's name and
    digest."""
    base_digest = base_manifest.index.digest if base_manifest.index else base_manifest.digest
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": sha256_digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            *(_oci_layer(d, base) for d in base_manifest.layers),
            *(
                {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ),
        ],
        "annotations": {
            ANNOTATION_BASE_NAME: str(base),
            ANNOTATION_BASE_DIGEST: base_digest,
        },
    }


# --- the push -----------------------------------------------------------------------------


def push_image(build: ImageBuild, registries: Registries) -> BuildResult:
    """Push `build` to its target: blobs the repository lacks, then the manifest under the
    target's tag (`latest` when it has none) unless the tag already names this digest."""
    started = time.monotonic()
    target = build.target
    client = registries.client(target.registry)
    base_client = registries.client(build.base.registry)
    same_registry = client is base_client
    blobs: list[PushedBlob] = []

    for descriptor in build.base_manifest.layers:
        if client.blob_exists(target.repository, descriptor.digest, for_push=True):
            action = "exists"
        elif same_registry and client.mount_blob(
            target.repository, descriptor.digest, build.base.repository
        ):
            action = "mounted"
        else:
            _copy_blob(base_client, build.base.repository, client, target.repository, descriptor)
            action = "copied"
        blobs.append(PushedBlob(descriptor.digest, descriptor.size, "base layer", action))

    for kind, layer in build.layers.items():
        action = client.upload_blob(target.repository, layer.source, layer.digest)
        blobs.append(PushedBlob(layer.digest, layer.size, f"{kind} layer", action))
    action = client.upload_blob(target.repository, build.config_bytes, build.config_digest)
    blobs.append(PushedBlob(build.config_digest, len(build.config_bytes), "config", action))

    tag = target.tag or "latest"
    digest = build.digest
    if client.manifest_digest(target.repository, tag, for_push=True) == digest:
        manifest_action = "unchanged"
    else:
        client.put_manifest(target.repository, tag, build.manifest_bytes, OCI_MANIFEST)
        manifest_action = "pushed"
    timings = {**build.timings, "push": time.monotonic() - started}
    return BuildResult(
        reference=build.reference,
        digest=digest,
        tag=tag,
        base=str(build.base.with_digest(build.base_manifest.digest)),
        platform=str(build.platform),
        manifest=build.manifest,
        manifest_bytes=build.manifest_bytes,
        config=build.config,
        config_digest=build.config_digest,
        layers=build.layers,
        blobs=blobs,
        manifest_action=manifest_action,
        requirements_cached=build.requirements_cached,
        timings=timings,
    )


def _copy_blob(
    source: RegistryClient,
    source_repository: str,
    destination: RegistryClient,
    repository: str,
    blob: Descriptor,
) -> None:
    """Blob `blob` from another registry (or one that refused to mount it) into `repository`,
    through a temporary file."""
    with tempfile.TemporaryDirectory(prefix="skylane-blob-") as tmp:
        path = Path(tmp) / "blob"
        source.download_blob(source_repository, blob.digest, path)
        destination.upload_blob(repository, path, blob.digest, check_exists=False)


__all__ = [
    "BuildResult",
    "BuildSpec",
    "ImageBuild",
    "PushedBlob",
    "build_image",
    "image_config",
    "image_manifest",
    "mask_url_credentials",
    "pip_platform_tags",
    "plan_image",
    "push_image",
    "python_version_of",
    "requirements_layer",
]

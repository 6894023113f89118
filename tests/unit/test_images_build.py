"""Daemonless builds through a real registry: a tiny base image pushed by the test, a small
project and a local pure-Python wheel (no network: pip installs with --no-index)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from skylane.errors import InvalidInput, PermanentProviderError
from skylane.images import BuildSpec as ExportedBuildSpec
from skylane.images.build import (
    BuildResult,
    BuildSpec,
    build_image,
    pip_platform_tags,
    plan_image,
    python_version_of,
)
from skylane.images.layers import layer_listing, read_layer_file
from skylane.images.registry import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Registries,
    RegistryClient,
    sha256_digest,
)
from skylane.testing.oci_registry import (
    htpasswd_unavailable_reason,
    oci_registry,
    push_test_image,
    push_test_index,
    registry_unavailable_reason,
    write_wheel,
)

PACKAGES = "opt/skylane/packages/"
PROJECT = "opt/skylane/project/"


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    if registry_unavailable_reason():
        pytest.skip(registry_unavailable_reason() or "")
    with oci_registry() as running:
        yield running.host


@pytest.fixture(scope="module")
def registries() -> Iterator[Registries]:
    with Registries(docker_config=False) as shared:
        yield shared


@pytest.fixture(scope="module")
def base(registry: str, registries: Registries) -> str:
    """A one-layer base image with PYTHON_VERSION=3.12.4 in its env (Docker media types)."""
    push_test_image(registries.client(registry), "base/python", "3.12")
    return f"{registry}/base/python:3.12"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheels")
    write_wheel(
        directory,
        "tinylib",
        "1.0",
        {"tinylib/__init__.py": "def hello():\n    return 'hello from tinylib'\n"},
        scripts={"tiny": "tinylib:hello"},
    )
    return directory


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def make_project(root: Path) -> Path:
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "etl.py").write_text("def main():\n    return 'etl ran'\n")
    (root / "requirements.txt").write_text("tinylib==1.0\n")
    (root / ".skylaneignore").write_text("notes/\n")
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("private\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def build(
    base: str,
    project: Path,
    target: str,
    registries: Registries,
    cache_dir: Path,
    wheels: Path,
    **kwargs: object,
) -> BuildResult:
    options: dict[str, object] = {
        "requirements": project / "requirements.txt",
        "pip_args": ["--no-index", "--find-links", str(wheels)],
        "env": {"SKYLANE_API_URL": "http://control-plane:4200", "PYTHON_VERSION": "3.12.4"},
        "entrypoint": ["skylane", "run", "execute"],
        "labels": {"org.skylane.project": "demo"},
    }
    options.update(kwargs)
    spec = BuildSpec(base, project, target=target, **options)  # type: ignore[arg-type]
    return build_image(spec, registries=registries, cache_dir=cache_dir)


def test_build_pushes_the_project_and_requirements(
    registry: str,
    registries: Registries,
    base: str,
    wheels: Path,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "project")
    result = build(base, project, f"{registry}/team/app:v1", registries, cache_dir, wheels)
    assert result.reference == f"{registry}/team/app@{result.digest}"
    assert result.tag == "v1" and result.manifest_action == "pushed"
    assert [b.kind for b in result.blobs] == [
        "base layer",
        "requirements layer",
        "project layer",
        "config",
    ]
    assert [b.action for b in result.blobs] == ["mounted", "uploaded", "uploaded", "uploaded"]

    # Pull it back by digest, as a runtime would.
    client: RegistryClient = registries.client(registry)
    manifest = client.get_manifest("team/app", result.digest)
    assert manifest.data == result.manifest_bytes
    assert client.manifest_digest("team/app", "v1") == result.digest
    body = manifest.json
    assert body["mediaType"] == OCI_MANIFEST and body["config"]["mediaType"] == OCI_CONFIG
    base_manifest = client.get_manifest("base/python", "3.12")
    base_config = json.loads(client.get_blob("base/python", base_manifest.config.digest))
    assert len(body["layers"]) == 3
    assert [layer["digest"] for layer in body["layers"][:1]] == [
        layer.digest for layer in base_manifest.layers
    ]
    assert {layer["mediaType"] for layer in body["layers"]} == {OCI_LAYER_GZIP}
    assert body["annotations"] == {
        "org.opencontainers.image.base.name": f"{registry}/base/python:3.12",
        "org.opencontainers.image.base.digest": base_manifest.digest,
    }
    config_bytes = client.get_blob("team/app", body["config"]["digest"])
    config = json.loads(config_bytes)
    assert config == result.config and sha256_digest(config_bytes) == result.config_digest

    requirements, project_layer = result.layers["requirements"], result.layers["project"]
    assert config["rootfs"]["diff_ids"] == [
        *base_config["rootfs"]["diff_ids"],
        requirements.diff_id,
        project_layer.diff_id,
    ]
    runtime = config["config"]
    assert runtime["Env"] == [
        "PATH=/opt/skylane/packages/bin:/usr/local/bin:/usr/bin:/bin",
        "PYTHON_VERSION=3.12.4",
        "PYTHONPATH=/opt/skylane/project:/opt/skylane/packages",
        "SKYLANE_API_URL=http://control-plane:4200",
    ]
    assert runtime["WorkingDir"] == "/opt/skylane/project"
    assert runtime["Entrypoint"] == ["skylane", "run", "execute"]
    assert "Cmd" not in runtime  # a new entrypoint clears the base's CMD, as in Docker
    assert runtime["Labels"] == {"org.example.base": "yes", "org.skylane.project": "demo"}
    assert [h["created"] for h in config["history"][1:]] == ["1970-01-01T00:00:00Z"] * 2
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert (config["os"], config["architecture"]) == ("linux", "amd64")

    # The project layer holds the code and not what is ignored.
    project_bytes = client.get_blob("team/app", project_layer.digest)
    listed = layer_listing(project_bytes)
    assert PROJECT + "flows/etl.py" in listed and PROJECT + "requirements.txt" in listed
    assert not any(n.startswith((PROJECT + "notes", PROJECT + ".git")) for n in listed)

    # The requirements layer holds the installed package: importable from its contents.
    packages = client.get_blob("team/app", requirements.digest)
    root = tmp_path / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(packages), mode="r:gz") as tar:
        tar.extractall(root, filter="data")
    with tarfile.open(fileobj=io.BytesIO(project_bytes), mode="r:gz") as tar:
        tar.extractall(root, filter="data")
    pythonpath = ":".join(str(root / p.lstrip("/")) for p in runtime["Env"][2][11:].split(":"))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import tinylib, flows.etl; print(tinylib.hello(), flows.etl.main())",
        ],
        env={"PYTHONPATH": pythonpath, "PATH": os.environ["PATH"]},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "hello from tinylib etl ran"
    script = read_layer_file(packages, PACKAGES + "bin/tiny")
    assert script.startswith(b"#!/usr/bin/env python3\n")  # not this machine's interpreter
    assert not any(n.endswith(".pyc") for n in layer_listing(packages))


def test_same_build_twice_same_digest_and_nothing_uploaded(
    registry: str,
    registries: Registries,
    base: str,
    wheels: Path,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "project")
    target = f"{registry}/team/twice:latest"
    first = build(base, project, target, registries, cache_dir, wheels)
    client = registries.client(registry)
    uploads_before = client.stats.blobs_uploaded
    puts_before = client.stats.manifests_put
    second = build(base, project, target, registries, cache_dir, wheels)
    assert second.digest == first.digest
    assert second.manifest_bytes == first.manifest_bytes
    assert second.requirements_cached
    assert second.layers["requirements"].read_bytes() == first.layers["requirements"].read_bytes()
    assert [b.action for b in second.blobs] == ["exists"] * 4
    assert second.uploaded == [] and second.manifest_action == "unchanged"
    assert client.stats.blobs_uploaded == uploads_before
    assert client.stats.manifests_put == puts_before

    # Without the cache pip runs again, and still makes the same bytes; a copy of the project
    # elsewhere (other mtimes, other path) gives the same image.
    copy = tmp_path / "elsewhere" / "project"
    shutil.copytree(project, copy)
    third = build(base, copy, target, registries, tmp_path / "fresh-cache", wheels)
    assert not third.requirements_cached
    assert third.digest == first.digest and third.uploaded == []


def test_a_changed_project_file_uploads_only_the_project_layer(
    registry: str,
    registries: Registries,
    base: str,
    wheels: Path,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "project")
    target = f"{registry}/team/changed:v1"
    first = build(base, project, target, registries, cache_dir, wheels)
    (project / "flows" / "etl.py").write_text("def main():\n    return 'etl v2'\n")
    second = build(base, project, target, registries, cache_dir, wheels)
    assert second.digest != first.digest and second.manifest_action == "pushed"
    actions = {b.kind: b.action for b in second.blobs}
    assert actions == {
        "base layer": "exists",
        "requirements layer": "exists",
        "project layer": "uploaded",
        "config": "uploaded",  # it lists the new project layer's diff_id
    }
    assert second.layers["requirements"].digest == first.layers["requirements"].digest
    client = registries.client(registry)
    assert client.manifest_digest("team/changed", "v1") == second.digest
    # The first image is still there, by its digest.
    assert client.get_manifest("team/changed", first.digest).digest == first.digest


def test_base_on_another_registry_is_copied(
    registry: str, registries: Registries, base: str, tmp_path: Path
) -> None:
    # The same registry under another name is another registry to the client: no mount.
    other_name = base.replace("127.0.0.1", "localhost", 1)
    project = make_project(tmp_path / "project")
    result = build_image(
        BuildSpec(other_name, project, target=f"{registry}/copied/app"), registries=registries
    )
    assert result.tag == "latest"
    assert [b.action for b in result.blobs] == ["copied", "uploaded", "uploaded"]
    assert "requirements" not in result.layers
    runtime = result.config["config"]
    assert runtime["Cmd"] == ["python3"] and "Entrypoint" not in runtime  # the base's, kept
    assert "PYTHONPATH=/opt/skylane/project" in runtime["Env"]
    client = registries.client(registry)
    for layer in result.manifest["layers"]:
        assert client.blob_exists("copied/app", layer["digest"])


def test_manifest_list_base_resolves_to_the_platform(
    registry: str, registries: Registries, tmp_path: Path
) -> None:
    client = registries.client(registry)
    amd = push_test_image(client, "base/multi", None, files={"amd64": "x"})
    arm = push_test_image(client, "base/multi", None, files={"arm64": "x"}, platform="linux/arm64")
    index = push_test_index(client, "base/multi", "3", {"linux/amd64": amd, "linux/arm64": arm})
    project = make_project(tmp_path / "project")
    for platform, chosen in (("linux/amd64", amd), ("linux/arm64", arm)):
        spec = BuildSpec(
            f"{registry}/base/multi:3",
            project,
            target=f"{registry}/multi/app:{platform.split('/')[1]}",
            platform=platform,
        )
        result = build_image(spec, registries=registries)
        assert result.base == f"{registry}/base/multi@{chosen}"
        assert result.config["architecture"] == platform.split("/")[1]
        assert result.manifest["annotations"]["org.opencontainers.image.base.digest"] == index


def test_source_date_epoch_dates_the_image(
    registry: str,
    registries: Registries,
    base: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = make_project(tmp_path / "project")
    spec = BuildSpec(base, project, target=f"{registry}/dated/app")
    plain = plan_image(spec, registries=registries)
    # The epoch is read when building, not when the spec is made: the same spec follows it.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = plan_image(spec, registries=registries)
    assert dated.digest != plain.digest
    assert dated.config["created"] == "2023-11-14T22:13:20Z"
    again = plan_image(spec, registries=registries)
    assert again.digest == dated.digest
    # An explicit epoch wins over the environment.
    pinned = plan_image(dataclasses.replace(spec, epoch=0), registries=registries)
    assert pinned.digest == plain.digest


def test_build_through_basic_auth(base: str, registries: Registries, tmp_path: Path) -> None:
    reason = htpasswd_unavailable_reason()
    if reason:
        pytest.skip(reason)
    password = "builder-secret-1"
    with (
        oci_registry(users={"builder": password}) as private,
        Registries(credentials={private.host: ("builder", password)}) as auth,
    ):
        push_test_image(auth.client(private.host), "base/python", "3.12")
        project = make_project(tmp_path / "project")
        spec = BuildSpec(
            f"{private.host}/base/python:3.12", project, target=f"{private.host}/team/app:v1"
        )
        first = build_image(spec, registries=auth)
        again = build_image(spec, registries=auth)
        assert again.digest == first.digest and again.uploaded == []
        with (
            Registries(credentials={private.host: ("builder", "wrong-one")}) as wrong,
            pytest.raises(PermanentProviderError) as caught,
        ):
            build_image(spec, registries=wrong)
        assert "wrong-one" not in str(caught.value) and "'builder'" in str(caught.value)


def test_build_errors_name_the_field(
    registry: str,
    registries: Registries,
    base: str,
    wheels: Path,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "project")
    target = f"{registry}/errors/app"

    def field_of(**kwargs: object) -> str | None:
        """The field named by the error of a spec made with `kwargs`, whether making the spec
        refuses it or building it does."""
        options: dict[str, object] = {"target": target, "project_dir": project}
        options.update(kwargs)
        with pytest.raises(InvalidInput) as caught:
            spec = BuildSpec(options.pop("base", base), **options)  # type: ignore[arg-type]
            build_image(spec, registries=registries)
        return caught.value.field

    assert field_of(target=f"{target}@sha256:" + "0" * 64) == "target"
    assert field_of(base="Not A Reference") == "base"
    assert field_of(platform="amd64") == "platform"
    assert field_of(project_dir=tmp_path / "nowhere") == "project_dir"
    assert field_of(workdir="relative") == "workdir"
    assert field_of(project_path="/") == "project_path"
    assert field_of(packages_path="opt/packages") == "packages_path"
    assert field_of(entrypoint="skylane run") == "entrypoint"
    assert field_of(cmd=["python", 3]) == "cmd"
    assert field_of(pip_args="--no-index") == "pip_args"
    assert field_of(env={"A=B": "c"}) == "env"
    assert field_of(env={"A": 1}) == "env.A"
    assert field_of(labels=["a=b"]) == "labels"
    assert field_of(python_version="three") == "python_version"
    assert field_of(epoch=-1) == "epoch"
    assert field_of(requirements=project / "missing.txt") == "requirements"

    # A requirement pip cannot find: the field, and pip's own words.
    (project / "requirements.txt").write_text("tinylib==9.9\n")
    with pytest.raises(InvalidInput) as caught:
        spec = BuildSpec(
            base,
            project,
            target=target,
            requirements=project / "requirements.txt",
            pip_args=["--no-index", "--find-links", str(wheels)],
        )
        build_image(spec, registries=registries, cache_dir=cache_dir)
    assert caught.value.field == "requirements" and "tinylib==9.9" in str(caught.value)

    # A base that does not say its Python version needs python_version=.
    push_test_image(registries.client(registry), "base/nopython", "1", env={"PYTHON_VERSION": ""})
    assert (
        field_of(base=f"{registry}/base/nopython:1", requirements=project / "requirements.txt")
        == "python_version"
    )

    # A base for another platform.
    push_test_image(registries.client(registry), "base/arm", "1", platform="linux/arm64")
    with pytest.raises(PermanentProviderError, match="linux/arm64, not linux/amd64"):
        build_image(BuildSpec(f"{registry}/base/arm:1", project, target), registries=registries)


def test_build_spec_normalises_its_values(tmp_path: Path) -> None:
    assert ExportedBuildSpec is BuildSpec
    spec = BuildSpec(
        "python:3.12-slim",
        str(tmp_path),
        target="localhost:5000/team/app",
        platform="Linux/x86_64",
        requirements=str(tmp_path / "requirements.txt"),
        workdir="/srv//app/",
        entrypoint=["skylane", "run", "execute"],
        pip_args=["--no-index"],
        project_path="/opt/skylane/project/",
        env={"A": "1"},
    )
    assert spec.project_dir == tmp_path and spec.requirements == tmp_path / "requirements.txt"
    assert spec.platform == "linux/amd64"
    assert (spec.workdir, spec.image_workdir) == ("/srv/app", "/srv/app")
    assert spec.project_path == "/opt/skylane/project"
    assert spec.entrypoint == ("skylane", "run", "execute") and spec.pip_args == ("--no-index",)
    assert spec.cmd is None and spec.labels is None
    assert spec.target_reference.repository == "team/app"
    assert spec.base_reference.name == "docker.io/library/python"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.target = "elsewhere/app"  # type: ignore[misc]
    # A copy with a change is checked and normalised like a new spec.
    assert dataclasses.replace(spec, workdir=None).image_workdir == "/opt/skylane/project"
    assert dataclasses.replace(spec, epoch=5).resolved_epoch() == 5
    with pytest.raises(InvalidInput) as caught:
        dataclasses.replace(spec, target="Bad Target")
    assert caught.value.field == "target"
    with Registries(docker_config=False) as registries, pytest.raises(TypeError):
        plan_image("python:3.12", registries=registries)  # type: ignore[arg-type]


def test_pip_platform_tags_and_python_version() -> None:
    tags = pip_platform_tags("linux/amd64")
    assert tags[0] == "manylinux_2_28_x86_64" and tags[-2] == "manylinux_2_17_x86_64"
    assert tags[-1] == "manylinux2014_x86_64"
    assert pip_platform_tags("linux/arm64")[0] == "manylinux_2_28_aarch64"
    with pytest.raises(InvalidInput):
        pip_platform_tags("windows/amd64")
    config = {"config": {"Env": ["PATH=/usr/bin", "PYTHON_VERSION=3.11.9"]}}
    assert python_version_of(config) == "3.11"
    assert python_version_of({"config": {}}, "3.13") == "3.13"
    assert python_version_of({"config": {}}) is None
    with pytest.raises(InvalidInput) as caught:
        python_version_of({}, "three")
    assert caught.value.field == "python_version"

"""`skylane deploy` and the SDK's `Flow.deploy`, in process: the API app (SQLite), a real
loopback OCI registry (Debian's docker-registry) and real git repositories."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from skylane.client import SkylaneClient
from skylane.deploy import default_image, deploy_project
from skylane.errors import InvalidInput
from skylane.images.registry import Registries
from skylane.models import Pool
from skylane.project_file import load_project_file, parse_project_file
from skylane.project_init import RECIPES, init_project
from skylane.testing.git_repos import GitRemote
from skylane.testing.oci_registry import (
    LocalRegistry,
    oci_registry,
    push_test_image,
    registry_unavailable_reason,
)

needs_registry = pytest.mark.skipif(
    registry_unavailable_reason() is not None, reason=registry_unavailable_reason() or ""
)

FLOW = """\
from skylane import flow


@flow(name="etl")
def run_etl(day: str = "today", rows: int = 3) -> None:
    print("etl", day, rows)
"""


@pytest.fixture
def database_url(tmp_path: Path, migrated_sqlite_file: Path) -> str:
    # What is tested here runs in the client; the store's part is tested on both databases.
    path = tmp_path / "skylane.db"
    shutil.copyfile(migrated_sqlite_file, path)
    return f"sqlite:///{path}"


@pytest.fixture
def client(api: TestClient, admin_key: str) -> Iterator[SkylaneClient]:
    with SkylaneClient("http://testserver", admin_key, transport=api._transport) as found:
        yield found


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    if registry_unavailable_reason():
        pytest.skip(registry_unavailable_reason() or "")
    with oci_registry() as running:
        yield running


@pytest.fixture(scope="module")
def base_image(registry: LocalRegistry) -> str:
    """A tiny base image that says it carries skylane, as the runtime image does."""
    with Registries() as registries:
        push_test_image(
            registries.client(registry.host),
            "runtime",
            "3.12",
            labels={"io.skylane.version": "0.1.0"},
        )
    return f"{registry.host}/runtime:3.12"


def registry_requests(registry: LocalRegistry) -> list[str]:
    """The repositories the registry holds (what was ever pushed)."""
    answer = httpx.get(f"http://{registry.host}/v2/_catalog").json()
    return answer.get("repositories") or []


def make_pool(client: SkylaneClient, name: str, kind: str, **settings: str) -> Pool:
    from skylane.adapters import adapter_class
    from skylane.pool_types import parse_pool_type

    template = adapter_class(parse_pool_type(kind).provider).default_template()
    return client.create_pool(name=name, type=kind, base_job_template=template, settings=settings)


def project_dir(tmp_path: Path, yaml_text: str) -> Path:
    directory = tmp_path / "etl-project"
    (directory / "flows").mkdir(parents=True)
    (directory / "flows" / "etl.py").write_text(FLOW)
    (directory / "skylane.yaml").write_text(yaml_text)
    return directory


def project_yaml(image: str, base: str, *, schedules: str = '[{cron: "0 2 * * *"}]') -> str:
    return f"""
name: etl
build: {{image: "{image}", base_image: "{base}", builder: daemonless}}
deployments:
  - name: nightly
    entrypoint: flows/etl.py:run_etl
    pool: ecs
    parameters: {{day: "yesterday"}}
    job_variables: {{cpu: 512}}
    schedules: {schedules}
    tags: [etl]
  - name: adhoc
    entrypoint: flows/etl.py:run_etl
    pool: ecs
"""


@needs_registry
def test_deploy_pushes_once_pins_the_digest_and_a_redeploy_pushes_nothing(
    client: SkylaneClient, registry: LocalRegistry, base_image: str, tmp_path: Path
) -> None:
    make_pool(client, "ecs", "ecs:push")
    image = f"{registry.host}/acme/etl"
    directory = project_dir(tmp_path, project_yaml(image, base_image))
    project = load_project_file(directory / "skylane.yaml")

    with Registries() as registries:
        first = deploy_project(project, directory, client, registries=registries)
    assert first.image.action == "pushed" and first.image.bytes_uploaded > 0
    pinned = first.image.reference
    assert pinned and pinned.startswith(f"{image}@sha256:")
    assert [(d.full_name, d.action) for d in first.deployments] == [
        ("etl/nightly", "created"),
        ("etl/adhoc", "created"),
    ]
    nightly = client.get_deployment_by_name("etl/nightly")
    assert nightly.image == pinned
    assert nightly.parameters == {"day": "yesterday"} and nightly.job_variables == {"cpu": 512}
    # The flow's name comes from @flow(name=...), the schema from the function's signature.
    assert set(nightly.parameter_schema["properties"]) == {"day", "rows"}
    (schedule,) = client.list_schedules(nightly.id)
    assert schedule.cron == "0 2 * * *" and schedule.next_times
    # The registry's tag points at exactly the pinned digest.
    head = httpx.head(
        f"http://{registry.host}/v2/acme/etl/manifests/latest",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert pinned.endswith(head.headers["Docker-Content-Digest"])

    with Registries() as registries:
        again = deploy_project(project, directory, client, registries=registries)
    assert again.image.reference == pinned
    assert again.image.action == "unchanged" and again.image.bytes_uploaded == 0
    assert [d.action for d in again.deployments] == ["unchanged", "unchanged"]
    # Nothing changed: the schedule (and its runs to come) is the same one.
    assert [s.id for s in client.list_schedules(nightly.id)] == [schedule.id]


@needs_registry
def test_a_changed_project_updates_image_and_schedules_and_says_what_changed(
    client: SkylaneClient, registry: LocalRegistry, base_image: str, tmp_path: Path
) -> None:
    make_pool(client, "ecs", "ecs:push")
    image = f"{registry.host}/acme/changing"
    directory = project_dir(tmp_path, project_yaml(image, base_image))
    with Registries() as registries:
        first = deploy_project(
            load_project_file(directory / "skylane.yaml"), directory, client, registries=registries
        )
        (directory / "flows" / "etl.py").write_text(FLOW + "\n# a change\n")
        (directory / "skylane.yaml").write_text(
            project_yaml(image, base_image, schedules='[{cron: "0 3 * * *"}, {interval: 600}]')
        )
        second = deploy_project(
            load_project_file(directory / "skylane.yaml"), directory, client, registries=registries
        )
    assert second.image.reference != first.image.reference
    # Only the project layer and the config were uploaded: the base is already there.
    assert second.image.blobs_uploaded == 2
    nightly, adhoc = second.deployments
    assert nightly.action == "updated"
    assert "image" in nightly.changes and "schedules +2 -1" in nightly.changes
    assert sorted((s.cron or "", s.interval_seconds or 0) for s in nightly.schedules) == [
        ("", 600),
        ("0 3 * * *", 0),
    ]
    assert adhoc.changes == ["image"]
    assert client.get_deployment_by_name("etl/adhoc").image == second.image.reference


@needs_registry
def test_no_build_pins_the_image_under_its_tag_and_no_push_registers_nothing(
    client: SkylaneClient, registry: LocalRegistry, base_image: str, tmp_path: Path
) -> None:
    make_pool(client, "ecs", "ecs:push")
    image = f"{registry.host}/acme/flags"
    directory = project_dir(tmp_path, project_yaml(image, base_image))
    project = load_project_file(directory / "skylane.yaml")
    with Registries() as registries:
        with pytest.raises(InvalidInput, match="not in the registry"):
            deploy_project(project, directory, client, build=False, registries=registries)
        dry = deploy_project(project, directory, client, push=False, registries=registries)
        assert dry.image.action == "not pushed"
        assert [d.action for d in dry.deployments] == ["not registered"] * 2
        assert client.list_deployments() == []
        assert "acme/flags" not in registry_requests(registry)

        pushed = deploy_project(project, directory, client, registries=registries)
        assert pushed.image.reference == dry.image.reference  # reproducible: same digest
        resolved = deploy_project(project, directory, client, build=False, registries=registries)
    assert resolved.image.action == "resolved"
    assert resolved.image.reference == pushed.image.reference


@needs_registry
@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda y: y.replace("pool: ecs\n    parameters", "pool: nope\n    parameters"), "pool"),
        (lambda y: y.replace('cron: "0 2 * * *"', 'cron: "0 25 * * *"'), "schedules[0].cron"),
        (lambda y: y.replace("tags: [etl]", "tags: [etl]\n    retries: 3"), "retries"),
        (
            lambda y: y.replace(
                "flows/etl.py:run_etl\n    pool: ecs\n    param",
                "flows/gone.py:f\n    pool: ecs\n    param",
            ),
            "entrypoint",
        ),  # noqa: E501
    ],
    ids=["unknown-pool", "bad-schedule", "unknown-key", "missing-entrypoint"],
)
def test_bad_project_files_fail_naming_the_field_before_anything_is_built(
    client: SkylaneClient,
    registry: LocalRegistry,
    base_image: str,
    tmp_path: Path,
    edit: object,
    field: str,
) -> None:
    make_pool(client, "ecs", "ecs:push")
    image = f"{registry.host}/acme/bad"
    text = edit(project_yaml(image, base_image))  # type: ignore[operator]
    directory = project_dir(tmp_path, text)
    with pytest.raises(InvalidInput) as caught, Registries() as registries:
        project = load_project_file(directory / "skylane.yaml")
        deploy_project(project, directory, client, registries=registries)
    assert field in str(caught.value)
    assert "acme/bad" not in registry_requests(registry)
    assert client.list_deployments() == []


def test_the_default_image_is_in_the_pools_provisioned_registry(tmp_path: Path) -> None:
    def pool(name: str, repository: str | None) -> Pool:
        settings = {"image_repository": repository} if repository else {}
        return Pool.model_validate(
            {
                "id": "00000000-0000-0000-0000-000000000001",
                "name": name,
                "type": "ecs:push",
                "base_job_template": {},
                "settings": settings,
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z",
            }
        )

    def project(pool_names: list[str], image: str | None = None) -> object:
        build = f"build: {{image: {image}}}\n" if image else ""
        deployments = "".join(
            f"  - {{name: d{i}, entrypoint: 'f.py:f', pool: {p}}}\n"
            for i, p in enumerate(pool_names)
        )
        return parse_project_file(f"name: etl\n{build}deployments:\n{deployments}")

    ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/skylane-prod"
    gar = "europe-west1-docker.pkg.dev/acme/skylane-prod"
    pools = {"ecr": pool("ecr", ecr), "gar": pool("gar", gar), "bare": pool("bare", None)}

    def image_for(names: list[str], image: str | None = None) -> str:
        spec = project(names, image)
        return default_image(spec, list(enumerate(spec.deployments)), pools)  # type: ignore[attr-defined]

    # ECR: one repository per pool, the project is the tag; elsewhere a repository per project.
    assert image_for(["ecr"]) == f"{ecr}:etl"
    assert image_for(["gar"]) == f"{gar}/etl:latest"
    assert image_for(["bare"], "ghcr.io/acme/etl") == "ghcr.io/acme/etl:latest"
    with pytest.raises(InvalidInput, match="skylane pool provision bare") as caught:
        image_for(["bare"])
    assert caught.value.field == "build.image"
    with pytest.raises(InvalidInput, match="different registries"):
        image_for(["ecr", "gar"])


def test_nested_schedule_parameters_and_a_shared_entrypoint_change_nothing_on_redeploy(
    client: SkylaneClient, tmp_path: Path
) -> None:
    make_pool(client, "local", "process:push")
    directory = project_dir(
        tmp_path,
        """
name: etl
deployments:
  - name: a
    entrypoint: flows/etl.py:run_etl
    pool: local
    schedules: [{interval: 600, parameters: {window: {from: monday, to: friday}}}]
  - name: b
    entrypoint: flows/etl.py:run_etl
    pool: local
""",
    )
    # Count how often deploy runs the user's module.
    flow = directory / "flows" / "etl.py"
    counter = tmp_path / "loads"
    flow.write_text(
        f"open({str(counter)!r}, 'a').write('x')\n"
        "from skylane import flow\n\n"
        "@flow(name='etl')\n"
        "def run_etl(window: dict | None = None) -> None:\n"
        "    print(window)\n"
    )
    project = load_project_file(directory / "skylane.yaml")
    deploy_project(project, directory, client)
    assert counter.read_text() == "x"  # two deployments, one entrypoint: loaded once
    (schedule,) = client.list_schedules(client.get_deployment_by_name("etl/a").id)
    again = deploy_project(project, directory, client)
    assert [d.action for d in again.deployments] == ["unchanged", "unchanged"]
    assert [s.id for s in client.list_schedules(schedule.deployment_id)] == [schedule.id]


def test_process_pools_need_no_image(client: SkylaneClient, tmp_path: Path) -> None:
    make_pool(client, "local", "process:push")
    directory = project_dir(
        tmp_path,
        "name: etl\ndeployments:\n"
        "  - {name: here, entrypoint: flows/etl.py:run_etl, pool: local}\n",
    )
    report = deploy_project(load_project_file(directory / "skylane.yaml"), directory, client)
    assert report.image.action == "none" and report.image.reference is None
    here = client.get_deployment_by_name("etl/here")
    assert here.image is None
    # Run where the code is, wherever the server was started.
    assert here.job_variables == {"working_dir": str(directory.resolve())}


# --- recipes and init ------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_writes_a_valid_project_and_readme(recipe: str, tmp_path: Path) -> None:
    extra = {"git_url": "https://github.com/acme/etl.git"} if recipe == "git" else {}
    written = init_project(tmp_path / "p", recipe=recipe, **extra)
    names = {p.name for p in written}
    assert {"skylane.yaml", "README.md", "requirements.txt"} <= names
    project = load_project_file(tmp_path / "p" / "skylane.yaml")
    assert project.deployments[0].pool == RECIPES[recipe].default_pool
    assert (project.deployments[0].source is not None) == (recipe == "git")
    readme = (tmp_path / "p" / "README.md").read_text()
    assert "skylane deploy" in readme and "$" not in readme.replace("```sh", "")


def test_init_never_overwrites_and_names_what_is_wrong(tmp_path: Path) -> None:
    init_project(tmp_path)
    (tmp_path / "README.md").write_text("mine")
    with pytest.raises(InvalidInput, match="already exists"):
        init_project(tmp_path)
    with pytest.raises(InvalidInput) as caught:
        init_project(tmp_path / "g", recipe="git")
    assert caught.value.field == "git_url"
    with pytest.raises(InvalidInput) as caught:
        init_project(tmp_path / "x", recipe="lambda")
    assert caught.value.field == "recipe" and "ecr-ecs" in str(caught.value)
    init_project(tmp_path, recipe="ecr-ecs", force=True)
    assert (tmp_path / "README.md").read_text() == "mine"
    assert (tmp_path / "README.skylane.md").exists()


# --- git sources and the SDK -----------------------------------------------------------------


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    return GitRemote.create(tmp_path, {"flows/etl.py": FLOW})


def test_git_recipe_pins_the_branch_to_its_commit(
    client: SkylaneClient, remote: GitRemote, tmp_path: Path
) -> None:
    make_pool(client, "default", "process:push")
    directory = tmp_path / "deps-only"
    init_project(directory, recipe="git", git_url=remote.url, entrypoint="flows/etl.py:run_etl")
    report = deploy_project(load_project_file(directory / "skylane.yaml"), directory, client)
    (outcome,) = report.deployments
    assert outcome.deployment is not None and outcome.deployment.source is not None
    assert outcome.deployment.source.commit == remote.head
    assert outcome.deployment.source.ref == "main"
    # The code is not here: the flow is named after the function, with no schema.
    assert outcome.full_name == "run_etl/deps-only"


def test_flow_decorator_keeps_the_function_callable_and_deploys_it(
    client: SkylaneClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_pool(client, "local", "process:push")
    directory = tmp_path / "sdk"
    (directory / "flows").mkdir(parents=True)
    (directory / "flows" / "etl.py").write_text(FLOW)
    monkeypatch.chdir(directory)
    monkeypatch.syspath_prepend(str(directory))
    sys.modules.pop("flows.etl", None)
    from flows.etl import run_etl  # type: ignore[import-not-found]

    assert run_etl("monday", 1) is None  # a plain call still runs the function
    deployment = run_etl.deploy(
        name="nightly", pool="local", cron="0 2 * * *", parameters={"rows": 5}, client=client
    )
    assert deployment.full_name == "etl/nightly"
    assert deployment.entrypoint == "flows/etl.py:run_etl"
    assert deployment.parameters == {"rows": 5}
    (schedule,) = client.list_schedules(deployment.id)
    assert schedule.cron == "0 2 * * *"
    # Bad input names the field, before anything is registered.
    with pytest.raises(InvalidInput) as caught:
        run_etl.deploy(name="bad", pool="local", cron="nope", client=client)
    assert "cron" in str(caught.value)
    with pytest.raises(InvalidInput) as caught:
        run_etl.deploy(name="bad", pool="local", cron="* * * * *", interval=60, client=client)
    assert caught.value.field == "interval"
    assert [d.name for d in client.list_deployments()] == ["nightly"]


def test_flow_from_source_registers_a_git_sourced_deployment(
    client: SkylaneClient, remote: GitRemote, tmp_path: Path
) -> None:
    from skylane import flow

    bare, commit = remote.bare, remote.head
    make_pool(client, "local", "process:push")
    deployment = flow.from_source(str(bare), entrypoint="flows/etl.py:run_etl", ref="main").deploy(
        name="from-git", pool="local", interval=3600, project_dir=tmp_path, client=client
    )
    assert deployment.source is not None
    assert json.loads(deployment.source.model_dump_json()) == {
        "git": str(bare),
        "ref": "main",
        "commit": commit,
        "credentials": None,
    }

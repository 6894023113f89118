"""`skylane deploy`: a project file becomes an image pushed by digest and registered deployments.

In order, and nothing is built or pushed before every check has passed:

1. check: the deployments asked for exist in the file, their pools exist on the server, the
   image has a name (the file's `build.image`, else the pools' provisioned registry), git
   sources resolve to a commit;
2. build once, push once (`skylane.images`: `docker build` when an engine answers, else the
   daemonless build); `--no-build` instead resolves the image already under its tag;
3. register or update each deployment pinned to the pushed digest (`repo@sha256:...`) with its
   schedules, and report what changed.

The same function serves the CLI and the SDK's `Flow.deploy`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skylane.client import SkylaneClient
from skylane.entrypoints import describe_flow, parse_entrypoint
from skylane.errors import InvalidInput, NotFound
from skylane.git_source import resolve_commit
from skylane.images.build import BuildResult, BuildSpec, build_image, plan_image
from skylane.images.cloud_registry_auth import registry_kind
from skylane.images.layers import IGNORE_FILES
from skylane.images.reference import parse_reference
from skylane.images.registry import Registries
from skylane.models import Deployment, GitSource, Pool, Schedule
from skylane.pool_types import parse_pool_type, with_default_working_dir
from skylane.project_file import DeploymentSpec, ProjectFile, ScheduleEntry

RUNTIME_COMMAND = ("skylane", "run", "execute")
PROJECT_LABEL = "io.skylane.project"
SKYLANE_LABEL = "io.skylane.version"

Progress = Callable[[str], None]


@dataclass
class ImageOutcome:
    """What happened to the image: `reference` is the pinned `repo@sha256:...` (None when no
    deployment needs an image); `action`: pushed, unchanged (nothing uploaded), built (by
    docker), resolved (--no-build), not pushed (--no-push) or none."""

    reference: str | None
    action: str
    tag: str | None = None
    bytes_uploaded: int = 0
    blobs_uploaded: int = 0
    builder: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class DeploymentOutcome:
    full_name: str
    action: str  # created, updated, unchanged, not registered
    changes: list[str]
    deployment: Deployment | None = None
    schedules: list[Schedule] = field(default_factory=list)


@dataclass
class DeployReport:
    image: ImageOutcome
    deployments: list[DeploymentOutcome]


# --- 1. checks ------------------------------------------------------------------------------


def select_deployments(
    project: ProjectFile, names: Sequence[str] | None
) -> list[tuple[int, DeploymentSpec]]:
    """The deployments asked for by name (all of them when `names` is empty), with their index
    in the file for error messages."""
    indexed = list(enumerate(project.deployments))
    if not names:
        return indexed
    known = {spec.name: (i, spec) for i, spec in indexed}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidInput(
            f"no deployment named {unknown[0]!r} in the project file; it has: "
            + ", ".join(sorted(known)),
            field="deployments",
        )
    return [known[n] for n in dict.fromkeys(names)]


def _pools(client: SkylaneClient, selected: list[tuple[int, DeploymentSpec]]) -> dict[str, Pool]:
    pools: dict[str, Pool] = {}
    for index, spec in selected:
        if spec.pool in pools:
            continue
        try:
            pools[spec.pool] = client.get_pool(spec.pool)
        except NotFound:
            raise InvalidInput(
                f"deployments[{index}].pool: no pool named {spec.pool!r} on the server "
                "(see `skylane pool ls`; create one with `skylane pool provision` or "
                "`skylane pool create`)",
                field=f"deployments[{index}].pool",
            ) from None
    return pools


def _needs_image(spec: DeploymentSpec, pool: Pool) -> bool:
    # Process pools run the entrypoint on a machine that has the code; no image involved.
    return spec.image is None and parse_pool_type(pool.type).provider != "process"


def default_image(
    project: ProjectFile,
    needing: list[tuple[int, DeploymentSpec]],
    pools: dict[str, Pool],
    tag: str | None = None,
) -> str:
    """Image name and tag to push to: `build.image`, else the pools' provisioned registry.

    An ECR repository holds one image (the provisioner makes one per pool), so the project is
    the tag: `REPO:PROJECT`; Artifact Registry and ACR hold many: `REPO/PROJECT:latest`."""
    if project.build.image:
        return f"{project.build.image}:{tag or 'latest'}"
    repositories = {
        pools[spec.pool].settings.get("image_repository"): (index, spec) for index, spec in needing
    }
    if None in repositories or "" in repositories:
        index, spec = repositories.get(None) or repositories[""]
        raise InvalidInput(
            f"build.image is not set and pool {spec.pool!r} (deployments[{index}].pool) has no "
            "provisioned registry: set build.image, or run `skylane pool provision "
            f"{spec.pool} ...` which creates one",
            field="build.image",
        )
    if len(repositories) > 1:
        listed = ", ".join(f"{s.pool}: {r}" for r, (_, s) in repositories.items())
        raise InvalidInput(
            "build.image is not set and the deployments' pools push to different registries "
            f"({listed}); one image is built per deploy: set build.image, or deploy them "
            "separately by name",
            field="build.image",
        )
    (repository,) = repositories
    if registry_kind(parse_reference(repository).registry) == "ecr":
        return f"{repository}:{tag or project.name}"
    return f"{repository}/{project.name}:{tag or 'latest'}"


def _pinned_sources(
    selected: list[tuple[int, DeploymentSpec]], progress: Progress
) -> dict[str, GitSource]:
    """Each git source with the commit its ref points at now (a commit given stays)."""
    pinned: dict[str, GitSource] = {}
    for index, spec in selected:
        source = spec.source
        if source is None:
            continue
        try:
            commit = source.commit or resolve_commit(source)
        except InvalidInput as exc:
            exc.field = f"deployments[{index}].{exc.field or 'source'}"
            raise
        progress(f"{spec.name}: {source.git} {source.ref or 'HEAD'} is commit {commit[:12]}")
        pinned[spec.name] = source.model_copy(update={"commit": commit})
    return pinned


# --- 2. the image ---------------------------------------------------------------------------


def default_registries() -> Registries:
    """Registry clients for the user's own credentials: the cloud's token for ECR, Artifact
    Registry and ACR hosts, else the Docker config."""
    from skylane.images.cloud_registry_auth import cloud_credentials_provider
    from skylane.images.registry import DockerConfig, chain_providers

    return Registries(
        credentials_provider=chain_providers(cloud_credentials_provider(), DockerConfig())
    )


def build_spec(project: ProjectFile, base_dir: Path, target: str) -> BuildSpec:
    settings = project.build
    requirements = base_dir / settings.requirements if settings.requirements else None
    return BuildSpec(
        base=settings.base_image,
        project_dir=base_dir,
        target=target,
        platform=settings.platform,
        requirements=requirements,
        cmd=list(RUNTIME_COMMAND),
        labels={PROJECT_LABEL: project.name},
        ignore_files=(*IGNORE_FILES, *settings.ignore),
    )


def _choose_builder(project: ProjectFile) -> str:
    from skylane.images.docker_build import docker_engine_reason

    wanted = project.build.builder
    if wanted == "daemonless":
        if project.build.dockerfile:
            raise InvalidInput(
                "build.dockerfile needs the docker builder; remove it or set builder: docker",
                field="build.builder",
            )
        return "daemonless"
    reason = docker_engine_reason()
    if reason is None:
        return "docker"
    if wanted == "docker" or project.build.dockerfile:
        field_name = "build.builder" if wanted == "docker" else "build.dockerfile"
        raise InvalidInput(
            f"{field_name} needs a Docker engine and none is reachable here: {reason}. "
            "Leave out the Dockerfile to use the daemonless build",
            field=field_name,
        )
    return "daemonless"


def _skylane_warning(spec: BuildSpec, config: dict[str, Any]) -> str | None:
    labels = (config.get("config") or {}).get("Labels") or {}
    if SKYLANE_LABEL in labels:
        return None
    if spec.requirements is not None:
        text = Path(spec.requirements).read_text(encoding="utf-8", errors="replace").lower()
        if "skylane" in text:
            return None
    return (
        f"the base image {spec.base} does not carry skylane (no {SKYLANE_LABEL} label) and the "
        "requirements do not name it: runs start `skylane run execute`, so add skylane to "
        "requirements.txt or build on the skylane runtime image"
    )


def make_image(
    project: ProjectFile,
    base_dir: Path,
    target: str,
    *,
    build: bool,
    push: bool,
    registries: Registries,
    progress: Progress,
) -> ImageOutcome:
    if not build:
        ref = parse_reference(target)
        client = registries.client(ref.registry)
        digest = client.manifest_digest(ref.repository, ref.tag or "latest")
        if digest is None:
            raise InvalidInput(
                f"--no-build: {target} is not in the registry; deploy once without --no-build",
                field="build.image",
            )
        progress(f"image: using {target} as it is in the registry ({digest[:19]})")
        return ImageOutcome(reference=str(ref.with_digest(digest)), action="resolved", tag=ref.tag)
    builder = _choose_builder(project)
    spec = build_spec(project, base_dir, target)
    if builder == "docker":
        from skylane.images.docker_build import docker_build_and_push

        if not push:
            raise InvalidInput(
                "--no-push with the docker builder: run `docker build` yourself, or set "
                "builder: daemonless to see the digest without pushing",
                field="push",
            )
        dockerfile = str(base_dir / project.build.dockerfile) if project.build.dockerfile else None
        progress(f"image: docker build of {target}")
        reference = docker_build_and_push(spec, dockerfile=dockerfile, context_dir=base_dir)
        return ImageOutcome(
            reference=reference, action="built", tag=parse_reference(target).tag, builder="docker"
        )
    progress(f"image: building {target} on {spec.base} ({spec.platform}), no Docker engine")
    if not push:
        plan = plan_image(spec, registries=registries)
        try:
            warning = _skylane_warning(spec, plan.config)
            return ImageOutcome(
                reference=plan.reference,
                action="not pushed",
                tag=plan.target.tag,
                builder="daemonless",
                warnings=[warning] if warning else [],
            )
        finally:
            plan.close()
    result: BuildResult = build_image(spec, registries=registries)
    uploaded = result.uploaded
    action = "unchanged" if result.manifest_action == "unchanged" and not uploaded else "pushed"
    warning = _skylane_warning(spec, result.config)
    progress(
        f"image: {result.reference} ({action}, {len(uploaded)} blobs / "
        f"{result.bytes_uploaded} bytes uploaded)"
    )
    return ImageOutcome(
        reference=result.reference,
        action=action,
        tag=result.tag,
        bytes_uploaded=result.bytes_uploaded,
        blobs_uploaded=len(uploaded),
        builder="daemonless",
        warnings=[warning] if warning else [],
    )


# --- 3. register ----------------------------------------------------------------------------


def flow_name_of(spec: DeploymentSpec, base_dir: Path) -> tuple[str, dict[str, Any]]:
    """(flow name, parameter schema) from the entrypoint when its code is here; a git-sourced
    entrypoint not present locally gets the function's name and no schema."""
    entrypoint = parse_entrypoint(spec.entrypoint)
    if spec.source is not None and not (base_dir / entrypoint.path).exists():
        return entrypoint.function, {}
    return describe_flow(spec.entrypoint, base_dir)


def _schedule_key(values: dict[str, Any]) -> tuple[Any, ...]:
    return (
        values.get("cron"),
        values.get("interval_seconds"),
        values.get("rrule"),
        values.get("timezone") or "UTC",
        # JSON text: parameters may nest, and {"a": 1} must equal {"a": 1} in any key order.
        json.dumps(values.get("parameters") or {}, sort_keys=True),
        bool(values.get("active", True)),
        str(values.get("catchup") or "latest"),
    )


def _schedule_bodies(entries: list[ScheduleEntry]) -> list[dict[str, Any]]:
    return [e.to_schedule_create().model_dump(mode="json", exclude_none=True) for e in entries]


def _desired_fields(
    spec: DeploymentSpec,
    *,
    image: str | None,
    source: GitSource | None,
    schema: dict[str, Any],
) -> dict[str, Any]:
    return {
        "pool_name": spec.pool,
        "entrypoint": spec.entrypoint,
        "image": spec.image or image,
        "source": source.model_dump(mode="json") if source else None,
        "parameters": spec.parameters,
        "parameter_schema": schema,
        "job_variables": spec.job_variables,
        "tags": spec.tags,
        "description": spec.description,
        "concurrency_limit": spec.concurrency_limit,
    }


def register(
    client: SkylaneClient,
    spec: DeploymentSpec,
    flow_name: str,
    desired: dict[str, Any],
) -> DeploymentOutcome:
    """Create the deployment, or bring an existing one to `desired` and its schedules to the
    file's; unchanged fields and schedules are not touched (their future runs stay)."""
    full_name = f"{flow_name}/{spec.name}"
    bodies = _schedule_bodies(spec.schedules)
    try:
        current = client.get_deployment_by_name(full_name)
    except NotFound:
        body = {k: v for k, v in desired.items() if k != "pool_name"}
        deployment = client.create_deployment(
            flow_name=flow_name, name=spec.name, pool=spec.pool, schedules=bodies, **body
        )
        schedules = client.list_schedules(deployment.id) if bodies else []
        changes = [f"schedules +{len(bodies)}"] if bodies else []
        return DeploymentOutcome(full_name, "created", changes, deployment, schedules)

    now = current.model_dump(mode="json")
    changed = {k: v for k, v in desired.items() if now.get(k) != v}
    deployment = current
    if changed:
        update = dict(changed)
        if "pool_name" in update:
            update["pool"] = update.pop("pool_name")
        deployment = client.update_deployment(current.id, **update)
    changes = [("pool" if k == "pool_name" else k) for k in changed]

    existing = client.list_schedules(current.id)
    wanted = {_schedule_key(b): b for b in bodies}
    have = {_schedule_key(s.model_dump(mode="json")): s for s in existing}
    removed = [s for key, s in have.items() if key not in wanted]
    added = [b for key, b in wanted.items() if key not in have]
    for schedule in removed:
        client.delete_schedule(schedule.id)
    for body in added:
        client.create_schedule(current.id, **body)
    if removed or added:
        changes.append(f"schedules +{len(added)} -{len(removed)}")
    schedules = client.list_schedules(current.id) if (bodies or removed) else []
    return DeploymentOutcome(
        full_name, "updated" if changes else "unchanged", changes, deployment, schedules
    )


# --- the whole deploy -----------------------------------------------------------------------


def deploy_project(
    project: ProjectFile,
    base_dir: str | Path,
    client: SkylaneClient,
    *,
    names: Sequence[str] | None = None,
    build: bool = True,
    push: bool = True,
    registries: Registries | None = None,
    progress: Progress | None = None,
    tag: str | None = None,
) -> DeployReport:
    """Build once, push once, register every selected deployment (see the module docstring).
    With `push=False` the image is built and its digest shown, and nothing is registered."""
    say = progress or (lambda _: None)
    base = Path(base_dir)
    selected = select_deployments(project, names)
    pools = _pools(client, selected)
    needing = [(i, s) for i, s in selected if _needs_image(s, pools[s.pool])]
    target = default_image(project, needing, pools, tag) if needing else None
    # Loading an entrypoint runs the user's module: once per entrypoint, not per deployment.
    described: dict[tuple[str, bool], tuple[str, dict[str, Any]]] = {}
    flows: dict[str, tuple[str, dict[str, Any]]] = {}
    for _, spec in selected:
        key = (spec.entrypoint, spec.source is not None)
        if key not in described:
            described[key] = flow_name_of(spec, base)
        flows[spec.name] = described[key]
    sources = _pinned_sources(selected, say)

    if target is None:
        image = ImageOutcome(reference=None, action="none")
    else:
        own = registries is None
        registries = registries or default_registries()
        try:
            image = make_image(
                project, base, target, build=build, push=push, registries=registries, progress=say
            )
        finally:
            if own:
                registries.close()

    outcomes: list[DeploymentOutcome] = []
    for _, spec in selected:
        flow_name, schema = flows[spec.name]
        if not push:
            outcomes.append(
                DeploymentOutcome(f"{flow_name}/{spec.name}", "not registered", ["--no-push"])
            )
            continue
        pool = pools[spec.pool]
        pinned = image.reference if _needs_image(spec, pool) else None
        desired = _desired_fields(spec, image=pinned, source=sources.get(spec.name), schema=schema)
        if spec.source is None:  # git-sourced code brings its own directory
            desired["job_variables"] = with_default_working_dir(
                pool.type, pool.base_job_template, desired["job_variables"], base
            )
        outcomes.append(register(client, spec, flow_name, desired))
    return DeployReport(image=image, deployments=outcomes)

"""The Python SDK: `@flow` and deploying from code.

    from skylane import flow

    @flow
    def etl(day: str = "today") -> None: ...

    etl("2026-11-21")                                      # still a plain function call
    etl.deploy(name="nightly", pool="prod", cron="0 2 * * *")   # what `skylane deploy` does
    etl.serve(interval=600)              # run it here every 10 minutes (`skylane serve`)
    flow.from_source("https://github.com/acme/etl.git", entrypoint="flows/etl.py:etl").deploy(
        name="nightly", pool="prod", image="ghcr.io/acme/etl-deps@sha256:...")

`@flow` is optional: any function is a valid entrypoint. What it adds: a flow name other than the
function's (`@flow(name="etl")`) and `.deploy()`. `.deploy()` builds a one-deployment project
file in memory (the flow's file relative to `project_dir`, the current directory by default)
and hands it to `skylane.deploy.deploy_project`, so the checks, the build and the pinning are
those of `skylane deploy`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from skylane.errors import InvalidInput
from skylane.models import Deployment, GitSource

if TYPE_CHECKING:
    from skylane.client import SkylaneClient
    from skylane.images.registry import Registries

log = logging.getLogger(__name__)


class _Deployable:
    """What `Flow` and `SourcedFlow` share: `.deploy()`. Subclasses say where the code is."""

    description: str | None = None

    def _code(self, project_dir: Path) -> tuple[str, GitSource | None]:
        """(entrypoint, git source or None)."""
        raise NotImplementedError

    def _project_name(self) -> str:
        raise NotImplementedError

    def deploy(
        self,
        name: str,
        pool: str,
        *,
        image: str | None = None,
        cron: str | None = None,
        interval: int | str | None = None,
        rrule: str | None = None,
        timezone: str = "UTC",
        parameters: Mapping[str, Any] | None = None,
        job_variables: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        description: str | None = None,
        concurrency_limit: int | None = None,
        project_dir: str | Path | None = None,
        base_image: str | None = None,
        build: bool = True,
        client: SkylaneClient | None = None,
        registries: Registries | None = None,
    ) -> Deployment:
        """Register (or update) deployment `name` on `pool`, as `skylane deploy` would for a
        one-deployment project file, and return it. `image`: a name, optionally with a tag, to
        build `project_dir` (default: the current directory; its requirements.txt) and push to;
        with a digest, used as it is; left out, the pool's provisioned registry. Process pools
        need none. A git-sourced flow's image holds only the requirements."""
        base = Path(project_dir or Path.cwd()).resolve()
        entrypoint, source = self._code(base)
        return deploy_one(
            # Names the image repository when the pool's registry is used (REPO/<flow>).
            project_name=self._project_name(),
            project_dir=base,
            name=name,
            pool=pool,
            entrypoint=entrypoint,
            source=source,
            image=image,
            schedule=schedule_spec(cron, interval, rrule, timezone),
            parameters=parameters,
            job_variables=job_variables,
            tags=tags,
            description=description if description is not None else self.description,
            concurrency_limit=concurrency_limit,
            base_image=base_image,
            build=build,
            client=client,
            registries=registries,
        )


class Flow(_Deployable):
    """A function marked as a flow; calling it calls the function."""

    def __init__(
        self, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None
    ) -> None:
        if not callable(fn):
            raise InvalidInput(f"@flow decorates a function, not a {type(fn).__name__}")
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.flow_name = name or fn.__name__
        self.description = description

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Flow({self.flow_name!r})"

    def entrypoint(self, project_dir: str | Path | None = None) -> str:
        """`path/to/file.py:function`, relative to `project_dir` (default: the current
        directory), which must contain the flow's file: that directory is what goes into the
        image."""
        code = getattr(self.fn, "__code__", None)
        if code is None:
            raise InvalidInput("cannot tell which file defines this flow", field="entrypoint")
        base = Path(project_dir or Path.cwd()).resolve()
        file = Path(code.co_filename).resolve()
        try:
            relative = file.relative_to(base)
        except ValueError:
            raise InvalidInput(
                f"the flow's file {file} is not inside the project directory {base}; run from "
                "the project's directory or pass project_dir=",
                field="project_dir",
            ) from None
        return f"{relative.as_posix()}:{self.fn.__name__}"

    def _code(self, project_dir: Path) -> tuple[str, GitSource | None]:
        return self.entrypoint(project_dir), None

    def _project_name(self) -> str:
        return self.flow_name

    def serve(
        self,
        name: str | None = None,
        *,
        cron: str | None = None,
        interval: int | str | None = None,
        timezone: str = "UTC",
        parameters: Mapping[str, Any] | None = None,
        project_dir: str | Path | None = None,
        limit: int | None = None,
        client: SkylaneClient | None = None,
    ) -> Deployment:
        """Run this flow on a schedule here, until Ctrl-C or SIGTERM: what `skylane serve`
        does (see skylane.serve). The deployment as registered."""
        from skylane.cli.common import load_settings, make_client
        from skylane.serve import serve

        settings = load_settings()
        own = client is None
        client = client or make_client(settings)
        try:
            return serve(
                self.entrypoint(project_dir),
                client=client,
                settings=settings,
                name=name,
                cron=cron,
                interval=interval,
                timezone=timezone,
                parameters=parameters,
                project_dir=project_dir,
                limit=limit,
            )
        finally:
            if own:
                client.close()


class SourcedFlow(_Deployable):
    """A flow whose code lives in git (`flow.from_source`): deployments clone it at run time."""

    def __init__(
        self,
        git: str,
        entrypoint: str,
        *,
        ref: str | None = None,
        credentials_env: str | None = None,
    ) -> None:
        self.source = GitSource(
            git=git,
            ref=ref,
            credentials={"env": credentials_env} if credentials_env else None,
        )
        self.entrypoint = entrypoint

    def _code(self, project_dir: Path) -> tuple[str, GitSource | None]:
        return self.entrypoint, self.source

    def _project_name(self) -> str:
        return self.entrypoint.rpartition(":")[2]


def schedule_spec(
    cron: str | None, interval: int | str | None, rrule: str | None, timezone: str
) -> dict[str, Any] | None:
    given = {k: v for k, v in (("cron", cron), ("interval", interval), ("rrule", rrule)) if v}
    if len(given) > 1:
        raise InvalidInput("give at most one of cron, interval and rrule", field=sorted(given)[1])
    return {**given, "timezone": timezone} if given else None


def deploy_one(
    *,
    project_name: str,
    project_dir: Path,
    name: str,
    pool: str,
    entrypoint: str,
    source: GitSource | None,
    image: str | None,
    schedule: dict[str, Any] | None,
    parameters: Mapping[str, Any] | None,
    job_variables: Mapping[str, Any] | None,
    tags: Sequence[str],
    description: str | None,
    concurrency_limit: int | None,
    base_image: str | None,
    build: bool,
    client: SkylaneClient | None,
    registries: Registries | None,
) -> Deployment:
    from skylane.deploy import deploy_project
    from skylane.images.reference import parse_reference
    from skylane.project_file import DEFAULT_BASE_IMAGE, validate_project

    pinned: str | None = None
    image_name: str | None = None
    tag: str | None = None
    if image:
        ref = parse_reference(image, field="image")
        if ref.digest:
            pinned = image  # an image already pushed: used exactly as given
        else:
            image_name, tag = ref.name, ref.tag
    deployment: dict[str, Any] = {
        "name": name,
        "entrypoint": entrypoint,
        "pool": pool,
        "parameters": dict(parameters or {}),
        "job_variables": dict(job_variables or {}),
        "schedules": [schedule] if schedule else [],
        "tags": list(tags),
        "description": description,
        "concurrency_limit": concurrency_limit,
    }
    if pinned:
        deployment["image"] = pinned
    if source is not None:
        deployment["source"] = source.model_dump(exclude_none=True)
    build_settings: dict[str, Any] = {"base_image": base_image or DEFAULT_BASE_IMAGE}
    if image_name:
        build_settings["image"] = image_name
    # requirements.txt, when the directory has one, is used as `skylane deploy` would.
    project = validate_project(
        {"name": project_name, "build": build_settings, "deployments": [deployment]},
        base_dir=project_dir,
    )
    own = client is None
    if own:
        from skylane.cli.common import make_client

        client = make_client()
    try:
        report = deploy_project(
            project, project_dir, client, build=build, registries=registries, tag=tag
        )
    finally:
        if own:
            client.close()
    for warning in report.image.warnings:
        log.warning("%s", warning)
    (outcome,) = report.deployments
    assert outcome.deployment is not None
    return outcome.deployment


class _FlowDecorator:
    """`flow` itself: `@flow`, `@flow(name=...)` and `flow.from_source(...)`."""

    @overload
    def __call__(self, fn: Callable[..., Any], /) -> Flow: ...

    @overload
    def __call__(
        self, fn: None = None, /, *, name: str | None = None, description: str | None = None
    ) -> Callable[[Callable[..., Any]], Flow]: ...

    def __call__(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Flow | Callable[[Callable[..., Any]], Flow]:
        if fn is not None:
            return Flow(fn, name=name, description=description)
        return lambda f: Flow(f, name=name, description=description)

    @staticmethod
    def from_source(
        git: str, *, entrypoint: str, ref: str | None = None, credentials_env: str | None = None
    ) -> SourcedFlow:
        """A flow whose code is cloned from `git` at run time; `entrypoint` is relative to the
        repository's root; `credentials_env` names the environment variable holding a token."""
        return SourcedFlow(git, entrypoint, ref=ref, credentials_env=credentials_env)


flow = _FlowDecorator()

"""`skylane init` and `skylane deploy`: a project directory to registered deployments."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skylane.recipes import RECIPES

from . import output
from .common import Output, OutputOption, make_client

if TYPE_CHECKING:
    from skylane.deploy import DeployReport

# The build and deploy modules load on use: every other command starts faster without them.


def init(
    directory: Annotated[
        Path, typer.Argument(help="Project directory (default: the current one).")
    ] = Path("."),
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Start from a template: "
            + ", ".join(f"{r.name} ({r.summary})" for r in RECIPES.values())
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Project name (default: the directory's name).")
    ] = None,
    entrypoint: Annotated[
        str, typer.Option(metavar="PATH:FUNC", help="The flow function to deploy.")
    ] = "flows/etl.py:etl",
    pool: Annotated[str | None, typer.Option(help="The pool its runs go to.")] = None,
    base_image: Annotated[
        str | None,
        typer.Option(
            help="Image the code and requirements are installed onto [default: python:3.12-slim]."
        ),
    ] = None,
    git_url: Annotated[
        str | None, typer.Option(help="The git recipe's repository (code cloned at run time).")
    ] = None,
    git_ref: Annotated[str, typer.Option(help="The git recipe's branch, tag or commit.")] = "main",
    force: Annotated[bool, typer.Option(help="Replace an existing skylane.yaml.")] = False,
) -> None:
    """Write a commented skylane.yaml (and, where missing, an example flow and a
    requirements.txt); with --recipe, a project for a common setup with a short README."""
    from skylane.project_file import DEFAULT_BASE_IMAGE
    from skylane.project_init import init_project

    written = init_project(
        directory,
        name=name,
        recipe=recipe,
        entrypoint=entrypoint,
        pool=pool,
        base_image=base_image or DEFAULT_BASE_IMAGE,
        git_url=git_url,
        git_ref=git_ref,
        force=force,
    )
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo("next: `skylane pool provision POOL --type TYPE`, then `skylane deploy`")


def deploy(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NAME]...", help="Deployments of the file to deploy."),
    ] = None,
    all_deployments: Annotated[
        bool, typer.Option("--all", help="Every deployment of the file (the default).")
    ] = False,
    file: Annotated[Path, typer.Option("--file", "-f", help="The project file.")] = Path(
        "skylane.yaml"
    ),
    build: Annotated[
        bool,
        typer.Option(
            "--build/--no-build",
            help="--no-build: use the image already in the registry under its tag.",
        ),
    ] = True,
    push: Annotated[
        bool,
        typer.Option(
            "--push/--no-push",
            help="--no-push: build and show the digest; push and register nothing.",
        ),
    ] = True,
    output_format: OutputOption = Output.TABLE,
) -> None:
    """Build the project's image once, push it once, and register or update its deployments
    pinned to the pushed digest, with their schedules. Everything is checked (the file, the
    pools, the image name) before anything is built."""
    from skylane.deploy import deploy_project
    from skylane.project_file import load_project_file

    if names and all_deployments:
        raise typer.BadParameter("give deployment names or --all, not both")
    project = load_project_file(file)

    def progress(message: str) -> None:
        if output_format is not Output.JSON:
            output.print_text(message, err=True)

    with make_client() as client:
        report = deploy_project(
            project,
            file.parent,
            client,
            names=names or None,
            build=build,
            push=push,
            progress=progress,
        )
    if output_format is Output.JSON:
        output.print_json(_as_json(report))
        return
    _show(report)


def _as_json(report: DeployReport) -> dict[str, object]:
    return {
        "image": dataclasses.asdict(report.image),
        "deployments": [
            {
                "name": d.full_name,
                "action": d.action,
                "changes": d.changes,
                "deployment": output.dump(d.deployment) if d.deployment else None,
                "schedules": output.dump(d.schedules),
            }
            for d in report.deployments
        ],
    }


def _show(report: DeployReport) -> None:
    for warning in report.image.warnings:
        output.print_warning(warning)
    rows = []
    for d in report.deployments:
        deployment = d.deployment
        next_time = min((t for s in d.schedules for t in s.next_times[:1]), default=None)
        rows.append(
            (
                d.full_name,
                d.action,
                ", ".join(d.changes) or None,
                deployment.pool_name if deployment else None,
                _short_image(deployment.image if deployment else None),
                (deployment.source.commit or "")[:12] if deployment and deployment.source else None,
                output.format_time(next_time) if next_time else None,
            )
        )
    output.show(
        output.table(
            ["deployment", "action", "changed", "pool", "image", "commit", "next run"], rows
        )
    )
    if report.image.reference and report.image.action == "not pushed":
        typer.echo(f"built {report.image.reference}; nothing pushed or registered (--no-push)")


def _short_image(image: str | None) -> str | None:
    if image and "@sha256:" in image:
        name, digest = image.split("@", 1)
        return f"{name}@{digest[:19]}…"
    return image

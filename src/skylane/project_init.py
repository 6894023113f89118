"""`skylane init`: start a project: a `skylane.yaml`, and where missing an example flow and a
requirements file; with a recipe, a project file for a common setup and a short README.

Recipes live in `skylane/recipes/<name>/` as `string.Template` files (`$name`, `$pool`...), so a
recipe is read as the YAML it writes. Every generated project file is validated before anything
is written, and no existing file is ever overwritten unless asked.
"""

from __future__ import annotations

import re
import string
from importlib import resources
from pathlib import Path

from skylane.entrypoints import parse_entrypoint
from skylane.errors import InvalidInput
from skylane.project_file import (
    DEFAULT_BASE_IMAGE,
    DEFAULT_REQUIREMENTS,
    PROJECT_FILE_NAME,
    parse_project_file,
    starter_file,
)
from skylane.recipes import RECIPES, Recipe

EXAMPLE_FLOW = '''\
"""An example flow: replace the body with your own work."""

from skylane import flow


@flow
def {function}(rows: int = 3) -> int:
    """Pretend to load `rows` rows."""
    for row in range(rows):
        print(f"loaded row {{row}}")
    return rows
'''

REQUIREMENTS = """\
# What your flows import, one requirement per line; installed into the image by `skylane deploy`.
# The image also needs skylane itself: build on the skylane runtime image, or add it here.
"""


def project_name_for(directory: Path) -> str:
    """A valid project name from a directory name ("My ETL" -> "My-ETL")."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.resolve().name).strip("-._")
    return name or "project"


def init_project(
    directory: str | Path,
    *,
    name: str | None = None,
    recipe: str | None = None,
    entrypoint: str = "flows/etl.py:etl",
    pool: str | None = None,
    base_image: str = DEFAULT_BASE_IMAGE,
    git_url: str | None = None,
    git_ref: str = "main",
    force: bool = False,
) -> list[Path]:
    """Write the project's files into `directory`; returns the files written."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    name = name or project_name_for(target)
    point = parse_entrypoint(entrypoint)
    chosen = _recipe(recipe)
    if chosen is not None and not chosen.bakes_code and not git_url:
        raise InvalidInput(
            "the git recipe needs the repository: --git-url https://github.com/acme/etl.git",
            field="git_url",
        )
    if git_url and (chosen is None or chosen.bakes_code):
        raise InvalidInput("--git-url is for the git recipe (--recipe git)", field="git_url")

    files: dict[str, str] = {}
    if chosen is None:
        text = starter_file(name, entrypoint=entrypoint)
        if base_image != DEFAULT_BASE_IMAGE:
            text = text.replace(f"base_image: {DEFAULT_BASE_IMAGE}", f"base_image: {base_image}")
        if pool:
            text = text.replace("    pool: default\n", f"    pool: {pool}\n")
        files[PROJECT_FILE_NAME] = text
    else:
        values = {
            "name": name,
            "flow": point.function,
            "pool": pool or chosen.default_pool,
            "entrypoint": entrypoint,
            "base_image": base_image,
            "git_url": git_url or "",
            "git_ref": git_ref,
        }
        for file in ("skylane.yaml", "README.md"):
            template = resources.files("skylane.recipes").joinpath(chosen.name, file).read_text()
            files[file] = string.Template(template).substitute(values)
    # A generated file that does not validate is our bug; better said now than at deploy.
    parse_project_file(files[PROJECT_FILE_NAME], filename=PROJECT_FILE_NAME)

    flow_file = target / point.path
    if (chosen is None or chosen.bakes_code) and not point.is_module and not flow_file.exists():
        files[point.path] = EXAMPLE_FLOW.format(function=point.function)
    if not (target / DEFAULT_REQUIREMENTS).exists():
        files[DEFAULT_REQUIREMENTS] = REQUIREMENTS

    project_file = target / PROJECT_FILE_NAME
    if project_file.exists() and not force:
        raise InvalidInput(
            f"{project_file} already exists; use --force to replace it", field="directory"
        )
    written: list[Path] = []
    for relative, text in files.items():
        path = target / relative
        if relative == "README.md" and path.exists():
            path = target / "README.skylane.md"  # never clobber the project's own README
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _recipe(name: str | None) -> Recipe | None:
    if name is None:
        return None
    if name not in RECIPES:
        raise InvalidInput(
            f"no recipe named {name!r}; recipes: {', '.join(RECIPES)}", field="recipe"
        )
    return RECIPES[name]

"""Templates for `skylane init --recipe NAME` (see `skylane.project_init`): one directory per
recipe holding `skylane.yaml` and `README.md` as `string.Template` files. This module stays
light: the CLI reads the table for its help text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    default_pool: str
    bakes_code: bool  # False: the code comes from git at run time


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("ecr-ecs", "image in ECR, runs on ECS Fargate", "ecs", True),
        Recipe(
            "artifact-registry-cloud-run",
            "image in Artifact Registry, runs as Cloud Run jobs",
            "cloud-run",
            True,
        ),
        Recipe("acr-aci", "image in ACR, runs on Azure Container Instances", "aci", True),
        Recipe(
            "git", "dependencies in the image, code cloned from git at run time", "default", False
        ),
    )
}

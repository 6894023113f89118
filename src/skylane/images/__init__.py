"""Daemonless, reproducible OCI images: references, a registry client, layers and builds.

- `skylane.images.reference`: parse image references as Docker does;
- `skylane.images.registry`: an OCI Distribution API client (httpx) with Docker-style auth and a
  pluggable credentials provider;
- `skylane.images.layers`: reproducible tar+gzip layers of a directory tree;
- `skylane.images.build`: `BuildSpec` (what to build) and `build_image`, the project and its
  requirements on a base image, pushed by digest, with no Docker engine;
- `skylane.images.docker_build`: the same spec built and pushed by a Docker engine instead.
"""

from __future__ import annotations

from skylane.images.build import (
    BuildResult,
    BuildSpec,
    ImageBuild,
    PushedBlob,
    build_image,
    plan_image,
    push_image,
)
from skylane.images.layers import Layer, layer_from_directory
from skylane.images.reference import ImageReference, parse_reference
from skylane.images.registry import (
    Credentials,
    CredentialsProvider,
    DockerConfig,
    Manifest,
    Platform,
    Registries,
    RegistryClient,
)

__all__ = [
    "BuildResult",
    "BuildSpec",
    "Credentials",
    "CredentialsProvider",
    "DockerConfig",
    "ImageBuild",
    "ImageReference",
    "Layer",
    "Manifest",
    "Platform",
    "PushedBlob",
    "Registries",
    "RegistryClient",
    "build_image",
    "layer_from_directory",
    "parse_reference",
    "plan_image",
    "push_image",
]

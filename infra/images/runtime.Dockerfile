# syntax=docker/dockerfile:1
#
# The runtime base image: what users' deployment images build FROM (`build.base_image` in
# skylane.yaml). It holds skylane itself for `skylane run execute` (the default command) and
# `python -m skylane.runtime` (the command the ECS, Cloud Run and ACI templates run), and git
# for deployments whose code comes from git. The runtime talks only to the skylane API, so no
# cloud SDK is installed.
#
# Build from the repository root (the build context):
#   docker build -f infra/images/runtime.Dockerfile -t skylane/runtime:0.1.0 .

ARG PYTHON_IMAGE=python:3.12-slim

# --- builder: the skylane wheel ----------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
# pip's cache in a build-cache mount, outside any home directory.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CACHE_DIR=/var/cache/pip
WORKDIR /build
# src/skylane/terraform_modules links to terraform/modules: the wheel is the same package.
COPY pyproject.toml README.md ./
COPY terraform/modules ./terraform/modules
COPY src ./src
RUN --mount=type=cache,target=/var/cache/pip \
    pip wheel --no-deps --wheel-dir /wheels .

# --- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
# git: `source: {git: ...}` deployments clone their code at run time. Build with
# --build-arg INSTALL_GIT=false for a smaller image when no deployment uses git.
ARG INSTALL_GIT=true

LABEL org.opencontainers.image.title="skylane-runtime" \
      org.opencontainers.image.description="Base image for skylane deployments: runs skylane run execute" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN if [ "${INSTALL_GIT}" = "true" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends git ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# Into the image's own Python (not a venv), so that `python`, `python3` and `skylane` on the
# default PATH all find it, whatever command a pool's template runs.
RUN --mount=type=bind,from=builder,source=/wheels,target=/tmp/wheels \
    python -m pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
       /tmp/wheels/skylane-*.whl \
    && skylane --version

# The user the flows run as (UID/GID 10001, as in the control-plane image). `skylane deploy`
# puts the project in /opt/skylane/project and the requirements in /opt/skylane/packages;
# both belong to this user, so a Docker build FROM this image can pip install into them.
RUN groupadd --system --gid 10001 skylane \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/skylane \
       --shell /usr/sbin/nologin skylane \
    && install -d -o 10001 -g 10001 -m 0755 /opt/skylane /opt/skylane/project /opt/skylane/packages

ENV PYTHONUNBUFFERED=1

WORKDIR /opt/skylane/project
USER 10001:10001

# No ENTRYPOINT: the providers' templates and `skylane deploy` set the command, which an
# ENTRYPOINT would prefix. The run's SKYLANE_RUN_ID, SKYLANE_API_URL and SKYLANE_RUN_TOKEN come
# from the control plane when it starts the container.
CMD ["skylane", "run", "execute"]

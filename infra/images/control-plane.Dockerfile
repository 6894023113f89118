# syntax=docker/dockerfile:1
#
# The skylane control plane: `skylane server start` (API, scheduler, dispatcher, reconciler)
# with the PostgreSQL driver and the AWS, Google Cloud and Azure SDKs its push pools use. The
# same image runs `skylane worker start --pool NAME`.
#
# Build from the repository root (the build context):
#   docker build -f infra/images/control-plane.Dockerfile -t skylane/control-plane:0.1.0 .

ARG PYTHON_IMAGE=python:3.12-slim

# --- builder: a wheel of skylane, installed with its extras into a virtual environment -------
FROM ${PYTHON_IMAGE} AS builder

# The pyproject.toml extras to install (the image's purpose is all of them).
ARG EXTRAS=postgres,aws,gcp,azure

# pip's cache in a build-cache mount, outside any home directory.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CACHE_DIR=/var/cache/pip
RUN python -m venv /opt/skylane/venv
WORKDIR /build
# Only what the wheel is built from: the project metadata (with the README it names), src/,
# and the Terraform modules the package ships (src/skylane/terraform_modules links to them;
# `skylane pool provision --emit-terraform` copies them).
COPY pyproject.toml README.md ./
COPY terraform/modules ./terraform/modules
COPY src ./src
RUN --mount=type=cache,target=/var/cache/pip \
    /opt/skylane/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/skylane/venv/bin/pip install "$(ls /wheels/skylane-*.whl)[${EXTRAS}]" \
    && /opt/skylane/venv/bin/skylane --version

# --- runtime: the venv on a slim Python, no compilers, no build tools, a fixed non-root user -
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="skylane-control-plane" \
      org.opencontainers.image.description="skylane control plane: API, scheduler, dispatcher, reconciler, and the pull worker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# UID/GID 10001: the Kubernetes manifests (runAsUser) and any volume ownership rely on it.
RUN groupadd --system --gid 10001 skylane \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/skylane --no-create-home \
       --shell /usr/sbin/nologin skylane \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/skylane

COPY --from=builder /opt/skylane/venv /opt/skylane/venv

# SKYLANE_HOME holds everything skylane keeps on disk (config file, a SQLite database when no
# SKYLANE_DATABASE_URL is given, the state of process runs): mount a volume there.
ENV PATH="/opt/skylane/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SKYLANE_HOME=/var/lib/skylane

WORKDIR /var/lib/skylane
VOLUME ["/var/lib/skylane"]
USER 10001:10001

EXPOSE 4200

# No curl in slim images: the standard library asks the API's health endpoint (which also
# checks the database). A process run without the api service (--services dispatcher) or a
# worker serves no HTTP: disable the check for those (compose: healthcheck: {disable: true}).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SKYLANE_PORT', '4200') + '/health', timeout=4)"]

ENTRYPOINT ["skylane"]
# Every service in one process, listening on all interfaces of the container; the port is
# SKYLANE_PORT (default 4200). Migrations run at start.
CMD ["server", "start", "--host", "0.0.0.0"]

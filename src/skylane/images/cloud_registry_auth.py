"""Registry credentials from the cloud a registry belongs to, for `skylane deploy` pushing images.

    provider = cloud_credentials_provider()
    registries = Registries(credentials_provider=chain_providers(provider, DockerConfig()))

The provider looks at the registry host and asks the cloud it belongs to: ECR
(`ACCOUNT.dkr.ecr.REGION.amazonaws.com`) for a GetAuthorizationToken password, Artifact
Registry and Container Registry (`REGION-docker.pkg.dev`, `gcr.io`, `*.gcr.io`) for an OAuth2
access token of the Application Default Credentials, ACR (`NAME.azurecr.io`, `.cn`, `.us`) for a
registry refresh token exchanged for an Entra token. Any other host gets None, so the next
provider of a chain (the Docker config) answers for it. So the user needs no `docker login`
for a cloud registry: the credentials they already have for that cloud are used.

The host patterns live here, and only here: the three cloud modules ask this one what a host
is (and ECR which account and region it names).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Literal

from skylane.images.registry import CredentialsLike, CredentialsProvider, host_without_port

RegistryKind = Literal["ecr", "artifact-registry", "acr"]

# ECR private registries: the classic name, FIPS endpoints, China regions and the dual-stack
# `dkr-ecr` names under on.aws. public.ecr.aws is not one (anonymous pulls need no token).
_ECR = re.compile(
    r"^(?P<account>\d{12})\.(?:dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"|dkr-ecr(?:-fips)?\.(?P<dual_region>[a-z0-9-]+)\.on\.aws)$"
)
# Artifact Registry's Docker repositories (`europe-west1-docker.pkg.dev`) and Container
# Registry's hosts (`gcr.io`, `eu.gcr.io`...), which Artifact Registry now serves.
_ARTIFACT_REGISTRY = re.compile(r"^[a-z0-9-]+-docker\.pkg\.dev$")
_GCR = re.compile(r"^(?:[a-z0-9-]+\.)?gcr\.io$")
# ACR login servers: `NAME.azurecr.io`, and the China and US Government clouds' suffixes.
_ACR = re.compile(r"^[a-z0-9][a-z0-9-]*\.azurecr\.(?P<cloud>io|cn|us)$")


def _name(host: str) -> str:
    return host_without_port(host.strip().lower()).rstrip(".")


def registry_kind(host: str) -> RegistryKind | None:
    """Which cloud's registry `host` is ("ecr", "artifact-registry", "acr"), or None."""
    name = _name(host)
    if _ECR.match(name):
        return "ecr"
    if _ARTIFACT_REGISTRY.match(name) or _GCR.match(name):
        return "artifact-registry"
    if _ACR.match(name):
        return "acr"
    return None


def parse_ecr_host(host: str) -> tuple[str, str] | None:
    """`(account id, region)` of an ECR registry host, or None when it is not one."""
    match = _ECR.match(_name(host))
    if match is None:
        return None
    return match.group("account"), match.group("region") or match.group("dual_region")


def acr_cloud(host: str) -> str | None:
    """The Azure cloud of an ACR host, by its suffix: "io" (public), "cn" (China), "us" (US
    Government); None when it is not an ACR host."""
    match = _ACR.match(_name(host))
    return match.group("cloud") if match else None


ProviderChoice = CredentialsProvider | bool | None


class CloudCredentialsProvider:
    """A credentials provider that routes each registry host to its cloud's provider; see
    `cloud_credentials_provider`. `providers` maps a registry kind to the provider used."""

    def __init__(
        self,
        providers: Mapping[RegistryKind, CredentialsProvider],
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.aliases = {k.lower(): v for k, v in (aliases or {}).items()}

    def __call__(self, registry: str) -> CredentialsLike | None:
        target = self.aliases.get(registry.lower(), registry)
        kind = registry_kind(target)
        provider = self.providers.get(kind) if kind is not None else None
        if provider is None:
            return None
        return provider(target)


def _choose(
    choice: ProviderChoice, default: Callable[[], CredentialsProvider]
) -> CredentialsProvider | None:
    if choice is True:
        return default()
    if choice is False or choice is None:
        return None
    return choice


def cloud_credentials_provider(
    *,
    aws: ProviderChoice = True,
    gcp: ProviderChoice = True,
    azure: ProviderChoice = True,
    aliases: Mapping[str, str] | None = None,
) -> CloudCredentialsProvider:
    """A credentials provider for ECR, Artifact Registry / gcr.io and ACR hosts; None for any
    other host. Each of `aws`, `gcp`, `azure` is True (the default provider: the ambient AWS
    credentials, the Application Default Credentials, DefaultAzureCredential), False or None
    (that cloud is not asked), or a provider of one's own (an `EcrCredentialsProvider` with a
    session, say). `aliases` maps a registry host to the cloud registry host whose credentials
    it takes (a proxy, a tunnel or another DNS name in front of the cloud registry).

    No cloud SDK is imported until a host of that cloud is asked for."""

    def ecr() -> CredentialsProvider:
        from skylane.images.ecr_auth import EcrCredentialsProvider

        return EcrCredentialsProvider()

    def artifact_registry() -> CredentialsProvider:
        from skylane.images.artifact_registry_auth import ArtifactRegistryCredentialsProvider

        return ArtifactRegistryCredentialsProvider()

    def acr() -> CredentialsProvider:
        from skylane.images.acr_auth import AcrCredentialsProvider

        return AcrCredentialsProvider()

    providers: dict[RegistryKind, CredentialsProvider] = {}
    for kind, choice, default in (
        ("ecr", aws, ecr),
        ("artifact-registry", gcp, artifact_registry),
        ("acr", azure, acr),
    ):
        chosen = _choose(choice, default)
        if chosen is not None:
            providers[kind] = chosen  # type: ignore[index]
    return CloudCredentialsProvider(providers, aliases)

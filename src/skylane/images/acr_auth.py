"""ACR registry credentials from an Azure identity: an Entra token exchanged for a refresh token.

What `az acr login` does: get an Entra (Azure AD) access token for Azure Resource Manager, POST
it to the registry's `/oauth2/exchange` (`grant_type=access_token`, `service=HOST`,
`access_token=...`, optionally `tenant`) and receive an ACR refresh token. That refresh token
is handed to the registry client as an identity token (user
`00000000-0000-0000-0000-000000000000`, as Docker's config stores it), so it asks the
registry's own token realm (`/oauth2/token`) for access tokens with the refresh-token grant.
Whether a push is allowed is the registry's decision at that step: the identity needs the
AcrPush role (AcrPull only pulls).

The identity is an azure-identity style credential (anything with `get_token(scope)`),
DefaultAzureCredential by default (environment, workload identity, managed identity, Azure
CLI...). Refresh tokens are cached per registry until shortly before they expire. azure-identity
is imported only when a token is asked for; tokens never appear in messages.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from skylane.errors import (
    PermanentProviderError,
    ProviderError,
    ThrottledError,
    TransientProviderError,
)
from skylane.images.cloud_registry_auth import acr_cloud
from skylane.images.registry import Credentials, is_loopback
from skylane.security import MASK

log = logging.getLogger(__name__)

ACR_USERNAME = "00000000-0000-0000-0000-000000000000"
ARM_SCOPE = "https://management.azure.com/.default"
# The Resource Manager of each Azure cloud, by the ACR suffix of its registries.
ARM_SCOPES = {
    "io": ARM_SCOPE,
    "cn": "https://management.chinacloudapi.cn/.default",
    "us": "https://management.usgovcloudapi.net/.default",
}
PUSH_ROLE_HINT = (
    "give the identity the AcrPush role on the registry (AcrPull only lets it pull): az role "
    "assignment create --role AcrPush --assignee <identity> --scope <registry id>"
)
# A refresh token is not used in its last minutes.
EXPIRY_MARGIN = 120.0
# When neither token says how long it lasts (ACR's refresh tokens last about three hours).
DEFAULT_LIFETIME = 3600.0


def exchange_url_for(registry: str) -> str:
    """Where `registry` exchanges Entra tokens: https, or plain http on loopback."""
    scheme = "http" if is_loopback(registry) else "https"
    return f"{scheme}://{registry}/oauth2/exchange"


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, unverified (only to know when to ask again); None if the
    token is not a JWT that says."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
        return float(claims["exp"])
    except (ValueError, KeyError, TypeError):
        return None


class AcrCredentialsProvider:
    """A credentials provider for ACR hosts: exchanges an Entra token for an ACR refresh token
    and returns it as `Credentials(identity_token=...)`.

    `credential` is an azure-identity credential (default `DefaultAzureCredential()`);
    `tenant` the Entra tenant to ask a token of and to name in the exchange; `scope` the
    Entra scope (default: the Resource Manager of the registry's cloud); `exchange_url` where
    to exchange instead of `https://HOST/oauth2/exchange` (tests); `transport` an httpx
    transport (tests)."""

    def __init__(
        self,
        credential: Any = None,
        *,
        tenant: str | None = None,
        scope: str | None = None,
        exchange_url: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credential = credential
        self.tenant = tenant
        self.scope = scope
        self.exchange_url = exchange_url
        self.timeout = timeout
        self.transport = transport
        self.clock = clock
        self._cache: dict[str, tuple[Credentials, float]] = {}
        self._lock = threading.Lock()

    def _identity(self) -> str:
        if self.credential is None:
            return "DefaultAzureCredential"
        return type(self.credential).__name__

    def __call__(self, registry: str) -> Credentials:
        key = registry.lower()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[1] > self.clock():
                return cached[0]
        access_token, access_expiry = self._entra_token(registry)
        refresh_token = self._exchange(registry, access_token)
        expiry = _jwt_expiry(refresh_token) or access_expiry or self.clock() + DEFAULT_LIFETIME
        credentials = Credentials(
            username=ACR_USERNAME,
            identity_token=refresh_token,
            source=(
                f"the ACR token exchange of {registry} for the Azure identity from "
                f"{self._identity()} (pushing needs the AcrPush role)"
            ),
        )
        until = expiry - EXPIRY_MARGIN
        if until > self.clock():
            with self._lock:
                self._cache[key] = (credentials, until)
        log.info("got an ACR refresh token for %s from %s", registry, self._identity())
        return credentials

    def forget(self, registry: str | None = None) -> None:
        """Drop the cached refresh token of `registry` (all of them when None)."""
        with self._lock:
            if registry is None:
                self._cache.clear()
            else:
                self._cache.pop(registry.lower(), None)

    def _entra_token(self, registry: str) -> tuple[str, float | None]:
        try:
            from azure.core import exceptions as azure_errors

            if self.credential is None:
                from azure.identity import DefaultAzureCredential

                self.credential = DefaultAzureCredential()
        except ImportError:  # pragma: no cover - depends on the install
            raise PermanentProviderError(
                f"logging in to the ACR registry {registry} needs azure-identity "
                "(pip install 'skylane[azure]')",
                details={"registry": registry},
            ) from None
        scope = self.scope or ARM_SCOPES.get(acr_cloud(registry) or "io", ARM_SCOPE)
        kwargs = {"tenant_id": self.tenant} if self.tenant else {}
        try:
            token = self.credential.get_token(scope, **kwargs)
        except azure_errors.ClientAuthenticationError as exc:
            said = str(getattr(exc, "message", "") or exc).strip().splitlines()
            raise PermanentProviderError(
                f"no Azure credentials to log in to {registry}: {self._identity()} could not "
                "get a token; log in (az login), or set up environment credentials, a "
                "workload identity or a managed identity where skylane runs"
                + (f" (azure-identity said: {said[0][:300]})" if said else ""),
                details={"registry": registry},
            ) from None
        except azure_errors.ServiceRequestError as exc:
            raise TransientProviderError(
                f"cannot reach Entra ID to get a token for {registry} ({type(exc).__name__})",
                details={"registry": registry},
            ) from None
        expires_on = getattr(token, "expires_on", None)
        return str(token.token), float(expires_on) if expires_on else None

    def _exchange(self, registry: str, access_token: str) -> str:
        url = self.exchange_url or exchange_url_for(registry)
        form = {"grant_type": "access_token", "service": registry, "access_token": access_token}
        if self.tenant:
            form["tenant"] = self.tenant
        secrets = [access_token]
        details: dict[str, Any] = {"registry": registry}
        try:
            with httpx.Client(timeout=self.timeout, transport=self.transport) as http:
                response = http.post(url, data=form)
        except httpx.TransportError as exc:
            raise TransientProviderError(
                f"registry {registry} did not answer the ACR token exchange ({type(exc).__name__})",
                details=details,
            ) from None
        status = response.status_code
        details["status"] = status
        if status == 200:
            try:
                refresh_token = response.json().get("refresh_token")
            except (ValueError, AttributeError):
                refresh_token = None
            if not refresh_token or not isinstance(refresh_token, str):
                raise PermanentProviderError(
                    f"registry {registry} answered the ACR token exchange without a refresh token",
                    details=details,
                )
            return refresh_token
        said = _scrub(_error_text(response), secrets)
        said_text = f": {said}" if said else ""
        error: ProviderError
        if status in (401, 403):
            error = PermanentProviderError(
                f"registry {registry} refused to exchange the Entra token of the Azure identity "
                f"from {self._identity()} (HTTP {status}{said_text}): {PUSH_ROLE_HINT}; check "
                "too that the identity is of the registry's tenant",
                details=details,
            )
        elif status == 404:
            error = PermanentProviderError(
                f"registry {registry} has no ACR token exchange (HTTP 404 from {url}): is it an "
                "Azure Container Registry?",
                details=details,
            )
        elif status == 429:
            error = ThrottledError(
                f"registry {registry} throttled the ACR token exchange", details=details
            )
        elif status >= 500:
            error = TransientProviderError(
                f"registry {registry} failed the ACR token exchange (HTTP {status}{said_text})",
                details=details,
            )
        else:
            error = PermanentProviderError(
                f"registry {registry} rejected the ACR token exchange (HTTP {status}{said_text})",
                details=details,
            )
        raise error


def _error_text(response: httpx.Response) -> str:
    """What an ACR error answer says: `errors[].message`, `error_description` or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200]
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list):
            parts = [
                str(e.get("message") or e.get("code") or "") for e in errors if isinstance(e, dict)
            ]
            return "; ".join(p for p in parts if p)[:200]
        for key in ("error_description", "error", "message"):
            if body.get(key):
                return str(body[key])[:200]
    return ""

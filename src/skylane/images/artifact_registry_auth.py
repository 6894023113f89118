"""Artifact Registry (and gcr.io) credentials from Google credentials: an OAuth2 access token.

Artifact Registry takes the user `oauth2accesstoken` with an access token as the password, as
`gcloud auth print-access-token | docker login -u oauth2accesstoken` does; the token needs the
cloud-platform scope. By default the token comes from Application Default Credentials (`gcloud
auth application-default login`, `GOOGLE_APPLICATION_CREDENTIALS`, or the attached service
account), so `skylane deploy` needs no Docker login; explicit `google.auth` credentials can be
given instead.

The token is the same for every Google registry host; google-auth refreshes it shortly before
it expires. google-auth is imported only when a token is asked for.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from skylane.errors import PermanentProviderError, TransientProviderError
from skylane.images.registry import Credentials

log = logging.getLogger(__name__)

AR_USERNAME = "oauth2accesstoken"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
ADC_SOURCE = "Google Application Default Credentials"
GIVEN_SOURCE = "the Google credentials given to skylane"
SETUP_HINT = (
    "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
    "service account key file"
)


class ArtifactRegistryCredentialsProvider:
    """A credentials provider for Artifact Registry and gcr.io hosts: returns
    `Credentials(username="oauth2accesstoken", password=ACCESS_TOKEN)`.

    `credentials` is a `google.auth.credentials.Credentials` to use instead of Application
    Default Credentials (scoped to cloud-platform when it needs scopes); `request` a
    `google.auth.transport.Request` (default: one on requests)."""

    def __init__(self, credentials: Any = None, *, request: Any = None) -> None:
        self._google_credentials = credentials
        self._explicit = credentials is not None
        self._request = request
        self._scoped = False
        self._lock = threading.Lock()

    def __call__(self, registry: str) -> Credentials:
        with self._lock:
            credentials = self._credentials(registry)
            if not credentials.valid:
                self._refresh(credentials, registry)
            token = credentials.token
        if not token:
            raise PermanentProviderError(
                f"the Google credentials gave no access token for {registry}",
                details={"registry": registry},
            )
        return Credentials(username=AR_USERNAME, password=str(token), source=self._source())

    def _source(self) -> str:
        base = GIVEN_SOURCE if self._explicit else ADC_SOURCE
        email = getattr(self._google_credentials, "service_account_email", None)
        if isinstance(email, str) and "@" in email:
            return f"{base} (service account {email})"
        return base

    def _credentials(self, registry: str) -> Any:
        try:
            import google.auth.transport.requests  # noqa: F401 - google-auth and requests
        except ImportError:  # pragma: no cover - depends on the install
            raise PermanentProviderError(
                f"logging in to the Google registry {registry} needs google-auth and requests "
                "(pip install 'skylane[gcp]')",
                details={"registry": registry},
            ) from None
        if self._google_credentials is not None:
            if self._explicit and not self._scoped:
                from google.auth import credentials as google_credentials

                self._google_credentials = google_credentials.with_scopes_if_required(
                    self._google_credentials, [CLOUD_PLATFORM_SCOPE]
                )
                self._scoped = True
            return self._google_credentials
        import google.auth
        from google.auth import exceptions

        try:
            found, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        except exceptions.DefaultCredentialsError as exc:
            raise PermanentProviderError(
                f"no Google Cloud credentials to log in to {registry}: {SETUP_HINT} "
                f"(google-auth said: {_said(exc)})",
                details={"registry": registry},
            ) from None
        self._google_credentials = found
        return found

    def _refresh(self, credentials: Any, registry: str) -> None:
        from google.auth import exceptions

        if self._request is None:
            from google.auth.transport.requests import Request

            self._request = Request()
        try:
            credentials.refresh(self._request)
        except exceptions.TransportError as exc:
            raise TransientProviderError(
                f"cannot reach Google to get an access token for {registry} ({type(exc).__name__})",
                details={"registry": registry},
            ) from None
        except exceptions.RefreshError as exc:
            cls = TransientProviderError if getattr(exc, "retryable", False) else None
            raise (cls or PermanentProviderError)(
                f"Google refused to give {self._source()} an access token for {registry} "
                f"({_said(exc)}): {SETUP_HINT}, or fix the one in use",
                details={"registry": registry},
            ) from None
        except exceptions.GoogleAuthError as exc:
            raise PermanentProviderError(
                f"getting a Google access token for {registry} failed ({_said(exc)})",
                details={"registry": registry},
            ) from None
        log.info("got a Google access token for %s from %s", registry, self._source())


def _said(exc: BaseException) -> str:
    """google-auth's own words, bounded: the first argument when it is text (the later ones
    can hold the whole token endpoint answer)."""
    first = exc.args[0] if exc.args else ""
    text = first if isinstance(first, str) else type(exc).__name__
    return text.strip()[:300] or type(exc).__name__

"""ECR registry credentials from the user's AWS credentials (ECR's GetAuthorizationToken).

ECR takes no IAM signature on its registry API: a client logs in with Basic auth as `AWS` and a
password GetAuthorizationToken returns (base64 of `AWS:password`), valid 12 hours. That is what
`aws ecr get-login-password | docker login` does; this provider does it for `skylane deploy`, so
no Docker login is needed. The registry id asked for is the account in the host
(`ACCOUNT.dkr.ecr.REGION.amazonaws.com`) and the call goes to the host's region, so an account's
registry is reached with the credentials of another account that it lets in.

Passwords are cached per host until their `expiresAt` less `EXPIRY_MARGIN`. boto3 is imported
only when a token is asked for; errors become skylane errors that say what to fix (which IAM
permissions, how to configure credentials), never quoting the password or the AWS secret.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from skylane.errors import (
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ThrottledError,
    TransientProviderError,
)
from skylane.images.cloud_registry_auth import parse_ecr_host
from skylane.images.registry import Credentials

log = logging.getLogger(__name__)

ECR_USERNAME = "AWS"
ECR_SOURCE = "ECR GetAuthorizationToken (your AWS credentials)"
AUTH_PERMISSION = "ecr:GetAuthorizationToken"
# What pushing needs on the repository, besides the token.
PUSH_PERMISSIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
)
# A password is not used in its last minutes: a push started then could outlive it.
EXPIRY_MARGIN = 300.0

_ACCESS_DENIED = {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"}
_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
}
_THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException"}
# Some endpoints (moto among them) answer ECR's JSON API with an XML error: botocore then
# reports the HTTP status as the code, and the real code is inside the message.
_XML_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.S)
_XML_CODE = re.compile(r"<Code>(.*?)</Code>", re.S)


class EcrCredentialsProvider:
    """A credentials provider for ECR hosts: `provider("123456789012.dkr.ecr.eu-west-1.
    amazonaws.com")` returns `Credentials(username="AWS", password=...)`.

    `session` is the boto3 session to use (default: a new `boto3.Session()`, the default
    credential chain); `endpoint_url` points the ECR client elsewhere (moto_server); `region`
    overrides the region taken from the host. `clock` is for tests of the cache."""

    def __init__(
        self,
        *,
        session: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.session = session
        self.endpoint_url = endpoint_url
        self.region = region
        self.clock = clock
        self._clients: dict[str, Any] = {}
        self._cache: dict[str, tuple[Credentials, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, registry: str) -> Credentials:
        parsed = parse_ecr_host(registry)
        if parsed is None:
            raise InvalidInput(
                f"{registry!r} is not an ECR registry host (ACCOUNT.dkr.ecr.REGION.amazonaws.com)",
                field="registry",
            )
        account, host_region = parsed
        region = self.region or host_region
        key = registry.lower()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[1] > self.clock():
                return cached[0]
        username, password, expires_at = self._fetch(registry, account, region)
        credentials = Credentials(username=username, password=password, source=ECR_SOURCE)
        until = expires_at - EXPIRY_MARGIN if expires_at is not None else None
        if until is not None and until > self.clock():
            with self._lock:
                self._cache[key] = (credentials, until)
        log.info("got an ECR password for %s (account %s, region %s)", registry, account, region)
        return credentials

    def forget(self, registry: str | None = None) -> None:
        """Drop the cached password of `registry` (all of them when None), e.g. after the
        registry refused it."""
        with self._lock:
            if registry is None:
                self._cache.clear()
            else:
                self._cache.pop(registry.lower(), None)

    def _client(self, region: str, registry: str) -> Any:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                try:
                    import boto3
                    from botocore.config import Config
                except ImportError:  # pragma: no cover - depends on the install
                    raise PermanentProviderError(
                        f"logging in to the ECR registry {registry} needs boto3 "
                        "(pip install 'skylane[aws]')",
                        details={"registry": registry},
                    ) from None

                if self.session is None:
                    self.session = boto3.Session()
                client = self._clients[region] = self.session.client(
                    "ecr",
                    region_name=region,
                    endpoint_url=self.endpoint_url,
                    config=Config(
                        connect_timeout=10,
                        read_timeout=30,
                        retries={"mode": "standard", "max_attempts": 3},
                    ),
                )
            return client

    def _fetch(self, registry: str, account: str, region: str) -> tuple[str, str, float | None]:
        """`(username, password, expiry as a Unix time)` from GetAuthorizationToken."""
        try:
            answer = self._client(region, registry).get_authorization_token(registryIds=[account])
        except Exception as exc:
            translated = translate_ecr_error(exc, registry)
            if translated is None:
                raise
            raise translated from None
        entries = answer.get("authorizationData") or []
        entry = entries[0] if entries else {}
        try:
            decoded = base64.b64decode(entry["authorizationToken"], validate=True).decode()
        except (KeyError, TypeError, ValueError, binascii.Error, UnicodeDecodeError):
            decoded = ""
        username, sep, password = decoded.partition(":")
        if not sep or not username or not password:
            raise PermanentProviderError(
                f"ECR GetAuthorizationToken for {registry} answered without a usable token",
                details={"registry": registry},
            )
        expires = entry.get("expiresAt")
        expires_at = expires.timestamp() if hasattr(expires, "timestamp") else None
        return username, password, expires_at


def _aws_message(response: dict[str, Any]) -> str:
    text = str((response.get("Error") or {}).get("Message") or "").strip()
    found = _XML_MESSAGE.search(text)
    if found:
        text = found.group(1).strip()
    return text[:300]


def translate_ecr_error(exc: BaseException, registry: str) -> ProviderError | None:
    """The skylane error for a botocore exception from GetAuthorizationToken, or None when
    `exc` is not botocore's. No credential ever goes into the message: AWS's own words are
    quoted only for a refusal, and they name the caller's ARN, never a key."""
    try:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
            ProfileNotFound,
        )
    except ImportError:  # pragma: no cover - botocore is there when boto3 raised
        return None
    details: dict[str, Any] = {"registry": registry, "action": AUTH_PERMISSION}
    if isinstance(exc, ClientError):
        response = exc.response or {}
        error = response.get("Error") or {}
        code = str(error.get("Code") or "Unknown")
        if code.isdigit():
            found = _XML_CODE.search(str(error.get("Message") or ""))
            code = found.group(1).strip() if found else code
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        details["aws_error_code"] = code
        said = _aws_message(response)
        said_text = f" (AWS said: {said})" if said else ""
        if code in _ACCESS_DENIED or (status == 403 and code not in _BAD_CREDENTIALS):
            return PermanentProviderError(
                f"ECR refused to give a registry password for {registry}: your AWS credentials "
                f'lack the {AUTH_PERMISSION} permission{said_text}. Grant it (Resource "*"), '
                f"and to push, {', '.join(PUSH_PERMISSIONS)} on the repository",
                details=details,
            )
        if code in _BAD_CREDENTIALS:
            return PermanentProviderError(
                f"AWS rejected your AWS credentials ({code}) when asking ECR for a registry "
                f"password for {registry}: refresh or fix them (aws configure, AWS_PROFILE, "
                "aws sso login)",
                details=details,
            )
        if code in _THROTTLED or status == 429:
            return ThrottledError(
                f"ECR throttled GetAuthorizationToken for {registry}; retrying later",
                details=details,
            )
        if status >= 500:
            return TransientProviderError(
                f"ECR failed GetAuthorizationToken for {registry} ({code}){said_text}",
                details=details,
            )
        return PermanentProviderError(
            f"ECR rejected GetAuthorizationToken for {registry} ({code}){said_text}",
            details=details,
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermanentProviderError(
            f"no AWS credentials were found to get an ECR password for {registry}: configure "
            "them (aws configure or aws sso login, AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY; an instance or task role where skylane runs in AWS)",
            details=details,
        )
    if isinstance(exc, ProfileNotFound):
        return PermanentProviderError(
            f"the AWS profile to get an ECR password for {registry} does not exist: fix "
            "AWS_PROFILE or add the profile (aws configure --profile NAME)",
            details=details,
        )
    if isinstance(exc, ConnectionError | HTTPClientError):
        return TransientProviderError(
            f"cannot reach ECR to get a registry password for {registry} ({type(exc).__name__})",
            details=details,
        )
    if isinstance(exc, BotoCoreError):
        return PermanentProviderError(
            f"getting an ECR password for {registry} failed ({type(exc).__name__})",
            details=details,
        )
    return None

"""AWS plumbing for adapters: a boto3 session from a pool's credentials reference, clients with
skylane's botocore configuration, and the translation of botocore errors into
`skylane.errors`.

boto3 and botocore are imported inside functions only, so importing this module (and
`skylane.adapters`) works without them installed.

Credentials reference (`pool.credentials`), all optional:
- `{"profile": "name"}`: a profile of the shared AWS config files;
- `{"role_arn": ..., "external_id": ..., "session_name": ..., "duration_seconds": ...}`: a role
  assumed through STS (with `profile` as the source credentials when given), refreshed before
  it expires;
- nothing: boto3's default credential chain (environment, config files, container or instance
  role, ...).

Pool settings used here: `region`, `endpoint_url` (every client, STS included; otherwise
botocore honours `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` by itself).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

from skylane.adapters.base import scrub
from skylane.errors import (
    CapacityError,
    PermanentProviderError,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    QuotaError,
    ThrottledError,
    TransientProviderError,
)

log = logging.getLogger(__name__)

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "ServerException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServiceError",
        "InternalServiceException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "IDPCommunicationError",
    }
)
ACCESS_DENIED_CODES = frozenset(
    {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnauthorizedException"}
)
BAD_CREDENTIALS_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
        "IncompleteSignature",
    }
)
QUOTA_CODES = frozenset({"LimitExceededException", "ServiceQuotaExceededException"})
NOT_FOUND_CODES = frozenset({"ResourceNotFoundException"})
CAPACITY_TEXT = "capacity is unavailable"

_MAX_MESSAGE = 600
# botocore's parameter validation report quotes values: drop them.
_VALUE_IN_REPORT = re.compile(r"(value:\s*).*?(,\s*type:|$)", re.M)


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def botocore_config(timeout: float = 20.0, **overrides: Any) -> Any:
    """botocore's configuration for skylane's clients. botocore's own retries are off: one
    policy (skylane.retries) retries every call, looks a timed-out RunTask up before trying
    again, and takes a rate-limit token for every try."""
    from botocore.config import Config

    options: dict[str, Any] = {
        "retries": {"mode": "standard", "total_max_attempts": 1},
        "connect_timeout": min(timeout, 10.0),
        "read_timeout": timeout,
        "user_agent_extra": "skylane",
    }
    options.update(overrides)
    return Config(**options)


class AwsClients:
    """One boto3 session per adapter (created on first use) and its clients, per service and
    region. Thread-safe."""

    def __init__(
        self,
        credentials: dict[str, Any] | None,
        settings: dict[str, Any] | None,
        *,
        timeout: float = 20.0,
    ) -> None:
        self._credentials = dict(credentials or {})
        self._settings = dict(settings or {})
        self._timeout = timeout
        self._session: Any = None
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._lock = threading.RLock()

    @property
    def endpoint_url(self) -> str | None:
        value = self._settings.get("endpoint_url")
        return str(value) if value else None

    def session(self) -> Any:
        with self._lock:
            if self._session is None:
                self._session = self._make_session()
            return self._session

    def default_region(self) -> str | None:
        """The pool's `region` setting, else the session's region (config file, AWS_REGION,
        AWS_DEFAULT_REGION)."""
        region = self._settings.get("region")
        if region:
            return str(region)
        return self.session().region_name

    def region(self, region: str | None = None) -> str:
        """`region`, else the default one; an error saying where to set it if there is none."""
        resolved = region or self.default_region()
        if not resolved:
            raise PermanentProviderError(
                "no AWS region is configured: set the `region` job variable, the pool's "
                "`region` setting, or AWS_REGION for the control plane",
                field="job_variables.region",
            )
        return resolved

    def client(self, service: str, region: str | None = None) -> Any:
        region = self.region(region)
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                kwargs: dict[str, Any] = {
                    "region_name": region,
                    "config": botocore_config(self._timeout),
                }
                if self.endpoint_url:
                    kwargs["endpoint_url"] = self.endpoint_url
                try:
                    self._clients[key] = self.session().client(service, **kwargs)
                except Exception as exc:  # botocore's own errors: bad profile, bad region...
                    raise translate_error(exc, action=f"create an {service} client") from None
            return self._clients[key]

    def _make_session(self) -> Any:
        import boto3

        creds = self._credentials
        profile = creds.get("profile") or creds.get("profile_name")
        region = self._settings.get("region") or creds.get("region")
        try:
            # Keys are never read from the pool (the API refuses secrets there): a profile,
            # or the default chain (environment, config files, container or instance role).
            base = boto3.Session(profile_name=profile or None, region_name=region or None)
        except Exception as exc:
            raise translate_error(exc, action="load the pool's AWS profile") from None
        role_arn = creds.get("role_arn")
        if not role_arn:
            return base
        return self._assumed_role_session(base, str(role_arn), region)

    def _assumed_role_session(self, base: Any, role_arn: str, region: str | None) -> Any:
        """A session whose credentials come from sts:AssumeRole with the base session's
        credentials, refreshed by botocore shortly before they expire."""
        import boto3
        import botocore.session
        from botocore.credentials import (
            AssumeRoleCredentialFetcher,
            DeferredRefreshableCredentials,
        )

        creds = self._credentials
        source = base.get_credentials()
        if source is None:
            raise PermanentProviderError(
                f"cannot assume {role_arn}: the control plane has no AWS credentials to assume "
                "it with (configure the default credential chain or a `profile`)"
            )
        extra: dict[str, Any] = {
            "RoleSessionName": str(creds.get("session_name") or "skylane-control-plane")
        }
        if creds.get("external_id"):
            extra["ExternalId"] = str(creds["external_id"])
        if creds.get("duration_seconds"):
            extra["DurationSeconds"] = int(creds["duration_seconds"])
        sts_region = region or base.region_name or "us-east-1"
        endpoint = self.endpoint_url

        def client_creator(service: str, **kwargs: Any) -> Any:
            kwargs.setdefault("region_name", sts_region)
            if endpoint:
                kwargs.setdefault("endpoint_url", endpoint)
            return base._session.create_client(service, **kwargs)

        fetcher = AssumeRoleCredentialFetcher(
            client_creator=client_creator,
            source_credentials=source,
            role_arn=role_arn,
            extra_args=extra,
        )
        core = botocore.session.Session()
        core._credentials = DeferredRefreshableCredentials(
            refresh_using=fetcher.fetch_credentials, method="assume-role"
        )
        return boto3.Session(botocore_session=core, region_name=region or base.region_name)


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        return str(code) if code else None
    return None


def _retry_after(response: dict[str, Any]) -> float | None:
    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


# Whose credentials a call used, unless `translate_error` is told otherwise.
CONTROL_PLANE_ROLE = "the control plane's role (the pool's AWS credentials)"
CONTROL_PLANE_CREDENTIALS = "the control plane's credentials"


def translate_error(
    exc: BaseException,
    *,
    action: str,
    resource: str | None = None,
    cluster: str | None = None,
    region: str | None = None,
    secrets: Iterable[str] = (),
    caller: str | None = None,
) -> ProviderError:
    """The skylane error for a botocore/boto3 exception raised while doing `action` (an IAM
    action such as "ecs:RunTask", or a phrase). `resource` names what it was done to (for
    messages), `cluster` the ECS cluster and `region` the region involved. `secrets` are
    scrubbed from the message. `caller` names whose credentials made the call when they are
    not the control plane's (provisioning runs with the user's)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
        ProfileNotFound,
        ReadTimeoutError,
    )

    secrets = list(secrets)
    where = f" on {resource}" if resource else ""

    def message(text: str) -> str:
        return _bounded(scrub(text, secrets))

    if isinstance(exc, ClientError):
        response = exc.response or {}
        code = error_code(exc) or "Unknown"
        aws_message = str((response.get("Error") or {}).get("Message") or "").strip()
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
        details = {"aws_error_code": code}
        said = f" (AWS said: {aws_message})" if aws_message else ""
        if code in THROTTLING_CODES:
            return ThrottledError(
                message(f"{action}{where} was throttled by AWS ({code}); retrying later"),
                retry_after=_retry_after(response),
                details=details,
            )
        if CAPACITY_TEXT in aws_message.lower():
            return CapacityError(
                message(f"{action}{where}: {aws_message}; retrying later"), details=details
            )
        if code in ACCESS_DENIED_CODES:
            perm = action if ":" in action else "the needed permission"
            return ProviderAuthError(
                message(
                    f"{action}{where} was denied: grant {caller or CONTROL_PLANE_ROLE} "
                    f"{perm}{where}{said}"
                ),
                details=details,
            )
        if code in BAD_CREDENTIALS_CODES:
            return ProviderAuthError(
                message(
                    f"{action}{where} failed: AWS rejected "
                    f"{caller or CONTROL_PLANE_CREDENTIALS} ({code}); check the credentials "
                    "reference or the default chain"
                ),
                details=details,
            )
        if code == "ClusterNotFoundException":
            name = cluster or "default"
            in_region = f" in region {region}" if region else ""
            return PermanentProviderError(
                message(
                    f"ECS cluster {name!r} was not found{in_region}: create it or fix "
                    "the job variable `cluster`"
                ),
                field="job_variables.cluster",
                details=details,
            )
        if code in QUOTA_CODES:
            return QuotaError(
                message(f"{action}{where} hit an AWS quota{said}; raise the quota or wait"),
                details=details,
            )
        if code in NOT_FOUND_CODES:
            return ProviderNotFound(message(f"{action}{where}: not found{said}"), details=details)
        if code in TRANSIENT_CODES or status >= 500:
            return TransientProviderError(
                message(f"{action}{where} failed on AWS's side ({code}){said}; retrying later"),
                details=details,
            )
        return PermanentProviderError(
            message(f"{action}{where} was rejected ({code}){said}"), details=details
        )
    if isinstance(exc, ReadTimeoutError | ConnectionError | HTTPClientError):
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError and friends.
        return TransientProviderError(
            message(f"{action}{where}: cannot reach AWS right now ({type(exc).__name__})")
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ProviderAuthError(
            f"{action}{where}: no usable AWS credentials were found; configure the default "
            f"credential chain {'for ' + caller if caller else 'of the control plane'} or the "
            "credentials reference"
        )
    if isinstance(exc, ProfileNotFound):
        return PermanentProviderError(
            f"{action}: the AWS profile named in the pool's credentials does not exist"
        )
    if isinstance(exc, NoRegionError):
        return PermanentProviderError(
            f"{action}: no AWS region is configured; set the `region` job variable or the "
            "pool's `region` setting",
            field="job_variables.region",
        )
    if isinstance(exc, ParamValidationError):
        report = _VALUE_IN_REPORT.sub(r"\1<hidden>\2", str(exc))
        return PermanentProviderError(message(f"{action}{where}: invalid request: {report}"))
    if isinstance(exc, BotoCoreError):
        return TransientProviderError(
            message(f"{action}{where} failed ({type(exc).__name__}); retrying later")
        )
    return TransientProviderError(
        message(f"{action}{where} failed unexpectedly ({type(exc).__name__})")
    )

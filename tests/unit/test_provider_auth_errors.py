"""`ProviderAuthError`: each adapter's error translator, fed the SDK's own exception objects,
says "auth" exactly for missing, rejected or expired credentials and for denied permissions;
the error stays a `PermanentProviderError` (never retried) and keeps its message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from skylane.errors import (
    PermanentProviderError,
    ProviderAuthError,
    ProviderError,
    ThrottledError,
    TransientProviderError,
)

SECRET = "hunter2-s3cr3t-value"


def assert_auth(error: ProviderError, *names: str) -> None:
    assert isinstance(error, ProviderAuthError), repr(error)
    assert isinstance(error, PermanentProviderError)
    assert error.code == "provider_auth" and error.to_dict()["code"] == "provider_auth"
    assert not error.retryable
    assert error.status_code == 502
    for name in names:
        assert name in error.message, (name, error.message)
    assert SECRET not in str(error.to_dict())


def test_the_class_sits_under_permanent_provider_error() -> None:
    error = ProviderAuthError("denied", details={"action": "x"})
    assert isinstance(error, PermanentProviderError) and isinstance(error, ProviderError)
    assert not isinstance(error, TransientProviderError)
    assert error.to_dict() == {
        "code": "provider_auth",
        "message": "denied",
        "details": {"action": "x"},
    }
    assert PermanentProviderError.code == "provider_permanent"  # unchanged


# -- AWS (botocore) ------------------------------------------------------------------------------


def aws_client_error(code: str, message: str = "m", status: int = 400) -> Any:
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
        },
        "RunTask",
    )


@pytest.fixture
def aws() -> Any:
    pytest.importorskip("botocore")
    from skylane.adapters import aws

    return aws


@pytest.mark.parametrize("code", ["AccessDeniedException", "AccessDenied", "UnauthorizedOperation"])
def test_aws_access_denied_is_an_auth_error_with_the_same_message(aws: Any, code: str) -> None:
    error = aws.translate_error(
        aws_client_error(code, f"not authorized to perform ecs:RunTask ({SECRET})"),
        action="ecs:RunTask",
        resource="cluster 'c1'",
        secrets=[SECRET],
    )
    assert_auth(error, "ecs:RunTask")
    assert error.message == (
        "ecs:RunTask on cluster 'c1' was denied: grant the control plane's role (the pool's AWS "
        "credentials) ecs:RunTask on cluster 'c1' (AWS said: not authorized to perform "
        "ecs:RunTask (****))"
    )
    assert error.details == {"aws_error_code": code}


@pytest.mark.parametrize(
    "code", ["UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException"]
)
def test_aws_rejected_credentials_are_an_auth_error_with_the_same_message(
    aws: Any, code: str
) -> None:
    error = aws.translate_error(aws_client_error(code), action="ecs:RunTask")
    assert_auth(error, "ecs:RunTask")
    assert error.message == (
        f"ecs:RunTask failed: AWS rejected the control plane's credentials ({code}); check the "
        "credentials reference or the default chain"
    )


def test_aws_missing_credentials_are_an_auth_error_with_the_same_message(aws: Any) -> None:
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    error = aws.translate_error(NoCredentialsError(), action="ecs:RunTask")
    assert_auth(error, "ecs:RunTask")
    assert error.message == (
        "ecs:RunTask: no usable AWS credentials were found; configure the default credential "
        "chain of the control plane or the credentials reference"
    )
    partial = aws.translate_error(
        PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
        action="iam:CreateRole",
        caller="your AWS credentials",
    )
    assert_auth(partial, "iam:CreateRole", "for your AWS credentials")


def test_aws_provisioning_caller_is_named_in_the_auth_error(aws: Any) -> None:
    denied = aws.translate_error(
        aws_client_error("AccessDenied"), action="iam:CreateRole", caller="your AWS credentials"
    )
    assert_auth(denied, "iam:CreateRole", "grant your AWS credentials iam:CreateRole")
    rejected = aws.translate_error(
        aws_client_error("InvalidClientTokenId"),
        action="sts:GetCallerIdentity",
        caller="your AWS credentials",
    )
    assert_auth(rejected, "sts:GetCallerIdentity", "AWS rejected your AWS credentials")


def test_aws_non_auth_errors_are_not_auth_errors(aws: Any) -> None:
    from botocore.exceptions import ProfileNotFound

    throttled = aws.translate_error(
        aws_client_error("ThrottlingException", "Rate exceeded"), action="ecs:RunTask"
    )
    assert isinstance(throttled, ThrottledError) and not isinstance(throttled, ProviderAuthError)
    profile = aws.translate_error(ProfileNotFound(profile="nope"), action="ecs:RunTask")
    assert type(profile) is PermanentProviderError  # configuration, not auth
    assert profile.message == (
        "ecs:RunTask: the AWS profile named in the pool's credentials does not exist"
    )
    invalid = aws.translate_error(
        aws_client_error("InvalidParameterException", "Bad cpu"), action="ecs:RunTask"
    )
    assert type(invalid) is PermanentProviderError
    assert aws.ACCESS_DENIED_CODES and aws.BAD_CREDENTIALS_CODES  # still exported


# -- Google Cloud (google-api-core, google-auth) -------------------------------------------------


@pytest.fixture
def gcp() -> Any:
    pytest.importorskip("google.api_core")
    pytest.importorskip("google.auth")
    pytest.importorskip("requests")
    from skylane.adapters import cloud_run

    return cloud_run


def test_gcp_permission_denied_is_an_auth_error_with_the_same_message(gcp: Any) -> None:
    from google.api_core import exceptions as gexc

    error = gcp.translate_error(
        gexc.PermissionDenied(f"Permission denied on project ({SECRET})"),
        action="run.jobs.create",
        resource="job j1",
        secrets=[SECRET],
    )
    assert_auth(error, "run.jobs.create")
    assert error.message == (
        "the pool's credentials may not run.jobs.create on job j1: "
        "Permission denied on project (****)"
    )
    assert error.details["action"] == "run.jobs.create" and error.details["http_status"] == 403


@pytest.mark.parametrize("kind", ["Unauthenticated", "Unauthorized", "Forbidden"])
def test_gcp_refusals_are_auth_errors(gcp: Any, kind: str) -> None:
    from google.api_core import exceptions as gexc

    error = gcp.translate_error(
        getattr(gexc, kind)("refused"), action="run.executions.get", resource="execution e1"
    )
    assert_auth(error, "run.executions.get", "the pool's credentials may not")


def test_gcp_provisioning_refusal_names_the_caller(gcp: Any) -> None:
    from google.api_core import exceptions as gexc

    error = gcp.translate_error(
        gexc.PermissionDenied("denied"),
        action="artifactregistry.repositories.create",
        resource="repository r",
        caller="your Google Cloud credentials",
    )
    assert_auth(error, "grant your Google Cloud credentials artifactregistry.repositories.create")


def test_gcp_missing_or_refused_credentials_are_auth_errors(gcp: Any) -> None:
    from google.auth import exceptions as auth_exc

    missing = gcp.translate_error(
        auth_exc.DefaultCredentialsError("Your default credentials were not found."),
        action="authenticate",
        resource="Google Cloud",
    )
    assert_auth(missing, "authenticate")
    assert missing.message == (
        "no Google Cloud credentials for authenticate: set up Application Default Credentials "
        "where the control plane runs (Your default credentials were not found.)"
    )
    refused = gcp.translate_error(
        auth_exc.RefreshError("invalid_grant: Token has been expired or revoked."),
        action="run.jobs.create",
        resource="job j1",
    )
    assert_auth(refused, "run.jobs.create")
    assert refused.message == (
        "the pool's Google Cloud credentials were refused for run.jobs.create: "
        "invalid_grant: Token has been expired or revoked."
    )


def test_gcp_non_auth_errors_are_not_auth_errors(gcp: Any) -> None:
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    throttled = gcp.translate_error(
        gexc.TooManyRequests("slow down"), action="run.jobs.create", resource="job j1"
    )
    assert isinstance(throttled, ThrottledError) and not isinstance(throttled, ProviderAuthError)
    exhausted = gcp.translate_error(
        gexc.ResourceExhausted("quota"), action="run.jobs.create", resource="job j1"
    )
    assert not isinstance(exhausted, ProviderAuthError)
    retryable = gcp.translate_error(
        auth_exc.RefreshError("try later", retryable=True), action="x", resource="y"
    )
    assert type(retryable) is TransientProviderError
    transport = gcp.translate_error(auth_exc.TransportError("down"), action="x", resource="y")
    assert type(transport) is TransientProviderError
    bad = gcp.translate_error(gexc.BadRequest("bad"), action="run.jobs.create", resource="job j1")
    assert type(bad) is PermanentProviderError


# -- Azure (azure-core, azure-identity) ---------------------------------------------------------


def azure_response(status: int, code: str, message: str, **headers: str) -> Any:
    import requests
    from azure.core.pipeline.transport import RequestsTransportResponse
    from azure.core.rest import HttpRequest

    raw = requests.Response()
    raw.status_code = status
    raw.reason = "refused"
    raw._content = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw.headers["Content-Type"] = "application/json"
    raw.headers.update(headers)
    request = HttpRequest("PUT", "https://management.azure.com/subscriptions/s/resourceGroups/g")
    return RequestsTransportResponse(request, raw)


@pytest.fixture
def aci() -> Any:
    pytest.importorskip("azure.core")
    pytest.importorskip("requests")
    from skylane.adapters import aci

    return aci


WRITE = "Microsoft.ContainerInstance/containerGroups/write"


def test_azure_403_is_an_auth_error_with_the_same_message(aci: Any) -> None:
    from azure.core.exceptions import HttpResponseError

    exc = HttpResponseError(
        response=azure_response(403, "AuthorizationFailed", f"no write ({SECRET})")
    )
    error = aci.translate_error(exc, action=WRITE, resource="group g1", secrets=[SECRET])
    assert_auth(error, WRITE)
    assert error.message == (
        f"the control plane's identity may not {WRITE} on group g1: AuthorizationFailed: no "
        "write (****). Grant it a role with this permission on the resource group (see the "
        "README's minimal role)"
    )
    assert error.details == {"action": WRITE, "http_status": 403, "code": "AuthorizationFailed"}
    mine = aci.translate_error(
        exc, action=WRITE, resource="group g1", secrets=[SECRET], caller="your Azure credentials"
    )
    assert_auth(mine, WRITE, f"grant your Azure credentials {WRITE}")


def test_azure_401_is_an_auth_error_with_the_same_message(aci: Any) -> None:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    response = azure_response(401, "InvalidAuthenticationToken", "The token is expired")
    for exc in (HttpResponseError(response=response), ClientAuthenticationError(response=response)):
        error = aci.translate_error(exc, action=WRITE, resource="group g1")
        assert_auth(error, WRITE)
        assert error.message == (
            f"Azure refused the control plane's credentials for {WRITE}: "
            "InvalidAuthenticationToken: The token is expired"
        )
        mine = aci.translate_error(
            exc, action=WRITE, resource="group g1", caller="your Azure credentials"
        )
        assert_auth(mine, WRITE, "Azure refused your Azure credentials")


def test_azure_missing_credentials_are_an_auth_error(aci: Any) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    exc = ClientAuthenticationError(message="DefaultAzureCredential failed to retrieve a token")
    assert exc.status_code is None
    error = aci.translate_error(exc, action="authenticate", resource="Azure")
    assert_auth(error, "authenticate", "no Azure credentials for authenticate")
    assert error.message == (
        "no Azure credentials for authenticate: set up a managed identity, workload identity, "
        "environment credentials or an Azure CLI login where the control plane runs "
        "(DefaultAzureCredential failed to retrieve a token)"
    )
    mine = aci.translate_error(
        exc, action="authenticate", resource="Azure", caller="your Azure credentials"
    )
    assert_auth(mine, "authenticate", "your Azure credentials could not get a token")


def test_azure_identity_unavailable_credential_is_an_auth_error(aci: Any) -> None:
    identity = pytest.importorskip("azure.identity")
    exc = identity.CredentialUnavailableError(message="no managed identity endpoint")
    error = aci.translate_error(exc, action="authenticate", resource="Azure")
    assert_auth(error, "authenticate")


def test_azure_non_auth_errors_are_not_auth_errors(aci: Any) -> None:
    from azure.core.exceptions import HttpResponseError

    throttled = aci.translate_error(
        HttpResponseError(
            response=azure_response(429, "TooManyRequests", "slow", **{"Retry-After": "3"})
        ),
        action=WRITE,
        resource="group g1",
    )
    assert isinstance(throttled, ThrottledError) and not isinstance(throttled, ProviderAuthError)
    assert throttled.retry_after == 3.0
    bad = aci.translate_error(
        HttpResponseError(response=azure_response(400, "InvalidRequestContent", "bad")),
        action=WRITE,
        resource="group g1",
    )
    assert type(bad) is PermanentProviderError

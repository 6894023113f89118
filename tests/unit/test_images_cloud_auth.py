"""Registry credentials from each cloud, pushing to a real registry on loopback (Debian's
docker-registry): ECR's GetAuthorizationToken answered by moto, Artifact Registry's access
token from a real google-auth service account flow against a local OAuth2 endpoint, ACR's
Entra token exchange and refresh-token grant against the test token server. Each cloud's
registry host is aliased to the loopback registry, so the whole path runs: host pattern,
cloud call, registry login, push. And the failures: each message says what to fix and holds
no token, password or key."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from skylane.errors import InvalidInput, PermanentProviderError
from skylane.images.acr_auth import ACR_USERNAME, AcrCredentialsProvider, exchange_url_for
from skylane.images.artifact_registry_auth import (
    AR_USERNAME,
    CLOUD_PLATFORM_SCOPE,
    ArtifactRegistryCredentialsProvider,
)
from skylane.images.cloud_registry_auth import (
    acr_cloud,
    cloud_credentials_provider,
    parse_ecr_host,
    registry_kind,
)
from skylane.images.ecr_auth import ECR_SOURCE, EcrCredentialsProvider
from skylane.images.registry import Credentials, DockerConfig, Registries, chain_providers
from skylane.testing.oci_registry import (
    TokenServer,
    htpasswd_unavailable_reason,
    oci_registry,
    push_test_image,
    registry_unavailable_reason,
)

needs_registry = pytest.mark.skipif(
    registry_unavailable_reason() is not None, reason=registry_unavailable_reason() or ""
)

ACCOUNT = "123456789012"
ECR_HOST = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"
# moto's GetAuthorizationToken answers `AWS:<registry id>-auth-token`, expiring 2015-01-01.
ECR_PASSWORD = f"{ACCOUNT}-auth-token"
MOTO_EXPIRY = datetime(2015, 1, 1, tzinfo=UTC).timestamp()
AR_HOST = "europe-west1-docker.pkg.dev"
# What the local Google token endpoint issues, known up front so the registry can take it.
GOOGLE_ACCESS_TOKEN = "ya29.skylane-test-access-token"
ACR_HOST = "skylanetest.azurecr.io"
ENTRA_PUSHER = "entra-access-token-of-the-pusher"
ENTRA_READER = "entra-access-token-of-the-reader"


def registries_for(host: str, provider: Any, tmp_path: Path) -> Registries:
    """Registries whose credentials come from `provider`, then an empty Docker config, as
    `skylane deploy` chains them."""
    docker = DockerConfig(tmp_path / "docker-config.json")
    return Registries(credentials_provider=chain_providers(provider, docker), docker_config=False)


# --- host patterns -----------------------------------------------------------------------


def test_registry_kinds_by_host() -> None:
    assert registry_kind(ECR_HOST) == "ecr"
    assert registry_kind("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn") == "ecr"
    assert registry_kind("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com") == "ecr"
    assert registry_kind("123456789012.dkr-ecr.us-east-1.on.aws") == "ecr"
    assert registry_kind("123456789012.DKR.ECR.eu-west-1.amazonaws.com:443") == "ecr"
    assert registry_kind("europe-west1-docker.pkg.dev") == "artifact-registry"
    assert registry_kind("gcr.io") == "artifact-registry"
    assert registry_kind("eu.gcr.io") == "artifact-registry"
    assert registry_kind("myregistry.azurecr.io") == "acr"
    assert registry_kind("myregistry.azurecr.cn") == "acr"
    assert registry_kind("myregistry.azurecr.us") == "acr"
    for other in (
        "docker.io",
        "public.ecr.aws",
        "ghcr.io",
        "127.0.0.1:5000",
        "12345.dkr.ecr.eu-west-1.amazonaws.com",  # not a 12-digit account
        "europe-west1-python.pkg.dev",  # not a Docker repository host
        "notgcr.io",
        "evil.azurecr.io.example.com",
        "amazonaws.com",
    ):
        assert registry_kind(other) is None, other
    assert parse_ecr_host(ECR_HOST) == (ACCOUNT, "eu-west-1")
    assert parse_ecr_host("123456789012.dkr-ecr.ap-south-1.on.aws") == (ACCOUNT, "ap-south-1")
    assert parse_ecr_host("gcr.io") is None
    assert acr_cloud("a1.azurecr.cn") == "cn" and acr_cloud("gcr.io") is None
    assert exchange_url_for(ACR_HOST) == f"https://{ACR_HOST}/oauth2/exchange"
    assert exchange_url_for("127.0.0.1:5000") == "http://127.0.0.1:5000/oauth2/exchange"


def test_other_hosts_fall_through_to_the_docker_config(tmp_path: Path) -> None:
    asked: list[str] = []

    def ecr(host: str) -> Credentials:
        asked.append(host)
        return Credentials(username="AWS", password="from-ecr", source="test")

    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"auths": {"registry.example.com": {"username": "u", "password": "p"}}})
    )
    provider = cloud_credentials_provider(aws=ecr, gcp=False, azure=False)
    chained = chain_providers(provider, DockerConfig(config))
    found = chained("registry.example.com")
    assert isinstance(found, Credentials) and (found.username, found.password) == ("u", "p")
    assert provider("docker.io") is None and provider(AR_HOST) is None  # gcp is off
    assert chained(ECR_HOST) == Credentials(username="AWS", password="from-ecr", source="test")
    assert asked == [ECR_HOST]
    with pytest.raises(InvalidInput):
        EcrCredentialsProvider()("registry.example.com")


# --- ECR (moto) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ecr_registry() -> Iterator[str]:
    if registry_unavailable_reason():
        pytest.skip(registry_unavailable_reason() or "")
    if htpasswd_unavailable_reason():
        pytest.skip(htpasswd_unavailable_reason() or "")
    # ECR's registry takes Basic auth as AWS with the GetAuthorizationToken password.
    with oci_registry(users={"AWS": ECR_PASSWORD}) as running:
        yield running.host


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A boto3 session on moto's in-process AWS."""
    moto = pytest.importorskip("moto")
    import boto3

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with moto.mock_aws():
        yield boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )


def count_token_calls(session: Any) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    session.events.register(
        "provide-client-params.ecr.GetAuthorizationToken",
        lambda params, **_: calls.append(dict(params)),
    )
    return calls


@needs_registry
def test_ecr_push_with_get_authorization_token(ecr_registry: str, aws: Any, tmp_path: Path) -> None:
    calls = count_token_calls(aws)
    ecr = EcrCredentialsProvider(session=aws)
    provider = cloud_credentials_provider(
        aws=ecr, gcp=False, azure=False, aliases={ecr_registry: ECR_HOST}
    )
    with registries_for(ecr_registry, provider, tmp_path) as registries:
        client = registries.client(ecr_registry)
        digest = push_test_image(client, "skylane/app", "v1")
        assert client.get_manifest("skylane/app", "v1").digest == digest
        assert client.credentials is not None
        assert client.credentials.username == "AWS" and client.credentials.source == ECR_SOURCE
        assert ECR_PASSWORD not in repr(client.credentials)
    # The registry id is the host's account, the call went to the host's region.
    assert calls == [{"registryIds": [ACCOUNT]}]
    assert set(ecr._clients) == {"eu-west-1"}


@needs_registry
def test_ecr_password_of_another_account_is_refused_without_echoing_it(
    ecr_registry: str, aws: Any, tmp_path: Path
) -> None:
    other = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"
    provider = cloud_credentials_provider(
        aws=EcrCredentialsProvider(session=aws), aliases={ecr_registry: other}
    )
    with (
        registries_for(ecr_registry, provider, tmp_path) as registries,
        pytest.raises(PermanentProviderError) as caught,
    ):
        registries.client(ecr_registry).upload_blob("skylane/app", b"x")
    message = str(caught.value)
    assert ECR_SOURCE in message and "refused" in message and "'AWS'" in message
    assert "210987654321-auth-token" not in message


def test_ecr_password_cached_until_shortly_before_it_expires(aws: Any) -> None:
    calls = count_token_calls(aws)
    now = {"t": MOTO_EXPIRY - 3600}
    ecr = EcrCredentialsProvider(session=aws, clock=lambda: now["t"])
    first = ecr(ECR_HOST)
    assert (first.username, first.password) == ("AWS", ECR_PASSWORD)
    assert ecr(ECR_HOST) is first and len(calls) == 1
    now["t"] = MOTO_EXPIRY - 60  # within the margin: a new password
    assert ecr(ECR_HOST).password == ECR_PASSWORD and len(calls) == 2
    # Already expired by the local clock: used, never cached.
    late = EcrCredentialsProvider(session=aws)
    late(ECR_HOST)
    late(ECR_HOST)
    assert len(calls) == 4
    # The region override wins over the host's.
    EcrCredentialsProvider(session=aws, region="us-west-2")(ECR_HOST)
    assert len(calls) == 5


def test_ecr_denied_names_the_permissions_and_hides_secrets(aws: Any) -> None:
    from moto.core import set_initial_no_auth_action_count

    iam = aws.client("iam")

    def enforced() -> None:
        # The first three calls (setting up the user) are not checked; the rest are.
        iam.create_user(UserName="pusher")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "ecr:PutImage", "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName="pusher", PolicyName="push-only", PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName="pusher")["AccessKey"]
        import boto3

        session = boto3.Session(
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name="us-east-1",
        )
        with pytest.raises(PermanentProviderError) as caught:
            EcrCredentialsProvider(session=session)(ECR_HOST)
        message = str(caught.value)
        assert "ecr:GetAuthorizationToken" in message and "user/pusher" in message
        for permission in ("ecr:InitiateLayerUpload", "ecr:CompleteLayerUpload", "ecr:PutImage"):
            assert permission in message
        assert key["SecretAccessKey"] not in message and "<" not in message
        assert caught.value.details["action"] == "ecr:GetAuthorizationToken"

        stranger = boto3.Session(
            aws_access_key_id="AKIAUNKNOWN000000000",
            aws_secret_access_key="not-a-real-secret-key",
            region_name="us-east-1",
        )
        with pytest.raises(PermanentProviderError) as caught:
            EcrCredentialsProvider(session=stranger)(ECR_HOST)
        message = str(caught.value)
        assert "rejected your AWS credentials" in message
        assert "not-a-real-secret-key" not in message

    set_initial_no_auth_action_count(3)(enforced)()


def test_ecr_without_aws_credentials_says_how_to_configure_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import boto3

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(PermanentProviderError) as caught:
        EcrCredentialsProvider(session=boto3.Session())(ECR_HOST)
    message = str(caught.value)
    assert "no AWS credentials" in message and "aws configure" in message
    assert ECR_HOST in message


# --- Artifact Registry (a real google-auth flow) and ACR (token exchange) -------------------


@pytest.fixture(scope="module")
def google() -> Iterator[Any]:
    pytest.importorskip("cryptography", reason="the test token servers sign with cryptography")
    pytest.importorskip("google.auth")
    from skylane.testing.oauth_token import GoogleTokenServer

    with GoogleTokenServer(access_token=GOOGLE_ACCESS_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenServer]:
    """A registry token server taking Artifact Registry's `oauth2accesstoken` login and ACR's
    Entra token exchange."""
    pytest.importorskip("cryptography", reason="the test token server signs with cryptography")
    with TokenServer(
        users={AR_USERNAME: GOOGLE_ACCESS_TOKEN},
        accepted_access_tokens={ENTRA_PUSHER: "acr-pusher", ENTRA_READER: "acr-reader"},
        read_only=("acr-reader",),
    ) as tokens:
        yield tokens


@pytest.fixture(scope="module")
def token_registry(token_server: TokenServer) -> Iterator[tuple[str, TokenServer]]:
    """A registry with bearer auth from `token_server`."""
    if registry_unavailable_reason():
        pytest.skip(registry_unavailable_reason() or "")
    with oci_registry(token=token_server) as running:
        yield running.host, token_server


@pytest.fixture
def adc(google: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Application Default Credentials: a service account key whose token_uri is `google`."""
    key_file = google.write_key_file(tmp_path / "gcloud")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    return key_file


@needs_registry
def test_artifact_registry_push_with_application_default_credentials(
    token_registry: tuple[str, TokenServer], google: Any, adc: Path, tmp_path: Path
) -> None:
    host, tokens = token_registry
    google.grants.clear()
    tokens.requests.clear()
    gcp = ArtifactRegistryCredentialsProvider()
    provider = cloud_credentials_provider(aws=False, gcp=gcp, azure=False, aliases={host: AR_HOST})
    with registries_for(host, provider, tmp_path) as registries:
        client = registries.client(host)
        digest = push_test_image(client, "skylane-test/images/app", "v1")
        assert client.resolve_manifest("skylane-test/images/app", "v1").digest == digest
        credentials = client.credentials
        assert credentials is not None and credentials.username == AR_USERNAME
        assert google.client_email in credentials.source
    assert [(g.issuer, g.scope, g.status) for g in google.grants] == [
        (google.client_email, CLOUD_PLATFORM_SCOPE, 200)
    ]
    assert {r.account for r in tokens.requests} == {AR_USERNAME}
    # The token serves every Google registry until it nears expiry: no second grant.
    assert gcp("eu.gcr.io").password == google.access_token
    assert len(google.grants) == 1


def test_artifact_registry_with_explicit_credentials(google: Any) -> None:
    from google.oauth2 import service_account

    given = service_account.Credentials.from_service_account_info(google.service_account_info())
    provider = ArtifactRegistryCredentialsProvider(given)
    found = provider(AR_HOST)
    assert (found.username, found.password) == (AR_USERNAME, google.access_token)
    assert "given to skylane" in found.source
    assert google.grants[-1].scope == CLOUD_PLATFORM_SCOPE


def test_artifact_registry_without_adc_says_how_to_set_it_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("google.auth")
    from google.auth.compute_engine import _metadata

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(PermanentProviderError) as caught:
        ArtifactRegistryCredentialsProvider()(AR_HOST)
    message = str(caught.value)
    assert "gcloud auth application-default login" in message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message and "missing.json" in message
    # Nothing anywhere (and not on GCE): the same advice.
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)
    with pytest.raises(PermanentProviderError, match="application-default login"):
        ArtifactRegistryCredentialsProvider()(AR_HOST)


def test_artifact_registry_refused_key_hides_the_key(
    google: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = google.write_key_file(tmp_path, wrong_key=True)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    with pytest.raises(PermanentProviderError) as caught:
        ArtifactRegistryCredentialsProvider()(AR_HOST)
    message = str(caught.value)
    assert "Invalid JWT Signature" in message and google.client_email in message
    private_key = json.loads(key_file.read_text())["private_key"]
    assert "PRIVATE KEY" not in message and private_key[40:80] not in message
    assert google.access_token not in message
    assert google.grants[-1].status == 400


class EntraCredential:
    """An azure-identity style credential holding one access token; records the scopes."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


@needs_registry
def test_acr_push_through_the_token_exchange(
    token_registry: tuple[str, TokenServer], tmp_path: Path
) -> None:
    pytest.importorskip("azure.core")
    host, tokens = token_registry
    tokens.requests.clear()
    entra = EntraCredential(ENTRA_PUSHER)
    acr = AcrCredentialsProvider(entra, exchange_url=tokens.url + "/oauth2/exchange")
    provider = cloud_credentials_provider(aws=False, gcp=False, azure=acr, aliases={host: ACR_HOST})
    with registries_for(host, provider, tmp_path) as registries:
        client = registries.client(host)
        digest = push_test_image(client, "skylane/app", "v1")
        assert client.resolve_manifest("skylane/app", "v1").digest == digest
        credentials = client.credentials
        assert credentials is not None and credentials.username == ACR_USERNAME
        assert credentials.identity_token in tokens.refresh_tokens
        assert credentials.identity_token not in repr(credentials)
    assert entra.scopes == [("https://management.azure.com/.default",)]
    grants = [(r.grant, r.account, r.status) for r in tokens.requests]
    assert grants[0] == ("access_token", "acr-pusher", 200)
    assert {g for g in grants[1:]} == {("refresh_token", "acr-pusher", 200)}
    # The refresh token is kept until it nears its expiry: no second exchange.
    assert acr(ACR_HOST) is acr(ACR_HOST)
    assert len(entra.scopes) == 1


def test_acr_exchange_uses_plain_http_on_loopback(token_server: TokenServer) -> None:
    pytest.importorskip("azure.core")
    tokens = token_server
    loopback = f"127.0.0.1:{tokens.port}"
    found = AcrCredentialsProvider(EntraCredential(ENTRA_PUSHER))(loopback)
    assert tokens.refresh_tokens.get(found.identity_token or "") == "acr-pusher"


def test_acr_exchange_refused_names_the_acrpush_role(token_server: TokenServer) -> None:
    pytest.importorskip("azure.core")
    tokens = token_server
    unknown = "entra-token-the-registry-does-not-know"
    acr = AcrCredentialsProvider(
        EntraCredential(unknown), exchange_url=tokens.url + "/oauth2/exchange"
    )
    with pytest.raises(PermanentProviderError) as caught:
        acr(ACR_HOST)
    message = str(caught.value)
    assert "AcrPush" in message and ACR_HOST in message and "401" in message
    assert unknown not in message
    assert caught.value.details["status"] == 401


@needs_registry
def test_acr_identity_without_push_is_told_about_acrpush(
    token_registry: tuple[str, TokenServer], tmp_path: Path
) -> None:
    pytest.importorskip("azure.core")
    host, tokens = token_registry
    acr = AcrCredentialsProvider(
        EntraCredential(ENTRA_READER), exchange_url=tokens.url + "/oauth2/exchange"
    )
    provider = cloud_credentials_provider(azure=acr, aliases={host: ACR_HOST})
    with (
        registries_for(host, provider, tmp_path) as registries,
        pytest.raises(PermanentProviderError) as caught,
    ):
        client = registries.client(host)
        client.upload_blob("skylane/app", b"reader's bytes")
    message = str(caught.value)
    assert "not allowed" in message and "AcrPush" in message
    assert ENTRA_READER not in message
    assert not any(token in message for token in tokens.refresh_tokens)


def test_acr_without_azure_credentials_says_how_to_log_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    identity = pytest.importorskip("azure.identity")
    for name in list(os.environ):
        if name.startswith("AZURE_"):
            monkeypatch.delenv(name)
    with pytest.raises(PermanentProviderError) as caught:
        AcrCredentialsProvider(identity.EnvironmentCredential())(ACR_HOST)
    message = str(caught.value)
    assert "az login" in message and ACR_HOST in message and "EnvironmentCredential" in message

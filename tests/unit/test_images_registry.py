"""The OCI registry client against a real registry (Debian's docker-registry on loopback):
anonymous, htpasswd Basic auth and bearer tokens from our own token server; plus the parts a
real registry cannot show (retries, bad answers) through httpx's MockTransport."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from skylane.errors import (
    InvalidInput,
    PermanentProviderError,
    ProviderNotFound,
    ThrottledError,
    TransientProviderError,
)
from skylane.images.registry import (
    OCI_INDEX,
    Challenge,
    Credentials,
    DockerConfig,
    Platform,
    Registries,
    RegistryClient,
    chain_providers,
    sha256_digest,
)
from skylane.retries import RetryPolicy
from skylane.testing.oci_registry import (
    TokenServer,
    htpasswd_unavailable_reason,
    oci_registry,
    push_test_image,
    push_test_index,
    registry_unavailable_reason,
)

needs_registry = pytest.mark.skipif(
    registry_unavailable_reason() is not None, reason=registry_unavailable_reason() or ""
)
FAST = RetryPolicy(attempts=3, base=0.001, cap=0.01, deadline=5.0)
PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    if registry_unavailable_reason():
        pytest.skip(registry_unavailable_reason() or "")
    with oci_registry() as running:
        yield running.host


@pytest.fixture
def client(registry: str) -> Iterator[RegistryClient]:
    with RegistryClient(registry, docker_config=False) as c:
        yield c


# --- anonymous: round trips --------------------------------------------------------------


@needs_registry
def test_blob_push_and_pull_round_trip(client: RegistryClient) -> None:
    client.ping()
    data = os.urandom(50_000)
    digest = sha256_digest(data)
    assert not client.blob_exists("rt/blobs", digest)
    assert client.upload_blob("rt/blobs", data) == "uploaded"
    assert client.blob_exists("rt/blobs", digest)
    assert client.upload_blob("rt/blobs", data) == "exists"  # HEAD found it: nothing sent
    assert client.stats.blobs_uploaded == 1 and client.stats.bytes_uploaded == len(data)
    assert client.get_blob("rt/blobs", digest) == data


@needs_registry
def test_file_upload_and_streamed_download(client: RegistryClient, tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    digest = sha256_digest(source.read_bytes())
    assert client.upload_blob("rt/files", source) == "uploaded"
    target = tmp_path / "back"
    assert client.download_blob("rt/files", digest, target) == source.stat().st_size
    assert target.read_bytes() == source.read_bytes()


@needs_registry
def test_cross_repository_mount(client: RegistryClient) -> None:
    data = b"shared layer " + os.urandom(32)
    client.upload_blob("mount/source", data)
    assert client.upload_blob("mount/target", data, mount_from="mount/source") == "mounted"
    assert client.blob_exists("mount/target", sha256_digest(data))
    assert client.stats.blobs_mounted == 1 and client.stats.blobs_uploaded == 1
    # A repository that lacks the blob cannot lend it: the blob is uploaded instead.
    other = b"not anywhere " + os.urandom(32)
    assert client.upload_blob("mount/third", other, mount_from="mount/nothing") == "uploaded"


@needs_registry
def test_manifest_round_trip_and_errors(client: RegistryClient) -> None:
    digest = push_test_image(client, "rt/image", "v1", docker_media_types=False)
    manifest = client.get_manifest("rt/image", "v1")
    assert manifest.digest == digest
    assert manifest.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert client.get_manifest("rt/image", digest).data == manifest.data
    assert client.manifest_digest("rt/image", "v1") == digest
    assert client.manifest_digest("rt/image", "v2") is None
    config = json.loads(client.get_blob("rt/image", manifest.config.digest))
    assert "PYTHON_VERSION=3.12.4" in config["config"]["Env"]
    with pytest.raises(ProviderNotFound) as caught:
        client.get_manifest("rt/image", "v2")
    message = str(caught.value)
    assert client.registry in message and "rt/image" in message and "MANIFEST_UNKNOWN" in message
    with pytest.raises(InvalidInput):
        client.put_manifest("rt/image", "sha256:" + "0" * 64, manifest.data)


@needs_registry
def test_manifest_list_resolved_to_a_platform(client: RegistryClient) -> None:
    amd = push_test_image(client, "multi/base", None, files={"amd": "x"})
    arm = push_test_image(client, "multi/base", None, files={"arm": "x"}, platform="linux/arm64")
    for docker in (False, True):
        tag = "docker" if docker else "oci"
        index = push_test_index(
            client,
            "multi/base",
            tag,
            {"linux/amd64": amd, "linux/arm64/v8": arm},
            docker_media_types=docker,
        )
        resolved = client.resolve_manifest("multi/base", tag, "linux/amd64")
        assert resolved.digest == amd and not resolved.is_index
        assert resolved.index is not None and resolved.index.digest == index
        assert client.resolve_manifest("multi/base", tag, "linux/arm64").digest == arm
        assert client.resolve_manifest("multi/base", tag, "linux/aarch64/v8").digest == arm
        with pytest.raises(PermanentProviderError) as caught:
            client.resolve_manifest("multi/base", tag, "linux/s390x")
        assert "linux/s390x" in str(caught.value)
        assert "(it has: linux/amd64, linux/arm64)" in str(caught.value)
    assert client.get_manifest("multi/base", "oci").media_type == OCI_INDEX
    # A single image is taken as it is.
    assert client.resolve_manifest("multi/base", amd, "linux/amd64").digest == amd


# --- Basic auth (htpasswd) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry() -> Iterator[str]:
    if registry_unavailable_reason():
        pytest.skip(registry_unavailable_reason() or "")
    if htpasswd_unavailable_reason():
        pytest.skip(htpasswd_unavailable_reason() or "")
    with oci_registry(users={"alice": PASSWORD}) as running:
        yield running.host


@needs_registry
def test_basic_auth_accepted(basic_registry: str) -> None:
    with RegistryClient(basic_registry, credentials=("alice", PASSWORD)) as client:
        client.ping()
        assert client.upload_blob("private/app", b"basic bytes") == "uploaded"
        assert client.get_blob("private/app", sha256_digest(b"basic bytes")) == b"basic bytes"


@needs_registry
def test_basic_auth_wrong_password_refused_without_echoing_it(basic_registry: str) -> None:
    wrong = "wrong-password-123"
    with (
        RegistryClient(basic_registry, credentials=("alice", wrong)) as client,
        pytest.raises(PermanentProviderError) as caught,
    ):
        client.upload_blob("private/app", b"x")
    message = str(caught.value)
    assert wrong not in message and PASSWORD not in message
    assert basic_registry in message and "private/app" in message and "401" in message
    assert "'alice'" in message and "refused" in message
    assert caught.value.details["status"] == 401


@needs_registry
def test_basic_auth_without_credentials_says_where_it_looked(
    basic_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with RegistryClient(basic_registry) as client, pytest.raises(PermanentProviderError) as caught:
        client.get_manifest("private/app", "latest")
    message = str(caught.value)
    assert "no credentials were found" in message
    assert str(tmp_path / "config.json") in message and f"docker login {basic_registry}" in message


@needs_registry
def test_docker_config_credentials(
    basic_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {basic_registry: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with RegistryClient(basic_registry) as client:
        client.ping()
        assert client.credentials is not None
        assert str(tmp_path / "config.json") in client.credentials.source
    # Wrong credentials there: the message names the file to fix.
    bad = base64.b64encode(b"alice:nope-nope").decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {f"http://{basic_registry}/v1/": {"auth": bad}}})
    )
    with RegistryClient(basic_registry) as client, pytest.raises(PermanentProviderError) as caught:
        client.ping()
    assert str(tmp_path / "config.json") in str(caught.value)
    assert "nope-nope" not in str(caught.value)


@needs_registry
def test_credentials_provider(basic_registry: str) -> None:
    asked: list[str] = []

    def provider(host: str) -> tuple[str, str] | None:
        asked.append(host)
        return ("alice", PASSWORD) if host == basic_registry else None

    registries = Registries(credentials_provider=provider, docker_config=False)
    with registries:
        registries.client(basic_registry).ping()
        registries.client(basic_registry).ping()
    assert asked == [basic_registry]  # resolved once per client


# --- bearer tokens -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_registry() -> Iterator[tuple[str, TokenServer]]:
    if registry_unavailable_reason():
        pytest.skip(registry_unavailable_reason() or "")
    pytest.importorskip("cryptography", reason="the test token server signs with cryptography")
    tokens = TokenServer(
        users={"alice": PASSWORD, "bob": "bob-password"},
        read_only=("bob",),
        public=("public/base",),
        refresh_tokens={"refresh-token-of-alice": "alice"},
    )
    with tokens, oci_registry(token=tokens) as running:
        yield running.host, tokens


@needs_registry
def test_bearer_flow_with_token_cached_per_scope(token_registry: tuple[str, TokenServer]) -> None:
    host, tokens = token_registry
    tokens.requests.clear()
    with RegistryClient(host, credentials=("alice", PASSWORD)) as client:
        assert client.upload_blob("bearer/app", b"one") == "uploaded"
        assert client.upload_blob("bearer/app", b"two") == "uploaded"
        assert client.get_blob("bearer/app", sha256_digest(b"two")) == b"two"
        assert client.get_blob("bearer/app", sha256_digest(b"one")) == b"one"
        # Another repository is another scope: another token.
        assert client.upload_blob("bearer/other", b"one", mount_from="bearer/app") == "mounted"
    granted = [(r.account, r.scopes) for r in tokens.requests]
    assert granted == [
        ("alice", ["repository:bearer/app:pull,push"]),
        ("alice", ["repository:bearer/app:pull"]),
        ("alice", ["repository:bearer/other:pull,push"]),
        ("alice", ["repository:bearer/other:pull,push", "repository:bearer/app:pull"]),
    ]


@needs_registry
def test_bearer_refresh_token(token_registry: tuple[str, TokenServer]) -> None:
    host, tokens = token_registry
    tokens.requests.clear()
    credentials = Credentials(identity_token="refresh-token-of-alice", source="test")
    with RegistryClient(host, credentials=credentials) as client:
        assert client.upload_blob("bearer/refresh", b"refreshed") in ("uploaded", "exists")
    assert {r.grant for r in tokens.requests} == {"refresh_token"}


@needs_registry
def test_bearer_wrong_password_and_missing_permission(
    token_registry: tuple[str, TokenServer],
) -> None:
    host, _ = token_registry
    with (
        RegistryClient(host, credentials=("alice", "not-her-password")) as client,
        pytest.raises(PermanentProviderError) as caught,
    ):
        client.upload_blob("bearer/app", b"x")
    message = str(caught.value)
    assert "token server" in message and "not-her-password" not in message
    assert "'alice'" in message and "bearer/app" in message
    # bob may pull, not push: the message says it is a permission, not a password, problem.
    with (
        RegistryClient(host, credentials=("bob", "bob-password")) as client,
        pytest.raises(PermanentProviderError) as caught,
    ):
        client.upload_blob("bearer/app", b"bob's")
    message = str(caught.value)
    assert "not allowed" in message and "bearer/app" in message and "bob-password" not in message
    assert not any(token in message for token, _ in client._tokens.values())


@needs_registry
def test_bearer_anonymous_pull_of_a_public_repository(
    token_registry: tuple[str, TokenServer],
) -> None:
    host, _ = token_registry
    with RegistryClient(host, credentials=("alice", PASSWORD)) as client:
        digest = push_test_image(client, "public/base", "1")
    with RegistryClient(host, docker_config=False) as anonymous:
        assert anonymous.resolve_manifest("public/base", "1").digest == digest
        with pytest.raises(PermanentProviderError, match="no credentials were found"):
            anonymous.upload_blob("public/base", b"nope")


# --- credentials sources ------------------------------------------------------------------


def test_docker_config_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.json"
    hub = base64.b64encode(b"hubuser:hubpass").decode()
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": hub},
                    "registry.example.com": {"username": "u", "password": "p"},
                    "https://tokens.example.com": {"identitytoken": "refresh-123"},
                    "broken.example.com": {"auth": "!!!"},
                }
            }
        )
    )
    config = DockerConfig(path)
    found = config("docker.io")
    assert found is not None and (found.username, found.password) == ("hubuser", "hubpass")
    found = config("registry.example.com")
    assert found is not None and (found.username, found.password) == ("u", "p")
    found = config("tokens.example.com")
    assert found is not None and found.identity_token == "refresh-123"
    assert config("unknown.example.com") is None
    with pytest.raises(InvalidInput) as caught:
        config("broken.example.com")
    assert caught.value.field == f"{path}: auths.broken.example.com.auth"
    assert "hubpass" not in repr(found) and "refresh-123" not in repr(found)
    # DOCKER_CONFIG is where the default one lives; a missing file means no credentials.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert DockerConfig().path == path
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    assert DockerConfig()("docker.io") is None


def test_docker_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text(
        "#!/bin/sh\nread server\n"
        'if [ "$server" = "helped.example.com" ]; then\n'
        '  echo \'{"ServerURL":"helped.example.com","Username":"AWS","Secret":"ecr-pass"}\'\n'
        "else echo 'credentials not found in native keychain'; exit 1; fi\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"credHelpers": {"helped.example.com": "fake"}}))
    found = DockerConfig(path)("helped.example.com")
    assert found is not None and (found.username, found.password) == ("AWS", "ecr-pass")
    assert "docker-credential-fake" in found.source
    path.write_text(json.dumps({"credsStore": "fake"}))
    assert DockerConfig(path)("other.example.com") is None


def test_providers_chain_and_explicit_credentials_win() -> None:
    first = chain_providers(None, lambda host: None, lambda host: ("u", "p"))
    assert first("x") == ("u", "p")
    client = RegistryClient(
        "r.example.com",
        credentials=Credentials(registry_token="tok-123"),
        credentials_provider=lambda host: ("never", "asked"),
        docker_config=False,
    )
    assert client.credentials is not None and client.credentials.registry_token == "tok-123"
    with pytest.raises(InvalidInput):
        _ = RegistryClient("r.example.com", credentials_provider=lambda h: "bad").credentials  # type: ignore[arg-type, return-value]


# --- transport rules, retries and bad answers (MockTransport) --------------------------------


def test_plain_http_only_for_loopback_or_insecure() -> None:
    assert RegistryClient("registry.example.com").base_url == "https://registry.example.com"
    assert RegistryClient("docker.io").base_url == "https://registry-1.docker.io"
    assert RegistryClient("localhost:5000").base_url == "http://localhost:5000"
    assert RegistryClient("127.0.0.1:5000").base_url == "http://127.0.0.1:5000"
    assert RegistryClient("[::1]:5000").base_url == "http://[::1]:5000"
    assert RegistryClient("10.0.0.5:5000").base_url == "https://10.0.0.5:5000"
    assert RegistryClient("10.0.0.5:5000", insecure=True).base_url == "http://10.0.0.5:5000"
    assert RegistryClient("localhost:5000", insecure=False).base_url == "https://localhost:5000"
    registries = Registries(insecure=["lab.internal:5000"])
    assert registries.client("lab.internal:5000").base_url == "http://lab.internal:5000"
    assert registries.client("lab.internal:5000") is registries.client("lab.internal:5000")


def mock_client(handler, **kwargs) -> RegistryClient:  # type: ignore[no-untyped-def]
    return RegistryClient(
        "registry.example.com",
        transport=httpx.MockTransport(handler),
        retry_policy=FAST,
        docker_config=False,
        **kwargs,
    )


def test_transient_failures_are_retried_and_bounded() -> None:
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] < 3:
            return httpx.Response(503, json={"errors": [{"code": "UNAVAILABLE"}]})
        return httpx.Response(200)

    assert mock_client(flaky).blob_exists("a/b", "sha256:" + "1" * 64)
    assert calls["n"] == 3

    def down(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        raise httpx.ConnectError("refused", request=request)

    calls["n"] = 0
    with pytest.raises(TransientProviderError) as caught:
        mock_client(down).ping()
    assert calls["n"] == FAST.attempts
    assert "registry.example.com" in str(caught.value)

    def throttled(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "0"})

    with pytest.raises(ThrottledError):
        mock_client(throttled).ping()

    calls["n"] = 0

    def forbidden(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(400, json={"errors": [{"code": "NAME_INVALID"}]})

    with pytest.raises(PermanentProviderError, match="NAME_INVALID"):
        mock_client(forbidden).ping()
    assert calls["n"] == 1  # permanent errors are not retried


def test_blob_and_manifest_digests_are_verified() -> None:
    digest = "sha256:" + "2" * 64

    def lying(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path:
            return httpx.Response(
                200,
                content=b'{"schemaVersion":2,"layers":[]}',
                headers={
                    "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                    "Docker-Content-Digest": digest,
                },
            )
        return httpx.Response(200, content=b"not what was asked for")

    client = mock_client(lying)
    with pytest.raises(PermanentProviderError, match="whose content has digest"):
        client.get_blob("a/b", digest)
    with pytest.raises(PermanentProviderError, match="not " + digest):
        client.get_manifest("a/b", "latest")


def test_put_manifest_checks_the_reported_digest() -> None:
    def other(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, headers={"Docker-Content-Digest": "sha256:" + "3" * 64})

    with pytest.raises(PermanentProviderError, match="stored the manifest"):
        mock_client(other).put_manifest("a/b", "v1", b"{}")


def test_bearer_token_from_challenge_and_never_over_plain_http() -> None:
    seen: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        if request.url.host == "auth.example.com":
            assert request.headers["Authorization"].startswith("Basic ")
            return httpx.Response(200, json={"access_token": "T-123456", "expires_in": 300})
        if request.headers.get("Authorization") != "Bearer T-123456":
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://auth.example.com/token",'
                    'service="registry.example.com",scope="repository:a/b:pull"'
                },
            )
        return httpx.Response(200)

    client = mock_client(server, credentials=("u", "secret-pass"))
    assert client.blob_exists("a/b", "sha256:" + "4" * 64)
    assert client.blob_exists("a/b", "sha256:" + "5" * 64)
    token_calls = [s for s in seen if "auth.example.com" in s]
    assert len(token_calls) == 1
    assert "scope=repository%3Aa%2Fb%3Apull" in token_calls[0] and "account=u" in token_calls[0]

    def plain(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.example.com/token"'}
        )

    with pytest.raises(PermanentProviderError, match="not https"):
        mock_client(plain, credentials=("u", "secret-pass")).ping()


def test_challenge_parsing() -> None:
    challenge = Challenge.parse(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push",error="insufficient_scope"'
    )
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.params["scope"] == "repository:samalba/my-app:pull,push"
    assert challenge.params["error"] == "insufficient_scope"
    basic = Challenge.parse('Basic realm="Registry Realm"')
    assert (
        basic is not None and basic.scheme == "basic" and basic.params["realm"] == "Registry Realm"
    )
    assert Challenge.parse(None) is None


def test_platforms() -> None:
    assert str(Platform.parse("linux/amd64")) == "linux/amd64"
    assert Platform.parse("linux/x86_64") == Platform("linux", "amd64")
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64")
    assert Platform.parse("linux/arm/v7").matches(
        {"os": "linux", "architecture": "arm", "variant": "v7"}
    )
    assert not Platform.parse("linux/arm/v7").matches({"os": "linux", "architecture": "arm"})
    for bad in ("linux", "linux/amd64/v1/x", "linux/AMD 64"):
        with pytest.raises(InvalidInput) as caught:
            Platform.parse(bad)
        assert caught.value.field == "platform"

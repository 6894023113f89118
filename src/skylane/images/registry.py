"""A client of the OCI Distribution API (the registry HTTP API v2), on httpx.

What it does: ping `/v2/`; get a manifest (OCI and Docker v2 media types) and resolve an
index or manifest list to the image for one platform; get a blob (its digest verified), ask
whether a blob exists (HEAD), upload a blob (POST, then one monolithic PUT with `digest=`; a
cross-repository mount first when another repository of the same registry has it), and put a
manifest (the digest the registry reports is checked against ours).

Auth, as Docker does it: the first request goes out anonymously; a 401 names the scheme in
`WWW-Authenticate`. `Basic` sends the username and password; `Bearer` asks the token server
(`realm`, `service`, one `scope` per repository and actions) for a token, with the username and
password as Basic auth, or an OAuth2 refresh token (`identity_token`) posted to it, and caches it
per set of scopes until it expires. Credentials come, first found first used, from the explicit
`credentials`, the `credentials_provider` (a callable `registry host -> Credentials |
(username, password) | None`: the hook for ECR's GetAuthorizationToken, Artifact Registry's
`oauth2accesstoken` or an ACR refresh token), then the Docker config file (`$DOCKER_CONFIG/
config.json`, else `~/.docker/config.json`: `auths` with a base64 `auth` or username/password or
`identitytoken`, and `credHelpers`/`credsStore` helpers). A token given as `registry_token` is
sent as the bearer token without asking a token server.

Errors are skylane errors naming the registry, the repository and what failed; a 401 or 403
says which credentials to fix. No password or token is ever part of a message. Transient
failures (connection errors, 5xx, 429) are retried under a bounded `RetryPolicy`.

Plain http is used only for loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`) and the
ones declared `insecure`; https otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from skylane.errors import (
    InvalidInput,
    PermanentProviderError,
    ProviderError,
    ProviderNotFound,
    ThrottledError,
    TransientProviderError,
)
from skylane.images.reference import DEFAULT_REGISTRY, validate_digest
from skylane.retries import RetryPolicy
from skylane.security import MASK

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

IMAGE_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = (*IMAGE_MANIFEST_TYPES, *INDEX_TYPES)

# Where Docker Hub's API is (its references say docker.io) and the key `docker login` uses.
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = {DEFAULT_REGISTRY, "index.docker.io", DOCKER_HUB_API}

# Registry calls: a few quick tries; a whole call (an upload included) within two minutes.
REGISTRY_CALLS = RetryPolicy(attempts=4, base=0.5, cap=5.0, deadline=120.0, longest_sleep=10.0)
# Seconds a token is trusted less than its lifetime (clock skew, time in flight).
TOKEN_MARGIN = 10.0
DEFAULT_TOKEN_LIFETIME = 60.0
CHUNK = 1024 * 1024
USER_AGENT = "skylane-images/1"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> tuple[str, int]:
    """`(sha256:..., size)` of the file at `path`."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def canonical_json(value: Any) -> bytes:
    """The bytes skylane writes for a manifest or a config: sorted keys, no spaces, UTF-8, so
    the same content always has the same digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (with or without a port)."""
    name = host_without_port(host).strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.split("%")[0]).is_loopback
    except ValueError:
        return False


def host_without_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _scrub(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


# --- platforms, descriptors and manifests ------------------------------------------------

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386"}


@dataclass(frozen=True)
class Platform:
    """An image platform, `os/architecture[/variant]` (`linux/amd64`, `linux/arm64/v8`)."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str | Platform, *, field: str = "platform") -> Platform:
        if isinstance(text, Platform):
            return text
        parts = text.strip().lower().split("/") if isinstance(text, str) else []
        if len(parts) not in (2, 3) or not all(re.fullmatch(r"[a-z0-9_.-]+", p) for p in parts):
            raise InvalidInput(
                f"platform {text!r} is not of the form os/architecture[/variant], e.g. linux/amd64",
                field=field,
            )
        architecture = _ARCH_ALIASES.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else None
        if architecture == "arm64" and variant == "v8":
            variant = None  # arm64 means v8 unless said otherwise
        return cls(parts[0], architecture, variant)

    def matches(self, spec: Mapping[str, Any] | None) -> bool:
        """Whether an index entry's `platform` (or an image config) is this platform; without a
        variant, any variant of the architecture matches (arm64/v8 is arm64)."""
        if not spec:
            return False
        os_name = str(spec.get("os", "")).lower()
        architecture = str(spec.get("architecture", "")).lower()
        architecture = _ARCH_ALIASES.get(architecture, architecture)
        variant = spec.get("variant")
        if os_name != self.os or architecture != self.architecture:
            return False
        if self.variant is None:
            return True
        return variant == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest says about a blob or another manifest."""

    media_type: str
    digest: str
    size: int
    platform: Mapping[str, Any] | None = None
    annotations: Mapping[str, str] | None = None
    urls: Sequence[str] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Descriptor:
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=str(data["digest"]),
            size=int(data["size"]),
            platform=data.get("platform"),
            annotations=data.get("annotations"),
            urls=data.get("urls"),
        )

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform:
            body["platform"] = dict(self.platform)
        if self.annotations:
            body["annotations"] = dict(self.annotations)
        if self.urls:
            body["urls"] = list(self.urls)
        return body


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry stored it: its exact bytes, media type and digest. `index`
    is the index or manifest list it was chosen from (by `resolve_manifest`), if any."""

    media_type: str
    digest: str
    data: bytes = field(repr=False)
    index: Manifest | None = field(default=None, repr=False)

    @cached_property
    def json(self) -> dict[str, Any]:
        return json.loads(self.data)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def config(self) -> Descriptor:
        return Descriptor.from_dict(self.json["config"])

    @property
    def layers(self) -> list[Descriptor]:
        return [Descriptor.from_dict(layer) for layer in self.json.get("layers", [])]

    @property
    def manifests(self) -> list[Descriptor]:
        return [Descriptor.from_dict(m) for m in self.json.get("manifests", [])]


# --- credentials --------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What to authenticate to one registry with. `source` says where they came from, for
    error messages ("Docker config ~/.docker/config.json", "credentials provider").

    - `username` + `password`: Basic auth, or Basic auth to the token server;
    - `identity_token`: an OAuth2 refresh token posted to the token server (Docker's
      `identitytoken`, an ACR refresh token);
    - `registry_token`: a bearer token sent to the registry as it is.
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)
    registry_token: str | None = field(default=None, repr=False)
    source: str = "the credentials given to the registry client"

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.identity_token, self.registry_token) if s]

    @property
    def has_password(self) -> bool:
        return bool(self.username) and self.password is not None


CredentialsLike = Credentials | tuple[str, str]
CredentialsProvider = Callable[[str], CredentialsLike | None]


def as_credentials(value: CredentialsLike | None, source: str) -> Credentials | None:
    if value is None:
        return None
    if isinstance(value, Credentials):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return Credentials(username=value[0], password=value[1], source=source)
    raise InvalidInput(
        f"{source} returned a {type(value).__name__}; expected Credentials or (username, password)",
        field="credentials",
    )


def docker_config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The Docker config file: `path`, else `$DOCKER_CONFIG/config.json`, else
    `~/.docker/config.json`."""
    if path is not None:
        return Path(path)
    directory = os.environ.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return Path.home() / ".docker" / "config.json"


def _config_key_host(key: str) -> str:
    """The registry host a Docker config key stands for (`https://index.docker.io/v1/` ->
    `docker.io`)."""
    host = key
    if "://" in host:
        host = urlsplit(host).netloc
    host = host.split("/", 1)[0].lower()
    return DEFAULT_REGISTRY if host in _DOCKER_HUB_ALIASES else host


class DockerConfig:
    """Credentials from a Docker config file, as a credentials provider: `DockerConfig()(host)`.
    Reads `auths` (base64 `auth` of `user:password`, or `username`/`password`, or
    `identitytoken`, or `registrytoken`), then `credHelpers` and `credsStore`
    (`docker-credential-NAME get`). A missing file means no credentials."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = docker_config_path(path)
        self.source = f"Docker config {self.path}"

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise InvalidInput(
                f"cannot read the Docker config {self.path}: {exc.strerror}", field=str(self.path)
            ) from None
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"the Docker config {self.path} is not valid JSON (line {exc.lineno})",
                field=str(self.path),
            ) from None
        if not isinstance(data, dict):
            raise InvalidInput(
                f"the Docker config {self.path} is not a JSON object", field=str(self.path)
            )
        return data

    def __call__(self, registry: str) -> Credentials | None:
        data = self._load()
        host = _config_key_host(registry)
        auths = data.get("auths") or {}
        for key, entry in auths.items() if isinstance(auths, dict) else ():
            if _config_key_host(key) == host and isinstance(entry, dict):
                found = self._entry(key, entry)
                if found is not None:
                    return found
        helpers = data.get("credHelpers") or {}
        helper = None
        if isinstance(helpers, dict):
            helper = next(
                (name for key, name in helpers.items() if _config_key_host(key) == host), None
            )
        helper = helper or data.get("credsStore")
        if helper:
            return self._helper(str(helper), registry)
        return None

    def _entry(self, key: str, entry: Mapping[str, Any]) -> Credentials | None:
        where = f"{self.source} (auths.{key})"
        field_name = f"{self.path}: auths.{key}"
        if entry.get("registrytoken"):
            return Credentials(registry_token=str(entry["registrytoken"]), source=where)
        if entry.get("identitytoken"):
            username = entry.get("username")
            return Credentials(
                username=str(username) if username else None,
                identity_token=str(entry["identitytoken"]),
                source=where,
            )
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raise InvalidInput(
                    f"{where}: `auth` is not base64 of username:password",
                    field=f"{field_name}.auth",
                ) from None
            username, sep, password = decoded.partition(":")
            if not sep or not username:
                raise InvalidInput(
                    f"{where}: `auth` does not hold username:password", field=f"{field_name}.auth"
                )
            return Credentials(username=username, password=password, source=where)
        if entry.get("username") and entry.get("password") is not None:
            return Credentials(
                username=str(entry["username"]), password=str(entry["password"]), source=where
            )
        return None

    def _helper(self, name: str, registry: str) -> Credentials | None:
        program = shutil.which(f"docker-credential-{name}")
        where = f"credential helper docker-credential-{name} (from {self.source})"
        if program is None:
            log.info("%s is not on PATH; no credentials for %s from it", where, registry)
            return None
        server = (
            DOCKER_HUB_CONFIG_KEY if _config_key_host(registry) == DEFAULT_REGISTRY else registry
        )
        try:
            done = subprocess.run(
                [program, "get"], input=server, capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PermanentProviderError(f"{where} failed to run: {exc}") from None
        if done.returncode != 0:
            # "credentials not found in native keychain" is not an error: anonymous access.
            if "not found" in (done.stdout + done.stderr).lower():
                return None
            raise PermanentProviderError(
                f"{where} failed for {registry} (exit {done.returncode})",
                details={"registry": registry},
            )
        try:
            answer = json.loads(done.stdout)
            username, secret = str(answer["Username"]), str(answer["Secret"])
        except (ValueError, KeyError, TypeError):
            raise PermanentProviderError(f"{where} answered something unreadable") from None
        if username == "<token>":
            return Credentials(identity_token=secret, source=where)
        return Credentials(username=username, password=secret, source=where)


def chain_providers(*providers: CredentialsProvider | None) -> CredentialsProvider:
    """A provider asking each of `providers` in turn; the first answer wins."""

    def provider(registry: str) -> CredentialsLike | None:
        for each in providers:
            if each is not None:
                found = each(registry)
                if found is not None:
                    return found
        return None

    return provider


# --- auth challenges and tokens ---------------------------------------------------------

_CHALLENGE_PARAM = re.compile(r'([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


@dataclass(frozen=True)
class Challenge:
    """A parsed `WWW-Authenticate` header: `scheme` ("basic" or "bearer") and its parameters
    (`realm`, `service`, `scope`...)."""

    scheme: str
    params: Mapping[str, str]

    @classmethod
    def parse(cls, header: str | None) -> Challenge | None:
        if not header:
            return None
        scheme, _, rest = header.strip().partition(" ")
        params = {}
        for match in _CHALLENGE_PARAM.finditer(rest):
            value = match.group(2) if match.group(2) is not None else match.group(3)
            params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value or "")
        return cls(scheme.lower(), params)


def scope_for(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


@dataclass
class RegistryStats:
    """What a client did, for callers and tests ("an unchanged push uploads nothing")."""

    requests: int = 0
    token_requests: int = 0
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_downloaded: int = 0
    manifests_put: int = 0


# --- the client ---------------------------------------------------------------------------

BlobSource = bytes | Path


class RegistryClient:
    """One registry (`host[:port]`, `docker.io` for Docker Hub). Thread-safe for its token
    cache; use as a context manager or `close()` it."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: CredentialsLike | None = None,
        credentials_provider: CredentialsProvider | None = None,
        docker_config: str | os.PathLike[str] | bool | None = None,
        insecure: bool | None = None,
        timeout: float = 60.0,
        retry_policy: RetryPolicy = REGISTRY_CALLS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not registry or "/" in registry:
            raise InvalidInput(f"registry {registry!r} is not a host[:port]", field="registry")
        self.registry = DEFAULT_REGISTRY if registry in _DOCKER_HUB_ALIASES else registry
        api_host = DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry
        self.insecure = is_loopback(self.registry) if insecure is None else insecure
        self.base_url = f"{'http' if self.insecure else 'https'}://{api_host}"
        self.retry_policy = retry_policy
        self.stats = RegistryStats()
        self._explicit = as_credentials(credentials, "the credentials given to the registry client")
        self._provider = credentials_provider
        self._docker_config: DockerConfig | None = None
        if docker_config is None or docker_config is True:
            self._docker_config = DockerConfig()
        elif docker_config is not False:
            self._docker_config = DockerConfig(docker_config)
        self._credentials: Credentials | None = None
        self._credentials_resolved = False
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=True,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )

    # lifecycle

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # credentials

    @property
    def credentials(self) -> Credentials | None:
        """The credentials for this registry (resolved once, on first need)."""
        with self._lock:
            if not self._credentials_resolved:
                self._credentials = self._find_credentials()
                self._credentials_resolved = True
            return self._credentials

    def _find_credentials(self) -> Credentials | None:
        if self._explicit is not None:
            return self._explicit
        if self._provider is not None:
            found = as_credentials(self._provider(self.registry), "the credentials provider")
            if found is not None:
                return found
        if self._docker_config is not None:
            return self._docker_config(self.registry)
        return None

    def _where_credentials_come_from(self) -> str:
        places = []
        if self._provider is not None:
            places.append("the credentials provider")
        if self._docker_config is not None:
            places.append(self._docker_config.source)
        return ", ".join(places) or "nowhere (no credentials provider, Docker config disabled)"

    def _secrets(self) -> list[str]:
        found = [token for token, _ in self._tokens.values()]
        credentials = self._credentials
        if credentials is not None:
            found += credentials.secrets
        return found

    # low level

    def _url(self, path: str) -> str:
        return urljoin(self.base_url + "/", path.lstrip("/")) if "://" not in path else path

    def _auth_header(self, scopes: tuple[str, ...], *, fresh: bool = False) -> dict[str, str]:
        challenge = self._challenge
        if challenge is None:
            return {}
        credentials = self.credentials
        if challenge.scheme == "basic":
            if credentials is None or not credentials.has_password:
                return {}
            raw = f"{credentials.username}:{credentials.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        if challenge.scheme == "bearer":
            if credentials is not None and credentials.registry_token:
                return {"Authorization": f"Bearer {credentials.registry_token}"}
            return {"Authorization": f"Bearer {self._token(scopes, fresh=fresh)}"}
        return {}

    def _token(self, scopes: tuple[str, ...], *, fresh: bool = False) -> str:
        with self._lock:
            cached = self._tokens.get(scopes)
            if cached and not fresh and cached[1] > time.monotonic():
                return cached[0]
        token, lifetime = self._fetch_token(scopes)
        with self._lock:
            self._tokens[scopes] = (token, time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN))
        return token

    def _fetch_token(self, scopes: tuple[str, ...]) -> tuple[str, float]:
        assert self._challenge is not None
        params = self._challenge.params
        realm = params.get("realm")
        repository = _repositories(scopes)
        if not realm:
            raise PermanentProviderError(
                f"registry {self.registry} asked for a bearer token but named no token server "
                "(no realm in WWW-Authenticate)",
                details={"registry": self.registry, "repository": repository},
            )
        realm_url = urlsplit(realm)
        if realm_url.scheme != "https" and not (
            realm_url.scheme == "http" and (self.insecure or is_loopback(realm_url.netloc))
        ):
            raise PermanentProviderError(
                f"registry {self.registry} names a token server that is not https ({realm}); "
                "refusing to send credentials to it (declare the registry insecure to allow it)",
                details={"registry": self.registry, "repository": repository},
            )
        credentials = self.credentials
        service = params.get("service")
        self.stats.token_requests += 1

        def attempt() -> httpx.Response:
            try:
                if credentials is not None and credentials.identity_token:
                    form = {
                        "grant_type": "refresh_token",
                        "refresh_token": credentials.identity_token,
                        "client_id": "skylane",
                        "scope": " ".join(scopes),
                    }
                    if service:
                        form["service"] = service
                    response = self._http.post(realm, data=form)
                else:
                    query: list[tuple[str, str]] = []
                    if service:
                        query.append(("service", service))
                    query += [("scope", s) for s in scopes]
                    auth = None
                    if credentials is not None and credentials.has_password:
                        query.append(("account", str(credentials.username)))
                        auth = (str(credentials.username), str(credentials.password))
                    response = self._http.get(realm, params=query, auth=auth)
            except httpx.TransportError as exc:
                raise TransientProviderError(
                    f"token server {realm_url.netloc} of registry {self.registry} did not "
                    f"answer: {type(exc).__name__}",
                    details={"registry": self.registry},
                ) from None
            if response.status_code >= 500 or response.status_code == 429:
                raise self._status_error(response, "get a token", repository, transient=True)
            return response

        # Not retried here: the API call that needs the token is, token request included.
        response = attempt()
        if response.status_code in (401, 403):
            raise self._auth_error(response, "get a token", repository, token_server=True)
        if response.status_code != 200:
            raise self._status_error(response, "get a token", repository)
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            token, lifetime = None, 0.0
        if not token or not isinstance(token, str):
            raise PermanentProviderError(
                f"token server {realm_url.netloc} of registry {self.registry} answered "
                "without a token",
                details={"registry": self.registry, "repository": repository},
            )
        return token, lifetime

    def _send(
        self,
        method: str,
        path: str,
        *,
        repository: str,
        actions: str | Sequence[str] = "pull",
        what: str,
        scopes: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: Callable[[], bytes | Iterator[bytes]] | None = None,
        ok: Iterable[int] = (200,),
        allow: Iterable[int] = (),
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """One API call with auth, retried (unless `retry` is False) on transient failures.
        Statuses in `ok` and `allow` are returned; anything else raises. With `stream`, the
        body is left unread (the caller closes the response)."""
        if scopes is None:
            action_text = actions if isinstance(actions, str) else ",".join(actions)
            scopes = [scope_for(repository, action_text)]
        scope_key = tuple(scopes)
        accepted = set(ok) | set(allow)

        def attempt() -> httpx.Response:
            fresh = False
            for round_trip in range(2):
                request = self._http.build_request(
                    method,
                    self._url(path),
                    params=params,
                    headers={**(headers or {}), **self._auth_header(scope_key, fresh=fresh)},
                    content=content() if content is not None else None,
                )
                self.stats.requests += 1
                try:
                    response = self._http.send(request, stream=True)
                except httpx.TransportError as exc:
                    raise TransientProviderError(
                        f"registry {self.registry} did not answer ({what}{_in(repository)}): "
                        f"{type(exc).__name__}",
                        details={"registry": self.registry, "repository": repository},
                    ) from None
                if response.status_code == 401 and round_trip == 0:
                    challenge = Challenge.parse(response.headers.get("WWW-Authenticate"))
                    response.read()
                    response.close()
                    if challenge is None or challenge.scheme not in ("basic", "bearer"):
                        raise self._auth_error(response, what, repository)
                    self._challenge = challenge
                    fresh = True
                    if challenge.scheme == "basic" and not (
                        self.credentials and self.credentials.has_password
                    ):
                        raise self._auth_error(response, what, repository)
                    continue
                if response.status_code in accepted:
                    if not stream:
                        response.read()
                        response.close()
                    return response
                response.read()
                response.close()
                if response.status_code in (401, 403):
                    raise self._auth_error(response, what, repository)
                if response.status_code >= 500 or response.status_code == 429:
                    raise self._status_error(response, what, repository, transient=True)
                raise self._status_error(response, what, repository)
            raise AssertionError("unreachable")

        if not retry:
            return attempt()
        return self.retry_policy.call(attempt, what=f"{self.registry}: {what}")

    def _registry_message(self, response: httpx.Response) -> str:
        try:
            response.read()
            body = response.json()
            errors = body.get("errors") or []
            parts = [
                f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                for e in errors
                if isinstance(e, dict)
            ]
            text = "; ".join(p for p in parts if p)
        except (ValueError, AttributeError, httpx.HTTPError):
            text = ""
        if not text:
            try:
                text = response.text.strip()[:200]
            except (httpx.HTTPError, UnicodeDecodeError):
                text = ""
        return _scrub(text, self._secrets())[:500]

    def _status_error(
        self, response: httpx.Response, what: str, repository: str, *, transient: bool = False
    ) -> ProviderError:
        status = response.status_code
        said = self._registry_message(response)
        message = f"registry {self.registry} answered {status} to {what}{_in(repository)}" + (
            f": {said}" if said else ""
        )
        details = {"registry": self.registry, "repository": repository, "status": status}
        if status == 429:
            return ThrottledError(
                message, retry_after=_retry_after(response.headers), details=details
            )
        if transient:
            return TransientProviderError(message, details=details)
        if status == 404:
            return ProviderNotFound(message, details=details)
        return PermanentProviderError(message, details=details)

    def _auth_error(
        self,
        response: httpx.Response,
        what: str,
        repository: str,
        *,
        token_server: bool = False,
    ) -> PermanentProviderError:
        status = response.status_code
        credentials = self.credentials
        said = self._registry_message(response)
        who = f"the token server of registry {self.registry}" if token_server else None
        who = who or f"registry {self.registry}"
        if credentials is None:
            fix = (
                f"no credentials were found for {self.registry} (looked in "
                f"{self._where_credentials_come_from()}): log in (`docker login "
                f"{self.registry}`) or give credentials"
            )
        elif status == 403 or _insufficient_scope(response):
            fix = (
                f"the credentials from {credentials.source} are not allowed to {what} in "
                f"repository {repository}: grant them access or use other credentials"
            )
        else:
            fix = (
                f"the credentials from {credentials.source} were refused"
                + (f" (user {credentials.username!r})" if credentials.username else "")
                + ": fix them there"
            )
        message = (
            f"{who} answered {status} to {what}{_in(repository)}"
            + (f": {said}" if said else "")
            + f"; {fix}"
        )
        return PermanentProviderError(
            _scrub(message, self._secrets()),
            details={"registry": self.registry, "repository": repository, "status": status},
        )

    # API

    def ping(self) -> None:
        """GET /v2/: the registry speaks the API (and our credentials, if it asks, work)."""
        self._send("GET", "/v2/", repository="-", scopes=[], what="answer /v2/")

    def get_manifest(
        self,
        repository: str,
        reference: str,
        *,
        accept: Sequence[str] = MANIFEST_TYPES,
    ) -> Manifest:
        """The manifest `reference` (a tag or digest) of `repository`, its bytes checked
        against the digest asked for, or the one the registry reports."""
        response = self._send(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            repository=repository,
            what=f"get manifest {reference}",
            headers={"Accept": ", ".join(accept)},
        )
        return self._manifest_from(response, repository, reference)

    def _manifest_from(self, response: httpx.Response, repository: str, reference: str) -> Manifest:
        data = response.content
        digest = sha256_digest(data)
        claimed = response.headers.get("Docker-Content-Digest")
        expected = reference if ":" in reference else claimed
        if expected and expected.startswith("sha256:") and expected != digest:
            raise PermanentProviderError(
                f"registry {self.registry} sent manifest {reference} of repository "
                f"{repository} whose content has digest {digest}, not {expected}",
                details={"registry": self.registry, "repository": repository},
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            body = json.loads(data)
        except ValueError:
            raise PermanentProviderError(
                f"registry {self.registry} sent manifest {reference} of repository "
                f"{repository} that is not JSON",
                details={"registry": self.registry, "repository": repository},
            ) from None
        if isinstance(body, dict) and body.get("mediaType"):
            media_type = str(body["mediaType"])
        elif isinstance(body, dict) and media_type not in MANIFEST_TYPES:
            media_type = OCI_INDEX if "manifests" in body else OCI_MANIFEST
        if media_type not in MANIFEST_TYPES:
            raise PermanentProviderError(
                f"manifest {reference} of {self.registry}/{repository} has media type "
                f"{media_type!r}, which skylane cannot use (schema 1 images are not supported)",
                details={"registry": self.registry, "repository": repository},
            )
        return Manifest(media_type=media_type, digest=digest, data=data)

    def manifest_digest(
        self, repository: str, reference: str, *, for_push: bool = False
    ) -> str | None:
        """The digest of manifest `reference` (HEAD), or None when there is none."""
        response = self._send(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            repository=repository,
            actions="pull,push" if for_push else "pull",
            what=f"look up manifest {reference}",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
            allow=(404,),
        )
        if response.status_code == 404:
            return None
        return response.headers.get("Docker-Content-Digest")

    def resolve_manifest(
        self, repository: str, reference: str, platform: str | Platform = "linux/amd64"
    ) -> Manifest:
        """The image manifest of `reference` for `platform`: an index or manifest list is
        followed to its entry for the platform; a single image must be for that platform (its
        config is checked when it names one)."""
        wanted = Platform.parse(platform)
        manifest = self.get_manifest(repository, reference)
        if not manifest.is_index:
            return manifest
        entries = manifest.manifests
        matches = [m for m in entries if wanted.matches(m.platform)]
        if not matches:
            offered = sorted(
                {str(Platform.parse(_platform_text(m.platform))) for m in entries if m.platform}
                - {"unknown/unknown"}
            )
            raise PermanentProviderError(
                f"image {self.registry}/{repository}:{reference} has no manifest for platform "
                f"{wanted} (it has: {', '.join(offered) or 'none'})",
                details={"registry": self.registry, "repository": repository},
            )
        # Prefer an entry without a variant or the exact one (arm64 without /v8 first).
        matches.sort(key=lambda m: (m.platform or {}).get("variant") not in (None, wanted.variant))
        chosen = self.get_manifest(repository, matches[0].digest)
        if chosen.is_index:
            raise PermanentProviderError(
                f"image {self.registry}/{repository}:{reference} nests an index for {wanted}",
                details={"registry": self.registry, "repository": repository},
            )
        return Manifest(chosen.media_type, chosen.digest, chosen.data, index=manifest)

    def blob_exists(self, repository: str, digest: str, *, for_push: bool = False) -> bool:
        """Whether `repository` holds blob `digest` (HEAD). `for_push` asks for a token good
        for pushing too (one token for a whole push instead of two)."""
        validate_digest(digest)
        response = self._send(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            repository=repository,
            actions="pull,push" if for_push else "pull",
            what=f"look up blob {digest}",
            allow=(404,),
        )
        return response.status_code == 200

    def get_blob(self, repository: str, digest: str) -> bytes:
        """Blob `digest` of `repository`, read whole and checked against its digest."""
        validate_digest(digest)
        response = self._send(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            repository=repository,
            what=f"get blob {digest}",
        )
        data = response.content
        self._check_digest(digest, "sha256:" + hashlib.sha256(data).hexdigest(), repository)
        self.stats.blobs_downloaded += 1
        return data

    def download_blob(self, repository: str, digest: str, destination: Path) -> int:
        """Stream blob `digest` into the file `destination`, checked; returns its size."""
        validate_digest(digest)

        def attempt() -> int:
            response = self._send(
                "GET",
                f"/v2/{repository}/blobs/{digest}",
                repository=repository,
                what=f"get blob {digest}",
                stream=True,
                retry=False,
            )
            h = hashlib.sha256()
            size = 0
            try:
                with open(destination, "wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            except httpx.TransportError as exc:
                raise TransientProviderError(
                    f"registry {self.registry} broke off blob {digest} of repository "
                    f"{repository}: {type(exc).__name__}",
                    details={"registry": self.registry, "repository": repository},
                ) from None
            finally:
                response.close()
            self._check_digest(digest, "sha256:" + h.hexdigest(), repository)
            return size

        size = self.retry_policy.call(attempt, what=f"{self.registry}: get blob {digest}")
        self.stats.blobs_downloaded += 1
        return size

    def _check_digest(self, expected: str, actual: str, repository: str) -> None:
        if expected != actual:
            raise PermanentProviderError(
                f"registry {self.registry} sent blob {expected} of repository {repository} "
                f"whose content has digest {actual}",
                details={"registry": self.registry, "repository": repository},
            )

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link blob `digest` of `from_repository` into `repository`
        without sending it; False when it would not (the upload session it opened instead is
        abandoned)."""
        return self._mount(repository, digest, from_repository)[0]

    def _mount(self, repository: str, digest: str, from_repository: str) -> tuple[bool, str | None]:
        response = self._send(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            repository=repository,
            scopes=[scope_for(repository, "pull,push"), scope_for(from_repository, "pull")],
            what=f"mount blob {digest} from {from_repository}",
            params={"mount": digest, "from": from_repository},
            ok=(201, 202),
        )
        if response.status_code == 201:
            self.stats.blobs_mounted += 1
            return True, None
        return False, response.headers.get("Location")

    def upload_blob(
        self,
        repository: str,
        data: BlobSource,
        digest: str | None = None,
        *,
        mount_from: str | None = None,
        check_exists: bool = True,
    ) -> str:
        """Put a blob (bytes, or a file's path) into `repository`. Returns what happened:
        "exists" (HEAD found it; nothing sent), "mounted" (linked from `mount_from`, a
        repository of the same registry) or "uploaded" (POST, then one PUT with `digest=`)."""
        if digest is None:
            digest, size = (
                file_digest(data) if isinstance(data, Path) else (sha256_digest(data), len(data))
            )
        else:
            validate_digest(digest)
            size = data.stat().st_size if isinstance(data, Path) else len(data)
        if check_exists and self.blob_exists(repository, digest, for_push=True):
            return "exists"
        location: str | None = None
        if mount_from and mount_from != repository:
            mounted, location = self._mount(repository, digest, mount_from)
            if mounted:
                return "mounted"

        def body() -> bytes | Iterator[bytes]:
            if isinstance(data, bytes):
                return data
            return _read_chunks(data)

        state = {"location": location}

        def attempt() -> None:
            where = state.pop("location", None)
            if where is None:
                started = self._send(
                    "POST",
                    f"/v2/{repository}/blobs/uploads/",
                    repository=repository,
                    actions="pull,push",
                    what=f"start the upload of blob {digest}",
                    ok=(202,),
                    retry=False,
                )
                where = started.headers.get("Location")
                if not where:
                    raise PermanentProviderError(
                        f"registry {self.registry} started an upload to {repository} without "
                        "a Location",
                        details={"registry": self.registry, "repository": repository},
                    )
            url = _with_query(self._url(where), {"digest": digest})
            done = self._send(
                "PUT",
                url,
                repository=repository,
                actions="pull,push",
                what=f"upload blob {digest}",
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                content=body,
                ok=(201, 204),
                retry=False,
            )
            stored = done.headers.get("Docker-Content-Digest")
            if stored and stored != digest:
                raise PermanentProviderError(
                    f"registry {self.registry} stored blob {digest} of {repository} as {stored}",
                    details={"registry": self.registry, "repository": repository},
                )

        self.retry_policy.call(attempt, what=f"{self.registry}: upload blob {digest}")
        self.stats.blobs_uploaded += 1
        self.stats.bytes_uploaded += size
        return "uploaded"

    def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str = OCI_MANIFEST
    ) -> str:
        """Store manifest `data` under `reference` (a tag, or its own digest); returns the
        digest the registry reports, which must be the digest of `data`."""
        digest = sha256_digest(data)
        if ":" in reference and reference != digest:
            raise InvalidInput(
                f"manifest digest {digest} does not match the reference {reference}",
                field="reference",
            )
        response = self._send(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            repository=repository,
            actions="pull,push",
            what=f"put manifest {reference}",
            headers={"Content-Type": media_type},
            content=lambda: data,
            ok=(200, 201, 202, 204),
        )
        reported = response.headers.get("Docker-Content-Digest") or digest
        if reported != digest:
            raise PermanentProviderError(
                f"registry {self.registry} stored the manifest for {repository}:{reference} "
                f"as {reported}, not {digest}",
                details={"registry": self.registry, "repository": repository},
            )
        self.stats.manifests_put += 1
        return reported


def _in(repository: str) -> str:
    return f" (repository {repository})" if repository and repository != "-" else ""


def _insufficient_scope(response: httpx.Response) -> bool:
    """A 401 whose challenge says the token lacked the scope (the credentials were fine)."""
    challenge = Challenge.parse(response.headers.get("WWW-Authenticate"))
    return challenge is not None and challenge.params.get("error") == "insufficient_scope"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        value = headers.get("Retry-After")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _platform_text(spec: Mapping[str, Any] | None) -> str:
    spec = spec or {}
    parts = [str(spec.get("os") or "unknown"), str(spec.get("architecture") or "unknown")]
    if spec.get("variant"):
        parts.append(str(spec["variant"]))
    return "/".join(parts)


def _repositories(scopes: Sequence[str]) -> str:
    names = [s.split(":")[1] for s in scopes if s.count(":") >= 2]
    return ", ".join(names) or "-"


def _with_query(url: str, extra: Mapping[str, str]) -> str:
    return url + ("&" if urlsplit(url).query else "?") + urlencode(extra)


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class Registries:
    """Clients for every registry a build touches, sharing one auth setup: explicit
    credentials per host, a credentials provider, the Docker config, the insecure hosts.
    `registries.client("host:port")` returns the same client for the same host."""

    def __init__(
        self,
        *,
        credentials: Mapping[str, CredentialsLike] | None = None,
        credentials_provider: CredentialsProvider | None = None,
        docker_config: str | os.PathLike[str] | bool | None = None,
        insecure: Iterable[str] = (),
        timeout: float = 60.0,
        retry_policy: RetryPolicy = REGISTRY_CALLS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._credentials = dict(credentials or {})
        self.credentials_provider = credentials_provider
        self.docker_config = docker_config
        self.insecure = set(insecure)
        self.timeout = timeout
        self.retry_policy = retry_policy
        self.transport = transport
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def client(self, registry: str) -> RegistryClient:
        with self._lock:
            found = self._clients.get(registry)
            if found is None:
                found = self._clients[registry] = RegistryClient(
                    registry,
                    credentials=self._credentials.get(registry),
                    credentials_provider=self.credentials_provider,
                    docker_config=self.docker_config,
                    insecure=True if registry in self.insecure else None,
                    timeout=self.timeout,
                    retry_policy=self.retry_policy,
                    transport=self.transport,
                )
            return found

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __enter__(self) -> Registries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

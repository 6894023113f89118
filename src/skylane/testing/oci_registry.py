"""A real OCI registry on loopback for tests: Debian's `docker-registry` (distribution v2.8).

    from skylane.testing.oci_registry import oci_registry, registry_unavailable_reason

    with oci_registry() as registry:                 # anonymous
        client = RegistryClient(registry.host)       # "127.0.0.1:PORT" (plain http: loopback)
    with oci_registry(users={"alice": "s3cret"}) as registry:   # htpasswd Basic auth
        ...
    with TokenServer(users={"alice": "s3cret"}) as tokens, oci_registry(token=tokens) as registry:
        ...                                          # Bearer tokens from our own token server

Each registry gets a free port, a temporary storage directory and a config file written here,
and is stopped (SIGTERM) when the block ends. `registry_unavailable_reason()` says why a test
must skip (no binary); `htpasswd_unavailable_reason()` why a Basic auth test must (the registry
takes only bcrypt hashes: the `bcrypt` module, else the standard `crypt` module where the C
library supports bcrypt).

Token auth: the registry trusts tokens signed by a certificate in `rootcertbundle`; `TokenServer`
makes a self-signed certificate and key (with `cryptography`), serves `GET /token` (Basic auth,
`service`, `scope`s) and `POST /token` (OAuth2 refresh-token grant) and answers with a JWT
(RS256, the certificate in `x5c`) granting the requested actions to a known user. Like ACR, it
can also exchange an Entra access token for a refresh token (`POST /oauth2/exchange`). No TLS is
involved: the registry and the token server both speak plain http on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from skylane.testing.local_http import LocalHandler, LocalService
from skylane.testing.server import free_port, stop_process

REGISTRY_BINARIES = ("docker-registry", "registry")
TOKEN_SERVICE = "skylane-test-registry"
TOKEN_ISSUER = "skylane-test-token-server"


def registry_binary() -> str | None:
    for name in REGISTRY_BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


def registry_unavailable_reason() -> str | None:
    if registry_binary() is None:
        return (
            "no OCI registry binary: install Debian's docker-registry package "
            "(apt-get install -y docker-registry; .ci/run does it)"
        )
    return None


def bcrypt_hash(password: str) -> str | None:
    """A bcrypt hash of `password` for an htpasswd file, or None when nothing here makes one."""
    try:
        import bcrypt  # type: ignore[import-not-found]

        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    except ImportError:
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # type: ignore[import-not-found]

        hashed = crypt.crypt(password, "$2b$04$" + "abcdefghijklmnopqrstuv")
        if hashed and hashed.startswith("$2b$"):
            return str(hashed)
    except (ImportError, OSError, AttributeError):
        pass
    return None


def htpasswd_unavailable_reason() -> str | None:
    if bcrypt_hash("probe") is None:
        return (
            "cannot make bcrypt hashes for the registry's htpasswd file: neither the bcrypt "
            "module nor a crypt module with bcrypt support is available"
        )
    return None


@dataclass
class LocalRegistry:
    """A running registry: `host` ("127.0.0.1:PORT", what image references use), `url`."""

    host: str
    url: str
    root: Path
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def log(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no registry log>"

    def __str__(self) -> str:
        return self.host


def _config_yaml(
    port: int,
    storage: Path,
    htpasswd: Path | None,
    token: TokenServer | None,
) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {json.dumps(str(storage))}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: skylane-test-secret",
        "health:",
        "  storagedriver:",
        "    enabled: false",
    ]
    if htpasswd is not None:
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: skylane-test",
            f"    path: {json.dumps(str(htpasswd))}",
        ]
    elif token is not None:
        lines += [
            "auth:",
            "  token:",
            f"    realm: {json.dumps(token.url + '/token')}",
            f"    service: {TOKEN_SERVICE}",
            f"    issuer: {TOKEN_ISSUER}",
            f"    rootcertbundle: {json.dumps(str(token.certificate_path))}",
        ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def oci_registry(
    *,
    users: Mapping[str, str] | None = None,
    token: TokenServer | None = None,
    startup_timeout: float = 20.0,
) -> Iterator[LocalRegistry]:
    """Start `docker-registry serve CONFIG` on a free loopback port with temporary storage;
    `users` (name -> password) turn on htpasswd Basic auth, `token` bearer-token auth from that
    token server. Yields the running registry; stops it and removes its storage after."""
    binary = registry_binary()
    if binary is None:
        raise RuntimeError(registry_unavailable_reason())
    root = Path(tempfile.mkdtemp(prefix="skylane-registry-"))
    htpasswd = None
    if users:
        lines = []
        for name, password in users.items():
            hashed = bcrypt_hash(password)
            if hashed is None:
                raise RuntimeError(htpasswd_unavailable_reason())
            lines.append(f"{name}:{hashed}")
        htpasswd = root / "htpasswd"
        htpasswd.write_text("\n".join(lines) + "\n")
    port = free_port()
    config = root / "config.yml"
    config.write_text(_config_yaml(port, root / "storage", htpasswd, token))
    log_path = root / "registry.log"
    log = log_path.open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    process = subprocess.Popen(
        [binary, "serve", str(config)], stdout=log, stderr=log, env=env, cwd=root
    )
    host = f"127.0.0.1:{port}"
    registry = LocalRegistry(host, f"http://{host}", root, config, log_path, process)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                httpx.get(f"{registry.url}/v2/", timeout=1)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"docker-registry did not start on {host}:\n{registry.log()}"
                    ) from None
                time.sleep(0.05)
        yield registry
    finally:
        stop_process(process, grace=5)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


# --- a token server for the registry's bearer auth ------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenRequest:
    """One request the token server answered: who (None: anonymous), which scopes, how
    (`password` or `refresh_token`), and the HTTP status it got."""

    account: str | None
    scopes: list[str]
    grant: str
    status: int


class _TokenHandler(LocalHandler):
    server: Any

    def do_GET(self) -> None:  # noqa: N802
        service: TokenServer = self.server.service
        url = urlsplit(self.path)
        if url.path != "/token":
            return self.send_json(404, {"error": "not found"})
        query = parse_qs(url.query)
        scopes = query.get("scope", [])
        account = None
        header = self.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                name, password = "", ""
            if service.users.get(name) != password or not name:
                service.record(TokenRequest(name or None, scopes, "password", 401))
                return self.send_json(401, {"errors": [{"code": "UNAUTHORIZED"}]})
            account = name
        self._grant(service, account, scopes, "password")

    def do_POST(self) -> None:  # noqa: N802
        service: TokenServer = self.server.service
        if urlsplit(self.path).path == "/oauth2/exchange":
            return self._exchange(service)
        if urlsplit(self.path).path != "/token":
            return self.send_json(404, {"error": "not found"})
        form = parse_qs(self.read_body().decode())
        scopes = " ".join(form.get("scope", [])).split()
        if form.get("grant_type") != ["refresh_token"]:
            return self.send_json(400, {"error": "unsupported_grant_type"})
        account = service.refresh_tokens.get((form.get("refresh_token") or [""])[0])
        if account is None:
            service.record(TokenRequest(None, scopes, "refresh_token", 401))
            return self.send_json(401, {"error": "invalid_grant"})
        self._grant(service, account, scopes, "refresh_token")

    def _exchange(self, service: TokenServer) -> None:
        """ACR's `/oauth2/exchange`: an Entra access token for a refresh token of its user."""
        form = parse_qs(self.read_body().decode())
        if form.get("grant_type") != ["access_token"]:
            return self.send_json(400, {"error": "unsupported_grant_type"})
        account = service.accepted_access_tokens.get((form.get("access_token") or [""])[0])
        if account is None:
            service.record(TokenRequest(None, [], "access_token", 401))
            return self.send_json(
                401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid access token"}]}
            )
        service.record(TokenRequest(account, [], "access_token", 200))
        self.send_json(200, {"refresh_token": service.issue_refresh_token(account)})

    def _grant(
        self, service: TokenServer, account: str | None, scopes: list[str], grant: str
    ) -> None:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            allowed = service.allowed_actions(account, name, actions.split(","))
            if allowed:
                access.append({"type": "repository", "name": name, "actions": allowed})
        service.record(TokenRequest(account, scopes, grant, 200))
        token = service.issue(account or "", access)
        self.send_json(200, {"token": token, "access_token": token, "expires_in": service.lifetime})


class TokenServer(LocalService):
    """A token server for the registry's `auth.token` config. `users` (name -> password) get
    every action they ask for, except those `read_only` users, who get only `pull`; anonymous
    callers get `pull` on repositories in `public` and nothing else. `refresh_tokens` maps an
    OAuth2 refresh token to a user. `accepted_access_tokens` maps an Entra access token to a
    user for ACR's `POST /oauth2/exchange`, whose refresh tokens (JWTs lasting
    `refresh_lifetime` seconds) the refresh grant then takes. `requests` lists what it
    answered."""

    handler_class = _TokenHandler
    thread_name = "oci-token-server"

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        read_only: tuple[str, ...] = (),
        public: tuple[str, ...] = (),
        refresh_tokens: Mapping[str, str] | None = None,
        lifetime: int = 300,
        accepted_access_tokens: Mapping[str, str] | None = None,
        refresh_lifetime: int = 10800,
    ) -> None:
        super().__init__("127.0.0.1", 0, verbose=False)
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = dict(users or {})
        self.read_only = set(read_only)
        self.public = set(public)
        self.refresh_tokens = dict(refresh_tokens or {})
        self.lifetime = lifetime
        self.accepted_access_tokens = dict(accepted_access_tokens or {})
        self.refresh_lifetime = refresh_lifetime
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TOKEN_ISSUER)])
        now = time.time()
        import datetime as dt

        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.fromtimestamp(now - 3600, dt.UTC))
            .not_valid_after(dt.datetime.fromtimestamp(now + 86400, dt.UTC))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._certificate_der = certificate.public_bytes(serialization.Encoding.DER)
        self._directory = Path(tempfile.mkdtemp(prefix="skylane-token-server-"))
        self.certificate_path = self._directory / "root.pem"
        self.certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    def allowed_actions(self, account: str | None, repository: str, wanted: list[str]) -> list[str]:
        if account is None:
            return ["pull"] if "pull" in wanted and repository in self.public else []
        if account in self.read_only:
            return [a for a in wanted if a == "pull"]
        return [a for a in wanted if a]

    def record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def issue_refresh_token(self, account: str) -> str:
        """A refresh token for `account` (a JWT, as ACR's are), which the refresh grant takes."""
        token = self.issue(account, [], lifetime=self.refresh_lifetime)
        with self._lock:
            self.refresh_tokens[token] = account
        return token

    def issue(self, subject: str, access: list[dict[str, Any]], lifetime: int | None = None) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        lifetime = self.lifetime if lifetime is None else lifetime
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self._certificate_der).decode()],
        }
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self._directory, ignore_errors=True)


# --- test images and wheels ------------------------------------------------------------------


def tar_gz_layer(files: Mapping[str, bytes | str]) -> tuple[bytes, str]:
    """A gzipped tar of `files` (path in the image -> content; parent directories added), and
    its diff_id; fixed timestamps, so the same files give the same bytes."""
    import gzip
    import hashlib
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories: set[str] = set()
        for path in sorted(files):
            name = path.strip("/")
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            content = files[path]
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(data))
    uncompressed = raw.getvalue()
    compressed = gzip.compress(uncompressed, mtime=0)
    return compressed, "sha256:" + hashlib.sha256(uncompressed).hexdigest()


def push_test_image(
    client: Any,
    repository: str,
    tag: str | None,
    *,
    files: Mapping[str, bytes | str] | None = None,
    env: Mapping[str, str] | None = None,
    platform: str = "linux/amd64",
    docker_media_types: bool = True,
    cmd: list[str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Push a tiny one-layer image (a `skylane.images.registry.RegistryClient` does it) and
    return its manifest digest. By default Docker v2 media types, an env with PATH and
    `PYTHON_VERSION=3.12.4`, a layer with `/etc/os-release` and `/bin/true`."""
    from skylane.images import registry as oci

    files = files if files is not None else {"etc/os-release": "ID=skylane-test\n", "bin/true": ""}
    layer, diff_id = tar_gz_layer(files)
    os_name, architecture, *variant = platform.split("/")
    variables = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION": "3.12.4"}
    variables.update(env or {})
    config: dict[str, Any] = {
        "architecture": architecture,
        "os": os_name,
        "config": {
            "Env": [f"{k}={v}" for k, v in variables.items()],
            "Cmd": cmd or ["python3"],
            "Labels": {"org.example.base": "yes", **(labels or {})},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "skylane test base"}],
    }
    if variant:
        config["variant"] = variant[0]
    config_bytes = oci.canonical_json(config)
    client.upload_blob(repository, layer)
    client.upload_blob(repository, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.DOCKER_MANIFEST if docker_media_types else oci.OCI_MANIFEST,
        "config": {
            "mediaType": oci.DOCKER_CONFIG if docker_media_types else oci.OCI_CONFIG,
            "digest": oci.sha256_digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": oci.DOCKER_LAYER_GZIP if docker_media_types else oci.OCI_LAYER_GZIP,
                "digest": oci.sha256_digest(layer),
                "size": len(layer),
            }
        ],
    }
    data = oci.canonical_json(manifest)
    digest = oci.sha256_digest(data)
    client.put_manifest(repository, tag or digest, data, manifest["mediaType"])
    return digest


def push_test_index(
    client: Any,
    repository: str,
    tag: str,
    platforms: Mapping[str, str],
    *,
    docker_media_types: bool = False,
) -> str:
    """Push an index (or, with `docker_media_types`, a manifest list) naming the manifests
    `platforms` (platform -> manifest digest, pushed before in `repository`), plus an
    attestation-like `unknown/unknown` entry as BuildKit writes; returns its digest."""
    from skylane.images import registry as oci

    entries = []
    for platform, digest in platforms.items():
        os_name, architecture, *variant = platform.split("/")
        size = len(client.get_manifest(repository, digest).data)
        spec: dict[str, str] = {"os": os_name, "architecture": architecture}
        if variant:
            spec["variant"] = variant[0]
        media_type = oci.DOCKER_MANIFEST if docker_media_types else oci.OCI_MANIFEST
        entries.append({"mediaType": media_type, "digest": digest, "size": size, "platform": spec})
    first = next(iter(platforms.values()))
    entries.append(
        {
            "mediaType": oci.OCI_MANIFEST,
            "digest": first,
            "size": len(client.get_manifest(repository, first).data),
            "platform": {"os": "unknown", "architecture": "unknown"},
        }
    )
    media_type = oci.DOCKER_MANIFEST_LIST if docker_media_types else oci.OCI_INDEX
    data = oci.canonical_json({"schemaVersion": 2, "mediaType": media_type, "manifests": entries})
    return client.put_manifest(repository, tag, data, media_type)


def write_wheel(
    directory: Path,
    name: str,
    version: str,
    modules: Mapping[str, str],
    *,
    scripts: Mapping[str, str] | None = None,
) -> Path:
    """Write a pure-Python wheel `name-version-py3-none-any.whl` holding `modules` (path in
    the wheel -> source, e.g. {"tinylib/__init__.py": "..."}) and console `scripts`
    (name -> "module:function") into `directory`; returns its path. Same input, same bytes."""
    import hashlib
    import zipfile

    distribution = name.replace("-", "_")
    info = f"{distribution}-{version}.dist-info"
    files: dict[str, bytes] = {path: source.encode() for path, source in modules.items()}
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test wheel\n"
    ).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: skylane-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        lines = ["[console_scripts]", *(f"{k} = {v}" for k, v in sorted(scripts.items()))]
        files[f"{info}/entry_points.txt"] = ("\n".join(lines) + "\n").encode()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{distribution}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            entry = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data)
    return path

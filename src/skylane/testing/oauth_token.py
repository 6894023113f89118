"""A Google OAuth2 token endpoint on loopback, for tests that need real google-auth flows.

    with GoogleTokenServer() as google:
        key_file = google.write_key_file(tmp_path)      # a service account key, token_uri = us
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(key_file)
        credentials, project = google.auth.default(scopes=[...])
        credentials.refresh(Request())                   # -> google.access_token

It makes an RSA key pair for a service account (with `cryptography`) and writes the service
account JSON key file google-auth reads, its `token_uri` pointing here. `POST /token` takes the
service account grant as Google's endpoint does (`grant_type=urn:ietf:params:oauth:grant-type:
jwt-bearer`, `assertion=` an RS256 JWT), checks the signature against the service account's
public key and the claims (issuer, audience, expiry, scope), and answers
`{"access_token", "expires_in", "token_type": "Bearer"}`, or 400 `invalid_grant` as Google does.
`access_token` is fixed when the server is made, so a registry can be set up to accept it
before anyone asks for it. `grants` lists what it answered.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from skylane.testing.local_http import LocalHandler, LocalService

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The audience google-auth signs service account grants for, whatever the key's token_uri.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class OAuthGrant:
    """One token request: the service account (`issuer`), the `scope` asked for, the HTTP
    status answered and, when refused, why."""

    issuer: str | None
    scope: str | None
    status: int
    error: str | None = None


class _GoogleTokenHandler(LocalHandler):
    server: Any

    def do_POST(self) -> None:  # noqa: N802
        service: GoogleTokenServer = self.server.service
        if urlsplit(self.path).path != "/token":
            return self.send_json(404, {"error": "not_found"})
        form = {k: v[0] for k, v in parse_qs(self.read_body().decode()).items()}
        status, body = service.grant(form)
        self.send_json(status, body)


class GoogleTokenServer(LocalService):
    """Google's OAuth2 token endpoint for one service account (`client_email`), issuing
    `access_token` (random unless given) for `lifetime` seconds."""

    handler_class = _GoogleTokenHandler
    thread_name = "google-token-server"

    def __init__(
        self,
        *,
        access_token: str | None = None,
        client_email: str = "skylane-test@skylane-test.iam.gserviceaccount.com",
        project_id: str = "skylane-test",
        lifetime: int = 3600,
    ) -> None:
        super().__init__("127.0.0.1", 0, verbose=False)
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.access_token = access_token or "ya29.skylane-test-" + secrets.token_urlsafe(24)
        self.client_email = client_email
        self.project_id = project_id
        self.lifetime = lifetime
        self.key_id = secrets.token_hex(20)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.grants: list[OAuthGrant] = []
        self._lock = threading.Lock()

    @property
    def token_uri(self) -> str:
        return self.url + "/token"

    def service_account_info(self, *, wrong_key: bool = False) -> dict[str, str]:
        """The JSON key of the service account; with `wrong_key`, one signed by another key
        (the endpoint then refuses its grants, as Google does a deleted key's)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if wrong_key else None
        pem = (key or self._key).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.key_id,
            "private_key": pem.decode(),
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": self.url + "/auth",
            "token_uri": self.token_uri,
            "universe_domain": "googleapis.com",
        }

    def write_key_file(self, directory: Path, *, wrong_key: bool = False) -> Path:
        """Write the service account key (see `service_account_info`) into `directory`; for
        GOOGLE_APPLICATION_CREDENTIALS."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / ("wrong-key.json" if wrong_key else "service-account.json")
        path.write_text(json.dumps(self.service_account_info(wrong_key=wrong_key), indent=2))
        path.chmod(0o600)
        return path

    def _refuse(self, issuer: str | None, scope: str | None, why: str) -> tuple[int, dict]:
        self._record(OAuthGrant(issuer, scope, 400, why))
        return 400, {"error": "invalid_grant", "error_description": why}

    def _record(self, grant: OAuthGrant) -> None:
        with self._lock:
            self.grants.append(grant)

    def grant(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer one token request (its form fields): status and JSON body."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        if form.get("grant_type") != JWT_BEARER_GRANT:
            self._record(OAuthGrant(None, None, 400, "unsupported_grant_type"))
            return 400, {"error": "unsupported_grant_type"}
        parts = form.get("assertion", "").split(".")
        if len(parts) != 3:
            return self._refuse(None, None, "Invalid JWT: not three parts.")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except ValueError:
            return self._refuse(None, None, "Invalid JWT: not base64url JSON.")
        issuer, scope = claims.get("iss"), claims.get("scope")
        if header.get("alg") != "RS256":
            return self._refuse(issuer, scope, "Invalid JWT: the algorithm must be RS256.")
        if header.get("kid") not in (None, self.key_id) or issuer != self.client_email:
            return self._refuse(issuer, scope, "Invalid JWT: unknown service account or key.")
        try:
            self._key.public_key().verify(
                signature,
                f"{parts[0]}.{parts[1]}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return self._refuse(issuer, scope, "Invalid JWT Signature.")
        now = time.time()
        if claims.get("aud") not in (GOOGLE_TOKEN_AUDIENCE, self.token_uri):
            return self._refuse(issuer, scope, "Invalid JWT: wrong audience.")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] < now - 60:
            return self._refuse(issuer, scope, "Invalid JWT: Token must be a short-lived token.")
        if not isinstance(claims.get("iat"), int | float) or claims["iat"] > now + 60:
            return self._refuse(issuer, scope, "Invalid JWT: iat is in the future.")
        if not scope:
            return self._refuse(issuer, scope, "Invalid OAuth scope or ID token audience.")
        self._record(OAuthGrant(issuer, scope, 200))
        return 200, {
            "access_token": self.access_token,
            "expires_in": self.lifetime,
            "token_type": "Bearer",
        }

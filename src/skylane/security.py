"""API keys and run tokens: generated here, stored only as hashes, compared in constant time.

An API key looks like `skl_<id>_<secret>`: the id finds the row, the secret is checked against
its SHA-256. A run token looks like `sklr_<run id>_<secret>` and is valid only for that run.
Both secrets carry 256 bits of randomness, so a fast hash is enough (no password stretching is
needed for values nobody chose).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass

MASK = "****"
# Names (environment variables, credentials keys) whose values are secrets: masked wherever a
# value is shown, and never accepted where only a reference belongs.
SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE_KEY|API_KEY|ACCESS_KEY", re.I
)

API_KEY_PREFIX = "skl"
RUN_TOKEN_PREFIX = "sklr"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_match(secret: str, expected_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), expected_hash)


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    plaintext: str
    secret_hash: str


def generate_api_key() -> NewApiKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_hex(32)
    return NewApiKey(key_id, f"{API_KEY_PREFIX}_{key_id}_{secret}", hash_secret(secret))


def parse_api_key(value: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed API key, else None."""
    parts = value.split("_")
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def generate_run_token(run_id: uuid.UUID) -> tuple[str, str]:
    """(token, hash of its secret) for one run."""
    secret = secrets.token_hex(32)
    return f"{RUN_TOKEN_PREFIX}_{run_id.hex}_{secret}", hash_secret(secret)


def parse_run_token(value: str) -> tuple[uuid.UUID, str] | None:
    parts = value.split("_")
    if len(parts) != 3 or parts[0] != RUN_TOKEN_PREFIX:
        return None
    try:
        return uuid.UUID(hex=parts[1]), parts[2]
    except ValueError:
        return None


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def mask(value: str | None) -> str:
    """What logs may show of a credential: its prefix only."""
    if not value:
        return "<none>"
    return value.split("_")[0] + "_****" if "_" in value else "****"

"""Image references, parsed the way Docker parses them (distribution's reference grammar).

    reference  := name [":" tag] ["@" digest]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := host [":" port]            host: a DNS name, an IPv4 address or [IPv6]
    path-comp. := [a-z0-9]+ ((\\.|_|__|-+) [a-z0-9]+)*
    tag        := [\\w][\\w.-]{0,127}
    digest     := algorithm ":" hex           (sha256: 64 lowercase hex digits)

The first part of the name is the registry when it contains a "." or a ":", or is `localhost`;
otherwise the registry is `docker.io`, and a one-part repository there is an official image
(`python` -> `docker.io/library/python`). `index.docker.io` is spelled `docker.io`.

`str(ref)` is the canonical, fully qualified form (`docker.io/library/python:3.12`), which
parses back to the same reference; `ref.familiar` is the short form Docker prints (`python:3.12`).
A reference with neither tag nor digest keeps neither: `ref.reference` (what to ask a registry
for) is then `latest`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from skylane.errors import InvalidInput

DEFAULT_REGISTRY = "docker.io"
LEGACY_DEFAULT_REGISTRY = "index.docker.io"
OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"
NAME_MAX_LENGTH = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+(?:%[\w.-]+)?\])$"
)
_PORT = re.compile(r"^[0-9]{1,5}$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_ALGORITHM = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*$")
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"^[a-f0-9]+$")


def validate_digest(digest: str, *, field: str = "digest") -> str:
    """`digest` when it is `algorithm:hex` with a known algorithm and the right length of
    lowercase hex; InvalidInput naming `field` otherwise."""
    algorithm, sep, hex_part = digest.partition(":")
    if not sep or not algorithm or not hex_part:
        raise InvalidInput(
            f"digest {digest!r} is not of the form sha256:<64 hex digits>", field=field
        )
    if not _ALGORITHM.match(algorithm):
        raise InvalidInput(f"digest algorithm {algorithm!r} is not valid", field=field)
    expected = _HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidInput(
            f"digest algorithm {algorithm!r} is not supported (use sha256 or sha512)",
            field=field,
        )
    if not _HEX.match(hex_part) or len(hex_part) != expected:
        raise InvalidInput(
            f"digest {digest!r}: a {algorithm} digest is {expected} lowercase hex digits",
            field=field,
        )
    return digest


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference. `registry` is a host (with its port when it has one),
    `repository` the path inside it (`library/python`), `tag` and `digest` are None when the
    reference has none."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest when there is one, else
        the tag, else `latest`."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def familiar(self) -> str:
        """The short form Docker shows: no `docker.io/`, no `library/`."""
        name = self.repository
        if self.registry == DEFAULT_REGISTRY:
            prefix = OFFICIAL_NAMESPACE + "/"
            if name.startswith(prefix) and "/" not in name[len(prefix) :]:
                name = name[len(prefix) :]
        else:
            name = self.name
        return name + self._suffix()

    def with_digest(self, digest: str) -> ImageReference:
        """This repository pinned to `digest`, without a tag (`repo@sha256:...`)."""
        return replace(self, tag=None, digest=validate_digest(digest))

    def with_tag(self, tag: str) -> ImageReference:
        if not _TAG.match(tag):
            raise InvalidInput(f"tag {tag!r} is not a valid tag", field="tag")
        return replace(self, tag=tag, digest=None)

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag else ""
        return suffix + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def parse_reference(text: str, *, field: str = "image") -> ImageReference:
    """Parse `text` (e.g. `python:3.12-slim`, `localhost:5000/team/app@sha256:...`); the
    InvalidInput names `field` and says which part of the reference is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("an image reference is required", field=field)
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidInput(f"image reference {text!r} contains whitespace", field=field)

    remainder, digest = text, None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        if "@" in digest:
            raise InvalidInput(f"image reference {text!r} has more than one '@'", field=field)
        try:
            validate_digest(digest, field=field)
        except InvalidInput as exc:
            raise InvalidInput(f"image reference {text!r}: {exc.message}", field=field) from None

    # A ":" after the last "/" starts the tag (a ":" before it is a registry port).
    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidInput(
                f"image reference {text!r}: tag {tag!r} is not valid (letters, digits, '_', "
                "'.', '-'; at most 128 characters, not starting with '.' or '-')",
                field=field,
            )

    if not remainder:
        raise InvalidInput(f"image reference {text!r} has no repository name", field=field)
    if len(remainder) > NAME_MAX_LENGTH:
        raise InvalidInput(
            f"image reference {text!r}: the name is longer than {NAME_MAX_LENGTH} characters",
            field=field,
        )

    first, sep, rest = remainder.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, path = _parse_registry(first, text, field), rest
    else:
        registry, path = DEFAULT_REGISTRY, remainder
    if registry == LEGACY_DEFAULT_REGISTRY:
        registry = DEFAULT_REGISTRY

    if not path:
        raise InvalidInput(f"image reference {text!r} has no repository name", field=field)
    for component in path.split("/"):
        if not component:
            raise InvalidInput(
                f"image reference {text!r}: the repository {path!r} has an empty part",
                field=field,
            )
        if not _PATH_COMPONENT.match(component):
            hint = " (repository names are lowercase)" if component.lower() != component else ""
            raise InvalidInput(
                f"image reference {text!r}: repository part {component!r} is not valid{hint}: "
                "lowercase letters and digits, separated by '.', '_', '__' or '-'",
                field=field,
            )
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    return ImageReference(registry=registry, repository=path, tag=tag, digest=digest)


def _parse_registry(domain: str, text: str, field: str) -> str:
    host, port = domain, None
    if domain.startswith("["):
        end = domain.find("]")
        if end != -1 and domain[end + 1 : end + 2] == ":":
            host, port = domain[: end + 1], domain[end + 2 :]
    elif ":" in domain:
        host, _, port = domain.partition(":")
    if not _HOST.match(host):
        raise InvalidInput(
            f"image reference {text!r}: registry host {host!r} is not a valid host name",
            field=field,
        )
    if port is not None and (not _PORT.match(port) or not 0 < int(port) < 65536):
        raise InvalidInput(
            f"image reference {text!r}: registry port {port!r} is not a port number", field=field
        )
    return domain

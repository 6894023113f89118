"""Image references parsed as Docker parses them; errors name the bad part."""

from __future__ import annotations

import pytest

from skylane.errors import InvalidInput
from skylane.images.reference import ImageReference, parse_reference, validate_digest

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("python", "docker.io", "library/python", None, None),
        ("python:3.12-slim", "docker.io", "library/python", "3.12-slim", None),
        ("prefecthq/prefect:3-latest", "docker.io", "prefecthq/prefect", "3-latest", None),
        ("docker.io/python", "docker.io", "library/python", None, None),
        ("index.docker.io/library/python:3", "docker.io", "library/python", "3", None),
        ("localhost/app", "localhost", "app", None, None),
        ("localhost:5000/team/app:v1", "localhost:5000", "team/app", "v1", None),
        ("127.0.0.1:5000/a/b/c", "127.0.0.1:5000", "a/b/c", None, None),
        ("[::1]:5000/app:1", "[::1]:5000", "app", "1", None),
        (
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/flows",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "flows",
            None,
            None,
        ),
        (
            "europe-west1-docker.pkg.dev/proj/repo/img:tag",
            "europe-west1-docker.pkg.dev",
            "proj/repo/img",
            "tag",
            None,
        ),
        (f"myacr.azurecr.io/app@{DIGEST}", "myacr.azurecr.io", "app", None, DIGEST),
        (f"python:3.12@{DIGEST}", "docker.io", "library/python", "3.12", DIGEST),
        ("a/b__c.d-e--f:T_a.g-1", "docker.io", "a/b__c.d-e--f", "T_a.g-1", None),
        ("Registry.Example/app", "Registry.Example", "app", None, None),
    ],
)
def test_good_references(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert ref == ImageReference(registry, repository, tag, digest)
    # str() is the canonical form, which parses back to the same reference.
    assert parse_reference(str(ref)) == ref


def test_str_and_familiar_forms() -> None:
    ref = parse_reference("python:3.12")
    assert str(ref) == "docker.io/library/python:3.12"
    assert ref.familiar == "python:3.12"
    assert ref.name == "docker.io/library/python"
    assert ref.reference == "3.12"
    assert parse_reference("python").reference == "latest"
    full = f"localhost:5000/team/app:v1@{DIGEST}"
    assert str(parse_reference(full)) == full
    assert parse_reference(full).reference == DIGEST
    pinned = parse_reference("localhost:5000/team/app:v1").with_digest(DIGEST)
    assert str(pinned) == f"localhost:5000/team/app@{DIGEST}"
    assert parse_reference("prefecthq/prefect:3").familiar == "prefecthq/prefect:3"
    assert str(parse_reference("ghcr.io/o/r").with_tag("x")) == "ghcr.io/o/r:x"


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("", "required"),
        ("python:3.12 ", "whitespace"),
        ("Python", "'Python'"),  # no dot, no port: a repository part, and not lowercase
        ("team/App:v1", "'App'"),
        ("python:", "tag ''"),
        ("python:-bad", "tag '-bad'"),
        ("python:" + "a" * 129, "tag"),
        ("python@sha256:abc", "64 lowercase hex"),
        ("python@md5:" + "a" * 32, "'md5' is not supported"),
        ("python@" + "ab" * 32, "sha256:<64 hex digits>"),
        (f"python@{DIGEST.upper().replace('SHA256', 'sha256')}", "lowercase hex"),
        ("localhost:99999/app", "port '99999'"),
        ("localhost:port/app", "port 'port' is not a port number"),
        ("bad_host.com:5000/app", "host 'bad_host.com'"),
        ("example.com/", "no repository name"),
        ("example.com//app", "empty part"),
        ("team/app_:1", "'app_'"),
        ("a@b@" + DIGEST, "more than one '@'"),
        (":tag", "no repository name"),
        ("a/" + "b" * 260, "longer than 255"),
    ],
)
def test_bad_references_name_the_part(text: str, part: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_reference(text, field="build.image")
    assert caught.value.field == "build.image"
    assert part in caught.value.message


def test_validate_digest() -> None:
    assert validate_digest(DIGEST) == DIGEST
    assert validate_digest("sha512:" + "0" * 128)
    with pytest.raises(InvalidInput, match="sha256:<64 hex digits>"):
        validate_digest("nothing")
    with pytest.raises(InvalidInput) as caught:
        parse_reference("localhost:5000/app").with_tag("-x")
    assert caught.value.field == "tag"

"""Git sources against real repositories: a local bare repository stands in for the remote."""

from __future__ import annotations

from pathlib import Path

import pytest

from skylane.git_source import GitSourceError, checkout, resolve_commit
from skylane.models import GitSource, SecretReference
from skylane.testing.git_repos import (
    GitRemote,
    git_environment,
    git_unavailable_reason,
    run_git,
)

pytestmark = pytest.mark.skipif(
    git_unavailable_reason() is not None, reason=git_unavailable_reason() or ""
)


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    return GitRemote.create(tmp_path, {"flows/etl.py": "VERSION = 1\n"})


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return git_environment(tmp_path)


def test_a_branch_is_pinned_to_its_commit_and_later_pushes_do_not_change_the_checkout(
    remote: GitRemote, env: dict[str, str], tmp_path: Path
) -> None:
    first = remote.head
    source = GitSource(git=remote.url, ref="main")
    pinned = resolve_commit(source, environ=env)
    assert pinned == first

    second = remote.push({"flows/etl.py": "VERSION = 2\n"}, "second")
    dest = tmp_path / "run"
    got = checkout(source.model_copy(update={"commit": pinned}), dest, environ=env)
    assert got == first
    assert (dest / "flows" / "etl.py").read_text() == "VERSION = 1\n"

    # Without a pinned commit the ref's newest commit is what runs.
    latest = checkout(source, tmp_path / "latest", environ=env)
    assert latest == second != first
    assert (tmp_path / "latest" / "flows" / "etl.py").read_text() == "VERSION = 2\n"


def test_annotated_tags_resolve_to_the_commit_not_the_tag_object(
    remote: GitRemote, env: dict[str, str]
) -> None:
    tagged = remote.head
    remote.tag("v1.0", "release")
    remote.push({"flows/etl.py": "VERSION = 2\n"}, "after the tag")
    assert resolve_commit(GitSource(git=str(remote.bare), ref="v1.0"), environ=env) == tagged
    sha = "ab" * 20
    assert resolve_commit(GitSource(git=str(remote.bare), ref=sha), environ=env) == sha


def test_an_unknown_ref_names_the_field(remote: GitRemote, env: dict[str, str]) -> None:
    with pytest.raises(GitSourceError) as caught:
        resolve_commit(GitSource(git=str(remote.bare), ref="nope"), environ=env)
    assert caught.value.field == "source.ref"
    assert "nope" in str(caught.value)


def test_a_ref_that_only_ends_another_ref_is_not_guessed(
    remote: GitRemote, env: dict[str, str]
) -> None:
    # ls-remote's pattern "etl" also matches refs/heads/team/etl: that is not branch "etl".
    run_git(remote.work, "push", "--quiet", "origin", "HEAD:refs/heads/team/etl")
    with pytest.raises(GitSourceError) as caught:
        resolve_commit(GitSource(git=str(remote.bare), ref="etl"), environ=env)
    assert caught.value.field == "source.ref"
    assert "refs/heads/team/etl" in str(caught.value)
    full = resolve_commit(GitSource(git=str(remote.bare), ref="refs/heads/team/etl"), environ=env)
    assert full == remote.head


def test_a_commit_the_remote_does_not_have_fails_with_gits_reason(
    remote: GitRemote, env: dict[str, str], tmp_path: Path
) -> None:
    source = GitSource(git=str(remote.bare), ref="main", commit="0" * 40)
    with pytest.raises(GitSourceError) as caught:
        checkout(source, tmp_path / "run", environ=env)
    assert caught.value.field == "source.git"
    assert "0" * 40 in str(caught.value)


def test_credentials_must_be_set_and_never_reach_messages_or_the_checkout(
    remote: GitRemote, env: dict[str, str], tmp_path: Path
) -> None:
    creds = SecretReference(env="GIT_TOKEN")
    source = GitSource(git="http://127.0.0.1:9/acme/etl.git", ref="main", credentials=creds)
    with pytest.raises(GitSourceError) as caught:
        resolve_commit(source, environ=env)
    assert caught.value.field == "source.credentials.env"
    assert "GIT_TOKEN" in str(caught.value)

    secret = "ghp_s3cretvalue"
    with pytest.raises(GitSourceError) as caught:
        resolve_commit(source, environ={**env, "GIT_TOKEN": secret})
    assert secret not in str(caught.value)

    # A local remote ignores the header; the token must not be written anywhere in the checkout.
    local = GitSource(git=str(remote.bare), ref="main", credentials=creds)
    checkout(local, tmp_path / "run", environ={**env, "GIT_TOKEN": secret})
    for path in (tmp_path / "run" / ".git").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_checkout_refuses_a_directory_that_is_not_empty(
    remote: GitRemote, env: dict[str, str], tmp_path: Path
) -> None:
    dest = tmp_path / "run"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="not empty"):
        checkout(GitSource(git=str(remote.bare)), dest, environ=env)
    assert (dest / "keep.txt").read_text() == "mine"

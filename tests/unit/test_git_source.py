"""Git sources against real repositories: a local bare repository stands in for the remote."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from skylane.git_source import GitSourceError, checkout, resolve_commit
from skylane.models import GitSource, SecretReference

pytestmark = pytest.mark.skipif(
    subprocess.run(["git", "--version"], capture_output=True).returncode != 0,
    reason="git is not installed",
)

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/nonexistent",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit_file(work: Path, name: str, text: str, message: str) -> str:
    (work / name).parent.mkdir(parents=True, exist_ok=True)
    (work / name).write_text(text)
    git(work, "add", name)
    git(work, "commit", "--quiet", "-m", message)
    git(work, "push", "--quiet", "origin", "HEAD:main")
    return git(work, "rev-parse", "HEAD")


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path]:
    """(bare repository, a working clone pushing to it) with one commit on main."""
    bare = tmp_path / "etl.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "--quiet", str(bare), str(work))
    git(work, "checkout", "--quiet", "-b", "main")
    commit_file(work, "flows/etl.py", "VERSION = 1\n", "first")
    return bare, work


def test_a_branch_is_pinned_to_its_commit_and_later_pushes_do_not_change_the_checkout(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, work = remote
    first = git(work, "rev-parse", "HEAD")
    source = GitSource(git=f"file://{bare}", ref="main")
    pinned = resolve_commit(source, environ=GIT_ENV)
    assert pinned == first

    commit_file(work, "flows/etl.py", "VERSION = 2\n", "second")
    dest = tmp_path / "run"
    got = checkout(source.model_copy(update={"commit": pinned}), dest, environ=GIT_ENV)
    assert got == first
    assert (dest / "flows" / "etl.py").read_text() == "VERSION = 1\n"

    # Without a pinned commit the ref's newest commit is what runs.
    latest = checkout(source, tmp_path / "latest", environ=GIT_ENV)
    assert latest == git(work, "rev-parse", "HEAD") != first
    assert (tmp_path / "latest" / "flows" / "etl.py").read_text() == "VERSION = 2\n"


def test_annotated_tags_resolve_to_the_commit_not_the_tag_object(
    remote: tuple[Path, Path],
) -> None:
    bare, work = remote
    tagged = git(work, "rev-parse", "HEAD")
    git(work, "tag", "-a", "v1.0", "-m", "release")
    git(work, "push", "--quiet", "origin", "v1.0")
    commit_file(work, "flows/etl.py", "VERSION = 2\n", "after the tag")
    assert resolve_commit(GitSource(git=str(bare), ref="v1.0"), environ=GIT_ENV) == tagged
    sha = "ab" * 20
    assert resolve_commit(GitSource(git=str(bare), ref=sha), environ=GIT_ENV) == sha


def test_an_unknown_ref_names_the_field(remote: tuple[Path, Path]) -> None:
    bare, _ = remote
    with pytest.raises(GitSourceError) as caught:
        resolve_commit(GitSource(git=str(bare), ref="nope"), environ=GIT_ENV)
    assert caught.value.field == "source.ref"
    assert "nope" in str(caught.value)


def test_a_commit_the_remote_does_not_have_fails_with_gits_reason(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, _ = remote
    source = GitSource(git=str(bare), ref="main", commit="0" * 40)
    with pytest.raises(GitSourceError) as caught:
        checkout(source, tmp_path / "run", environ=GIT_ENV)
    assert caught.value.field == "source.git"
    assert "0" * 40 in str(caught.value)


def test_credentials_must_be_set_and_never_reach_messages_or_the_checkout(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, _ = remote
    creds = SecretReference(env="GIT_TOKEN")
    source = GitSource(git="http://127.0.0.1:9/acme/etl.git", ref="main", credentials=creds)
    with pytest.raises(GitSourceError) as caught:
        resolve_commit(source, environ=GIT_ENV)
    assert caught.value.field == "source.credentials.env"
    assert "GIT_TOKEN" in str(caught.value)

    secret = "ghp_s3cretvalue"
    with pytest.raises(GitSourceError) as caught:
        resolve_commit(source, environ={**GIT_ENV, "GIT_TOKEN": secret})
    assert secret not in str(caught.value)

    # A local remote ignores the header; the token must not be written anywhere in the checkout.
    local = GitSource(git=str(bare), ref="main", credentials=creds)
    checkout(local, tmp_path / "run", environ={**GIT_ENV, "GIT_TOKEN": secret})
    for path in (tmp_path / "run" / ".git").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_checkout_refuses_a_directory_that_is_not_empty(
    remote: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, _ = remote
    dest = tmp_path / "run"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="not empty"):
        checkout(GitSource(git=str(bare)), dest, environ=GIT_ENV)
    assert (dest / "keep.txt").read_text() == "mine"

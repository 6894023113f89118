"""Real git repositories for tests of git-sourced deployments: a bare repository stands in for
the remote, a working clone pushes to it.

    remote = GitRemote.create(tmp_path, {"flows/etl.py": "def etl(): ..."})
    remote.url                      # file://.../flows.git
    first = remote.head             # the commit on main
    remote.push({"flows/etl.py": "..."}, "second")   # main moves on
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Git refuses to commit without an identity; the tests must not depend on the machine's.
IDENTITY = {
    "GIT_AUTHOR_NAME": "skylane tests",
    "GIT_AUTHOR_EMAIL": "tests@skylane.invalid",
    "GIT_COMMITTER_NAME": "skylane tests",
    "GIT_COMMITTER_EMAIL": "tests@skylane.invalid",
}


def git_unavailable_reason() -> str | None:
    return None if shutil.which("git") else "git is not installed"


def git_environment(home: Path) -> dict[str, str]:
    """An environment for git commands that ignores the user's own git configuration."""
    return {**IDENTITY, "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home)}


def run_git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=git_environment(cwd), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass(frozen=True)
class GitRemote:
    bare: Path
    work: Path

    @classmethod
    def create(cls, root: Path, files: Mapping[str, str], name: str = "flows") -> GitRemote:
        """A bare repository `root/NAME.git` whose `main` holds `files` in one commit."""
        bare, work = root / f"{name}.git", root / f"{name}-work"
        run_git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        run_git(root, "clone", "--quiet", str(bare), str(work))
        run_git(work, "checkout", "--quiet", "-B", "main")
        remote = cls(bare, work)
        remote.push(files, "first")
        return remote

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    @property
    def head(self) -> str:
        return run_git(self.work, "rev-parse", "HEAD")

    def push(self, files: Mapping[str, str], message: str) -> str:
        """Commit `files` (path -> text) on main, push, and return the new commit."""
        for relative, text in files.items():
            path = self.work / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            run_git(self.work, "add", relative)
        run_git(self.work, "commit", "--quiet", "-m", message)
        run_git(self.work, "push", "--quiet", "origin", "HEAD:main")
        return self.head

    def tag(self, name: str, message: str) -> None:
        """An annotated tag on the current commit, pushed."""
        run_git(self.work, "tag", "-a", name, "-m", message)
        run_git(self.work, "push", "--quiet", "origin", name)

"""Code from git: pin a branch or tag to a commit when deploying, check that commit out at run
time.

`skylane deploy` calls `resolve_commit(source)` (`git ls-remote`) so the deployment records the
exact commit; the runtime calls `checkout(source, dest)` before loading the entrypoint and
reports the commit it got. Both use the git CLI, as users' CI and images already have it.

Credentials are a reference: `source.credentials.env` names an environment variable. For
https it holds a token (or `user:token`), sent as an HTTP Basic `Authorization` header through
`GIT_CONFIG_*` environment variables — never in the URL or on the command line, where it would
reach process listings, `.git/config` and error messages. For ssh it holds a private key, written
to a 0600 file for `GIT_SSH_COMMAND` and removed afterwards. Git's own output is scrubbed of the
secret before it is shown.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from skylane.errors import InvalidInput, SkylaneError
from skylane.models import GitSource

FULL_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
GIT_TIMEOUT_SECONDS = 300
# The username GitHub documents for tokens; GitLab and Bitbucket accept any username with a
# token as password. `user:token` in the variable picks another.
TOKEN_USERNAME = "x-access-token"


class GitSourceError(SkylaneError):
    """Git could not give us the deployment's code; the message says what to fix."""

    status_code = 422
    code = "git_source"


def _is_ssh(url: str) -> bool:
    return url.startswith("ssh://") or bool(re.match(r"^[\w.-]+@[\w.-]+:", url))


def _git_binary() -> str:
    found = shutil.which("git")
    if found is None:
        raise GitSourceError(
            "git is not installed where this runs: a deployment with a git source needs the git "
            "CLI in its image (the 'git' recipe's base image has it)",
            field="source.git",
        )
    return found


@contextlib.contextmanager
def _git_environment(
    source: GitSource, environ: Mapping[str, str]
) -> Iterator[tuple[dict[str, str], list[str]]]:
    """The environment for git calls, and the secrets to scrub from its output."""
    env = {k: v for k, v in environ.items() if not k.startswith("GIT_CONFIG_")}
    # Never wait for a password on a terminal nobody watches.
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_ASKPASS"] = "true"
    secrets: list[str] = []
    key_dir: str | None = None
    try:
        if source.credentials is not None:
            name = source.credentials.env
            secret = environ.get(name)
            if not secret:
                raise GitSourceError(
                    f"environment variable {name} (source.credentials.env) is not set: it must "
                    "hold the token (https) or private key (ssh) for the git repository",
                    field="source.credentials.env",
                )
            secrets.append(secret)
            if _is_ssh(source.git):
                key_dir = tempfile.mkdtemp(prefix="skylane-git-")
                key_file = Path(key_dir) / "id"
                key_file.write_text(secret.strip() + "\n")
                key_file.chmod(0o600)
                env["GIT_SSH_COMMAND"] = (
                    f"ssh -i {key_file} -o IdentitiesOnly=yes "
                    "-o StrictHostKeyChecking=accept-new -o BatchMode=yes"
                )
            else:
                user_token = secret if ":" in secret else f"{TOKEN_USERNAME}:{secret}"
                basic = base64.b64encode(user_token.encode()).decode()
                secrets.append(basic)
                env["GIT_CONFIG_COUNT"] = "1"
                env["GIT_CONFIG_KEY_0"] = "http.extraHeader"
                env["GIT_CONFIG_VALUE_0"] = f"Authorization: Basic {basic}"
        yield env, secrets
    finally:
        if key_dir is not None:
            shutil.rmtree(key_dir, ignore_errors=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _run_git(
    args: list[str], *, env: dict[str, str], secrets: list[str], cwd: Path | None, what: str
) -> str:
    try:
        done = subprocess.run(
            [_git_binary(), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitSourceError(
            f"{what}: git did not finish within {GIT_TIMEOUT_SECONDS} s", field="source.git"
        ) from exc
    if done.returncode != 0:
        lines = _scrub(done.stderr, secrets).strip().splitlines()
        detail = "\n".join(lines[-8:]) or f"git exited with {done.returncode}"
        raise GitSourceError(f"{what}: {detail}", field="source.git")
    return done.stdout


def resolve_commit(source: GitSource, *, environ: Mapping[str, str] | None = None) -> str:
    """The commit `source.ref` (default: the remote's HEAD) points at now."""
    ref = source.ref or "HEAD"
    if FULL_COMMIT.match(ref):
        return ref
    with _git_environment(source, os.environ if environ is None else environ) as (env, secrets):
        out = _run_git(
            ["ls-remote", "--", source.git, ref, f"refs/tags/{ref}^{{}}"],
            env=env,
            secrets=secrets,
            cwd=None,
            what=f"cannot read ref {ref!r} of {source.git}",
        )
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    # An annotated tag points at a tag object: its peeled entry (^{}) is the commit.
    for name in (
        f"refs/tags/{ref}^{{}}",
        ref,
        f"refs/heads/{ref}",
        f"refs/tags/{ref}",
    ):
        if name in found:
            return found[name]
    if found:
        # ls-remote matches name suffixes (x/main for main): never guess which one was meant.
        raise GitSourceError(
            f"{source.git} has no branch or tag named {ref!r}, only refs ending in it: "
            + ", ".join(sorted(found))
            + " (source.ref: give the full name, e.g. refs/heads/...)",
            field="source.ref",
        )
    raise GitSourceError(
        f"{source.git} has no branch or tag named {ref!r} (source.ref)", field="source.ref"
    )


def checkout(
    source: GitSource, dest: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> str:
    """Fetch `source` into the empty directory `dest` at its pinned commit (else at its ref)
    and return the commit checked out."""
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise InvalidInput(f"{target} is not empty; git sources are fetched into a new directory")
    wanted = source.commit or source.ref or "HEAD"
    with _git_environment(source, os.environ if environ is None else environ) as (env, secrets):

        def git(*args: str, what: str) -> str:
            return _run_git(list(args), env=env, secrets=secrets, cwd=target, what=what)

        git("init", "--quiet", what="cannot create a git checkout")
        git("remote", "add", "origin", source.git, what="cannot add the remote")
        try:
            # One commit, no history: what runs is all that is needed.
            git("fetch", "--quiet", "--depth", "1", "origin", wanted, what=f"cannot fetch {wanted}")
        except GitSourceError:
            if not source.commit:
                raise
            # Servers that refuse to serve a commit by id (no allowReachableSHA1InWant):
            # fetch the branch/tag and find the commit in its history.
            git(
                "fetch",
                "--quiet",
                "origin",
                source.ref or "HEAD",
                what=f"cannot fetch {source.ref or 'HEAD'} to find commit {source.commit}",
            )
        target_rev = source.commit or "FETCH_HEAD"
        git(
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
            target_rev,
            what=f"cannot check out {target_rev}",
        )
        return git("rev-parse", "HEAD", what="cannot read the commit").strip()

"""moto_server on loopback: a local AWS for end-to-end tests and the demo.

Requires the `moto[server]` package (the `dev` extra).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from skylane.testing.server import free_port, stop_process

# What boto3 needs to talk to moto; moto accepts any credentials.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _moto_command() -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script)]
    found = shutil.which("moto_server")
    if found:
        return [found]
    raise RuntimeError("moto_server is not installed: pip install 'moto[server]'")


@contextlib.contextmanager
def moto_server(log_path: Path | None = None) -> Iterator[str]:
    """Start moto_server on a free loopback port; yield its endpoint URL; stop it after."""
    port = free_port()
    log = log_path.open("wb") if log_path else subprocess.DEVNULL
    # AWS-managed IAM policies exist in every real account; moto has them only when asked.
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    process = subprocess.Popen(
        [*_moto_command(), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        stop_process(process, grace=10)
        if log_path:
            log.close()  # type: ignore[union-attr]


def set_ecs_task_transition(endpoint: str, *, progression: str = "manual", times: int = 1) -> None:
    """How moto advances ECS task states: "manual" with `times`=N moves a task one state every
    N DescribeTasks calls; "immediate" jumps to the end."""
    transition: dict[str, object] = {"progression": progression}
    if progression == "manual":
        transition["times"] = times
    httpx.post(
        f"{endpoint}/moto-api/state-manager/set-transition",
        json={"model_name": "ecs::task", "transition": transition},
        timeout=10,
    ).raise_for_status()


def reset(endpoint: str) -> None:
    """Forget every resource moto holds."""
    httpx.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()

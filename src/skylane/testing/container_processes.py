"""A container's command run as a local process, for the cloud emulators that can run their
containers for real (`gcp.CloudRunEmulator`, `azure.AciEmulator`, with `run_containers`).

`LocalContainerProcess` starts `argv` in its own session (so that signals reach the children
it starts too), in a given directory, with exactly the environment it is given (a container
sees nothing of the host's: `inherited_env()` is the little a process needs to run at all).
`python` or `python3` as argv[0] mean the interpreter given (by default this one). Each line it
writes goes to a callback `(stream, text)` as it is read; when it exits, once every line has
been passed on, another callback gets its exit code (128 + N when killed by signal N, as a
container's). Whatever the main process left behind in its group is killed when it exits: a
container ends with its main process.

`terminate(grace)` sends SIGTERM to its process group and SIGKILL `grace` seconds later if it
still runs; `stop_processes` does that for many at once and waits for them. Process groups not
yet reaped are killed at interpreter exit, so no process outlives an emulator never stopped
(short of one that leaves its session, or SIGKILL of the interpreter).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

Stream = Literal["stdout", "stderr"]

# What a process inherits from the emulator's environment (a container sees nothing of the host's).
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")
PYTHON_NAMES = frozenset({"python", "python3"})
# Threads of a stopped process are joined this long at most: one blocked on a pipe that an
# escaped grandchild holds open must not hang a stop.
JOIN_SECONDS = 5.0

# Process groups of every emulator's processes until reaped: killed at interpreter exit, should
# an emulator never be stopped (its own session would keep them alive otherwise).
_LIVE_GROUPS: set[int] = set()


@atexit.register
def _kill_live_groups() -> None:
    for group in list(_LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def inherited_env() -> dict[str, str]:
    """The variables of this process's environment a container process gets (INHERITED_ENV)."""
    return {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}


def exit_status(returncode: int) -> int:
    """A process's exit code as a container reports it: 128 + N when killed by signal N."""
    return returncode if returncode >= 0 else 128 - returncode


class LocalContainerProcess:
    """One container's command as a local process. Construct, then `start()` (OSError when the
    command or the directory is missing or not executable); the callbacks run on the threads
    that read its output and wait for its exit, so they must not block for long."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str] | None = None,
        python: str = sys.executable,
        on_output: Callable[[Stream, str], None] | None = None,
        on_exit: Callable[[int], None] | None = None,
        name: str = "container",
    ) -> None:
        self.argv = [str(part) for part in argv]
        if not self.argv:
            raise ValueError("a process needs a command")
        if self.argv[0] in PYTHON_NAMES:
            self.argv[0] = python
        self.env = dict(env)
        self.cwd = Path(cwd) if cwd is not None else None
        self.name = name
        self._on_output = on_output
        self._on_exit = on_exit
        self.popen: subprocess.Popen[bytes] | None = None
        self._exited = threading.Event()
        self._threads: list[threading.Thread] = []
        self._waiter: threading.Thread | None = None
        self._lock = threading.Lock()
        # SIGTERM went to its group; SIGKILL follows after the grace period unless it exits.
        self.terminated = False

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def start(self) -> LocalContainerProcess:
        """Start the process and the threads that read its output and wait for its exit."""
        popen = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.popen = popen
        _LIVE_GROUPS.add(popen.pid)
        assert popen.stdout is not None and popen.stderr is not None
        readers = [
            threading.Thread(
                target=self._read_output,
                args=(pipe, stream),
                name=f"{self.name}-{stream}",
                daemon=True,
            )
            for pipe, stream in ((popen.stdout, "stdout"), (popen.stderr, "stderr"))
        ]
        self._waiter = threading.Thread(
            target=self._await_exit, args=(readers,), name=f"{self.name}-exit", daemon=True
        )
        with self._lock:
            self._threads = [*readers, self._waiter]
        for thread in [*readers, self._waiter]:
            thread.start()
        return self

    def signal(self, signum: signal.Signals) -> None:
        """Send `signum` to the process group (nothing if it is gone)."""
        if self.popen is not None:
            signal_group(self.popen, signum)

    def terminate(self, grace_seconds: float) -> None:
        """SIGTERM to the process group, SIGKILL `grace_seconds` later if it still runs; once
        (later calls do nothing). Returns at once."""
        with self._lock:
            if self.popen is None or self.terminated or self.exited:
                return
            self.terminated = True
            killer = threading.Thread(
                target=self._kill_after, args=(grace_seconds,), name=f"{self.name}-kill"
            )
            killer.daemon = True
            self._threads.append(killer)
        self.signal(signal.SIGTERM)
        killer.start()

    def kill(self) -> None:
        """SIGKILL to the process group."""
        self.signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> bool:
        """Whether it exited (and its exit was passed on) within `timeout` seconds."""
        if self._waiter is None:
            return False
        self._waiter.join(timeout)
        return not self._waiter.is_alive()

    def join(self, timeout: float = JOIN_SECONDS) -> None:
        """Join the threads that watch it, each for `timeout` seconds at most."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread() and thread.ident is not None:
                thread.join(timeout)

    def _kill_after(self, grace_seconds: float) -> None:
        if not self._exited.wait(grace_seconds):
            self.kill()

    def _read_output(self, pipe: IO[bytes], stream: Stream) -> None:
        with pipe:
            for line in pipe:
                text = line.decode(errors="replace").removesuffix("\n").removesuffix("\r")
                if self._on_output is not None:
                    self._on_output(stream, text)

    def _await_exit(self, readers: Sequence[threading.Thread]) -> None:
        assert self.popen is not None
        code = exit_status(self.popen.wait())
        self._exited.set()
        # A container ends with its main process: nothing it left behind runs on.
        signal_group(self.popen, signal.SIGKILL)
        _LIVE_GROUPS.discard(self.popen.pid)
        # Every line is passed on before the exit is.
        for reader in readers:
            reader.join()
        if self._on_exit is not None:
            self._on_exit(code)


def stop_processes(processes: Iterable[LocalContainerProcess], grace_seconds: float) -> None:
    """SIGTERM the groups of `processes` (`terminate`: SIGKILL to those still running
    `grace_seconds` later), wait for them, and join their threads. Call it without holding a
    lock the processes' callbacks take."""
    processes = [process for process in processes if process.popen is not None]
    for process in processes:
        if process.terminated:
            process.signal(signal.SIGTERM)  # again: a stop is a stop
        else:
            process.terminate(grace_seconds)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        process.wait(max(0.0, deadline - time.monotonic()))
    for process in processes:
        process.join(JOIN_SECONDS)


def signal_group(popen: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # The group may be gone already (ProcessLookupError), or hold only zombies (EPERM on macOS).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signum)

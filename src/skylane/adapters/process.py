"""The process adapter: runs of a `process:push` (or pulled `process`) pool run as local
subprocesses of the control plane (or of the worker).

Each run is started through `skylane.adapters.process_supervisor` in a new session (so it has
its own process group, which `cancel` signals as a whole). The supervisor records the exit code
in a file, so statuses survive a restart of the control plane. Everything the adapter knows
about a run is kept on disk under `data_dir() / "process-runs"` (`SKYLANE_HOME` moves it), one
set of files per idempotency key:

- `<key>.json`  state: ref, pid, process start time (to detect pid reuse), argv, working_dir,
  name, labels, created_at (written atomically before `submit` returns; an "intent" version
  without a pid is written just before the process is started, so a crash in between can be
  recovered by `find`)
- `<key>.exit`  `{"exit_code", "ended_at", "pid"}` written by the supervisor when the run ends
- `<key>.out` / `<key>.err`  the run's stdout and stderr

A ref is `"<hostname>:<pid>:<key>"`: the host the run was started on, the supervisor's pid
(which is also the run's process group id) and the idempotency key. `_parse_ref` splits it.

The run's environment is the control plane's own minus every `SKYLANE_*` variable (its API key,
database URL... must never reach a run), plus the request's env (which carries the run's
`SKYLANE_RUN_ID`, `SKYLANE_API_URL` and `SKYLANE_RUN_TOKEN`).

Linux only: liveness and pid reuse are read from `/proc`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from skylane.adapters.base import (
    MemoryResourceCache,
    ProviderLogLine,
    ProviderState,
    ProviderStatus,
    ResourceCache,
    RunContext,
    split_command,
)
from skylane.errors import (
    InvalidInput,
    PermanentProviderError,
    ProviderNotFound,
    TransientProviderError,
)
from skylane.models import Pool
from skylane.security import MASK, is_secret_name
from skylane.settings import Settings, data_dir

log = logging.getLogger(__name__)

SUPERVISOR = Path(__file__).with_name("process_supervisor.py")
KEY_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
# `logs` returns at most this much of the end of each output file.
MAX_LOG_BYTES = 8 * 1024 * 1024
# After SIGKILLing a cancelled run's processes, give its supervisor this long to record the exit
# code before the whole group (supervisor included) is killed.
_SUPERVISOR_GRACE_SECONDS = 2.0

# Popen handles of the runs this process started, keyed by idempotency key, so that ended
# supervisors are reaped (`statuses` polls them) instead of staying zombies.
_PROCESSES: dict[str, subprocess.Popen[bytes]] = {}
_PROCESSES_LOCK = threading.Lock()
_SUBMIT_LOCK = threading.Lock()


def default_argv() -> list[str]:
    """The command a run executes when the template sets none: the skylane runtime. The same
    as `skylane run execute`, without importing the CLI first (faster start of every run)."""
    return [sys.executable, "-m", "skylane.runtime"]


def _masked_env(env: dict[str, str]) -> dict[str, str]:
    # The run token (SKYLANE_RUN_TOKEN) is caught by the secret-name rule too.
    return {k: MASK if is_secret_name(k) else v for k, v in env.items()}


@dataclass(frozen=True, eq=True)
class ProcessRequest:
    """The exact process to start. `env` holds the run token: `repr`, `str` and `redacted()`
    mask it (and any variable whose name looks like a secret)."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict, repr=False)
    working_dir: str | None = None
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    stream_output: bool = True

    __hash__ = None  # type: ignore[assignment]  # holds lists and dicts

    def redacted(self) -> dict[str, Any]:
        """A plain dict of the request, safe to log or show: secrets replaced by "****"."""
        return {
            "argv": list(self.argv),
            "env": _masked_env(self.env),
            "working_dir": self.working_dir,
            "name": self.name,
            "labels": dict(self.labels),
            "stream_output": self.stream_output,
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"ProcessRequest({fields})"

    __str__ = __repr__


# --- helpers ---------------------------------------------------------------------------------


def _validate_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key) or key in (".", ".."):
        raise ValueError(
            f"invalid process run key {key!r}: use only letters, digits, '.', '_' and '-'"
        )
    return key


def _parse_ref(ref: str) -> tuple[str, int, str]:
    """Split a ref `"<hostname>:<pid>:<key>"` into (hostname, pid, key); ValueError if it is
    not one."""
    try:
        host, pid_text, key = ref.rsplit(":", 2)
        pid = int(pid_text)
    except (AttributeError, ValueError):
        raise ValueError(f"not a process run ref: {ref!r}") from None
    if pid <= 0 or not host:
        raise ValueError(f"not a process run ref: {ref!r}")
    return host, pid, _validate_key(key)


def _make_ref(pid: int, key: str) -> str:
    return f"{socket.gethostname()}:{pid}:{key}"


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, process group id, start time in clock ticks) of a pid, from
    /proc/<pid>/stat (fields 3, 5 and 22), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    # The command name (field 2) is in parentheses and may itself contain ") ".
    rest = data[data.rindex(")") + 2 :].split()
    return rest[0], int(rest[2]), int(rest[19])


def _start_time(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[2] if stat else None


def _is_alive(pid: int, start_time: int | None) -> bool:
    """The process `pid` exists, is not a zombie and is the one started at `start_time`."""
    if not Path("/proc/self/stat").exists():  # pragma: no cover - not Linux
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X", "x"):
        return False
    return start_time is None or stat[2] == start_time


def _group_members(pgid: int) -> list[int]:
    """Pids whose process group is `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = _proc_stat(int(entry))
            if stat and stat[1] == pgid and stat[0] not in ("Z", "X", "x"):
                members.append(int(entry))
    return members


def _find_supervisor(exit_file: Path) -> int | None:
    """The pid of a live supervisor started for `exit_file`, found by its command line."""
    needle = b"\0--exit-file\0" + os.fsencode(exit_file) + b"\0--\0"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = b"\0" + f.read()
        except OSError:
            continue
        if needle in cmdline:
            return int(entry)
    return None


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _as_bool(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off")
    return bool(value)


def _str_dict(value: Any, field_name: str) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{field_name} must be an object of string values, got {type(value).__name__}",
            field=f"job_variables.{field_name}",
        )
    return {str(k): _env_value(v) for k, v in value.items() if v is not None}


def _popen_handle(key: str) -> subprocess.Popen[bytes] | None:
    with _PROCESSES_LOCK:
        proc = _PROCESSES.get(key)
    if proc is not None:
        proc.poll()  # reaps an ended supervisor
    return proc


# --- the adapter -----------------------------------------------------------------------------


class ProcessAdapter:
    """Runs as local subprocesses. See the module docstring for the files and the ref format."""

    provider: ClassVar[str] = "process"

    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        *,
        cache: ResourceCache | None = None,
        state_dir: Path | None = None,
        limiter: object | None = None,  # local processes have no provider rate limit
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.cache = cache or MemoryResourceCache()
        self.state_dir = Path(state_dir) if state_dir else data_dir() / "process-runs"

    # -- template and request ----------------------------------------------------------------

    @classmethod
    def default_template(cls) -> dict[str, Any]:
        """The base job template of the process pool type (the shape of Prefect's "process"
        work pool)."""
        return {
            "job_configuration": {
                "command": "{{ command }}",
                "env": "{{ env }}",
                "labels": "{{ labels }}",
                "name": "{{ name }}",
                "working_dir": "{{ working_dir }}",
                "stream_output": "{{ stream_output }}",
            },
            "variables": {
                "type": "object",
                "properties": {
                    "command": {
                        "title": "Command",
                        "description": (
                            "The command that starts the run. Leave it unset to use the skylane "
                            "runtime (`python -m skylane.runtime`, i.e. `skylane run execute`)."
                        ),
                        "type": "string",
                    },
                    "env": {
                        "title": "Environment Variables",
                        "description": (
                            "Environment variables set for the run's process, added to the "
                            "control plane's environment (without its SKYLANE_* variables)."
                        ),
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "default": {},
                    },
                    "labels": {
                        "title": "Labels",
                        "description": "Labels recorded with the run's process.",
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                    },
                    "name": {
                        "title": "Name",
                        "description": "Name given to the run's process.",
                        "type": "string",
                    },
                    "working_dir": {
                        "title": "Working Directory",
                        "description": (
                            "Directory the run's process starts in. A relative path is resolved "
                            "against the control plane's working directory; unset means that "
                            "directory itself."
                        ),
                        "type": "string",
                        "format": "path",
                    },
                    "stream_output": {
                        "title": "Stream Output",
                        "description": (
                            "Keep the run's stdout and stderr (readable as provider logs). "
                            "When false, they are discarded."
                        ),
                        "type": "boolean",
                        "default": True,
                    },
                },
            },
        }

    def render(self, job_configuration: dict[str, Any], context: RunContext) -> ProcessRequest:
        """The process to start for this run. Pure: no I/O and no look at `os.environ`."""
        argv = split_command(job_configuration.get("command")) or default_argv()

        env = _str_dict(job_configuration.get("env"), "env")
        env.update(context.runtime_env())  # the run's id, API URL and token always win
        labels = _str_dict(job_configuration.get("labels"), "labels")
        labels.update(context.labels())

        working_dir = job_configuration.get("working_dir")
        working_dir = str(working_dir) if working_dir not in (None, "") else None
        name = job_configuration.get("name")
        name = str(name) if name not in (None, "") else None
        return ProcessRequest(
            argv=argv,
            env=env,
            working_dir=working_dir,
            name=name,
            labels=labels,
            stream_output=_as_bool(job_configuration.get("stream_output"), True),
        )

    # -- files -------------------------------------------------------------------------------

    def _path(self, key: str, suffix: str) -> Path:
        return self.state_dir / f"{key}{suffix}"

    @contextlib.contextmanager
    def _submit_lock(self) -> Iterator[None]:
        """Serializes submits in this process (threads) and across processes sharing the
        state directory (file lock)."""
        with _SUBMIT_LOCK:
            fd = os.open(self.state_dir / ".submit.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _load(self, key: str) -> dict[str, Any] | None:
        return _read_json(self._path(key, ".json"))

    def _exit_code(self, key: str) -> int | None:
        data = _read_json(self._path(key, ".exit"))
        return None if data is None else int(data["exit_code"])

    # -- submit and find ---------------------------------------------------------------------

    def submit(self, request: ProcessRequest, key: str) -> str:
        """Start the run (once per key) and return its ref."""
        _validate_key(key)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self._submit_lock():
                ref = self.find(key)
                if ref is not None:
                    return ref
                return self._start(request, key)
        except OSError as exc:
            raise TransientProviderError(
                f"could not record the process run in {self.state_dir}: {exc.strerror}"
            ) from None

    def _child_env(self, request: ProcessRequest) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLANE_")}
        env.update(request.env)
        return env

    def _working_dir(self, request: ProcessRequest) -> str:
        if request.working_dir is None:
            return os.getcwd()
        path = os.path.abspath(os.path.expanduser(request.working_dir))
        if not os.path.exists(path):
            raise PermanentProviderError(
                f"working directory {path} does not exist; create it or change the "
                "working_dir job variable",
                field="working_dir",
            )
        if not os.path.isdir(path):
            raise PermanentProviderError(
                f"working directory {path} is not a directory; change the working_dir job variable",
                field="working_dir",
            )
        if not os.access(path, os.X_OK):
            raise PermanentProviderError(
                f"working directory {path} is not accessible (permission denied); fix its "
                "permissions or change the working_dir job variable",
                field="working_dir",
            )
        return path

    def _check_executable(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        program = argv[0]
        if os.sep in program:
            path = os.path.join(cwd, program)
            if not os.path.isfile(path):
                raise PermanentProviderError(
                    f"command {program!r} not found (looked for {path}); fix the command job "
                    "variable",
                    field="command",
                )
            if not os.access(path, os.X_OK):
                raise PermanentProviderError(
                    f"command {program!r} is not executable (permission denied); "
                    f"run `chmod +x {path}` or fix the command job variable",
                    field="command",
                )
            return
        search_path = env.get("PATH", os.defpath)
        if shutil.which(program, path=search_path) is None:
            raise PermanentProviderError(
                f"command {program!r} was not found on the run's PATH; install it or fix the "
                "command job variable",
                field="command",
            )

    def _start(self, request: ProcessRequest, key: str) -> str:
        if not request.argv:
            raise PermanentProviderError("command is empty", field="command")
        cwd = self._working_dir(request)
        env = self._child_env(request)
        self._check_executable(request.argv, cwd, env)

        state_file, exit_file = self._path(key, ".json"), self._path(key, ".exit")
        exit_file.unlink(missing_ok=True)  # a leftover of an earlier start that never happened
        state: dict[str, Any] = {
            "key": key,
            "pid": None,
            "start_time": None,
            "argv": list(request.argv),
            "working_dir": cwd,
            "name": request.name,
            "labels": dict(request.labels),
            "stream_output": request.stream_output,
            "created_at": datetime.now(UTC).isoformat(),
        }
        _write_json_atomic(state_file, state)  # intent: lets `find` recover after a crash

        cmd = [sys.executable, "-I", str(SUPERVISOR), "--exit-file", str(exit_file), "--"]
        cmd += request.argv
        try:
            with contextlib.ExitStack() as stack:
                if request.stream_output:
                    out: Any = stack.enter_context(self._open_output(key, ".out"))
                    err: Any = stack.enter_context(self._open_output(key, ".err"))
                else:
                    out = err = subprocess.DEVNULL
                proc = subprocess.Popen(
                    cmd,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            state_file.unlink(missing_ok=True)
            raise self._translate_start_error(exc, request, cwd) from None

        with _PROCESSES_LOCK:
            _PROCESSES[key] = proc
        ref = _make_ref(proc.pid, key)
        state.update(ref=ref, pid=proc.pid, start_time=_start_time(proc.pid))
        _write_json_atomic(state_file, state)
        log.info("started process run %s: pid %s, cwd %s", key, proc.pid, cwd)
        return ref

    def _open_output(self, key: str, suffix: str) -> Any:
        fd = os.open(self._path(key, suffix), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        return os.fdopen(fd, "wb")

    @staticmethod
    def _translate_start_error(
        exc: OSError, request: ProcessRequest, cwd: str
    ) -> PermanentProviderError | TransientProviderError:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM):
            if exc.filename is not None and os.fspath(exc.filename) == cwd:
                return PermanentProviderError(
                    f"cannot start the run in working directory {cwd}: {exc.strerror}; fix "
                    "the working_dir job variable",
                    field="working_dir",
                )
            return PermanentProviderError(
                f"cannot start command {request.argv[0]!r}: {exc.strerror}; fix the command "
                "job variable",
                field="command",
            )
        return TransientProviderError(
            f"cannot start command {request.argv[0]!r} right now: {exc.strerror}"
        )

    def find(self, key: str) -> str | None:
        """The ref of what was started with `key`, even if it has ended; None if nothing was."""
        _validate_key(key)
        state = self._load(key)
        if state is None:
            return None
        if state.get("pid"):
            return state.get("ref") or _make_ref(int(state["pid"]), key)
        # Only the intent was recorded: the control plane stopped while starting the run.
        # Adopt the supervisor if it was started (it names its exit file on its command line).
        exit_data = _read_json(self._path(key, ".exit"))
        pid = exit_data.get("pid") if exit_data else None
        start_time = None
        if pid is None:
            pid = _find_supervisor(self._path(key, ".exit"))
            start_time = _start_time(pid) if pid else None
        if not pid:
            return None
        ref = _make_ref(int(pid), key)
        state.update(ref=ref, pid=int(pid), start_time=start_time)
        with contextlib.suppress(OSError):
            _write_json_atomic(self._path(key, ".json"), state)
        return ref

    # -- statuses ----------------------------------------------------------------------------

    def _state_for_ref(self, ref: str) -> tuple[str, int, dict[str, Any]] | None:
        """(key, pid, state) of a ref this adapter knows, else None."""
        _, pid, key = _parse_ref(ref)
        state = self._load(key)
        if state is None or state.get("pid") != pid:
            return None
        return key, pid, state

    def statuses(self, refs: list[str]) -> dict[str, ProviderState]:
        """The state of each ref. A ref whose files cannot be read this time (an unexpected
        error, logged) is left out of the answer, so the caller asks again later."""
        result: dict[str, ProviderState] = {}
        for ref in refs:
            try:
                result[ref] = self._status(ref)
            except Exception:
                log.exception("could not read the status of process run %s", ref)
        return result

    def _status(self, ref: str) -> ProviderState:
        try:
            found = self._state_for_ref(ref)
        except ValueError as exc:
            return ProviderState(ProviderStatus.NOT_FOUND, message=str(exc))
        if found is None:
            return ProviderState(ProviderStatus.NOT_FOUND, message="no such process run")
        key, pid, state = found
        proc = _popen_handle(key)

        code = self._exit_code(key)
        if code is None and _is_alive(pid, state.get("start_time")):
            return ProviderState(ProviderStatus.RUNNING)
        if code is None:  # it may have ended between the two checks
            code = self._exit_code(key)
        if code is None:
            detail = ""
            if proc is not None and proc.returncode is not None:
                detail = f" (supervisor exit status {proc.returncode})"
            return ProviderState(
                ProviderStatus.STOPPED,
                message=f"the process ended without recording an exit code{detail}; "
                "it was probably killed",
            )
        if proc is not None and proc.returncode is not None:
            with _PROCESSES_LOCK:
                _PROCESSES.pop(key, None)
        if code == 0:
            return ProviderState(ProviderStatus.SUCCEEDED, exit_code=0)
        if code > 0:
            return ProviderState(
                ProviderStatus.FAILED, exit_code=code, message=f"exited with code {code}"
            )
        return ProviderState(
            ProviderStatus.STOPPED, exit_code=code, message=f"killed by signal {-code}"
        )

    # -- cancel and cleanup ------------------------------------------------------------------

    def cancel(self, ref: str) -> None:
        """SIGTERM the run's process group; SIGKILL what is left after
        `settings.cancel_grace_seconds` (from a timer thread: this call does not block).
        Calling again re-sends SIGTERM, or SIGKILLs at once when the grace since the first
        cancel has passed (also after a restart of the control plane)."""
        try:
            found = self._state_for_ref(ref)
        except ValueError as exc:
            raise ProviderNotFound(str(exc)) from None
        if found is None:
            raise ProviderNotFound(f"no process run for ref {ref}")
        key, pid, state = found
        _popen_handle(key)
        start_time = state.get("start_time")
        if self._exit_code(key) is not None or not _is_alive(pid, start_time):
            return

        grace = float(self.settings.cancel_grace_seconds)
        now = time.time()
        first = state.get("cancel_requested_at")
        if first is None:
            state["cancel_requested_at"] = now
            with contextlib.suppress(OSError):
                _write_json_atomic(self._path(key, ".json"), state)
            first = now
        remaining = max(0.0, float(first) + grace - now)
        if remaining == 0.0 and first != now:
            _kill_run(pid, start_time)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        timer = threading.Timer(remaining, _kill_run, args=(pid, start_time))
        timer.daemon = True
        timer.start()

    def describe(self, request: ProcessRequest) -> dict[str, Any]:
        return request.redacted()

    def teardown(self) -> None:
        """Nothing outlives a process run but its files, which `cleanup` removes."""

    def cleanup(self, ref: str) -> None:
        """Remove the run's files. Unknown refs and missing files are fine."""
        try:
            found = self._state_for_ref(ref)
        except ValueError:
            return
        if found is None:
            return
        key = found[0]
        proc = _popen_handle(key)
        if proc is not None and proc.returncode is not None:
            with _PROCESSES_LOCK:
                _PROCESSES.pop(key, None)
        for suffix in (".json", ".exit", ".out", ".err"):
            self._path(key, suffix).unlink(missing_ok=True)

    # -- logs --------------------------------------------------------------------------------

    def logs(self, ref: str, since: datetime | None = None) -> list[ProviderLogLine]:
        """The run's stdout then stderr lines. The files carry no per-line times, so every line
        of a file gets the file's modification time, and `since` keeps a file's lines only when
        the file was modified after it (naive `since` is taken as UTC). At most the last
        `MAX_LOG_BYTES` of each file are read."""
        try:
            found = self._state_for_ref(ref)
        except ValueError as exc:
            raise ProviderNotFound(str(exc)) from None
        if found is None:
            raise ProviderNotFound(f"no process run for ref {ref}")
        key = found[0]
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        lines: list[ProviderLogLine] = []
        for suffix, stream in ((".out", "stdout"), (".err", "stderr")):
            path = self._path(key, suffix)
            try:
                with path.open("rb") as f:
                    stat = os.fstat(f.fileno())
                    mtime = datetime.fromtimestamp(stat.st_mtime, UTC)
                    if since is not None and mtime <= since:
                        continue
                    truncated = stat.st_size > MAX_LOG_BYTES
                    if truncated:
                        f.seek(stat.st_size - MAX_LOG_BYTES)
                    data = f.read()
            except FileNotFoundError:
                continue
            text = data.decode("utf-8", "replace").splitlines()
            if truncated and text:
                text = text[1:]  # the first line is cut
            lines.extend(ProviderLogLine(timestamp=mtime, stream=stream, message=t) for t in text)
        return lines


def _kill_run(pid: int, start_time: int | None) -> None:
    """SIGKILL every process of the run's group except the supervisor, so it can still record
    how the run ended; then, if the supervisor is still there a little later, the whole group."""
    if not _is_alive(pid, start_time):
        return
    for _ in range(2):  # a second pass for processes forked meanwhile
        for member in _group_members(pid):
            if member != pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(member, signal.SIGKILL)

    def last_resort() -> None:
        if _is_alive(pid, start_time):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    timer = threading.Timer(_SUPERVISOR_GRACE_SECONDS, last_resort)
    timer.daemon = True
    timer.start()

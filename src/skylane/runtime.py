"""`skylane run execute`: what runs inside every container and subprocess.

It reads `SKYLANE_RUN_ID`, `SKYLANE_API_URL` and `SKYLANE_RUN_TOKEN`, fetches what to run,
reports RUNNING, checks out the deployment's git source at its pinned commit when it has one
(and reports the commit), loads the entrypoint, converts and passes the parameters, and
reports COMPLETED or FAILED (with the traceback). Everything the flow writes to file descriptors
1 and 2 (print, C extensions, child processes) and every logging record is shipped to the API in
batches while still being echoed to the original streams, so the provider's own log view keeps
working. On SIGTERM the run is reported CANCELLED if it was being cancelled, CRASHED otherwise.

Every state report carries a transition id fixed before the first try, so a report retried
after a network error can never apply twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import queue
import signal
import sys
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from skylane.client import ApiUnreachable, SkylaneClient
from skylane.entrypoints import call_arguments, coerce_parameters, load_entrypoint
from skylane.errors import IllegalTransition, SkylaneError
from skylane.git_source import checkout
from skylane.models import RunExecution, RunState
from skylane.settings import get_settings

ENV_RUN_ID = "SKYLANE_RUN_ID"
ENV_API_URL = "SKYLANE_API_URL"
ENV_RUN_TOKEN = "SKYLANE_RUN_TOKEN"

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_MISCONFIGURED = 2
EXIT_TERMINATED = 128 + signal.SIGTERM

MAX_MESSAGE_CHARS = 50_000
MAX_BUFFERED_LOGS = 50_000
LOG_BATCH_SIZE = 500


class RunTerminated(BaseException):
    """Raised in the main thread on SIGTERM/SIGINT. A BaseException, so that a flow's own
    `except Exception` does not swallow it."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --- log shipping ----------------------------------------------------------------------------


class LogShipper:
    """Collects log lines from any thread and sends them in batches from one thread."""

    def __init__(
        self, client: SkylaneClient, run_id: str, *, interval: float, echo: Callable[[str], None]
    ) -> None:
        self._client = client
        self._run_id = run_id
        self._interval = interval
        self._echo = echo  # where the shipper reports its own trouble (the original stderr)
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=MAX_BUFFERED_LOGS)
        self._stop = threading.Event()
        self._dropped = 0
        self._thread = threading.Thread(target=self._loop, name="skylane-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def emit(self, level: str, stream: str, message: str) -> None:
        line = {"timestamp": _now(), "level": level, "stream": stream, "message": message}
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            # Never block the flow on log shipping; count what was lost and say so once sent.
            self._dropped += 1

    def _drain(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        with contextlib.suppress(queue.Empty):
            while len(batch) < LOG_BATCH_SIZE:
                batch.append(self._queue.get_nowait())
        if self._dropped and len(batch) < LOG_BATCH_SIZE:
            dropped, self._dropped = self._dropped, 0
            batch.append(
                {
                    "timestamp": _now(),
                    "level": "WARNING",
                    "stream": "system",
                    "message": f"{dropped} log lines were dropped (buffer full)",
                }
            )
        return batch

    def _send(self, batch: list[dict[str, Any]]) -> None:
        try:
            _with_retries(self._client.send_logs, self._run_id, batch)
        except SkylaneError as exc:
            self._echo(f"skylane: could not ship {len(batch)} log lines: {exc}\n")

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            while batch := self._drain():
                self._send(batch)

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=30)
        while batch := self._drain():
            self._send(batch)


class ApiLogHandler(logging.Handler):
    """Ships logging records; formatting matches what the echo handler prints."""

    def __init__(self, shipper: LogShipper) -> None:
        super().__init__(level=logging.NOTSET)
        self._shipper = shipper

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("skylane.client", "httpx", "httpcore")):
            return  # our own HTTP traffic would feed back into itself
        try:
            self._shipper.emit(record.levelname, "logging", self.format(record))
        except Exception:
            self.handleError(record)


class FdCapture:
    """Redirects one file descriptor into a pipe; a thread splits it into lines for the
    shipper and copies the bytes to the original destination."""

    def __init__(self, fd: int, stream: str, shipper: LogShipper) -> None:
        self.fd = fd
        self.stream = stream
        self._shipper = shipper
        self.original = os.dup(fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self._read_end = read_end
        self._thread = threading.Thread(target=self._pump, name=f"skylane-{stream}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        pending = b""
        while chunk := os.read(self._read_end, 65536):
            with contextlib.suppress(OSError):
                os.write(self.original, chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._ship(line)
        if pending:
            self._ship(pending)
        os.close(self._read_end)

    def _ship(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        self._shipper.emit("ERROR" if self.stream == "stderr" else "INFO", self.stream, text)

    def close(self) -> None:
        # Putting the original back closes the pipe's last write end: the pump sees EOF.
        os.dup2(self.original, self.fd)
        self._thread.join(timeout=10)
        os.close(self.original)


@contextlib.contextmanager
def captured_output(shipper: LogShipper) -> Iterator[Callable[[str], None]]:
    """Capture fds 1 and 2 and route logging to the API. Yields a writer to the original
    stderr, for the runtime's own messages."""
    with signals_deferred():
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            # A pipe makes Python block-buffer; line buffering keeps log order and timestamps.
            with contextlib.suppress(AttributeError, ValueError):
                stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        out = FdCapture(1, "stdout", shipper)
        err = FdCapture(2, "stderr", shipper)
        original_stderr = err.original
        root = logging.getLogger()
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s - %(message)s")
        api_handler = ApiLogHandler(shipper)
        api_handler.setFormatter(formatter)
        # Echo records to the original stderr (not the captured one: they'd be shipped twice).
        echo_handler = logging.StreamHandler(os.fdopen(os.dup(original_stderr), "w", buffering=1))
        echo_handler.setFormatter(formatter)
        old_level = root.level
        root.addHandler(api_handler)
        root.addHandler(echo_handler)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)

    def write_original(text: str) -> None:
        with contextlib.suppress(OSError):
            os.write(original_stderr, text.encode())

    try:
        yield write_original
    finally:
        with signals_deferred():
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            root.removeHandler(api_handler)
            root.removeHandler(echo_handler)
            echo_handler.close()
            root.setLevel(old_level)
            out.close()
            err.close()


# --- talking to the API -------------------------------------------------------------------------


def _with_retries(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Retry through network trouble for up to two minutes; the API may be restarting."""
    retrying = retry(
        retry=retry_if_exception_type(ApiUnreachable),
        wait=wait_exponential(multiplier=0.5, max=10),
        stop=stop_after_delay(120),
        reraise=True,
    )
    return retrying(fn)(*args, **kwargs)


@dataclass
class RunReporter:
    client: SkylaneClient
    run_id: str

    def set_state(self, state: RunState, message: str | None = None) -> RunState:
        """Report a state; returns the state the run is in afterwards."""
        transition_id = uuid.uuid4().hex  # fixed across retries of this one report
        if message and len(message) > MAX_MESSAGE_CHARS:
            message = "…" + message[-MAX_MESSAGE_CHARS:]
        result = _with_retries(
            self.client.set_state, self.run_id, state, message=message, transition_id=transition_id
        )
        return result.run.state

    def current_state(self) -> RunState:
        return _with_retries(self.client.get_run, self.run_id).state


class Heartbeat:
    def __init__(self, client: SkylaneClient, run_id: str, interval: float) -> None:
        self._client, self._run_id, self._interval = client, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="skylane-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(SkylaneError):
                self._client.heartbeat(self._run_id)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=5)


# --- executing ------------------------------------------------------------------------------------


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT while setting up or tearing down (starting threads, swapping file
    descriptors): a signal arriving meanwhile is delivered, and raised, right after, at a point
    where everything is in a known state."""
    held = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise RunTerminated(signal.Signals(signum).name)


def _call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    args, keywords = call_arguments(fn, kwargs)
    if inspect.iscoroutinefunction(fn):
        return asyncio.run(fn(*args, **keywords))
    result = fn(*args, **keywords)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    return result


def _read_environment() -> tuple[str, str, str]:
    missing = [
        name for name in (ENV_RUN_ID, ENV_API_URL, ENV_RUN_TOKEN) if not os.environ.get(name)
    ]
    if missing:
        raise SkylaneError(
            f"missing environment variable(s) {', '.join(missing)}: `skylane run execute` runs "
            "inside a run started by skylane, which sets them",
            field=missing[0],
        )
    return os.environ[ENV_RUN_ID], os.environ[ENV_API_URL], os.environ[ENV_RUN_TOKEN]


def execute() -> int:
    """Execute the run described by the environment; returns the process exit code."""
    try:
        run_id, api_url, token = _read_environment()
    except SkylaneError as exc:
        print(f"skylane: {exc}", file=sys.stderr)
        return EXIT_MISCONFIGURED
    settings = get_settings()
    # Our own variables are not the flow's business; the token especially.
    os.environ.pop(ENV_RUN_TOKEN, None)
    with SkylaneClient(api_url, token) as client:
        return _execute(client, run_id, settings.heartbeat_seconds, settings.log_batch_seconds)


def _execute(
    client: SkylaneClient, run_id: str, heartbeat_seconds: float, log_batch_seconds: float
) -> int:
    reporter = RunReporter(client, run_id)
    stderr = sys.stderr
    # From the first moment: a SIGTERM (a cancel, or the provider stopping the container) must
    # always end in a report, even before the flow starts.
    previous = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGINT)}
    shipper: LogShipper | None = None
    heartbeat: Heartbeat | None = None
    final: tuple[RunState, str | None]
    try:
        try:
            execution = _with_retries(client.get_execution, run_id)
            reporter.set_state(RunState.RUNNING)
        except IllegalTransition as exc:
            print(f"skylane: run {run_id} is {exc.current_state}; not executing it", file=stderr)
            return EXIT_COMPLETED if exc.current_state == RunState.COMPLETED else EXIT_FAILED
        except SkylaneError as exc:
            print(f"skylane: cannot start run {run_id}: {exc}", file=stderr)
            return EXIT_FAILED
        with signals_deferred():
            shipper = LogShipper(
                client, run_id, interval=log_batch_seconds, echo=lambda text: stderr.write(text)
            )
            shipper.start()
            heartbeat = Heartbeat(client, run_id, heartbeat_seconds)
            heartbeat.start()
        with captured_output(shipper):
            final = _fetch_source(client, execution) or _run_flow(
                execution.entrypoint, execution.parameters
            )
    except RunTerminated as exc:
        final = (RunState.CRASHED, f"terminated by {exc}")
    finally:
        # A second SIGTERM while reporting must not lose the report.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if heartbeat is not None:
            heartbeat.stop()
        if shipper is not None:
            shipper.close()

    state, message = final
    try:
        if state == RunState.CRASHED and reporter.current_state() == RunState.CANCELLING:
            state, message = RunState.CANCELLED, "cancelled while running"
        reporter.set_state(state, message)
    except IllegalTransition as exc:
        print(f"skylane: run is already {exc.current_state}; not reporting {state}", file=stderr)
    except SkylaneError as exc:
        print(f"skylane: could not report {state}: {exc}", file=stderr)
    if state == RunState.COMPLETED:
        return EXIT_COMPLETED
    if state in (RunState.CANCELLED, RunState.CRASHED):
        return EXIT_TERMINATED
    return EXIT_FAILED


def _fetch_source(
    client: SkylaneClient, execution: RunExecution
) -> tuple[RunState, str | None] | None:
    """For a git-sourced deployment: check out its pinned commit into a new directory, make
    that the working directory and report the commit. None when the flow may start; else the
    run's final state."""
    if execution.source is None:
        return None
    log = logging.getLogger("skylane.runtime")
    source = execution.source
    dest = tempfile.mkdtemp(prefix="skylane-source-")
    try:
        commit = checkout(source, dest)
        _with_retries(client.record_source_commit, execution.run_id, commit)
    except SkylaneError as exc:
        log.error("cannot get the flow's code from git: %s", exc)
        return RunState.FAILED, f"cannot get the flow's code from git: {exc}"
    log.info("checked out %s at %s", source.git, commit)
    os.chdir(dest)
    return None


def _run_flow(entrypoint: str, parameters: dict[str, Any]) -> tuple[RunState, str | None]:
    """Load and call the flow; any failure becomes (FAILED, traceback). Runs while output is
    captured, so the traceback also lands in the run's logs."""
    log = logging.getLogger("skylane.runtime")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        fn = load_entrypoint(entrypoint)
        kwargs = coerce_parameters(fn, parameters)
    except SkylaneError as exc:
        log.error("cannot start the flow: %s", exc)
        return RunState.FAILED, f"cannot start the flow: {exc}"
    try:
        _call(fn, kwargs)
    except RunTerminated:
        raise
    except SystemExit as exc:
        if exc.code in (None, 0):
            return RunState.COMPLETED, None
        text = traceback.format_exc()
        log.error("flow exited with %s\n%s", exc.code, text)
        return RunState.FAILED, text
    except BaseException:
        text = traceback.format_exc()
        log.error("flow failed\n%s", text)
        return RunState.FAILED, text
    return RunState.COMPLETED, None


def main() -> None:
    sys.exit(execute())


if __name__ == "__main__":
    main()

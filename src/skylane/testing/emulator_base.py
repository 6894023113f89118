"""What the cloud API emulators (`gcp.CloudRunEmulator`, `azure.AciEmulator`) share: one
concept, an HTTP emulator of a cloud API with injectable faults, a log of the calls it received,
a control API under `/emulator/` and, optionally, containers run as local processes by a
launcher thread.

`EmulatorBase` holds that machinery; each emulator adds its API, its state and the names its
cloud uses. Faults and received requests are dataclasses of each emulator (their fields differ);
`FaultBase` and `CallRecord` give them their common behaviour. The API method a call or a fault
is about is named by the field `call_field` names (`rpc` for Google, `operation` for ARM), also
readable as `.call`."""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, cast
from urllib.parse import parse_qs, unquote, urlsplit

from skylane.testing.container_processes import stop_processes
from skylane.testing.local_http import LocalHandler, LocalService

FaultKind = Literal["error", "timeout", "delay"]
FAULT_KINDS: frozenset[str] = frozenset({"error", "timeout", "delay"})
CONTROL_PREFIX = "/emulator"


def timestamp(at: float) -> str:
    """RFC 3339 in UTC with microseconds, as both clouds write times."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_fields(values: Mapping[str, Any], cls: type, what: str) -> None:
    """Refuse `values` that are not fields of the dataclass `cls` (a typo must not silently
    turn a `what` into another one)."""
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {what} fields {sorted(unknown)}; known: {sorted(known)}")


def check_plan_fields(values: Mapping[str, Any], plan: type) -> None:
    """Refuse plan values that are not fields of the `plan` dataclass."""
    check_fields(values, plan, "plan")


def check_process_options(
    run_containers: bool,
    clock: Callable[[], float],
    workdir: str | os.PathLike[str] | None,
    stop_grace_seconds: float,
) -> None:
    """Validate the options of containers run as processes (`run_containers`)."""
    if run_containers and clock is not time.time:
        # Processes run in real time; a start or timeout due by another clock never comes.
        raise ValueError("run_containers needs the real clock (time.time)")
    if workdir is not None and not Path(workdir).is_dir():
        raise ValueError(f"workdir {os.fspath(workdir)!r} is not a directory")
    if stop_grace_seconds < 0:
        raise ValueError(f"stop_grace_seconds must be >= 0, not {stop_grace_seconds}")


def route_call(
    routes: Sequence[tuple[re.Pattern[str], Mapping[str, str]]], method: str, path: str
) -> tuple[str | None, dict[str, str]]:
    """The API method `routes` (patterns with the method each HTTP method calls) give a call,
    and the path's named groups; (None, {}) for an unknown route."""
    for pattern, methods in routes:
        matched = pattern.match(path)
        if matched and method in methods:
            return methods[method], matched.groupdict()
    return None, {}


def start_failure(exc: OSError, program: str) -> str:
    """Why a container's process could not start (the command, or the workdir, is missing or
    not executable)."""
    return f"{exc.filename or program}: {exc.strerror or exc}"


def add_address_arguments(parser: argparse.ArgumentParser) -> None:
    """A standalone emulator's `--host` and `--port`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: free)")


def add_process_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """A standalone emulator's `--run-containers` (`what` it runs) and `--workdir`."""
    parser.add_argument("--run-containers", action="store_true", help=f"run {what}")
    parser.add_argument(
        "--workdir", default=None, metavar="DIR", help="directory the processes run in"
    )


def parse_call(handler: LocalHandler) -> tuple[str, str, dict[str, str]]:
    """An API call's method (upper case), unquoted path and query (each parameter's last
    value)."""
    parts = urlsplit(handler.path)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return handler.command.upper(), unquote(parts.path), query


def logged_body(body_json: Any, body: bytes) -> Any:
    """A request body as the request log keeps it: its JSON, else its text (None if empty)."""
    return body_json if body_json is not None else (body.decode(errors="replace") or None)


class CallRecord:
    """For the emulators' fault and request dataclasses: `call`, the API method they name (in
    the field `call_field`), and `to_json`."""

    call_field: ClassVar[str]

    @property
    def call(self) -> str | None:
        return cast(str | None, getattr(self, self.call_field))

    def to_json(self) -> dict[str, Any]:
        return asdict(cast(Any, self))


class FaultBase(CallRecord):
    """What the emulators' `Fault` dataclasses share: validation of what a fault hits and how
    often, matching (`path` an fnmatch pattern, case-insensitive with `fold_path_case`),
    `exhausted`, and the JSON form."""

    fold_path_case: ClassVar[bool] = False
    kind: str
    method: str
    path: str
    count: int | None
    seconds: float
    drop: bool
    id: str
    fired: int

    def _check_target(self) -> None:
        """Check `kind` and the names of what the fault hits; upper-case `method`."""
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        for name in (self.call_field, "method", "path"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string ('*' for any)")
        self.method = self.method.upper()

    def _check_limits(self) -> None:
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must be >= 0 or None, not {self.count}")
        if self.seconds < 0:
            raise ValueError(f"seconds must be >= 0, not {self.seconds}")

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def matches(self, call: str | None, method: str, path: str) -> bool:
        pattern = self.path
        if self.fold_path_case:
            path, pattern = path.lower(), pattern.lower()
        return (
            (self.call == "*" or self.call == call)
            and (self.method == "*" or self.method == method.upper())
            and (self.path == "*" or fnmatch.fnmatchcase(path, pattern))
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """A fault from its JSON form; unknown keys are refused (a typo must not silently turn
        a fault into another one)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a fault is a JSON object, not {type(data).__name__}")
        values = dict(data)
        check_fields(values, cls, "fault")
        values.pop("fired", None)
        if values.get("id") is None:
            values.pop("id", None)
        return cls(**values)


class EmulatorBase(LocalService):
    """Faults, the request log, the control API's common routes and the lifecycle of the
    process launcher. An emulator sets `call_field`, `fault_class` and `request_class`; defines
    `_init_state` (which sets `_faults` and `_requests` among its own state), `_run_launcher`,
    `_serve`, `configure`, `_control_summary` and `_control_route`; and calls `_init_emulator`
    from its `__init__`, after `LocalService.__init__`."""

    call_field: ClassVar[str]
    fault_class: ClassVar[type[FaultBase]]
    request_class: ClassVar[type[CallRecord]]
    # Whether the control API unquotes the path before routing it.
    unquote_control_path: ClassVar[bool] = False

    _faults: list[Any]
    _requests: list[Any]
    _processes: list[Any]

    def _init_emulator(
        self,
        clock: Callable[[], float],
        run_containers: bool,
        workdir: str | os.PathLike[str] | None,
        python: str,
        stop_grace_seconds: float,
    ) -> None:
        self._clock = clock
        self.run_containers = run_containers
        self.workdir = Path(workdir) if workdir is not None else None
        self.python = python
        self.stop_grace_seconds = float(stop_grace_seconds)
        self._lock = threading.Condition(threading.RLock())
        # Launched processes until their exit is recorded; reset() does not forget them.
        self._processes = []
        self._launcher: threading.Thread | None = None
        self._closing = False

    def _init_state(self) -> None:
        raise NotImplementedError

    def _run_launcher(self) -> None:
        raise NotImplementedError

    def _serve(self, handler: Any, body: bytes) -> None:
        raise NotImplementedError

    def configure(self, **values: Any) -> None:
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all state (resources, plans, faults, the request log...) and stop the
        processes of containers."""
        with self._lock:
            processes = list(self._processes)
            for process in processes:
                process.discarded = True
            self._init_state()
        # Without holding the lock, which the processes' callbacks need.
        stop_processes([p.runner for p in processes if p.runner], self.stop_grace_seconds)

    def start(self) -> Self:
        LocalService.start(self)
        with self._lock:
            if self.run_containers and self._launcher is None:
                self._closing = False
                self._launcher = threading.Thread(
                    target=self._run_launcher, name=f"{self.thread_name}-launcher", daemon=True
                )
                self._launcher.start()
        return self

    def stop(self) -> None:
        """Stop serving, then stop every process (SIGTERM, SIGKILL after the grace period) and
        join the threads that watched them."""
        LocalService.stop(self)
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._launcher is not None:
            self._launcher.join()
            self._launcher = None
        with self._lock:
            processes = list(self._processes)
        # Without holding the lock, which the processes' callbacks need.
        stop_processes([p.runner for p in processes if p.runner], self.stop_grace_seconds)

    # -- faults ----------------------------------------------------------------------------

    def add_fault(self, fault: Any) -> Any:
        with self._lock:
            self._faults.append(fault)
        return fault

    def faults(self) -> list[Any]:
        """Copies of the faults, in the order they are tried."""
        with self._lock:
            return [copy.copy(f) for f in self._faults]

    def remove_fault(self, fault_id: str) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) < before

    def clear_faults(self) -> int:
        with self._lock:
            count, self._faults = len(self._faults), []
            return count

    def _decide(self, call: str | None, method: str, path: str) -> Any:
        """The fault that applies to this call (a copy, counted as fired), or None."""
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault.matches(call, method, path):
                    continue
                fault.fired += 1
                return copy.copy(fault)
            return None

    # -- request log -----------------------------------------------------------------------

    def _requests_of(self, call: str | None, method: str | None) -> list[Any]:
        with self._lock:
            return [
                r
                for r in self._requests
                if (call is None or r.call == call)
                and (method is None or r.method == method.upper())
            ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _wait_for_requests(self, count: int, call: str | None, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = self._requests_of(call, None)
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(found)} of {count} {call or 'any'} calls")
                self._lock.wait(remaining)

    def _request_log(self, **fields: Any) -> Callable[..., None]:
        """`log(status, response, fault, dropped=False)`, which logs the call `fields` describe
        (those of `request_class` but the answer's) as answered so."""

        def log(status: int, response: Any, fault: FaultBase | None, dropped: bool = False) -> None:
            # Logged before answering, so a client that got its answer always finds the call.
            self._record(
                self.request_class(
                    **fields,
                    status=status,
                    fault=fault.id if fault else None,
                    dropped=dropped,
                    response=response,
                )
            )

        return log

    def _record(self, request: CallRecord) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    # -- serving ---------------------------------------------------------------------------

    def _answer(
        self,
        handler: EmulatorHandler,
        fault: FaultBase | None,
        record: Callable[..., None],
        status: int,
        answer: Any,
        reply: Callable[[], None],
    ) -> None:
        """Log a call that was done and answer it (`reply`), as a "timeout" or "delay" fault
        says: a held answer waits `seconds` (cut short by stop()), a dropped one is never
        sent."""
        if fault is not None and fault.kind == "timeout":
            record(status, answer, fault, dropped=fault.drop)
            self._stopping.wait(fault.seconds)
            if fault.drop or self._stopping.is_set():
                handler.drop()
                return
        else:
            record(status, answer, fault)
            if fault is not None and fault.kind == "delay":
                self._stopping.wait(fault.seconds)
        reply()

    # -- control API -----------------------------------------------------------------------

    def _control_summary(self) -> dict[str, Any]:
        """What `GET /emulator` answers (called holding the lock)."""
        raise NotImplementedError

    def _control_route(
        self, method: str, route: str, query: Mapping[str, str], payload: Any
    ) -> tuple[int, Any] | None:
        """The emulator's own control routes; None when none matches."""
        raise NotImplementedError

    def _control(self, method: str, raw_path: str, body: bytes) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path) if self.unquote_control_path else parts.path
        route = path[len(CONTROL_PREFIX) :].strip("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError:
            return 400, {"error": "the body is not JSON"}
        try:
            if route == "" and method == "GET":
                with self._lock:
                    return 200, self._control_summary()
            if route == "requests" and method == "GET":
                found = self._requests_of(query.get(self.call_field), query.get("method"))
                return 200, [r.to_json() for r in found]
            if route == "requests" and method == "DELETE":
                self.clear_requests()
                return 200, {"cleared": True}
            if route == "reset" and method == "POST":
                self.reset()
                return 200, {"reset": True}
            if route == "faults":
                if method == "GET":
                    return 200, {"faults": [f.to_json() for f in self.faults()]}
                if method == "POST":
                    if isinstance(payload, Mapping) and "faults" in payload:
                        payload = payload["faults"]
                    items = payload if isinstance(payload, list) else [payload]
                    faults = [self.fault_class.from_json(i) for i in items]
                    added = [self.add_fault(f) for f in faults]
                    return 200, {"faults": [f.to_json() for f in added]}
                if method == "DELETE":
                    return 200, {"cleared": self.clear_faults()}
            if route.startswith("faults/") and method == "DELETE":
                fault_id = route.removeprefix("faults/")
                if self.remove_fault(fault_id):
                    return 200, {"removed": fault_id}
                return 404, {"error": f"no fault {fault_id!r}"}
            if route == "configure" and method == "POST":
                if not isinstance(payload, Mapping):
                    return 400, {"error": "the body must be a JSON object"}
                self.configure(**payload)
                return 200, {"configured": dict(payload)}
            answered = self._control_route(method, route, query, payload)
            if answered is not None:
                return answered
        except KeyError as exc:
            return 404, {"error": f"not found: {exc}"}
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no control route {method} {parts.path}"}


class EmulatorHandler(LocalHandler):
    """The request handler of an `EmulatorBase`: `/emulator/...` goes to its control API,
    anything else to `_serve`; subclasses define `reply`."""

    def do_GET(self) -> None:
        body = self.read_body()
        service = cast(EmulatorBase, self.server.service)
        route = urlsplit(self.path).path
        if route == CONTROL_PREFIX or route.startswith(CONTROL_PREFIX + "/"):
            status, answer = service._control(self.command, self.path, body)
            self.reply(status, answer)
            return
        service._serve(self, body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def reply(self, status: int, answer: Any) -> None:
        raise NotImplementedError

    def send(self, status: int, payload: bytes, headers: Iterable[tuple[str, str]]) -> None:
        """Answer `status` with `headers` and `payload`."""
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            # The client gave up waiting (a held answer): nothing left to tell it.
            self.close_connection = True

"""A fault-injecting HTTP proxy between boto3 and moto_server, for end-to-end fault tests.

Why: moto answers every call correctly and at once, so it cannot show what skylane does when AWS
throttles, refuses a call, or starts a task but never tells the caller (a read timeout after the
request went through: the case that makes idempotency matter). `FaultProxy` sits in front of a
moto_server endpoint, forwards calls unchanged, and answers the calls that match a fault rule the
way AWS would fail them. Every call is logged (operation, time, outcome, request and response
JSON), so a test can also count the tasks started per `startedBy` or check that a rate limit was
never exceeded (`max_calls_in_window`, `token_bucket_violations`).

From a test::

    from skylane.testing.moto import moto_server
    from skylane.testing.aws_faults import FaultProxy

    with moto_server() as moto, FaultProxy(moto) as proxy:
        proxy.throttle("RunTask", probability=1, count=2)  # the next 2 RunTask calls are throttled
        proxy.timeout_after_forward("RunTask", delay=5)    # then one goes through, unanswered
        ecs = boto3.client("ecs", endpoint_url=proxy.url, region_name="us-east-1")
        ...
        run_tasks = proxy.calls("RunTask")
        assert [c.outcome for c in run_tasks][:3] == ["throttled", "throttled", "timeout"]

Operations are named the way AWS names them: the part after the dot of `X-Amz-Target` for the
JSON protocols (ECS: `AmazonEC2ContainerServiceV20141113.RunTask` -> `RunTask`), else the
`Action` query or form parameter (query protocols: STS, EC2, ...). A rule for `"*"` matches
every call. Rules are tried in the order they were added; the first that matches, still has
fires left (`count`) and wins its draw (`probability`, from a RNG seeded with `seed`) applies.
Rule kinds:

- `throttle`: answer `400 ThrottlingException` ("Rate exceeded") without forwarding, with an
  optional `Retry-After` header;
- `error`: answer another AWS error (default `400 AccessDeniedException`) without forwarding;
- `timeout_after_forward`: forward the call (moto really does it), then hold the answer `delay`
  seconds and drop the connection (or, with `drop=False`, answer late), so that a client with
  a shorter read timeout gets no answer;
- `delay`: forward the call and answer `seconds` later.

Faults are answered in the caller's protocol: a JSON body `{"__type": code, "message": ...}`
with `x-amzn-ErrorType` for the JSON protocols, an XML `<Response><Errors><Error>` document for
the query protocols; botocore reads the error code from either.

Control API, served by the proxy itself under `/__faults__/` (never forwarded, never logged), so
that a test can drive a proxy running in another process (`RemoteFaultProxy` wraps it):

- `GET /__faults__/rules`: `{"rules": [rule, ...]}`, with how often each has fired;
- `POST /__faults__/rules`: add one rule (a JSON object), a list of rules, or
  `{"rules": [...]}`; answers `{"rules": [added rule, ...]}` with their ids. A rule is
  `{"kind": "throttle" | "error" | "timeout_after_forward" | "delay", "operation": "RunTask",
  "probability": 1.0, "count": null, "retry_after": null, "code": ..., "message": ...,
  "status": 400, "seconds": 0, "drop": true}` (only `kind` and `operation` are required;
  `seconds` is the delay of both `delay` and `timeout_after_forward`);
- `DELETE /__faults__/rules`: remove every rule; `DELETE /__faults__/rules/<id>`: one rule;
- `GET /__faults__/calls[?operation=RunTask]`: `{"calls": [call, ...]}` in arrival order;
- `DELETE /__faults__/calls`: forget the calls logged so far;
- `POST /__faults__/seed`: `{"seed": 42}` reseeds the RNG of the probabilistic rules;
- `GET /__faults__/`: `{"upstream": ..., "rules": n, "calls": n}`.

Standalone: `python -m skylane.testing.aws_faults --upstream http://127.0.0.1:5000 [--port N]
[--seed N] [--rule JSON]...` prints the proxy's URL on the first line of stdout, then serves
until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import httpx

from skylane.testing.emulator_base import check_fields
from skylane.testing.local_http import (
    LocalHandler,
    LocalService,
    json_or_none,
    serve_until_signalled,
)

Outcome = Literal["forwarded", "throttled", "error", "timeout", "upstream_error"]
RuleKind = Literal["throttle", "error", "timeout_after_forward", "delay"]

RULE_KINDS: frozenset[str] = frozenset({"throttle", "error", "timeout_after_forward", "delay"})
ANY_OPERATION = "*"
CONTROL_PREFIX = "/__faults__"

_DEFAULT_CODES = {"throttle": "ThrottlingException", "error": "AccessDeniedException"}
_DEFAULT_MESSAGES = {
    "throttle": "Rate exceeded",
    "error": "User is not authorized to perform this action (injected by FaultProxy)",
}
# Per-connection headers (RFC 9110 section 7.6.1): never passed on by a proxy.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The proxy reads the whole body before forwarding, sets Host and Content-Length itself, and
# answers `Expect: 100-continue` on its own.
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "content-length", "expect"}


@dataclass
class FaultRule:
    """One fault: which calls it hits (`operation`, `"*"` for all), how often (`probability`
    per matching call, at most `count` times if given) and how (`kind` and its parameters).
    `fired` counts how often it has applied; `id` names it in the control API."""

    kind: RuleKind
    operation: str
    probability: float = 1.0
    count: int | None = None
    # throttle and error: the AWS error answered (code and message default by kind).
    code: str = ""
    message: str = ""
    status: int = 400
    retry_after: float | None = None
    # delay and timeout_after_forward: how long the answer is held back.
    seconds: float = 0.0
    # timeout_after_forward: after the hold, drop the connection (True) or answer late (False).
    drop: bool = True
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(RULE_KINDS)}")
        if not isinstance(self.operation, str) or not self.operation:
            raise ValueError("operation must be an operation name or '*'")
        if not 0.0 <= float(self.probability) <= 1.0:
            raise ValueError(f"probability must be within [0, 1], not {self.probability}")
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must be >= 0 or None, not {self.count}")
        if self.seconds < 0:
            raise ValueError(f"seconds must be >= 0, not {self.seconds}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status, not {self.status}")
        self.code = self.code or _DEFAULT_CODES.get(self.kind, "")
        self.message = self.message or _DEFAULT_MESSAGES.get(self.kind, "")

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def matches(self, operation: str | None) -> bool:
        return self.operation == ANY_OPERATION or self.operation == operation

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultRule:
        """A rule from its JSON form; unknown keys are refused (a typo must not silently turn a
        fault into a different one). `delay` is accepted for `seconds`."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a rule is a JSON object, not {type(data).__name__}")
        values = dict(data)
        if "delay" in values and "seconds" not in values:
            values["seconds"] = values.pop("delay")
        check_fields(values, cls, "rule")
        for required in ("kind", "operation"):
            if required not in values:
                raise ValueError(f"a rule needs {required!r}")
        values.pop("fired", None)
        if values.get("id") is None:
            values.pop("id", None)
        return cls(**values)


@dataclass(frozen=True)
class ProxiedCall:
    """One call that reached the proxy (control API calls excepted).

    `outcome`: "forwarded" (answered by upstream, `delay` rules included), "throttled" or "error"
    (answered by the proxy, never forwarded), "timeout" (forwarded, but the client got no answer
    in time: `status` and `response_json` are what upstream answered), or "upstream_error"
    (upstream unreachable; the client got a 502). `received_at` is `time.time()` on arrival;
    `request_json` and `response_json` are the parsed bodies, None when not JSON."""

    operation: str | None
    received_at: float
    outcome: Outcome
    status: int
    request_json: Any
    response_json: Any
    method: str = "POST"
    path: str = "/"
    rule_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProxiedCall:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class _FaultControls:
    """The rule builders shared by the in-process proxy and its remote control."""

    def add_rule(self, rule: FaultRule) -> FaultRule:
        raise NotImplementedError

    def throttle(
        self,
        operation: str,
        probability: float = 0.5,
        retry_after: float | None = None,
        count: int | None = None,
        *,
        code: str = "ThrottlingException",
        message: str = "Rate exceeded",
    ) -> FaultRule:
        """Answer matching calls with `400 ThrottlingException` instead of forwarding them."""
        return self.add_rule(
            FaultRule(
                kind="throttle",
                operation=operation,
                probability=probability,
                count=count,
                code=code,
                message=message,
                retry_after=retry_after,
            )
        )

    def error(
        self,
        operation: str,
        code: str = "AccessDeniedException",
        message: str = _DEFAULT_MESSAGES["error"],
        status: int = 400,
        count: int | None = None,
        *,
        probability: float = 1.0,
    ) -> FaultRule:
        """Answer matching calls with this AWS error instead of forwarding them."""
        return self.add_rule(
            FaultRule(
                kind="error",
                operation=operation,
                probability=probability,
                count=count,
                code=code,
                message=message,
                status=status,
            )
        )

    def timeout_after_forward(
        self,
        operation: str,
        delay: float = 5.0,
        count: int | None = 1,
        *,
        drop: bool = True,
        probability: float = 1.0,
    ) -> FaultRule:
        """Forward matching calls, then hold the answer `delay` seconds and drop the connection
        (`drop=False`: answer then). Pick `delay` above the client's read timeout."""
        return self.add_rule(
            FaultRule(
                kind="timeout_after_forward",
                operation=operation,
                probability=probability,
                count=count,
                seconds=delay,
                drop=drop,
            )
        )

    def delay(
        self,
        operation: str,
        seconds: float,
        count: int | None = None,
        *,
        probability: float = 1.0,
    ) -> FaultRule:
        """Forward matching calls and answer `seconds` later."""
        return self.add_rule(
            FaultRule(
                kind="delay",
                operation=operation,
                probability=probability,
                count=count,
                seconds=seconds,
            )
        )


class FaultProxy(_FaultControls, LocalService):
    """A fault-injecting reverse proxy in front of `upstream` (e.g. a moto_server endpoint),
    serving on `host`:`port` (a free port by default) from background threads.

    Use as a context manager (`with FaultProxy(url) as proxy: proxy.url`) or with
    `start()`/`stop()`. Rules and the call log are safe to change from any thread while calls
    go through."""

    thread_name = "fault-proxy"

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        upstream_timeout: float = 60.0,
        verbose: bool = False,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http(s) URL, not {upstream!r}")
        LocalService.__init__(self, host, port, verbose=verbose)
        self.upstream = upstream.rstrip("/")
        self._upstream_parts = parts
        self.upstream_timeout = upstream_timeout
        self._lock = threading.Condition()
        self._rules: list[FaultRule] = []
        self._calls: list[ProxiedCall] = []
        self._rng = random.Random(seed)

    # -- rules ---------------------------------------------------------------------------

    def add_rule(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def rules(self) -> list[FaultRule]:
        """Copies of the rules, in the order they are tried."""
        with self._lock:
            return [replace(rule) for rule in self._rules]

    def remove_rule(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [rule for rule in self._rules if rule.id != rule_id]
            return len(self._rules) < before

    def clear_rules(self) -> int:
        with self._lock:
            count, self._rules = len(self._rules), []
            return count

    def seed(self, seed: int | None) -> None:
        """Restart the RNG deciding the probabilistic rules (same seed, same draws)."""
        with self._lock:
            self._rng = random.Random(seed)

    def _decide(self, operation: str | None) -> FaultRule | None:
        """The rule applying to this call, counted as fired; None to just forward it."""
        with self._lock:
            for rule in self._rules:
                if not rule.matches(operation) or rule.exhausted:
                    continue
                # Probability 1 draws nothing, so certain rules don't shift the seeded sequence.
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                return replace(rule)
            return None

    # -- call log ------------------------------------------------------------------------

    def calls(self, operation: str | None = None) -> list[ProxiedCall]:
        """The calls so far in arrival order, optionally of one operation only."""
        with self._lock:
            return [c for c in self._calls if operation is None or c.operation == operation]

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def wait_for_calls(
        self, count: int, operation: str | None = None, timeout: float = 10.0
    ) -> list[ProxiedCall]:
        """Block until at least `count` calls (of `operation`) are logged; TimeoutError after
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [c for c in self._calls if operation is None or c.operation == operation]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(found)} of {count} {operation or 'any'} calls after {timeout}s"
                    )
                self._lock.wait(remaining)

    def _record(self, call: ProxiedCall) -> None:
        with self._lock:
            self._calls.append(call)
            self._lock.notify_all()

    def _hold(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    # -- control API ---------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """Serve one control API call: (status, JSON answer)."""
        parts = urlsplit(path)
        route = parts.path[len(CONTROL_PREFIX) :].strip("/")
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError:
            return 400, {"error": "the body is not JSON"}
        if route == "" and method == "GET":
            with self._lock:
                return 200, {
                    "upstream": self.upstream,
                    "rules": len(self._rules),
                    "calls": len(self._calls),
                }
        if route == "rules":
            if method == "GET":
                return 200, {"rules": [rule.to_json() for rule in self.rules()]}
            if method == "POST":
                if isinstance(payload, Mapping) and "rules" in payload:
                    payload = payload["rules"]
                items = payload if isinstance(payload, list) else [payload]
                try:
                    new_rules = [FaultRule.from_json(item) for item in items]
                except (TypeError, ValueError) as exc:
                    return 400, {"error": str(exc)}
                added = [self.add_rule(rule) for rule in new_rules]
                return 200, {"rules": [rule.to_json() for rule in added]}
            if method == "DELETE":
                return 200, {"cleared": self.clear_rules()}
        if route.startswith("rules/") and method == "DELETE":
            rule_id = route.removeprefix("rules/")
            if self.remove_rule(rule_id):
                return 200, {"removed": rule_id}
            return 404, {"error": f"no rule {rule_id!r}"}
        if route == "calls":
            if method == "GET":
                operation = parse_qs(parts.query).get("operation", [None])[0]
                return 200, {"calls": [c.to_json() for c in self.calls(operation)]}
            if method == "DELETE":
                self.reset_calls()
                return 200, {"cleared": True}
        if route == "seed" and method == "POST":
            seed = payload.get("seed") if isinstance(payload, Mapping) else None
            if seed is not None and not isinstance(seed, int):
                return 400, {"error": "seed must be an integer or null"}
            self.seed(seed)
            return 200, {"seed": seed}
        return 404, {"error": f"no control route {method} {parts.path}"}


class RemoteFaultProxy(_FaultControls):
    """Drive a `FaultProxy` running elsewhere (another process, the standalone CLI) through its
    control API: the same rule builders, `rules`, `clear_rules`, `calls` and `reset_calls`."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=f"{self.url}{CONTROL_PREFIX}", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteFaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise RuntimeError(f"fault proxy control {method} {path}: {response.text}")
        return response.json()

    def add_rule(self, rule: FaultRule) -> FaultRule:
        added = self._call("POST", "/rules", json=rule.to_json())["rules"][0]
        return FaultRule.from_json(added)

    def rules(self) -> list[FaultRule]:
        found = self._call("GET", "/rules")["rules"]
        return [_rule_with_fired(data) for data in found]

    def remove_rule(self, rule_id: str) -> bool:
        response = self._http.delete(f"/rules/{rule_id}")
        return response.status_code == 200

    def clear_rules(self) -> int:
        return int(self._call("DELETE", "/rules")["cleared"])

    def seed(self, seed: int | None) -> None:
        self._call("POST", "/seed", json={"seed": seed})

    def calls(self, operation: str | None = None) -> list[ProxiedCall]:
        params = {"operation": operation} if operation else None
        found = self._call("GET", "/calls", params=params)["calls"]
        return [ProxiedCall.from_json(data) for data in found]

    def reset_calls(self) -> None:
        self._call("DELETE", "/calls")


def _rule_with_fired(data: Mapping[str, Any]) -> FaultRule:
    rule = FaultRule.from_json(data)
    rule.fired = int(data.get("fired", 0))
    return rule


# -- the HTTP side -------------------------------------------------------------------------


class _Handler(LocalHandler):
    @property
    def proxy(self) -> FaultProxy:
        return cast(FaultProxy, self.server.service)

    def setup(self) -> None:
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._upstream is not None:
                self._upstream.close()

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        proxy = self.proxy
        body = self.read_body()
        route = urlsplit(self.path).path
        if route == CONTROL_PREFIX or route.startswith(CONTROL_PREFIX + "/"):
            status, answer = proxy._control(self.command, self.path, body)
            payload = json.dumps(answer).encode()
            self._reply(status, None, [("Content-Type", "application/json")], payload)
            return

        received_at = time.time()
        operation = operation_name(self.headers, self.path, body)
        request_json = json_or_none(body)

        def record(outcome: Outcome, status: int, response: Any, rule_id: str | None) -> None:
            # Logged before answering, so a client that got its answer always finds the call.
            proxy._record(
                ProxiedCall(
                    operation=operation,
                    received_at=received_at,
                    outcome=outcome,
                    status=status,
                    request_json=request_json,
                    response_json=response,
                    method=self.command,
                    path=self.path,
                    rule_id=rule_id,
                )
            )

        rule = proxy._decide(operation)
        if rule is not None and rule.kind in ("throttle", "error"):
            headers, payload = _aws_error(self.headers, rule)
            record(
                "throttled" if rule.kind == "throttle" else "error",
                rule.status,
                json_or_none(payload),
                rule.id,
            )
            self._reply(rule.status, None, headers, payload)
            return

        try:
            status, reason, headers, payload = self._forward(body)
        except (OSError, http.client.HTTPException) as exc:
            message = f"FaultProxy: upstream {proxy.upstream} failed: {exc!r}"
            payload = json.dumps({"__type": "BadGateway", "message": message}).encode()
            record("upstream_error", 502, None, None)
            self._reply(502, None, [("Content-Type", "application/json")], payload)
            return

        response_json = json_or_none(payload)
        if rule is not None and rule.kind == "timeout_after_forward":
            record("timeout", status, response_json, rule.id)
            proxy._hold(rule.seconds)
            if rule.drop or proxy._stopping.is_set():
                self.drop()
                return
        else:
            record("forwarded", status, response_json, rule.id if rule else None)
            if rule is not None and rule.kind == "delay":
                proxy._hold(rule.seconds)
        try:
            self._reply(status, reason, headers, payload)
        except OSError:
            # The client gave up waiting (a held answer): nothing left to tell it.
            self.close_connection = True

    def _upstream_connection(self) -> http.client.HTTPConnection:
        if self._upstream is None:
            parts = self.proxy._upstream_parts
            connection_class = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            self._upstream = connection_class(
                cast(str, parts.hostname), parts.port, timeout=self.proxy.upstream_timeout
            )
        return self._upstream

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send the request upstream; (status, reason, headers to pass back, body)."""
        proxy = self.proxy
        parts = proxy._upstream_parts
        path = parts.path.rstrip("/") + self.path
        listed = {
            token.strip().lower()
            for value in self.headers.get_all("Connection", [])
            for token in value.split(",")
        }
        headers = [
            (name, value)
            for name, value in self.headers.items()
            if name.lower() not in _NOT_FORWARDED and name.lower() not in listed
        ]
        for attempt in (1, 2):
            connection = self._upstream_connection()
            reused = connection.sock is not None
            try:
                connection.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
                connection.putheader("Host", cast(str, parts.netloc))
                for name, value in headers:
                    connection.putheader(name, value)
                if body or self.command in ("POST", "PUT", "PATCH"):
                    connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body or None)
                response = connection.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                connection.close()
                self._upstream = None
                # Upstream closed an idle kept-alive connection: the request never got there.
                if not reused or attempt == 2:
                    raise
            except BaseException:
                connection.close()
                self._upstream = None
                raise
        if response.will_close:
            connection.close()
        upstream_listed = {
            token.strip().lower()
            for value in response.headers.get_all("Connection", [])
            for token in value.split(",")
        }
        passed = [
            (name, value)
            for name, value in response.getheaders()
            if name.lower() not in _HOP_BY_HOP
            and name.lower() not in upstream_listed
            # Recomputed on the way back, except for HEAD whose length is the GET body's.
            and (name.lower() != "content-length" or self.command == "HEAD")
        ]
        return response.status, response.reason, passed, payload

    def _reply(
        self, status: int, reason: str | None, headers: Sequence[tuple[str, str]], payload: bytes
    ) -> None:
        # send_response_only: upstream's Date and Server pass through, not doubled by ours.
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


# The handler is defined after the service that names it.
FaultProxy.handler_class = _Handler


def operation_name(headers: Mapping[str, str] | Any, path: str, body: bytes) -> str | None:
    """The AWS operation of a request: after the dot of `X-Amz-Target` (JSON protocols), else
    the `Action` query or form parameter (query protocols); None if neither is there."""
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    target = lowered.get("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    action = parse_qs(urlsplit(path).query).get("Action")
    if action:
        return action[0]
    if lowered.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return action[0]
    return None


def _aws_error(
    request_headers: Mapping[str, str] | Any, rule: FaultRule
) -> tuple[list[tuple[str, str]], bytes]:
    """The headers and body of an AWS error answer in the request's protocol."""
    request_id = str(uuid.uuid4())
    lowered = {str(name).lower(): str(value) for name, value in request_headers.items()}
    headers = [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", rule.code)]
    if rule.retry_after is not None:
        seconds = rule.retry_after
        headers.append(
            ("Retry-After", str(int(seconds)) if seconds == int(seconds) else str(seconds))
        )
    form = lowered.get("content-type", "").startswith("application/x-www-form-urlencoded")
    if "x-amz-target" not in lowered and form:
        # Query protocols (STS, SQS, EC2, ...): botocore parses this shape for all of them.
        body = (
            "<Response><Errors><Error><Type>Sender</Type>"
            f"<Code>{escape(rule.code)}</Code><Message>{escape(rule.message)}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
        return [*headers, ("Content-Type", "text/xml")], body.encode()
    content_type = lowered.get("content-type", "")
    if not content_type.startswith("application/x-amz-json"):
        content_type = "application/json"
    body_json = json.dumps({"__type": rule.code, "message": rule.message})
    return [*headers, ("Content-Type", content_type)], body_json.encode()


# -- rate limit checks ---------------------------------------------------------------------


@dataclass(frozen=True)
class RateViolation:
    """Calls `calls` made within [`start`, `end`] where at most `allowed` were permitted."""

    start: float
    end: float
    calls: int
    allowed: float

    @property
    def excess(self) -> float:
        return self.calls - self.allowed


def max_calls_in_window(times: Iterable[float], window_seconds: float) -> int:
    """The most calls made within any window of `window_seconds` (half-open: calls exactly
    `window_seconds` apart fall in different windows, as in "N per second")."""
    if window_seconds <= 0:
        raise ValueError("window_seconds must be > 0")
    ordered = sorted(times)
    best = 0
    first = 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= window_seconds:
            first += 1
        best = max(best, last - first + 1)
    return best


def token_bucket_violations(
    times: Iterable[float], burst: float, per_second: float, slack: float = 0
) -> list[RateViolation]:
    """Where calls at `times` went beyond a token bucket of `burst` tokens refilled at
    `per_second`: a bucket allows at most `burst + per_second * (t_j - t_i)` calls within any
    [t_i, t_j]; `slack` widens that (clock jitter, a process restarting with a full bucket).

    One violation per first call t_i, the interval with the largest excess; empty when the
    limit always held."""
    if burst < 1 or per_second < 0:
        raise ValueError("burst must be >= 1 and per_second >= 0")
    ordered = sorted(times)
    total = len(ordered)
    found: list[RateViolation] = []
    for i, start in enumerate(ordered):
        worst: RateViolation | None = None
        for j in range(i, total):
            allowed = burst + per_second * (ordered[j] - start) + slack
            if allowed >= total - i:
                # Even every remaining call would fit: no later interval from t_i can violate.
                break
            calls = j - i + 1
            # The tolerance keeps float noise in timestamps from reporting exact fits.
            if calls > allowed + 1e-9 and (worst is None or calls - allowed > worst.excess):
                worst = RateViolation(start=start, end=ordered[j], calls=calls, allowed=allowed)
        if worst is not None:
            found.append(worst)
    return found


# -- standalone ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skylane.testing.aws_faults",
        description="Fault-injecting proxy in front of an AWS endpoint such as moto_server. "
        "Prints its URL, then serves until interrupted; control it under /__faults__/.",
    )
    parser.add_argument("--upstream", required=True, help="the endpoint to forward to")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: free)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the probabilistic rules")
    parser.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="JSON",
        help='an initial rule, e.g. \'{"kind": "throttle", "operation": "RunTask"}\' (repeatable)',
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    try:
        rules = [FaultRule.from_json(json.loads(text)) for text in args.rule]
    except (TypeError, ValueError) as exc:
        parser.error(f"--rule: {exc}")
    proxy = FaultProxy(
        args.upstream, host=args.host, port=args.port, seed=args.seed, verbose=args.verbose
    )

    def add_rules() -> None:
        for rule in rules:
            proxy.add_rule(rule)

    return serve_until_signalled(proxy, add_rules)


if __name__ == "__main__":
    sys.exit(main())

"""What the test servers (`aws_faults.FaultProxy`, `gcp.CloudRunEmulator`,
`azure.AciEmulator`) share: an HTTP/1.1 server on loopback in a background thread, started and
stopped as a context manager, that closes its clients' keep-alive connections when it stops,
optionally over TLS (an `ssl.SSLContext` for the server side: `url` then starts with
`https://`), and a standalone `main` that serves until SIGINT/SIGTERM. Each service supplies its
request handler (a `LocalHandler`)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self


class LocalService:
    """Lifecycle of a test server: `start()`/`stop()` or `with`, `url`, `port`. Subclasses set
    `handler_class` and `thread_name`, and call `LocalService.__init__`; with `ssl_context` (a
    server-side context holding the certificate) it serves HTTPS."""

    handler_class: ClassVar[type[LocalHandler]]
    thread_name: ClassVar[str] = "local-http"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        verbose: bool,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.verbose = verbose
        self.ssl_context = ssl_context
        # Set on stop: wakes handlers that hold an answer back.
        self._stopping = threading.Event()
        self._server: LocalServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._server.server_address[:2]
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{port}"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = LocalServer((self.host, self._port), self, self.handler_class)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{self.thread_name}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: held answers are abandoned and open client connections closed."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_client_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    # Bursts of concurrent clients must not be refused by a short listen backlog.
    request_queue_size = 128
    # How long a TLS client may take over its handshake.
    handshake_seconds = 10.0

    def __init__(
        self,
        address: tuple[str, int],
        service: LocalService,
        handler_class: type[BaseHTTPRequestHandler],
    ) -> None:
        self.service = service
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler_class)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on some resolvers.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        context = self.service.ssl_context
        if context is not None:
            # The handshake happens in the connection's own thread (LocalHandler.setup), so a
            # client that never completes one cannot hold up the accepting loop.
            connection = context.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A TLS client that refused the certificate, or went away: nothing to report.
        if isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_client_connections(self) -> None:
        # Keep-alive connections would otherwise outlive the server, served by daemon threads.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class LocalHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps client connections open between calls, as botocore and requests expect.
    protocol_version = "HTTP/1.1"
    server: LocalServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.server.handshake_seconds)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every answer.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.service.verbose:
            super().log_message(format, *args)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, body: Any) -> None:
        """Answer `status` with `body` as JSON."""
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def drop(self) -> None:
        """Close the connection without answering."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def json_or_none(body: bytes) -> Any:
    """`body` as JSON, or None when it is empty or not JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def serve_until_signalled(
    service: LocalService,
    ready: Callable[[], None] | None = None,
    details: Callable[[], Iterable[str]] | None = None,
) -> int:
    """Run `service`, print its URL (then the lines `details` gives, if any), and serve until
    SIGINT or SIGTERM (standalone mains)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with service:
        if ready is not None:
            ready()
        lines = [service.url, *(details() if details is not None else ())]
        print("\n".join(lines), flush=True)
        # A timed wait, so the signal handlers get to run promptly.
        while not stop.wait(0.5):
            pass
    return 0

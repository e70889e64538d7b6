"""Loopback-only test servers: a threaded HTTP server with pluggable handlers, and the ports and
addresses they use.

Every server refuses to bind anything but a loopback address (127.0.0.0/8 or
::1), so a test built on them cannot send traffic off the machine. Servers are
context managers: ``with LoopbackHTTPServer("127.0.0.2") as server: ...``.

Handlers are plain functions ``handler(request: RequestHandler) -> None``;
the factories in ``support.handlers`` cover the usual cases. ``source_server``
is the run's image sources, on the one address the service may fetch from.
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from support.handlers import respond

# The one address the service may fetch from and call in tests.
IMAGE_HOST = "127.0.0.2"

Handler = Callable[["RequestHandler"], None]


def require_loopback(host: str) -> str:
    """Return host if it is a loopback IP literal; raise ValueError otherwise."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"test servers bind loopback addresses only, not {host!r}")
    return host


def url_host(host: str) -> str:
    """The host as written in a URL: IPv6 literals in brackets."""
    return f"[{host}]" if ":" in host else host


def ipv6_loopback_available() -> bool:
    """True if a socket can be bound to ::1 on this machine."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def socket_family(host: str) -> socket.AddressFamily:
    """The address family of an IP literal."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: The client's (address, port): requests on one kept-alive connection share it.
    client: tuple = ()


class RequestHandler(BaseHTTPRequestHandler):
    """Dispatches every method to the owning server's route table."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def _dispatch(self) -> None:
        owner = self.server.owner
        length = self.headers.get("Content-Length")
        body = self.rfile.read(int(length)) if length and length.isdigit() else b""
        path = urlsplit(self.path).path
        owner._record(
            RecordedRequest(self.command, self.path, dict(self.headers.items()), body, tuple(self.client_address))
        )
        handler = owner.routes.get(path, owner.default)
        try:
            handler(self)
        except (ConnectionError, TimeoutError):
            # The client under test gave up or was cut off: that is often the point.
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    @property
    def stopping(self) -> threading.Event:
        """Set when the server is shutting down; long-running handlers should return."""
        return self.server.owner.stopping

    def send(self, status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Send a complete response with a Content-Length."""
        self.send_response(status)
        merged = {"Content-Length": str(len(body)), **(headers or {})}
        for name, value in merged.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # handlers that stream forever must not stall shutdown
    allow_reuse_address = True

    def __init__(self, owner: LoopbackHTTPServer, address: tuple[str, int]) -> None:
        self.address_family = socket_family(address[0])
        self.owner = owner
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(host): a reverse DNS query
        # that would leave the machine. Bind without it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-response are routine in these tests; anything else is a bug to show.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _not_found(request: RequestHandler) -> None:
    request.send(404, b"not found")


class LoopbackHTTPServer:
    """A threaded HTTP/1.1 server on a loopback address with a path -> handler table."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        routes: dict[str, Handler] | None = None,
        default: Handler = _not_found,
    ) -> None:
        self.host = require_loopback(host)
        self.routes: dict[str, Handler] = dict(routes or {})
        self.default = default
        self.stopping = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = _HTTPServer(self, (host, port))
        self.port: int = self._server.server_port
        self._thread: threading.Thread | None = None

    def route(self, path: str, handler: Handler) -> LoopbackHTTPServer:
        """Set the handler for a path (query strings are ignored when matching)."""
        self.routes[path] = handler
        return self

    def url(self, path: str = "/") -> str:
        """An http:// URL on this server."""
        return f"http://{url_host(self.host)}:{self.port}{path}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def hits(self, path: str | None = None) -> int:
        """How many requests arrived, for one path or in all."""
        return sum(1 for r in self.requests if path is None or urlsplit(r.path).path == path)

    def _record(self, recorded: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(recorded)

    def start(self) -> LoopbackHTTPServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> LoopbackHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def unused_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at the moment (bound and released), for connection-refused tests."""
    with socket.socket(socket_family(require_loopback(host)), socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    """Poll predicate until it is true or timeout_s passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def serve(
    server: LoopbackHTTPServer, body: bytes | Handler, content_type: str = "image/jpeg", name: str = "img.jpg"
) -> str:
    """The URL of body (bytes answered 200 with content_type, or a handler) at a path of its own on server."""
    handler = body if callable(body) else respond(200, body, {"Content-Type": content_type})
    path = f"/{uuid.uuid4().hex}/{name}"
    server.route(path, handler)
    return server.url(path)


@pytest.fixture(scope="session")
def source_server():
    """Image sources on 127.0.0.2, the one address the service may fetch from in tests."""
    with LoopbackHTTPServer(IMAGE_HOST) as server:
        yield server

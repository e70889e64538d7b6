"""Handler factories for ``LoopbackHTTPServer``: a fixed answer, a redirect, an endless body, a drip, a hang,
and ``InFlight``, a slow answer that counts how many requests it had at once."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from support.loopback import Handler, RequestHandler


def respond(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    """A handler that sends one fixed response."""

    def handler(request: RequestHandler) -> None:
        request.send(status, body, headers)

    return handler


def redirect(location: str, status: int = 302) -> Handler:
    """A handler that redirects to location."""
    return respond(status, b"", {"Location": location})


def endless_body(chunk: bytes = b"\0" * 65536, chunked: bool = False, headers: dict[str, str] | None = None) -> Handler:
    """A 200 whose body never ends: close-delimited (no Content-Length) or chunked."""

    def handler(request: RequestHandler) -> None:
        request.send_response(200)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        if chunked:
            request.send_header("Transfer-Encoding", "chunked")
        else:
            request.send_header("Connection", "close")
        request.end_headers()
        request.close_connection = True
        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
        while not request.stopping.is_set():
            request.wfile.write(framed)

    return handler


def drip(
    body: bytes,
    interval_s: float,
    headers: dict[str, str] | None = None,
    drip_headers: bool = False,
) -> Handler:
    """A 200 sent one byte per interval: the body only, or the header block too."""

    def handler(request: RequestHandler) -> None:
        head = (
            b"HTTP/1.1 200 OK\r\n"
            + b"".join(
                f"{name}: {value}\r\n".encode("latin-1")
                for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items()
            )
            + b"\r\n"
        )
        request.close_connection = True
        if drip_headers:
            slow = head + body
        else:
            request.wfile.write(head)
            request.wfile.flush()
            slow = body
        for index in range(len(slow)):
            if request.stopping.wait(interval_s):
                return
            request.wfile.write(slow[index : index + 1])
            request.wfile.flush()

    return handler


def hang(request: RequestHandler) -> None:
    """A handler that reads the request and never answers until the server stops."""
    request.close_connection = True
    request.stopping.wait()


class InFlight:
    """A source handler that serves an image slowly and records the most requests it had at once."""

    def __init__(self, body: bytes, seconds: float, content_type: str = "image/jpeg") -> None:
        self.body, self.seconds, self.content_type = body, seconds, content_type
        self.now = self.peak = self.served = 0
        self._lock = threading.Lock()

    def __call__(self, request: RequestHandler) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(self.seconds)
        finally:
            # Counted down before the answer goes out: the fetcher still holds its slot until it has it.
            with self._lock:
                self.now -= 1
                self.served += 1
        request.send(200, self.body, {"Content-Type": self.content_type})

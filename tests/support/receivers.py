"""Webhook receivers on loopback: each records its deliveries and answers from a script, or never answers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from typing import Any

import pytest

from support.loopback import IMAGE_HOST, LoopbackHTTPServer, RequestHandler, require_loopback, socket_family


class WebhookReceiver:
    """A webhook endpoint on loopback that records deliveries and answers from a script."""

    def __init__(self, server: LoopbackHTTPServer, path: str) -> None:
        self.server = server
        self.path = path
        self.statuses: list[int] = []
        #: When each delivery arrived (``time.time()``), in order.
        self.arrivals: list[float] = []
        #: How long the answers past the script (200) take: the delivery is seen here before it is answered.
        self.answer_delay_s = 0.0
        self._lock = threading.Lock()
        server.route(path, self._handle)

    @property
    def url(self) -> str:
        return self.server.url(self.path)

    def answer_with(self, *statuses: int) -> None:
        """The statuses of the next deliveries, in order; 200 once they run out."""
        with self._lock:
            self.statuses = list(statuses)

    def _handle(self, request: RequestHandler) -> None:
        with self._lock:
            self.arrivals.append(time.time())
            scripted = bool(self.statuses)
            status = self.statuses.pop(0) if scripted else 200
        if not scripted:
            time.sleep(self.answer_delay_s)
        request.send(status, b"{}", {"Content-Type": "application/json"})

    def deliveries(self) -> list[dict[str, Any]]:
        return [
            {"headers": {k.lower(): v for k, v in r.headers.items()}, "body": r.body}
            for r in self.server.requests
            if r.path == self.path and r.method == "POST"
        ]


class SilentReceiver:
    """A webhook endpoint that accepts every connection and never answers; counts the connections it holds."""

    def __init__(self, host: str = IMAGE_HOST) -> None:
        self.host = require_loopback(host)
        self._listener = socket.socket(socket_family(host), socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.accepted = 0
        self.open = 0
        #: The most connections held at one time.
        self.most_open = 0
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
                self._held.append(connection)
            threading.Thread(target=self._hold, args=(connection,), daemon=True).start()

    def _hold(self, connection: socket.socket) -> None:
        # Reads the request and says nothing, until the client gives up and closes its end.
        with contextlib.suppress(OSError):
            while connection.recv(65536):
                pass
        with self._lock:
            self.open -= 1
        connection.close()

    def close(self) -> None:
        """Stop accepting and hang up on every connection held."""
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            held = list(self._held)
        for connection in held:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def silent_receiver():
    """A webhook receiver on the address the service may call that accepts connections and never answers."""
    receiver = SilentReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def receiver_server():
    """Webhook receivers: a server of their own, on the address the service may call in tests."""
    with LoopbackHTTPServer(IMAGE_HOST) as server:
        yield server


@pytest.fixture
def receiver(receiver_server):
    """A webhook receiver with a path of the test's own."""
    return WebhookReceiver(receiver_server, f"/hooks/{uuid.uuid4().hex}")

"""Raw TCP canaries on loopback: listeners that count the connections they accept and answer nothing."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

from support.loopback import ipv6_loopback_available, require_loopback, socket_family, url_host


class CanaryServer:
    """A raw TCP listener that counts accepted connections; it answers nothing.

    With ``hold_open=False`` each connection is closed at once; with
    ``hold_open=True`` it is kept open and silent until ``stop`` (a server that
    accepts and never answers).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, hold_open: bool = False) -> None:
        self.host = require_loopback(host)
        self.hold_open = hold_open
        self._listener = socket.socket(socket_family(host), socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, port))
            self._listener.listen(64)
        except OSError:
            self._listener.close()
            raise
        self.port: int = self._listener.getsockname()[1]
        self._accepted = 0
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    def url(self, path: str = "/") -> str:
        """An http:// URL on this listener."""
        return f"http://{url_host(self.host)}:{self.port}{path}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.05)
            if not ready:
                continue
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                self._accepted += 1
                if self.hold_open:
                    self._held.append(conn)
            if not self.hold_open:
                conn.close()

    def start(self) -> CanaryServer:
        """Accept in a daemon thread."""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and close every socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()
        self._listener.close()

    def __enter__(self) -> CanaryServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class CanaryPair:
    """Canaries on 127.0.0.1 and (when available) ::1, on the same port if it is free on both."""

    v4: CanaryServer
    v6: CanaryServer | None

    @property
    def port(self) -> int:
        return self.v4.port

    @property
    def accepted(self) -> int:
        return self.v4.accepted + (self.v6.accepted if self.v6 else 0)


@contextmanager
def canaries() -> Iterator[CanaryPair]:
    """Run a CanaryPair for the duration of a with-block."""
    with CanaryServer("127.0.0.1") as v4:
        if not ipv6_loopback_available():
            yield CanaryPair(v4, None)
            return
        try:
            v6 = CanaryServer("::1", v4.port)
        except OSError:
            v6 = CanaryServer("::1", 0)
        with v6:
            yield CanaryPair(v4, v6)

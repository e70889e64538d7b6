"""A deadline for one outbound call, whatever the server does.

``watched`` gives one call a deadline: a watchdog shuts its sockets down when the budget runs out,
so a server dripping one byte per read timeout cannot hold a worker past it. The watched connection
pools register every socket they open or hand out again with the call's watchdog.
"""

from __future__ import annotations

import contextvars
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: Signals sent to a worker process as a whole: the soft time limit (SIGUSR1), shutdown, and the like.
MAIN_THREAD_SIGNALS = {
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGALRM,
}


def leave_signals_to_the_main_thread() -> None:
    """Block, in the calling helper thread, the signals sent to the process as a whole.

    The kernel hands such a signal to any thread that does not block it. Python runs its handler on the main
    thread only, at the next bytecode the main thread runs: taken by a helper thread, it would leave a main
    thread blocked in a system call (a sleep, a read) where it is, and a soft time limit would never strike.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)


@dataclass(frozen=True)
class TimeLimit:
    """A time limit and the setting it comes from, as error messages name it: ``20 s (FETCH_TOTAL_TIMEOUT_S)``."""

    seconds: float
    setting: str

    def __str__(self) -> str:
        return f"{self.seconds:g} s ({self.setting})"


class Watchdog:
    """Shuts down every socket of one call when its deadline, ``limit``, passes.

    ``request_limits`` are the connect and read timeouts of the request under way, for the message of
    a timeout that fired before the deadline.
    """

    def __init__(self, limit: TimeLimit) -> None:
        self.limit = limit
        self.request_limits: tuple[TimeLimit, TimeLimit] | None = None
        seconds = limit.seconds
        self.deadline = time.monotonic() + seconds
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.fired or self.remaining() <= 0

    def register(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def start(self) -> None:
        # The timer thread starts with this thread's signal mask: it must not take the signals meant for the main
        # thread either (see ``leave_signals_to_the_main_thread``).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
        try:
            self._timer.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    # shutdown (unlike close) wakes a recv blocked in another thread.
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_active_watchdog: contextvars.ContextVar[Watchdog | None] = contextvars.ContextVar(
    "fetcher_active_watchdog", default=None
)


@contextmanager
def watched(limit: TimeLimit) -> Iterator[Watchdog]:
    """Run the block under a watchdog that cuts its sockets ``limit`` from now."""
    watchdog = Watchdog(limit)
    token = _active_watchdog.set(watchdog)
    watchdog.start()
    try:
        yield watchdog
    finally:
        watchdog.cancel()
        _active_watchdog.reset(token)


def current_watchdog() -> Watchdog | None:
    """The watchdog of the call under way in this context, if any."""
    return _active_watchdog.get()


def _register_with_watchdog(sock: socket.socket | None) -> None:
    watchdog = _active_watchdog.get()
    if watchdog is not None:
        watchdog.register(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _register_with_watchdog(self.sock)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _register_with_watchdog(self.sock)


class _WatchedPoolMixin:
    def _get_conn(self, timeout: float | None = None) -> Any:
        # A kept-alive connection was opened under an earlier call's watchdog: this call's must
        # be able to cut it too, or a slow-drip server on a reused connection would outlive it.
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        _register_with_watchdog(getattr(conn, "sock", None))
        return conn


class WatchedHTTPConnectionPool(_WatchedPoolMixin, HTTPConnectionPool):
    """An HTTP pool whose connections the current call's watchdog can cut."""

    ConnectionCls = _WatchedHTTPConnection


class WatchedHTTPSConnectionPool(_WatchedPoolMixin, HTTPSConnectionPool):
    """An HTTPS pool whose connections the current call's watchdog can cut."""

    ConnectionCls = _WatchedHTTPSConnection

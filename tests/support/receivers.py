"""Webhook receivers on loopback: each records its deliveries and answers from a script."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from support.loopback import IMAGE_HOST, LoopbackHTTPServer, RequestHandler


class WebhookReceiver:
    """A webhook endpoint on loopback that records deliveries and answers from a script."""

    def __init__(self, server: LoopbackHTTPServer, path: str) -> None:
        self.server = server
        self.path = path
        self.statuses: list[int] = []
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


@pytest.fixture(scope="session")
def receiver_server():
    """Webhook receivers: a server of their own, on the address the service may call in tests."""
    with LoopbackHTTPServer(IMAGE_HOST) as server:
        yield server


@pytest.fixture
def receiver(receiver_server):
    """A webhook receiver with a path of the test's own."""
    return WebhookReceiver(receiver_server, f"/hooks/{uuid.uuid4().hex}")

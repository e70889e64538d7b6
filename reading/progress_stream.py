"""A watcher's progress stream: the Server-Sent Events frames of one request, fed by the process's hub."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator

from reading.progress_hub import ProgressHub, ProgressState

#: How long a client waits before reconnecting a stream that broke, in milliseconds (the ``retry:`` hint).
RECONNECT_AFTER_MS = 3000
# A stream ends after this long even while its request runs: a client that vanished without the
# kernel noticing holds its slot no longer, and a live one reconnects with Last-Event-ID, missing nothing.
MAX_STREAM_S = 30 * 60


def sse_frame(state: ProgressState) -> str:
    event = "final" if state.final else "progress"
    return f"id: {state.event_id}\nevent: {event}\ndata: {state.data}\n\n"


HEARTBEAT_FRAME = ": keep-alive\n\n"


class ProgressStream:
    """The text/event-stream body of one watcher: holds a stream slot from creation until closed.

    A class with ``close`` rather than a generator, so the slot is given back even when the server
    closes the body without ever reading it (the client gone before the first byte).
    """

    def __init__(
        self,
        hub: ProgressHub,
        request_id: uuid.UUID,
        current: ProgressState,
        read_at: float,
        last_event_id: str | None,
        heartbeat_s: float,
        caller: str = "",
    ) -> None:
        hub.open_stream(caller)  # raises StreamsExhausted
        self.hub = hub
        self.caller = caller
        self.request_id = request_id
        self.current = current
        self.read_at = read_at
        self.last_event_id = last_event_id
        self.heartbeat_s = heartbeat_s
        self._closed = False
        self._frames = self._generate()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._frames)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._frames.close()
        self.hub.close_stream(self.caller)

    def _generate(self) -> Iterator[str]:
        yield f"retry: {RECONNECT_AFTER_MS}\n\n"
        if self.current.final:
            yield sse_frame(self.current)
            return
        sent = self.last_event_id
        if self.current.event_id != sent:
            yield sse_frame(self.current)
            sent = self.current.event_id
        self.hub.watch(self.request_id, self.current, self.read_at)
        try:
            yield from self._follow(sent)
        finally:
            self.hub.unwatch(self.request_id)

    def _follow(self, sent: str | None) -> Iterable[str]:
        ends_at = time.monotonic() + MAX_STREAM_S
        while time.monotonic() < ends_at:
            try:
                state = self.hub.wait_change(self.request_id, sent, self.heartbeat_s)
            except LookupError:
                return  # the request was deleted
            if state is None:
                yield HEARTBEAT_FRAME
                continue
            yield sse_frame(state)
            if state.final:
                return
            sent = state.event_id

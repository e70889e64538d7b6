"""Live progress: one hub per API process reads every watched request in one query and wakes its watchers.

A progress stream parks a thread of the API, not a database connection: it waits on the hub, and
only the hub's thread reads the database, every ``EVENTS_POLL_INTERVAL_S``, one query for all the
requests watched, however many streams watch each. A change seen between two reads is one event,
so the interval is also what coalesces a busy request's events.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

import database
from models import FINAL_REQUEST_STATUSES, Request, db
from queueing import backoff
from reading import answers

log = logging.getLogger(__name__)

#: The columns a progress event is made of; a change of any of them is a new state.
STATE_COLUMNS = (
    Request.id,
    Request.status,
    Request.total_images,
    Request.completed_images,
    Request.failed_images,
    Request.cancelled_images,
    Request.bytes_in,
    Request.bytes_out,
    Request.updated_at,
)
# After a failed read the hub waits this long (at most) before the next, so a database outage is not hammered.
MAX_BACKOFF_S = 10.0


@dataclass(frozen=True)
class ProgressState:
    """One state of a request as its progress events show it, with the id that names that state."""

    event_id: str
    final: bool
    #: The event's ``data:`` line, JSON, encoded once for every stream that sends it.
    data: str

    @classmethod
    def of(cls, row: Any) -> ProgressState:
        """The state of a request row (a ``Request`` or a row of ``STATE_COLUMNS``)."""
        version = ":".join(
            str(value)
            for value in (
                row.status,
                row.completed_images,
                row.failed_images,
                row.cancelled_images,
                row.bytes_in,
                row.bytes_out,
                row.updated_at.isoformat(),
            )
        )
        payload = {
            "request_id": str(row.id),
            "status": row.status,
            "progress": answers.progress(row),
            "totals": answers.totals(row),
            "updated_at": answers.timestamp(row.updated_at),
        }
        return cls(
            event_id=hashlib.blake2b(version.encode(), digest_size=9).hexdigest(),
            final=row.status in FINAL_REQUEST_STATUSES,
            data=json.dumps(payload, separators=(",", ":")),
        )


#: Reads the current state of each of the given requests; a request that no longer exists is left out.
StateReader = Callable[[list[uuid.UUID]], dict[uuid.UUID, ProgressState]]


def database_reader(app: Any) -> StateReader:
    """The hub's reader: one query in an app context of its own, its session released at once."""

    def read_states(request_ids: list[uuid.UUID]) -> dict[uuid.UUID, ProgressState]:
        with app.app_context(), database.read_only():
            try:
                rows = db.session.execute(select(*STATE_COLUMNS).where(Request.id.in_(request_ids))).all()
            finally:
                db.session.remove()
        return {row.id: ProgressState.of(row) for row in rows}

    return read_states


class StreamsExhausted(Exception):
    """Every progress stream this process may serve is taken."""


class CallerStreamsExhausted(StreamsExhausted):
    """The caller holds every progress stream of this process that one caller may."""


class _Watched:
    """One watched request: its latest state, and the condition its watchers wait on."""

    def __init__(self, lock: threading.Lock, state: ProgressState, read_at: float) -> None:
        self.changed = threading.Condition(lock)
        self.state = state
        #: When the read that gave ``state`` began (monotonic clock).
        self.read_at = read_at
        self.gone = False
        self.watchers = 0


class ProgressHub:
    """The watched requests of one API process, and the one thread that reads them.

    The thread starts with the first watcher (after gunicorn has forked, never before), and reads
    nothing while nobody watches. All conditions share one lock, so a read wakes exactly the
    watchers of the requests that changed.
    """

    def __init__(
        self, read_states: StateReader, poll_interval_s: float, max_streams: int, max_streams_per_caller: int = 0
    ) -> None:
        self.read_states = read_states
        self.poll_interval_s = poll_interval_s
        self.max_streams = max_streams
        #: Streams one caller may hold at once; 0 leaves only ``max_streams``.
        self.max_streams_per_caller = max_streams_per_caller
        self._streams_by_caller: dict[str, int] = {}
        self._lock = threading.Lock()
        self._have_watchers = threading.Condition(self._lock)
        self._watched: dict[uuid.UUID, _Watched] = {}
        self._streams = 0
        self._thread: threading.Thread | None = None
        #: Reads made, and streams opened, since the process started (for tests and benchmarks).
        self.reads = 0
        self.streams_opened = 0

    # --- streams: the per-process cap, and each caller's share of it -------------------------

    def open_stream(self, caller: str = "") -> None:
        """Take one of the process's stream slots for ``caller`` (its API key's hash, or its address).

        Raises:
            StreamsExhausted: all ``max_streams`` are taken.
            CallerStreamsExhausted: ``caller`` holds ``max_streams_per_caller`` already.
        """
        with self._lock:
            if self._streams >= self.max_streams:
                raise StreamsExhausted
            held = self._streams_by_caller.get(caller, 0)
            if self.max_streams_per_caller and held >= self.max_streams_per_caller:
                raise CallerStreamsExhausted
            self._streams_by_caller[caller] = held + 1
            self._streams += 1
            self.streams_opened += 1

    def close_stream(self, caller: str = "") -> None:
        with self._lock:
            self._streams -= 1
            held = self._streams_by_caller.pop(caller, 0) - 1
            if held > 0:
                self._streams_by_caller[caller] = held

    @property
    def open_streams(self) -> int:
        with self._lock:
            return self._streams

    # --- watching ----------------------------------------------------------------------------

    def watch(self, request_id: uuid.UUID, seen: ProgressState, read_at: float) -> None:
        """Start watching a request whose state the caller read at ``read_at`` (monotonic clock)."""
        with self._lock:
            watched = self._watched.get(request_id)
            if watched is None:
                watched = self._watched[request_id] = _Watched(self._lock, seen, read_at)
            elif read_at > watched.read_at and seen.event_id != watched.state.event_id:
                # The caller's read is the newer: the other watchers must not miss it, nor this one go back.
                watched.state, watched.read_at = seen, read_at
                watched.changed.notify_all()
            watched.watchers += 1
            self._have_watchers.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="progress-hub", daemon=True)
                self._thread.start()

    def unwatch(self, request_id: uuid.UUID) -> None:
        with self._lock:
            watched = self._watched.get(request_id)
            if watched is None:
                return
            watched.watchers -= 1
            if watched.watchers <= 0:
                del self._watched[request_id]

    def wait_change(self, request_id: uuid.UUID, last_event_id: str | None, timeout_s: float) -> ProgressState | None:
        """The request's state once it differs from ``last_event_id``; None after ``timeout_s`` without one.

        Raises:
            LookupError: the request is not watched, or no longer exists.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            watched = self._watched.get(request_id)
            if watched is None:
                raise LookupError(request_id)
            while True:
                if watched.gone:
                    raise LookupError(request_id)
                if watched.state.event_id != last_event_id:
                    return watched.state
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                watched.changed.wait(remaining)

    # --- the reading thread ------------------------------------------------------------------

    def poll_once(self) -> int:
        """Read every watched request in one query and wake the watchers of those that changed; returns how many."""
        with self._lock:
            request_ids = list(self._watched)
        if not request_ids:
            return 0
        read_at = time.monotonic()
        states = self.read_states(request_ids)
        self.reads += 1
        changed = 0
        with self._lock:
            for request_id in request_ids:
                watched = self._watched.get(request_id)
                if watched is None:
                    continue
                state = states.get(request_id)
                if state is None:
                    watched.gone = True
                elif read_at < watched.read_at or watched.state.event_id == state.event_id:
                    continue
                else:
                    watched.state, watched.read_at = state, read_at
                changed += 1
                watched.changed.notify_all()
        return changed

    def _run(self) -> None:
        # A new watcher brings the state it has just read, so the first read waits one interval.
        delay_s, failures = self.poll_interval_s, 0
        while True:
            time.sleep(delay_s)
            with self._lock:
                while not self._watched:
                    self._have_watchers.wait()
            started = time.monotonic()
            try:
                self.poll_once()
                failures = 0
            except Exception:  # the thread must outlive a database outage; streams heartbeat meanwhile
                log.warning("progress hub: reading the watched requests failed", exc_info=True)
                failures += 1
            backoff_s = backoff.exponential(failures, base_s=self.poll_interval_s, cap_s=MAX_BACKOFF_S)
            interval_s = max(self.poll_interval_s, backoff_s)
            delay_s = max(0.0, interval_s - (time.monotonic() - started))


def init_app(app: Any, settings: Any) -> None:
    app.extensions["progress_hub"] = ProgressHub(
        database_reader(app),
        settings.events_poll_interval_s,
        settings.events_max_streams,
        settings.events_max_streams_per_caller,
    )

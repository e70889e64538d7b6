"""What one API process knows of the requests it is polled for: each one's version, pushed by PostgreSQL.

A poll whose ``If-None-Match`` names the version known here is answered ``304`` from memory, with no round
trip to the database or the rate limiter's store (and one without, from the rendered page of that version,
when there is one). A trigger (migration 0014) sends ``NOTIFY request_changes`` with a request's id and
status whenever its row changes, at the commit, and each API process listens on a connection of its own.
A new status forgets the request's version at once; a running request's counters that moved keep it for
``STATUS_MAX_LAG_S`` more, the lag its rendered pages have anyway (``page_cache``), so that a request that
changes every few milliseconds is read once per that lag, not once per poll. Nothing is trusted while the
listener is not connected: every poll then reads the database, as it always may, and all that was known
is forgotten at each (re)connection. A version read while a change was being notified is not kept. On
SQLite, or without the trigger, this is off.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import text

from models import FINAL_REQUEST_STATUSES, Request, db
from queueing import backoff

log = logging.getLogger(__name__)

CHANNEL = "request_changes"
#: A listener's own notification, sent once it listens to prove notifications reach it.
PROBE_PREFIX = "probe "
PROBE_TIMEOUT_S = 2.0
#: Versions kept per API process: the requests being polled, most recent first.
MAX_KNOWN = 20_000
#: Changes remembered to turn away a version read while they were notified; past this, all are forgotten.
MAX_CHANGES = 100_000


@dataclass(frozen=True)
class Version:
    """What a status page's validator is made of (``answers.page_etag``), and who may see it."""

    id: uuid.UUID
    owner_key_hash: str | None
    updated_at: datetime
    status: str
    completed_images: int
    failed_images: int
    cancelled_images: int
    importing: bool
    #: When a change of its counters was first notified (monotonic): it is then served for ``max_lag_s`` more.
    behind_since: float | None = None

    @classmethod
    def of(cls, request: Request) -> Version:
        return cls(
            request.id,
            request.owner_key_hash,
            request.updated_at,
            request.status,
            request.completed_images,
            request.failed_images,
            request.cancelled_images,
            request.importing,
        )


class RequestVersions:
    """The versions of the requests polled from this process, kept exact by a listener thread."""

    def __init__(self, app: Any, max_lag_s: float = 0.5) -> None:
        self._app = app
        self.max_lag_s = max_lag_s
        self._lock = threading.Lock()
        self._known: OrderedDict[uuid.UUID, Version] = OrderedDict()
        self._changes = 0
        self._changed_at: dict[uuid.UUID, int] = {}
        self._all_changed_at = 0
        self._listening = False
        self._started_in: int | None = None

    def known(self, request_id: uuid.UUID) -> Version | None:
        """The request's version, if this process knows it exactly now."""
        self._start_listening()
        with self._lock:
            if not self._listening:
                return None
            version = self._known.get(request_id)
            if version is None:
                return None
            if version.behind_since is not None and time.monotonic() - version.behind_since > self.max_lag_s:
                del self._known[request_id]
                return None
            self._known.move_to_end(request_id)
            return version

    def mark(self) -> int:
        """Taken before a read of a request's row: ``remember`` keeps it only if no change came since."""
        with self._lock:
            return self._changes

    def remember(self, request: Request, mark: int) -> None:
        version = Version.of(request)
        with self._lock:
            if not self._listening or self._all_changed_at > mark or self._changed_at.get(version.id, -1) > mark:
                return
            self._known[version.id] = version
            self._known.move_to_end(version.id)
            while len(self._known) > MAX_KNOWN:
                self._known.popitem(last=False)

    def forget(self, request_id: uuid.UUID) -> None:
        """This process changed the request itself: its next poll here reads it anew, before the notice comes."""
        self._changed(request_id, "")

    def listening(self) -> bool:
        with self._lock:
            return self._listening

    def _changed(self, request_id: uuid.UUID, status: str) -> None:
        with self._lock:
            self._changes += 1
            self._changed_at[request_id] = self._changes
            version = self._known.get(request_id)
            if version is not None:
                if version.status == status and status not in FINAL_REQUEST_STATUSES:
                    if version.behind_since is None:
                        self._known[request_id] = replace(version, behind_since=time.monotonic())
                else:
                    del self._known[request_id]
            if len(self._changed_at) > MAX_CHANGES:
                self._forget_all_locked()

    def _forget_all(self, listening: bool) -> None:
        with self._lock:
            self._forget_all_locked()
            self._listening = listening

    def _forget_all_locked(self) -> None:
        self._changes += 1
        self._all_changed_at = self._changes
        self._known.clear()
        self._changed_at.clear()

    def _start_listening(self) -> None:
        # Started on first use in each process: a thread started before a server forks would not be in its workers.
        pid = os.getpid()
        if self._started_in == pid:
            return
        with self._lock:
            if self._started_in == pid:
                return
            self._started_in = pid
            self._listening = False
        threading.Thread(target=self._listen_forever, name="request-versions", daemon=True).start()

    def _listen_forever(self) -> None:
        failures = 0
        while True:
            try:
                connection = self._connect()
                if connection is None:
                    return
                failures = 0
                self._listen(connection)
            except Exception:
                if failures == 0:  # once an outage: the next success says nothing either
                    log.warning("request versions: not listening; polls read the database", exc_info=True)
            self._forget_all(listening=False)
            time.sleep(backoff.exponential(failures, base_s=0.5, cap_s=10.0, jitter=True))
            failures += 1

    def _connect(self) -> Any | None:
        """A connection of its own, listening; None where changes cannot be notified (SQLite, no trigger, or a
        transaction pooler between, which hands the listening session to other clients between statements)."""
        with self._app.app_context():
            if db.engine.dialect.name != "postgresql":
                return None
            listen_url = self._app.config["SETTINGS"].database_listen_url
            if listen_url:
                import psycopg2

                connection = psycopg2.connect(listen_url.replace("postgresql+psycopg2://", "postgresql://", 1))
            else:
                pooled = db.engine.raw_connection()
                connection = pooled.driver_connection
                pooled.detach()
        connection.rollback()
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_trigger WHERE tgname = 'requests_notify_change'")
            if cursor.fetchone() is None:
                log.warning("request versions: the requests table has no change trigger; polls read the database")
                connection.close()
                return None
            cursor.execute(f"LISTEN {CHANNEL}")
        if not self._notices_reach(connection):
            log.warning(
                "request versions: a notification sent through DATABASE_URL does not reach the listening connection "
                "(a transaction pooler such as PgBouncer between?); set DATABASE_LISTEN_URL to a direct connection. "
                "Polls read the database"
            )
            connection.close()
            return None
        return connection

    def _notices_reach(self, connection: Any) -> bool:
        """Whether a notification sent as the trigger sends one, on another connection, reaches ``connection``."""
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        with self._app.app_context():
            db.session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": probe})
            db.session.commit()
            db.session.remove()
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while time.monotonic() < deadline:
            select.select([connection], [], [], 0.1)
            connection.poll()
            payloads = [notice.payload for notice in connection.notifies]
            connection.notifies.clear()
            if probe in payloads:
                return True
        return False

    def _listen(self, connection: Any) -> None:
        try:
            # Listening from here on: whatever was known before may have changed unseen.
            self._forget_all(listening=True)
            while True:
                select.select([connection], [], [], 5.0)
                connection.poll()
                while connection.notifies:
                    payload = connection.notifies.pop(0).payload
                    if payload.startswith(PROBE_PREFIX):
                        continue  # another process's probe
                    request_id, _, status = payload.partition(" ")
                    try:
                        self._changed(uuid.UUID(request_id), status)
                    except ValueError:
                        log.warning("request versions: a notification named no request: %r", payload[:80])
        finally:
            connection.close()

"""Engine settings per database, the database's clock, and the checks that the connection is sound."""

from __future__ import annotations

import contextlib
import contextvars
import csv
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, g, request
from sqlalchemy import Table, event, exc, insert, literal, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from models import UtcDateTime

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


# A pooled connection idle this long is pinged before use; one in steady use is not.
PING_AFTER_IDLE_S = 2.0

# A database outage costs a retry with back-off, not the message: the claim has not happened yet,
# or is held by this task id, which a retry keeps.
DATABASE_ERRORS = (exc.OperationalError, exc.InterfaceError)


def engine_options(database_url: str) -> dict[str, Any]:
    """Pool options; PostgreSQL's connections are checked after idling (``configure_engine``)."""
    if database_url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}
    return {"pool_recycle": 1800, "connect_args": {"connect_timeout": 5}}


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a connection taken from the pool after idling, so a PostgreSQL restart costs a reconnect.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: a round trip that was a sixth of a status
    poll's time. A connection in steady use is not pinged; if the server went away meanwhile, the
    first error invalidates the pool's older connections, and the caller's retry (or a ``503``)
    follows, as it would for a restart mid-query.
    """

    @event.listens_for(engine, "checkin")
    def on_checkin(_dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection, record, _proxy) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE_S:
            return
        try:
            with contextlib.closing(dbapi_connection.cursor()) as cursor:
                cursor.execute("SELECT 1")
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError(str(error)) from error  # the pool replaces it and tries again


def relax_commit_durability(engine: Engine) -> None:
    """Commit without waiting for the write-ahead log to reach the disk, on this engine's connections.

    For the workers: a commit is then a round trip, not a disk flush, and the hot rows (a request's
    counters) are held for that much less. Only a crash of the PostgreSQL server itself can lose the
    last few hundred milliseconds of commits, never a worker's crash, and every worker change is
    redone if lost: a lost claim or result leaves the image to be processed again (its output key is
    fixed), a lost final status is set again with its webhook event. Uploads, on the API, stay durable.
    """
    if engine.dialect.name != "postgresql":
        return

    @event.listens_for(engine, "begin")
    def on_begin(connection) -> None:
        # Per transaction, not per session: behind PgBouncer in transaction mode a session's setting
        # would reach whichever client the server connection serves next, the API's uploads included.
        connection.exec_driver_sql("SET LOCAL synchronous_commit TO off")


def configure_engine(engine: Engine) -> None:
    """Make SQLite safe for an API, workers and beat writing at once; ping PostgreSQL's idle connections."""
    if engine.dialect.name != "sqlite":
        _ping_idle_connections(engine)
        return

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record) -> None:
        # pysqlite's own transaction handling starts deferred transactions, which fail at once
        # with "database is locked" when two writers race; we begin them ourselves instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection) -> None:
        # A reader takes no lock at all under WAL; a writer takes the write lock up front, so it
        # waits its turn instead of failing when its snapshot turns out stale at the first write.
        connection.exec_driver_sql("BEGIN" if _read_only.get() else "BEGIN IMMEDIATE")


_read_only: contextvars.ContextVar[bool] = contextvars.ContextVar("database_read_only", default=False)


@contextmanager
def read_only() -> Iterator[None]:
    """Transactions begun inside only read: on SQLite they take no write lock."""
    token = _read_only.set(True)
    try:
        yield
    finally:
        _read_only.reset(token)


def read_only_for_safe_methods(app: Flask) -> None:
    """A GET or HEAD only reads: a status poll or a CSV download never takes SQLite's write lock."""

    @app.before_request
    def _begin_read_only() -> None:
        if request.method in ("GET", "HEAD"):
            g.read_only_token = _read_only.set(True)

    @app.teardown_request
    def _end_read_only(_error: BaseException | None) -> None:
        token = g.pop("read_only_token", None)
        if token is not None:
            _read_only.reset(token)


class db_now(FunctionElement):
    """The database's clock, plus ``offset_s`` seconds: every lease and staleness test uses it.

    Each process's own clock may run fast or slow; the database's is the one clock they share.
    """

    type = UtcDateTime()
    inherit_cache = True
    name = "db_now"

    def __init__(self, offset_s: float = 0.0) -> None:
        super().__init__(literal(float(offset_s)))


@compiles(db_now)
def _db_now_postgresql(element: db_now, compiler, **kw) -> str:
    return f"(statement_timestamp() + ({compiler.process(element.clauses, **kw)}) * interval '1 second')"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler, **kw) -> str:
    # The text form SQLAlchemy itself writes for a SQLite timestamp, so comparisons stay textual.
    offset = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', ({offset}) || ' seconds')"


def ping(engine: Engine) -> None:
    """Raise if the database does not answer."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def bulk_insert(connection: Connection, table: Table, rows: list[dict[str, Any]], *, new_ids: bool) -> list[int]:
    """Insert many rows in the connection's transaction; returns their new ids, in order, if asked.

    On PostgreSQL this is ``COPY`` with ids reserved from the sequence first, several times faster
    than multi-row ``INSERT ... RETURNING`` for the hundreds of thousands of rows a 10 MiB CSV holds.
    """
    if not rows:
        return []
    if connection.dialect.name != "postgresql":
        if new_ids:
            statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
            return list(connection.execute(statement, rows).scalars())
        connection.execute(insert(table), rows)
        return []
    ids: list[int] = []
    if new_ids:
        ids = list(
            connection.execute(
                text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)"),
                {"table": table.name, "count": len(rows)},
            ).scalars()
        )
    columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for index, row in enumerate(rows):
        # No value may be None: in COPY's CSV format an empty field is NULL.
        writer.writerow([*(row[column] for column in columns), *((ids[index],) if new_ids else ())])
    buffer.seek(0)
    names = ", ".join(columns + (["id"] if new_ids else []))
    with connection.connection.cursor() as cursor:
        cursor.copy_expert(f"COPY {table.name} ({names}) FROM STDIN WITH (FORMAT csv)", buffer)
    return ids

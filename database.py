"""Engine settings per database, and the checks that the schema and connection are sound."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event, insert, text
from sqlalchemy.engine import Connection, Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def engine_options(database_url: str) -> dict[str, Any]:
    """Pool options: pre-ping so a PostgreSQL restart costs one reconnect, not a stream of errors."""
    if database_url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}
    return {"pool_pre_ping": True, "pool_recycle": 1800, "connect_args": {"connect_timeout": 5}}


def configure_engine(engine: Engine) -> None:
    """Make SQLite safe for an API, workers and beat writing at once."""
    if engine.dialect.name != "sqlite":
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
        connection.exec_driver_sql("BEGIN IMMEDIATE")


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

"""What a fault test reads from outside once a request is final: its images that are not COMPLETED, told in
full in a failure's message.

Every query is on the service's own database, through a connection of the test's own.
"""

from __future__ import annotations

import pytest
import sqlalchemy

#: Images a failure's message lists one by one; the rest are counted.
LISTED = 20
MESSAGE_CHARS = 100


def engine_of(env: dict[str, str]) -> sqlalchemy.Engine:
    """A connection pool of the test's own to the service's database."""
    return sqlalchemy.create_engine(
        env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://"),
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )


def _shortened(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def not_completed(database: sqlalchemy.Engine, request_id: str | None = None) -> str:
    """A line for each image (of the request, or of the whole database) that is not COMPLETED, the first
    ``LISTED`` of them, with a count; "" when every image is COMPLETED."""
    where = "status <> 'COMPLETED'" + (" AND request_id = :id" if request_id else "")
    with database.connect() as connection:
        count = connection.execute(sqlalchemy.text(f"SELECT count(*) FROM images WHERE {where}"), {"id": request_id})
        count = count.scalar()
        total = connection.execute(
            sqlalchemy.text("SELECT count(*) FROM images" + (" WHERE request_id = :id" if request_id else "")),
            {"id": request_id},
        ).scalar()
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT id, status, attempts, retries, requeues, error_code, error_message FROM images"
                f" WHERE {where} ORDER BY id LIMIT {LISTED}"
            ),
            {"id": request_id},
        ).all()
    if not count:
        return ""
    lines = [f"{count} of {total} images not COMPLETED:"]
    for row in rows:
        error = f", {row.error_code}: {_shortened(row.error_message)}" if row.error_code else ""
        lines.append(
            f"  image {row.id} {row.status}, attempts {row.attempts} (retries {row.retries},"
            f" requeues {row.requeues}){error}"
        )
    if count > len(rows):
        lines.append(f"  … and {count - len(rows)} more")
    return "\n".join(lines)


def completion_problems(database: sqlalchemy.Engine, request_id: str, status: str | None) -> list[str]:
    """What keeps the request from being COMPLETED with every image: its status, each image not COMPLETED."""
    unfinished = not_completed(database, request_id)
    if status == "COMPLETED" and not unfinished:
        return []
    return [f"request {request_id} is {status}; {unfinished or 'every image COMPLETED'}"]


def fail_on(problems: list[str]) -> None:
    """Fail with every problem in the message, in full, without a traceback; nothing if there are none."""
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def require_completed(database: sqlalchemy.Engine, request_id: str, status: str | None) -> None:
    """Fail, naming every image that is not COMPLETED, unless the request and all its images are."""
    fail_on(completion_problems(database, request_id, status))

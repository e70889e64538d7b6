"""Behind PgBouncer in transaction mode, where a server connection serves another client after each
transaction, nothing of one transaction's session state may reach the next: the workers' relaxed commits
are set per transaction, and the status cache's listener proves that notifications reach it or gives up
(polls then read the database) unless DATABASE_LISTEN_URL gives it a session of its own.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import text
from support.backing import PgBouncer, fail_or_skip

import database
from config import _database_url


@pytest.fixture
def pooler(quiet_service, tmp_path):
    url = quiet_service.overrides["database_url"]
    if not url.startswith("postgresql"):
        pytest.skip("PgBouncer pools PostgreSQL")
    try:
        running = PgBouncer(url, Path(f"/tmp/imgsvc-pgbouncer-{uuid.uuid4().hex[:8]}"))
    except RuntimeError as error:
        fail_or_skip(str(error))
    yield running
    running.stop()


def listening_after(app, seconds: float) -> bool:
    versions = app.extensions["request_versions"]
    with app.app_context():
        versions.known(uuid.uuid4())  # starts the listener
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not versions.listening():
        time.sleep(0.05)
    return versions.listening()


def test_the_listener_knows_when_a_transaction_pooler_keeps_notifications_from_it(quiet_service, pooler):
    from app import create_app

    direct = quiet_service.overrides["database_url"]
    try:
        behind = create_app({**quiet_service.overrides, "database_url": _database_url(pooler.url)})
        assert not listening_after(behind, 4), "a listener behind a transaction pooler cannot hear notifications"
        with_session = create_app(
            {**quiet_service.overrides, "database_url": _database_url(pooler.url), "database_listen_url": direct}
        )
        assert listening_after(with_session, 10)
    finally:
        quiet_service.app.extensions["celery"].set_default()


def test_relaxed_commits_stay_in_their_transaction_behind_a_transaction_pooler(pooler):
    # One server connection, so that the second client is served by the session the first one used.
    url = _database_url(pooler.url)
    worker = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    database.relax_commit_durability(worker)
    api = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        for _ in range(5):
            with worker.begin() as connection:
                assert connection.execute(text("SHOW synchronous_commit")).scalar() == "off"
            with api.begin() as connection:
                assert connection.execute(text("SHOW synchronous_commit")).scalar() == "on"
    finally:
        worker.dispose()
        api.dispose()

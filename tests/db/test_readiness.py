"""/readyz names a dependency that does not answer, and keeps its error text for the log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import celery
import pytest
from support.loopback import unused_port


@contextmanager
def app_on(tmp_path, database_url: str) -> Iterator:
    """An app of its own on the given database and a local broker; no worker needed."""
    from app import create_app

    previous = celery.current_app._get_current_object()
    try:
        yield create_app(
            {
                "instance_dir": tmp_path,
                "storage_root": tmp_path / "media",
                "broker_url": "filesystem://",
                "database_url": database_url,
            }
        )
    finally:
        # Creating an app made its Celery app the process's default; other tests send with theirs.
        previous.set_default()
        previous.set_current()


def test_readiness_names_the_failing_dependency_and_logs_its_error(tmp_path, caplog):
    port = unused_port()  # nothing listens there: the database is down
    with (
        app_on(tmp_path, f"postgresql+psycopg2://postgres@127.0.0.1:{port}/x") as app,
        caplog.at_level(logging.WARNING, logger="web.health"),
    ):
        answer = app.test_client().get("/readyz")

    assert answer.status_code == 503
    assert answer.json["error"]["code"] == "not_ready"
    assert answer.json["error"]["details"] == [{"dependency": "database", "message": "not reachable"}]
    text = answer.get_data(as_text=True)
    for leak in (str(port), "127.0.0.1", "postgres", "OperationalError", "refused", "connection to server"):
        assert leak not in text
    # The detail is for the operator, in the log.
    assert "database" in caplog.text and str(port) in caplog.text


def test_readiness_is_ok_when_every_dependency_answers(tmp_path):
    with app_on(tmp_path, f"sqlite:///{tmp_path / 'ready.db'}") as app:
        answer = app.test_client().get("/readyz")
    assert answer.status_code == 200
    assert answer.json == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_a_pooled_connection_killed_while_idle_is_replaced_unseen(quiet_service, monkeypatch):
    """The server ends an idle pooled connection (a restart, an idle timeout): the next use gets a new one."""
    import psycopg2
    import sqlalchemy
    from sqlalchemy import text

    import database

    url = quiet_service.app.config["SETTINGS"].database_url
    if not url.startswith("postgresql"):
        pytest.skip("PostgreSQL's pool only: SQLite has no server to lose")
    engine = sqlalchemy.create_engine(url, pool_size=1, max_overflow=0, **database.engine_options(url))
    database.configure_engine(engine)
    admin = psycopg2.connect(engine.url.set(drivername="postgresql").render_as_string(hide_password=False))
    admin.autocommit = True

    def backend_after_killing_the_pooled_one() -> int:
        with engine.connect() as connection:
            pooled = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (pooled,))
        with engine.connect() as connection:
            return connection.execute(text("SELECT pg_backend_pid()")).scalar()

    try:
        monkeypatch.setattr(database, "PING_AFTER_IDLE_S", 0.0)
        assert backend_after_killing_the_pooled_one()
        monkeypatch.setattr(database, "PING_AFTER_IDLE_S", 3600.0)  # not pinged: the dead connection is used
        with pytest.raises(sqlalchemy.exc.OperationalError):
            backend_after_killing_the_pooled_one()
    finally:
        admin.close()
        engine.dispose()


def test_workers_commit_without_waiting_for_the_disk_and_the_api_waits(quiet_service):
    import sqlalchemy
    from celery.signals import worker_init
    from sqlalchemy import text

    import database
    from app import create_app
    from models import db

    url = quiet_service.app.config["SETTINGS"].database_url
    if not url.startswith("postgresql"):
        pytest.skip("a PostgreSQL setting")
    with quiet_service.app.app_context():
        assert db.session.execute(text("SHOW synchronous_commit")).scalar() == "on"  # the API's
        db.session.remove()
    engine = sqlalchemy.create_engine(url, **database.engine_options(url))
    database.relax_commit_durability(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SHOW synchronous_commit")).scalar() == "off"
    engine.dispose()

    worker_app = create_app(quiet_service.overrides)
    worker_init.send(sender=None)  # what a worker's main process sends before its pool forks
    with worker_app.app_context():
        assert db.session.execute(text("SHOW synchronous_commit")).scalar() == "off"
        db.session.remove()
        db.engine.dispose()
    quiet_service.app.extensions["celery"].set_default()

"""The backing services of a run: a PostgreSQL database and a Redis key prefix of its own, or SQLite and
the filesystem broker in a temporary folder; and the migrations that build a database's schema.

With TEST_DATABASE_URL and TEST_BROKER_URL set, the run uses PostgreSQL and Redis, in a database and
under a Redis key prefix of its own, both removed at the end; with TEST_REQUIRE_SERVICES=1 a service
that cannot be reached fails the run instead of skipping its tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL", "")
REQUIRE_SERVICES = os.environ.get("TEST_REQUIRE_SERVICES") == "1"


def fail_or_skip(message: str) -> None:
    """Fail when the run requires every service (CI), else skip: something the test needs is missing."""
    if REQUIRE_SERVICES:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class PostgresDatabase:
    """A database of this run's own on the server TEST_DATABASE_URL names."""

    def __init__(self, admin_url: str) -> None:
        import psycopg2

        self.admin_url = admin_url
        self.name = f"imgsvc_test_{uuid.uuid4().hex[:12]}"
        try:
            self._admin("CREATE DATABASE {}")
        except psycopg2.OperationalError as error:
            raise RuntimeError(f"PostgreSQL at {admin_url} cannot be reached: {error}") from error
        parts = urlsplit(admin_url)
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))

    def _admin(self, statement: str) -> None:
        import psycopg2
        from psycopg2 import sql

        connection = psycopg2.connect(self.admin_url, connect_timeout=5)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL(statement).format(sql.Identifier(self.name)))
        finally:
            connection.close()

    def drop(self) -> None:
        """Drop the database, closing whatever connections are left on it."""
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")


def check_redis(url: str) -> None:
    """Raise RuntimeError unless the Redis at url answers a ping."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        raise RuntimeError(f"Redis at {url} cannot be reached: {error}") from error


def drop_redis_prefix(url: str, prefix: str) -> None:
    """Delete every key under prefix in the Redis at url."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def backing_services(tmp_path_factory) -> Iterator[dict[str, str]]:
    """DATABASE_URL and CELERY_BROKER_URL for this run, created here and removed afterwards."""
    instance = tmp_path_factory.mktemp("instance")
    env = {"INSTANCE_DIR": str(instance)}
    database = None
    prefix = f"imgsvc-test-{uuid.uuid4().hex[:8]}:"
    try:
        if TEST_DATABASE_URL:
            database = PostgresDatabase(TEST_DATABASE_URL)
            env["DATABASE_URL"] = database.url
        else:
            env["DATABASE_URL"] = f"sqlite:///{instance / 'test.db'}"
        if TEST_BROKER_URL:
            check_redis(TEST_BROKER_URL)
            env["CELERY_BROKER_URL"] = TEST_BROKER_URL
            env["BROKER_KEY_PREFIX"] = prefix
        else:
            env["CELERY_BROKER_URL"] = "filesystem://"
    except RuntimeError as error:
        fail_or_skip(str(error))
    yield env
    if database is not None:
        database.drop()
    if TEST_BROKER_URL:
        drop_redis_prefix(TEST_BROKER_URL, prefix)


def migrate(env: dict[str, str]) -> None:
    """Build the schema the only way it is ever built: with the migrations."""
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app:create_app", "db", "upgrade"],
        env={**os.environ, **env},
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


class SeparateDatabase:
    """A migrated database of its own (PostgreSQL when the run has one, else SQLite), dropped by ``drop``."""

    def __init__(self, backing_services: dict[str, str], instance: Path) -> None:
        self._postgres = PostgresDatabase(TEST_DATABASE_URL) if TEST_DATABASE_URL else None
        self.url = self._postgres.url if self._postgres else f"sqlite:///{instance / 'separate.db'}"
        migrate({**backing_services, "INSTANCE_DIR": str(instance), "DATABASE_URL": self.url})

    def drop(self) -> None:
        """Drop the database if it is PostgreSQL's (a SQLite file goes with its temporary folder)."""
        if self._postgres is not None:
            self._postgres.drop()

"""The backing services of a run: a PostgreSQL database and a Redis key prefix (or a RabbitMQ virtual host)
of its own, or SQLite and the filesystem broker in a temporary folder; and the migrations that build a
database's schema.

With TEST_DATABASE_URL and TEST_BROKER_URL set, the run uses PostgreSQL and Redis (``redis://``) or
RabbitMQ (``amqp://``), in a database and under a Redis key prefix or a virtual host of its own, all
removed at the end; with TEST_DATABASE_POOLER=pgbouncer, through PgBouncer in transaction mode. With
TEST_REQUIRE_SERVICES=1 a service that cannot be reached fails the run instead of skipping its tests.
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
#: ``pgbouncer``: the service reaches the run's database through PgBouncer in transaction mode.
TEST_DATABASE_POOLER = os.environ.get("TEST_DATABASE_POOLER", "")
TEST_BROKER_MANAGEMENT_URL = os.environ.get("TEST_BROKER_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")


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


class RabbitMQVhost:
    """A virtual host of this run's own on the RabbitMQ TEST_BROKER_URL names, made with its management API."""

    def __init__(self, broker_url: str, management_url: str) -> None:
        parts = urlsplit(management_url)
        self.api = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port or 15672}"))
        self.auth = (parts.username or "guest", parts.password or "guest")
        self.management_url = management_url
        self.name = f"imgsvc-test-{uuid.uuid4().hex[:8]}"
        broker = urlsplit(broker_url)
        try:
            self._call("PUT", f"/api/vhosts/{self.name}")
            user = broker.username or "guest"
            permissions = {"configure": ".*", "write": ".*", "read": ".*"}
            self._call("PUT", f"/api/permissions/{self.name}/{user}", json=permissions)
        except OSError as error:
            raise RuntimeError(
                f"RabbitMQ's management API at {self.api} cannot be reached ({error}): "
                "rabbitmq-plugins enable rabbitmq_management"
            ) from error
        self.url = urlunsplit(broker._replace(path=f"/{self.name}"))

    def _call(self, method: str, path: str, **kwargs: object) -> None:
        import requests

        try:
            answer = requests.request(method, self.api + path, auth=self.auth, timeout=10, **kwargs)  # type: ignore[arg-type]
        except requests.RequestException as error:
            raise OSError(str(error)) from error
        if answer.status_code >= 400:
            raise OSError(f"{method} {path}: {answer.status_code} {answer.text[:200]}")

    def drop(self) -> None:
        self._call("DELETE", f"/api/vhosts/{self.name}")


class PgBouncer:
    """PgBouncer in transaction mode in front of one database, as the service runs behind it in production.

    Run as the ``postgres`` user (PgBouncer refuses root), from a folder of its own.
    """

    def __init__(self, database_url: str, folder: Path) -> None:
        import shutil
        import socket

        if shutil.which("pgbouncer") is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install -y pgbouncer)")
        parts = urlsplit(database_url)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        name = parts.path.lstrip("/")
        user = parts.username or "postgres"
        (folder / "users.txt").write_text(f'"{user}" ""\n')
        ini = folder / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{name} = host={parts.hostname} port={parts.port or 5432} dbname={name}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir =\nauth_type = trust\nauth_file = {folder / 'users.txt'}\n"
            "pool_mode = transaction\nmax_client_conn = 1000\ndefault_pool_size = 40\n"
            f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
        )
        for path in folder.iterdir():
            path.chmod(0o666)
        self.process = subprocess.Popen(["runuser", "-u", "postgres", "--", "pgbouncer", str(ini)])
        self.url = urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{self.port}"))
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        import socket
        import time

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("pgbouncer did not listen within 15 s")

    def stop(self) -> None:
        import shutil

        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


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
    database = pooler = vhost = None
    prefix = f"imgsvc-test-{uuid.uuid4().hex[:8]}:"
    try:
        if TEST_DATABASE_URL:
            database = PostgresDatabase(TEST_DATABASE_URL)
            env["DATABASE_URL"] = database.url
            if TEST_DATABASE_POOLER == "pgbouncer":
                pooler = PgBouncer(database.url, Path(f"/tmp/imgsvc-pgbouncer-{uuid.uuid4().hex[:8]}"))
                env["DATABASE_URL"] = pooler.url
                # LISTEN needs a session of its own: past a transaction pooler, straight to PostgreSQL.
                env["DATABASE_LISTEN_URL"] = database.url
        else:
            env["DATABASE_URL"] = f"sqlite:///{instance / 'test.db'}"
        if TEST_BROKER_URL.startswith("amqp://"):
            vhost = RabbitMQVhost(TEST_BROKER_URL, TEST_BROKER_MANAGEMENT_URL)
            env["CELERY_BROKER_URL"] = vhost.url
            env["BROKER_MANAGEMENT_URL"] = vhost.management_url
        elif TEST_BROKER_URL:
            check_redis(TEST_BROKER_URL)
            env["CELERY_BROKER_URL"] = TEST_BROKER_URL
            env["BROKER_KEY_PREFIX"] = prefix
        else:
            env["CELERY_BROKER_URL"] = "filesystem://"
    except RuntimeError as error:
        fail_or_skip(str(error))
    yield env
    if pooler is not None:
        pooler.stop()
    if database is not None:
        database.drop()
    if vhost is not None:
        vhost.drop()
    elif TEST_BROKER_URL:
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

"""Fixtures of the fault suite: its own PostgreSQL cluster and Redis, slow image sources, a receiver."""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from harness import RECOVERY_SETTINGS, Service
from invariants import engine_of, not_completed
from scenario import SlowSource
from stores import PostgresCluster, RedisServer
from support.loopback import IMAGE_HOST, LoopbackHTTPServer, unused_port
from support.receivers import WebhookReceiver

REPORT_PATH = os.environ.get("FAULT_REPORT")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    # Not under pytest's temporary folder: that is private to root, and the cluster runs as postgres.
    cluster = PostgresCluster(Path(tempfile.mkdtemp(prefix="imgsvc-faults-pg-")))
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def loopback_server() -> Iterator[LoopbackHTTPServer]:
    with LoopbackHTTPServer(IMAGE_HOST) as server:
        yield server


@pytest.fixture
def slow_source(loopback_server) -> SlowSource:
    return SlowSource(loopback_server, delay_s=0.05)


@pytest.fixture
def service_env(postgres, redis_server, tmp_path) -> dict[str, str]:
    """Settings of one test's service: a fresh database, a flushed Redis, short recovery timings."""
    name = f"faults_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(postgres.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    import redis

    redis.Redis.from_url(redis_server.url).flushall()
    port = unused_port()
    env = {
        **os.environ,
        "INSTANCE_DIR": str(tmp_path / "instance"),
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{postgres.port}/{name}",
        "CELERY_BROKER_URL": redis_server.url,
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "FETCH_ALLOWED_NETWORKS": f"{IMAGE_HOST}/32",
        **RECOVERY_SETTINGS,
        "API_KEYS": "",
    }
    return env


@pytest.fixture
def rabbitmq_env(service_env) -> Iterator[dict[str, str]]:
    """``service_env`` on the machine's RabbitMQ (127.0.0.1:5672), in a virtual host of the test's own."""
    from support.backing import TEST_BROKER_MANAGEMENT_URL, RabbitMQVhost

    try:
        vhost = RabbitMQVhost("amqp://guest:guest@127.0.0.1:5672/", TEST_BROKER_MANAGEMENT_URL)
    except RuntimeError as error:
        pytest.fail(f"RabbitMQ: {error}", pytrace=False)
    service_env.update(CELERY_BROKER_URL=vhost.url, BROKER_MANAGEMENT_URL=vhost.management_url)
    yield service_env
    vhost.drop()


@pytest.fixture
def service(service_env, tmp_path) -> Iterator[Service]:
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Service(service_env, logs)
    running.migrate()
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def database(service_env) -> Iterator[sqlalchemy.Engine]:
    """A direct connection to the service's database, for checking invariants from outside."""
    engine = engine_of(service_env)
    yield engine
    engine.dispose()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed fault test's report tells every image of its database that is not COMPLETED, whatever failed
    (an assertion, a time-out, a process that would not start)."""
    outcome = yield
    result = outcome.get_result()
    env = item.funcargs.get("service_env") if hasattr(item, "funcargs") else None
    if result.when != "call" or not result.failed or env is None:
        return
    database = engine_of(env)
    try:
        told = not_completed(database)
    except sqlalchemy.exc.SQLAlchemyError as error:
        told = f"the database could not be read: {error}"
    finally:
        database.dispose()
    result.sections.append(("images not COMPLETED", told or "every image COMPLETED"))


@pytest.fixture
def report(request):
    """Collects a test's figures; printed, and appended to $FAULT_REPORT when set."""
    figures: dict = {"test": request.node.name}
    yield figures
    line = json.dumps(figures, sort_keys=True)
    print(f"\nFAULT REPORT {line}")
    if REPORT_PATH:
        with open(REPORT_PATH, "a") as handle:
            handle.write(line + "\n")


@pytest.fixture
def receiver(loopback_server):
    return WebhookReceiver(loopback_server, f"/hooks/{uuid.uuid4().hex}")

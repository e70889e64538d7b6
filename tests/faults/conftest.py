"""Fixtures of the fault suite: its own PostgreSQL cluster and Redis, slow image sources, a receiver."""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from harness import PostgresCluster, RedisServer, Service
from invariants import engine_of, not_completed
from support.images import jpeg_bytes
from support.loopback import IMAGE_HOST, LoopbackHTTPServer, RequestHandler, unused_port
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


class SlowSource:
    """Images served from 127.0.0.2 with a delay each, so that there is time to strike mid-request.

    Each has bytes of its own, so that each is encoded and stored (equal bytes would share one output).
    ``again_delay_s``, when set, is the delay of every download of an image after its first: a take-over
    of an image is then still under way for that long.
    """

    def __init__(self, server: LoopbackHTTPServer, delay_s: float, again_delay_s: float | None = None) -> None:
        self.server = server
        self.delay_s = delay_s
        self.again_delay_s = again_delay_s
        self.images: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()

    def urls(self, count: int) -> list[str]:
        prefix = f"/slow/{uuid.uuid4().hex}"
        paths = [f"{prefix}/{n}.jpg" for n in range(count)]
        for n, path in enumerate(paths):
            self.images[path] = jpeg_bytes((320, 240), comment=f"image {n}".encode())
            self.server.route(path, self._handle)
        return [self.server.url(path) for path in paths]

    def _handle(self, request: RequestHandler) -> None:
        path = request.path.split("?")[0]
        with self._lock:
            self.hits[request.path] = self.hits.get(request.path, 0) + 1
            again = self.hits[request.path] > 1 and self.again_delay_s is not None
        time.sleep(self.again_delay_s if again else self.delay_s)
        request.send(200, self.images[path], {"Content-Type": "image/jpeg"})

    def downloads(self, urls: list[str]) -> int:
        with self._lock:
            return sum(self.hits.get(url.split(str(self.server.port), 1)[1], 0) for url in urls)


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
        "FETCH_CONNECT_TIMEOUT_S": "2",
        "FETCH_READ_TIMEOUT_S": "3",
        "FETCH_TOTAL_TIMEOUT_S": "4",
        "SWEEP_INTERVAL_S": "1",
        "STALE_IMAGE_AFTER_S": "8",
        "TASK_SOFT_TIME_LIMIT_S": "5",
        "TASK_TIME_LIMIT_S": "6",
        "BROKER_VISIBILITY_TIMEOUT_S": "15",
        "WEBHOOK_RETRY_SCHEDULE": "0,1,1,1,1,1",
        "WEBHOOK_TIMEOUT_S": "3",
        "RATE_LIMIT_UPLOADS": "100000/minute",
        "RATE_LIMIT_READS": "100000/minute",
        "WORKER_CONCURRENCY": "2",
        # Batches of four fetched two at a time: enough in flight that a fault lands mid-batch, and requests
        # that still run for seconds, as the scenarios' timings assume.
        "IMAGE_BATCH_SIZE": "4",
        "IMAGE_FETCH_THREADS": "2",
        "WEB_CONCURRENCY": "2",
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

"""The service the tests drive: the HTTP API in a thread of the test process and real Celery processes.

``service`` is the one running service of a run (API, image worker, webhook worker, maintenance worker, beat);
``quiet_service`` is the app alone on a database and a broker of its own, for tests that call state
changes directly; ``sent`` records the tasks the code under test would send.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import launcher
from support.backing import ROOT, SeparateDatabase, migrate
from support.loopback import IMAGE_HOST


class WorkerProcess:
    """A real Celery process (an image, webhook or maintenance worker, or beat), started as the service starts it."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        concurrency: int = 2,
        name: str = "w",
        kind: str = "worker",
        cwd: Path | None = None,
    ) -> None:
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115  (closed in stop)
        worker_env = {**os.environ, **env, "WORKER_CONCURRENCY": str(concurrency)}
        if cwd is not None:
            # Run from a folder of its own, as on another machine: the code is found on the path instead.
            worker_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), worker_env.get("PYTHONPATH")]))
        argv = launcher.commands(worker_env)[kind]
        if kind != "beat":
            argv = [*argv, "--hostname", f"{name}-{uuid.uuid4().hex[:6]}@%h"]
        self.process = subprocess.Popen(
            argv, env=worker_env, cwd=cwd or ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )
        self._wait_ready(b"beat: Starting" if kind == "beat" else b"ready.")

    def _wait_ready(self, marker: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if marker in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout}s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        """Stop the process as a service manager would: SIGTERM, then SIGKILL after 20 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class ApiServer:
    """The Flask app behind a real HTTP server on loopback, in a thread of the test process."""

    def __init__(self) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, lambda environ, start_response: [], threaded=True)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread: threading.Thread | None = None

    @classmethod
    def serving(cls, **overrides: Any) -> ApiServer:
        """A new app with these settings overrides (its public base URL this server's), served at once."""
        from app import create_app

        server = cls()
        server.start(create_app({"public_base_url": server.base_url, **overrides}))
        return server

    def start(self, flask_app) -> None:
        """Serve flask_app in a daemon thread."""
        self.server.app = flask_app
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the app's database connections."""
        self.server.shutdown()
        if self.thread is not None:
            from models import db

            with self.server.app.app_context():
                db.engine.dispose()


class Service:
    """What a test needs: the API's URL, the Flask app (for looking at rows), the settings' env."""

    def __init__(self, base_url: str, flask_app, env: dict[str, str], instance: Path) -> None:
        self.base_url = base_url
        self.app = flask_app
        self.env = env
        self.instance = instance

    def url(self, path: str) -> str:
        """The API's URL of path."""
        return self.base_url + path

    def send_with_own_celery(self) -> None:
        """Make the service's Celery app the default again: creating another app made that one the default."""
        self.app.extensions["celery"].set_default()
        self.app.extensions["celery"].set_current()


@pytest.fixture(scope="session")
def service(backing_services) -> Iterator[Service]:
    """The running service: migrated database, HTTP API and one worker with two processes."""
    api = ApiServer()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    env = {
        **backing_services,
        "PORT": str(api.server.server_port),
        "PUBLIC_BASE_URL": api.base_url,
        "WEBHOOK_SECRET": secret,
        "FETCH_ALLOWED_NETWORKS": f"{IMAGE_HOST}/32",
        "FETCH_CONNECT_TIMEOUT_S": "2",
        "FETCH_READ_TIMEOUT_S": "2",
        "FETCH_TOTAL_TIMEOUT_S": "5",
        "FETCH_MAX_BYTES": str(5 * 1024 * 1024),
        # Small batches fetched two at a time: a request of a few slow images still runs long enough for a
        # test to see it midway (a page's rows filling in, a cancel), as a big request does in production.
        "IMAGE_BATCH_SIZE": "4",
        "IMAGE_FETCH_THREADS": "2",
        "WEBHOOK_TIMEOUT_S": "3",
        "WEBHOOK_RETRY_SCHEDULE": "0,1,1,1",
        "STORAGE_MAX_RETRIES": "2",
        "MAX_IMAGE_PIXELS": str(40_000_000),
        "API_KEYS": "",
        "SERVE_SAMPLES": "1",
        # Rate limits have tests of their own; here they would only throttle the suite.
        "RATE_LIMIT_STORAGE_URL": "memory://",
        "RATE_LIMIT_UPLOADS": "100000/minute",
        "RATE_LIMIT_READS": "100000/minute",
        # Shared with the workers, as launcher.py shares it: the API's /metrics adds up their counts.
        "PROMETHEUS_MULTIPROC_DIR": str(Path(backing_services["INSTANCE_DIR"]) / "metrics"),
    }
    saved = dict(os.environ)
    os.environ.update(env)
    migrate(env)
    from app import create_app

    flask_app = create_app()
    api.start(flask_app)
    instance = Path(backing_services["INSTANCE_DIR"])
    processes = [
        WorkerProcess(env, instance / "worker.log"),
        WorkerProcess(env, instance / "webhooks.log", kind="webhooks"),
        WorkerProcess(env, instance / "maintenance.log", kind="maintenance"),
        WorkerProcess(env, instance / "beat.log", kind="beat"),
    ]
    try:
        yield Service(api.base_url, flask_app, env, instance)
    finally:
        for process in processes:
            process.stop()
        api.stop()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def import_every_upload(service, monkeypatch) -> None:
    """The running API leaves every upload of more than two URLs to the import task."""
    settings = service.app.config["SETTINGS"]
    monkeypatch.setitem(service.app.config, "SETTINGS", dataclasses.replace(settings, import_after_urls=2))


def empty_tables(app) -> None:
    """Delete every row of the app's database, children first."""
    from models import db

    with app.app_context(), db.engine.begin() as connection:
        for table in reversed(db.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture
def clean_tables(service) -> Iterator[None]:
    """Empty every table before the test; the worker has its own connection, so no rollback trick."""
    empty_tables(service.app)
    yield


class QuietService:
    """The app on a database and a broker of its own, with no worker or beat: what a test calls runs alone."""

    def __init__(self, app, overrides: dict[str, Any]) -> None:
        self.app = app
        #: Settings overrides that put another app on the same database and broker.
        self.overrides = overrides


@pytest.fixture(scope="session")
def quiet_service(backing_services, tmp_path_factory) -> Iterator[QuietService]:
    """For tests that call state changes directly: no dispatcher tick takes their images away."""
    instance = tmp_path_factory.mktemp("quiet")
    database = SeparateDatabase(backing_services, instance)
    # A broker nobody reads: a message sent here can never reach the session's worker.
    from app import create_app
    from config import _database_url
    from network_policy.addresses import parse_networks

    overrides = {
        "database_url": _database_url(database.url),
        "instance_dir": instance,
        "broker_url": "filesystem://",
        "broker_key_prefix": "",
        "fetch_allowed_networks": parse_networks(f"{IMAGE_HOST}/32"),
        "api_keys": (),
        "rate_limit_storage_url": "memory://",
        "rate_limit_uploads": "100000/minute",
        "rate_limit_reads": "100000/minute",
    }
    quiet_app = create_app(overrides)
    try:
        yield QuietService(quiet_app, overrides)
    finally:
        with quiet_app.app_context():
            from models import db

            db.engine.dispose()
        database.drop()


@pytest.fixture
def clean_quiet_tables(quiet_service) -> Iterator[None]:
    """Empty every table of the quiet service's database before the test."""
    empty_tables(quiet_service.app)
    yield


@pytest.fixture
def base_url(quiet_service, sent) -> Iterator[str]:
    """Runs the test inside the quiet app's context, its tasks recorded, and gives the public base URL."""
    from models import db

    with quiet_service.app.app_context():
        try:
            yield quiet_service.app.config["SETTINGS"].public_base_url
        finally:
            db.session.remove()


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, tuple]]:
    """Tasks the code under test would hand to the broker, recorded instead of sent."""
    from queueing import broker

    calls: list[tuple[str, tuple]] = []
    monkeypatch.setattr(broker, "send", lambda name, *args, **kw: calls.append((name, args)) or True)
    return calls

"""Deployments beside the session's service: a folder, a database and broker queues of their own,
real Celery processes and an API, for tests that change what the session's service cannot."""

from __future__ import annotations

import uuid
from pathlib import Path

from support.backing import RabbitMQVhost, SeparateDatabase
from support.services import ApiServer, Service, WorkerProcess


class SideDeployment:
    """The session service's settings with a folder, a database and a broker key prefix of their own (under
    the session's, so that its keys go with the session's at the end).

    Its settings are the test's environment too (monkeypatched), so that an app made in the test reads
    them; ``close`` stops what was started, drops the database and gives the session's service its
    Celery app back.
    """

    def __init__(
        self, service: Service, backing_services: dict[str, str], folder: Path, name: str, monkeypatch, **settings: str
    ) -> None:
        instance = folder / "instance"
        instance.mkdir()
        self.service = service
        self.folder = folder
        self.name = name
        self.database = SeparateDatabase(backing_services, instance)
        self.env = {**service.env, "INSTANCE_DIR": str(instance), "DATABASE_URL": self.database.url, **settings}
        self.vhost = isolated_broker(self.env, service.env, name)
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        self.processes: list[WorkerProcess] = []
        self.api: ApiServer | None = None

    def start_worker(self, kind: str = "worker", concurrency: int = 2, **settings: str) -> WorkerProcess:
        """One Celery process of the deployment (``settings`` for it alone), its log in the folder."""
        name = self.name if kind == "worker" else f"{self.name}-{kind}"
        process = WorkerProcess(
            {**self.env, **settings}, self.folder / f"{kind}.log", concurrency=concurrency, name=name, kind=kind
        )
        self.processes.append(process)
        return process

    def start_celery(self, **worker_settings: str) -> None:
        """An image worker (``worker_settings`` for it alone), a webhook and a maintenance worker and beat, as the
        service runs them."""
        self.start_worker(**worker_settings)
        self.start_worker("webhooks")
        self.start_worker("maintenance")
        self.start_worker("beat")

    def start_api(self) -> str:
        """The deployment's API, served on loopback; its base URL."""
        self.api = ApiServer.serving()
        return self.api.base_url

    def close(self) -> None:
        """Stop the API and the processes, drop the database, give the session's service its Celery app back."""
        if self.api is not None:
            self.api.stop()
        for process in self.processes:
            process.stop()
        self.database.drop()
        if self.vhost is not None:
            self.vhost.drop()
        self.service.send_with_own_celery()


def isolated_broker(env: dict[str, str], session_env: dict[str, str], name: str) -> RabbitMQVhost | None:
    """Give ``env`` queues of its own beside the session's: a virtual host on RabbitMQ (returned, to drop at the
    end), a key prefix under the session's on Redis."""
    if session_env.get("CELERY_BROKER_URL", "").startswith("amqp://"):
        vhost = RabbitMQVhost(session_env["CELERY_BROKER_URL"], session_env["BROKER_MANAGEMENT_URL"])
        env["CELERY_BROKER_URL"] = vhost.url
        return vhost
    if "BROKER_KEY_PREFIX" in session_env:
        env["BROKER_KEY_PREFIX"] = f"{session_env['BROKER_KEY_PREFIX']}{name}-{uuid.uuid4().hex[:6]}:"
    return None

"""The service deployed on hosts (``hosts``): what runs where, and what a request left behind.

- ``infra``: PostgreSQL, the broker (Redis or RabbitMQ) and an S3 server (moto), each of the test's own;
- ``api``: the API, beat, the webhook and the maintenance workers;
- ``worker-a``, ``worker-b``: an image worker each;
- ``outside``: the world, where the test runs, the images are served from and webhooks are received.

Every host is given the same environment, as the README's "Running on many machines" asks, but its own
``INSTANCE_DIR`` and ``HOME`` under its own folder.
"""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import sys
import time

import requests
import sqlalchemy
from harness import RECOVERY_SETTINGS, ROOT, ServiceProcess
from hosts import Host, Network
from stores import MotoS3Server, PostgresCluster, RabbitMQNode, RedisServer, wait_for
from support.launched import launch_environment

HOSTS = ["infra", "api", "worker-a", "worker-b", "outside"]
#: A deployment for each.
HOST_BROKERS = ("redis", "rabbitmq")
WORKER_HOSTS = ("worker-a", "worker-b")
API_PORT = 5000
BUCKET = "catalog-outputs"
#: Celery's line for an image task that ended (``succeeded`` whatever its images' outcome).
TASK_ENDED = re.compile(r"Task image_tasks\.process_image\[([0-9a-f-]{36})\] succeeded")


class HostDeployment:
    """The stores on ``infra``, the service's roles on the others; the test's thread is on ``outside``."""

    def __init__(
        self, network: Network, broker: str, base: dict[str, str] = RECOVERY_SETTINGS, **settings: str
    ) -> None:
        """``base``: the settings the test's timings assume (the fault suite's), or ``{}`` for the defaults."""
        self.network = network
        self.broker_kind = broker
        self.infra = network["infra"]
        self.outside = network["outside"]
        infra = self.infra
        self.postgres = PostgresCluster(infra.folder / "postgres", infra.address, 5432, infra.command())
        if broker == "redis":
            self.broker: RedisServer | RabbitMQNode = RedisServer(
                infra.folder / "redis", infra.address, 6379, infra.command()
            )
        else:
            self.broker = RabbitMQNode(infra.folder / "rabbitmq", infra.address, infra.command())
        self.s3 = MotoS3Server(infra.folder / "s3", infra.address, infra.command())
        self.settings = {**base, **self._settings(), **settings}
        self.processes: dict[str, ServiceProcess] = {}

    def _settings(self) -> dict[str, str]:
        api = self.network["api"]
        settings = {
            "DATABASE_URL": f"postgresql://postgres@{self.infra.address}:{self.postgres.port}/imgsvc",
            "CELERY_BROKER_URL": self.broker.url,
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": BUCKET,
            "S3_ENDPOINT_URL": self.s3.endpoint,
            "S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "HOST": api.address,
            "PORT": str(API_PORT),
            "PUBLIC_BASE_URL": f"http://{api.address}:{API_PORT}",
            "WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "FETCH_ALLOWED_NETWORKS": f"{self.outside.address}/32",
            "API_KEYS": "",
        }
        if isinstance(self.broker, RabbitMQNode):
            settings["BROKER_MANAGEMENT_URL"] = self.broker.management_url
        return settings

    @property
    def base_url(self) -> str:
        return self.settings["PUBLIC_BASE_URL"]

    #: As ``harness.Service``'s, for the scenario's calls: the hosts' API is open, its settings are the env.
    auth: dict[str, str] = {}

    @property
    def env(self) -> dict[str, str]:
        return self.settings

    def env_on(self, host: Host) -> dict[str, str]:
        return launch_environment(host.folder, **self.settings)

    def start(self, worker_hosts: tuple[str, ...] = WORKER_HOSTS) -> None:
        """The stores, the schema, then every role (image workers on ``worker_hosts``); from the ``outside``
        host's network."""
        self.postgres.start()
        admin = sqlalchemy.create_engine(self.postgres.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text('CREATE DATABASE "imgsvc"'))
        admin.dispose()
        self.broker.start()
        self.s3.start()
        self.s3_client().create_bucket(Bucket=BUCKET)
        api = self.network["api"]
        subprocess.run(
            api.command([sys.executable, str(ROOT / "launcher.py"), "migrate"]),
            env=self.env_on(api),
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.start_role(api, "api")
        wait_for(self.answers, 60, "the API on its host to answer")
        for role in ("webhooks", "maintenance", "beat"):
            self.start_role(api, role)
        for name in worker_hosts:
            self.start_role(self.network[name], "worker")

    def start_role(self, host: Host, role: str) -> ServiceProcess:
        """``launcher.py ROLE`` on ``host``; a worker once it is ready."""
        logs = host.folder / "logs"
        logs.mkdir(exist_ok=True)
        argv = host.command([sys.executable, str(ROOT / "launcher.py"), role])
        process = ServiceProcess(f"{host.name}-{role}", argv, self.env_on(host), logs)
        self.processes[process.name] = process
        host.processes.append(process)
        if role in ("worker", "webhooks", "maintenance"):
            wait_for(lambda: "ready." in process.log() or process.process.poll() is not None, 60, f"{process.name}")
            assert process.process.poll() is None, process.log()[-3000:]
        return process

    def answers(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def s3_client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def restart_worker_host(self, name: str) -> None:
        """A worker host that is up again after a crash: its image worker started anew."""
        host = self.network[name]
        self.network.reconnect(host)
        if not any(p.process.poll() is None and p.name == f"{name}-worker" for p in host.processes):
            self.start_role(host, "worker")

    def restart_broker(self) -> float:
        """Kill the broker (SIGKILL, as a crash of its host) and start it again; the seconds it was away."""
        down_at = time.monotonic()
        if isinstance(self.broker, RabbitMQNode):
            self.broker.kill()
        else:
            self.broker.stop()
        time.sleep(1)
        self.broker.start()
        return time.monotonic() - down_at

    def tasks_of(self, host: Host, pattern: re.Pattern = TASK_ENDED) -> set[str]:
        """The image tasks the host's workers logged (ended, or ``IMAGE_TASK_RECEIVED``), over every start."""
        found: set[str] = set()
        for log in (host.folder / "logs").glob(f"{host.name}-worker-*.log"):
            found |= set(pattern.findall(log.read_text(errors="replace")))
        return found

    def logs_of(self, host: Host) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted((host.folder / "logs").glob("*.log"))
        )

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.s3.stop()
        if isinstance(self.broker, RabbitMQNode):
            self.broker.kill()
        else:
            self.broker.stop()
        self.postgres.destroy()

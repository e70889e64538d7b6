"""The fault suite's own stores: a PostgreSQL cluster, a Redis, a RabbitMQ node and an S3 server, each on
an address and port of its own, none of them the machine's shared services.

Each takes ``prefix``, the command its processes are started under: empty on the machine itself,
``ip netns exec <namespace>`` on one of ``hosts``' hosts. Their readiness checks connect from the calling
thread, so a test on hosts makes them from inside a namespace that reaches the store's address.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from support.loopback import unused_port


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in versions:
        if (folder / name).exists():
            return str(folder / name)
    raise RuntimeError(f"PostgreSQL's {name} is not installed")


class PostgresCluster:
    """A throwaway cluster: initdb into a folder, pg_ctl start and stop on a port of its own."""

    def __init__(
        self, folder: Path, address: str = "127.0.0.1", port: int | None = None, prefix: Sequence[str] = ()
    ) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.address = address
        self.port = port or unused_port()
        self.prefix = list(prefix)
        self.log = folder / "postgres.log"
        folder.mkdir(parents=True, exist_ok=True)
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self._as_postgres:
            shutil.chown(folder, "postgres", "postgres")
        self._run([_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"])
        if address != "127.0.0.1":
            # initdb trusts 127.0.0.1 only; the hosts' addresses are elsewhere in 127.0.0.0/8.
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all 127.0.0.0/8 trust\n")
        self.url = f"postgresql+psycopg2://postgres@{address}:{self.port}/postgres"

    def _run(self, argv: list[str]) -> None:
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run([*self.prefix, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses={self.address} -c fsync=off"
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start"])

    def stop(self) -> None:
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def is_up(self) -> bool:
        return _answers(self.address, self.port)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            argv = [_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
            if self._as_postgres:
                argv = ["runuser", "-u", "postgres", "--", *argv]
            subprocess.run([*self.prefix, *argv], capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisServer:
    """A redis-server of the suite's own, keeping nothing on disk: a restart loses every message."""

    def __init__(
        self, folder: Path, address: str = "127.0.0.1", port: int | None = None, prefix: Sequence[str] = ()
    ) -> None:
        self.folder = folder
        self.address = address
        self.port = port or unused_port()
        self.prefix = list(prefix)
        self.url = f"redis://{address}:{self.port}/0"
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", self.address, "--save", "", "--appendonly", "no"]
        # Protected mode answers only 127.0.0.1 and ::1 without a password; the hosts are elsewhere in 127/8.
        argv += ["--protected-mode", "no"]
        self.process = subprocess.Popen(
            [*self.prefix, *argv, "--dir", str(self.folder), "--maxmemory-policy", "noeviction"],
            stdout=open(self.folder / "redis.log", "ab"),  # noqa: SIM115  (owned by the child)
            stderr=subprocess.STDOUT,
        )
        wait_for(self.is_up, 20, "redis to accept connections")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)
        self.process = None

    def is_up(self) -> bool:
        try:
            with socket.create_connection((self.address, self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class RabbitMQNode:
    """A RabbitMQ node of the suite's own (Debian's rabbitmq-server), with its management API.

    Its queues, messages and logs are in ``folder``; ``kill`` is a crash (SIGKILL to the node), and
    ``start`` again finds its durable queues and persistent messages where the crash left them.
    The node is started as the ``rabbitmq`` user, which shares the machine's Erlang cookie, so ``rabbitmqctl``
    on the same host reaches it; its epmd is the host's own (``prefix`` names a network namespace).
    """

    SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"

    def __init__(self, folder: Path, address: str, prefix: Sequence[str], port: int = 5672) -> None:
        if not Path(self.SERVER).exists():
            raise RuntimeError("RabbitMQ is not installed (Debian's rabbitmq-server)")
        self.folder = folder
        self.address = address
        self.port = port
        self.management_port = 15672
        self.prefix = list(prefix)
        self.url = f"amqp://guest:guest@{address}:{port}//"
        self.management_url = f"http://guest:guest@{address}:{self.management_port}"
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {address}:{port}\n"
            f"management.tcp.ip = {address}\n"
            f"management.tcp.port = {self.management_port}\n"
            "loopback_users = none\n"
        )
        (folder / "enabled_plugins").write_text("[rabbitmq_management].\n")
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(folder)], check=True)

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": "/var/lib/rabbitmq",
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.folder / "rabbitmq.pid"),
        }

    def _as_rabbitmq(self, argv: list[str]) -> list[str]:
        return [*self.prefix, "runuser", "-u", "rabbitmq", "--", *argv]

    def start(self) -> None:
        self.process = subprocess.Popen(
            self._as_rabbitmq([self.SERVER]),
            env=self._env(),
            stdout=open(self.folder / "server.log", "ab"),  # noqa: SIM115  (owned by the child)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self.is_up, 60, "RabbitMQ to start")

    def is_up(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"RabbitMQ exited: {(self.folder / 'server.log').read_text(errors='replace')[-2000:]}")
        ready = subprocess.run(
            self._as_rabbitmq([self.CTL, "-q", "await_startup", "--timeout", "2"]),
            env=self._env(),
            capture_output=True,
            timeout=30,
        )
        return ready.returncode == 0 and _answers(self.address, self.port)

    def kill(self) -> None:
        """SIGKILL every process of the node, as a crash of its host would."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)
        self.process = None


class MotoS3Server:
    """An S3-compatible store (moto's server) in a process of its own: it keeps its objects in memory."""

    def __init__(self, folder: Path, address: str, prefix: Sequence[str], port: int = 9000) -> None:
        self.folder = folder
        self.address = address
        self.port = port
        self.prefix = list(prefix)
        self.endpoint = f"http://{address}:{port}"
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        moto_server = str(Path(sys.executable).parent / "moto_server")
        self.process = subprocess.Popen(
            [*self.prefix, moto_server, "-H", self.address, "-p", str(self.port)],
            stdout=open(self.folder / "moto.log", "ab"),  # noqa: SIM115  (owned by the child)
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: _answers(self.address, self.port), 30, "the S3 server to accept connections")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)
        self.process = None

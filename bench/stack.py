"""The benchmark's own stack: a PostgreSQL cluster and a Redis of its own, on ports of their own, and
the service's real processes, started as ``make run`` starts them (``launcher.commands``).

Each group of cases gets a fresh database (copied from a migrated template), a flushed Redis and an
instance folder of its own, so one group's leftovers never slow the next. Nothing here touches the
machine's shared PostgreSQL (5432) or Redis (6379).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import psycopg2
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "faults")]

from harness import ServiceProcess  # noqa: E402
from stores import PostgresCluster, RedisServer, wait_for  # noqa: E402
from support.loopback import unused_port  # noqa: E402

import launcher  # noqa: E402

SHARED_PORTS = frozenset({5432, 6379})
IMAGE_HOST = "127.0.0.2"
TEMPLATE_DB = "bench_template"
STOP_GRACE_S = 15.0


def own_port() -> int:
    """A free port that is not the shared PostgreSQL's or Redis's."""
    while (port := unused_port()) in SHARED_PORTS:
        pass
    return port


class BenchPostgres(PostgresCluster):
    """The fault suite's throwaway cluster; fsync stays on unless asked, as in production."""

    def __init__(self, folder: Path, fsync: bool) -> None:
        self.fsync = fsync
        super().__init__(folder)
        if self.port in SHARED_PORTS:  # unused_port() hands out ephemeral ports, but never risk it
            raise RuntimeError(f"refusing port {self.port}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync={'on' if self.fsync else 'off'}"
        )
        self._run([_pg_ctl(), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start"])

    def connect(self, dbname: str = "postgres"):
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname)
        connection.autocommit = True
        return connection

    def cpu_s(self, with_backends: bool = False) -> float:
        """CPU seconds of the cluster: the postmaster and every backend it has reaped (and the live ones)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return 0.0
        if with_backends:
            return tree_cpu_s(pid)
        return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def version(self) -> str:
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return cursor.fetchone()[0]


class BenchRedis(RedisServer):
    """The fault suite's Redis, in a session of its own: a Ctrl-C at the terminal reaches the bench,
    which stops the service first, and not Redis under the service's feet."""

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.folder), "--maxmemory-policy", "noeviction"]
        self.process = subprocess.Popen(
            argv,
            stdout=open(self.folder / "redis.log", "ab"),  # noqa: SIM115  (owned by the child)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self.is_up, 20, "redis to accept connections")


def tree_pids(roots: list[int]) -> list[int]:
    """The processes ``roots`` and all their descendants, by parentage."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, stack = [], list(roots)
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def tree_cpu_s(root: int) -> float:
    """CPU seconds of a process and all its descendants, with the children each has reaped.

    By parentage, not process group: PostgreSQL's backends, for one, each lead a session of their own.
    """
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1]: the parent
        ticks[pid] = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack.extend(children.get(pid, ()))
    return total / tick


def image_worker_processes(env: dict[str, str]) -> int:
    """The ``--concurrency`` that launcher.commands gives the image worker under ``env``."""
    argv = launcher.commands(env)["worker"]
    return int(argv[argv.index("--concurrency") + 1])


def processes_per_core() -> int:
    """Image worker processes the launcher starts per core by default."""
    from process_launch import processes

    return processes.IMAGE_PROCESSES_PER_CORE


def _pg_ctl() -> str:
    from harness import _pg_bin

    return _pg_bin("pg_ctl")


@dataclass
class RunningService:
    """One group's service: its processes, database, instance folder and URLs."""

    name: str
    env: dict[str, str]
    base_url: str
    instance_dir: Path
    database: str
    postgres: BenchPostgres
    redis_pid: int | None = None
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    _connection: object | None = None

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read the service's database directly (for timestamps more precise than the API's)."""
        if self._connection is None:
            self._connection = self.postgres.connect(self.database)
        with self._connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    @property
    def worker_processes(self) -> int:
        """The image worker's pool size, as launcher.commands gives it."""
        return image_worker_processes(self.env)

    def service_pids(self) -> list[int]:
        """Every process ``make run`` would start for this service (API, workers and their pools, beat)."""
        return tree_pids([process.process.pid for process in self.processes.values()])

    def worker_pool_pids(self) -> list[int]:
        """The image worker's pool processes (the children of its main process)."""
        main = self.processes["worker"].process.pid
        try:
            children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
        except OSError:
            return []
        return sorted(int(pid) for pid in children)

    def media_bytes(self, request_id: str) -> tuple[int, int]:
        """(files, bytes) of the distinct outputs the request's images point at, stored under INSTANCE_DIR/media/."""
        keys = self.query(
            "SELECT DISTINCT output_key FROM images WHERE request_id = %s AND output_key IS NOT NULL", (request_id,)
        )
        media = self.instance_dir / "media"
        sizes = [(media / key).stat().st_size for (key,) in keys if (media / key).is_file()]
        return len(sizes), sum(sizes)

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far of each of the service's processes (with its own children), PostgreSQL's, Redis's."""
        used = {kind: tree_cpu_s(process.process.pid) for kind, process in self.processes.items()}
        used["postgresql"] = self.postgres.cpu_s(with_backends=True)
        used["redis"] = tree_cpu_s(self.redis_pid) if self.redis_pid else 0.0
        return used

    def dead_processes(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.process.poll() is not None]

    def stop(self) -> None:
        """SIGTERM every process group at once, SIGKILL what is left after the grace."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            # The group, not only its leader: gunicorn's workers and celery's pool.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.process.wait(timeout=10)
        self.processes.clear()


class Stack:
    """PostgreSQL, Redis and a folder of the bench's own; ``service()`` starts one group's service."""

    def __init__(self, log_dir: Path, fsync: bool = True, api_keys: tuple[str, ...] = ()) -> None:
        self.log_dir = log_dir
        self.fsync = fsync
        self.api_keys = api_keys
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.work = Path(tempfile.mkdtemp(prefix="imgsvc-bench-"))
        self.work.chmod(0o711)  # the cluster runs as user postgres, who must reach its folder inside
        self.postgres: BenchPostgres | None = None
        self.redis: RedisServer | None = None
        self._groups = 0
        self.postgres_cpu_s = 0.0  #: read as the cluster stops, for the run's CPU account

    def __enter__(self) -> Stack:
        try:
            self.postgres = BenchPostgres(self.work / "pg", self.fsync)
            self.postgres.start()
            self.redis = BenchRedis(self.work / "redis")
            if self.redis.port in SHARED_PORTS:
                raise RuntimeError(f"refusing port {self.redis.port}")
            self.redis.start()
            self._migrate_template()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.postgres is not None:
            self.postgres_cpu_s = self.postgres.cpu_s(with_backends=True)
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.destroy()  # stops the cluster and removes its folder
        shutil.rmtree(self.work, ignore_errors=True)

    def _migrate_template(self) -> None:
        with contextlib.closing(self.postgres.connect()) as connection, connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        env = self._env(TEMPLATE_DB, self.work / "template-instance", own_port(), {})
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app:create_app", "db", "upgrade"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def _env(self, database: str, instance_dir: Path, port: int, extra: dict[str, str]) -> dict[str, str]:
        # A clean environment: nothing the caller's shell sets (DATABASE_URL, STORAGE_BACKEND...) leaks in.
        env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TZ") if name in os.environ}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "INSTANCE_DIR": str(instance_dir),
                "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{self.postgres.port}/{database}",
                "CELERY_BROKER_URL": self.redis.url,
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "WEBHOOK_SECRET": self.webhook_secret,
                "FETCH_ALLOWED_NETWORKS": f"{IMAGE_HOST}/32",
                "API_KEYS": ",".join(self.api_keys),
                # One client plays every tenant's many callers: limits that still run, but never bite.
                "RATE_LIMIT_UPLOADS": "100000/minute",
                "RATE_LIMIT_READS": "10000000/minute",
                "MAX_ACTIVE_IMAGES_PER_KEY": "10000000",
            }
        )
        env.update(extra)
        # What make run adds on top (MALLOC_ARENA_MAX...), from the launcher itself; it reads os.environ.
        with mock.patch.dict(os.environ, env, clear=True):
            return launcher.service_environment()

    @contextlib.contextmanager
    def service(
        self, name: str, extra_env: dict[str, str] | None = None, worker_wrapper: tuple[str, ...] = ()
    ) -> Iterator[RunningService]:
        """A fresh database, a flushed Redis, and the API, image worker, webhook and maintenance workers and beat.

        ``worker_wrapper`` runs the image worker under another command, e.g. ``taskset -c 0``.
        """
        self._groups += 1
        database = f"bench_{self._groups}_{name}"
        with contextlib.closing(self.postgres.connect()) as connection, connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}" TEMPLATE "{TEMPLATE_DB}"')
        import redis

        redis.Redis.from_url(self.redis.url).flushall()
        port = own_port()
        instance_dir = self.work / f"instance-{self._groups}-{name}"
        env = self._env(database, instance_dir, port, extra_env or {})
        running = RunningService(
            name, env, f"http://127.0.0.1:{port}", instance_dir, database, self.postgres, self.redis.process.pid
        )
        try:
            for kind, argv in launcher.commands(env).items():
                if kind == "worker":
                    argv = [*worker_wrapper, *argv]
                # The priority make run gives each role (the image worker yields the CPU to the API).
                nice = launcher.niceness(kind, env) if hasattr(launcher, "niceness") else 0
                if nice:
                    argv = ["nice", "-n", str(nice), *argv]
                running.processes[kind] = ServiceProcess(f"{self._groups}-{name}-{kind}", argv, env, self.log_dir)
            _wait_ready(running)
            yield running
        finally:
            running.stop()
            shutil.rmtree(instance_dir, ignore_errors=True)
            with contextlib.closing(self.postgres.connect()) as connection, connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _wait_ready(running: RunningService) -> None:
    def answers() -> bool:
        try:
            return requests.get(f"{running.base_url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def ready() -> bool:
        dead = running.dead_processes()
        if dead:
            tails = "\n".join(f"--- {name}\n{running.processes[name].log()[-2000:]}" for name in dead)
            raise RuntimeError(f"service processes exited at start: {', '.join(dead)}\n{tails}")
        return (
            all("ready." in running.processes[kind].log() for kind in ("worker", "webhooks", "maintenance"))
            and len(running.worker_pool_pids()) > 0
            and answers()
        )

    wait_for(ready, 90, f"the {running.name} service to be ready", interval_s=0.25)

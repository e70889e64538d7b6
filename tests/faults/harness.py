"""The service's real processes (API, workers, beat) as the fault suite starts them, each of which can be
killed, frozen or thawed; the stores they run against are in ``stores``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from stores import wait_for
from support.launched import as_from_a_terminal

import launcher

ROOT = Path(__file__).resolve().parents[2]
#: How a worker logs the image tasks it takes from the queue, with their task ids.
IMAGE_TASK_RECEIVED = re.compile(r"image_tasks\.process_image\[([0-9a-f-]{36})\] received")


#: Short timeouts and recovery timings, so that a fault is recovered from within seconds.
RECOVERY_SETTINGS = {
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
}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class ServiceProcess:
    """One process of the service (or the launcher of all of them), in a process group of its own."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
        self.process = subprocess.Popen(
            as_from_a_terminal(argv),
            env=env,
            cwd=ROOT,
            stdout=open(self.log_path, "wb"),  # noqa: SIM115  (owned by the child)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill_group(self) -> None:
        """SIGKILL the process and every child it started: no chance to clean up or ack."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=20)

    def freeze(self) -> None:
        """SIGSTOP the process and every child it started, as a machine that stops running would."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT them all: each goes on from where it stopped, its clocks having moved on."""
        os.killpg(self.process.pid, signal.SIGCONT)

    def image_tasks(self) -> set[str]:
        """The ids of the image tasks this worker took from the queue so far, from its log."""
        return set(IMAGE_TASK_RECEIVED.findall(self.log()))

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                os.killpg(self.process.pid, signal.SIGCONT)  # a frozen process acts on SIGTERM only once woken
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill_group()
            except ProcessLookupError:
                pass
        # A wrapper (faketime) may end before what it runs: nothing of the group outlives the test. Its pool's
        # processes, whose parent is gone, are given a few seconds to end on their own, then killed.
        deadline = time.monotonic() + 5
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Service:
    """The service's processes, started as production starts them, against the suite's own stores."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.base_url = env["PUBLIC_BASE_URL"]
        self.processes: dict[str, ServiceProcess] = {}
        #: The API key the suite's own calls present, when a test turns API_KEYS on.
        self.api_key: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app:create_app", "db", "upgrade"],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start_api(self) -> None:
        self.processes["api"] = ServiceProcess("api", launcher.commands(self.env)["api"], self.env, self.log_dir)
        wait_for(self.answers, 30, "the API to answer")

    def start_worker(self, name: str = "worker", kind: str = "worker", wrapper: tuple[str, ...] = ()) -> ServiceProcess:
        """A worker as the launcher starts it; ``wrapper`` runs it under another command (faketime)."""
        argv = [*wrapper, *launcher.commands(self.env)[kind], "--hostname", f"{name}-{time.monotonic_ns()}@%h"]
        worker = ServiceProcess(name, argv, self.env, self.log_dir)
        self.processes[name] = worker
        wait_for(lambda: "ready." in worker.log() or worker.process.poll() is not None, 60, f"{name} to be ready")
        assert worker.process.poll() is None, worker.log()[-3000:]
        return worker

    def start_role(self, name: str, role: str = "worker", **settings: str) -> ServiceProcess:
        """``launcher.py ROLE`` with ``settings`` added to the environment, as another machine runs a role."""
        env = {**self.env, **settings}
        process = ServiceProcess(name, [sys.executable, str(ROOT / "launcher.py"), role], env, self.log_dir)
        self.processes[name] = process
        wait_for(lambda: "ready." in process.log() or process.process.poll() is not None, 60, f"{name} to be ready")
        assert process.process.poll() is None, process.log()[-3000:]
        return process

    def start_beat(self) -> None:
        argv = [*launcher.commands(self.env)["beat"], "--schedule", str(self.log_dir / f"beat-{time.monotonic_ns()}")]
        self.processes["beat"] = ServiceProcess("beat", argv, self.env, self.log_dir)

    def start_all(self) -> None:
        self.start_api()
        self.start_worker()
        self.start_worker("webhooks", kind="webhooks")
        self.start_worker("maintenance", kind="maintenance")
        self.start_beat()

    def start_launcher(self) -> ServiceProcess:
        """``make run``'s own launcher: migrations, then API, worker and beat."""
        launcher = ServiceProcess("launcher", [sys.executable, str(ROOT / "launcher.py")], self.env, self.log_dir)
        self.processes["launcher"] = launcher
        wait_for(self.answers, 60, "the launcher's API to answer")
        wait_for(lambda: "ready." in launcher.log(), 60, "the launcher's worker to be ready")
        return launcher

    def answers(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.processes.clear()


def kill_tree_of(pid: int) -> list[int]:
    """SIGKILL a process and all its descendants (they may sit in process groups of their own)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    killed = []
    for child in children:
        killed += kill_tree_of(int(child))
    try:
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    except ProcessLookupError:
        pass
    return killed

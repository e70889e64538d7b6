"""The service launched as ``make run`` launches it, and its processes as /proc shows them: what a run
started and what outlived it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from support.backing import ROOT
from support.loopback import unused_port

# The launcher itself, the API (gunicorn and 2 workers), the worker (celery and 2 pool processes), beat.
PROCESSES_OF_A_RUN = 8
GONE_WITHIN_S = 15


@dataclass(frozen=True)
class ProcessInfo:
    """One process as /proc shows it; ``(pid, start_ticks)`` tells it apart from a later one with its pid."""

    pid: int
    ppid: int
    state: str
    start_ticks: int
    cmdline: str


def read_process(pid: int) -> ProcessInfo | None:
    """The process ``pid``, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    # The command name in parentheses may hold spaces and parentheses itself.
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcessInfo(pid, int(fields[1]), fields[0], int(fields[19]), cmdline.strip())


def live_processes() -> list[ProcessInfo]:
    """Every process on the machine but the zombies."""
    found = (read_process(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    # A zombie holds no port and runs no code; whether it is reaped is up to its new parent.
    return [info for info in found if info is not None and info.state != "Z"]


def describe(processes: list[ProcessInfo]) -> str:
    """One line a process, for an assertion's message."""
    return "\n".join(f"  {info.pid} (parent {info.ppid}): {info.cmdline}" for info in processes)


def carries(pid: int, marker: bytes) -> bool:
    """Whether the process started with ``marker`` (``NAME=value``) in its environment."""
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


class MakeRun:
    """``python launcher.py`` as ``make run`` starts it, with an instance folder and a port of its own."""

    def __init__(self, folder: Path, extra_env: dict[str, str]) -> None:
        self.instance_dir = folder / "instance"
        self.port = unused_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.marker = f"INSTANCE_DIR={self.instance_dir}".encode()
        self.log_path = folder / "launcher.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(folder),
            "LANG": "C.UTF-8",
            "INSTANCE_DIR": str(self.instance_dir),
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "2",
            "WORKER_CONCURRENCY": "2",
            **extra_env,
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "launcher.py"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def left_over(self) -> list:
        return [info for info in live_processes() if info.pid != os.getpid() and carries(info.pid, self.marker)]

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the launcher exited early:\n{self.log()[-4000:]}"
            try:
                answers = requests.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                answers = False
            if "ready." in self.log() and answers and len(self.left_over()) >= PROCESSES_OF_A_RUN:
                return
            time.sleep(0.2)
        raise AssertionError(f"the launcher was not ready in {timeout_s}s:\n{self.log()[-4000:]}")

    def stop(self) -> list:
        """SIGTERM, as a service manager stops it; what is still running after the grace."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=GONE_WITHIN_S + 15)
        deadline = time.monotonic() + GONE_WITHIN_S
        while self.left_over() and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.left_over()

    def kill_left_over(self) -> None:
        for info in self.left_over():
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)


def start(tmp_path: Path, extra_env: dict[str, str]) -> MakeRun:
    """``make run`` in tmp_path with extra_env, ready; every process of it killed if it does not get ready."""
    run = MakeRun(tmp_path, extra_env)
    try:
        run.wait_ready()
    except BaseException:
        run.kill_left_over()
        raise
    return run


def stop_and_check(run: MakeRun) -> None:
    """Stop the run as a service manager would; fail if a process outlives it or it exits with an error."""
    left = run.stop()
    assert not left, f"{len(left)} processes outlived the launcher:\n{describe(left)}"
    assert run.process.returncode == 0, run.log()[-4000:]

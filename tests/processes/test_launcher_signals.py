"""``make run``'s launcher takes every process it started with it, however it ends.

Each test starts the real launcher as ``make run`` does, in a session of its own as a terminal would,
strikes it (a signal to it or to its process group, or the death of one of its children), then
checks that no process of that run is left and that its port is free.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from support.launched import (
    GONE_WITHIN_S,
    PROCESSES_OF_A_RUN,
    ProcessInfo,
    carries,
    describe,
    live_processes,
    read_process,
)
from support.loopback import unused_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Stands in for make leading a terminal's session (``ssh -t host make run``): it takes the terminal,
# and on SIGHUP goes on waiting for its child, as make does.
MAKE_LEADING_A_TERMINAL = (
    "import fcntl, signal, subprocess, sys, termios; "
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "signal.signal(signal.SIGHUP, lambda *_: None); "
    "sys.exit(subprocess.call(sys.argv[1:]))"
)


class Terminal:
    """A pseudo-terminal whose output is copied to a file, closed as a terminal window is closed."""

    def __init__(self, log_path: Path) -> None:
        self.master, self.slave = os.openpty()
        self._log_path = log_path
        self._closing = threading.Event()
        self._copier = threading.Thread(target=self._copy, daemon=True)
        self._copier.start()

    def _copy(self) -> None:
        with open(self._log_path, "ab") as log:
            while not self._closing.is_set():
                if select.select([self.master], [], [], 0.1)[0]:
                    try:
                        log.write(os.read(self.master, 65536))
                    except OSError:
                        break
                    log.flush()
        os.close(self.master)

    def close(self) -> None:
        self._closing.set()
        self._copier.join(timeout=5)


class LauncherRun:
    """``python launcher.py`` with an instance folder and a port of its own."""

    def __init__(self, folder: Path, terminal: Terminal | None = None) -> None:
        self.instance_dir = folder / "instance"
        self.port = unused_port()
        self.marker = f"INSTANCE_DIR={self.instance_dir}".encode()
        self.log_path = folder / "launcher.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # gunicorn keeps a control socket under HOME: one of this run's own, not the developer's.
            "HOME": str(folder),
            "LANG": "C.UTF-8",
            "INSTANCE_DIR": str(self.instance_dir),
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "2",
            "WORKER_CONCURRENCY": "2",
            "FETCH_ALLOWED_NETWORKS": "",
        }
        argv = [sys.executable, "launcher.py"]
        if terminal is None:
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        else:
            self.process = subprocess.Popen(
                [sys.executable, "-c", MAKE_LEADING_A_TERMINAL, *argv],
                cwd=ROOT,
                env=env,
                stdin=terminal.slave,
                stdout=terminal.slave,
                stderr=terminal.slave,
                start_new_session=True,
            )
            os.close(terminal.slave)
        self.recorded: list[ProcessInfo] = []

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def answers(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def tree(self) -> list[ProcessInfo]:
        processes = live_processes()
        family, frontier = [], {self.pid}
        while frontier:
            children = [info for info in processes if info.ppid in frontier]
            family += children
            frontier = {info.pid for info in children}
        launcher = [info for info in processes if info.pid == self.pid]
        return launcher + family

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the launcher exited early:\n{self.log()[-4000:]}"
            if "ready." in self.log() and self.answers() and len(self.tree()) >= PROCESSES_OF_A_RUN:
                self.recorded = self.tree()
                return
            time.sleep(0.2)
        raise AssertionError(f"the launcher was not ready in {timeout_s}s:\n{self.log()[-4000:]}")

    def child(self, word: str) -> ProcessInfo:
        return next(info for info in self.recorded if info.ppid == self.pid and word in info.cmdline)

    def left_over(self) -> list[ProcessInfo]:
        """Live processes of this run: seen in its tree before the strike, or carrying its environment."""
        seen = {(info.pid, info.start_ticks) for info in self.recorded}
        return [
            info
            for info in live_processes()
            if (info.pid, info.start_ticks) in seen or (info.pid != os.getpid() and carries(info.pid, self.marker))
        ]

    def port_is_free(self) -> bool:
        with socket.socket() as probe:
            # SO_REUSEADDR as gunicorn sets it: TIME_WAIT connections do not count, a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
                probe.listen()
            except OSError:
                return False
        return True

    def wait_gone(self, timeout_s: float) -> list[ProcessInfo]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.process.poll()
            left = self.left_over()
            if not left:
                return []
            time.sleep(0.2)
        return self.left_over()

    def kill_left_over(self) -> None:
        for info in self.left_over():
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@pytest.fixture
def launcher_run(tmp_path) -> Iterator[LauncherRun]:
    run = LauncherRun(tmp_path)
    try:
        yield run
    finally:
        run.kill_left_over()


@pytest.fixture
def terminal(tmp_path) -> Iterator[Terminal]:
    terminal = Terminal(tmp_path / "launcher.log")
    try:
        yield terminal
    finally:
        terminal.close()


def sigkill_launcher(run: LauncherRun) -> None:
    os.kill(run.pid, signal.SIGKILL)


def sigkill_group(run: LauncherRun) -> None:
    os.killpg(run.pid, signal.SIGKILL)


def sighup_group(run: LauncherRun) -> None:
    """What closing the terminal does."""
    os.killpg(run.pid, signal.SIGHUP)


def sigquit_launcher(run: LauncherRun) -> None:
    os.kill(run.pid, signal.SIGQUIT)


def sigint_group(run: LauncherRun) -> None:
    """What Ctrl-C does."""
    os.killpg(run.pid, signal.SIGINT)


def sigterm_launcher(run: LauncherRun) -> None:
    os.kill(run.pid, signal.SIGTERM)


def api_dies(run: LauncherRun) -> None:
    """The gunicorn master killed (say by the OOM killer), its workers left behind on the port."""
    os.kill(run.child("gunicorn").pid, signal.SIGKILL)


STRIKES: list[tuple[Callable[[LauncherRun], None], int]] = [
    (sigkill_launcher, -signal.SIGKILL),
    (sigkill_group, -signal.SIGKILL),
    (sighup_group, 0),
    (sigquit_launcher, 0),
    (sigint_group, 0),
    (sigterm_launcher, 0),
    (api_dies, 1),
]


@pytest.mark.parametrize(("strike", "exit_code"), STRIKES, ids=[strike.__name__ for strike, _ in STRIKES])
def test_nothing_outlives_the_launcher(launcher_run: LauncherRun, strike, exit_code: int) -> None:
    launcher_run.wait_ready()
    struck_at = time.monotonic()
    strike(launcher_run)

    left = launcher_run.wait_gone(GONE_WITHIN_S)
    gone_after_s = time.monotonic() - struck_at
    assert not left, f"{len(left)} processes outlived the launcher by {GONE_WITHIN_S}s:\n{describe(left)}"
    assert launcher_run.port_is_free(), f"port {launcher_run.port} still taken {gone_after_s:.1f}s after the strike"
    assert launcher_run.process.wait(timeout=5) == exit_code, launcher_run.log()[-4000:]
    if exit_code == 0:
        assert "Traceback" not in launcher_run.log(), launcher_run.log()[-4000:]


def test_nothing_outlives_a_closed_terminal_that_make_leads(tmp_path, terminal: Terminal) -> None:
    """Only make, leading the session, gets the SIGHUP; the launcher notices the terminal hung up."""
    run = LauncherRun(tmp_path, terminal)
    try:
        run.wait_ready()
        terminal.close()

        left = run.wait_gone(GONE_WITHIN_S)
        assert not left, f"{len(left)} processes outlived the terminal by {GONE_WITHIN_S}s:\n{describe(left)}"
        assert run.port_is_free()
        # Ended on its own; Python makes it 120 because it cannot flush its output to the closed terminal.
        assert run.process.wait(timeout=5) >= 0
    finally:
        run.kill_left_over()


def nice_value(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])


def test_image_work_yields_the_cpu_to_the_api(launcher_run: LauncherRun) -> None:
    """The image worker and its pool run at a lower priority; the API, control worker and beat do not."""
    launcher_run.wait_ready()
    own = nice_value(os.getpid())
    by_role = {role: launcher_run.child(word) for role, word in (("api", "gunicorn"), ("beat", " beat"))}
    by_role["worker"] = launcher_run.child("--queues images")
    by_role["control"] = launcher_run.child("--queues webhooks")
    pool = [info for info in launcher_run.recorded if info.ppid == by_role["worker"].pid]
    assert pool, describe(launcher_run.recorded)
    assert {pid: nice_value(pid) for pid in [by_role["worker"].pid, *(info.pid for info in pool)]} == dict.fromkeys(
        [by_role["worker"].pid, *(info.pid for info in pool)], min(own + 10, 19)
    )
    assert {role: nice_value(info.pid) for role, info in by_role.items() if role != "worker"} == {
        "api": own,
        "beat": own,
        "control": own,
    }


def test_one_role_runs_alone_with_its_own_command_line(tmp_path) -> None:
    """``launcher.py worker`` becomes the image worker itself: same pid, celery's command line, lower priority."""
    instance = tmp_path / "instance"
    instance.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "INSTANCE_DIR": str(instance),
        "WORKER_CONCURRENCY": "1",
        "FETCH_ALLOWED_NETWORKS": "",
    }
    subprocess.run([sys.executable, "launcher.py", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "launcher.py", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in log_path.read_bytes() and time.monotonic() < deadline:
            assert worker.poll() is None, log_path.read_text()
            time.sleep(0.2)
        info = read_process(worker.pid)
        assert info is not None and "celery" in info.cmdline and "--queues images,imports" in info.cmdline
        assert nice_value(worker.pid) == min(nice_value(os.getpid()) + 10, 19)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    refused = subprocess.run([sys.executable, "launcher.py", "everything"], cwd=ROOT, env=env, capture_output=True)
    assert refused.returncode != 0 and b"usage: launcher.py" in refused.stderr

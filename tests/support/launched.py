"""The service launched as ``make run`` launches it, and its processes as /proc shows them: what a run
started and what outlived it."""

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
from dataclasses import dataclass
from pathlib import Path

import requests

from support.backing import ROOT
from support.loopback import unused_port

# The launcher itself, the API (gunicorn and 2 workers), the worker (celery and 2 pool processes), beat.
PROCESSES_OF_A_RUN = 8
GONE_WITHIN_S = 15
LAUNCHER = [sys.executable, "launcher.py"]
#: What a terminal's shell leaves at their defaults and a runner may have set to "ignore" (``nohup`` ignores
#: SIGHUP; a script's ``cmd &`` ignores SIGINT and SIGQUIT), which a process inherits across exec.
TERMINAL_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
# Resets them, then becomes the command (same pid): no preexec_fn, which is unsafe in a process with threads.
_WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys; "
    f"[signal.signal(s, signal.SIG_DFL) for s in {tuple(int(s) for s in TERMINAL_SIGNALS)}]; "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


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


def as_from_a_terminal(argv: list[str]) -> list[str]:
    """``argv`` started with the signal dispositions a terminal gives, whatever the test runner inherited."""
    return [sys.executable, "-c", _WITH_DEFAULT_SIGNALS, *argv]


def launch_environment(folder: Path, **settings: str) -> dict[str, str]:
    """The whole environment of a launch of its own: nothing of the test's but PATH, its folders in folder."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # gunicorn keeps a control socket under HOME: one of this run's own, not the developer's.
        "HOME": str(folder),
        "LANG": "C.UTF-8",
        "INSTANCE_DIR": str(folder / "instance"),
        **settings,
    }


def start_launcher(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``python launcher.py`` from the project's root, in a session of its own with a terminal's signal
    dispositions, its output in log_path."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            as_from_a_terminal(LAUNCHER),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


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
        """Hang the terminal up, as closing its window does."""
        self._closing.set()
        self._copier.join(timeout=5)


class LauncherRun:
    """``python launcher.py`` as ``make run`` starts it, with an instance folder and a port of its own.

    On a terminal of its own when one is given, else in a session of its own with its output in
    ``launcher.log``; ``settings`` are added to its environment.
    """

    def __init__(self, folder: Path, terminal: Terminal | None = None, settings: dict[str, str] | None = None) -> None:
        self.instance_dir = folder / "instance"
        self.port = unused_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.marker = f"INSTANCE_DIR={self.instance_dir}".encode()
        self.log_path = folder / "launcher.log"
        env = launch_environment(
            folder, PORT=str(self.port), WEB_CONCURRENCY="2", WORKER_CONCURRENCY="2", **(settings or {})
        )
        if terminal is None:
            self.process = start_launcher(env, self.log_path)
        else:
            self.process = subprocess.Popen(
                as_from_a_terminal([sys.executable, "-c", MAKE_LEADING_A_TERMINAL, *LAUNCHER]),
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
        """What the launcher wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def answers(self) -> bool:
        """Whether the API says it is ready (its database and broker answer)."""
        try:
            return requests.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def tree(self) -> list[ProcessInfo]:
        """The launcher and every process below it, as they are now."""
        processes = live_processes()
        family, frontier = [], {self.pid}
        while frontier:
            children = [info for info in processes if info.ppid in frontier]
            family += children
            frontier = {info.pid for info in children}
        launcher = [info for info in processes if info.pid == self.pid]
        return launcher + family

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Wait until the worker is ready, the API answers and every process runs; record the tree."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the launcher exited early:\n{self.log()[-4000:]}"
            if "ready." in self.log() and self.answers() and len(self.tree()) >= PROCESSES_OF_A_RUN:
                self.recorded = self.tree()
                return
            time.sleep(0.2)
        raise AssertionError(f"the launcher was not ready in {timeout_s}s:\n{self.log()[-4000:]}")

    def child(self, word: str) -> ProcessInfo:
        """The launcher's child whose command line holds word."""
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
        """Whether nothing listens on the run's port any more."""
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
        """What of the run is still alive after up to timeout_s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.process.poll()
            left = self.left_over()
            if not left:
                return []
            time.sleep(0.2)
        return self.left_over()

    def stop(self) -> list[ProcessInfo]:
        """SIGTERM, as a service manager stops it; what is still running after the grace."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=GONE_WITHIN_S + 15)
        return self.wait_gone(GONE_WITHIN_S)

    def kill_left_over(self) -> None:
        """SIGKILL whatever of the run is left, so that no test leaves processes behind."""
        for info in self.left_over():
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def start(tmp_path: Path, extra_env: dict[str, str]) -> LauncherRun:
    """``make run`` in tmp_path with extra_env, ready; every process of it killed if it does not get ready."""
    run = LauncherRun(tmp_path, settings=extra_env)
    try:
        run.wait_ready()
    except BaseException:
        run.kill_left_over()
        raise
    return run


def stop_and_check(run: LauncherRun) -> None:
    """Stop the run as a service manager would; fail if a process outlives it or it exits with an error."""
    left = run.stop()
    assert not left, f"{len(left)} processes outlived the launcher:\n{describe(left)}"
    assert run.process.returncode == 0, run.log()[-4000:]


def nice_value(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])

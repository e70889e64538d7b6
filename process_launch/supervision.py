"""Watching the children, and stopping every process they started: signals, process groups."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time

STOP_GRACE_S = 15
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

log = logging.getLogger("launcher")


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to every process of the group, if any is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def is_running(child: subprocess.Popen) -> bool:
    """Whether the child, or any process it started in its process group, is alive."""
    child.poll()  # reaps the child, so that an exited one no longer counts as a group member
    try:
        os.killpg(child.pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(children: dict[str, subprocess.Popen]) -> None:
    """SIGTERM every child, wait up to ``STOP_GRACE_S`` for them and their own processes, then kill."""
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        else:
            # A child that died may have left its own processes behind, e.g. gunicorn's workers,
            # which notice a dead master only every half --timeout and keep the port until then.
            signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(is_running(child) for child in children.values()):
        time.sleep(0.1)
    for name, child in children.items():
        if is_running(child):
            log.warning("%s did not stop in %ss: killing it", name, STOP_GRACE_S)
            signal_group(child.pid, signal.SIGKILL)
        child.wait()


def terminal_hung_up(fd: int) -> bool:
    """Whether the terminal open on ``fd`` was closed."""
    poller = select.poll()
    poller.register(fd, 0)  # hang-ups and errors are reported without being asked for
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def supervise(children: dict[str, subprocess.Popen], stop_signals: list[int]) -> int:
    """Wait until a stop is asked for (0) or a child dies (1)."""
    # When make, not a shell, leads the terminal's session (``ssh -t host make run``), closing the
    # terminal sends SIGHUP to make alone, which then waits for the launcher: watch the terminal too.
    terminal = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    while True:
        if stop_signals:
            log.info("%s: stopping", signal.Signals(stop_signals[0]).name)
            return 0
        if terminal is not None and terminal_hung_up(terminal):
            log.info("the terminal hung up: stopping")
            return 0
        for name, child in children.items():
            if child.poll() is not None:
                log.error("%s exited with %s: stopping the service", name, child.returncode)
                return 1
        time.sleep(0.5)

"""``make run`` under a terminal that closes, and one role run alone (``launcher.py worker``), as a process
manager on another machine runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.launched import (
    GONE_WITHIN_S,
    LauncherRun,
    Terminal,
    as_from_a_terminal,
    describe,
    nice_value,
    read_process,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Loopback closed to fetches, as on a machine reachable from the internet.
SETTINGS = {"FETCH_ALLOWED_NETWORKS": ""}


@pytest.fixture
def terminal(tmp_path) -> Iterator[Terminal]:
    terminal = Terminal(tmp_path / "launcher.log")
    try:
        yield terminal
    finally:
        terminal.close()


def test_nothing_outlives_a_closed_terminal_that_make_leads(tmp_path, terminal: Terminal) -> None:
    """Only make, leading the session, gets the SIGHUP; the launcher notices the terminal hung up."""
    run = LauncherRun(tmp_path, terminal, settings=SETTINGS)
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
        worker = subprocess.Popen(
            as_from_a_terminal([sys.executable, "launcher.py", "worker"]), cwd=ROOT, env=env, stdout=log, stderr=log
        )
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
